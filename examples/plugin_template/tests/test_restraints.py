"""The restraint terms: conformance kit, formulas, selections, references, boxes."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from pydantic import ValidationError
from torch.testing import assert_close
from torchmd_core import ConfigError, Coordinates, InputFileError, State, TopologyError
from torchmd_core.geometry import box_from_lengths_angles
from torchmd_core.testing import TOLERANCES, check_config_roundtrip, check_potential

from torchmd_restraints import FlatBottomRestraint, HarmonicRestraint

KINDS = [HarmonicRestraint, FlatBottomRestraint]
IDS = ["harmonic", "flat_bottom"]


def displaced(state: State, scale: float = 1.0, seed: int = 5) -> torch.Tensor:
    """(R, N, 3) positions moved randomly by about ``scale`` Å."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(state.positions.shape, generator=g, dtype=torch.float64)
    return state.positions + scale * noise.to(state.dtype)


def make(cls, system, reference, **settings):
    settings.setdefault("atoms", "element C")
    settings.setdefault("k", 4.0)
    if cls is FlatBottomRestraint:
        settings.setdefault("radius", 0.5)
    return cls(cls.Config(**settings), system, reference=reference)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("periodic", [False, True], ids=["open", "box"])
@pytest.mark.parametrize("cls", KINDS, ids=IDS)
def test_restraint_passes_the_conformance_kit(cls, system, state, periodic, dtype):
    if periodic:
        box = box_from_lengths_angles(20.0, 21.0, 22.0, 80.0, 95.0, 100.0)
        state = state.replace(box=box.expand(state.n_replicas, 3, 3).clone())
    reference = displaced(state)[
        0
    ]  # (N, 3): atoms sit 1-2 Å from it, outside the radius
    restraint = make(cls, system, reference)
    # Restraints hold atoms at absolute positions: no translation invariance.
    check_potential(
        restraint, state.to(dtype=dtype), translation_invariant=False, n_fd_atoms=6
    )


@pytest.mark.parametrize("cls", KINDS, ids=IDS)
def test_config_roundtrips_with_every_kind_of_reference(cls, tmp_path):
    extra = {"radius": 1.0} if cls is FlatBottomRestraint else {}
    for atoms, reference in [
        ("name CA", "initial"),
        ((0, 2), ((0.0, 1.0, 2.0), (3.0, 4.0, 5.0))),
        ((1,), tmp_path / "ref.pdb"),
    ]:
        check_config_roundtrip(
            cls, cls.Config(atoms=atoms, k=2.0, reference=reference, **extra)
        )


def test_harmonic_energy_and_forces_follow_the_formula(system, state):
    reference = state.positions[0].clone()
    moved = state.positions.clone()
    moved[:, 2] += torch.tensor([0.3, -0.4, 0.0], dtype=moved.dtype)  # |d| = 0.5 Å
    restraint = make(HarmonicRestraint, system, reference, atoms=(2, 4), k=10.0)
    start = state.replace(positions=moved).select([0])
    energy, forces = restraint.energy_and_forces(start)
    assert_close(energy, torch.tensor([10.0 * 0.25], dtype=torch.float64))
    assert_close(
        forces[0, 2], torch.tensor([-6.0, 8.0, 0.0], dtype=torch.float64)
    )  # −2k d
    assert_close(forces[0, 4], torch.zeros(3, dtype=torch.float64))
    assert forces[0, [0, 1, 3]].abs().max() == 0  # unselected atoms feel nothing


def test_flat_bottom_is_free_inside_the_radius_and_quadratic_beyond(system, state):
    one = state.select([0])
    restraint = make(
        FlatBottomRestraint, system, one.positions[0], atoms=(3,), k=2.0, radius=1.0
    )
    for shift, expected in [
        (0.0, 0.0),
        (0.9, 0.0),
        (1.5, 2.0 * 0.5**2),
        (3.0, 2.0 * 2.0**2),
    ]:
        moved = one.positions.clone()
        moved[0, 3, 1] += shift
        energy = restraint.energy(one.replace(positions=moved))
        assert_close(
            energy,
            torch.tensor([expected], dtype=torch.float64),
            **TOLERANCES[torch.float64],
        )


def test_forces_are_finite_on_the_reference_itself(system, state):
    one = state.select([0])
    for cls, extra in [(FlatBottomRestraint, {"radius": 0.0}), (HarmonicRestraint, {})]:
        restraint = make(cls, system, one.positions[0], **extra)
        energy, forces = restraint.energy_and_forces(one)
        assert float(energy[0]) == 0.0
        assert torch.isfinite(forces).all() and forces.abs().max() == 0


def test_selection_string_picks_atoms_through_mdtraj(system, state):
    restraint = make(HarmonicRestraint, system, state.positions[0], atoms="element C")
    assert restraint.atoms.tolist() == [0, 2, 4, 6, 8, 10]
    restraint = make(
        HarmonicRestraint, system, state.positions[0], atoms="index 3 to 5"
    )
    assert restraint.atoms.tolist() == [3, 4, 5]


