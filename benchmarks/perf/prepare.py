"""Build the benchmark inputs once, into a cache folder, with OpenMM and parmed.

Each structure gets a folder ``<cache>/<structure>/`` holding what every engine reads:

- ``system_none.xml`` (and ``system_hbonds.xml`` for DHFR): the OpenMM ``System``
  with the settings of :data:`perf.cases.SETTINGS` applied (no CMMotionRemover);
- ``coordinates.npz``: ``positions`` (N, 3) Å and, when periodic, ``box`` (3, 3) Å;
- ``engine.json``: the files this engine's config reads (topology, coordinates, ...);
- ``structure.prmtop``: AMBER parameters for TorchMD, made on request (parmed, see
  :func:`prmtop_for`);
- ``meta.json``: atom count and how it was made.

Sources: the solvated dipeptide's own prmtop/coor/xsc; the vacuum dipeptide is its
solute (parmed ``strip(':WAT')``); DHFR is ``5dfr_solv-cube_equil.pdb`` with OpenMM's
``amber99sb.xml`` + ``tip3p.xml``; water boxes are made by ``Modeller.addSolvent``
with ``tip3p`` (``numAdded`` waters, a cube), then minimised (100 L-BFGS iterations,
removing the close contacts where Modeller's tiles meet); from 20k atoms on, 2 × 2 × 2
copies of such a box of an eighth the size.
"""

from __future__ import annotations

import itertools
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from perf.cases import SETTINGS

__all__ = ["Prepared", "prepare", "prmtop_for"]

#: Bump when a recipe changes: cached folders of another recipe are rebuilt.
RECIPE = 2
FORCE_FIELD = ("amber99sb.xml", "tip3p.xml")
#: Water boxes of at least this many atoms are 2 × 2 × 2 copies of a box of an eighth
#: the size: Modeller and the minimiser take minutes at 100k atoms, and copies of a
#: periodic, minimised box make a periodic, minimised box.
TILE_FROM = 20000


@dataclass(frozen=True)
class Prepared:
    """A structure's folder in the cache."""

    folder: Path
    n_atoms: int

    def system_xml(self, constraints: str) -> Path:
        return self.folder / f"system_{constraints}.xml"

    @property
    def coordinates(self) -> Path:
        return self.folder / "coordinates.npz"

    @property
    def engine_files(self) -> dict[str, Any]:
        """``system:`` entries of a torchmd-core config (paths as strings)."""
        return json.loads((self.folder / "engine.json").read_text())  # type: ignore[no-any-return]

    @property
    def prmtop(self) -> Path:
        return self.folder / "structure.prmtop"


def prepare(structure: str, data: Path, cache: Path) -> Prepared:
    """The prepared folder of ``structure``, built now unless cached.

    Raises:
        FileNotFoundError: an input of ``data`` is missing.
    """
    folder = cache / structure
    meta_path = folder / "meta.json"
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if meta.get("recipe") == RECIPE:
            return Prepared(folder, int(meta["n_atoms"]))
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    builders = {
        "ala2_solvated": _ala2_solvated,
        "ala2_vacuum": _ala2_vacuum,
        "dhfr": _dhfr,
    }
    if structure in builders:
        meta = builders[structure](data, folder)
    elif structure.startswith("water_"):
        meta = _water_box(int(structure.split("_")[1]), folder)
    else:
        raise KeyError(f"no recipe for structure {structure!r}")
    meta["recipe"] = RECIPE
    meta_path.write_text(json.dumps(meta, indent=1))
    return Prepared(folder, int(meta["n_atoms"]))


def prmtop_for(prepared: Prepared) -> Path:
    """An AMBER prmtop of the structure (for TorchMD), written once from its XML.

    parmed names atom types after their LJ parameters, which merges AMBER types that
    share them, and TorchMD's parmed-based force field then refuses the unequal bond
    types (DHFR). Each atom is typed by its OpenMM residue template and atom name
    instead (371 types for DHFR); DHFR's bond, angle and torsion energies from TorchMD
    equal OpenMM's with these types.
    """
    if not prepared.prmtop.exists():
        import openmm as mm
        import openmm.app as app
        import parmed

        system = mm.XmlSerializer.deserialize(prepared.system_xml("none").read_text())
        pdb = _openmm_pdb(prepared.folder / "structure.pdb")
        templates = app.ForceField(*FORCE_FIELD).getMatchingTemplates(pdb.topology)
        structure = parmed.openmm.load_topology(pdb.topology, system, xyz=pdb.positions)
        codes: dict[tuple[str, str], str] = {}
        for residue, template in zip(structure.residues, templates, strict=True):
            for atom in residue.atoms:
                key = (template.name, atom.name)
                code = codes.setdefault(key, np.base_repr(len(codes), 36).rjust(3, "0"))
                atom.type = atom.atom_type.name = code  # prmtop types: 4 characters
        tmp = prepared.prmtop.with_suffix(".tmp")
        parmed.amber.AmberParm.from_structure(structure).write_parm(str(tmp))
        tmp.replace(prepared.prmtop)
    return prepared.prmtop


