"""Hook implementations of the built-in reporters plugin: ``csv``, ``dcd``, ``xtc``,
``pdb`` and ``checkpoint``."""

from __future__ import annotations

from typing import Any

from torchmd_core import hookimpl
from torchmd_plugins.reporters.checkpoint import CheckpointReporter
from torchmd_plugins.reporters.csv import CSVReporter
from torchmd_plugins.reporters.trajectory import DCDReporter, PDBReporter, XTCReporter


@hookimpl
def torchmd_core_register_reporters(register: Any) -> None:
    register(CSVReporter)
    register(DCDReporter)
    register(XTCReporter)
    register(PDBReporter)
    register(CheckpointReporter)
