"""Checkpoints: everything needed to continue a run exactly, written atomically.

A checkpoint holds positions, velocities, box, step and time of every replica, the
forces and energies cached in the state, where the shared neighbour list was built,
the integrator's and barostat's random streams and state, each reporter's bookkeeping
(frames and bytes written, so that files are continued without duplicate or missing
frames), what plugins add through the checkpoint hooks, the configuration and a
signature of the system. Resuming from it gives bit for bit the trajectory of an
uninterrupted run.

It is written to a temporary file in the same folder, flushed to disk, then renamed
over the old one, so a crash at any moment leaves either the previous checkpoint or the
new one, never a torn file.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from torchmd_core.errors import CheckpointError
from torchmd_core.state import State
from torchmd_core.system import System

if TYPE_CHECKING:
    from torchmd_core.config import SimulationConfig
    from torchmd_core.simulation import Simulation

__all__ = [
    "atomic_save",
    "checkpoint_payload",
    "config_differences",
    "load_checkpoint",
    "read_checkpoint",
    "save_checkpoint",
    "system_signature",
]

FORMAT = "torchmd-core-checkpoint"
VERSION = 2


def system_signature(system: System) -> str:
    """A hash of atom count, names, masses and charges: what identifies a system."""
    h = hashlib.sha256()
    h.update(str(system.n_atoms).encode())
    h.update("\x00".join(system.atom_names).encode())
    h.update(system.masses.to(torch.float64).numpy().round(6).tobytes())
    h.update(system.charges.to(torch.float64).numpy().round(6).tobytes())
    return h.hexdigest()[:16]


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temporary file, fsync, then rename over ``path``.

    A crash (even SIGKILL or power loss) at any moment leaves ``path`` as it was or
    complete with ``obj``; at worst a ``.NAME.tmp-PID`` file remains beside it.
    """
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
    fsync_directory(path.parent)


def fsync_directory(folder: Path) -> None:
    """Make a rename in ``folder`` durable (no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_checkpoint(simulation: Simulation, path: str | Path) -> None:
    """Write the simulation's current state atomically to ``path``.

    Reporters are flushed first, so their files hold at least what the checkpoint
    records. In a distributed run (``simulation.group``) every process calls this:
    rank 0 gathers all replicas and writes one file, the same as a single process
    would (see :mod:`torchmd_core.distributed`).
    """
    payload = checkpoint_payload(simulation)
    if simulation.group is not None:
        gathered = simulation.group.gather_checkpoint(simulation, payload)
        if gathered is None:  # not rank 0
            return
        payload = gathered
    atomic_save(payload, path)


def checkpoint_payload(simulation: Simulation) -> dict[str, Any]:
    """What :func:`save_checkpoint` writes, for this process's replicas."""
    state = simulation.state
    for reporter in simulation.reporters:
        reporter.flush()
    extra: dict[str, Any] = {}
    simulation.registry.hook.torchmd_core_checkpoint_save(
        simulation=simulation, extra=extra
    )
    config = simulation.config
    neighbor_list = getattr(simulation.potential, "neighbor_list", None)
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "fingerprint": None if config is None else config.fingerprint(),
        "config": None if config is None else comparable_config(config),
        "system": system_signature(simulation.system),
        "n_atoms": simulation.system.n_atoms,
        "state": {
            "positions": _cpu(state.positions),
            "velocities": _cpu(state.velocities),
            "box": _cpu(state.box),
            "step": state.step,
            "time_ps": state.time_ps,
            "forces": _cpu(state.forces),
            "potential_energy": _cpu(state.potential_energy),
            "dtype": str(state.dtype).removeprefix("torch."),
        },
        "reported_step": simulation.reported_step,
        "neighbor_list": None if neighbor_list is None else neighbor_list.state_dict(),
        "integrator": simulation.integrator.state_dict(),
        "barostat": None
        if simulation.barostat is None
        else simulation.barostat.state_dict(),
        "reporters": reporter_states(simulation),
        "exchange": None
        if simulation.exchange is None
        else simulation.exchange.state_dict(),
        "extra": extra,
    }
    return payload


