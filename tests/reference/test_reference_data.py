"""The stored OpenMM references are complete and self-consistent (no OpenMM needed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

REFERENCE_DIR = Path(__file__).resolve().parent
ROOT = REFERENCE_DIR.parents[1]
FILES = sorted(REFERENCE_DIR.glob("*.npz"))
TERMS = {
    "bonds", "angles", "urey_bradley", "torsions", "impropers", "harmonic_impropers",
    "cmap", "lj14", "coulomb14", "lj", "coulomb", "dispersion_correction",
}  # fmt: skip
MAX_BYTES = 1_100_000  # every committed file stays about 1 MB or less


def load(path: Path) -> tuple[dict[str, np.ndarray], dict]:
    with np.load(path) as data:
        arrays = {key: data[key] for key in data.files}
    return arrays, json.loads(str(arrays.pop("meta")))


def test_reference_files_exist():
    assert len(FILES) >= 20


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_reference_terms_add_up_to_total(path):
    arrays, meta = load(path)
    n = meta["n_atoms"]
    assert arrays["positions"].shape == (n, 3)
    assert set(meta["terms"]) <= TERMS
    energies = [float(arrays[f"energy_{t}"]) for t in meta["terms"]]
    forces = [arrays[f"forces_{t}"] for t in meta["terms"]]
    assert all(f.shape == (n, 3) for f in forces)
    scale = max(1.0, sum(abs(e) for e in energies))
    assert abs(sum(energies) - float(arrays["energy_total"])) <= 1e-9 * scale
    total = arrays["forces_total"]
    assert np.abs(sum(forces) - total).max() <= 1e-9 * max(1.0, np.abs(total).max())


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_reference_metadata_matches_contents(path):
    arrays, meta = load(path)
    assert path.stem == f"{meta['system']}__{meta['mode']}"
    assert ("box" in arrays) == meta["periodic"]
    assert ("energy_dispersion_correction" in arrays) == (
        meta["periodic"] and meta["dispersion_correction"]
    )
    if "forces_dispersion_correction" in arrays:
        assert not arrays["forces_dispersion_correction"].any()
    for name in meta["files"]:
        assert (ROOT / name).is_file(), name


def test_committed_reference_files_are_small():
    data = [p for p in (ROOT / "tests" / "data").rglob("*") if p.is_file()]
    for path in [*FILES, *data]:
        assert path.stat().st_size <= MAX_BYTES, path
