"""Hook implementations of the built-in torchmdnet plugin.

Only light imports here: torchmd-net itself is imported when a ``torchmdnet`` potential
is built, so ``tmd plugins`` stays fast and a missing package is an error for this kind
alone.
"""

from __future__ import annotations

from collections.abc import Callable

from torchmd_core import hookimpl
from torchmd_plugins.torchmdnet.potential import TorchMDNetPotential


@hookimpl
def torchmd_core_register_potentials(register: Callable[[type], None]) -> None:
    register(TorchMDNetPotential)
