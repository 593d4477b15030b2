"""What the built-in integrators share: masses, constraints, forces, momentum removal.

:class:`MolecularDynamics` turns forces into accelerations, applies the system's
constraints (:class:`~torchmd_plugins.dynamics.constraints.ConstraintSolver`), keeps
the energy and forces of the current positions cached in the :class:`State` (so the
next step and the reporters reuse them), and optionally removes centre-of-mass motion.
Massless atoms never move on their own (no force or noise acts on them); the system's
virtual sites are rebuilt from their parents after every move of the positions.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field
from torch import Tensor

from torchmd_core import (
    ComponentConfig,
    Integrator,
    IntegratorConfig,
    Potential,
    State,
    System,
    VirtualSites,
    place_virtual_sites,
)
from torchmd_core.units import KCAL_MOL_A_AMU_TO_A_PS2
from torchmd_plugins.dynamics.constraints import ConstraintSolver

__all__ = ["DynamicsConfig", "MolecularDynamics"]


class DynamicsConfig(IntegratorConfig):
    """Fields common to the built-in integrators."""

    timestep_fs: float = Field(gt=0.0, le=10.0, description="Integration timestep, fs.")
    constraint_tolerance: float = Field(
        1e-6,
        gt=0.0,
        le=1e-2,
        description="Relative tolerance of constrained distances (dimensionless). "
        "float32 cannot resolve below about 1e-5; the solver uses the larger of the "
        "two.",
    )
    remove_com_motion: bool = Field(
        False,
        description="Remove the centre-of-mass velocity every step (3 fewer "
        "degrees of freedom in the temperature).",
    )


class MolecularDynamics(Integrator):
    """Base of the built-in integrators: subclasses implement :meth:`step`."""

    Config: ClassVar[type[ComponentConfig]] = DynamicsConfig

    def __init__(self, config: ComponentConfig, system: System) -> None:
        super().__init__(config, system)
        masses = system.masses.to(torch.float64)
        self.masses = masses  # (N,) amu
        self.inv_mass = torch.where(
            masses > 0, 1.0 / masses.clamp(min=1e-300), torch.zeros_like(masses)
        )
        self.total_mass = float(masses.sum())
        tolerance = float(getattr(config, "constraint_tolerance", 1e-6))
        #: Solver of ``system.constraints`` (None when nothing is constrained); the
        #: minimiser uses it too, as ``constraint_solver``.
        self.solver = ConstraintSolver.from_system(system, tolerance)
        self.constraint_solver = self.solver
        #: The system's virtual sites, or None.
        self.virtual_sites: VirtualSites | None = system.virtual_sites or None

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> MolecularDynamics:
        self.masses = self.masses.to(device=device, dtype=dtype)
        self.inv_mass = self.inv_mass.to(device=device, dtype=dtype)
        if self.solver is not None:
            self.solver.to(device=device, dtype=dtype)
        if self.virtual_sites is not None:
            self.virtual_sites = self.virtual_sites.to(device=device, dtype=dtype)
        return self

    # -- building blocks --------------------------------------------------------------
    def setup(self, state: State, potential: Potential) -> State:
        """Constrain positions and velocities, and cache energy and forces.

        Idempotent: a state that already satisfies the constraints is left as it is,
        so a run resumed from a checkpoint continues exactly. (Centre-of-mass motion,
        when removed, is removed at the end of every step, not here, for the same
        reason.)
        """
        self._follow(state)
        x = state.positions
        if self.solver is not None:
            x = x + self.solver.projection(x, state.box)
            if not torch.equal(x, state.positions):
                state = state.replace(positions=x)
        x = self.place_sites(state.positions, state.box)
        if x is not state.positions and not torch.equal(x, state.positions):
            state = state.replace(positions=x)
        if state.velocities is not None:
            v = self._constrain_velocities(state.velocities, x, state.box)
            state = state.replace(velocities=v)
        return self.with_forces(state, potential)

    def with_forces(self, state: State, potential: Potential) -> State:
        """``state`` with the energy and forces of its positions (unless cached)."""
        if state.forces is not None and state.potential_energy is not None:
            return state
        energy, forces = potential.energy_and_forces(state)
        return state.replace(forces=forces, potential_energy=energy)

    @staticmethod
    def velocities(state: State) -> Tensor:
        """The state's velocities; zeros when it has none (atoms start at rest)."""
        return (
            torch.zeros_like(state.positions)
            if state.velocities is None
            else state.velocities
        )

    @staticmethod
    def forces(state: State) -> Tensor:
        """The cached forces of a state returned by :meth:`with_forces`."""
        if state.forces is None:
            raise RuntimeError(
                "forces are not cached: call with_forces(state, potential) first"
            )
        return state.forces

    def acceleration(self, forces: Tensor) -> Tensor:
        """(R, N, 3) Å/ps² from forces in kcal/mol/Å."""
        return forces * (self.inv_mass[:, None] * KCAL_MOL_A_AMU_TO_A_PS2)

    def position_correction(
        self, positions: Tensor, reference: Tensor, box: Tensor | None
    ) -> Tensor:
        """Displacement that satisfies the constraints (zeros without constraints)."""
        if self.solver is None:
            return torch.zeros_like(positions)
        return self.solver.position_correction(positions, reference, box)

    def place_sites(self, positions: Tensor, box: Tensor | None) -> Tensor:
        """``positions`` with the virtual sites rebuilt from their parents."""
        return place_virtual_sites(positions, self.virtual_sites, box)

    def _constrain_velocities(self, v: Tensor, x: Tensor, box: Tensor | None) -> Tensor:
        if self.solver is None:
            return v
        return v + self.solver.velocity_correction(v, x, box)

    def _remove_com(self, v: Tensor) -> Tensor:
        if not self.removes_com_motion or self.total_mass <= 0:
            return v
        p = (self.masses[:, None] * v).sum(1, keepdim=True)  # (R, 1, 3) amu Å/ps
        moving = (self.masses > 0)[:, None]
        return torch.where(moving, v - p / self.total_mass, v)

    def _follow(self, state: State) -> None:
        """Move internal tensors to the state's device and dtype if they differ."""
        if self.inv_mass.device != state.device or self.inv_mass.dtype != state.dtype:
            self.to(device=state.device, dtype=state.dtype)

    def _advance(self, state: State, **changes: object) -> State:
        """The state one step later with ``changes`` (positions, velocities, caches)."""
        return state.replace(
            step=state.step + 1, time_ps=state.time_ps + self.timestep_ps, **changes
        )
