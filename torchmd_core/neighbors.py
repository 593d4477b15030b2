"""One shared Verlet pair list with a skin, built from a cell list in O(N).

All potentials with a cutoff read the same :class:`Neighbors` (built at the largest
cutoff any of them declares, plus a skin). The list is rebuilt only when some atom
moved more than half the skin since the last build, or the box changed; between
rebuilds each potential computes distances from the current positions and applies its
own cutoff, so the energy is exact and differentiable (pair indices carry no gradient).

Pairs are stored for all replicas together, as indices into the flattened
``(R * N)`` atom array: ``pairs[:, k] = (r * N + i, r * N + j)`` with ``i < j``. Pairs
listed in ``exclusions`` never appear. No pair within the list radius is ever dropped:
the cell table is sized from the actual cell occupancy at every build.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from torchmd_core.geometry import min_box_width, minimum_image

__all__ = ["NeighborList", "Neighbors", "build_pairs"]

#: Upper bound on candidate pairs examined at once while building (memory ≈ 40 B each).
_CHUNK_CANDIDATES = 1 << 22


@dataclass(frozen=True, eq=False)
class Neighbors:
    """A half pair list for R replicas of N atoms.

    Attributes:
        pairs: (2, P) int64 indices into the flattened (R·N) atoms, first < second,
            both in the same replica.
        n_replicas: R.
        n_atoms: N.
        radius: every pair closer than this (Å) at build time is listed.
        reference: (R, N, 3) positions the list was built at (set by
            :class:`NeighborList`), or None. A potential keeping its own list of the
            same pairs (a native kernel's) rebuilds when this tensor changes.
        reference_box: (R, 3, 3) box of that build, or None.
        complete: False when ``pairs`` was left empty because no potential reads it
            this step (see :meth:`NeighborList.update`); use the list then only for
            ``reference``.
    """

    pairs: Tensor
    n_replicas: int
    n_atoms: int
    radius: float
    reference: Tensor | None = None
    reference_box: Tensor | None = None
    complete: bool = True

    @property
    def n_pairs(self) -> int:
        return int(self.pairs.shape[1])

    def replica(self) -> Tensor:
        """(P,) replica index of each pair."""
        return self.pairs[0] // self.n_atoms

    def atoms(self) -> tuple[Tensor, Tensor]:
        """(P,), (P,): per-replica atom indices i < j of each pair."""
        return self.pairs[0] % self.n_atoms, self.pairs[1] % self.n_atoms


class NeighborList:
    """A Verlet list with skin shared by every potential of a simulation.

    Args:
        cutoff: the largest interaction cutoff served, Å.
        skin: extra radius, Å; the list is rebuilt when an atom moved > skin/2.
        exclusions: (E, 2) atom pairs never listed (same for all replicas).
    """

    def __init__(
        self, cutoff: float, skin: float = 1.0, exclusions: Tensor | None = None
    ):
        if cutoff <= 0 or skin < 0:
            raise ValueError(f"need cutoff > 0 and skin >= 0, got {cutoff}, {skin}")
        self.cutoff = float(cutoff)
        self.skin = float(skin)
        self.exclusions = exclusions
        self.n_builds = 0
        self._neighbors: Neighbors | None = None
        self._ref_positions: Tensor | None = None
        self._ref_box: Tensor | None = None
        self._radius = self.cutoff + self.skin

    def reset(self) -> None:
        """Forget the current list; the next :meth:`update` rebuilds."""
        self._neighbors = None

    def state_dict(self) -> dict[str, Tensor | None]:
        """Where the current list was built. Pair order, hence float sums, depends on
        it, so checkpoints keep it and a resumed run rebuilds the very same list."""
        if self._neighbors is None or self._ref_positions is None:
            return {"positions": None, "box": None}
        box = None if self._ref_box is None else self._ref_box.cpu()
        return {"positions": self._ref_positions.cpu(), "box": box}

    def load_state_dict(
        self, state: dict[str, Tensor | None], device: torch.device | str = "cpu"
    ) -> None:
        """Rebuild the list at the positions :meth:`state_dict` recorded."""
        self.reset()
        positions, box = state.get("positions"), state.get("box")
        if positions is not None:  # the pairs are listed when first read
            box = None if box is None else box.to(device)
            self._build(positions.to(device), box, pairs=False)

    def snapshot(self) -> tuple[object, ...]:
        """The current list and where it was built (references, no copies), for
        :meth:`restore`. Recomputing a stretch of trajectory (gradient checkpointing)
        must make the same rebuild decisions as the first pass."""
        return (self._neighbors, self._ref_positions, self._ref_box, self._radius)

    def restore(self, snapshot: tuple[object, ...]) -> None:
        """Return to the list a :meth:`snapshot` recorded."""
        neighbors, positions, box, radius = snapshot
        self._neighbors = neighbors  # type: ignore[assignment]
        self._ref_positions = positions  # type: ignore[assignment]
        self._ref_box = box  # type: ignore[assignment]
        self._radius = radius  # type: ignore[assignment]

    def update(
        self, positions: Tensor, box: Tensor | None, pairs: bool = True
    ) -> Neighbors:
        """A list valid for ``positions`` (R, N, 3) and ``box`` (R, 3, 3) or None.

        With ``pairs=False`` (no potential reads the pairs this step) a due rebuild
        only records where it happened (``reference``) and leaves ``pairs`` empty
        (``complete=False``); a later call with ``pairs=True`` lists the pairs at that
        reference, which are valid as long as no rebuild is due.
        """
        if self._needs_rebuild(positions, box):
            self._build(positions, box, pairs=pairs)
        elif pairs and self._neighbors is not None and not self._neighbors.complete:
            assert self._ref_positions is not None
            self._build(self._ref_positions, self._ref_box)
        assert self._neighbors is not None
        return self._neighbors

    def _needs_rebuild(self, positions: Tensor, box: Tensor | None) -> bool:
        ref = self._ref_positions
        if self._neighbors is None or ref is None or ref.shape != positions.shape:
            return True
        if ref.device != positions.device or (box is None) != (self._ref_box is None):
            return True
        ref_box = self._ref_box
        if box is not None and (
            ref_box is None or not torch.equal(box.detach(), ref_box)
        ):
            return True
        moved = positions.detach() - ref
        limit = 0.5 * (self._radius - self.cutoff)
        limit2 = limit * limit
        far = bool((moved.square().sum(-1) > limit2).any())
        if far and box is not None:
            # Wrapping an atom back into the box is a jump of a lattice vector, not a
            # move. (The minimum image is never longer: only needed when far.)
            moved = minimum_image(moved, box.detach()[:, None])
            far = bool((moved.square().sum(-1) > limit2).any())
        return far

    def _build(self, positions: Tensor, box: Tensor | None, pairs: bool = True) -> None:
        pos = positions.detach()
        bx = None if box is None else box.detach()
        radius = self.cutoff + self.skin
        if bx is not None:
            # The minimum image needs the list radius below half the box width; shrink
            # the skin for tiny boxes rather than miss images.
            half = 0.5 * float(min_box_width(bx).min())
            if self.cutoff > half:
                raise ValueError(
                    f"cutoff {self.cutoff} Å exceeds half the smallest box width "
                    f"({half:.3f} Å); use a smaller cutoff or a larger box"
                )
            radius = min(radius, half)
        self._radius = radius
        n_rep, n_atoms = pos.shape[0], pos.shape[1]
        ref = pos if pos is self._ref_positions else pos.clone()
        ref_box = bx if bx is None or bx is self._ref_box else bx.clone()
        if pairs:
            built = build_pairs(pos, bx, radius, self.exclusions)
        else:
            empty = pos.new_zeros((2, 0), dtype=torch.int64)
            built = Neighbors(empty, n_rep, n_atoms, radius)
        self._neighbors = Neighbors(
            built.pairs, n_rep, n_atoms, radius, ref, ref_box, complete=pairs
        )
        self._ref_positions = ref
        self._ref_box = ref_box
        self.n_builds += 1


def build_pairs(
    positions: Tensor,
    box: Tensor | None,
    radius: float,
    exclusions: Tensor | None = None,
) -> Neighbors:
    """Every pair closer than ``radius``, minus exclusions.

    Distances are minimum-image when the system is periodic.

    Args:
        positions: (R, N, 3), Å.
        box: (R, 3, 3) or None.
        radius: Å; must be ≤ half the smallest box width when periodic.
        exclusions: (E, 2) pairs to leave out.

    Returns:
        The half list of all replicas.
    """
    n_rep, n_atoms = positions.shape[0], positions.shape[1]
    parts = []
    for r in range(n_rep):  # builds are rare; per-replica cells keep memory O(N)
        i, j = _cell_pairs(positions[r], None if box is None else box[r], radius)
        parts.append(torch.stack([i, j]) + r * n_atoms)
    pairs = (
        torch.cat(parts, dim=1)
        if parts
        else positions.new_zeros((2, 0), dtype=torch.int64)
    )
    if exclusions is not None and exclusions.numel() and pairs.numel():
        ex = exclusions.to(pairs.device)
        lo, hi = torch.minimum(ex[:, 0], ex[:, 1]), torch.maximum(ex[:, 0], ex[:, 1])
        ex_keys = torch.unique(lo * n_atoms + hi)
        keys = (pairs[0] % n_atoms) * n_atoms + pairs[1] % n_atoms
        pairs = pairs[:, ~torch.isin(keys, ex_keys)]
    return Neighbors(pairs=pairs, n_replicas=n_rep, n_atoms=n_atoms, radius=radius)


def _cell_pairs(
    pos: Tensor, box: Tensor | None, radius: float
) -> tuple[Tensor, Tensor]:
    """Half list (i < j) of one frame with a cell list; (P,), (P,)."""
    n = pos.shape[0]
    device = pos.device
    if n < 2:
        empty = torch.zeros(0, dtype=torch.int64, device=device)
        return empty, empty
    work = pos.double()
    if box is not None:
        b = box.double()
        frac = torch.linalg.solve(b.T, work.T).T
        frac = frac - torch.floor(frac)
        widths = _face_widths(b)
        n_cells = torch.clamp((widths / radius).floor().long(), min=1)
        cell3 = torch.minimum((frac * n_cells).long(), n_cells - 1)
    else:
        lo = work.min(dim=0).values
        extent = work.max(dim=0).values - lo
        n_cells = torch.clamp((extent / radius).floor().long() + 1, min=1)
        # Keep the cell grid O(N) even for sparse, spread-out systems.
        while int(n_cells.prod()) > 8 * n + 27:
            n_cells = torch.clamp(n_cells // 2, min=1)
        size = torch.clamp(extent / n_cells, min=radius)
        cell3 = torch.minimum(((work - lo) / size).long(), n_cells - 1)
    nx, ny, nz = (int(v) for v in n_cells)
    cell = (cell3[:, 0] * ny + cell3[:, 1]) * nz + cell3[:, 2]
    order = torch.argsort(cell)
    counts = torch.bincount(cell, minlength=nx * ny * nz)
    starts = torch.cumsum(counts, 0) - counts
    max_count = int(counts.max())
    # Dense (n_cells, max_count) table of atoms, padded with -1.
    sorted_cell = cell[order]
    slot = torch.arange(n, device=device) - starts[sorted_cell]
    table = torch.full((nx * ny * nz, max_count), -1, dtype=torch.int64, device=device)
    table[sorted_cell, slot] = order
    # The distinct neighbour cells of each cell (offsets -1..1, wrapped when periodic).
    offsets = torch.tensor(
        [(a, b, c) for a in (-1, 0, 1) for b in (-1, 0, 1) for c in (-1, 0, 1)],
        device=device,
    )
    dims = torch.tensor([nx, ny, nz], device=device)
    all3 = torch.stack(
        torch.meshgrid(
            torch.arange(nx, device=device),
            torch.arange(ny, device=device),
            torch.arange(nz, device=device),
            indexing="ij",
        ),
        dim=-1,
    ).reshape(-1, 1, 3)
    nb3 = all3 + offsets[None]
    if box is not None:
        nb3 = nb3 % dims
        valid = torch.ones(nb3.shape[:2], dtype=torch.bool, device=device)
    else:
        valid = ((nb3 >= 0) & (nb3 < dims)).all(-1)
        nb3 = nb3.clamp(min=0) % dims
    nb = (nb3[..., 0] * ny + nb3[..., 1]) * nz + nb3[..., 2]
    nb = torch.where(valid, nb, -1)
    # Remove repeated neighbour cells (small grids wrap onto themselves).
    nb, _ = torch.sort(nb, dim=1)
    dup = torch.zeros_like(nb, dtype=torch.bool)
    dup[:, 1:] = nb[:, 1:] == nb[:, :-1]
    nb = torch.where(dup, -1, nb)

    chunk = max(1, _CHUNK_CANDIDATES // (27 * max_count))
    out_i, out_j = [], []
    r2 = radius * radius
    for start in range(0, n, chunk):
        atoms = torch.arange(start, min(start + chunk, n), device=device)
        cells = nb[cell[atoms]]  # (a, 27)
        cand = torch.where(cells[..., None] >= 0, table[cells.clamp(min=0)], -1)
        cand = cand.reshape(len(atoms), -1)  # (a, 27*max_count)
        ii = atoms[:, None].expand_as(cand)
        keep = cand > ii
        ii, jj = ii[keep], cand[keep]
        d = minimum_image(work[jj] - work[ii], None if box is None else box.double())
        close = d.square().sum(-1) < r2
        out_i.append(ii[close])
        out_j.append(jj[close])
    return torch.cat(out_i), torch.cat(out_j)


def _face_widths(box: Tensor) -> Tensor:
    """(3,) distances between opposite faces of a (3, 3) box."""
    a, b, c = box[0], box[1], box[2]
    volume: Tensor = torch.linalg.det(box).abs()
    return volume / torch.stack(
        [
            torch.linalg.vector_norm(torch.linalg.cross(b, c, dim=-1)),
            torch.linalg.vector_norm(torch.linalg.cross(c, a, dim=-1)),
            torch.linalg.vector_norm(torch.linalg.cross(a, b, dim=-1)),
        ]
    )
