"""Monte Carlo barostat: isotropic or anisotropic volume moves, NPT Metropolis."""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor

from torchmd_core import (
    Barostat,
    BarostatConfig,
    Potential,
    SimulationError,
    State,
    System,
)
from torchmd_core.units import BAR_TO_KCAL_MOL_A3, BOLTZMANN_KCAL_MOL_K

__all__ = ["MonteCarloBarostat"]


class MonteCarloBarostat(Barostat):
    """Monte Carlo barostat: random volume moves accepted by the NPT Metropolis rule.

    Every ``interval`` steps each replica proposes a new volume V' = V + ΔV, ΔV uniform
    in [−s, s]. Isotropic moves scale all box vectors by (V'/V)^⅓; anisotropic moves
    scale one randomly chosen axis (x, y or z components of every box vector and every
    molecule centre) by V'/V. The geometric centre of each molecule (connected
    component of the bond graph) is scaled, so molecules move rigidly and constraints
    stay satisfied. The move is accepted with probability min(1, exp(−w/kT)),

        w = U(V') − U(V) + P (V' − V) − N_mol kT ln(V'/V),

    with U re-evaluated at the new box (so the volume dependence of the long-range
    dispersion correction and of every other term is included). As OpenMM's
    ``MonteCarloBarostat``, the step size s starts at 1% of the volume and every 10
    attempts shrinks by 1/1.1 when fewer than 25% were accepted, grows by 1.1 (at most
    to 30% of the volume) when more than 75% were. Replicas move, accept and adapt
    independently, each from its own random stream.

    References: Chow & Ferguson, Comput. Phys. Commun. 91, 283 (1995); Åqvist,
    Wennerström, Nervall, Bjelic & Brandsdal, Chem. Phys. Lett. 384, 288 (2004).
    """

    class Config(BarostatConfig):
        kind: Literal["montecarlo"] = "montecarlo"
        pressure_bar: float | tuple[float, float, float] = Field(
            1.0,
            description="Target pressure, bar; with anisotropic moves optionally one "
            "value per axis (x, y, z).",
        )
        temperature_K: float = Field(
            gt=0.0,
            description="Temperature of the acceptance rule, K (the thermostat's).",
        )
        anisotropic: bool = Field(
            False, description="Scale one axis at a time instead of the whole box."
        )
        scale_axes: tuple[bool, bool, bool] = Field(
            (True, True, True),
            description="Anisotropic moves only: which of x, y, z may change.",
        )

        @model_validator(mode="after")
        def _axes(self) -> MonteCarloBarostat.Config:
            if not isinstance(self.pressure_bar, float) and not self.anisotropic:
                raise ValueError(
                    "pressure_bar: one value per axis needs anisotropic: true"
                )
            if self.anisotropic and not any(self.scale_axes):
                raise ValueError("scale_axes: at least one axis must be scaled")
            return self

    def __init__(self, config: Config, system: System) -> None:
        super().__init__(config, system)
        self.kT = BOLTZMANN_KCAL_MOL_K * float(config.temperature_K)
        p = config.pressure_bar
        pressure = (p, p, p) if isinstance(p, float) else tuple(p)
        self.pressure = (
            torch.tensor(pressure, dtype=torch.float64) * BAR_TO_KCAL_MOL_A3
        )  # (3,)
        self.anisotropic = bool(config.anisotropic)
        axes = (
            [i for i, on in enumerate(config.scale_axes) if on]
            if self.anisotropic
            else [0]
        )
        self.axes = torch.tensor(axes, dtype=torch.int64)  # moves choose among these
        self.molecules = system.molecules.clone()  # (N,)
        self.n_molecules = system.n_molecules
        self.atoms_per_molecule = torch.bincount(
            self.molecules, minlength=self.n_molecules
        ).to(torch.float64)
        # Per replica and move axis, made at the first move: step size (Å³), counts.
        self.volume_scale: Tensor | None = None
        self.n_attempted: Tensor | None = None
        self.n_accepted: Tensor | None = None
        #: Totals over the run, (R,), for reports and tests.
        self.total_attempted: Tensor | None = None
        self.total_accepted: Tensor | None = None

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> MonteCarloBarostat:
        self.pressure = self.pressure.to(device=device, dtype=dtype)
        self.axes = self.axes.to(device=device)
        self.molecules = self.molecules.to(device=device)
        self.atoms_per_molecule = self.atoms_per_molecule.to(device=device, dtype=dtype)
        for name in (
            "volume_scale",
            "n_attempted",
            "n_accepted",
            "total_attempted",
            "total_accepted",
        ):
            value = getattr(self, name)
            if value is not None:
                kind = dtype if value.is_floating_point() else None
                setattr(self, name, value.to(device=device, dtype=kind))
        return self

    # -- the move ---------------------------------------------------------------------
    def apply(self, state: State, potential: Potential) -> State:
        if state.box is None:
            raise SimulationError("the montecarlo barostat needs a periodic box")
        self._follow(state)
        volume = (
            state.box.diagonal(dim1=-2, dim2=-1).prod(-1).abs()
        )  # (R,) reduced (triangular) boxes
        if self.volume_scale is None:
            self._start(volume)
        assert self.volume_scale is not None
        energy = state.potential_energy
        forces = state.forces
        if energy is None or forces is None:
            energy, forces = potential.energy_and_forces(state)
        u_volume, u_axis, u_accept = self._uniforms(state)
        slot = (u_axis * len(self.axes)).long().clamp(max=len(self.axes) - 1)  # (R,)
        step = self.volume_scale.gather(1, slot[:, None]).squeeze(1)
        new_volume = volume + step * (2.0 * u_volume - 1.0)
        scale = self._scale_factors(new_volume / volume, self.axes[slot])  # (R, 3)
        trial = self._scaled(state, scale)
        new_energy, new_forces = potential.energy_and_forces(trial)
        pressure = (
            self.pressure[self.axes[slot]] if self.anisotropic else self.pressure[0]
        )
        w = (
            new_energy
            - energy
            + pressure * (new_volume - volume)
            - self.n_molecules * self.kT * torch.log(new_volume / volume)
        )
        accept = (w <= 0) | (u_accept < torch.exp(-w.clamp(min=0) / self.kT))
        self._adapt(accept, slot, volume)
        pick = accept[:, None, None]
        return state.replace(
            positions=torch.where(pick, trial.positions, state.positions),
            box=torch.where(pick, trial.box, state.box),  # type: ignore[arg-type]
            forces=torch.where(pick, new_forces, forces),
            potential_energy=torch.where(accept, new_energy, energy),
        )

    def _scale_factors(self, ratio: Tensor, axis: Tensor) -> Tensor:
        """(R, 3) factors along x, y, z for a volume ratio V'/V."""
        if not self.anisotropic:
            return ratio.pow(1.0 / 3.0)[:, None].expand(-1, 3)
        one = torch.ones(ratio.shape[0], 3, dtype=ratio.dtype, device=ratio.device)
        return one.scatter(1, axis[:, None], ratio[:, None])

    def _scaled(self, state: State, scale: Tensor) -> State:
        """Box vectors and molecule centres scaled per axis; molecules stay rigid."""
        assert state.box is not None
        x = state.positions
        centres = torch.zeros(
            x.shape[0], self.n_molecules, 3, dtype=x.dtype, device=x.device
        )
        centres = (
            centres.index_add(1, self.molecules, x) / self.atoms_per_molecule[:, None]
        )
        shift = centres * (scale[:, None, :] - 1.0)  # (R, M, 3)
        return state.replace(
            positions=x + shift[:, self.molecules], box=state.box * scale[:, None, :]
        )

    def _uniforms(self, state: State) -> tuple[Tensor, Tensor, Tensor]:
        """Three (R,) uniform numbers per replica, each replica from its own stream."""
        draws = torch.stack(
            [
                torch.rand(3, generator=g, device=state.device, dtype=state.dtype)
                for g in self.generators
            ]
        )
        return draws[:, 0], draws[:, 1], draws[:, 2]

    # -- step-size adaptation (OpenMM's rule) -----------------------------------------
    def _start(self, volume: Tensor) -> None:
        r, a = volume.shape[0], len(self.axes)
        self.volume_scale = (0.01 * volume)[:, None].expand(r, a).clone()
        self.n_attempted = torch.zeros(r, a, dtype=torch.int64, device=volume.device)
        self.n_accepted = torch.zeros(r, a, dtype=torch.int64, device=volume.device)
        self.total_attempted = torch.zeros(r, dtype=torch.int64, device=volume.device)
        self.total_accepted = torch.zeros(r, dtype=torch.int64, device=volume.device)

    def _adapt(self, accept: Tensor, slot: Tensor, volume: Tensor) -> None:
        assert self.volume_scale is not None and self.n_attempted is not None
        assert self.n_accepted is not None and self.total_attempted is not None
        assert self.total_accepted is not None
        hit = torch.zeros_like(self.n_attempted).scatter(1, slot[:, None], 1)
        self.n_attempted = self.n_attempted + hit
        self.n_accepted = self.n_accepted + hit * accept[:, None].long()
        self.total_attempted = self.total_attempted + 1
        self.total_accepted = self.total_accepted + accept.long()
        ready = self.n_attempted >= 10
        low = ready & (self.n_accepted < 0.25 * self.n_attempted)
        high = ready & ~low & (self.n_accepted > 0.75 * self.n_attempted)
        grown = torch.minimum(self.volume_scale * 1.1, 0.3 * volume[:, None])
        scale = torch.where(low, self.volume_scale / 1.1, self.volume_scale)
        self.volume_scale = torch.where(high, grown, scale)
        reset = low | high
        self.n_attempted = torch.where(
            reset, torch.zeros_like(self.n_attempted), self.n_attempted
        )
        self.n_accepted = torch.where(
            reset, torch.zeros_like(self.n_accepted), self.n_accepted
        )

    @property
    def acceptance_rate(self) -> Tensor | None:
        """(R,) fraction of accepted moves so far, or None before the first move."""
        if self.total_attempted is None or self.total_accepted is None:
            return None
        return self.total_accepted.double() / self.total_attempted.clamp(min=1).double()

    def _follow(self, state: State) -> None:
        if self.pressure.device != state.device or self.pressure.dtype != state.dtype:
            self.to(device=state.device, dtype=state.dtype)

    # -- checkpoints ------------------------------------------------------------------
    _STATE = (
        "volume_scale",
        "n_attempted",
        "n_accepted",
        "total_attempted",
        "total_accepted",
    )
    replica_state_keys = ("generators", *_STATE)

    def state_dict(self) -> dict[str, Any]:
        out = super().state_dict()
        for name in self._STATE:
            value = getattr(self, name)
            out[name] = None if value is None else value.detach().cpu().clone()
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if len(state["generators"]) != len(self.generators):
            raise ValueError(
                f"checkpoint holds {len(state['generators'])} barostat random streams, "
                f"this run has {len(self.generators)} replicas"
            )
        super().load_state_dict(state)
        device = self.pressure.device
        for name in self._STATE:
            value = state.get(name)
            if value is not None:
                kind = self.pressure.dtype if value.is_floating_point() else None
                value = value.to(device=device, dtype=kind)
            setattr(self, name, value)
