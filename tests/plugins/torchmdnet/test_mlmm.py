"""ML/MM with a TorchMD-NET model on a region: the model energy of the region plus the
classical remainder equals a hand-built reference, and no intra-region classical term
survives."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch.testing import assert_close

from tests.plugins.torchmdnet.tiny import reference_energy_forces, reference_model
from torchmd_core import PotentialSum, Registry, parse_config
from torchmd_core.builder import build_potentials
from torchmd_core.testing import check_potential, random_state, toy_system

REGION = [3, 4, 5, 6, 10]


def config(potentials: list[dict[str, Any]], registry: Registry) -> Any:
    data = {
        "system": {"topology": "x.prmtop"},
        "potentials": potentials,
        "integrator": {"kind": "toy.verlet"},
        "steps": 0,
    }
    return parse_config(data, registry=registry)


def test_region_model_plus_classical_remainder_equals_hand_built_reference(
    tiny_ckpt: Path, toy_registry
):
    system = toy_system(12)
    cfg = config(
        [
            {"kind": "torchmdnet", "model": str(tiny_ckpt), "atoms": REGION},
            {"kind": "toy.bonds"},
            {"kind": "toy.pairs", "cutoff": 30.0},
        ],
        toy_registry,
    )
    ml, bonds, pairs = build_potentials(cfg, system, toy_registry)
    state = random_state(system, n_replicas=3, seed=31)
    x = state.positions

    # No classical term wholly inside the region survives.
    inside = set(REGION)
    assert not any({i, j} <= inside for i, j in bonds.pairs.tolist())
    excluded = {tuple(p) for p in pairs.exclusions.tolist()}
    assert all((i, j) in excluded for i in REGION for j in REGION if i < j)

    idx = torch.tensor(REGION)
    e_ml, _ = reference_energy_forces(
        reference_model(tiny_ckpt), system.atomic_numbers[idx], x[:, idx]
    )
    ref = e_ml.clone()
    for i in range(11):
        if not {i, i + 1} <= inside:
            ref = ref + 300.0 * ((x[:, i] - x[:, i + 1]).norm(dim=-1) - 1.5) ** 2
    topology_exclusions = {tuple(p) for p in system.exclusions.tolist()}
    for i in range(12):
        for j in range(i + 1, 12):
            if (i, j) in topology_exclusions or {i, j} <= inside:
                continue
            ref = ref + 2.0 * (1 - (x[:, i] - x[:, j]).norm(dim=-1) / 30.0) ** 2

    total = PotentialSum([ml, bonds, pairs], system=system)
    with torch.no_grad():
        assert_close(total.energy(state), ref, rtol=1e-9, atol=1e-9)
    check_potential(total, state, config=False)


def test_without_atoms_the_classical_terms_stay_whole_as_a_prior(
    tiny_ckpt: Path, toy_registry
):
    system = toy_system(12)
    cfg = config(
        [{"kind": "torchmdnet", "model": str(tiny_ckpt)}, {"kind": "toy.bonds"}],
        toy_registry,
    )
    ml, bonds = build_potentials(cfg, system, toy_registry)
    assert len(bonds.pairs) == 11
    state = random_state(system, n_replicas=2, seed=32)
    e_ml, _ = reference_energy_forces(
        reference_model(tiny_ckpt), system.atomic_numbers, state.positions
    )
    with torch.no_grad():
        assert_close((ml + bonds).energy(state), e_ml + bonds.energy(state))
