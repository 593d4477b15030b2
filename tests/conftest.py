"""Shared fixtures. Tests see only the built-in plugins unless they ask for more."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from torchmd_core import Registry, isolated_registry

DATA = Path(__file__).parent / "data"
REFERENCE = Path(__file__).parent / "reference"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"

# Test systems are small: one thread avoids OpenMP overhead and oversubscription.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def builtin_registry() -> Iterator[Registry]:
    """Hide third-party plugins installed in the environment from every test."""
    with isolated_registry() as registry:
        yield registry


@pytest.fixture
def toy_registry() -> Iterator[Registry]:
    """The built-ins plus the toy components of tests/core/toys.py."""
    from tests.core import toys

    with isolated_registry(plugins=[toys]) as registry:
        yield registry


@pytest.fixture
def shared_data() -> Path:
    """../shared/data when present beside the checkout (benchmark-size inputs)."""
    if not SHARED.exists():
        pytest.skip("../shared/data is not beside this checkout")
    return SHARED
