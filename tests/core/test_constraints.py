"""What is constrained (hbonds, allbonds, hangles, rigid water) and hydrogen mass
repartitioning, checked against OpenMM's own choices for the same prmtop."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from tests.conftest import DATA
from torchmd_core import SystemConfig, TopologyError
from torchmd_core.builder import load_system
from torchmd_core.constraints import (
    apply_system_options,
    find_constraints,
    repartition_hydrogen_mass,
)
from torchmd_core.testing import toy_system

openmm = pytest.importorskip("openmm")
app = pytest.importorskip("openmm.app")
unit = pytest.importorskip("openmm.unit")

ALA2 = DATA / "ala2_vacuum" / "ala2_vacuum.prmtop"
SOLV = DATA / "ala2_solv" / "structure.prmtop"


def _ours(prmtop, coordinates, **options):
    config = SystemConfig(topology=prmtop, coordinates=coordinates, **options)
    system, _ = load_system(config)
    return apply_system_options(system, config)


def _openmm(prmtop, constraints, rigid_water=True, hydrogen_mass=None):
    extra = {} if hydrogen_mass is None else {"hydrogenMass": hydrogen_mass * unit.amu}
    return app.AmberPrmtopFile(str(prmtop)).createSystem(
        constraints=constraints, rigidWater=rigid_water, removeCMMotion=False, **extra
    )


def _openmm_constraints(omm):
    out = {}
    for i in range(omm.getNumConstraints()):
        a, b, d = omm.getConstraintParameters(i)
        out[(min(a, b), max(a, b))] = d.value_in_unit(unit.angstrom)
    return out


@pytest.mark.parametrize(
    ("mode", "omm_mode"),
    [("hbonds", "HBonds"), ("allbonds", "AllBonds"), ("hangles", "HAngles")],
)
def test_constrained_pairs_and_distances_match_openmm(mode, omm_mode):
    system = _ours(ALA2, DATA / "ala2_vacuum" / "ala2_vacuum.pdb", constraints=mode)
    expected = _openmm_constraints(_openmm(ALA2, getattr(app, omm_mode)))
    ours = {
        tuple(p): d
        for p, d in zip(
            system.constraints.pairs.tolist(),
            system.constraints.distances.tolist(),
            strict=True,
        )
    }
    assert set(ours) == set(expected)
    assert max(abs(ours[k] - expected[k]) for k in ours) < 1e-6


def test_rigid_waters_match_openmm_settle():
    system = _ours(SOLV, DATA / "ala2_solv" / "input.coor", constraints="hbonds")
    c = system.constraints
    omm = _openmm(SOLV, app.HBonds)
    assert c.count == omm.getNumConstraints() == 678
    assert c.waters.shape == (222, 3)
    o, h1, h2 = c.waters[0].tolist()
    expected = _openmm_constraints(omm)
    assert c.water_distances[0] == pytest.approx(expected[(o, h1)], abs=1e-9)
    assert c.water_distances[1] == pytest.approx(expected[(h1, h2)], abs=1e-9)
    assert system.degrees_of_freedom() == 3 * system.n_atoms - 678
    assert system.degrees_of_freedom(remove_com_motion=True) == 3 * system.n_atoms - 681


def test_rigid_water_follows_the_constraints_unless_set():
    coords = DATA / "ala2_solv" / "input.coor"
    assert _ours(SOLV, coords).constraints is None
    only_water = _ours(SOLV, coords, rigid_water=True).constraints
    assert only_water.pairs.shape == (0, 2) and only_water.waters.shape == (222, 3)
    flexible = _ours(SOLV, coords, constraints="hbonds", rigid_water=False).constraints
    assert flexible.waters.shape == (0, 3)
    assert (
        flexible.count == 12 + 3 * 222
    )  # O-H and the H-H bond of each water are hbonds here


def test_hydrogen_mass_repartitioning_matches_openmm():
    system = _ours(ALA2, DATA / "ala2_vacuum" / "ala2_vacuum.pdb", hydrogen_mass=3.0)
    omm = _openmm(ALA2, app.HBonds, hydrogen_mass=3.0)
    expected = np.array(
        [omm.getParticleMass(i).value_in_unit(unit.amu) for i in range(system.n_atoms)]
    )
    np.testing.assert_allclose(system.masses.numpy(), expected, atol=1e-9)


def test_repartitioning_keeps_total_mass_and_leaves_water_alone():
    system, _ = load_system(
        SystemConfig(topology=SOLV, coordinates=DATA / "ala2_solv" / "input.coor")
    )
    heavy = repartition_hydrogen_mass(system, 4.0)
    assert heavy.total_mass() == pytest.approx(system.total_mass(), rel=1e-12)
    assert torch.equal(heavy.masses[22:], system.masses[22:])  # the waters
    hydrogens = (system.atomic_numbers[:22] == 1).nonzero().flatten()
    assert torch.allclose(
        heavy.masses[hydrogens], torch.tensor(4.0, dtype=torch.float64)
    )


def test_too_heavy_hydrogens_are_refused():
    system = toy_system(6)  # C-H chain: carbons of 12 amu
    with pytest.raises(TopologyError, match="smaller value"):
        repartition_hydrogen_mass(system, 14.0)


def test_a_bond_without_parameters_cannot_be_constrained():
    system = toy_system(6)
    table = system.terms["bonds"]
    system = dataclasses.replace(
        system,
        terms={**system.terms, "bonds": table.subset(torch.arange(len(table)) > 0)},
    )
    with pytest.raises(TopologyError, match="no bond parameters"):
        find_constraints(system, "allbonds", rigid_water=False)


def test_a_pair_reached_twice_is_constrained_once():
    system = toy_system(6)
    twice = dataclasses.replace(
        system, bonds=torch.cat([system.bonds, system.bonds[:2].flip(1)])
    )
    c = find_constraints(twice, "allbonds", rigid_water=False)
    assert c.count == len(system.bonds)


def test_waters_of_different_geometries_are_refused():
    from tests.plugins.dynamics.systems import water_system

    system = water_system(2, rigid=False)
    table = system.terms["bonds"]
    r0 = table.values["r0"].clone()
    r0[0] = 1.0  # one O-H of the first water
    system = dataclasses.replace(
        system,
        terms={
            **system.terms,
            "bonds": dataclasses.replace(table, values={**table.values, "r0": r0}),
        },
    )
    with pytest.raises(TopologyError, match="different geometries"):
        find_constraints(system, "none", rigid_water=True)
