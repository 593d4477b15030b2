"""The dynamics validations (benchmarks/dynamics_validation.py) in their quick form.

Slow: run with ``pytest -m slow tests/plugins/dynamics`` or with
``python benchmarks/validate.py dynamics`` (which also runs the full-length figures).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).resolve().parents[3] / "benchmarks" / "dynamics_validation.py"


def _module():
    spec = importlib.util.spec_from_file_location("dynamics_validation", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("dynamics_validation", module)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "name", ["nve", "nve_cutoff", "langevin", "constraints", "barostat", "replicas"]
)
def test_dynamics_validation_suite_passes(name, shared_data):
    report = _module().SUITES[name](True)
    assert report.failed == 0, [what for what, ok in report.checks if not ok]
