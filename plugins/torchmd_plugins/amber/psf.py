"""CHARMM ``psf`` topologies with CHARMM parameter files.

The psf is parsed by parmed; parameters are read and assigned with OpenMM's rules
(``CharmmPsfFile.createSystem`` with a ``CharmmParameterSet``, see ``charmm.py``):

- every listed dihedral gets all terms of its parameter entry; dihedral and improper
  types match exactly first, then with ``X`` wildcards (1, 2, 3 of them, every
  combination of positions, both directions);
- impropers are harmonic, k(ψ − ψ0)²; Urey-Bradley terms come with their angles;
- CMAP types match exactly (each torsion in either direction);
- 1-2, 1-3 and 1-4 pairs come from the bond graph (not from the dihedral list); with
  ``nbxmod 5`` the 1-4 pairs use the 1-4 ε and Rmin/2 (or the NBFIX 1-4 values) and
  charges scaled by ``e14fac``; ``nbxmod`` 2, 3 and 4 exclude 1-2, 1-3 and 1-4 pairs;
- LJ σ = 2^(5/6) Rmin/2, ε = |ε|; NBFIX pairs use Emin·Rmin¹²/r¹² − 2·Emin·Rmin⁶/r⁶;
- an H-H bond inside water (TIP3P's SHAKE bond) is not a bond.

Masses come from the psf, or from the MASS lines where the psf has 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch

from torchmd_core import (
    InputFileError,
    LoaderConfig,
    NonbondedParameters,
    Residue,
    System,
    TopologyError,
    TopologyLoader,
)
from torchmd_plugins.amber.charmm import CharmmParameterSet, cmap_type_key
from torchmd_plugins.amber.tables import (
    TableBuilder,
    check_file,
    cmap_table,
    element_from_mass,
    pair_tensor,
    pairs_12_13_14,
)

__all__ = ["PsfLoader", "read_psf"]

WATER_NAMES = ("WAT", "HOH", "TIP3", "TIP4", "TIP5", "SPCE", "SPC", "SWM4", "SWM6")
_SIGMA_FROM_RMIN = 2.0 ** (-1.0 / 6.0)
_ELEMENTS = {
    "H": 1,
    "HE": 2,
    "LI": 3,
    "BE": 4,
    "B": 5,
    "C": 6,
    "N": 7,
    "O": 8,
    "F": 9,
    "NE": 10,
    "NA": 11,
    "MG": 12,
    "AL": 13,
    "SI": 14,
    "P": 15,
    "S": 16,
    "CL": 17,
    "AR": 18,
    "K": 19,
    "CA": 20,
    "MN": 25,
    "FE": 26,
    "CO": 27,
    "NI": 28,
    "CU": 29,
    "ZN": 30,
    "SE": 34,
    "BR": 35,
    "RB": 37,
    "SR": 38,
    "I": 53,
    "CS": 55,
    "BA": 56,
}
_MAX_LISTED = 12


class PsfLoader(TopologyLoader):
    """CHARMM psf topology with CHARMM parameter files (prm/par/rtf/str/inp)."""

    class Config(LoaderConfig):
        kind: Literal["psf"] = "psf"

    extensions: ClassVar[tuple[str, ...]] = ("psf", "psf.gz")

    def load_topology(self, path: Path, parameters: Sequence[Path] = ()) -> System:
        return read_psf(path, parameters)


def read_psf(path: Path, parameters: Sequence[Path]) -> System:
    """A System from a psf and CHARMM parameter files (see the module docstring)."""
    if not parameters:
        raise TopologyError(
            f"the CHARMM psf '{path.name}' needs its force-field parameter files: pass "
            "them with --parameters (tmd energy) or system.parameters (config), e.g. "
            "par_all36m_prot.prm toppar_water_ions.str"
        )
    check_file(path, "CHARMM psf")
    for p in parameters:
        check_file(Path(p), "CHARMM parameter file")
    params = CharmmParameterSet.from_files([Path(p) for p in parameters])
    return _PsfBuilder(path, _read_structure(path), params).system()


def _read_structure(path: Path) -> Any:
    from parmed.charmm import CharmmPsfFile

    try:
        psf = CharmmPsfFile(str(path))
    except FileNotFoundError:
        raise InputFileError(f"psf file '{path}' does not exist") from None
    except Exception as err:  # parmed raises many types for malformed files
        raise InputFileError(
            f"cannot read CHARMM psf '{path}': {type(err).__name__}: {err}"
        ) from None
    if "DRUDE" in getattr(psf, "flags", []):
        raise TopologyError(
            f"'{path}' is a Drude polarizable psf, which is not supported"
        )
    lone = [a for a in psf.atoms if type(a).__name__ in ("ExtraPoint", "DrudeAtom")]
    if lone:
        raise TopologyError(
            f"'{path}' has {len(lone)} lone pairs / virtual sites (e.g. atom "
            f"{lone[0].idx + 1} "
            f"{lone[0].name}), which are not supported"
        )
    return psf


class _Problems:
    """Missing parameters, grouped by kind; raised together."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.items: dict[str, dict[tuple[str, ...], list[str]]] = {}

    def add(self, kind: str, types: tuple[str, ...], atoms: str) -> None:
        self.items.setdefault(kind, {}).setdefault(types, []).append(atoms)

    def raise_if_any(self, files: Sequence[str]) -> None:
        if not self.items:
            return
        lines = []
        for kind, entries in self.items.items():
            for types, atoms in list(entries.items())[:_MAX_LISTED]:
                more = f" and {len(atoms) - 1} more" if len(atoms) > 1 else ""
                lines.append(
                    f"  no {kind} parameters for types {'-'.join(types)} "
                    f"(atoms {atoms[0]}{more})"
                )
            if len(entries) > _MAX_LISTED:
                lines.append(
                    f"  ... and {len(entries) - _MAX_LISTED} more {kind} type "
                    "combinations"
                )
        names = ", ".join(Path(f).name for f in files) or "none"
        raise TopologyError(
            f"parameters missing for the CHARMM psf '{self.path}' "
            f"(parameter files: {names}):\n"
            + "\n".join(lines)
            + "\nAdd the parameter/stream files that define these types."
        )


