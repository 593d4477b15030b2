"""L-BFGS minimisation: convergence, constraints, replicas, Simulation.minimize."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from tests.core.toys import HarmonicBonds
from tests.plugins.dynamics.systems import simulation
from torchmd_core.minimize import minimize, minimize_with_result
from torchmd_core.testing import random_state, toy_system


def test_a_harmonic_chain_relaxes_to_its_bond_lengths():
    system = toy_system(10)
    potential = HarmonicBonds(HarmonicBonds.Config(), system)
    state = random_state(system, n_replicas=2)
    result = minimize_with_result(potential, state, tolerance_kcal_mol_A=1e-4)
    assert bool(result.converged.all())
    assert float(result.max_force.max()) <= 1e-4
    assert float(result.state.potential_energy.max()) < 1e-8
    assert torch.equal(result.state.velocities, state.velocities)  # velocities are kept


def test_ala2_reaches_the_force_tolerance_and_openmm_s_minimum():
    openmm = pytest.importorskip("openmm")
    from tests.plugins.dynamics import openmm_helpers as helpers

    sim = simulation("ala2_vacuum")
    result = minimize_with_result(sim.potential, sim.state, 0.05, 2000)
    assert bool(result.converged.all())
    _, forces = sim.potential.energy_and_forces(result.state)
    assert float(forces.abs().max()) <= 0.05
    assert (
        float(result.state.potential_energy[0]) < float(result.initial_energy[0]) - 10.0
    )
    # OpenMM's minimiser from the same start finds the same basin.
    omm = helpers.amber_system(helpers_path("ala2_vacuum/ala2_vacuum.prmtop"))
    context = openmm.Context(
        omm,
        openmm.VerletIntegrator(0.001),
        openmm.Platform.getPlatformByName("Reference"),
    )
    context.setPositions(sim.state.positions[0].numpy() / 10)
    openmm.LocalEnergyMinimizer.minimize(context, 0.05 * 41.84, 2000)
    expected = (
        context.getState(getEnergy=True)
        .getPotentialEnergy()
        .value_in_unit(helpers.unit.kilocalorie_per_mole)
    )
    assert float(result.state.potential_energy[0]) == pytest.approx(expected, abs=0.05)


def helpers_path(name: str) -> str:
    from tests.conftest import DATA

    return str(DATA / name)


@pytest.mark.parametrize("mode", ["hbonds", "hangles"])
def test_constrained_minimisation_stays_on_the_constraint_surface(mode):
    sim = simulation("ala2_vacuum", constraints=mode, n_replicas=2)
    solver = sim.integrator.constraint_solver
    start = sim.state.replace(
        positions=sim.state.positions + 0.03 * torch.randn_like(sim.state.positions)
    )
    result = minimize_with_result(sim.potential, start, 0.05, 3000, constraints=solver)
    assert bool(result.converged.all())
    assert float(solver.relative_errors(result.state.positions).max()) < 1e-5
    # Constrained forces vanish; the full ones do not (constraints hold against them).
    _, forces = sim.potential.energy_and_forces(result.state)
    assert float(forces.abs().max()) > 1.0


def test_a_replica_is_minimised_as_it_would_be_alone():
    sim = simulation("ala2_vacuum", n_replicas=2)
    g = torch.Generator().manual_seed(0)
    start = sim.state.replace(
        positions=sim.state.positions
        + 0.05
        * torch.randn(sim.state.positions.shape, generator=g, dtype=torch.float64)
    )
    batched = minimize(sim.potential, start, 0.05, 30)
    alone = minimize(sim.potential, start.select([1]), 0.05, 30)
    assert_close(alone.positions, batched.positions[1:], rtol=0, atol=1e-10)
    # To the end, reductions over differently shaped batches round differently, and the
    # stopping point moves within the tolerance; the minimum found is the same.
    batched = minimize_with_result(sim.potential, start, 0.02, 2000)
    alone = minimize_with_result(sim.potential, start.select([1]), 0.02, 2000)
    assert bool(batched.converged.all()) and bool(alone.converged.all())
    assert_close(
        alone.state.potential_energy,
        batched.state.potential_energy[1:],
        rtol=0,
        atol=1e-3,
    )


def test_the_iteration_limit_is_respected():
    sim = simulation("ala2_vacuum")
    result = minimize_with_result(sim.potential, sim.state, 1e-6, max_iterations=5)
    assert result.iterations == 5 and not bool(result.converged.any())


def test_an_already_minimal_state_takes_no_iteration():
    system = toy_system(6)
    potential = HarmonicBonds(HarmonicBonds.Config(), system)
    relaxed = minimize(potential, random_state(system, 1), 1e-6)
    result = minimize_with_result(potential, relaxed, 1e-4)
    assert result.iterations == 0 and torch.equal(
        result.state.positions, relaxed.positions
    )


def test_simulation_minimize_honours_the_integrator_constraints():
    sim = simulation("ala2_vacuum", constraints="allbonds")
    sim.minimize(0.1, 1000)
    assert (
        float(
            sim.integrator.constraint_solver.relative_errors(sim.state.positions).max()
        )
        < 1e-5
    )
    assert sim.state.forces is not None and sim.state.potential_energy is not None
