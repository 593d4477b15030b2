"""Time torchmd-core against OpenMM and TorchMD on the systems of issue 8.

    python benchmarks/bench.py              # everything (about 18 min on 2 cores)
    python benchmarks/bench.py --quick      # smoke run: small systems, short blocks
    python benchmarks/bench.py --task forces  # energy + forces only (issue 3)
    python benchmarks/bench.py --systems ala2_solvated,dhfr_1fs --threads 2
    python benchmarks/bench.py --report benchmarks/results/latest.json  # page only

Each engine runs each system in a process of its own (peak memory is its own), on the
same inputs, one after the other on this machine; OpenMM's CUDA platform and the GPU
runs are added where CUDA is present. Two tasks: ``steps`` times MD steps on every
case (issue 8); ``forces`` times one energy + force evaluation at fixed positions on
the 1 fs periodic cases (issue 3: the shared systems and the water boxes). A full
run of every system and task writes ``benchmarks/results/latest.json``,
``docs/benchmarks.md`` and ``docs/pages/benchmarks.png``; any other run writes
``results.json``, ``benchmarks.md`` and ``benchmarks.png`` to ``--out`` (default
``benchmarks/results/scratch/``, not tracked). The inputs are built once into
``--cache`` (default ``benchmarks/.cache/``, not tracked). See ``perf/README.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from perf import machine, report  # noqa: E402
from perf.cases import CASES, Case, select  # noqa: E402
from perf.prepare import Prepared, prepare, prmtop_for  # noqa: E402

ENGINES = ("torchmd-core", "openmm", "torchmd")
LATEST = HERE / "results" / "latest.json"
DOCS_PAGE = ROOT / "docs" / "benchmarks.md"
DOCS_PLOT = ROOT / "docs" / "pages" / "benchmarks.png"
SCRATCH = HERE / "results" / "scratch"
#: TorchMD's peak memory per atom pair (all N(N-1)/2 pairs are materialised each step),
#: bytes; measured on the 3k and 10k water boxes (576 MB and 2.98 GB peak).
TORCHMD_BYTES_PER_PAIR = 60.0
#: (block_s, repeats, budget_s, timeout_s) of a full and of a quick run.
PRESETS = {"full": (1.0, 5, 15.0, 600.0), "quick": (0.1, 3, 1.0, 180.0)}
#: (block_s, budget_s) of the forces task: evaluations are cheap to time; the task
#: adds about 3 min to a full run on 2 cores, most of it TorchMD on the 10k box (an
#: evaluation takes seconds there). Explicit options override them.
FORCES_PRESETS = {"full": (0.5, 5.0), "quick": (0.1, 1.0)}
TASKS = ("steps", "forces")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--quick", action="store_true", help="small systems, short timed blocks"
    )
    p.add_argument(
        "--systems", help="comma-separated: " + ", ".join(c.name for c in CASES)
    )
    p.add_argument(
        "--task",
        choices=(*TASKS, "all"),
        default="all",
        help="steps: MD steps (issue 8); forces: one energy + force evaluation at "
        "fixed positions (issue 3); all: both (default)",
    )
    p.add_argument(
        "--engines",
        default=",".join(ENGINES),
        help="comma-separated subset of " + ", ".join(ENGINES),
    )
    p.add_argument(
        "--threads",
        type=int,
        default=_usable_cpus(),
        help="CPU threads of every engine (default: usable CPUs, %(default)s)",
    )
    p.add_argument("--repeats", type=int, help="timed blocks per run (full 5, quick 3)")
    p.add_argument(
        "--block-seconds",
        type=float,
        help="length of a timed block (full 1, quick 0.1)",
    )
    p.add_argument(
        "--budget-seconds",
        type=float,
        help="timed blocks per run stop after this (full 15)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        help="a run taking longer fails (s; full 600, quick 180)",
    )
    p.add_argument(
        "--torchmd-max-gb",
        type=float,
        default=6.0,
        help="skip TorchMD where its all-pairs arrays would need more memory (GB)",
    )
    p.add_argument(
        "--no-cuda", action="store_true", help="CPU only, even where CUDA is present"
    )
    p.add_argument(
        "--data",
        type=Path,
        default=ROOT.parent / "shared" / "data",
        help="the shared input folder (default: ../shared/data beside the repository)",
    )
    p.add_argument(
        "--cache",
        type=Path,
        default=HERE / ".cache",
        help="where built inputs are kept",
    )
    p.add_argument(
        "--out",
        type=Path,
        help="folder for results.json, benchmarks.md, benchmarks.png",
    )
    p.add_argument(
        "--report",
        type=Path,
        metavar="JSON",
        help="only render the page and plot of a results JSON",
    )
    args = p.parse_args(argv)
    preset = "quick" if args.quick else "full"
    block, repeats, budget, timeout = PRESETS[preset]
    forces_block, forces_budget = FORCES_PRESETS[preset]
    args.forces_block_seconds = args.block_seconds or forces_block
    args.forces_budget_seconds = args.budget_seconds or forces_budget
    args.block_seconds = args.block_seconds or block
    args.repeats = args.repeats or repeats
    args.budget_seconds = args.budget_seconds or budget
    args.timeout = args.timeout or timeout
    args.tasks = list(TASKS) if args.task == "all" else [args.task]
    args.engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    unknown = set(args.engines) - set(ENGINES)
    if unknown:
        known = ", ".join(ENGINES)
        p.error(f"unknown engine(s) {', '.join(sorted(unknown))}; choose from {known}")
    return args


def _usable_cpus() -> int:
    return (
        len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count() or 1
    )


def outputs(args: argparse.Namespace, complete: bool) -> tuple[Path, Path, Path]:
    """(results JSON, page, plot): the documentation's for a complete full run."""
    if args.out is not None:
        return (
            args.out / "results.json",
            args.out / "benchmarks.md",
            args.out / "benchmarks.png",
        )
    if complete:
        return LATEST, DOCS_PAGE, DOCS_PLOT
    return (
        SCRATCH / "results.json",
        SCRATCH / "benchmarks.md",
        SCRATCH / "benchmarks.png",
    )


