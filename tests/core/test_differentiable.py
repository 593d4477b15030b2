"""Acceptance of differentiable simulation on real systems: checkpointed and plain
backpropagation through the solvated alanine dipeptide agree; 1,000 steps fit in 4 GB
(slow); the examples in examples/differentiable run (shortened; in full when slow)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch
from torch.testing import assert_close
from torchmd_plugins.dynamics.langevin import LangevinBAOAB

from tests.core.ff_systems import reference_potential, reference_state, system
from torchmd_core import maxwell_boltzmann_velocities
from torchmd_core.parameters import trainable
from torchmd_core.trajectory import simulate

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "differentiable"


def solvated_gradient(
    checkpoint_every: int | None, steps: int = 8
) -> list[torch.Tensor]:
    """d(mean squared end-to-end distance)/d(ε, torsion k, charges) through Langevin
    dynamics of the solvated dipeptide (688 atoms, RF 9 Å, periodic, float64)."""
    sys_ = system("ala2_solv")
    pot = reference_potential("ala2_solv", "rf_periodic")
    params = trainable(pot, "nonbonded.epsilon", "torsions.k", "charges")
    state = reference_state("ala2_solv", "rf_periodic")
    state = state.replace(velocities=maxwell_boltzmann_velocities(sys_, 300.0, seed=3))
    integrator = LangevinBAOAB(
        LangevinBAOAB.Config(timestep_fs=1.0, temperature_K=300.0), sys_
    )
    traj = simulate(
        pot,
        integrator,
        state,
        steps,
        checkpoint_every=checkpoint_every,
        observable=lambda s: (s.positions[:, 18] - s.positions[:, 1]).square().sum(-1),
        seed=2,
    )
    assert traj.observables is not None
    return list(torch.autograd.grad(traj.observables.mean(), list(params.values())))


def test_checkpointed_backprop_through_the_solvated_dipeptide_gives_the_same_gradient():
    plain = solvated_gradient(None)
    checkpointed = solvated_gradient(3)
    for a, b in zip(checkpointed, plain, strict=True):
        assert bool(b.abs().max() > 0)
        assert_close(a, b, rtol=1e-8, atol=1e-10 * float(b.abs().max()))


@pytest.mark.slow
def test_backprop_through_1000_steps_of_the_solvated_dipeptide_fits_in_4_gb():
    done = subprocess.run(
        [sys.executable, "benchmarks/differentiable.py", "--steps", "1000",
         "--every", "25", "--max-rss-mb", "4096"],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    print(done.stdout)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]


def example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        f"example_{name}", EXAMPLES / f"{name}.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_example_lj_epsilon_gradient_matches_finite_differences():
    result = example("lj_epsilon_gradient").main(
        ["--steps", "60", "--checkpoint-every", "25"]
    )
    autograd = torch.tensor(result["autograd"])
    numeric = torch.tensor(result["finite_difference"])
    assert_close(autograd, numeric, rtol=1e-5, atol=1e-6 * float(numeric.abs().max()))


@pytest.mark.slow
def test_example_lj_epsilon_gradient_after_500_steps():
    result = example("lj_epsilon_gradient").main([])
    autograd = torch.tensor(result["autograd"])
    numeric = torch.tensor(result["finite_difference"])
    assert_close(autograd, numeric, rtol=1e-5, atol=1e-6 * float(numeric.abs().max()))


def test_example_fit_torsion_moves_towards_the_hidden_value():
    module = example("fit_torsion")
    result = module.main(["--replicas", "32", "--target-ps", "4", "--sample-ps", "2",
                          "--warmup-ps", "0.5", "--rounds", "2", "--inner", "5",
                          "--average-last", "1"])  # fmt: skip
    start = 0.25  # the script's default initial guess; hidden: 0.5
    assert abs(result["recovered"] - result["hidden"]) < 0.6 * abs(
        start - result["hidden"]
    )


@pytest.mark.slow
def test_example_fit_torsion_recovers_the_hidden_force_constant_within_5_percent():
    result = example("fit_torsion").main([])
    assert abs(result["relative_error"]) < 0.05


def test_example_finetune_torchmdnet_lowers_the_trajectory_loss():
    pytest.importorskip("torchmdnet")
    result = example("finetune_torchmdnet").main(
        ["--iterations", "4", "--steps", "10", "--record-every", "5", "--replicas", "2",
         "--warmup-steps", "100"]
    )  # fmt: skip
    assert result["final_loss"] < result["initial_loss"]
