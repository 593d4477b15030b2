"""Fixtures: tiny TorchMD-NET models saved as the files users give (no downloads)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("torchmdnet")

from tests.plugins.torchmdnet.tiny import save_checkpoint, tiny_model


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny TensorNet checkpoint (float64)."""
    return save_checkpoint(
        tiny_model(0), tmp_path_factory.mktemp("tmdnet") / "tiny.ckpt"
    )


@pytest.fixture(scope="session")
def tiny_ckpt_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two tiny checkpoints with different weights (an ensemble)."""
    folder = tmp_path_factory.mktemp("ensemble")
    return (
        save_checkpoint(tiny_model(1), folder / "a.ckpt"),
        save_checkpoint(tiny_model(2), folder / "b.ckpt"),
    )
