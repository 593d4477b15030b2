"""Checkpoints: atomic writes, exact restart frame by frame, refusing foreign ones."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import types
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytest
import torch
import yaml
from pydantic import Field

from tests.core import toys
from tests.plugins.reporters.conftest import write_config
from torchmd_core import (
    CheckpointError,
    Frame,
    Reporter,
    ReporterConfig,
    Simulation,
    hookimpl,
    isolated_registry,
    load_checkpoint,
    load_config,
    save_checkpoint,
)
from torchmd_core import checkpoint as checkpoint_module
from torchmd_core.checkpoint import atomic_save, read_checkpoint
from torchmd_core.cli import main

ROOT = Path(__file__).resolve().parents[2]


class CrashAt(Reporter):
    """Raises at a given step: a run that dies after writing some frames."""

    class Config(ReporterConfig):
        kind: Literal["test.crash"] = "test.crash"
        interval: int = Field(1, gt=0, description="Steps between checks.")
        step: int = Field(description="Step at which to crash.")

    def report(self, frame: Frame) -> None:
        if frame.step == self.config.step:  # type: ignore[attr-defined]
            raise RuntimeError(f"simulated crash at step {frame.step}")


@hookimpl
def torchmd_core_register_reporters(register: Any) -> None:
    register(CrashAt)


crash_plugin = types.SimpleNamespace(
    torchmd_core_register_reporters=torchmd_core_register_reporters
)

OUTPUTS = [
    {"kind": "csv", "file": "out/log.csv", "interval": 2},
    {"kind": "dcd", "file": "out/traj.dcd", "interval": 1},
    {"kind": "xtc", "file": "out/traj.xtc", "interval": 3},
    {"kind": "pdb", "file": "out/final.pdb"},
    {"kind": "checkpoint", "file": "out/run.chk", "interval": 10},
]


def set_steps(
    config: Path, steps: int, reporters: list[dict[str, Any]] | None = None
) -> None:
    data = yaml.safe_load(config.read_text())
    data["steps"] = steps
    if reporters is not None:
        data["reporters"] = reporters
    config.write_text(yaml.safe_dump(data, sort_keys=False))


def read_csv_rows(path: Path) -> list[list[str]]:
    lines = path.read_text().splitlines()
    header = lines[0].split(",")
    speed = header.index("speed_ns_day")
    return [row.split(",")[:speed] for row in lines]  # speed varies run to run


def trajectory_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix in (".dcd", ".xtc"))


def same_trajectory(a: Path, b: Path) -> None:
    """Byte for byte, except the creation time mdtraj writes into DCD titles."""
    x, y = a.read_bytes(), b.read_bytes()
    if a.suffix == ".dcd":
        from torchmd_plugins.reporters.trajectory import dcd_layout

        header = dcd_layout(a)["header"]
        assert header == dcd_layout(b)["header"]
        assert x[:92] == y[:92], f"{a.name}: DCD header fields differ"
        x, y = x[header:], y[header:]
    assert len(x) == len(y), f"{a.name}: {len(x)} != {len(y)} bytes"
    assert x == y, f"{a.name}: frames differ"


def final_state(path: Path) -> dict[str, torch.Tensor]:
    return read_checkpoint(path)["state"]


@pytest.mark.parametrize("precision", ["float32", "float64"])
@pytest.mark.parametrize("n_replicas", [1, 2], ids=["R1", "R2"])
def test_resume_after_crash_continues_bit_for_bit(tmp_path, precision, n_replicas):
    """A run dies at step 17 (checkpoint at 10, frames written up to 16); resuming from
    the checkpoint gives files and states identical to an uninterrupted run."""
    options = dict(steps=30, precision=precision, n_replicas=n_replicas)
    reference, broken = tmp_path / "reference", tmp_path / "broken"
    reference.mkdir()
    broken.mkdir()
    with isolated_registry(plugins=[toys, crash_plugin]):
        ref_cfg = write_config(reference, OUTPUTS, **options)
        assert main(["run", str(ref_cfg), "--quiet"]) == 0

        cfg = write_config(
            broken, [*OUTPUTS, {"kind": "test.crash", "step": 17}], **options
        )
        assert main(["run", str(cfg), "--quiet"]) == 1  # the crash (an internal error)
        assert read_checkpoint(broken / "out/run.chk")["state"]["step"] == 10
        assert len(read_csv_rows(broken / "out/log.csv")) > 1 + 6  # rows past step 10

        set_steps(cfg, 30, OUTPUTS)
        assert (
            main(["run", str(cfg), "--resume", str(broken / "out/run.chk"), "--quiet"])
            == 0
        )

    assert read_csv_rows(broken / "out/log.csv") == read_csv_rows(
        reference / "out/log.csv"
    )
    steps = [row[0] for row in read_csv_rows(broken / "out/log.csv")[1:]]
    assert len(steps) == len(set(steps)) * n_replicas  # each step once per replica
    ref_files = trajectory_files(reference / "out")
    assert [p.name for p in ref_files] == [
        p.name for p in trajectory_files(broken / "out")
    ]
    assert len(ref_files) == 2 * n_replicas
    for ref in ref_files:  # frame by frame, and byte for byte
        same_trajectory(broken / "out" / ref.name, ref)
    assert not list((broken / "out").glob(".*"))  # no segment or temporary files left
    a, b = final_state(reference / "out/run.chk"), final_state(broken / "out/run.chk")
    assert a["step"] == b["step"] == 30
    for key in ("positions", "velocities", "box", "forces"):
        assert torch.equal(a[key], b[key]), key
    for name in ["final.pdb"] if n_replicas == 1 else ["final_r0.pdb", "final_r1.pdb"]:
        assert (broken / "out" / name).read_text() == (
            reference / "out" / name
        ).read_text()


def test_trajectories_hold_every_frame_once_after_resume(tmp_path):
    import mdtraj

    with isolated_registry(plugins=[toys, crash_plugin]):
        cfg = write_config(
            tmp_path, [*OUTPUTS, {"kind": "test.crash", "step": 13}], steps=30
        )
        main(["run", str(cfg), "--quiet"])
        set_steps(cfg, 30, OUTPUTS)
        assert (
            main(
                ["run", str(cfg), "--resume", str(tmp_path / "out/run.chk"), "--quiet"]
            )
            == 0
        )
    top = mdtraj.load(str(tmp_path / "out/final.pdb")).topology
    dcd = mdtraj.load(str(tmp_path / "out/traj.dcd"), top=top)
    xtc = mdtraj.load(str(tmp_path / "out/traj.xtc"), top=top)
    assert dcd.n_frames == 31  # steps 0..30
    assert xtc.n_frames == 11  # steps 0, 3, ..., 30
    np.testing.assert_allclose(xtc.time, np.arange(0, 31, 3) * 0.002, atol=1e-6)
    np.testing.assert_allclose(dcd.xyz[::3], xtc.xyz, atol=1e-3)


def test_continuing_a_simulation_in_python_equals_one_long_run(tmp_path, toy_registry):
    """run(7) + run(8) on one Simulation == run(15), files included."""
    outputs = [
        {"kind": "dcd", "file": "t.dcd", "interval": 2},
        {"kind": "csv", "file": "l.csv", "interval": 3},
    ]
    results = []
    for name, parts in (("one", [15]), ("two", [7, 8]), ("many", [1, 4, 0, 3, 7])):
        folder = tmp_path / name
        folder.mkdir()
        sim = Simulation.from_config(
            load_config(write_config(folder, outputs, steps=15))
        )
        for n in parts:
            sim.run(n)
        results.append((sim.state, folder / "t.dcd", read_csv_rows(folder / "l.csv")))
    for state, dcd, rows in results[1:]:
        assert torch.equal(state.positions, results[0][0].positions)
        assert torch.equal(state.velocities, results[0][0].velocities)
        same_trajectory(dcd, results[0][1])
        assert rows == results[0][2]


def test_resume_rebuilds_the_same_neighbor_list(tmp_path, toy_registry):
    cfg = load_config(write_config(tmp_path, [], steps=40))
    sim = Simulation.from_config(cfg)
    sim.run(23)
    nl = sim.potential.neighbor_list
    assert nl is not None and nl.n_builds > 1  # rebuilt during the run
    save_checkpoint(sim, tmp_path / "c.chk")
    other = Simulation.from_config(cfg)
    load_checkpoint(other, tmp_path / "c.chk")
    a = nl.update(sim.state.positions, sim.state.box)
    b = other.potential.neighbor_list.update(other.state.positions, other.state.box)
    assert torch.equal(a.pairs, b.pairs)
    assert torch.equal(other.state.forces, sim.state.forces)


def test_checkpoint_of_another_system_is_refused(tmp_path, toy_registry):
    sim = Simulation.from_config(load_config(write_config(tmp_path, [], n_atoms=12)))
    save_checkpoint(sim, tmp_path / "c.chk")
    other_dir = tmp_path / "other"
    other_dir.mkdir()
    other = Simulation.from_config(load_config(write_config(other_dir, [], n_atoms=14)))
    with pytest.raises(CheckpointError, match=r"different system \(12 atoms.*14 atoms"):
        load_checkpoint(other, tmp_path / "c.chk")


def test_checkpoint_of_another_config_names_what_differs(tmp_path, toy_registry):
    cfg = write_config(tmp_path, [], steps=5)
    sim = Simulation.from_config(load_config(cfg))
    sim.run(5)
    save_checkpoint(sim, tmp_path / "c.chk")
    data = yaml.safe_load(cfg.read_text())
    data["integrator"]["timestep_fs"] = 1.0
    data["seed"] = 4
    data["steps"] = 50  # may change
    data["reporters"] = [{"kind": "csv", "file": "new.csv"}]  # may change
    cfg.write_text(yaml.safe_dump(data))
    changed = Simulation.from_config(load_config(cfg))
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(changed, tmp_path / "c.chk")
    text = str(info.value)
    assert "integrator.timestep_fs: 2.0 in the checkpoint, 1.0 in this config" in text
    assert "seed: 3 in the checkpoint, 4 in this config" in text
    assert "steps" not in text.split("\n", 1)[1].split("Only")[0]


def test_same_config_from_another_directory_resumes(
    tmp_path, toy_registry, monkeypatch
):
    cfg = write_config(tmp_path, [], steps=5)
    sim = Simulation.from_config(load_config(cfg))
    sim.run(5)
    save_checkpoint(sim, tmp_path / "c.chk")
    monkeypatch.chdir(tmp_path)
    again = Simulation.from_config(load_config(Path("run.yaml")))  # relative paths now
    load_checkpoint(again, Path("c.chk"))
    assert again.state.step == 5


def test_precision_and_replicas_must_match(tmp_path, toy_registry):
    sim = Simulation.from_config(
        load_config(write_config(tmp_path, [], precision="float64"))
    )
    save_checkpoint(sim, tmp_path / "c.chk")
    f32 = Simulation.from_config(
        load_config(write_config(tmp_path, [], precision="float32"))
    )
    with pytest.raises(CheckpointError, match=r"float64.*float32"):
        load_checkpoint(f32, tmp_path / "c.chk", strict=False)
    r2 = Simulation.from_config(load_config(write_config(tmp_path, [], n_replicas=2)))
    with pytest.raises(CheckpointError, match="1 replicas, this run has 2"):
        load_checkpoint(r2, tmp_path / "c.chk", strict=False)


@pytest.mark.parametrize(
    "damage",
    ["truncated", "garbage", "empty", "not_a_checkpoint", "missing", "directory"],
)
def test_damaged_checkpoints_give_a_clear_error(tmp_path, toy_registry, damage):
    sim = Simulation.from_config(load_config(write_config(tmp_path, [])))
    path = tmp_path / "c.chk"
    save_checkpoint(sim, path)
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(bytes(reversed(data)))
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "not_a_checkpoint":
        torch.save({"weights": torch.zeros(3)}, path)
    elif damage == "missing":
        path.unlink()
    else:
        path.unlink()
        path.mkdir()
    with pytest.raises(CheckpointError, match=str(path).replace("\\", "\\\\")):
        load_checkpoint(sim, path)


def test_a_crash_inside_atomic_save_leaves_the_previous_checkpoint(
    tmp_path, monkeypatch
):
    path = tmp_path / "c.chk"
    atomic_save({"generation": 1, "data": torch.arange(1000)}, path)

    def torn_save(obj: Any, fh: Any) -> None:
        fh.write(b"PK\x03\x04 half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint_module.torch, "save", torn_save)
    with pytest.raises(OSError, match="No space left"):
        atomic_save({"generation": 2, "data": torch.arange(1000)}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=False)["generation"] == 1
    assert list(tmp_path.iterdir()) == [path]  # the temporary file was removed


def test_sigkill_while_writing_checkpoints_never_leaves_a_torn_file(tmp_path):
    """A process that keeps rewriting a large checkpoint is killed at random moments
    (often in the middle of a write); the file is always a complete checkpoint."""
    path = tmp_path / "c.chk"
    script = textwrap.dedent(f"""
        import torch
        from torchmd_core.checkpoint import atomic_save
        big = torch.arange(2_000_000, dtype=torch.float64)
        n = 0
        while True:
            n += 1
            atomic_save({{"generation": n, "data": big + n}}, {str(path)!r})
    """)
    seen = set()
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT)
        try:
            deadline = time.monotonic() + 60
            while not path.exists() and time.monotonic() < deadline:
                time.sleep(0.01)
            temporary = path.with_name(f".c.chk.tmp-{proc.pid}")
            while not temporary.exists() and time.monotonic() < deadline:
                time.sleep(0.001)  # kill while the next checkpoint is being written
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        assert temporary.exists()  # killed mid-write: the half-written file is left
        payload = torch.load(path, weights_only=False)
        n = payload["generation"]
        assert torch.equal(
            payload["data"], torch.arange(2_000_000, dtype=torch.float64) + n
        )
        seen.add(n)
    assert seen


def test_sigkilled_tmd_run_resumes_exactly(tmp_path):
    """``tmd run`` killed with SIGKILL mid-run (frames past the last checkpoint, maybe a
    half-written frame); ``--resume`` gives the uninterrupted run's files."""
    outputs = [
        {"kind": "dcd", "file": "out/traj.dcd", "interval": 1},
        {"kind": "csv", "file": "out/log.csv", "interval": 1},
        {"kind": "checkpoint", "file": "out/run.chk", "interval": 40},
    ]
    runner = textwrap.dedent("""
        import sys, time
        from typing import Any
        from torchmd_core import hookimpl, isolated_registry
        from torchmd_core.cli import main
        from tests.core import toys

        class Slow(toys.MemoryReporter):
            class Config(toys.MemoryReporter.Config):
                kind: Any = "test.slow"
            def report(self, frame):
                time.sleep(0.003)

        class Plugin:
            @hookimpl
            def torchmd_core_register_reporters(self, register):
                register(Slow)

        with isolated_registry(plugins=[toys, Plugin()]):
            sys.exit(main(sys.argv[1:]))
    """)
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    reference.mkdir()
    killed.mkdir()
    cfg = write_config(
        killed, [*outputs, {"kind": "test.slow", "interval": 1}], steps=300
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", runner, "run", str(cfg), "--quiet"], cwd=ROOT, env=env
    )
    try:
        deadline = time.monotonic() + 120
        chk = killed / "out/run.chk"
        while time.monotonic() < deadline:  # wait for a checkpoint past step 80
            if chk.exists() and read_checkpoint(chk)["state"]["step"] >= 80:
                break
            time.sleep(0.02)
        time.sleep(0.07)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    step = read_checkpoint(killed / "out/run.chk")["state"]["step"]
    assert 80 <= step < 300
    with isolated_registry(plugins=[toys]):
        assert (
            main(["run", str(write_config(reference, outputs, steps=300)), "--quiet"])
            == 0
        )
    resumed = subprocess.run(
        [
            sys.executable,
            "-c",
            runner,
            "run",
            str(cfg),
            "--resume",
            str(killed / "out/run.chk"),
            "--quiet",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert resumed.returncode == 0, resumed.stderr
    same_trajectory(killed / "out/traj.dcd", reference / "out/traj.dcd")
    assert read_csv_rows(killed / "out/log.csv") == read_csv_rows(
        reference / "out/log.csv"
    )


def test_resume_with_the_monte_carlo_barostat_is_exact(tmp_path):
    """Box moves (random, accepted or not) rebuild the neighbour list: resuming restores
    the barostat's streams and step size and the list's build positions."""
    barostat = {
        "kind": "montecarlo",
        "pressure_bar": 1000.0,
        "temperature_K": 300.0,
        "interval": 2,
    }
    langevin = {
        "kind": "langevin",
        "timestep_fs": 2.0,
        "temperature_K": 300.0,
        "friction_per_ps": 1.0,
    }
    options = dict(
        steps=30,
        precision="float32",
        n_replicas=2,
        barostat=barostat,
        integrator=langevin,
    )
    reference, broken = tmp_path / "reference", tmp_path / "broken"
    reference.mkdir()
    broken.mkdir()
    outputs = [
        {"kind": "dcd", "file": "out/traj.dcd", "interval": 1},
        {"kind": "checkpoint", "file": "out/run.chk", "interval": 10},
    ]
    with isolated_registry(plugins=[toys, crash_plugin]):
        assert (
            main(["run", str(write_config(reference, outputs, **options)), "--quiet"])
            == 0
        )
        cfg = write_config(
            broken, [*outputs, {"kind": "test.crash", "step": 15}], **options
        )
        assert main(["run", str(cfg), "--quiet"]) == 1
        set_steps(cfg, 30, outputs)
        assert (
            main(["run", str(cfg), "--resume", str(broken / "out/run.chk"), "--quiet"])
            == 0
        )
    a, b = (
        read_checkpoint(reference / "out/run.chk"),
        read_checkpoint(broken / "out/run.chk"),
    )
    assert not torch.equal(a["state"]["box"][0], a["state"]["box"][1])  # boxes moved
    assert int(a["barostat"]["total_accepted"].sum()) > 0
    for key in ("positions", "velocities", "box", "forces"):
        assert torch.equal(a["state"][key], b["state"][key]), key
    for name in ("traj_r0.dcd", "traj_r1.dcd"):
        same_trajectory(broken / "out" / name, reference / "out" / name)
