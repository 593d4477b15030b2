"""Coordinate readers: positions in Å (float64), boxes, velocities, and errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchmd_plugins.amber.coordinates import (
    AmberRestartLoader,
    CharmmCrdLoader,
    MdtrajFrameLoader,
    NamdCoorLoader,
    PdbLoader,
    read_pdb_coordinates,
)

from tests.plugins.amber.conftest import cached_system, data_path, load_reference
from torchmd_core import InputFileError, SystemConfig, TopologyError
from torchmd_core.builder import load_system


def test_pdb_positions_are_read_exactly_in_float64():
    coords = read_pdb_coordinates(data_path("ala3/ala_ala_ala.pdb"))
    assert coords.positions.dtype == torch.float64 and coords.positions.shape == (33, 3)
    line = next(
        x
        for x in data_path("ala3/ala_ala_ala.pdb").read_text().splitlines()
        if x.startswith("ATOM")
    )
    assert coords.positions[0].tolist() == [
        float(line[30:38]),
        float(line[38:46]),
        float(line[46:54]),
    ]
    assert coords.box is None and coords.velocities is None


def same_lattice(box, other, atol):
    """Both boxes span one lattice: other = M box with M integer, |det M| = 1.

    (c = (13.5, 13.5, z) and (-13.5, -13.5, z) are both reduced forms of one box.)
    """
    m = other.numpy() @ np.linalg.inv(box.numpy())
    return (
        np.allclose(m, np.round(m), atol=atol)
        and abs(abs(np.linalg.det(np.round(m))) - 1) < 1e-9
    )


def test_pdb_cryst1_gives_a_reduced_box():
    coords = read_pdb_coordinates(data_path("peptide_dodec/structure.pdb"))
    assert coords.box[0, 1] == 0 and coords.box[0, 2] == 0 and coords.box[1, 2] == 0
    assert same_lattice(coords.box, cached_system("peptide_dodec").box, 1e-9)


def test_pdb_unit_cube_is_no_box_and_only_the_first_model_is_read(tmp_path):
    atoms = [
        line
        for line in data_path("ala3/ala_ala_ala.pdb").read_text().splitlines()
        if line.startswith("ATOM")
    ]
    text = [
        "CRYST1    1.000    1.000    1.000  90.00  90.00  90.00 P 1           1",
        "MODEL        1",
        *atoms,
        "ENDMDL",
        "MODEL        2",
        *atoms,
        "ENDMDL",
    ]
    path = tmp_path / "models.pdb"
    path.write_text("\n".join(text) + "\n")
    coords = read_pdb_coordinates(path)
    assert coords.box is None and coords.n_atoms == 33


def test_pdb_topology_has_no_force_field_but_elements_and_bonds():
    system = PdbLoader().load_topology(data_path("ala3/ala_ala_ala.pdb"))
    assert system.n_atoms == 33 and not system.terms and system.nonbonded is None
    assert system.atomic_numbers[0] == 7 and system.masses[0] == pytest.approx(
        14.007, abs=1e-2
    )
    assert len(system.bonds) == 32


def test_pdb_with_a_broken_atom_line_is_reported(tmp_path):
    path = tmp_path / "bad.pdb"
    path.write_text(
        "ATOM      1  N   ALA A   1      1.000   abc     3.000  1.00  0.00"
        "           N\n"
    )
    with pytest.raises(InputFileError, match=r"bad.pdb' line 1"):
        read_pdb_coordinates(path)


def test_namd_coor_takes_the_box_from_the_sibling_xsc():
    coords = NamdCoorLoader().load_coordinates(data_path("ala2_solv/input.coor"))
    ref = load_reference("ala2_solv__rf_periodic")
    assert torch.equal(coords.positions, ref.positions)
    torch.testing.assert_close(coords.box, ref.box, rtol=0, atol=0)


def test_namd_coor_without_xsc_has_no_box_and_big_endian_is_read(tmp_path):
    positions = np.random.default_rng(1).normal(size=(5, 3))
    path = tmp_path / "x.coor"
    path.write_bytes(
        np.array([5], dtype=">i4").tobytes() + positions.astype(">f8").tobytes()
    )
    coords = NamdCoorLoader().load_coordinates(path)
    assert coords.box is None and np.array_equal(coords.positions.numpy(), positions)


def test_truncated_namd_coor_is_an_input_file_error(tmp_path):
    raw = data_path("ala2_solv/input.coor").read_bytes()
    path = tmp_path / "cut.coor"
    path.write_bytes(raw[:-10])
    with pytest.raises(InputFileError, match="truncated"):
        NamdCoorLoader().load_coordinates(path)


def test_amber_restart_with_box_and_velocities(tmp_path):
    import parmed

    ref = load_reference("ala2_vacuum__nocutoff")
    restart = parmed.amber.Rst7(natom=22)
    restart.coordinates = ref.positions.numpy()
    restart.vels = np.full((22, 3), 0.5)  # Å/ps; parmed writes AMBER's Å/(1/20.455 ps)
    restart.box = [30.0, 31.0, 32.0, 90.0, 90.0, 90.0]
    path = tmp_path / "ala2.rst7"
    restart.write(str(path))
    coords = AmberRestartLoader().load_coordinates(path)
    torch.testing.assert_close(coords.positions, ref.positions, rtol=0, atol=1e-7)
    torch.testing.assert_close(
        coords.velocities,
        torch.full((22, 3), 0.5, dtype=torch.float64),
        rtol=0,
        atol=1e-6,
    )
    torch.testing.assert_close(
        coords.box, torch.diag(torch.tensor([30.0, 31.0, 32.0], dtype=torch.float64))
    )


def test_charmm_crd(tmp_path):
    import parmed

    structure = parmed.load_file(
        str(data_path("ala2_vacuum/ala2_vacuum.prmtop")),
        xyz=str(data_path("ala2_vacuum/ala2_vacuum.pdb")),
    )
    path = tmp_path / "ala2.crd"
    parmed.charmm.CharmmCrdFile.write(structure, str(path))
    coords = CharmmCrdLoader().load_coordinates(path)
    expected = read_pdb_coordinates(data_path("ala2_vacuum/ala2_vacuum.pdb")).positions
    torch.testing.assert_close(coords.positions, expected, rtol=0, atol=1e-9)


def test_first_xtc_frame_with_an_all_zero_box_has_no_box():
    coords = MdtrajFrameLoader().load_coordinates(data_path("waterbox/output.xtc"))
    ref = load_reference("waterbox__nocutoff")
    assert coords.box is None
    torch.testing.assert_close(coords.positions, ref.positions, rtol=0, atol=1e-6)


def test_dcd_frame_with_a_triclinic_box(tmp_path):
    import mdtraj

    system = cached_system("peptide_dodec")
    ref = load_reference("peptide_dodec__rf_periodic")
    traj = mdtraj.Trajectory(ref.positions.numpy()[None] / 10.0, system.topology)
    traj.unitcell_vectors = ref.box.numpy()[None] / 10.0
    path = tmp_path / "frame.dcd"
    traj.save_dcd(str(path))
    coords = MdtrajFrameLoader().load_coordinates(path, system)
    torch.testing.assert_close(coords.positions, ref.positions, rtol=0, atol=1e-4)
    assert same_lattice(coords.box, ref.box, 1e-4)


def test_loaders_are_chosen_by_extension(builtin_registry):
    for name, cls in (
        ("x.inpcrd", AmberRestartLoader),
        ("x.rst7", AmberRestartLoader),
        ("x.crd", CharmmCrdLoader),
        ("x.coor", NamdCoorLoader),
        ("x.xtc", MdtrajFrameLoader),
        ("x.dcd", MdtrajFrameLoader),
        ("x.gro", MdtrajFrameLoader),
        ("x.pdb", PdbLoader),
    ):
        assert isinstance(
            builtin_registry.loader_for(data_path(name), "coordinates"), cls
        ), name


def test_atom_count_mismatch_names_both_counts(builtin_registry):
    config = SystemConfig(
        topology=data_path("ala2_vacuum/ala2_vacuum.prmtop"),
        coordinates=data_path("ala3/ala_ala_ala.pdb"),
    )
    with pytest.raises(TopologyError, match=r"33 atoms .* 22"):
        load_system(config, builtin_registry)


def test_missing_coordinate_file_is_an_input_file_error(tmp_path):
    with pytest.raises(InputFileError, match="does not exist"):
        NamdCoorLoader().load_coordinates(tmp_path / "none.coor")
