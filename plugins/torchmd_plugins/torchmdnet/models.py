"""Reading TorchMD-NET models from files, and calling them alike whatever their form.

A model file is one of:

- a TorchMD-NET checkpoint (``.ckpt``, written by ``torchmd-train`` or by
  ``torch.save({"hyper_parameters": ..., "state_dict": ...})``), read with
  ``torchmdnet.models.model.load_model``;
- an ensemble: a list of checkpoints, or a ``.zip`` of checkpoints (``load_model``
  averages their predictions);
- a TorchScript module (``torch.jit.save`` of a scripted model);
- a ``torch.export`` archive (``.pt2``; an exported program takes the input shapes it
  was exported with, unless exported with dynamic shapes).

torchmd-net is imported here, lazily, so that ``tmd plugins`` stays fast and a missing
package is a clear error for this kind alone.
"""

from __future__ import annotations

import contextlib
import inspect
import pickle
import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import Tensor, nn

from torchmd_core import InputFileError, PluginLoadError

__all__ = [
    "accepted_arguments",
    "disable_derivative",
    "import_torchmdnet",
    "load_model_file",
    "max_atom_type",
    "model_output",
]

INSTALL_HINT = (
    "'torchmdnet' needs torchmd-net: pip install \"torchmd-core[torchmdnet]\""
)

_FORMATS = (
    "a TorchMD-NET checkpoint (.ckpt), a list or .zip of checkpoints (ensemble), a "
    "TorchScript file (torch.jit.save) or a torch.export archive (.pt2)"
)


def import_torchmdnet() -> ModuleType:
    """``torchmdnet.models.model``, which also registers torchmd-net's custom operators.

    Raises:
        PluginLoadError: torchmd-net is not installed (or fails to import).
    """
    _quiet_warp()
    try:
        from torchmdnet.models import model
    except ImportError as err:
        raise PluginLoadError(f"{INSTALL_HINT} ({err})") from None
    return model  # type: ignore[no-any-return]


def _quiet_warp() -> None:
    """Keep NVIDIA Warp (torchmd-net's kernels) from printing its banner and a line per
    kernel module loaded into the run's output: its log level becomes WARNING, unless
    Warp was imported (and so configured) before."""
    if "warp" in sys.modules:
        return
    try:
        import warp
    except ImportError:  # older torchmd-net versions do not use Warp
        return
    warp.config.log_level = max(warp.config.log_level, warp.LOG_WARNING)


def load_model_file(path: Path | Sequence[Path]) -> nn.Module:
    """The model in ``path`` (or the ensemble of a list of checkpoints), on the CPU.

    Checkpoints are loaded with ``derivative=False``: forces come from autograd through
    the energy, so that the graph to the parameters is kept when it is needed.

    Raises:
        InputFileError: a file is missing, unreadable, or not a model in a known form.
        PluginLoadError: torchmd-net is not installed.
    """
    tmn = import_torchmdnet()
    paths = [Path(path)] if isinstance(path, (str, Path)) else [Path(p) for p in path]
    if not paths:
        raise InputFileError(f"model: empty list of checkpoint files; give {_FORMATS}")
    for p in paths:
        if not p.is_file():
            raise InputFileError(f"TorchMD-NET model file '{p}' does not exist")
    if len(paths) > 1:
        return _load_checkpoint(tmn, [str(p) for p in paths], paths[0])
    file = paths[0]
    form = _file_form(file)
    if form == "torchscript":
        return _guarded(file, lambda: _load_torchscript(file))
    if form == "export":
        return _guarded(file, lambda: torch.export.load(str(file)).module())
    return _load_checkpoint(tmn, str(file), file)  # one checkpoint, or a .zip ensemble


def _load_torchscript(file: Path) -> nn.Module:
    module: nn.Module = torch.jit.load(str(file), map_location="cpu")  # type: ignore[no-untyped-call]
    return module


