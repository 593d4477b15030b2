"""The benchmark suite (benchmarks/bench.py): a quick run on the solvated dipeptide
(MD steps and energy + force evaluations) gives well-formed results, page and plot;
skips and targets are decided as documented. No figure is asserted: timings belong to
the benchmark, not to the tests."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks" / "bench.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quick_run_writes_results_page_and_plot(
    shared_data: Path, tmp_path: Path
) -> None:
    pytest.importorskip("openmm")
    pytest.importorskip("matplotlib")
    out = tmp_path / "out"
    done = subprocess.run(
        [
            sys.executable,
            str(BENCH),
            "--quick",
            "--systems",
            "ala2_solvated",
            "--threads",
            "1",
            "--repeats",
            "2",
            "--block-seconds",
            "0.05",
            "--budget-seconds",
            "0.2",
            "--no-cuda",
            "--data",
            str(shared_data),
            "--cache",
            str(tmp_path / "cache"),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr

    data = json.loads((out / "results.json").read_text())
    assert set(data) == {"machine", "options", "results", "wall_s"}
    assert data["options"]["threads"] == 1 and data["options"]["quick"] is True
    assert data["options"]["tasks"] == ["steps", "forces"]
    assert data["machine"]["versions"]["torch"] != "not installed"
    results = data["results"]
    assert [r["task"] for r in results] == ["steps"] * 3 + ["forces"] * 3
    rows = {row["engine"]: row for row in results if row["task"] == "steps"}
    evaluations = {row["engine"]: row for row in results if row["task"] == "forces"}
    assert set(rows) == set(evaluations) == {"torchmd-core", "openmm", "torchmd"}
    expected = ["torchmd-core", "openmm"] + (
        ["torchmd"] if _installed("torchmd") else []
    )
    energies = []
    for engine in expected:
        row = evaluations[engine]
        assert row["status"] == "ok", row
        assert (row["case"], row["n_atoms"], row["evals_per_s"] > 0) == (
            "ala2_solvated",
            688,
            True,
        )
        assert "steps_per_s" not in row and "temperature_K" not in row
        energies.append(row["energy_kcal_mol"])
    # Same positions and physics, float32 (OpenMM single): the same potential energy.
    assert max(energies) - min(energies) < 1e-3 * abs(energies[0]), energies
    check = evaluations["openmm"]["info"]["getstate_ms"]
    assert set(check) == {"positions", "energy_forces"}
    for engine in expected:
        row = rows[engine]
        assert row["status"] == "ok", row
        assert (row["case"], row["device"], row["n_atoms"]) == (
            "ala2_solvated",
            "cpu",
            688,
        )
        assert (
            row["steps_per_s"] > 0 and row["ns_per_day"] > 0 and row["peak_rss_mb"] > 0
        )
        assert (
            len(row["timing"]["block_s"]) >= 1 and row["timing"]["steps_per_block"] >= 1
        )
        assert math.isfinite(row["temperature_K"]), "the run blew up"

    page = (out / "benchmarks.md").read_text()
    for section in ("### Summary", "### Targets of issue 8", "### Every run"):
        assert section in page
    assert "| alanine dipeptide in water | 688 | 1 |" in page
    for label in ("torchmd-core CPU", "OpenMM CPU", "TorchMD CPU"):
        assert f"| alanine dipeptide in water | {label} |" in page
    assert "### One energy + force evaluation (issue 3)" in page
    assert "| alanine dipeptide in water | 688 | " in page.split("(issue 3)")[1]
    assert "| alanine dipeptide in water | OpenMM CPU | 1 |" in page
    assert "getState: positions" in page
    assert "![steps/s against atom count](benchmarks.png)" in page
    assert (out / "benchmarks.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _installed(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def test_torchmd_is_skipped_where_it_cannot_run(bench: ModuleType) -> None:
    args = bench.parse_args([])
    cases = {c.name: c for c in bench.CASES}
    if not _installed("torchmd"):
        pytest.skip("torchmd is not installed")
    assert bench.skip_reason("torchmd", cases["dhfr_2fs"], 23558, args).startswith(
        "TorchMD has no constraints"
    )
    assert "over --torchmd-max-gb" in bench.skip_reason(
        "torchmd", cases["dhfr_1fs"], 23558, args
    )
    assert bench.skip_reason("torchmd", cases["water_1k"], 999, args) is None
    assert bench.skip_reason("openmm", cases["dhfr_2fs"], 23558, args) is None


def _row(
    case: str, engine: str, steps_per_s: float, n_atoms: int, **extra: object
) -> dict[str, Any]:
    return {
        "case": case,
        "engine": engine,
        "device": "cpu",
        "status": "ok",
        "n_atoms": n_atoms,
        "replicas": 1,
        "timestep_fs": 1.0,
        "steps_per_s": steps_per_s,
        "ns_per_day": 0.1,
        "threads": 2,
        "peak_rss_mb": 900.0,
        "temperature_K": 300.0,
        "timing": {"block_s": [0.1], "steps_per_block": 10, "foreign_cores": 0.0},
        **extra,
    }


def test_targets_are_judged_from_the_rows(bench: ModuleType, tmp_path: Path) -> None:
    rows = [
        _row("ala2_solvated", "torchmd-core", 600.0, 688),
        _row("ala2_solvated", "openmm", 1000.0, 688),
        _row("ala2_solvated", "torchmd", 50.0, 688),
        _row("water_1k", "torchmd-core", 100.0, 1000),
        _row("water_100k", "torchmd-core", 0.5, 100_000),  # 2x slower per atom-step
        {
            "case": "water_100k",
            "engine": "torchmd",
            "device": "cpu",
            "status": "skipped",
            "reason": "too big",
            "n_atoms": 100_000,
            "replicas": 1,
            "timestep_fs": 1.0,
        },
    ]
    data = {
        "machine": {
            "date": "now",
            "cpu": "cpu",
            "logical_cpus": 2,
            "usable_cpus": 2,
            "memory_gb": 8.0,
            "gpu": None,
            "versions": {"torch": "x"},
            "commit": "abc",
            "load_average": {"start": 0.1, "end": 0.2},
        },
        "options": {"command": "bench", "quick": False, "threads": 2},
        "wall_s": 60.0,
        "results": rows,
    }
    page = bench.report.render(data, "plot.png")
    assert "| solvated dipeptide ≥ 0.5× OpenMM CPU | 0.6× OpenMM | met |" in page
    assert "| solvated dipeptide ≥ 10× TorchMD | 12× TorchMD | met |" in page
    assert "(2.00×) | **missed** |" in page
    assert "| DHFR 1 fs ≥ 0.5× OpenMM CPU | not measured | – |" in page
    assert "skipped: too big" in page
    (tmp_path / "r.json").write_text(json.dumps(data))
    assert (
        bench.main(["--report", str(tmp_path / "r.json"), "--out", str(tmp_path)]) == 0
    )
    assert (tmp_path / "benchmarks.md").read_text() == bench.report.render(
        data, "benchmarks.png"
    )
    assert (tmp_path / "benchmarks.png").exists()


def test_forces_task_runs_the_shared_systems_and_water_boxes(
    bench: ModuleType,
) -> None:
    assert bench.parse_args([]).tasks == ["steps", "forces"]
    assert bench.parse_args(["--task", "forces"]).tasks == ["forces"]
    names = [c.name for c in bench.forces_cases(list(bench.CASES))]
    assert names == [
        "ala2_solvated",
        "dhfr_1fs",
        *(f"water_{n}k" for n in (1, 3, 10, 30, 100)),
    ]
    with pytest.raises(SystemExit):
        bench.parse_args(["--task", "energy"])


def test_evaluations_get_their_own_table_and_plot_panel(
    bench: ModuleType, tmp_path: Path
) -> None:
    def evaluation(
        case: str, engine: str, evals_per_s: float, n_atoms: int
    ) -> dict[str, Any]:
        row = _row(case, engine, 0.0, n_atoms, task="forces")
        del row["steps_per_s"], row["ns_per_day"], row["temperature_K"]
        return row | {"evals_per_s": evals_per_s, "energy_kcal_mol": -1.0}

    rows = [
        _row("water_1k", "torchmd-core", 100.0, 1000),
        evaluation("water_1k", "torchmd-core", 400.0, 1000),
        evaluation("water_1k", "openmm", 800.0, 1000),
        evaluation("water_100k", "torchmd-core", 2.0, 100_000),  # 2x per atom
    ]
    data = {
        "machine": {
            "date": "now",
            "cpu": "cpu",
            "logical_cpus": 2,
            "usable_cpus": 2,
            "memory_gb": 8.0,
            "versions": {"torch": "x"},
            "commit": "abc",
        },
        "options": {"command": "bench", "quick": False, "threads": 2},
        "wall_s": 60.0,
        "results": rows,
    }
    page = bench.report.render(data, None)
    steps, forces = page.split("### One energy + force evaluation (issue 3)")
    assert "| TIP3P water, 1k atoms | 1,000 | 1 | 100 |" in steps
    assert (
        "| TIP3P water, 1k atoms | 1,000 | 400 | 800 | – | 2.5 | 1.25 | – |" in forces
    )
    assert "torchmd-core 2.5 → 5 µs/atom from 1,000 to 100,000 atoms (2.00×)" in forces
    assert "| TIP3P water, 100k atoms | torchmd-core CPU | 2 | 2 | 500 |" in forces
    bench.report.plot(data, tmp_path / "p.png")
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
