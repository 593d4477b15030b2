"""OpenMM serialized ``System`` XML (``XmlSerializer.serialize``), with a PDB for names.

The XML is parsed with ElementTree rather than through OpenMM: OpenMM is not a
dependency of torchmd-core, the format is plain and stable, and reading the forces
ourselves lets us name each interaction's term and keep per-type parameter rows.

Forces understood (units converted from kJ/mol, nm to kcal/mol, Å; OpenMM's ½k
harmonic constants to our k):

- ``HarmonicBondForce`` → ``bonds``; an entry between two atoms that are not bonded
  but are the ends of an angle whose two bonds are in the force is a Urey-Bradley term
  (OpenMM's CHARMM force field merges them into one force); a force named
  ``UreyBradleyForce`` is Urey-Bradley throughout.
- ``HarmonicAngleForce`` → ``angles``; ``PeriodicTorsionForce`` → ``torsions`` when
  its four atoms form a bonded chain, else ``impropers``; ``CMAPTorsionForce`` →
  ``cmap``
  (maps shifted from OpenMM's 0..2π grid to −π..π).
- ``CustomTorsionForce`` with a harmonic improper expression (OpenMM's CHARMM and
  AMBER loaders, and the CHARMM36 force field) → ``harmonic_impropers``.
- ``NonbondedForce``: charges, per-particle σ/ε (merged into LJ types), exceptions:
  those with a charge product or ε are 1-4 ``pairs14`` (charge scale = chargeProd /
  q_i q_j), all are exclusions.
- ``CustomNonbondedForce`` LJ tables (``acoef/bcoef``, as written by OpenMM's AMBER and
  CHARMM loaders and its ``LennardJonesForce``): LJ types with pair overrides; its
  exclusions are exclusions too. ``CustomBondForce`` 1-4 LJ (``LennardJones14``) gives
  the 1-4 σ, ε.
- ``CMMotionRemover`` and barostats/thermostats are ignored; anything else is an error.
- Virtual sites (``TwoParticleAverageSite``, ``ThreeParticleAverageSite``,
  ``OutOfPlaneSite``, ``LocalCoordinatesSite``) → :class:`~torchmd_core.VirtualSites`;
  ``SymmetrySite`` is refused.

Names, residues and the bond graph come from a PDB passed among the parameter files,
or ``<stem>.pdb`` / ``structure.pdb`` beside the XML; without one, elements are
guessed from masses and the bond graph is taken from the bonded forces.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from itertools import pairwise
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
from torchmd_plugins.amber.tables import (
    TableBuilder,
    check_file,
    cmap_table,
    element_from_mass,
    pair_tensor,
)

__all__ = ["OpenMMXmlLoader", "read_openmm_xml"]

KJ = 1.0 / 4.184  # kJ → kcal
NM = 10.0  # nm → Å
_IGNORED = {
    "CMMotionRemover",
    "MonteCarloBarostat",
    "MonteCarloAnisotropicBarostat",
    "MonteCarloMembraneBarostat",
    "MonteCarloFlexibleBarostat",
    "AndersenThermostat",
}
_PERIODIC_METHODS = {2, 3, 4, 5}  # CutoffPeriodic, Ewald, PME, LJPME


class OpenMMXmlLoader(TopologyLoader):
    """OpenMM serialized System XML; names and residues from a PDB (see module docs)."""

    class Config(LoaderConfig):
        kind: Literal["openmm_xml"] = "openmm_xml"

    extensions: ClassVar[tuple[str, ...]] = ("xml",)

    def load_topology(self, path: Path, parameters: Sequence[Path] = ()) -> System:
        return read_openmm_xml(path, parameters)


def read_openmm_xml(path: Path, parameters: Sequence[Path] = ()) -> System:
    """A System from an OpenMM System XML and an optional PDB among ``parameters``."""
    check_file(path, "OpenMM System XML")
    pdbs = [Path(p) for p in parameters if Path(p).suffix.lower() in (".pdb", ".ent")]
    others = [Path(p) for p in parameters if Path(p) not in pdbs]
    if others or len(pdbs) > 1:
        raise TopologyError(
            f"an OpenMM System XML ('{path.name}') takes at most one PDB as its "
            "parameter "
            "file (for atom names and residues), got: "
            f"{', '.join(p.name for p in parameters)}"
        )
    pdb = pdbs[0] if pdbs else _sibling_pdb(path)
    if pdb is not None:
        check_file(pdb, "PDB file")
    return _XmlReader(path, _parse(path), pdb).system()


def _sibling_pdb(path: Path) -> Path | None:
    for candidate in (path.with_suffix(".pdb"), path.parent / "structure.pdb"):
        if candidate.is_file():
            return candidate
    return None


def _parse(path: Path) -> ET.Element:
    try:
        root = ET.parse(path).getroot()
    except FileNotFoundError:
        raise InputFileError(f"OpenMM XML file '{path}' does not exist") from None
    except ET.ParseError as err:
        raise InputFileError(f"'{path}' is not valid XML ({err}); truncated?") from None
    if root.tag != "System":
        raise InputFileError(
            f"'{path}' is not a serialized OpenMM System (root element <{root.tag}>, "
            "expected <System>); write one with openmm.XmlSerializer.serialize(system)"
        )
    return root


def _norm(expression: str) -> str:
    return re.sub(r"\s+", "", expression).lower().rstrip(";")


_HARMONIC_WRAPPED = re.compile(
    r"^k\*min\(dtheta,2\*(pi|[0-9.]+)-dtheta\)\^2;dtheta=abs\(theta-theta0\)(;pi=[0-9.]+)?$"
)
_HARMONIC_PLAIN = {"k*(theta-theta0)^2", "k*(theta0-theta)^2"}
_LJ_TABLE_PLAIN = "acoef(type1,type2)/r^12-bcoef(type1,type2)/r^6"
_LJ_TABLE_SQRT = "(a/r6)^2-b/r6;r6=r^6;a=acoef(type1,type2);b=bcoef(type1,type2)"
_LJ14 = re.compile(r"^([0-9.e+-]+)\*epsilon\*\(\(sigma/r\)\^12-\(sigma/r\)\^6\)$")


class _XmlReader:
    def __init__(self, path: Path, root: ET.Element, pdb: Path | None) -> None:
        self.path = path
        self.root = root
        self.pdb = pdb
        particles = root.find("Particles")
        if particles is None:
            raise InputFileError(f"'{path}' has no <Particles>")
        self.masses = []
        site_elements: list[tuple[int, ET.Element]] = []
        for i, p in enumerate(particles.findall("Particle")):
            if len(p):
                site_elements.append((i, p[0]))
            self.masses.append(self._float(p, "mass"))
        self.n_atoms = len(self.masses)
        self.virtual_sites = self._virtual_sites(site_elements)
        self.forces = [f for f in root.iter("Force")]
        unknown = sorted(
            {f.get("type", "?") for f in self.forces}
            - _IGNORED
            - {
                "HarmonicBondForce",
                "HarmonicAngleForce",
                "PeriodicTorsionForce",
                "CMAPTorsionForce",
                "CustomTorsionForce",
                "NonbondedForce",
                "CustomNonbondedForce",
                "CustomBondForce",
            }
        )
        if unknown:
            raise TopologyError(
                f"'{path}' has forces that are not supported: {', '.join(unknown)}"
            )

    def _virtual_sites(
        self, elements: list[tuple[int, ET.Element]]
    ) -> VirtualSites | None:
        """OpenMM's virtual sites, in Å (OutOfPlaneSite wc: 1/nm → 1/Å)."""
        linear: list[Any] = []
        out_of_plane: list[Any] = []
        local: list[Any] = []
        for i, e in elements:
            n = sum(1 for k in e.attrib if re.fullmatch(r"p\d+", k))
            parents = self._atoms(e, [f"p{k + 1}" for k in range(n)])
            if e.tag in ("TwoParticleAverageSite", "ThreeParticleAverageSite"):
                weights = [self._float(e, f"w{k + 1}") for k in range(n)]
                linear.append((i, parents, weights))
            elif e.tag == "OutOfPlaneSite":
                w12, w13, wc = (self._float(e, k) for k in ("w12", "w13", "wc"))
                out_of_plane.append((i, parents, (w12, w13, wc / NM)))
            elif e.tag == "LocalCoordinatesSite":
                frame = [
                    [self._float(e, f"{w}{k + 1}") for k in range(n)]
                    for w in ("wo", "wx", "wy")
                ]
                position = [self._float(e, f"pos{k}") * NM for k in (1, 2, 3)]
                local.append((i, parents, frame, position))
            else:
                raise TopologyError(
                    f"'{self.path}': particle {i} is a virtual site of type {e.tag}, "
                    "which is not supported (TwoParticleAverageSite, "
                    "ThreeParticleAverageSite, OutOfPlaneSite and LocalCoordinatesSite "
                    "are)"
                )
        if not elements:
            return None
        return VirtualSites.build(linear=linear, out_of_plane=out_of_plane, local=local)

    # -- small helpers -----------------------------------------------------------------
    def _float(self, element: ET.Element, name: str) -> float:
        value = element.get(name)
        try:
            return float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise InputFileError(
                f"'{self.path}': <{element.tag}> attribute {name}={value!r} is not a "
                "number"
            ) from None

    def _atoms(self, element: ET.Element, names: Sequence[str]) -> tuple[int, ...]:
        atoms = []
        for name in names:
            try:
                a = int(element.get(name))  # type: ignore[arg-type]
            except (TypeError, ValueError):
                raise InputFileError(
                    f"'{self.path}': <{element.tag}> lacks an atom index {name}"
                ) from None
            if not 0 <= a < self.n_atoms:
                raise InputFileError(
                    f"'{self.path}': <{element.tag}> atom {a} outside "
                    f"0..{self.n_atoms - 1}"
                )
            atoms.append(a)
        return tuple(atoms)

    def _of_type(self, kind: str) -> list[ET.Element]:
        return [f for f in self.forces if f.get("type") == kind]

    def _per_item_parameters(self, force: ET.Element, section: str) -> list[str]:
        params = force.find(section)
        return (
            []
            if params is None
            else [p.get("name", "") for p in params.findall("Parameter")]
        )

    def _params(self, item: ET.Element, names: list[str]) -> dict[str, float]:
        return {
            name: self._float(item, f"param{i + 1}") for i, name in enumerate(names)
        }

    # -- bonds, angles and the bond graph ----------------------------------------------
    def bonded(
        self,
    ) -> tuple[TableBuilder, TableBuilder, TableBuilder, set[tuple[int, int]]]:
        entries: list[tuple[int, int, float, float, bool]] = []  # (i, j, k, r0, is UB)
        for force in self._of_type("HarmonicBondForce"):
            ub_force = force.get("name") == "UreyBradleyForce"
            for b in force.iter("Bond"):
                i, j = self._atoms(b, ("p1", "p2"))
                entries.append(
                    (
                        i,
                        j,
                        0.5 * self._float(b, "k") * KJ / NM**2,
                        self._float(b, "d") * NM,
                        ub_force,
                    )
                )
        angles = TableBuilder(3, ("k", "theta0"))
        angle_list = []
        for force in self._of_type("HarmonicAngleForce"):
            for a in force.iter("Angle"):
                atoms = self._atoms(a, ("p1", "p2", "p3"))
                values = (0.5 * self._float(a, "k") * KJ, self._float(a, "a"))
                angles.add(atoms, values, values)
                angle_list.append(atoms)
        pdb_bonds = self._pdb_bonds()
        graph = self._bond_graph(entries, angle_list, pdb_bonds)
        bonds = TableBuilder(2, ("k", "r0"))
        ub = TableBuilder(2, ("k", "r0"))
        for i, j, k, r0, is_ub in entries:
            pair = (min(i, j), max(i, j))
            target = ub if is_ub or pair not in graph else bonds
            target.add((i, j), (k, r0), (k, r0))
        return bonds, angles, ub, graph

    def _bond_graph(
        self,
        entries: list[Any],
        angle_list: list[tuple[int, ...]],
        pdb_bonds: set[tuple[int, int]],
    ) -> set[tuple[int, int]]:
        candidates = {(min(i, j), max(i, j)) for i, j, _, _, ub in entries if not ub}
        ends = {
            (min(a, c), max(a, c))
            for a, b, c in angle_list
            if (min(a, b), max(a, b)) in candidates
            and (min(b, c), max(b, c)) in candidates
        }
        graph = {p for p in candidates if p not in ends or p in pdb_bonds}
        for c in self.root.iter("Constraint"):
            i, j = self._atoms(c, ("p1", "p2"))
            graph.add((min(i, j), max(i, j)))
        return graph | pdb_bonds

    def _pdb_bonds(self) -> set[tuple[int, int]]:
        top = self.pdb_topology()
        return (
            set()
            if top is None
            else {(min(i, j), max(i, j)) for i, j in top.bonds.tolist()}
        )

    _pdb_system: System | None = None

    def pdb_topology(self) -> System | None:
        if self.pdb is None:
            return None
        if self._pdb_system is None:
            from torchmd_plugins.amber.coordinates import system_from_pdb

            system = system_from_pdb(self.pdb)
            if system.n_atoms != self.n_atoms:
                raise TopologyError(
                    f"PDB '{self.pdb}' has {system.n_atoms} atoms but the OpenMM "
                    "System "
                    f"'{self.path}' has {self.n_atoms}; give the PDB the System was "
                    "built from"
                )
            self._pdb_system = system
        return self._pdb_system

    # -- torsions ----------------------------------------------------------------------
    def torsions(
        self, graph: set[tuple[int, int]]
    ) -> tuple[TableBuilder, TableBuilder]:
        torsions = TableBuilder(4, ("k", "phase", "periodicity"))
        impropers = TableBuilder(4, ("k", "phase", "periodicity"))
        for force in self._of_type("PeriodicTorsionForce"):
            for t in force.iter("Torsion"):
                quad = self._atoms(t, ("p1", "p2", "p3", "p4"))
                values = (
                    self._float(t, "k") * KJ,
                    self._float(t, "phase"),
                    float(int(self._float(t, "periodicity"))),
                )
                chain = all((min(a, b), max(a, b)) in graph for a, b in pairwise(quad))
                (torsions if chain else impropers).add(quad, values, values)
        return torsions, impropers

    def harmonic_impropers(self) -> TableBuilder:
        table = TableBuilder(4, ("k", "psi0"))
        for force in self._of_type("CustomTorsionForce"):
            expression = _norm(force.get("energy", ""))
            wrapped = bool(_HARMONIC_WRAPPED.match(expression))
            if not wrapped and expression not in _HARMONIC_PLAIN:
                raise TopologyError(
                    f"'{self.path}': CustomTorsionForce '{force.get('energy')}' is "
                    "not a "
                    "harmonic improper (k*(theta-theta0)^2 or k*min(dtheta, "
                    "2*pi-dtheta)^2); "
                    "only those are supported"
                )
            names = self._per_item_parameters(force, "PerTorsionParameters")
            if set(names) != {"k", "theta0"}:
                raise TopologyError(
                    f"'{self.path}': harmonic improper parameters must be k and "
                    f"theta0, got {names}"
                )
            for t in force.iter("Torsion"):
                quad = self._atoms(t, ("p1", "p2", "p3", "p4"))
                p = self._params(t, names)
                if not wrapped and abs(p["theta0"]) > 1e-12:
                    raise TopologyError(
                        f"'{self.path}': improper {quad} has theta0 = {p['theta0']} "
                        "with the "
                        "unwrapped expression k*(theta-theta0)^2, whose energy jumps "
                        "at ±π; "
                        "only theta0 = 0 is supported for it"
                    )
                values = (p["k"] * KJ, p["theta0"])
                table.add(quad, values, values)
        return table

    def cmap(self) -> Any:
        forces = self._of_type("CMAPTorsionForce")
        if not forces:
            return None
        if len(forces) > 1:
            raise TopologyError(f"'{self.path}' has more than one CMAPTorsionForce")
        grids = []
        for m in forces[0].iter("Map"):
            size = int(self._float(m, "size"))
            energy = np.array([self._float(e, "e") for e in m.iter("Energy")]) * KJ
            if len(energy) != size * size:
                raise InputFileError(
                    f"'{self.path}': CMAP map with {len(energy)} values for size {size}"
                )
            if size % 2:
                raise TopologyError(
                    f"'{self.path}': CMAP grids of odd size ({size}) are not supported"
                )
            omm = energy.reshape(size, size).T  # [φ index, ψ index] from 0
            grids.append(np.roll(omm, -(size // 2), axis=(0, 1)))  # from −π
        atoms, maps = [], []
        for t in forces[0].iter("Torsion"):
            atoms.append(
                self._atoms(t, ("a1", "a2", "a3", "a4", "b1", "b2", "b3", "b4"))
            )
            index = int(self._float(t, "map"))
            if not 0 <= index < len(grids):
                raise InputFileError(
                    f"'{self.path}': CMAP torsion uses map {index} of {len(grids)}"
                )
            maps.append(index)
        if not atoms:
            return None
        try:
            return cmap_table(atoms, maps, grids)
        except ValueError as err:
            raise TopologyError(f"'{self.path}': {err}") from None

    # -- non-bonded --------------------------------------------------------------------
    def nonbonded(
        self,
    ) -> tuple[
        np.ndarray, NonbondedParameters | None, TableBuilder, set[tuple[int, int]], bool
    ]:
        forces = self._of_type("NonbondedForce")
        if len(forces) > 1:
            raise TopologyError(f"'{self.path}' has more than one NonbondedForce")
        charges = np.zeros(self.n_atoms)
        sigma = np.ones(self.n_atoms)
        epsilon = np.zeros(self.n_atoms)
        excluded: set[tuple[int, int]] = set()
        pair14: dict[tuple[int, int], list[float]] = {}  # pair → [chargeProd, σ, ε]
        periodic = False
        if forces:
            force = forces[0]
            periodic = int(self._float(force, "method")) in _PERIODIC_METHODS
            for section in ("ParticleOffsets", "ExceptionOffsets"):
                node = force.find(section)
                if node is not None and len(node):
                    raise TopologyError(
                        f"'{self.path}': NonbondedForce {section} (parameter offsets) "
                        "are not supported"
                    )
            plist = force.find("Particles")
            items = [] if plist is None else plist.findall("Particle")
            if len(items) != self.n_atoms:
                raise InputFileError(
                    f"'{self.path}': NonbondedForce has {len(items)} particles for "
                    f"{self.n_atoms} atoms"
                )
            for i, p in enumerate(items):
                charges[i] = self._float(p, "q")
                sigma[i] = self._float(p, "sig") * NM
                epsilon[i] = self._float(p, "eps") * KJ
            for e in force.iter("Exception"):
                i, j = self._atoms(e, ("p1", "p2"))
                pair = (min(i, j), max(i, j))
                excluded.add(pair)
                qq, eps = self._float(e, "q"), self._float(e, "eps") * KJ
                if qq != 0.0 or eps != 0.0:
                    pair14[pair] = [qq, self._float(e, "sig") * NM, eps]
        lj = self._lj_types(sigma, epsilon)
        for force in self._of_type("CustomNonbondedForce"):
            periodic = (
                periodic or int(self._float(force, "method")) in _PERIODIC_METHODS
            )
            lj = self._lj_table(force, epsilon)
            for e in force.iter("Exclusion"):
                i, j = self._atoms(e, ("p1", "p2"))
                excluded.add((min(i, j), max(i, j)))
        self._lj14_bonds(pair14, excluded)
        table = TableBuilder(2, ("charge_scale", "sigma", "epsilon"))
        for (i, j), (qq, sig, eps) in sorted(pair14.items()):
            qiqj = charges[i] * charges[j]
            if qq != 0.0 and qiqj == 0.0:
                raise TopologyError(
                    f"'{self.path}': exception {i}-{j} has charge product {qq} but the "
                    "particles are uncharged; this cannot be expressed as a scaled "
                    "1-4 pair"
                )
            values = (qq / qiqj if qiqj != 0.0 else 0.0, sig, eps)
            table.add((i, j), values, values)
        return charges, lj, table, excluded, periodic

    def _lj_types(self, sigma: np.ndarray, epsilon: np.ndarray) -> NonbondedParameters:
        index: dict[tuple[float, float], int] = {}
        types = [
            index.setdefault((float(s), float(e)), len(index))
            for s, e in zip(sigma, epsilon, strict=True)
        ]
        keys = list(index)
        return NonbondedParameters(
            lj_types=torch.as_tensor(types, dtype=torch.int64),
            sigma=torch.as_tensor([k[0] for k in keys], dtype=torch.float64),
            epsilon=torch.as_tensor([k[1] for k in keys], dtype=torch.float64),
            type_names=tuple(f"LJ{t}" for t in range(len(keys))),
        )

    def _lj_table(
        self, force: ET.Element, particle_epsilon: np.ndarray
    ) -> NonbondedParameters:
        expression = _norm(force.get("energy", ""))
        if expression not in (_LJ_TABLE_PLAIN, _LJ_TABLE_SQRT):
            raise TopologyError(
                f"'{self.path}': CustomNonbondedForce '{force.get('energy')}' is not a "
                "supported Lennard-Jones table (acoef/bcoef as OpenMM's loaders write "
                "it)"
            )
        if np.any(particle_epsilon != 0.0):
            raise TopologyError(
                f"'{self.path}': LJ is both in NonbondedForce and in a "
                "CustomNonbondedForce table"
            )
        names = self._per_item_parameters(force, "PerParticleParameters")
        if names != ["type"]:
            raise TopologyError(
                f"'{self.path}': the LJ table's per-particle parameter must be "
                f"'type', got {names}"
            )
        particles = force.find("Particles")
        items = [] if particles is None else particles.findall("Particle")
        types = [int(self._float(p, "param1")) for p in items]
        if len(types) != self.n_atoms:
            raise InputFileError(
                f"'{self.path}': CustomNonbondedForce has {len(types)} particles for "
                f"{self.n_atoms} atoms"
            )
        tables: dict[str, np.ndarray] = {}
        for f in force.iter("Function"):
            nx, ny = int(self._float(f, "xsize")), int(self._float(f, "ysize"))
            values = np.array([self._float(v, "v") for v in f.iter("Value")])
            if len(values) != nx * ny or nx != ny:
                raise InputFileError(
                    f"'{self.path}': table {f.get('name')} has {len(values)} values "
                    f"for {nx}x{ny}"
                )
            tables[f.get("name", "")] = values.reshape(ny, nx).T  # [type1, type2]
        if set(tables) != {"acoef", "bcoef"}:
            raise TopologyError(
                f"'{self.path}': LJ table functions must be acoef and bcoef, got "
                f"{sorted(tables)}"
            )
        a, b = tables["acoef"], tables["bcoef"]
        if expression == _LJ_TABLE_SQRT:
            a = a * a
        c12 = a * KJ * NM**12
        c6 = b * KJ * NM**6
        n = c12.shape[0]
        if max(types) >= n:
            raise InputFileError(
                f"'{self.path}': LJ type {max(types)} outside the {n}x{n} table"
            )
        diag12, diag6 = np.diag(c12), np.diag(c6)
        with np.errstate(divide="ignore", invalid="ignore"):
            sig = np.where(
                (diag12 > 0) & (diag6 > 0),
                (diag12 / np.where(diag6 > 0, diag6, 1)) ** (1 / 6),
                1.0,
            )
            eps = np.where(
                diag12 > 0, diag6 * diag6 / (4 * np.where(diag12 > 0, diag12, 1)), 0.0
            )
        s = 0.5 * (sig[:, None] + sig[None, :])
        e = np.sqrt(eps[:, None] * eps[None, :])
        lb6 = 4 * e * s**6
        lb12 = lb6 * s**6
        mask = ~np.isclose(c12, lb12, rtol=1e-14, atol=0.0) | ~np.isclose(
            c6, lb6, rtol=1e-14, atol=0.0
        )
        return NonbondedParameters(
            lj_types=torch.as_tensor(types, dtype=torch.int64),
            sigma=torch.as_tensor(sig),
            epsilon=torch.as_tensor(eps),
            type_names=tuple(f"LJ{t}" for t in range(n)),
            pair_mask=torch.as_tensor(mask) if mask.any() else None,
            pair_c12=torch.as_tensor(c12) if mask.any() else None,
            pair_c6=torch.as_tensor(c6) if mask.any() else None,
        )

    def _lj14_bonds(
        self, pair14: dict[tuple[int, int], list[float]], excluded: set[tuple[int, int]]
    ) -> None:
        for force in self._of_type("CustomBondForce"):
            match = _LJ14.match(_norm(force.get("energy", "")))
            if match is None:
                raise TopologyError(
                    f"'{self.path}': CustomBondForce '{force.get('energy')}' is not "
                    "supported "
                    "(only 1-4 Lennard-Jones, as OpenMM's LennardJonesForce writes it)"
                )
            scale = float(match.group(1)) / 4.0
            names = self._per_item_parameters(force, "PerBondParameters")
            if set(names) != {"sigma", "epsilon"}:
                raise TopologyError(
                    f"'{self.path}': 1-4 LJ parameters must be sigma and epsilon, got "
                    f"{names}"
                )
            for b in force.iter("Bond"):
                i, j = self._atoms(b, ("p1", "p2"))
                pair = (min(i, j), max(i, j))
                p = self._params(b, names)
                entry = pair14.setdefault(pair, [0.0, 1.0, 0.0])
                if entry[2] != 0.0:
                    raise TopologyError(
                        f"'{self.path}': pair {i}-{j} has 1-4 LJ both in "
                        f"NonbondedForce and in '{force.get('name')}'"
                    )
                entry[1], entry[2] = p["sigma"] * NM, scale * p["epsilon"] * KJ
                excluded.add(pair)

    # -- the whole system --------------------------------------------------------------
    def system(self) -> System:
        bonds, angles, ub, graph = self.bonded()
        torsions, impropers = self.torsions(graph)
        charges, lj, pairs14, excluded, periodic = self.nonbonded()
        builders = {
            "bonds": bonds,
            "angles": angles,
            "urey_bradley": ub,
            "torsions": torsions,
            "impropers": impropers,
            "harmonic_impropers": self.harmonic_impropers(),
            "pairs14": pairs14,
        }
        terms = {name: b.build() for name, b in builders.items() if len(b)}
        cmap = self.cmap()
        if cmap is not None:
            terms["cmap"] = cmap
        top = self.pdb_topology()
        if top is not None:
            names, types, z = top.atom_names, top.atom_types, top.atomic_numbers
            residues, residue_index = top.residues, top.residue_index
        else:
            z = torch.as_tensor(
                [element_from_mass(m) for m in self.masses], dtype=torch.int64
            )
            names = tuple(f"A{i + 1}" for i in range(self.n_atoms))
            types = ("",) * self.n_atoms
            residues, residue_index = (
                (Residue("UNK", 1),),
                torch.zeros(self.n_atoms, dtype=torch.int64),
            )
        return System(
            masses=torch.as_tensor(self.masses, dtype=torch.float64),
            charges=torch.as_tensor(charges),
            atomic_numbers=z,
            atom_names=names,
            atom_types=types,
            residue_index=residue_index,
            residues=residues,
            bonds=pair_tensor(graph),
            exclusions=pair_tensor(excluded),
            terms=terms,
            nonbonded=lj,
            box=self._box() if periodic else None,
            metadata={
                "source": str(self.path),
                "format": "openmm_xml",
                "pdb": str(self.pdb) if self.pdb else None,
            },
            virtual_sites=self.virtual_sites,
        )

    def _box(self) -> torch.Tensor | None:
        node = self.root.find("PeriodicBoxVectors")
        if node is None:
            return None
        rows = [[self._float(node.find(v), c) * NM for c in "xyz"] for v in "ABC"]  # type: ignore[arg-type]
        return torch.as_tensor(rows, dtype=torch.float64)
