"""Scale out with torch.distributed: one ensemble of replicas across processes.

``torchrun --nproc-per-node K -m torchmd_core run CONFIG`` starts K processes that
share the config's ``n_replicas`` in contiguous blocks (the first ``n_replicas % K``
ranks take one more). Each process builds and integrates only its replicas, on
``cuda:LOCAL_RANK`` when the config says ``device: cuda``; replica ``r`` keeps its
global identity everywhere (random streams seeded ``seed + r``, initial velocities,
files ``NAME_r<k>``), so the trajectories are those of the single-process run with the
same seed. (Bit for bit as far as a batch of replicas equals the same replicas run in
smaller batches: a shared neighbour list rebuilt at other steps, or a minimisation that
stops at another iteration, changes the summation order of forces in the last bits.)

Nothing is exchanged while the processes integrate. They meet at *checks*, every
``distributed.sync_interval`` steps and at every reporting step, where they agree to
stop (Ctrl-C or SIGTERM reached one of them) and learn whether one failed; a process
that fails tells the others at their next check, and all of them stop with one message
naming the process, its replicas and the error
(:class:`~torchmd_core.DistributedError`), printed by rank 0. A process that dies or
hangs is noticed after ``distributed.timeout_s`` at the latest.

Outputs (``distributed.reporters``): with ``per_rank`` (the default) every process
writes the per-replica files of its replicas (dcd, xtc, pdb: reporters with
:attr:`Reporter.per_replica <torchmd_core.Reporter.per_replica>`), and rank 0 writes the
others (csv) from frames gathered from all processes; with ``gather`` rank 0 writes
everything. A checkpoint is one file written atomically by rank 0 after gathering every
replica's state and random streams: the same file a single process writes, so a run
may resume on any number of processes (replicas are redistributed by global index).

Control messages go through a gloo process group of their own (also when the main
backend is nccl); the main process group is left to user code such as
:func:`average_gradients` for training through MD on several processes.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import torch
import torch.distributed as dist
from torch import Tensor

from torchmd_core.errors import CheckpointError, DistributedError, TorchMDError
from torchmd_core.reporter import Frame, Reporter, RunInfo
from torchmd_core.sharding import (
    frame_parts,
    join_frames,
    merge_checkpoints,
    split_checkpoint,
    split_replicas,
)

if TYPE_CHECKING:
    from torchmd_core.config import DistributedConfig, SimulationConfig
    from torchmd_core.registry import Registry
    from torchmd_core.simulation import Simulation

__all__ = [
    "ReplicaGroup",
    "average_gradients",
    "join",
    "launch_rank",
    "merge_checkpoints",
    "run",
    "split_checkpoint",
    "split_replicas",
]


def launch_rank() -> int | None:
    """This process's rank when ``torchrun`` (or a launcher setting the same
    environment) started more than one process, else None."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    return int(os.environ.get("RANK", "0"))


def join(config: SimulationConfig) -> ReplicaGroup | None:
    """This process's :class:`ReplicaGroup` of a distributed run of ``config``.

    Joins the process group already initialised by user code
    (``torch.distributed.init_process_group``), or initialises it from torchrun's
    environment (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``) with the
    backend and timeout of ``config.distributed``. Returns None for a single process.

    Raises:
        ConfigError: fewer replicas than processes.
    """
    from torchmd_core.errors import ConfigError

    settings = config.distributed
    owns = False
    if not dist.is_initialized():
        if launch_rank() is None:
            return None
        backend = settings.backend
        if backend == "auto":
            cuda = config.device.startswith("cuda") and torch.cuda.is_available()
            backend = "nccl" if cuda else "gloo"
        dist.init_process_group(backend, timeout=_timeout(settings))
        owns = True
    world, rank = dist.get_world_size(), dist.get_rank()
    if world == 1:
        return None
    control = dist.new_group(backend="gloo", timeout=_timeout(settings))
    if config.n_replicas < world:
        raise ConfigError(
            f"n_replicas: {config.n_replicas} replicas cannot be shared by {world} "
            "processes; start at most n_replicas processes"
        )
    return ReplicaGroup(
        config.n_replicas,
        rank,
        world,
        settings=settings,
        process_group=control,
        local_rank=int(os.environ.get("LOCAL_RANK", rank)),
        owns_process_group=owns,
    )


