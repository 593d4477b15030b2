"""Velocity Verlet (NVE) with RATTLE."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from torch.testing import assert_close
from torchmd_plugins.dynamics.verlet import VelocityVerlet

from tests.plugins.dynamics.systems import simulation
from torchmd_core import State
from torchmd_core.testing import check_integrator


def _make(system, **fields):
    config = VelocityVerlet.Config(**{"timestep_fs": 1.0, **fields})
    return lambda: VelocityVerlet(config, system)


@pytest.mark.parametrize("constraints", ["none", "hbonds", "hangles"])
@pytest.mark.parametrize("precision", ["float64", "float32"])
def test_verlet_conforms(constraints, precision):
    sim = simulation(
        "ala2_vacuum",
        n_replicas=2,
        precision=precision,
        constraints=constraints,
        seed=4,
    )
    check_integrator(
        _make(sim.system, remove_com_motion=True), sim.potential, sim.state, steps=3
    )


def test_verlet_follows_openmm_leapfrog_from_shifted_velocities():
    """OpenMM's VerletIntegrator (leapfrog) from v(−dt/2) = v(0) − a dt/2
    gives the same positions (same forces: OpenMM's, hbonds constrained)."""
    helpers = pytest.importorskip("tests.plugins.dynamics.openmm_helpers")
    openmm, unit = helpers.openmm, helpers.unit
    sim = simulation(
        "ala2_vacuum", constraints="hbonds", initial_temperature_K=300.0, seed=3
    )
    omm = helpers.amber_system(helpers_path("ala2_vacuum/ala2_vacuum.prmtop"), "hbonds")
    potential = helpers.OpenMMPotential(omm)
    integ = _make(sim.system, constraint_tolerance=1e-10)()
    state = integ.setup(sim.state, potential)
    dt = integ.timestep_ps
    reference = openmm.VerletIntegrator(dt * unit.picosecond)
    reference.setConstraintTolerance(1e-10)
    context = openmm.Context(
        omm, reference, openmm.Platform.getPlatformByName("Reference")
    )
    context.setPositions(state.positions[0].numpy() / 10)
    context.setVelocities(
        (state.velocities - 0.5 * dt * integ.acceleration(state.forces))[0].numpy() / 10
    )
    for _ in range(20):
        state = integ.step(state, potential)
    reference.step(20)
    expected = (
        context.getState(getPositions=True)
        .getPositions(asNumpy=True)
        .value_in_unit(unit.nanometer)
        * 10
    )
    assert np.abs(state.positions[0].numpy() - expected).max() < 1e-6


def helpers_path(name: str) -> str:
    from tests.conftest import DATA

    return str(DATA / name)


@pytest.mark.parametrize("constraints", ["none", "hbonds"])
def test_verlet_is_time_reversible(constraints):
    sim = simulation(
        "ala2_vacuum", constraints=constraints, initial_temperature_K=300.0
    )
    integ = _make(sim.system, constraint_tolerance=1e-12)()
    with torch.no_grad():
        start = integ.setup(sim.state, sim.potential)
        state = start
        for _ in range(30):
            state = integ.step(state, sim.potential)
        state = state.replace(velocities=-state.velocities)
        for _ in range(30):
            state = integ.step(state, sim.potential)
    assert_close(state.positions, start.positions, rtol=0, atol=1e-8)
    assert_close(-state.velocities, start.velocities, rtol=0, atol=1e-6)


def test_verlet_conserves_energy_over_a_short_run():
    sim = simulation(
        "ala2_vacuum",
        integrator={"kind": "verlet", "timestep_fs": 0.5},
        initial_temperature_K=300.0,
    )
    sim.minimize(0.1)
    sim.state = sim.state.replace(
        velocities=simulation(
            "ala2_vacuum", initial_temperature_K=300.0
        ).state.velocities
    )
    integ = sim.integrator
    totals, potentials = [], []
    with torch.no_grad():
        state = integ.setup(sim.state, sim.potential)
        for _ in range(400):
            state = integ.step(state, sim.potential)
            frame = sim.measure(state)
            totals.append(float(frame.potential_energy + frame.kinetic_energy))
            potentials.append(float(frame.potential_energy))
    assert np.std(totals) / np.std(potentials) < 0.02
    assert abs(totals[-1] - totals[0]) / sim.system.n_atoms < 5e-3


def test_constrained_distances_and_velocities_hold_during_dynamics():
    sim = simulation(
        "ala2_vacuum",
        constraints="allbonds",
        integrator={"kind": "verlet", "timestep_fs": 2.0},
        initial_temperature_K=300.0,
    )
    integ = sim.integrator
    with torch.no_grad():
        state = integ.setup(sim.state, sim.potential)
        for _ in range(50):
            state = integ.step(state, sim.potential)
    solver = integ.solver
    assert float(solver.relative_errors(state.positions).max()) < 1e-6
    a, b = solver.pairs.unbind(-1)
    x, v = state.positions, state.velocities
    along = ((x[:, a] - x[:, b]) * (v[:, a] - v[:, b])).sum(-1) / (
        x[:, a] - x[:, b]
    ).norm(dim=-1)
    assert float(along.abs().max()) < 1e-4  # Å/ps, against thermal speeds of ~10 Å/ps


def test_com_removal_keeps_the_momentum_zero():
    sim = simulation("ala2_vacuum", n_replicas=2, initial_temperature_K=300.0)
    state = sim.state.replace(
        velocities=sim.state.velocities
        + torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    )
    integ = _make(sim.system, remove_com_motion=True)()
    with torch.no_grad():
        state = integ.step(integ.setup(state, sim.potential), sim.potential)
    momentum = (sim.system.masses[:, None] * state.velocities).sum(1)
    assert float(momentum.abs().max()) < 1e-10
    assert (
        sim.system.degrees_of_freedom(integ.removes_com_motion)
        == 3 * sim.system.n_atoms - 3
    )


def test_a_state_without_velocities_starts_at_rest():
    sim = simulation("ala2_vacuum")
    integ = _make(sim.system)()
    with torch.no_grad():
        state = integ.step(State(positions=sim.state.positions), sim.potential)
    assert (
        state.velocities is not None
        and state.forces is not None
        and state.potential_energy is not None
    )
    assert state.step == 1


def test_verlet_config_is_validated():
    with pytest.raises(ValidationError):
        VelocityVerlet.Config(timestep_fs=-1.0)
    with pytest.raises(ValidationError):
        VelocityVerlet.Config(timestep_fs=1.0, constraint_tolerance=0.0)
    with pytest.raises(ValidationError):
        VelocityVerlet.Config()  # no timestep: no safe default


@pytest.mark.parametrize("constraints", ["none", "hbonds"])
def test_gradients_flow_through_the_trajectory(constraints):
    """With grad mode on, positions after a few steps are differentiable with respect to
    the starting positions (through forces, SHAKE and RATTLE)."""
    sim = simulation(
        "ala2_vacuum", constraints=constraints, initial_temperature_K=300.0
    )
    integ = _make(sim.system)()
    start = sim.state.positions.clone().requires_grad_(True)
    state = integ.setup(sim.state.replace(positions=start), sim.potential)
    for _ in range(3):
        state = integ.step(state, sim.potential)
    (grad,) = torch.autograd.grad(state.positions[..., 0].sum(), start)
    assert torch.isfinite(grad).all() and float(grad.abs().sum()) > 0
