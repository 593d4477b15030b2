"""Real force-field systems for the differentiable-simulation tests: the stored inputs
of tests/data with the amber + nonbonded potentials, at the OpenMM reference
positions."""

from __future__ import annotations

from functools import cache

import torch
from torchmd_plugins.amber.bonded import AmberBonded
from torchmd_plugins.nonbonded.nonbonded import Nonbonded

from tests.plugins.amber.conftest import load_reference, load_system
from torchmd_core import PotentialSum, State, System

#: Reference mode → nonbonded settings (see tests/reference/README.md).
MODES = {
    "nocutoff": {},
    "rf_nonperiodic": {"cutoff": 9.0},
    "rf_periodic": {"cutoff": 9.0},
}


@cache
def system(name: str) -> System:
    return load_system(name)


def potential(sys: System, mode: str = "nocutoff", **changes: object) -> PotentialSum:
    """amber + nonbonded for ``sys`` in float64 (a fresh module every call)."""
    config = Nonbonded.Config(**{**MODES[mode], **changes})
    terms = [AmberBonded(None, sys), Nonbonded(config, sys)]
    return PotentialSum(terms, system=sys).to(dtype=torch.float64)


def reference_potential(name: str, mode: str = "nocutoff") -> PotentialSum:
    """:func:`potential` with the cutoff of the stored reference (7 Å for the 15 Å
    water box, 9 Å elsewhere)."""
    meta = load_reference(f"{name}__{mode}").meta
    changes = {} if mode == "nocutoff" else {"cutoff": float(meta["cutoff"])}
    return potential(system(name), mode, **changes)


def reference_state(name: str, mode: str = "nocutoff", n_replicas: int = 1) -> State:
    """The reference positions (and box in periodic modes), float64; the replicas
    after the first are jittered so that they differ."""
    ref = load_reference(f"{name}__{mode}")
    state = ref.state(torch.float64, periodic=mode == "rf_periodic")
    if n_replicas == 1:
        return state
    g = torch.Generator().manual_seed(0)
    x = state.positions.expand(n_replicas, -1, -1).clone()
    x[1:] += 0.02 * torch.randn(x[1:].shape, generator=g, dtype=x.dtype)
    box = None if state.box is None else state.box.expand(n_replicas, 3, 3).clone()
    return State(positions=x, box=box)
