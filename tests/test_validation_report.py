"""The validation page generator (benchmarks/validation_report.py): a small live run
against OpenMM into a temporary page, and the pass/fail logic of its rows."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "validation_report.py"


@pytest.fixture(scope="module")
def report():
    """The generator imported as a module (it puts tests/reference on sys.path)."""
    pytest.importorskip("openmm")
    spec = importlib.util.spec_from_file_location("validation_report", SCRIPT)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules["validation_report"] = module  # dataclasses look the module up
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


@pytest.fixture(scope="module")
def small_page(tmp_path_factory) -> tuple[str, str]:
    """The page for two small systems and the replica suite, written by the script."""
    pytest.importorskip("openmm")
    out = tmp_path_factory.mktemp("validation") / "validation.md"
    argv = [
        sys.executable,
        str(SCRIPT),
        "--quick",
        "--systems",
        "ala2_vacuum",
        "benzamidine",
        "--suites",
        "replicas",
        "--output",
        str(out),
    ]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return out.read_text(), done.stdout


def rows_of(page: str, system_heading: str) -> list[list[str]]:
    """The cells of the per-term table under a system's heading."""
    section = page.split(f"### {system_heading}", 1)[1].split("\n### ", 1)[0]
    return [
        [cell.strip() for cell in line.strip("|").split(" | ")]
        for line in section.splitlines()
        if line.startswith("| ") and not line.startswith("| mode")
    ]


def test_summary_has_a_passing_row_per_system_and_mode(small_page):
    page, _ = small_page
    for system, mode, atoms in [
        ("ala2_vacuum", "nocutoff", 22),
        ("ala2_vacuum", "rf_nonperiodic", 22),
        ("benzamidine", "nocutoff", 18),
        ("benzamidine", "rf_nonperiodic", 18),
    ]:
        line = next(
            row for row in page.splitlines() if row.startswith(f"| {system} | {mode} |")
        )
        cells = [c.strip() for c in line.strip("|").split(" | ")]
        assert cells[2] == str(atoms)
        assert cells[-1] == "✓", line
        assert float(cells[5]) <= float(cells[6])  # |ΔE| within the tolerance
        assert float(cells[7]) <= 1e-3  # max |ΔF|, kcal/mol/Å
    assert "FAIL" not in page
    assert "0 failed" in page


def test_every_term_of_the_amber_system_is_compared(small_page):
    page, _ = small_page
    rows = rows_of(page, "Alanine dipeptide in vacuum (AMBER prmtop)")
    terms = {(r[0], r[1]) for r in rows}
    expected = (
        "bonds",
        "angles",
        "torsions",
        "impropers (periodic)",
        "1-4 LJ",
        "1-4 Coulomb",
        "LJ",
        "electrostatics (Coulomb / RF)",
        "**total**",
    )
    for mode in ("nocutoff", "rf_nonperiodic"):
        assert {(mode, t) for t in expected} <= terms
    for cells in rows:
        assert cells[-1] == "✓", cells
        reference, ours, error = float(cells[2]), float(cells[3]), float(cells[4])
        assert abs(ours - reference) == pytest.approx(
            error, abs=2e-6
        )  # 6 decimals shown
        assert error <= float(cells[5]) and float(cells[6]) <= 1e-3
    harmonic = {
        r[1] for r in rows_of(page, "Benzamidine (CHARMM psf + CGenFF-style prm)")
    }
    assert "impropers (harmonic)" in harmonic


def test_page_says_how_it_was_made(small_page):
    page, stdout = small_page
    assert page.startswith("# Validation\n")
    command = "python benchmarks/validation_report.py --quick --systems ala2_vacuum"
    assert command in page
    assert re.search(r"\*\*quick\*\* .* generated \d{4}-\d\d-\d\d \d\d:\d\d UTC", page)
    assert "OpenMM 8." in page and "torch " in page
    assert "## Known differences" in page and "triclinic" in page
    assert "```python" not in page  # tests/test_docs.py would run it
    assert "## Dynamics" in page
    assert "ala2_vacuum" in stdout


def test_a_row_fails_on_energy_or_force(report):
    big = report.Row("lj", 1.0e5, 1.0e5 + 0.009, 0.0)  # tolerance 1e-7 |E| = 0.01
    assert big.tolerance == pytest.approx(0.01) and big.passed
    assert not report.Row("bonds", 1.0, 1.0 + 2e-3, 0.0).passed  # tolerance 1e-3
    assert not report.Row("bonds", 1.0, 1.0, 2e-3).passed  # force over 1e-3 kcal/mol/Å
    failing = report.Comparison(
        "x",
        "nocutoff",
        3,
        "AmberPrmtopFile",
        [report.Row("bonds", 1.0, 1.1, 0.0)],
        report.Row("total", 1.0, 1.1, 0.0),
        1e-7,
        0.1,
        key="ala2_vacuum",
    )
    assert not failing.passed
    assert failing.worst[0] == pytest.approx(100.0)
    assert "**✗ FAIL**" in "\n".join(report.summary_table([failing]))
    assert "**✗ FAIL**" in "\n".join(report.term_table([failing]))


def test_the_replica_suite_is_reported_with_its_check(small_page):
    page, _ = small_page
    section = page.split("### Replica independence", 1)[1].split("\n## ", 1)[0]
    assert "| batched replicas equal one-replica runs (1e-8 Å) | ✓ |" in section
    figure = next(r for r in section.splitlines() if r.startswith("| max \\|x_batched"))
    assert float(figure.rsplit("|", 2)[1]) <= 1e-8
    assert "### NVE" not in page  # only the suites asked for
