"""torchmd-restraints: position restraints for torchmd-core, and a plugin template.

Kinds: ``restraints.harmonic`` and ``restraints.flat_bottom`` (see
:mod:`torchmd_restraints.restraints`). The plugin module torchmd-core loads is
:mod:`torchmd_restraints.plugin`.
"""

from __future__ import annotations

from torchmd_restraints.restraints import (
    FlatBottomRestraint,
    HarmonicRestraint,
    PositionRestraint,
    PositionRestraintConfig,
)

__version__ = "0.1.0"

__all__ = [
    "FlatBottomRestraint",
    "HarmonicRestraint",
    "PositionRestraint",
    "PositionRestraintConfig",
    "__version__",
]
