"""Build the virtual-site test inputs (4- and 5-site waters) with OpenMM and parmed.

Run from the repository root (once; the outputs are committed):

    python tests/data/virtual_sites/build.py

Every system is built by OpenMM's Modeller and ForceField from force fields bundled
with the openmm package, briefly minimised (flexible water, Reference platform), its
virtual sites placed by OpenMM (``Context.computeVirtualSites``), and written twice:

- as an OpenMM System XML + PDB (``system.xml``, ``structure.pdb``), the sites being
  OpenMM ``VirtualSite``s;
- as an AMBER prmtop + rst7 (``structure.prmtop``, ``structure.rst7``) laid out as
  tleap writes 4- and 5-site waters: residue ``WAT``, extra points named ``EPW``
  (``EP1``/``EP2`` for TIP5P) of type ``EP``, the water held by O-H and H-H bonds and
  an O-EP bond (no H-O-H angle), the bond parameters of AmberTools' frcmod files for
  these waters. OpenMM's ``AmberPrmtopFile`` turns those extra points into virtual
  sites from the bond lengths (checked below).

Systems (folder: contents):

- ``opc_ff19sb``: the capped heptapeptide of ``tests/data/peptide_ff19sb`` (ff19SB,
  ``amber19/protein.ff19SB.xml``) in OPC water (``amber19/opc.xml``), cubic box;
- ``tip4pew``: a box of TIP4P-Ew water (``amber14/tip4pew.xml``), triclinic
  (rhombic dodecahedron) box;
- ``tip5p``: a box of TIP5P water (``tip5p.xml``), cubic box.
"""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as unit

HERE = Path(__file__).resolve().parent
PEPTIDE = HERE.parent / "peptide_ff19sb" / "structure.pdb"

#: tleap's water layout: bond parameters (k kcal/mol/Å², r0 Å) of AmberTools' frcmod
#: files (frcmod.opc, frcmod.tip4pew, frcmod.tip5p), and extra-point names.
K = 553.0
WATERS = {
    "opc": dict(oh=(K, 0.8724), hh=(K, 1.3712), oe=(K, 0.1594), ep=["EPW"]),
    "tip4pew": dict(oh=(K, 0.9572), hh=(K, 1.5136), oe=(K, 0.125), ep=["EPW"]),
    "tip5p": dict(oh=(K, 0.9572), hh=(K, 1.5136), oe=(K, 0.70), ep=["EP1", "EP2"]),
}


def minimised(
    topology, positions, forcefield, cutoff_nm: float
) -> tuple[openmm.System, np.ndarray]:
    """The System (flexible) and positions (nm) minimised in the periodic box with
    rigid water (reaction field), with the sites placed. (Flexible 5-site waters can
    collapse in a minimisation: an H onto another water's lone pair, both without LJ.)
    """
    system = periodic_system(topology, forcefield, cutoff_nm)
    rigid = forcefield.createSystem(
        topology,
        nonbondedMethod=app.CutoffPeriodic,
        nonbondedCutoff=cutoff_nm * unit.nanometer,
        constraints=app.HBonds,
        rigidWater=True,
    )
    context = openmm.Context(
        rigid,
        openmm.VerletIntegrator(1e-3),
        openmm.Platform.getPlatformByName("Reference"),
    )
    context.setPositions(positions)
    context.computeVirtualSites()
    context.applyConstraints(1e-10)
    openmm.LocalEnergyMinimizer.minimize(context, 10.0, 300)
    context.computeVirtualSites()
    x = context.getState(getPositions=True).getPositions(asNumpy=True)
    return system, np.asarray(x.value_in_unit(unit.nanometer))


def periodic_system(topology, forcefield, cutoff_nm: float) -> openmm.System:
    """The System as written to XML: periodic cutoff (the tests set their own mode)."""
    return forcefield.createSystem(
        topology,
        nonbondedMethod=app.CutoffPeriodic,
        nonbondedCutoff=cutoff_nm * unit.nanometer,
        constraints=None,
        rigidWater=False,
    )


def write_openmm(folder: Path, topology, positions_nm: np.ndarray, system) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "system.xml").write_text(openmm.XmlSerializer.serialize(system))
    with (folder / "structure.pdb").open("w") as fh:
        app.PDBFile.writeFile(topology, positions_nm * unit.nanometer, fh, keepIds=True)


