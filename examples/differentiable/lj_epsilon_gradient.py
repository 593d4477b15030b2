"""Gradient of an observable after 500 steps of MD with respect to the LJ ε of each atom
type, by backpropagation through the trajectory, checked against finite differences.

Alanine dipeptide in vacuum (tests/data/ala2_vacuum, AMBER ff: ``amber`` + ``nonbonded``
without cutoff), velocity Verlet at 1 fs in float64 from the stored structure with
300 K Maxwell-Boltzmann velocities. The observable is the squared distance between the
two terminal methyl carbons after the last step. ``simulate`` keeps the graph through
all steps (checkpointed every 50 steps), one backward pass gives dO/dε for every LJ
type, and central differences (two more runs per type, without graph) check each.

    python examples/differentiable/lj_epsilon_gradient.py           # ~1-2 minutes
    python examples/differentiable/lj_epsilon_gradient.py --steps 100
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torchmd_plugins.dynamics.verlet import VelocityVerlet

from torchmd_core import Simulation, State, parse_config
from torchmd_core.parameters import trainable
from torchmd_core.trajectory import simulate

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data" / "ala2_vacuum"
METHYLS = (1, 18)  # the carbons of the ACE and NME methyl groups


def observable(state: State) -> torch.Tensor:
    """(R,) squared methyl-methyl distance, Å²."""
    a, b = METHYLS
    return (state.positions[:, b] - state.positions[:, a]).square().sum(-1)


def setup(seed: int) -> Simulation:
    config = parse_config(
        {
            "system": {
                "topology": str(DATA / "ala2_vacuum.prmtop"),
                "coordinates": str(DATA / "ala2_vacuum.pdb"),
            },
            "potentials": [{"kind": "amber"}, {"kind": "nonbonded"}],
            "integrator": {"kind": "verlet", "timestep_fs": 1.0},
            "initial_temperature_K": 300.0,
            "steps": 1,
            "precision": "float64",
            "seed": seed,
        },
        base_dir=ROOT,
    )
    return Simulation.from_config(config)


def run(args: argparse.Namespace) -> dict[str, list[float]]:
    sim = setup(args.seed)
    assert isinstance(sim.integrator, VelocityVerlet)
    epsilon = trainable(sim.potential, "nonbonded.epsilon")["nonbonded.epsilon"]
    names = sim.system.nonbonded.type_names if sim.system.nonbonded else ()

    def final_observable() -> torch.Tensor:
        traj = simulate(
            sim.potential,
            sim.integrator,
            sim.state,
            args.steps,
            checkpoint_every=args.checkpoint_every,
        )
        return observable(traj.final).sum()

    t0 = time.perf_counter()
    value = final_observable()
    (gradient,) = torch.autograd.grad(value, epsilon)
    t1 = time.perf_counter()
    numeric = []
    for t in range(epsilon.numel()):
        h = args.relative_step * float(epsilon[t].detach())
        results = []
        for sign in (1.0, -1.0):
            with torch.no_grad():
                epsilon[t] += sign * h
                results.append(float(final_observable()))
                epsilon[t] -= sign * h
        numeric.append((results[0] - results[1]) / (2 * h))
    t2 = time.perf_counter()
    print(
        f"alanine dipeptide, {args.steps} Verlet steps of 1 fs, float64: "
        f"O = |C(ACE) - C(NME)|² = {float(value.detach()):.4f} Å²"
    )
    print("LJ type  ε kcal/mol   dO/dε autograd   dO/dε central diff.   rel. diff.")
    worst = 0.0
    for t, (a, b) in enumerate(zip(gradient.tolist(), numeric, strict=True)):
        rel = abs(a - b) / max(abs(b), 1e-12)
        worst = max(worst, rel)
        print(
            f"{names[t]:>7} {float(epsilon[t].detach()):10.4f} {a:16.6f} {b:21.6f} "
            f"{rel:12.2e}"
        )
    print(
        f"largest relative difference {worst:.1e}; backprop {t1 - t0:.1f} s, "
        f"finite differences {t2 - t1:.1f} s"
    )
    return {"autograd": gradient.tolist(), "finite_difference": numeric}


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--checkpoint-every", type=int, default=50)
    p.add_argument(
        "--relative-step",
        type=float,
        default=1e-5,
        help="finite-difference step, relative to ε",
    )
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, list[float]]:
    args = parse(sys.argv[1:] if argv is None else argv)
    torch.set_num_threads(args.threads)
    return run(args)


if __name__ == "__main__":
    main()
