"""Trajectory reporters through mdtraj's writers: ``dcd`` (CHARMM/NAMD, Å) and ``xtc``
(GROMACS, nm, compressed to 0.001 nm), with the box and an optional atom subset, one
file per replica; and ``pdb``, the latest structure.

mdtraj's DCD and XTC writers cannot append, so a continued file (a resumed run, or a
second ``run`` of one simulation) is written in segments: new frames go through
mdtraj into a hidden ``.NAME.segment`` file beside it, whose frames are appended to
the file at every flush (checkpoints, the end of the run, every few hundred frames);
for DCD the frame count in the header is updated too. Readers therefore see one
ordinary file, identical to what an uninterrupted run writes.
"""

from __future__ import annotations

import os
import struct
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field

from torchmd_core import (
    CheckpointError,
    Frame,
    ReporterConfig,
    RunInfo,
    System,
    TopologyError,
)
from torchmd_plugins.reporters.files import FileReporter, fsync_file

__all__ = ["DCDReporter", "PDBReporter", "TrajectoryReporter", "XTCReporter"]

#: Frames gathered in a segment before they are appended to the continued file.
SEGMENT_FRAMES = 200


class TrajectoryConfig(ReporterConfig):
    """Fields shared by the trajectory reporters."""

    file: Path = Field(
        description="Trajectory file (relative to the config file); with "
        "n_replicas > 1 one file per replica, NAME_r0.EXT, NAME_r1.EXT, ..."
    )
    interval: int = Field(1000, gt=0, description="Steps between frames.")
    atoms: tuple[int, ...] | str | None = Field(
        None,
        description="Atoms to write: a list of 0-based indices or an mdtraj selection "
        "string ('protein', 'not water', 'resname ALA and name CA'); default all "
        "atoms.",
    )


def select_atoms(system: System, config: Any, kind: str) -> np.ndarray | None:
    """The atom indices of ``config.atoms`` (None for all); errors name the reporter."""
    if config.atoms is None:
        return None
    try:
        return system.select(config.atoms).numpy()
    except TopologyError as err:
        text = str(err).split(": ", 1)[-1]
        raise TopologyError(
            f"reporter '{kind}' ({config.file}): atoms: {text}"
        ) from None


