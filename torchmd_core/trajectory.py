"""Backpropagation through dynamics, with memory bounded by gradient checkpointing.

:func:`simulate` runs any :class:`~torchmd_core.integrator.Integrator` (the built-in
``verlet`` and ``langevin``, or yours) for N steps with the autograd graph kept, so a
loss on the trajectory (final positions, an observable along the way) can be
differentiated with respect to force-field parameters, network weights, initial
positions or velocities::

    trainable(potential, "nonbonded.epsilon")
    traj = simulate(potential, integrator, state, 1000, checkpoint_every=50,
                    observable=lambda s: radius_of_gyration(s.positions))
    traj.observables.mean().backward()

Memory. Without checkpointing every step keeps its intermediate tensors until the
backward pass (about 35 MB per step for the solvated alanine dipeptide, 688 atoms,
in float64). With ``checkpoint_every=k`` the forward pass runs like plain MD (no
graph) and keeps only the state at every k-th step; the backward pass reruns each
stretch of k steps with its graph, once, and differentiates it. Memory is then about
N/k states plus the graph of k steps, for the price of one extra (plain) forward
pass; k ≈ √(N · graph-of-one-step / state-size) minimises memory. The
differentiable-simulation guide lists measured figures.

Random numbers. Langevin noise is reparameterised: it comes from the integrator's
seeded per-replica generators, independent of the parameters, so gradients flow
through positions and velocities along a fixed random stream. The recomputation of a
stretch rewinds those generators (and the shared neighbour list) to where the stretch
began, so it retraces the first pass (to rounding: the first pass may use a term's
analytic forces, the recomputation autograd ones).

Neighbour lists. Pair indices carry no gradient; distances are always recomputed from
the differentiable positions, so rebuilding the list mid-trajectory does not cut the
graph.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from torchmd_core.integrator import Integrator
from torchmd_core.potential import Potential, PotentialSum
from torchmd_core.state import State

__all__ = ["Trajectory", "clip_gradient_norm", "simulate"]

#: ``observable(state) -> Tensor`` of shape (R, ...), differentiable.
Observable = Callable[[State], Tensor]


@dataclass(frozen=True, eq=False)
class Trajectory:
    """What :func:`simulate` returns; every tensor keeps its autograd graph.

    Attributes:
        final: the state after the last step (positions, velocities, forces, energy).
        steps: the step number of each recorded frame.
        observables: (F, R, ...) the observable at each recorded frame, or None.
        positions: (F, R, N, 3) Å at each recorded frame, when asked for, else None.
    """

    final: State
    steps: tuple[int, ...]
    observables: Tensor | None = None
    positions: Tensor | None = None


def simulate(
    potential: Potential | Sequence[Potential],
    integrator: Integrator,
    state: State,
    steps: int,
    *,
    checkpoint_every: int | None = None,
    observable: Observable | None = None,
    record_every: int = 1,
    record_positions: bool = False,
    clip_grad_norm: float | None = None,
    setup: bool = True,
    seed: int | None = None,
    parameters: Sequence[Tensor] = (),
) -> Trajectory:
    """Advance ``state`` by ``steps`` steps keeping the autograd graph.

    Gradients follow PyTorch's grad mode: call it with grad mode on (the default) to
    get a differentiable trajectory; the graph reaches every tensor that requires grad
    (trainable parameters, ``state.positions``/``velocities`` if they require grad).

    Args:
        potential: a potential or several (summed, sharing one neighbour list).
        integrator: advances one step; its random generators are seeded here if they
            do not match the number of replicas (or when ``seed`` is given).
        state: the starting state (R replicas).
        steps: number of steps.
        checkpoint_every: run stretches of this many steps without a graph and
            recompute each one with its graph in the backward pass (None: keep the
            graph of every step).
        observable: evaluated every ``record_every`` steps; ``(R, ...)`` tensors.
        record_every: steps between recorded frames (the first frame is the state
            after ``record_every`` steps).
        record_positions: also return the positions of every recorded frame.
        clip_grad_norm: rescale the gradients flowing back into each step's
            positions, velocities and forces (each separately) so that their norm per
            replica is at most this: tames the exponential growth of gradients
            through long chaotic trajectories, at the cost of a biased gradient.
            None: exact gradients.
        setup: call ``integrator.setup`` first (constraints, forces of the first
            state), as :class:`~torchmd_core.simulation.Simulation` does for a new
            state.
        seed: reseed the integrator's generators with this seed.
        parameters: with checkpointing, further tensors that the observable (or a
            custom integrator) reads and that need gradients; the potential's
            parameters and buffers that require grad are always included.

    With checkpointing, the graph of the result supports first derivatives (any
    number of ``backward``/``autograd.grad`` calls), not derivatives of gradients
    (``create_graph=True`` through the trajectory); keep ``checkpoint_every=None``
    for those.

    Returns:
        The :class:`Trajectory`.
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if record_every < 1:
        raise ValueError(f"record_every must be >= 1, got {record_every}")
    if checkpoint_every is not None and checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be >= 1, got {checkpoint_every}")
    total = _as_sum(potential, integrator)
    total.to(device=state.device, dtype=state.dtype)
    integrator.to(device=state.device, dtype=state.dtype)
    if seed is not None or len(integrator.generators) != state.n_replicas:
        integrator.seed(0 if seed is None else seed, state.n_replicas, state.device)
    if setup:
        state = integrator.setup(state, total)
    runner = _Runner(
        total,
        integrator,
        observable,
        record_every,
        record_positions,
        clip_grad_norm,
        parameters,
    )
    start = state.step
    length = steps if checkpoint_every is None else checkpoint_every
    observed: list[Tensor] = []
    positions: list[Tensor] = []
    recorded: list[int] = []
    done = 0
    while done < steps:
        n = min(length, steps - done)
        state, obs, pos, frames = runner.stretch(
            state, n, start, checkpoint_every is not None
        )
        observed.extend(obs)
        positions.extend(pos)
        recorded.extend(frames)
        done += n
    return Trajectory(
        final=state,
        steps=tuple(recorded),
        observables=torch.stack(observed) if observed else None,
        positions=torch.stack(positions) if positions else None,
    )