def _timeout(settings: DistributedConfig) -> datetime.timedelta:
    return datetime.timedelta(seconds=settings.timeout_s)


class ReplicaGroup:
    """One process's share of a distributed ensemble, and the collective operations
    the run loop, reporters and checkpoints use (all through ``process_group``, gloo).

    Every operation that moves data first runs a *check* (an all-reduce of a failure
    and a stop flag). A process that fails calls :meth:`fail` instead, which meets the
    others at whichever check they reach next; so no process waits for one that
    stopped, and all of them raise the same error.

    Args:
        n_replicas: replicas of the whole ensemble.
        rank: this process, 0 .. world_size - 1.
        world_size: the number of processes.
        settings: the config's ``distributed`` section (default values if None).
        process_group: the (gloo) group of the control messages; None: the default.
        local_rank: index of this process on its node (its GPU).
        owns_process_group: :meth:`close` destroys the default process group.
    """

    def __init__(
        self,
        n_replicas: int,
        rank: int,
        world_size: int,
        settings: DistributedConfig | None = None,
        process_group: Any = None,
        local_rank: int = 0,
        owns_process_group: bool = False,
    ) -> None:
        from torchmd_core.config import DistributedConfig

        self.settings = settings if settings is not None else DistributedConfig()
        self.n_replicas = n_replicas
        self.rank, self.world_size, self.local_rank = rank, world_size, local_rank
        self.replicas = split_replicas(n_replicas, world_size, rank)
        self.process_group = process_group
        self.owns_process_group = owns_process_group
        #: Set when a collective failed: the processes can no longer agree.
        self.broken = False
        self._loaded_reporters: dict[str, Any] = {}  # of the last checkpoint read

    def describe(self) -> str:
        """``replica 4`` or ``replicas 4-7``: this process's share."""
        r = self.replicas
        return (
            f"replica {r.start}" if len(r) == 1 else f"replicas {r.start}-{r.stop - 1}"
        )

    def ranges(self) -> list[range]:
        """The replicas of every process, by rank."""
        return [
            split_replicas(self.n_replicas, self.world_size, k)
            for k in range(self.world_size)
        ]

    def device_for(self, name: str) -> torch.device:
        """The device of this process for the config's ``device``: ``cuda`` becomes
        ``cuda:LOCAL_RANK`` (one GPU per process); an explicit index is kept."""
        from torchmd_core.builder import resolve_device

        device = resolve_device(name)
        if device.type == "cuda" and device.index is None:
            device = resolve_device(f"cuda:{self.local_rank}")
        if device.type == "cuda":
            torch.cuda.set_device(device)
        return device

    def close(self) -> None:
        """Leave the run: destroy the control group, and the default process group
        if :func:`join` created it (a group of user code stays)."""
        if not dist.is_initialized():
            return
        if self.owns_process_group:
            dist.destroy_process_group()  # all groups
        elif self.process_group is not None:
            dist.destroy_process_group(self.process_group)
        self.process_group, self.broken = None, True

    # -- which reporters run where -----------------------------------------------------
    def gathered(self, reporter: Reporter) -> bool:
        """Whether ``reporter`` runs on rank 0 with frames of all replicas."""
        if reporter.collective:
            return False
        return not (reporter.per_replica and self.settings.reporters == "per_rank")

    def runs_here(self, reporter: Reporter) -> bool:
        return self.rank == 0 or not self.gathered(reporter)

    def run_info(self, reporter: Reporter, info: RunInfo) -> RunInfo:
        """What ``reporter`` is told when opened on this process."""
        if self.gathered(reporter):
            return dataclasses.replace(
                info,
                n_replicas=self.n_replicas,
                first_replica=0,
                total_replicas=self.n_replicas,
            )
        return info

    # -- agreement ---------------------------------------------------------------------
    def check_due(self, step: int, end: int, reporters: Iterable[Reporter]) -> bool:
        """Whether ``step`` is a check: the last step, every ``sync_interval`` steps,
        and every step some reporter is due (the same on every process)."""
        if step >= end or step % self.settings.sync_interval == 0:
            return True
        return any(r.interval > 0 and step % r.interval == 0 for r in reporters)

    def sync(self, stop: int = 0) -> int:
        """A check: every process says whether it asks to stop (``stop`` > 0, e.g. the
        number of the signal it received); returns the largest request of all (0:
        none). Raises the agreed error if a process failed."""
        failed, stops = self._flags(failed=False, stop=int(stop))
        if failed:
            self._agree_on_failure(None)
        return stops

    def check(self) -> None:
        """A check without a stop request (before every data exchange)."""
        self.sync(0)

    def fail(self, error: BaseException) -> None:
        """Tell the other processes that this one failed with ``error``, and raise the
        error they all agree on. Returns (letting ``error`` propagate) when the error
        was agreed already or the processes lost contact."""
        if _is_agreed(error) or self.broken:
            return
        try:
            self._flags(failed=True, stop=0)
        except DistributedError:
            return  # contact lost: the original error is the message
        self._agree_on_failure(_failure(error, self.rank, self.describe()), error)

    @contextmanager
    def together(self) -> Iterator[None]:
        """Run a block on every process: if it fails on any, it fails on all, with
        the agreed error."""
        try:
            yield
        except BaseException as err:
            self.fail(err)
            raise
        self.check()

    def _flags(self, failed: bool, stop: int) -> tuple[int, int]:
        flags = torch.tensor([int(failed), stop], dtype=torch.int64)
        self._collective(
            lambda: dist.all_reduce(
                flags, op=dist.ReduceOp.MAX, group=self.process_group
            ),
            "a check",
        )
        return int(flags[0]), int(flags[1])

    def _agree_on_failure(
        self, mine: dict[str, Any] | None, error: BaseException | None = None
    ) -> NoReturn:
        reports: list[Any] = [None] * self.world_size
        self._collective(
            lambda: dist.all_gather_object(reports, mine, group=self.process_group),
            "sharing a failure",
        )
        failures = [r for r in reports if r is not None]
        messages = {f["message"] for f in failures}
        if (
            error is not None
            and len(failures) == self.world_size
            and len(messages) == 1
        ):
            raise _mark_agreed(error)  # every process failed alike: one message
        agreed = DistributedError(
            _failure_message(failures, self.world_size),
            exit_code=max(f["exit_code"] for f in failures),
        )
        _mark_agreed(agreed)
        if error is not None:
            raise agreed from error
        raise agreed

    def _collective(self, operation: Callable[[], object], what: str) -> None:
        if self.broken:
            raise DistributedError(
                f"rank {self.rank}: the processes cannot communicate any more (contact "
                f"lost earlier, or the group was closed); cannot go on with {what}",
                lost_contact=True,
            )
        try:
            operation()
        except (RuntimeError, dist.DistBackendError) as err:  # a peer died or hung
            self.broken = True
            raise DistributedError(
                f"rank {self.rank} of {self.world_size} ({self.describe()}) lost "
                f"contact with the other processes during {what}: {err}\n"
                "Another process probably died or hung (see its messages); waiting "
                "is limited by distributed.timeout_s",
                lost_contact=True,
            ) from None

    # -- data --------------------------------------------------------------------------
    def all_gather_replicas(self, values: Tensor) -> Tensor:
        """(n_replicas, ...) on CPU: ``values`` (this process's replicas, (R, ...))
        from every process, in global replica order."""
        self.check()
        parts: list[Any] = [None] * self.world_size
        local = values.detach().cpu()
        self._collective(
            lambda: dist.all_gather_object(parts, local, group=self.process_group),
            "gathering per-replica values",
        )
        return torch.cat(parts)

    def _gather(self, obj: Any, what: str) -> list[Any] | None:
        """``obj`` of every process on rank 0 (None elsewhere), after a check."""
        self.check()
        parts: list[Any] | None = [None] * self.world_size if self.rank == 0 else None
        self._collective(
            lambda: dist.gather_object(
                obj, parts, dst=_global_rank(self, 0), group=self.process_group
            ),
            what,
        )
        return parts

    def frames(
        self, frame: Frame, due: Sequence[Reporter]
    ) -> Callable[[Reporter], Frame | None]:
        """The frame each due reporter gets on this process (None: not here). Frames
        are gathered to rank 0 when a due reporter runs there on all replicas."""
        joined: Frame | None = None
        if any(self.gathered(r) for r in due):
            parts = self._gather(frame_parts(frame), "gathering a frame")
            if parts is not None:
                joined = join_frames(parts)

        def pick(reporter: Reporter) -> Frame | None:
            if not self.gathered(reporter):
                return frame
            return joined

        return pick

    def gather_checkpoint(
        self, simulation: Simulation, payload: dict[str, Any]
    ) -> dict[str, Any] | None:
        """On rank 0 the checkpoint of the whole ensemble from every process's
        ``payload``; None elsewhere."""
        parts = self._gather(payload, "gathering a checkpoint")
        if parts is None:
            return None
        return merge_checkpoints(
            parts, *_replica_keys(simulation), baseline=self._loaded_reporters
        )

    def read_checkpoint(
        self, simulation: Simulation, path: str | Path
    ) -> dict[str, Any]:
        """Rank 0 reads the checkpoint at ``path``; every process gets the part of its
        replicas. Raises the same :class:`CheckpointError` on every process."""
        from torchmd_core.checkpoint import read_checkpoint

        self.check()
        parts: list[Any] | None = None
        if self.rank == 0:
            try:
                payload = read_checkpoint(path)
                n = int(payload["state"]["positions"].shape[0])
                if n != self.n_replicas:
                    raise CheckpointError(
                        f"checkpoint '{path}' holds {n} replicas, this run has "
                        f"{self.n_replicas}; resume with the n_replicas it was "
                        "written with"
                    )
                keys = _replica_keys(simulation)
                parts = [
                    ("ok", split_checkpoint(payload, r, *keys)) for r in self.ranges()
                ]
                self._loaded_reporters = payload.get("reporters") or {}
            except TorchMDError as err:
                parts = [
                    ("error", str(err.args[0]) if err.args else str(err))
                ] * self.world_size
            except Exception as err:  # a malformed file: the others must not wait
                text = (
                    f"checkpoint '{path}' cannot be used ({type(err).__name__}: {err})"
                )
                parts = [("error", text)] * self.world_size
        received: list[Any] = [None]
        self._collective(
            lambda: dist.scatter_object_list(
                received, parts, src=_global_rank(self, 0), group=self.process_group
            ),
            "reading a checkpoint",
        )
        status, value = received[0]
        if status == "error":
            raise _mark_agreed(CheckpointError(value))
        return dict(value)


