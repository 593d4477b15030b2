from __future__ import annotations

import pytest
import torch

from torchmd_core import NeighborList, build_pairs
from torchmd_core.geometry import box_from_lengths_angles, min_box_width, minimum_image


def brute_pairs(
    pos: torch.Tensor, box: torch.Tensor | None, radius: float, exclusions=None
) -> set[tuple[int, int]]:
    n = pos.shape[0]
    i, j = torch.triu_indices(n, n, 1)
    d = pos[j] - pos[i]
    if box is not None:
        d = minimum_image(d, box)
    keep = d.norm(dim=-1) < radius
    pairs = set(zip(i[keep].tolist(), j[keep].tolist(), strict=True))
    if exclusions is not None:
        pairs -= {(min(a, b), max(a, b)) for a, b in exclusions.tolist()}
    return pairs


def listed(nb, replica: int = 0) -> set[tuple[int, int]]:
    rep = nb.replica()
    i, j = nb.atoms()
    m = rep == replica
    return set(zip(i[m].tolist(), j[m].tolist(), strict=True))


CASES = {
    "random": (300, (20.0, 20.0, 20.0, 90, 90, 90), 5.0),
    "dense": (600, (12.0, 12.0, 12.0, 90, 90, 90), 4.0),
    "triclinic": (300, (18.0, 19.0, 20.0, 70, 80, 100), 5.0),
    "sheared": (250, (16.0, 16.0, 16.0, 60, 60, 90), 5.0),
    "tiny": (60, (8.0, 8.2, 8.4, 90, 90, 90), 3.99),
    "tiny_triclinic": (60, (9.0, 9.0, 9.0, 70, 75, 80), None),
}


@pytest.mark.parametrize("case", list(CASES))
def test_pairs_equal_brute_force(case):
    n, box_params, radius = CASES[case]
    box = box_from_lengths_angles(*box_params)
    if radius is None:
        radius = 0.5 * float(min_box_width(box)) - 1e-6
    g = torch.Generator().manual_seed(hash(case) % 1000)
    frac = torch.rand(n, 3, generator=g, dtype=torch.float64)
    pos = frac @ box
    nb = build_pairs(pos[None], box[None], radius)
    assert listed(nb) == brute_pairs(pos, box, radius)


def test_non_periodic_pairs_and_exclusions():
    g = torch.Generator().manual_seed(3)
    pos = torch.randn(200, 3, generator=g, dtype=torch.float64) * 6
    excl = torch.tensor([[0, 1], [5, 2], [10, 11]])
    nb = build_pairs(pos[None], None, 4.0, excl)
    assert listed(nb) == brute_pairs(pos, None, 4.0, excl)


def test_spread_out_non_periodic_system_stays_small():
    pos = torch.zeros(3, 3, dtype=torch.float64)
    pos[1, 0], pos[2, 0] = 1000.0, 2000.0
    nb = build_pairs(pos[None], None, 9.0)
    assert nb.n_pairs == 0


def test_replicas_have_their_own_pairs():
    g = torch.Generator().manual_seed(4)
    box = box_from_lengths_angles(15.0, 15.0, 15.0)
    pos = torch.rand(3, 100, 3, generator=g, dtype=torch.float64) * 15
    nb = build_pairs(pos, box[None].expand(3, 3, 3), 4.5)
    for r in range(3):
        assert listed(nb, r) == brute_pairs(pos[r], box, 4.5)


def test_verlet_list_rebuilds_only_after_half_skin_and_stays_complete():
    g = torch.Generator().manual_seed(5)
    box = box_from_lengths_angles(16.0, 16.0, 16.0)[None]
    pos = torch.rand(1, 300, 3, generator=g, dtype=torch.float64) * 16
    nl = NeighborList(cutoff=4.0, skin=1.0)
    nl.update(pos, box)
    assert nl.n_builds == 1
    small = pos + 0.5 * (
        torch.rand(pos.shape, generator=g, dtype=torch.float64) - 0.5
    )  # < skin/2
    nb = nl.update(small, box)
    assert nl.n_builds == 1
    # Every true pair within the cutoff is still listed.
    assert brute_pairs(small[0], box[0], 4.0) <= listed(nb)
    for _ in range(10):
        small = small + 0.2 * torch.randn(pos.shape, generator=g, dtype=torch.float64)
        nb = nl.update(small, box)
        assert brute_pairs(small[0], box[0], 4.0) <= listed(nb)
    assert nl.n_builds > 1


def test_box_change_triggers_rebuild():
    pos = torch.rand(1, 50, 3, dtype=torch.float64) * 10
    box = box_from_lengths_angles(10.0, 10.0, 10.0)[None]
    nl = NeighborList(cutoff=3.0, skin=1.0)
    nl.update(pos, box)
    nl.update(pos * 1.01, box * 1.01)
    assert nl.n_builds == 2


def test_cutoff_beyond_half_box_is_refused():
    nl = NeighborList(cutoff=6.0, skin=1.0)
    with pytest.raises(ValueError, match="half the smallest box width"):
        nl.update(
            torch.rand(1, 10, 3, dtype=torch.float64),
            box_from_lengths_angles(10.0, 10.0, 10.0)[None],
        )
