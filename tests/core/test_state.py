from __future__ import annotations

import pytest
import torch

from torchmd_core import State


def make(r: int = 2, n: int = 4) -> State:
    return State(
        positions=torch.rand(r, n, 3, dtype=torch.float64),
        velocities=torch.zeros(r, n, 3, dtype=torch.float64),
        box=torch.eye(3, dtype=torch.float64).expand(r, 3, 3).clone() * 10,
    )


def test_state_is_immutable():
    s = make()
    with pytest.raises(AttributeError):
        s.step = 3  # type: ignore[misc]


def test_replace_positions_drops_derived_caches():
    s = make().replace(forces=torch.ones(2, 4, 3), potential_energy=torch.ones(2))
    moved = s.replace(positions=s.positions + 1)
    assert moved.forces is None and moved.potential_energy is None
    kept = s.replace(velocities=s.velocities + 1)
    assert kept.forces is not None


def test_replace_keeps_explicitly_given_cache():
    s = make()
    f = torch.ones(2, 4, 3)
    moved = s.replace(positions=s.positions + 1, forces=f)
    assert moved.forces is f and moved.potential_energy is None


def test_shapes_are_checked():
    with pytest.raises(ValueError, match="positions must be"):
        State(positions=torch.zeros(4, 3))
    with pytest.raises(ValueError, match="box must be"):
        State(positions=torch.zeros(2, 4, 3), box=torch.zeros(3, 3))


def test_from_coordinates_repeats_one_frame_for_replicas():
    s = State.from_coordinates(
        torch.rand(5, 3), torch.eye(3), n_replicas=3, dtype=torch.float32
    )
    assert (
        s.positions.shape == (3, 5, 3)
        and s.box.shape == (3, 3, 3)
        and s.dtype == torch.float32
    )
    assert torch.equal(s.positions[0], s.positions[2])


def test_select_and_concatenate_round_trip():
    s = make(r=3)
    parts = [s.select([i]) for i in range(3)]
    again = State.concatenate(parts)
    assert torch.equal(again.positions, s.positions) and torch.equal(again.box, s.box)


def test_replace_keeps_autograd_graph():
    x = torch.rand(1, 3, 3, dtype=torch.float64, requires_grad=True)
    s = State(positions=x * 2)
    s2 = s.replace(positions=s.positions + 1)
    s2.positions.sum().backward()
    assert torch.allclose(x.grad, torch.full_like(x, 2.0))


def test_volume_of_triclinic_box():
    box = torch.tensor(
        [[[10.0, 0, 0], [2.0, 9.0, 0], [1.0, 1.0, 8.0]]], dtype=torch.float64
    )
    s = State(positions=torch.zeros(1, 2, 3, dtype=torch.float64), box=box)
    assert float(s.volume()[0]) == pytest.approx(720.0)