def _as_sum(
    potential: Potential | Sequence[Potential], integrator: Integrator
) -> PotentialSum:
    if isinstance(potential, PotentialSum):
        return potential
    terms = [potential] if isinstance(potential, Potential) else list(potential)
    return PotentialSum(terms, system=integrator.system)


class _Runner:
    """Runs stretches of steps, directly or as a :class:`_CheckpointedStretch`."""

    def __init__(
        self,
        potential: PotentialSum,
        integrator: Integrator,
        observable: Observable | None,
        record_every: int,
        record_positions: bool,
        clip: float | None,
        parameters: Sequence[Tensor] = (),
    ) -> None:
        self.potential = potential
        self.integrator = integrator
        self.observable = observable
        self.record_every = record_every
        self.record_positions = record_positions
        self.clip = clip
        #: Every tensor a stretch depends on, besides its starting state, that needs
        #: gradients: the potential's, and those the caller names (the observable's).
        own = [
            t
            for t in (*potential.parameters(), *potential.buffers())
            if t.requires_grad
        ]
        self.parameters = _unique([*own, *parameters])

    def stretch(
        self, state: State, n: int, start: int, recompute: bool
    ) -> tuple[State, list[Tensor], list[Tensor], list[int]]:
        """``n`` steps from ``state``: the new state, observables, positions, steps."""
        if not recompute or not torch.is_grad_enabled():
            return self._steps(state, n, start)
        job = _Job(self, state, n, start)
        outputs = _CheckpointedStretch.apply(  # type: ignore[no-untyped-call]
            job, *_pack(state), *self.parameters
        )
        k = len(_FIELDS)
        new = _unpack(state, outputs[:k]).replace(
            step=state.step + n, time_ps=state.time_ps + n * self.integrator.timestep_ps
        )
        obs = list(outputs[k : k + job.n_observed])
        pos = list(outputs[k + job.n_observed :])
        return new, obs, pos, self._frames(state.step, n, start)

    def _steps(
        self, state: State, n: int, start: int
    ) -> tuple[State, list[Tensor], list[Tensor], list[int]]:
        obs: list[Tensor] = []
        pos: list[Tensor] = []
        frames: list[int] = []
        for _ in range(n):
            state = self.integrator.step(state, self.potential)
            if self.clip is not None:
                state = _clipped(state, self.clip)
            if (state.step - start) % self.record_every == 0:
                frames.append(state.step)
                if self.observable is not None:
                    obs.append(self.observable(state))
                if self.record_positions:
                    pos.append(state.positions)
        return state, obs, pos, frames

    def _frames(self, first: int, n: int, start: int) -> list[int]:
        return [
            s
            for s in range(first + 1, first + n + 1)
            if (s - start) % self.record_every == 0
        ]

    # -- what a recomputation must rewind ------------------------------------------
    def snapshot(self) -> tuple[object, object]:
        """Where the random streams and the neighbour list stand."""
        return self._rng_state(), self._neighbor_state()

    def _rng_state(self) -> list[Tensor]:
        return [g.get_state() for g in self.integrator.generators]

    def _neighbor_state(self) -> object:
        nl = self.potential.neighbor_list
        return None if nl is None else nl.snapshot()

    def _restore(self, rng: object, neighbors: object) -> None:
        assert isinstance(rng, list)
        for g, s in zip(self.integrator.generators, rng, strict=True):
            g.set_state(s)
        nl = self.potential.neighbor_list
        if nl is not None and neighbors is not None:
            assert isinstance(neighbors, tuple)
            nl.restore(neighbors)


