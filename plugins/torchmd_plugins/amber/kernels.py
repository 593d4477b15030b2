"""Pure energy kernels of the bonded AMBER/CHARMM terms.

Every function takes positions ``(R, N, 3)`` in Å, the interaction atom indices, the
parameters of each interaction (already gathered from the per-type tables) and an
optional box ``(R, 3, 3)``; it returns ``(R,)`` energies in kcal/mol. With a box, every
bond vector is the minimum image, so molecules split across the periodic boundary
are handled. All functions are differentiable in positions and parameters and work on
any device and floating dtype.

The functional forms are those of OpenMM (and AMBER/CHARMM):

========================= ======================================================
harmonic bond / UB        k (r − r0)²
harmonic angle            k (θ − θ0)²
periodic torsion          k (1 + cos(n φ − phase))
harmonic improper         k (ψ − ψ0)², ψ − ψ0 wrapped to (−π, π]
1-4 Lennard-Jones         4 ε ((σ/r)¹² − (σ/r)⁶)
1-4 Coulomb               C s q_i q_j / r, C = 332.06 kcal/mol·Å/e²
========================= ======================================================

Note that AMBER and CHARMM write k for k(r − r0)², OpenMM for ½k(r − r0)².
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from torchmd_core.geometry import angles, dihedral_angles, distances, minimum_image

__all__ = [
    "coulomb14_energy",
    "harmonic_angle_energy",
    "harmonic_bond_energy",
    "harmonic_improper_energy",
    "lj14_energy",
    "pair_distances",
    "periodic_torsion_energy",
    "wrap_angle",
]


def harmonic_bond_energy(
    positions: Tensor, pairs: Tensor, k: Tensor, r0: Tensor, box: Tensor | None = None
) -> Tensor:
    """Σ k (r − r0)² over atom pairs (bonds, or Urey-Bradley 1-3 pairs).

    Args:
        positions: (R, N, 3), Å.
        pairs: (n, 2) atom indices.
        k: (n,) kcal/mol/Å².
        r0: (n,) Å.
        box: (R, 3, 3) or None.

    Returns:
        (R,) kcal/mol.
    """
    r = distances(positions, pairs, box)  # (R, n)
    return (k * (r - r0).square()).sum(dim=-1)


def harmonic_angle_energy(
    positions: Tensor,
    triples: Tensor,
    k: Tensor,
    theta0: Tensor,
    box: Tensor | None = None,
) -> Tensor:
    """Σ k (θ − θ0)² over angles i-j-k.

    Args:
        positions: (R, N, 3), Å.
        triples: (n, 3) atom indices, the angle at the middle atom.
        k: (n,) kcal/mol/rad².
        theta0: (n,) rad.
        box: (R, 3, 3) or None.

    Returns:
        (R,) kcal/mol.
    """
    theta = angles(positions, triples, box)  # (R, n)
    return (k * (theta - theta0).square()).sum(dim=-1)


def periodic_torsion_energy(
    positions: Tensor,
    quads: Tensor,
    k: Tensor,
    phase: Tensor,
    periodicity: Tensor,
    box: Tensor | None = None,
) -> Tensor:
    """Σ k (1 + cos(n φ − phase)) over proper torsions or periodic impropers.

    Args:
        positions: (R, N, 3), Å.
        quads: (n, 4) atom indices; φ is the IUPAC dihedral (0 = cis), as OpenMM's.
        k: (n,) kcal/mol.
        phase: (n,) rad.
        periodicity: (n,) integer-valued multiplicity n.
        box: (R, 3, 3) or None.

    Returns:
        (R,) kcal/mol.
    """
    phi = dihedral_angles(positions, quads, box)  # (R, n)
    return (k * (1.0 + torch.cos(periodicity * phi - phase))).sum(dim=-1)


def wrap_angle(x: Tensor) -> Tensor:
    """Angles mapped to [−π, π) (differentiable: a shift by a multiple of 2π)."""
    return x - 2.0 * math.pi * torch.floor((x + math.pi) / (2.0 * math.pi))


def harmonic_improper_energy(
    positions: Tensor, quads: Tensor, k: Tensor, psi0: Tensor, box: Tensor | None = None
) -> Tensor:
    """Σ k (ψ − ψ0)², the difference taken on the circle (CHARMM impropers).

    OpenMM writes this as k·min(|ψ − ψ0|, 2π − |ψ − ψ0|)²; the two agree for any ψ0.

    Args:
        positions: (R, N, 3), Å.
        quads: (n, 4) atom indices (CHARMM order: central atom first).
        k: (n,) kcal/mol/rad².
        psi0: (n,) rad.
        box: (R, 3, 3) or None.

    Returns:
        (R,) kcal/mol.
    """
    psi = dihedral_angles(positions, quads, box)  # (R, n)
    return (k * wrap_angle(psi - psi0).square()).sum(dim=-1)


def pair_distances(
    positions: Tensor, pairs: Tensor, box: Tensor | None = None
) -> Tensor:
    """(R, n) distances of atom pairs, Å (minimum image with a box)."""
    d = positions[:, pairs[:, 1]] - positions[:, pairs[:, 0]]
    d = minimum_image(d, None if box is None else box[:, None])
    r: Tensor = torch.linalg.vector_norm(d, dim=-1)
    return r


def lj14_energy(r: Tensor, sigma: Tensor, epsilon: Tensor) -> Tensor:
    """Σ 4 ε ((σ/r)¹² − (σ/r)⁶) over 1-4 pairs.

    Args:
        r: (R, n) pair distances, Å.
        sigma: (n,) Å.
        epsilon: (n,) kcal/mol.

    Returns:
        (R,) kcal/mol.
    """
    s6 = (sigma / r) ** 6
    return (4.0 * epsilon * (s6 * s6 - s6)).sum(dim=-1)


def coulomb14_energy(
    r: Tensor, charge_products: Tensor, coulomb_constant: float
) -> Tensor:
    """Σ C q_i q_j s / r over 1-4 pairs (plain Coulomb: no cutoff, no reaction field).

    Args:
        r: (R, n) pair distances, Å.
        charge_products: (n,) scaled charge products s q_i q_j, e².
        coulomb_constant: C in kcal/mol·Å/e².

    Returns:
        (R,) kcal/mol.
    """
    return (coulomb_constant * charge_products / r).sum(dim=-1)