def write_tleap_like_prmtop(
    folder: Path, topology, positions_nm: np.ndarray, system, water: str
) -> None:
    """The structure as a prmtop with tleap's water layout (module docstring)."""
    import parmed

    params = WATERS[water]
    structure = parmed.openmm.load_topology(topology, system, xyz=positions_nm * 10.0)
    structure.box = None  # added by _add_box: parmed's own box handling mangles EPs
    bond_types = {}
    for key in ("oh", "hh", "oe"):
        k, r0 = params[key]
        bond_types[key] = parmed.topologyobjects.BondType(
            k, r0, list=structure.bond_types
        )
        structure.bond_types.append(bond_types[key])
    waters = [r for r in structure.residues if r.name in ("HOH", "WAT")]
    water_atoms = {a.idx for r in waters for a in r.atoms}
    structure.angles[:] = [
        a for a in structure.angles if a.atom2.idx not in water_atoms
    ]
    kept = [b for b in structure.bonds if b.atom1.idx not in water_atoms]
    structure.bonds[:] = kept
    for residue in waters:
        residue.name = "WAT"
        o = next(a for a in residue.atoms if a.element == 8)
        hs = [a for a in residue.atoms if a.element == 1]
        eps = [a for a in residue.atoms if a.element == 0]
        for h in hs:
            structure.bonds.append(parmed.Bond(o, h, type=bond_types["oh"]))
        structure.bonds.append(parmed.Bond(hs[0], hs[1], type=bond_types["hh"]))
        for ep, name in zip(eps, params["ep"], strict=True):
            ep.name, ep.type = name, "EP"
            structure.bonds.append(parmed.Bond(o, ep, type=bond_types["oe"]))
    structure.prune_empty_terms()
    amber = parmed.amber.AmberParm.from_structure(structure)
    amber.save(str(folder / "structure.prmtop"), overwrite=True)
    box = _box_lengths_angles(topology)
    _add_box(folder / "structure.prmtop", amber, box)
    rst7 = parmed.amber.Rst7(natom=len(amber.atoms))
    rst7.coordinates = prmtop_placed(folder / "structure.prmtop", positions_nm) * 10.0
    rst7.box = box
    rst7.write(str(folder / "structure.rst7"))


def _add_box(path: Path, amber, box: list[float]) -> None:
    """Mark the prmtop periodic as tleap does (IFBOX, SOLVENT_POINTERS,
    ATOMS_PER_MOLECULE, BOX_DIMENSIONS); parmed's own box handling reorders molecules
    and mangles the extra points, so the flags are added to the written file."""
    import parmed

    molecules = _molecules(amber)
    solvent = [
        i for i, m in enumerate(molecules) if amber.atoms[m[0]].residue.name == "WAT"
    ]
    first_solvent = solvent[0] if solvent else len(molecules)
    last_solute_residue = (
        amber.atoms[molecules[first_solvent - 1][-1]].residue.idx + 1
        if first_solvent
        else 0
    )
    octahedron = all(abs(a - 109.4712190) < 1e-3 for a in box[3:])
    parm = parmed.amber.AmberFormat(str(path))
    parm.parm_data["POINTERS"][27] = 2 if octahedron else 1
    parm.add_flag(
        "SOLVENT_POINTERS",
        "3I8",
        data=[last_solute_residue, len(molecules), first_solvent + 1],
    )
    parm.add_flag("ATOMS_PER_MOLECULE", "10I8", data=[len(m) for m in molecules])
    parm.add_flag("BOX_DIMENSIONS", "5E16.8", data=[box[4], *box[:3]])
    parm.write_parm(str(path))


def _molecules(amber) -> list[list[int]]:
    """Atom indices of each bonded molecule, molecules in order of their first atom."""
    parent = list(range(len(amber.atoms)))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for b in amber.bonds:
        ra, rb = find(b.atom1.idx), find(b.atom2.idx)
        parent[max(ra, rb)] = min(ra, rb)
    groups: dict[int, list[int]] = {}
    for i in range(len(amber.atoms)):
        groups.setdefault(find(i), []).append(i)
    molecules = sorted(groups.values())
    assert all(m == list(range(m[0], m[-1] + 1)) for m in molecules), "not contiguous"
    return molecules


