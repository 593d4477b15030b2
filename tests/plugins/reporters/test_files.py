"""Continuing files after a checkpoint, and refusing files that are not what the
checkpoint recorded (never cutting a file this run did not write)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from torchmd_plugins.reporters.trajectory import dcd_layout

from torchmd_core import (
    CheckpointError,
    Simulation,
    load_checkpoint,
    load_config,
    save_checkpoint,
)

OUTPUTS = [
    {"kind": "csv", "file": "log.csv", "interval": 2},
    {"kind": "dcd", "file": "t.dcd", "interval": 2},
    {"kind": "xtc", "file": "t.xtc", "interval": 2},
]


def checkpointed(tmp_path: Path, toy_config, steps: int = 6) -> tuple[Path, Path]:
    cfg = toy_config(OUTPUTS, steps=20)
    sim = Simulation.from_config(load_config(cfg))
    sim.run(steps)
    save_checkpoint(sim, tmp_path / "c.chk")
    sim.run(4)  # frames after the checkpoint, dropped when resuming
    return cfg, tmp_path / "c.chk"


def resume(cfg: Path, chk: Path) -> Simulation:
    sim = Simulation.from_config(load_config(cfg))
    load_checkpoint(sim, chk)
    sim.run(2, resume=True)
    return sim


def test_resume_drops_frames_written_after_the_checkpoint(tmp_path, toy_config):
    cfg, chk = checkpointed(tmp_path, toy_config)
    resume(cfg, chk)
    steps = [
        line.split(",")[0]
        for line in (tmp_path / "log.csv").read_text().splitlines()[1:]
    ]
    assert steps == ["0", "2", "4", "6", "8"]
    assert dcd_layout(tmp_path / "t.dcd")["frames"] == 5


@pytest.mark.parametrize("name", ["log.csv", "t.dcd", "t.xtc"])
def test_a_file_shorter_than_recorded_is_left_alone(tmp_path, toy_config, name):
    cfg, chk = checkpointed(tmp_path, toy_config)
    path = tmp_path / name
    path.write_bytes(path.read_bytes()[:40])
    before = path.read_bytes()
    with pytest.raises(CheckpointError, match=f"'{path}' has 40 bytes, fewer than the"):
        resume(cfg, chk)
    assert path.read_bytes() == before


def test_a_replaced_csv_is_left_alone(tmp_path, toy_config):
    cfg, chk = checkpointed(tmp_path, toy_config)
    path = tmp_path / "log.csv"
    path.write_text("a,b,c\n" + "1,2,3\n" * 200)
    with pytest.raises(CheckpointError, match="does not start with the columns"):
        resume(cfg, chk)
    assert (
        path.read_text().startswith("a,b,c\n1,2,3\n")
        and path.read_text().count("\n") == 201
    )


def test_a_dcd_of_other_atoms_is_left_alone(tmp_path, toy_config):
    cfg, chk = checkpointed(tmp_path, toy_config)
    data = yaml.safe_load(cfg.read_text())
    data["reporters"][1]["atoms"] = [0, 1, 2]  # same file name, fewer atoms
    cfg.write_text(yaml.safe_dump(data))
    before = (tmp_path / "t.dcd").read_bytes()
    with pytest.raises(CheckpointError, match="does not hold the 4 frames of 3 atoms"):
        resume(cfg, chk)
    assert (tmp_path / "t.dcd").read_bytes()[:92] == before[:92]


def test_a_missing_file_is_an_error_unless_overwrite(tmp_path, toy_config):
    cfg, chk = checkpointed(tmp_path, toy_config)
    (tmp_path / "t.xtc").unlink()
    with pytest.raises(
        CheckpointError, match="was written by the run being continued but is missing"
    ):
        resume(cfg, chk)


def test_stale_segment_of_a_crashed_run_is_discarded(tmp_path, toy_config):
    cfg, chk = checkpointed(tmp_path, toy_config)
    (tmp_path / ".t.dcd.segment").write_bytes(b"half a segment")
    resume(cfg, chk)
    assert not (tmp_path / ".t.dcd.segment").exists()
    assert dcd_layout(tmp_path / "t.dcd")["frames"] == 5


def test_long_continued_runs_splice_segments_as_they_go(
    tmp_path, toy_config, monkeypatch
):
    import torchmd_plugins.reporters.trajectory as module

    monkeypatch.setattr(module, "SEGMENT_FRAMES", 3)
    cfg = toy_config([{"kind": "dcd", "file": "t.dcd", "interval": 1}], steps=40)
    sim = Simulation.from_config(load_config(cfg))
    sim.run(2)
    seen: list[int] = []
    original = module.DCDFile.append_segment

    def spy(self):
        original(self)
        seen.append(dcd_layout(self.path)["frames"])

    monkeypatch.setattr(module.DCDFile, "append_segment", spy)
    sim.run(10)  # continued: frames 3..12 go through segments of 3
    assert seen == [6, 9, 12, 13]
    assert dcd_layout(tmp_path / "t.dcd")["frames"] == 13


def test_two_reporters_writing_one_file_are_refused(tmp_path, toy_registry, capsys):
    from tests.plugins.reporters.conftest import write_config
    from torchmd_core.cli import main

    cfg = write_config(
        tmp_path,
        [
            {"kind": "csv", "file": "out/a.txt"},
            {"kind": "pdb", "file": "x.pdb"},
            {"kind": "dcd", "file": "./out/../out/a.txt"},
        ],
    )
    assert main(["run", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "reporters[2] (kind='dcd').file:" in err
    assert (
        "is also written by reporters[0] (kind='csv'); give each reporter its own file"
        in err
    )
    assert not (tmp_path / "out").exists()
