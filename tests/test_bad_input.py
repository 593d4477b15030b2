"""Bad input ends in one clear message and exit code 2 (1 for a run that fails), never a
traceback or a hang: explicit cases, and a fuzz test feeding truncated and corrupted
versions of the shared input files to ``tmd energy`` and ``tmd run``."""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from tests.conftest import DATA
from torchmd_core.cli import main

#: Seconds one case may take before it counts as a hang.
TIMEOUT_S = 120


class Hang(BaseException):  # not swallowed by the broad excepts of loaders
    pass


@contextmanager
def time_limit(seconds: int) -> Iterator[None]:
    def on_alarm(signum: int, frame: object) -> None:
        raise Hang(f"no result after {seconds} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def tmd(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str]:
    """Run ``tmd`` in this process; (exit code, stderr).

    Fails on tracebacks and hangs.
    """
    with time_limit(TIMEOUT_S):
        code = main([str(a) for a in args])
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    assert "internal error" not in err, err
    return code, err


# -- the inputs ------------------------------------------------------------------------


def copy_inputs(folder: Path, *names: str) -> list[Path]:
    out = []
    for name in names:
        dst = folder / Path(name).name
        shutil.copy(DATA / name, dst)
        out.append(dst)
    return out


def write_crd(pdb: Path, crd: Path) -> None:
    """A CHARMM coordinate file (standard format) with the atoms of a PDB file."""
    atoms = [
        line
        for line in pdb.read_text().splitlines()
        if line.startswith(("ATOM", "HETATM"))
    ]
    lines = ["* written by the torchmd-core tests", "*", f"{len(atoms):5d}"]
    for i, line in enumerate(atoms, start=1):
        name, resname, resid = (
            line[12:16].strip(),
            line[17:21].strip(),
            int(line[22:26]),
        )
        x, y, z = float(line[30:38]), float(line[38:46]), float(line[46:54])
        segment = line[72:76].strip() or "MOL"
        lines.append(
            f"{i:5d}{resid:5d} {resname:<4} {name:<4}{x:10.5f}{y:10.5f}{z:10.5f} "
            f"{segment:<4} {resid:<4}{0.0:10.5f}"
        )
    crd.write_text("\n".join(lines) + "\n")


def energy_cases(folder: Path) -> dict[str, tuple[Path, list[str | Path]]]:
    """name → (the file to corrupt, tmd arguments)."""
    vac_top, vac_pdb = copy_inputs(
        folder, "ala2_vacuum/ala2_vacuum.prmtop", "ala2_vacuum/ala2_vacuum.pdb"
    )
    psf, bz_pdb, prm = copy_inputs(
        folder, "benzamidine/mol.psf", "benzamidine/mol.pdb", "benzamidine/mol.prm"
    )
    solv_top, coor, _ = copy_inputs(
        folder,
        "ala2_solv/structure.prmtop",
        "ala2_solv/input.coor",
        "ala2_solv/input.xsc",
    )
    water = folder / "water"
    water.mkdir()
    w_psf, w_xtc, w_prm = copy_inputs(
        water,
        "waterbox/structure.psf",
        "waterbox/output.xtc",
        "waterbox/parameters.prm",
    )
    crd = folder / "mol.crd"
    write_crd(bz_pdb, crd)
    charmm = ["--parameters", prm]
    return {
        "prmtop": (vac_top, ["energy", vac_top, vac_pdb]),
        "pdb": (vac_pdb, ["energy", vac_top, vac_pdb]),
        "psf": (psf, ["energy", psf, bz_pdb, *charmm]),
        "prm": (prm, ["energy", psf, bz_pdb, *charmm]),
        "crd": (crd, ["energy", psf, crd, *charmm]),
        "coor": (coor, ["energy", solv_top, coor, "--cutoff", "9"]),
        "xtc": (
            w_xtc,
            ["energy", w_psf, w_xtc, "--parameters", w_prm, "--cutoff", "9"],
        ),
    }


def run_config(folder: Path, steps: int = 3) -> Path:
    top, pdb = copy_inputs(
        folder, "ala2_vacuum/ala2_vacuum.prmtop", "ala2_vacuum/ala2_vacuum.pdb"
    )
    config = {
        "system": {"topology": top.name, "coordinates": pdb.name},
        "potentials": [{"kind": "amber"}, {"kind": "nonbonded"}],
        "integrator": {
            "kind": "langevin",
            "timestep_fs": 1.0,
            "temperature_K": 300.0,
            "friction_per_ps": 1.0,
        },
        "reporters": [{"kind": "csv", "file": "out/log.csv", "interval": 1}],
        "steps": steps,
        "precision": "float64",
    }
    path = folder / "run.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


# -- corruptions -----------------------------------------------------------------------


def _lines(data: bytes) -> list[bytes]:
    return data.splitlines(keepends=True)


def _with_line(
    data: bytes, rng: random.Random, change: Callable[[bytes], bytes | None]
) -> bytes:
    lines = _lines(data)
    for _ in range(50):
        i = rng.randrange(len(lines))
        new = change(lines[i])
        if new is not None:
            lines[i] = new
            return b"".join(lines)
    return data


def _digit_to(letter: bytes) -> Callable[[bytes], bytes | None]:
    def change(line: bytes) -> bytes | None:
        digits = [k for k, c in enumerate(line) if chr(c).isdigit()]
        if not digits:
            return None
        k = digits[len(digits) // 2]
        return line[:k] + letter + line[k + 1 :]

    return change


_DECIMAL = re.compile(rb"-?\d+\.\d+(?:[eE][-+]?\d+)?")


def _number_to_nan(line: bytes) -> bytes | None:
    """A decimal number of the line (parameters, charges, coordinates) becomes NaN."""
    numbers = list(_DECIMAL.finditer(line))
    if not numbers:
        return None
    m = numbers[len(numbers) // 2]
    return line[: m.start()] + b"nan".rjust(m.end() - m.start()) + line[m.end() :]


def _drop_line(data: bytes, rng: random.Random) -> bytes:
    lines = _lines(data)
    if not lines:
        return data
    del lines[rng.randrange(len(lines))]
    return b"".join(lines)


def _flip_bytes(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    for _ in range(8):
        out[rng.randrange(len(out))] = rng.randrange(256)
    return bytes(out)


CORRUPTIONS: dict[str, Callable[[bytes, random.Random], bytes]] = {
    "empty": lambda d, rng: b"",
    "cut_10pc": lambda d, rng: d[: len(d) // 10],
    "cut_half": lambda d, rng: d[: len(d) // 2],
    "cut_last_bytes": lambda d, rng: d[: len(d) - 7],
    "flipped_bytes": _flip_bytes,
    "garbage": lambda d, rng: bytes(
        rng.randrange(256) for _ in range(min(len(d), 4096))
    ),
    "dropped_line": _drop_line,
    "letter_in_number": lambda d, rng: _with_line(d, rng, _digit_to(b"x")),
    "nan_number": lambda d, rng: _with_line(d, rng, _number_to_nan),
}
TEXT_ONLY = {"dropped_line", "letter_in_number", "nan_number"}
BINARY = {"coor", "xtc"}


def corrupt(path: Path, how: str, seed: str) -> None:
    rng = random.Random(f"{seed}-{how}")
    path.write_bytes(CORRUPTIONS[how](path.read_bytes(), rng))


def check_clean_end(code: int, err: str, corrupted: Path, run: bool = False) -> None:
    allowed = {0, 1, 2} if run else {0, 2}
    assert code in allowed, (code, err)
    if code == 2:
        first = err.strip().splitlines()[0] if err.strip() else ""
        assert first, "an error without a message"
        assert corrupted.name in err, err  # says which file is bad
    if code == 1:
        assert err.startswith(("NumericalInstabilityError", "SimulationError")), err


# -- fuzzing ---------------------------------------------------------------------------

ENERGY_FILES = ["prmtop", "pdb", "psf", "prm", "crd", "coor", "xtc"]


ENERGY_CASES = [
    (w, h)
    for w in ENERGY_FILES
    for h in CORRUPTIONS
    if not (h in TEXT_ONLY and w in BINARY)
]


@pytest.mark.parametrize(
    "which, how", ENERGY_CASES, ids=[f"{w}-{h}" for w, h in ENERGY_CASES]
)
def test_tmd_energy_on_corrupted_inputs_ends_cleanly(tmp_path, capsys, which, how):
    target, args = energy_cases(tmp_path)[which]
    corrupt(target, how, which)
    code, err = tmd(capsys, *args)
    check_clean_end(code, err, target)


@pytest.mark.parametrize(
    "how",
    ["empty", "cut_half", "flipped_bytes", "garbage", "nan_number", "letter_in_number"],
)
@pytest.mark.parametrize("which", ["prmtop", "pdb"])
def test_tmd_run_on_corrupted_inputs_ends_cleanly(tmp_path, capsys, which, how):
    config = run_config(tmp_path)
    target = (
        tmp_path / {"prmtop": "ala2_vacuum.prmtop", "pdb": "ala2_vacuum.pdb"}[which]
    )
    corrupt(target, how, which)
    code, err = tmd(capsys, "run", config, "--quiet")
    check_clean_end(code, err, target, run=True)


@pytest.mark.parametrize("how", list(CORRUPTIONS))
def test_tmd_run_on_corrupted_configs_ends_cleanly(tmp_path, capsys, how):
    config = run_config(tmp_path)
    corrupt(config, how, "yaml")
    code, err = tmd(capsys, "run", config, "--quiet")
    check_clean_end(code, err, config, run=True)


def test_the_uncorrupted_inputs_work(tmp_path, capsys):
    for which, (_, args) in energy_cases(tmp_path).items():
        code, err = tmd(capsys, *args)
        assert code == 0, (which, err)
    run = tmp_path / "run"
    run.mkdir()
    code, err = tmd(capsys, "run", run_config(run), "--quiet")
    assert code == 0, err
    assert (run / "out/log.csv").read_text().count("\n") == 5  # header + steps 0..3


# -- explicit cases: one clear message each --------------------------------------------


def test_missing_topology(tmp_path, capsys):
    code, err = tmd(capsys, "energy", tmp_path / "none.prmtop", tmp_path / "none.pdb")
    assert (
        code == 2 and f"input file '{tmp_path / 'none.prmtop'}' does not exist" in err
    )


def test_directory_instead_of_a_file(tmp_path, capsys):
    (tmp_path / "dir.prmtop").mkdir()
    code, err = tmd(
        capsys, "energy", tmp_path / "dir.prmtop", DATA / "ala2_vacuum/ala2_vacuum.pdb"
    )
    assert code == 2 and "is a directory, expected a file" in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file")
def test_unreadable_file(tmp_path, capsys):
    (top,) = copy_inputs(tmp_path, "ala2_vacuum/ala2_vacuum.prmtop")
    top.chmod(0)
    code, err = tmd(capsys, "energy", top, DATA / "ala2_vacuum/ala2_vacuum.pdb")
    assert code == 2 and "cannot read input file" in err and "Permission denied" in err


def test_coordinates_of_another_system_give_both_counts(tmp_path, capsys):
    code, err = tmd(
        capsys,
        "energy",
        DATA / "ala2_vacuum/ala2_vacuum.prmtop",
        DATA / "benzamidine/mol.pdb",
    )
    assert code == 2
    assert "'mol.pdb' has 18 atoms" in err.replace(str(DATA / "benzamidine") + "/", "")
    assert "has 22" in err


def test_missing_parameters_name_the_atom_types(tmp_path, capsys):
    psf, pdb, prm = copy_inputs(
        tmp_path, "benzamidine/mol.psf", "benzamidine/mol.pdb", "benzamidine/mol.prm"
    )
    lines = prm.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("BONDS"))
    removed = lines.pop(
        start
        + 1
        + next(
            k
            for k, line in enumerate(lines[start + 1 :])
            if line.strip() and not line.startswith("!")
        )
    )
    prm.write_text("\n".join(lines) + "\n")
    code, err = tmd(capsys, "energy", psf, pdb, "--parameters", prm)
    assert code == 2
    types = removed.split()[:2]
    assert all(t in err for t in types), (removed, err)


def test_unknown_potential_kind_suggests_the_closest(tmp_path, capsys):
    config = run_config(tmp_path)
    data = yaml.safe_load(config.read_text())
    data["potentials"][1]["kind"] = "nonbond"
    config.write_text(yaml.safe_dump(data))
    code, err = tmd(capsys, "run", config)
    assert (
        code == 2 and "no potential named 'nonbond'. Did you mean 'nonbonded'?" in err
    )
    assert "Available: amber" in err


def test_invalid_values_are_reported_together_with_lines(tmp_path, capsys):
    config = run_config(tmp_path)
    data = yaml.safe_load(config.read_text())
    data["integrator"]["timestep_fs"] = -2.0
    data["potentials"][1].update(cutoff=8.0, switch_distance=9.0)
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    code, err = tmd(capsys, "run", config)
    assert code == 2
    assert "integrator (kind='langevin').timestep_fs: must be > 0, got -2.0" in err
    assert "potentials[1] (kind='nonbonded')" in err and "switch_distance" in err
    assert err.count("line ") >= 2


def test_cutoff_beyond_half_the_box(tmp_path, capsys):
    top, coor, _ = copy_inputs(
        tmp_path,
        "ala2_solv/structure.prmtop",
        "ala2_solv/input.coor",
        "ala2_solv/input.xsc",
    )
    code, err = tmd(capsys, "energy", top, coor, "--cutoff", "12")
    assert code == 2 and "more than half the smallest box width" in err and "9.8" in err
    config = run_config(tmp_path)
    data = yaml.safe_load(config.read_text())
    data["system"] = {"topology": top.name, "coordinates": coor.name}
    data["potentials"][1]["cutoff"] = 12.0
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    code, err = tmd(capsys, "run", config)
    assert code == 2
    assert (
        "potentials[1] (kind='nonbonded').cutoff: 12.0 Å is more than half the "
        "smallest box width" in err
    )


def test_malformed_yaml_names_file_and_line(tmp_path, capsys):
    config = run_config(tmp_path)
    text = config.read_text().replace("steps: 3", "steps: 3\n  bad indent: [")
    config.write_text(text)
    code, err = tmd(capsys, "run", config)
    assert code == 2 and f"'{config}' is not valid YAML at line" in err
