"""Cluster-pair lists and the native nonbonded kernel (CPU fast path).

The list groups atoms into spatial clusters of 8 and stores pairs of clusters (with a
periodic image and a 64-bit mask of the atom pairs to evaluate), after GROMACS's
cluster-pair scheme (Páll & Hess, Comput. Phys. Commun. 184, 2641 (2013)); see
``csrc/cluster_nonbonded.cpp``. Excluded pairs are removed from the masks at build
time. Every non-excluded pair closer than the list radius at build time is in a tile,
so the list stays valid while no atom moved more than (radius − cutoff)/2.

:class:`ClusterList` keeps one list per potential and decides when to rebuild: it
follows the shared :class:`~torchmd_core.neighbors.NeighborList` (same build positions,
so a run continued from a checkpoint rebuilds the very same list), and on its own (a
potential evaluated outside a :class:`~torchmd_core.PotentialSum`) rebuilds when an
atom moved more than half the skin or the box changed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from torchmd_core import State
from torchmd_plugins.nonbonded.native import load_native

__all__ = [
    "ClusterList",
    "ClusterPairs",
    "build_cluster_pairs",
    "cluster_energies_and_forces",
]

#: Verlet skin (Å) of a list built without a shared neighbour list.
DEFAULT_SKIN = 1.0


@dataclass(frozen=True, eq=False)
class ClusterPairs:
    """A cluster-pair list for R replicas of N atoms (CPU tensors).

    Attributes:
        slot_atom: (C·8,) int32 flattened-replica atom of each slot, −1 = padding.
        slot_image: (C·8, 3) int32 lattice image subtracted from the atom's position.
        cluster_replica: (C,) int32.
        pairs: (P, 4) int32 (i-cluster, j-cluster, packed image, unused).
        masks: (P,) int64; bit a·8 + b set: evaluate slot pair (a, b).
        reference: (R, N, 3) positions it was built at (float64).
        reference_box: (R, 3, 3) box it was built for (float64), or None.
        radius: list radius, Å (inf: all pairs).
    """

    slot_atom: Tensor
    slot_image: Tensor
    cluster_replica: Tensor
    pairs: Tensor
    masks: Tensor
    reference: Tensor
    reference_box: Tensor | None
    radius: float


def exclusion_csr(exclusions: Tensor, n_atoms: int) -> tuple[Tensor, Tensor]:
    """Symmetric CSR (row pointers (N+1,), partners) of (E, 2) excluded pairs."""
    ex = exclusions.to("cpu", torch.int64).reshape(-1, 2)
    both = torch.cat([ex, ex.flip(1)])
    both = both[torch.argsort(both[:, 0] * n_atoms + both[:, 1])]
    ptr = torch.zeros(n_atoms + 1, dtype=torch.int64)
    ptr[1:] = torch.cumsum(torch.bincount(both[:, 0], minlength=n_atoms), 0)
    return ptr, both[:, 1].contiguous()


def build_cluster_pairs(
    positions: Tensor,
    box: Tensor | None,
    radius: float | None,
    exclusions: tuple[Tensor, Tensor],
) -> ClusterPairs:
    """Build the cluster-pair list (C++, O(N)).

    Args:
        positions: (R, N, 3), Å (CPU).
        box: (R, 3, 3) in reduced form, or None (non-periodic).
        radius: list radius, Å; None = all pairs (non-periodic only).
        exclusions: CSR from :func:`exclusion_csr`.
    """
    ext = load_native()
    assert ext is not None
    pos = positions.detach().to("cpu", torch.float64).contiguous()
    bx = None if box is None else box.detach().to("cpu", torch.float64).contiguous()
    out = ext.build_cluster_pairs(
        pos,
        torch.empty(0) if bx is None else bx,
        -1.0 if radius is None else float(radius),
        exclusions[0],
        exclusions[1],
    )
    return ClusterPairs(
        slot_atom=out[0],
        slot_image=out[1],
        cluster_replica=out[2],
        pairs=out[3],
        masks=out[4],
        reference=pos,
        reference_box=bx,
        radius=float("inf") if radius is None else float(radius),
    )


class ClusterList:
    """The cluster-pair list of one potential, rebuilt when needed.

    Args:
        cutoff: interaction cutoff, Å, or None (all pairs, non-periodic).
        exclusions: (E, 2) pairs never evaluated.
        n_atoms: N.
    """

    def __init__(self, cutoff: float | None, exclusions: Tensor, n_atoms: int) -> None:
        self.cutoff = cutoff
        self.csr = exclusion_csr(exclusions, n_atoms)
        self.current: ClusterPairs | None = None
        self._source: object = None  # the shared list's build positions it follows
        self.n_builds = 0

    def update(self, state: State) -> ClusterPairs:
        """A list valid for the state's positions and box."""
        pos, box = state.positions.detach(), state.box
        box = None if box is None or self.cutoff is None else box.detach()
        current = self.current
        if current is None or current.reference.shape != pos.shape:
            return self._build(state, pos, box)
        if self.cutoff is None:
            return current  # all pairs: the list depends on R and N only
        shared = state.neighbors
        ref = None if shared is None else shared.reference
        if ref is not None and ref is not self._source:
            return self._build(state, pos, box)  # the shared list was rebuilt
        ref_box = current.reference_box
        if (box is None) != (ref_box is None) or (
            box is not None
            and ref_box is not None
            and not torch.equal(box.to(torch.float64), ref_box)
        ):
            return self._build(state, pos, box)
        ext = load_native()
        assert ext is not None
        cutoff: float = self.cutoff
        limit = 0.5 * (current.radius - cutoff)
        moved2 = ext.max_displacement2(pos, current.reference)  # no minimum image:
        if bool((moved2 > limit * limit).any()):  # a wrapped atom needs a new image too
            return self._build(state, pos, box, follow=False)
        return current

    def _build(
        self, state: State, pos: Tensor, box: Tensor | None, follow: bool = True
    ) -> ClusterPairs:
        shared = state.neighbors if follow and self.cutoff is not None else None
        source = None if shared is None else shared.reference
        if source is not None and shared is not None and source.shape == pos.shape:
            # Build where the shared list was built: the same list after a restart.
            ref_box = shared.reference_box
            radius = max(shared.radius, self.cutoff or 0.0)
            self.current = build_cluster_pairs(source, ref_box, radius, self.csr)
            self._source = source
        else:
            own = None if self.cutoff is None else self.cutoff + DEFAULT_SKIN
            self.current = build_cluster_pairs(pos, box, own, self.csr)
            self._source = None
        self.n_builds += 1
        return self.current


def cluster_energies_and_forces(
    positions: Tensor,
    box: Tensor | None,
    pairs: ClusterPairs,
    charges: Tensor,
    lj_types: Tensor,
    c12: Tensor,
    c6: Tensor,
    cutoff: float | None,
    switch_distance: float | None,
    rf_constants: tuple[float, float],
    coulomb_constant: float,
    with_forces: bool,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """LJ (R,), electrostatic (R,) energies (float64) and forces (R, N, 3) or None.

    Pair arithmetic in float32 for float32 positions (energies summed in float64), in
    float64 for float64 positions. No autograd graph.
    """
    ext = load_native()
    assert ext is not None
    energy, forces = ext.cluster_nonbonded(
        positions.detach().contiguous(),
        torch.empty(0) if box is None else box.detach(),
        charges,
        lj_types,
        c6,
        c12,
        pairs.slot_atom,
        pairs.slot_image,
        pairs.cluster_replica,
        pairs.pairs,
        pairs.masks,
        -1.0 if cutoff is None else float(cutoff),
        -1.0 if switch_distance is None else float(switch_distance),
        rf_constants[0],
        rf_constants[1],
        coulomb_constant,
        with_forces,
    )
    return energy[:, 0], energy[:, 1], forces if with_forces else None
