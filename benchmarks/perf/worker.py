"""One engine on one case, in a process of its own so that its peak memory is its own.

    python -m perf.worker SPEC.json RESULT.json

SPEC holds ``engine``, ``device``, ``case``, ``folder`` and ``n_atoms`` (the prepared
input), ``task`` (``steps``: MD steps; ``forces``: energy + force evaluations at fixed
positions), ``threads`` and the timing options (``block_s``, ``repeats``,
``budget_s``). RESULT gets the timing, steps/s (or evals/s), the final temperature (or
the potential energy: a sanity check) and the peak resident memory of this process
(``VmHWM``: interpreter and libraries included; ``rss_imports_mb`` is the part before
the simulation was built).
"""

from __future__ import annotations

import gc
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

from perf.cases import CASES, Case
from perf.engines import Run, setup
from perf.prepare import Prepared
from perf.timing import Timing, time_blocks


def peak_rss_mb() -> float:
    """This process's peak resident memory, MB.

    Linux's ``ru_maxrss`` of a process started by fork + exec starts at the parent's
    peak (the forked copy's high-water mark survives the exec), so the high-water mark
    of the process's own address space, ``VmHWM``, is read where there is one.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def measure(
    spec: dict[str, Any], case: Case, prepared: Prepared, threads: int
) -> tuple[Run, Timing, float]:
    """Build the simulation with ``threads`` threads and time it.

    Returns:
        (run, timing, setup time in s)
    """
    t0 = time.perf_counter()
    run = setup(spec["engine"], case, prepared, spec["device"], threads)
    setup_s = time.perf_counter() - t0
    work = run.evaluate if spec.get("task", "steps") == "forces" else run.advance
    timing = time_blocks(
        work, run.sync, spec["block_s"], spec["repeats"], spec["budget_s"]
    )
    return run, timing, setup_s


def main(argv: list[str]) -> None:
    spec = json.loads(Path(argv[0]).read_text())
    case = next(c for c in CASES if c.name == spec["case"])
    prepared = Prepared(Path(spec["folder"]), spec["n_atoms"])
    threads = int(spec["threads"])
    if spec["engine"] != "openmm":
        import torch

        torch.set_num_threads(threads)
    rss_imports = peak_rss_mb()
    run, timing, setup_s = measure(spec, case, prepared, threads)
    temperature, info = run.temperature_K(), run.info
    tried = {threads: case.replicas / timing.median_s}
    if (
        spec["engine"] == "openmm"
        and spec["device"] == "cpu"
        and case.replicas > 1
        and threads > 1
    ):
        # Many small contexts: OpenMM is fastest with one thread each; keep its best.
        del run
        gc.collect()
        run, timing1, setup1 = measure(spec, case, prepared, 1)
        tried[1] = case.replicas / timing1.median_s
        if tried[1] > tried[threads]:
            timing, setup_s, threads = timing1, setup1, 1
            temperature, info = run.temperature_K(), run.info
    rate = case.replicas / timing.median_s  # replica-steps (-evaluations) per second
    if spec.get("task", "steps") == "forces":
        measured = {"evals_per_s": rate, "energy_kcal_mol": run.energy_kcal_mol()}
    else:
        measured = {"steps_per_s": rate, "temperature_K": temperature}
    result: dict[str, Any] = {
        **measured,
        "setup_s": setup_s,
        "threads": threads,
        "peak_rss_mb": peak_rss_mb(),
        "rss_imports_mb": rss_imports,
        "timing": timing.as_dict(),
        "info": info,
    }
    if len(tried) > 1:
        result["threads_tried"] = {str(t): s for t, s in tried.items()}
    if spec["device"] == "cuda" and "torch" in sys.modules:
        import torch

        result["gpu_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    Path(argv[1]).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main(sys.argv[1:])
