"""The ``tmd`` command: run, plugins, schema.

Exit codes, and messages without tracebacks.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.plugins.reporters.conftest import write_config
from torchmd_core import __version__
from torchmd_core.cli import main

ROOT = Path(__file__).resolve().parents[2]
BUILTIN_REPORTERS = ("checkpoint", "csv", "dcd", "pdb", "xtc")


def run_tmd(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, captured.out, captured.err


def edit(config: Path, change) -> None:
    data = yaml.safe_load(config.read_text())
    change(data)
    config.write_text(yaml.safe_dump(data, sort_keys=False))


def test_version_and_help(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and __version__ in capsys.readouterr().out
    assert main([]) == 2
    with pytest.raises(SystemExit) as info:
        main(["run"])  # CONFIG missing
    assert info.value.code == 2 and "CONFIG" in capsys.readouterr().err


def test_plugins_lists_the_builtin_reporters(capsys):
    code, out, _ = run_tmd(capsys, "plugins")
    assert code == 0
    for kind in BUILTIN_REPORTERS:
        line = next(
            line for line in out.splitlines() if line.split()[:2] == ["reporters", kind]
        )
        assert "torchmd-core:reporters" in line


def test_schema_has_every_reporter_kind_with_described_fields(capsys):
    code, out, _ = run_tmd(capsys, "schema")
    schema = json.loads(out)
    assert code == 0
    kinds = {
        d["properties"]["kind"].get("const", d["properties"]["kind"].get("default"))
        for name, d in schema["$defs"].items()
        if "kind" in d.get("properties", {})
    }
    assert set(BUILTIN_REPORTERS) <= kinds
    dcd = next(
        d
        for d in schema["$defs"].values()
        if d.get("properties", {}).get("kind", {}).get("default") == "dcd"
    )
    assert all(
        f.get("description") for n, f in dcd["properties"].items() if n != "kind"
    )


def test_run_writes_outputs_and_refuses_to_replace_them(tmp_path, toy_registry, capsys):
    cfg = write_config(
        tmp_path, [{"kind": "csv", "file": "out/log.csv", "interval": 5}], steps=10
    )
    code, _, err = run_tmd(capsys, "run", str(cfg))
    assert code == 0 and "finished 10 steps" in err
    code, _, err = run_tmd(capsys, "run", str(cfg))
    assert code == 2
    assert (
        f"OutputExistsError: output file '{tmp_path / 'out/log.csv'}' exists already"
        in err
    )
    assert "--resume CHECKPOINT" in err and "--overwrite" in err
    code, _, _ = run_tmd(capsys, "run", str(cfg), "--overwrite", "--quiet")
    assert code == 0
    assert (tmp_path / "out/log.csv").read_text().count(
        "\n"
    ) == 4  # header + steps 0, 5, 10


def test_missing_config(tmp_path, capsys):
    code, _, err = run_tmd(capsys, "run", str(tmp_path / "nope.yaml"))
    assert code == 2 and f"config file '{tmp_path / 'nope.yaml'}' does not exist" in err


def test_malformed_yaml_names_file_and_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("system:\n  topology: a.prmtop\nsteps: [1, 2\nseed: 1\n")
    code, _, err = run_tmd(capsys, "run", str(bad))
    assert code == 2 and f"'{bad}' is not valid YAML at line" in err


def test_unknown_reporter_kind_suggests_the_closest(tmp_path, toy_registry, capsys):
    cfg = write_config(tmp_path, [{"kind": "dcdd", "file": "t.dcd"}])
    code, _, err = run_tmd(capsys, "run", str(cfg))
    assert code == 2
    assert "reporters[0].kind: no reporter named 'dcdd'. Did you mean 'dcd'?" in err
    assert "Available: checkpoint, csv, dcd, pdb" in err


def test_invalid_field_values_are_all_reported(tmp_path, toy_registry, capsys):
    cfg = write_config(
        tmp_path,
        [
            {"kind": "csv", "file": "l.csv", "interval": 0},
            {"kind": "dcd", "interval": 10},
        ],
    )
    edit(cfg, lambda d: d["integrator"].update(timestep_fs=-2.0))
    code, _, err = run_tmd(capsys, "run", str(cfg))
    assert code == 2
    assert "3 problems in config" in err
    assert "integrator (kind='toy.verlet').timestep_fs: must be > 0, got -2.0" in err
    assert "reporters[0] (kind='csv').interval: must be > 0, got 0" in err
    assert "reporters[1] (kind='dcd').file: required field missing" in err


def test_bad_atom_selection_names_the_reporter(tmp_path, toy_registry, capsys):
    cfg = write_config(
        tmp_path, [{"kind": "dcd", "file": "t.dcd", "atoms": "resname XYZ"}]
    )
    code, _, err = run_tmd(capsys, "run", str(cfg))
    assert (
        code == 2
        and "reporter 'dcd' (" in err
        and "atoms: atom selection 'resname XYZ' matches no atom" in err
    )
    cfg = write_config(
        tmp_path, [{"kind": "xtc", "file": "t.xtc", "atoms": "name CA and"}]
    )
    code, _, err = run_tmd(capsys, "run", str(cfg))
    assert code == 2 and "invalid atom selection 'name CA and'" in err
    cfg = write_config(tmp_path, [{"kind": "xtc", "file": "t.xtc", "atoms": [0, 99]}])
    code, _, err = run_tmd(capsys, "run", str(cfg))
    assert code == 2 and "outside 0..11" in err


def test_cutoff_larger_than_half_the_box(tmp_path, toy_registry, capsys):
    cfg = write_config(tmp_path, [], box=10.0)
    edit(cfg, lambda d: d["potentials"][1].update(cutoff=6.0))
    code, _, err = run_tmd(capsys, "run", str(cfg))
    assert code == 2
    assert (
        "potentials[1] (kind='toy.pairs').cutoff: 6.0 Å is more than half the "
        "smallest box width (5.000 Å)" in err
    )


def test_output_in_a_folder_that_cannot_exist(tmp_path, toy_registry, capsys):
    (tmp_path / "afile").write_text("")
    cfg = write_config(
        tmp_path, [{"kind": "csv", "file": "afile/log.csv", "interval": 1}], steps=2
    )
    code, _, err = run_tmd(capsys, "run", str(cfg))
    assert code == 1 and "tmd: cannot access" in err and "afile" in err


def test_missing_input_files(tmp_path, toy_registry, capsys):
    cfg = write_config(tmp_path, [])
    (tmp_path / "toy.toycrd").unlink()
    code, _, err = run_tmd(capsys, "run", str(cfg))
    assert code == 2 and f"input file '{tmp_path / 'toy.toycrd'}' does not exist" in err


def test_resume_from_a_missing_or_foreign_checkpoint(tmp_path, toy_registry, capsys):
    cfg = write_config(tmp_path, [])
    code, _, err = run_tmd(capsys, "run", str(cfg), "--resume", str(tmp_path / "x.chk"))
    assert code == 2 and f"checkpoint '{tmp_path / 'x.chk'}' does not exist" in err
    (tmp_path / "x.chk").write_text("not a checkpoint")
    code, _, err = run_tmd(capsys, "run", str(cfg), "--resume", str(tmp_path / "x.chk"))
    assert (
        code == 2
        and "cannot be read" in err
        and "truncated or not a torchmd-core checkpoint" in err
    )


def test_internal_errors_are_reported_without_traceback_unless_debugging(
    tmp_path, capsys, monkeypatch
):
    import torchmd_core.runner

    def broken(*args, **kwargs):
        raise ZeroDivisionError("oops")

    monkeypatch.setattr(torchmd_core.runner, "run_config", broken)
    code, _, err = run_tmd(capsys, "run", "x.yaml")
    assert (
        code == 1
        and "tmd: internal error: ZeroDivisionError: oops" in err
        and "TORCHMD_CORE_DEBUG=1" in err
    )
    monkeypatch.setenv("TORCHMD_CORE_DEBUG", "1")
    assert main(["run", "x.yaml"]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_tmd_console_script_exits_2_on_bad_input(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("just a string\n")
    result = subprocess.run(
        [sys.executable, "-m", "torchmd_core", "run", str(bad)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 2
    assert (
        "the top level must be a mapping" in result.stderr
        and "Traceback" not in result.stderr
    )


def test_component_given_as_a_bare_name_gets_a_hint(tmp_path, toy_registry, capsys):
    cfg = write_config(tmp_path, [])
    edit(cfg, lambda d: d.update(integrator="toy.verlet"))
    code, _, err = run_tmd(capsys, "run", str(cfg))
    assert code == 2
    assert (
        "integrator: must be a mapping with a 'kind', got 'toy.verlet' "
        "(write {kind: toy.verlet}" in err
    )
