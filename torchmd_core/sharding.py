"""Per-replica data split between processes and joined again, by global replica
index: which replicas a process runs, frames gathered from every process, and
checkpoints joined from every process's part (and split for any number of processes).
Pure functions on CPU tensors and plain dicts; :mod:`torchmd_core.distributed` moves
the pieces between processes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from torchmd_core.reporter import Frame
from torchmd_core.state import State

__all__ = [
    "frame_parts",
    "join_frames",
    "merge_checkpoints",
    "split_checkpoint",
    "split_replicas",
]

_STATE_TENSORS = ("positions", "velocities", "box", "forces", "potential_energy")


def split_replicas(n_replicas: int, world_size: int, rank: int) -> range:
    """The global indices of the replicas of process ``rank``: contiguous blocks, the
    first ``n_replicas % world_size`` ranks one replica more than the others."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside 0..{world_size - 1}")
    base, extra = divmod(n_replicas, world_size)
    start = rank * base + min(rank, extra)
    return range(start, start + base + (1 if rank < extra else 0))


# -- frames ----------------------------------------------------------------------------


def _cpu(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.detach().cpu()


def frame_parts(frame: Frame) -> dict[str, Any]:
    s = frame.state
    return {
        "state": {k: _cpu(getattr(s, k)) for k in _STATE_TENSORS},
        "step": s.step,
        "time_ps": s.time_ps,
        "potential_energy": _cpu(frame.potential_energy),
        "kinetic_energy": _cpu(frame.kinetic_energy),
        "temperature_K": _cpu(frame.temperature_K),
        "volume_A3": _cpu(frame.volume_A3),
        "density_g_cm3": _cpu(frame.density_g_cm3),
        "forces": _cpu(frame.forces),
        "energy_terms": None
        if frame.energy_terms is None
        else {k: _cpu(v) for k, v in frame.energy_terms.items()},
        "extras": {k: _cpu(v) for k, v in frame.extras.items()},
        "speed_ns_day": frame.speed_ns_day,
    }


def _cat(values: Sequence[Tensor | None]) -> Tensor | None:
    if any(v is None for v in values):
        return None
    return torch.cat([v for v in values if v is not None])


def join_frames(parts: list[dict[str, Any]]) -> Frame:
    joined = {k: _cat([p["state"][k] for p in parts]) for k in _STATE_TENSORS}
    positions = joined["positions"]
    assert positions is not None
    state = State(
        positions=positions,
        velocities=joined["velocities"],
        box=joined["box"],
        step=parts[0]["step"],
        time_ps=parts[0]["time_ps"],
        forces=joined["forces"],
        potential_energy=joined["potential_energy"],
    )
    terms = None
    if parts[0]["energy_terms"] is not None:
        terms = {
            k: _cat([p["energy_terms"][k] for p in parts])
            for k in parts[0]["energy_terms"]
        }
    extras = {k: _cat([p["extras"][k] for p in parts]) for k in parts[0]["extras"]}
    energy, kinetic, temperature = (
        _cat([p[k] for p in parts])
        for k in ("potential_energy", "kinetic_energy", "temperature_K")
    )
    assert energy is not None and kinetic is not None and temperature is not None
    return Frame(
        state=state,
        potential_energy=energy,
        kinetic_energy=kinetic,
        temperature_K=temperature,
        volume_A3=_cat([p["volume_A3"] for p in parts]),
        density_g_cm3=_cat([p["density_g_cm3"] for p in parts]),
        energy_terms=terms,  # type: ignore[arg-type]
        forces=_cat([p["forces"] for p in parts]),
        speed_ns_day=parts[0]["speed_ns_day"],
        extras=extras,
    )


# -- checkpoints -----------------------------------------------------------------------


def merge_checkpoints(
    parts: Sequence[dict[str, Any]],
    integrator_keys: Sequence[str] = ("generators",),
    barostat_keys: Sequence[str] = ("generators",),
    baseline: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One checkpoint payload from those of consecutive replica blocks (by rank).

    Per-replica data (state tensors, neighbour-list build positions, the
    ``replica_state_keys`` of integrator and barostat) is joined along the replicas;
    everything else is rank 0's, except reporters' per-file records (dict entries of a
    reporter's state, e.g. ``files``), which are united: where processes disagree on a
    record, the one that changed since the checkpoint last read (``baseline``, its
    reporter states) is the writer's.
    """
    out = dict(parts[0])
    out["state"] = dict(parts[0]["state"])
    for key in _STATE_TENSORS:
        out["state"][key] = _cat([p["state"][key] for p in parts])
    lists = [p.get("neighbor_list") for p in parts]
    if lists[0] is not None:
        nl = [x or {} for x in lists]
        out["neighbor_list"] = {
            k: _cat([x.get(k) for x in nl]) for k in ("positions", "box")
        }
        if out["neighbor_list"]["positions"] is None:
            out["neighbor_list"] = {"positions": None, "box": None}
    for name, keys in (("integrator", integrator_keys), ("barostat", barostat_keys)):
        if parts[0].get(name) is not None:
            out[name] = _join_component([p[name] for p in parts], keys)
    out["reporters"] = _merge_reporters(
        [p.get("reporters") or {} for p in parts], baseline or {}
    )
    return out


def _join_component(
    states: Sequence[dict[str, Any]], keys: Sequence[str]
) -> dict[str, Any]:
    out = dict(states[0])
    for key in keys:
        values: list[Any] = [s.get(key) for s in states]
        if any(v is None for v in values):
            out[key] = None
        elif isinstance(values[0], Tensor):
            out[key] = torch.cat(values)
        else:
            out[key] = [item for v in values for item in v]
    return out


def _merge_reporters(
    states: Sequence[dict[str, Any]], baseline: dict[str, Any]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in dict.fromkeys(k for s in states for k in s):
        holders = [s[key] for s in states if key in s]
        merged = dict(holders[0])
        for entry in dict.fromkeys(
            e for h in holders for e, v in h.items() if isinstance(v, dict)
        ):
            base = (baseline.get(key) or {}).get(entry) or {}
            records: dict[str, Any] = {}
            for name in dict.fromkeys(n for h in holders for n in (h.get(entry) or {})):
                candidates = [
                    h[entry][name] for h in holders if name in (h.get(entry) or {})
                ]
                changed = [c for c in candidates if c != base.get(name)]
                records[name] = (changed or candidates)[0]
            merged[entry] = records
        out[key] = merged
    return out


def split_checkpoint(
    payload: dict[str, Any],
    replicas: range,
    integrator_keys: Sequence[str] = ("generators",),
    barostat_keys: Sequence[str] = ("generators",),
) -> dict[str, Any]:
    """The part of a whole-ensemble checkpoint payload for the ``replicas`` of one
    process (the inverse of :func:`merge_checkpoints`)."""
    sl = slice(replicas.start, replicas.stop)
    out = dict(payload)
    out["state"] = dict(payload["state"])
    for key in _STATE_TENSORS:
        value = payload["state"].get(key)
        out["state"][key] = None if value is None else value[sl]
    nl = payload.get("neighbor_list")
    if nl is not None:
        out["neighbor_list"] = {k: None if v is None else v[sl] for k, v in nl.items()}
    for name, keys in (("integrator", integrator_keys), ("barostat", barostat_keys)):
        if payload.get(name) is not None:
            part = dict(payload[name])
            for key in keys:
                if part.get(key) is not None:
                    part[key] = part[key][sl]
            out[name] = part
    return out