# -- recipes ----------------------------------------------------------------------


def _ala2_solvated(data: Path, folder: Path) -> dict[str, Any]:
    import openmm.app as app

    src = _source(data, "prod_alanine_dipeptide_amber")
    positions = _read_namd_coor(src / "input.coor")
    box = _read_xsc(src / "input.xsc")
    prmtop = app.AmberPrmtopFile(str(src / "structure.prmtop"))
    system = prmtop.createSystem(
        nonbondedMethod=app.CutoffPeriodic, constraints=None, rigidWater=False
    )
    _write_system(system, folder / "system_none.xml", periodic=True)
    np.savez(folder / "coordinates.npz", positions=positions, box=box)
    shutil.copyfile(src / "structure.prmtop", folder / "structure.prmtop")
    _write_engine(
        folder, topology=src / "structure.prmtop", coordinates=src / "input.coor"
    )
    return {"n_atoms": len(positions), "source": str(src)}


def _ala2_vacuum(data: Path, folder: Path) -> dict[str, Any]:
    import openmm.app as app
    import parmed

    src = _source(data, "prod_alanine_dipeptide_amber")
    structure = parmed.load_file(str(src / "structure.prmtop"))
    structure.coordinates = _read_namd_coor(src / "input.coor")
    structure.box = None
    structure.strip(":WAT")
    structure.save(str(folder / "structure.prmtop"), format="amber")
    structure.save(str(folder / "structure.rst7"), format="rst7")
    positions = parmed.load_file(str(folder / "structure.rst7")).coordinates.reshape(
        -1, 3
    )
    system = structure.createSystem(nonbondedMethod=app.NoCutoff, constraints=None)
    _write_system(system, folder / "system_none.xml", periodic=False)
    np.savez(folder / "coordinates.npz", positions=positions)
    _write_engine(
        folder,
        topology=folder / "structure.prmtop",
        coordinates=folder / "structure.rst7",
    )
    return {"n_atoms": len(positions), "source": f"{src} (solute only)"}


def _dhfr(data: Path, folder: Path) -> dict[str, Any]:
    import openmm.app as app

    src = _source(data, "dhfr_5dfr") / "5dfr_solv-cube_equil.pdb"
    shutil.copyfile(src, folder / "structure.pdb")
    pdb = _openmm_pdb(folder / "structure.pdb")
    forcefield = app.ForceField(*FORCE_FIELD)
    for constraints, openmm_constraints in (("none", None), ("hbonds", app.HBonds)):
        system = forcefield.createSystem(
            pdb.topology,
            nonbondedMethod=app.CutoffPeriodic,
            constraints=openmm_constraints,
            rigidWater=constraints != "none",
        )
        _write_system(system, folder / f"system_{constraints}.xml", periodic=True)
    _save_pdb_coordinates(pdb, folder)
    _write_xml_engine(folder)
    return {
        "n_atoms": pdb.topology.getNumAtoms(),
        "source": str(src),
        "force_field": FORCE_FIELD,
    }


def _water_box(n_atoms: int, folder: Path) -> dict[str, Any]:
    import openmm.app as app
    import openmm.unit as u

    forcefield = app.ForceField(*FORCE_FIELD)
    tiles = 2 if n_atoms >= TILE_FROM else 1
    topology, positions = _minimised_water(forcefield, round(n_atoms / 3 / tiles**3))
    if tiles > 1:
        topology, positions = _tile(topology, positions, tiles)
    system = forcefield.createSystem(
        topology, nonbondedMethod=app.CutoffPeriodic, constraints=None, rigidWater=False
    )
    _write_system(system, folder / "system_none.xml", periodic=True)
    with open(folder / "structure.pdb", "w") as fh:
        app.PDBFile.writeFile(topology, positions, fh)
    pdb = _openmm_pdb(folder / "structure.pdb")
    _save_pdb_coordinates(pdb, folder)
    _write_xml_engine(folder)
    edge = topology.getUnitCellDimensions()[0].value_in_unit(u.angstrom)
    how = f"{tiles}³ copies of a minimised" if tiles > 1 else "a minimised"
    return {
        "n_atoms": pdb.topology.getNumAtoms(),
        "source": f"{how} Modeller.addSolvent(tip3p) box; cube of {edge:.2f} Å",
        "force_field": FORCE_FIELD,
    }


