"""Training through MD on several processes: recover force constants by trajectory
matching, with the trajectories shared out between processes and the gradients
averaged by PyTorch's DistributedDataParallel.

The "experiment": Langevin trajectories of alanine dipeptide (vacuum, AMBER ff) with
the true bond and angle force constants, one per replica. The model starts from
constants 30% too soft; each training step runs every replica's trajectory again from
the same start with the same Langevin noise (the noise is reparameterised, so the
trajectory is a differentiable function of the parameters), and the loss is the mean
squared deviation of the positions along the way from the reference ones. Each process
simulates only its own replicas (global replica r keeps its start and noise, seeded
from r, whatever the number of processes); DDP averages the gradients, so every process
takes the same optimiser step: the training is that of one process holding all
replicas, in less time.

    torchrun --nproc-per-node 2 examples/distributed/train_ddp.py
    python examples/distributed/train_ddp.py          # the same on one process

Options: ``--replicas`` (all processes together; a multiple of the number of
processes, so that the average of the processes' mean losses is the mean loss),
``--steps`` of MD per trajectory, ``--epochs``, ``--lr`` (cosine-annealed). Half a
minute to a minute on 2 CPU cores with the defaults: the loss falls about thirtyfold
and the mean relative error of the constants from 0.30 to about 0.05.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch import Tensor, nn

from torchmd_core import (
    PotentialSum,
    State,
    default_registry,
    maxwell_boltzmann_velocities,
)
from torchmd_core.builder import load_system
from torchmd_core.config import SystemConfig
from torchmd_core.distributed import launch_rank, split_replicas
from torchmd_core.parameters import trainable
from torchmd_core.trajectory import simulate

DATA = Path(__file__).resolve().parents[2] / "tests" / "data" / "ala2_vacuum"
FAMILIES = ("bonds.k", "angles.k")


class TrajectoryMatching(nn.Module):
    """The loss of the replicas ``replicas``: mean squared deviation of their
    trajectories with the current parameters from the reference trajectories.

    Args:
        replicas: global indices of the replicas this process simulates.
        steps: MD steps per trajectory (1 fs each); positions compared every 5.
        seed: seed of the starting velocities and of the Langevin noise.
    """

    def __init__(self, replicas: range, steps: int, seed: int = 0) -> None:
        super().__init__()
        system, coords = load_system(
            SystemConfig(
                topology=DATA / "ala2_vacuum.prmtop",
                coordinates=DATA / "ala2_vacuum.pdb",
            )
        )
        registry = default_registry()
        terms = [
            registry.get("potentials", kind)(
                registry.get("potentials", kind).Config(), system
            )
            for kind in ("amber", "nonbonded")
        ]
        self.potential = PotentialSum(terms, system=system)
        langevin = registry.get("integrators", "langevin")
        self.integrator = langevin(
            langevin.Config(timestep_fs=1.0, temperature_K=300.0, friction_per_ps=5.0),
            system,
        )
        # Replica r: velocities and noise seeded from r, on whichever process it runs.
        self.integrator.seed(seed + replicas.start, len(replicas))
        self.noise = self.integrator.state_dict()
        velocities = maxwell_boltzmann_velocities(
            system, 300.0, seed=seed, replicas=replicas
        )
        self.start = State.from_coordinates(coords.positions, n_replicas=len(replicas))
        self.start = self.start.replace(velocities=velocities)
        self.steps = steps
        self.params = trainable(self.potential, *FAMILIES)
        self.truth = {k: p.detach().clone() for k, p in self.params.items()}
        with torch.no_grad():
            self.reference = self.trajectory()
            for p in self.params.values():
                p.mul_(0.7)  # the model starts 30% too soft

    def trajectory(self) -> Tensor:
        """(F, R, N, 3) positions every 5 steps, with the same noise every time."""
        self.integrator.load_state_dict(self.noise)
        traj = simulate(
            self.potential,
            self.integrator,
            self.start,
            self.steps,
            record_every=5,
            record_positions=True,
        )
        assert traj.positions is not None
        return traj.positions

    def forward(self) -> Tensor:
        return (self.trajectory() - self.reference).square().mean()

    def relative_errors(self) -> dict[str, float]:
        """Each family's mean |k − k_true| / k_true over its types."""
        return {
            k: float(((p.detach() - self.truth[k]).abs() / self.truth[k].abs()).mean())
            for k, p in self.params.items()
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replicas", type=int, default=8)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--lr", type=float, default=0.03, help="relative step size")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    distributed = launch_rank() is not None
    if distributed:  # torchrun's environment: RANK, WORLD_SIZE, MASTER_ADDR, ...
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    rank = dist.get_rank() if distributed else 0
    world = dist.get_world_size() if distributed else 1
    if args.replicas % world:
        raise SystemExit(
            f"--replicas {args.replicas} is not a multiple of {world} processes"
        )
    replicas = split_replicas(args.replicas, world, rank)

    model = TrajectoryMatching(replicas, args.steps).double()
    trainer: nn.Module = model
    if distributed:
        # Every forward runs the whole trajectory; backward averages the gradients.
        trainer = nn.parallel.DistributedDataParallel(model, forward_sync_buffers=False)
    # Steps relative to each family's size (bond constants are ~10x angle ones).
    optimizer = torch.optim.Adam(
        [
            {"params": [p], "lr": args.lr * float(p.detach().abs().mean())}
            for p in model.parameters()
        ]
    )
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, args.epochs)

    started = time.perf_counter()
    for epoch in range(args.epochs + 1):
        optimizer.zero_grad()
        loss = trainer()
        shown = loss.detach().clone()  # this process's replicas: average over all
        if distributed:
            dist.all_reduce(shown)
            shown /= world
        if rank == 0 and (epoch % 5 == 0 or epoch == args.epochs):
            errors = ", ".join(
                f"{k} {v:.3f}" for k, v in model.relative_errors().items()
            )
            print(
                f"epoch {epoch:3d}  loss {float(shown):.3e} Å²  "
                f"mean relative error: {errors}  "
                f"({time.perf_counter() - started:.0f} s)",
                flush=True,
            )
        if epoch == args.epochs:
            break
        loss.backward()  # with DDP: the gradients of all processes, averaged
        optimizer.step()
        schedule.step()
    if distributed:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
