"""Hook implementations of the built-in nonbonded plugin."""

from __future__ import annotations

from torchmd_core import hookimpl
from torchmd_core.hookspecs import Register
from torchmd_plugins.nonbonded.nonbonded import Nonbonded


@hookimpl
def torchmd_core_register_potentials(register: Register) -> None:
    register(Nonbonded)
