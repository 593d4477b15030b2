"""Temperature replica exchange: the Metropolis criterion, detailed balance on a
two-state system, per-replica baths, outputs and exact restart."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import pytest
import torch
from pydantic import Field
from torch import Tensor

from tests.plugins.reporters.conftest import write_config
from torchmd_core import (
    ConfigError,
    Integrator,
    IntegratorConfig,
    Potential,
    PotentialConfig,
    Simulation,
    State,
    System,
    load_checkpoint,
    load_config,
    save_checkpoint,
    units,
)
from torchmd_core.exchange import ReplicaExchange, mean_acceptance
from torchmd_core.testing import random_state, toy_system

KB = units.BOLTZMANN_KCAL_MOL_K
GAP = 1.0  # kcal/mol between the two states
LADDER = (300.0, 450.0, 675.0, 1000.0)


# -- a two-state system ----------------------------------------------------------------


class TwoLevel(Potential):
    """E = gap · x, where x = positions[:, 0, 0] is 0 (state A) or 1 (state B)."""

    class Config(PotentialConfig):
        kind: Literal["test.two_level"] = "test.two_level"
        gap: float = Field(GAP, description="Energy of state B, kcal/mol.")

    def __init__(self, config: Config, system: System) -> None:
        super().__init__(config, system)
        self.gap = config.gap

    def energy(self, state: State) -> Tensor:
        return self.gap * state.positions[:, 0, 0]


class TwoStateMonteCarlo(Integrator):
    """Each step proposes A <-> B with probability ``flip``, accepted by Metropolis at
    the replica's own temperature: a reversible chain for each bath."""

    class Config(IntegratorConfig):
        kind: Literal["test.two_state"] = "test.two_state"
        timestep_fs: float = Field(1.0, gt=0, description="Nominal step, fs.")
        temperature_K: float = Field(300.0, gt=0, description="Default bath, K.")
        flip: float = Field(0.1, gt=0, le=1, description="Proposal probability.")

    def __init__(self, config: Config, system: System) -> None:
        super().__init__(config, system)
        self.flip = config.flip
        self.temperatures: Tensor | None = None

    def set_replica_temperatures(self, temperatures_K: Tensor | None) -> None:
        self.temperatures = temperatures_K

    def step(self, state: State, potential: Potential) -> State:
        u = torch.stack(
            [torch.rand(2, generator=g, dtype=torch.float64) for g in self.generators]
        )
        temps = self.temperatures
        assert temps is not None
        x = state.positions[:, 0, 0]
        flipped = state.positions.clone()
        flipped[:, 0, 0] = 1 - x
        energy = potential.energy(state)
        delta = potential.energy(state.replace(positions=flipped)) - energy
        accept = (u[:, 0] < self.flip) & (
            u[:, 1] < torch.exp(-delta.clamp(min=0) / (KB * temps))
        )
        positions = torch.where(accept[:, None, None], flipped, state.positions)
        new = state.replace(
            positions=positions, step=state.step + 1, time_ps=state.time_ps + 1e-3
        )
        return new.replace(potential_energy=potential.energy(new))


def boltzmann_upper(temperature: float) -> float:
    """Probability of state B at ``temperature``."""
    w = math.exp(-GAP / (KB * temperature))
    return w / (1 + w)


def expected_acceptance(ti: float, tj: float) -> float:
    levels = torch.tensor([0.0, GAP], dtype=torch.float64)
    pi = torch.tensor([1 - boltzmann_upper(ti), boltzmann_upper(ti)])
    pj = torch.tensor([1 - boltzmann_upper(tj), boltzmann_upper(tj)])
    return mean_acceptance(1 / (KB * ti), 1 / (KB * tj), levels, pi, pj)


def two_state_simulation(
    n_replicas: int = 4, interval: int = 1, file: Path | None = None
) -> Simulation:
    system = toy_system(2, chain=False)
    state = State(positions=torch.zeros(n_replicas, 2, 3, dtype=torch.float64))
    exchange = ReplicaExchange(LADDER[:n_replicas], interval, seed=5, file=file)
    integrator = TwoStateMonteCarlo(TwoStateMonteCarlo.Config(), system)
    reporters = exchange.reporters(system)
    return Simulation(
        system,
        TwoLevel(TwoLevel.Config(), system),
        integrator,
        reporters,
        state=state,
        seed=11,
        exchange=exchange,
    )