def _global_rank(group: ReplicaGroup, rank: int) -> int:
    if group.process_group is None:
        return rank
    return int(dist.get_global_rank(group.process_group, rank))


# -- failures --------------------------------------------------------------------------


def _mark_agreed(error: BaseException) -> BaseException:
    """Every process raises this error: rank 0 reports it for all."""
    error.torchmd_agreed = True  # type: ignore[attr-defined]
    return error


def _is_agreed(error: BaseException) -> bool:
    return bool(getattr(error, "torchmd_agreed", False))


def reported_by_rank_zero(error: BaseException) -> bool:
    """Whether rank 0 reports ``error`` for every process (the others stay quiet)."""
    return _is_agreed(error) and not getattr(error, "lost_contact", False)


def _failure(error: BaseException, rank: int, replicas: str) -> dict[str, Any]:
    if isinstance(error, TorchMDError):
        text, code = str(error), error.exit_code
    elif isinstance(error, KeyboardInterrupt):
        text, code = "KeyboardInterrupt: interrupted", 130
    else:
        text, code = f"{type(error).__name__}: {error}", 1
    return {"rank": rank, "replicas": replicas, "message": text, "exit_code": code}


def _failure_message(failures: list[dict[str, Any]], world_size: int) -> str:
    by_message: dict[str, list[dict[str, Any]]] = {}
    for f in failures:
        by_message.setdefault(f["message"], []).append(f)
    blocks = []
    for message, group in by_message.items():
        who = ", ".join(f"rank {f['rank']} ({f['replicas']})" for f in group)
        blocks.append(f"{who} of {world_size} processes failed:\n{message}")
    return "\n".join(blocks) + "\nEvery process stopped."


