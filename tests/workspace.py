"""A scratch stand-in for the repository root, for tests that run the examples and the
documentation as a reader would (``tmd run examples/quickstart/ala2.yaml`` from the
root) without writing into the checkout or running full-length simulations.

Every top-level entry of the checkout is a symlink in the workspace, except
``examples/``: there, every folder is a symlink too except the runnable examples named
in ``COPIED``, which are copied with their configs shortened (``steps:`` and every
reporter ``interval:`` replaced), so their ``output/`` folders land in the workspace.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: Example folders copied (not linked): they write outputs next to their configs.
COPIED = ("quickstart", "library_use", "custom_term")

#: Reduced size of the copied configs: total steps and reporting interval.
STEPS, INTERVAL = 10, 5


def shorten(text: str, steps: int = STEPS, interval: int = INTERVAL) -> str:
    """A YAML config's text with its top-level ``steps:`` and every ``interval:``
    replaced (comments and layout kept)."""
    text, n = re.subn(r"(?m)^steps:\s*\d+", f"steps: {steps}", text)
    assert n == 1, "a config must set steps: once, at the top level"
    return re.sub(r"(?m)^(\s*-?\s*interval:)\s*\d+", rf"\1 {interval}", text)


def make_workspace(path: Path) -> Path:
    """Fill ``path`` with the workspace described above and return it."""
    path.mkdir(parents=True, exist_ok=True)
    for entry in ROOT.iterdir():
        if entry.name.startswith(".") or entry.name == "examples":
            continue
        (path / entry.name).symlink_to(entry)
    examples = path / "examples"
    examples.mkdir()
    for entry in (ROOT / "examples").iterdir():
        if entry.name not in COPIED:
            (examples / entry.name).symlink_to(entry)
            continue
        shutil.copytree(
            entry,
            examples / entry.name,
            ignore=shutil.ignore_patterns("output", "__pycache__"),
        )
        for config in (examples / entry.name).glob("*.yaml"):
            config.write_text(shorten(config.read_text()))
    return path