def batch_means_error(samples: Tensor, n_batches: int = 20) -> Tensor:
    """Standard error of the mean of correlated ``samples`` (T, ...) by batch means."""
    usable = samples.shape[0] // n_batches * n_batches
    means = samples[:usable].double().reshape(n_batches, -1, *samples.shape[1:]).mean(1)
    return means.std(0) / math.sqrt(n_batches)


# -- the criterion ---------------------------------------------------------------------


def test_swaps_follow_the_metropolis_criterion():
    exchange = ReplicaExchange(LADDER, interval=1, seed=3)
    beta = 1 / (KB * torch.tensor(LADDER, dtype=torch.float64))
    for round_ in range(40):
        energies = (
            torch.randn(
                4, dtype=torch.float64, generator=torch.Generator().manual_seed(round_)
            )
            * 3
        )
        twin = torch.Generator()
        twin.set_state(exchange.generator.get_state())
        occupant = exchange.replica_in_slot()
        lower = torch.arange(round_ % 2, 3, 2)
        u = torch.rand(len(lower), generator=twin, dtype=torch.float64)
        swapped = exchange.attempt(energies)
        for k, uk in zip(lower.tolist(), u.tolist(), strict=True):
            i, j = occupant[k], occupant[k + 1]
            p = min(
                1.0, math.exp((beta[k] - beta[k + 1]) * (energies[i] - energies[j]))
            )
            assert swapped[k] == int(uk < p)
            assert exchange.replica_in_slot()[k] == (j if uk < p else i)
        others = [k for k in range(3) if k not in lower.tolist()]
        assert all(swapped[k] == -1 for k in others)  # even and odd pairs alternate


def test_a_downhill_swap_is_always_accepted():
    exchange = ReplicaExchange((300.0, 600.0), interval=1)
    # The hot replica has the lower energy: swapping lowers both reduced energies.
    assert exchange.attempt(torch.tensor([5.0, -5.0])).tolist() == [1]
    assert exchange.replica_in_slot().tolist() == [1, 0]
    assert exchange.bath_temperatures().tolist() == [600.0, 300.0]


def test_the_ladder_must_increase():
    with pytest.raises(ValueError, match="increasing"):
        ReplicaExchange((300.0, 300.0), interval=1)


def test_detailed_balance_of_a_two_state_ladder():
    """Slow two-state Monte Carlo at each bath, an exchange round after every step:
    the stationary distribution is Boltzmann in every slot, and the acceptance of each
    pair is the analytic mean of min(1, exp(Δβ ΔU)) over independent Boltzmann
    states, within the statistical error."""
    exchange = ReplicaExchange(LADDER, interval=1, seed=1)
    gen = torch.Generator().manual_seed(2)
    beta = 1 / (KB * torch.tensor(LADDER, dtype=torch.float64))
    x = [0.0] * 4  # state of each replica
    n = 8000
    u = torch.rand(n, 2, 4, generator=gen, dtype=torch.float64).tolist()
    upper = torch.empty(n, 4, dtype=torch.float64)  # state in each slot
    accepted = torch.full((n, 3), float("nan"), dtype=torch.float64)
    for t in range(n):
        for r, slot in enumerate(exchange.slot.tolist()):  # the Monte Carlo moves
            uphill = GAP * (1 - 2 * x[r]) * float(beta[slot])
            if u[t][0][r] < 0.1 and u[t][1][r] < math.exp(-max(uphill, 0.0)):
                x[r] = 1 - x[r]
        swapped = exchange.attempt(GAP * torch.tensor(x, dtype=torch.float64))
        upper[t] = torch.tensor(x, dtype=torch.float64)[exchange.replica_in_slot()]
        accepted[t] = torch.where(swapped < 0, float("nan"), swapped.double())
    occupancy = upper.mean(0)
    expected = torch.tensor([boltzmann_upper(T) for T in LADDER], dtype=torch.float64)
    error = batch_means_error(upper)
    assert bool(((occupancy - expected).abs() < 4 * error + 1e-3).all()), (
        occupancy,
        expected,
        error,
    )
    for k in range(3):
        samples = accepted[~accepted[:, k].isnan(), k]
        rate = float(samples.mean())
        assert abs(rate - float(exchange.acceptance_rates()[k])) < 1e-12
        err = float(batch_means_error(samples))
        analytic = expected_acceptance(LADDER[k], LADDER[k + 1])
        assert abs(rate - analytic) < 4 * err + 1e-3, (k, rate, analytic, err)


