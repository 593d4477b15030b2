"""What ``tmd run CONFIG`` does: build, resume or minimise, run with a progress bar,
stop cleanly on Ctrl-C (or SIGTERM) with a checkpoint, and explain failures.

Exit codes: 0 done, 1 the run failed (:class:`~torchmd_core.errors.SimulationError`),
2 bad input, 130 interrupted by Ctrl-C and 143 by SIGTERM (a checkpoint was written
and the message says how to continue).

Started by ``torchrun`` with several processes, every process runs its share of the
replicas (see :mod:`torchmd_core.distributed`); rank 0 draws the progress bar and
prints the messages, for all of them.
"""

from __future__ import annotations

import io
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from types import FrameType
from typing import TextIO

from torchmd_core import units
from torchmd_core.checkpoint import load_checkpoint, save_checkpoint
from torchmd_core.config import SimulationConfig, load_config
from torchmd_core.distributed import (
    ReplicaGroup,
    join,
    launch_rank,
    reported_by_rank_zero,
)
from torchmd_core.errors import ConfigError, SimulationError, TorchMDError
from torchmd_core.reporter import Reporter
from torchmd_core.simulation import Simulation

__all__ = ["ProgressBar", "checkpoint_path", "run_config"]

_EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}


class ProgressBar:
    """A one-line progress display: steps, ns/day and time left, redrawn in place.

    Args:
        stream: where to draw (a terminal).
        width: characters of the bar itself.
    """

    def __init__(self, stream: TextIO | None = None, width: int = 30) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self._start = time.perf_counter()
        self._first_step: int | None = None
        self._open = False

    def __call__(self, step: int, end: int, ns_per_day: float) -> None:
        now = time.perf_counter()
        if self._first_step is None:  # the first call: time from here on
            self._first_step, self._start = step, now
            rate = 0.0
        else:
            done = step - self._first_step
            rate = done / (now - self._start) if now > self._start and done > 0 else 0.0
        left = (end - step) / rate if rate > 0 else None
        frac = min(step / end, 1.0) if end else 1.0
        bar = "#" * int(self.width * frac)
        eta = "--:--:--" if left is None else _hms(left)
        self.stream.write(
            f"\r[{bar:<{self.width}}] {step}/{end} steps {100 * frac:5.1f}%  "
            f"{ns_per_day:9.2f} ns/day  {eta} left "
        )
        self._open = True
        if step >= end:
            self.finish()
        self.stream.flush()

    def finish(self) -> None:
        """End the line (before other messages are printed)."""
        if self._open:
            self.stream.write("\n")
            self.stream.flush()
            self._open = False