def write_report(data: dict[str, Any], page: Path, plot: Path) -> None:
    report.plot(data, plot)
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(report.render(data, os.path.relpath(plot, page.parent)))


def devices(engine: str, use_cuda: bool) -> list[str]:
    """cpu, and cuda where this engine can use it here."""
    if not use_cuda:
        return ["cpu"]
    if engine == "openmm":
        import openmm as mm

        names = {
            mm.Platform.getPlatform(i).getName()
            for i in range(mm.Platform.getNumPlatforms())
        }
        return ["cpu", "cuda"] if "CUDA" in names else ["cpu"]
    import torch

    return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]


def skip_reason(
    engine: str, case: Case, n_atoms: int, args: argparse.Namespace
) -> str | None:
    """Why ``engine`` cannot run ``case`` here, or None."""
    if engine == "torchmd":
        if machine.package_version("torchmd") == "not installed":
            return "torchmd is not installed (pip install torchmd)"
        if case.constraints != "none":
            return "TorchMD has no constraints (no SHAKE/SETTLE)"
        gb = n_atoms * (n_atoms - 1) / 2 * TORCHMD_BYTES_PER_PAIR / 1e9 * case.replicas
        if case.periodic and gb > args.torchmd_max_gb:
            pairs = n_atoms * (n_atoms - 1) // 2 / 1e6
            return (
                f"TorchMD computes all {pairs:,.0f} M pairs each step, about "
                f"{gb:,.0f} GB; over --torchmd-max-gb {args.torchmd_max_gb:g}"
            )
    return None


