"""Training through dynamics: the gradient of a trajectory loss with respect to a model
weight equals a finite difference of the loss."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torchmd_plugins.dynamics.verlet import VelocityVerlet
from torchmd_plugins.torchmdnet import TorchMDNetPotential

from tests.plugins.torchmdnet.tiny import tiny_model
from torchmd_core import Potential, Simulation, State, System, units
from torchmd_core.testing import random_state, toy_system

STEPS = 15
DT_PS = 0.5e-3


def verlet_loop(potential: Potential, system: System, state: State) -> State:
    """Velocity Verlet written out in plain tensor operations (no in-place edits)."""
    assert state.velocities is not None
    inv_m = (units.KCAL_MOL_A_AMU_TO_A_PS2 / system.masses)[:, None].to(state.positions)
    x, v = state.positions, state.velocities
    _, f = potential.energy_and_forces(state)
    for _ in range(STEPS):
        v = v + 0.5 * DT_PS * f * inv_m
        x = x + DT_PS * v
        _, f = potential.energy_and_forces(state.replace(positions=x))
        v = v + 0.5 * DT_PS * f * inv_m
    return state.replace(positions=x, velocities=v)


def trajectory_loss(end: State, start: State) -> torch.Tensor:
    """Mean squared displacement plus a velocity term of the final state."""
    assert end.velocities is not None
    return (
        end.positions - start.positions
    ).square().mean() + 1e-4 * end.velocities.square().mean()


def weight_gradient_and_finite_difference(
    run: Callable[[TorchMDNetPotential], State], h: float = 1e-5
) -> tuple[float, float]:
    """d loss / d w for one embedding weight, by autograd and by central differences."""
    system = toy_system(6)
    start = random_state(system, n_replicas=2, seed=21, temperature_K=300.0)
    pot = TorchMDNetPotential(
        TorchMDNetPotential.Config(), system, module=tiny_model(7)
    )
    weight = pot.model.representation_model.tensor_embedding.emb.weight  # (max_z, F)
    loss = trajectory_loss(run(pot), start)
    (grad,) = torch.autograd.grad(loss, weight)
    analytic = float(grad[6, 0])  # carbon, first feature
    values = []
    for sign in (+1, -1):
        with torch.no_grad():
            weight[6, 0] += sign * h
            values.append(float(trajectory_loss(run(pot), start)))
            weight[6, 0] -= sign * h
    return analytic, (values[0] - values[1]) / (2 * h)


def test_loss_gradient_through_a_verlet_loop_matches_finite_difference():
    system = toy_system(6)
    start = random_state(system, n_replicas=2, seed=21, temperature_K=300.0)
    analytic, numeric = weight_gradient_and_finite_difference(
        lambda pot: verlet_loop(pot, system, start)
    )
    assert analytic != 0.0
    assert analytic == pytest.approx(numeric, rel=1e-5, abs=1e-12)


def test_loss_gradient_through_verlet_in_a_simulation_matches_finite_difference():
    system = toy_system(6)
    start = random_state(system, n_replicas=2, seed=21, temperature_K=300.0)

    def run(pot: TorchMDNetPotential) -> State:
        verlet = VelocityVerlet(VelocityVerlet.Config(timestep_fs=DT_PS * 1000), system)
        sim = Simulation(system, pot, verlet, state=start)
        return sim.run(STEPS, differentiable=torch.is_grad_enabled())

    analytic, numeric = weight_gradient_and_finite_difference(run)
    assert analytic != 0.0
    assert analytic == pytest.approx(numeric, rel=1e-5, abs=1e-12)
