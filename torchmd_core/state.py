"""The dynamical state of R replicas of one system: positions, velocities, box, time.

A :class:`State` is immutable. Every change makes a new one with :meth:`State.replace`,
so a trajectory built step by step stays one autograd graph (nothing is edited in
place) and old states stay valid.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

if TYPE_CHECKING:
    from torchmd_core.neighbors import Neighbors

__all__ = ["State"]

_DERIVED = ("forces", "potential_energy", "neighbors")


@dataclass(frozen=True, eq=False)
class State:
    """Positions, velocities and box of ``R`` replicas of ``N`` atoms.

    Attributes:
        positions: (R, N, 3), Å.
        velocities: (R, N, 3), Å/ps, or None before velocities are assigned.
        box: (R, 3, 3), Å, rows are the box vectors a, b, c (a along x, b in the xy
            plane: OpenMM's reduced form); None for a non-periodic system.
        step: number of integration steps taken.
        time_ps: simulated time, ps.
        forces: (R, N, 3), kcal/mol/Å, at ``positions``, if already computed.
        potential_energy: (R,), kcal/mol, at ``positions``, if already computed.
        neighbors: a pair list valid for ``positions``, if one was attached.

    ``forces``, ``potential_energy`` and ``neighbors`` are caches derived from the
    positions: :meth:`replace` drops them when positions or box change, unless new
    values are passed in the same call.
    """

    positions: Tensor
    velocities: Tensor | None = None
    box: Tensor | None = None
    step: int = 0
    time_ps: float = 0.0
    forces: Tensor | None = field(default=None, repr=False)
    potential_energy: Tensor | None = field(default=None, repr=False)
    neighbors: Neighbors | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        p = self.positions
        if p.dim() != 3 or p.shape[-1] != 3:
            raise ValueError(
                f"positions must be (n_replicas, n_atoms, 3), got {tuple(p.shape)}"
            )
        if self.velocities is not None and self.velocities.shape != p.shape:
            raise ValueError(
                f"velocities {tuple(self.velocities.shape)} do not match positions "
                f"{tuple(p.shape)}"
            )
        if self.box is not None and self.box.shape != (p.shape[0], 3, 3):
            raise ValueError(
                f"box must be (n_replicas, 3, 3) = ({p.shape[0]}, 3, 3), "
                f"got {tuple(self.box.shape)}"
            )

    # -- construction ---------------------------------------------------------------
    @classmethod
    def from_coordinates(
        cls,
        positions: Tensor,
        box: Tensor | None = None,
        velocities: Tensor | None = None,
        n_replicas: int = 1,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> State:
        """Build a state from one frame, ``(N, 3)`` positions and ``(3, 3)`` box,
        repeated for ``n_replicas`` (already-batched inputs are taken as they are)."""

        def batch(t: Tensor | None, ndim: int) -> Tensor | None:
            if t is None:
                return None
            t = torch.as_tensor(t)
            t = t.to(device=device, dtype=dtype or t.dtype)
            if t.dim() == ndim:
                t = t.unsqueeze(0).expand(n_replicas, *t.shape).clone()
            return t

        pos = batch(positions, 2)
        assert pos is not None
        return cls(positions=pos, velocities=batch(velocities, 2), box=batch(box, 2))

    # -- views ------------------------------------------------------------------------
    @property
    def n_replicas(self) -> int:
        return int(self.positions.shape[0])

    @property
    def n_atoms(self) -> int:
        return int(self.positions.shape[1])

    @property
    def is_periodic(self) -> bool:
        return self.box is not None

    @property
    def dtype(self) -> torch.dtype:
        return self.positions.dtype

    @property
    def device(self) -> torch.device:
        return self.positions.device

    def volume(self) -> Tensor | None:
        """(R,) box volume in Å³, or None without a box."""
        if self.box is None:
            return None
        volume: Tensor = torch.linalg.det(self.box).abs()
        return volume

    # -- changes -----------------------------------------------------------------------
    def replace(self, **changes: Any) -> State:
        """A copy with ``changes`` applied; caches go stale with positions or box."""
        if "positions" in changes or "box" in changes:
            stale = {name: None for name in _DERIVED if name not in changes}
            changes = {**changes, **stale}
        return dataclasses.replace(self, **changes)

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> State:
        """The same state on another device and/or floating dtype (caches dropped)."""

        def move(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.to(device=device, dtype=dtype)

        return State(
            positions=self.positions.to(device=device, dtype=dtype),
            velocities=move(self.velocities),
            box=move(self.box),
            step=self.step,
            time_ps=self.time_ps,
        )

    def detach(self) -> State:
        """The same state cut from any autograd graph (caches dropped)."""

        def cut(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.detach()

        return State(
            positions=self.positions.detach(),
            velocities=cut(self.velocities),
            box=cut(self.box),
            step=self.step,
            time_ps=self.time_ps,
        )

    def select(self, replicas: Tensor | list[int] | slice) -> State:
        """The sub-state of some replicas (caches dropped)."""

        def pick(t: Tensor | None) -> Tensor | None:
            return None if t is None else t[replicas]

        return State(
            positions=self.positions[replicas],
            velocities=pick(self.velocities),
            box=pick(self.box),
            step=self.step,
            time_ps=self.time_ps,
        )

    @staticmethod
    def concatenate(states: list[State]) -> State:
        """Stack the replicas of several states of one system (same step and time)."""
        first = states[0]

        def cat(name: str) -> Tensor | None:
            parts = [getattr(s, name) for s in states]
            if all(p is None for p in parts):
                return None
            if any(p is None for p in parts):
                raise ValueError(f"cannot concatenate states: some lack {name}")
            return torch.cat(parts, dim=0)

        positions = cat("positions")
        assert positions is not None
        return State(
            positions=positions,
            velocities=cat("velocities"),
            box=cat("box"),
            step=first.step,
            time_ps=first.time_ps,
        )
