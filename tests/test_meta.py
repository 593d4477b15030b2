"""Checks on the project itself.

Layering, documentation and tests of every hook, entry points.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from torchmd_core import hookspecs
from torchmd_core.plugins import discover

ROOT = Path(__file__).resolve().parents[1]
HOOKS = sorted(name for name in dir(hookspecs) if name.startswith("torchmd_core_"))


def test_core_never_imports_plugins_statically():
    offenders = []
    for path in (ROOT / "torchmd_core").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [
                f"{path.relative_to(ROOT)}: {n}"
                for n in names
                if n.split(".")[0] == "torchmd_plugins"
            ]
    assert not offenders, offenders


def test_importing_core_loads_no_plugin_module():
    code = (
        "import sys, torchmd_core, torchmd_core.cli, torchmd_core.builder; "
        "print(any(m.startswith('torchmd_plugins') for m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"


def test_every_hook_is_documented_and_tested():
    docs = (ROOT / "docs" / "pages" / "hooks.md").read_text()
    tests = "\n".join(p.read_text() for p in (ROOT / "tests").rglob("test_*.py"))
    for hook in HOOKS:
        assert f"### {hook}" in docs, f"{hook} has no section in docs/pages/hooks.md"
        short = hook.removeprefix("torchmd_core_")
        assert f"def test_hook_{short}(" in tests, (
            f"{hook} has no test_hook_{short} test"
        )


def test_every_builtin_entry_point_loads_and_registers_something():
    eps = [
        ep
        for ep in metadata.entry_points(group="torchmd_core")
        if ep.dist and ep.dist.name == "torchmd-core"
    ]
    reg = discover(distributions=["torchmd-core"], disabled=())
    assert not reg.problems, [str(p) for p in reg.problems]
    for ep in eps:
        plugin = f"torchmd-core:{ep.name}"
        assert plugin in reg.plugins, f"entry point {ep.name} did not load"
        registered = [r for r in reg if r.plugin == plugin]
        assert registered, f"built-in plugin {ep.name} registers no component"


def test_every_kind_is_unique_across_roles_of_the_builtins():
    reg = discover(distributions=["torchmd-core"], disabled=())
    kinds = [(r.role, r.kind) for r in reg]
    assert len(kinds) == len(set(kinds))
    assert not [p for p in reg.problems if "registered twice" in str(p)]
