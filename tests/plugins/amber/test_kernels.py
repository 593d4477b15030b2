"""Pure kernels: each against the formula written out, on small hand-made geometries."""

from __future__ import annotations

import math

import pytest
import torch
from torchmd_plugins.amber import kernels

from torchmd_core import units
from torchmd_core.geometry import dihedral_angles

DTYPES = pytest.mark.parametrize(
    "dtype", [torch.float32, torch.float64], ids=["f32", "f64"]
)


def positions(*rows, dtype=torch.float64):
    return torch.tensor([rows], dtype=dtype)


@DTYPES
def test_harmonic_bond(dtype):
    x = positions((0.0, 0.0, 0.0), (1.7, 0.0, 0.0), (1.7, 1.1, 0.0), dtype=dtype)
    pairs = torch.tensor([[0, 1], [1, 2]])
    e = kernels.harmonic_bond_energy(
        x,
        pairs,
        torch.tensor([300.0, 100.0], dtype=dtype),
        torch.tensor([1.5, 1.0], dtype=dtype),
    )
    torch.testing.assert_close(
        e, torch.tensor([300 * 0.2**2 + 100 * 0.1**2], dtype=dtype)
    )


def test_bond_uses_the_minimum_image():
    box = torch.diag(torch.tensor([10.0, 10.0, 10.0], dtype=torch.float64))[None]
    x = positions((0.2, 0.0, 0.0), (9.7, 0.0, 0.0))
    e = kernels.harmonic_bond_energy(
        x,
        torch.tensor([[0, 1]]),
        torch.tensor([1.0], dtype=torch.float64),
        torch.tensor([0.0], dtype=torch.float64),
        box,
    )
    torch.testing.assert_close(e, torch.tensor([0.25], dtype=torch.float64))


@DTYPES
def test_harmonic_angle(dtype):
    x = positions((1.0, 0.0, 0.0), (0.0, 0.0, 0.0), (0.0, 1.0, 0.0), dtype=dtype)
    e = kernels.harmonic_angle_energy(
        x,
        torch.tensor([[0, 1, 2]]),
        torch.tensor([50.0], dtype=dtype),
        torch.tensor([1.9], dtype=dtype),
    )
    torch.testing.assert_close(
        e, torch.tensor([50 * (math.pi / 2 - 1.9) ** 2], dtype=dtype)
    )


def dihedral_geometry(phi: float) -> torch.Tensor:
    """Four atoms whose dihedral is ±``phi`` (0 = cis), (1, 4, 3)."""
    return torch.tensor(
        [
            [
                [1.0, 1.0, 0.0],
                [1.0, 0.0, 0.0],
                [0.0, 0.0, 0.0],
                [0.0, math.cos(phi), math.sin(phi)],
            ]
        ],
        dtype=torch.float64,
    )


@pytest.mark.parametrize("phi", [-2.5, -0.3, 0.0, 1.2, 3.0])
def test_periodic_torsion_with_several_terms(phi):
    x = dihedral_geometry(phi)
    quads = torch.tensor([[0, 1, 2, 3]] * 3)
    k = torch.tensor([1.0, 0.5, 0.25], dtype=torch.float64)
    phase = torch.tensor([0.0, math.pi, 0.3], dtype=torch.float64)
    n = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    e = kernels.periodic_torsion_energy(x, quads, k, phase, n)
    measured = float(dihedral_angles(x, quads[:1], None))
    assert abs(abs(measured) - abs(phi)) < 1e-12
    want = sum(
        float(kk) * (1 + math.cos(float(nn) * measured - float(pp)))
        for kk, pp, nn in zip(k, phase, n, strict=True)
    )
    assert float(e) == pytest.approx(want, abs=1e-12)


@pytest.mark.parametrize("psi0", [0.0, 3.0, -math.pi])
def test_harmonic_improper_wraps_the_difference(psi0):
    for phi in (-3.1, -1.0, 0.5, 3.1):
        x = dihedral_geometry(phi)
        e = kernels.harmonic_improper_energy(
            x,
            torch.tensor([[0, 1, 2, 3]]),
            torch.tensor([10.0], dtype=torch.float64),
            torch.tensor([psi0], dtype=torch.float64),
        )
        measured = float(dihedral_angles(x, torch.tensor([[0, 1, 2, 3]]), None))
        d = abs(measured - psi0) % (2 * math.pi)
        assert float(e) == pytest.approx(10.0 * min(d, 2 * math.pi - d) ** 2, abs=1e-10)


def test_harmonic_improper_is_smooth_across_pi():
    k, psi0 = (
        torch.tensor([10.0], dtype=torch.float64),
        torch.tensor([3.0], dtype=torch.float64),
    )
    quads = torch.tensor([[0, 1, 2, 3]])
    before = kernels.harmonic_improper_energy(
        dihedral_geometry(math.pi - 1e-6), quads, k, psi0
    )
    after = kernels.harmonic_improper_energy(
        dihedral_geometry(-math.pi + 1e-6), quads, k, psi0
    )
    assert abs(float(before) - float(after)) < 1e-4


def test_lj14_and_coulomb14():
    r = torch.tensor([[3.0, 4.5]], dtype=torch.float64)
    sigma = torch.tensor([3.2, 3.0], dtype=torch.float64)
    epsilon = torch.tensor([0.1, 0.2], dtype=torch.float64)
    want = sum(
        4 * e * ((s / d) ** 12 - (s / d) ** 6)
        for d, s, e in zip((3.0, 4.5), (3.2, 3.0), (0.1, 0.2), strict=True)
    )
    assert float(kernels.lj14_energy(r, sigma, epsilon)) == pytest.approx(
        want, rel=1e-14
    )
    qq = torch.tensor([0.25, -0.1], dtype=torch.float64)
    e = kernels.coulomb14_energy(r, qq, units.COULOMB_KCAL_MOL_A)
    assert float(e) == pytest.approx(
        units.COULOMB_KCAL_MOL_A * (0.25 / 3.0 - 0.1 / 4.5), rel=1e-14
    )


def test_wrap_angle_maps_to_minus_pi_pi():
    x = torch.tensor(
        [-7.0, -math.pi, 0.0, math.pi - 1e-9, 4.0, 10.0], dtype=torch.float64
    )
    w = kernels.wrap_angle(x)
    assert bool(((w >= -math.pi) & (w < math.pi)).all())
    torch.testing.assert_close(torch.cos(w), torch.cos(x))
