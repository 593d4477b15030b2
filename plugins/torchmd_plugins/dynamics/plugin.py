"""Hook implementations of the built-in dynamics plugin: the ``verlet`` and
``langevin`` integrators."""

from __future__ import annotations

from typing import Any

from torchmd_core import hookimpl


@hookimpl
def torchmd_core_register_integrators(register: Any) -> None:
    from torchmd_plugins.dynamics.langevin import LangevinBAOAB
    from torchmd_plugins.dynamics.verlet import VelocityVerlet

    register(VelocityVerlet)
    register(LangevinBAOAB)
