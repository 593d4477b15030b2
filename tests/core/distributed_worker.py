"""One process of the 2-process gloo jobs of tests/core/test_distributed.py.

``python -m tests.core.distributed_worker PLAN.json`` runs the operations listed in
the plan one after the other (every process runs the same list, as under torchrun) and
writes what each returned to ``PLAN.rank<k>.json`` after each one. torchrun's
environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR) comes from the test; each
operation names its own MASTER_PORT, because each makes and destroys its own process
group, as a ``tmd run`` does.

Operations:
    ``{"op": "tmd", "argv": [...]}``: ``tmd`` (the cli) with the toy components and the
        failure injectors below; returns the exit code and what it printed.
    ``{"op": "train"}``: gradients of a trajectory loss of one replica per process,
        averaged over the processes with DistributedDataParallel and with
        :func:`~torchmd_core.distributed.average_gradients`.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import sys
import types
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field

from torchmd_core import Frame, Reporter, ReporterConfig, hookimpl, isolated_registry

torch.set_num_threads(1)


class BlowUp(Reporter):
    """Makes the forces of one (global) replica infinite after a given step, on the
    process that runs it."""

    collective = True  # on every process: each one patches its own integrator

    class Config(ReporterConfig):
        kind: Literal["test.blowup"] = "test.blowup"
        interval: int = Field(1, gt=0, description="Steps between checks.")
        step: int = Field(description="Step after which the forces become infinite.")
        replica: int = Field(description="Global index of the replica.")

    def open(self, run: Any) -> None:
        sim = run.simulation
        local = self.config.replica - sim.first_replica  # type: ignore[attr-defined]
        if not 0 <= local < sim.state.n_replicas:
            return
        original, at = sim.integrator.step, self.config.step  # type: ignore[attr-defined]

        def step(state: Any, potential: Any) -> Any:
            new = original(state, potential)
            if new.step == at:
                forces = new.forces.clone()
                forces[local, 3] = float("inf")
                new = new.replace(forces=forces)
            return new

        sim.integrator.step = step

    def report(self, frame: Frame) -> None:
        pass


class Die(Reporter):
    """The process of rank ``rank`` exits at once at ``step`` (a crashed node)."""

    collective = True

    class Config(ReporterConfig):
        kind: Literal["test.die"] = "test.die"
        interval: int = Field(1, gt=0, description="Steps between checks.")
        step: int = Field(description="Step at which to die.")
        rank: int = Field(description="Rank of the process that dies.")

    def report(self, frame: Frame) -> None:
        if (
            frame.step == self.config.step
            and int(os.environ["RANK"]) == self.config.rank
        ):  # type: ignore[attr-defined]
            os._exit(3)


class Interrupt(Reporter):
    """The process of rank ``rank`` receives Ctrl-C at ``step``, twice (from the
    terminal and from torchrun, which passes it on)."""

    collective = True

    class Config(ReporterConfig):
        kind: Literal["test.interrupt"] = "test.interrupt"
        interval: int = Field(1, gt=0, description="Steps between checks.")
        step: int = Field(description="Step at which Ctrl-C arrives.")
        rank: int = Field(description="Rank of the process that receives it.")

    def report(self, frame: Frame) -> None:
        cfg: Any = self.config
        if frame.step == cfg.step and int(os.environ["RANK"]) == cfg.rank:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)


@hookimpl
def torchmd_core_register_reporters(register: Any) -> None:
    register(BlowUp)
    register(Die)
    register(Interrupt)


injectors = types.SimpleNamespace(
    torchmd_core_register_reporters=torchmd_core_register_reporters
)


def op_tmd(argv: list[str]) -> dict[str, Any]:
    from tests.core import toys
    from torchmd_core.cli import main

    err = io.StringIO()
    with isolated_registry(plugins=[toys, injectors]), contextlib.redirect_stderr(err):
        code = main(argv)
    return {"code": code, "stderr": err.getvalue()}


def op_train() -> dict[str, Any]:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from torchmd_core.distributed import average_gradients

    dist.init_process_group("gloo")
    try:
        rank = dist.get_rank()
        loss_fn = trajectory_loss(replicas=[rank])
        ddp = DistributedDataParallel(loss_fn, forward_sync_buffers=False)
        ddp().backward()
        via_ddp = [p.grad.tolist() for p in loss_fn.parameters()]
        loss_fn.zero_grad()
        loss_fn().backward()
        average_gradients(loss_fn)
        via_all_reduce = [p.grad.tolist() for p in loss_fn.parameters()]
    finally:
        dist.destroy_process_group()
    return {"ddp": via_ddp, "all_reduce": via_all_reduce}


class TrajectoryLoss(torch.nn.Module):
    """Mean over its replicas of the squared distance travelled in 8 Verlet steps by
    alanine dipeptide whose bond constants and LJ depths are trainable."""

    def __init__(self, replicas: list[int]) -> None:
        super().__init__()
        from torchmd_core import State, maxwell_boltzmann_velocities
        from torchmd_core.builder import load_system
        from torchmd_core.config import SystemConfig
        from torchmd_core.parameters import trainable
        from torchmd_core.plugins import default_registry

        data = Path(__file__).resolve().parents[1] / "data" / "ala2_vacuum"
        system, coords = load_system(
            SystemConfig(
                topology=data / "ala2_vacuum.prmtop",
                coordinates=data / "ala2_vacuum.pdb",
            )
        )
        registry = default_registry()
        amber = registry.get("potentials", "amber")
        nonbonded = registry.get("potentials", "nonbonded")
        verlet = registry.get("integrators", "verlet")
        self.potential = torch.nn.ModuleList(
            [amber(amber.Config(), system), nonbonded(nonbonded.Config(), system)]
        )
        trainable(self.potential, "bonds.k", "nonbonded.epsilon")
        self.integrator = verlet(verlet.Config(timestep_fs=1.0), system)
        velocities = maxwell_boltzmann_velocities(
            system, 300.0, seed=7, replicas=replicas
        )
        self.start = State.from_coordinates(
            coords.positions, n_replicas=len(replicas)
        ).replace(velocities=velocities)

    def forward(self) -> torch.Tensor:
        from torchmd_core.trajectory import simulate

        traj = simulate(list(self.potential), self.integrator, self.start, 8)  # type: ignore[arg-type]
        moved = traj.final.positions - self.start.positions
        return moved.square().sum((1, 2)).mean()


def trajectory_loss(replicas: list[int]) -> TrajectoryLoss:
    return TrajectoryLoss(replicas)


OPERATIONS = {"tmd": op_tmd, "train": op_train}


def main(plan_path: str) -> None:
    plan = json.loads(Path(plan_path).read_text())
    rank = int(os.environ["RANK"])
    out = Path(plan_path).with_suffix(f".rank{rank}.json")
    results: list[Any] = []
    for item in plan:
        os.environ["MASTER_PORT"] = str(item["port"])
        args = {k: v for k, v in item.items() if k not in ("op", "port")}
        try:
            results.append(OPERATIONS[item["op"]](**args))
        except BaseException as err:  # record it; the test shows it
            results.append({"error": f"{type(err).__name__}: {err}"})
        out.write_text(json.dumps(results))


if __name__ == "__main__":
    main(sys.argv[1])
