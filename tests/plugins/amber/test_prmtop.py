"""AMBER prmtop loader: what it reads, OpenMM's conventions, and its errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchmd_plugins.amber.prmtop import PrmtopLoader, read_prmtop

from tests.plugins.amber.conftest import (
    bonded,
    cached_system,
    data_path,
    load_reference,
)
from torchmd_core import InputFileError, State, TopologyError


def test_atoms_residues_bonds_and_box_are_read():
    system = cached_system("ala2_solv")
    assert system.n_atoms == 688
    assert len(system.residues) == 225 and system.residues[0].name == "ACE"
    assert system.atom_names[:2] == ("HH31", "CH3") and system.atom_types[:2] == (
        "HC",
        "CT",
    )
    assert abs(float(system.charges.sum())) < 1e-4
    assert system.bonds.shape == (
        687,
        2,
    )  # water O-H bonds and H-H included: 21 + 222 * 3
    assert system.n_molecules == 223
    torch.testing.assert_close(
        torch.diagonal(system.box),
        torch.tensor([23.4849, 23.1711, 23.0822], dtype=torch.float64),
        atol=1e-3,
        rtol=0,
    )
    assert torch.count_nonzero(system.box - torch.diag(torch.diagonal(system.box))) == 0
    assert system.atomic_numbers[:2].tolist() == [1, 6]


def test_interactions_of_one_type_share_one_parameter_row():
    table = cached_system("ala2_solv").terms["bonds"]
    assert len(table) == 687
    assert table.values["k"].shape[0] == 13  # the prmtop's used bond types
    water = [i for i, name in enumerate(table.type_names) if name in ("OW-HW", "HW-OW")]
    assert water and int(np.isin(table.types.numpy(), water).sum()) == 2 * 222


def test_regular_prmtop_uses_the_combination_rule():
    nb = cached_system("ala2_vacuum").nonbonded
    assert nb is not None and nb.pair_mask is None


def test_modified_pair_table_is_kept_exactly():
    system = cached_system("ala2_ljpair")
    nb = system.nonbonded
    assert nb is not None and nb.pair_mask is not None
    c12, c6 = nb.lj_tables()
    types = list(nb.type_names)
    o, h = types.index("O"), types.index("H")
    # LJPAIR_VACUUM in tests/data/build_inputs.py: Rmin 2.05 Å, ε 0.15 kcal/mol.
    torch.testing.assert_close(
        c12[o, h], torch.tensor(0.15 * 2.05**12, dtype=torch.float64), rtol=1e-7, atol=0
    )
    torch.testing.assert_close(
        c6[o, h],
        torch.tensor(2 * 0.15 * 2.05**6, dtype=torch.float64),
        rtol=1e-7,
        atol=0,
    )
    regular = cached_system("ala2_vacuum").nonbonded.lj_tables()  # type: ignore[union-attr]
    assert not torch.allclose(c12[o, h], regular[0][o, h])


def test_modified_pair_table_applies_to_1_4_pairs():
    ref = load_reference("ala2_ljpair__nocutoff")
    e = bonded(cached_system("ala2_ljpair"), "lj14").energy(ref.state())
    assert abs(float(e) - ref.energies["lj14"]) < 1e-9
    assert (
        abs(float(e) - load_reference("ala2_vacuum__nocutoff").energies["lj14"]) > 1e-3
    )


def test_loader_is_chosen_by_extension(builtin_registry):
    loader = builtin_registry.loader_for(
        data_path("ala2_solv/structure.prmtop"), "topology"
    )
    assert isinstance(loader, PrmtopLoader)


# -- conventions checked against OpenMM's AmberPrmtopFile ------------------------------


@pytest.fixture(scope="module")
def ff19sb_prmtop(tmp_path_factory):
    """The ff19SB peptide (residue-specific CMAPs) as a prmtop, written by parmed."""
    pytest.importorskip("openmm")
    import openmm
    import openmm.app as app
    import parmed

    pdb = app.PDBFile(str(data_path("peptide_ff19sb/structure.pdb")))
    system = openmm.XmlSerializer.deserialize(
        data_path("peptide_ff19sb/system.xml").read_text()
    )
    structure = parmed.openmm.load_topology(pdb.topology, system, xyz=pdb.positions)
    path = tmp_path_factory.mktemp("ff19sb") / "peptide.prmtop"
    parmed.amber.AmberParm.from_structure(structure).save(str(path))
    return path


def openmm_terms(prmtop, positions):
    import openmm.app as app

    from tests.plugins.amber.openmm_reference import per_force

    system = app.AmberPrmtopFile(str(prmtop)).createSystem(
        nonbondedMethod=app.NoCutoff, constraints=None, rigidWater=False
    )
    return {cls: (e, f) for cls, _, e, f in per_force(system, positions)}


def test_cmap_prmtop_matches_openmm(ff19sb_prmtop):
    ref = load_reference("peptide_ff19sb__nocutoff")
    system = read_prmtop(ff19sb_prmtop)
    assert len(system.terms["cmap"]) == 7 and system.terms["cmap"].values[
        "grid"
    ].shape == (4, 24, 24)
    want = openmm_terms(ff19sb_prmtop, ref.positions.numpy())
    state = ref.state()
    for term, force in (
        ("cmap", "CMAPTorsionForce"),
        ("bonds", "HarmonicBondForce"),
        ("angles", "HarmonicAngleForce"),
    ):
        e, f = bonded(system, term).energy_and_forces(state)
        assert abs(float(e) - want[force][0]) < 1e-9, term
        assert np.abs(f[0].numpy() - want[force][1]).max() < 1e-8, term
    e = bonded(system, "torsions", "impropers").energy(state)
    assert abs(float(e) - want["PeriodicTorsionForce"][0]) < 1e-9


def test_scee_and_scnb_are_taken_per_dihedral_type(tmp_path):
    pytest.importorskip("openmm")
    import parmed

    from tests.plugins.amber.openmm_reference import evaluate

    parm = parmed.amber.AmberFormat(str(data_path("ala2_vacuum/ala2_vacuum.prmtop")))
    n = len(parm.parm_data["SCEE_SCALE_FACTOR"])
    parm.parm_data["SCEE_SCALE_FACTOR"] = [1.0 + 0.25 * (i % 4) for i in range(n)]
    parm.parm_data["SCNB_SCALE_FACTOR"] = [1.5 + 0.5 * (i % 3) for i in range(n)]
    path = tmp_path / "scaled.prmtop"
    parm.write_parm(str(path))
    import openmm
    import openmm.app as app

    omm = app.AmberPrmtopFile(str(path)).createSystem(
        nonbondedMethod=app.NoCutoff, constraints=None, rigidWater=False
    )
    nb = next(f for f in omm.getForces() if isinstance(f, openmm.NonbondedForce))
    for i in range(nb.getNumParticles()):  # keep only the exceptions
        _, sigma, _ = nb.getParticleParameters(i)
        nb.setParticleParameters(i, 0.0, sigma, 0.0)
    for i in reversed(range(omm.getNumForces())):
        if not isinstance(omm.getForce(i), openmm.NonbondedForce):
            omm.removeForce(i)
    ref = load_reference("ala2_vacuum__nocutoff")
    want_e, want_f = evaluate(omm, ref.positions.numpy())
    pot = bonded(read_prmtop(path), "lj14", "coulomb14")
    e, f = pot.energy_and_forces(ref.state())
    assert abs(float(e) - want_e) < 1e-9
    assert np.abs(f[0].numpy() - want_f).max() < 1e-9
    assert (
        abs(
            want_e
            - sum(
                load_reference("ala2_vacuum__nocutoff").energies[t]
                for t in ("lj14", "coulomb14")
            )
        )
        > 1.0
    )


# -- errors ----------------------------------------------------------------------------


def test_missing_file_is_an_input_file_error(tmp_path):
    with pytest.raises(InputFileError, match="does not exist"):
        read_prmtop(tmp_path / "nope.prmtop")


def test_truncated_prmtop_is_an_input_file_error(tmp_path):
    text = data_path("ala2_vacuum/ala2_vacuum.prmtop").read_text()
    path = tmp_path / "cut.prmtop"
    path.write_text(text[: len(text) // 2])
    with pytest.raises(InputFileError, match=r"cut\.prmtop"):
        read_prmtop(path)


def test_garbage_is_an_input_file_error(tmp_path):
    path = tmp_path / "bad.prmtop"
    path.write_text("this is not\na prmtop\n")
    with pytest.raises(InputFileError, match=r"bad\.prmtop"):
        read_prmtop(path)


def test_parameter_files_are_refused():
    with pytest.raises(TopologyError, match="holds its own parameters"):
        PrmtopLoader().load_topology(
            data_path("ala2_vacuum/ala2_vacuum.prmtop"),
            [data_path("ala3/charmm22.par")],
        )


def test_prmtop_energy_is_finite_in_float32():
    state = load_reference("ala2_solv__rf_periodic").state(torch.float32)
    e = bonded(cached_system("ala2_solv")).to(torch.float32).energy(state)
    assert e.dtype == torch.float32 and torch.isfinite(e).all()
    assert isinstance(state, State)
