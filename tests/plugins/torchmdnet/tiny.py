"""Tiny TorchMD-NET models built in-test (no downloads); torchmd-net's own answers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

#: Hyper-parameters of a tiny TensorNet: a few thousand weights, cutoff 5 Å.
TINY_ARGS: dict[str, Any] = {
    "model": "tensornet",
    "embedding_dimension": 8,
    "num_layers": 1,
    "num_rbf": 8,
    "rbf_type": "expnorm",
    "trainable_rbf": False,
    "activation": "silu",
    "cutoff_lower": 0.0,
    "cutoff_upper": 5.0,
    "max_z": 10,
    "max_num_neighbors": 32,
    "equivariance_invariance_group": "O(3)",
    "derivative": False,
    "atom_filter": -1,
    "prior_model": None,
    "output_model": "Scalar",
    "reduce_op": "add",
    "precision": 64,
}


def tiny_model(seed: int = 0, **changes: Any) -> torch.nn.Module:
    """A freshly initialised tiny TorchMD-NET model (eval mode).

    The weights are jittered so that the model's energy is not close to a constant.
    """
    from torchmdnet.models.model import create_model

    torch.manual_seed(seed)
    model = create_model({**TINY_ARGS, **changes})
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def save_checkpoint(model: torch.nn.Module, path: Path, **changes: Any) -> Path:
    """Write ``model`` as a checkpoint in the layout ``load_model`` reads."""
    torch.save(
        {
            "hyper_parameters": {**TINY_ARGS, **changes},
            "state_dict": model.state_dict(),
        },
        path,
    )
    return path


def reference_model(path: Path | list[str], derivative: bool = True) -> torch.nn.Module:
    """The model as torchmd-net itself loads it (with its own forces)."""
    from torchmdnet.models.model import load_model

    source = path if isinstance(path, list) else str(path)
    return load_model(source, derivative=derivative).eval()


def reference_energy_forces(
    model: torch.nn.Module,
    z: torch.Tensor,
    positions: torch.Tensor,
    box: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(R,) energies and (R, M, 3) forces through torchmd-net's API, model units."""
    n_rep, n_at = positions.shape[:2]
    batch = torch.arange(n_rep).repeat_interleave(n_at)
    pos = positions.reshape(-1, 3).detach().clone()
    y, neg_dy = model(z.repeat(n_rep), pos, batch, box=box)
    return y.detach().reshape(n_rep), neg_dy.detach().reshape(n_rep, n_at, 3)
