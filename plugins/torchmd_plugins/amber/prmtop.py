"""AMBER ``prmtop``/``parm7`` topologies (also CHAMBER: CHARMM force fields as prmtop).

The file is parsed by parmed (``AmberFormat``: the raw flags, Fortran formats, gzip);
the System is built from those raw arrays following the conventions of OpenMM's
``AmberPrmtopFile`` exactly, so energies match what OpenMM computes from the same file:

- charges are ``CHARGE / 18.2223`` e (also in CHAMBER files, as OpenMM reads them);
- a dihedral with a negative 4th index is an improper (``impropers``), one with a
  negative 3rd index skips its 1-4 pair (multi-term torsions, rings);
- each 1-4 pair gets charge scale 1/SCEE and LJ ε/SCNB of *its dihedral's type*
  (``SCEE_SCALE_FACTOR``/``SCNB_SCALE_FACTOR``; 1.2 and 2.0 when absent, 1.0 for
  CHAMBER), with σ, ε from the pair's entry of the LJ A/B table (``LENNARD_JONES_14``
  tables for CHAMBER), so modified pair tables apply to 1-4 pairs too;
- non-bonded exclusions are the prmtop's own ``EXCLUDED_ATOMS_LIST`` plus every 1-4
  pair;
- per-type σ, ε come from the diagonal of the A/B table; where an off-diagonal entry
  differs from the Lorentz-Berthelot combination (ff14ipq-style tables, NBFIX in
  CHAMBER files) the exact A/B values become pair overrides;
- CMAP grids (``CMAP_*`` or ``CHARMM_CMAP_*``) are stored φ-major from −180°;
- CHAMBER Urey-Bradley terms and harmonic impropers use their own (1-based) lists;
- extra points of 4- and 5-site waters become virtual sites by OpenMM's rules (see
  :meth:`_PrmtopReader.virtual_sites`); their bonds stay ordinary bond terms, as in
  OpenMM with flexible water.

Parameters stay per prmtop type index: interactions sharing a bond/angle/dihedral
type share one row of parameters.
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
    ParameterTable,
    Residue,
    System,
    TopologyError,
    TopologyLoader,
    VirtualSites,
)
from torchmd_core.geometry import box_from_lengths_angles
from torchmd_plugins.amber.tables import (
    TableBuilder,
    check_file,
    cmap_table,
    element_from_mass,
    pair_tensor,
)

__all__ = ["PrmtopLoader", "read_prmtop"]

_SIGMA_FROM_RMIN = 2.0 ** (-1.0 / 6.0)
#: Residue names OpenMM's AmberPrmtopFile takes for water; extra-point name prefixes.
_WATER_RESIDUES = ("WAT", "HOH", "TP4", "TP5", "T4E")
_EP_PREFIXES = ("EP", "LP")
#: Angle of a 5-site water's lone pairs out of the H-O-H plane (OpenMM's value).
_OUT_OF_PLANE_ANGLE = math.radians(54.735)


class PrmtopLoader(TopologyLoader):
    """AMBER prmtop/parm7 topology with parameters (via parmed)."""

    class Config(LoaderConfig):
        kind: Literal["prmtop"] = "prmtop"

    extensions: ClassVar[tuple[str, ...]] = (
        "prmtop",
        "parm7",
        "top7",
        "prmtop.gz",
        "parm7.gz",
    )

    def load_topology(self, path: Path, parameters: Sequence[Path] = ()) -> System:
        if parameters:
            raise TopologyError(
                f"'{path.name}' is an AMBER prmtop and holds its own parameters; "
                f"remove the parameter files ({', '.join(p.name for p in parameters)})"
            )
        return read_prmtop(path)


def _raw(path: Path) -> dict[str, list[Any]]:
    import parmed

    try:
        parm = parmed.amber.AmberFormat(str(path))
    except FileNotFoundError:
        raise InputFileError(f"prmtop file '{path}' does not exist") from None
    except Exception as err:  # parmed raises many types for malformed files
        raise InputFileError(
            f"cannot read AMBER prmtop '{path}': {type(err).__name__}: {err}. "
            "Is it a complete prmtop (%VERSION/%FLAG sections) written by tleap or "
            "parmed?"
        ) from None
    data: dict[str, list[Any]] = parm.parm_data
    required = (
        "POINTERS",
        "ATOM_NAME",
        "CHARGE",
        "MASS",
        "ATOM_TYPE_INDEX",
        "NONBONDED_PARM_INDEX",
        "RESIDUE_LABEL",
        "RESIDUE_POINTER",
        "BOND_FORCE_CONSTANT",
        "BOND_EQUIL_VALUE",
        "ANGLE_FORCE_CONSTANT",
        "ANGLE_EQUIL_VALUE",
        "DIHEDRAL_FORCE_CONSTANT",
        "DIHEDRAL_PERIODICITY",
        "DIHEDRAL_PHASE",
        "LENNARD_JONES_ACOEF",
        "LENNARD_JONES_BCOEF",
        "BONDS_INC_HYDROGEN",
        "BONDS_WITHOUT_HYDROGEN",
        "ANGLES_INC_HYDROGEN",
        "ANGLES_WITHOUT_HYDROGEN",
        "DIHEDRALS_INC_HYDROGEN",
        "DIHEDRALS_WITHOUT_HYDROGEN",
        "NUMBER_EXCLUDED_ATOMS",
        "EXCLUDED_ATOMS_LIST",
        "AMBER_ATOM_TYPE",
    )
    missing = [flag for flag in required if flag not in data]
    if missing:
        raise InputFileError(
            f"AMBER prmtop '{path}' lacks the section(s) {', '.join(missing)}; the "
            "file "
            "is truncated or not a prmtop"
        )
    n_atoms = int(data["POINTERS"][0])
    for flag in ("ATOM_NAME", "CHARGE", "MASS", "ATOM_TYPE_INDEX", "AMBER_ATOM_TYPE"):
        if len(data[flag]) != n_atoms:
            raise InputFileError(
                f"AMBER prmtop '{path}': %FLAG {flag} has {len(data[flag])} entries "
                "for "
                f"{n_atoms} atoms; the file is truncated or corrupt"
            )
    return data


def read_prmtop(path: Path) -> System:
    """Read an AMBER prmtop into a System (see the module docstring for conventions)."""
    check_file(path, "AMBER prmtop")
    data = _raw(path)
    reader = _PrmtopReader(path, data)
    return reader.system()


class _PrmtopReader:
    def __init__(self, path: Path, data: dict[str, list[Any]]) -> None:
        self.path = path
        self.data = data
        self.n_atoms = int(data["POINTERS"][0])
        self.n_types = int(data["POINTERS"][1])
        self.chamber = "CTITLE" in data or "CHARMM_UREY_BRADLEY_COUNT" in data
        self.charges = self._charges()
        self.lj_type = [int(t) - 1 for t in data["ATOM_TYPE_INDEX"]]
        self.type_names = [str(t).strip() for t in data["AMBER_ATOM_TYPE"]]
        self.nb_index = [int(x) for x in data["NONBONDED_PARM_INDEX"]]
        if len(self.nb_index) != self.n_types * self.n_types:
            self._corrupt(
                "NONBONDED_PARM_INDEX",
                f"{len(self.nb_index)} entries for {self.n_types} types",
            )

    def _charges(self) -> list[float]:
        """Charges in e. parmed has divided CHARGE already: by 18.2223, or by
        √332.0716 in CHAMBER files, where OpenMM divides by 18.2223 too."""
        from parmed.constants import AMBER_ELECTROSTATIC, CHARMM_ELECTROSTATIC

        if "CTITLE" not in self.data:
            return [float(q) for q in self.data["CHARGE"]]
        factor = CHARMM_ELECTROSTATIC / AMBER_ELECTROSTATIC
        return [float(q) * factor for q in self.data["CHARGE"]]

    def _corrupt(self, flag: str, what: str) -> TopologyError:
        raise InputFileError(f"AMBER prmtop '{self.path}': %FLAG {flag}: {what}")

    def _floats(self, flag: str) -> list[float]:
        return [float(x) for x in self.data.get(flag, [])]

    def _groups(self, flags: Sequence[str], width: int) -> list[list[int]]:
        values: list[int] = []
        for flag in flags:
            values.extend(int(x) for x in self.data.get(flag, []))
        if len(values) % width:
            self._corrupt(
                "/".join(flags), f"length {len(values)} is not a multiple of {width}"
            )
        return [values[k : k + width] for k in range(0, len(values), width)]

    def _check_atoms(self, flag: str, atoms: Sequence[int]) -> None:
        for a in atoms:
            if not 0 <= a < self.n_atoms:
                self._corrupt(flag, f"atom index {a + 1} outside 1..{self.n_atoms}")

    def _type_param(self, flag: str, values: list[float], index: int) -> float:
        if not 0 <= index < len(values):
            self._corrupt(flag, f"parameter type {index + 1} outside 1..{len(values)}")
        return values[index]

    def _name(self, *atoms: int) -> str:
        return "-".join(self.type_names[a] for a in atoms)

    # -- bonded terms ------------------------------------------------------------------
    def bonds(self) -> tuple[TableBuilder, list[tuple[int, int]]]:
        k = self._floats("BOND_FORCE_CONSTANT")
        r0 = self._floats("BOND_EQUIL_VALUE")
        table = TableBuilder(2, ("k", "r0"))
        graph = []
        for i, j, t in self._groups(
            ("BONDS_INC_HYDROGEN", "BONDS_WITHOUT_HYDROGEN"), 3
        ):
            a, b, t = i // 3, j // 3, t - 1
            self._check_atoms("BONDS", (a, b))
            values = (
                self._type_param("BOND_FORCE_CONSTANT", k, t),
                self._type_param("BOND_EQUIL_VALUE", r0, t),
            )
            table.add((a, b), t, values, self._name(a, b))
            graph.append((a, b))
        return table, graph

    def angles(self) -> TableBuilder:
        k = self._floats("ANGLE_FORCE_CONSTANT")
        theta0 = self._floats("ANGLE_EQUIL_VALUE")
        table = TableBuilder(3, ("k", "theta0"))
        for i, j, k_, t in self._groups(
            ("ANGLES_INC_HYDROGEN", "ANGLES_WITHOUT_HYDROGEN"), 4
        ):
            a, b, c, t = i // 3, j // 3, k_ // 3, t - 1
            self._check_atoms("ANGLES", (a, b, c))
            values = (
                self._type_param("ANGLE_FORCE_CONSTANT", k, t),
                self._type_param("ANGLE_EQUIL_VALUE", theta0, t),
            )
            table.add((a, b, c), t, values, self._name(a, b, c))
        return table

    def dihedrals(self) -> tuple[TableBuilder, TableBuilder, TableBuilder]:
        """Torsions, periodic impropers and 1-4 pairs."""
        k = self._floats("DIHEDRAL_FORCE_CONSTANT")
        phase = self._floats("DIHEDRAL_PHASE")
        period = self._floats("DIHEDRAL_PERIODICITY")
        scee = self._floats("SCEE_SCALE_FACTOR")
        scnb = self._floats("SCNB_SCALE_FACTOR")
        default_scee, default_scnb = (1.0, 1.0) if self.chamber else (1.2, 2.0)
        acoef, bcoef = self._lj_tables_14()
        torsions = TableBuilder(4, ("k", "phase", "periodicity"))
        impropers = TableBuilder(4, ("k", "phase", "periodicity"))
        pairs = TableBuilder(2, ("charge_scale", "sigma", "epsilon"))
        seen_pairs: set[tuple[int, int]] = set()
        for i, j, k3, k4, t in self._groups(
            ("DIHEDRALS_INC_HYDROGEN", "DIHEDRALS_WITHOUT_HYDROGEN"), 5
        ):
            quad = (i // 3, j // 3, abs(k3) // 3, abs(k4) // 3)
            self._check_atoms("DIHEDRALS", quad)
            t -= 1
            values = (
                self._type_param("DIHEDRAL_FORCE_CONSTANT", k, t),
                self._type_param("DIHEDRAL_PHASE", phase, t),
                float(int(0.5 + self._type_param("DIHEDRAL_PERIODICITY", period, t))),
            )
            (impropers if k4 < 0 else torsions).add(quad, t, values, self._name(*quad))
            if (
                k3 > 0 and k4 > 0
            ):  # OpenMM's test: atom 1 is never 3rd/4th (LEaP reorders)
                a, d = quad[0], quad[3]
                ta, td = self.lj_type[a], self.lj_type[d]
                index = self.nb_index[self.n_types * ta + td] - 1
                if index < 0:
                    continue  # a 10-12 pair: OpenMM adds no 1-4 term
                s_ee = scee[t] if t < len(scee) else default_scee
                s_nb = scnb[t] if t < len(scnb) else default_scnb
                sigma, epsilon = _sigma_epsilon(acoef[index], bcoef[index])
                pair = (min(a, d), max(a, d))
                if pair in seen_pairs:
                    raise TopologyError(
                        f"AMBER prmtop '{self.path}': the 1-4 pair of atoms {a + 1} "
                        "and "
                        f"{d + 1} is counted by two dihedrals; one of them must carry "
                        "a "
                        "negative third atom index (regenerate the prmtop with "
                        "tleap/parmed)"
                    )
                seen_pairs.add(pair)
                key = (min(ta, td), max(ta, td), s_ee, s_nb)
                pairs.add(
                    (a, d), key, (1.0 / s_ee, sigma, epsilon / s_nb), self._name(a, d)
                )
        return torsions, impropers, pairs

    def _lj_tables_14(self) -> tuple[list[float], list[float]]:
        if self.chamber and "LENNARD_JONES_14_ACOEF" in self.data:
            return self._floats("LENNARD_JONES_14_ACOEF"), self._floats(
                "LENNARD_JONES_14_BCOEF"
            )
        return self._floats("LENNARD_JONES_ACOEF"), self._floats("LENNARD_JONES_BCOEF")

    def urey_bradley(self) -> TableBuilder:
        k = self._floats("CHARMM_UREY_BRADLEY_FORCE_CONSTANT")
        r0 = self._floats("CHARMM_UREY_BRADLEY_EQUIL_VALUE")
        table = TableBuilder(2, ("k", "r0"))
        for i, j, t in self._groups(("CHARMM_UREY_BRADLEY",), 3):
            a, b, t = i - 1, j - 1, t - 1  # 1-based atom indices here
            self._check_atoms("CHARMM_UREY_BRADLEY", (a, b))
            values = (
                self._type_param("CHARMM_UREY_BRADLEY_FORCE_CONSTANT", k, t),
                self._type_param("CHARMM_UREY_BRADLEY_EQUIL_VALUE", r0, t),
            )
            table.add((a, b), t, values, self._name(a, b))
        return table

    def harmonic_impropers(self) -> TableBuilder:
        k = self._floats("CHARMM_IMPROPER_FORCE_CONSTANT")
        psi0 = self._floats("CHARMM_IMPROPER_PHASE")
        table = TableBuilder(4, ("k", "psi0"))
        for i, j, k3, k4, t in self._groups(("CHARMM_IMPROPERS",), 5):
            quad = (i - 1, j - 1, abs(k3) - 1, abs(k4) - 1)
            self._check_atoms("CHARMM_IMPROPERS", quad)
            values = (
                self._type_param("CHARMM_IMPROPER_FORCE_CONSTANT", k, t - 1),
                self._type_param("CHARMM_IMPROPER_PHASE", psi0, t - 1),
            )
            table.add(quad, t - 1, values, self._name(*quad))
        return table

    def cmap(self) -> ParameterTable | None:
        prefix = "CMAP_" if "CMAP_COUNT" in self.data else "CHARMM_CMAP_"
        if prefix + "COUNT" not in self.data:
            return None
        n_maps = int(self.data[prefix + "COUNT"][1])
        sizes = [int(x) for x in self.data[prefix + "RESOLUTION"]]
        if n_maps == 0:
            return None
        if len(set(sizes)) != 1:
            raise TopologyError(
                f"AMBER prmtop '{self.path}': CMAP grids of different sizes "
                f"{sorted(set(sizes))} "
                "are not supported"
            )
        size = sizes[0]
        grids = []
        for m in range(n_maps):
            flag = f"{prefix}PARAMETER_{m + 1:02d}"
            values = self._floats(flag)
            if len(values) != size * size:
                self._corrupt(flag, f"{len(values)} values for a {size}x{size} grid")
            grids.append(np.asarray(values).reshape(size, size))  # [φ, ψ] from −180°
        atoms, maps = [], []
        for a1, a2, a3, a4, a5, t in self._groups((prefix + "INDEX",), 6):
            quads = (a1 - 1, a2 - 1, a3 - 1, a4 - 1, a2 - 1, a3 - 1, a4 - 1, a5 - 1)
            self._check_atoms(prefix + "INDEX", quads)
            if not 1 <= t <= n_maps:
                self._corrupt(prefix + "INDEX", f"map {t} outside 1..{n_maps}")
            atoms.append(quads)
            maps.append(t - 1)
        return cmap_table(atoms, maps, grids) if atoms else None

    # -- non-bonded --------------------------------------------------------------------
    def nonbonded(self) -> NonbondedParameters:
        for a, b in zip(
            self._floats("HBOND_ACOEF"), self._floats("HBOND_BCOEF"), strict=False
        ):
            if a or b:
                raise TopologyError(
                    f"AMBER prmtop '{self.path}' has 10-12 hydrogen-bond terms, which "
                    "are not supported"
                )
        acoef = self._floats("LENNARD_JONES_ACOEF")
        bcoef = self._floats("LENNARD_JONES_BCOEF")
        if "LENNARD_JONES_CCOEF" in self.data and any(
            self._floats("LENNARD_JONES_CCOEF")
        ):
            raise TopologyError(
                f"AMBER prmtop '{self.path}' has 12-6-4 (LENNARD_JONES_CCOEF) terms, "
                "which "
                "are not supported"
            )
        nt = self.n_types
        table_a = np.zeros((nt, nt))
        table_b = np.zeros((nt, nt))
        for ti in range(nt):
            for tj in range(nt):
                index = self.nb_index[nt * ti + tj] - 1
                if index >= 0:
                    table_a[ti, tj], table_b[ti, tj] = acoef[index], bcoef[index]
        sigma = np.zeros(nt)
        epsilon = np.zeros(nt)
        rmin_half = np.zeros(nt)
        for t in range(nt):
            a, b = table_a[t, t], table_b[t, t]
            if a == 0.0 or b == 0.0:  # OpenMM: rMin = 1 Å, ε = 0
                rmin, eps = 1.0, 0.0
            else:
                rmin, eps = (2.0 * a / b) ** (1.0 / 6.0), 0.25 * b * b / a
            rmin_half[t], epsilon[t] = rmin / 2.0, eps
            sigma[t] = rmin * _SIGMA_FROM_RMIN
        mask = self._pair_overrides(table_a, table_b, rmin_half, epsilon)
        names = [""] * nt
        for atom, t in enumerate(self.lj_type):
            if not names[t]:
                names[t] = self.type_names[atom]
        pair_mask = pair_c12 = pair_c6 = None
        if mask is not None:
            pair_mask = torch.as_tensor(mask)
            pair_c12 = torch.as_tensor(table_a)
            pair_c6 = torch.as_tensor(table_b)
        return NonbondedParameters(
            lj_types=torch.as_tensor(self.lj_type, dtype=torch.int64),
            sigma=torch.as_tensor(sigma),
            epsilon=torch.as_tensor(epsilon),
            type_names=tuple(names),
            pair_mask=pair_mask,
            pair_c12=pair_c12,
            pair_c6=pair_c6,
        )

    def _pair_overrides(
        self,
        table_a: np.ndarray,
        table_b: np.ndarray,
        rmin_half: np.ndarray,
        epsilon: np.ndarray,
    ) -> np.ndarray | None:
        """Pairs whose A/B differ from Lorentz-Berthelot, or None when OpenMM would
        use the combination rule for every pair (its 1e-6 relative test)."""
        rij = rmin_half[:, None] + rmin_half[None, :]
        wdij = np.sqrt(epsilon[:, None] * epsilon[None, :])
        lb_a = wdij * rij**12
        lb_b = 2.0 * wdij * rij**6
        nt = self.n_types
        indexed = np.array(
            [[self.nb_index[nt * i + j] > 0 for j in range(nt)] for i in range(nt)],
            dtype=bool,
        )
        zero = (table_a == 0.0) | (table_b == 0.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            rel_a = np.where(zero, 0.0, np.abs(table_a - lb_a) / np.abs(table_a))
            rel_b = np.where(zero, 0.0, np.abs(table_b - lb_b) / np.abs(table_b))
        zero_mismatch = zero & (
            (table_a != 0) | (table_b != 0) | ((wdij != 0) & (rij != 0))
        )
        openmm_uses_table = bool(
            ((rel_a > 1e-6) | (rel_b > 1e-6) | zero_mismatch)[indexed].any()
        )
        if not openmm_uses_table:
            return None
        # OpenMM then takes every pair from the table; keep exact values wherever the
        # combination rule differs at all from the tabulated A/B.
        sig = rij * _SIGMA_FROM_RMIN
        c6 = 4.0 * wdij * sig**6
        c12 = c6 * sig**6
        differs: np.ndarray = ~np.isclose(
            table_a, c12, rtol=1e-14, atol=0.0
        ) | ~np.isclose(table_b, c6, rtol=1e-14, atol=0.0)
        return differs

    def exclusions(self, pairs14: TableBuilder) -> torch.Tensor:
        counts = [int(x) for x in self.data["NUMBER_EXCLUDED_ATOMS"]]
        listed = [int(x) for x in self.data["EXCLUDED_ATOMS_LIST"]]
        if sum(counts) != len(listed):
            self._corrupt(
                "EXCLUDED_ATOMS_LIST",
                f"{len(listed)} entries, NUMBER_EXCLUDED_ATOMS sums to {sum(counts)}",
            )
        pairs: list[tuple[int, int]] = []
        start = 0
        for i, n in enumerate(counts):
            for j in listed[start : start + n]:
                if j > 0:
                    pairs.append((i, j - 1))
            start += n
        pairs.extend((int(a), int(b)) for a, b in pairs14.build().atoms.tolist())
        return pair_tensor(pairs)

    # -- virtual sites -----------------------------------------------------------------
    def virtual_sites(self, residue_index: np.ndarray) -> VirtualSites | None:
        """Extra points of water residues, exactly as OpenMM's ``AmberPrmtopFile``.

        In a residue named WAT, HOH, TP4, TP5 or T4E holding one atom named O*, two
        H* and atoms named EP*/LP*, one extra point is a ``ThreeParticleAverageSite``
        on the bisector, (1 − w, w/2, w/2) with w = d_OE / √(d_OH² − (d_HH/2)²); two are
        ``OutOfPlaneSite`` lone pairs at ±54.735° from the H-O-H plane. The distances
        are the r0 of the residue's O-H, H-H and O-EP bonds. Other extra points stay
        massless atoms that never move (as in OpenMM).
        """
        names = [str(n).strip() for n in self.data["ATOM_NAME"]]
        labels = [str(x).strip() for x in self.data["RESIDUE_LABEL"]]
        water = [labels[r] in _WATER_RESIDUES for r in residue_index.tolist()]
        ep_residues = {
            int(residue_index[i])
            for i, name in enumerate(names)
            if water[i] and name[:2] in _EP_PREFIXES
        }
        if not ep_residues:
            return None
        members: dict[int, dict[str, list[int]]] = {
            r: {"O": [], "H": [], "EP": []} for r in ep_residues
        }
        for i, name in enumerate(names):
            group = members.get(int(residue_index[i]))
            if group is not None:
                for key in ("O", "H"):
                    if name[:1] == key:
                        group[key].append(i)
                if name[:2] in _EP_PREFIXES:
                    group["EP"].append(i)
        lengths = self._water_bond_lengths(names, residue_index, ep_residues)
        three, out_of_plane = [], []
        for r in sorted(ep_residues):
            o, h, ep = members[r]["O"], members[r]["H"], members[r]["EP"]
            if len(o) != 1 or len(h) != 2 or len(ep) not in (1, 2):
                continue
            d_oh, d_hh, d_oe = (lengths.get((r, k)) for k in ("OH", "HH", "OE"))
            if d_oh is None or d_hh is None or d_oe is None:
                missing = [k for k, d in (("O-H", d_oh), ("H-H", d_hh), ("O-EP", d_oe))
                           if d is None]  # fmt: skip
                raise TopologyError(
                    f"AMBER prmtop '{self.path}': water residue {r + 1} "
                    f"({labels[r]}) has extra points but no {' or '.join(missing)} "
                    "bond, which place them (as in OpenMM); regenerate the prmtop "
                    "with tleap"
                )
            height = math.sqrt(d_oh**2 - (0.5 * d_hh) ** 2)
            parents = (o[0], h[0], h[1])
            if len(ep) == 1:
                w = d_oe / height
                three.append((ep[0], parents, (1.0 - w, 0.5 * w, 0.5 * w)))
                continue
            w = math.cos(_OUT_OF_PLANE_ANGLE) * d_oe / height
            hoh = 2.0 * math.asin(0.5 * d_hh / d_oh)
            cross = math.sin(_OUT_OF_PLANE_ANGLE) * d_oe / (d_oh**2 * math.sin(hoh))
            for site, sign in zip(ep, (1.0, -1.0), strict=True):
                out_of_plane.append((site, parents, (0.5 * w, 0.5 * w, sign * cross)))
        if not three and not out_of_plane:
            return None
        return VirtualSites.build(linear=three, out_of_plane=out_of_plane)

    def _water_bond_lengths(
        self, names: list[str], residue_index: np.ndarray, residues: set[int]
    ) -> dict[tuple[int, str], float]:
        """(residue, "OH" | "HH" | "OE") → bond r0, Å; the residue is the first atom's
        and a later bond overrides an earlier one (OpenMM's reading)."""
        r0 = self._floats("BOND_EQUIL_VALUE")
        out: dict[tuple[int, str], float] = {}
        for i, j, t in self._groups(
            ("BONDS_INC_HYDROGEN", "BONDS_WITHOUT_HYDROGEN"), 3
        ):
            a, b = i // 3, j // 3
            r = int(residue_index[a])
            if r not in residues:
                continue
            n1, n2 = names[a], names[b]
            d = self._type_param("BOND_EQUIL_VALUE", r0, t - 1)
            if n1[:1] == "H" or n2[:1] == "H":
                if n1[:1] == "H" and n2[:1] == "H":
                    out[(r, "HH")] = d
                if n1[:1] == "O" or n2[:1] == "O":
                    out[(r, "OH")] = d
            elif (n1[:1] == "O" or n2[:1] == "O") and (
                n1[:2] in _EP_PREFIXES or n2[:2] in _EP_PREFIXES
            ):
                out[(r, "OE")] = d
        return out

    # -- the whole system --------------------------------------------------------------
    def system(self) -> System:
        data = self.data
        bonds, graph = self.bonds()
        torsions, impropers, pairs14 = self.dihedrals()
        builders = {
            "bonds": bonds,
            "angles": self.angles(),
            "urey_bradley": self.urey_bradley(),
            "torsions": torsions,
            "impropers": impropers,
            "harmonic_impropers": self.harmonic_impropers(),
            "pairs14": pairs14,
        }
        terms = {name: b.build() for name, b in builders.items() if len(b)}
        cmap = self.cmap()
        if cmap is not None:
            terms["cmap"] = cmap
        masses = self._floats("MASS")
        if "ATOMIC_NUMBER" in data:
            z = [
                int(x) if int(x) > 0 else element_from_mass(m)
                for x, m in zip(data["ATOMIC_NUMBER"], masses, strict=False)
            ]
        else:
            z = [element_from_mass(m) for m in masses]
        residues, residue_index = self._residues()
        return System(
            masses=torch.as_tensor(masses, dtype=torch.float64),
            charges=torch.as_tensor(self.charges, dtype=torch.float64),
            atomic_numbers=torch.as_tensor(z, dtype=torch.int64),
            atom_names=tuple(str(n).strip() for n in data["ATOM_NAME"]),
            atom_types=tuple(self.type_names),
            residue_index=residue_index,
            residues=residues,
            bonds=pair_tensor(graph),
            exclusions=self.exclusions(pairs14),
            terms=terms,
            nonbonded=self.nonbonded(),
            box=self._box(),
            metadata={
                "source": str(self.path),
                "format": "chamber" if self.chamber else "prmtop",
            },
            virtual_sites=self.virtual_sites(residue_index.numpy()),
        )

    def _residues(self) -> tuple[tuple[Residue, ...], torch.Tensor]:
        labels = [str(x).strip() for x in self.data["RESIDUE_LABEL"]]
        starts = [int(x) - 1 for x in self.data["RESIDUE_POINTER"]]
        if (
            len(starts) != len(labels)
            or (starts and starts[0] != 0)
            or starts != sorted(starts)
        ):
            self._corrupt(
                "RESIDUE_POINTER",
                "does not list increasing first atoms of every residue",
            )
        index = np.zeros(self.n_atoms, dtype=np.int64)
        bounds = [*starts, self.n_atoms]
        for r in range(len(starts)):
            index[bounds[r] : bounds[r + 1]] = r
        residues = tuple(Residue(name, r + 1) for r, name in enumerate(labels))
        return residues, torch.as_tensor(index)

    def _box(self) -> torch.Tensor | None:
        ifbox = int(self.data["POINTERS"][27]) if len(self.data["POINTERS"]) > 27 else 0
        dims = self._floats("BOX_DIMENSIONS")
        if ifbox <= 0 or len(dims) < 4:
            return None
        beta, a, b, c = dims[:4]
        return box_from_lengths_angles(a, b, c, beta, beta, beta)


def _sigma_epsilon(a: float, b: float) -> tuple[float, float]:
    """σ (Å) and ε (kcal/mol) of an A/r¹² − B/r⁶ pair, as OpenMM derives them."""
    if a == 0.0 or b == 0.0:
        return _SIGMA_FROM_RMIN * 1.0, 0.0
    rmin = (2.0 * a / b) ** (1.0 / 6.0)
    return rmin * _SIGMA_FROM_RMIN, b * b / (4.0 * a)
