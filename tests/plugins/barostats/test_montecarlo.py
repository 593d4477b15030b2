"""Monte Carlo barostat: moves, acceptance, adaptation, replicas, checkpoints."""

from __future__ import annotations

import copy

import pytest
import torch
from pydantic import ValidationError
from torch import Tensor
from torch.testing import assert_close
from torchmd_plugins.barostats.montecarlo import MonteCarloBarostat

from tests.core.toys import HarmonicBonds, SoftPairs
from tests.plugins.dynamics.systems import water_state, water_system
from torchmd_core import (
    ConfigError,
    Potential,
    PotentialSum,
    SimulationError,
    State,
    parse_config,
)
from torchmd_core.units import BAR_TO_KCAL_MOL_A3, BOLTZMANN_KCAL_MOL_K


class Zero(Potential):
    """No interactions: an ideal gas of molecules."""

    def energy(self, state: State) -> Tensor:
        return state.positions.new_zeros(state.n_replicas)


def _barostat(system, **fields):
    return MonteCarloBarostat(
        MonteCarloBarostat.Config(**{"temperature_K": 300.0, **fields}), system
    )


@pytest.fixture
def waters():
    system = water_system(27)
    state = water_state(system, n_replicas=2, spacing=3.2)
    potential = PotentialSum(
        [
            HarmonicBonds(HarmonicBonds.Config(), system),
            SoftPairs(SoftPairs.Config(cutoff=3.0, strength=1.0), system),
        ],
        system=system,
    )
    return system, state, potential


def test_a_move_scales_molecule_centres_and_keeps_molecules_rigid(waters):
    system, state, _ = waters
    baro = _barostat(system)
    scale = torch.tensor([[1.05] * 3, [0.97] * 3], dtype=torch.float64)
    trial = baro._scaled(state, scale)
    assert_close(trial.box, state.box * scale[:, None, :])

    def inside(x: Tensor) -> Tensor:  # atom positions relative to their molecule centre
        return x.reshape(2, -1, 3, 3) - x.reshape(2, -1, 3, 3).mean(2, keepdim=True)

    assert_close(inside(trial.positions), inside(state.positions))
    centres = state.positions.reshape(2, -1, 3, 3).mean(2)
    assert_close(
        trial.positions.reshape(2, -1, 3, 3).mean(2), centres * scale[:, None, :]
    )


def test_the_state_after_a_move_caches_its_own_energy_and_forces(waters):
    system, state, potential = waters
    baro = _barostat(system, pressure_bar=1000.0)
    baro.seed(3, 2)
    with torch.no_grad():
        for _ in range(5):
            state = baro.apply(state, potential)
            energy, forces = potential.energy_and_forces(
                state.replace(positions=state.positions.clone())
            )
            assert_close(state.potential_energy, energy)
            assert_close(state.forces, forces)


@pytest.mark.parametrize("anisotropic", [False, True], ids=["isotropic", "anisotropic"])
def test_an_ideal_gas_samples_the_npt_volume_distribution(anisotropic):
    """Zero potential: p(V) ∝ V^N exp(−PV/kT), so <V> = (N + 1) kT / P."""
    n_mol, replicas, temperature, pressure = 64, 8, 300.0, 50.0
    system = water_system(n_mol, rigid=False)
    kT = BOLTZMANN_KCAL_MOL_K * temperature
    mean_volume = (n_mol + 1) * kT / (pressure * BAR_TO_KCAL_MOL_A3)
    state = water_state(
        system, n_replicas=replicas, spacing=(mean_volume / n_mol) ** (1 / 3)
    )
    baro = _barostat(
        system,
        pressure_bar=pressure,
        temperature_K=temperature,
        anisotropic=anisotropic,
    )
    baro.seed(1, replicas)
    volumes = []
    with torch.no_grad():
        for move in range(1000):
            state = baro.apply(state, Zero())
            if move >= 150:
                volumes.append(state.volume())
    v = torch.stack(volumes)
    # ~8 × 80 independent samples of a 12%-wide distribution: ~0.5% standard error.
    assert abs(float(v.mean()) / mean_volume - 1) < 0.03
    assert abs(float(v.std()) / (mean_volume / (n_mol + 1) ** 0.5) - 1) < 0.15
    rate = baro.acceptance_rate  # high at first, while the step grows from 1% of V
    assert rate is not None and bool(((rate > 0.15) & (rate < 0.97)).all())
    assert baro.volume_scale is not None
    assert bool((baro.volume_scale > 0.05 * state.volume()[:, None]).all())


