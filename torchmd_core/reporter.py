"""The ``Reporter`` role: writes observations every ``interval`` steps.

A reporter declares what it :attr:`~Reporter.needs` (energy terms, forces...); the run
loop computes each requested quantity once per reporting step, for all due reporters
together, and hands them a :class:`Frame`. Reporters are opened before the first
step (told whether they append to a resumed run) and closed after the last, also when
the run fails.

The lifecycle of one :meth:`Simulation.run <torchmd_core.Simulation.run>`:

1. :meth:`Reporter.output_conflicts` for every reporter, before anything is opened: the
   run refuses to start when some reporter would replace a file it did not write.
2. :meth:`Reporter.open` (with ``run.resume`` when continuing a checkpoint or a previous
   run of the same simulation: append, do not start over).
3. :meth:`Reporter.report` at step ``start`` (unless that step was reported already) and
   every :attr:`~Reporter.interval` steps; reporters with :attr:`~Reporter.runs_last`
   (checkpoints) after all others of the same step, so that what they record includes
   the frames just written. Reporters with :attr:`~Reporter.at_end` also get the last
   frame of a run that completes or stops on request.
4. :meth:`Reporter.flush` before every checkpoint, and :meth:`Reporter.close`.

Resuming exactly: :meth:`Reporter.state_dict` is saved in checkpoints (frame counts,
bytes written); after :meth:`Reporter.load_state_dict`, ``open`` with ``run.resume``
drops whatever was written after the checkpoint and appends from there, so the files
have neither duplicate nor missing frames.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field
from torch import Tensor

from torchmd_core.component import Component, ComponentConfig
from torchmd_core.state import State
from torchmd_core.system import System

if TYPE_CHECKING:
    from torchmd_core.simulation import Simulation

__all__ = ["QUANTITIES", "Frame", "Reporter", "ReporterConfig", "RunInfo"]

#: Quantities a reporter may declare in :attr:`Reporter.needs`. Potential energy,
#: kinetic energy, temperature, volume and density are always in a :class:`Frame`.
QUANTITIES = frozenset({"energy_terms", "forces"})


class ReporterConfig(ComponentConfig):
    """Base of reporter configurations."""

    interval: int = Field(1000, gt=0, description="Steps between reports.")


@dataclass(frozen=True)
class RunInfo:
    """What a reporter learns when it is opened.

    Attributes:
        system: the simulated system.
        n_replicas: R.
        term_names: names of the energy terms, in order.
        timestep_fs: integration timestep, fs (0 for minimisation-only runs).
        periodic: whether the system has a box.
        start_step: first step of this run segment.
        total_steps: the step the run will end at.
        resume: True when continuing a checkpoint or an earlier run of the same
            simulation: append to the files written then.
        overwrite: True when the user allowed replacing existing files.
        header: provenance lines (versions, plugins) for file headers.
        simulation: the running simulation (for reporters such as checkpoints that
            need more than a frame), or None when a reporter is driven by hand.
        first_replica: global index of the first replica in the frames: replica
            ``r`` of a frame is replica ``first_replica + r`` of the ensemble (not 0
            only for :attr:`Reporter.per_replica` reporters of a distributed run).
        total_replicas: replicas in the whole ensemble (None: ``n_replicas``); name
            per-replica outputs by it (see ``replica_paths`` of the built-ins), so a
            run split across processes writes the files of a single-process run.
        extras: names of the per-replica quantities in :attr:`Frame.extras`.
    """

    system: System
    n_replicas: int
    term_names: tuple[str, ...]
    timestep_fs: float
    periodic: bool
    start_step: int = 0
    total_steps: int = 0
    resume: bool = False
    overwrite: bool = False
    header: tuple[str, ...] = ()
    simulation: Simulation | None = None
    first_replica: int = 0
    total_replicas: int | None = None
    extras: tuple[str, ...] = ()


@dataclass(frozen=True, eq=False)
class Frame:
    """One reporting step's observations (all per replica).

    Attributes:
        state: the state at this step.
        potential_energy: (R,) kcal/mol.
        kinetic_energy: (R,) kcal/mol.
        temperature_K: (R,) instantaneous temperature from the degrees of freedom.
        volume_A3: (R,) Å³, None without a box.
        density_g_cm3: (R,) g/cm³, None without a box.
        energy_terms: name → (R,) kcal/mol, when some reporter needs them.
        forces: (R, N, 3) kcal/mol/Å, when some reporter needs them.
        speed_ns_day: simulation speed since the previous report, or None.
        extras: further per-replica quantities, name → (R,) tensor (e.g. each
            replica's bath temperature under replica exchange); their names are in
            :attr:`RunInfo.extras`.
    """

    state: State
    potential_energy: Tensor
    kinetic_energy: Tensor
    temperature_K: Tensor
    volume_A3: Tensor | None = None
    density_g_cm3: Tensor | None = None
    energy_terms: dict[str, Tensor] | None = None
    forces: Tensor | None = None
    speed_ns_day: float | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def step(self) -> int:
        return self.state.step

    @property
    def time_ps(self) -> float:
        return self.state.time_ps


class Reporter(Component, ABC):
    """Writes a :class:`Frame` every :attr:`interval` steps (and at step 0)."""

    Config: ClassVar[type[ComponentConfig]] = ReporterConfig
    #: Quantities beyond the defaults this reporter reads (see :data:`QUANTITIES`).
    needs: ClassVar[frozenset[str]] = frozenset()
    #: Report after every other reporter of the same step (checkpoint writers).
    runs_last: ClassVar[bool] = False
    #: Also report the final frame of a run that completes or stops on request, even
    #: when that step is not a multiple of :attr:`interval` (final structures, the
    #: checkpoint a later ``--resume`` continues from).
    at_end: ClassVar[bool] = False
    #: Writes each replica on its own (one file per replica). In a distributed run
    #: (see :mod:`torchmd_core.distributed`) each process then runs it on frames of
    #: its own replicas, naming outputs by :attr:`RunInfo.first_replica` and
    #: :attr:`RunInfo.total_replicas`; other reporters run on rank 0 only, on frames
    #: gathered from every process.
    per_replica: ClassVar[bool] = False
    #: In a distributed run, :meth:`report` runs on every process with that process's
    #: frame, and the reporter itself communicates (checkpoint writers: every process
    #: sends its replicas' state and rank 0 writes).
    collective: ClassVar[bool] = False

    def __init__(self, config: ComponentConfig, system: System) -> None:
        self.config = config
        self.system = system

    @property
    def interval(self) -> int:
        """Steps between reports; 0 means only the final frame (with :attr:`at_end`)."""
        return int(getattr(self.config, "interval"))  # noqa: B009 - not on every config

    def outputs(self) -> tuple[Path, ...]:
        """Files this reporter writes (checked before a run: nothing is overwritten)."""
        path = getattr(self.config, "file", None)
        return (Path(path),) if path is not None else ()

    def output_conflicts(self, run: RunInfo) -> list[Path]:
        """Existing files this run would replace although this reporter did not write
        them; the run refuses to start when any reporter returns one (unless
        ``run.overwrite``). Called before any reporter is opened.

        The default: every existing file of :meth:`outputs` for a new run, none when
        resuming (the reporter appends to its files). Override it when the files depend
        on ``run`` (one per replica) or to refuse files a resumed run has no record of.
        """
        if run.resume:
            return []
        return [p for p in self.outputs() if p.exists()]

    def open(self, run: RunInfo) -> None:
        """Prepare outputs; with ``run.resume`` append to earlier segments' files."""

    @abstractmethod
    def report(self, frame: Frame) -> None:
        """Record one frame."""

    def flush(self) -> None:
        """Push buffered output to disk (called before checkpoints and on failure)."""

    def close(self) -> None:
        """Release files; called once, also after a failed run."""

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint must remember to resume this reporter exactly."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (before ``open`` with resume)."""

    def checkpoint_key(self) -> str:
        """What identifies this reporter across run segments (checkpoints store the
        :meth:`state_dict` of each reporter under it): its kind and file name."""
        outputs = self.outputs()
        name = outputs[0].name if outputs else ""
        kind = getattr(self.config, "kind", None) or type(self).__qualname__
        return f"{kind}:{name}"
