"""The native constraint kernels (dynamics/native.py, csrc/constraints.cpp) give the
torch path's corrections to rounding: SETTLE and CCMA, positions and velocities, with
and without a box, float64 and float32, replicas included; and a constrained Langevin
run follows the torch trajectory."""

from __future__ import annotations

import pytest
import torch
from torchmd_plugins.dynamics import native

from tests.plugins.dynamics.systems import simulation

pytestmark = pytest.mark.skipif(
    native.load_native() is None, reason="native constraint kernels not built"
)

#: (stored input, cutoff) — solvated: hbonds + SETTLE in a box; vacuum: hbonds only.
CASES = [("ala2_solv", 9.0), ("ala2_vacuum", None)]


def _solver_and_state(name, cutoff, precision):
    sim = simulation(
        name,
        {"kind": "langevin", "timestep_fs": 2.0, "temperature_K": 300.0},
        precision=precision,
        n_replicas=2,
        cutoff=cutoff,
        constraints="hbonds",
        initial_temperature_K=300.0,
    )
    solver = sim.integrator.solver
    assert solver is not None
    return solver, sim.state


def _both_paths(monkeypatch, fn):
    """fn() with the native kernels, then with TORCHMD_CORE_NATIVE=0 (torch)."""
    monkeypatch.delenv("TORCHMD_CORE_NATIVE", raising=False)
    assert native.use_native(torch.zeros(1, dtype=torch.float64))
    fast = fn()
    monkeypatch.setenv("TORCHMD_CORE_NATIVE", "0")
    assert not native.use_native(torch.zeros(1, dtype=torch.float64))
    slow = fn()
    monkeypatch.delenv("TORCHMD_CORE_NATIVE")
    return fast, slow


@pytest.mark.parametrize("precision", ["float64", "float32"])
@pytest.mark.parametrize(("name", "cutoff"), CASES)
def test_native_corrections_equal_the_torch_path(monkeypatch, name, cutoff, precision):
    solver, state = _solver_and_state(name, cutoff, precision)
    x, v, box = state.positions, state.velocities, state.box
    g = torch.Generator().manual_seed(3)
    noise = torch.randn(x.shape, generator=g, dtype=torch.float64)
    moved = x + (0.02 * noise).to(x.dtype)  # a 2 fs step's worth of drift
    hot = v + (2.0 * noise.flip(0)).to(v.dtype)  # replicas differ

    def corrections():
        with torch.no_grad():
            dx = solver.position_correction(moved, x, box)
            dv = solver.velocity_correction(hot, x + dx, box)
        return dx, dv

    (dx_fast, dv_fast), (dx_slow, dv_slow) = _both_paths(monkeypatch, corrections)
    assert dx_slow.abs().max() > 1e-3 and dv_slow.abs().max() > 1e-1  # real work
    if precision == "float64":
        torch.testing.assert_close(dx_fast, dx_slow, rtol=0, atol=1e-12)
        torch.testing.assert_close(dv_fast, dv_slow, rtol=0, atol=1e-12)
    else:  # float32 rounding of the corrections and of the converged end points
        torch.testing.assert_close(dx_fast, dx_slow, rtol=0, atol=2e-6)
        torch.testing.assert_close(
            dv_fast, dv_slow, rtol=0, atol=1e-5 * hot.abs().max()
        )
    assert solver.fallbacks == 0
    tol = 1.01 * solver.effective_tolerance(x.dtype)
    assert float(solver.relative_errors(moved + dx_fast, box).max()) < tol


def test_a_replica_in_a_batch_is_solved_as_it_is_alone():
    solver, state = _solver_and_state("ala2_solv", 9.0, "float64")
    x, box = state.positions, state.box
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(5))
    moved = x + 0.02 * noise.to(x.dtype)
    with torch.no_grad():
        both = solver.position_correction(moved, x, box)
        alone = solver.position_correction(moved[1:], x[1:], box[1:])
    assert torch.equal(both[1:], alone)


def test_a_graph_keeps_the_torch_path():
    """Positions that require grad get differentiable corrections (torch path)."""
    solver, state = _solver_and_state("ala2_solv", 9.0, "float64")
    x = state.positions.clone().requires_grad_(True)
    moved = x + 0.01
    assert not native.use_native(moved)
    dx = solver.position_correction(moved, x.detach(), state.box)
    assert dx.grad_fn is not None
    dx.sum().backward()
    assert x.grad is not None


def test_constrained_langevin_run_follows_the_torch_trajectory(monkeypatch):
    def run():
        sim = simulation(
            "ala2_solv",
            {"kind": "langevin", "timestep_fs": 2.0, "temperature_K": 300.0},
            n_replicas=2,
            cutoff=9.0,
            constraints="hbonds",
            initial_temperature_K=300.0,
            seed=7,
        )
        sim.run(20)
        return sim.state.positions.clone(), sim.state.velocities.clone()

    (x_fast, v_fast), (x_slow, v_slow) = _both_paths(monkeypatch, run)
    torch.testing.assert_close(x_fast, x_slow, rtol=0, atol=1e-8)
    torch.testing.assert_close(v_fast, v_slow, rtol=0, atol=1e-5)


def test_non_contiguous_inputs_give_the_same_corrections():
    solver, state = _solver_and_state("ala2_solv", 9.0, "float64")
    x, v, box = state.positions, state.velocities, state.box
    moved = x + 0.01 * torch.randn(x.shape, generator=torch.Generator().manual_seed(9))
    strided = moved.transpose(1, 2).contiguous().transpose(1, 2)  # same values
    vt = v.transpose(1, 2).contiguous().transpose(1, 2)
    assert not strided.is_contiguous()
    with torch.no_grad():
        assert torch.equal(
            solver.position_correction(strided, x, box),
            solver.position_correction(moved, x, box),
        )
        assert torch.equal(
            solver.velocity_correction(vt, x, box),
            solver.velocity_correction(v, x, box),
        )
