"""The ``checkpoint`` reporter: a checkpoint every ``interval`` steps and at the end of
each run, written atomically (a crash leaves the previous checkpoint intact)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from torchmd_core import (
    Frame,
    Reporter,
    ReporterConfig,
    RunInfo,
    Simulation,
    System,
    save_checkpoint,
)

__all__ = ["CheckpointReporter"]


class CheckpointReporter(Reporter):
    """Everything needed to continue the run exactly (``tmd run CONFIG --resume FILE``),
    every ``interval`` steps and at the end of each run.

    It reports after every other reporter of the same step, so the file counts they
    record include that step's frames. A state is checked for non-finite values before
    it is written: a failing run never replaces the last good checkpoint.
    """

    runs_last = True
    at_end = True
    collective = True  # every process sends its replicas; rank 0 writes the file

    class Config(ReporterConfig):
        kind: Literal["checkpoint"] = "checkpoint"
        file: Path = Field(
            description="Checkpoint file (relative to the config file); "
            "replaced atomically at each write."
        )
        interval: int = Field(10000, gt=0, description="Steps between checkpoints.")

    def __init__(self, config: Config, system: System) -> None:
        super().__init__(config, system)
        self.file = Path(config.file)
        #: Step of the last checkpoint this reporter wrote (None: none yet).
        self.last_step: int | None = None
        self._simulation: Simulation | None = None
        self._start = 0

    def output_conflicts(self, run: RunInfo) -> list[Path]:
        if not self.file.exists() or (run.resume and self.last_step is not None):
            return []
        return [self.file]

    def open(self, run: RunInfo) -> None:
        if run.simulation is None:
            raise ValueError(
                "the checkpoint reporter needs RunInfo.simulation (run it from a "
                "Simulation)"
            )
        self._simulation = run.simulation
        self._start = run.start_step

    def report(self, frame: Frame) -> None:
        if frame.step == self._start:
            return  # nothing new since the run started
        assert self._simulation is not None
        previous, self.last_step = self.last_step, frame.step
        try:
            save_checkpoint(self._simulation, self.file)
        except BaseException:
            self.last_step = previous
            raise

    def close(self) -> None:
        self._simulation = None

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.last_step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.last_step = state.get("step")
