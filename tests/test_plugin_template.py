"""The third-party plugin template (examples/plugin_template), installed with pip like
any plugin: `tmd plugins` lists it and a config uses it. Skipped when not installed."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from importlib import metadata

import pytest

from tests.conftest import DATA
from torchmd_core import Simulation, isolated_registry, load_config
from torchmd_core.cli import main as tmd
from torchmd_core.plugins import DISABLE_ENV

DIST = "torchmd-restraints"

try:
    VERSION = metadata.version(DIST)
except metadata.PackageNotFoundError:
    pytest.skip(
        f"{DIST} is not installed: pip install -e examples/plugin_template",
        allow_module_level=True,
    )


def test_tmd_plugins_lists_the_installed_template():
    env = {k: v for k, v in os.environ.items() if k != DISABLE_ENV}
    out = subprocess.run(
        [sys.executable, "-m", "torchmd_core", "plugins"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rows = [line.split() for line in out.splitlines()]
    for kind in ("restraints.harmonic", "restraints.flat_bottom"):
        assert ["potentials", kind, f"{DIST}:restraints", DIST, VERSION] in [
            r[:5] for r in rows
        ], out


def test_template_passes_tmd_plugins_check(capsys):
    with isolated_registry(distributions=[DIST]):
        assert tmd(["plugins", "--check"]) == 0, capsys.readouterr().err


def test_config_using_a_restraint_validates_and_runs(tmp_path):
    """The template's restraint next to the built-in force field, integrator and
    reporter, on real alanine dipeptide input, through `tmd run`."""
    inputs = DATA / "ala2_vacuum"
    config = tmp_path / "restrained.yaml"
    config.write_text(
        f"system: {{topology: {inputs / 'ala2_vacuum.prmtop'}, "
        f"coordinates: {inputs / 'ala2_vacuum.pdb'}}}\n"
        "potentials:\n"
        "  - kind: amber\n"
        "  - kind: nonbonded\n"
        "  - {kind: restraints.harmonic, atoms: element C, k: 5.0}\n"
        "integrator: {kind: langevin, temperature_K: 300, timestep_fs: 1.0}\n"
        "reporters: [{kind: csv, file: log.csv, interval: 2}]\n"
        "initial_temperature_K: 300\n"
        "precision: float64\n"
        "steps: 6\n"
    )
    with isolated_registry(distributions=["torchmd-core", DIST]):
        assert tmd(["run", str(config), "--quiet"]) == 0
        simulation = Simulation.from_config(load_config(config))
        simulation.run(2, overwrite=True)
    with (tmp_path / "log.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["step"]) for r in rows] == [0, 2]  # the second run replaced the log
    restraint = [float(r["restraints.harmonic_kcal_mol"]) for r in rows]
    assert (
        restraint[0] == 0.0 and restraint[-1] > 0.0
    )  # starts on its reference, then pulls
    assert any(
        line.startswith(f"{DIST} {VERSION}: restraints.harmonic on 6 atoms")
        for line in simulation.header
    )
