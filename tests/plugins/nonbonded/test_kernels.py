"""The pure kernels of nonbonded/kernels.py, checked against their definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.testing import assert_close
from torchmd_plugins.nonbonded import kernels
from torchmd_plugins.nonbonded.kernels import PairSettings

from tests.plugins.nonbonded.openmm_systems import random_system
from torchmd_core import units
from torchmd_core.neighbors import build_pairs


def test_lj_tables_match_system_nonbonded_parameters() -> None:
    for nbfix in (False, True):
        system = random_system(seed=2, n_side=3, nbfix=nbfix).system()
        nb = system.nonbonded
        assert nb is not None
        expected = nb.lj_tables()
        got = kernels.lj_tables(
            nb.sigma, nb.epsilon, nb.pair_mask, nb.pair_c12, nb.pair_c6
        )
        assert_close(got, expected, rtol=0, atol=0)


def test_lj_tables_follow_lorentz_berthelot() -> None:
    sigma = torch.tensor([3.0, 2.0], dtype=torch.float64)
    epsilon = torch.tensor([0.2, 0.05], dtype=torch.float64)
    c12, c6 = kernels.lj_tables(sigma, epsilon)
    s, e = 2.5, math.sqrt(0.2 * 0.05)
    assert_close(c6[0, 1].item(), 4 * e * s**6)
    assert_close(c12[1, 0].item(), 4 * e * s**12)
    # The LJ minimum of the mixed pair lies at 2^(1/6) σ with depth −ε.
    r2 = torch.tensor((2 ** (1 / 6) * s) ** 2, dtype=torch.float64)
    assert_close(kernels.lennard_jones(r2, c12[0, 1], c6[0, 1]).item(), -e)


def test_switching_function_is_smooth_and_bounded() -> None:
    rs, rc = 7.0, 9.0
    r = torch.linspace(6.0, 10.0, 4001, dtype=torch.float64, requires_grad=True)
    s = kernels.switching_function(r, rs, rc)
    (ds,) = torch.autograd.grad(s.sum(), r, create_graph=True)
    (d2s,) = torch.autograd.grad(ds.sum(), r)
    assert torch.all(s[r <= rs] == 1.0) and torch.all(s[r >= rc] == 0.0)
    assert torch.all(ds <= 0)
    for edge in (rs, rc):  # S' and S'' vanish at both ends
        near = (r - edge).abs() < 1e-3
        assert ds[near].abs().max() < 1e-5 and d2s[near].abs().max() < 1e-2
    assert_close(kernels.switching_function(torch.tensor(8.0), rs, rc).item(), 0.5)


def test_reaction_field_vanishes_at_the_cutoff() -> None:
    for dielectric in (1.0, 20.0, 78.3, math.inf):
        k_rf, c_rf = kernels.reaction_field_constants(9.0, dielectric)
        assert abs(1 / 9.0 + k_rf * 81.0 - c_rf) < 1e-15
    k_inf = kernels.reaction_field_constants(9.0, math.inf)
    k_big = kernels.reaction_field_constants(9.0, 1e12)
    assert_close(torch.tensor(k_inf), torch.tensor(k_big))


def test_pair_energies_follow_the_formulas() -> None:
    r = torch.tensor([2.0, 5.0, 8.5, 9.5], dtype=torch.float64)
    qq = torch.tensor([0.3, -0.2, 0.5, 0.1], dtype=torch.float64)
    c12, c6 = torch.full_like(r, 1.0e6), torch.full_like(r, 1.0e3)
    lj_plain = c12 / r**12 - c6 / r**6
    lj, coul = kernels.pair_energies(r * r, qq, c12, c6, PairSettings())
    assert_close(lj, lj_plain)
    assert_close(coul, units.COULOMB_KCAL_MOL_A * qq / r)
    settings = PairSettings(
        cutoff=9.0, switch_distance=8.0, reaction_field_dielectric=50.0
    )
    lj, coul = kernels.pair_energies(r * r, qq, c12, c6, settings)
    k_rf, c_rf = kernels.reaction_field_constants(9.0, 50.0)
    inside = (r < 9.0).double()
    switch = kernels.switching_function(r, 8.0, 9.0)
    assert_close(lj, lj_plain * switch * inside)
    assert_close(
        coul, units.COULOMB_KCAL_MOL_A * qq * (1 / r + k_rf * r * r - c_rf) * inside
    )


def test_switch_integrals_match_dense_quadrature() -> None:
    rs, rc = 7.5, 9.0
    r = np.linspace(rs, rc, 2_000_001)
    t = (r - rs) / (rc - rs)
    removed = 1.0 - (1.0 + t**3 * (-10.0 + t * (15.0 - 6.0 * t)))
    j12, j6 = kernels.switch_integrals(rs, rc)
    assert j12 == pytest.approx(np.trapezoid(removed / r**10, r), rel=1e-10)
    assert j6 == pytest.approx(np.trapezoid(removed / r**4, r), rel=1e-10)
    with pytest.raises(ValueError):
        kernels.switch_integrals(9.0, 9.0)


@pytest.mark.parametrize("switch", [None, 6.0], ids=["plain", "switched"])
def test_dispersion_coefficient_is_the_all_pairs_average(switch: float | None) -> None:
    """K = 2π N² · mean of F(i, j) over the N(N+1)/2 pairs i ≤ j (self-pairs too)."""
    rs = random_system(seed=3, n_side=3, nbfix=True)
    c12, c6 = (torch.as_tensor(t) for t in rs.tables())
    cutoff = 8.0
    j12, j6 = (0.0, 0.0) if switch is None else kernels.switch_integrals(switch, cutoff)
    f = (c12 * (1 / (9 * cutoff**9) + j12) - c6 * (1 / (3 * cutoff**3) + j6)).numpy()
    types = rs.lj_types
    n = len(types)
    pair_mean = sum(f[types[i], types[j]] for i in range(n) for j in range(i, n)) / (
        n * (n + 1) / 2
    )
    counts = torch.bincount(torch.as_tensor(types), minlength=len(rs.sigma)).double()
    k = kernels.dispersion_coefficient(c12, c6, counts, cutoff, switch)
    assert float(k) == pytest.approx(2 * math.pi * n * n * pair_mean, rel=1e-12)
    assert float(k) < 0  # attraction dominates beyond the cutoff


def _block_inputs(rs_seed: int = 4) -> tuple:
    rs = random_system(seed=rs_seed, n_side=4, nbfix=True)
    system = rs.system()
    nb = system.nonbonded
    assert nb is not None
    c12, c6 = nb.lj_tables()
    pos = torch.as_tensor(rs.positions)[None].repeat(2, 1, 1)
    pos[1] += 0.05 * torch.randn_like(
        pos[1], generator=torch.Generator().manual_seed(0)
    )
    return system, pos, c12, c6


def test_all_pairs_block_equals_neighbor_list_sum() -> None:
    system, pos, c12, c6 = _block_inputs()
    n = system.n_atoms
    settings = PairSettings(
        cutoff=9.5, switch_distance=8.0, reaction_field_dielectric=30.0
    )
    excluded = torch.zeros(n, n, dtype=torch.bool)
    excluded[system.exclusions[:, 0], system.exclusions[:, 1]] = True
    dense = kernels.all_pairs_block_energies(
        pos,
        0,
        n,
        system.charges,
        system.nonbonded.lj_types,
        c12,
        c6,
        excluded,
        settings,
    )
    pairs = build_pairs(pos, None, 9.5 + 1.0, system.exclusions).pairs
    listed = kernels.neighbor_list_energies(
        pos, None, pairs, system.charges, system.nonbonded.lj_types, c12, c6, settings
    )
    assert_close(dense, listed, rtol=1e-12, atol=1e-10)


def test_minimum_image_of_the_neighbor_list_sum() -> None:
    """A periodic sum equals the open sum over explicitly built nearest images."""
    rs = random_system(
        seed=8,
        n_side=3,
        nbfix=False,
        lengths=(12.0, 12.5, 13.0),
        angles=(80.0, 85.0, 95.0),
    )
    system = rs.system()
    nb = system.nonbonded
    assert nb is not None
    c12, c6 = nb.lj_tables()
    settings = PairSettings(cutoff=5.5)
    pos = torch.as_tensor(rs.positions)[None]
    box = torch.as_tensor(rs.box)[None]
    pairs = build_pairs(pos, box, 6.0, system.exclusions).pairs
    periodic = kernels.neighbor_list_energies(
        pos, box, pairs, system.charges, nb.lj_types, c12, c6, settings
    )
    # Move every partner j to its image nearest i, then sum without a box.
    i, j = pairs
    d = pos[0, j] - pos[0, i]
    frac = torch.linalg.solve(box[0].T, d.T).T
    shifts = torch.stack(
        torch.meshgrid(*[torch.arange(-2, 3, dtype=torch.float64)] * 3, indexing="ij"),
        -1,
    ).reshape(-1, 3)
    images = d[:, None] + (shifts - torch.round(frac)[:, None]) @ box[0]
    nearest = images[torch.arange(len(d)), images.norm(dim=-1).argmin(1)]
    r2 = (nearest * nearest).sum(-1)
    tt = nb.lj_types[i] * c12.shape[0] + nb.lj_types[j]
    lj, coul = kernels.pair_energies(
        r2,
        system.charges[i] * system.charges[j],
        c12.reshape(-1)[tt],
        c6.reshape(-1)[tt],
        settings,
    )
    assert_close(periodic[0], lj.sum().reshape(1), rtol=1e-12, atol=1e-10)
    assert_close(periodic[1], coul.sum().reshape(1), rtol=1e-12, atol=1e-10)
