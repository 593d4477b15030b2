"""Which component classes exist, by role and kind, and which plugin provided them.

A :class:`Registry` is filled by plugins through the registration hooks (see
:mod:`torchmd_core.plugins` for discovery through entry points). Lookups by kind give
clear errors: an unknown kind lists the installed kinds of that role and the closest
match; a kind claimed by two plugins names both.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Literal, overload

import pluggy

from torchmd_core import hookspecs
from torchmd_core.barostat import Barostat
from torchmd_core.component import Component
from torchmd_core.errors import (
    PluginConflictError,
    PluginError,
    PluginLoadError,
    PluginNotFoundError,
)
from torchmd_core.integrator import Integrator
from torchmd_core.loader import CoordinateLoader, SystemLoader, TopologyLoader
from torchmd_core.potential import Potential
from torchmd_core.reporter import Reporter

__all__ = ["ROLES", "Registration", "Registry"]

#: Role name → base class; the registration hook of a role is
#: ``torchmd_core_register_<role>``.
ROLES: dict[str, type[Component]] = {
    "potentials": Potential,
    "integrators": Integrator,
    "barostats": Barostat,
    "reporters": Reporter,
    "loaders": SystemLoader,
}

_SINGULAR = {
    "potentials": "potential",
    "integrators": "integrator",
    "barostats": "barostat",
    "reporters": "reporter",
    "loaders": "loader",
}


@dataclass(frozen=True)
class Registration:
    """One registered class and where it came from."""

    role: str
    kind: str
    cls: type[Component]
    plugin: str
    distribution: str
    version: str

    @property
    def description(self) -> str:
        return self.cls.describe()


class Registry:
    """Component classes by role and kind, with the pluggy manager that found them.

    Args:
        plugin_manager: the pluggy manager whose plugins fill this registry; a fresh
            one with the torchmd-core hookspecs when omitted.
    """

    def __init__(self, plugin_manager: pluggy.PluginManager | None = None) -> None:
        if plugin_manager is None:
            plugin_manager = pluggy.PluginManager(hookspecs.PROJECT)
            plugin_manager.add_hookspecs(hookspecs)
        self.plugin_manager = plugin_manager
        self._entries: dict[str, dict[str, Registration]] = {role: {} for role in ROLES}
        self._conflicts: dict[tuple[str, str], list[Registration]] = {}
        #: Problems met while loading plugins (each names its distribution).
        self.problems: list[PluginError] = []
        #: Plugin name → (distribution, version) of every registered plugin module.
        self.plugins: dict[str, tuple[str, str]] = {}

    # -- filling -----------------------------------------------------------------------
    @property
    def hook(self) -> Any:
        """The lifecycle hook relay.

        Call a hook as ``registry.hook.torchmd_core_run_started(...)``.
        """
        return self.plugin_manager.hook

    def register_plugin(
        self,
        plugin: ModuleType | object,
        name: str | None = None,
        distribution: str = "<python>",
        version: str = "",
    ) -> None:
        """Add a plugin object (a module with hook implementations) and register the
        classes its registration hooks provide. Problems are recorded, not raised."""
        name = name or getattr(plugin, "__name__", None) or repr(plugin)
        try:
            self.plugin_manager.register(plugin, name=name)
        except (ValueError, pluggy.PluginValidationError) as err:
            self.problems.append(
                PluginLoadError(
                    f"plugin '{name}' from '{distribution}' is invalid: {err}"
                )
            )
            return
        self.plugins[name] = (distribution, version)
        for role in ROLES:
            self._run_registration(role, plugin, name, distribution, version)

    def _run_registration(
        self, role: str, plugin: object, name: str, distribution: str, version: str
    ) -> None:
        impl = getattr(plugin, f"torchmd_core_register_{role}", None)
        if impl is None or getattr(impl, f"{hookspecs.PROJECT}_impl", None) is None:
            return  # only functions marked with @hookimpl are hook implementations

        def register(cls: type) -> None:
            self.add(role, cls, plugin=name, distribution=distribution, version=version)

        try:
            impl(register=register)
        except PluginError as err:
            self.problems.append(err)
        except Exception as err:  # a broken plugin must not take the others down
            self.problems.append(
                PluginLoadError(
                    f"plugin '{name}' from '{distribution}' failed while registering "
                    f"{role}: {type(err).__name__}: {err}"
                )
            )

    def add(
        self,
        role: str,
        cls: type,
        plugin: str = "<python>",
        distribution: str = "<python>",
        version: str = "",
    ) -> None:
        """Register ``cls`` for ``role``. A duplicate kind is recorded as a conflict."""
        base = ROLES.get(role)
        if base is None:
            raise ValueError(f"unknown role {role!r}; roles are {', '.join(ROLES)}")
        where = f"plugin '{plugin}' (distribution '{distribution}')"
        if not isinstance(cls, type) or not issubclass(cls, base):
            raise PluginLoadError(
                f"{where} registered {cls!r} as a {_SINGULAR[role]}, but it does not "
                f"subclass torchmd_core.{base.__name__}"
            )
        try:
            kind = cls.kind_name()
        except TypeError as err:
            raise PluginLoadError(f"{where}: {err}") from None
        entry = Registration(role, kind, cls, plugin, distribution, version)
        existing = self._entries[role].get(kind)
        if existing is not None and existing.cls is not cls:
            self._conflicts.setdefault((role, kind), [existing]).append(entry)
            self.problems.append(
                PluginConflictError(
                    f"{_SINGULAR[role]} kind '{kind}' is registered twice: by "
                    f"'{existing.distribution}' ({existing.plugin}) and by "
                    f"'{distribution}' ({plugin}). Uninstall one, or disable one with "
                    f"TORCHMD_CORE_DISABLE_PLUGINS={distribution}"
                )
            )
            return
        self._entries[role][kind] = entry

    # -- lookups -----------------------------------------------------------------------
    def get(self, role: str, kind: str) -> type[Any]:
        """The class registered as ``kind`` for ``role``.

        Raises:
            PluginNotFoundError: no such kind (lists the available ones).
            PluginConflictError: two plugins claim the kind.
        """
        conflict = self._conflicts.get((role, kind))
        if conflict:
            names = " and ".join(f"'{c.distribution}' ({c.plugin})" for c in conflict)
            raise PluginConflictError(
                f"{_SINGULAR[role]} kind '{kind}' is provided by {names}; uninstall "
                "one or disable one with TORCHMD_CORE_DISABLE_PLUGINS=<distribution>"
            )
        entry = self._entries.get(role, {}).get(kind)
        if entry is None:
            raise PluginNotFoundError(self._not_found(role, kind))
        return entry.cls

    def _not_found(self, role: str, kind: str) -> str:
        available = sorted(self._entries.get(role, {}))
        msg = f"no {_SINGULAR.get(role, role)} named '{kind}'."
        close = difflib.get_close_matches(kind, available, n=1, cutoff=0.6)
        if close:
            msg += f" Did you mean '{close[0]}'?"
        if available:
            msg += f" Available: {', '.join(available)}."
        else:
            msg += " None is installed (is torchmd-core installed with its plugins?)."
        return msg

    def kinds(self, role: str) -> list[str]:
        return sorted(self._entries[role])

    def registration(self, role: str, kind: str) -> Registration:
        self.get(role, kind)
        return self._entries[role][kind]

    def __iter__(self) -> Iterator[Registration]:
        for role in ROLES:
            for kind in sorted(self._entries[role]):
                yield self._entries[role][kind]

    def __contains__(self, item: tuple[str, str]) -> bool:
        role, kind = item
        return kind in self._entries.get(role, {})

    # -- loaders -----------------------------------------------------------------------
    @overload
    def loader_for(
        self, path: Path, want: Literal["topology"], kind: str | None = None
    ) -> TopologyLoader: ...
    @overload
    def loader_for(
        self, path: Path, want: Literal["coordinates"], kind: str | None = None
    ) -> CoordinateLoader: ...
    @overload
    def loader_for(
        self, path: Path, want: str, kind: str | None = None
    ) -> SystemLoader: ...
    def loader_for(
        self, path: Path, want: str, kind: str | None = None
    ) -> SystemLoader:
        """A loader instance able to read ``path`` as ``want``.

        ``want`` is 'topology' or 'coordinates'. ``kind`` forces a loader; otherwise
        the file extension decides (the longest matching suffix wins, so ``.prmtop``
        beats nothing and ``.tar.gz`` beats ``.gz``).
        """
        base = TopologyLoader if want == "topology" else CoordinateLoader
        if kind is not None:
            cls = self.get("loaders", kind)
            if not issubclass(cls, base):
                raise PluginNotFoundError(f"loader '{kind}' cannot read {want} files")
            return cls()
        name = path.name.lower()
        best: tuple[int, type[SystemLoader]] | None = None
        for entry in self._entries["loaders"].values():
            if not issubclass(entry.cls, base):
                continue
            for ext in entry.cls.extensions:
                suffix = "." + ext.lower().lstrip(".")
                if name.endswith(suffix) and (best is None or len(suffix) > best[0]):
                    best = (len(suffix), entry.cls)
        if best is None:
            known = sorted(
                {
                    ext
                    for e in self._entries["loaders"].values()
                    if issubclass(e.cls, base)
                    for ext in e.cls.extensions
                }
            )
            raise PluginNotFoundError(
                f"no {want} loader reads '{path.name}' (known extensions: "
                f"{', '.join(known) or 'none'}); rename the file or set "
                f"system.{want}_format to a loader kind"
            )
        return best[1]()
