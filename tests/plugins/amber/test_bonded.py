"""The ``amber`` potential: per-term energies and forces against OpenMM, conformance."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.plugins.amber.conftest import bonded, cached_system, load_reference
from torchmd_core import ConfigError, State
from torchmd_core.testing import check_potential, random_state

# (system, stored reference): every system with its own bonded terms.
CASES = [
    ("ala2_solv", "ala2_solv__rf_periodic"),
    ("ala2_vacuum", "ala2_vacuum__nocutoff"),
    ("ala2_ljpair", "ala2_ljpair__nocutoff"),
    ("ala3", "ala3__nocutoff"),
    ("benzamidine", "benzamidine__nocutoff"),
    ("waterbox", "waterbox__rf_periodic"),
    ("peptide_ff19sb", "peptide_ff19sb__nocutoff"),
    ("peptide_dodec", "peptide_dodec__rf_periodic"),
]


@pytest.mark.parametrize(("system", "reference"), CASES, ids=[c[0] for c in CASES])
def test_every_bonded_term_matches_openmm(system, reference):
    ref = load_reference(reference)
    pot = bonded(cached_system(system))
    assert set(pot.term_names) == set(ref.bonded_terms)
    state = ref.state()
    with torch.no_grad():
        energies = pot.energy_terms(state)
    for term in ref.bonded_terms:
        e = float(energies[term][0])
        want = ref.energies[term]
        assert abs(e - want) <= max(1e-6, 1e-9 * abs(want)), (term, e, want)
        _, forces = bonded(cached_system(system), term).energy_and_forces(state)
        err = np.abs(forces[0].numpy() - ref.forces[term]).max()
        assert err < 1e-6, (term, err)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_conformance_on_a_solvated_periodic_system(dtype):
    system = cached_system("ala2_solv")
    ref = load_reference("ala2_solv__rf_periodic")
    positions = torch.stack(
        [ref.positions, ref.positions + 0.02 * torch.randn_like(ref.positions)]
    )
    box = ref.box.expand(2, 3, 3)
    state = State(positions=positions, box=box).to(dtype=dtype)
    check_potential(bonded(system), state, fd_tolerance=2e-4)


def test_conformance_with_cmap_and_urey_bradley():
    state = load_reference("ala3__nocutoff").state()
    state = State.concatenate([state, state.replace(positions=state.positions + 0.01)])
    check_potential(bonded(cached_system("ala3")), state)


def test_float32_agrees_with_float64():
    ref = load_reference("ala2_solv__rf_periodic")
    pot = bonded(cached_system("ala2_solv"))
    e64 = pot.energy(ref.state())
    e32 = pot.to(torch.float32).energy(ref.state(torch.float32))
    assert abs(float(e32) - float(e64)) <= 1e-5 * abs(float(e64))


def test_terms_option_selects_a_subset():
    system = cached_system("ala3")
    pot = bonded(system, "cmap", "bonds")
    assert pot.term_names == ("bonds", "cmap")
    state = load_reference("ala3__nocutoff").state()
    terms = pot.energy_terms(state)
    assert set(terms) == {"bonds", "cmap"}
    torch.testing.assert_close(pot.energy(state), terms["bonds"] + terms["cmap"])


def test_requesting_a_term_the_topology_lacks_is_an_error():
    with pytest.raises(ConfigError, match="'cmap' requested"):
        bonded(cached_system("ala2_vacuum"), "cmap")


def test_parameters_stay_per_type_and_gradients_reach_them():
    system = cached_system("ala2_solv")
    pot = bonded(system)
    bonds = pot.tables["bonds"]
    assert bonds.k.shape[0] < len(bonds)  # 687 bonds share a handful of types
    bonds.k.requires_grad_(True)
    state = load_reference("ala2_solv__rf_periodic").state()
    energy = pot.energy(state)
    (grad,) = torch.autograd.grad(energy.sum(), bonds.k)
    assert grad.shape == bonds.k.shape and grad.abs().sum() > 0


def test_periodic_energy_ignores_which_image_each_atom_is_in():
    ref = load_reference("ala2_solv__rf_periodic")
    pot = bonded(cached_system("ala2_solv"))
    state = ref.state()
    shift = torch.zeros_like(state.positions)
    shift[:, ::3] = state.box[:, 0]  # move every third atom by a box vector
    shift[:, 1::5] -= state.box[:, 2]
    torch.testing.assert_close(
        pot.energy(state.replace(positions=state.positions + shift)), pot.energy(state)
    )


def test_replicas_are_evaluated_independently():
    system = cached_system("ala3")
    state = random_state(system, n_replicas=3, temperature_K=None, spacing=1.4)
    pot = bonded(system)
    batched = pot.energy(state)
    single = torch.cat([pot.energy(state.select([r])) for r in range(3)])
    torch.testing.assert_close(batched, single)
