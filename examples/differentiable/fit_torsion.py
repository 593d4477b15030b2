"""Fit one torsion force constant to a target dihedral distribution (DiffTRe).

A united-atom butane (CH3-CH2-CH2-CH3: harmonic bonds and angle, a three-term torsion
k_n (1 + cos(n φ − phase_n)), n = 1, 2, 3, with TraPPE-like shapes made softer so that
gauche and trans interconvert every few ps at 300 K) is simulated with the hidden
three-fold force constant k3* to make the target: the histogram of φ. Starting from a
wrong k3, the script then repeats

1. sample the current model with Langevin dynamics (replicas in one batch, no graph);
2. reweight those frames to the current k3 (``EnsembleReweighting``), compute the loss
   Σ_bins (p_k3(bin) − p_target(bin))², its gradient by autograd through the weights,
   and take Adam steps on k3 alone, until the effective sample size falls below 90% of
   the frames, then resample (the DiffTRe scheme of Thaler & Zavadlav, Nat. Commun.
   12, 6884 (2021)).

The last rounds' values are averaged; the script prints the recovered k3 and its error.
Target and model are simulated alike (BAOAB at 4 fs), so the integrator's small
configurational bias cancels between them. With the defaults (128 replicas, 30 ps of
target, 10 rounds of 6 ps) k3 = 0.5 kcal/mol is recovered from a start at 0.25 to
within 1-2% in 4 minutes on two busy cores.

    python examples/differentiable/fit_torsion.py
    python examples/differentiable/fit_torsion.py --help
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import torch
from torch import Tensor
from torchmd_plugins.amber.bonded import AmberBonded
from torchmd_plugins.dynamics.langevin import LangevinBAOAB

from torchmd_core import (
    ParameterTable,
    Residue,
    State,
    System,
    maxwell_boltzmann_velocities,
)
from torchmd_core.geometry import dihedral_angles
from torchmd_core.parameters import trainable
from torchmd_core.reweighting import EnsembleReweighting
from torchmd_core.trajectory import simulate

#: The torsion terms (k kcal/mol, n, phase rad); row 2, the three-fold term, is fitted.
TORSIONS = ((0.2, 1, 0.0), (-0.05, 2, math.pi), (0.5, 3, 0.0))
HIDDEN_K3 = TORSIONS[2][0]
QUAD = torch.tensor([[0, 1, 2, 3]])
BINS = 36


def butane() -> System:
    """United-atom butane: 4 beads, bonds 1.54 Å, angles 114°, the torsion above."""
    masses = torch.tensor([15.035, 14.027, 14.027, 15.035], dtype=torch.float64)
    bonds = torch.tensor([[0, 1], [1, 2], [2, 3]])
    k, n, phase = (
        torch.tensor(col, dtype=torch.float64) for col in zip(*TORSIONS, strict=True)
    )
    terms = {
        "bonds": ParameterTable(
            bonds,
            torch.zeros(3, dtype=torch.int64),
            {
                "k": torch.tensor([450.0], dtype=torch.float64),
                "r0": torch.tensor([1.54], dtype=torch.float64),
            },
        ),
        "angles": ParameterTable(
            torch.tensor([[0, 1, 2], [1, 2, 3]]),
            torch.zeros(2, dtype=torch.int64),
            {
                "k": torch.tensor([62.0], dtype=torch.float64),
                "theta0": torch.tensor([math.radians(114.0)], dtype=torch.float64),
            },
        ),
        "torsions": ParameterTable(
            QUAD.expand(3, 4).clone(),
            torch.arange(3),
            {"k": k, "periodicity": n, "phase": phase},
        ),
    }
    return System(
        masses=masses,
        charges=torch.zeros(4, dtype=torch.float64),
        atomic_numbers=torch.full((4,), 6, dtype=torch.int64),
        atom_names=("C1", "C2", "C3", "C4"),
        atom_types=("CH3", "CH2", "CH2", "CH3"),
        residue_index=torch.zeros(4, dtype=torch.int64),
        residues=(Residue("BUT", 1),),
        bonds=bonds,
        exclusions=torch.tensor([[0, 1], [1, 2], [2, 3], [0, 2], [1, 3], [0, 3]]),
        terms=terms,
    )


def start(system: System, n_replicas: int, seed: int) -> State:
    """Zig-zag chains in the trans conformation with thermal velocities."""
    x = torch.tensor(
        [[0.0, 0.0, 0.0], [1.29, 0.84, 0.0], [2.58, 0.0, 0.0], [3.87, 0.84, 0.0]],
        dtype=torch.float64,
    )
    positions = x.expand(n_replicas, 4, 3).clone()
    velocities = maxwell_boltzmann_velocities(system, 300.0, n_replicas, seed=seed)
    return State(positions=positions, velocities=velocities)


def dihedral(frames: Tensor) -> Tensor:
    """(F,) φ of each frame, rad."""
    return dihedral_angles(frames, QUAD, None)[:, 0]


def histogram(frames: Tensor) -> Tensor:
    """(F, BINS) one-hot bin of φ of each frame (its mean is the histogram)."""
    index = (
        ((dihedral(frames) + math.pi) / (2 * math.pi) * BINS).long().clamp(0, BINS - 1)
    )
    return torch.nn.functional.one_hot(index, BINS).to(frames.dtype)


class Sampler:
    """Langevin dynamics of all replicas; each call continues where the last stopped."""

    def __init__(
        self,
        potential: AmberBonded,
        system: System,
        args: argparse.Namespace,
        seed: int,
    ) -> None:
        config = LangevinBAOAB.Config(
            timestep_fs=args.timestep_fs, temperature_K=300.0, friction_per_ps=5.0
        )
        self.integrator = LangevinBAOAB(config, system)
        self.integrator.seed(seed, args.replicas)
        self.potential = potential
        self.state = start(system, args.replicas, seed)
        self.args = args

    def frames(self, picoseconds: float, warmup_ps: float) -> Tensor:
        """(F, 4, 3) frames every ``--every`` steps after ``warmup_ps`` of warm-up."""
        a = self.args
        per_ps = 1000.0 / a.timestep_fs
        warmup = a.every * round(warmup_ps * per_ps / a.every)
        steps = a.every * round(picoseconds * per_ps / a.every)
        # forces cached in the state are those of the old parameters: drop them
        state = self.state.replace(positions=self.state.positions)
        with torch.no_grad():
            traj = simulate(
                self.potential,
                self.integrator,
                state,
                warmup + steps,
                record_every=a.every,
                record_positions=True,
            )
        self.state = traj.final
        assert traj.positions is not None
        kept = traj.positions[warmup // a.every :]  # (F_per_replica, R, 4, 3)
        return kept.reshape(-1, 4, 3)


def fit(args: argparse.Namespace) -> dict[str, float]:
    torch.manual_seed(args.seed)
    system = butane()
    t0 = time.perf_counter()
    target_model = AmberBonded(None, system)
    target_sampler = Sampler(target_model, system, args, args.seed + 1)
    target = histogram(
        target_sampler.frames(args.target_ps, args.target_warmup_ps)
    ).mean(0)
    model = AmberBonded(None, system)
    k = trainable(model, "torsions.k", types={"torsions.k": [2]})["torsions.k"]
    with torch.no_grad():
        k[2] = args.start_k3
    optimizer = torch.optim.Adam([k], lr=args.lr)
    # smaller steps as the fit settles: Adam's steps are ~lr whatever the gradient
    schedule = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=args.lr_decay)
    sampler = Sampler(model, system, args, args.seed + 2)
    history: list[float] = []
    for round_ in range(args.rounds):
        frames = sampler.frames(args.sample_ps, args.warmup_ps)
        ensemble = EnsembleReweighting(
            model, frames, 300.0, batch_size=8192, min_effective_fraction=0.9
        )
        bins = histogram(frames)
        for _ in range(args.inner):
            average = ensemble.average(bins)
            loss = (average.value - target).square().sum()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if ensemble.needs_resampling():
                break
        schedule.step()
        history.append(float(k.detach()[2]))
        print(
            f"round {round_ + 1:2d}: k3 = {history[-1]:.4f} kcal/mol, "
            f"loss {float(loss.detach()):.2e}, ESS {average.effective_fraction:.2f}",
            flush=True,
        )
    tail = history[-args.average_last :]
    recovered = sum(tail) / len(tail)
    error = recovered / HIDDEN_K3 - 1.0
    print(
        f"hidden k3 = {HIDDEN_K3:.4f}, started at {args.start_k3:.4f}, recovered "
        f"{recovered:.4f} kcal/mol (mean of the last {len(tail)} rounds): "
        f"error {100 * error:+.1f}% in {time.perf_counter() - t0:.0f} s"
    )
    return {"hidden": HIDDEN_K3, "recovered": recovered, "relative_error": error}


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--replicas", type=int, default=128, help="replicas sampled at once")
    p.add_argument("--timestep-fs", type=float, default=4.0, help="Langevin BAOAB step")
    p.add_argument(
        "--target-ps", type=float, default=30.0, help="sampling of the target"
    )
    p.add_argument(
        "--target-warmup-ps", type=float, default=5.0, help="discarded first"
    )
    p.add_argument("--sample-ps", type=float, default=6.0, help="sampling per round")
    p.add_argument("--warmup-ps", type=float, default=2.0, help="discarded per round")
    p.add_argument("--every", type=int, default=25, help="steps between frames")
    p.add_argument("--rounds", type=int, default=10, help="sampling rounds")
    p.add_argument("--inner", type=int, default=10, help="most Adam steps per round")
    p.add_argument("--average-last", type=int, default=4, help="rounds averaged")
    p.add_argument(
        "--start-k3", type=float, default=0.25, help="initial guess, kcal/mol"
    )
    p.add_argument(
        "--lr", type=float, default=0.04, help="Adam learning rate, kcal/mol"
    )
    p.add_argument("--lr-decay", type=float, default=0.8, help="factor per round")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = parse(sys.argv[1:] if argv is None else argv)
    torch.set_num_threads(args.threads)
    return fit(args)


if __name__ == "__main__":
    main()
