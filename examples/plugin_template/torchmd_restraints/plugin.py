"""The plugin module torchmd-core loads (named by the entry point in pyproject.toml).

It holds hook implementations only: one registration hook handing the core our
classes, and two lifecycle hooks. Keep imports here light, so ``tmd plugins`` stays fast.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from torchmd_core import hookimpl

from torchmd_restraints import __version__
from torchmd_restraints.restraints import (
    FlatBottomRestraint,
    HarmonicRestraint,
    PositionRestraint,
    PositionRestraintConfig,
)

if TYPE_CHECKING:
    from torchmd_core import Simulation, SimulationConfig


@hookimpl
def torchmd_core_register_potentials(register: Callable[[type], None]) -> None:
    register(HarmonicRestraint)  # users write its Config.kind: restraints.harmonic
    register(FlatBottomRestraint)


@hookimpl
def torchmd_core_validate_config(config: SimulationConfig) -> list[str] | None:
    """Reference files must exist: checked before anything is loaded, so a typo in a
    long config fails at once, with the field's path."""
    problems = []
    for i, potential in enumerate(config.potentials):
        ref = getattr(potential, "reference", None)
        if (
            isinstance(potential, PositionRestraintConfig)
            and isinstance(ref, Path)
            and not ref.is_file()
        ):
            problems.append(
                f"potentials[{i}] (kind={potential.kind!r}).reference: file '{ref}' does "
                "not exist (relative paths start at the config file's folder)"
            )
    return problems or None


@hookimpl
def torchmd_core_run_header(simulation: Simulation) -> list[str] | None:
    """A provenance line naming this plugin, its version and each restraint."""
    restraints = [
        p for p in simulation.potential.potentials if isinstance(p, PositionRestraint)
    ]
    if not restraints:
        return None
    return [
        f"torchmd-restraints {__version__}: "
        + "; ".join(r.summary() for r in restraints)
    ]