def lengths_angles(box: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(R, 3) lengths (box units) and (R, 3) angles (degrees) of (R, 3, 3) boxes."""
    import mdtraj.utils

    a, b, c, alpha, beta, gamma = mdtraj.utils.box_vectors_to_lengths_and_angles(
        box[:, 0], box[:, 1], box[:, 2]
    )
    return np.stack([a, b, c], axis=1), np.stack([alpha, beta, gamma], axis=1)


class TrajectoryFile(ABC):
    """One trajectory file: written directly when new, in segments when continued."""

    def __init__(self, path: Path, n_atoms: int) -> None:
        self.path = path
        self.n_atoms = n_atoms
        self.segment = path.with_name(f".{path.name}.segment")
        self.continued = False
        self._writer: Any = None
        self._pending = 0

    @abstractmethod
    def open_writer(self, path: Path) -> Any:
        """An mdtraj writer on a new file ``path``."""

    @abstractmethod
    def write_frame(
        self,
        writer: Any,
        xyz: np.ndarray,
        box: np.ndarray | None,
        step: int,
        time_ps: float,
    ) -> None:
        """Append one frame: ``xyz`` (n, 3) Å float32, ``box`` (3, 3) Å or None."""

    @abstractmethod
    def check(self, frames: int, size: int) -> None:
        """Raise CheckpointError unless the first ``size`` bytes of the file hold
        ``frames`` frames of this file's atoms (done after cutting back)."""

    def append_segment(self) -> None:
        """Append the closed segment's frames to the file."""
        with self.segment.open("rb") as src, self.path.open("ab") as dst:
            dst.write(src.read())

    # -- lifecycle ---------------------------------------------------------------------
    def continue_from(self, frames: int, size: int) -> None:
        if (
            self.segment.exists()
        ):  # left by a run that crashed: its frames are not counted
            self.segment.unlink()
        if self.path.stat().st_size > size:
            os.truncate(self.path, size)
        self.check(frames, size)
        self.continued = True

    def write(
        self, xyz: np.ndarray, box: np.ndarray | None, step: int, time_ps: float
    ) -> None:
        if self._writer is None:
            self._writer = self.open_writer(
                self.segment if self.continued else self.path
            )
        self.write_frame(self._writer, xyz, box, step, time_ps)
        self._pending += 1
        if self.continued and self._pending >= SEGMENT_FRAMES:
            self.flush()

    def flush(self) -> None:
        if self._writer is None:
            return
        if self.continued:  # close the segment, append it, start a new one later
            self._writer.close()
            self._writer = None
            if self._pending:
                self.append_segment()
            self.segment.unlink()
        elif hasattr(self._writer, "flush"):
            self._writer.flush()
        self._pending = 0
        fsync_file(self.path)

    def close(self) -> None:
        self.flush()
        if self._writer is not None:
            self._writer.close()
            self._writer = None


# -- DCD -------------------------------------------------------------------------------

_DCD_NSET, _DCD_ISTART, _DCD_NSAVC, _DCD_NSTEP, _DCD_HAS_CELL = 8, 12, 16, 20, 48


def dcd_layout(path: Path) -> dict[str, int]:
    """Header fields of a DCD file written on this machine: ``header`` (bytes before
    the first frame), ``frame`` (bytes per frame), ``frames`` (NSET), ``atoms``,
    ``istart``, ``nsavc``."""
    with path.open("rb") as fh:
        head = fh.read(112)
        if (
            len(head) < 104
            or struct.unpack_from("=i", head, 0)[0] != 84
            or head[4:8] != b"CORD"
        ):
            raise CheckpointError(f"'{path}' is not a DCD file this reporter wrote")
        title_bytes = struct.unpack_from("=i", head, 92)[0]
        fh.seek(92 + 4 + title_bytes + 4)
        atoms_record = fh.read(12)
    if len(atoms_record) < 12:
        raise CheckpointError(f"'{path}' has a truncated DCD header")
    n_atoms = struct.unpack_from("=i", atoms_record, 4)[0]
    has_cell = struct.unpack_from("=i", head, _DCD_HAS_CELL)[0] != 0
    return {
        "header": 92 + 4 + title_bytes + 4 + 12,
        "frame": (56 if has_cell else 0) + 3 * (4 * n_atoms + 8),
        "frames": struct.unpack_from("=i", head, _DCD_NSET)[0],
        "atoms": n_atoms,
        "istart": struct.unpack_from("=i", head, _DCD_ISTART)[0],
        "nsavc": struct.unpack_from("=i", head, _DCD_NSAVC)[0],
    }


def set_dcd_frames(path: Path, frames: int) -> None:
    """Write the frame count (NSET) and last step (NSTEP) into a DCD header."""
    layout = dcd_layout(path)
    with path.open("r+b") as fh:
        fh.seek(_DCD_NSET)
        fh.write(struct.pack("=i", frames))
        fh.seek(_DCD_NSTEP)
        fh.write(struct.pack("=i", layout["istart"] + frames * layout["nsavc"]))


class DCDFile(TrajectoryFile):
    def open_writer(self, path: Path) -> Any:
        from mdtraj.formats import DCDTrajectoryFile

        return DCDTrajectoryFile(str(path), "w", force_overwrite=False)

    def write_frame(
        self,
        writer: Any,
        xyz: np.ndarray,
        box: np.ndarray | None,
        step: int,
        time_ps: float,
    ) -> None:
        if box is None:
            writer.write(xyz[None])
        else:
            lengths, angles = lengths_angles(box[None])
            writer.write(xyz[None], cell_lengths=lengths, cell_angles=angles)

    def check(self, frames: int, size: int) -> None:
        layout = dcd_layout(self.path)
        if (
            layout["atoms"] != self.n_atoms
            or layout["header"] + frames * layout["frame"] != size
        ):
            raise CheckpointError(
                f"'{self.path}' does not hold the {frames} frames of {self.n_atoms} "
                "atoms the checkpoint recorded; it was changed since, so it is left "
                "alone. Restore it, or start it anew with --overwrite"
            )
        set_dcd_frames(self.path, frames)

    def append_segment(self) -> None:
        seg = dcd_layout(self.segment)
        with self.segment.open("rb") as src, self.path.open("ab") as dst:
            src.seek(seg["header"])
            dst.write(src.read())
        total = (self.path.stat().st_size - dcd_layout(self.path)["header"]) // seg[
            "frame"
        ]
        set_dcd_frames(self.path, total)


# -- XTC -------------------------------------------------------------------------------


class XTCFile(TrajectoryFile):
    def open_writer(self, path: Path) -> Any:
        from mdtraj.formats import XTCTrajectoryFile

        return XTCTrajectoryFile(str(path), "w", force_overwrite=False)

    def write_frame(
        self,
        writer: Any,
        xyz: np.ndarray,
        box: np.ndarray | None,
        step: int,
        time_ps: float,
    ) -> None:
        nm_box = None if box is None else (box[None] * 0.1).astype(np.float32)
        writer.write(
            xyz[None] * np.float32(0.1),
            time=np.array([time_ps], dtype=np.float32),
            step=np.array([step], dtype=np.int32),
            box=nm_box,
        )

    def check(self, frames: int, size: int) -> None:
        from mdtraj.formats import XTCTrajectoryFile

        problem = None
        try:
            with XTCTrajectoryFile(str(self.path)) as fh:
                count = len(fh.offsets) if size else 0
                xyz = (
                    fh.read(n_frames=1)[0] if count else np.zeros((0, self.n_atoms, 3))
                )
        except Exception as err:  # mdtraj raises assorted errors on damaged files
            problem = f"it cannot be read ({type(err).__name__})"
        else:
            if count != frames or xyz.shape[1] != self.n_atoms:
                problem = f"it holds {count} frames of {xyz.shape[1]} atoms"
        if problem is not None:
            raise CheckpointError(
                f"'{self.path}' does not hold the {frames} frames of {self.n_atoms} "
                f"atoms the checkpoint recorded ({problem}); it was changed since, so "
                "it is left alone. Restore it, or start it anew with --overwrite"
            )


