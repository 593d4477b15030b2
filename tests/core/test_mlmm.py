"""The generic ML/MM mechanism: a potential declares the region it replaces
(Potential.replaced_atoms), System.without_interactions_within drops the interactions
wholly inside it, and build_potentials builds the other potentials from that system."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

import pytest
import torch
from pydantic import Field
from torch import Tensor

from tests.core import toys
from torchmd_core import (
    ComponentConfig,
    ConfigError,
    ParameterTable,
    Potential,
    PotentialConfig,
    PotentialSum,
    Registry,
    State,
    System,
    TopologyError,
    hookimpl,
    isolated_registry,
    parse_config,
)
from torchmd_core.builder import build_potentials
from torchmd_core.geometry import distances
from torchmd_core.testing import random_state, toy_system


class RegionSprings(Potential):
    """E = Σ_{i<j in region} (r_ij − 2)²: a stand-in for a model of a region."""

    class Config(PotentialConfig):
        kind: Literal["toy.region"] = "toy.region"
        atoms: str | tuple[int, ...] = Field(
            description="The region: indices or a selection."
        )

    def __init__(self, config: Config, system: System) -> None:
        super().__init__(config, system)
        idx = self.replaced_atoms(config, system)
        assert idx is not None
        self.register_buffer("pairs", torch.combinations(idx, 2))

    @classmethod
    def replaced_atoms(cls, config: ComponentConfig, system: System) -> Tensor | None:
        return system.select(cls.config_from(config).atoms)  # type: ignore[attr-defined]

    def energy(self, state: State) -> Tensor:
        return (
            (distances(state.positions, self.pairs, state.box) - 2.0).square().sum(-1)
        )


class _RegionPlugin:
    @staticmethod
    @hookimpl
    def torchmd_core_register_potentials(register: Any) -> None:
        register(RegionSprings)


@pytest.fixture
def registry() -> Iterator[Registry]:
    with isolated_registry(plugins=[toys, _RegionPlugin()]) as reg:
        yield reg


def with_torsions_and_pairs14(system: System) -> System:
    """toy_system plus a torsion table and 1-4 pairs along the chain."""
    n = system.n_atoms
    quads = torch.stack([torch.arange(n - 3) + k for k in range(4)], 1)
    system.terms["torsions"] = ParameterTable.per_interaction(
        quads, k=[1.0] * (n - 3), phase=[0.0] * (n - 3), periodicity=[3.0] * (n - 3)
    )
    system.terms["pairs14"] = ParameterTable.per_interaction(
        quads[:, [0, 3]],
        charge_scale=[0.5] * (n - 3),
        sigma=[3.0] * (n - 3),
        epsilon=[0.1] * (n - 3),
    )
    return system


def test_default_potential_replaces_nothing():
    assert (
        toys.HarmonicBonds.replaced_atoms(toys.HarmonicBonds.Config(), toy_system(4))
        is None
    )


def test_without_interactions_within_drops_every_term_wholly_inside():
    system = with_torsions_and_pairs14(toy_system(10))
    region = torch.tensor([2, 3, 4, 5, 8])
    reduced = system.without_interactions_within(region)
    inside = torch.zeros(10, dtype=torch.bool)
    inside[region] = True
    for name, table in system.terms.items():
        kept = reduced.terms[name]
        assert not inside[kept.atoms].all(dim=1).any(), (
            f"{name}: a term wholly inside survived"
        )
        # Everything not wholly inside stays, in order, with its types.
        keep = ~inside[table.atoms].all(dim=1)
        assert torch.equal(kept.atoms, table.atoms[keep]) and torch.equal(
            kept.types, table.types[keep]
        )
        assert kept.values is table.values
    assert (
        len(reduced.terms["bonds"]) == len(system.terms["bonds"]) - 3
    )  # 2-3, 3-4, 4-5
    assert (
        len(reduced.terms["torsions"]) == len(system.terms["torsions"]) - 1
    )  # 2-3-4-5


def test_without_interactions_within_excludes_every_region_pair_once():
    system = toy_system(10)
    reduced = system.without_interactions_within([7, 2, 3])
    pairs = {tuple(p) for p in reduced.exclusions.tolist()}
    assert {(2, 3), (2, 7), (3, 7)} <= pairs
    assert {tuple(p) for p in system.exclusions.tolist()} <= pairs
    assert len(pairs) == len(
        reduced.exclusions
    )  # no duplicates (2-3 was a bond already)
    assert all(i < j for i, j in pairs)
    assert reduced.metadata["replaced_regions"] == ((2, 3, 7),)
    # The original is untouched; what is not an interaction is shared.
    assert len(system.exclusions) == 9 + 8 and reduced.masses is system.masses


def test_without_interactions_within_takes_a_selection_string():
    system = toy_system(6)
    assert torch.equal(
        system.without_interactions_within("index 1 to 3").exclusions,
        system.without_interactions_within([1, 2, 3]).exclusions,
    )
    with pytest.raises(TopologyError, match="matches no atom"):
        system.without_interactions_within("name XYZ")


def config(potentials: list[dict[str, Any]], registry: Registry) -> Any:
    data = {
        "system": {"topology": "x.prmtop"},
        "potentials": potentials,
        "integrator": {"kind": "toy.verlet"},
        "steps": 0,
    }
    return parse_config(data, registry=registry)


def test_build_potentials_gives_the_classical_terms_the_reduced_system(registry):
    system = toy_system(10)
    cfg = config(
        [
            {"kind": "toy.region", "atoms": [2, 3, 4, 5]},
            {"kind": "toy.bonds"},
            {"kind": "toy.pairs", "cutoff": 30.0},
        ],
        registry,
    )
    region, bonds, pairs = build_potentials(cfg, system, registry)
    assert len(region.pairs) == 6  # the region model sees its atoms
    assert {tuple(p) for p in bonds.pairs.tolist()} == {
        (i, i + 1) for i in range(9)
    } - {(2, 3), (3, 4), (4, 5)}
    assert {(2, 5), (3, 5)} <= {tuple(p) for p in pairs.exclusions.tolist()}

    # Hand-built reference: region model + bonds not inside + pairs neither excluded
    # nor inside.
    state = random_state(system, n_replicas=2, seed=3)
    x = state.positions
    inside = set(range(2, 6))
    ref = torch.zeros(2, dtype=x.dtype)
    for i, j in torch.combinations(torch.arange(2, 6), 2).tolist():
        ref = ref + ((x[:, i] - x[:, j]).norm(dim=-1) - 2.0) ** 2
    for i in range(9):
        if not {i, i + 1} <= inside:
            ref = ref + 300.0 * ((x[:, i] - x[:, i + 1]).norm(dim=-1) - 1.5) ** 2
    excluded = {tuple(p) for p in system.exclusions.tolist()}
    for i in range(10):
        for j in range(i + 1, 10):
            if (i, j) in excluded or {i, j} <= inside:
                continue
            r = (x[:, i] - x[:, j]).norm(dim=-1)
            ref = ref + torch.where(
                r < 30.0, 2.0 * (1 - r / 30.0) ** 2, torch.zeros_like(r)
            )
    total = PotentialSum([region, bonds, pairs], system=system)
    torch.testing.assert_close(total.energy(state), ref)


def test_two_regions_each_drop_only_their_own_interactions(registry):
    system = toy_system(10)
    cfg = config(
        [
            {"kind": "toy.region", "atoms": [0, 1, 2]},
            {"kind": "toy.region", "atoms": "index 3 to 5"},
            {"kind": "toy.bonds"},
        ],
        registry,
    )
    *_, bonds = build_potentials(cfg, system, registry)
    # 2-3 joins the two regions: neither model covers it, so it stays classical.
    assert {tuple(p) for p in bonds.pairs.tolist()} == {
        (2, 3),
        (5, 6),
        (6, 7),
        (7, 8),
        (8, 9),
    }


def test_bad_region_is_one_problem_naming_the_potential(registry):
    cfg = config(
        [{"kind": "toy.region", "atoms": "resname NOPE"}, {"kind": "toy.bonds"}],
        registry,
    )
    with pytest.raises(
        ConfigError,
        match=r"potentials\[0\] \(kind='toy.region'\): atom selection 'resname NOPE' "
        "matches no atom",
    ) as info:
        build_potentials(cfg, toy_system(6), registry)
    assert len(info.value.problems) == 1
