"""The examples run, in reduced size, writing only into a temporary folder: the
README's run command (``tmd run examples/quickstart/ala2.yaml``), the quickstart script,
library use with mdtraj and matplotlib, and a custom term in a script. The TorchMD-NET,
differentiable and distributed examples have their own tests
(tests/plugins/torchmdnet/test_example.py, tests/core/)."""

from __future__ import annotations

import csv
import importlib.util
import math
import re
import sys
from pathlib import Path
from types import ModuleType

import mdtraj
import yaml

from tests.workspace import INTERVAL, ROOT, STEPS, make_workspace, shorten
from torchmd_core import load_config
from torchmd_core.cli import main as tmd

README = ROOT / "README.md"


def load_script(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = (
        module  # pydantic resolves the annotations of its classes there
    )
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as fh:
        return list(csv.DictReader(fh))


def readme_run_config() -> str:
    """The config of the README's one-line install-and-run command."""
    commands = re.findall(
        r"^python3 -m venv .*&& tmd run (\S+\.yaml)\s*$", README.read_text(), re.M
    )
    assert len(commands) == 1, (
        "the README shows one install-and-run command ending in tmd run CONFIG"
    )
    return commands[0]


def test_shorten_replaces_steps_and_intervals():
    text = "steps: 1000  # 2 ps\nreporters:\n  - kind: csv\n    interval: 50\n"
    shortened = "steps: 8  # 2 ps\nreporters:\n  - kind: csv\n    interval: 4\n"
    assert shorten(text, 8, 4) == shortened


def readme_block(language: str) -> str:
    blocks = re.findall(rf"^```{language}\n(.*?)^```", README.read_text(), re.M | re.S)
    assert len(blocks) == 1, f"the README shows one {language} block"
    return blocks[0]


def test_readme_config_is_the_quickstart_config():
    shown = yaml.safe_load(readme_block("yaml"))
    assert shown == yaml.safe_load((ROOT / readme_run_config()).read_text())


def test_readme_test_command_is_what_ci_runs():
    """The README's install-and-test line installs and runs what .ci/run does."""
    ci = (ROOT / ".ci" / "run").read_text()
    line = re.findall(
        r"^python3 -m venv .*&& python -m pytest\s*$", README.read_text(), re.M
    )
    assert len(line) == 1, "the README shows one install-and-test command"
    for step in (
        "pip install torch==2.13.0",
        'pip install -e ".[test,docs]" -e examples/plugin_template',
        "python -m pytest",
    ):
        assert step in line[0] and step in ci, step


def test_quickstart_page_shows_the_example_config():
    page = (ROOT / "docs" / "pages" / "quickstart.md").read_text()
    shown = [
        yaml.safe_load(b) for b in re.findall(r"^```yaml\n(.*?)^```", page, re.M | re.S)
    ]
    assert yaml.safe_load((ROOT / readme_run_config()).read_text()) in shown


def test_readme_run_command_script_and_python_example_agree(tmp_path, monkeypatch):
    """`tmd run` on the README's config writes the csv log and the DCD trajectory it
    promises; examples/quickstart/run_ala2.py and the README's Python example then
    write the same numbers (same seed, same steps)."""
    config = readme_run_config()
    assert (ROOT / config).is_file(), f"README runs {config}, which does not exist"
    parsed = load_config(ROOT / config)
    assert parsed.system.constraints == "hbonds" and parsed.steps >= 1000
    work = make_workspace(tmp_path / "repo")
    monkeypatch.chdir(work)
    assert tmd(["run", config, "--quiet"]) == 0
    out = work / Path(config).parent / "output"
    rows = read_csv(out / "ala2.csv")
    assert [int(r["step"]) for r in rows] == list(range(0, STEPS + 1, INTERVAL))
    assert all(math.isfinite(float(r["temperature_K"])) for r in rows)
    assert 0.8 < float(rows[-1]["density_g_cm3"]) < 1.1
    traj = mdtraj.load_dcd(
        str(out / "ala2.dcd"), top=str(ROOT / parsed.system.topology)
    )
    assert traj.n_frames == len(rows) and traj.n_atoms == 688

    def numbers(table: list[dict[str, str]]) -> list[dict[str, str]]:
        return [{k: v for k, v in r.items() if k != "speed_ns_day"} for r in table]

    script = load_script(work / "examples" / "quickstart" / "run_ala2.py")
    script.main(["--overwrite"])
    assert numbers(read_csv(out / "ala2.csv")) == numbers(rows)

    fresh = make_workspace(tmp_path / "again")
    monkeypatch.chdir(fresh)
    exec(compile(readme_block("python"), "README.md", "exec"), {"__name__": "readme"})
    assert numbers(
        read_csv(fresh / Path(config).parent / "output" / "ala2.csv")
    ) == numbers(rows)


def test_library_use_simulates_analyses_and_plots(tmp_path, capsys):
    script = load_script(ROOT / "examples" / "library_use" / "ala2_phi_psi.py")
    out = tmp_path / "run"
    summary = script.main(["--steps", "40", "--interval", "10", "--out", str(out)])
    png = out / "ala2.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    rows = read_csv(out / "ala2.csv")
    assert len(rows) == 5 * script.N_REPLICAS  # steps 0, 10, ..., 40 of each replica
    assert 100.0 < summary["mean_temperature_K"] < 600.0
    assert 0.0 <= summary["beta_fraction"] <= 1.0 and 0.0 < summary["max_rmsd_A"] < 3.0
    assert "Ramachandran" not in capsys.readouterr().err


def test_custom_term_passes_the_kit_and_holds_phi(capsys):
    script = load_script(ROOT / "examples" / "custom_term" / "dihedral_restraint.py")
    summary = script.main(["--steps", "100", "--replicas", "2"])
    assert "check_potential: passed" in capsys.readouterr().out
    assert summary["phi_start_deg"] < -90.0  # the structure starts in the β basin
    assert abs(summary["phi_mean_deg"] - 60.0) < 15.0  # minimised and held near +60°
    assert 0.0 <= summary["restraint_kcal_mol"] < 5.0
