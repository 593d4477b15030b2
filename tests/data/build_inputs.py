"""Build the inputs of the OpenMM parity tests from the real files in ../shared/data.

Run from the repository root (once; the outputs are committed):

    python tests/data/build_inputs.py

What it does, system by system (folder names under tests/data/):

- ``ala2_solv``, ``benzamidine``, ``ala3``, ``waterbox``: byte-for-byte copies of the
  shared files (checked by SHA-256 after copying).
- ``ala2_vacuum``: the 22-atom ACE-ALA-NME solute of ``ala2_solv`` with the water
  stripped (parmed ``strip``) and the now unused water LJ types dropped, written as a
  prmtop, plus a PDB with the solute coordinates.
- ``ala2_ljpair``: ``ala2_vacuum`` with the O–H Lennard-Jones pair (atom types ``O`` and
  ``H``) changed so it no longer follows the Lorentz–Berthelot rule (parmed
  ``changeLJPair``); OpenMM's AmberPrmtopFile then builds a tabulated
  CustomNonbondedForce.
- ``ala2_solv_ljpair``: the solvated prmtop with the ``O``–``OW`` pair changed the same
  way (periodic use of the tabulated force and its long-range correction).
- ``peptide_ff19sb``: a capped heptapeptide ACE-ILE-SER-LEU-ILE-ALA-ALA-LEU-NME cut from
  DHFR (residues 2–8 of 5dfr; the flanking MET 1 and ALA 9 become the ACE and NME caps),
  hydrogens re-added by OpenMM's Modeller, parametrised with OpenMM's bundled
  ``amber19/protein.ff19SB.xml`` (which has residue-specific CMAPs); serialized System
  XML + PDB.
- ``peptide_dodec``: the same capped peptide with ``amber14-all.xml`` solvated in
  ``amber14/tip3p.xml`` water in a rhombic dodecahedron (a triclinic box) by Modeller,
  briefly minimised; serialized System XML + PDB. The reference positions are those of
  the PDB (3 decimals), the exact box those in the XML.

Only OpenMM (Modeller, ForceField, XmlSerializer) and parmed (strip, changeLJPair,
prmtop writer) are used. Files keep their native units (prmtop: Å, kcal/mol; XML: nm,
kJ/mol).
"""

from __future__ import annotations

import hashlib
import random
import shutil
from pathlib import Path

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as unit

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(__file__).resolve().parent
SHARED = ROOT.parent / "shared" / "data"

COPIES = {
    "ala2_solv": (
        "prod_alanine_dipeptide_amber",
        ["structure.prmtop", "input.coor", "input.xsc"],
    ),
    "benzamidine": ("benzamidine_charmm", ["mol.psf", "mol.prm", "mol.rtf", "mol.pdb"]),
    "ala3": (
        "ala3_charmm22",
        ["ala_ala_ala.psf", "ala_ala_ala.pdb", "charmm22.rtf", "charmm22.par"],
    ),
    "waterbox": (
        "waterbox_charmm",
        ["structure.psf", "structure.pdb", "parameters.prm", "output.xtc"],
    ),
}

# Modified LJ pairs (pre-combined Rmin in Å, epsilon in kcal/mol), chosen far from the
# Lorentz-Berthelot values (O-H: 2.2612 Å / 0.0574; O-OW: 3.3996 Å / 0.1816).
LJPAIR_VACUUM = ("@%O", "@%H", 2.05, 0.15)
LJPAIR_SOLVATED = ("@%O", "@%OW", 3.10, 0.30)

PEPTIDE_RESIDUES = range(0, 9)  # 0-based residue indices in 5dfr: MET1 .. ALA9
DODECAHEDRON_WIDTH_NM = 2.7  # c_z = 0.707*2.7 nm = 1.91 nm > 2 x 0.9 nm cutoff


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def copy_shared() -> None:
    """Copy the shared input files byte-for-byte and check the copies."""
    for folder, (source, names) in COPIES.items():
        out = DATA / folder
        out.mkdir(exist_ok=True)
        for name in names:
            shutil.copyfile(SHARED / source / name, out / name)
            assert sha256(SHARED / source / name) == sha256(out / name)


def read_namd_coor(path: Path) -> np.ndarray:
    """NAMD/ACEMD binary coordinates: int32 atom count, then float64 xyz (Å)."""
    raw = path.read_bytes()
    n = int(np.frombuffer(raw[:4], dtype="<i4")[0])
    xyz = np.frombuffer(raw[4:], dtype="<f8").reshape(-1, 3)
    assert xyz.shape == (n, 3), (n, xyz.shape)
    return xyz.copy()