# -- checkpoints -----------------------------------------------------------------------


def _replica_keys(simulation: Simulation) -> tuple[tuple[str, ...], tuple[str, ...]]:
    barostat = simulation.barostat
    return (
        type(simulation.integrator).replica_state_keys,
        () if barostat is None else type(barostat).replica_state_keys,
    )


# -- running ---------------------------------------------------------------------------


def run(
    config: SimulationConfig | str | Path,
    resume: str | Path | None = None,
    overwrite: bool = False,
    registry: Registry | None = None,
) -> Simulation:
    """Run a config to its ``steps`` on every process of a distributed launch (or on
    this one alone): what ``tmd run`` does, from Python. Returns this process's
    :class:`~torchmd_core.Simulation` (its replicas are ``simulation.group.replicas``).

    Call it on every process, e.g. in a script started by ``torchrun``, or after
    ``torch.distributed.init_process_group`` in processes of your own. The simulation
    may run further (``simulation.run(steps)``, on every process); call
    ``simulation.group.close()`` when done with it.

    Raises:
        TorchMDError: the same error on every process when one of them failed.
    """
    from torchmd_core.checkpoint import load_checkpoint
    from torchmd_core.config import load_config
    from torchmd_core.errors import ConfigError
    from torchmd_core.simulation import Simulation

    if not hasattr(config, "model_dump"):
        config = load_config(Path(config), registry=registry)
    assert not isinstance(config, (str, Path))
    group = join(config)
    together = group.together() if group is not None else _nothing()
    with together:
        simulation = Simulation.from_config(config, registry=registry, group=group)
    if resume is not None:
        load_checkpoint(simulation, resume)
    together = group.together() if group is not None else _nothing()
    with together:
        remaining = config.steps - simulation.state.step
        if remaining < 0:
            raise ConfigError(
                f"steps: the checkpoint is at step {simulation.state.step}, beyond the "
                f"config's steps ({config.steps})"
            )
        if not overwrite:
            simulation.check_outputs(resume=resume is not None)
        if resume is None and config.minimize is not None:
            simulation.minimize(
                config.minimize.tolerance_kcal_mol_A, config.minimize.max_iterations
            )
    simulation.run(remaining, resume=resume is not None, overwrite=overwrite)
    return simulation


@contextmanager
def _nothing() -> Iterator[None]:
    yield


# -- training --------------------------------------------------------------------------


def average_gradients(
    parameters: Iterable[torch.nn.Parameter] | torch.nn.Module, group: Any = None
) -> None:
    """Average the ``.grad`` of ``parameters`` over all processes (all-reduce, in
    place), as DistributedDataParallel does after each backward pass: every process
    then takes the same optimiser step. A parameter without a gradient on every process
    is skipped; one with a gradient on some processes only counts as zero on the others.

    Args:
        parameters: tensors, or a module whose parameters to average.
        group: the process group (default: the default group).
    """
    params = list(
        parameters.parameters()
        if isinstance(parameters, torch.nn.Module)
        else parameters
    )
    if not dist.is_initialized() or dist.get_world_size(group) == 1:
        return
    present = torch.tensor([p.grad is not None for p in params], dtype=torch.int64)
    dist.all_reduce(present, group=group)
    world = dist.get_world_size(group)
    for p, n in zip(params, present.tolist(), strict=True):
        if n == 0:
            continue
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad, group=group)
        p.grad.div_(world)