def _minimised_water(forcefield: Any, n_waters: int) -> tuple[Any, Any]:
    """A cubic box of ``n_waters`` TIP3P waters, minimised: (topology, positions)."""
    import openmm as mm
    import openmm.app as app

    modeller = app.Modeller(app.Topology(), [])
    modeller.addSolvent(forcefield, model="tip3p", numAdded=n_waters, neutralize=False)
    system = forcefield.createSystem(
        modeller.topology,
        nonbondedMethod=app.CutoffPeriodic,
        constraints=None,
        rigidWater=False,
    )
    _apply_settings(system, periodic=True)
    context = mm.Context(
        system, mm.VerletIntegrator(0.001), mm.Platform.getPlatformByName("CPU")
    )
    context.setPeriodicBoxVectors(*modeller.topology.getPeriodicBoxVectors())
    context.setPositions(modeller.positions)
    mm.LocalEnergyMinimizer.minimize(context, 10.0, 100)
    return modeller.topology, context.getState(getPositions=True).getPositions()


def _tile(topology: Any, positions: Any, n: int) -> tuple[Any, Any]:
    """n × n × n copies of a periodic box: a larger periodic box, as minimised."""
    import openmm.app as app
    import openmm.unit as u

    x = np.asarray(positions.value_in_unit(u.nanometer))
    vectors = [
        np.asarray(v.value_in_unit(u.nanometer))
        for v in topology.getPeriodicBoxVectors()
    ]
    modeller = app.Modeller(topology, positions)
    for i, j, k in itertools.product(range(n), repeat=3):
        if (i, j, k) != (0, 0, 0):
            shift = i * vectors[0] + j * vectors[1] + k * vectors[2]
            modeller.add(topology, (x + shift) * u.nanometer)
    modeller.topology.setPeriodicBoxVectors([n * v for v in vectors] * u.nanometer)
    return modeller.topology, modeller.positions


# -- helpers ----------------------------------------------------------------------


def _source(data: Path, name: str) -> Path:
    path = data / name
    if not path.is_dir():
        raise FileNotFoundError(
            f"benchmark input folder '{path}' is missing; give the shared data "
            "folder with --data"
        )
    return path


def _write_system(system: Any, path: Path, periodic: bool) -> None:
    """Apply the common settings to ``system`` and serialise it to ``path``."""
    import openmm as mm

    _apply_settings(system, periodic)
    path.write_text(mm.XmlSerializer.serialize(system))


def _apply_settings(system: Any, periodic: bool) -> None:
    """Cutoff, switch, reaction field and no dispersion correction (or no cutoff);
    no CMMotionRemover (the other engines have none)."""
    import openmm as mm
    import openmm.unit as u

    for k in reversed(range(system.getNumForces())):
        if isinstance(system.getForce(k), mm.CMMotionRemover):
            system.removeForce(k)
    for force in system.getForces():
        if isinstance(force, mm.NonbondedForce):
            if periodic:
                force.setNonbondedMethod(mm.NonbondedForce.CutoffPeriodic)
                force.setCutoffDistance(SETTINGS["cutoff_A"] / 10.0 * u.nanometer)
                force.setUseSwitchingFunction(True)
                force.setSwitchingDistance(SETTINGS["switch_A"] / 10.0 * u.nanometer)
                force.setReactionFieldDielectric(SETTINGS["reaction_field_dielectric"])
            else:
                force.setNonbondedMethod(mm.NonbondedForce.NoCutoff)
            force.setUseDispersionCorrection(False)


def _openmm_pdb(path: Path) -> Any:
    import openmm.app as app

    return app.PDBFile(str(path))


def _save_pdb_coordinates(pdb: Any, folder: Path) -> None:
    import openmm.unit as u

    positions = np.asarray(pdb.getPositions(asNumpy=True).value_in_unit(u.angstrom))
    box = np.asarray(pdb.topology.getPeriodicBoxVectors().value_in_unit(u.angstrom))
    np.savez(folder / "coordinates.npz", positions=positions, box=box)


def _write_engine(
    folder: Path, topology: Path, coordinates: Path, parameters: tuple[Path, ...] = ()
) -> None:
    files = {
        "topology": str(topology),
        "coordinates": str(coordinates),
        "parameters": [str(p) for p in parameters],
    }
    (folder / "engine.json").write_text(json.dumps(files, indent=1))


def _write_xml_engine(folder: Path) -> None:
    """torchmd-core reads the serialised System through its OpenMM-XML loader."""
    pdb = folder / "structure.pdb"
    _write_engine(
        folder, topology=folder / "system_none.xml", coordinates=pdb, parameters=(pdb,)
    )


def _read_namd_coor(path: Path) -> np.ndarray:
    raw = path.read_bytes()
    n = int(np.frombuffer(raw[:4], dtype="<i4")[0])
    return np.frombuffer(raw[4 : 4 + 24 * n], dtype="<f8").reshape(n, 3).copy()


def _read_xsc(path: Path) -> np.ndarray:
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            return np.array([float(x) for x in line.split()[1:10]]).reshape(3, 3)
    raise ValueError(f"no box line in '{path}'")
