"""Reweighting estimators: the harmonic oscillator's exact answers, finite differences
of the (deterministic) reweighted estimator, the fluctuation formula three ways, and
the Kish effective sample size."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn
from torch.func import jacrev
from torch.testing import assert_close

from tests.core.ff_systems import reference_potential, reference_state
from torchmd_core import Potential, State
from torchmd_core.functional import energy_fn, parameters
from torchmd_core.parameters import trainable
from torchmd_core.reweighting import (
    EnsembleReweighting,
    fluctuation_gradient,
    kish_effective_sample_size,
    reweighted_average,
    reweighting_weights,
)
from torchmd_core.units import BOLTZMANN_KCAL_MOL_K

T = 300.0
KT = BOLTZMANN_KCAL_MOL_K * T


class Harmonic(Potential):
    """E = k x² along x for every atom (k trainable, kcal/mol/Å²)."""

    def __init__(self, k: float) -> None:
        super().__init__()
        self.k = nn.Parameter(torch.tensor(k, dtype=torch.float64))

    def energy(self, state: State) -> Tensor:
        return self.k * state.positions[..., 0].square().sum(-1)


def oscillator_frames(k: float, n: int = 200_000, seed: int = 0) -> Tensor:
    """(n, 1, 3) exact canonical samples of E = k x²: x ~ N(0, kT/2k)."""
    g = torch.Generator().manual_seed(seed)
    frames = torch.zeros(n, 1, 3, dtype=torch.float64)
    frames[:, 0, 0] = math.sqrt(KT / (2 * k)) * torch.randn(
        n, generator=g, dtype=torch.float64
    )
    return frames


def x_squared(frames: Tensor) -> Tensor:
    return frames[:, 0, 0].square()


def test_harmonic_oscillator_mean_and_gradient_are_exact():
    k0 = 2.0
    pot = Harmonic(k0)
    ensemble = EnsembleReweighting(pot, oscillator_frames(k0), T, batch_size=200_000)
    average = ensemble.average(x_squared)
    average.value.backward()
    # <x²> = kT/2k and d<x²>/dk = −kT/2k² (statistical errors ~0.3% and ~0.6%)
    assert float(average.value.detach()) == pytest.approx(KT / (2 * k0), rel=0.01)
    assert pot.k.grad is not None
    assert float(pot.k.grad) == pytest.approx(-KT / (2 * k0**2), rel=0.02)
    assert average.effective_samples == pytest.approx(200_000)


def test_reweighting_to_another_force_constant_and_its_effective_sample_size():
    k0, k1 = 2.0, 2.3
    pot = Harmonic(k0)
    ensemble = EnsembleReweighting(pot, oscillator_frames(k0), T, batch_size=200_000)
    with torch.no_grad():
        pot.k.fill_(k1)
    average = ensemble.average(x_squared)
    assert float(average.value.detach()) == pytest.approx(KT / (2 * k1), rel=0.01)
    # two centred Gaussians of widths s0, s1: ESS/n → 1 / E0[(p1/p0)²], with
    # E0[(p1/p0)²] = (s0 / s1²) / √(2/s1² − 1/s0²)
    s0, s1 = math.sqrt(KT / (2 * k0)), math.sqrt(KT / (2 * k1))
    second_moment = s0 / s1**2 / math.sqrt(2.0 / s1**2 - 1.0 / s0**2)
    assert average.effective_fraction == pytest.approx(1.0 / second_moment, rel=0.01)
    assert not ensemble.needs_resampling()
    with torch.no_grad():
        pot.k.fill_(6.0)
    far = ensemble.average(x_squared)
    assert far.effective_fraction < 0.9 and ensemble.needs_resampling()


def test_autograd_of_the_estimator_equals_its_finite_differences():
    """Away from θ0 the estimator is a deterministic function of θ: exact agreement."""
    pot = Harmonic(2.0)
    ensemble = EnsembleReweighting(
        pot, oscillator_frames(2.0, n=5000), T, batch_size=5000
    )
    with torch.no_grad():
        pot.k.fill_(2.2)
    ensemble.average(x_squared).value.backward()
    assert pot.k.grad is not None
    h = 1e-6
    values = []
    for k in (2.2 + h, 2.2 - h):
        with torch.no_grad():
            pot.k.fill_(k)
            values.append(float(ensemble.average(x_squared).value.detach()))
    assert float(pot.k.grad) == pytest.approx(
        (values[0] - values[1]) / (2 * h), rel=1e-7
    )


def ala2_frames(n: int = 48) -> Tensor:
    """Thermal-looking frames of alanine dipeptide: the reference structure jittered."""
    x = reference_state("ala2_vacuum").positions
    g = torch.Generator().manual_seed(5)
    return x + 0.05 * torch.randn((n, *x.shape[1:]), generator=g, dtype=x.dtype)


def end_to_end(frames: Tensor) -> Tensor:
    return (frames[:, 0] - frames[:, 21]).norm(dim=-1)


def test_fluctuation_formula_three_ways_on_alanine_dipeptide():
    pot = reference_potential("ala2_vacuum")
    names = ("torsions.k", "nonbonded.epsilon")
    params = trainable(pot, *names)
    frames = ala2_frames()
    ensemble = EnsembleReweighting(pot, frames, T, batch_size=16)
    o = end_to_end(frames)
    # 1. autograd through the reweighted average at θ0
    by_autograd = torch.autograd.grad(ensemble.average(o).value, list(params.values()))
    # 2. the covariance surrogate
    by_surrogate = ensemble.fluctuation_gradients(o, params)
    # 3. the formula from per-frame ∂U/∂θ (a Jacobian by torch.func)
    energy = energy_fn(pot)
    theta = parameters(pot, *names)
    jac = jacrev(lambda p: energy(p, frames, None))(theta)
    by_formula = [fluctuation_gradient(o, jac[name], KT) for name in names]
    for a, b, c in zip(by_autograd, by_surrogate, by_formula, strict=True):
        assert_close(b, a, rtol=1e-10, atol=1e-12)
        assert_close(c, a, rtol=1e-10, atol=1e-12)


def test_an_observable_that_depends_on_the_parameters_adds_its_own_gradient():
    pot = Harmonic(2.0)
    frames = oscillator_frames(2.0, n=2000)
    ensemble = EnsembleReweighting(pot, frames, T, batch_size=2000)
    ensemble.average(lambda f: pot.k * x_squared(f)).value.backward()  # <k x²> = kT/2
    o = x_squared(frames)
    du = o[:, None]  # ∂U/∂k = x²
    expected = fluctuation_gradient(pot.k.detach() * o, du, KT, observable_gradients=du)
    assert pot.k.grad is not None
    assert_close(pot.k.grad.reshape(1), expected, rtol=1e-10, atol=1e-12)
    assert abs(float(pot.k.grad)) < 0.05 * float(o.mean())  # d<kx²>/dk = 0 exactly


def test_weights_and_effective_sample_size():
    u_ref = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    w = reweighting_weights(u_ref + 0.5, u_ref, KT)  # a constant shift changes nothing
    assert_close(w, torch.full((3,), 1 / 3, dtype=torch.float64))
    assert float(kish_effective_sample_size(w)) == pytest.approx(3.0)
    assert float(kish_effective_sample_size(torch.tensor([0.0, 5.0, 0.0]))) == 1.0
    average = reweighted_average(torch.tensor([[1.0, 2.0]] * 3, dtype=torch.float64),
                                 u_ref, u_ref, KT)  # fmt: skip
    assert_close(average.value, torch.tensor([1.0, 2.0], dtype=torch.float64))
    assert average.n_frames == 3 and average.effective_fraction == pytest.approx(1.0)


def test_frames_must_be_positions():
    with pytest.raises(ValueError, match="frames must be"):
        EnsembleReweighting(Harmonic(1.0), torch.zeros(4, 3), T)
