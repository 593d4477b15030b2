"""Native (C++) kernels for plugins: compiling them once and deciding when they apply.

Built-in and third-party plugins that ship C++ sources build them with
:func:`build_extension` (:func:`torch.utils.cpp_extension.load` on first use, cached in
torch's extensions folder) and gate them with :func:`native_disabled` (the
``TORCHMD_CORE_NATIVE=0`` switch) and :func:`inside_transform` (no native call inside
a ``torch.func`` transform or a ``torch.compile`` trace, which need traceable torch).
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import torch

__all__ = ["build_extension", "inside_transform", "native_disabled"]


def native_disabled() -> bool:
    """Whether ``TORCHMD_CORE_NATIVE`` in the environment switches native kernels off
    (``0``, ``false``, ``no`` or ``off``)."""
    value = os.environ.get("TORCHMD_CORE_NATIVE", "1").strip().lower()
    return value in ("0", "false", "no", "off")


def inside_transform() -> bool:
    """Whether a torch.func transform (vmap, grad, ...) or torch.compile trace runs."""
    if torch._C._functorch.peek_interpreter_stack() is not None:
        return True
    return bool(torch.compiler.is_compiling())


def build_extension(
    name: str,
    sources: Sequence[Path],
    cflags: Sequence[str],
    ldflags: Sequence[str] = (),
    message: str = "compiling native kernels (once)",
) -> ModuleType:
    """Compile (first use) and import the extension made of ``sources``.

    The build folder is named after ``name`` and a digest of every file in the
    sources' folder (headers included), the flags and that folder's location, so an
    edit, an upgrade or a second installation never rebuilds over a folder another
    process has loaded. ``message`` goes to stderr when a compile actually happens.

    Raises:
        Exception: whatever the compiler or loader raised (no compiler, bad code).
    """
    from torch.utils import cpp_extension

    folder = sources[0].parent
    digest = hashlib.sha256(
        b"".join(p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file())
        + " ".join(cflags).encode()
        + str(folder.resolve()).encode()
    ).hexdigest()[:16]
    full_name = f"{name}_{digest}"
    build_dir = Path(cpp_extension._get_build_directory(full_name, verbose=False))
    if not any(build_dir.glob(f"{full_name}*.so")):
        print(message, file=sys.stderr, flush=True)
    module = cpp_extension.load(
        name=full_name,
        sources=[str(s) for s in sources],
        extra_include_paths=[str(folder)],
        extra_cflags=list(cflags),
        extra_ldflags=list(ldflags),
        verbose=False,
    )
    assert isinstance(module, ModuleType)
    return module
