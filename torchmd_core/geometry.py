"""Pure geometry kernels: periodic images, distances, angles, dihedrals, boxes.

Every function is differentiable with respect to positions (and box) and works on
any device and floating dtype. Boxes are (..., 3, 3) with rows a, b, c in OpenMM's
reduced form: a = (ax, 0, 0), b = (bx, by, 0), c = (cx, cy, cz), |bx| ≤ ax/2,
|cx| ≤ ax/2, |cy| ≤ by/2.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "angles",
    "box_from_lengths_angles",
    "box_lengths_angles",
    "dihedral_angles",
    "distances",
    "min_box_width",
    "minimum_image",
    "reduce_box",
    "wrap_positions",
]


def minimum_image(d: Tensor, box: Tensor | None) -> Tensor:
    """The shortest periodic image of displacement vectors.

    Exact for displacements shorter than half the smallest box width, which is what
    every cutoff method needs.

    Args:
        d: (..., 3) displacements, Å.
        box: (..., 3, 3) broadcastable to ``d``'s leading dims, or None (returns ``d``).
    """
    if box is None:
        return d
    a, b, c = box[..., 0, :], box[..., 1, :], box[..., 2, :]
    d = d - c * torch.round(d[..., 2:3] / c[..., 2:3])
    d = d - b * torch.round(d[..., 1:2] / b[..., 1:2])
    d = d - a * torch.round(d[..., 0:1] / a[..., 0:1])
    return d


def wrap_positions(positions: Tensor, box: Tensor) -> Tensor:
    """Positions moved into the primary cell (fractional coordinates in [0, 1)).

    Args:
        positions: (R, N, 3), Å.
        box: (R, 3, 3), Å.
    """
    frac = torch.linalg.solve(box.transpose(-1, -2), positions.transpose(-1, -2))
    frac = frac - torch.floor(frac)
    wrapped: Tensor = (box.transpose(-1, -2) @ frac).transpose(-1, -2)
    return wrapped


def _gather(positions: Tensor, index: Tensor) -> Tensor:
    """positions (R, N, 3), index (n,) → (R, n, 3)."""
    return positions[:, index]


def distances(positions: Tensor, pairs: Tensor, box: Tensor | None) -> Tensor:
    """Distance of each atom pair, with the minimum image when periodic.

    Args:
        positions: (R, N, 3), Å.
        pairs: (n, 2) atom indices.
        box: (R, 3, 3) or None.

    Returns:
        (R, n) Å.
    """
    d = _gather(positions, pairs[:, 1]) - _gather(positions, pairs[:, 0])
    d = minimum_image(d, None if box is None else box[:, None])
    r: Tensor = torch.linalg.vector_norm(d, dim=-1)
    return r


def angles(positions: Tensor, triples: Tensor, box: Tensor | None) -> Tensor:
    """Angle at the middle atom of each triple, radians in [0, π].

    Args:
        positions: (R, N, 3), Å.
        triples: (n, 3) atom indices (i, j, k), angle i-j-k.
        box: (R, 3, 3) or None.

    Returns:
        (R, n)
    """
    b = None if box is None else box[:, None]
    v1 = minimum_image(
        _gather(positions, triples[:, 0]) - _gather(positions, triples[:, 1]), b
    )
    v2 = minimum_image(
        _gather(positions, triples[:, 2]) - _gather(positions, triples[:, 1]), b
    )
    # atan2 of |v1×v2| and v1·v2 stays accurate (and differentiable) near 0 and π.
    cross = torch.linalg.vector_norm(torch.linalg.cross(v1, v2, dim=-1), dim=-1)
    dot = (v1 * v2).sum(dim=-1)
    return torch.atan2(cross, dot)


def dihedral_angles(positions: Tensor, quads: Tensor, box: Tensor | None) -> Tensor:
    """Signed dihedral angle for each atom quadruple, in radians within (-π, π].

    The IUPAC convention: 0 for cis, π for trans, as OpenMM and CHARMM.

    Args:
        positions: (n_replicas, n_atoms, 3), Å.
        quads: (n_dihedrals, 4) atom indices.
        box: (n_replicas, 3, 3), or None for non-periodic systems.

    Returns:
        (n_replicas, n_dihedrals)
    """
    bx = None if box is None else box[:, None]
    p0, p1, p2, p3 = (_gather(positions, quads[:, k]) for k in range(4))
    b0 = minimum_image(p1 - p0, bx)
    b1 = minimum_image(p2 - p1, bx)
    b2 = minimum_image(p3 - p2, bx)
    n1 = torch.linalg.cross(b0, b1, dim=-1)
    n2 = torch.linalg.cross(b1, b2, dim=-1)
    b1_len = torch.linalg.vector_norm(b1, dim=-1, keepdim=True)
    m1 = torch.linalg.cross(n1, b1 / b1_len, dim=-1)
    x = (n1 * n2).sum(dim=-1)
    y = (m1 * n2).sum(dim=-1)
    return -torch.atan2(y, x)


def box_from_lengths_angles(
    a: float,
    b: float,
    c: float,
    alpha: float = 90.0,
    beta: float = 90.0,
    gamma: float = 90.0,
) -> Tensor:
    """(3, 3) float64 box vectors (Å) in reduced form.

    From the lengths a, b, c (Å) and the angles alpha, beta, gamma (°).
    """
    # Right angles give exact zeros (cos(radians(90)) is 6e-17, not 0).
    ca, cb, cg = (
        0.0 if x == 90.0 else math.cos(math.radians(x)) for x in (alpha, beta, gamma)
    )
    sg = 1.0 if gamma == 90.0 else math.sin(math.radians(gamma))
    ax = a
    bx, by = b * cg, b * sg
    cx = c * cb
    cy = c * (ca - cb * cg) / sg
    cz = math.sqrt(max(c * c - cx * cx - cy * cy, 0.0))
    box = torch.tensor(
        [[ax, 0.0, 0.0], [bx, by, 0.0], [cx, cy, cz]], dtype=torch.float64
    )
    return reduce_box(box)


def box_lengths_angles(
    box: Tensor,
) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """Lengths (Å) and angles α, β, γ (°) of one (3, 3) box."""
    a, b, c = box[0].double(), box[1].double(), box[2].double()
    la, lb, lc = (float(torch.linalg.vector_norm(v)) for v in (a, b, c))

    def ang(u: Tensor, v: Tensor, lu: float, lv: float) -> float:
        cosine = float((u * v).sum()) / (lu * lv)
        return math.degrees(math.acos(max(-1.0, min(1.0, cosine))))

    return (la, lb, lc), (ang(b, c, lb, lc), ang(a, c, la, lc), ang(a, b, la, lb))


def reduce_box(box: Tensor) -> Tensor:
    """The same lattice in OpenMM's reduced form.

    Reduced means |bx| ≤ ax/2, |cx| ≤ ax/2 and |cy| ≤ by/2.

    Args:
        box: (..., 3, 3) with a along x and b in the xy plane.
    """
    box = box.clone()
    c = box[..., 2, :] - box[..., 1, :] * torch.round(
        box[..., 2, 1:2] / box[..., 1, 1:2]
    )
    c = c - box[..., 0, :] * torch.round(c[..., 0:1] / box[..., 0, 0:1])
    b = box[..., 1, :] - box[..., 0, :] * torch.round(
        box[..., 1, 0:1] / box[..., 0, 0:1]
    )
    return torch.stack([box[..., 0, :], b, c], dim=-2)


def min_box_width(box: Tensor) -> Tensor:
    """(...) the smallest distance between opposite faces of each box, Å.

    A cutoff must stay below half of it for the minimum image to be exact.
    """
    a, b, c = box[..., 0, :], box[..., 1, :], box[..., 2, :]
    volume: Tensor = torch.linalg.det(box).abs()
    areas = torch.stack(
        [
            torch.linalg.vector_norm(torch.linalg.cross(b, c, dim=-1), dim=-1),
            torch.linalg.vector_norm(torch.linalg.cross(c, a, dim=-1), dim=-1),
            torch.linalg.vector_norm(torch.linalg.cross(a, b, dim=-1), dim=-1),
        ],
        dim=-1,
    )
    return (volume[..., None] / areas).min(dim=-1).values
