"""Langevin BAOAB: conformance, OpenMM LangevinMiddle positions, canonical sampling."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from torchmd_plugins.dynamics.langevin import LangevinBAOAB

from tests.conftest import DATA
from tests.core.toys import SoftPairs
from tests.plugins.dynamics.systems import (
    HarmonicWells,
    simulation,
    water_state,
    water_system,
)
from torchmd_core import PotentialSum, State, maxwell_boltzmann_velocities, temperature
from torchmd_core.testing import check_integrator, toy_system
from torchmd_core.units import AMU_A2_PS2_TO_KCAL_MOL, BOLTZMANN_KCAL_MOL_K


def _make(system, **fields):
    config = LangevinBAOAB.Config(
        **{"timestep_fs": 1.0, "temperature_K": 300.0, **fields}
    )
    return lambda: LangevinBAOAB(config, system)


@pytest.mark.parametrize("constraints", ["none", "hbonds"])
@pytest.mark.parametrize("precision", ["float64", "float32"])
def test_langevin_conforms(constraints, precision):
    sim = simulation(
        "ala2_vacuum",
        n_replicas=3,
        precision=precision,
        constraints=constraints,
        seed=5,
    )
    check_integrator(
        _make(sim.system, friction_per_ps=5.0), sim.potential, sim.state, steps=3
    )


def test_without_friction_positions_equal_openmm_langevin_middle():
    """Same forces (OpenMM's), hbonds + rigid water (SETTLE): our on-step BAOAB from
    v(0) and OpenMM's LangevinMiddleIntegrator from v(−dt/2) = v(0) − a dt/2 agree."""
    helpers = pytest.importorskip("tests.plugins.dynamics.openmm_helpers")
    openmm, unit = helpers.openmm, helpers.unit
    sim = simulation(
        "ala2_solv", constraints="hbonds", initial_temperature_K=300.0, seed=1
    )
    omm = helpers.amber_system(
        DATA / "ala2_solv/structure.prmtop",
        "hbonds",
        rigid_water=True,
        cutoff_A=9.0,
        periodic=True,
    )
    potential = helpers.OpenMMPotential(omm)
    integ = _make(
        sim.system, timestep_fs=2.0, friction_per_ps=0.0, constraint_tolerance=1e-10
    )()
    state = integ.setup(sim.state, potential)
    dt = integ.timestep_ps
    reference = openmm.LangevinMiddleIntegrator(
        300 * unit.kelvin, 0.0 / unit.picosecond, dt * unit.picosecond
    )
    reference.setConstraintTolerance(1e-10)
    context = openmm.Context(
        omm, reference, openmm.Platform.getPlatformByName("Reference")
    )
    context.setPeriodicBoxVectors(*(state.box[0].numpy() / 10))
    context.setPositions(state.positions[0].numpy() / 10)
    context.setVelocities(
        (state.velocities - 0.5 * dt * integ.acceleration(state.forces))[0].numpy() / 10
    )
    for _ in range(10):
        state = integ.step(state, potential)
    reference.step(10)
    expected = (
        context.getState(getPositions=True)
        .getPositions(asNumpy=True)
        .value_in_unit(unit.nanometer)
        * 10
    )
    # OpenMM's Reference SETTLE leaves ~5e-8 Å errors in the water geometry per step.
    assert np.abs(state.positions[0].numpy() - expected).max() < 2e-6


def test_langevin_samples_the_canonical_distribution_of_harmonic_oscillators():
    """Independent 3-D oscillators: <KE> = <PE> = (3N/2) kT, Var(KE) = (3N/2) (kT)².

    BAOAB samples a harmonic well's positions exactly; its on-step velocities run cold
    by about (ω dt / 2)², 0.2% for the hydrogens here at 1 fs.
    """
    n, replicas, temperature = 50, 16, 300.0
    system = toy_system(n, chain=False)
    centres = torch.zeros(n, 3, dtype=torch.float64)
    potential = HarmonicWells(centres, k=20.0)
    integ = _make(
        system, timestep_fs=1.0, friction_per_ps=50.0, temperature_K=temperature
    )()
    integ.seed(11, replicas)
    state = State(
        positions=torch.zeros(replicas, n, 3, dtype=torch.float64),
        velocities=torch.zeros(replicas, n, 3, dtype=torch.float64),
    )
    kinetic, potential_e = [], []
    masses = system.masses[None, :, None]
    with torch.no_grad():
        state = integ.setup(state, potential)
        for step in range(2500):
            state = integ.step(state, potential)
            if step >= 500 and step % 20 == 0:
                kinetic.append(
                    0.5
                    * AMU_A2_PS2_TO_KCAL_MOL
                    * (masses * state.velocities.square()).sum((1, 2))
                )
                potential_e.append(state.potential_energy)
    ke = torch.stack(kinetic).flatten().numpy()
    pe = torch.stack(potential_e).flatten().numpy()
    kT, dof = BOLTZMANN_KCAL_MOL_K * temperature, 3 * n
    # 1600 samples, nearly independent: the standard error of the means is ~0.3%.
    assert abs(ke.mean() / (0.5 * dof * kT) - 1) < 0.012
    assert abs(pe.mean() / (0.5 * dof * kT) - 1) < 0.012
    assert (
        abs(ke.var() / (0.5 * dof * kT**2) - 1) < 0.15
    )  # the variance estimate is ~5% noisy


def test_replicas_draw_different_noise():
    sim = simulation("ala2_vacuum", n_replicas=2, initial_temperature_K=0.0)
    integ = _make(sim.system)()
    integ.seed(0, 2)
    state = sim.state.replace(
        positions=sim.state.positions[:1].expand(2, -1, -1).clone()
    )
    with torch.no_grad():
        state = integ.step(integ.setup(state, sim.potential), sim.potential)
    assert not torch.equal(state.positions[0], state.positions[1])


def test_thermal_velocity_and_friction_enter_the_o_step():
    system = toy_system(4, chain=False)
    integ = _make(system, friction_per_ps=2.0, temperature_K=310.0, timestep_fs=2.0)()
    expected = np.sqrt(
        BOLTZMANN_KCAL_MOL_K * 310.0 / (system.masses.numpy() * AMU_A2_PS2_TO_KCAL_MOL)
    )
    assert np.allclose(integ.thermal_velocity.numpy(), expected)
    integ.seed(0, 1)
    v = torch.ones(1, 4, 3, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    noise = torch.randn((4, 3), generator=g, dtype=torch.float64)
    c = math.exp(-2.0 * 2.0e-3)
    expected_v = (
        c * v + math.sqrt(1 - c * c) * torch.as_tensor(expected)[:, None] * noise
    )
    assert torch.allclose(integ._thermostat(v), expected_v)


def test_langevin_config_is_validated():
    with pytest.raises(ValidationError):
        LangevinBAOAB.Config(timestep_fs=1.0)  # temperature required
    with pytest.raises(ValidationError):
        LangevinBAOAB.Config(timestep_fs=1.0, temperature_K=300.0, friction_per_ps=-1.0)
    with pytest.raises(ValidationError):
        LangevinBAOAB.Config(timestep_fs=1.0, temperature_K=0.0)


def test_rigid_waters_reach_the_bath_temperature_with_the_constrained_dof():
    """Rigid waters (SETTLE, 6 DOF each) with soft pair forces: <T> = 300 K when T
    counts 3N − 3W degrees of freedom."""
    system = water_system(27)
    replicas = 8
    potential = PotentialSum(
        [SoftPairs(SoftPairs.Config(cutoff=3.0, strength=1.0), system)], system=system
    )
    state = water_state(system, n_replicas=replicas, spacing=3.2)
    state = state.replace(
        velocities=maxwell_boltzmann_velocities(system, 300.0, replicas, 1)
    )
    integ = _make(system, timestep_fs=2.0, friction_per_ps=20.0)()
    integ.seed(0, replicas)
    samples = []
    with torch.no_grad():
        state = integ.setup(state, potential)
        for step in range(1200):
            state = integ.step(state, potential)
            if step >= 200 and step % 5 == 0:
                samples.append(temperature(state, system))
    assert system.degrees_of_freedom() == 6 * 27
    # 8 × 200 samples of an 11%-wide distribution, correlated over ~2 samples: ~0.4%.
    assert float(torch.stack(samples).mean()) == pytest.approx(300.0, rel=0.02)
