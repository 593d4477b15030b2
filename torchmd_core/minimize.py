"""Energy minimisation: L-BFGS on positions until the largest force is small."""

from __future__ import annotations

import torch

from torchmd_core.potential import Potential
from torchmd_core.state import State

__all__ = ["minimize"]


def minimize(
    potential: Potential,
    state: State,
    tolerance_kcal_mol_A: float = 0.24,
    max_iterations: int = 1000,
) -> State:
    """Minimise the energy of every replica with L-BFGS (strong Wolfe line search).

    Stops when the largest force component of every replica is below
    ``tolerance_kcal_mol_A`` or after ``max_iterations`` iterations. Velocities, box and
    step are kept; the energy and forces at the minimum are cached in the result.

    Args:
        potential: the energy to minimise (summed over replicas, which are independent).
        state: starting point, (R, N, 3) positions.
        tolerance_kcal_mol_A: force tolerance, kcal/mol/Å.
        max_iterations: upper limit on iterations.
    """
    x = state.positions.detach().clone().requires_grad_(True)
    optimizer = torch.optim.LBFGS(
        [x], lr=1.0, max_iter=max_iterations, tolerance_grad=tolerance_kcal_mol_A,
        tolerance_change=0.0, history_size=20, line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        with torch.no_grad():
            energy, forces = potential.energy_and_forces(state.replace(positions=x.detach()))
        x.grad = -forces
        return energy.sum()

    optimizer.step(closure)
    with torch.no_grad():
        final = state.replace(positions=x.detach())
        energy, forces = potential.energy_and_forces(final)
    return final.replace(forces=forces, potential_energy=energy)
