"""The ``csv`` reporter."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from torchmd_plugins.reporters.csv import CSVReporter

from torchmd_core import Simulation, load_config
from torchmd_core.testing import check_config_roundtrip


def read(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_config_round_trip():
    check_config_roundtrip(CSVReporter, CSVReporter.Config(file="log.csv"))


def test_periodic_columns_and_values(tmp_path, toy_config):
    cfg = load_config(
        toy_config([{"kind": "csv", "file": "log.csv", "interval": 4}], steps=12)
    )
    sim = Simulation.from_config(cfg)
    sim.run(12)
    rows = read(tmp_path / "log.csv")
    assert list(rows[0]) == [
        "step",
        "time_ps",
        "potential_kcal_mol",
        "kinetic_kcal_mol",
        "total_kcal_mol",
        "temperature_K",
        "volume_A3",
        "density_g_cm3",
        "toy.bonds_kcal_mol",
        "toy.pairs_kcal_mol",
        "speed_ns_day",
    ]
    assert [r["step"] for r in rows] == ["0", "4", "8", "12"]
    assert [float(r["time_ps"]) for r in rows] == pytest.approx(
        [0.0, 0.008, 0.016, 0.024]
    )
    assert rows[0]["speed_ns_day"] == "" and all(
        float(r["speed_ns_day"]) > 0 for r in rows[1:]
    )
    last = rows[-1]
    frame = sim.measure(sim.state, frozenset({"energy_terms"}))
    assert float(last["potential_kcal_mol"]) == pytest.approx(
        float(frame.potential_energy[0]), abs=1e-6
    )
    assert float(last["kinetic_kcal_mol"]) == pytest.approx(
        float(frame.kinetic_energy[0]), abs=1e-6
    )
    assert float(last["temperature_K"]) == pytest.approx(
        float(frame.temperature_K[0]), abs=1e-4
    )
    assert float(last["volume_A3"]) == pytest.approx(14.0**3)
    mass = float(sim.system.masses.sum())
    assert float(last["density_g_cm3"]) == pytest.approx(
        mass / 14.0**3 * 1.66053907, rel=1e-5
    )
    for r in rows:
        terms = float(r["toy.bonds_kcal_mol"]) + float(r["toy.pairs_kcal_mol"])
        assert terms == pytest.approx(float(r["potential_kcal_mol"]), abs=2e-6)
        total = float(r["potential_kcal_mol"]) + float(r["kinetic_kcal_mol"])
        assert total == pytest.approx(float(r["total_kcal_mol"]), abs=2e-6)


def test_replicas_get_one_row_each_and_vacuum_has_no_volume(tmp_path, toy_config):
    cfg = load_config(
        toy_config(
            [{"kind": "csv", "file": "log.csv", "interval": 5, "energy_terms": False}],
            steps=10,
            n_replicas=3,
            box=None,
        )
    )
    sim = Simulation.from_config(cfg)
    sim.run(10)
    rows = read(tmp_path / "log.csv")
    assert list(rows[0]) == [
        "step",
        "time_ps",
        "replica",
        "potential_kcal_mol",
        "kinetic_kcal_mol",
        "total_kcal_mol",
        "temperature_K",
        "speed_ns_day",
    ]
    assert [(r["step"], r["replica"]) for r in rows] == [
        (s, k) for s in ("0", "5", "10") for k in ("0", "1", "2")
    ]
    frame = sim.measure(sim.state)
    for k in range(3):
        assert float(rows[-3 + k]["potential_kcal_mol"]) == pytest.approx(
            float(frame.potential_energy[k]), abs=1e-6
        )
    assert (
        len({rows[-3 + k]["kinetic_kcal_mol"] for k in range(3)}) == 3
    )  # independent replicas


def test_without_energy_terms_no_extra_evaluation(toy_config):
    cfg = load_config(
        toy_config([{"kind": "csv", "file": "log.csv", "energy_terms": False}])
    )
    sim = Simulation.from_config(cfg)
    assert sim.reporters[0].needs == frozenset()
    assert CSVReporter.needs == frozenset({"energy_terms"})
    assert torch.is_tensor(sim.state.positions)
