"""CMAP: bicubic interpolation of a tabulated (φ, ψ) energy correction, as in OpenMM.

A map is a G × G grid of energies at φ = −π + 2πi/G, ψ = −π + 2πj/G (the convention
of :class:`torchmd_core.ParameterTable`'s ``cmap`` term). OpenMM (CMAPTorsionForce)
turns the grid into one bicubic patch per grid cell:

1. the derivatives ∂E/∂φ, ∂E/∂ψ and ∂²E/∂φ∂ψ at the grid points are those of
   periodic cubic splines through the grid values (first along φ, along ψ, then the
   φ-derivative of the ψ-derivatives);
2. each cell gets the unique bicubic polynomial that matches value, both first
   derivatives and the cross derivative at its four corners (Press et al.,
   *Numerical Recipes*, §3.6, "bicubic interpolation").

Everything here is linear in the grid, so the coefficients are rebuilt from the grid
at each evaluation and gradients flow to the grid (a trainable CMAP stays exact).

Reference: MacKerell, Feig & Brooks, J. Comput. Chem. 25, 1400 (2004).
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
from torch import Tensor

from torchmd_core.geometry import dihedral_angles

__all__ = ["cmap_coefficients", "cmap_energy", "periodic_spline_derivative_matrix"]


@lru_cache(maxsize=8)
def _spline_matrix(size: int) -> Tensor:
    h = 2.0 * math.pi / size
    eye = torch.eye(size, dtype=torch.float64)
    up = torch.roll(eye, 1, dims=1)  # picks y[i+1]
    down = torch.roll(eye, -1, dims=1)  # picks y[i-1]
    # Periodic cubic spline, uniform knots:
    # k[i-1] + 4 k[i] + k[i+1] = 3 (y[i+1] - y[i-1]) / h
    lhs = 4.0 * eye + up + down
    rhs = 3.0 / h * (up - down)
    matrix: Tensor = torch.linalg.solve(lhs, rhs)
    return matrix


def periodic_spline_derivative_matrix(
    size: int, dtype: torch.dtype = torch.float64, device: torch.device | None = None
) -> Tensor:
    """(G, G) matrix D with D @ y = the periodic cubic spline's dy/dx at the knots.

    The knots are x_i = 2πi/G (any uniform periodic grid of period 2π).
    """
    return _spline_matrix(size).to(dtype=dtype, device=device)


# Hermite basis of a cell on [0, 1]: p(t) = [1 t t² t³] @ _HERMITE @ [p0, p1, p'0, p'1]
_HERMITE = (
    (1.0, 0.0, 0.0, 0.0),
    (0.0, 0.0, 1.0, 0.0),
    (-3.0, 3.0, -2.0, -1.0),
    (2.0, -2.0, 1.0, 1.0),
)


def cmap_coefficients(grid: Tensor) -> Tensor:
    """Bicubic coefficients of every cell of every map.

    Args:
        grid: (n_maps, G, G) energies, kcal/mol; ``grid[m, i, j]`` at φ_i, ψ_j.

    Returns:
        (n_maps, G, G, 4, 4): ``c[m, i, j, a, b]`` so that inside cell (i, j)
        E = Σ_ab c[a, b] u^a v^b with u = (φ − φ_i)/Δ, v = (ψ − ψ_j)/Δ, Δ = 2π/G.
    """
    size = grid.shape[-1]
    delta = 2.0 * math.pi / size
    d = periodic_spline_derivative_matrix(size, grid.dtype, grid.device)
    d_phi = torch.einsum("ab,mbj->maj", d, grid)
    d_psi = torch.einsum("ab,mib->mia", d, grid)
    d_cross = torch.einsum("ab,mbj->maj", d, d_psi)

    def corners(f: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """f at the (0,0), (1,0), (0,1), (1,1) corners of every cell."""
        f10 = torch.roll(f, -1, dims=1)
        return f, f10, torch.roll(f, -1, dims=2), torch.roll(f10, -1, dims=2)

    e00, e10, e01, e11 = corners(grid)
    x00, x10, x01, x11 = (delta * t for t in corners(d_phi))
    y00, y10, y01, y11 = (delta * t for t in corners(d_psi))
    z00, z10, z01, z11 = (delta * delta * t for t in corners(d_cross))
    # F[a][b]: rows (value, value, ∂u, ∂u) at u = 0, 1; columns likewise in v.
    f = torch.stack(
        [
            torch.stack([e00, e01, y00, y01], dim=-1),
            torch.stack([e10, e11, y10, y11], dim=-1),
            torch.stack([x00, x01, z00, z01], dim=-1),
            torch.stack([x10, x11, z10, z11], dim=-1),
        ],
        dim=-2,
    )  # (n_maps, G, G, 4, 4)
    h = torch.tensor(_HERMITE, dtype=grid.dtype, device=grid.device)
    return h @ f @ h.transpose(0, 1)


def cmap_energy(
    positions: Tensor,
    atoms: Tensor,
    maps: Tensor,
    coefficients: Tensor,
    box: Tensor | None = None,
) -> Tensor:
    """Σ E_m(φ, ψ) over CMAP terms.

    Args:
        positions: (R, N, 3), Å.
        atoms: (n, 8) atom indices; φ from atoms 0-3, ψ from atoms 4-7.
        maps: (n,) map index of each term.
        coefficients: (n_maps, G, G, 4, 4) from :func:`cmap_coefficients`.
        box: (R, 3, 3) or None.

    Returns:
        (R,) kcal/mol.
    """
    size = coefficients.shape[1]
    delta = 2.0 * math.pi / size
    phi = dihedral_angles(positions, atoms[:, :4], box)  # (R, n)
    psi = dihedral_angles(positions, atoms[:, 4:], box)
    x = (phi + math.pi) / delta  # grid units, in [0, G]
    y = (psi + math.pi) / delta
    i = torch.floor(x.detach()).clamp(0, size - 1)
    j = torch.floor(y.detach()).clamp(0, size - 1)
    u = x - i  # (R, n), in [0, 1]
    v = y - j
    c = coefficients[maps, i.long(), j.long()]  # (R, n, 4, 4)
    pu = torch.stack([torch.ones_like(u), u, u * u, u * u * u], dim=-1)  # (R, n, 4)
    pv = torch.stack([torch.ones_like(v), v, v * v, v * v * v], dim=-1)
    return torch.einsum("rna,rnab,rnb->r", pu, c, pv)
