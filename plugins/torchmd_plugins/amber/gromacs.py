"""GROMACS ``top`` topologies (with their ``itp`` includes), via parmed.

parmed reads and parametrises the topology (``#include``, ``#define``, ``[ *types ]``,
``gen-pairs``); this module turns its parametrised structure into a System:

- bonds (funct 1), angles (funct 1; funct 5 gives Urey-Bradley terms too), periodic
  torsions (funct 1, 9), periodic impropers (funct 4), harmonic impropers (funct 2)
  and CMAPs; Ryckaert-Bellemans torsions (funct 3) are not supported;
- 1-4 pairs are exactly the ``[ pairs ]`` entries, with their LJ from ``[ pairtypes ]``
  or ``gen-pairs`` (ε × fudgeLJ) and Coulomb × fudgeQQ;
- exclusions: pairs up to ``nrexcl`` bonds apart (1-2 and 1-3 always, 1-4 when
  nrexcl ≥ 3), the ``[ pairs ]`` and the ``[ exclusions ]``;
- LJ types from ``[ atomtypes ]``: combination rule 2 (Lorentz-Berthelot) directly,
  rule 3 (geometric σ) and ``[ nonbond_params ]`` as pair overrides;
- virtual sites, as OpenMM's ``GromacsTopFile`` makes them: ``[ virtual_sites2 ]``
  funct 1 (weights 1 − a, a) and ``[ virtual_sites3 ]`` funct 1 (1 − a − b, a, b), read
  from the topology text (parmed keeps only a zero-force bond to the parent, which is
  dropped: a site's exclusions are the ``[ exclusions ]`` listed). Other kinds are
  refused by name.

Units are converted by parmed (kcal/mol, Å, degrees; GROMACS ½k becomes k).
"""

from __future__ import annotations

import math
import os
from collections import OrderedDict
from collections.abc import Collection, Iterator, Sequence
from contextlib import closing, contextmanager
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
    VirtualSites,
)
from torchmd_core.geometry import box_from_lengths_angles
from torchmd_plugins.amber.tables import (
    TableBuilder,
    check_file,
    cmap_table,
    element_from_mass,
    pair_tensor,
    pairs_12_13_14,
)

__all__ = ["GromacsTopLoader", "read_gromacs_top", "system_from_structure"]

_SIGMA_FROM_RMIN = 2.0 ** (-1.0 / 6.0)


class GromacsTopLoader(TopologyLoader):
    """GROMACS top topology with parameters (via parmed; includes from GMXLIB)."""

    class Config(LoaderConfig):
        kind: Literal["gromacs"] = "gromacs"

    extensions: ClassVar[tuple[str, ...]] = ("top",)

    def load_topology(self, path: Path, parameters: Sequence[Path] = ()) -> System:
        return read_gromacs_top(path, parameters)


def read_gromacs_top(path: Path, parameters: Sequence[Path] = ()) -> System:
    """Read a GROMACS topology. ``parameters`` may name include directories or files
    (their folders are searched for ``#include``), besides GMXLIB."""
    from parmed.gromacs import GromacsTopologyFile

    check_file(path, "GROMACS topology")
    try:
        with _include_dir(parameters):
            top = GromacsTopologyFile(str(path))
    except FileNotFoundError as err:
        raise InputFileError(
            f"GROMACS topology '{path}': {err}. Set GMXLIB or pass the folder holding "
            "the "
            "included force-field files as a parameter file"
        ) from None
    except (
        Exception
    ) as err:  # parmed raises many types for malformed or unparametrised files
        if "vsite" in str(err):
            raise TopologyError(
                f"GROMACS topology '{path}': parmed cannot read its [ virtual_sites3 ] "
                f"({err}); only funct 1 with equal weights (TIP4P-like) is readable"
            ) from None
        raise InputFileError(
            f"cannot read GROMACS topology '{path}': {type(err).__name__}: {err}"
        ) from None
    with _include_dir(parameters):
        sites, site_exclusions = gromacs_virtual_sites(path, len(top.atoms))
    return system_from_structure(top, path, sites, site_exclusions)


