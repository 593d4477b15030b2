"""Plugin robustness end to end, with small distributions installed in a test: two
claiming one kind, disabling by environment variable, and ``tmd plugins --check``."""

from __future__ import annotations

import importlib
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from torchmd_core import (
    ConfigError,
    PluginConflictError,
    discover,
    isolated_registry,
    parse_config,
)
from torchmd_core.cli import main as tmd
from torchmd_core.plugin_checks import check_component
from torchmd_core.plugins import DISABLE_ENV, set_default_registry

SPRING = '''
"""{dist}: a spring to the origin, kind 'shared.spring' (also claimed by the other)."""
from __future__ import annotations
from typing import Literal
from pydantic import Field
from torchmd_core import Potential, PotentialConfig, hookimpl


class Spring(Potential):
    """E = k Σ |x|², kcal/mol."""

    class Config(PotentialConfig):
        kind: Literal["shared.spring"] = "shared.spring"
        k: float = Field(1.0, gt=0, description="Force constant, kcal/mol/Å².")

    def energy(self, state):
        return self.config.k * state.positions.square().sum((1, 2))


class Only(Spring):
    """The same spring under a kind nobody else claims."""

    class Config(PotentialConfig):
        kind: Literal["{dist}.only"] = "{dist}.only"
        k: float = Field(1.0, gt=0, description="Force constant, kcal/mol/Å².")


@hookimpl
def torchmd_core_register_potentials(register):
    register(Spring)
    register(Only)
'''

SLOPPY = '''
"""A plugin with one of each mistake ``tmd plugins --check`` knows."""
from __future__ import annotations
from typing import Literal
from pydantic import ConfigDict, Field
from torchmd_core import (
    CoordinateLoader, Coordinates, Potential, PotentialConfig, hookimpl
)


class Undocumented(Potential):
    class Config(PotentialConfig):
        model_config = ConfigDict(extra="allow", frozen=False)
        kind: str = "sloppy.undocumented"
        k: float = 1.0

    def energy(self, state):
        return state.positions.sum((1, 2))


class Unfinished(Potential):
    """Forgot to implement energy(), and its default cutoff breaks its own bound."""

    class Config(PotentialConfig):
        kind: Literal["sloppy.unfinished"] = "sloppy.unfinished"
        cutoff: float = Field(-1.0, gt=0, description="Cutoff, Å.")


class ReaderA(CoordinateLoader):
    """Reads .xyz9 files."""

    extensions = ("xyz9",)

    class Config(CoordinateLoader.Config):
        kind: Literal["sloppy.reader_a"] = "sloppy.reader_a"

    def load_coordinates(self, path, system=None):
        raise OSError("not a real reader")


class ReaderB(ReaderA):
    """Also reads .xyz9 files."""

    extensions = (".XYZ9",)

    class Config(CoordinateLoader.Config):
        kind: Literal["sloppy.reader_b"] = "sloppy.reader_b"


class Nameless(ReaderA):
    """Declares no extension."""

    extensions = ()

    class Config(CoordinateLoader.Config):
        kind: Literal["sloppy.nameless"] = "sloppy.nameless"


@hookimpl
def torchmd_core_register_potentials(register):
    register(Undocumented)
    register(Unfinished)


@hookimpl
def torchmd_core_register_loaders(register):
    register(ReaderA)
    register(ReaderB)
    register(Nameless)


@hookimpl
def torchmd_core_run_start(simulation):
    return None


def torchmd_core_add_reporters(config, system):
    return []
'''


def _package(
    root: Path, dist: str, modules: dict[str, str], entry_points: dict[str, str]
) -> Path:
    src = root / dist
    for name, text in modules.items():
        path = src / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    eps = "\n".join(f'{k} = "{v}"' for k, v in entry_points.items())
    (src / "pyproject.toml").write_text(
        textwrap.dedent(f"""\
        [build-system]
        requires = ["setuptools>=61"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "{dist}"
        version = "1.0"

        [project.entry-points.torchmd_core]
        """)
        + eps
        + "\n"
    )
    return src


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """tmd-alpha and tmd-beta (both claim 'shared.spring') and tmd-sloppy, installed
    with pip into a temporary directory put on sys.path."""
    root = tmp_path_factory.mktemp("src")
    sources = [
        _package(
            root,
            "tmd-alpha",
            {"tmd_alpha/__init__.py": SPRING.format(dist="alpha")},
            {"alpha": "tmd_alpha"},
        ),
        _package(
            root,
            "tmd-beta",
            {"tmd_beta/__init__.py": SPRING.format(dist="beta")},
            {"beta": "tmd_beta"},
        ),
        _package(
            root,
            "tmd-sloppy",
            {
                "tmd_sloppy/__init__.py": SLOPPY,
                "tmd_sloppy/empty.py": '"""No hooks at all."""\n',
            },
            {"sloppy": "tmd_sloppy", "empty": "tmd_sloppy.empty"},
        ),
    ]
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--target",
            str(target),
            *map(str, sources),
        ],
        check=True,
        capture_output=True,
    )
    sys.path.insert(0, str(target))
    importlib.invalidate_caches()
    yield target
    sys.path.remove(str(target))
    importlib.invalidate_caches()


