"""The third-party plugin template (examples/plugin_template), installed with pip like
any plugin: `tmd plugins` lists it and a config uses it. Skipped when not installed."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib import metadata

import pytest

from torchmd_core import Simulation, isolated_registry, load_config
from torchmd_core.cli import main as tmd
from torchmd_core.plugins import DISABLE_ENV

DIST = "torchmd-restraints"

try:
    VERSION = metadata.version(DIST)
except metadata.PackageNotFoundError:
    pytest.skip(f"{DIST} is not installed: pip install -e examples/plugin_template", allow_module_level=True)


def test_tmd_plugins_lists_the_installed_template():
    env = {k: v for k, v in os.environ.items() if k != DISABLE_ENV}
    out = subprocess.run([sys.executable, "-m", "torchmd_core", "plugins"], env=env,
                         capture_output=True, text=True, check=True).stdout
    rows = [line.split() for line in out.splitlines()]
    for kind in ("restraints.harmonic", "restraints.flat_bottom"):
        assert ["potentials", kind, f"{DIST}:restraints", DIST, VERSION] in [r[:5] for r in rows], out


def test_template_passes_tmd_plugins_check(capsys):
    with isolated_registry(distributions=[DIST]):
        assert tmd(["plugins", "--check"]) == 0, capsys.readouterr().err


def test_config_using_a_restraint_validates_and_runs(tmp_path):
    from tests.core import toys

    # TODO(issue 9): use the built-in loaders and integrators once they are registered.
    top, crd = toys.write_toy_inputs(tmp_path, box=None)
    config = tmp_path / "restrained.yaml"
    config.write_text(
        f"system: {{topology: {top.name}, coordinates: {crd.name}}}\n"
        "potentials:\n"
        "  - kind: toy.bonds\n"
        "  - {kind: restraints.harmonic, atoms: element C, k: 5.0}\n"
        "integrator: {kind: toy.verlet, timestep_fs: 1.0}\n"
        "reporters: [{kind: toy.memory, interval: 2}]\n"
        "initial_temperature_K: 300\n"
        "steps: 6\n"
    )
    with isolated_registry(distributions=["torchmd-core", DIST], plugins=[toys]):
        assert tmd(["run", str(config), "--quiet"]) == 0
        simulation = Simulation.from_config(load_config(config))
        simulation.run(6)
    frames = simulation.reporters[0].frames
    assert [f.state.step for f in frames] == [0, 2, 4, 6]
    restraint = [float(f.energy_terms["restraints.harmonic"][0]) for f in frames]
    assert restraint[0] == 0.0 and restraint[-1] > 0.0  # starts on its reference, then pulls
    assert any(line.startswith(f"{DIST} {VERSION}: restraints.harmonic on 6 atoms") for line in simulation.header)