# -- reporters -------------------------------------------------------------------------


class TrajectoryReporter(FileReporter):
    """Base of the ``dcd`` and ``xtc`` reporters: positions (and box) every interval."""

    file_type: ClassVar[type[TrajectoryFile]]

    def __init__(self, config: Any, system: System) -> None:
        super().__init__(config, system)
        self.config = config
        self.atoms = select_atoms(system, config, self.kind_name())
        self.n_written_atoms = system.n_atoms if self.atoms is None else len(self.atoms)
        self._files: dict[str, TrajectoryFile] = {}

    def start_file(self, path: Path, run: RunInfo) -> None:
        self._files[path.name] = self.file_type(path, self.n_written_atoms)

    def continue_file(self, path: Path, record: dict[str, int], run: RunInfo) -> None:
        traj = self.file_type(path, self.n_written_atoms)
        traj.continue_from(int(record["frames"]), int(record["bytes"]))
        self._files[path.name] = traj

    def report(self, frame: Frame) -> None:
        state = frame.state
        positions = state.positions.detach()
        if self.atoms is not None:
            positions = positions[:, self.atoms]
        xyz = positions.to(device="cpu").numpy().astype(np.float32)  # (R, n, 3)
        box = None if state.box is None else state.box.detach().cpu().double().numpy()
        for r, path in enumerate(self.paths):
            self._files[path.name].write(
                xyz[r], None if box is None else box[r], frame.step, frame.time_ps
            )
            self.count_frame(path)
        self.last_step = frame.step

    def flush(self) -> None:
        for traj in self._files.values():
            traj.flush()

    def close_files(self) -> None:
        for traj in self._files.values():
            traj.close()
        self._files = {}


class DCDReporter(TrajectoryReporter):
    """Positions and box every ``interval`` steps as DCD (Å, float32)."""

    file_type = DCDFile

    class Config(TrajectoryConfig):
        kind: Literal["dcd"] = "dcd"


class XTCReporter(TrajectoryReporter):
    """Positions, box, step and time every ``interval`` steps as XTC (0.001 nm)."""

    file_type = XTCFile

    class Config(TrajectoryConfig):
        kind: Literal["xtc"] = "xtc"


class PDBReporter(FileReporter):
    """The latest structure as PDB (with the box as CRYST1): written at the end of
    every run, and every ``interval`` steps when one is given. Each write replaces the
    file atomically."""

    at_end = True

    class Config(ReporterConfig):
        kind: Literal["pdb"] = "pdb"
        file: Path = Field(
            description="PDB file (relative to the config file); with "
            "n_replicas > 1 one file per replica, NAME_r0.pdb, ..."
        )
        interval: int | None = Field(  # type: ignore[assignment]
            None,
            gt=0,
            description="Also write every this many steps (default: only the "
            "final structure of each run).",
        )
        atoms: tuple[int, ...] | str | None = Field(
            None,
            description="Atoms to write: 0-based indices or an mdtraj selection "
            "string; default all atoms.",
        )

    def __init__(self, config: Config, system: System) -> None:
        super().__init__(config, system)
        self.config: PDBReporter.Config = config
        self.atoms = select_atoms(system, config, "pdb")

    @property
    def interval(self) -> int:
        return 0 if self.config.interval is None else int(self.config.interval)

    def _check_size(self, path: Path, record: dict[str, int]) -> None:
        """The file is replaced whole at each write: no size to check."""

    def continue_file(self, path: Path, record: dict[str, int], run: RunInfo) -> None:
        """Nothing to cut back: the next write replaces the file."""

    def report(self, frame: Frame) -> None:
        from mdtraj.formats import PDBTrajectoryFile

        topology = self.system.topology
        positions = frame.state.positions.detach()
        if self.atoms is not None:
            topology = topology.subset(self.atoms)
            positions = positions[:, self.atoms]
        xyz = positions.to(device="cpu", dtype=torch.float64).numpy()
        cell = None
        if frame.state.box is not None:
            cell = lengths_angles(frame.state.box.detach().cpu().double().numpy())
        for r, path in enumerate(self.paths):
            tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
            try:
                with PDBTrajectoryFile(str(tmp), "w") as fh:
                    fh.write(
                        xyz[r],
                        topology,
                        unitcell_lengths=None if cell is None else tuple(cell[0][r]),
                        unitcell_angles=None if cell is None else tuple(cell[1][r]),
                    )
                fsync_file(tmp)
                os.replace(tmp, path)
            finally:
                if tmp.exists():
                    tmp.unlink()
            self.count_frame(path)
        self.last_step = frame.step
