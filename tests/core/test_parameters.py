"""Force-field parameters as tensors: the trainable switch, exact gradients of every
family (central finite differences, float64), autograd forces equal to the analytic
ones, and fitted values copied back into a System."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.testing import assert_close
from torchmd_plugins.amber.bonded import AmberBonded
from torchmd_plugins.nonbonded.nonbonded import Nonbonded

from tests.core.ff_systems import (
    potential,
    reference_potential,
    reference_state,
    system,
)
from torchmd_core import ConfigError, PotentialSum, State
from torchmd_core.parameters import (
    fitted_system,
    freeze,
    parameter_names,
    parameter_values,
    trainable,
)
from torchmd_core.testing import TOLERANCES

#: (system, reference mode, families): together every family, on the molecules that
#: have it (UB and harmonic impropers: CHARMM22 tri-alanine; CMAP: CHARMM and ff19SB;
#: pair tables: the modified ala2 table and the CHARMM water box with NBFIX).
BOTH = ("energy", "forces")
CASES = [
    (
        "ala2_vacuum",
        "nocutoff",
        (
            "bonds.k", "bonds.r0", "angles.k", "angles.theta0", "torsions.k",
            "torsions.phase", "impropers.k", "impropers.phase", "pairs14.charge_scale",
            "pairs14.sigma", "pairs14.epsilon", "charges", "nonbonded.sigma",
            "nonbonded.epsilon",
        ),
        BOTH,
    ),
    (
        "ala3",
        "nocutoff",
        (
            "urey_bradley.k", "urey_bradley.r0", "harmonic_impropers.k",
            "harmonic_impropers.psi0", "cmap.grid",
        ),
        BOTH,
    ),
    ("peptide_ff19sb", "nocutoff", ("cmap.grid",), BOTH),
    ("ala2_ljpair", "nocutoff", ("nonbonded.pair_c12", "nonbonded.pair_c6"), BOTH),
    (
        "waterbox",
        "rf_periodic",
        ("charges", "nonbonded.sigma", "nonbonded.epsilon", "bonds.r0", "angles.k"),
        BOTH,
    ),
    # The box's one NBFIX pair (Na+/Cl-) is beyond the cutoff: only the dispersion
    # correction, which exerts no force, depends on it.
    (
        "waterbox", "rf_periodic", ("nonbonded.pair_c12", "nonbonded.pair_c6"),
        ("energy",),
    ),
]  # fmt: skip
FAMILY_CASES = [
    pytest.param(name, mode, family, quantity, id=f"{name}-{family}-{quantity}")
    for name, mode, families, quantities in CASES
    for family in families
    for quantity in quantities
]


def _loss(quantity: str, pot: PotentialSum, state: State) -> torch.Tensor:
    """The total energy, or a fixed random projection of the forces (its gradient
    needs the second derivatives of the energy)."""
    if quantity == "energy":
        return pot.energy(state).sum()
    _, forces = pot.energy_and_forces(state)
    g = torch.Generator().manual_seed(1)
    weights = torch.randn(forces.shape, generator=g, dtype=forces.dtype)
    return (weights * forces).sum()


@pytest.mark.parametrize(("name", "mode", "family", "quantity"), FAMILY_CASES)
def test_gradient_of_every_family_matches_central_differences(
    name, mode, family, quantity
):
    pot = reference_potential(name, mode)
    state = reference_state(name, mode, n_replicas=2)
    param = trainable(pot, family)[family]
    (grad,) = torch.autograd.grad(_loss(quantity, pot, state), param)
    assert bool(grad.abs().max() > 0), f"{family} has no gradient"
    picks = torch.topk(grad.abs().reshape(-1), min(3, grad.numel())).indices
    for flat in picks.tolist():
        index = tuple(torch.unravel_index(torch.tensor(flat), grad.shape))
        # ala3's input structure has clashes (forces ~1e4 kcal/mol/Å): a step much
        # smaller than this would drown in the rounding of the loss.
        h = 1e-4 * max(abs(float(param.detach()[index])), 0.1)
        values = []
        for sign in (1.0, -1.0):
            with torch.no_grad():
                param[index] += sign * h
                values.append(float(_loss(quantity, pot, state)))
                param[index] -= sign * h
        numeric = (values[0] - values[1]) / (2.0 * h)
        assert float(grad[index]) == pytest.approx(numeric, rel=1e-5, abs=1e-7), (
            f"{family}{list(index)}: autograd {float(grad[index])}, FD {numeric}"
        )


@pytest.mark.parametrize(
    ("name", "mode", "changes"),
    [
        ("ala2_vacuum", "nocutoff", {}),
        ("waterbox", "rf_periodic", {}),
        ("waterbox", "rf_periodic", {"switch_distance": 6.0}),
        ("ala2_solv_ljpair", "rf_periodic", {}),
    ],
    ids=["ala2-nocutoff", "waterbox-rf", "waterbox-rf-switch", "ala2_solv_ljpair-rf"],
)
def test_autograd_forces_equal_the_analytic_ones(name, mode, changes):
    sys = system(name)
    cutoff = 7.0 if name == "waterbox" else 9.0  # the references' (15 Å water box)
    config = Nonbonded.Config(cutoff=None if mode == "nocutoff" else cutoff, **changes)
    term = Nonbonded(config, sys).to(dtype=torch.float64)
    state = reference_state(name, mode, n_replicas=2)
    with torch.no_grad():
        e_analytic, f_analytic = term.energy_and_forces(state)
    trainable(term, "nonbonded.epsilon", "charges")
    e_graph, f_graph = term.energy_and_forces(state)
    assert f_graph.requires_grad  # the autograd path, not the analytic one
    assert_close(e_graph.detach(), e_analytic, **TOLERANCES[torch.float64])
    assert_close(f_graph.detach(), f_analytic, **TOLERANCES[torch.float64])


def test_families_are_named_after_the_system_tables():
    names = parameter_names(potential(system("ala3")))
    for family in ("charges", "nonbonded.epsilon", "cmap.grid", "urey_bradley.r0"):
        assert family in names
    values = parameter_values(potential(system("ala3")), "cmap.grid")
    assert_close(values["cmap.grid"], system("ala3").terms["cmap"].values["grid"])


def test_charges_held_by_two_terms_become_one_parameter():
    pot = potential(system("ala2_vacuum"))
    charges = trainable(pot, "charges")["charges"]
    amber, nonbonded = pot.potentials
    assert amber.charges is charges and nonbonded.charges is charges
    assert [n for n, p in pot.named_parameters()] == ["potentials.0.charges"]
    assert trainable(pot, "charges")["charges"] is charges  # idempotent


def test_trainable_parameters_follow_dtype_changes():
    pot = potential(system("ala2_vacuum"))
    charges = trainable(pot, "charges")["charges"]
    pot.to(dtype=torch.float32)
    assert pot.potentials[0].charges is pot.potentials[1].charges
    assert charges.dtype == torch.float32


def test_a_parameter_is_shared_by_every_interaction_of_its_type():
    sys = system("ala2_vacuum")
    pot = potential(sys)
    k = trainable(pot, "bonds.k")["bonds.k"]
    assert k.shape == sys.terms["bonds"].values["k"].shape  # one per type, not per bond
    with torch.no_grad():
        k[sys.terms["bonds"].types[0]] *= 2.0  # changes every bond of that type
    state = reference_state("ala2_vacuum")
    bonds = pot.potentials[0].energy_terms(state)["bonds"]
    table = sys.terms["bonds"]
    r = (
        state.positions[0, table.atoms[:, 0]] - state.positions[0, table.atoms[:, 1]]
    ).norm(dim=-1)
    k_each = table.values["k"][table.types].clone()
    k_each[table.types == table.types[0]] *= 2.0
    expected = (k_each * (r - table.values["r0"][table.types]).square()).sum()
    assert_close(bonds.detach()[0], expected, **TOLERANCES[torch.float64])


def test_types_restrict_which_rows_change():
    pot = potential(system("ala2_vacuum"))
    k = trainable(pot, "torsions.k", types={"torsions.k": [2]})["torsions.k"]
    pot.energy(reference_state("ala2_vacuum")).sum().backward()
    assert k.grad is not None
    assert k.grad[2] != 0.0
    assert bool((k.grad[torch.arange(k.numel()) != 2] == 0).all())


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda pot: trainable(pot, "bond.k"),
            "no force-field parameter named 'bond.k'",
        ),
        (lambda pot: trainable(pot, "torsions.periodicity"), "integers"),
        (lambda pot: trainable(pot), "at least one"),
        (
            lambda pot: trainable(pot, "bonds.k", types={"angles.k": [0]}),
            "not among the names",
        ),
        (lambda pot: trainable(pot, "bonds.k", types={"bonds.k": [99]}), "0..10"),
    ],
    ids=["unknown", "periodicity", "none", "stray-types", "bad-row"],
)
def test_bad_requests_raise_one_clear_error(call, message):
    with pytest.raises(ConfigError, match=message):
        call(potential(system("ala2_vacuum")))


def test_copies_that_differ_cannot_be_tied():
    sys = system("ala2_vacuum")
    amber = AmberBonded(None, sys)
    amber.charges = amber.charges * 2.0
    pot = PotentialSum([amber, Nonbonded(Nonbonded.Config(), sys)], system=sys)
    with pytest.raises(ConfigError, match="differ"):
        trainable(pot, "charges")


def test_freeze_turns_parameters_back_into_buffers():
    pot = potential(system("ala2_vacuum"))
    eps = trainable(pot, "nonbonded.epsilon", "bonds.k")["nonbonded.epsilon"]
    with torch.no_grad():
        eps.mul_(1.5)
    freeze(pot, "nonbonded.epsilon")
    assert [n for n, _ in pot.named_parameters()] == ["potentials.0.tables.bonds.k"]
    assert not isinstance(pot.potentials[1].epsilon, nn.Parameter)
    assert_close(pot.potentials[1].epsilon, eps.detach())
    freeze(pot)
    assert list(pot.parameters()) == []


def test_fitted_system_holds_the_trained_values():
    sys = system("ala2_ljpair")
    pot = potential(sys)
    params = trainable(
        pot, "angles.k", "nonbonded.epsilon", "nonbonded.pair_c12", "charges"
    )
    with torch.no_grad():
        for p in params.values():
            p.mul_(1.1)
    fitted = fitted_system(sys, pot)
    assert_close(
        fitted.terms["angles"].values["k"], 1.1 * sys.terms["angles"].values["k"]
    )
    assert_close(fitted.charges, 1.1 * sys.charges)
    assert fitted.nonbonded is not None and sys.nonbonded is not None
    assert_close(fitted.nonbonded.epsilon, 1.1 * sys.nonbonded.epsilon)
    assert_close(fitted.nonbonded.sigma, sys.nonbonded.sigma)
    # the fitted System gives the trained potential's energies
    state = reference_state("ala2_ljpair")
    assert_close(potential(fitted).energy(state), pot.energy(state).detach())
    assert_close(sys.charges, system("ala2_ljpair").charges)  # the input is unchanged


def test_fitted_system_refuses_a_potential_of_another_system():
    pot = potential(system("ala3"))
    with pytest.raises(ConfigError, match="another system"):
        fitted_system(system("ala2_vacuum"), pot)
