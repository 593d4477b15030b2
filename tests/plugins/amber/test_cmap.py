"""CMAP: the spline derivatives, the bicubic patches, and OpenMM's CMAPTorsionForce."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torchmd_plugins.amber.cmap import (
    cmap_coefficients,
    cmap_energy,
    periodic_spline_derivative_matrix,
)

from torchmd_core.geometry import dihedral_angles


def random_grid(size: int = 24, maps: int = 2, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(maps, size, size, generator=g, dtype=torch.float64)


def evaluate_patch(c: torch.Tensor, u: float, v: float) -> float:
    powers_u = torch.tensor([1.0, u, u * u, u**3], dtype=c.dtype)
    powers_v = torch.tensor([1.0, v, v * v, v**3], dtype=c.dtype)
    return float(powers_u @ c @ powers_v)


def test_spline_derivative_is_exact_for_a_periodic_cubic_spline():
    size = 24
    d = periodic_spline_derivative_matrix(size)
    x = torch.arange(size, dtype=torch.float64) * 2 * math.pi / size
    # A smooth periodic function: the spline derivative converges to the true one.
    err = (d @ torch.sin(2 * x) - 2 * torch.cos(2 * x)).abs().max()
    assert err < 2e-3
    assert (d @ torch.ones(size, dtype=torch.float64)).abs().max() < 1e-12


def test_patches_interpolate_the_grid_and_join_continuously():
    grid = random_grid(size=8, maps=1)
    c = cmap_coefficients(grid)[0]  # (8, 8, 4, 4)
    for i in range(8):
        for j in range(8):
            assert evaluate_patch(c[i, j], 0.0, 0.0) == pytest.approx(
                float(grid[0, i, j]), abs=1e-12
            )
            # the right edge of cell (i, j) is the left edge of cell (i+1, j)
            for t in (0.3, 0.7):
                right = evaluate_patch(c[i, j], 1.0, t)
                left = evaluate_patch(c[(i + 1) % 8, j], 0.0, t)
                assert right == pytest.approx(left, abs=1e-10)


def test_gradients_reach_the_grid():
    grid = random_grid(maps=1).requires_grad_(True)
    x = (
        torch.randn(
            1, 8, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(3)
        )
        * 2.0
    )
    atoms = torch.tensor([[0, 1, 2, 3, 4, 5, 6, 7]])
    e = cmap_energy(x, atoms, torch.tensor([0]), cmap_coefficients(grid))
    (g,) = torch.autograd.grad(e.sum(), grid)
    assert (
        g.abs().sum() > 0
    )  # the spline couples each cell to whole grid rows and columns


def openmm_cmap(
    grid: np.ndarray, positions: np.ndarray, atoms: list[list[int]], maps: list[int]
):
    """Energy (kJ/mol) and forces of an OpenMM CMAPTorsionForce.

    The force is built with our grid convention.
    """
    openmm = pytest.importorskip("openmm")
    force = openmm.CMAPTorsionForce()
    size = grid.shape[-1]
    for m in grid:
        shifted = np.roll(
            m, size // 2, axis=(0, 1)
        )  # OpenMM's grid starts at 0, ours at −π
        force.addMap(size, shifted.T.reshape(-1).tolist())  # energy[i + size*j]
    for quad, m in zip(atoms, maps, strict=True):
        force.addTorsion(m, *quad)
    system = openmm.System()
    for _ in range(len(positions)):
        system.addParticle(1.0)
    system.addForce(force)
    context = openmm.Context(
        system,
        openmm.VerletIntegrator(1e-3),
        openmm.Platform.getPlatformByName("Reference"),
    )
    context.setPositions(positions * 0.1)
    state = context.getState(getEnergy=True, getForces=True)
    return state.getPotentialEnergy()._value, np.asarray(
        state.getForces(asNumpy=True)._value
    ) * 0.1


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_energy_and_forces_match_openmm(seed):
    rng = np.random.default_rng(seed)
    grid = random_grid(maps=2, seed=seed)
    positions = rng.normal(size=(10, 3)) * 1.5
    atoms = [
        [0, 1, 2, 3, 1, 2, 3, 4],
        [5, 6, 7, 8, 6, 7, 8, 9],
        [2, 3, 4, 5, 3, 4, 5, 6],
    ]
    maps = [0, 1, 1]
    want_e, want_f = openmm_cmap(
        grid.numpy(), positions, atoms, maps
    )  # "kJ" = our units here
    x = torch.tensor(positions[None], requires_grad=True)
    e = cmap_energy(x, torch.tensor(atoms), torch.tensor(maps), cmap_coefficients(grid))
    (g,) = torch.autograd.grad(e.sum(), x)
    assert float(e.detach()) == pytest.approx(want_e, abs=1e-10)
    np.testing.assert_allclose(-g[0].numpy(), want_f, atol=1e-9)


def test_angles_on_grid_points_and_at_plus_minus_pi():
    grid = random_grid(size=24, maps=1)
    coefficients = cmap_coefficients(grid)
    for phi_index, psi_index in ((0, 0), (12, 5), (23, 23)):
        phi = -math.pi + 2 * math.pi * phi_index / 24
        psi = -math.pi + 2 * math.pi * psi_index / 24
        phi_atoms = [[1.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]
        phi_atoms.append([0.0, math.cos(phi), math.sin(phi)])
        psi_atoms = [[1.0, 1.0, 5.0], [1.0, 0.0, 5.0], [0.0, 0.0, 5.0]]
        psi_atoms.append([0.0, math.cos(psi), 5.0 + math.sin(psi)])
        x = torch.tensor([phi_atoms + psi_atoms], dtype=torch.float64)
        atoms = torch.tensor([[0, 1, 2, 3, 4, 5, 6, 7]])
        measured = dihedral_angles(x, atoms.view(2, 4), None)[0]
        i = round((float(measured[0]) + math.pi) / (2 * math.pi / 24)) % 24
        j = round((float(measured[1]) + math.pi) / (2 * math.pi / 24)) % 24
        e = cmap_energy(x, atoms, torch.tensor([0]), coefficients)
        assert float(e) == pytest.approx(float(grid[0, i, j]), abs=1e-9)
