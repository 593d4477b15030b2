"""The functional API: energy_fn/forces_fn/integrate as pure functions that work with
torch.func.grad and torch.func.vmap (over parameter sets and over replicas)."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn
from torch.func import grad, vmap
from torch.testing import assert_close
from torchmd_plugins.dynamics.langevin import LangevinBAOAB
from torchmd_plugins.dynamics.verlet import VelocityVerlet

from tests.core.ff_systems import reference_potential, reference_state, system
from torchmd_core import ConfigError, Potential, State, build_pairs, replica_generators
from torchmd_core.functional import (
    energy_fn,
    forces_fn,
    integrate,
    parameters,
    standard_noise,
)
from torchmd_core.parameters import trainable
from torchmd_core.testing import TOLERANCES

TOL = TOLERANCES[torch.float64]


@pytest.fixture(scope="module")
def ala2() -> tuple[Potential, State]:
    return reference_potential("ala2_vacuum"), reference_state(
        "ala2_vacuum", n_replicas=3
    )


def test_energy_fn_equals_the_potential(ala2):
    pot, state = ala2
    energy = energy_fn(pot)
    assert_close(energy({}, state.positions, None), pot.energy(state), **TOL)
    params = parameters(pot, "nonbonded.epsilon", "charges")
    assert_close(energy(params, state.positions, None), pot.energy(state), **TOL)


def test_parameters_default_to_every_continuous_family(ala2):
    pot, _ = ala2
    names = set(parameters(pot))
    assert {"charges", "bonds.k", "nonbonded.epsilon", "torsions.phase"} <= names
    assert not any(n.endswith("periodicity") for n in names)
    with pytest.raises(ConfigError, match=r"no parameter named 'bond\.k'"):
        parameters(pot, "bond.k")


def test_grad_equals_autograd_through_trainable_parameters(ala2):
    pot, state = ala2
    energy = energy_fn(pot)
    names = ("nonbonded.epsilon", "charges", "torsions.k", "angles.theta0")
    params = parameters(pot, *names)
    grads = grad(lambda p: energy(p, state.positions, None).sum())(params)
    fresh = reference_potential("ala2_vacuum")
    trained = trainable(fresh, *names)
    fresh.energy(state).sum().backward()
    for name in names:
        assert_close(grads[name], trained[name].grad, **TOL)


def test_a_family_held_by_two_terms_is_replaced_in_both(ala2):
    pot, state = ala2
    energy = energy_fn(pot)
    zero = torch.zeros_like(system("ala2_vacuum").charges)
    terms = pot.energy_terms(state)
    expected = pot.energy(state) - terms["coulomb"] - terms["coulomb14"]
    assert_close(energy({"charges": zero}, state.positions, None), expected, **TOL)


def test_vmap_over_parameter_sets_equals_a_loop(ala2):
    pot, state = ala2
    energy = energy_fn(pot)
    base = parameters(pot, "torsions.k", "nonbonded.epsilon")
    scales = torch.tensor([0.8, 1.0, 1.3], dtype=torch.float64)
    batched = {name: scales[:, None] * value for name, value in base.items()}
    in_dims = ({name: 0 for name in batched}, None, None)
    together = vmap(energy, in_dims=in_dims)(batched, state.positions, None)  # (3, R)
    one_by_one = torch.stack(
        [
            energy({n: v[i] for n, v in batched.items()}, state.positions, None)
            for i in range(3)
        ]
    )
    assert_close(together, one_by_one, **TOL)


def test_vmap_over_positions_equals_the_batched_potential(ala2):
    pot, state = ala2
    energy = energy_fn(pot)
    frames = state.positions[:, None]  # (3, 1, N, 3): three one-replica states
    per_frame = vmap(energy, in_dims=(None, 0, None))({}, frames, None)
    assert_close(per_frame[:, 0], pot.energy(state), **TOL)


def test_vmap_with_a_cutoff_uses_fixed_pairs():
    pot = reference_potential("waterbox", "rf_periodic")
    state = reference_state("waterbox", "rf_periodic", n_replicas=2)
    pairs = build_pairs(state.positions, state.box, 8.0, pot.pair_exclusions())
    energy = energy_fn(pot, neighbors=pairs)
    assert_close(energy({}, state.positions, state.box), pot.energy(state), **TOL)
    q = parameters(pot, "charges")["charges"]
    charges = torch.stack([q, 0.9 * q])
    together = vmap(energy, in_dims=({"charges": 0}, None, None))(
        {"charges": charges}, state.positions, state.box
    )
    for i in range(2):
        assert_close(
            together[i], energy({"charges": charges[i]}, state.positions, state.box)
        )
    # grad alone also works without fixed pairs (the shared list is updated)
    g = grad(
        lambda c: energy_fn(pot)({"charges": c}, state.positions, state.box).sum()
    )(q)
    assert_close(
        g, grad(lambda c: energy({"charges": c}, state.positions, state.box).sum())(q)
    )


def test_forces_fn_equals_the_potentials_forces(ala2):
    pot, state = ala2
    forces = forces_fn(energy_fn(pot))
    with torch.no_grad():
        _, expected = pot.energy_and_forces(state)
    assert_close(forces({}, state.positions, None), expected, **TOL)


class Spring(Potential):
    """k |x_0 − x_1|², with k a plain nn.Parameter (a stand-in for network weights)."""

    def __init__(self) -> None:
        super().__init__()
        self.k = nn.Parameter(torch.tensor(2.0, dtype=torch.float64))

    def energy(self, state: State) -> Tensor:
        d = state.positions[:, 0] - state.positions[:, 1]
        return self.k * d.square().sum(-1)


def test_module_tensors_are_addressed_by_their_names():
    spring = Spring()
    x = torch.tensor([[[0.0, 0.0, 0.0], [1.0, 2.0, 2.0]]], dtype=torch.float64)
    energy = energy_fn(spring)
    assert parameters(spring) == {"k": spring.k.detach()}
    assert_close(
        energy({"k": torch.tensor(3.0, dtype=torch.float64)}, x, None),
        torch.tensor([27.0], dtype=torch.float64),
    )
    with pytest.raises(ConfigError, match="module tensor name"):
        energy({"q": torch.tensor(1.0)}, x, None)


def md_start(n_replicas: int = 2) -> tuple[Potential, State, Tensor]:
    pot = reference_potential("ala2_vacuum")
    state = reference_state("ala2_vacuum", n_replicas=n_replicas)
    g = torch.Generator().manual_seed(4)
    v = 5.0 * torch.randn(state.positions.shape, generator=g, dtype=torch.float64)
    return pot, state.replace(velocities=v), system("ala2_vacuum").masses


def test_integrate_reproduces_the_verlet_integrator():
    pot, state, masses = md_start()
    forces = forces_fn(energy_fn(pot))
    x, v, traj = integrate(
        forces, {}, state.positions, state.velocities, masses, 1.0, 20, trajectory=True
    )
    verlet = VelocityVerlet(
        VelocityVerlet.Config(timestep_fs=1.0), system("ala2_vacuum")
    )
    s = verlet.setup(state, pot)
    with torch.no_grad():
        for _ in range(20):
            s = verlet.step(s, pot)
    assert traj is not None and traj.shape == (20, *x.shape)
    assert_close(x, s.positions, rtol=1e-10, atol=1e-10)
    assert_close(v, s.velocities, rtol=1e-10, atol=1e-10)


def test_integrate_reproduces_the_langevin_integrator_with_its_noise():
    pot, state, masses = md_start()
    steps = 15
    gens = replica_generators(9, state.n_replicas)
    shape = state.positions.shape[1:]
    noise = torch.stack(  # what the integrator draws: replica r from generator r
        [
            torch.stack(
                [torch.randn(shape, generator=g, dtype=torch.float64) for g in gens]
            )
            for _ in range(steps)
        ]
    )
    x, v, _ = integrate(
        forces_fn(energy_fn(pot)),
        {},
        state.positions,
        state.velocities,
        masses,
        1.0,
        steps,
        friction_per_ps=5.0,
        temperature_K=300.0,
        noise=noise,
    )
    config = LangevinBAOAB.Config(
        timestep_fs=1.0, temperature_K=300.0, friction_per_ps=5.0
    )
    langevin = LangevinBAOAB(config, system("ala2_vacuum"))
    langevin.seed(9, state.n_replicas)
    s = langevin.setup(state, pot)
    with torch.no_grad():
        for _ in range(steps):
            s = langevin.step(s, pot)
    assert_close(x, s.positions, rtol=1e-10, atol=1e-10)
    assert_close(v, s.velocities, rtol=1e-10, atol=1e-10)


def test_grad_through_integrate_matches_central_differences_and_vmaps():
    pot, state, masses = md_start(n_replicas=1)
    forces = forces_fn(energy_fn(pot))
    noise = standard_noise(10, tuple(state.positions.shape), seed=2)

    def loss(k: Tensor) -> Tensor:
        x, _, _ = integrate(
            forces,
            {"torsions.k": k},
            state.positions,
            state.velocities,
            masses,
            1.0,
            10,
            friction_per_ps=2.0,
            temperature_K=300.0,
            noise=noise,
        )
        return (x[:, 0] - x[:, 21]).square().sum()

    k0 = parameters(pot, "torsions.k")["torsions.k"]
    g = grad(loss)(k0)
    h = 1e-6
    for i in torch.topk(g.abs(), 2).indices.tolist():
        e = torch.zeros_like(k0)
        e[i] = h
        numeric = (loss(k0 + e) - loss(k0 - e)) / (2 * h)
        assert float(g[i]) == pytest.approx(float(numeric), rel=1e-5)
    sets = torch.stack([k0, 1.2 * k0])
    assert_close(vmap(grad(loss))(sets), torch.stack([g, grad(loss)(1.2 * k0)]), **TOL)


def test_integrate_checks_its_noise():
    pot, state, masses = md_start()
    forces = forces_fn(energy_fn(pot))
    with pytest.raises(ValueError, match="needs temperature_K and noise"):
        integrate(forces, {}, state.positions, state.velocities, masses, 1.0, 2,
                  friction_per_ps=1.0)  # fmt: skip
    with pytest.raises(ValueError, match="noise must be"):
        integrate(forces, {}, state.positions, state.velocities, masses, 1.0, 2,
                  friction_per_ps=1.0, temperature_K=300.0,
                  noise=torch.zeros(1, 2, 22, 3))  # fmt: skip
