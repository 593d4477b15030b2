"""The native CPU kernels (C++/OpenMP, ``csrc/``): loading and when to use them.

The extension is compiled on first use with :func:`torch.utils.cpp_extension.load`
(about a minute, once per machine and torch version; cached in torch's extensions
folder) for the CPU it runs on. It holds the cluster-pair nonbonded kernel
(``cluster_nonbonded.cpp``) and the analytic AMBER bonded kernel (``bonded.cpp``).

The native kernels compute energies and analytic forces without an autograd graph, so
a potential uses them only when no graph is wanted (:func:`use_native`); otherwise,
on CUDA tensors, without a compiler, or with ``TORCHMD_CORE_NATIVE=0`` in the
environment, the pure-torch kernels run, with the same results to rounding.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType
from typing import Literal

import torch
from torch import Tensor, nn

from torchmd_core import ConfigError
from torchmd_core.native import build_extension, inside_transform, native_disabled

__all__ = [
    "IMPLEMENTATION_DESCRIPTION",
    "Implementation",
    "load_native",
    "native_available",
    "use_native",
]

#: ``implementation`` values of the potentials that have a native kernel.
Implementation = Literal["auto", "torch", "native"]

IMPLEMENTATION_DESCRIPTION = (
    "Which kernels compute energies and forces when no autograd graph is needed "
    "(plain MD): 'auto' uses the native C++ CPU kernels (compiled once on first use, "
    "about a minute) for CPU tensors and falls back to PyTorch with a warning when no "
    "compiler is available; 'torch' always uses the PyTorch kernels; 'native' requires "
    "the C++ kernels (error if they cannot be built). Gradients (differentiable "
    "simulation, trainable parameters) and CUDA always use the PyTorch kernels; "
    "TORCHMD_CORE_NATIVE=0 in the environment turns 'auto' to 'torch'."
)

_CSRC = Path(__file__).parent / "csrc"
_SOURCES = ("cluster_nonbonded.cpp", "bonded.cpp")
_NAME = "torchmd_core_native"
_module: ModuleType | None = None
_error: str | None = None
_tried = False


def load_native() -> ModuleType | None:
    """The compiled extension, building it on first use; None if it cannot be built.

    Tries ``-march=native`` first and a portable build when that fails.
    """
    global _module, _error, _tried
    if _tried:
        return _module
    _tried = True
    try:
        _module = _build(["-march=native"]) if _march_native_ok() else None
    except Exception as err:
        _error = str(err).strip().splitlines()[-1] if str(err).strip() else repr(err)
    if _module is None:
        try:
            _module = _build([], suffix="_portable")
            _error = None
        except Exception as err:
            _error = (
                str(err).strip().splitlines()[-1] if str(err).strip() else repr(err)
            )
            _module = None
    return _module


def _march_native_ok() -> bool:
    return os.environ.get("TORCHMD_CORE_NATIVE_MARCH", "1") != "0"


def _build(arch_flags: list[str], suffix: str = "") -> ModuleType:
    return build_extension(
        f"{_NAME}{suffix}",
        [_CSRC / s for s in _SOURCES],
        ["-O3", "-fopenmp", "-fno-math-errno", "-fno-trapping-math", *arch_flags],
        ["-fopenmp"],
        message="compiling native kernels (once, ~1 min)",
    )


def native_available() -> bool:
    """Whether the native kernels can be used (built, and not disabled)."""
    return not native_disabled() and load_native() is not None


_warned = False


def check_implementation(implementation: str) -> None:
    """Raise :class:`ConfigError` when ``implementation='native'`` is not available."""
    if implementation != "native":
        return
    if native_disabled():
        raise ConfigError(
            "implementation: 'native' but TORCHMD_CORE_NATIVE=0 disables the native "
            "kernels; unset it or use implementation: auto"
        )
    if load_native() is None:
        raise ConfigError(
            "implementation: 'native' but the C++ kernels could not be built "
            f"({_error}); install a C++ compiler (g++ or clang) and ninja "
            "(pip install ninja), or use implementation: auto"
        )


def use_native(
    implementation: str,
    positions: Tensor,
    box: Tensor | None,
    modules: Iterable[nn.Module],
) -> bool:
    """Whether a potential evaluates ``positions`` with the native kernels.

    True for CPU float32/float64 positions when no autograd graph is needed (grad mode
    off, or nothing among positions, box and the parameters and buffers of ``modules``
    (the potential's, ``tuple(potential.modules())``) requires grad, and no
    torch.func transform or torch.compile trace is active), the box (if
    any) is in reduced form (a along x, b in the xy plane), and the implementation is
    'native', or 'auto' with the kernels available.
    """
    if implementation == "torch" or positions.device.type != "cpu":
        return False
    if positions.dtype not in (torch.float32, torch.float64):
        return False
    if inside_transform():  # torch.func (vmap, grad, ...) or torch.compile tracing
        return False
    if torch.is_grad_enabled() and (
        positions.requires_grad
        or (box is not None and box.requires_grad)
        or _requires_grad(modules)
    ):
        return False
    if box is not None and not _reduced(box):
        return False
    if implementation == "auto" and native_disabled():
        return False
    if load_native() is None:
        if implementation == "native":
            check_implementation(implementation)
        _warn_once()
        return False
    return True


def _requires_grad(modules: Iterable[nn.Module]) -> bool:
    for m in modules:  # the modules' own dicts: cheaper than parameters()/buffers()
        for t in (*m._parameters.values(), *m._buffers.values()):
            if t is not None and t.requires_grad:
                return True
    return False


_last_box: tuple[Tensor, int, bool] | None = None


def _reduced(box: Tensor) -> bool:
    """Whether ``box`` (R, 3, 3) is in reduced form; remembered for the last box."""
    global _last_box
    last = _last_box
    if last is not None and last[0] is box and last[1] == box._version:
        return last[2]
    b = box.detach()
    reduced = bool((b[:, 0, 1:] == 0).all()) and bool((b[:, 1, 2] == 0).all())
    _last_box = (box, box._version, reduced)
    return reduced


def _warn_once() -> None:
    global _warned
    if not _warned:
        _warned = True
        warnings.warn(
            f"torchmd-core: the native CPU kernels could not be built ({_error}); "
            "using the slower PyTorch kernels. Install a C++ compiler and ninja "
            "(pip install ninja) to get them, or set TORCHMD_CORE_NATIVE=0 to silence "
            "this.",
            RuntimeWarning,
            stacklevel=3,
        )
