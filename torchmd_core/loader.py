"""The loader role: topology readers (→ :class:`System`) and coordinate readers.

Loaders are registered through the ``torchmd_core_register_loaders`` hook and chosen
by file extension (``SystemLoader.extensions``); a config can name one explicitly
(``system.topology_format`` / ``system.coordinates_format``). One class may read both
topologies and coordinates (PDB, for instance).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from torch import Tensor

from torchmd_core.component import Component, ComponentConfig
from torchmd_core.system import System

__all__ = [
    "CoordinateLoader",
    "Coordinates",
    "LoaderConfig",
    "SystemLoader",
    "TopologyLoader",
]


class LoaderConfig(ComponentConfig):
    """Base of loader configurations."""


@dataclass(frozen=True)
class Coordinates:
    """One frame read from a file.

    Attributes:
        positions: (N, 3) float64, Å.
        box: (3, 3) float64 Å box vectors (rows), or None.
        velocities: (N, 3) float64 Å/ps, or None when the file has none.
    """

    positions: Tensor
    box: Tensor | None = None
    velocities: Tensor | None = None

    @property
    def n_atoms(self) -> int:
        return int(self.positions.shape[0])


class SystemLoader(Component, ABC):
    """Base of every loader. ``extensions`` lists the lower-case suffixes it reads."""

    Config: ClassVar[type[ComponentConfig]] = LoaderConfig
    extensions: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: ComponentConfig | None = None) -> None:
        self.config = config if config is not None else self.Config.model_validate({})


class TopologyLoader(SystemLoader):
    """Reads a topology (with its parameter files) into a parameterised System."""

    @abstractmethod
    def load_topology(self, path: Path, parameters: Sequence[Path] = ()) -> System:
        """Read ``path``, and force-field ``parameters`` files if the format needs them.

        Raises:
            InputFileError: the file is missing, unreadable or malformed.
            TopologyError: parameters are missing or inconsistent.
        """


class CoordinateLoader(SystemLoader):
    """Reads positions (and box, velocities when present) of one frame."""

    @abstractmethod
    def load_coordinates(self, path: Path, system: System | None = None) -> Coordinates:
        """Read one frame; ``system`` (when given) lets a reader check atom counts."""
