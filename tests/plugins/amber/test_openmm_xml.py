"""OpenMM System XML loader: term assignment, the PDB for names, and errors."""

from __future__ import annotations

import pytest
import torch
from torchmd_plugins.amber.openmm_xml import OpenMMXmlLoader, read_openmm_xml

from tests.plugins.amber.conftest import (
    bonded,
    cached_system,
    data_path,
    load_reference,
)
from torchmd_core import InputFileError, TopologyError

FF19SB = data_path("peptide_ff19sb/system.xml")


def test_names_residues_and_bonds_come_from_the_pdb():
    system = cached_system("peptide_ff19sb")
    assert system.atom_names[:2] == ("CH3", "H1") and system.residues[0].name == "ACE"
    assert system.atomic_numbers[:2].tolist() == [6, 1]
    assert len(system.terms["cmap"]) == 7 and "impropers" in system.terms
    assert system.box is None  # NoCutoff: the XML's default box is not a periodic box


def test_periodic_system_keeps_the_exact_triclinic_box():
    box = cached_system("peptide_dodec").box
    expected = torch.tensor(
        [[27.0, 0, 0], [0, 27.0, 0], [13.5, 13.5, 19.091883092036785]],
        dtype=torch.float64,
    )
    torch.testing.assert_close(box, expected, rtol=0, atol=1e-12)


def test_without_a_pdb_elements_come_from_masses(tmp_path):
    xml = tmp_path / "alone.xml"
    xml.write_text(FF19SB.read_text())
    system = read_openmm_xml(xml)
    reference = cached_system("peptide_ff19sb")
    assert system.atomic_numbers.tolist() == reference.atomic_numbers.tolist()
    state = load_reference("peptide_ff19sb__nocutoff").state()
    torch.testing.assert_close(
        bonded(system).energy(state), bonded(reference).energy(state)
    )


def test_loader_is_chosen_by_extension(builtin_registry):
    assert isinstance(builtin_registry.loader_for(FF19SB, "topology"), OpenMMXmlLoader)


def edited(tmp_path, old: str, new: str, count: int = 1):
    text = FF19SB.read_text()
    assert old in text
    path = tmp_path / "edited.xml"
    path.write_text(text.replace(old, new, count))
    return path


def test_not_a_system_xml_is_refused(tmp_path):
    path = tmp_path / "ff.xml"
    path.write_text("<ForceField><AtomTypes/></ForceField>")
    with pytest.raises(InputFileError, match="not a serialized OpenMM System"):
        read_openmm_xml(path)


def test_truncated_xml_is_refused(tmp_path):
    path = tmp_path / "cut.xml"
    path.write_text(FF19SB.read_text()[:5000])
    with pytest.raises(InputFileError, match="not valid XML"):
        read_openmm_xml(path)


def test_unsupported_forces_are_named(tmp_path):
    path = edited(tmp_path, 'type="CMAPTorsionForce"', 'type="GBSAOBCForce"')
    with pytest.raises(TopologyError, match="GBSAOBCForce"):
        read_openmm_xml(path)


def test_unsupported_virtual_sites_are_refused(tmp_path):
    """(Supported sites are tested in test_virtual_sites.py.)"""
    path = edited(
        tmp_path,
        '<Particle mass="12.01"/>',
        '<Particle mass="0"><SymmetrySite p1="1" useBoxVectors="0"/></Particle>',
    )
    with pytest.raises(TopologyError, match="virtual site of type SymmetrySite"):
        read_openmm_xml(path)


def test_malformed_numbers_are_reported(tmp_path):
    path = edited(tmp_path, '<Particle mass="12.01"/>', '<Particle mass="twelve"/>')
    with pytest.raises(InputFileError, match="mass='twelve'"):
        read_openmm_xml(path)


def test_pdb_with_another_atom_count_is_refused(tmp_path):
    with pytest.raises(
        TopologyError,
        match=r"1148 atoms .* 99|99 atoms|has \d+ atoms but the OpenMM System",
    ):
        read_openmm_xml(FF19SB, [data_path("peptide_dodec/structure.pdb")])


def test_only_a_pdb_is_accepted_as_parameter_file():
    with pytest.raises(TopologyError, match="at most one PDB"):
        read_openmm_xml(FF19SB, [data_path("ala3/charmm22.par")])


def test_custom_forces_with_other_expressions_are_refused(tmp_path):
    xml = data_path("peptide_charmm36/system.xml").read_text()
    path = tmp_path / "custom.xml"
    path.write_text(
        xml.replace('energy="k*(theta-theta0)^2"', 'energy="k*cos(theta-theta0)"')
    )
    with pytest.raises(TopologyError, match="not a harmonic improper"):
        read_openmm_xml(path, [data_path("peptide_charmm36/structure.pdb")])
