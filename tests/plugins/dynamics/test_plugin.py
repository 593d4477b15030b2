"""The dynamics plugin end to end: registration, `tmd run`, minimise, restart."""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
import yaml

from tests.conftest import DATA
from tests.plugins.dynamics.systems import simulation
from torchmd_core import default_registry, load_checkpoint, save_checkpoint


def test_the_integrators_and_the_barostat_are_registered():
    registry = default_registry()
    assert {"verlet", "langevin"} <= set(registry.kinds("integrators"))
    assert "montecarlo" in registry.kinds("barostats")


def _issue_config(folder: Path, steps: int) -> Path:
    """The issue's example config (paths are the user's), with fewer steps."""
    import parmed

    for name in ("structure.prmtop", "input.coor", "input.xsc"):
        shutil.copy(DATA / "ala2_solv" / name, folder / name)
    parm = parmed.load_file(str(folder / "structure.prmtop"))
    raw = (folder / "input.coor").read_bytes()
    parm.coordinates = np.frombuffer(raw[4:], dtype="<f8").reshape(-1, 3)
    box = [
        float(x)
        for x in (folder / "input.xsc").read_text().splitlines()[1].split()[1:10]
    ]
    parm.box = [box[0], box[4], box[8], 90.0, 90.0, 90.0]
    parm.save(str(folder / "structure.inpcrd"), format="rst7")
    config = {
        "system": {"topology": "structure.prmtop", "coordinates": "structure.inpcrd"},
        "precision": "float32",
        "device": "cpu",
        "potentials": [
            {"kind": "amber"},
            {"kind": "nonbonded", "cutoff": 9.0, "switch_distance": 7.5},
        ],
        "integrator": {
            "kind": "langevin",
            "timestep_fs": 1.0,
            "temperature_K": 300.0,
            "friction_per_ps": 1.0,
        },
        "reporters": [
            {"kind": "csv", "file": "out/log.csv", "interval": 5},
            {"kind": "dcd", "file": "out/traj.dcd", "interval": 10},
        ],
        "steps": steps,
        "seed": 7,
    }
    path = folder / "run.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def test_tmd_run_runs_the_issue_config(tmp_path):
    path = _issue_config(tmp_path, steps=20)
    done = subprocess.run(
        [sys.executable, "-m", "torchmd_core", "run", str(path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader((tmp_path / "out" / "log.csv").open()))
    assert [int(r["step"]) for r in rows] == [0, 5, 10, 15, 20]
    assert all(200.0 < float(r["temperature_K"]) < 400.0 for r in rows)
    import mdtraj

    traj = mdtraj.load(
        str(tmp_path / "out" / "traj.dcd"), top=str(tmp_path / "structure.prmtop")
    )
    assert traj.n_frames == 3


def test_tmd_run_with_constraints_minimisation_and_barostat(tmp_path):
    path = _issue_config(tmp_path, steps=10)
    config = yaml.safe_load(path.read_text())
    config["system"].update(constraints="hbonds", hydrogen_mass=3.0)
    config["integrator"]["timestep_fs"] = 4.0
    config["barostat"] = {"kind": "montecarlo", "temperature_K": 300.0, "interval": 5}
    config["minimize"] = {"tolerance_kcal_mol_A": 5.0, "max_iterations": 50}
    config["n_replicas"] = 2
    path.write_text(yaml.safe_dump(config))
    done = subprocess.run(
        [sys.executable, "-m", "torchmd_core", "run", str(path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader((tmp_path / "out" / "log.csv").open()))
    assert {(int(r["step"]), int(r["replica"])) for r in rows} == {
        (s, r) for s in (0, 5, 10) for r in (0, 1)
    }
    assert all(float(r["temperature_K"]) > 150.0 for r in rows)


def test_a_checkpointed_run_continues_exactly(tmp_path):
    """Langevin + hbonds + barostat: 12 steps equal 6, a checkpoint, and 6 more."""
    kwargs = dict(
        integrator={"kind": "langevin", "timestep_fs": 2.0, "temperature_K": 300.0},
        cutoff=9.0,
        constraints="hbonds",
        n_replicas=2,
        seed=3,
        initial_temperature_K=300.0,
        precision="float32",
    )
    barostat = {"kind": "montecarlo", "temperature_K": 300.0, "interval": 3}
    whole = simulation("ala2_solv", barostat=barostat, **kwargs)
    whole.run(12)
    first = simulation("ala2_solv", barostat=barostat, **kwargs)
    first.run(6)
    save_checkpoint(first, tmp_path / "run.chk")
    second = simulation("ala2_solv", barostat=barostat, **kwargs)
    load_checkpoint(second, tmp_path / "run.chk")
    second.run(6, resume=True)
    assert torch.equal(second.state.positions, whole.state.positions)
    assert torch.equal(second.state.velocities, whole.state.velocities)
    assert torch.equal(second.state.box, whole.state.box)