def build_ala2_vacuum() -> None:
    """Strip the water from the solvated dipeptide prmtop; write prmtop + PDB."""
    import parmed

    src = SHARED / "prod_alanine_dipeptide_amber"
    parm = parmed.load_file(str(src / "structure.prmtop"))
    parm.coordinates = read_namd_coor(src / "input.coor")
    parm.strip(":WAT,HOH")  # noqa: B005 (parmed mask, not str.strip)
    parm.box = None
    parm.remake_parm()
    assert len(parm.atoms) == 22, len(parm.atoms)
    compress_lj_types(parm)
    out = DATA / "ala2_vacuum"
    out.mkdir(exist_ok=True)
    parmed.amber.AmberFormat.write_parm(parm, str(out / "ala2_vacuum.prmtop"))
    parm.save(str(out / "ala2_vacuum.pdb"), overwrite=True)
    # Plain NonbondedForce LJ: no unused types left to look like modified pairs.
    system = app.AmberPrmtopFile(str(out / "ala2_vacuum.prmtop")).createSystem()
    assert not any(
        isinstance(f, openmm.CustomNonbondedForce) for f in system.getForces()
    )


def compress_lj_types(parm) -> None:
    """Drop the LJ types no atom uses, keeping every remaining A/B value as it was.

    parmed's strip keeps the water types OW/HW in the LJ table; OpenMM's
    AmberPrmtopFile takes any unused type for a modified (NBFIX-like) pair and would
    switch to a tabulated CustomNonbondedForce, which is not what this case tests.
    """
    data = parm.parm_data
    n_old = data["POINTERS"][1]
    old_index = data["NONBONDED_PARM_INDEX"]
    used = sorted(set(data["ATOM_TYPE_INDEX"]))
    n = len(used)
    acoef, bcoef, index = [0.0] * (n * (n + 1) // 2), [0.0] * (n * (n + 1) // 2), []
    for i, old_i in enumerate(used, start=1):
        for j, old_j in enumerate(used, start=1):
            pos = max(i, j) * (max(i, j) - 1) // 2 + min(i, j)  # AMBER's packing
            index.append(pos)
            old = old_index[(old_i - 1) * n_old + old_j - 1]
            acoef[pos - 1] = data["LENNARD_JONES_ACOEF"][old - 1]
            bcoef[pos - 1] = data["LENNARD_JONES_BCOEF"][old - 1]
    new_of = {old: new for new, old in enumerate(used, start=1)}
    data["ATOM_TYPE_INDEX"] = [new_of[t] for t in data["ATOM_TYPE_INDEX"]]
    data["NONBONDED_PARM_INDEX"] = index
    data["LENNARD_JONES_ACOEF"], data["LENNARD_JONES_BCOEF"] = acoef, bcoef
    data["POINTERS"][1] = n


def change_lj_pair(prmtop_in: Path, prmtop_out: Path, pair: tuple) -> None:
    """Write a copy of a prmtop with one off-diagonal LJ A/B entry changed."""
    import parmed
    from parmed.tools import changeLJPair

    parm = parmed.load_file(str(prmtop_in))
    mask1, mask2, rmin, eps = pair
    changeLJPair(parm, mask1, mask2, str(rmin), str(eps)).execute()
    parm.write_parm(str(prmtop_out))
    # OpenMM must see the modified pair and fall back to a tabulated force.
    system = app.AmberPrmtopFile(str(prmtop_out)).createSystem()
    assert any(isinstance(f, openmm.CustomNonbondedForce) for f in system.getForces())


def build_ljpair() -> None:
    (DATA / "ala2_ljpair").mkdir(exist_ok=True)
    change_lj_pair(
        DATA / "ala2_vacuum" / "ala2_vacuum.prmtop",
        DATA / "ala2_ljpair" / "ala2_ljpair.prmtop",
        LJPAIR_VACUUM,
    )
    (DATA / "ala2_solv_ljpair").mkdir(exist_ok=True)
    change_lj_pair(
        SHARED / "prod_alanine_dipeptide_amber" / "structure.prmtop",
        DATA / "ala2_solv_ljpair" / "structure_ljpair.prmtop",
        LJPAIR_SOLVATED,
    )


def capped_peptide(forcefield: app.ForceField) -> app.Modeller:
    """ACE-(5dfr residues 2-8)-NME with hydrogens added by Modeller."""
    pdb = app.PDBFile(str(SHARED / "dhfr_5dfr" / "5dfr_solv-cube_equil.pdb"))
    residues = list(pdb.topology.residues())
    chosen = [residues[i] for i in PEPTIDE_RESIDUES]
    top = app.Topology()
    chain = top.addChain()
    positions = []

    def add(res_name, atoms):
        res = top.addResidue(res_name, chain)
        for name, atom in atoms:
            top.addAtom(name, atom.element, res)
            positions.append(pdb.positions[atom.index].value_in_unit(unit.nanometer))

    heavy = lambda r: [a for a in r.atoms() if a.element.symbol != "H"]  # noqa: E731
    first = {a.name: a for a in chosen[0].atoms()}
    add("ACE", [("CH3", first["CA"]), ("C", first["C"]), ("O", first["O"])])
    for res in chosen[1:-1]:
        add(res.name, [(a.name, a) for a in heavy(res)])
    last = {a.name: a for a in chosen[-1].atoms()}
    add("NME", [("N", last["N"]), ("C", last["CA"])])
    top.createStandardBonds()
    random.seed(20241124)  # Modeller places new hydrogens from random starting points
    modeller = app.Modeller(top, positions * unit.nanometer)
    modeller.addHydrogens(
        forcefield, platform=openmm.Platform.getPlatformByName("Reference")
    )
    return modeller


def write_xml_system(folder: str, topology, positions, system: openmm.System) -> None:
    out = DATA / folder
    out.mkdir(exist_ok=True)
    (out / "system.xml").write_text(openmm.XmlSerializer.serialize(system))
    with open(out / "structure.pdb", "w") as fh:
        app.PDBFile.writeFile(topology, positions, fh, keepIds=False)


def build_peptide_ff19sb() -> None:
    ff = app.ForceField("amber19/protein.ff19SB.xml")
    modeller = capped_peptide(ff)
    system = ff.createSystem(
        modeller.topology,
        nonbondedMethod=app.NoCutoff,
        constraints=None,
        rigidWater=False,
        removeCMMotion=False,
    )
    assert any(isinstance(f, openmm.CMAPTorsionForce) for f in system.getForces())
    write_xml_system("peptide_ff19sb", modeller.topology, modeller.positions, system)


def dodecahedron_vectors(width_nm: float) -> tuple:
    """Rhombic dodecahedron (square xy cross-section) in OpenMM's reduced form."""
    d = width_nm
    return (
        openmm.Vec3(d, 0, 0),
        openmm.Vec3(0, d, 0),
        openmm.Vec3(0.5 * d, 0.5 * d, 0.5 * np.sqrt(2.0) * d),
    ) * unit.nanometer


def build_peptide_dodec() -> None:
    ff = app.ForceField("amber14-all.xml", "amber14/tip3p.xml")
    modeller = capped_peptide(ff)
    # Centre the peptide in the box before solvating.
    xyz = np.array(modeller.positions.value_in_unit(unit.nanometer))
    box = dodecahedron_vectors(DODECAHEDRON_WIDTH_NM)
    centre = 0.5 * np.sum(np.array(box.value_in_unit(unit.nanometer)), axis=0)
    modeller.positions = (xyz - xyz.mean(axis=0) + centre) * unit.nanometer
    modeller.addSolvent(ff, model="tip3p", boxVectors=box, neutralize=False)
    system = ff.createSystem(
        modeller.topology,
        nonbondedMethod=app.CutoffPeriodic,
        nonbondedCutoff=0.9 * unit.nanometer,
        constraints=None,
        rigidWater=False,
        removeCMMotion=False,
    )
    context = openmm.Context(
        system,
        openmm.VerletIntegrator(0.001),
        openmm.Platform.getPlatformByName("Reference"),
    )
    context.setPositions(modeller.positions)
    openmm.LocalEnergyMinimizer.minimize(context, 10.0, 200)
    positions = context.getState(getPositions=True).getPositions()
    write_xml_system("peptide_dodec", modeller.topology, positions, system)


def main() -> None:
    copy_shared()
    build_ala2_vacuum()
    build_ljpair()
    build_peptide_ff19sb()
    build_peptide_dodec()
    for path in sorted(DATA.rglob("*")):
        if path.is_file():
            print(f"{path.relative_to(ROOT)}  {path.stat().st_size:>9d} B")


if __name__ == "__main__":
    main()
