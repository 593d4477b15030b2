"""Hook implementations of the built-in reporters plugin: ``csv``, ``dcd``, ``xtc``,
``pdb`` and ``checkpoint``; and a config check that no two reporters write one file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torchmd_core import SimulationConfig, hookimpl
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


@hookimpl
def torchmd_core_validate_config(config: SimulationConfig) -> list[str] | None:
    """Two reporters writing the same file would destroy each other's output."""
    writers: dict[Path, int] = {}
    problems = []
    for i, reporter in enumerate(config.reporters):
        file = getattr(reporter, "file", None)
        if file is None:
            continue
        path = Path(file).resolve()
        if path in writers:
            j = writers[path]
            problems.append(
                f"reporters[{i}] (kind={reporter.kind!r}).file: '{file}' is also "
                f"written by reporters[{j}] (kind={config.reporters[j].kind!r}); give "
                "each reporter its own file"
            )
        else:
            writers[path] = i
    return problems or None
