from __future__ import annotations

import pytest
import torch

from tests.core.toys import HarmonicBonds, SoftPairs
from torchmd_core import PotentialSum, State
from torchmd_core.testing import TOLERANCES, check_potential, random_state, toy_system


@pytest.fixture
def system():
    return toy_system(16)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize(
    "box",
    [None, 14.0, (13.0, 14.0, 15.0, 75.0, 85.0, 95.0)],
    ids=["vacuum", "cubic", "triclinic"],
)
def test_toy_terms_pass_the_conformance_kit(system, dtype, box):
    state = random_state(system, 3, box=box, dtype=dtype)
    check_potential(HarmonicBonds(HarmonicBonds.Config(), system), state)
    check_potential(SoftPairs(SoftPairs.Config(), system), state)


def test_sum_of_potentials_is_a_potential(system):
    a, b = (
        HarmonicBonds(HarmonicBonds.Config(), system),
        SoftPairs(SoftPairs.Config(), system),
    )
    total = a + b
    assert isinstance(total, PotentialSum) and total.cutoff == 4.0
    state = random_state(system, 2, box=14.0)
    torch.testing.assert_close(total.energy(state), a.energy(state) + b.energy(state))
    assert total.term_names == ("toy.bonds", "toy.pairs")
    check_potential(total, state, config=False)
    nested = total + HarmonicBonds(HarmonicBonds.Config(scale=2.0), system)
    assert len(nested.potentials) == 3
    assert nested.term_names == ("toy.bonds", "toy.pairs", "toy.bonds_2")


def test_shared_neighbor_list_is_reused_across_evaluations(system):
    total = PotentialSum([SoftPairs(SoftPairs.Config(), system)], system=system)
    state = random_state(system, 2, box=14.0)
    for k in range(5):
        total.energy_and_forces(state.replace(positions=state.positions + 0.01 * k))
    assert total.neighbor_list is not None and total.neighbor_list.n_builds == 1


def test_forces_are_detached_under_no_grad_and_keep_the_graph_otherwise(system):
    pot = HarmonicBonds(HarmonicBonds.Config(), system)
    x = random_state(system, 1).positions.clone().requires_grad_(True)
    state = State(positions=x * 1.0)
    with torch.no_grad():
        _, f = pot.energy_and_forces(state)
    assert not f.requires_grad
    _, f = pot.energy_and_forces(state)
    assert f.requires_grad
    # d/dx of sum(F · F) exists: second derivatives flow through forces.
    (g,) = torch.autograd.grad(f.square().sum(), x)
    assert torch.isfinite(g).all() and g.abs().sum() > 0


def test_trainable_parameter_gets_gradient_through_forces(system):
    pot = HarmonicBonds(HarmonicBonds.Config(), system)
    pot.k = torch.nn.Parameter(pot.k.clone())
    state = random_state(system, 1)
    _, f = pot.energy_and_forces(state)
    loss = f.square().sum()
    loss.backward()
    assert pot.k.grad is not None and pot.k.grad.abs().sum() > 0


def test_autograd_forces_match_finite_differences_in_double(system):
    pot = SoftPairs(SoftPairs.Config(), system)
    state = random_state(system, 1, box=14.0)
    _, f = pot.energy_and_forces(state)
    h = 1e-6
    plus = state.positions.clone()
    plus[0, 3, 1] += h
    minus = state.positions.clone()
    minus[0, 3, 1] -= h
    fd = -(
        pot.energy(state.replace(positions=plus))
        - pot.energy(state.replace(positions=minus))
    ) / (2 * h)
    torch.testing.assert_close(f[0, 3, 1], fd[0], rtol=1e-6, atol=1e-7)


def test_float32_and_float64_agree(system):
    pot = SoftPairs(SoftPairs.Config(), system) + HarmonicBonds(
        HarmonicBonds.Config(), system
    )
    s64 = random_state(system, 2, box=14.0)
    e64 = pot.to(torch.float64).energy(s64)
    e32 = pot.to(torch.float32).energy(s64.to(dtype=torch.float32))
    torch.testing.assert_close(e32.double(), e64, **TOLERANCES[torch.float32])
