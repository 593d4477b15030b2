"""The ``Integrator`` role: advances a state by one timestep.

An integrator owns one seeded :class:`torch.Generator` per replica, so replica ``r``
of a run with seed ``s`` follows the same random stream as a one-replica run with seed
``s + r``; batched and one-by-one runs give the same trajectories. The generators'
states are part of :meth:`Integrator.state_dict`, which checkpoints store.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, cast

import torch
from pydantic import Field
from torch import Tensor

from torchmd_core.component import Component, ComponentConfig
from torchmd_core.constraints import ConstraintProjector
from torchmd_core.potential import Potential
from torchmd_core.state import State
from torchmd_core.system import System

__all__ = ["Integrator", "IntegratorConfig", "replica_generators"]


class IntegratorConfig(ComponentConfig):
    """Base of integrator configurations."""

    timestep_fs: float = Field(gt=0.0, le=10.0, description="Integration timestep, fs.")


class Integrator(Component, ABC):
    """Advances ``R`` replicas by one step: ``step(state, potential) -> state``.

    Subclasses implement :meth:`step`; those that draw random numbers use
    :attr:`generators` (one per replica, made by :meth:`seed`) and keep every other
    piece of evolving state in :meth:`state_dict`.
    """

    Config: ClassVar[type[ComponentConfig]] = IntegratorConfig

    #: Keeps the system's constraints satisfied, for the minimiser to use as well
    #: (see :class:`~torchmd_core.constraints.ConstraintProjector`); None when the
    #: integrator applies no constraints.
    constraint_solver: ConstraintProjector | None = None
    #: Keys of :meth:`state_dict` that hold one entry per replica (lists, or tensors
    #: whose first dimension is the replica): a distributed run's checkpoint joins
    #: them from every process, and splits them again when it resumes on another
    #: number of processes. Other keys are taken from rank 0.
    replica_state_keys: ClassVar[tuple[str, ...]] = ("generators",)

    def __init__(self, config: ComponentConfig, system: System) -> None:
        self.config = config
        self.system = system
        self.generators: list[torch.Generator] = []
        self._seed = 0

    @property
    def timestep_fs(self) -> float:
        return float(cast(IntegratorConfig, self.config).timestep_fs)

    @property
    def timestep_ps(self) -> float:
        return self.timestep_fs * 1.0e-3

    @property
    def temperature_K(self) -> float | None:
        """The bath temperature for thermostatted integrators, None for NVE."""
        value = getattr(self.config, "temperature_K", None)
        return None if value is None else float(value)

    @property
    def removes_com_motion(self) -> bool:
        """Whether centre-of-mass motion is removed.

        Removing it changes the degrees of freedom.
        """
        return bool(getattr(self.config, "remove_com_motion", False))

    def set_replica_temperatures(self, temperatures_K: Tensor | None) -> None:
        """Give replica ``r`` the bath temperature ``temperatures_K[r]`` (K, shape
        (R,)), as temperature replica exchange does; None returns every replica to the
        configured ``temperature_K``. Thermostatted integrators override this; the
        default refuses.

        Raises:
            ConfigError: the integrator has no heat bath.
        """
        from torchmd_core.errors import ConfigError

        raise ConfigError(
            f"integrator '{self.kind_name()}' has no heat bath whose temperature could "
            "be set per replica; temperature replica exchange needs a thermostatted "
            "integrator (langevin)"
        )

    def seed(
        self, seed: int, n_replicas: int, device: torch.device | str = "cpu"
    ) -> None:
        """Create the per-replica generators: replica ``r`` is seeded ``seed + r``."""
        self._seed = int(seed)
        self.generators = replica_generators(seed, n_replicas, device)

    def setup(self, state: State, potential: Potential) -> State:
        """Called once for a new state, before its first step (e.g. to apply
        constraints to input coordinates).

        Not called again when a simulation continues (a second ``run`` call, or a run
        resumed from a checkpoint): continuing must give bit for bit the trajectory of
        one long run. Keep whatever every step needs in :meth:`state_dict` or build
        it lazily in :meth:`step`. The default returns ``state`` unchanged.
        """
        return state

    @abstractmethod
    def step(self, state: State, potential: Potential) -> State:
        """The state one timestep later (``step`` + 1, ``time_ps`` + dt)."""

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> Integrator:
        """Move internal tensors; the default has none. Returns ``self``."""
        return self

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue the random streams exactly."""
        return {
            "seed": self._seed,
            "generators": [g.get_state() for g in self.generators],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if len(state["generators"]) != len(self.generators):
            raise ValueError(
                f"checkpoint holds {len(state['generators'])} random streams, "
                f"this run has {len(self.generators)} replicas"
            )
        self._seed = int(state["seed"])
        for g, s in zip(self.generators, state["generators"], strict=True):
            g.set_state(s)


def replica_generators(
    seed: int, n_replicas: int, device: torch.device | str = "cpu"
) -> list[torch.Generator]:
    """One generator per replica, replica ``r`` seeded with ``seed + r``."""
    gens = []
    for r in range(n_replicas):
        g = torch.Generator(device=device)
        g.manual_seed(int(seed) + r)
        gens.append(g)
    return gens


def replica_normal(
    generators: list[torch.Generator], shape: tuple[int, ...], like: Tensor
) -> Tensor:
    """(R, *shape) standard normal numbers, replica r drawn from ``generators[r]``."""
    return torch.stack(
        [
            torch.randn(shape, generator=g, device=like.device, dtype=like.dtype)
            for g in generators
        ]
    )
