"""What every built-in file reporter shares: file names per replica, refusing files
it did not write, and continuing its files exactly after a checkpoint.

A :class:`FileReporter` keeps a record of each file it writes (bytes and frames, taken
right after a flush), which checkpoints store. When a run resumes, each recorded file
is cut back to the recorded size (dropping what was written after the checkpoint)
and continued; a file shorter than its record, or not what the record describes, is
refused rather than touched. Files are created at the first frame, so a run that
fails while setting up leaves no empty files behind.
"""

from __future__ import annotations

import os
from abc import abstractmethod
from pathlib import Path
from typing import Any, ClassVar

from torchmd_core import (
    CheckpointError,
    OutputExistsError,
    Reporter,
    ReporterConfig,
    RunInfo,
    System,
)

__all__ = ["FileReporter", "Record", "fsync_file", "replica_paths"]

#: name → {"bytes": size after the last flush, "frames": frames in the file}
Record = dict[str, dict[str, int]]


def replica_paths(path: Path, n_replicas: int) -> list[Path]:
    """The files of ``n_replicas`` replicas: ``path`` itself for one replica, else
    ``<stem>_r<k><suffix>`` (``traj.dcd`` → ``traj_r0.dcd``, ``traj_r1.dcd``, ...;
    ``k`` zero-padded to the same width, so the files sort by replica)."""
    if n_replicas == 1:
        return [path]
    width = len(str(n_replicas - 1))
    return [
        path.with_name(f"{path.stem}_r{r:0{width}d}{path.suffix}")
        for r in range(n_replicas)
    ]


def fsync_file(path: Path) -> None:
    """Push a file's written data to the disk (so a checkpoint never records frames
    that a power cut could still lose)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FileReporter(Reporter):
    """Base of reporters writing ``config.file`` (one per replica when
    :attr:`per_replica`). Subclasses implement :meth:`continue_file` (check and cut
    back a recorded file) and write through their own writers; they call
    :meth:`count_frame` for each frame written to a file."""

    #: One file per replica (trajectories) or one file for all (CSV).
    per_replica: ClassVar[bool] = True

    def __init__(self, config: ReporterConfig, system: System) -> None:
        super().__init__(config, system)
        self.file = Path(getattr(config, "file"))  # noqa: B009 - subclasses declare it
        self.paths: list[Path] = [self.file]
        #: What this reporter wrote, by file name (None: nothing written or restored).
        self.records: Record | None = None
        self.last_step: int | None = None
        self._frames: dict[str, int] = {}

    # -- files -------------------------------------------------------------------------
    def files_for(
        self, n_replicas: int, first: int = 0, total: int | None = None
    ) -> list[Path]:
        """The files of replicas ``first .. first + n_replicas - 1`` of ``total``
        (default ``n_replicas``): named by their place in the whole ensemble, so that
        a distributed run writes the files of a single-process run."""
        if not self.per_replica:
            return [self.file]
        paths = replica_paths(self.file, n_replicas if total is None else total)
        return paths[first : first + n_replicas]

    def run_files(self, run: RunInfo) -> list[Path]:
        return self.files_for(run.n_replicas, run.first_replica, run.total_replicas)

    def outputs(self) -> tuple[Path, ...]:
        return tuple(self.paths)

    def checkpoint_key(self) -> str:
        return f"{self.kind_name()}:{self.file.name}"  # the same before and after open

    def output_conflicts(self, run: RunInfo) -> list[Path]:
        paths = self.run_files(run)
        known = self.records or {}
        if run.resume:
            return [p for p in paths if p.exists() and p.name not in known]
        return [p for p in paths if p.exists()]

    def open(self, run: RunInfo) -> None:
        self.paths = self.run_files(run)
        known = self.records or {}
        for path in self.paths:
            record = known.get(path.name) if run.resume else None
            if record is not None:
                if not path.exists():
                    raise CheckpointError(
                        f"'{path}' was written by the run being continued but is "
                        "missing; restore it, or start the file anew with --overwrite"
                    )
                self._check_size(path, record)
                self.continue_file(path, record, run)
                self._frames[path.name] = int(record["frames"])
            else:
                if path.exists() and not run.overwrite:
                    raise OutputExistsError(
                        f"output file '{path}' exists already; pass --overwrite to "
                        "replace it"
                    )
                if path.exists():
                    path.unlink()  # --overwrite: never leave an old file to mix with
                path.parent.mkdir(parents=True, exist_ok=True)
                self._frames[path.name] = 0
                self.start_file(path, run)

    def _check_size(self, path: Path, record: dict[str, int]) -> None:
        size = path.stat().st_size
        if size < record["bytes"]:
            raise CheckpointError(
                f"'{path}' has {size} bytes, fewer than the {record['bytes']} it had "
                "when the checkpoint was written: it was changed or replaced since, so "
                "it is left alone. Restore it, or start it anew with --overwrite"
            )

    @staticmethod
    def cut_back(path: Path, size: int) -> None:
        """Drop everything after the first ``size`` bytes of ``path`` (written after
        the checkpoint)."""
        if path.stat().st_size > size:
            os.truncate(path, size)

    def start_file(self, path: Path, run: RunInfo) -> None:
        """Prepare a new file (created at its first frame by default)."""

    @abstractmethod
    def continue_file(self, path: Path, record: dict[str, int], run: RunInfo) -> None:
        """Check that ``path`` is what ``record`` describes, cut it back to the record
        and prepare to append to it. Raise :class:`CheckpointError` if it is not."""

    def count_frame(self, path: Path) -> None:
        self._frames[path.name] = self._frames.get(path.name, 0) + 1

    # -- checkpoints -------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        self.flush()
        records: Record = dict(self.records or {})
        for path in self.paths:
            if path.name in self._frames and path.exists():
                records[path.name] = {
                    "bytes": path.stat().st_size,
                    "frames": self._frames[path.name],
                }
        return {"files": records, "step": self.last_step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.records = {k: dict(v) for k, v in (state.get("files") or {}).items()}
        self.last_step = state.get("step")

    def close(self) -> None:
        # What was written is the record a later run of this simulation continues.
        self.records = self.state_dict()["files"]
        self.close_files()

    def close_files(self) -> None:
        """Release the writers (after the final flush)."""
