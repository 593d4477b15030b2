"""ConstraintSolver: CCMA for distances, robust projection, RATTLE velocities."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close
from torchmd_plugins.dynamics.constraints import ConstraintSolver

from tests.plugins.dynamics.systems import simulation
from torchmd_core import Constraints, TopologyError

MODES = ["hbonds", "allbonds", "hangles"]


@pytest.fixture(scope="module", params=MODES)
def constrained(request):
    """(system, solver, positions on the surface, unconstrained positions) for ala2."""
    sim = simulation("ala2_vacuum", constraints=request.param, n_replicas=2)
    system = sim.system
    solver = ConstraintSolver.from_system(system, 1e-10)
    x = sim.state.positions
    x0 = x + solver.projection(x)
    g = torch.Generator().manual_seed(0)
    moved = x0 + 0.02 * torch.randn(x0.shape, generator=g, dtype=x0.dtype)
    return system, solver, x0, moved


def test_projection_puts_a_distorted_structure_on_the_surface(constrained):
    _, solver, x0, _ = constrained
    g = torch.Generator().manual_seed(1)
    distorted = x0 + 0.15 * torch.randn(x0.shape, generator=g, dtype=x0.dtype)
    assert float(solver.relative_errors(distorted).max()) > 1e-2
    fixed = distorted + solver.projection(distorted)
    assert float(solver.relative_errors(fixed).max()) < 1e-9


def test_position_correction_is_shake_along_the_reference_bonds(constrained):
    system, solver, x0, moved = constrained
    dx = solver.position_correction(moved, x0)
    assert float(solver.relative_errors(moved + dx).max()) < 1e-9
    # m_i dx_i = Σ_c ±λ_c s_c with s_c the constrained vectors of the reference.
    a, b = solver.pairs[:, 0], solver.pairs[:, 1]
    s = x0[0, a] - x0[0, b]  # (C, 3)
    basis = torch.zeros(system.n_atoms, 3, len(a), dtype=torch.float64)
    basis[a, :, torch.arange(len(a))] += s
    basis[b, :, torch.arange(len(a))] -= s
    target = (system.masses[:, None] * dx[0]).reshape(-1, 1)
    lam = torch.linalg.lstsq(basis.reshape(-1, len(a)), target).solution
    assert float((basis.reshape(-1, len(a)) @ lam - target).abs().max()) < 1e-10


def test_velocity_correction_is_the_rattle_projection(constrained):
    system, solver, x0, _ = constrained
    g = torch.Generator().manual_seed(2)
    v = 10.0 * torch.randn(x0.shape, generator=g, dtype=x0.dtype)
    u = v + solver.velocity_correction(v, x0)
    a, b = solver.pairs[:, 0], solver.pairs[:, 1]
    along = ((x0[:, a] - x0[:, b]) * (u[:, a] - u[:, b])).sum(-1)
    assert float(along.abs().max()) < 1e-8
    assert (
        float((system.masses[:, None] * (u - v)).sum(1).abs().max()) < 1e-10
    )  # internal impulses
    assert_close(
        u + solver.velocity_correction(u, x0), u, rtol=0, atol=1e-12
    )  # a projection


def test_corrections_are_exactly_zero_when_already_satisfied(constrained):
    _, solver, x0, _ = constrained
    assert torch.equal(solver.position_correction(x0, x0), torch.zeros_like(x0))
    assert torch.equal(solver.projection(x0), torch.zeros_like(x0))
    v = torch.zeros_like(x0)
    assert torch.equal(solver.velocity_correction(v, x0), v)


def test_a_replica_in_a_batch_is_solved_as_it_is_alone(constrained):
    _, solver, x0, moved = constrained
    batched = solver.position_correction(moved, x0)
    for r in range(moved.shape[0]):
        alone = solver.position_correction(moved[r : r + 1], x0[r : r + 1])
        assert torch.equal(alone, batched[r : r + 1])


def test_ccma_failure_falls_back_to_newton(constrained, monkeypatch):
    _, solver, x0, moved = constrained
    monkeypatch.setattr(solver, "max_iterations", 1)
    before = solver.fallbacks
    dx = solver.position_correction(moved, x0)
    assert solver.fallbacks == before + 1
    monkeypatch.setattr(solver, "max_iterations", 150)
    assert float(solver.relative_errors(moved + dx).max()) < 1e-9


def test_float32_is_solved_to_the_float32_floor(constrained):
    system, _, x0, moved = constrained
    solver = ConstraintSolver.from_system(system, 1e-8)
    assert solver is not None
    solver.to(dtype=torch.float32)
    assert solver.effective_tolerance(torch.float32) > 1e-6
    x32, m32 = x0.float(), moved.float()
    dx = solver.position_correction(m32, x32)
    assert float(solver.relative_errors(m32 + dx).max()) < 2e-5


def test_constraints_between_massless_atoms_are_refused():
    c = Constraints(
        pairs=torch.tensor([[0, 1]]), distances=torch.tensor([1.0], dtype=torch.float64)
    )
    with pytest.raises(TopologyError, match="massless"):
        ConstraintSolver(c, torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="tolerance"):
        ConstraintSolver(c, torch.ones(3, dtype=torch.float64), tolerance=0.0)


def test_without_free_checks_ccma_learns_its_iteration_count(constrained, monkeypatch):
    """On accelerators CCMA runs a learnt number of iterations without reading flags
    (no synchronisation) and verifies every ``verify_every`` calls."""
    _, solver, x0, moved = constrained
    monkeypatch.setattr(solver, "checks_are_free", lambda device: False)
    monkeypatch.setattr(solver, "_budget", {"positions": 1, "velocities": 1})
    monkeypatch.setattr(solver, "_calls", {"positions": 0, "velocities": 0})
    first = solver.position_correction(moved, x0)  # a verifying call: learns, converges
    assert solver._budget["positions"] > 1
    assert float(solver.relative_errors(moved + first).max()) < 1e-9
    for _ in range(3):  # unchecked calls with the learnt budget
        dx = solver.position_correction(moved, x0)
        assert float(solver.relative_errors(moved + dx).max()) < 1e-8
