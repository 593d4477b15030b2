"""Langevin dynamics with the BAOAB ("LangevinMiddle") splitting."""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from pydantic import Field
from torch import Tensor

from torchmd_core import Potential, State, System, replica_normal
from torchmd_core.units import AMU_A2_PS2_TO_KCAL_MOL, BOLTZMANN_KCAL_MOL_K
from torchmd_plugins.dynamics.base import DynamicsConfig, MolecularDynamics

__all__ = ["LangevinBAOAB"]


class LangevinBAOAB(MolecularDynamics):
    """Langevin dynamics, BAOAB splitting: canonical (NVT) sampling at temperature_K.

    One step of length dt, with a = F/m, c = exp(−γ dt) and ξ standard normal::

        B  v ← v + dt/2 · a(x);  RATTLE(v)
        A  x_m ← x + dt/2 · v
        O  v ← c v + √((1 − c²) kT/m) ξ
        A  x' ← x_m + dt/2 · v;  Δ ← SHAKE(x', x) − x';  x' ← x' + Δ;  v ← v + Δ/dt
        B  v ← v + dt/2 · a(x');  RATTLE(v)

    Velocities are on-step. The two B half-kicks of consecutive steps make the full
    kick of OpenMM's ``LangevinMiddleIntegrator``, so from the same start (OpenMM's
    velocities half a step earlier) both give the same positions. Configurational
    averages have small timestep errors (Leimkuhler & Matthews, Appl. Math. Res.
    Express 2013, 34; J. Chem. Phys. 138, 174102 (2013)). Random numbers come from one
    generator per replica (replica r of a run seeded s draws as a one-replica run
    seeded s + r). Each replica may have its own bath temperature
    (:meth:`set_replica_temperatures`, as temperature replica exchange does).
    """

    class Config(DynamicsConfig):
        kind: Literal["langevin"] = "langevin"
        temperature_K: float = Field(gt=0.0, description="Bath temperature, K.")
        friction_per_ps: float = Field(
            1.0,
            ge=0.0,
            description="Friction coefficient γ, 1/ps (0 gives NVE dynamics).",
        )

    def __init__(self, config: Config, system: System) -> None:
        super().__init__(config, system)
        self.friction = float(config.friction_per_ps)
        kT = BOLTZMANN_KCAL_MOL_K * float(config.temperature_K)
        # Thermal velocity of each atom, Å/ps: √(kT/m).
        self.thermal_velocity = (kT / AMU_A2_PS2_TO_KCAL_MOL * self.inv_mass).sqrt()
        self._inv_mass64 = self.inv_mass.clone()  # float64, for per-replica baths
        #: (R,) K, each replica's own bath temperature (replica exchange), or None:
        #: every replica at temperature_K. See :meth:`set_replica_temperatures`.
        self.replica_temperatures_K: Tensor | None = None
        self._replica_thermal_velocity: Tensor | None = None  # (R, N) Å/ps

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> LangevinBAOAB:
        super().to(device=device, dtype=dtype)
        self.thermal_velocity = self.thermal_velocity.to(device=device, dtype=dtype)
        if self._replica_thermal_velocity is not None:
            self._replica_thermal_velocity = self._replica_thermal_velocity.to(
                device=device, dtype=dtype
            )
        return self

    def set_replica_temperatures(self, temperatures_K: Tensor | None) -> None:
        """Give replica ``r`` the bath temperature ``temperatures_K[r]`` (K, (R,));
        None returns every replica to ``temperature_K``."""
        if temperatures_K is None:
            self.replica_temperatures_K = self._replica_thermal_velocity = None
            return
        t = temperatures_K.detach().to(device="cpu", dtype=torch.float64).reshape(-1)
        kT = BOLTZMANN_KCAL_MOL_K * t[:, None]  # (R, 1)
        thermal = (kT / AMU_A2_PS2_TO_KCAL_MOL * self._inv_mass64).sqrt()  # (R, N)
        like = self.thermal_velocity
        self.replica_temperatures_K = t
        self._replica_thermal_velocity = thermal.to(like)

    replica_state_keys = ("generators", "replica_temperatures_K")

    def state_dict(self) -> dict[str, Any]:
        out = super().state_dict()
        t = self.replica_temperatures_K
        out["replica_temperatures_K"] = None if t is None else t.clone()
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.set_replica_temperatures(state.get("replica_temperatures_K"))

    def step(self, state: State, potential: Potential) -> State:
        self._follow(state)
        state = self.with_forces(state, potential)
        dt = self.timestep_ps
        half = 0.5 * dt
        x0, box = state.positions, state.box
        v = self.velocities(state) + half * self.acceleration(self.forces(state))
        v = self._constrain_velocities(v, x0, box)
        x_mid = x0 + half * v
        v = self._thermostat(v)
        x = x_mid + half * v
        if self.solver is not None:  # (nothing to correct without constraints)
            dx = self.position_correction(x, x0, box)
            x, v = x + dx, v + dx / dt  # as OpenMM: the correction spread over the step
        x = self.place_sites(x, box)  # virtual sites follow their parents
        new = state.replace(positions=x)
        energy, forces = potential.energy_and_forces(new)
        v = v + half * self.acceleration(forces)
        v = self._remove_com(self._constrain_velocities(v, x, box))
        return self._advance(new, velocities=v, forces=forces, potential_energy=energy)

    def _thermostat(self, v: Tensor) -> Tensor:
        """The O step: exact Ornstein-Uhlenbeck update over dt."""
        if self.friction == 0.0:
            return v
        c = math.exp(-self.friction * self.timestep_ps)
        noise = replica_normal(self.generators, tuple(v.shape[1:]), v)
        sigma = self.thermal_velocity[:, None]  # (N, 1), or (R, N, 1) per replica
        if self._replica_thermal_velocity is not None:
            if self._replica_thermal_velocity.shape[0] != v.shape[0]:
                raise ValueError(
                    f"{self._replica_thermal_velocity.shape[0]} replica temperatures "
                    f"set for a state of {v.shape[0]} replicas"
                )
            sigma = self._replica_thermal_velocity[:, :, None]
        return c * v + math.sqrt(1.0 - c * c) * sigma * noise
