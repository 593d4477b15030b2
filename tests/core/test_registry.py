from __future__ import annotations

import types
from typing import Literal

import pytest

from tests.core import toys
from torchmd_core import (
    Integrator,
    PluginConflictError,
    PluginLoadError,
    PluginNotFoundError,
    Potential,
    PotentialConfig,
    Registry,
    hookimpl,
)


def registry_with(*plugins: object) -> Registry:
    reg = Registry()
    for i, p in enumerate(plugins):
        reg.register_plugin(p, name=f"p{i}", distribution=f"dist-{i}", version="1.0")
    return reg


def test_registered_kinds_are_listed_with_their_distribution():
    reg = registry_with(toys)
    assert reg.kinds("potentials") == ["toy.bonds", "toy.pairs"]
    entry = reg.registration("potentials", "toy.pairs")
    assert entry.distribution == "dist-0" and entry.cls is toys.SoftPairs


def test_unknown_kind_names_available_kinds_and_closest_match():
    reg = registry_with(toys)
    with pytest.raises(PluginNotFoundError) as info:
        reg.get("potentials", "toy.pair")
    msg = str(info.value)
    assert "no potential named 'toy.pair'" in msg
    assert "Did you mean 'toy.pairs'?" in msg
    assert "Available: toy.bonds, toy.pairs" in msg


def test_kind_claimed_twice_is_reported_with_both_distributions():
    class Other(Potential):
        class Config(PotentialConfig):
            kind: Literal["toy.bonds"] = "toy.bonds"

        def energy(self, state):  # pragma: no cover - never evaluated
            return state.positions.sum((1, 2))

    second = types.SimpleNamespace(
        torchmd_core_register_potentials=hookimpl(lambda register: register(Other))
    )
    reg = registry_with(toys, second)
    assert any(
        isinstance(p, PluginConflictError) and "dist-0" in str(p) and "dist-1" in str(p)
        for p in reg.problems
    )
    with pytest.raises(PluginConflictError, match=r"dist-0.*dist-1"):
        reg.get("potentials", "toy.bonds")
    # The other kinds of both plugins still work.
    assert reg.get("potentials", "toy.pairs") is toys.SoftPairs


def test_broken_registration_is_recorded_and_others_still_load():
    def boom(register):
        raise RuntimeError("kaput")

    broken = types.SimpleNamespace(torchmd_core_register_potentials=hookimpl(boom))
    reg = registry_with(broken, toys)
    assert any(
        isinstance(p, PluginLoadError) and "kaput" in str(p) and "dist-0" in str(p)
        for p in reg.problems
    )
    assert "toy.bonds" in reg.kinds("potentials")


def test_registering_a_non_subclass_is_a_clear_error():
    bad = types.SimpleNamespace(
        torchmd_core_register_integrators=hookimpl(
            lambda register: register(toys.HarmonicBonds)
        )
    )
    reg = registry_with(bad)
    assert any(
        "does not subclass torchmd_core.Integrator" in str(p) for p in reg.problems
    )


def test_config_without_kind_default_is_rejected():
    class NoKind(Integrator):
        class Config(toys.ToyVerlet.Config.__base__):  # IntegratorConfig
            pass

        def step(self, state, potential):  # pragma: no cover
            return state

    bad = types.SimpleNamespace(
        torchmd_core_register_integrators=hookimpl(lambda register: register(NoKind))
    )
    reg = registry_with(bad)
    assert any("must give 'kind' a default" in str(p) for p in reg.problems)


def test_unmarked_functions_are_not_hook_implementations():
    plain = types.SimpleNamespace(
        torchmd_core_register_potentials=lambda register: register(toys.HarmonicBonds)
    )
    reg = registry_with(plain)
    assert reg.kinds("potentials") == []