def test_two_state_ladder_through_the_run_loop(tmp_path):
    """The same through Simulation.run: the integrator's per-replica baths follow the
    swaps, acceptance matches the analytic value, the log records every round."""
    sim = two_state_simulation(file=tmp_path / "exchange.csv")
    sim.run(2000)
    exchange = sim.exchange
    assert exchange is not None
    assert torch.equal(sim.integrator.temperatures, exchange.bath_temperatures())  # type: ignore[attr-defined]
    for k in range(3):
        analytic = expected_acceptance(LADDER[k], LADDER[k + 1])
        # 1000 correlated attempts per pair: about 0.013 standard error.
        assert abs(float(exchange.acceptance_rates()[k]) - analytic) < 0.06
    rows = (tmp_path / "exchange.csv").read_text().splitlines()
    assert rows[0] == (
        "step,time_ps,replica_at_300K,replica_at_450K,replica_at_675K,replica_at_1000K,"
        "swapped_300K_450K,swapped_450K_675K,swapped_675K_1000K"
    )
    assert len(rows) == 1 + 2000
    last = rows[-1].split(",")
    assert (
        last[0] == "2000"
        and [int(r) for r in last[2:6]] == exchange.replica_in_slot().tolist()
    )
    swaps = torch.tensor(
        [[float(v) if v else float("nan") for v in r.split(",")[6:]] for r in rows[1:]]
    )
    counted = torch.nansum(swaps, 0)
    assert counted.tolist() == exchange.accepted.double().tolist()


def test_exchange_state_and_log_continue_exactly_from_a_checkpoint(tmp_path):
    whole = two_state_simulation(file=tmp_path / "whole.csv")
    whole.run(300)
    first = two_state_simulation(file=tmp_path / "parts.csv")
    first.run(120)
    save_checkpoint(first, tmp_path / "parts.chk")
    first.run(30)  # lines written after the checkpoint are dropped when resuming
    second = two_state_simulation(file=tmp_path / "parts.csv")
    load_checkpoint(second, tmp_path / "parts.chk")
    assert second.exchange.n_rounds == 120  # type: ignore[union-attr]
    second.run(180, resume=True)
    assert (tmp_path / "parts.csv").read_text() == (tmp_path / "whole.csv").read_text()
    assert torch.equal(second.state.positions, whole.state.positions)
    assert torch.equal(second.exchange.accepted, whole.exchange.accepted)  # type: ignore[union-attr]


# -- with Langevin dynamics and a config -----------------------------------------------


def exchange_config(folder: Path, **extra: Any) -> Path:
    return write_config(
        folder,
        [{"kind": "csv", "file": "log.csv", "interval": 10, "energy_terms": False}],
        steps=40,
        n_replicas=3,
        integrator={"kind": "langevin", "timestep_fs": 1.0, "temperature_K": 300.0},
        exchange={
            "temperatures_K": [300.0, 330.0, 363.0],
            "interval": 5,
            "file": "exchange.csv",
        },
        **extra,
    )


def test_langevin_baths_follow_the_swaps_and_velocities_are_rescaled(
    tmp_path, toy_registry
):
    sim = Simulation.from_config(load_config(exchange_config(tmp_path)))
    exchange = sim.exchange
    assert exchange is not None
    # Replica r starts at temperatures_K[r], velocities drawn there.
    assert sim.integrator.replica_temperatures_K.tolist() == [300.0, 330.0, 363.0]  # type: ignore[attr-defined]
    sim.run(4)
    state = sim.state
    energies = torch.tensor(
        [10.0, -10.0, 0.0], dtype=state.dtype
    )  # replica 0 <-> 1 goes downhill
    sim.exchange.n_rounds = 0  # type: ignore[union-attr]
    new = exchange.apply(state.replace(potential_energy=energies), sim)
    assert exchange.bath_temperatures().tolist() == [330.0, 300.0, 363.0]
    assert sim.integrator.replica_temperatures_K.tolist() == [330.0, 300.0, 363.0]  # type: ignore[attr-defined]
    scale = torch.tensor(
        [math.sqrt(330 / 300), math.sqrt(300 / 330), 1.0], dtype=state.dtype
    )
    torch.testing.assert_close(new.velocities, state.velocities * scale[:, None, None])


