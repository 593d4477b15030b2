"""Virtual sites: place massless sites from their parents and pass their forces on.

Pure functions on (R, N, 3) tensors, vectorised per kind of site
(:class:`~torchmd_core.system.VirtualSites` defines the kinds and their formulas):

- :func:`place_virtual_sites` rebuilds the site rows of the positions from the parent
  rows. It is differentiable, so an energy of the placed positions differentiated with
  respect to the input positions already hands each site's force to its parents
  (autograd), and the site rows themselves get no gradient.
- :func:`distribute_site_forces` does the same for forces computed at the placed
  positions (analytic forces): F_parent += (∂x_site/∂x_parent)ᵀ F_site, exactly as
  OpenMM distributes them. Linear sites use F_k += w_k F_site, out-of-plane sites
  their cross-product Jacobian; local-coordinate sites go through autograd.

In a periodic box the parents' offsets from the first parent are taken as minimum
images, so a molecule split across the boundary (per-atom wrapped coordinates) still
gets its sites in the right place; for whole molecules this is the plain formula.
"""

from __future__ import annotations

import torch
from torch import Tensor

from torchmd_core.geometry import minimum_image
from torchmd_core.system import VirtualSites

__all__ = ["distribute_site_forces", "place_virtual_sites", "site_positions"]


def place_virtual_sites(
    positions: Tensor, sites: VirtualSites | None, box: Tensor | None = None
) -> Tensor:
    """``positions`` with every virtual site's row rebuilt from its parents.

    Args:
        positions: (R, N, 3), Å.
        sites: the system's virtual sites (on the positions' device), or None.
        box: (R, 3, 3), Å, or None for a non-periodic system.

    Returns:
        (R, N, 3); a new tensor (the input is untouched), or ``positions`` itself when
        there are no sites.
    """
    if sites is None or len(sites) == 0:
        return positions
    return positions.index_copy(1, sites.sites, site_positions(positions, sites, box))


def site_positions(
    positions: Tensor, sites: VirtualSites, box: Tensor | None = None
) -> Tensor:
    """(R, S, 3) positions of the sites, in the order of ``sites.sites``."""
    parts = []
    if sites.linear_sites.numel():
        parts.append(_linear(positions, sites, box))
    if sites.out_of_plane_sites.numel():
        parts.append(_out_of_plane(positions, sites, box)[0])
    if sites.local_sites.numel():
        parts.append(_local(_parents(positions, sites.local_parents, box), sites))
    return torch.cat(parts, dim=1)


def distribute_site_forces(
    forces: Tensor,
    positions: Tensor,
    sites: VirtualSites | None,
    box: Tensor | None = None,
    keep_site_forces: bool = False,
) -> Tensor:
    """Forces with each site's force handed on to its parents.

    Args:
        forces: (R, N, 3) kcal/mol/Å, computed at ``positions``.
        positions: (R, N, 3) Å with the sites placed (:func:`place_virtual_sites`).
        sites: the system's virtual sites, or None.
        box: (R, 3, 3) Å or None.
        keep_site_forces: leave the site rows as they were (the force that acted on
            each site, as OpenMM's ``State.getForces`` reports it) instead of zeroing
            them. The parents get the site forces either way.

    Returns:
        (R, N, 3) new tensor (differentiable in ``forces`` and ``positions``).
    """
    if sites is None or len(sites) == 0:
        return forces
    R = forces.shape[0]
    out = forces
    if sites.linear_sites.numel():
        f = forces[:, sites.linear_sites]  # (R, A, 3)
        share = (
            sites.linear_weights[None, :, :, None] * f[:, :, None, :]
        )  # (R, A, P, 3)
        out = out.index_add(1, sites.linear_parents.flatten(), share.reshape(R, -1, 3))
    if sites.out_of_plane_sites.numel():
        out = _distribute_out_of_plane(out, forces, positions, sites, box)
    if sites.local_sites.numel():
        out = _distribute_local(out, forces, positions, sites, box)
    if keep_site_forces:
        return out
    return out.index_fill(1, sites.sites, 0.0)


# -- the kinds ---------------------------------------------------------------------


