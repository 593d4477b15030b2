"""Ensemble averages as differentiable functions of parameters, by reweighting.

Frames x_i sampled at parameters θ0 (canonical ensemble at temperature T, kT = k_B T)
give the average of an observable O at nearby θ without new sampling (Zwanzig; the
DiffTRe method of Thaler & Zavadlav, Nat. Commun. 12, 6884 (2021)):

    <O>_θ ≈ Σ_i w_i O_i(θ),    w_i ∝ exp(−(U_θ(x_i) − U_θ0(x_i)) / kT),   Σ w_i = 1

which is differentiable in θ through U_θ (and through O if it depends on θ). At θ = θ0
its gradient is the fluctuation formula

    d<O>/dθ = −β (<O ∂U/∂θ> − <O><∂U/∂θ>) + <∂O/∂θ>,    β = 1/kT

(:func:`fluctuation_gradient` evaluates it from per-frame derivatives). The further θ
moves from θ0 the fewer frames carry the weight; the Kish effective sample size
ESS = (Σ w)² / Σ w² (between 1 and the number of frames) says how many: resample (run
new dynamics at the current θ) when it falls below a fraction of the frames, DiffTRe
uses 0.9.

Frames are positions ``(F, N, 3)`` (several replicas' trajectories concatenated);
energies are evaluated in batches of frames, each batch as the replicas of one state.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from torchmd_core.potential import Potential
from torchmd_core.state import State
from torchmd_core.units import BOLTZMANN_KCAL_MOL_K

__all__ = [
    "EnsembleReweighting",
    "Reweighted",
    "fluctuation_gradient",
    "kish_effective_sample_size",
    "reweighted_average",
    "reweighting_weights",
]


def kish_effective_sample_size(weights: Tensor) -> Tensor:
    """(Σ w)² / Σ w² over the last dimension (weights need not be normalised)."""
    w = weights.detach()
    return w.sum(-1).square() / w.square().sum(-1)


def reweighting_weights(
    energies: Tensor, reference_energies: Tensor, kT: float
) -> Tensor:
    """(F,) normalised weights ∝ exp(−(U − U_ref)/kT), differentiable in ``energies``.

    Args:
        energies: (F,) U_θ(x_i), kcal/mol.
        reference_energies: (F,) U_θ0(x_i), kcal/mol (the ensemble's own).
        kT: kcal/mol.
    """
    return torch.softmax(-(energies - reference_energies.detach()) / kT, dim=-1)


@dataclass(frozen=True, eq=False)
class Reweighted:
    """A reweighted ensemble average.

    Attributes:
        value: <O>_θ (the observable's shape without the frame dimension), with its
            graph to θ.
        weights: (F,) normalised weights (with graph).
        effective_samples: Kish ESS, a plain float between 1 and F.
        n_frames: F.
    """

    value: Tensor
    weights: Tensor
    effective_samples: float
    n_frames: int

    @property
    def effective_fraction(self) -> float:
        """ESS / F: 1 at θ0, falling as θ moves away."""
        return self.effective_samples / self.n_frames


def reweighted_average(
    observables: Tensor, energies: Tensor, reference_energies: Tensor, kT: float
) -> Reweighted:
    """Σ_i w_i O_i with w ∝ exp(−(U_θ − U_θ0)/kT): differentiable in U_θ and O.

    Args:
        observables: (F, ...) O at each frame.
        energies: (F,) U_θ at each frame, with its graph to θ.
        reference_energies: (F,) U_θ0, kcal/mol.
        kT: kcal/mol.
    """
    w = reweighting_weights(energies, reference_energies, kT)
    value = torch.tensordot(w.to(observables.dtype), observables, dims=([0], [0]))
    return Reweighted(
        value=value,
        weights=w,
        effective_samples=float(kish_effective_sample_size(w)),
        n_frames=int(w.shape[0]),
    )


def fluctuation_gradient(
    observables: Tensor,
    energy_gradients: Tensor,
    kT: float,
    observable_gradients: Tensor | None = None,
    weights: Tensor | None = None,
) -> Tensor:
    """d<O>/dθ = −β(<O ∂U/∂θ> − <O><∂U/∂θ>) + <∂O/∂θ>, from per-frame values.

    Args:
        observables: (F,) or (F, K) O at each frame.
        energy_gradients: (F, P) ∂U/∂θ at each frame, kcal/mol per unit of θ.
        kT: kcal/mol.
        observable_gradients: (F, P) or (F, K, P) ∂O/∂θ, when O depends on θ.
        weights: (F,) frame weights (default: uniform).

    Returns:
        (P,) or (K, P).
    """
    n = observables.shape[0]
    w = (
        torch.full((n,), 1.0 / n, dtype=observables.dtype, device=observables.device)
        if weights is None
        else weights / weights.sum()
    )
    o = observables.reshape(n, -1)  # (F, K)
    o_mean = w @ o  # (K,)
    du_mean = w @ energy_gradients  # (P,)
    covariance = torch.einsum("f,fk,fp->kp", w, o - o_mean, energy_gradients - du_mean)
    out = -covariance / kT
    if observable_gradients is not None:
        out = out + torch.einsum(
            "f,fkp->kp", w, observable_gradients.reshape(n, o.shape[1], -1)
        )
    return out.reshape(*observables.shape[1:], energy_gradients.shape[-1])


class EnsembleReweighting:
    """Frames sampled with a potential, reweighted to its current parameters (DiffTRe).

    Example::

        ensemble = EnsembleReweighting(potential, frames, temperature_K=300.0)
        for _ in range(iterations):
            average = ensemble.average(observable)     # graph to the parameters
            loss = (average.value - target).square().sum()
            loss.backward(); optimizer.step(); optimizer.zero_grad()
            if ensemble.needs_resampling():
                frames = ...                           # new dynamics at the new θ
                ensemble = EnsembleReweighting(potential, frames, temperature_K=300.0)

    Args:
        potential: the potential whose parameters are being changed; its energies at
            construction are the reference U_θ0.
        frames: (F, N, 3) positions sampled in the canonical ensemble of ``potential``.
        temperature_K: the ensemble's temperature.
        box: (3, 3) or (F, 3, 3) Å for periodic frames, or None.
        batch_size: frames evaluated at once (as replicas of one state).
        min_effective_fraction: :meth:`needs_resampling` answers True below this ESS/F.
    """

    def __init__(
        self,
        potential: Potential,
        frames: Tensor,
        temperature_K: float,
        box: Tensor | None = None,
        batch_size: int = 64,
        min_effective_fraction: float = 0.9,
    ) -> None:
        if frames.dim() != 3 or frames.shape[-1] != 3:
            raise ValueError(f"frames must be (F, N, 3), got {tuple(frames.shape)}")
        self.potential = potential
        self.frames = frames.detach()
        self.kT = BOLTZMANN_KCAL_MOL_K * float(temperature_K)
        self.box = None if box is None else box.detach().expand(frames.shape[0], 3, 3)
        self.batch_size = int(batch_size)
        self.min_effective_fraction = float(min_effective_fraction)
        with torch.no_grad():
            self.reference_energies = self.energies()
        self._last_fraction = 1.0

    @property
    def n_frames(self) -> int:
        return int(self.frames.shape[0])

    def energies(self) -> Tensor:
        """(F,) energies of the frames at the current parameters (graph when grad mode
        is on and parameters require grad)."""
        parts = []
        for start in range(0, self.n_frames, self.batch_size):
            stop = min(start + self.batch_size, self.n_frames)
            box = None if self.box is None else self.box[start:stop]
            parts.append(self.potential.energy(State(self.frames[start:stop], box=box)))
        return torch.cat(parts)

    def average(self, observable: Callable[[Tensor], Tensor] | Tensor) -> Reweighted:
        """<O> at the current parameters.

        Args:
            observable: (F, ...) values at the frames, or a function of (F, N, 3)
                positions returning them (it may depend on parameters too).
        """
        values = observable(self.frames) if callable(observable) else observable
        result = reweighted_average(
            values, self.energies(), self.reference_energies, self.kT
        )
        self._last_fraction = result.effective_fraction
        return result

    def needs_resampling(self) -> bool:
        """Whether the last :meth:`average` had ESS/F below the minimum fraction."""
        return self._last_fraction < self.min_effective_fraction

    def fluctuation_gradients(
        self, observable: Tensor, parameters: dict[str, nn.Parameter] | list[Tensor]
    ) -> list[Tensor]:
        """d<O>/dθ at the current parameters by the fluctuation formula, for scalar
        per-frame O (F,), as one backward pass of the covariance surrogate
        −β Σ w_i (O_i − <O>) U_θ(x_i)."""
        params = (
            list(parameters.values()) if isinstance(parameters, dict) else parameters
        )
        energies = self.energies()
        w = reweighting_weights(energies, self.reference_energies, self.kT).detach()
        o = observable.detach()
        surrogate = -(w * (o - w @ o) * energies).sum() / self.kT
        grads = torch.autograd.grad(surrogate, params, allow_unused=True)
        return [
            torch.zeros_like(p) if g is None else g
            for p, g in zip(params, grads, strict=True)
        ]