def _hms(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def checkpoint_path(simulation: Simulation, config_path: Path) -> Path:
    """Where an interrupted run saves: the checkpoint reporter's file, else
    ``CONFIG.interrupted.chk`` beside the config."""
    reporter = _checkpoint_reporter(simulation)
    if reporter is not None:
        return Path(reporter.outputs()[0])
    return config_path.with_name(config_path.stem + ".interrupted.chk")


def _checkpoint_reporter(simulation: Simulation) -> Reporter | None:
    for reporter in simulation.reporters:
        if (
            getattr(reporter.config, "kind", None) == "checkpoint"
            and reporter.outputs()
        ):
            return reporter
    return None


def run_config(
    config_path: Path,
    resume: Path | None = None,
    overwrite: bool = False,
    quiet: bool = False,
    stream: TextIO | None = None,
) -> int:
    """Run a config file to its ``steps``; returns the exit code.

    Args:
        config_path: the YAML config.
        resume: a checkpoint to continue from.
        overwrite: replace existing output files.
        quiet: no progress bar and no summary.
        stream: where progress and messages go (default: stderr); the bar is drawn
            only when it is a terminal.
    """
    out = stream if stream is not None else sys.stderr
    rank = launch_rank()
    group: ReplicaGroup | None = None
    try:
        config = load_config(config_path)
        group = join(config)
        if group is not None and group.rank != 0:  # rank 0 speaks for every process
            quiet, out = True, io.StringIO()
        return _run(config, config_path, group, resume, overwrite, quiet, out)
    except TorchMDError as err:
        if rank and (group is None or reported_by_rank_zero(err)):
            return err.exit_code  # rank 0 printed the same
        raise
    finally:
        if group is not None:
            group.close()


def _together(group: ReplicaGroup | None) -> AbstractContextManager[None]:
    return nullcontext() if group is None else group.together()


def _run(
    config: SimulationConfig,
    config_path: Path,
    group: ReplicaGroup | None,
    resume: Path | None,
    overwrite: bool,
    quiet: bool,
    out: TextIO,
) -> int:
    with _together(group):
        simulation = Simulation.from_config(config, group=group)
    with _together(group):
        if resume is not None:
            load_checkpoint(simulation, resume)
    with _together(group):
        remaining = config.steps - simulation.state.step
        if remaining < 0:
            raise ConfigError(
                f"steps: the checkpoint is at step {simulation.state.step}, beyond the "
                f"config's steps ({config.steps}); raise 'steps' to continue the run"
            )
        if not overwrite:  # refuse before minimising, not after
            simulation.check_outputs(resume=resume is not None)
        if resume is None and config.minimize is not None:
            simulation.minimize(
                config.minimize.tolerance_kcal_mol_A, config.minimize.max_iterations
            )
    bar = ProgressBar(out) if not quiet and _is_terminal(out) else None
    started = time.perf_counter()
    first = simulation.state.step
    # Distributed: torchrun passes a Ctrl-C on to its processes, which see it twice.
    with _stop_on_signals(simulation, abort_on_second=group is None) as received:
        try:
            simulation.run(
                remaining, resume=resume is not None, overwrite=overwrite, progress=bar
            )
        except SimulationError as err:
            if bar is not None:
                bar.finish()
            raise _with_resume_hint(err, simulation, config_path) from None
        finally:
            if bar is not None:
                bar.finish()
    signum = received[0] if received else 0
    if group is not None:  # a stop one process received stopped them all
        early = simulation.state.step < config.steps
        signum = group.sync(signum or int(early))
    if signum:
        if signum not in _EXIT_CODES:  # stopped by a request without a signal
            signum = signal.SIGTERM
        with _together(group):
            return _interrupted(simulation, config_path, signum, out)
    if not quiet:
        elapsed = time.perf_counter() - started
        done = simulation.state.step - first
        speed = (
            units.ns_per_day(done / elapsed, simulation.integrator.timestep_fs)
            if elapsed > 0
            else 0.0
        )
        print(
            f"finished {config.steps} steps ({done} in this run, {elapsed:.1f} s, "
            f"{speed:.2f} ns/day)",
            file=out,
        )
        if simulation.exchange is not None:
            print(simulation.exchange.summary(), file=out)
    return 0


def _interrupted(
    simulation: Simulation, config_path: Path, signum: int, out: TextIO
) -> int:
    target = checkpoint_path(simulation, config_path)
    save_checkpoint(simulation, target)
    name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
    print(
        f"{name}: stopped at step {simulation.state.step}; checkpoint written to "
        f"'{target}'.\nContinue with: tmd run {config_path} --resume {target}",
        file=out,
    )
    return _EXIT_CODES.get(signal.Signals(signum), 130)


def _with_resume_hint(
    err: SimulationError, simulation: Simulation, config_path: Path
) -> SimulationError:
    """The error with a line on the last good checkpoint (never overwritten by a failed
    state: the run loop checks every state before anything is written)."""
    message = err.args[0] if err.args else ""
    reporter = _checkpoint_reporter(simulation)
    if reporter is not None and reporter.outputs()[0].exists():
        step = reporter.state_dict().get("step")
        at = f" (step {step})" if step is not None else ""
        message += (
            f"\nThe last good checkpoint, '{reporter.outputs()[0]}'{at}, is intact."
        )
    else:
        message += (
            "\nNo checkpoint was written (add a 'checkpoint' reporter to keep one)."
        )
    hinted = type(err)(message)
    hinted.__dict__.update(err.__dict__)  # exit code, how processes agreed on it
    return hinted


@contextmanager
def _stop_on_signals(
    simulation: Simulation, abort_on_second: bool = True
) -> Iterator[list[int]]:
    """While inside, Ctrl-C and SIGTERM ask the simulation to stop after the current
    step (the list yielded receives the signal); a second Ctrl-C interrupts at once
    (unless not ``abort_on_second``)."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        if received and abort_on_second:  # asked twice: stop now, no new checkpoint
            raise KeyboardInterrupt
        if received:
            return
        received.append(signum)
        simulation.request_stop()

    previous = {sig: signal.signal(sig, handler) for sig in _EXIT_CODES}
    try:
        yield received
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _is_terminal(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
