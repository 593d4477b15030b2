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

import hashlib
import os
import sys
from pathlib import Path
from types import ModuleType

import torch
from torch import Tensor

__all__ = ["load_native", "use_native"]

_CSRC = Path(__file__).parent / "csrc"
_SOURCE = "constraints.cpp"
_NAME = "torchmd_core_constraints"
_module: ModuleType | None = None
_tried = False


def _disabled() -> bool:
    value = os.environ.get("TORCHMD_CORE_NATIVE", "1").strip().lower()
    return value in ("0", "false", "no", "off")


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
    from torch.utils import cpp_extension

    flags = ["-O3", "-fno-math-errno", "-fno-trapping-math", "-ffp-contract=off"]
    source = _CSRC / _SOURCE
    digest = hashlib.sha256(
        source.read_bytes() + " ".join(flags).encode() + str(_CSRC.resolve()).encode()
    ).hexdigest()[:16]
    name = f"{_NAME}_{digest}"
    build_dir = Path(cpp_extension._get_build_directory(name, verbose=False))
    if not any(build_dir.glob(f"{name}*.so")):
        print("compiling constraint kernels (once, ~30 s)", file=sys.stderr, flush=True)
    module = cpp_extension.load(
        name=name,
        sources=[str(source)],
        extra_cflags=flags,
        verbose=False,
    )
    assert isinstance(module, ModuleType)
    return module


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
    if torch._C._functorch.peek_interpreter_stack() is not None:
        return False
    if torch.compiler.is_compiling() or _disabled():
        return False
    return load_native() is not None