def _file_form(file: Path) -> str:
    """'torchscript', 'export', 'ensemble' (zip of .ckpt) or 'checkpoint'."""
    if not zipfile.is_zipfile(file):
        return "checkpoint"  # legacy (non-zip) torch.save format
    try:
        with zipfile.ZipFile(file) as archive:
            names = archive.namelist()
    except (OSError, zipfile.BadZipFile) as err:
        raise InputFileError(
            f"cannot read TorchMD-NET model file '{file}': {err}"
        ) from None
    if any(n.endswith(".ckpt") for n in names):
        return "ensemble"
    if any(n.endswith("/constants.pkl") or "/code/" in n for n in names):
        return "torchscript"
    if any(n.endswith("/archive_format") or "/models/" in n for n in names):
        return "export"
    return "checkpoint"


def _load_checkpoint(tmn: ModuleType, source: str | list[str], file: Path) -> nn.Module:
    def load() -> nn.Module:
        module: nn.Module = tmn.load_model(source, device="cpu", derivative=False)
        return module

    try:
        return _guarded(file, load)
    except KeyError as err:
        raise InputFileError(
            f"'{file}' is not a TorchMD-NET checkpoint (missing {err}); give {_FORMATS}"
        ) from None


def _guarded(file: Path, load: Any) -> nn.Module:
    """Run ``load()``; unreadable or foreign files become one clear InputFileError."""
    try:
        module = load()
    except (
        OSError,
        RuntimeError,
        EOFError,
        ValueError,
        AssertionError,
        pickle.UnpicklingError,
        zipfile.BadZipFile,
    ) as err:
        first = (
            str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        )
        raise InputFileError(
            f"cannot load TorchMD-NET model '{file}': {first}. Give {_FORMATS}."
        ) from None
    except ModuleNotFoundError as err:
        raise PluginLoadError(
            f"loading '{file}' needs the Python module {err.name!r}"
        ) from None
    if not isinstance(module, nn.Module):
        raise InputFileError(
            f"'{file}' holds a {type(module).__name__}, not a model; give {_FORMATS}"
        )
    return module


def accepted_arguments(module: nn.Module) -> frozenset[str]:
    """Names of the arguments of the model's ``forward`` (z, pos, batch, box, ...)."""
    schema = getattr(getattr(module, "forward", None), "schema", None)
    if schema is not None:  # TorchScript
        return frozenset(a.name for a in schema.arguments if a.name != "self")
    if isinstance(module, nn.ModuleList) and len(
        module
    ):  # torchmd-net Ensemble relays to its members
        return accepted_arguments(module[0])
    try:
        params = inspect.signature(module.forward).parameters
    except (TypeError, ValueError):
        return frozenset({"z", "pos", "batch"})
    return frozenset(params)


def disable_derivative(module: nn.Module) -> None:
    """Switch off a TorchMD-NET model's own force computation where it can be switched.

    The potential differentiates the energy itself (keeping the graph when needed), so
    the model's internal ``autograd.grad`` would be wasted work.
    """
    for sub in module.modules():
        if getattr(sub, "derivative", False) is True:
            # A TorchScript constant cannot be changed: leave it.
            with contextlib.suppress(AttributeError, RuntimeError):
                setattr(sub, "derivative", False)  # noqa: B010 (mypy: Module attrs are tensors)


def max_atom_type(module: nn.Module) -> int | None:
    """The number of atom types the model embeds (``max_z``), when it says so."""
    for sub in module.modules():
        value = getattr(sub, "max_z", None)
        if isinstance(value, int):
            return value
    return None


def model_output(result: Any) -> Tensor:
    """The energy from a model's return value: a tensor, or the first of a tuple."""
    if isinstance(result, (tuple, list)):
        result = result[0]
    if not isinstance(result, Tensor):
        raise TypeError(
            f"the TorchMD-NET model returned {type(result).__name__}, expected a tensor"
        )
    return result
