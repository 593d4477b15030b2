"""Exporting fitted parameters to a prmtop: write, reload with our loader, same
energies."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torchmd_plugins.amber.prmtop import read_prmtop

from tests.conftest import DATA
from tests.core.ff_systems import potential, reference_state, system
from torchmd_core import PotentialSum, State, System
from torchmd_core.export import ExportError, export_parameters
from torchmd_core.parameters import parameter_names, trainable


def perturb(pot: PotentialSum, *families: str, seed: int = 0) -> None:
    """Multiply every entry of the families by a random factor in [0.95, 1.05]."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in trainable(pot, *families).values():
            param.mul_(
                1.0
                + 0.1 * (torch.rand(param.shape, generator=g, dtype=param.dtype) - 0.5)
            )


def round_trip(
    sys: System, pot: PotentialSum, tmp_path: Path, **kwargs: object
) -> System:
    path = tmp_path / "fitted.prmtop"
    export_parameters(sys, pot, **kwargs).save(str(path), overwrite=True)
    return read_prmtop(path)


def assert_same_energies(pot: PotentialSum, reloaded: System, state: State) -> None:
    before = {k: float(v.detach()) for k, v in pot.energy_terms(state).items()}
    after = {k: float(v) for k, v in potential(reloaded).energy_terms(state).items()}
    assert before.keys() == after.keys()
    for term, value in before.items():
        # a prmtop stores 9 significant digits (bond r0 to 1e-8 Å is the coarsest)
        assert after[term] == pytest.approx(value, rel=1e-6, abs=1e-5), term


def continuous_families(pot: PotentialSum, *, sigma: bool = False) -> list[str]:
    """Every family but the periodicities, pair tables and (unless asked) the σ's."""
    skip = ("periodicity", "pair_c") + (() if sigma else ("sigma",))
    return [n for n in parameter_names(pot) if not any(s in n for s in skip)]


def test_amber_parameters_survive_a_round_trip(tmp_path):
    sys = system("ala2_vacuum")
    pot = potential(sys)
    # ε of the LJ types and of the 1-4 pairs change independently: SCNB carries it
    perturb(pot, *continuous_families(pot))
    reloaded = round_trip(sys, pot, tmp_path)
    assert_same_energies(pot, reloaded, reference_state("ala2_vacuum"))


def test_pair_tables_survive_a_round_trip(tmp_path):
    sys = system("ala2_ljpair")
    pot = potential(sys)
    perturb(pot, "nonbonded.epsilon", seed=3)
    c12, c6 = trainable(pot, "nonbonded.pair_c12", "nonbonded.pair_c6").values()
    with torch.no_grad():  # the same factor on c12 and c6: ε changes, σ (1-4 too) not
        factor = 1.0 + 0.1 * torch.rand(c12.shape, dtype=c12.dtype)
        factor = 0.5 * (factor + factor.T)
        c12.mul_(factor)
        c6.mul_(factor)
    reloaded = round_trip(sys, pot, tmp_path)
    assert reloaded.nonbonded is not None and reloaded.nonbonded.pair_mask is not None
    assert_same_energies(pot, reloaded, reference_state("ala2_ljpair"))


@pytest.mark.filterwarnings("ignore::parmed.exceptions.ParameterWarning")
def test_charmm_terms_survive_a_round_trip_through_a_chamber_prmtop(tmp_path):
    parmed = pytest.importorskip("parmed")
    psf = parmed.charmm.CharmmPsfFile(str(DATA / "ala3/ala_ala_ala.psf"))
    psf.load_parameters(
        parmed.charmm.CharmmParameterSet(
            str(DATA / "ala3/charmm22.rtf"), str(DATA / "ala3/charmm22.par")
        )
    )
    chamber = tmp_path / "ala3.prmtop"
    parmed.amber.ChamberParm.from_structure(psf).save(str(chamber))
    sys = read_prmtop(chamber)
    assert {"urey_bradley", "harmonic_impropers", "cmap"} <= set(sys.terms)
    pot = potential(sys)
    families = [f for f in continuous_families(pot) if f != "pairs14.charge_scale"]
    perturb(pot, *families, seed=1)
    reloaded = round_trip(sys, pot, tmp_path)
    assert_same_energies(pot, reloaded, reference_state("ala3"))


def test_unchanged_parameters_export_as_they_were(tmp_path):
    sys = system("ala2_vacuum")
    reloaded = round_trip(sys, None, tmp_path)
    assert_same_energies(potential(sys), reloaded, reference_state("ala2_vacuum"))


def test_a_1_4_sigma_no_prmtop_can_hold_is_refused():
    sys = system("ala2_vacuum")
    pot = potential(sys)
    perturb(pot, "nonbonded.sigma")
    with pytest.raises(ExportError, match=r"1-4 pair .* differs from the LJ table"):
        export_parameters(sys, pot)


def test_a_system_not_read_from_a_prmtop_needs_a_template():
    with pytest.raises(ExportError, match="needs an AMBER prmtop template"):
        export_parameters(system("ala3"))


def test_a_template_of_another_molecule_is_refused():
    with pytest.raises(ExportError, match="atoms"):
        export_parameters(
            system("ala2_vacuum"), template=DATA / "ala2_solv/structure.prmtop"
        )


def test_a_template_that_is_no_prmtop_is_refused():
    parmed = pytest.importorskip("parmed")
    with pytest.raises(ExportError, match="must be an AMBER prmtop"):
        export_parameters(system("ala2_vacuum"), template=parmed.Structure())
