"""``tmd energy``: output formats and clear errors.

Parity figures are in tests/plugins/test_openmm_parity.py.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import DATA
from torchmd_core.cli import main as tmd

PRMTOP = str(DATA / "ala2_solv" / "structure.prmtop")
COOR = str(DATA / "ala2_solv" / "input.coor")


def test_json_is_the_only_output_on_stdout(capsys):
    assert tmd(["energy", PRMTOP, COOR, "--cutoff", "9", "--json"]) == 0
    out, _ = capsys.readouterr()
    data = json.loads(out)
    assert set(data) == {"total", "terms", "n_atoms"} and data["n_atoms"] == 688
    assert data["total"] == pytest.approx(sum(data["terms"].values()), abs=1e-9)
    assert {
        "bonds",
        "angles",
        "torsions",
        "impropers",
        "lj14",
        "coulomb14",
        "lj",
        "coulomb",
    } <= set(data["terms"])


def test_table_output_lists_every_term_and_the_total(capsys):
    assert tmd(["energy", PRMTOP, COOR]) == 0
    out, _ = capsys.readouterr()
    assert "688 atoms; no cutoff; float64" in out
    assert "bonds" in out and out.strip().splitlines()[-1].strip().startswith("total")


def test_float32_and_float64_agree(capsys):
    values = []
    for precision in ("float32", "double"):
        assert (
            tmd(
                [
                    "energy",
                    PRMTOP,
                    COOR,
                    "--cutoff",
                    "9",
                    "--json",
                    "--precision",
                    precision,
                ]
            )
            == 0
        )
        values.append(json.loads(capsys.readouterr().out)["total"])
    assert values[0] == pytest.approx(values[1], rel=1e-5)


def test_forces_are_written_to_exactly_the_name_given(tmp_path, capsys):
    path = tmp_path / "forces"  # no .npy suffix: np.save would have added one
    assert tmd(["energy", PRMTOP, COOR, "--json", "--forces", str(path)]) == 0
    forces = np.load(path)
    assert forces.shape == (688, 3) and forces.dtype == np.float64
    assert abs(forces.sum(axis=0)).max() < 1e-6  # no external field: forces sum to zero
    # an earlier forces file (or an empty one, as from a temp-file helper) is replaced
    empty = tmp_path / "empty.npy"
    empty.touch()
    assert tmd(["energy", PRMTOP, COOR, "--json", "--forces", str(empty)]) == 0
    assert tmd(["energy", PRMTOP, COOR, "--json", "--forces", str(empty)]) == 0
    assert np.load(empty).shape == (688, 3)


def test_other_files_are_not_overwritten(tmp_path, capsys):
    precious = tmp_path / "notes.txt"
    precious.write_text("keep me")
    assert tmd(["energy", PRMTOP, COOR, "--forces", str(precious)]) == 2
    assert (
        "not a .npy array" in capsys.readouterr().err
        and precious.read_text() == "keep me"
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["energy", "missing.prmtop", COOR], "'missing.prmtop' does not exist"),
        (
            ["energy", PRMTOP, str(DATA / "ala3" / "ala_ala_ala.pdb")],
            "33 atoms but topology",
        ),
        (
            [
                "energy",
                str(DATA / "ala3" / "ala_ala_ala.pdb"),
                str(DATA / "ala3" / "ala_ala_ala.pdb"),
            ],
            "holds no force-field parameters",
        ),
        (
            [
                "energy",
                str(DATA / "ala3" / "ala_ala_ala.psf"),
                str(DATA / "ala3" / "ala_ala_ala.pdb"),
            ],
            "needs its force-field parameter files",
        ),
        (
            ["energy", PRMTOP, COOR, "--switch-distance", "7"],
            "--switch-distance needs --cutoff",
        ),
        (
            ["energy", PRMTOP, COOR, "--cutoff", "12"],
            "more than half the smallest box width",
        ),
        (
            ["energy", PRMTOP, COOR, "--cutoff", "9", "--switch-distance", "10"],
            "--switch-distance: must be < cutoff",
        ),
        (["energy", PRMTOP, COOR, "--box", "30", "30"], "--box: give 3 lengths"),
    ],
    ids=[
        "missing",
        "count",
        "no-force-field",
        "psf-without-parameters",
        "switch",
        "cutoff",
        "switch-beyond",
        "box",
    ],
)
def test_bad_input_is_one_clear_message(argv, message, capsys):
    assert tmd(argv) == 2
    out, err = capsys.readouterr()
    assert message in err and "Traceback" not in err and out == ""


def test_box_flag_makes_a_periodic_reaction_field(capsys):
    waterbox = DATA / "waterbox"
    argv = [
        "energy",
        str(waterbox / "structure.psf"),
        str(waterbox / "output.xtc"),
        "--parameters",
        str(waterbox / "parameters.prm"),
        "--cutoff",
        "7",
    ]
    assert tmd([*argv, "--json"]) == 0
    nonperiodic = json.loads(capsys.readouterr().out)
    assert tmd([*argv, "--box", "15", "15", "15", "--json"]) == 0
    periodic = json.loads(capsys.readouterr().out)
    assert (
        periodic["terms"]["dispersion_correction"]
        < 0.0
        == nonperiodic["terms"].get("dispersion_correction", 0.0)
    )
    assert periodic["total"] != nonperiodic["total"]
