"""Fixtures of the reporter tests: small runs of the toy system from a config file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.core import toys


def write_config(
    folder: Path,
    reporters: list[dict[str, Any]],
    steps: int = 20,
    n_replicas: int = 1,
    precision: str = "float64",
    box: float | None = 14.0,
    n_atoms: int = 12,
    noise: float = 0.05,
    name: str = "run.yaml",
    **extra: Any,
) -> Path:
    """A config of the toy chain (bonds + soft pairs with a neighbour list, a noisy
    Verlet so that random streams matter) written to ``folder/name``."""
    top, crd = toys.write_toy_inputs(folder, n_atoms=n_atoms, box=box)
    data = {
        "system": {"topology": top.name, "coordinates": crd.name},
        "potentials": [{"kind": "toy.bonds"}, {"kind": "toy.pairs", "cutoff": 3.0}],
        "integrator": {"kind": "toy.verlet", "timestep_fs": 2.0, "noise": noise},
        "reporters": reporters,
        "steps": steps,
        "seed": 3,
        "precision": precision,
        "n_replicas": n_replicas,
        "initial_temperature_K": 300.0,
        "neighbor_skin_A": 0.5,
        **extra,
    }
    path = folder / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture
def toy_config(tmp_path, toy_registry):
    """``toy_config(reporters, **options)`` → path of a toy config in ``tmp_path``."""

    def make(reporters: list[dict[str, Any]], **options: Any) -> Path:
        return write_config(tmp_path, reporters, **options)

    return make
