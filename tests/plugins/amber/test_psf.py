"""CHARMM psf loader: OpenMM's assignment rules, exclusions, NBFIX, and errors."""

from __future__ import annotations

import re

import pytest
import torch
from torchmd_plugins.amber.psf import PsfLoader, read_psf
from torchmd_plugins.amber.tables import pairs_12_13_14

from tests.plugins.amber.conftest import (
    bonded,
    cached_system,
    data_path,
    load_reference,
)
from torchmd_core import InputFileError, TopologyError

ALA3 = ("ala3/ala_ala_ala.psf", ("ala3/charmm22.rtf", "ala3/charmm22.par"))


def ala3_files(tmp_path, edit=None):
    """Copies of the ala3 inputs, with ``edit(text)`` applied to charmm22.par."""
    for name in ("ala_ala_ala.psf", "charmm22.rtf", "charmm22.par"):
        text = data_path(f"ala3/{name}").read_text()
        if name == "charmm22.par" and edit is not None:
            text = edit(text)
        (tmp_path / name).write_text(text)
    return tmp_path / "ala_ala_ala.psf", [
        tmp_path / "charmm22.rtf",
        tmp_path / "charmm22.par",
    ]


def test_numeric_psf_types_are_named_from_the_mass_lines():
    system = cached_system("ala3")
    assert system.atom_types[:5] == ("NH3", "HC", "HC", "HC", "CT1")
    assert system.masses[0] == pytest.approx(14.007)
    assert system.atomic_numbers[:2].tolist() == [7, 1]


def test_terms_come_from_the_psf_lists():
    system = cached_system("ala3")
    assert len(system.terms["bonds"]) == 32 and len(system.terms["angles"]) == 57
    assert (
        len(system.terms["harmonic_impropers"]) == 5 and len(system.terms["cmap"]) == 1
    )
    assert len(system.terms["urey_bradley"]) > 0
    # every listed dihedral gets all terms of its (possibly wildcard) entry
    assert len(system.terms["torsions"]) >= 74


def test_exclusions_and_1_4_pairs_come_from_the_bond_graph():
    system = cached_system("ala3")
    p12, p13, p14 = pairs_12_13_14(
        system.n_atoms, [tuple(b) for b in system.bonds.tolist()]
    )
    assert {tuple(p) for p in system.exclusions.tolist()} == p12 | p13 | p14
    assert {tuple(sorted(p)) for p in system.terms["pairs14"].atoms.tolist()} == p14


def test_water_hh_shake_bond_is_not_a_bond():
    system = cached_system("waterbox")
    assert (
        system.n_atoms == 293 and len(system.terms["bonds"]) == 194
    )  # 97 waters x 2 O-H
    assert system.n_molecules == 99


def test_masses_missing_from_the_psf_come_from_mass_lines():
    system = cached_system("benzamidine")  # the psf lists masses of 0.0
    assert system.masses[0] == pytest.approx(12.011) and system.masses[
        -1
    ] == pytest.approx(1.008)
    assert system.atomic_numbers[0] == 6


def test_commented_mass_lines_are_a_fallback(tmp_path):
    prm = data_path("benzamidine/mol.prm").read_text()
    masses = "\n".join(
        f"!MASS  {n} {t} {m}"
        for n, t, m in (
            (122, "C2N2", 12.011),
            (123, "C261", 12.011),
            (124, "HGP2", 1.008),
            (125, "HG61", 1.008),
            (126, "N2P1", 14.007),
        )
    )
    (tmp_path / "mol.prm").write_text(masses + "\n" + prm)
    system = read_psf(data_path("benzamidine/mol.psf"), [tmp_path / "mol.prm"])
    assert system.masses[12] == pytest.approx(14.007)
    ref = load_reference("benzamidine__nocutoff")
    assert float(bonded(system).energy(ref.state())) == pytest.approx(
        sum(ref.energies[t] for t in ref.bonded_terms), abs=1e-9
    )


