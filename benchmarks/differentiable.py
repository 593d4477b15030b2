"""Memory and time of backpropagation through dynamics, with and without checkpointing.

    python benchmarks/differentiable.py                       # the trade-off table
    python benchmarks/differentiable.py --steps 1000 --every 20   # one configuration

The system is the solvated alanine dipeptide of tests/data/ala2_solv (688 atoms,
flexible TIP3P water), amber + nonbonded with a 9 Å reaction-field cutoff in its
periodic box, Langevin at 300 K with 1 fs steps, float64. The loss is the mean squared
end-to-end distance of the peptide (atoms 1 and 18, the two methyl carbons) over all
steps; its gradient is taken with respect to the LJ ε of every type and the torsion
force constants. Each configuration runs in its own process, whose peak resident memory
(``ru_maxrss``) is reported, together with the memory before the run (inputs and
modules loaded), the forward and backward times, and the gradient (to check that all
configurations agree).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data" / "ala2_solv"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def measure(steps: int, every: int | None, threads: int) -> dict[str, Any]:
    """One run in this process: figures as a dict."""
    import torch

    from torchmd_core import Simulation, parse_config
    from torchmd_core.parameters import trainable
    from torchmd_core.trajectory import simulate

    torch.set_num_threads(threads)
    config = parse_config(
        {
            "system": {
                "topology": str(DATA / "structure.prmtop"),
                "coordinates": str(DATA / "input.coor"),
                "rigid_water": False,
            },
            "potentials": [{"kind": "amber"}, {"kind": "nonbonded", "cutoff": 9.0}],
            "integrator": {
                "kind": "langevin",
                "temperature_K": 300,
                "timestep_fs": 1.0,
            },
            "steps": steps,
            "precision": "float64",
            "seed": 1,
        },
        base_dir=ROOT,
    )
    sim = Simulation.from_config(config)
    params = trainable(sim.potential, "nonbonded.epsilon", "torsions.k")

    def end_to_end(state: Any) -> Any:
        return (state.positions[:, 18] - state.positions[:, 1]).square().sum(-1)

    base = peak_rss_mb()
    t0 = time.perf_counter()
    traj = simulate(
        sim.potential,
        sim.integrator,
        sim.state,
        steps,
        checkpoint_every=every,
        observable=end_to_end,
        seed=1,
    )
    assert traj.observables is not None
    loss = traj.observables.mean()
    t1 = time.perf_counter()
    grads = torch.autograd.grad(loss, list(params.values()))
    t2 = time.perf_counter()
    return {
        "steps": steps,
        "checkpoint_every": every,
        "loss": float(loss),
        "gradient": [float(x) for g in grads for x in g.reshape(-1)],
        "base_rss_mb": base,
        "peak_rss_mb": peak_rss_mb(),
        "forward_s": t1 - t0,
        "backward_s": t2 - t1,
        "threads": threads,
    }


def run_child(steps: int, every: int | None, threads: int) -> dict[str, Any]:
    """:func:`measure` in a fresh process (so that peak memory is this run's)."""
    cmd = [
        sys.executable,
        __file__,
        "--json",
        "--steps",
        str(steps),
        "--every",
        str(every or 0),
        "--threads",
        str(threads),
    ]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def table(steps: int, everies: list[int | None], threads: int) -> list[dict[str, Any]]:
    rows = [run_child(steps, every, threads) for every in everies]
    print(
        f"{steps} steps, solvated alanine dipeptide (688 atoms), float64, "
        f"{threads} thread(s)"
    )
    print(
        "checkpoint_every | peak RSS MB | graph MB | forward s | backward s | total s"
    )
    for row in rows:
        graph = row["peak_rss_mb"] - row["base_rss_mb"]
        every = row["checkpoint_every"] or "none"
        total = row["forward_s"] + row["backward_s"]
        print(
            f"{every!s:>16} | {row['peak_rss_mb']:10.0f} | {graph:8.0f} | "
            f"{row['forward_s']:9.1f} | {row['backward_s']:10.1f} | {total:7.1f}"
        )
    reference = rows[0]["gradient"]
    worst = (
        max(
            abs(a - b) / max(abs(b), 1e-12)
            for row in rows[1:]
            for a, b in zip(row["gradient"], reference, strict=True)
            if abs(b) > 1e-8 * max(map(abs, reference))
        )
        if len(rows) > 1
        else 0.0
    )
    print(f"largest relative gradient difference from the first row: {worst:.2e}")
    return rows


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument(
        "--every",
        type=str,
        default="0,5,10,25,50",
        help="comma-separated checkpoint_every values, 0 = none",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="one run, JSON to stdout")
    parser.add_argument(
        "--max-rss-mb",
        type=float,
        default=None,
        help="fail when a run's peak memory exceeds this",
    )
    args = parser.parse_args(argv)
    everies = [int(e) or None for e in args.every.split(",")]
    if args.json:
        print(json.dumps(measure(args.steps, everies[0], args.threads)))
        return 0
    rows = table(args.steps, everies, args.threads)
    if args.max_rss_mb is not None:
        over = [r for r in rows if r["peak_rss_mb"] > args.max_rss_mb]
        for r in over:
            print(
                f"FAIL: checkpoint_every={r['checkpoint_every']} peaked at "
                f"{r['peak_rss_mb']:.0f} MB > {args.max_rss_mb:.0f} MB"
            )
        return len(over)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
