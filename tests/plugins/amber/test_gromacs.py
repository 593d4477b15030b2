"""GROMACS top loader: topologies written by parmed from our other inputs, read back."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torchmd_plugins.amber.gromacs import GromacsTopLoader, read_gromacs_top

from tests.plugins.amber.conftest import (
    bonded,
    cached_system,
    data_path,
    load_reference,
)
from torchmd_core import InputFileError, TopologyError


@pytest.fixture(scope="module")
def ala2_top(tmp_path_factory):
    """ala2_vacuum.prmtop rewritten by parmed as a standalone GROMACS topology."""
    import parmed

    path = tmp_path_factory.mktemp("gmx") / "ala2.top"
    structure = parmed.load_file(str(data_path("ala2_vacuum/ala2_vacuum.prmtop")))
    structure.save(str(path), format="gromacs")
    return path


@pytest.fixture(scope="module")
def ala3_top(tmp_path_factory):
    """The CHARMM22 tripeptide (UB, harmonic impropers, CMAP) as a GROMACS topology."""
    import parmed

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        psf = parmed.charmm.CharmmPsfFile(str(data_path("ala3/ala_ala_ala.psf")))
        psf.load_parameters(
            parmed.charmm.CharmmParameterSet(
                str(data_path("ala3/charmm22.rtf")), str(data_path("ala3/charmm22.par"))
            )
        )
        path = tmp_path_factory.mktemp("gmx") / "ala3.top"
        parmed.gromacs.GromacsTopologyFile.from_structure(psf).write(str(path))
    return path


def test_amber_topology_round_trips(ala2_top):
    system = read_gromacs_top(ala2_top)
    reference = cached_system("ala2_vacuum")
    assert torch.equal(system.exclusions, reference.exclusions)
    assert torch.equal(system.bonds, reference.bonds)
    state = load_reference("ala2_vacuum__nocutoff").state()
    ours, theirs = (
        bonded(system).energy_terms(state),
        bonded(reference).energy_terms(state),
    )
    assert set(ours) == set(theirs)
    for name in theirs:  # the top holds parameters to 7-8 digits
        assert float(ours[name]) == pytest.approx(float(theirs[name]), rel=1e-6), name


def test_charmm_terms_survive_the_gromacs_format(ala3_top):
    system = read_gromacs_top(ala3_top)
    state = load_reference("ala3__nocutoff").state()
    ours = bonded(system).energy_terms(state)
    reference = bonded(cached_system("ala3")).energy_terms(state)
    # parmed writes CHARMM 1-4 LJ as gen-pairs (losing the 1-4 ε, Rmin): all else must
    # agree
    for name in (
        "bonds",
        "angles",
        "urey_bradley",
        "torsions",
        "harmonic_impropers",
        "cmap",
        "coulomb14",
    ):
        assert float(ours[name]) == pytest.approx(
            float(reference[name]), rel=1e-9, abs=1e-9
        ), name


def test_matches_openmm_gromacs_top_file(ala2_top):
    pytest.importorskip("openmm")
    import openmm.app as app

    from tests.plugins.amber.openmm_reference import evaluate
    from torchmd_core import PotentialSum, default_registry

    omm = app.GromacsTopFile(str(ala2_top)).createSystem(
        nonbondedMethod=app.NoCutoff, constraints=None, rigidWater=False
    )
    ref = load_reference("ala2_vacuum__nocutoff")
    want_e, want_f = evaluate(omm, ref.positions.numpy())
    registry = default_registry()
    system = registry.loader_for(ala2_top, "topology").load_topology(ala2_top, [])
    amber, nonbonded = (
        registry.get("potentials", "amber"),
        registry.get("potentials", "nonbonded"),
    )
    potential = PotentialSum(
        [amber(amber.Config(), system), nonbonded(nonbonded.Config(), system)],
        system=system,
    )
    e, f = potential.energy_and_forces(ref.state())
    assert abs(float(e) - want_e) < 1e-8
    assert np.abs(f[0].detach().numpy() - want_f).max() < 1e-8


def test_geometric_combination_rule_becomes_pair_overrides(ala2_top, tmp_path):
    text = ala2_top.read_text()
    lines = text.splitlines()
    k = next(
        i
        for i, line in enumerate(lines)
        if line.strip().startswith("1") and "yes" in line
    )
    lines[k] = "1               3               yes             0.5          0.83333333"
    path = tmp_path / "geometric.top"
    path.write_text("\n".join(lines) + "\n")
    nb = read_gromacs_top(path).nonbonded
    assert nb is not None and nb.pair_mask is not None
    c12, c6 = nb.lj_tables()
    i, j = 0, 1
    s = (nb.sigma[i] * nb.sigma[j]).sqrt()
    e = (nb.epsilon[i] * nb.epsilon[j]).sqrt()
    torch.testing.assert_close(c6[i, j], 4 * e * s**6)
    torch.testing.assert_close(c12[i, j], 4 * e * s**12)


def test_ryckaert_bellemans_torsions_are_refused(tmp_path):
    top = """[ defaults ]
1 2 yes 0.5 0.8333
[ atomtypes ]
C 6 12.01 0.0 A 0.34 0.36
[ moleculetype ]
MOL 3
[ atoms ]
1 C 1 MOL C1 1 0.0 12.01
2 C 1 MOL C2 2 0.0 12.01
3 C 1 MOL C3 3 0.0 12.01
4 C 1 MOL C4 4 0.0 12.01
[ bonds ]
1 2 1 0.15 200000
2 3 1 0.15 200000
3 4 1 0.15 200000
[ angles ]
1 2 3 1 110 400
2 3 4 1 110 400
[ dihedrals ]
1 2 3 4 3 9.28 12.16 -13.12 -3.06 26.24 -31.5
[ system ]
butane
[ molecules ]
MOL 1
"""
    path = tmp_path / "rb.top"
    path.write_text(top)
    with pytest.raises(TopologyError, match="Ryckaert-Bellemans"):
        GromacsTopLoader().load_topology(path)


def test_missing_include_is_an_input_file_error(tmp_path):
    path = tmp_path / "inc.top"
    path.write_text(
        '#include "amber99sb.ff/forcefield.itp"\n[ system ]\nx\n[ molecules ]\n'
    )
    with pytest.raises(InputFileError, match=r"inc\.top"):
        read_gromacs_top(path)


def test_includes_are_found_in_a_parameters_folder(ala2_top, tmp_path):
    """A topology that #includes a force-field file kept elsewhere, found through the
    folder given as a parameters entry (as `tmd energy --parameters DIR`)."""
    text = ala2_top.read_text()
    start = text.index("[ defaults ]")
    end = text.index("[ moleculetype ]")
    ff = tmp_path / "ff"
    ff.mkdir()
    (ff / "myff.itp").write_text(text[start:end])
    top = tmp_path / "top" / "ala2.top"
    top.parent.mkdir()
    top.write_text(text[:start] + '#include "myff.itp"\n\n' + text[end:])
    with pytest.raises(InputFileError):
        read_gromacs_top(top)
    system = read_gromacs_top(top, [ff])
    assert torch.equal(system.bonds, read_gromacs_top(ala2_top).bonds)