def reporter_states(simulation: Simulation) -> dict[str, Any]:
    """Each reporter's :meth:`~Reporter.state_dict` under its checkpoint key."""
    out: dict[str, Any] = {}
    for reporter in simulation.reporters:
        out[_unique_key(reporter.checkpoint_key(), out)] = reporter.state_dict()
    return out


def _unique_key(key: str, taken: dict[str, Any]) -> str:
    n, unique = 1, key
    while unique in taken:
        n += 1
        unique = f"{key}#{n}"
    return unique


def _cpu(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.detach().cpu()


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read and sanity-check a checkpoint file.

    Raises:
        CheckpointError: missing, unreadable, truncated or not a checkpoint.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint '{path}' does not exist")
    if path.is_dir():
        raise CheckpointError(f"checkpoint '{path}' is a directory, expected a file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # torch raises many types for corrupt files
        raise CheckpointError(
            f"checkpoint '{path}' cannot be read ({type(err).__name__}); it may be "
            "truncated or not a torchmd-core checkpoint"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"'{path}' is not a torchmd-core checkpoint")
    if int(payload.get("version", 0)) > VERSION:
        raise CheckpointError(
            f"checkpoint '{path}' was written by a newer torchmd-core (format "
            f"{payload['version']}, this one reads up to {VERSION}); upgrade "
            "torchmd-core"
        )
    return payload


def load_checkpoint(
    simulation: Simulation, path: str | Path, strict: bool = True
) -> None:
    """Restore state, random streams, neighbour list and reporter bookkeeping.

    After this, :meth:`Simulation.run` continues exactly where the checkpointed run
    was (pass ``resume=True`` so that reporters append to their files).

    Args:
        simulation: built from the same configuration (``steps`` and reporters may
            differ).
        path: the checkpoint file.
        strict: refuse a checkpoint written with a different configuration.

    Raises:
        CheckpointError: the checkpoint belongs to another system or configuration, or
            cannot be read.
    """
    if simulation.group is None:
        payload = read_checkpoint(path)
    else:  # rank 0 reads; each process receives its replicas' part
        payload = simulation.group.read_checkpoint(simulation, path)
    _check_same_system(simulation, payload, path)
    if strict and simulation.config is not None:
        _check_same_config(simulation.config, payload, path)
    current = simulation.state
    s = payload["state"]

    def move(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else t.to(device=current.device, dtype=current.dtype)

    positions = move(s["positions"])
    assert positions is not None
    if positions.shape != current.positions.shape:
        raise CheckpointError(
            f"checkpoint '{path}' holds {positions.shape[0]} replicas, this run has "
            f"{current.n_replicas}; resume with the n_replicas it was written with"
        )
    if (s["box"] is None) != (current.box is None):
        raise CheckpointError(
            f"checkpoint '{path}' is {'non-' if s['box'] is None else ''}periodic, "
            "this simulation is not; resume with the config that wrote it"
        )
    state = State(
        positions=positions,
        velocities=move(s["velocities"]),
        box=move(s["box"]),
        step=int(s["step"]),
        time_ps=float(s["time_ps"]),
        forces=move(s.get("forces")),
        potential_energy=move(s.get("potential_energy")),
    )
    reported = payload.get("reported_step", int(s["step"]))
    simulation.continue_from(state, reported)
    neighbor_state = payload.get("neighbor_list")
    neighbor_list = getattr(simulation.potential, "neighbor_list", None)
    if neighbor_list is not None and neighbor_state is not None:
        neighbor_list.load_state_dict(
            {k: move(v) for k, v in neighbor_state.items()}, device=current.device
        )
    try:
        simulation.integrator.load_state_dict(payload["integrator"])
        if simulation.barostat is not None and payload.get("barostat") is not None:
            simulation.barostat.load_state_dict(payload["barostat"])
    except (ValueError, KeyError, RuntimeError) as err:
        raise CheckpointError(
            f"checkpoint '{path}': the integrator or barostat state does not fit this "
            f"simulation ({err}); resume with the config that wrote it"
        ) from None
    if simulation.exchange is not None and payload.get("exchange") is not None:
        simulation.exchange.load_state_dict(payload["exchange"])
    _load_reporter_states(simulation, payload.get("reporters") or {})
    simulation.registry.hook.torchmd_core_checkpoint_load(
        simulation=simulation, extra=payload.get("extra") or {}
    )


def _load_reporter_states(
    simulation: Simulation, states: dict[str, Any] | list[Any]
) -> None:
    if isinstance(states, list):  # format 1: by position
        if len(states) == len(simulation.reporters):
            for reporter, rstate in zip(simulation.reporters, states, strict=True):
                reporter.load_state_dict(rstate)
        return
    taken: dict[str, Any] = {}
    for reporter in simulation.reporters:
        key = _unique_key(reporter.checkpoint_key(), taken)
        taken[key] = True
        if key in states:
            reporter.load_state_dict(states[key])


def _check_same_system(
    simulation: Simulation, payload: dict[str, Any], path: str | Path
) -> None:
    sig = system_signature(simulation.system)
    if payload["system"] != sig or payload["n_atoms"] != simulation.system.n_atoms:
        raise CheckpointError(
            f"checkpoint '{path}' was written for a different system "
            f"({payload['n_atoms']} atoms, signature {payload['system']}; this one has "
            f"{simulation.system.n_atoms} atoms, signature {sig}); resume with the "
            "config that wrote it"
        )
    dtype = payload["state"].get("dtype")
    current = str(simulation.state.dtype).removeprefix("torch.")
    if dtype is not None and dtype != current:
        raise CheckpointError(
            f"checkpoint '{path}' was written in {dtype}, this run uses {current}; "
            f"set precision: {dtype} to continue it"
        )


def _check_same_config(
    config: SimulationConfig, payload: dict[str, Any], path: str | Path
) -> None:
    saved = payload.get("config")
    if saved is None:  # format 1, or written without a config
        fingerprint = payload.get("fingerprint")
        if fingerprint not in (None, config.fingerprint()):
            raise CheckpointError(
                f"checkpoint '{path}' was written with different settings (system, "
                "potentials, integrator, precision, replicas or seed changed); only "
                "'steps' and reporters may change when resuming"
            )
        return
    differences = config_differences(saved, comparable_config(config))
    if differences:
        shown = "\n".join(f"  {d}" for d in differences[:8])
        more = (
            f"\n  ... and {len(differences) - 8} more" if len(differences) > 8 else ""
        )
        raise CheckpointError(
            f"checkpoint '{path}' was written with a different configuration:\n"
            f"{shown}{more}\nOnly 'steps', 'reporters' and 'distributed' may change "
            "when resuming; resume with the config that wrote the checkpoint"
        )


def comparable_config(config: SimulationConfig) -> dict[str, Any]:
    """The config as plain JSON data without the fields that may change between
    segments; file paths reduced to their names (the same inputs may be reached from
    another working directory)."""
    from torchmd_core.config import _segment_fields

    data = config.model_dump(mode="python", exclude=_segment_fields(config))
    plain: dict[str, Any] = json.loads(json.dumps(_names_of_paths(data)))
    return plain


def _names_of_paths(value: Any) -> Any:
    if isinstance(value, Path):
        return value.name
    if isinstance(value, dict):
        return {str(k): _names_of_paths(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_names_of_paths(v) for v in value]
    return value


def config_differences(saved: Any, current: Any, where: str = "") -> list[str]:
    """Lines ``"path: A in the checkpoint, B in this config"`` for every difference."""
    if isinstance(saved, dict) and isinstance(current, dict):
        out = []
        for key in sorted(set(saved) | set(current), key=str):
            sub = f"{where}.{key}" if where else str(key)
            if key not in saved or key not in current:
                have = "absent" if key not in saved else repr(saved[key])
                now = "absent" if key not in current else repr(current[key])
                out.append(f"{sub}: {have} in the checkpoint, {now} in this config")
            else:
                out.extend(config_differences(saved[key], current[key], sub))
        return out
    if (
        isinstance(saved, list)
        and isinstance(current, list)
        and len(saved) == len(current)
    ):
        out = []
        for i, (a, b) in enumerate(zip(saved, current, strict=True)):
            out.extend(config_differences(a, b, f"{where}[{i}]"))
        return out
    if saved != current:
        where = where or "(config)"
        return [f"{where}: {saved!r} in the checkpoint, {current!r} in this config"]
    return []
