"""SETTLE: rigid waters by the analytic solution of the SHAKE/RATTLE equations."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close
from torchmd_plugins.dynamics.constraints import ConstraintSolver
from torchmd_plugins.dynamics.settle import (
    WaterGeometry,
    settle_positions,
    settle_velocities,
)

from tests.plugins.dynamics.systems import water_state, water_system
from torchmd_core import Constraints, TopologyError


def _as_pairs(c: Constraints) -> Constraints:
    """The same rigid waters as three distance constraints each (solved by CCMA)."""
    w = c.waters
    d_oh, d_hh = c.water_distances
    pairs = torch.cat([w[:, [0, 1]], w[:, [0, 2]], w[:, [1, 2]]])
    dist = torch.tensor([d_oh] * (2 * len(w)) + [d_hh] * len(w), dtype=torch.float64)
    return Constraints(pairs=pairs, distances=dist)


@pytest.fixture
def waters():
    system = water_system(8)
    state = water_state(system, n_replicas=2, seed=1)
    g = torch.Generator().manual_seed(2)
    moved = state.positions + 0.05 * torch.randn(
        state.positions.shape, generator=g, dtype=torch.float64
    )
    return system, state, moved


def test_settle_positions_make_waters_rigid_and_keep_the_centre_of_mass(waters):
    system, state, moved = waters
    solver = ConstraintSolver(system.constraints, system.masses, 1e-12)
    dx = solver.position_correction(moved, state.positions, state.box)
    assert float(solver.relative_errors(moved + dx, state.box).max()) < 1e-13
    momentum = (system.masses[:, None] * dx).reshape(2, 8, 3, 3).sum(2)  # per water
    assert float(momentum.abs().max()) < 1e-14


def test_settle_equals_the_iterative_shake_solution(waters):
    system, state, moved = waters
    settle = ConstraintSolver(system.constraints, system.masses, 1e-13)
    shake = ConstraintSolver(_as_pairs(system.constraints), system.masses, 1e-13)
    assert_close(
        settle.position_correction(moved, state.positions, state.box),
        shake.position_correction(moved, state.positions, state.box),
        rtol=0,
        atol=1e-11,
    )


def test_settle_velocities_are_rigid_and_equal_rattle(waters):
    system, state, _ = waters
    g = torch.Generator().manual_seed(3)
    v = 10.0 * torch.randn(state.positions.shape, generator=g, dtype=torch.float64)
    settle = ConstraintSolver(system.constraints, system.masses, 1e-13)
    rattle = ConstraintSolver(_as_pairs(system.constraints), system.masses, 1e-13)
    dv = settle.velocity_correction(v, state.positions, state.box)
    assert_close(
        dv,
        rattle.velocity_correction(v, state.positions, state.box),
        rtol=0,
        atol=1e-11,
    )
    w = system.constraints.waters
    x, u = state.positions, v + dv
    for i, j in ((0, 1), (0, 2), (1, 2)):
        along = ((x[:, w[:, i]] - x[:, w[:, j]]) * (u[:, w[:, i]] - u[:, w[:, j]])).sum(
            -1
        )
        assert float(along.abs().max()) < 1e-10
    assert (
        float((system.masses[:, None] * dv).sum(1).abs().max()) < 1e-12
    )  # no net momentum


def test_rigid_waters_are_left_exactly_as_they_are(waters):
    system, state, _ = waters
    geo = WaterGeometry.of(
        system.constraints.waters, system.masses, system.constraints.water_distances
    )
    w = system.constraints.waters
    dx = settle_positions(state.positions, state.positions, w, geo, 1e-8, state.box)
    assert torch.equal(dx, torch.zeros_like(dx))
    v = torch.zeros_like(state.positions)
    assert torch.equal(
        settle_velocities(v, state.positions, w, geo, 1e-8, state.box), v
    )


def test_settle_uses_the_minimum_image_for_waters_split_by_the_box(waters):
    system, state, moved = waters
    solver = ConstraintSolver(system.constraints, system.masses, 1e-12)
    whole = solver.position_correction(moved, state.positions, state.box)
    shift = state.box[:, 0][
        :, None
    ]  # move the first hydrogen of every water by a box vector
    split_ref, split_moved = state.positions.clone(), moved.clone()
    split_ref[:, 1::3] += shift
    split_moved[:, 1::3] += shift
    assert_close(
        solver.position_correction(split_moved, split_ref, state.box),
        whole,
        rtol=0,
        atol=1e-12,
    )


def test_float32_settle_reaches_the_float32_tolerance(waters):
    system, state, moved = waters
    solver = ConstraintSolver(system.constraints, system.masses, 1e-6).to(
        dtype=torch.float32
    )
    x32, ref32, box32 = moved.float(), state.positions.float(), state.box.float()
    dx = solver.position_correction(x32, ref32, box32)
    assert float(solver.relative_errors(x32 + dx, box32).max()) < 1e-5


def test_water_models_that_settle_cannot_handle_are_refused():
    system = water_system(2)
    masses = system.masses.clone()
    masses[2] = 2.0  # one deuterium
    with pytest.raises(TopologyError, match="same, non-zero mass"):
        ConstraintSolver(system.constraints, masses)
    bad = Constraints(
        system.constraints.pairs,
        system.constraints.distances,
        system.constraints.waters,
        (1.0, 2.5),
    )
    with pytest.raises(TopologyError, match="triangle"):
        ConstraintSolver(bad, system.masses)
