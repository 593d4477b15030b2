"""The native CPU kernels of the constraint solver (``csrc/constraints.cpp``).

SETTLE (positions, velocities) and the CCMA iterations run as C++ loops per water and
per constraint instead of dozens of small torch operations per iteration. They follow
the torch code of :mod:`~torchmd_plugins.dynamics.settle` and
:class:`~torchmd_plugins.dynamics.constraints.ConstraintSolver` operation for
operation (same results to rounding) and build no autograd graph, so the solver uses
them only for CPU float32/float64 tensors when no graph is wanted (:func:`use_native`).

Compiled on first use with :func:`torch.utils.cpp_extension.load` (seconds, once per
machine and torch version) like the nonbonded kernels; ``TORCHMD_CORE_NATIVE=0`` in
the environment, or a missing compiler, keeps the torch code.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import torch
from torch import Tensor

from torchmd_core.native import build_extension, inside_transform, native_disabled

__all__ = ["load_native", "use_native"]

_CSRC = Path(__file__).parent / "csrc"
_SOURCE = "constraints.cpp"
_NAME = "torchmd_core_constraints"
_module: ModuleType | None = None
_tried = False


def load_native() -> ModuleType | None:
    """The compiled extension, building it on first use; None if it cannot be built."""
    global _module, _tried
    if _tried:
        return _module
    _tried = True
    try:
        _module = _build()
    except Exception:  # no compiler / headers: the torch code stays in use
        _module = None
    return _module


def _build() -> ModuleType:
    return build_extension(
        _NAME,
        [_CSRC / _SOURCE],
        ["-O3", "-fno-math-errno", "-fno-trapping-math", "-ffp-contract=off"],
        message="compiling constraint kernels (once, ~30 s)",
    )


def use_native(*tensors: Tensor) -> bool:
    """Whether the constraint kernels may replace the torch code for ``tensors``.

    True when all are CPU float32/float64 tensors, no autograd graph is wanted (grad
    mode off or none requires grad), no torch.func transform or torch.compile trace
    is active, the kernels are not disabled and they could be built.
    """
    first = tensors[0]
    if first.device.type != "cpu" or first.dtype not in (torch.float32, torch.float64):
        return False
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return False
    if inside_transform() or native_disabled():
        return False
    return load_native() is not None
