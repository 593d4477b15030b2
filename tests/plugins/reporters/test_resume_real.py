"""Exact restart with the built-in physics: alanine dipeptide (AMBER, reaction field
with switching), Langevin with constraints, float32, two replicas; solvated with the
Monte Carlo barostat in the slow suite. A run dies between checkpoints; the resumed
run's files and states are those of an uninterrupted run, frame by frame."""

from __future__ import annotations

import shutil
from pathlib import Path

import mdtraj
import numpy as np
import pytest
import torch
import yaml

from tests.conftest import DATA
from tests.core.test_checkpoint import crash_plugin, read_csv_rows, same_trajectory
from torchmd_core import isolated_registry
from torchmd_core.checkpoint import read_checkpoint
from torchmd_core.cli import main

OUTPUTS = [
    {"kind": "csv", "file": "out/log.csv", "interval": 2},
    {"kind": "dcd", "file": "out/traj.dcd", "interval": 2},
    {"kind": "xtc", "file": "out/solute.xtc", "interval": 3, "atoms": "not water"},
    {"kind": "checkpoint", "file": "out/run.chk", "interval": 8},
]


def solvated_config(folder: Path, reporters: list, steps: int, **changes) -> Path:
    for name in ("structure.prmtop", "input.coor", "input.xsc"):
        shutil.copy(DATA / "ala2_solv" / name, folder / name)
    config = {
        "system": {
            "topology": "structure.prmtop",
            "coordinates": "input.coor",
            "constraints": "hbonds",
        },
        "potentials": [
            {"kind": "amber"},
            {"kind": "nonbonded", "cutoff": 9.0, "switch_distance": 7.5},
        ],
        "integrator": {
            "kind": "langevin",
            "timestep_fs": 2.0,
            "temperature_K": 300.0,
            "friction_per_ps": 1.0,
        },
        "barostat": {
            "kind": "montecarlo",
            "pressure_bar": 1.0,
            "temperature_K": 300.0,
            "interval": 3,
        },
        "reporters": reporters,
        "steps": steps,
        "seed": 11,
        "precision": "float32",
        "n_replicas": 2,
        "neighbor_skin_A": 0.3,
        **changes,
    }
    path = folder / "run.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


VACUUM_OUTPUTS = [
    {"kind": "csv", "file": "out/log.csv", "interval": 2},
    {"kind": "dcd", "file": "out/traj.dcd", "interval": 1},
    {"kind": "xtc", "file": "out/backbone.xtc", "interval": 3, "atoms": "backbone"},
    {"kind": "checkpoint", "file": "out/run.chk", "interval": 8},
]


def vacuum_config(folder: Path, reporters: list, steps: int) -> Path:
    for name in ("ala2_vacuum.prmtop", "ala2_vacuum.pdb"):
        shutil.copy(DATA / "ala2_vacuum" / name, folder / name)
    config = {
        "system": {
            "topology": "ala2_vacuum.prmtop",
            "coordinates": "ala2_vacuum.pdb",
            "constraints": "hbonds",
        },
        "potentials": [
            {"kind": "amber"},
            {"kind": "nonbonded", "cutoff": 6.0, "switch_distance": 5.0},
        ],
        "integrator": {
            "kind": "langevin",
            "timestep_fs": 2.0,
            "temperature_K": 300.0,
            "friction_per_ps": 5.0,
        },
        "reporters": reporters,
        "steps": steps,
        "seed": 5,
        "precision": "float32",
        "n_replicas": 2,
        "neighbor_skin_A": 0.2,
    }
    path = folder / "run.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def test_langevin_constraints_float32_resume_exactly(tmp_path):
    reference, broken = tmp_path / "reference", tmp_path / "broken"
    reference.mkdir()
    broken.mkdir()
    with isolated_registry(plugins=[crash_plugin]):
        assert (
            main(["run", str(vacuum_config(reference, VACUUM_OUTPUTS, 40)), "--quiet"])
            == 0
        )
        cfg = vacuum_config(
            broken, [*VACUUM_OUTPUTS, {"kind": "test.crash", "step": 29}], 40
        )
        assert main(["run", str(cfg), "--quiet"]) == 1
        assert read_checkpoint(broken / "out/run.chk")["state"]["step"] == 24
        data = yaml.safe_load(cfg.read_text())
        data["reporters"] = VACUUM_OUTPUTS
        cfg.write_text(yaml.safe_dump(data, sort_keys=False))
        assert (
            main(["run", str(cfg), "--resume", str(broken / "out/run.chk"), "--quiet"])
            == 0
        )
    a = read_checkpoint(reference / "out/run.chk")
    b = read_checkpoint(broken / "out/run.chk")
    assert a["state"]["step"] == 40 and a["state"]["positions"].dtype == torch.float32
    for key in ("positions", "velocities", "forces", "potential_energy"):
        assert torch.equal(a["state"][key], b["state"][key]), key
    assert a["neighbor_list"]["positions"] is not None
    assert read_csv_rows(broken / "out/log.csv") == read_csv_rows(
        reference / "out/log.csv"
    )
    for name in ("traj_r0.dcd", "traj_r1.dcd", "backbone_r0.xtc", "backbone_r1.xtc"):
        same_trajectory(broken / "out" / name, reference / "out" / name)
    from torchmd_core import Simulation, load_config

    system = Simulation.from_config(load_config(cfg)).system
    top = system.topology
    dcd = mdtraj.load_dcd(str(broken / "out/traj_r1.dcd"), top=top)
    assert dcd.n_frames == 41 and dcd.unitcell_vectors is None
    backbone = system.select("backbone").numpy()
    assert len(backbone) >= 4
    xtc = mdtraj.load_xtc(str(broken / "out/backbone_r1.xtc"), top=top.subset(backbone))
    np.testing.assert_allclose(xtc.xyz, dcd.xyz[::3][:, backbone], atol=6e-4)


