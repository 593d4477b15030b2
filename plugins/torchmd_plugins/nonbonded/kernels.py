"""Pure kernels of the nonbonded potential, defined exactly as OpenMM's NonbondedForce.

Everything here is a plain differentiable function of tensors (no module state), so
tests call them directly and a faster implementation (cluster-pair tiles, custom
kernels) can replace the pair sums one for one: :func:`neighbor_list_energies` /
:func:`neighbor_list_forces` (a flat pair list of all replicas) and
:func:`all_pairs_block_energies` / :func:`all_pairs_block_forces` (no cutoff). Same
inputs (positions, box, pair indices, per-atom charges and LJ types, (T, T) c12/c6
tables, :class:`PairSettings`), same outputs: (R,) energies per term, (R, N, 3) forces.

Units: Å, kcal/mol, e. For a pair at distance r with charges qᵢ qⱼ and LJ types a, b:

    E_lj      = S(r) · (c12_ab / r¹² − c6_ab / r⁶)                      r < r_c
    E_coulomb = C qᵢ qⱼ / r                                             no cutoff
    E_coulomb = C qᵢ qⱼ (1/r + k_rf r² − c_rf)                          r < r_c
    k_rf = (ε_rf − 1) / ((2 ε_rf + 1) r_c³),  c_rf = 3 ε_rf / ((2 ε_rf + 1) r_c)

with C = 1/(4πε0) (:data:`~torchmd_core.units.COULOMB_KCAL_MOL_A`) and S(r) OpenMM's
switching function (1 below the switching distance r_s, then 1 − 10t³ + 15t⁴ − 6t⁵ with
t = (r − r_s)/(r_c − r_s)). Both terms are zero beyond the cutoff. Excluded pairs
contribute nothing at all: OpenMM applies no reaction-field term to them.

References: Tironi, Sperb, Smith, van Gunsteren, J. Chem. Phys. 102, 5451 (1995)
(reaction field); Allen & Tildesley, Computer Simulation of Liquids, §2.8 (long-range
correction); OpenMM user guide, "NonbondedForce".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from torch import Tensor

from torchmd_core.geometry import minimum_image
from torchmd_core.units import COULOMB_KCAL_MOL_A

__all__ = [
    "PairSettings",
    "all_pairs_block_energies",
    "all_pairs_block_forces",
    "dispersion_coefficient",
    "lennard_jones",
    "lj_tables",
    "neighbor_list_energies",
    "neighbor_list_forces",
    "pair_energies",
    "pair_energies_and_gradients",
    "reaction_field_constants",
    "switch_integrals",
    "switching_function",
]


@dataclass(frozen=True)
class PairSettings:
    """How a pair interacts (what OpenMM calls the nonbonded method).

    Attributes:
        cutoff: Å, or None for no cutoff (plain Coulomb, all pairs).
        switch_distance: Å, where the LJ switching function starts, or None.
        reaction_field_dielectric: ε_rf of the reaction field (used with a cutoff).
        electrostatics: whether to compute the Coulomb / reaction-field term at all.
    """

    cutoff: float | None = None
    switch_distance: float | None = None
    reaction_field_dielectric: float = 78.3
    electrostatics: bool = True


# ---------------------------------------------------------------- pair functions


def lj_tables(
    sigma: Tensor,
    epsilon: Tensor,
    pair_mask: Tensor | None = None,
    pair_c12: Tensor | None = None,
    pair_c6: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """(c12, c6) tables of every pair of LJ types: Lorentz-Berthelot, then overrides.

    σ_ab = (σ_a + σ_b)/2, ε_ab = √(ε_a ε_b), c12 = 4ε σ¹², c6 = 4ε σ⁶; where
    ``pair_mask`` is true ``pair_c12``/``pair_c6`` replace them (NBFIX, AMBER pair
    tables).

    Args:
        sigma: (T,) Å.
        epsilon: (T,) kcal/mol.
        pair_mask: (T, T) bool, or None.
        pair_c12: (T, T) kcal/mol·Å¹².
        pair_c6: (T, T) kcal/mol·Å⁶.

    Returns:
        c12 (T, T) kcal/mol·Å¹², c6 (T, T) kcal/mol·Å⁶.
    """
    s6 = (0.5 * (sigma[:, None] + sigma[None, :])) ** 6
    c6 = 4.0 * _sqrt_or_zero(epsilon[:, None] * epsilon[None, :]) * s6
    c12 = c6 * s6
    if pair_mask is not None:
        assert pair_c12 is not None and pair_c6 is not None
        c12 = torch.where(pair_mask, pair_c12, c12)
        c6 = torch.where(pair_mask, pair_c6, c6)
    return c12, c6


def _sqrt_or_zero(x: Tensor) -> Tensor:
    """√x for x > 0 and 0 for x ≤ 0, with a finite gradient (0) at 0.

    √(ε_a ε_b) has an infinite derivative where ε_a = 0 (water hydrogens): with this,
    such a type gets a zero gradient instead, so a trained ε stays finite.
    """
    positive = x > 0
    return torch.where(positive, torch.sqrt(torch.where(positive, x, 1.0)), 0.0)


def lennard_jones(r2: Tensor, c12: Tensor, c6: Tensor) -> Tensor:
    """c12/r¹² − c6/r⁶ from squared distances r2 (Å²); any matching shapes."""
    inv_r6 = (1.0 / r2) ** 3
    return (c12 * inv_r6 - c6) * inv_r6


def switching_function(r: Tensor, switch_distance: float, cutoff: float) -> Tensor:
    """OpenMM's LJ switch S(r): 1 up to r_s, 1 − 10t³ + 15t⁴ − 6t⁵ to r_c, 0 beyond.

    S, S' and S'' are continuous at both ends.
    """
    t = ((r - switch_distance) / (cutoff - switch_distance)).clamp(0.0, 1.0)
    return 1.0 + t * t * t * (-10.0 + t * (15.0 - 6.0 * t))


def reaction_field_constants(cutoff: float, dielectric: float) -> tuple[float, float]:
    """(k_rf Å⁻³, c_rf Å⁻¹) of the reaction field, as OpenMM (ε_rf = inf: conductor)."""
    if math.isinf(dielectric):
        return 0.5 / cutoff**3, 1.5 / cutoff
    k_rf = (dielectric - 1.0) / ((2.0 * dielectric + 1.0) * cutoff**3)
    c_rf = 3.0 * dielectric / ((2.0 * dielectric + 1.0) * cutoff)
    return k_rf, c_rf


def pair_energies(
    r2: Tensor, qq: Tensor | None, c12: Tensor, c6: Tensor, settings: PairSettings
) -> tuple[Tensor, Tensor | None]:
    """LJ and electrostatic energy of pairs (zero beyond the cutoff), kcal/mol.

    Args:
        r2: squared distances, Å², any shape, all > 0.
        qq: products of the two charges, e², same shape (None without electrostatics).
        c12, c6: the pairs' LJ coefficients, same shape.
        settings: cutoff, switching and reaction field.

    Returns:
        (E_lj, E_coulomb) of each pair; E_coulomb is None without electrostatics.
    """
    e_lj = lennard_jones(r2, c12, c6)
    e_coul = None
    cutoff = settings.cutoff
    r = (
        torch.sqrt(r2)
        if (settings.electrostatics or settings.switch_distance)
        else None
    )
    if cutoff is not None and settings.switch_distance is not None:
        assert r is not None
        e_lj = e_lj * switching_function(r, settings.switch_distance, cutoff)
    if settings.electrostatics:
        assert qq is not None and r is not None
        if cutoff is None:
            e_coul = COULOMB_KCAL_MOL_A * qq / r
        else:
            k_rf, c_rf = reaction_field_constants(
                cutoff, settings.reaction_field_dielectric
            )
            e_coul = COULOMB_KCAL_MOL_A * qq * (1.0 / r + k_rf * r2 - c_rf)
    if cutoff is not None:
        inside = r2 < cutoff * cutoff
        e_lj = torch.where(inside, e_lj, 0.0)
        if e_coul is not None:
            e_coul = torch.where(inside, e_coul, 0.0)
    return e_lj, e_coul


def pair_energies_and_gradients(
    r2: Tensor, qq: Tensor | None, c12: Tensor, c6: Tensor, settings: PairSettings
) -> tuple[Tensor, Tensor | None, Tensor]:
    """:func:`pair_energies` plus g = (1/r) dE/dr of each pair (both terms), analytic.

    The force on the second atom of a pair is −g·d and on the first +g·d, where d is the
    displacement from the first to the second. Zero beyond the cutoff.

    Returns:
        (E_lj, E_coulomb or None, g in kcal/mol/Å²), each shaped like ``r2``.
    """
    inv_r2 = 1.0 / r2
    inv_r6 = inv_r2 * inv_r2 * inv_r2
    e_lj = (c12 * inv_r6 - c6) * inv_r6
    g = (6.0 * c6 - 12.0 * c12 * inv_r6) * inv_r6 * inv_r2
    cutoff = settings.cutoff
    r = torch.sqrt(r2)
    if cutoff is not None and settings.switch_distance is not None:
        width = cutoff - settings.switch_distance
        t = ((r - settings.switch_distance) / width).clamp(0.0, 1.0)
        switch = 1.0 + t * t * t * (-10.0 + t * (15.0 - 6.0 * t))
        d_switch = t * t * (-30.0 + t * (60.0 - 30.0 * t)) / width  # dS/dr
        g = g * switch + e_lj * d_switch / r
        e_lj = e_lj * switch
    e_coul = None
    if settings.electrostatics:
        assert qq is not None
        inv_r = 1.0 / r
        if cutoff is None:
            e_coul = COULOMB_KCAL_MOL_A * qq * inv_r
            g = g - e_coul * inv_r2
        else:
            k_rf, c_rf = reaction_field_constants(
                cutoff, settings.reaction_field_dielectric
            )
            prefactor = COULOMB_KCAL_MOL_A * qq
            e_coul = prefactor * (inv_r + k_rf * r2 - c_rf)
            g = g + prefactor * (2.0 * k_rf - inv_r * inv_r2)
    if cutoff is not None:
        inside = r2 < cutoff * cutoff
        e_lj = torch.where(inside, e_lj, 0.0)
        g = torch.where(inside, g, 0.0)
        if e_coul is not None:
            e_coul = torch.where(inside, e_coul, 0.0)
    return e_lj, e_coul, g


def _type_pair_index(types_i: Tensor, types_j: Tensor, n_types: int) -> Tensor:
    return types_i * n_types + types_j


# ---------------------------------------------------------------- pair sums


def neighbor_list_energies(
    positions: Tensor,
    box: Tensor | None,
    pairs: Tensor,
    charges: Tensor | None,
    lj_types: Tensor,
    c12: Tensor,
    c6: Tensor,
    settings: PairSettings,
) -> tuple[Tensor, Tensor | None]:
    """Sum of :func:`pair_energies` over a flat pair list of all replicas.

    Args:
        positions: (R, N, 3), Å.
        box: (R, 3, 3) for the minimum image, or None.
        pairs: (2, P) int64 indices into the flattened (R·N) atoms, both of one replica
            (the format of :class:`~torchmd_core.neighbors.Neighbors`).
        charges: (N,) e, or None without electrostatics.
        lj_types: (N,) int64.
        c12, c6: (T, T) tables from :func:`lj_tables`.
        settings: cutoff, switching, reaction field.

    Returns:
        E_lj (R,), E_coulomb (R,) or None; kcal/mol.
    """
    n_rep = positions.shape[0]
    _, r2, replica, qq, a, b = _listed_pairs(
        positions, box, pairs, charges, lj_types, c12, c6
    )
    e_lj, e_coul = pair_energies(r2, qq, a, b, settings)
    return _per_replica(e_lj, replica, n_rep), (
        None if e_coul is None else _per_replica(e_coul, replica, n_rep)
    )


def neighbor_list_forces(
    positions: Tensor,
    box: Tensor | None,
    pairs: Tensor,
    charges: Tensor | None,
    lj_types: Tensor,
    c12: Tensor,
    c6: Tensor,
    settings: PairSettings,
) -> tuple[Tensor, Tensor | None, Tensor]:
    """:func:`neighbor_list_energies` plus analytic forces (R, N, 3), kcal/mol/Å.

    For plain MD: no autograd graph is built (use :func:`neighbor_list_energies` under
    autograd to differentiate through forces).
    """
    n_rep = positions.shape[0]
    d, r2, replica, qq, a, b = _listed_pairs(
        positions, box, pairs, charges, lj_types, c12, c6
    )
    e_lj, e_coul, g = pair_energies_and_gradients(r2, qq, a, b, settings)
    f = g[:, None] * d  # dE/dx of the second atom of each pair
    forces = torch.zeros_like(positions).reshape(-1, 3)
    forces.index_add_(0, pairs[0], f).index_add_(0, pairs[1], -f)
    coul = None if e_coul is None else _per_replica(e_coul, replica, n_rep)
    return _per_replica(e_lj, replica, n_rep), coul, forces.reshape(positions.shape)


def _listed_pairs(
    positions: Tensor,
    box: Tensor | None,
    pairs: Tensor,
    charges: Tensor | None,
    lj_types: Tensor,
    c12: Tensor,
    c6: Tensor,
) -> tuple[Tensor, Tensor, Tensor, Tensor | None, Tensor, Tensor]:
    """Displacement (P, 3), r² (P,), replica (P,), qq, c12, c6 (P,) of listed pairs."""
    n_rep, n_atoms = positions.shape[0], positions.shape[1]
    flat = positions.reshape(-1, 3)
    d = flat[pairs[1]] - flat[pairs[0]]
    replica = pairs[0] // n_atoms
    if box is not None:
        d = minimum_image(d, box[0] if n_rep == 1 else box[replica])
    r2 = (d * d).sum(-1)
    ai, aj = pairs[0] % n_atoms, pairs[1] % n_atoms
    tt = _type_pair_index(lj_types[ai], lj_types[aj], c12.shape[0])
    qq = None if charges is None else charges[ai] * charges[aj]
    return d, r2, replica, qq, c12.reshape(-1)[tt], c6.reshape(-1)[tt]


def _per_replica(values: Tensor, replica: Tensor, n_rep: int) -> Tensor:
    if n_rep == 1:  # a pairwise sum is more accurate than index_add's running sum
        return values.sum().reshape(1)
    return values.new_zeros(n_rep).index_add(0, replica, values)


def all_pairs_block_energies(
    positions: Tensor,
    start: int,
    stop: int,
    charges: Tensor | None,
    lj_types: Tensor,
    c12: Tensor,
    c6: Tensor,
    excluded: Tensor,
    settings: PairSettings,
) -> tuple[Tensor, Tensor | None]:
    """Sum of :func:`pair_energies` over all pairs (i, j), start ≤ i < stop, i < j < N.

    Non-periodic; the dense (stop − start) × (N − start) block of pairs is evaluated at
    once (no pair list), the pairs with j ≤ i or ``excluded`` masked out.

    Args:
        positions: (R, N, 3), Å.
        start, stop: the block's rows (atoms i).
        charges: (N,) e, or None without electrostatics.
        lj_types: (N,) int64.
        c12, c6: (T, T).
        excluded: (stop − start, N − start) bool, true for excluded pairs (i, j).
        settings: normally with ``cutoff=None``.

    Returns:
        E_lj (R,), E_coulomb (R,) or None; kcal/mol.
    """
    _, r2, valid, qq, a, b = _block_pairs(
        positions, start, stop, charges, lj_types, c12, c6, excluded
    )
    e_lj, e_coul = pair_energies(r2, qq, a, b, settings)
    e_lj = torch.where(valid, e_lj, 0.0).sum((1, 2))
    if e_coul is not None:
        e_coul = torch.where(valid, e_coul, 0.0).sum((1, 2))
    return e_lj, e_coul


def all_pairs_block_forces(
    positions: Tensor,
    start: int,
    stop: int,
    charges: Tensor | None,
    lj_types: Tensor,
    c12: Tensor,
    c6: Tensor,
    excluded: Tensor,
    settings: PairSettings,
) -> tuple[Tensor, Tensor | None, Tensor]:
    """:func:`all_pairs_block_energies` plus analytic forces on atoms start..N−1.

    Returns:
        E_lj (R,), E_coulomb (R,) or None, forces (R, N − start, 3) kcal/mol/Å.
    """
    d, r2, valid, qq, a, b = _block_pairs(
        positions, start, stop, charges, lj_types, c12, c6, excluded
    )
    e_lj, e_coul, g = pair_energies_and_gradients(r2, qq, a, b, settings)
    f = (
        torch.where(valid, g, 0.0)[..., None] * d
    )  # (R, B, M, 3): dE/dx_j of pair (i, j)
    forces = -f.sum(1)
    forces[:, : stop - start] += f.sum(2)
    e_lj = torch.where(valid, e_lj, 0.0).sum((1, 2))
    if e_coul is not None:
        e_coul = torch.where(valid, e_coul, 0.0).sum((1, 2))
    return e_lj, e_coul, forces


def _block_pairs(
    positions: Tensor,
    start: int,
    stop: int,
    charges: Tensor | None,
    lj_types: Tensor,
    c12: Tensor,
    c6: Tensor,
    excluded: Tensor,
) -> tuple[Tensor, Tensor, Tensor, Tensor | None, Tensor, Tensor]:
    """Displacement (R, B, M, 3), safe r² (R, B, M), valid (B, M), qq/c12/c6 (B, M)."""
    n_atoms = positions.shape[1]
    device = positions.device
    d = positions[:, None, start:] - positions[:, start:stop, None]
    r2 = (d * d).sum(-1)
    rows = torch.arange(start, stop, device=device)
    cols = torch.arange(start, n_atoms, device=device)
    valid = (cols[None, :] > rows[:, None]) & ~excluded
    r2 = torch.where(valid, r2, 1.0)  # keep masked pairs (r = 0 on the diagonal) finite
    tt = _type_pair_index(
        lj_types[start:stop, None], lj_types[None, start:], c12.shape[0]
    )
    qq = None if charges is None else charges[start:stop, None] * charges[None, start:]
    return d, r2, valid, qq, c12.reshape(-1)[tt], c6.reshape(-1)[tt]


# ---------------------------------------------------------------- dispersion


@lru_cache(maxsize=64)
def switch_integrals(switch_distance: float, cutoff: float) -> tuple[float, float]:
    """(J12, J6) = ∫ (1 − S(r)) r⁻¹⁰ dr and ∫ (1 − S(r)) r⁻⁴ dr over [r_s, r_c].

    The LJ energy the switching function removes inside the cutoff is
    ∫ U(r)(1 − S(r)) r² dr = c12·J12 − c6·J6. The integrands are smooth on
    [r_s, r_c] (r_s > 0), so 128-point Gauss-Legendre quadrature is exact to rounding.
    Cached: it depends on the two distances only.
    """
    if not 0.0 < switch_distance < cutoff:
        raise ValueError(
            f"need 0 < switch_distance < cutoff, got {switch_distance}, {cutoff}"
        )
    nodes, weights = np.polynomial.legendre.leggauss(128)
    half = 0.5 * (cutoff - switch_distance)
    r = switch_distance + half * (nodes + 1.0)
    t = (r - switch_distance) / (cutoff - switch_distance)
    removed = t**3 * (10.0 + t * (-15.0 + 6.0 * t))  # 1 − S(r)
    j12 = float(half * np.sum(weights * removed / r**10))
    j6 = float(half * np.sum(weights * removed / r**4))
    return j12, j6


def dispersion_coefficient(
    c12: Tensor,
    c6: Tensor,
    type_counts: Tensor,
    cutoff: float,
    switch_distance: float | None = None,
) -> Tensor:
    """Coefficient K of the long-range dispersion correction E = K / V, kcal/mol·Å³.

    As OpenMM's NonbondedForce and CustomNonbondedForce: the LJ energy missing beyond
    the cutoff (and removed by switching) of a uniform fluid, averaged over the N(N+1)/2
    pairs of atom classes counted with self-pairs (class a with itself n_a(n_a+1)/2
    times, classes a ≠ b n_a n_b times):

        K = 2π N² · Σ_{a≤b} count_ab F_ab / (N(N+1)/2)
        F_ab = c12_ab (1/(9 r_c⁹) + J12) − c6_ab (1/(3 r_c³) + J6)

    with J12, J6 from :func:`switch_integrals` (zero without switching). Grouping atoms
    by LJ type gives the same K as OpenMM's grouping by identical parameters.

    Args:
        c12, c6: (T, T) tables.
        type_counts: (T,) number of atoms of each LJ type (float).
        cutoff: r_c, Å.
        switch_distance: r_s, Å, or None.

    Returns:
        () tensor, kcal/mol·Å³.
    """
    j12, j6 = (
        (0.0, 0.0)
        if switch_distance is None
        else switch_integrals(switch_distance, cutoff)
    )
    f = c12 * (1.0 / (9.0 * cutoff**9) + j12) - c6 * (1.0 / (3.0 * cutoff**3) + j6)
    n = type_counts.to(f.dtype)
    n_atoms = n.sum()
    pair_sum = n @ f @ n + (n * torch.diagonal(f)).sum()  # = 2 Σ_{a≤b} count_ab F_ab
    return 2.0 * math.pi * n_atoms * n_atoms * pair_sum / (n_atoms * (n_atoms + 1.0))
