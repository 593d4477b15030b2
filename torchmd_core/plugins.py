"""Plugin discovery through the ``torchmd_core`` entry-point group.

Each entry point names a plugin module; it is imported and registered with pluggy,
then its registration hooks fill the :class:`~torchmd_core.registry.Registry`. A module
that fails to import is recorded (with its distribution) and the others still load.
The built-in plugins of the ``torchmd-core`` distribution are found the same way.

Set ``TORCHMD_CORE_DISABLE_PLUGINS`` to a comma-separated list of distribution names
(or ``dist:entry`` names) to skip them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from importlib import metadata

from torchmd_core.errors import PluginLoadError
from torchmd_core.registry import Registry

__all__ = [
    "DISABLE_ENV",
    "ENTRY_POINT_GROUP",
    "default_registry",
    "discover",
    "isolated_registry",
    "set_default_registry",
]

ENTRY_POINT_GROUP = "torchmd_core"
DISABLE_ENV = "TORCHMD_CORE_DISABLE_PLUGINS"
BUILTIN_DISTRIBUTION = "torchmd-core"

_default: Registry | None = None


def _normalise(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def disabled_from_env() -> set[str]:
    raw = os.environ.get(DISABLE_ENV, "")
    return {_normalise(part) for part in raw.split(",") if part.strip()}


def discover(
    distributions: Iterable[str] | None = None,
    disabled: Iterable[str] | None = None,
) -> Registry:
    """A registry filled from every installed ``torchmd_core`` entry point.

    Args:
        distributions: only load plugins of these distributions (None: all).
        disabled: distributions (or ``dist:entry`` names) to skip; default from the
            ``TORCHMD_CORE_DISABLE_PLUGINS`` environment variable.
    """
    only = None if distributions is None else {_normalise(d) for d in distributions}
    skip = (
        disabled_from_env() if disabled is None else {_normalise(d) for d in disabled}
    )
    registry = Registry()
    seen: set[tuple[str, str]] = set()
    for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=_ep_sort_key):
        dist = ep.dist.name if ep.dist is not None else "<unknown>"
        version = ep.dist.version if ep.dist is not None else ""
        key = (_normalise(dist), ep.name)
        if key in seen:  # the same distribution seen twice on sys.path
            continue
        seen.add(key)
        if only is not None and key[0] not in only:
            continue
        if key[0] in skip or f"{key[0]}:{ep.name}" in skip:
            continue
        try:
            module = ep.load()
        except Exception as err:  # any import failure of a third party is reported
            registry.problems.append(
                PluginLoadError(
                    f"plugin '{ep.name}' ({ep.value}) from distribution '{dist}' "
                    f"failed to import: {type(err).__name__}: {err}"
                )
            )
            continue
        registry.register_plugin(
            module, name=f"{dist}:{ep.name}", distribution=dist, version=version
        )
    return registry


def _ep_sort_key(ep: metadata.EntryPoint) -> tuple[int, str, str]:
    # Built-ins first, so that a third party claiming a built-in kind is the one
    # reported.
    dist = _normalise(ep.dist.name) if ep.dist is not None else ""
    return (0 if dist == BUILTIN_DISTRIBUTION else 1, dist, ep.name)


def default_registry() -> Registry:
    """The registry of every installed plugin, discovered once per process."""
    global _default
    if _default is None:
        _default = discover()
    return _default


def set_default_registry(registry: Registry | None) -> None:
    """Replace (or with None, forget) the process-wide registry."""
    global _default
    _default = registry


@contextmanager
def isolated_registry(
    distributions: Iterable[str] = (BUILTIN_DISTRIBUTION,),
    plugins: Iterable[object] = (),
) -> Iterator[Registry]:
    """Within the block, the default registry holds only the given distributions'
    plugins (the built-ins by default) plus ``plugins`` (modules or objects with hook
    implementations). Tests use it so that installed third-party plugins stay out."""
    global _default
    previous = _default
    registry = discover(distributions=distributions, disabled=())
    for i, plugin in enumerate(plugins):
        registry.register_plugin(
            plugin, name=getattr(plugin, "__name__", f"test-plugin-{i}")
        )
    _default = registry
    try:
        yield registry
    finally:
        _default = previous
