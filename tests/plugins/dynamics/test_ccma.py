"""The CCMA preconditioner: the coupling matrix and its sparse inverse."""

from __future__ import annotations

import math

import torch
from torch.testing import assert_close
from torchmd_plugins.dynamics import ccma


def _triangle():
    """H-C-H with all three distances constrained (an 'hangles' methylene)."""
    theta, d = 1.9, 1.09
    x = torch.tensor(
        [
            [d * math.sin(theta / 2), d * math.cos(theta / 2), 0.0],
            [0.0, 0.0, 0.0],
            [-d * math.sin(theta / 2), d * math.cos(theta / 2), 0.0],
        ],
        dtype=torch.float64,
    )
    pairs = torch.tensor([[0, 1], [1, 2], [0, 2]])
    dist = torch.tensor([d, d, 2 * d * math.sin(theta / 2)], dtype=torch.float64)
    inv = 1.0 / torch.tensor([1.008, 12.011, 1.008], dtype=torch.float64)
    return x, pairs, dist, inv


def _jacobian(x, pairs, inv):
    """Finite-difference M: change of SHAKE's normalised residuals per multiplier."""
    s = x[pairs[:, 0]] - x[pairs[:, 1]]
    w = inv[pairs[:, 0]] + inv[pairs[:, 1]]
    n, h = len(pairs), 1e-7
    jac = torch.zeros(n, n, dtype=torch.float64)
    for e in range(n):
        dx = torch.zeros_like(x)
        dx[pairs[e, 0]] += inv[pairs[e, 0]] * h * s[e]
        dx[pairs[e, 1]] -= inv[pairs[e, 1]] * h * s[e]
        r = (x + dx)[pairs[:, 0]] - (x + dx)[pairs[:, 1]]
        jac[:, e] = (
            (r.square().sum(-1) - s.square().sum(-1)) / h / (2 * w * s.square().sum(-1))
        )
    return jac


def test_coupling_matrix_is_the_linearised_shake_equations():
    x, pairs, dist, inv = _triangle()
    rows, cols, vals = ccma.coupling_inverse(pairs, dist, inv, {})
    inverse = torch.zeros(3, 3, dtype=torch.float64)
    inverse[rows, cols] = vals
    assert_close(torch.linalg.inv(inverse), _jacobian(x, pairs, inv), rtol=0, atol=1e-6)


def test_angles_come_from_parameters_for_open_chains():
    # C-C-H chain (allbonds): the angle at the middle carbon comes from the angle table.
    theta, d1, d2 = 1.95, 1.53, 1.09
    x = torch.tensor(
        [
            [d1, 0.0, 0.0],
            [0.0, 0.0, 0.0],
            [d2 * math.cos(theta), d2 * math.sin(theta), 0.0],
        ],
        dtype=torch.float64,
    )
    pairs = torch.tensor([[0, 1], [1, 2]])
    dist = torch.tensor([d1, d2], dtype=torch.float64)
    inv = 1.0 / torch.tensor([12.011, 12.011, 1.008], dtype=torch.float64)
    rows, cols, vals = ccma.coupling_inverse(
        pairs, dist, inv, {(0, 1, 2): theta, (2, 1, 0): theta}
    )
    inverse = torch.zeros(2, 2, dtype=torch.float64)
    inverse[rows, cols] = vals
    assert_close(torch.linalg.inv(inverse), _jacobian(x, pairs, inv), rtol=0, atol=1e-6)


def test_uncoupled_constraints_get_the_identity():
    pairs = torch.tensor([[0, 1], [2, 3]])
    rows, cols, vals = ccma.coupling_inverse(
        pairs,
        torch.ones(2, dtype=torch.float64),
        torch.ones(4, dtype=torch.float64),
        {},
    )
    assert sorted(zip(rows.tolist(), cols.tolist(), vals.tolist(), strict=True)) == [
        (0, 0, 1.0),
        (1, 1, 1.0),
    ]


def test_large_clusters_use_a_sparse_approximation(monkeypatch):
    monkeypatch.setattr(ccma, "DENSE_LIMIT", 2)
    n = 6  # a chain of 6 bonds: one cluster larger than the limit
    pairs = torch.stack([torch.arange(n), torch.arange(1, n + 1)], 1)
    dist = torch.full((n,), 1.5, dtype=torch.float64)
    inv = torch.full((n + 1,), 1 / 12.0, dtype=torch.float64)
    rows, cols, vals = ccma.coupling_inverse(pairs, dist, inv, {})
    approx = torch.zeros(n, n, dtype=torch.float64)
    approx[rows, cols] = vals
    monkeypatch.setattr(ccma, "DENSE_LIMIT", 4000)
    rows, cols, vals = ccma.coupling_inverse(pairs, dist, inv, {})
    exact = torch.zeros(n, n, dtype=torch.float64)
    exact[rows, cols] = vals
    assert (
        float((approx - exact).abs().max()) < 0.05
    )  # truncated series, small elements dropped