@pytest.mark.slow
def test_langevin_barostat_constraints_float32_resume_exactly(tmp_path):
    reference, broken = tmp_path / "reference", tmp_path / "broken"
    reference.mkdir()
    broken.mkdir()
    with isolated_registry(plugins=[crash_plugin]):
        assert (
            main(["run", str(solvated_config(reference, OUTPUTS, 24)), "--quiet"]) == 0
        )
        cfg = solvated_config(
            broken, [*OUTPUTS, {"kind": "test.crash", "step": 21}], 24
        )
        assert main(["run", str(cfg), "--quiet"]) == 1
        assert read_checkpoint(broken / "out/run.chk")["state"]["step"] == 16
        data = yaml.safe_load(cfg.read_text())
        data["reporters"] = OUTPUTS
        cfg.write_text(yaml.safe_dump(data, sort_keys=False))
        assert (
            main(["run", str(cfg), "--resume", str(broken / "out/run.chk"), "--quiet"])
            == 0
        )

    a = read_checkpoint(reference / "out/run.chk")
    b = read_checkpoint(broken / "out/run.chk")
    for key in ("positions", "velocities", "box", "forces", "potential_energy"):
        assert torch.equal(a["state"][key], b["state"][key]), key
    assert not torch.equal(
        a["state"]["box"][0], a["state"]["box"][1]
    )  # the barostat moved
    assert torch.equal(a["barostat"]["n_accepted"], b["barostat"]["n_accepted"])
    assert read_csv_rows(broken / "out/log.csv") == read_csv_rows(
        reference / "out/log.csv"
    )
    names = sorted(
        p.name
        for p in (reference / "out").glob("*.*c*")
        if p.suffix in (".dcd", ".xtc")
    )
    assert names == ["solute_r0.xtc", "solute_r1.xtc", "traj_r0.dcd", "traj_r1.dcd"]
    for name in names:
        same_trajectory(broken / "out" / name, reference / "out" / name)
    solute = mdtraj.load_xtc(
        str(broken / "out/solute_r1.xtc"),
        top=mdtraj.load_prmtop(str(broken / "structure.prmtop")).subset(range(22)),
    )
    assert solute.n_frames == 9 and solute.n_atoms == 22
    np.testing.assert_allclose(solute.time, np.arange(0, 25, 3) * 0.002, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("parts", [[4, 8], [3, 1, 8]], ids=["two", "three"])
def test_python_continuation_matches_one_run(tmp_path, parts):
    from torchmd_core import Simulation, load_config

    states = []
    for name, split in (("one", [sum(parts)]), ("split", parts)):
        folder = tmp_path / name
        folder.mkdir()
        sim = Simulation.from_config(
            load_config(solvated_config(folder, [], sum(parts), n_replicas=1))
        )
        for n in split:
            sim.run(n)
        states.append(sim.state)
    assert torch.equal(states[0].positions, states[1].positions)
    assert torch.equal(states[0].velocities, states[1].velocities)
    assert torch.equal(states[0].box, states[1].box)