class _PsfBuilder:
    def __init__(self, path: Path, psf: Any, params: CharmmParameterSet) -> None:
        self.path = path
        self.psf = psf
        self.params = params
        self.atoms = list(psf.atoms)
        self.n_atoms = len(self.atoms)
        self.problems = _Problems(path)
        self.types = self._atom_types()

    def _atom_types(self) -> list[str]:
        names = []
        for atom in self.atoms:
            t = atom.type
            if isinstance(t, int) or (isinstance(t, str) and t.lstrip("-").isdigit()):
                name = self.params.type_numbers.get(int(t))
                if name is None:
                    self.problems.add(
                        "MASS (atom type number)", (str(t),), self._label(atom.idx)
                    )
                    name = str(t)
                names.append(name)
            else:
                names.append(str(t).upper())
        return names

    def _label(self, *indices: int) -> str:
        return "-".join(f"{i + 1} {self.atoms[i].name}" for i in indices)

    def _key(self, *indices: int) -> tuple[str, ...]:
        return tuple(self.types[i] for i in indices)

    # -- bond graph and bonded terms ---------------------------------------------------
    def bond_graph(self) -> list[tuple[int, int]]:
        graph = []
        for bond in self.psf.bonds:
            a, b = bond.atom1, bond.atom2
            if (
                a.name.startswith("LP")
                or b.name.startswith("LP")
                or "OM" in (a.name, b.name)
            ):
                continue
            if (
                a.name[:1] == "H"
                and b.name[:1] == "H"
                and a.residue.name in WATER_NAMES
            ):
                continue  # TIP3P's H-H SHAKE bond is not a chemical bond
            graph.append((a.idx, b.idx))
        return graph

    def bonds(self, graph: list[tuple[int, int]]) -> TableBuilder:
        table = TableBuilder(2, ("k", "r0"))
        for a, b in graph:
            ta, tb = self._key(a, b)
            key = (min(ta, tb), max(ta, tb))
            values = self.params.bonds.get(key)
            if values is None:
                self.problems.add("bond", key, self._label(a, b))
                continue
            table.add((a, b), key, values, "-".join(key))
        return table

    def angles(self) -> tuple[TableBuilder, TableBuilder]:
        angles = TableBuilder(3, ("k", "theta0"))
        ub = TableBuilder(2, ("k", "r0"))
        for angle in self.psf.angles:
            a, b, c = angle.atom1.idx, angle.atom2.idx, angle.atom3.idx
            ta, tb, tc = self._key(a, b, c)
            key = (min(ta, tc), tb, max(ta, tc))
            values = self.params.angles.get(key)
            if values is None:
                self.problems.add("angle", key, self._label(a, b, c))
                continue
            angles.add(
                (a, b, c), key, (values[0], math.radians(values[1])), "-".join(key)
            )
            ub_values = self.params.urey_bradley.get(key)
            if ub_values is not None:
                ub.add((a, c), key, ub_values, "-".join(key))
        return angles, ub

    def dihedrals(self) -> TableBuilder:
        table = TableBuilder(4, ("k", "phase", "periodicity"))
        for dih in self.psf.dihedrals:
            quad = (dih.atom1.idx, dih.atom2.idx, dih.atom3.idx, dih.atom4.idx)
            match = self.params.dihedral_terms(self._key(*quad))
            if match is None:
                self.problems.add("dihedral", self._key(*quad), self._label(*quad))
                continue
            key, terms = match
            for k, n, phase in terms:
                table.add(
                    quad,
                    (key, n),
                    (k, math.radians(phase), float(n)),
                    f"{'-'.join(key)}/{n}",
                )
        return table

    def impropers(self) -> TableBuilder:
        table = TableBuilder(4, ("k", "psi0"))
        for imp in self.psf.impropers:
            quad = (imp.atom1.idx, imp.atom2.idx, imp.atom3.idx, imp.atom4.idx)
            match = self.params.improper(self._key(*quad))
            if match is None:
                self.problems.add("improper", self._key(*quad), self._label(*quad))
                continue
            key, (k, psi0) = match
            table.add(quad, key, (k, math.radians(psi0)), "-".join(key))
        return table

    def cmaps(self) -> Any:
        atoms: list[tuple[int, ...]] = []
        maps: list[int] = []
        grids: list[np.ndarray] = []
        index: dict[tuple[str, ...], int] = {}
        for cmap in self.psf.cmaps:
            # parmed keeps consecutive torsions only: atoms 1-4 and 2-5
            a1, a2, a3, a4, a5 = (getattr(cmap, f"atom{k}").idx for k in range(1, 6))
            octet = (a1, a2, a3, a4, a2, a3, a4, a5)
            key = cmap_type_key(self._key(*octet))
            entry = self.params.cmaps.get(key)
            if entry is None:
                self.problems.add("CMAP", key, self._label(*octet[:4], octet[7]))
                continue
            if key not in index:
                size, data = entry
                index[key] = len(grids)
                grids.append(
                    np.asarray(data, dtype=np.float64).reshape(size, size)
                )  # [φ, ψ] from −180°
            atoms.append(octet)
            maps.append(index[key])
        if not atoms:
            return None
        try:
            return cmap_table(atoms, maps, grids)
        except ValueError as err:
            raise TopologyError(f"CHARMM psf '{self.path}': {err}") from None

    # -- non-bonded --------------------------------------------------------------------
    def lj_parameters(self) -> dict[str, Any]:
        missing: dict[str, list[int]] = {}
        for i, t in enumerate(self.types):
            if t not in self.params.lj:
                missing.setdefault(t, []).append(i)
        for t, atoms in missing.items():
            self.problems.add(
                "NONBONDED (Lennard-Jones)",
                (t,),
                self._label(atoms[0])
                + (f" and {len(atoms) - 1} more" if len(atoms) > 1 else ""),
            )
        return {t: self.params.lj[t] for t in set(self.types) if t in self.params.lj}

    def nonbonded(self) -> NonbondedParameters:
        order: dict[str, int] = {}
        for t in self.types:
            order.setdefault(t, len(order))
        names = list(order)
        lj = [self.params.lj[t] for t in names]
        sigma = np.array([2.0 * p.rmin_half * _SIGMA_FROM_RMIN for p in lj])
        epsilon = np.array([abs(p.epsilon) for p in lj])
        n = len(names)
        mask = np.zeros((n, n), dtype=bool)
        c12 = np.zeros((n, n))
        c6 = np.zeros((n, n))
        for i in range(n):
            for j in range(n):
                fix = self.params.nbfix.get(
                    (min(names[i], names[j]), max(names[i], names[j]))
                )
                if fix is not None:
                    rmin, emin = fix[0], fix[1]
                    mask[i, j] = True
                    c12[i, j] = emin * rmin**12
                    c6[i, j] = 2.0 * emin * rmin**6
        has_fix = bool(mask.any())
        return NonbondedParameters(
            lj_types=torch.as_tensor([order[t] for t in self.types], dtype=torch.int64),
            sigma=torch.as_tensor(sigma),
            epsilon=torch.as_tensor(epsilon),
            type_names=tuple(names),
            pair_mask=torch.as_tensor(mask) if has_fix else None,
            pair_c12=torch.as_tensor(c12) if has_fix else None,
            pair_c6=torch.as_tensor(c6) if has_fix else None,
        )

    def pairs14(self, p14: set[tuple[int, int]]) -> TableBuilder:
        table = TableBuilder(2, ("charge_scale", "sigma", "epsilon"))
        scale = self.params.e14fac
        for a, d in sorted(p14):
            ta, td = self.types[a], self.types[d]
            key = (min(ta, td), max(ta, td))
            fix = self.params.nbfix.get(key)
            if fix is not None:
                sigma, epsilon = fix[2] * _SIGMA_FROM_RMIN, fix[3]
            else:
                la, ld = self.params.lj[ta], self.params.lj[td]
                epsilon = math.sqrt(abs(la.epsilon14 * ld.epsilon14))
                sigma = (la.rmin14_half + ld.rmin14_half) * _SIGMA_FROM_RMIN
            table.add((a, d), key, (scale, sigma, epsilon), "-".join(key))
        return table

    # -- the whole system --------------------------------------------------------------
    def system(self) -> System:
        graph = self.bond_graph()
        bonds = self.bonds(graph)
        angles, ub = self.angles()
        builders = {
            "bonds": bonds,
            "angles": angles,
            "urey_bradley": ub,
            "torsions": self.dihedrals(),
            "harmonic_impropers": self.impropers(),
        }
        cmap = self.cmaps()
        self.lj_parameters()
        self.problems.raise_if_any(self.params.files)
        p12, p13, p14 = pairs_12_13_14(self.n_atoms, graph)
        nbxmod = abs(self.params.nbxmod)
        excluded: set[tuple[int, int]] = set()
        if nbxmod > 1:
            excluded |= p12
        if nbxmod > 2:
            excluded |= p13
        if nbxmod in (4, 5):
            excluded |= p14
        if nbxmod == 5:
            builders["pairs14"] = self.pairs14(p14)
        terms = {name: b.build() for name, b in builders.items() if len(b)}
        if cmap is not None:
            terms["cmap"] = cmap
        masses, z = self._masses_elements()
        residues, residue_index = self._residues()
        return System(
            masses=torch.as_tensor(masses, dtype=torch.float64),
            charges=torch.as_tensor(
                [float(a.charge) for a in self.atoms], dtype=torch.float64
            ),
            atomic_numbers=torch.as_tensor(z, dtype=torch.int64),
            atom_names=tuple(a.name for a in self.atoms),
            atom_types=tuple(self.types),
            residue_index=residue_index,
            residues=residues,
            bonds=pair_tensor(graph),
            exclusions=pair_tensor(excluded),
            terms=terms,
            nonbonded=self.nonbonded(),
            metadata={
                "source": str(self.path),
                "format": "psf",
                "parameters": list(self.params.files),
                "nbxmod": self.params.nbxmod,
                "e14fac": self.params.e14fac,
            },
        )

    def _masses_elements(self) -> tuple[list[float], list[int]]:
        masses, z = [], []
        for atom, t in zip(self.atoms, self.types, strict=True):
            mass_type = self.params.mass_types.get(
                t
            ) or self.params.commented_masses.get(t)
            mass = float(atom.mass)
            if mass <= 0.0 and mass_type is not None:
                mass = mass_type.mass
            element = (
                _ELEMENTS.get((mass_type.element or "").upper())
                if mass_type is not None
                else None
            )
            masses.append(mass)
            z.append(element if element is not None else element_from_mass(mass))
        return masses, z

    def _residues(self) -> tuple[tuple[Residue, ...], torch.Tensor]:
        residues = []
        for res in self.psf.residues:
            segid = str(getattr(res, "segid", "") or "")
            residues.append(
                Residue(res.name, int(res.number), (segid or "A")[:1], segid)
            )
        index = torch.as_tensor([a.residue.idx for a in self.atoms], dtype=torch.int64)
        return tuple(residues), index
