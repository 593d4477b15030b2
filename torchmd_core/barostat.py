"""The ``Barostat`` role: changes the box (and positions) every ``interval`` steps."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, cast

import torch
from pydantic import Field

from torchmd_core.component import Component, ComponentConfig
from torchmd_core.integrator import replica_generators
from torchmd_core.potential import Potential
from torchmd_core.state import State
from torchmd_core.system import System

__all__ = ["Barostat", "BarostatConfig"]


class BarostatConfig(ComponentConfig):
    """Base of barostat configurations."""

    interval: int = Field(25, gt=0, description="Steps between box moves.")


class Barostat(Component, ABC):
    """Applied by the run loop after every ``interval``-th step; may change box and
    positions. Random numbers come from one generator per replica (see :meth:`seed`)."""

    Config: ClassVar[type[ComponentConfig]] = BarostatConfig
    #: Keys of :meth:`state_dict` with one entry per replica (see
    #: :attr:`torchmd_core.Integrator.replica_state_keys`).
    replica_state_keys: ClassVar[tuple[str, ...]] = ("generators",)

    def __init__(self, config: ComponentConfig, system: System) -> None:
        self.config = config
        self.system = system
        self.generators: list[torch.Generator] = []
        self._seed = 0

    @property
    def interval(self) -> int:
        return int(cast(BarostatConfig, self.config).interval)

    def seed(
        self, seed: int, n_replicas: int, device: torch.device | str = "cpu"
    ) -> None:
        self._seed = int(seed)
        self.generators = replica_generators(seed, n_replicas, device)

    @abstractmethod
    def apply(self, state: State, potential: Potential) -> State:
        """The state after one barostat move (accepted or not)."""

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> Barostat:
        return self

    def state_dict(self) -> dict[str, Any]:
        return {
            "seed": self._seed,
            "generators": [g.get_state() for g in self.generators],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._seed = int(state["seed"])
        for g, s in zip(self.generators, state["generators"], strict=True):
            g.set_state(s)