@contextmanager
def _include_dir(parameters: Sequence[Path]) -> Iterator[None]:
    """Point parmed's single ``#include`` search folder (besides the topology's own) at
    the first ``parameters`` entry (a folder, or a file's folder), else at GMXLIB."""
    import parmed.gromacs as gmx

    folders = [str(p if Path(p).is_dir() else Path(p).parent) for p in parameters]
    if os.environ.get("GMXLIB"):
        folders.append(os.environ["GMXLIB"])
    previous = gmx.GROMACS_TOPDIR
    if folders:
        gmx.GROMACS_TOPDIR = folders[0]
    try:
        yield
    finally:
        gmx.GROMACS_TOPDIR = previous


def system_from_structure(
    structure: Any,
    path: Path,
    virtual_sites: VirtualSites | None = None,
    exclusions: Collection[tuple[int, int]] = (),
) -> System:
    """A System from a parametrised parmed structure with GROMACS-style 1-4 pairs;
    ``exclusions`` are added to the structure's (those of virtual sites)."""
    return _StructureReader(structure, path, virtual_sites, exclusions).system()


def gromacs_virtual_sites(
    path: Path, n_atoms: int
) -> tuple[VirtualSites | None, set[tuple[int, int]]]:
    """The ``[ virtual_sites2 ]``/``[ virtual_sites3 ]`` (or ``dummies``) entries of a
    topology, and the ``[ exclusions ]`` of the molecules that have some (parmed drops
    those of its extra points), read from the preprocessed text as parmed reads it
    (``FLEXIBLE`` defined, GMXLIB includes) and numbered over ``[ molecules ]``."""
    import parmed.gromacs as gmx
    from parmed.gromacs._gromacsfile import GromacsFile

    types: dict[str, _MoleculeText] = {}
    order: list[tuple[str, int]] = []
    section = ""
    current: _MoleculeText | None = None
    handle = GromacsFile(
        str(path), includes=[gmx.GROMACS_TOPDIR], defines=OrderedDict(FLEXIBLE=1)
    )
    with closing(handle) as lines:
        for raw in lines:
            line = raw.strip()
            if not line:
                continue
            if line[0] == "[":
                section = line[1:-1].strip().lower()
                continue
            words = line.split()
            if section == "moleculetype":
                current = types[words[0]] = _MoleculeText()
            elif section == "molecules":
                order.append((words[0], int(words[1])))
            elif current is not None:
                current.add(section, words)
    linear: list[tuple[int, list[int], list[float]]] = []
    excluded: set[tuple[int, int]] = set()
    offset = 0
    for name, count in order:
        molecule = types[name]
        for _ in range(count):
            if molecule.sites:
                linear.extend(
                    _gromacs_site(path, *entry, offset) for entry in molecule.sites
                )
                excluded |= {(i + offset, j + offset) for i, j in molecule.exclusions}
            offset += molecule.n_atoms
    if not linear:
        return None, set()
    if offset != n_atoms:
        raise TopologyError(
            f"GROMACS topology '{path}': [ molecules ] add up to {offset} atoms, "
            f"parmed read {n_atoms}; cannot number the virtual sites"
        )
    return VirtualSites.build(linear=linear), excluded


class _MoleculeText:
    """What gromacs_virtual_sites needs of one [ moleculetype ]."""

    def __init__(self) -> None:
        self.n_atoms = 0
        self.sites: list[tuple[str, list[str]]] = []
        self.exclusions: set[tuple[int, int]] = set()

    def add(self, section: str, words: list[str]) -> None:
        if section == "atoms":
            self.n_atoms += 1
        elif section == "exclusions":
            first = int(words[0]) - 1
            for w in words[1:]:
                other = int(w) - 1
                self.exclusions.add((min(first, other), max(first, other)))
        elif section.startswith(("virtual_sites", "dummies")):
            self.sites.append((section, words))


