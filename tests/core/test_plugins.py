"""Discovery through entry points, with a real third-party package built in a test."""

from __future__ import annotations

import importlib
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from torchmd_core import discover, isolated_registry, parse_config
from torchmd_core.cli import main as tmd
from torchmd_core.plugins import DISABLE_ENV

PLUGIN = '''
from __future__ import annotations
from typing import Literal
import torch
from pydantic import Field
from torchmd_core import Potential, PotentialConfig, hookimpl


class CentralSpring(Potential):
    """Pull every atom towards the origin: E = k Σ |x|²."""

    class Config(PotentialConfig):
        kind: Literal["thirdparty.spring"] = "thirdparty.spring"
        k: float = Field(1.0, gt=0, description="Force constant, kcal/mol/Å².")

    def __init__(self, config, system):
        super().__init__(config, system)
        self.k = config.k

    def energy(self, state):
        return self.k * state.positions.square().sum((1, 2))


@hookimpl
def torchmd_core_register_potentials(register):
    register(CentralSpring)


HEADERS = []


@hookimpl
def torchmd_core_run_header(simulation):
    return ["thirdparty-spring 0.1"]
'''


@pytest.fixture(scope="module")
def installed_plugin(tmp_path_factory) -> Path:
    """Build and install a separate distribution into a temporary directory."""
    src = tmp_path_factory.mktemp("src")
    (src / "tmd_spring").mkdir()
    (src / "tmd_spring" / "__init__.py").write_text(PLUGIN)
    (src / "pyproject.toml").write_text(
        textwrap.dedent("""
        [build-system]
        requires = ["setuptools>=61"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "tmd-spring"
        version = "0.1.0"

        [project.entry-points.torchmd_core]
        spring = "tmd_spring"
    """)
    )
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--target",
            str(target),
            str(src),
        ],
        check=True,
        capture_output=True,
    )
    sys.path.insert(0, str(target))
    importlib.invalidate_caches()
    yield target
    sys.path.remove(str(target))
    importlib.invalidate_caches()


def test_third_party_package_is_discovered_and_listed(installed_plugin, capsys):
    reg = discover()
    entry = reg.registration("potentials", "thirdparty.spring")
    assert entry.distribution == "tmd-spring" and entry.version == "0.1.0"
    with isolated_registry(distributions=["torchmd-core", "tmd-spring"]):
        assert tmd(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "thirdparty.spring" in out and "tmd-spring 0.1.0" in out


def test_third_party_kind_is_usable_from_a_config(installed_plugin, tmp_path):
    """Discovered through its entry point, the third-party kind runs in a simulation."""
    from tests.core import toys
    from torchmd_core import Simulation

    top, crd = toys.write_toy_inputs(tmp_path)
    with isolated_registry(
        distributions=["torchmd-core", "tmd-spring"], plugins=[toys]
    ):
        cfg = parse_config(
            {
                "system": {"topology": str(top), "coordinates": str(crd)},
                "potentials": [
                    {"kind": "toy.bonds"},
                    {"kind": "thirdparty.spring", "k": 2.0},
                ],
                "integrator": {"kind": "toy.verlet"},
                "reporters": [{"kind": "toy.memory", "interval": 5}],
                "steps": 10,
            },
        )
        sim = Simulation.from_config(cfg)
        start = sim.state.positions.clone()
        terms = sim.potential.energy_terms(sim.state)
        assert float(terms["thirdparty.spring"][0]) == pytest.approx(
            2.0 * float(start.square().sum()), rel=1e-5
        )
        sim.run(10)
    assert sim.state.step == 10
    assert "thirdparty-spring 0.1" in sim.header  # its run_header hook fired
    assert set(sim.reporters[0].frames[-1].energy_terms) == {
        "toy.bonds",
        "thirdparty.spring",
    }


def test_disabling_a_distribution_by_environment(installed_plugin, monkeypatch):
    monkeypatch.setenv(DISABLE_ENV, "tmd-spring")
    reg = discover()
    assert "thirdparty.spring" not in reg.kinds("potentials")


def test_builtins_arrive_only_through_entry_points():
    from importlib import metadata

    eps = [
        ep
        for ep in metadata.entry_points(group="torchmd_core")
        if ep.dist and ep.dist.name == "torchmd-core"
    ]
    assert {ep.name for ep in eps} >= {
        "amber",
        "nonbonded",
        "dynamics",
        "barostats",
        "reporters",
        "torchmdnet",
    }
    assert all(ep.value.startswith("torchmd_plugins.") for ep in eps)


def test_plugin_that_fails_to_import_is_reported_not_fatal(tmp_path, monkeypatch):
    dist = tmp_path / "broken_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: broken-plugin\nVersion: 1.0\n"
    )
    (dist / "entry_points.txt").write_text(
        "[torchmd_core]\nbroken = no_such_module_xyz\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    reg = discover()
    assert any(
        "broken-plugin" in str(p) and "failed to import" in str(p) for p in reg.problems
    )
    assert reg.plugins  # the built-ins still loaded
