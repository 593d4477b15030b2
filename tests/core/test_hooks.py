"""One test per hookspec (test_hook_<name without the torchmd_core_ prefix>)."""

from __future__ import annotations

import types
from typing import Any

import pytest

from tests.core import toys
from torchmd_core import (
    ConfigError,
    Simulation,
    hookimpl,
    isolated_registry,
    parse_config,
)
from torchmd_core.checkpoint import load_checkpoint, save_checkpoint


def config_dict(tmp_path, **extra: Any) -> dict:
    top, crd = toys.write_toy_inputs(tmp_path)
    return {
        "system": {"topology": str(top), "coordinates": str(crd)},
        "potentials": [{"kind": "toy.bonds"}],
        "integrator": {"kind": "toy.verlet", "noise": 0.05},
        "reporters": [{"kind": "toy.memory", "interval": 2}],
        "steps": 4,
        **extra,
    }


def build(tmp_path, plugin: object, **extra: Any) -> Simulation:
    with isolated_registry(plugins=[toys, plugin]) as reg:
        cfg = parse_config(config_dict(tmp_path, **extra), registry=reg)
        return Simulation.from_config(cfg, registry=reg)


@pytest.mark.parametrize(
    "role", ["potentials", "integrators", "barostats", "reporters", "loaders"]
)
def test_hook_register_roles(role):
    classes = {
        "potentials": toys.SoftPairs,
        "integrators": toys.ToyVerlet,
        "reporters": toys.MemoryReporter,
        "loaders": toys.ToyTopologyLoader,
    }
    if role == "barostats":
        from torchmd_core import Barostat

        class Shrink(Barostat):
            class Config(Barostat.Config):
                kind: Any = "toy.shrink"

            def apply(self, state, potential):  # pragma: no cover - not run
                return state

        classes[role] = Shrink
    plugin = types.SimpleNamespace(
        **{
            f"torchmd_core_register_{role}": hookimpl(
                lambda register: register(classes[role])
            )
        }
    )
    with isolated_registry(distributions=(), plugins=[plugin]) as reg:
        assert reg.kinds(role) == [classes[role].kind_name()]


def test_hook_register_potentials():
    with isolated_registry(distributions=(), plugins=[toys]) as reg:
        assert reg.get("potentials", "toy.bonds") is toys.HarmonicBonds


def test_hook_register_integrators():
    with isolated_registry(distributions=(), plugins=[toys]) as reg:
        assert reg.get("integrators", "toy.verlet") is toys.ToyVerlet


def test_hook_register_reporters():
    with isolated_registry(distributions=(), plugins=[toys]) as reg:
        assert reg.get("reporters", "toy.memory") is toys.MemoryReporter


def test_hook_register_loaders():
    from pathlib import Path

    with isolated_registry(distributions=(), plugins=[toys]) as reg:
        assert isinstance(
            reg.loader_for(Path("a/b.toytop"), "topology"), toys.ToyTopologyLoader
        )


def test_hook_register_barostats():
    test_hook_register_roles("barostats")


def test_hook_validate_config(tmp_path):
    @hookimpl
    def torchmd_core_validate_config(config):
        if config.steps % 2:
            return ["steps: this plugin needs an even number of steps"]
        return None

    plugin = types.SimpleNamespace(
        torchmd_core_validate_config=torchmd_core_validate_config
    )
    with isolated_registry(plugins=[toys, plugin]) as reg:
        parse_config(config_dict(tmp_path), registry=reg)
        with pytest.raises(ConfigError, match="needs an even number of steps"):
            parse_config(config_dict(tmp_path, steps=5), registry=reg)


def test_hook_add_potentials(tmp_path):
    @hookimpl
    def torchmd_core_add_potentials(config, system):
        return [toys.SoftPairs(toys.SoftPairs.Config(), system)]

    sim = build(
        tmp_path,
        types.SimpleNamespace(torchmd_core_add_potentials=torchmd_core_add_potentials),
    )
    assert sim.potential.term_names == ("toy.bonds", "toy.pairs")


def test_hook_add_reporters(tmp_path):
    extra = []

    @hookimpl
    def torchmd_core_add_reporters(config, system):
        extra.append(
            toys.MemoryReporter(toys.MemoryReporter.Config(interval=1), system)
        )
        return extra

    sim = build(
        tmp_path,
        types.SimpleNamespace(torchmd_core_add_reporters=torchmd_core_add_reporters),
    )
    sim.run(4)
    assert len(extra[0].frames) == 5  # steps 0..4


def test_hook_run_header(tmp_path):
    @hookimpl
    def torchmd_core_run_header(simulation):
        return [f"my-plugin saw {simulation.system.n_atoms} atoms"]

    sim = build(
        tmp_path, types.SimpleNamespace(torchmd_core_run_header=torchmd_core_run_header)
    )
    sim.run(1)
    assert "my-plugin saw 12 atoms" in sim.header
    assert sim.header[0].startswith("torchmd-core ")


def test_hook_run_started(tmp_path):
    seen = []

    @hookimpl
    def torchmd_core_run_started(simulation):
        seen.append((simulation.state.step, simulation.reporters[0].opened))

    sim = build(
        tmp_path,
        types.SimpleNamespace(torchmd_core_run_started=torchmd_core_run_started),
    )
    sim.run(2)
    assert seen == [(0, 1)]  # once, reporters already open


def test_hook_run_finished(tmp_path):
    seen: list[Any] = []

    @hookimpl
    def torchmd_core_run_finished(simulation, error):
        seen.append((simulation.reporters[0].closed, error))

    plugin = types.SimpleNamespace(torchmd_core_run_finished=torchmd_core_run_finished)
    sim = build(tmp_path, plugin)
    sim.run(2)
    assert seen == [(1, None)]

    class Boom(RuntimeError):
        pass

    def explode(state, potential):
        raise Boom("integrator exploded")

    sim = build(tmp_path, plugin)
    sim.integrator.step = explode  # type: ignore[method-assign]
    with pytest.raises(Boom):
        sim.run(2)
    assert (
        isinstance(seen[-1][1], Boom) and seen[-1][0] == 1
    )  # reporters closed, error passed


def test_hook_checkpoint_save(tmp_path):
    @hookimpl
    def torchmd_core_checkpoint_save(simulation, extra):
        extra["my_plugin"] = {"answer": 42}

    sim = build(
        tmp_path,
        types.SimpleNamespace(
            torchmd_core_checkpoint_save=torchmd_core_checkpoint_save
        ),
    )
    save_checkpoint(sim, tmp_path / "c.chk")
    import torch

    assert torch.load(tmp_path / "c.chk", weights_only=False)["extra"]["my_plugin"] == {
        "answer": 42
    }


def test_hook_checkpoint_load(tmp_path):
    restored = []

    @hookimpl
    def torchmd_core_checkpoint_save(simulation, extra):
        extra["my_plugin"] = {"step": simulation.state.step}

    @hookimpl
    def torchmd_core_checkpoint_load(simulation, extra):
        restored.append(extra.get("my_plugin"))

    plugin = types.SimpleNamespace(
        torchmd_core_checkpoint_save=torchmd_core_checkpoint_save,
        torchmd_core_checkpoint_load=torchmd_core_checkpoint_load,
    )
    sim = build(tmp_path, plugin)
    sim.run(3)
    save_checkpoint(sim, tmp_path / "c.chk")
    fresh = build(tmp_path, plugin)
    load_checkpoint(fresh, tmp_path / "c.chk")
    assert restored == [{"step": 3}] and fresh.state.step == 3
