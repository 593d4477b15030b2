"""Checkpoints: everything needed to continue a run exactly, written atomically.

A checkpoint holds positions, velocities, box, step and time of every replica, the
integrator's and barostat's random streams and state, each reporter's bookkeeping,
what plugins add through the checkpoint hooks, a fingerprint of the configuration and
a signature of the system. It is written to a temporary file in the same folder,
flushed to disk, then renamed over the old one, so a crash at any moment leaves either
the previous checkpoint or the new one, never a torn file.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from torchmd_core.errors import CheckpointError
from torchmd_core.state import State
from torchmd_core.system import System

if TYPE_CHECKING:
    from torchmd_core.simulation import Simulation

__all__ = ["atomic_save", "load_checkpoint", "read_checkpoint", "save_checkpoint", "system_signature"]

FORMAT = "torchmd-core-checkpoint"
VERSION = 1


def system_signature(system: System) -> str:
    """A hash of atom count, names, masses and charges: what identifies a system."""
    h = hashlib.sha256()
    h.update(str(system.n_atoms).encode())
    h.update("\x00".join(system.atom_names).encode())
    h.update(system.masses.to(torch.float64).numpy().round(6).tobytes())
    h.update(system.charges.to(torch.float64).numpy().round(6).tobytes())
    return h.hexdigest()[:16]


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temporary file, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with tmp.open("wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    try:  # make the rename itself durable
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def save_checkpoint(simulation: Simulation, path: str | Path) -> None:
    """Write the simulation's current state atomically to ``path``."""
    state = simulation.state
    extra: dict[str, Any] = {}
    simulation.registry.hook.torchmd_core_checkpoint_save(simulation=simulation, extra=extra)
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "fingerprint": None if simulation.config is None else simulation.config.fingerprint(),
        "system": system_signature(simulation.system),
        "n_atoms": simulation.system.n_atoms,
        "state": {
            "positions": state.positions.detach().cpu(),
            "velocities": None if state.velocities is None else state.velocities.detach().cpu(),
            "box": None if state.box is None else state.box.detach().cpu(),
            "step": state.step,
            "time_ps": state.time_ps,
        },
        "integrator": simulation.integrator.state_dict(),
        "barostat": None if simulation.barostat is None else simulation.barostat.state_dict(),
        "reporters": [r.state_dict() for r in simulation.reporters],
        "extra": extra,
    }
    for reporter in simulation.reporters:
        reporter.flush()
    atomic_save(payload, path)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read and sanity-check a checkpoint file."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint '{path}' does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # torch raises many types for corrupt files
        raise CheckpointError(
            f"checkpoint '{path}' cannot be read ({type(err).__name__}); it may be "
            "truncated or not a torchmd-core checkpoint"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"'{path}' is not a torchmd-core checkpoint")
    return payload


def load_checkpoint(simulation: Simulation, path: str | Path, strict: bool = True) -> None:
    """Restore state, random streams and reporter bookkeeping from ``path``.

    Raises:
        CheckpointError: the checkpoint belongs to another system or configuration.
    """
    payload = read_checkpoint(path)
    sig = system_signature(simulation.system)
    if payload["system"] != sig or payload["n_atoms"] != simulation.system.n_atoms:
        raise CheckpointError(
            f"checkpoint '{path}' was written for a different system "
            f"({payload['n_atoms']} atoms, signature {payload['system']}; this one has "
            f"{simulation.system.n_atoms} atoms, signature {sig}); resume with the config "
            "that wrote it"
        )
    fp = None if simulation.config is None else simulation.config.fingerprint()
    if strict and fp is not None and payload["fingerprint"] not in (None, fp):
        raise CheckpointError(
            f"checkpoint '{path}' was written with different settings (system, potentials, "
            "integrator, precision, replicas or seed changed); only 'steps' and reporters "
            "may change when resuming"
        )
    current = simulation.state
    s = payload["state"]

    def move(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else t.to(device=current.device, dtype=current.dtype)

    positions = move(s["positions"])
    assert positions is not None
    if positions.shape != current.positions.shape:
        raise CheckpointError(
            f"checkpoint '{path}' holds {positions.shape[0]} replicas, this run has "
            f"{current.n_replicas}"
        )
    simulation.state = State(
        positions=positions, velocities=move(s["velocities"]), box=move(s["box"]),
        step=int(s["step"]), time_ps=float(s["time_ps"]),
    )
    simulation.integrator.load_state_dict(payload["integrator"])
    if simulation.barostat is not None and payload.get("barostat") is not None:
        simulation.barostat.load_state_dict(payload["barostat"])
    states = payload.get("reporters") or []
    if len(states) == len(simulation.reporters):
        for reporter, rstate in zip(simulation.reporters, states, strict=True):
            reporter.load_state_dict(rstate)
    simulation.registry.hook.torchmd_core_checkpoint_load(
        simulation=simulation, extra=payload.get("extra") or {}
    )