def _parents(positions: Tensor, parents: Tensor, box: Tensor | None) -> Tensor:
    """(R, n, P, 3) parent positions, every parent the nearest image of the first."""
    x = positions[:, parents]  # (R, n, P, 3)
    if box is None:
        return x
    first = x[:, :, :1]
    offsets = minimum_image(x - first, box[:, None, None])
    return first + offsets


def _linear(positions: Tensor, sites: VirtualSites, box: Tensor | None) -> Tensor:
    x = _parents(positions, sites.linear_parents, box)  # (R, A, P, 3)
    return (sites.linear_weights[None, :, :, None] * x).sum(dim=2)


def _out_of_plane(
    positions: Tensor, sites: VirtualSites, box: Tensor | None
) -> tuple[Tensor, Tensor, Tensor]:
    """(R, O, 3) site positions and the (R, O, 3) vectors r12, r13."""
    x = _parents(positions, sites.out_of_plane_parents, box)  # (R, O, 3, 3)
    r12, r13 = x[:, :, 1] - x[:, :, 0], x[:, :, 2] - x[:, :, 0]
    w = sites.out_of_plane_weights
    w12, w13, wc = w[:, 0, None], w[:, 1, None], w[:, 2, None]  # (O, 1)
    site = x[:, :, 0] + w12 * r12 + w13 * r13 + wc * torch.linalg.cross(r12, r13)
    return site, r12, r13


def _local(x: Tensor, sites: VirtualSites) -> Tensor:
    """(R, L, 3) from parent positions x (R, L, P, 3)."""
    w = sites.local_weights  # (L, 3, P)
    origin, dx, dy = (
        (w[None, :, k, :, None] * x).sum(dim=2) for k in range(3)
    )  # each (R, L, 3)
    dz = torch.linalg.cross(dx, dy)
    ex = dx / torch.linalg.vector_norm(dx, dim=-1, keepdim=True)
    ez = dz / torch.linalg.vector_norm(dz, dim=-1, keepdim=True)
    ey = torch.linalg.cross(ez, ex)
    lp = sites.local_positions  # (L, 3)
    placed: Tensor = origin + lp[:, :1] * ex + lp[:, 1:2] * ey + lp[:, 2:] * ez
    return placed


def _distribute_out_of_plane(
    out: Tensor,
    forces: Tensor,
    positions: Tensor,
    sites: VirtualSites,
    box: Tensor | None,
) -> Tensor:
    """x_s = x1 + w12 r12 + w13 r13 + wc r12 × r13. Since f·(a × b) = a·(b × f) =
    b·(f × a): F2 += w12 f + wc r13 × f, F3 += w13 f + wc f × r12, F1 += f − F2 − F3."""
    R = forces.shape[0]
    _, r12, r13 = _out_of_plane(positions, sites, box)
    f = forces[:, sites.out_of_plane_sites]  # (R, O, 3)
    w = sites.out_of_plane_weights
    w12, w13, wc = w[:, 0, None], w[:, 1, None], w[:, 2, None]
    f2 = w12 * f + wc * torch.linalg.cross(r13, f)
    f3 = w13 * f + wc * torch.linalg.cross(f, r12)
    f1 = f - f2 - f3
    share = torch.stack([f1, f2, f3], dim=2)  # (R, O, 3, 3)
    return out.index_add(
        1, sites.out_of_plane_parents.flatten(), share.reshape(R, -1, 3)
    )


def _distribute_local(
    out: Tensor,
    forces: Tensor,
    positions: Tensor,
    sites: VirtualSites,
    box: Tensor | None,
) -> Tensor:
    """Vector-Jacobian product of the local-coordinate construction (autograd)."""
    R = forces.shape[0]
    keep_graph = torch.is_grad_enabled() and (
        forces.requires_grad or positions.requires_grad
    )
    x = _parents(positions, sites.local_parents, box)  # (R, L, P, 3)
    f = forces[:, sites.local_sites]  # (R, L, 3)
    with torch.enable_grad():
        if not x.requires_grad:
            x = x.detach().requires_grad_(True)
        placed = _local(x, sites)
        (share,) = torch.autograd.grad(
            placed, x, grad_outputs=f, create_graph=keep_graph
        )
    if not keep_graph:
        share = share.detach()
    return out.index_add(1, sites.local_parents.flatten(), share.reshape(R, -1, 3))
