from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from torchmd_core.geometry import (
    angles,
    box_from_lengths_angles,
    box_lengths_angles,
    dihedral_angles,
    distances,
    min_box_width,
    minimum_image,
    wrap_positions,
)


def brute_force_image(d: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
    best = None
    for i, j, k in itertools.product(range(-2, 3), repeat=3):
        cand = d + i * box[0] + j * box[1] + k * box[2]
        if best is None or cand.norm() < best.norm():
            best = cand
    return best


@pytest.mark.parametrize(
    "angles_deg",
    [(90, 90, 90), (70, 80, 100), (60, 60, 90)],
    ids=["ortho", "triclinic", "sheared"],
)
def test_minimum_image_matches_brute_force_within_half_width(angles_deg):
    box = box_from_lengths_angles(20.0, 22.0, 25.0, *angles_deg)
    half = 0.5 * float(min_box_width(box))
    g = torch.Generator().manual_seed(1)
    n_checked = 0
    for _ in range(300):
        a, b = torch.rand(2, 3, generator=g, dtype=torch.float64) * 40 - 10
        d = minimum_image(b - a, box)
        ref = brute_force_image(b - a, box)
        if ref.norm() < half:
            torch.testing.assert_close(d, ref)
            n_checked += 1
    assert n_checked > 5


def test_box_lengths_angles_round_trip():
    box = box_from_lengths_angles(30.0, 31.0, 32.0, 75.0, 85.0, 95.0)
    (a, _b, _c), _angles = box_lengths_angles(box)
    assert a == pytest.approx(30.0)  # a is never changed by the reduction
    vol = abs(float(torch.linalg.det(box)))
    ca, cb, cg = (math.cos(math.radians(x)) for x in (75.0, 85.0, 95.0))
    expected = 30 * 31 * 32 * math.sqrt(1 - ca**2 - cb**2 - cg**2 + 2 * ca * cb * cg)
    assert vol == pytest.approx(expected, rel=1e-12)
    assert box[0, 1] == 0 and box[0, 2] == 0 and box[1, 2] == 0


def test_box_lengths_angles_of_unreduced_box():
    box = box_from_lengths_angles(30.0, 31.0, 32.0, 85.0, 88.0, 95.0)
    (a, b, c), (al, be, ga) = box_lengths_angles(box)
    assert (a, b, c) == pytest.approx((30.0, 31.0, 32.0))
    assert (al, be, ga) == pytest.approx((85.0, 88.0, 95.0))


def test_dihedral_sign_and_value_match_mdtraj():
    import mdtraj

    g = torch.Generator().manual_seed(0)
    pos = torch.rand(2, 8, 3, generator=g, dtype=torch.float64) * 5
    quads = torch.tensor([[0, 1, 2, 3], [4, 5, 6, 7], [1, 3, 5, 7]])
    ours = dihedral_angles(pos, quads, None)
    top = mdtraj.Topology()
    ch = top.add_chain()
    res = top.add_residue("X", ch)
    for i in range(8):
        top.add_atom(f"C{i}", mdtraj.element.carbon, res)
    traj = mdtraj.Trajectory(pos.numpy() / 10.0, top)
    ref = mdtraj.compute_dihedrals(traj, quads.numpy(), periodic=False)
    np.testing.assert_allclose(ours.numpy(), ref, atol=1e-5)


def test_angles_and_distances_simple():
    pos = torch.tensor([[[1.0, 0, 0], [0, 0, 0], [0, 2.0, 0]]], dtype=torch.float64)
    assert float(angles(pos, torch.tensor([[0, 1, 2]]), None)[0, 0]) == pytest.approx(
        math.pi / 2
    )
    assert float(distances(pos, torch.tensor([[0, 2]]), None)[0, 0]) == pytest.approx(
        math.sqrt(5)
    )


def test_wrap_positions_into_primary_cell():
    box = box_from_lengths_angles(10.0, 10.0, 10.0, 80.0, 90.0, 100.0)[None]
    pos = torch.rand(1, 50, 3, dtype=torch.float64) * 60 - 30
    wrapped = wrap_positions(pos, box)
    frac = torch.linalg.solve(box[0].T, wrapped[0].T).T
    assert bool(((frac >= -1e-12) & (frac < 1 + 1e-12)).all())
    d = minimum_image(wrapped - pos, box[:, None])
    assert float(d.abs().max()) < 1e-9
