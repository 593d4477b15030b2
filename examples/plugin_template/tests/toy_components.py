"""Tiny loaders, so tests run a whole config without shipping molecular input files
(dynamics come from torchmd-core's built-in ``verlet``).

They are registered as a plain plugin object in the ``registry`` fixture
(``isolated_registry(plugins=[toy_components])``), not through an entry point.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import torch
from torchmd_core import (
    CoordinateLoader,
    Coordinates,
    LoaderConfig,
    System,
    TopologyLoader,
    hookimpl,
)
from torchmd_core.geometry import box_from_lengths_angles
from torchmd_core.testing import random_state, toy_system


class ToyTopology(TopologyLoader):
    """Reads ``{"n_atoms": N}`` JSON into torchmd_core.testing.toy_system(N)."""

    extensions = ("toytop",)

    class Config(LoaderConfig):
        kind: Literal["test.toytop"] = "test.toytop"

    def load_topology(self, path: Path, parameters: Any = ()) -> System:
        return toy_system(int(json.loads(Path(path).read_text())["n_atoms"]))


class ToyCoordinates(CoordinateLoader):
    """Reads ``{"positions": [[x, y, z], ...], "box": [a, b, c] or null}`` JSON, Å."""

    extensions = ("toycrd",)

    class Config(LoaderConfig):
        kind: Literal["test.toycrd"] = "test.toycrd"

    def load_coordinates(self, path: Path, system: System | None = None) -> Coordinates:
        data = json.loads(Path(path).read_text())
        box = data.get("box")
        return Coordinates(
            positions=torch.tensor(data["positions"], dtype=torch.float64),
            box=None if box is None else box_from_lengths_angles(*box),
        )


def write_inputs(
    folder: Path, n_atoms: int = 12, box: float | None = None
) -> tuple[Path, Path]:
    """A toy topology and coordinates (a zig-zag chain) in ``folder``."""
    positions = random_state(
        toy_system(n_atoms), 1, seed=0, temperature_K=None
    ).positions[0]
    top, crd = folder / "chain.toytop", folder / "chain.toycrd"
    top.write_text(json.dumps({"n_atoms": n_atoms}))
    crd.write_text(
        json.dumps(
            {"positions": positions.tolist(), "box": None if box is None else [box] * 3}
        )
    )
    return top, crd


@hookimpl
def torchmd_core_register_loaders(register: Callable[[type], None]) -> None:
    register(ToyTopology)
    register(ToyCoordinates)
