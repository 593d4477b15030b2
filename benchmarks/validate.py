"""Long validations that stay out of the default test run: one function per area.

    python benchmarks/validate.py              # every validation
    python benchmarks/validate.py nonbonded    # only the named ones

Each validation runs its ``@pytest.mark.slow`` tests and may print the figures it
checks. Add yours as a function decorated with ``@validation`` (the name is the
function's). Exit status: the number of failed validations.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VALIDATIONS: dict[str, Callable[[], int]] = {}


def validation(fn: Callable[[], int]) -> Callable[[], int]:
    """Register ``fn`` (returns 0 on success) under its name."""
    VALIDATIONS[fn.__name__] = fn
    return fn


def run(*args: str) -> int:
    """Run a command from the repository root with this interpreter; its exit status."""
    return subprocess.call([sys.executable, *args], cwd=ROOT)


def slow_tests(*paths: str) -> int:
    return run("-m", "pytest", "-q", "-m", "slow", *paths)


@validation
def nonbonded() -> int:
    """The nonbonded potential against OpenMM: slow tests, then the figures."""
    return slow_tests("tests/plugins/nonbonded") or run(
        "benchmarks/nonbonded_parity.py"
    )


@validation
def amber() -> int:
    """Loaders + amber (+ nonbonded) against OpenMM: slow tests (DHFR), then the
    figures."""
    return slow_tests(
        "tests/plugins/amber", "tests/plugins/test_openmm_parity.py"
    ) or run("benchmarks/amber_parity.py")


@validation
def restart() -> int:
    """Exact restart with the built-in physics: solvated dipeptide, Langevin with
    constraints, Monte Carlo barostat, float32; checkpoint, crash, resume (slow
    tests)."""
    return slow_tests("tests/plugins/reporters")


@validation
def torchmdnet() -> int:
    """The shipped TensorNet example: 1,000 stable Langevin steps at 300 K, and the
    training script end to end (short settings)."""
    return slow_tests("tests/plugins/torchmdnet")


@validation
def dynamics() -> int:
    """Integrators, constraints, barostat, replicas: quick slow tests, then full
    figures."""
    return slow_tests("tests/plugins/dynamics", "tests/plugins/barostats") or run(
        "benchmarks/dynamics_validation.py"
    )


@validation
def distributed() -> int:
    """torch.distributed and replica exchange: the quick 2-process tests, then torchrun
    on the examples (ensemble and replica exchange equal to one process, DDP training
    through MD printing the losses of one process)."""
    quick = ("tests/core/test_distributed.py", "tests/core/test_exchange.py")
    return run("-m", "pytest", "-q", *quick) or slow_tests(quick[0])


@validation
def differentiable() -> int:
    """Differentiable simulation: backprop through 1,000 steps of the solvated dipeptide
    within 4 GB, the 500-step LJ ε gradient against finite differences, the torsion fit
    within 5% (slow tests), then the memory/time table of checkpointing."""
    return slow_tests("tests/core/test_differentiable.py") or run(
        "benchmarks/differentiable.py", "--steps", "50"
    )


@validation
def virtual_sites() -> int:
    """4- and 5-site waters (OPC, TIP4P-Ew, TIP5P) against OpenMM: every system, loader
    route and nonbonded mode, sites rebuilt and as given (figures)."""
    return run("benchmarks/virtual_sites_parity.py")


@validation
def report() -> int:
    """Regenerate docs/pages/validation.md: parity with OpenMM per system and term
    (live), then the full dynamics suites (about 15 minutes on 2 CPU cores)."""
    return run("benchmarks/validation_report.py")


def main(argv: list[str]) -> int:
    names = argv or list(VALIDATIONS)
    unknown = [n for n in names if n not in VALIDATIONS]
    if unknown:
        print(
            f"unknown validation(s) {unknown}; known: {', '.join(VALIDATIONS)}",
            file=sys.stderr,
        )
        return 2
    failed = [n for n in names if VALIDATIONS[n]() != 0]
    print(
        f"validations failed: {', '.join(failed)}"
        if failed
        else "all validations passed"
    )
    return len(failed)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
