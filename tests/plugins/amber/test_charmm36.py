"""CHARMM36 (Urey-Bradley, harmonic impropers, CMAP, NBFIX) against OpenMM, two ways.

The inputs in tests/data/peptide_charmm36 (see its SOURCES.md) hold a peptide with a
Na+ by its carboxylate and a Cl- by its amine, so the CHARMM36 NBFIX pairs SOD-OC and
SOD-CLA apply. The molecule is read

- as psf + the CHARMM36 toppar in tests/data/waterbox/parameters.prm, compared with
  OpenMM's CharmmPsfFile + CharmmParameterSet on the same files;
- as the serialized System of OpenMM's ForceField('charmm36.xml') (UB merged into the
  bond force, LJ as an acoef/bcoef table, 1-4 LJ as a CustomBondForce),

in vacuum without cutoff and in a triclinic periodic box with reaction field and the
dispersion correction.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.plugins.amber.conftest import data_path
from tests.plugins.amber.openmm_reference import evaluate, per_force, set_nonbonded
from torchmd_core import PotentialSum, State, default_registry
from torchmd_core.geometry import box_from_lengths_angles

openmm = pytest.importorskip("openmm")
FOLDER = data_path("peptide_charmm36")
PARAMETERS = data_path("waterbox/parameters.prm")
CUTOFF = 9.0
CELL = (40.0, 40.0, 40.0, 60.0, 60.0, 90.0)  # Å, degrees: triclinic


@pytest.fixture(scope="module", params=["vacuum", "triclinic"])
def case(request):
    import openmm.app as app
    import openmm.unit as unit

    periodic = request.param == "triclinic"
    pdb = app.PDBFile(str(FOLDER / "structure.pdb"))
    xyz = np.array(pdb.getPositions(asNumpy=True).value_in_unit(unit.angstrom))
    box = box_from_lengths_angles(*CELL).numpy() if periodic else None
    charmm = app.CharmmPsfFile(str(FOLDER / "peptide.psf"))
    if periodic:
        charmm.setBox(
            *(x * unit.angstrom for x in CELL[:3]), *(x * unit.degree for x in CELL[3:])
        )
    method = app.CutoffPeriodic if periodic else app.NoCutoff
    psf_system = charmm.createSystem(
        app.CharmmParameterSet(str(PARAMETERS)), nonbondedMethod=method,
        nonbondedCutoff=CUTOFF * unit.angstrom, constraints=None, rigidWater=False,
    )  # fmt: skip
    xml_system = openmm.XmlSerializer.deserialize((FOLDER / "system.xml").read_text())
    for system in (psf_system, xml_system):
        if periodic:
            set_nonbonded(system, "CutoffPeriodic", CUTOFF, dispersion=True)
        else:
            set_nonbonded(system, "NoCutoff")
    return {"xyz": xyz, "box": box, "psf": psf_system, "xml": xml_system}


def ours(path, parameters, periodic: bool) -> PotentialSum:
    registry = default_registry()
    system = registry.loader_for(path, "topology").load_topology(path, parameters)
    amber = registry.get("potentials", "amber")
    nonbonded = registry.get("potentials", "nonbonded")
    config = nonbonded.Config(cutoff=CUTOFF) if periodic else nonbonded.Config()
    return PotentialSum(
        [amber(amber.Config(), system), nonbonded(config, system)], system=system
    )


GROUPS = {
    "HarmonicBondForce": ("bonds", "urey_bradley"),
    "HarmonicAngleForce": ("angles",),
    "PeriodicTorsionForce": ("torsions", "impropers"),
    "CustomTorsionForce": ("harmonic_impropers",),
    "CMAPTorsionForce": ("cmap",),
}


def check(potential: PotentialSum, omm_system, case) -> None:
    box = None if case["box"] is None else torch.as_tensor(case["box"])
    state = State.from_coordinates(torch.as_tensor(case["xyz"]), box)
    with torch.no_grad():
        terms = {k: float(v[0]) for k, v in potential.energy_terms(state).items()}
        energy, forces = potential.energy_and_forces(state)
    reference = per_force(omm_system, case["xyz"], case["box"])
    for cls, names in GROUPS.items():
        want = sum(e for c, _, e, _ in reference if c == cls)
        got = sum(terms.get(n, 0.0) for n in names)
        assert abs(got - want) < 1e-8, (cls, got, want)
    total, total_forces = evaluate(omm_system, case["xyz"], case["box"])
    # OpenMM integrates the long-range correction of a CustomNonbondedForce (the NBFIX
    # table) numerically, ours is exact: ~1e-8 relative apart, within the acceptance.
    assert abs(float(energy[0]) - total) <= max(1e-3, 1e-7 * abs(total))
    assert np.abs(forces[0].numpy() - total_forces).max() < 1e-6


def test_psf_with_charmm36_toppar_matches_charmm_psf_file(case):
    potential = ours(FOLDER / "peptide.psf", [PARAMETERS], case["box"] is not None)
    tables = potential.potentials[0].tables
    assert {"urey_bradley", "harmonic_impropers", "cmap", "pairs14"} <= set(
        tables.keys()
    )
    check(potential, case["psf"], case)


def test_forcefield_xml_matches_openmm(case):
    potential = ours(
        FOLDER / "system.xml", [FOLDER / "structure.pdb"], case["box"] is not None
    )
    assert (
        len(potential.potentials[0].tables["urey_bradley"]) > 0
    )  # told apart from the bonds
    check(potential, case["xml"], case)


def test_psf_system_has_the_nbfix_pairs():
    registry = default_registry()
    path = FOLDER / "peptide.psf"
    system = registry.loader_for(path, "topology").load_topology(path, [PARAMETERS])
    nb = system.nonbonded
    names = list(nb.type_names)
    fixed = {(names[i], names[j]) for i, j in nb.pair_mask.nonzero().tolist()}
    assert ("SOD", "OC") in fixed and ("SOD", "CLA") in fixed


@pytest.mark.slow
def test_dhfr_box_as_charmm36_psf_matches_charmm_psf_file(shared_data, tmp_path):
    """23,558 atoms: the DHFR box typed by OpenMM's charmm36.xml, written as a psf,
    read with the CHARMM36 toppar; periodic reaction field with dispersion
    correction."""
    import openmm.app as app
    import openmm.unit as unit

    from tests.data.build_charmm36 import _charmm_types, write_psf

    pdb = app.PDBFile(str(shared_data / "dhfr_5dfr" / "5dfr_solv-cube_equil.pdb"))
    ff = app.ForceField("charmm36.xml", "charmm36/water.xml")
    typed = ff.createSystem(pdb.topology, constraints=None, rigidWater=False)
    psf = tmp_path / "dhfr.psf"
    write_psf(psf, pdb.topology, typed, _charmm_types(ff, pdb.topology))
    xyz = np.array(pdb.getPositions(asNumpy=True).value_in_unit(unit.angstrom))
    box = np.diag([62.23, 62.23, 62.23])
    charmm = app.CharmmPsfFile(str(psf))
    charmm.setBox(*(62.23 * unit.angstrom,) * 3)
    omm = charmm.createSystem(
        app.CharmmParameterSet(str(PARAMETERS)),
        nonbondedMethod=app.CutoffPeriodic,
        nonbondedCutoff=CUTOFF * unit.angstrom,
        constraints=None,
        rigidWater=False,
    )
    set_nonbonded(omm, "CutoffPeriodic", CUTOFF, dispersion=True)
    check(ours(psf, [PARAMETERS], True), omm, {"xyz": xyz, "box": box})