def test_nbxmod_3_keeps_1_4_pairs_in_the_normal_sum(tmp_path):
    psf, params = ala3_files(
        tmp_path, lambda t: t.replace("NONBONDED nbxmod  5", "NONBONDED nbxmod  3")
    )
    system = read_psf(psf, params)
    assert "pairs14" not in system.terms
    p12, p13, _ = pairs_12_13_14(
        system.n_atoms, [tuple(b) for b in system.bonds.tolist()]
    )
    assert {tuple(p) for p in system.exclusions.tolist()} == p12 | p13


def test_e14fac_scales_1_4_charges(tmp_path):
    psf, params = ala3_files(tmp_path, lambda t: t.replace("e14fac 1.0", "e14fac 0.5"))
    scaled = read_psf(psf, params)
    state = load_reference("ala3__nocutoff").state()
    e = bonded(scaled, "coulomb14").energy(state)
    assert float(e) == pytest.approx(
        0.5 * load_reference("ala3__nocutoff").energies["coulomb14"], rel=1e-12
    )


def test_nbfix_becomes_a_pair_override_and_sets_1_4_values(tmp_path):
    nbfix = "NBFIX\nNH3 O  -0.25  3.6  -0.05  3.1\nHBOND"
    psf, params = ala3_files(tmp_path, lambda t: t.replace("HBOND", nbfix, 1))
    system = read_psf(psf, params)
    nb = system.nonbonded
    assert nb is not None and nb.pair_mask is not None
    types = list(nb.type_names)
    i, j = types.index("O"), types.index("NH3")
    c12, c6 = nb.lj_tables()
    assert float(c12[i, j]) == pytest.approx(0.25 * 3.6**12) and float(
        c6[j, i]
    ) == pytest.approx(2 * 0.25 * 3.6**6)
    assert int(nb.pair_mask.sum()) == 2
    pairs = system.terms["pairs14"]
    row = [k for k, name in enumerate(pairs.type_names) if name in ("NH3-O", "O-NH3")]
    assert row and pairs.values["epsilon"][row[0]] == pytest.approx(0.05)
    assert pairs.values["sigma"][row[0]] == pytest.approx(3.1 * 2 ** (-1 / 6))


def test_missing_parameters_name_the_types_and_atoms(tmp_path):
    def drop(text):
        return re.sub(r"(?m)^CT3\s+CT1\s+222\.500.*$", "", text)

    psf, params = ala3_files(tmp_path, drop)
    with pytest.raises(TopologyError) as err:
        read_psf(psf, params)
    message = str(err.value)
    assert "no bond parameters for types CT1-CT3" in message
    assert "atoms 7 CB-5 CA and 2 more" in message and "charmm22.par" in message


def test_missing_lennard_jones_type_is_reported(tmp_path):
    psf, params = ala3_files(
        tmp_path, lambda t: re.sub(r"(?m)^HA\s+0\.0+\s+-0\.022.*$", "", t)
    )
    with pytest.raises(TopologyError, match=r"no NONBONDED .* parameters for types HA"):
        read_psf(psf, params)


def test_psf_without_parameter_files_is_an_error():
    with pytest.raises(TopologyError, match="needs its force-field parameter files"):
        PsfLoader().load_topology(data_path(ALA3[0]), [])


def test_unreadable_inputs_are_input_file_errors(tmp_path):
    with pytest.raises(InputFileError, match="does not exist"):
        read_psf(tmp_path / "missing.psf", [data_path(ALA3[1][1])])
    with pytest.raises(InputFileError, match="does not exist"):
        read_psf(data_path(ALA3[0]), [tmp_path / "missing.prm"])
    bad = tmp_path / "bad.psf"
    bad.write_text(
        "PSF\n\n       1 !NTITLE\n* x\n\n      3 !NATOM\n"
        "       1 A 1 ALA N NH3 -0.3 14.0 0\n"
    )
    with pytest.raises(InputFileError, match=r"bad\.psf"):
        read_psf(bad, [data_path(p) for p in ALA3[1]])


def test_charmm22_energies_in_float32_and_float64_agree():
    state = load_reference("ala3__nocutoff").state()
    pot = bonded(cached_system("ala3"))
    e64 = pot.energy(state)
    e32 = pot.to(torch.float32).energy(state.to(dtype=torch.float32))
    assert abs(float(e32) - float(e64)) <= 1e-5 * abs(float(e64))
