"""Velocity Verlet (NVE), with RATTLE for constraints."""

from __future__ import annotations

from typing import Literal

from torchmd_core import Potential, State
from torchmd_plugins.dynamics.base import DynamicsConfig, MolecularDynamics

__all__ = ["VelocityVerlet"]


class VelocityVerlet(MolecularDynamics):
    """Velocity Verlet: microcanonical (NVE) dynamics, time-reversible and symplectic.

    One step of length dt, with a = F/m::

        v ← v + dt/2 · a(x)                 (half kick)
        x' ← x + dt · v;  x' ← SHAKE(x', x) (drift, then constrain positions)
        v ← (x' − x) / dt                   (the constraint correction included)
        v ← v + dt/2 · a(x');  RATTLE(v)    (half kick, then constrain velocities)

    Velocities are on-step (at the same time as positions). Forces and energy of the
    new positions are cached in the returned state. Reference: Andersen, J. Comput.
    Phys. 52, 24 (1983) (RATTLE).
    """

    class Config(DynamicsConfig):
        kind: Literal["verlet"] = "verlet"

    def step(self, state: State, potential: Potential) -> State:
        self._follow(state)
        state = self.with_forces(state, potential)
        dt = self.timestep_ps
        x0, box = state.positions, state.box
        v = self.velocities(state) + (0.5 * dt) * self.acceleration(self.forces(state))
        x = x0 + dt * v
        if self.solver is not None:  # (nothing to correct without constraints)
            dx = self.position_correction(x, x0, box)
            x, v = x + dx, v + dx / dt
        x = self.place_sites(x, box)  # virtual sites follow their parents
        new = state.replace(positions=x)
        energy, forces = potential.energy_and_forces(new)
        v = v + (0.5 * dt) * self.acceleration(forces)
        v = self._remove_com(self._constrain_velocities(v, x, box))
        return self._advance(new, velocities=v, forces=forces, potential_energy=energy)
