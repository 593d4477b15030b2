"""Fixtures of the plugin's tests. They need the package installed (its entry point)."""

from __future__ import annotations

from collections.abc import Iterator
from importlib import metadata

import pytest
from torchmd_core import Registry, State, System, isolated_registry
from torchmd_core.testing import random_state, toy_system

DISTRIBUTION = "torchmd-restraints"

try:
    metadata.distribution(DISTRIBUTION)
except metadata.PackageNotFoundError:
    pytest.skip(
        f"{DISTRIBUTION} is not installed: pip install -e examples/plugin_template",
        allow_module_level=True,
    )


@pytest.fixture
def registry() -> Iterator[Registry]:
    """torchmd-core's built-ins, this plugin (through its entry point) and the toy
    loaders of toy_components.py; no other installed plugin."""
    import toy_components

    with isolated_registry(
        distributions=["torchmd-core", DISTRIBUTION], plugins=[toy_components]
    ) as reg:
        yield reg


@pytest.fixture
def system() -> System:
    """A 12-atom chain: carbons (even indices) and hydrogens (odd)."""
    return toy_system(12)


@pytest.fixture
def state(system: System) -> State:
    """Two replicas of the chain, float64, no box."""
    return random_state(system, 2, seed=1, temperature_K=None)
