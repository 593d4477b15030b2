"""Native (C++) energies and analytic forces of the common bonded terms, CPU only.

Bonds, Urey-Bradley, angles, periodic torsions and impropers, and the 1-4 pairs run in
the extension of :mod:`torchmd_plugins.nonbonded.native` (``csrc/bonded.cpp``, float64
arithmetic, replicas in parallel); :class:`~torchmd_plugins.amber.bonded.AmberBonded`
uses it for plain MD (no autograd graph) and computes the other terms (harmonic
impropers, CMAP) with PyTorch. Same formulas as :mod:`~torchmd_plugins.amber.kernels`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from torchmd_core.units import COULOMB_KCAL_MOL_A
from torchmd_plugins.nonbonded.native import load_native

__all__ = ["NATIVE_TERMS", "NativeBonded", "native_bonded_energies_and_forces"]

#: Energy terms the native kernel computes.
NATIVE_TERMS = frozenset(
    ("bonds", "urey_bradley", "angles", "torsions", "impropers", "lj14", "coulomb14")
)


@dataclass(frozen=True, eq=False)
class NativeBonded:
    """Kernel inputs: int64 atom indices and float64 parameter rows (CPU, contiguous).

    The kernel's harmonic terms are ½k(x − x0)², so ``*_prm`` hold 2k.

    Attributes:
        bond_idx: (nb, 2); bond_prm: (nb, 2) [2k, r0] (bonds and Urey-Bradley).
        angle_idx: (na, 3); angle_prm: (na, 2) [2k, θ0].
        torsion_idx: (nt, 4); torsion_prm: (nt, 5) [n, phase, k, cos phase, sin phase]
            (torsions, periodic impropers).
        pair_idx: (np, 2); pair_prm: (np, 3) [C s qᵢqⱼ, c6, c12] (1-4 pairs).
    """

    bond_idx: Tensor
    bond_prm: Tensor
    angle_idx: Tensor
    angle_prm: Tensor
    torsion_idx: Tensor
    torsion_prm: Tensor
    pair_idx: Tensor
    pair_prm: Tensor

    @staticmethod
    def gather(
        harmonic_pairs: list[tuple[Tensor, Tensor, Tensor]],
        angles: tuple[Tensor, Tensor, Tensor] | None,
        torsions: list[tuple[Tensor, Tensor, Tensor, Tensor]],
        pairs14: tuple[Tensor, Tensor, Tensor, Tensor] | None,
    ) -> NativeBonded:
        """From per-interaction parameters (gathered from the per-type tables).

        Args:
            harmonic_pairs: (atoms (n, 2), k, r0) of bonds and Urey-Bradley terms.
            angles: (atoms (n, 3), k, θ0), or None.
            torsions: (atoms (n, 4), k, phase, periodicity) of torsions and impropers.
            pairs14: (atoms (n, 2), C s qᵢqⱼ, c6, c12), or None.
        """
        f64 = torch.float64

        def rows(*columns: Tensor) -> Tensor:
            return torch.stack(
                [c.detach().to("cpu", f64) for c in columns], 1
            ).contiguous()

        def idx(parts: list[Tensor], width: int) -> Tensor:
            if not parts:
                return torch.zeros(0, width, dtype=torch.int64)
            return torch.cat([p.to("cpu", torch.int64) for p in parts]).contiguous()

        def prm(parts: list[Tensor], width: int) -> Tensor:
            return torch.cat(parts) if parts else torch.zeros(0, width, dtype=f64)

        bond_prm = [rows(2.0 * k, r0) for _, k, r0 in harmonic_pairs]
        torsion_prm = [
            rows(n, phase, k, phase.double().cos(), phase.double().sin())
            for _, k, phase, n in torsions
        ]
        return NativeBonded(
            bond_idx=idx([a for a, _, _ in harmonic_pairs], 2),
            bond_prm=prm(bond_prm, 2),
            angle_idx=idx([] if angles is None else [angles[0]], 3),
            angle_prm=prm(
                [] if angles is None else [rows(2.0 * angles[1], angles[2])], 2
            ),
            torsion_idx=idx([a for a, _, _, _ in torsions], 4),
            torsion_prm=prm(torsion_prm, 5),
            pair_idx=idx([] if pairs14 is None else [pairs14[0]], 2),
            pair_prm=prm([] if pairs14 is None else [rows(*pairs14[1:])], 3),
        )


def native_bonded_energies_and_forces(
    positions: Tensor, box: Tensor | None, p: NativeBonded
) -> tuple[Tensor, Tensor]:
    """(R,) float64 energies and (R, N, 3) forces (dtype of positions); no autograd."""
    ext = load_native()
    assert ext is not None
    energy, forces = ext.bonded_forces(
        positions.detach().contiguous(),
        torch.empty(0) if box is None else box.detach().contiguous(),
        p.bond_idx,
        p.bond_prm,
        p.angle_idx,
        p.angle_prm,
        p.torsion_idx,
        p.torsion_prm,
        p.pair_idx,
        p.pair_prm,
    )
    return energy, forces


def coulomb14_products(scale: Tensor, charges: Tensor, atoms: Tensor) -> Tensor:
    """(n,) C s qᵢqⱼ of 1-4 pairs, kcal/mol·Å."""
    return COULOMB_KCAL_MOL_A * scale * charges[atoms[:, 0]] * charges[atoms[:, 1]]