def test_two_distributions_claiming_one_kind_is_an_error_naming_both(
    installed, tmp_path, capsys
):
    reg = discover(distributions=["tmd-alpha", "tmd-beta"], disabled=())
    conflicts = [str(p) for p in reg.problems if isinstance(p, PluginConflictError)]
    assert len(conflicts) == 1
    assert (
        "'shared.spring'" in conflicts[0]
        and "'tmd-alpha'" in conflicts[0]
        and "'tmd-beta'" in conflicts[0]
    )
    with pytest.raises(
        PluginConflictError, match=r"'tmd-alpha' \(tmd-alpha:alpha\) and 'tmd-beta'"
    ):
        reg.get("potentials", "shared.spring")
    assert {"alpha.only", "beta.only"} <= set(
        reg.kinds("potentials")
    )  # the rest still loads

    config = tmp_path / "spring.yaml"
    config.write_text(
        "system: {topology: a.prmtop}\npotentials:\n  - kind: shared.spring\n"
        "integrator: {kind: verlet}\nsteps: 1\n"
    )
    with isolated_registry(distributions=["tmd-alpha", "tmd-beta"]):
        with pytest.raises(ConfigError, match=r"'tmd-alpha'.*'tmd-beta'"):
            parse_config(
                {
                    "system": {"topology": "a.prmtop"},
                    "potentials": [{"kind": "shared.spring"}],
                    "integrator": {"kind": "verlet"},
                    "steps": 1,
                }
            )
        assert tmd(["run", str(config)]) == 2
        assert tmd(["plugins"]) == 0  # listing still works, the conflict shown below it
    err = capsys.readouterr().err
    assert (
        "potentials[0].kind: potential kind 'shared.spring' is provided by 'tmd-alpha'"
        in err
    )
    assert (
        "registered twice: by 'tmd-alpha' (tmd-alpha:alpha) and by 'tmd-beta' "
        "(tmd-beta:beta)" in err
    )
    assert f"{DISABLE_ENV}=tmd-beta" in err  # and how to resolve it


def test_environment_variable_disables_named_distributions_in_tmd_plugins(
    installed, monkeypatch, capsys
):
    set_default_registry(
        None
    )  # discover like a user's `tmd plugins`, honouring the variable
    assert tmd(["plugins"]) == 0
    out, err = capsys.readouterr()
    assert (
        "tmd-beta 1.0" in out
        and "sloppy.unfinished" in out
        and "registered twice" in err
    )

    monkeypatch.setenv(
        DISABLE_ENV, " TMD_Beta , tmd-sloppy:sloppy"
    )  # names are normalised
    set_default_registry(None)
    assert tmd(["plugins"]) == 0
    out, err = capsys.readouterr()
    assert "tmd-alpha 1.0" in out and "tmd-beta" not in out
    assert "sloppy." not in out  # its 'sloppy' entry point is off ...
    assert "tmd-sloppy:empty" not in err and "registered twice" not in err
    set_default_registry(None)
    assert (
        tmd(["plugins", "--check"]) == 1
    )  # ... while 'empty' still loads and is checked
    assert (
        "plugin 'tmd-sloppy:empty' (tmd-sloppy) implements no hook"
        in capsys.readouterr().err
    )


def test_check_reports_each_problem_of_a_plugin(installed, capsys):
    with isolated_registry(distributions=["tmd-sloppy"]):
        assert tmd(["plugins", "--check"]) == 1
    err = capsys.readouterr().err
    expected = [
        "plugin 'tmd-sloppy:empty' (tmd-sloppy) implements no hook",
        "plugin 'tmd-sloppy:sloppy' (tmd-sloppy) implements 'torchmd_core_run_start', "
        "which is no torchmd-core hook; did you mean 'torchmd_core_run_started'?",
        "plugin 'tmd-sloppy:sloppy' (tmd-sloppy) defines torchmd_core_add_reporters() "
        "without @torchmd_core.hookimpl",
        "potential 'sloppy.undocumented' (tmd-sloppy): has no docstring",
        "potential 'sloppy.undocumented' (tmd-sloppy): Config.kind must be "
        "Literal['sloppy.undocumented']",
        "potential 'sloppy.undocumented' (tmd-sloppy): Config accepts unknown keys",
        "potential 'sloppy.undocumented' (tmd-sloppy): Config is not frozen",
        "potential 'sloppy.undocumented' (tmd-sloppy): config fields without a "
        "description (state the unit there): k",
        "potential 'sloppy.unfinished' (tmd-sloppy): is abstract: implement energy",
        "potential 'sloppy.unfinished' (tmd-sloppy): the default config is invalid: "
        "cutoff: Input should be greater than 0",
        "loader 'sloppy.nameless' (tmd-sloppy): declares no file extensions",
        "'.xyz9' coordinates files are claimed by loader 'sloppy.reader_a' "
        "(tmd-sloppy) and loader 'sloppy.reader_b' (tmd-sloppy); such files go to "
        "'sloppy.reader_a'",
        "the JSON schema of all installed kinds cannot be built",
    ]
    missing = [e for e in expected if e not in err]
    assert not missing, f"not reported: {missing}\n--- stderr:\n{err}"
    assert (
        f"{len(err.strip().splitlines()) - 1} plugin problems:" in err
    )  # each on its own line


def test_check_passes_for_a_well_formed_plugin(installed, capsys):
    with isolated_registry(distributions=["tmd-alpha"]):
        assert tmd(["plugins", "--check"]) == 0
    assert "all 1 plugins loaded; 2 components checked" in capsys.readouterr().out


def test_check_component_accepts_the_toy_components():
    from tests.core import toys

    for cls in (
        toys.HarmonicBonds,
        toys.SoftPairs,
        toys.ToyVerlet,
        toys.MemoryReporter,
        toys.ToyTopologyLoader,
        toys.ToyCoordinateLoader,
    ):
        assert check_component(cls) == [], cls.__name__