def test_csv_reports_each_replica_bath(tmp_path, toy_registry):
    from torchmd_core.runner import run_config

    assert run_config(exchange_config(tmp_path), quiet=True) == 0
    rows = [line.split(",") for line in (tmp_path / "log.csv").read_text().splitlines()]
    column = rows[0].index("bath_temperature_K")
    baths = {(r[0], r[2]): float(r[column]) for r in rows[1:]}
    log = [
        line.split(",") for line in (tmp_path / "exchange.csv").read_text().splitlines()
    ]
    at_step_40 = [int(r) for r in log[-1][2:5]]  # replica at each temperature
    for slot, replica in enumerate(at_step_40):
        assert baths[("40", str(replica))] == [300.0, 330.0, 363.0][slot]


def test_langevin_with_one_bath_per_replica_equal_to_its_own_is_unchanged():
    from torchmd_plugins.dynamics.langevin import LangevinBAOAB

    system = toy_system(8)
    state = random_state(system, 3, seed=1)
    pot = TwoLevel(TwoLevel.Config(gap=0.0), system)
    cfg = LangevinBAOAB.Config(timestep_fs=1.0, temperature_K=310.0)
    plain, per_replica = LangevinBAOAB(cfg, system), LangevinBAOAB(cfg, system)
    for integ in (plain, per_replica):
        integ.seed(4, 3)
    per_replica.set_replica_temperatures(torch.full((3,), 310.0))
    a = b = state
    for _ in range(5):
        a, b = plain.step(a, pot), per_replica.step(b, pot)
    assert torch.equal(a.velocities, b.velocities)
    per_replica.set_replica_temperatures(None)
    assert per_replica.replica_temperatures_K is None


def test_langevin_replicas_equilibrate_at_their_own_temperatures():
    """Free particles (no forces): each replica's kinetic temperature goes to its
    bath."""
    from torchmd_plugins.dynamics.langevin import LangevinBAOAB

    system = toy_system(40, chain=False)
    state = random_state(system, 3, seed=2, temperature_K=300.0)
    pot = TwoLevel(TwoLevel.Config(gap=0.0), system)
    integ = LangevinBAOAB(
        LangevinBAOAB.Config(
            timestep_fs=2.0, temperature_K=300.0, friction_per_ps=50.0
        ),
        system,
    )
    integ.seed(0, 3)
    baths = torch.tensor([100.0, 300.0, 900.0], dtype=torch.float64)
    integ.set_replica_temperatures(baths)
    samples = []
    with torch.no_grad():
        for t in range(400):
            state = integ.step(state, pot)
            if t >= 100:
                samples.append(
                    2
                    * (
                        0.5
                        * units.AMU_A2_PS2_TO_KCAL_MOL
                        * (system.masses[None, :, None] * state.velocities**2).sum(
                            (1, 2)
                        )
                    )
                    / (3 * 40 * KB)
                )
    mean = torch.stack(samples).mean(0)
    # 300 correlated samples of 120 degrees of freedom: a few percent.
    torch.testing.assert_close(
        mean / baths, torch.ones(3, dtype=torch.float64), atol=0.06, rtol=0
    )
    # and the random streams with the baths continue exactly from a checkpoint
    twin = LangevinBAOAB(integ.config, system)
    twin.seed(0, 3)
    twin.load_state_dict(integ.state_dict())
    assert torch.equal(twin.replica_temperatures_K, baths)
    assert torch.equal(
        integ.step(state, pot).velocities, twin.step(state, pot).velocities
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"exchange": {"temperatures_K": [300.0, 310.0], "interval": 5}},
            "2 temperatures for n_replicas: 3",
        ),
        (
            {"exchange": {"temperatures_K": [300.0, 290.0, 310.0], "interval": 5}},
            "increase strictly",
        ),
        (
            {"exchange": {"temperatures_K": [300.0, 310.0, 320.0], "interval": 0}},
            "interval: must be > 0",
        ),
    ],
    ids=["length", "order", "interval"],
)
def test_bad_exchange_settings_are_config_errors(
    tmp_path, toy_registry, change, message
):
    path = write_config(tmp_path, [], n_replicas=3, **change)
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_exchange_needs_a_heat_bath(tmp_path, toy_registry):
    path = write_config(
        tmp_path,
        [],
        n_replicas=2,
        exchange={"temperatures_K": [300.0, 330.0], "interval": 5},
    )
    with pytest.raises(ConfigError, match=r"toy\.verlet' has no heat bath"):
        Simulation.from_config(load_config(path))