class _Job:
    """One checkpointed stretch: what its forward pass needs and leaves behind."""

    def __init__(self, runner: _Runner, state: State, n: int, start: int) -> None:
        self.runner, self.template, self.n, self.start = runner, state, n, start
        self.begin: tuple[object, object] = runner.snapshot()
        self.n_observed = 0


class _CheckpointedStretch(torch.autograd.Function):
    """``n`` steps whose graph is rebuilt in the backward pass instead of stored.

    Forward: the steps without a graph (as plain MD: analytic forces where a term has
    them). Backward: the same steps again from the saved starting state, random
    streams and neighbour list, with the graph, then one vector-Jacobian product to
    the starting state and the parameters. (Unlike
    :func:`torch.utils.checkpoint.checkpoint`, nothing is recomputed while the forward
    pass itself differentiates energies into forces.)
    """

    @staticmethod
    def forward(ctx: Any, job: _Job, *inputs: Tensor) -> tuple[Tensor, ...]:
        k = len(_FIELDS)
        runner = job.runner
        runner._restore(*job.begin)
        new, obs, pos, _ = runner._steps(
            _unpack(job.template, inputs[:k]), job.n, job.start
        )
        job.n_observed = len(obs)
        ctx.job = job
        ctx.save_for_backward(*inputs[:k])
        ctx.set_materialize_grads(False)
        ids = {id(t) for t in inputs}
        outputs = (*_pack(new), *obs, *pos)
        # an input handed back unchanged (the box) must be a new tensor for autograd
        return tuple(t.clone() if id(t) in ids else t for t in outputs)

    @staticmethod
    def backward(ctx: Any, *grads: Tensor | None) -> tuple[Tensor | None, ...]:
        job: _Job = ctx.job
        runner = job.runner
        starts = [t.detach().requires_grad_(t.requires_grad) for t in ctx.saved_tensors]
        current = runner.snapshot()
        runner._restore(*job.begin)
        try:
            with torch.enable_grad():
                new, obs, pos, _ = runner._steps(
                    _unpack(job.template, starts), job.n, job.start
                )
        finally:
            runner._restore(*current)
        outputs = (*_pack(new), *obs, *pos)
        used = [
            (out, g)
            for out, g in zip(outputs, grads, strict=True)
            if g is not None and out.requires_grad
        ]
        targets = [t for t in starts if t.requires_grad] + list(runner.parameters)
        found: Sequence[Tensor | None] = [None] * len(targets)
        if used and targets:
            found = torch.autograd.grad(
                [out for out, _ in used],
                targets,
                [g for _, g in used],
                allow_unused=True,
            )
        it = iter(found)
        state_grads = [next(it) if t.requires_grad else None for t in starts]
        return (None, *state_grads, *it)


# -- states as tuples of tensors (checkpoint takes and returns tensors) ----------------
_FIELDS = ("positions", "velocities", "box", "forces", "potential_energy")


def _pack(state: State) -> tuple[Tensor, ...]:
    """The tensors of a state (absent ones as empty tensors), in ``_FIELDS`` order."""
    empty = state.positions.new_zeros(0)
    return tuple(
        empty if getattr(state, name) is None else getattr(state, name)
        for name in _FIELDS
    )


def _unpack(template: State, tensors: Sequence[Tensor]) -> State:
    values: dict[str, Any] = {
        name: (None if t.numel() == 0 and name != "positions" else t)
        for name, t in zip(_FIELDS, tensors, strict=True)
    }
    return State(step=template.step, time_ps=template.time_ps, neighbors=None, **values)


# -- gradient clipping -----------------------------------------------------------------
def clip_gradient_norm(tensor: Tensor, max_norm: float) -> Tensor:
    """``tensor`` in the forward pass; in the backward pass, its gradient rescaled so
    that the norm over each replica (first dimension) is at most ``max_norm``."""
    if not tensor.requires_grad:
        return tensor
    out: Tensor = tensor.view_as(tensor)

    def clip(grad: Tensor) -> Tensor:
        norms = torch.linalg.vector_norm(grad.reshape(grad.shape[0], -1), dim=1)
        scale = (max_norm / norms.clamp(min=1e-30)).clamp(max=1.0)
        clipped: Tensor = grad * scale.reshape(-1, *([1] * (grad.dim() - 1)))
        return clipped

    out.register_hook(clip)  # type: ignore[no-untyped-call]
    return out


def _unique(tensors: Sequence[Tensor]) -> list[Tensor]:
    seen: set[int] = set()
    out = []
    for t in tensors:
        if id(t) not in seen:
            seen.add(id(t))
            out.append(t)
    return out


def _clipped(state: State, max_norm: float) -> State:
    """The state with clipping hooks on its positions, velocities and cached forces
    (the three ways the next step depends on this one)."""
    changes = {
        name: clip_gradient_norm(value, max_norm)
        for name in ("positions", "velocities", "forces")
        if (value := getattr(state, name)) is not None
    }
    return state.replace(
        **changes, potential_energy=state.potential_energy, neighbors=state.neighbors
    )
