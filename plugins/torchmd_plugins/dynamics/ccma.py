"""The CCMA preconditioner: sparse approximate inverse of the constraint couplings.

For distance constraints c = (a, b), SHAKE's multiplier of one constraint alone is
δ_c = (d_c² − r_c²) / (2 (1/m_a + 1/m_b) r_c·s_c). Constraints sharing an atom k
couple: the linearised equations are M λ = δ with M[c, c] = 1 and, for c and e
sharing k, with i and j their other atoms,

    M[c, e] = (1/m_k) / (1/m_a + 1/m_b) · (d_e / d_c) · cos(angle i-k-j)

(the orientation signs of the bond vectors cancel). CCMA evaluates M once at the
equilibrium geometry, inverts it cluster by cluster and keeps the elements above a
cutoff; each iteration then applies that inverse to the uncoupled multipliers.
Reference: Eastman & Pande, J. Chem. Theory Comput. 6, 434 (2010).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch
from torch import Tensor

from torchmd_core import System
from torchmd_core.system import connected_components

__all__ = ["angle_table", "coupling_inverse"]

#: Inverse elements smaller than this are dropped (as CCMA does).
ELEMENT_CUTOFF = 0.02
#: Clusters of coupled constraints up to this size get an exact dense inverse.
DENSE_LIMIT = 4000
_TETRAHEDRAL = math.acos(-1.0 / 3.0)

Triplets = tuple[np.ndarray, np.ndarray, np.ndarray]


def angle_table(system: System) -> dict[tuple[int, int, int], float]:
    """(i, j, k) and (k, j, i) → equilibrium angle at j, radians, from ``angles``."""
    table = system.terms.get("angles")
    if table is None or len(table) == 0:
        return {}
    theta = table.parameters_per_interaction()["theta0"].tolist()
    out: dict[tuple[int, int, int], float] = {}
    for (i, j, k), t in zip(table.atoms.tolist(), theta, strict=True):
        out[(i, j, k)] = out[(k, j, i)] = float(t)
    return out


def coupling_inverse(
    pairs: Tensor,
    distances: Tensor,
    inv_mass: Tensor,
    angles: Mapping[tuple[int, int, int], float],
) -> tuple[Tensor, Tensor, Tensor]:
    """Sparse M⁻¹ as (rows, cols, values) int64, int64, float64 tensors.

    Args:
        pairs: (C, 2) constrained atoms.
        distances: (C,) Å.
        inv_mass: (N,) 1/amu.
        angles: equilibrium angles (see :func:`angle_table`); an angle closed by a
            third constraint comes from the three distances, a missing one is taken
            as tetrahedral (it only changes how fast the iteration converges).
    """
    n = int(pairs.shape[0])
    p = pairs.tolist()
    d = distances.tolist()
    inv = inv_mass.tolist()
    length = {(min(i, j), max(i, j)): dist for (i, j), dist in zip(p, d, strict=True)}
    by_atom: dict[int, list[int]] = {}
    for c, (i, j) in enumerate(p):
        by_atom.setdefault(i, []).append(c)
        by_atom.setdefault(j, []).append(c)
    entries: list[tuple[int, int, float]] = []
    for k, members in by_atom.items():
        for c in members:
            for e in members:
                if c != e:
                    i, j = p[c][0] + p[c][1] - k, p[e][0] + p[e][1] - k
                    cos = math.cos(_angle(k, i, j, d[c], d[e], length, angles))
                    scale = inv[k] / (inv[p[c][0]] + inv[p[c][1]])
                    entries.append((c, e, scale * d[e] / d[c] * cos))
    rows, cols, vals = _invert_by_cluster(n, entries)
    return (
        torch.as_tensor(rows, dtype=torch.int64),
        torch.as_tensor(cols, dtype=torch.int64),
        torch.as_tensor(vals, dtype=torch.float64),
    )


def _angle(
    k: int,
    i: int,
    j: int,
    dik: float,
    djk: float,
    length: Mapping[tuple[int, int], float],
    angles: Mapping[tuple[int, int, int], float],
) -> float:
    """Angle i-k-j: from a constrained i-j distance, the parameters, or tetrahedral."""
    dij = length.get((min(i, j), max(i, j)))
    if dij is not None:
        cos = (dik * dik + djk * djk - dij * dij) / (2.0 * dik * djk)
        return math.acos(max(-1.0, min(1.0, cos)))
    return angles.get((i, k, j), _TETRAHEDRAL)


def _invert_by_cluster(n: int, entries: list[tuple[int, int, float]]) -> Triplets:
    """Invert M = I + off-diagonal ``entries`` one coupled cluster at a time."""
    edges = torch.tensor([(c, e) for c, e, _ in entries], dtype=torch.int64).reshape(
        -1, 2
    )
    cluster = connected_components(n, edges).numpy()
    sizes = np.bincount(cluster, minlength=1) if n else np.zeros(0, dtype=np.int64)
    lone = np.nonzero(sizes[cluster] == 1)[0] if n else np.zeros(0, dtype=np.int64)
    parts: list[Triplets] = [(lone, lone, np.ones(len(lone)))]
    by_cluster: dict[int, list[tuple[int, int, float]]] = {}
    for c, e, v in entries:
        by_cluster.setdefault(int(cluster[c]), []).append((c, e, v))
    order = np.argsort(cluster, kind="stable")
    starts = np.concatenate([[0], np.cumsum(sizes)])
    for label, items in by_cluster.items():
        members = order[starts[label] : starts[label + 1]]
        local = {int(c): i for i, c in enumerate(members)}
        local_items = [(local[c], local[e], v) for c, e, v in items]
        invert = _sparse_inverse if len(members) > DENSE_LIMIT else _dense_inverse
        rows, cols, vals = invert(len(members), local_items)
        parts.append((members[rows], members[cols], vals))
    return (
        np.concatenate([x[0] for x in parts]),
        np.concatenate([x[1] for x in parts]),
        np.concatenate([x[2] for x in parts]),
    )


def _dense_inverse(size: int, items: list[tuple[int, int, float]]) -> Triplets:
    """Exact inverse of I + ``items``, small elements dropped."""
    m = np.eye(size)
    for c, e, v in items:
        m[c, e] += v
    inverse = np.linalg.inv(m)
    keep = np.abs(inverse) >= ELEMENT_CUTOFF
    np.fill_diagonal(keep, True)
    rows, cols = np.nonzero(keep)
    return rows, cols, inverse[rows, cols]


def _sparse_inverse(size: int, items: list[tuple[int, int, float]]) -> Triplets:
    """(I + B)⁻¹ ≈ I − B + B² − B³ for clusters too large for a dense inverse; the
    iteration corrects what the truncation misses."""
    from scipy import sparse

    r = np.array([c for c, _, _ in items])
    c = np.array([e for _, e, _ in items])
    v = np.array([x for _, _, x in items])
    b = sparse.csr_matrix((v, (r, c)), shape=(size, size))
    b2 = b @ b
    approx = (sparse.identity(size, format="csr") - b + b2 - b2 @ b).tocoo()
    keep = (np.abs(approx.data) >= ELEMENT_CUTOFF) | (approx.row == approx.col)
    return approx.row[keep], approx.col[keep], approx.data[keep]
