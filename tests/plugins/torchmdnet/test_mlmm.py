"""ML/MM with a TorchMD-NET model on a region: the model energy of the region plus the
classical remainder equals a hand-built reference, and no intra-region classical term
survives."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch.testing import assert_close

from tests.conftest import DATA
from tests.plugins.torchmdnet.tiny import reference_energy_forces, reference_model
from torchmd_core import PotentialSum, Registry, Simulation, parse_config
from torchmd_core.builder import build_potentials
from torchmd_core.testing import check_potential, random_state, toy_system

REGION = [3, 4, 5, 6, 10]


def config(potentials: list[dict[str, Any]], registry: Registry) -> Any:
    data = {
        "system": {"topology": "x.prmtop"},
        "potentials": potentials,
        "integrator": {"kind": "toy.verlet"},
        "steps": 0,
    }
    return parse_config(data, registry=registry)


def test_region_model_plus_classical_remainder_equals_hand_built_reference(
    tiny_ckpt: Path, toy_registry
):
    system = toy_system(12)
    cfg = config(
        [
            {"kind": "torchmdnet", "model": str(tiny_ckpt), "atoms": REGION},
            {"kind": "toy.bonds"},
            {"kind": "toy.pairs", "cutoff": 30.0},
        ],
        toy_registry,
    )
    ml, bonds, pairs = build_potentials(cfg, system, toy_registry)
    state = random_state(system, n_replicas=3, seed=31)
    x = state.positions

    # No classical term wholly inside the region survives.
    inside = set(REGION)
    assert not any({i, j} <= inside for i, j in bonds.pairs.tolist())
    excluded = {tuple(p) for p in pairs.exclusions.tolist()}
    assert all((i, j) in excluded for i in REGION for j in REGION if i < j)

    idx = torch.tensor(REGION)
    e_ml, _ = reference_energy_forces(
        reference_model(tiny_ckpt), system.atomic_numbers[idx], x[:, idx]
    )
    ref = e_ml.clone()
    for i in range(11):
        if not {i, i + 1} <= inside:
            ref = ref + 300.0 * ((x[:, i] - x[:, i + 1]).norm(dim=-1) - 1.5) ** 2
    topology_exclusions = {tuple(p) for p in system.exclusions.tolist()}
    for i in range(12):
        for j in range(i + 1, 12):
            if (i, j) in topology_exclusions or {i, j} <= inside:
                continue
            ref = ref + 2.0 * (1 - (x[:, i] - x[:, j]).norm(dim=-1) / 30.0) ** 2

    total = PotentialSum([ml, bonds, pairs], system=system)
    with torch.no_grad():
        assert_close(total.energy(state), ref, rtol=1e-9, atol=1e-9)
    check_potential(total, state, config=False)


def test_without_atoms_the_classical_terms_stay_whole_as_a_prior(
    tiny_ckpt: Path, toy_registry
):
    system = toy_system(12)
    cfg = config(
        [{"kind": "torchmdnet", "model": str(tiny_ckpt)}, {"kind": "toy.bonds"}],
        toy_registry,
    )
    ml, bonds = build_potentials(cfg, system, toy_registry)
    assert len(bonds.pairs) == 11
    state = random_state(system, n_replicas=2, seed=32)
    e_ml, _ = reference_energy_forces(
        reference_model(tiny_ckpt), system.atomic_numbers, state.positions
    )
    with torch.no_grad():
        assert_close((ml + bonds).energy(state), e_ml + bonds.energy(state))


# -- real force fields: amber + nonbonded against a hand-built OpenMM reference -----

CASES = {
    # name: (topology, coordinates, region, OpenMM system source)
    "ala2_vacuum": (
        "ala2_vacuum/ala2_vacuum.prmtop",
        "ala2_vacuum/ala2_vacuum.pdb",
        "resname ALA",
    ),
    # Three residues, so that the middle residue's CMAP (C-N-CA-C-N) lies wholly inside.
    "peptide_ff19sb": (
        "peptide_ff19sb/system.xml",
        "peptide_ff19sb/structure.pdb",
        "residue 3 to 5",
    ),
}


def openmm_mechanical_embedding(name: str, region: list[int]) -> Any:
    """The OpenMM System of ``name`` (no cutoff) with every term wholly inside
    ``region`` zeroed and every region pair excluded, as openmm-ml's createMixedSystem
    does."""
    import openmm
    import openmm.app as app

    topology, *_ = CASES[name]
    path = DATA / topology
    if path.suffix == ".prmtop":
        omm = app.AmberPrmtopFile(str(path)).createSystem(
            nonbondedMethod=app.NoCutoff, constraints=None, rigidWater=False
        )
    else:
        omm = openmm.XmlSerializer.deserialize(path.read_text())
    inside = set(region)
    for force in omm.getForces():
        if isinstance(force, openmm.HarmonicBondForce):
            for k in range(force.getNumBonds()):
                i, j, r0, _ = force.getBondParameters(k)
                if {i, j} <= inside:
                    force.setBondParameters(k, i, j, r0, 0.0)
        elif isinstance(force, openmm.HarmonicAngleForce):
            for k in range(force.getNumAngles()):
                i, j, m, a0, _ = force.getAngleParameters(k)
                if {i, j, m} <= inside:
                    force.setAngleParameters(k, i, j, m, a0, 0.0)
        elif isinstance(force, openmm.PeriodicTorsionForce):
            for k in range(force.getNumTorsions()):
                *atoms, n, phase, _ = force.getTorsionParameters(k)
                if set(atoms) <= inside:
                    force.setTorsionParameters(k, *atoms, n, phase, 0.0)
        elif isinstance(force, openmm.CMAPTorsionForce):
            size = force.getMapParameters(0)[0]
            zero = force.addMap(size, [0.0] * size * size)
            for k in range(force.getNumTorsions()):
                _, *atoms = force.getTorsionParameters(k)
                if set(atoms) <= inside:
                    force.setTorsionParameters(k, zero, *atoms)
        elif isinstance(force, openmm.NonbondedForce):
            force.setNonbondedMethod(openmm.NonbondedForce.NoCutoff)
            known = {}
            for k in range(force.getNumExceptions()):
                i, j, *_ = force.getExceptionParameters(k)
                known[(min(i, j), max(i, j))] = k
            for i in sorted(inside):
                for j in sorted(inside):
                    if i < j:
                        if (i, j) in known:
                            force.setExceptionParameters(
                                known[(i, j)], i, j, 0.0, 1.0, 0.0
                            )
                        else:
                            force.addException(i, j, 0.0, 1.0, 0.0)
    return omm


def openmm_energy_forces(
    omm: Any, positions: torch.Tensor
) -> tuple[float, torch.Tensor]:
    """kcal/mol and (N, 3) kcal/mol/Å on the Reference platform."""
    import openmm
    import openmm.unit as u

    context = openmm.Context(
        omm,
        openmm.VerletIntegrator(0.001),
        openmm.Platform.getPlatformByName("Reference"),
    )
    context.setPositions((positions.numpy() * 0.1).tolist() * u.nanometer)
    st = context.getState(getEnergy=True, getForces=True)
    e = st.getPotentialEnergy().value_in_unit(u.kilocalorie_per_mole)
    f = st.getForces(asNumpy=True).value_in_unit(u.kilocalorie_per_mole / u.angstrom)
    return e, torch.as_tensor(f, dtype=torch.float64)


@pytest.mark.parametrize("name", list(CASES))
def test_amber_mlmm_equals_hand_built_openmm_mechanical_embedding(
    name, tiny_ckpt: Path
):
    pytest.importorskip("openmm")
    topology, coordinates, selection = CASES[name]
    data = {
        "system": {
            "topology": str(DATA / topology),
            "coordinates": str(DATA / coordinates),
        },
        "potentials": [
            {"kind": "torchmdnet", "model": str(tiny_ckpt), "atoms": selection},
            {"kind": "amber"},
            {"kind": "nonbonded"},
        ],
        "integrator": {"kind": "verlet", "timestep_fs": 1.0},
        "steps": 0,
        "precision": "float64",
    }
    sim = Simulation.from_config(parse_config(data))
    system, state = sim.system, sim.state
    ml = sim.potential.potentials[0]
    region = ml.atoms.tolist()
    assert region == system.select(selection).tolist() and len(region) > 5

    # No intra-region term survives in what the classical terms were built from.
    reduced = system.without_interactions_within(region)
    inside = torch.zeros(system.n_atoms, dtype=torch.bool)
    inside[region] = True
    dropped = 0
    for term, table in reduced.terms.items():
        assert not inside[table.atoms].all(dim=1).any(), term
        dropped += len(system.terms[term]) - len(table)
    assert dropped > 10
    if name == "peptide_ff19sb":
        assert len(reduced.terms["cmap"]) == len(system.terms["cmap"]) - 1

    with torch.no_grad():
        energy, forces = sim.potential.energy_and_forces(state)
    idx = torch.tensor(region)
    e_ml, f_ml = reference_energy_forces(
        reference_model(tiny_ckpt), system.atomic_numbers[idx], state.positions[:, idx]
    )
    e_mm, f_mm = openmm_energy_forces(
        openmm_mechanical_embedding(name, region), state.positions[0]
    )
    f_ref = f_mm.clone()
    f_ref[idx] += f_ml[0]
    # The project's OpenMM tolerances: max(1e-3, 1e-7 |E|) kcal/mol, 1e-3 kcal/mol/Å.
    assert float(energy[0]) == pytest.approx(
        e_mm + float(e_ml[0]), abs=max(1e-3, 1e-7 * abs(e_mm))
    )
    assert_close(forces[0], f_ref, rtol=0.0, atol=1e-3)
