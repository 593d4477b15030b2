"""Fixtures of the nonbonded tests: small random systems (see openmm_systems.py)."""

from __future__ import annotations

import pytest
import torch

from tests.plugins.nonbonded.openmm_systems import RandomSystem, random_system
from torchmd_core import State

BOXES = {
    "orthorhombic": dict(lengths=(21.0, 22.0, 23.0), angles=(90.0, 90.0, 90.0)),
    # OpenMM's Reference platform misses pairs in more sheared boxes (see
    # test_triclinic_pairs_openmm_reference_misses): this one it gets right.
    "triclinic": dict(lengths=(23.0, 24.0, 25.0), angles=(75.0, 82.0, 100.0)),
}


@pytest.fixture(scope="module")
def small() -> RandomSystem:
    """64 atoms in a 13 Å box, with NBFIX overrides: fast for conformance checks."""
    return random_system(seed=5, n_side=4, nbfix=True, lengths=(13.0, 13.5, 14.0))


@pytest.fixture(scope="module")
def small_triclinic() -> RandomSystem:
    return random_system(
        seed=6,
        n_side=4,
        nbfix=True,
        lengths=(14.0, 14.5, 15.0),
        angles=(75.0, 82.0, 100.0),
    )


def replicas(
    rs: RandomSystem, n: int = 3, periodic: bool = True, seed: int = 0
) -> State:
    """``n`` jittered copies of ``rs`` (boxes scaled by up to ±2 % when periodic)."""
    g = torch.Generator().manual_seed(seed)
    pos = torch.as_tensor(rs.positions)[None] + 0.1 * torch.randn(
        n, rs.n_atoms, 3, generator=g, dtype=torch.float64
    )
    box = None
    if periodic:
        scale = 1.0 + 0.02 * (
            2 * torch.rand(n, 1, 1, generator=g, dtype=torch.float64) - 1
        )
        box = torch.as_tensor(rs.box)[None] * scale
    return State(positions=pos, box=box)
