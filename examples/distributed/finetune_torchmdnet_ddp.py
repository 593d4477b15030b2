"""examples/differentiable/finetune_torchmdnet.py on several processes, with the
starting frames shared out and the gradients averaged by DistributedDataParallel.

The same training as the single-process example (its settings, helpers and options):
a weakened AMBER prior plus a tiny TensorNet learn, through a trajectory loss, to move
like full AMBER. Every process warms up the same starting frames (a few hundred cheap
Langevin steps), keeps its share of them (``--replicas`` must be a multiple of the
number of processes), computes the reference and the model trajectories of its frames
only, and back-propagates through its MD; DDP averages the weight gradients over the
processes, so each takes the optimiser step of the whole batch. The printed loss is
the mean over all frames, as the single-process example prints it.

    torchrun --nproc-per-node 2 examples/distributed/finetune_torchmdnet_ddp.py
    torchrun --nproc-per-node 2 examples/distributed/finetune_torchmdnet_ddp.py \\
        --iterations 5 --steps 10
    python examples/distributed/finetune_torchmdnet_ddp.py   # one process: the example

The losses equal those of ``python examples/differentiable/finetune_torchmdnet.py`` with
the same options (up to the order of the sums that average the gradients).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path
from types import ModuleType

import torch
import torch.distributed as dist
from torch import Tensor, nn

from torchmd_core import Integrator, PotentialSum, State
from torchmd_core.distributed import launch_rank, split_replicas
from torchmd_core.trajectory import simulate

ROOT = Path(__file__).resolve().parents[2]


def single_process_example() -> ModuleType:
    """examples/differentiable/finetune_torchmdnet.py, imported as a module."""
    path = ROOT / "examples" / "differentiable" / "finetune_torchmdnet.py"
    spec = importlib.util.spec_from_file_location("finetune_torchmdnet", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class TrajectoryLoss(nn.Module):
    """Mean squared deviation of the model's trajectories from the reference ones,
    from this process's starting frames; the module DDP wraps (its parameters are the
    network's weights)."""

    def __init__(
        self,
        model: PotentialSum,
        integrator: Integrator,
        start: State,
        target: Tensor,
        args: argparse.Namespace,
    ) -> None:
        super().__init__()
        self.model, self.integrator = model, integrator
        self.start, self.target, self.args = start, target, args

    def forward(self) -> Tensor:
        args = self.args
        traj = simulate(
            self.model,
            self.integrator,
            self.start,
            args.steps,
            checkpoint_every=args.checkpoint_every,
            record_every=args.record_every,
            record_positions=True,
        )
        assert traj.positions is not None
        return (traj.positions - self.target).square().sum(-1).mean()


def main(argv: list[str] | None = None) -> dict[str, float]:
    from torchmd_plugins.amber.bonded import AmberBonded
    from torchmd_plugins.dynamics.verlet import VelocityVerlet
    from torchmd_plugins.nonbonded.nonbonded import Nonbonded
    from torchmd_plugins.torchmdnet import TorchMDNetPotential

    example = single_process_example()
    args = example.parse(sys.argv[1:] if argv is None else argv)
    torch.set_num_threads(args.threads)
    distributed = launch_rank() is not None
    if distributed:
        dist.init_process_group("gloo")
    rank = dist.get_rank() if distributed else 0
    world = dist.get_world_size() if distributed else 1
    if args.replicas % world:
        raise SystemExit(f"--replicas {args.replicas} is not a multiple of {world}")
    mine = split_replicas(args.replicas, world, rank)

    # The example's starting frames (all of them, as one process makes them), then
    # this process's share.
    sim = example.reference_simulation(args)
    system = sim.system
    frames = example.starting_frames(sim, args)
    assert frames.velocities is not None
    start = State(
        positions=frames.positions[mine.start : mine.stop],
        velocities=frames.velocities[mine.start : mine.stop],
    )
    verlet = VelocityVerlet(VelocityVerlet.Config(timestep_fs=1.0), system)
    with torch.no_grad():
        reference = simulate(
            sim.potential,
            verlet,
            start,
            args.steps,
            record_every=args.record_every,
            record_positions=True,
        )
    assert reference.positions is not None

    # The model of the example: weakened prior + LJ/Coulomb + the tiny network.
    prior = AmberBonded(None, system)
    with torch.no_grad():
        for term in ("bonds", "angles"):
            prior.tables[term].k.mul_(0.6)
    prior.requires_grad_(False)
    network = TorchMDNetPotential(
        TorchMDNetPotential.Config(), system, module=example.tiny_tensornet(args.seed)
    )
    model = PotentialSum(
        [prior, Nonbonded(Nonbonded.Config(), system), network], system=system
    )
    model.to(dtype=torch.float64)
    loss_fn = TrajectoryLoss(model, verlet, start, reference.positions, args)
    trainer: nn.Module = loss_fn
    if distributed:
        trainer = nn.parallel.DistributedDataParallel(
            loss_fn, forward_sync_buffers=False
        )
    weights = [p for p in network.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(weights, lr=args.lr)

    def everyone(loss: Tensor) -> float:
        """The mean over all frames: the mean of the processes' means."""
        value = loss.detach().clone()
        if distributed:
            dist.all_reduce(value)
            value /= world
        return float(value)

    t0 = time.perf_counter()
    losses = []
    for iteration in range(args.iterations):
        loss = trainer()
        optimizer.zero_grad()
        loss.backward()  # DDP: gradients averaged over the processes
        optimizer.step()
        losses.append(everyone(loss))
        if rank == 0:
            print(
                f"iteration {iteration + 1:3d}: mean squared deviation "
                f"{losses[-1]:.5f} Å²",
                flush=True,
            )
    with torch.no_grad():
        final = everyone(loss_fn())
    if rank == 0:
        print(
            f"{sum(p.numel() for p in weights)} weights; loss {losses[0]:.5f} → "
            f"{final:.5f} Å² in {time.perf_counter() - t0:.0f} s on {world} process(es)"
        )
    if distributed:
        dist.destroy_process_group()
    return {"initial_loss": losses[0], "final_loss": final}


if __name__ == "__main__":
    main()
