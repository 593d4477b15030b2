"""Energy minimisation: batched L-BFGS on positions until the largest force is small.

Every replica is minimised independently (its own history, step length and stopping
point), so a batch gives what one-replica runs would. With a constraint solver the
search stays on the constraint surface: the start is projected onto it, every trial
point is put back on it (SHAKE from the previous point) and convergence is judged on
the constrained forces, F − Cᵀλ with the multipliers λ that make M⁻¹(F − Cᵀλ) tangent
to the surface (the forces the constrained dynamics would feel).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from torchmd_core.constraints import ConstraintProjector
from torchmd_core.potential import Potential, PotentialSum
from torchmd_core.state import State

__all__ = ["MinimizationResult", "minimize", "minimize_with_result"]

#: Sufficient-decrease constant of the backtracking line search.
_ARMIJO = 1e-4
#: Largest move of any atom in one iteration, Å (keeps strained starts stable).
_MAX_STEP_A = 0.3
_HISTORY = 10


@dataclass
class MinimizationResult:
    """What a minimisation did, per replica.

    Attributes:
        state: the minimised state (energy and forces cached).
        iterations: number of L-BFGS iterations taken.
        converged: (R,) bool, the largest constrained force component fell below the
            tolerance (else the iteration limit was hit or no lower energy was found).
        max_force: (R,) largest constrained force component at the end, kcal/mol/Å.
        initial_energy: (R,) kcal/mol.
    """

    state: State
    iterations: int
    converged: Tensor
    max_force: Tensor
    initial_energy: Tensor = field(repr=False)


def minimize(
    potential: Potential,
    state: State,
    tolerance_kcal_mol_A: float = 0.24,
    max_iterations: int = 1000,
    constraints: ConstraintProjector | None = None,
) -> State:
    """Minimise the energy of every replica with L-BFGS.

    Stops, replica by replica, when the largest (constrained) force component is below
    ``tolerance_kcal_mol_A``, after ``max_iterations`` iterations, or when the line
    search finds no lower energy (the precision limit). Velocities, box and step are
    kept; energy and forces at the minimum are cached in the result.

    Args:
        potential: the energy to minimise.
        state: starting point, (R, N, 3) positions.
        tolerance_kcal_mol_A: force tolerance, kcal/mol/Å.
        max_iterations: upper limit on iterations.
        constraints: keeps the system's constraints satisfied (an integrator's
            ``constraint_solver``); None minimises without constraints.
    """
    return minimize_with_result(
        potential, state, tolerance_kcal_mol_A, max_iterations, constraints
    ).state


def minimize_with_result(
    potential: Potential,
    state: State,
    tolerance_kcal_mol_A: float = 0.24,
    max_iterations: int = 1000,
    constraints: ConstraintProjector | None = None,
) -> MinimizationResult:
    """:func:`minimize`, also returning iterations, convergence and final forces."""
    with torch.no_grad():
        return _LBFGS(potential, constraints, tolerance_kcal_mol_A).run(
            state, max_iterations
        )


class _LBFGS:
    """Batched L-BFGS with a per-replica backtracking line search."""

    def __init__(
        self,
        potential: Potential,
        constraints: ConstraintProjector | None,
        tolerance: float,
    ) -> None:
        self.potential = potential
        self.constraints = constraints
        self.tolerance = tolerance

    def run(self, state: State, max_iterations: int) -> MinimizationResult:
        box = state.box
        x = state.positions.detach()
        if self.constraints is not None:
            x = x + self.constraints.projection(x, box)
        energy, forces = self._evaluate(state, x)
        initial = energy.clone()
        g = -self._constrained(forces, x, box)  # (R, N, 3) gradient on the surface
        done = self._converged(g)
        history: list[tuple[Tensor, Tensor, Tensor]] = []
        # First step: steepest descent moving the most-pushed atom 0.1 Å.
        gamma = torch.full_like(energy, 0.1) / g.abs().amax((1, 2)).clamp(min=1e-12)
        iteration = 0
        while iteration < max_iterations and not bool(done.all()):
            iteration += 1
            p = self._direction(g, history, gamma)
            x_new, e_new, f_new, moved = self._line_search(
                state, x, energy, forces, g, p, done
            )
            g_new = -self._constrained(f_new, x_new, box)
            s, y = x_new - x, g_new - g
            sy = (s * y).sum((1, 2))
            valid = moved & (
                sy > 1e-12 * (y * y).sum((1, 2)).sqrt() * (s * s).sum((1, 2)).sqrt()
            )
            rho = torch.where(
                valid,
                1.0 / torch.where(valid, sy, torch.ones_like(sy)),
                torch.zeros_like(sy),
            )
            history = [*history, (s, y, rho)][-_HISTORY:]
            gamma = torch.where(valid, sy / (y * y).sum((1, 2)).clamp(min=1e-30), gamma)
            x, energy, forces, g = x_new, e_new, f_new, g_new
            done = done | self._converged(g) | ~moved
        if isinstance(self.potential, PotentialSum):  # virtual sites onto their parents
            x = self.potential.place_sites(state.replace(positions=x)).positions
        final = state.replace(positions=x, forces=forces, potential_energy=energy)
        return MinimizationResult(
            state=final,
            iterations=iteration,
            converged=self._converged(g),
            max_force=g.abs().amax((1, 2)),
            initial_energy=initial,
        )

    def _evaluate(self, state: State, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.potential.energy_and_forces(state.replace(positions=x))

    def _constrained(self, forces: Tensor, x: Tensor, box: Tensor | None) -> Tensor:
        """F − Cᵀλ with M⁻¹(F − Cᵀλ) tangent to the constraint surface."""
        if self.constraints is None:
            return forces
        inv = self.constraints.inv_mass.to(forces)[:, None]  # (N, 1)
        v = forces * inv
        v = v + self.constraints.velocity_correction(v, x, box)
        return torch.where(inv > 0, v / inv.clamp(min=1e-300), forces)

    def _converged(self, g: Tensor) -> Tensor:
        return g.abs().amax((1, 2)) <= self.tolerance

    def _direction(
        self, g: Tensor, history: list[tuple[Tensor, Tensor, Tensor]], gamma: Tensor
    ) -> Tensor:
        """The L-BFGS two-loop recursion, each replica with its own history."""
        q = g
        alphas = []
        for s, y, rho in reversed(history):
            a = rho * (s * q).sum((1, 2))
            q = q - a[:, None, None] * y
            alphas.append(a)
        r = gamma[:, None, None] * q
        for (s, y, rho), a in zip(history, reversed(alphas), strict=True):
            b = rho * (y * r).sum((1, 2))
            r = r + (a - b)[:, None, None] * s
        p = -r
        uphill = (p * g).sum(
            (1, 2)
        ) >= 0  # lost curvature information: steepest descent
        return torch.where(uphill[:, None, None], -gamma[:, None, None] * g, p)

    def _line_search(
        self,
        state: State,
        x: Tensor,
        energy: Tensor,
        forces: Tensor,
        g: Tensor,
        p: Tensor,
        done: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Backtrack from the full step until the energy drops enough, per replica.

        Returns new positions, energies, forces and (R,) whether each replica moved.
        """
        longest = p.norm(dim=-1).amax(-1)  # (R,)
        alpha = torch.clamp(_MAX_STEP_A / longest.clamp(min=1e-30), max=1.0)
        alpha = torch.where(done, torch.zeros_like(alpha), alpha)
        accepted = done.clone()
        x_out, e_out, f_out = x, energy, forces
        for _ in range(30):
            trial = x + alpha[:, None, None] * p
            if self.constraints is not None:
                trial = trial + self.constraints.position_correction(
                    trial, x, state.box
                )
            e_trial, f_trial = self._evaluate(state, trial)
            decrease = (g * (trial - x)).sum((1, 2))
            ok = (
                (e_trial <= energy + _ARMIJO * decrease)
                & (e_trial < energy)
                & ~accepted
            )
            pick = ok[:, None, None]
            x_out = torch.where(pick, trial, x_out)
            e_out = torch.where(ok, e_trial, e_out)
            f_out = torch.where(pick, f_trial, f_out)
            accepted = accepted | ok
            if bool(accepted.all()):
                break
            alpha = torch.where(accepted, alpha, 0.5 * alpha)
        return x_out, e_out, f_out, accepted & ~done
