"""What ``tmd run CONFIG`` does: build, resume or minimise, run with progress, and on
Ctrl-C write a checkpoint and stop cleanly."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TextIO

from torchmd_core.checkpoint import load_checkpoint, save_checkpoint
from torchmd_core.config import load_config
from torchmd_core.errors import ConfigError
from torchmd_core.simulation import Simulation

__all__ = ["ProgressBar", "run_config"]


class ProgressBar:
    """A one-line progress display on a terminal: steps, ns/day and time left."""

    def __init__(self, stream: TextIO = sys.stderr) -> None:
        self.stream = stream
        self._start = time.perf_counter()
        self._first_step: int | None = None

    def __call__(self, step: int, end: int, ns_per_day: float) -> None:
        if self._first_step is None:
            self._first_step = step - 1
            self._start = time.perf_counter()
        done = step - self._first_step
        elapsed = time.perf_counter() - self._start
        left = (end - step) * elapsed / done if done > 0 else 0.0
        frac = step / end if end else 1.0
        bar = "#" * int(30 * frac)
        self.stream.write(
            f"\r[{bar:<30}] {step}/{end} steps  {ns_per_day:8.2f} ns/day  {_hms(left)} left "
        )
        if step >= end:
            self.stream.write("\n")
        self.stream.flush()


def _hms(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def checkpoint_path(simulation: Simulation, config_path: Path) -> Path:
    """Where an interrupted run saves: the checkpoint reporter's file, else beside the config."""
    for reporter in simulation.reporters:
        if reporter.kind_name() == "checkpoint":
            return Path(reporter.outputs()[0])
    return config_path.with_suffix(".interrupted.chk")


def run_config(config_path: Path, resume: Path | None = None, overwrite: bool = False, quiet: bool = False) -> int:
    """Run a config file to its ``steps``; returns the exit code."""
    config = load_config(config_path)
    simulation = Simulation.from_config(config)
    if resume is not None:
        load_checkpoint(simulation, resume)
    elif config.minimize is not None:
        simulation.minimize(config.minimize.tolerance_kcal_mol_A, config.minimize.max_iterations)
    remaining = config.steps - simulation.state.step
    if remaining < 0:
        raise ConfigError(
            f"steps: the checkpoint is at step {simulation.state.step}, beyond the config's "
            f"steps ({config.steps}); raise 'steps' to continue the run"
        )
    progress = ProgressBar() if not quiet and sys.stderr.isatty() else None
    try:
        simulation.run(remaining, resume=resume is not None, overwrite=overwrite, progress=progress)
    except KeyboardInterrupt:
        target = checkpoint_path(simulation, config_path)
        save_checkpoint(simulation, target)
        print(
            f"\ninterrupted at step {simulation.state.step}; checkpoint written to '{target}'. "
            f"Continue with: tmd run {config_path} --resume {target}",
            file=sys.stderr,
        )
        return 130
    if not quiet:
        print(f"finished {config.steps} steps", file=sys.stderr)
    return 0