def test_anisotropic_moves_change_one_axis_at_a_time(waters):
    system, state, _ = waters
    baro = _barostat(
        system,
        anisotropic=True,
        scale_axes=(False, True, False),
        pressure_bar=(1.0, 1.0, 1.0),
    )
    baro.seed(0, 2)
    with torch.no_grad():
        for _ in range(20):
            new = baro.apply(state, Zero())
            changed = (new.box - state.box).abs().sum(
                1
            ) > 0  # (R, 3) per Cartesian column
            assert not bool(changed[:, 0].any()) and not bool(changed[:, 2].any())
            state = new


def test_batched_replicas_equal_one_replica_runs(waters):
    system, state, potential = waters
    baro = _barostat(system, pressure_bar=500.0)
    baro.seed(10, 2)
    with torch.no_grad():
        batched = state
        for _ in range(6):
            batched = baro.apply(batched, potential)
        for r in range(2):
            alone_baro = _barostat(system, pressure_bar=500.0)
            alone_baro.seed(10 + r, 1)
            alone = state.select([r])
            for _ in range(6):
                alone = alone_baro.apply(alone, potential)
            assert_close(
                alone.positions, batched.positions[r : r + 1], rtol=1e-12, atol=1e-12
            )
            assert_close(alone.box, batched.box[r : r + 1], rtol=1e-12, atol=1e-12)


def test_a_run_continues_exactly_from_the_state_dict(waters):
    system, state, potential = waters
    baro = _barostat(system, pressure_bar=500.0)
    baro.seed(4, 2)
    with torch.no_grad():
        for _ in range(12):
            state = baro.apply(state, potential)
        saved = copy.deepcopy(baro.state_dict())
        first = state
        for _ in range(8):
            first = baro.apply(first, potential)
        again = _barostat(system, pressure_bar=500.0)
        again.seed(99, 2)
        again.load_state_dict(saved)
        second = state
        for _ in range(8):
            second = again.apply(second, potential)
    assert torch.equal(first.positions, second.positions) and torch.equal(
        first.box, second.box
    )


def test_step_size_adapts_as_openmm():
    system = water_system(2, rigid=False)
    baro = _barostat(system)
    volume = torch.tensor([1000.0, 1000.0], dtype=torch.float64)
    baro._start(volume)
    slot = torch.zeros(2, dtype=torch.int64)
    for _ in range(10):  # replica 0 accepts everything, replica 1 nothing
        baro._adapt(torch.tensor([True, False]), slot, volume)
    assert_close(
        baro.volume_scale[:, 0], torch.tensor([11.0, 10.0 / 1.1], dtype=torch.float64)
    )
    for _ in range(500):
        baro._adapt(torch.tensor([True, False]), slot, volume)
    assert float(baro.volume_scale[0, 0]) == pytest.approx(300.0)  # capped at 30% of V


def test_the_barostat_needs_a_box(waters):
    system, state, _ = waters
    baro = _barostat(system)
    baro.seed(0, 2)
    with pytest.raises(SimulationError, match="periodic box"):
        baro.apply(state.replace(box=None), Zero())


def test_barostat_config_is_validated():
    with pytest.raises(ValidationError):
        MonteCarloBarostat.Config(pressure_bar=1.0)  # temperature required
    with pytest.raises(ValidationError, match="anisotropic"):
        MonteCarloBarostat.Config(temperature_K=300.0, pressure_bar=(1.0, 1.0, 2.0))
    with pytest.raises(ValidationError, match="at least one axis"):
        MonteCarloBarostat.Config(
            temperature_K=300.0, anisotropic=True, scale_axes=(False, False, False)
        )
    assert MonteCarloBarostat.Config(temperature_K=300.0).interval == 25


def _config(integrator, barostat):
    return {
        "system": {"topology": "structure.prmtop"},
        "potentials": [{"kind": "amber"}],
        "integrator": integrator,
        "barostat": barostat,
        "steps": 10,
    }


def test_the_barostat_temperature_must_match_the_thermostat():
    langevin = {"kind": "langevin", "timestep_fs": 2.0, "temperature_K": 300.0}
    parse_config(_config(langevin, {"kind": "montecarlo", "temperature_K": 300.0}))
    with pytest.raises(ConfigError, match=r"differs from the integrator's 300\.0 K"):
        parse_config(_config(langevin, {"kind": "montecarlo", "temperature_K": 310.0}))
    with pytest.raises(ConfigError, match="thermostatted integrator"):
        parse_config(
            _config(
                {"kind": "verlet", "timestep_fs": 1.0},
                {"kind": "montecarlo", "temperature_K": 300.0},
            )
        )
