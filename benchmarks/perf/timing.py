"""Timed blocks after warm-up, and what the machine was doing meanwhile.

A measurement advances the simulation in blocks of ``k`` steps. Warm-up is the first
step (compilation, first neighbour-list build, caches) and the calibration blocks that
choose ``k`` so that a block lasts about ``block_s`` seconds. Then up to ``repeats``
blocks are timed; fewer when they would overrun ``budget_s`` (at least ``min_blocks``).
The figure is the median of the timed blocks' seconds per step.

The CPU time other processes used during the timed blocks (``/proc/stat`` minus this
process) is recorded as ``foreign_cores``: on a shared machine it says how much the
figures may be inflated by time slicing.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["Timing", "time_blocks"]

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass
class Timing:
    """Seconds per step of a measurement."""

    median_s: float
    min_s: float
    block_s: list[float]  # per timed block, seconds per step
    steps_per_block: int
    warmup_s: float  # wall time of everything before the timed blocks
    first_step_s: float
    foreign_cores: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def time_blocks(
    advance: Callable[[int], object],
    sync: Callable[[], object] = lambda: None,
    block_s: float = 1.0,
    repeats: int = 5,
    budget_s: float = 20.0,
    min_blocks: int = 2,
) -> Timing:
    """Time ``advance(k)`` (k steps) over repeated blocks after warm-up.

    Args:
        advance: runs k steps.
        sync: waits for queued device work (CUDA), called at the end of each block.
        block_s: wanted length of a timed block, s.
        repeats: number of timed blocks at most.
        budget_s: time allowed for the timed blocks, s (at least ``min_blocks`` run).
        min_blocks: timed blocks run whatever the budget.
    """
    start = time.perf_counter()
    first = _timed(advance, sync, 1)
    k, last = (
        1,
        _timed(advance, sync, 1),
    )  # the first step may be compilation: not a guide
    while last < 0.25 * block_s and time.perf_counter() - start < budget_s:
        k = min(k * 8, max(k + 1, int(k * 0.3 * block_s / max(last, 1e-6))))
        last = _timed(advance, sync, k)
    k = max(1, round(k * block_s / max(last, 1e-9)))
    warmup = time.perf_counter() - start
    blocks: list[float] = []
    busy0, own0, t0 = _busy(), time.process_time(), time.perf_counter()
    while len(blocks) < repeats:
        blocks.append(_timed(advance, sync, k) / k)
        spent = time.perf_counter() - t0
        if len(blocks) >= min_blocks and spent + blocks[-1] * k > budget_s:
            break
    wall = time.perf_counter() - t0
    busy1 = _busy()
    foreign = None
    if busy0 is not None and busy1 is not None and wall > 0:
        foreign = max(0.0, ((busy1 - busy0) - (time.process_time() - own0)) / wall)
    return Timing(
        median_s=statistics.median(blocks),
        min_s=min(blocks),
        block_s=blocks,
        steps_per_block=k,
        warmup_s=warmup,
        first_step_s=first,
        foreign_cores=foreign,
    )


def _timed(
    advance: Callable[[int], object], sync: Callable[[], object], k: int
) -> float:
    t0 = time.perf_counter()
    advance(k)
    sync()
    return time.perf_counter() - t0


def _busy() -> float | None:
    """CPU seconds all processes of the machine have used (None off Linux)."""
    try:
        with open("/proc/stat") as fh:
            fields = [int(x) for x in fh.readline().split()[1:]]
    except OSError:
        return None
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / _TICK