def _gromacs_site(
    path: Path, section: str, words: list[str], offset: int
) -> tuple[int, list[int], list[float]]:
    """(site, parents, weights) of one virtual-site line, atoms numbered from offset."""
    kind = section.removeprefix("virtual_sites").removeprefix("dummies")
    n = {"2": 2, "3": 3}.get(kind)
    if n is None or len(words) < n + 2 + n - 1 or words[n + 1] != "1":
        funct = words[n + 1] if n is not None and len(words) > n + 1 else "?"
        raise TopologyError(
            f"GROMACS topology '{path}': [ {section} ] funct {funct} is not supported "
            "(only [ virtual_sites2 ] and [ virtual_sites3 ] funct 1, linear "
            f"combinations): {' '.join(words)}"
        )
    atoms = [int(w) - 1 + offset for w in words[: n + 1]]
    a = [float(w) for w in words[n + 2 : n + 2 + n - 1]]
    return atoms[0], atoms[1:], [1.0 - sum(a), *a]


class _StructureReader:
    def __init__(
        self,
        structure: Any,
        path: Path,
        virtual_sites: VirtualSites | None = None,
        exclusions: Collection[tuple[int, int]] = (),
    ) -> None:
        self.s = structure
        self.path = path
        self.virtual_sites = virtual_sites
        self.extra_exclusions = set(exclusions)
        self.site_atoms = (
            set() if virtual_sites is None else set(virtual_sites.sites.tolist())
        )
        self.atoms = list(structure.atoms)
        self.n_atoms = len(self.atoms)
        if getattr(structure, "rb_torsions", None) and len(structure.rb_torsions):
            raise TopologyError(
                f"'{path}' has {len(structure.rb_torsions)} Ryckaert-Bellemans "
                "torsions "
                "(dihedral funct 3), which are not supported"
            )
        for kind in (
            "trigonal_angles",
            "out_of_plane_bends",
            "pi_torsions",
            "stretch_bends",
            "torsion_torsions",
        ):
            items = getattr(structure, kind, None)
            if items is not None and len(items):
                raise TopologyError(
                    f"'{path}' has {kind.replace('_', ' ')}, which are not supported"
                )

    def _missing(self, what: str, atoms: Sequence[Any]) -> TopologyError:
        label = "-".join(f"{a.idx + 1} {a.name} ({a.type})" for a in atoms)
        return TopologyError(
            f"'{self.path}': no parameters for the {what} of atoms {label}"
        )

    def _name(self, atoms: Sequence[Any]) -> str:
        return "-".join(str(a.type) for a in atoms)

    def bonds(self) -> tuple[TableBuilder, list[tuple[int, int]]]:
        table = TableBuilder(2, ("k", "r0"))
        graph = []
        for b in self.s.bonds:
            if (
                b.type is not None
                and float(b.type.k) == 0.0
                and ({b.atom1.idx, b.atom2.idx} & self.site_atoms)
            ):
                continue  # parmed's stand-in for a virtual_sites3 entry
            graph.append((b.atom1.idx, b.atom2.idx))
            if b.type is None:
                raise self._missing("bond", (b.atom1, b.atom2))
            values = (float(b.type.k), float(b.type.req))
            table.add(
                (b.atom1.idx, b.atom2.idx),
                (id(b.type), values),
                values,
                self._name((b.atom1, b.atom2)),
            )
        return table, graph

    def angles(self) -> tuple[TableBuilder, TableBuilder]:
        angles = TableBuilder(3, ("k", "theta0"))
        for a in self.s.angles:
            if a.type is None:
                raise self._missing("angle", (a.atom1, a.atom2, a.atom3))
            values = (float(a.type.k), math.radians(float(a.type.theteq)))
            atoms = (a.atom1.idx, a.atom2.idx, a.atom3.idx)
            angles.add(
                atoms,
                (id(a.type), values),
                values,
                self._name((a.atom1, a.atom2, a.atom3)),
            )
        ub = TableBuilder(2, ("k", "r0"))
        for u in self.s.urey_bradleys:
            if u.type is None:
                raise self._missing("Urey-Bradley term", (u.atom1, u.atom2))
            values = (float(u.type.k), float(u.type.req))
            ub.add(
                (u.atom1.idx, u.atom2.idx),
                (id(u.type), values),
                values,
                self._name((u.atom1, u.atom2)),
            )
        return angles, ub

    def dihedrals(self) -> tuple[TableBuilder, TableBuilder, TableBuilder]:
        torsions = TableBuilder(4, ("k", "phase", "periodicity"))
        impropers = TableBuilder(4, ("k", "phase", "periodicity"))
        for d in self.s.dihedrals:
            atoms = (d.atom1, d.atom2, d.atom3, d.atom4)
            if d.type is None:
                raise self._missing("dihedral", atoms)
            terms = list(d.type) if hasattr(d.type, "__iter__") else [d.type]
            target = impropers if d.improper else torsions
            for t in terms:
                values = (
                    float(t.phi_k),
                    math.radians(float(t.phase)),
                    float(round(float(t.per))),
                )
                target.add(
                    tuple(a.idx for a in atoms), values, values, self._name(atoms)
                )
        harmonic = TableBuilder(4, ("k", "psi0"))
        for imp in self.s.impropers:
            atoms = (imp.atom1, imp.atom2, imp.atom3, imp.atom4)
            if imp.type is None:
                raise self._missing("improper", atoms)
            improper = (float(imp.type.psi_k), math.radians(float(imp.type.psi_eq)))
            harmonic.add(
                tuple(a.idx for a in atoms), improper, improper, self._name(atoms)
            )
        return torsions, impropers, harmonic

    def cmaps(self) -> Any:
        atoms: list[tuple[int, ...]] = []
        maps: list[int] = []
        grids: list[np.ndarray] = []
        index: dict[int, int] = {}
        for c in self.s.cmaps:
            octet = (
                c.atom1,
                c.atom2,
                c.atom3,
                c.atom4,
                c.atom2,
                c.atom3,
                c.atom4,
                c.atom5,
            )
            if c.type is None:
                raise self._missing("CMAP", octet)
            key = id(c.type)
            if key not in index:
                res = int(c.type.resolution)
                index[key] = len(grids)
                grids.append(
                    np.asarray(list(c.type.grid), dtype=np.float64).reshape(res, res)
                )
            atoms.append(tuple(a.idx for a in octet))
            maps.append(index[key])
        return cmap_table(atoms, maps, grids) if atoms else None

    def pairs14(self) -> tuple[TableBuilder, set[tuple[int, int]]]:
        table = TableBuilder(2, ("charge_scale", "sigma", "epsilon"))
        listed = set()
        for p in self.s.adjusts:
            if p.type is None:
                raise self._missing("1-4 pair", (p.atom1, p.atom2))
            values = (
                float(p.type.chgscale),
                float(p.type.rmin) * _SIGMA_FROM_RMIN,
                float(p.type.epsilon),
            )
            i, j = p.atom1.idx, p.atom2.idx
            table.add((i, j), values, values, self._name((p.atom1, p.atom2)))
            listed.add((min(i, j), max(i, j)))
        return table, listed

    def nonbonded(self) -> NonbondedParameters:
        order: dict[str, int] = {}
        params: list[tuple[float, float]] = []
        nbfix: dict[str, dict[str, Any]] = {}
        for a in self.atoms:
            name = str(a.type)
            if name not in order:
                order[name] = len(order)
                params.append((float(a.sigma), abs(float(a.epsilon))))
                at = getattr(a, "atom_type", None)
                nbfix[name] = dict(getattr(at, "nbfix", {}) or {})
        names = list(order)
        sigma = np.array([p[0] for p in params])
        epsilon = np.array([p[1] for p in params])
        n = len(names)
        c12 = np.zeros((n, n))
        c6 = np.zeros((n, n))
        mask = np.zeros((n, n), dtype=bool)
        geometric = getattr(self.s, "combining_rule", "lorentz") == "geometric"
        for i in range(n):
            for j in range(n):
                fix = nbfix[names[i]].get(names[j])
                if fix is not None:
                    s, e = float(fix[0]) * _SIGMA_FROM_RMIN, float(fix[1])
                elif geometric:
                    s, e = (
                        math.sqrt(sigma[i] * sigma[j]),
                        math.sqrt(epsilon[i] * epsilon[j]),
                    )
                else:
                    continue
                mask[i, j] = True
                c6[i, j] = 4.0 * e * s**6
                c12[i, j] = c6[i, j] * s**6
        has = bool(mask.any())
        return NonbondedParameters(
            lj_types=torch.as_tensor(
                [order[str(a.type)] for a in self.atoms], dtype=torch.int64
            ),
            sigma=torch.as_tensor(sigma),
            epsilon=torch.as_tensor(epsilon),
            type_names=tuple(names),
            pair_mask=torch.as_tensor(mask) if has else None,
            pair_c12=torch.as_tensor(c12) if has else None,
            pair_c6=torch.as_tensor(c6) if has else None,
        )

    def system(self) -> System:
        bonds, graph = self.bonds()
        angles, ub = self.angles()
        torsions, impropers, harmonic = self.dihedrals()
        pairs14, listed = self.pairs14()
        builders = {
            "bonds": bonds,
            "angles": angles,
            "urey_bradley": ub,
            "torsions": torsions,
            "impropers": impropers,
            "harmonic_impropers": harmonic,
            "pairs14": pairs14,
        }
        terms = {name: b.build() for name, b in builders.items() if len(b)}
        cmap = self.cmaps()
        if cmap is not None:
            terms["cmap"] = cmap
        p12, p13, p14 = pairs_12_13_14(self.n_atoms, graph)
        nrexcl = int(getattr(self.s, "nrexcl", 3) or 3)
        excluded = set(listed)
        for depth, pairs in enumerate((p12, p13, p14), start=1):
            if nrexcl >= depth:
                excluded |= pairs
        for a in self.atoms:
            for b in getattr(a, "exclusion_partners", []):
                excluded.add((min(a.idx, b.idx), max(a.idx, b.idx)))
        excluded |= self.extra_exclusions
        residues = tuple(
            Residue(r.name, int(r.number), (r.chain or "A")[:1], r.segid or "")
            for r in self.s.residues
        )
        box = None
        if self.s.box is not None:
            box = box_from_lengths_angles(*[float(x) for x in self.s.box[:6]])
        masses = [float(a.mass) for a in self.atoms]
        z = [
            int(a.atomic_number) if int(a.atomic_number) > 0 else element_from_mass(m)
            for a, m in zip(self.atoms, masses, strict=True)
        ]
        return System(
            masses=torch.as_tensor(masses, dtype=torch.float64),
            charges=torch.as_tensor(
                [float(a.charge) for a in self.atoms], dtype=torch.float64
            ),
            atomic_numbers=torch.as_tensor(z, dtype=torch.int64),
            atom_names=tuple(a.name for a in self.atoms),
            atom_types=tuple(str(a.type) for a in self.atoms),
            residue_index=torch.as_tensor(
                [a.residue.idx for a in self.atoms], dtype=torch.int64
            ),
            residues=residues,
            bonds=pair_tensor(graph),
            exclusions=pair_tensor(excluded),
            terms=terms,
            nonbonded=self.nonbonded(),
            box=box,
            metadata={"source": str(self.path), "format": "gromacs"},
            virtual_sites=self.virtual_sites,
        )