def test_bad_selection_is_a_topology_error(system, state):
    with pytest.raises(TopologyError, match="invalid atom selection"):
        make(HarmonicRestraint, system, state.positions[0], atoms="name CA and and")
    with pytest.raises(TopologyError, match="matches no atom"):
        make(HarmonicRestraint, system, state.positions[0], atoms="resname HOH")
    with pytest.raises(TopologyError, match="outside"):
        make(HarmonicRestraint, system, state.positions[0], atoms=(0, 99))


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"atoms": (), "k": 1.0}, "at least one atom"),
        ({"atoms": (1, -2), "k": 1.0}, "start at 0"),
        ({"atoms": (1, 2, 1), "k": 1.0}, r"repeated: \[1\]"),
        ({"atoms": " ", "k": 1.0}, "empty selection"),
        ({"atoms": (0,), "k": 0.0}, "greater than 0"),
        (
            {"atoms": (0, 1), "k": 1.0, "reference": [[0, 0, 0]]},
            "1 positions for 2 atoms",
        ),
        ({"atoms": (0,), "k": 1.0, "stiffness": 3}, "Extra inputs"),
    ],
)
def test_invalid_settings_are_rejected_by_the_config(settings, message):
    with pytest.raises(ValidationError, match=message):
        HarmonicRestraint.Config(**settings)


def test_explicit_reference_positions_are_per_selected_atom(system, state):
    config = HarmonicRestraint.Config(
        atoms="element C", k=1.0, reference=[[0.0, 0.0, 0.0]] * 6
    )
    restraint = HarmonicRestraint(config, system)
    carbons = state.positions[:, 0::2]
    assert_close(restraint.energy(state), carbons.square().sum((1, 2)))
    short = HarmonicRestraint.Config(
        atoms="element C", k=1.0, reference=[[0.0, 0.0, 0.0]] * 5
    )
    with pytest.raises(ConfigError, match="5 positions for the 6 selected atoms"):
        HarmonicRestraint(short, system)


def test_initial_reference_is_the_structure_the_system_was_loaded_with(system, state):
    config = HarmonicRestraint.Config(atoms=(0, 5), k=1.0)
    with pytest.raises(ConfigError, match="carries no starting structure"):
        HarmonicRestraint(config, system)
    loaded = dataclasses.replace(
        system, metadata={"initial_coordinates": Coordinates(state.positions[1])}
    )
    restraint = HarmonicRestraint(config, loaded)
    assert_close(restraint.reference, state.positions[1, [0, 5]])
    assert float(restraint.energy(state)[1]) == 0.0


def test_reference_file_is_read_with_the_installed_loaders(
    registry, system, state, tmp_path
):
    path = tmp_path / "ref.toycrd"
    path.write_text(json.dumps({"positions": state.positions[1].tolist(), "box": None}))
    restraint = HarmonicRestraint(
        HarmonicRestraint.Config(atoms="all", k=1.0, reference=path), system
    )
    assert_close(restraint.reference, state.positions[1])
    missing = HarmonicRestraint.Config(
        atoms="all", k=1.0, reference=tmp_path / "nope.toycrd"
    )
    with pytest.raises(InputFileError, match="does not exist"):
        HarmonicRestraint(missing, system)
    path.write_text(
        json.dumps({"positions": state.positions[1, :5].tolist(), "box": None})
    )
    with pytest.raises(TopologyError, match="has 5 atoms, the system 12"):
        HarmonicRestraint(
            HarmonicRestraint.Config(atoms="all", k=1.0, reference=path), system
        )


def test_periodic_displacement_is_the_minimum_image(system, state):
    """An atom that crossed the box face is held by the nearest copy of its reference."""
    box = box_from_lengths_angles(10.0, 10.0, 10.0)[None]
    reference = state.positions[0].clone()
    reference[0] = torch.tensor(
        [9.8, 5.0, 5.0], dtype=torch.float64
    )  # near the +x face
    moved = state.positions[:1].clone()
    moved[0, 0] = torch.tensor(
        [0.1, 5.0, 5.0], dtype=torch.float64
    )  # 0.3 Å away, through it
    restraint = make(HarmonicRestraint, system, reference, atoms=(0,), k=1.0)
    periodic = State(positions=moved, box=box)
    assert_close(restraint.energy(periodic), torch.tensor([0.09], dtype=torch.float64))
    assert_close(
        restraint.energy(periodic.replace(box=None)),
        torch.tensor([9.7**2], dtype=torch.float64),
    )


def test_restraints_follow_device_and_dtype(system, state):
    restraint = make(FlatBottomRestraint, system, state.positions[0]).to(
        dtype=torch.float32
    )
    energy = restraint.energy(state.to(dtype=torch.float32))
    assert energy.dtype == torch.float32 and restraint.atoms.dtype == torch.int64
