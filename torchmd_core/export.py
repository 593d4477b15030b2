"""Write fitted force-field parameters back to an AMBER prmtop (through parmed).

:func:`export_parameters` takes the prmtop the system came from (or any prmtop of the
same molecule) as a template and returns a parmed ``AmberParm`` (``ChamberParm`` for
CHARMM force fields in prmtop form) carrying the current values of the potentials:
charges, Lennard-Jones tables (pair overrides included), bonds, angles, torsions,
periodic impropers, CMAP grids, 1-4 scaling and, in CHAMBER files, Urey-Bradley terms,
harmonic impropers and the 1-4 Lennard-Jones table. Save it with ``.save(path)``;
:class:`~torchmd_core.system.System` loaders, OpenMM, AMBER and parmed read the file.

Interaction types are rebuilt from the system's per-type tables, so the file shares
parameters exactly as the fitted model does. A prmtop cannot store everything a model
can hold: the 1-4 Lennard-Jones σ of an AMBER file comes from the main LJ table, and
ε only through a per-dihedral scale factor (SCNB). Export then sets SCEE and SCNB of
each dihedral so that the file reproduces the model's 1-4 energies, and raises
:class:`ExportError` where no prmtop can (a 1-4 σ that differs from the LJ table's).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Hashable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from torchmd_core.errors import TorchMDError
from torchmd_core.parameters import fitted_system
from torchmd_core.system import ParameterTable, System

if TYPE_CHECKING:
    import parmed

__all__ = ["ExportError", "export_parameters"]

_RELATIVE = 1e-9  # how far a value may be from its prmtop representation


class ExportError(TorchMDError):
    """Fitted parameters that a prmtop cannot represent, or a template that does not
    describe the system."""


def export_parameters(
    system: System,
    potential: nn.Module | None = None,
    template: str | Path | parmed.amber.AmberParm | None = None,
) -> parmed.amber.AmberParm:
    """An AMBER prmtop structure with the parameters of ``potential``.

    Example::

        trainable(potential, "torsions.k")
        ...  # training
        export_parameters(system, potential).save("fitted.prmtop", overwrite=True)

    Args:
        system: the system the potential was built from.
        potential: the (trained) potentials; None exports ``system`` as it is.
        template: the prmtop (path or parmed ``AmberParm``) to take topology and
            everything else from; default: the file ``system`` was loaded from, when
            that is a prmtop.

    Returns:
        A new parmed ``AmberParm`` (or ``ChamberParm``); the template is not changed.

    Raises:
        ExportError: no usable template, a template for another molecule, or values
            a prmtop cannot hold.
    """
    parm = _template(system, template)
    fitted = fitted_system(system, potential) if potential is not None else system
    _check_atoms(parm, fitted)
    writer = _Writer(parm, fitted)
    writer.charges()
    writer.lennard_jones()
    writer.bonds("bonds", parm.bonds, parm.bond_types)
    writer.angles()
    writer.dihedrals()
    if writer.chamber:
        writer.bonds("urey_bradley", parm.urey_bradleys, parm.urey_bradley_types)
        writer.harmonic_impropers()
    writer.cmaps()
    _precise_cmap_format(parm)
    parm.remake_parm()
    return parm


def _precise_cmap_format(parm: Any) -> None:
    """Write CMAP grids with 9 significant digits (tleap's F9.5 keeps 5 decimals)."""
    from parmed.amber.amberformat import FortranFormat

    for flag in list(parm.formats):
        if "CMAP_PARAMETER" in flag:
            parm.formats[flag] = FortranFormat("5E16.8")


def _template(
    system: System, template: str | Path | parmed.amber.AmberParm | None
) -> parmed.amber.AmberParm:
    import parmed

    if template is None:
        source = system.metadata.get("source")
        if system.metadata.get("format") not in ("prmtop", "chamber") or not source:
            raise ExportError(
                "export_parameters needs an AMBER prmtop template: the system was "
                f"loaded from {source or 'no file'} ({system.metadata.get('format')}). "
                "Pass template=...; for a CHARMM psf make one with "
                "parmed.amber.ChamberParm.from_structure(...)"
            )
        template = source
    if isinstance(template, (str, Path)):
        try:
            loaded = parmed.load_file(str(template))
        except Exception as err:  # parmed raises many types for unreadable files
            raise ExportError(f"cannot read template '{template}': {err}") from None
        template = loaded
    if not isinstance(template, parmed.amber.AmberParm):
        raise ExportError(
            f"the template must be an AMBER prmtop (parmed AmberParm), got "
            f"{type(template).__name__}; convert it with "
            "parmed.amber.AmberParm.from_structure or ChamberParm.from_structure"
        )
    return copy.copy(template)


def _check_atoms(parm: Any, system: System) -> None:
    if len(parm.atoms) != system.n_atoms:
        raise ExportError(
            f"the template has {len(parm.atoms)} atoms, the system {system.n_atoms}"
        )
    for atom, name in zip(parm.atoms, system.atom_names, strict=True):
        if atom.name.strip() != name:
            raise ExportError(
                f"template atom {atom.idx} is named {atom.name!r}, the system's "
                f"{name!r}: the template describes another molecule"
            )


class _Writer:
    """Puts the system's per-type values into the interactions of a parmed AmberParm."""

    def __init__(self, parm: Any, system: System) -> None:
        import parmed

        self.pmd = parmed
        self.parm = parm
        self.system = system
        self.chamber = isinstance(parm, parmed.amber.ChamberParm)
        self.terms = system.terms
        nb = system.nonbonded
        self.c12: Tensor | None = None
        self.c6: Tensor | None = None
        if nb is not None:
            self.c12, self.c6 = nb.lj_tables()

    # -- atoms ------------------------------------------------------------------------
    def charges(self) -> None:
        from parmed.constants import AMBER_ELECTROSTATIC, CHARMM_ELECTROSTATIC

        # Our loader scales CHAMBER charges as OpenMM does; undo that here.
        scale = AMBER_ELECTROSTATIC / CHARMM_ELECTROSTATIC if self.chamber else 1.0
        for atom, q in zip(self.parm.atoms, self.system.charges.tolist(), strict=True):
            atom.charge = q * scale

    def lennard_jones(self) -> None:
        """The A/B tables (and the 1-4 tables of CHAMBER files) of every type pair."""
        if self.c12 is None:
            return
        nb = self.system.nonbonded
        assert nb is not None and self.c6 is not None
        ours = self._lj_type_map(nb.lj_types)
        data = self.parm.parm_data
        nt = int(data["POINTERS"][1])
        index = data["NONBONDED_PARM_INDEX"]
        for ti, ui in ours.items():
            for tj, uj in ours.items():
                k = int(index[nt * ti + tj]) - 1
                if k < 0:
                    continue
                data["LENNARD_JONES_ACOEF"][k] = float(self.c12[ui, uj])
                data["LENNARD_JONES_BCOEF"][k] = float(self.c6[ui, uj])
            a, b = float(self.c12[ui, ui]), float(self.c6[ui, ui])
            rmin, eps = (
                ((2.0 * a / b) ** (1 / 6), 0.25 * b * b / a) if a and b else (1.0, 0.0)
            )
            self.parm.LJ_radius[ti], self.parm.LJ_depth[ti] = 0.5 * rmin, eps
        if self.chamber:
            self._lj14_tables(ours)

    def _lj_type_map(self, lj_types: Tensor) -> dict[int, int]:
        """Template LJ type (0-based) → the system's LJ type of the same atoms."""
        out: dict[int, int] = {}
        for atom, ours in zip(self.parm.atoms, lj_types.tolist(), strict=True):
            t = atom.nb_idx - 1
            if out.setdefault(t, ours) != ours and not self._same_lj(out[t], ours):
                raise ExportError(
                    f"template LJ type {t + 1} ({atom.type}) holds atoms of fitted "
                    f"types {out[t]} and {ours} whose parameters now differ"
                )
        return out

    def _same_lj(self, a: int, b: int) -> bool:
        assert self.c12 is not None and self.c6 is not None
        return bool(
            torch.equal(self.c12[a], self.c12[b])
            and torch.equal(self.c6[a], self.c6[b])
        )

    def _lj14_tables(self, ours: dict[int, int]) -> None:
        table = self.terms.get("pairs14")
        if table is None:
            return
        data = self.parm.parm_data
        nt = int(data["POINTERS"][1])
        index = data["NONBONDED_PARM_INDEX"]
        values = table.parameters_per_interaction()
        written: dict[int, tuple[float, float]] = {}
        for n, (i, j) in enumerate(table.atoms.tolist()):
            if not _close(float(values["charge_scale"][n]), 1.0):
                raise ExportError(
                    f"1-4 pair {i}-{j}: charge scale "
                    f"{float(values['charge_scale'][n])}; CHAMBER files scale 1-4 "
                    "electrostatics by 1 only"
                )
            sigma, eps = float(values["sigma"][n]), float(values["epsilon"][n])
            c6 = 4.0 * eps * sigma**6
            ab = (c6 * sigma**6, c6)
            k = (
                int(
                    index[
                        nt * (self.parm.atoms[i].nb_idx - 1)
                        + self.parm.atoms[j].nb_idx
                        - 1
                    ]
                )
                - 1
            )
            if k in written and not all(map(_close, written[k], ab)):
                raise ExportError(
                    f"1-4 pair {i}-{j}: its LJ parameters differ from another 1-4 pair "
                    "of the same two atom types; a CHAMBER 1-4 table holds one value "
                    "per type pair"
                )
            written[k] = ab
            data["LENNARD_JONES_14_ACOEF"][k], data["LENNARD_JONES_14_BCOEF"][k] = ab

    # -- bonded terms ---------------------------------------------------------------
    def bonds(self, term: str, interactions: Any, type_list: Any) -> None:
        table = self.terms.get(term)
        if table is None:
            _require_empty(term, interactions)
            return

        def make(row: dict[str, float]) -> Any:
            return self.pmd.BondType(row["k"], row["r0"], list=type_list)

        _assign(
            term,
            table,
            interactions,
            lambda b: _either(b.atom1, b.atom2),
            make,
            type_list,
        )

    def angles(self) -> None:
        table = self.terms.get("angles")
        if table is None:
            _require_empty("angles", self.parm.angles)
            return
        types = self.parm.angle_types

        def make(row: dict[str, float]) -> Any:
            return self.pmd.AngleType(row["k"], math.degrees(row["theta0"]), list=types)

        _assign(
            "angles", table, self.parm.angles,
            lambda a: _either(a.atom1, a.atom2, a.atom3), make, types,
        )  # fmt: skip

    def harmonic_impropers(self) -> None:
        table = self.terms.get("harmonic_impropers")
        if table is None:
            _require_empty("harmonic_impropers", self.parm.impropers)
            return
        types = self.parm.improper_types

        def make(row: dict[str, float]) -> Any:
            return self.pmd.ImproperType(
                row["k"], math.degrees(row["psi0"]), list=types
            )

        _assign(
            "harmonic_impropers", table, self.parm.impropers,
            lambda d: _either(d.atom1, d.atom2, d.atom3, d.atom4), make, types,
        )  # fmt: skip

    def cmaps(self) -> None:
        table = self.terms.get("cmap")
        if table is None:
            _require_empty("cmap", self.parm.cmaps)
            return
        types = self.parm.cmap_types

        def make(row: dict[str, Any]) -> Any:
            grid = row["grid"]
            return self.pmd.CmapType(
                int(grid.shape[-1]), grid.reshape(-1).tolist(), list=types
            )

        def key(c: Any) -> Hashable:
            a = [c.atom1.idx, c.atom2.idx, c.atom3.idx, c.atom4.idx, c.atom5.idx]
            return (a[0], a[1], a[2], a[3], a[1], a[2], a[3], a[4])

        _assign("cmap", table, self.parm.cmaps, key, make, types, per_row=True)

    def dihedrals(self) -> None:
        """Torsions and periodic impropers, with SCEE/SCNB that reproduce the 1-4s."""
        parm = self.parm
        groups = {False: self.terms.get("torsions"), True: self.terms.get("impropers")}
        lookup = {
            improper: _index_interactions(table, _with_periodicity(table))
            for improper, table in groups.items()
            if table is not None
        }
        pairs = self._pairs14_by_atoms()
        made: dict[tuple[bool, int, float, float], Any] = {}
        for dih in parm.dihedrals:
            atoms = (dih.atom1.idx, dih.atom2.idx, dih.atom3.idx, dih.atom4.idx)
            table = groups.get(dih.improper)
            if table is None:
                raise ExportError(
                    _mismatch("impropers" if dih.improper else "torsions", atoms)
                )
            per = round(dih.type.per)
            n = _pop(lookup[dih.improper], (*atoms, per), (*atoms[::-1], per))
            if n is None:
                raise ExportError(
                    _mismatch("impropers" if dih.improper else "torsions", atoms)
                )
            row = int(table.types[n])
            scee, scnb = dih.type.scee, dih.type.scnb
            if not dih.ignore_end and not dih.improper:
                scee, scnb = self._scaling(atoms[0], atoms[3], pairs, scee, scnb)
            key = (dih.improper, row, scee, scnb)
            if key not in made:
                made[key] = self.pmd.DihedralType(
                    float(table.values["k"][row]),
                    per,
                    math.degrees(float(table.values["phase"][row])),
                    scee=scee,
                    scnb=scnb,
                    list=parm.dihedral_types,
                )
                parm.dihedral_types.append(made[key])
            dih.type = made[key]
        for improper, left in lookup.items():
            rest = [n for ns in left.values() for n in ns]
            if rest:
                atoms = tuple(groups[improper].atoms[rest[0]].tolist())  # type: ignore[union-attr]
                raise ExportError(
                    _missing("impropers" if improper else "torsions", atoms)
                )

    def _pairs14_by_atoms(self) -> dict[tuple[int, int], dict[str, float]]:
        table = self.terms.get("pairs14")
        if table is None:
            return {}
        values = table.parameters_per_interaction()
        return {
            (min(i, j), max(i, j)): {k: float(v[n]) for k, v in values.items()}
            for n, (i, j) in enumerate(table.atoms.tolist())
        }

    def _scaling(
        self,
        a: int,
        d: int,
        pairs: dict[tuple[int, int], dict[str, float]],
        scee: float,
        scnb: float,
    ) -> tuple[float, float]:
        """SCEE, SCNB for the 1-4 pair a-d so that the file gives the model's 1-4."""
        pair = pairs.get((min(a, d), max(a, d)))
        if pair is None:
            return scee, scnb
        scee = 1.0 / pair["charge_scale"] if pair["charge_scale"] else scee
        if self.chamber or self.c12 is None:
            return scee, scnb  # CHAMBER: a separate 1-4 LJ table, written elsewhere
        assert self.system.nonbonded is not None and self.c6 is not None
        t = self.system.nonbonded.lj_types
        a12, b6 = float(self.c12[t[a], t[d]]), float(self.c6[t[a], t[d]])
        if a12 == 0.0 or b6 == 0.0:
            if pair["epsilon"] != 0.0:
                raise ExportError(
                    f"1-4 pair {a}-{d}: ε = {pair['epsilon']:g} kcal/mol but the LJ "
                    "table has no interaction for these types; a prmtop derives 1-4 "
                    "LJ from it"
                )
            return scee, scnb
        sigma = (a12 / b6) ** (1.0 / 6.0)
        if not _close(sigma, pair["sigma"]):
            raise ExportError(
                f"1-4 pair {a}-{d}: σ = {pair['sigma']:.6f} Å differs from the LJ "
                f"table's {sigma:.6f} Å for these types; a prmtop takes 1-4 σ from the "
                "LJ table. Train 'nonbonded.sigma' and 'pairs14.sigma' together, or "
                "leave both fixed"
            )
        if pair["epsilon"] == 0.0:
            raise ExportError(
                f"1-4 pair {a}-{d}: ε = 0 cannot be expressed as a scaling of the LJ "
                "table's ε"
            )
        return scee, 0.25 * b6 * b6 / a12 / pair["epsilon"]


def _with_periodicity(
    table: ParameterTable,
) -> Callable[[tuple[int, ...], int], Hashable]:
    """Key of a torsion: its atoms and periodicity (multi-term torsions share atoms)."""
    periodicity = table.values["periodicity"][table.types].round().long().tolist()

    def key(atoms: tuple[int, ...], n: int) -> Hashable:
        return (*atoms, periodicity[n])

    return key


def _either(*atoms: Any) -> Hashable:
    return tuple(a.idx for a in atoms)


def _index_interactions(
    table: ParameterTable, key: Callable[[tuple[int, ...], int], Hashable]
) -> dict[Hashable, list[int]]:
    out: dict[Hashable, list[int]] = {}
    for n, atoms in enumerate(table.atoms.tolist()):
        out.setdefault(key(tuple(atoms), n), []).append(n)
    return out


def _pop(lookup: dict[Hashable, list[int]], *keys: Hashable) -> int | None:
    for k in keys:
        found = lookup.get(k)
        if found:
            n = found.pop(0)
            if not found:
                del lookup[k]
            return n
    return None


def _assign(
    term: str,
    table: ParameterTable,
    interactions: Iterable[Any],
    key: Callable[[Any], Hashable],
    make: Callable[[dict[str, Any]], Any],
    type_list: Any,
    per_row: bool = False,
) -> None:
    """Give every template interaction a new type holding its row of ``table``."""
    lookup = _index_interactions(table, lambda atoms, n: atoms)
    made: dict[int, Any] = {}
    for item in interactions:
        k = key(item)
        reverse = tuple(reversed(k)) if isinstance(k, tuple) and not per_row else k
        n = _pop(lookup, k, reverse)
        if n is None:
            raise ExportError(_mismatch(term, k))
        row = int(table.types[n])
        if row not in made:
            values = {
                name: (v[row] if v.dim() > 1 else float(v[row]))
                for name, v in table.values.items()
            }
            made[row] = make(values)
            type_list.append(made[row])
        item.type = made[row]
    rest = [n for ns in lookup.values() for n in ns]
    if rest:
        raise ExportError(_missing(term, tuple(table.atoms[rest[0]].tolist())))


def _require_empty(term: str, interactions: Any) -> None:
    if len(interactions):
        raise ExportError(
            f"the template has {term} the system lacks: the template describes "
            "another topology"
        )


def _mismatch(term: str, atoms: Hashable) -> str:
    return (
        f"template {term} interaction of atoms {atoms} is not in the system: the "
        "template describes another topology"
    )


def _missing(term: str, atoms: tuple[int, ...]) -> str:
    return (
        f"system {term} interaction of atoms {atoms} is not in the template: the "
        "template describes another topology"
    )


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= _RELATIVE * max(abs(a), abs(b))
