"""CHARMM parameter files read with OpenMM's CharmmParameterSet semantics."""

from __future__ import annotations

from pathlib import Path

import pytest
from torchmd_plugins.amber.charmm import (
    CharmmParameterSet,
    cmap_type_key,
    file_kind,
    match_with_wildcards,
)

from tests.plugins.amber.conftest import data_path
from torchmd_core import InputFileError

BASE = """* test parameters
*
ATOMS
MASS   1 CA    12.011 C
MASS   2 HA     1.008 H
MASS   3 NX    14.007 N

BONDS
CA  HA   340.0  1.08  ! a comment
ca  nx   300.0  1.40

ANGLES
HA  CA  NX   50.0  120.0   20.0  2.10
HA  CA  HA   35.0  109.5

DIHEDRALS
HA  CA  NX  HA    0.20  3    0.0
HA  CA  NX  HA    0.10  2  180.0
X   CA  NX  X     0.05  3    0.0

IMPROPER
NX  X   X   CA   10.0   0    0.0
CA  HA  HA  NX   20.0   0   15.0

NONBONDED nbxmod  5 atom cdiel shift vatom vdistance vswitch -
cutnb 14.0 ctofnb 12.0 ctonnb 10.0 eps 1.0 e14fac 0.8 wmin 1.5
CA   0.0  -0.07   1.99   0.0  -0.01  1.90
HA   0.0  -0.02   1.30
NX   0.0  -0.20   1.85

NBFIX
CA  NX  -0.30  3.50
CA  ZZ  -0.30  3.50

HBOND CUTHB 0.5
END
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.fixture
def params(tmp_path) -> CharmmParameterSet:
    return CharmmParameterSet.from_files([write(tmp_path, "test.prm", BASE)])


def test_sections_are_read_case_insensitively_without_comments(params):
    assert params.bonds[("CA", "HA")] == (340.0, 1.08)
    assert params.bonds[("CA", "NX")] == (300.0, 1.40)
    assert params.angles[("HA", "CA", "NX")] == (50.0, 120.0)
    assert params.urey_bradley[("HA", "CA", "NX")] == (20.0, 2.10)
    assert params.urey_bradley[("HA", "CA", "HA")] is None
    assert (
        params.mass_types["NX"].mass == 14.007
        and params.mass_types["NX"].element == "N"
    )


def test_continued_nonbonded_header_sets_nbxmod_and_e14fac(params):
    assert params.nbxmod == 5 and params.e14fac == 0.8
    assert params.lj["CA"].epsilon == -0.07 and params.lj["CA"].rmin14_half == 1.90
    assert params.lj["HA"].epsilon14 == -0.02 and params.lj["HA"].rmin14_half == 1.30


def test_dihedral_terms_accumulate_by_periodicity(params, tmp_path):
    assert params.dihedrals[("HA", "CA", "NX", "HA")] == [
        (0.20, 3, 0.0),
        (0.10, 2, 180.0),
    ]
    later = write(
        tmp_path,
        "later.str",
        "read para card flex append\nDIHEDRALS\n"
        "HA CA NX HA  0.50 3 0.0\nHA CA NX HA 0.30 1 0.0\nEND\n",
    )
    both = CharmmParameterSet.from_files([later, tmp_path / "test.prm"])
    # The stream file is read after the parameter file whatever the order given; the
    # n = 3 term is replaced, n = 1 added, n = 2 kept (OpenMM's rule).
    assert both.dihedrals[("HA", "CA", "NX", "HA")] == [
        (0.50, 3, 0.0),
        (0.10, 2, 180.0),
        (0.30, 1, 0.0),
    ]


def test_improper_with_seven_columns_takes_the_seventh_as_psi0(params):
    assert params.impropers[("CA", "HA", "HA", "NX")] == (20.0, 15.0)
    assert params.impropers[("CA", "X", "X", "NX")] == (10.0, 0.0)


def test_nbfix_applies_only_between_defined_types(params):
    assert params.nbfix == {("CA", "NX"): (3.50, 0.30, 3.50, 0.30)}


def test_wildcards_match_in_openmm_order():
    table = {
        ("X", "CA", "NX", "X"): "two",
        ("CA", "X", "NX", "HA"): "one",
    }
    _, value = match_with_wildcards(
        ("HA", "NX", "CA", "X2"), {**table, ("HA", "NX", "CA", "X2"): "exact"}
    )
    assert value == "exact"
    assert (
        match_with_wildcards(("HA", "NX", "CA", "CA"), table)[1] == "one"
    )  # 1 wildcard beats 2
    assert match_with_wildcards(("HB", "CA", "NX", "HB"), table) == (
        ("X", "CA", "NX", "X"),
        "two",
    )
    assert match_with_wildcards(("HB", "CB", "NX", "HB"), table) is None


def test_stream_file_sections_are_dispatched(tmp_path):
    stream = write(
        tmp_path,
        "ions.str",
        "* ions\n*\nread rtf card append\n* title\n*\n"
        "MASS  -1  SOD  22.98977  NA\nEND\n\n"
        "read para card flex append\nNONBONDED\nSOD 0.0 -0.0469 1.41075\nEND\n",
    )
    params = CharmmParameterSet.from_files([stream])
    assert params.mass_types["SOD"].element == "NA"
    assert params.lj["SOD"].rmin_half == 1.41075


def test_commented_mass_lines_are_kept_as_a_fallback(tmp_path):
    params = CharmmParameterSet.from_files(
        [
            write(
                tmp_path,
                "lig.prm",
                "!MASS  122 C2N2 12.011 C\nBONDS\nC2N2 C2N2 300.0 1.4\nEND\n",
            )
        ]
    )
    assert "C2N2" not in params.mass_types
    assert params.commented_masses["C2N2"].mass == 12.011


def test_cmap_grids_are_read_and_checked(tmp_path):
    grid = "\n".join(
        " ".join(str(float(i * 4 + j)) for j in range(4)) for i in range(4)
    )
    good = write(
        tmp_path, "cmap.prm", f"CMAP\nC NH1 CT1 C NH1 CT1 C NH1 4\n{grid}\nEND\n"
    )
    params = CharmmParameterSet.from_files([good])
    size, data = params.cmaps[
        cmap_type_key(("C", "NH1", "CT1", "C", "NH1", "CT1", "C", "NH1"))
    ]
    assert size == 4 and data[5] == 5.0
    bad = write(
        tmp_path, "bad.prm", "CMAP\nC NH1 CT1 C NH1 CT1 C NH1 4\n1.0 2.0\nEND\n"
    )
    with pytest.raises(InputFileError, match=r"bad.prm.*2 values for a 4x4 grid"):
        CharmmParameterSet.from_files([bad])


def test_malformed_numbers_name_the_file_and_line(tmp_path):
    bad = write(tmp_path, "bad.prm", "BONDS\nCA HA 340.0 1.08\nCA HB 3x0.0 1.08\n")
    with pytest.raises(InputFileError, match=r"bad.prm' line 3.*bond"):
        CharmmParameterSet.from_files([bad])


def test_file_kinds_follow_openmm():
    assert file_kind(Path("par_all36m_prot.prm")) == "par"
    assert file_kind(Path("top_all22_prot.rtf")) == "rtf"
    assert file_kind(Path("toppar/par_all22_prot.inp")) == "par"
    assert file_kind(Path("toppar_water_ions.str")) == "str"
    with pytest.raises(InputFileError, match="cannot tell its kind"):
        file_kind(Path("params.txt"))


def test_real_charmm22_and_charmm36_files_parse():
    c22 = CharmmParameterSet.from_files(
        [data_path("ala3/charmm22.rtf"), data_path("ala3/charmm22.par")]
    )
    assert c22.type_numbers[56] == "NH3" and c22.cmaps
    c36 = CharmmParameterSet.from_files([data_path("waterbox/parameters.prm")])
    assert ("CLA", "SOD") in c36.nbfix and len(c36.cmaps) >= 6