def run_worker(spec: dict[str, Any], threads: int, timeout: float) -> dict[str, Any]:
    """Run ``perf.worker`` on ``spec``: its result, or status 'failed' and why."""
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "PYTHONPATH": os.pathsep.join(
            [str(HERE), os.environ.get("PYTHONPATH", "")]
        ).rstrip(os.pathsep),
    }
    with tempfile.TemporaryDirectory() as tmp:
        spec_path, result_path = Path(tmp) / "spec.json", Path(tmp) / "result.json"
        spec_path.write_text(json.dumps(spec))
        try:
            done = subprocess.run(
                [sys.executable, "-m", "perf.worker", str(spec_path), str(result_path)],
                env=env,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            return {
                "status": "failed",
                "reason": f"took over {timeout:g} s (--timeout)",
            }
        if done.returncode != 0 or not result_path.exists():
            lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
            return {
                "status": "failed",
                "reason": (lines[-1] if lines else f"exit {done.returncode}")[:300],
            }
        return {"status": "ok", **json.loads(result_path.read_text())}


def forces_cases(cases: list[Case]) -> list[Case]:
    """The cases of the forces task: one replica, 1 fs periodic, no constraints (the
    shared systems and the water boxes)."""
    return [c for c in cases if c.scaling]


def run_case(
    case: Case, args: argparse.Namespace, use_cuda: bool, task: str = "steps"
) -> list[dict[str, Any]]:
    prepared: Prepared = prepare(case.structure, args.data, args.cache)
    forces = task == "forces"
    rows = []
    for engine in args.engines:
        for device in devices(engine, use_cuda):
            row: dict[str, Any] = {
                "task": task,
                "case": case.name,
                "engine": engine,
                "device": device,
                "n_atoms": prepared.n_atoms,
                "replicas": case.replicas,
                "timestep_fs": case.timestep_fs,
            }
            reason = skip_reason(engine, case, prepared.n_atoms, args)
            t0 = time.perf_counter()
            if reason is not None:
                row |= {"status": "skipped", "reason": reason}
            else:
                if engine == "torchmd":
                    prmtop_for(prepared)
                spec = {
                    "task": task,
                    "engine": engine,
                    "device": device,
                    "case": case.name,
                    "folder": str(prepared.folder),
                    "n_atoms": prepared.n_atoms,
                    "threads": args.threads,
                    "block_s": args.forces_block_seconds
                    if forces
                    else args.block_seconds,
                    "repeats": args.repeats,
                    "budget_s": args.forces_budget_seconds
                    if forces
                    else args.budget_seconds,
                }
                row |= run_worker(spec, args.threads, args.timeout)
            row["wall_s"] = time.perf_counter() - t0
            if row["status"] == "ok" and not forces:
                row["ns_per_day"] = report.ns_per_day(
                    row["steps_per_s"], case.timestep_fs
                )
            _print_row(row)
            rows.append(row)
    return rows


def _print_row(row: dict[str, Any]) -> None:
    head = f"{row['case']:16s} {report.label(row):18s}"
    if row["status"] == "ok" and row["task"] == "forces":
        print(
            f"{head} {row['evals_per_s']:11.2f} evals/s "
            f"{1e6 / (row['evals_per_s'] * row['n_atoms']):9.3f} µs/atom "
            f"E {row['energy_kcal_mol']:12.1f} kcal/mol {row['peak_rss_mb']:7.0f} MB  "
            f"({row['wall_s']:.0f} s)",
            flush=True,
        )
    elif row["status"] == "ok":
        print(
            f"{head} {row['steps_per_s']:11.2f} steps/s "
            f"{row['ns_per_day']:9.3f} ns/day {row['peak_rss_mb']:7.0f} MB  "
            f"({row['wall_s']:.0f} s)",
            flush=True,
        )
    else:
        print(f"{head} {row['status']}: {row['reason']}", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.report is not None:
        data = json.loads(args.report.read_text())
        _, page, plot = outputs(args, complete=True)
        write_report(data, page, plot)
        print(f"wrote {page} and {plot}")
        return 0
    cases = select(args.systems, args.quick)
    complete = (
        not args.quick
        and args.systems is None
        and list(args.engines) == list(ENGINES)
        and args.task == "all"
    )
    use_cuda = not args.no_cuda
    info = machine.describe(ROOT)
    print(
        f"{info['cpu']}; {args.threads} threads; "
        f"load average {info['load_average']['start']}",
        flush=True,
    )
    t0 = time.perf_counter()
    plan = [("steps", c) for c in cases] if "steps" in args.tasks else []
    if "forces" in args.tasks:
        plan += [("forces", c) for c in forces_cases(cases)]
    rows = [row for task, case in plan for row in run_case(case, args, use_cuda, task)]
    info["load_average"]["end"] = machine.load_average()
    command = "python benchmarks/bench.py " + " ".join(
        shlex.quote(a) for a in (argv or sys.argv[1:])
    )
    data = {
        "machine": info,
        "options": {
            "command": command.strip(),
            "quick": args.quick,
            "tasks": args.tasks,
            "threads": args.threads,
            "block_s": args.block_seconds,
            "repeats": args.repeats,
            "budget_s": args.budget_seconds,
            "forces_block_s": args.forces_block_seconds,
            "forces_budget_s": args.forces_budget_seconds,
        },
        "wall_s": time.perf_counter() - t0,
        "results": rows,
    }
    results, page, plot = outputs(args, complete)
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(data, indent=1) + "\n")
    write_report(data, page, plot)
    print(f"{data['wall_s'] / 60:.1f} min; wrote {results}, {page}, {plot}")
    return sum(row["status"] == "failed" for row in rows)


if __name__ == "__main__":
    sys.exit(main())