def _box_lengths_angles(topology) -> list[float]:
    a, b, c = (
        np.asarray(v.value_in_unit(unit.angstrom))
        for v in topology.getPeriodicBoxVectors()
    )
    la, lb, lc = (float(np.linalg.norm(v)) for v in (a, b, c))
    return [la, lb, lc, _angle(b, c), _angle(a, c), _angle(a, b)]


def _angle(u: np.ndarray, v: np.ndarray) -> float:
    return math.degrees(
        math.acos(float(u @ v) / (np.linalg.norm(u) * np.linalg.norm(v)))
    )


def prmtop_system(path: Path) -> openmm.System:
    prmtop = app.AmberPrmtopFile(str(path))
    return prmtop.createSystem(
        nonbondedMethod=app.NoCutoff, constraints=None, rigidWater=False
    )


def prmtop_placed(path: Path, positions_nm: np.ndarray) -> np.ndarray:
    """Positions with the sites where OpenMM's AmberPrmtopFile puts them: its weights
    come from the prmtop's (4-digit) bond lengths, not from the XML's, as tleap's and
    pmemd's extra points do."""
    context = openmm.Context(
        prmtop_system(path),
        openmm.VerletIntegrator(1e-3),
        openmm.Platform.getPlatformByName("Reference"),
    )
    context.setPositions(positions_nm)
    context.computeVirtualSites()
    x = context.getState(getPositions=True).getPositions(asNumpy=True)
    return np.asarray(x.value_in_unit(unit.nanometer))


def check_prmtop_sites(folder: Path, n_sites: int) -> None:
    """OpenMM's AmberPrmtopFile must recreate the virtual sites of the XML."""
    system = prmtop_system(folder / "structure.prmtop")
    sites = [i for i in range(system.getNumParticles()) if system.isVirtualSite(i)]
    assert len(sites) == n_sites, (folder, len(sites), n_sites)


def build(
    name: str, topology, positions, forcefield, water: str, cutoff_nm: float
) -> None:
    folder = HERE / name
    system, x = minimised(topology, positions, forcefield, cutoff_nm)
    n_sites = sum(system.isVirtualSite(i) for i in range(system.getNumParticles()))
    write_openmm(folder, topology, x, system)
    write_tleap_like_prmtop(folder, topology, x, system, water)
    check_prmtop_sites(folder, n_sites)
    print(f"{name}: {topology.getNumAtoms()} atoms, {n_sites} virtual sites")


def main() -> None:
    random.seed(20241124)
    pdb = app.PDBFile(str(PEPTIDE))
    ff = app.ForceField("amber19/protein.ff19SB.xml", "amber19/opc.xml")
    modeller = app.Modeller(pdb.topology, pdb.positions)
    modeller.addSolvent(
        ff, model="tip4pew", boxSize=openmm.Vec3(2.3, 2.3, 2.3) * unit.nanometer
    )
    build("opc_ff19sb", modeller.topology, modeller.positions, ff, "opc", 0.9)

    ff = app.ForceField("amber14/tip4pew.xml")
    modeller = app.Modeller(app.Topology(), [])
    d = 2.2  # rhombic dodecahedron (triclinic); the prmtop records β only, the rst7 all
    box = (
        openmm.Vec3(d, 0, 0),
        openmm.Vec3(0, d, 0),
        openmm.Vec3(d / 2, d / 2, d / math.sqrt(2)),
    )
    modeller.addSolvent(ff, model="tip4pew", boxVectors=box * unit.nanometer)
    build("tip4pew", modeller.topology, modeller.positions, ff, "tip4pew", 0.75)

    ff = app.ForceField("tip5p.xml")
    modeller = app.Modeller(app.Topology(), [])
    modeller.addSolvent(
        ff, model="tip5p", boxSize=openmm.Vec3(2.0, 2.0, 2.0) * unit.nanometer
    )
    build("tip5p", modeller.topology, modeller.positions, ff, "tip5p", 0.9)


if __name__ == "__main__":
    main()
