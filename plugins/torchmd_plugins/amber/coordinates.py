"""Coordinate readers (and the parameterless PDB topology).

Positions are returned in Å as float64, boxes as (3, 3) Å in OpenMM's reduced form,
velocities in Å/ps:

==================== ================= ===============================================
loader kind          extensions        reads
==================== ================= ===============================================
``pdb``              pdb, ent          ATOM/HETATM of the first model, box from CRYST1
                                       (a 1 Å cube means "no box"); also a topology
                                       without force field (elements, residues, bonds)
``cif``              cif, mmcif, pdbx  first model and cell (via parmed)
``inpcrd``           inpcrd, rst7, ... AMBER restart: positions, box, velocities
                                       (converted from Å/(1/20.455 ps) to Å/ps)
``charmm_crd``       crd, cor          CHARMM coordinates (standard and EXT)
``namd_coor``        coor              NAMD/ACEMD binary coordinates; the box from a
                                       sibling ``.xsc`` with the same stem
``mdtraj``           xtc, dcd, trr,    the first frame of anything mdtraj reads, box
                     nc, h5, gro, ...  included (an all-zero box means "no box")
==================== ================= ===============================================
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch

from torchmd_core import (
    CoordinateLoader,
    Coordinates,
    InputFileError,
    LoaderConfig,
    Residue,
    System,
    TopologyError,
    TopologyLoader,
)
from torchmd_core.geometry import box_from_lengths_angles, reduce_box
from torchmd_plugins.amber.tables import check_file, pair_tensor

__all__ = [
    "AmberRestartLoader",
    "CharmmCrdLoader",
    "CifLoader",
    "MdtrajFrameLoader",
    "NamdCoorLoader",
    "PdbLoader",
    "box_from_vectors",
    "read_pdb_coordinates",
    "read_xsc_box",
]


def _positions(values: Any, path: Path, what: str = "coordinates") -> torch.Tensor:
    array = np.array(values, dtype=np.float64).reshape(-1, 3)  # a writable copy
    if not np.isfinite(array).all():
        raise InputFileError(f"{what} in '{path}' contain NaN or infinite values")
    return torch.as_tensor(array)


def box_from_vectors(vectors: Any) -> torch.Tensor | None:
    """(3, 3) Å reduced box from three box vectors (rows), or None for a zero box."""
    v = np.asarray(vectors, dtype=np.float64).reshape(3, 3)
    if not np.any(v):
        return None
    if v[0, 1] == 0 and v[0, 2] == 0 and v[1, 2] == 0:
        return reduce_box(torch.as_tensor(v))
    lengths = np.linalg.norm(v, axis=1)
    if np.any(lengths == 0):
        return None

    def angle(u: np.ndarray, w: np.ndarray) -> float:
        return math.degrees(
            math.acos(
                float(np.clip(u @ w / np.linalg.norm(u) / np.linalg.norm(w), -1, 1))
            )
        )

    a, b, c = (float(x) for x in lengths)
    return box_from_lengths_angles(
        a, b, c, angle(v[1], v[2]), angle(v[0], v[2]), angle(v[0], v[1])
    )


def _box_from_cell(
    lengths: Sequence[float], angles: Sequence[float]
) -> torch.Tensor | None:
    if len(lengths) < 3 or min(lengths[:3]) <= 0:
        return None
    return box_from_lengths_angles(*lengths[:3], *angles[:3])


# -- PDB -------------------------------------------------------------------------------


def read_pdb_coordinates(path: Path) -> Coordinates:
    """Positions (first model) and CRYST1 box of a PDB file, parsed in float64."""
    check_file(path, "PDB file")
    lines = path.read_text(errors="replace").splitlines()
    rows: list[tuple[float, float, float]] = []
    box = None
    for number, line in enumerate(lines, start=1):
        record = line[:6]
        if record.startswith("CRYST1"):
            try:
                cell = [float(line[6 + 9 * k : 15 + 9 * k]) for k in range(3)]
                angles = [float(line[33 + 7 * k : 40 + 7 * k]) for k in range(3)]
            except ValueError:
                raise InputFileError(
                    f"'{path}' line {number}: malformed CRYST1 record"
                ) from None
            if cell != [1.0, 1.0, 1.0]:  # a 1 Å cube is the PDB's "not a crystal"
                box = _box_from_cell(cell, angles)
        elif record in ("ATOM  ", "HETATM") or record.startswith(("ATOM", "HETATM")):
            try:
                rows.append(
                    (float(line[30:38]), float(line[38:46]), float(line[46:54]))
                )
            except ValueError:
                raise InputFileError(
                    f"'{path}' line {number}: cannot read x, y, z from columns 31-54 "
                    "of "
                    f"{record.strip()} record"
                ) from None
        elif record.startswith("ENDMDL") and rows:
            break
    if not rows:
        raise InputFileError(f"PDB file '{path}' has no ATOM/HETATM records")
    return Coordinates(_positions(rows, path), box)


class PdbLoader(TopologyLoader, CoordinateLoader):
    """PDB coordinates and box; as a topology: atoms, residues, bonds, no parameters."""

    class Config(LoaderConfig):
        kind: Literal["pdb"] = "pdb"

    extensions: ClassVar[tuple[str, ...]] = ("pdb", "ent")

    def load_coordinates(self, path: Path, system: System | None = None) -> Coordinates:
        check_file(path, "coordinate file")
        return read_pdb_coordinates(path)

    def load_topology(self, path: Path, parameters: Sequence[Path] = ()) -> System:
        if parameters:
            raise TopologyError(
                f"a PDB topology ('{path.name}') takes no parameter files; for a force "
                "field give a prmtop, psf (+ parameters), GROMACS top or OpenMM XML"
            )
        return system_from_pdb(path)


def system_from_pdb(path: Path) -> System:
    """A System with masses, elements, names, residues and bonds but no force field.

    Bonds are those of standard residues (templates) and CONECT records (mdtraj).
    """
    import mdtraj

    check_file(path, "PDB file")
    try:
        top = mdtraj.load_topology(str(path))
    except Exception as err:  # mdtraj raises many types for malformed files
        raise InputFileError(
            f"cannot read PDB topology '{path}': {type(err).__name__}: {err}"
        ) from None
    atoms = list(top.atoms)
    residues = tuple(
        Residue(
            r.name,
            int(r.resSeq),
            chr(ord("A") + r.chain.index % 26),
            r.segment_id or "",
        )
        for r in top.residues
    )
    z = [a.element.atomic_number if a.element is not None else 0 for a in atoms]
    masses = [
        a.element.mass if a.element is not None and a.element.mass else 0.0
        for a in atoms
    ]
    return System(
        masses=torch.as_tensor(masses, dtype=torch.float64),
        charges=torch.zeros(len(atoms), dtype=torch.float64),
        atomic_numbers=torch.as_tensor(z, dtype=torch.int64),
        atom_names=tuple(a.name for a in atoms),
        atom_types=tuple(
            a.element.symbol if a.element is not None else "" for a in atoms
        ),
        residue_index=torch.as_tensor(
            [a.residue.index for a in atoms], dtype=torch.int64
        ),
        residues=residues,
        bonds=pair_tensor((b[0].index, b[1].index) for b in top.bonds),
        exclusions=torch.zeros(0, 2, dtype=torch.int64),
        box=read_pdb_coordinates(path).box,
        metadata={"source": str(path), "format": "pdb", "force_field": None},
    )


class CifLoader(CoordinateLoader):
    """PDBx/mmCIF coordinates (first model) and cell, via parmed."""

    class Config(LoaderConfig):
        kind: Literal["cif"] = "cif"

    extensions: ClassVar[tuple[str, ...]] = ("cif", "mmcif", "pdbx")

    def load_coordinates(self, path: Path, system: System | None = None) -> Coordinates:
        check_file(path, "coordinate file")
        import parmed

        try:
            structure = parmed.formats.CIFFile.parse(str(path))
        except Exception as err:  # parmed raises many types for malformed files
            raise InputFileError(
                f"cannot read mmCIF file '{path}': {type(err).__name__}: {err}"
            ) from None
        coords = (
            structure.get_coordinates(0) if structure.coordinates is not None else None
        )
        if coords is None or len(coords) == 0:
            raise InputFileError(f"mmCIF file '{path}' has no atom coordinates")
        box = None
        if structure.box is not None:
            box = _box_from_cell(list(structure.box[:3]), list(structure.box[3:]))
            if structure.box[:3].tolist() == [1.0, 1.0, 1.0]:
                box = None
        return Coordinates(_positions(coords, path), box)


# -- AMBER restart ---------------------------------------------------------------------


class AmberRestartLoader(CoordinateLoader):
    """AMBER inpcrd/restart (ASCII or NetCDF): positions, box and velocities."""

    class Config(LoaderConfig):
        kind: Literal["inpcrd"] = "inpcrd"

    extensions: ClassVar[tuple[str, ...]] = (
        "inpcrd",
        "rst7",
        "rst",
        "restrt",
        "ncrst",
        "crd7",
    )

    def load_coordinates(self, path: Path, system: System | None = None) -> Coordinates:
        check_file(path, "coordinate file")
        import parmed

        try:
            restart = parmed.load_file(str(path))
            coordinates = np.asarray(restart.coordinates, dtype=np.float64)
        except Exception as err:  # parmed raises many types for malformed files
            raise InputFileError(
                f"cannot read AMBER restart '{path}': {type(err).__name__}: {err}"
            ) from None
        coordinates = coordinates.reshape(
            -1, coordinates.shape[-1] if coordinates.ndim > 1 else 3
        )
        velocities = getattr(restart, "velocities", None)
        box_values = getattr(restart, "box", None)
        box = None
        if box_values is not None:
            values = np.asarray(box_values, dtype=np.float64).reshape(-1)
            box = _box_from_cell(values[:3].tolist(), values[3:6].tolist())
        vel = None
        if velocities is not None:  # parmed converts AMBER units to Å/ps
            vel = _positions(velocities, path, "velocities")
        return Coordinates(_positions(coordinates, path), box, vel)


# -- CHARMM crd ------------------------------------------------------------------------


class CharmmCrdLoader(CoordinateLoader):
    """CHARMM coordinates (``.crd``/``.cor``, standard or EXT format), via parmed."""

    class Config(LoaderConfig):
        kind: Literal["charmm_crd"] = "charmm_crd"

    extensions: ClassVar[tuple[str, ...]] = ("crd", "cor")

    def load_coordinates(self, path: Path, system: System | None = None) -> Coordinates:
        check_file(path, "coordinate file")
        from parmed.charmm import CharmmCrdFile

        _check_crd_has_atom_count(path)  # parmed loops forever on files without one
        try:
            crd = CharmmCrdFile(str(path))
            coordinates = np.asarray(crd.coordinates, dtype=np.float64)
        except Exception as err:  # parmed raises many types for malformed files
            raise InputFileError(
                f"cannot read CHARMM coordinate file '{path}': {type(err).__name__}: "
                f"{err}"
            ) from None
        return Coordinates(_positions(coordinates, path))


def _check_crd_has_atom_count(path: Path) -> None:
    """Raise InputFileError unless a line follows the title as parmed reads it (the
    first non-blank line, then lines starting with '*')."""
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines()]
    except OSError as err:
        raise InputFileError(
            f"cannot read coordinate file '{path}': {err.strerror}"
        ) from None
    filled = [i for i, line in enumerate(lines) if line]
    i = filled[0] + 1 if filled else len(lines)
    while i < len(lines) and lines[i].startswith("*"):
        i += 1
    if not any(lines[i:]):
        raise InputFileError(
            f"CHARMM coordinate file '{path}' has no atom count after its title; the "
            "file "
            "is empty or truncated"
        )


# -- NAMD/ACEMD binary coor ------------------------------------------------------------


def read_xsc_box(path: Path) -> torch.Tensor | None:
    """Box vectors a, b, c (Å) from a NAMD .xsc file (``step a b c o ...``)."""
    try:
        lines = path.read_text().splitlines()
    except OSError as err:
        raise InputFileError(f"cannot read box file '{path}': {err.strerror}") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = line.split()
        try:
            values = [float(v) for v in fields[1:10]]
        except ValueError:
            raise InputFileError(
                f"'{path}' line {number}: box vectors are not numbers"
            ) from None
        if len(values) < 9:
            raise InputFileError(
                f"'{path}' line {number}: expected 'step ax ay az bx by bz cx cy cz "
                "...'"
            )
        return box_from_vectors(values)
    raise InputFileError(f"box file '{path}' holds no box line")


class NamdCoorLoader(CoordinateLoader):
    """NAMD/ACEMD binary coordinates; the box from a sibling ``<stem>.xsc``."""

    class Config(LoaderConfig):
        kind: Literal["namd_coor"] = "namd_coor"

    extensions: ClassVar[tuple[str, ...]] = ("coor", "namdbin")

    def load_coordinates(self, path: Path, system: System | None = None) -> Coordinates:
        check_file(path, "coordinate file")
        try:
            raw = path.read_bytes()
        except OSError as err:
            raise InputFileError(
                f"cannot read coordinate file '{path}': {err.strerror}"
            ) from None
        positions = None
        for order in ("<", ">"):
            if len(raw) >= 4:
                (n,) = struct.unpack(order + "i", raw[:4])
                if n >= 0 and len(raw) == 4 + 24 * n:
                    positions = np.frombuffer(raw[4:], dtype=order + "f8").reshape(n, 3)
                    break
        if positions is None:
            count = struct.unpack("<i", raw[:4])[0] if len(raw) >= 4 else "no"
            raise InputFileError(
                f"'{path}' is not a NAMD binary coordinate file: {len(raw)} bytes for "
                "a "
                f"header of {count} atoms (expected 4 + 24 x atoms bytes); truncated?"
            )
        xsc = path.with_suffix(".xsc")
        box = read_xsc_box(xsc) if xsc.is_file() else None
        return Coordinates(_positions(positions, path), box)


# -- anything mdtraj reads -------------------------------------------------------------


class MdtrajFrameLoader(CoordinateLoader):
    """The first frame (positions and box) of a trajectory or structure mdtraj reads."""

    class Config(LoaderConfig):
        kind: Literal["mdtraj"] = "mdtraj"

    extensions: ClassVar[tuple[str, ...]] = (
        "xtc",
        "trr",
        "dcd",
        "nc",
        "netcdf",
        "ncdf",
        "h5",
        "lh5",
        "gro",
        "binpos",
        "lammpstrj",
        "xyz",
        "arc",
        "mdcrd",
        "hdf5",
        "dtr",
        "stk",
        "tng",
        "hoomdxml",
    )

    def load_coordinates(self, path: Path, system: System | None = None) -> Coordinates:
        check_file(path, "coordinate file")
        import mdtraj

        xyz_nm, vectors_nm = None, None
        suffix = path.suffix.lower().lstrip(".")
        try:
            if suffix in ("xtc", "trr"):
                opener = (
                    mdtraj.formats.XTCTrajectoryFile
                    if suffix == "xtc"
                    else mdtraj.formats.TRRTrajectoryFile
                )
                with opener(str(path)) as fh:
                    frame = fh.read(n_frames=1)
                xyz_nm, vectors_nm = frame[0], frame[3]
            elif suffix == "dcd":
                with mdtraj.formats.DCDTrajectoryFile(str(path)) as fh:
                    xyz, lengths, angles = fh.read(n_frames=1)
                return self._from_angstrom(path, xyz, lengths, angles)
            else:
                top = (
                    None
                    if system is None or suffix in ("gro", "h5", "lh5", "hdf5")
                    else system.topology
                )
                traj = mdtraj.load_frame(str(path), 0, top=top)
                xyz_nm = traj.xyz
                vectors_nm = traj.unitcell_vectors
        except Exception as err:  # mdtraj raises many types for unreadable files
            raise InputFileError(
                f"cannot read a frame of '{path}' with mdtraj: {type(err).__name__}: "
                f"{err}"
            ) from None
        if xyz_nm is None or len(xyz_nm) == 0:
            raise InputFileError(f"'{path}' holds no frame")
        positions = np.asarray(xyz_nm[0], dtype=np.float64) * 10.0
        box = None
        if vectors_nm is not None and len(vectors_nm):
            box = box_from_vectors(np.asarray(vectors_nm[0], dtype=np.float64) * 10.0)
        return Coordinates(_positions(positions, path), box)

    @staticmethod
    def _from_angstrom(path: Path, xyz: Any, lengths: Any, angles: Any) -> Coordinates:
        if xyz is None or len(xyz) == 0:
            raise InputFileError(f"'{path}' holds no frame")
        box = None
        if lengths is not None and len(lengths):
            box = _box_from_cell(
                np.asarray(lengths[0], dtype=np.float64).tolist(),
                np.asarray(angles[0], dtype=np.float64).tolist(),
            )
        return Coordinates(_positions(np.asarray(xyz[0], dtype=np.float64), path), box)
