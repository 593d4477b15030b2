"""Build tests/data/peptide_charmm36: a CHARMM36 system from OpenMM's bundled
charmm36.xml.

Run from the repository root (once; the outputs are committed, building takes ~30 s):

    python tests/data/build_charmm36.py

``build()`` makes a capped-free heptapeptide (NH3+ ... COO-) from the stored
``peptide_ff19sb`` structure, with a sodium ion next to the carboxylate and a chloride
next to the amine (so the CHARMM36 NBFIX pairs SOD-OC and SOD-CLA are present), in
vacuum or in a small water box. ``write_psf`` writes a psf whose atom types are the
CHARMM36 classes OpenMM assigned, with every angle and proper dihedral of the bond
graph and the impropers and CMAP terms of the OpenMM System, so the same molecule can
be read as psf + CHARMM36 parameter file by OpenMM's CharmmPsfFile and by our loader.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parent
OUT = DATA / "peptide_charmm36"


def build(water: bool = False):
    """(topology, positions Å (N, 3), OpenMM System, CHARMM type per atom)."""
    import openmm
    import openmm.app as app
    import openmm.unit as u

    pdb = app.PDBFile(str(DATA / "peptide_ff19sb" / "structure.pdb"))
    ff = app.ForceField("charmm36.xml", "charmm36/water.xml")
    model = app.Modeller(pdb.topology, pdb.positions)
    model.delete([r for r in model.topology.residues() if r.name in ("ACE", "NME")])
    model.delete([a for a in model.topology.atoms() if a.element.symbol == "H"])
    positions = np.array(model.positions.value_in_unit(u.nanometer))
    top = model.topology
    residues = list(top.residues())
    atoms = {a.name: a for a in residues[-1].atoms()}
    c, o, ca = (positions[atoms[n].index] for n in ("C", "O", "CA"))
    oxt_pos = c + 0.125 * _unit(_unit(c - o) + 1.7 * _unit(c - ca))
    oxt = top.addAtom("OXT", app.element.oxygen, residues[-1])
    top.addBond(oxt, atoms["C"])
    n_term = {a.name: a for a in residues[0].atoms()}["N"]
    chain = top.addChain()
    top.addAtom("SOD", app.element.sodium, top.addResidue("SOD", chain))
    top.addAtom("CLA", app.element.chlorine, top.addResidue("CLA", chain))
    sod_pos = oxt_pos + 0.25 * _unit(oxt_pos - c)
    cla_pos = positions[n_term.index] + 0.35 * _unit(
        positions[n_term.index]
        - positions[{a.name: a for a in residues[0].atoms()}["CA"].index]
    )
    positions = np.vstack([positions, oxt_pos, sod_pos, cla_pos])
    model = app.Modeller(top, [openmm.Vec3(*p) for p in positions] * u.nanometer)
    model.addHydrogens(ff)
    if water:
        model.addSolvent(ff, padding=0.45 * u.nanometer, model="tip3p")
    system = ff.createSystem(
        model.topology,
        nonbondedMethod=app.NoCutoff,
        constraints=None,
        rigidWater=False,
        removeCMMotion=False,
    )  # fmt: skip
    types = _charmm_types(ff, model.topology)
    xyz = np.array(model.positions.value_in_unit(u.angstrom))
    return model.topology, xyz, system, types


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def _charmm_types(ff, topology) -> list[str]:
    """The CHARMM type (OpenMM atom class) of every atom, as createSystem assigns
    them."""
    from openmm.app.forcefield import ForceField

    data = ForceField._SystemData(topology)
    ff._matchAllResiduesToTemplates(data, topology, {}, False)
    return [ff._atomTypes[data.atomType[atom]].atomClass for atom in topology.atoms()]


def write_psf(path: Path, topology, system, types: list[str]) -> None:
    """A CHARMM psf of the system (see the module docstring)."""
    import openmm

    atoms = list(topology.atoms())
    nb = next(f for f in system.getForces() if isinstance(f, openmm.NonbondedForce))
    bonds = sorted({tuple(sorted((b[0].index, b[1].index))) for b in topology.bonds()})
    partners: list[set[int]] = [set() for _ in atoms]
    for i, j in bonds:
        partners[i].add(j)
        partners[j].add(i)
    angles = [
        (i, j, k)
        for j in range(len(atoms))
        for i in sorted(partners[j])
        for k in sorted(partners[j])
        if i < k
    ]
    dihedrals = [
        (i, j, k, m)
        for j, k in bonds
        for i in sorted(partners[j] - {k})
        for m in sorted(partners[k] - {j})
        if i != m
    ]
    impropers, cmaps = [], []
    for force in system.getForces():
        if isinstance(force, openmm.CustomTorsionForce):
            impropers = [
                tuple(force.getTorsionParameters(t)[:4])
                for t in range(force.getNumTorsions())
            ]
        if isinstance(force, openmm.CMAPTorsionForce):
            cmaps = [
                tuple(force.getTorsionParameters(t)[1:])
                for t in range(force.getNumTorsions())
            ]
    lines = [
        "PSF CMAP",
        "",
        "       1 !NTITLE",
        "* CHARMM36 test system written by tests/data/build_charmm36.py",
        "",
    ]
    lines.append(f"{len(atoms):8d} !NATOM")
    for atom in atoms:
        q = nb.getParticleParameters(atom.index)[0]._value
        mass = system.getParticleMass(atom.index)._value
        res = atom.residue
        segid = (
            "PEP"
            if res.name not in ("SOD", "CLA", "HOH")
            else ("ION" if res.name != "HOH" else "WAT")
        )
        resname = "TIP3" if res.name == "HOH" else res.name
        name = {"HOH": {"O": "OH2"}}.get(res.name, {}).get(atom.name, atom.name)
        lines.append(
            f"{atom.index + 1:8d} {segid:<4s} {res.index + 1:<4d} {resname:<4s} "
            f"{name:<4s} "
            f"{types[atom.index]:<6s} {q:10.6f} {mass:13.4f}           0"
        )
    lines.append("")

    def section(items, width, count, title):
        lines.append(f"{len(items):8d} !{title}")
        flat = [x + 1 for item in items for x in item]
        for k in range(0, len(flat), width):
            lines.append("".join(f"{v:8d}" for v in flat[k : k + width]))
        lines.append("")

    section(bonds, 8, 2, "NBOND: bonds")
    section(angles, 9, 3, "NTHETA: angles")
    section(dihedrals, 8, 4, "NPHI: dihedrals")
    section(impropers, 8, 4, "NIMPHI: impropers")
    section([], 8, 2, "NDON: donors")
    section([], 8, 2, "NACC: acceptors")
    lines.append(f"{0:8d} !NNB")
    lines.append("")
    zeros = [0] * len(atoms)
    for k in range(0, len(zeros), 8):
        lines.append("".join(f"{v:8d}" for v in zeros[k : k + 8]))
    lines.append("")
    lines.append(f"{1:8d}{0:8d} !NGRP NST2")
    lines.append(f"{0:8d}{0:8d}{0:8d}")
    lines.append("")
    lines.append(f"{0:8d}{0:8d} !NUMLP NUMLPH")
    lines.append("")
    section(cmaps, 8, 8, "NCRTERM: cross-terms")
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    import openmm
    import openmm.app as app
    import openmm.unit as unit

    topology, xyz, system, types = build()
    OUT.mkdir(exist_ok=True)
    write_psf(OUT / "peptide.psf", topology, system, types)
    (OUT / "system.xml").write_text(openmm.XmlSerializer.serialize(system))
    with (OUT / "structure.pdb").open("w") as fh:
        app.PDBFile.writeFile(topology, xyz * unit.angstrom, fh, keepIds=True)
    print(f"{len(xyz)} atoms written to {OUT}")


if __name__ == "__main__":
    main()
