"""What ``tmd plugins --check`` verifies: each installed plugin, without running it.

Import failures and kind conflicts are already in :attr:`Registry.problems
<torchmd_core.registry.Registry.problems>`. On top of those, :func:`check_plugins`
reports, each problem naming its distribution (and kind where there is one):

- plugin modules: one that implements no hook, a ``torchmd_core_*`` function left
  without ``@hookimpl`` (silently ignored otherwise), a hook implementation whose name
  matches no hook specification (with the closest name);
- every registered class (:func:`check_component`): abstract methods left unimplemented,
  no docstring, ``Config.kind`` not a ``Literal`` of its name, a Config that accepts
  unknown keys or is not frozen, fields without a description (where units go), a
  Config whose JSON schema cannot be built, a default Config (when every field has a
  default) that fails to validate or to survive a JSON round trip;
- loaders: missing or malformed ``extensions``, one extension claimed by two loaders
  of the same file kind (files then silently go to the first one registered);
- the JSON schema of the whole configuration with every installed kind.
"""

from __future__ import annotations

import difflib
import inspect
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel, ValidationError

from torchmd_core import hookspecs
from torchmd_core.loader import CoordinateLoader, TopologyLoader
from torchmd_core.registry import Registration, Registry

__all__ = ["check_component", "check_plugins"]

_SPECS = sorted(n for n in dir(hookspecs) if n.startswith(f"{hookspecs.PROJECT}_"))


def check_plugins(registry: Registry) -> list[str]:
    """Every problem found in the plugins of ``registry`` (not counting
    ``registry.problems``), one line each."""
    from torchmd_core.config import config_schema

    problems = _check_plugin_modules(registry)
    for entry in registry:
        problems.extend(f"{_label(entry)}: {p}" for p in check_component(entry.cls))
    problems.extend(_check_loader_extensions(registry))
    try:
        config_schema(registry)
    except Exception as err:  # any plugin config that breaks schema generation
        problems.append(
            "the JSON schema of all installed kinds cannot be built: "
            f"{_first_line(err)}"
        )
    return problems


def check_component(cls: Any) -> list[str]:
    """Problems of one registered class, as phrases without its name."""
    problems = []
    if inspect.isabstract(cls):
        missing = ", ".join(sorted(cls.__abstractmethods__))
        problems.append(f"is abstract: implement {missing}")
    if not cls.describe():
        problems.append("has no docstring (tmd plugins shows its first line)")
    config: type[BaseModel] = cls.Config
    kind = cls.kind_name()
    annotation = config.model_fields["kind"].annotation
    if get_origin(annotation) is not Literal or get_args(annotation) != (kind,):
        problems.append(
            f"Config.kind must be Literal[{kind!r}] so that configs and the JSON "
            "schema tell kinds apart"
        )
    if config.model_config.get("extra") != "forbid":
        problems.append(
            "Config accepts unknown keys (a misspelt setting would be ignored); "
            "keep extra='forbid'"
        )
    if not config.model_config.get("frozen"):
        problems.append(
            "Config is not frozen (settings could change under a running simulation)"
        )
    undocumented = [
        n for n, f in config.model_fields.items() if n != "kind" and not f.description
    ]
    if undocumented:
        problems.append(
            "config fields without a description (state the unit there): "
            f"{', '.join(undocumented)}"
        )
    try:
        config.model_json_schema()
    except Exception as err:  # pydantic raises several types for unschematisable fields
        problems.append(f"Config has no JSON schema: {_first_line(err)}")
    if not any(f.is_required() for f in config.model_fields.values()):
        problems.extend(_check_default_config(config))
    return problems


def _check_default_config(config: type[BaseModel]) -> list[str]:
    try:
        default = config()
    except ValidationError as err:
        return [f"the default config is invalid: {_one_line(err)}"]
    try:
        again = config.model_validate_json(default.model_dump_json())
    except ValidationError as err:
        return [
            f"the default config does not survive a JSON round trip: {_one_line(err)}"
        ]
    if again != default:
        return [
            f"the default config changes in a JSON round trip: {default!r} → {again!r}"
        ]
    return []


def _check_plugin_modules(registry: Registry) -> list[str]:
    pm = registry.plugin_manager
    marker = f"{hookspecs.PROJECT}_impl"
    problems = []
    for plugin in pm.get_plugins():
        name = pm.get_name(plugin) or repr(plugin)
        where = f"plugin '{name}' ({registry.plugins.get(name, ('<python>', ''))[0]})"
        callers = pm.get_hookcallers(plugin) or []
        if not callers:
            problems.append(
                f"{where} implements no hook: decorate its functions with "
                "@torchmd_core.hookimpl"
            )
        for caller in callers:
            if caller.spec is None:
                close = difflib.get_close_matches(caller.name, _SPECS, n=1, cutoff=0.6)
                hint = f"; did you mean '{close[0]}'?" if close else ""
                problems.append(
                    f"{where} implements '{caller.name}', which is no torchmd-core "
                    f"hook{hint}"
                )
        for attr in dir(plugin):
            value = getattr(plugin, attr, None)
            if attr in _SPECS and callable(value) and not hasattr(value, marker):
                problems.append(
                    f"{where} defines {attr}() without @torchmd_core.hookimpl, so it "
                    "is never called"
                )
    return problems


def _check_loader_extensions(registry: Registry) -> list[str]:
    loaders = [e for e in registry if e.role == "loaders"]
    problems = []
    for entry in loaders:
        exts = getattr(entry.cls, "extensions", ())
        if not exts:
            problems.append(f"{_label(entry)}: declares no file extensions")
        elif not isinstance(exts, tuple) or not all(_is_suffix(e) for e in exts):
            problems.append(
                f"{_label(entry)}: extensions must be a tuple of suffixes such as "
                f"('pdb', 'ent'), got {exts!r}"
            )
    for want, base in (("topology", TopologyLoader), ("coordinates", CoordinateLoader)):
        owners: dict[str, list[Registration]] = {}
        for entry in loaders:
            if issubclass(entry.cls, base) and isinstance(entry.cls.extensions, tuple):
                for ext in {_normal(e) for e in entry.cls.extensions if _is_suffix(e)}:
                    owners.setdefault(ext, []).append(entry)
        for ext, claimants in sorted(owners.items()):
            if len(claimants) > 1:
                names = " and ".join(_label(c) for c in claimants)
                winner = type(
                    registry.loader_for(Path(f"file.{ext}"), want)
                ).kind_name()
                problems.append(
                    f"'.{ext}' {want} files are claimed by {names}; such files go to "
                    f"'{winner}' (registered first). Drop the extension from one (it "
                    f"stays usable through system.{want}_format)"
                )
    return problems


def _is_suffix(ext: object) -> bool:
    return (
        isinstance(ext, str)
        and bool(ext.strip("."))
        and not any(c.isspace() for c in ext)
    )


def _normal(ext: str) -> str:
    return ext.lower().lstrip(".")


def _label(entry: Registration) -> str:
    role = entry.role[:-1]
    return f"{role} '{entry.kind}' ({entry.distribution})"


def _first_line(err: Exception) -> str:
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0] if lines else ''}"


def _one_line(err: ValidationError) -> str:
    parts = []
    for e in err.errors(include_url=False):
        loc = ".".join(str(x) for x in e["loc"])
        parts.append(f"{loc}: {e['msg']}" if loc else str(e["msg"]))
    return "; ".join(parts)
