"""The ``checkpoint`` reporter."""

from __future__ import annotations

import torch
from torchmd_plugins.reporters.checkpoint import CheckpointReporter

from torchmd_core import Simulation, load_config
from torchmd_core.checkpoint import read_checkpoint
from torchmd_core.testing import check_config_roundtrip


def test_config_round_trip():
    check_config_roundtrip(
        CheckpointReporter, CheckpointReporter.Config(file="run.chk")
    )


def test_written_every_interval_and_at_the_end_not_at_the_start(
    tmp_path, toy_config, monkeypatch
):
    import torchmd_plugins.reporters.checkpoint as module

    written: list[int] = []
    original = module.save_checkpoint

    def spy(simulation, path):
        written.append(simulation.state.step)
        original(simulation, path)

    monkeypatch.setattr(module, "save_checkpoint", spy)
    cfg = toy_config(
        [
            {"kind": "checkpoint", "file": "run.chk", "interval": 4},
            {"kind": "csv", "file": "log.csv", "interval": 4},
        ],
        steps=10,
    )
    sim = Simulation.from_config(load_config(cfg))
    sim.run(10)
    assert written == [4, 8, 10]
    payload = read_checkpoint(tmp_path / "run.chk")
    assert payload["state"]["step"] == 10
    assert torch.equal(payload["state"]["positions"], sim.state.positions)
    # The reporters' records are those after step 10 was reported (csv: not due at 10).
    assert (
        payload["reporters"]["csv:log.csv"]["files"]["log.csv"]["frames"] == 3
    )  # rows of steps 0, 4, 8
