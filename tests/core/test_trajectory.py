"""simulate(): gradients through Verlet and Langevin trajectories, exact with and
without gradient checkpointing, equal to finite differences; neighbour-list rebuilds,
random streams, constraints, clipping."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch.testing import assert_close
from torchmd_plugins.amber.bonded import AmberBonded
from torchmd_plugins.dynamics.langevin import LangevinBAOAB
from torchmd_plugins.dynamics.verlet import VelocityVerlet
from torchmd_plugins.nonbonded.nonbonded import Nonbonded

from torchmd_core import Integrator, Potential, PotentialSum, State, System
from torchmd_core.constraints import find_constraints
from torchmd_core.parameters import trainable
from torchmd_core.testing import random_state, toy_system
from torchmd_core.trajectory import Trajectory, clip_gradient_norm, simulate

STEPS = 30
BOX = 25.0  # Å; the toy chain is ~18 Å long


def make_integrator(kind: str, system: System) -> Integrator:
    if kind == "verlet":
        return VelocityVerlet(VelocityVerlet.Config(timestep_fs=1.0), system)
    config = LangevinBAOAB.Config(
        timestep_fs=1.0, temperature_K=300.0, friction_per_ps=5.0
    )
    return LangevinBAOAB(config, system)


def setup(
    kind: str, skin: float = 1.0, system: System | None = None
) -> tuple[list[Potential], Integrator, State, torch.nn.Parameter]:
    """The toy chain in a periodic box with a 6 Å cutoff; ε trainable."""
    system = system or toy_system(12)
    terms = [AmberBonded(None, system), Nonbonded(Nonbonded.Config(cutoff=6.0), system)]
    eps = trainable(terms[1], "nonbonded.epsilon")["nonbonded.epsilon"]
    state = random_state(system, n_replicas=2, box=BOX, seed=3)
    return terms, make_integrator(kind, system), state, eps


def loss_of(traj: Trajectory) -> torch.Tensor:
    assert traj.observables is not None and traj.final.velocities is not None
    return traj.observables.mean() + 1e-3 * traj.final.velocities.square().mean()


def square_distance(state: State) -> torch.Tensor:
    """(R,) squared end-to-end distance of the chain."""
    return (state.positions[:, -1] - state.positions[:, 0]).square().sum(-1)


def run(
    kind: str, checkpoint_every: int | None, **kwargs: object
) -> tuple[torch.Tensor, ...]:
    terms, integrator, state, eps = setup(kind)
    traj = simulate(
        terms, integrator, state, STEPS, checkpoint_every=checkpoint_every,
        observable=square_distance, seed=11, **kwargs,
    )  # fmt: skip
    loss = loss_of(traj)
    (grad,) = torch.autograd.grad(loss, eps)
    return loss.detach(), grad, traj.final.positions.detach()


@pytest.mark.parametrize("kind", ["verlet", "langevin"])
@pytest.mark.parametrize("every", [1, 7, STEPS])
def test_checkpointing_gives_the_same_trajectory_and_gradient(kind, every):
    loss, grad, final = run(kind, None)
    loss_c, grad_c, final_c = run(kind, every)
    # The checkpointed forward pass runs without a graph, so nonbonded uses its
    # analytic forces there: equal to the autograd ones up to rounding.
    assert_close(final_c, final, rtol=1e-12, atol=1e-12)
    assert_close(loss_c, loss, rtol=1e-12, atol=0)
    assert_close(grad_c, grad, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("kind", ["verlet", "langevin"])
def test_gradient_matches_central_differences(kind):
    terms, integrator, state, eps = setup(kind)
    traj = simulate(terms, integrator, state, STEPS, checkpoint_every=10,
                    observable=square_distance, seed=11)  # fmt: skip
    (grad,) = torch.autograd.grad(loss_of(traj), eps)
    h = 1e-6
    for t in range(eps.numel()):
        values = []
        for sign in (1.0, -1.0):
            with torch.no_grad():
                eps[t] += sign * h
                traj = simulate(
                    terms, integrator, state, STEPS, observable=square_distance, seed=11
                )
                values.append(float(loss_of(traj)))
                eps[t] -= sign * h
        numeric = (values[0] - values[1]) / (2 * h)
        assert float(grad[t]) == pytest.approx(numeric, rel=1e-5)


def test_neighbor_list_rebuilds_do_not_break_the_graph():
    terms, integrator, state, eps = setup("verlet")
    potential = PotentialSum(terms, system=integrator.system, skin=0.2)
    hot = state.replace(velocities=3.0 * state.velocities)

    def loss() -> torch.Tensor:
        traj = simulate(potential, integrator, hot, STEPS, checkpoint_every=4,
                        observable=square_distance, seed=11)  # fmt: skip
        return loss_of(traj)

    assert potential.neighbor_list is not None
    builds = potential.neighbor_list.n_builds
    (grad,) = torch.autograd.grad(loss(), eps)
    assert potential.neighbor_list.n_builds - builds >= 3  # rebuilt along the way
    h = 1e-6
    with torch.no_grad():
        eps[0] += h
        up = float(loss())
        eps[0] -= 2 * h
        down = float(loss())
        eps[0] += h
    assert float(grad[0]) == pytest.approx((up - down) / (2 * h), rel=1e-5)


def test_gradients_reach_the_initial_positions_and_velocities():
    terms, integrator, state, _ = setup("langevin")
    x0 = state.positions.clone().requires_grad_(True)
    v0 = state.velocities.clone().requires_grad_(True)
    start = state.replace(positions=x0, velocities=v0)
    traj = simulate(terms, integrator, start, 10, checkpoint_every=3,
                    observable=square_distance, seed=2)  # fmt: skip
    gx, gv = torch.autograd.grad(loss_of(traj), (x0, v0))
    assert bool(gx.abs().max() > 0) and bool(gv.abs().max() > 0)
    # the second replica's loss terms do not depend on the first replica's start
    traj = simulate(terms, integrator, start, 10, observable=square_distance, seed=2)
    assert traj.observables is not None
    (g_first,) = torch.autograd.grad(traj.observables[:, 0].sum(), x0)
    assert bool((g_first[1] == 0).all()) and bool(g_first[0].abs().max() > 0)


def test_a_continued_run_follows_the_same_random_stream_after_a_backward_pass():
    terms, integrator, state, _ = setup("langevin")
    whole = simulate(terms, integrator, state, 20, seed=5).final.positions.detach()
    first = simulate(terms, integrator, state, 10, checkpoint_every=3,
                     observable=square_distance, seed=5)  # fmt: skip
    loss_of(first).backward()  # recomputes, and must leave the generators alone
    second = simulate(terms, integrator, first.final, 10, setup=False)
    # same noise (another stream would differ by ~0.1 Å); rounding aside (see above)
    assert_close(second.final.positions.detach(), whole, rtol=1e-12, atol=1e-12)


def test_recorded_frames_and_positions():
    terms, integrator, state, _ = setup("verlet")
    traj = simulate(terms, integrator, state, 12, checkpoint_every=5, record_every=4,
                    observable=square_distance, record_positions=True)  # fmt: skip
    assert traj.steps == (4, 8, 12)
    assert traj.observables is not None and traj.observables.shape == (3, 2)
    assert traj.positions is not None and traj.positions.shape == (3, 2, 12, 3)
    assert_close(traj.positions[-1], traj.final.positions)
    assert traj.final.step == 12
    assert traj.final.time_ps == pytest.approx(0.012)


def test_without_grad_mode_no_graph_is_kept():
    terms, integrator, state, _ = setup("langevin")
    with torch.no_grad():
        traj = simulate(terms, integrator, state, 5, checkpoint_every=2,
                        observable=square_distance)  # fmt: skip
    assert traj.observables is not None and not traj.observables.requires_grad


def test_clipping_bounds_the_gradient_and_a_loose_clip_changes_nothing():
    exact = run("verlet", 10)[1]
    loose = run("verlet", 10, clip_grad_norm=1e12)[1]
    tight = run("verlet", 10, clip_grad_norm=1e-3)[1]
    assert_close(loose, exact, rtol=1e-12, atol=0)
    assert float(tight.norm()) < float(exact.norm())


def test_clip_gradient_norm_rescales_each_replica():
    x = torch.ones(2, 3, requires_grad=True)
    y = clip_gradient_norm(x, 1.0)
    (y * torch.tensor([[10.0], [0.1]])).sum().backward()
    assert x.grad is not None
    assert_close(x.grad[0].norm(), torch.tensor(1.0))
    assert_close(x.grad[1], torch.full((3,), 0.1))


def test_constrained_dynamics_are_differentiable_and_checkpoint_exactly():
    base = toy_system(12)
    system = dataclasses.replace(
        base, constraints=find_constraints(base, "hbonds", False)
    )
    assert system.constraints is not None and system.constraints.count > 0
    results = []
    for every in (None, 4):
        terms, integrator, state, eps = setup("langevin", system=system)
        traj = simulate(terms, integrator, state, 12, checkpoint_every=every,
                        observable=square_distance, seed=4)  # fmt: skip
        results.append(torch.autograd.grad(loss_of(traj), eps)[0])
    assert bool(torch.isfinite(results[0]).all()) and bool(results[0].abs().max() > 0)
    assert_close(results[1], results[0], rtol=1e-10, atol=1e-14)


def test_bad_arguments_are_refused():
    terms, integrator, state, _ = setup("verlet")
    for kwargs, message in [
        ({"steps": -1}, "steps"),
        ({"steps": 3, "record_every": 0}, "record_every"),
        ({"steps": 3, "checkpoint_every": 0}, "checkpoint_every"),
    ]:
        with pytest.raises(ValueError, match=message):
            simulate(terms, integrator, state, **kwargs)
