"""The documentation: every ```python block of docs/pages runs, every shell block
marked ``<!-- test -->`` runs, the site builds with ``mkdocs build --strict``, and the
generated configuration reference covers every built-in kind.

Blocks run from a scratch stand-in for the repository root (tests/workspace.py): paths
such as ``examples/quickstart/ala2.yaml`` work as in a checkout, the example configs
are shortened to a few steps, and outputs land in a temporary folder."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.workspace import make_workspace

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted((DOCS / "pages").glob("*.md"))
FENCE = re.compile(r"^```(\S*)\s*$")
MARK = "<!-- test -->"
LANGUAGES = {"python", "bash", "yaml", "toml", "text"}


def code_blocks(page: Path) -> list[tuple[str, int, str, bool]]:
    """(language, first line number, code, marked for testing) of each fenced block."""
    blocks = []
    lines = page.read_text().splitlines()
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if match is None:
            i += 1
            continue
        start = i
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        marked = start > 0 and lines[start - 1].strip() == MARK
        blocks.append(
            (match.group(1), start + 2, "\n".join(lines[start + 1 : end]), marked)
        )
        i = end + 1
    return blocks


PYTHON_PAGES = [p for p in PAGES if any(b[0] == "python" for b in code_blocks(p))]
SHELL_BLOCKS = [
    pytest.param(block, id=f"{page.stem}:{block[1]}")
    for page in PAGES
    for block in code_blocks(page)
    if block[3]
]


def test_every_block_names_a_known_language():
    for page in PAGES:
        for language, line, _, marked in code_blocks(page):
            assert language in LANGUAGES, (
                f"{page.name}:{line}: fence language {language!r}"
            )
            assert not marked or language == "bash", (
                f"{page.name}:{line}: only bash blocks are marked"
            )


@pytest.mark.parametrize("page", PYTHON_PAGES, ids=[p.stem for p in PYTHON_PAGES])
def test_python_blocks_run(page, tmp_path, monkeypatch):
    """A page's python blocks run in order in one namespace, like a reader's session."""
    monkeypatch.chdir(make_workspace(tmp_path / "repo"))
    namespace: dict[str, object] = {"__name__": f"docs_{page.stem}"}
    for language, line, code, _ in code_blocks(page):
        if language == "python":
            exec(compile(code, f"{page.name}:{line}", "exec"), namespace)


YAML_BLOCKS = [
    pytest.param(block, id=f"{page.stem}:{block[1]}")
    for page in PAGES
    for block in code_blocks(page)
    if block[0] == "yaml"
]


@pytest.mark.parametrize("block", YAML_BLOCKS)
def test_yaml_blocks_are_valid_config(block):
    """Each ```yaml block is a config or a part of one: known top-level keys, sections
    that validate, and components of installed kinds that validate (a page's own
    example kinds, such as ``mylab.*``, are only checked for a kind)."""
    import yaml

    from torchmd_core import default_registry
    from torchmd_core.config import (
        DistributedConfig,
        ExchangeConfig,
        MinimizeConfig,
        SimulationConfig,
        SystemConfig,
    )

    sections = {
        "system": SystemConfig,
        "minimize": MinimizeConfig,
        "distributed": DistributedConfig,
        "exchange": ExchangeConfig,
    }
    roles = {
        "potentials": "potentials",
        "integrator": "integrators",
        "barostat": "barostats",
        "reporters": "reporters",
    }
    data = yaml.safe_load(block[2])
    assert isinstance(data, dict), "a config (part) is a mapping"
    registry = default_registry()
    for key, value in data.items():
        assert key in SimulationConfig.model_fields, f"unknown top-level key {key!r}"
        if key in sections:
            sections[key].model_validate(value)
        elif key in roles:
            for item in value if isinstance(value, list) else [value]:
                kind = item["kind"]
                if kind in registry.kinds(roles[key]):
                    registry.get(roles[key], kind).Config.model_validate(item)
                else:
                    assert kind.startswith("mylab."), (
                        f"unknown {roles[key]} kind {kind!r}"
                    )


@pytest.mark.parametrize("block", SHELL_BLOCKS)
def test_marked_shell_blocks_run(block, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TORCHMD_CORE_DISABLE_PLUGINS"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    done = subprocess.run(
        ["bash", "-e", "-c", block[2]],
        cwd=make_workspace(tmp_path / "repo"),
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, (
        f"{block[2]}\n--- stdout:\n{done.stdout}\n--- stderr:\n{done.stderr}"
    )


def test_configuration_reference_covers_every_builtin_kind():
    from torchmd_core import discover

    spec = importlib.util.spec_from_file_location(
        "config_reference", DOCS / "config_reference.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    text = module.render()
    registry = discover(distributions=["torchmd-core"], disabled=())
    for entry in registry:
        wanted = (
            f"| `{entry.kind}` |" if entry.role == "loaders" else f"### `{entry.kind}`"
        )
        assert wanted in text, (
            f"{entry.role} {entry.kind} missing from the configuration reference"
        )
    assert "| `steps` | integer | *required* |" in text


def test_site_builds_strictly(tmp_path):
    pytest.importorskip(
        "mkdocs", reason="the docs extra is not installed: pip install -e '.[docs]'"
    )
    pytest.importorskip("mkdocstrings")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "-f",
            str(DOCS / "mkdocs.yml"),
            "-d",
            str(tmp_path / "site"),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert (tmp_path / "site" / "configuration" / "index.html").exists()
