"""The ``nonbonded`` potential: config, conformance, OpenMM parity (random systems)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from torch.testing import assert_close
from torchmd_plugins.nonbonded import nonbonded as nonbonded_module
from torchmd_plugins.nonbonded.nonbonded import Nonbonded

from tests.plugins.nonbonded.conftest import BOXES, replicas
from tests.plugins.nonbonded.openmm_systems import (
    MODES,
    Mode,
    RandomSystem,
    openmm_energy_forces,
    openmm_system,
    openmm_terms,
    random_system,
)
from torchmd_core import ConfigError, PotentialSum, Registry, State, parse_config, units
from torchmd_core.testing import TOLERANCES, check_potential


def make(rs: RandomSystem, **config: object) -> Nonbonded:
    return Nonbonded(Nonbonded.Config(**config), rs.system())  # type: ignore[arg-type]


def state_of(rs: RandomSystem, periodic: bool) -> State:
    box = torch.as_tensor(rs.box)[None] if periodic else None
    return State(positions=torch.as_tensor(rs.positions)[None], box=box)


# ---------------------------------------------------------------- config


def test_registered_as_nonbonded(builtin_registry: Registry) -> None:
    assert builtin_registry.get("potentials", "nonbonded") is Nonbonded


def test_defaults_are_no_cutoff_and_openmm_settings() -> None:
    cfg = Nonbonded.Config()
    assert cfg.cutoff is None and cfg.switch_distance is None
    assert cfg.reaction_field_dielectric == 78.3 and cfg.dispersion_correction
    assert cfg.electrostatics == "reaction_field"


@pytest.mark.parametrize(
    "config, field, words",
    [
        (
            dict(cutoff=9.0, switch_distance=9.0),
            "switch_distance",
            "must be < cutoff (9 Å)",
        ),
        (dict(cutoff=9.0, switch_distance=10.0), "switch_distance", "must be < cutoff"),
        (dict(switch_distance=7.0), "switch_distance", "needs a cutoff"),
        (
            dict(cutoff=9.0, electrostatics="coulomb"),
            "electrostatics",
            "with a cutoff use 'reaction_field'",
        ),
        (dict(cutoff=-1.0), "cutoff", "greater than 0"),
        (
            dict(cutoff=9.0, reaction_field_dielectric=0.5),
            "reaction_field_dielectric",
            "greater than or equal to 1",
        ),
        (
            dict(electrostatics="pme"),
            "electrostatics",
            "'reaction_field', 'coulomb' or 'none'",
        ),
        (dict(cutof=9.0), "cutof", "Extra inputs"),
    ],
)
def test_bad_config_is_rejected(config: dict, field: str, words: str) -> None:
    with pytest.raises(ValidationError) as info:
        Nonbonded.Config(**config)
    (error,) = info.value.errors()
    assert error["loc"] == (field,)
    assert words in str(info.value)


def test_config_error_names_the_field(toy_registry: Registry) -> None:
    data = {
        "system": {"topology": "x.top", "coordinates": "x.crd"},
        "potentials": [{"kind": "nonbonded", "cutoff": 9.0, "switch_distance": 10.0}],
        "integrator": {"kind": "toy.verlet"},
        "steps": 1,
    }
    with pytest.raises(ConfigError) as info:
        parse_config(data, registry=toy_registry)
    text = str(info.value)
    assert (
        "potentials[0] (kind='nonbonded').switch_distance: "
        "must be < cutoff (9 Å), got 10.0" in text
    )


@pytest.mark.parametrize(
    "config, names",
    [
        ({}, ("lj", "coulomb")),
        ({"electrostatics": "coulomb"}, ("lj", "coulomb")),
        ({"electrostatics": "none"}, ("lj",)),
        ({"cutoff": 6.0}, ("lj", "coulomb", "dispersion_correction")),
        ({"cutoff": 6.0, "dispersion_correction": False}, ("lj", "coulomb")),
        ({"cutoff": 6.0, "electrostatics": "none"}, ("lj", "dispersion_correction")),
    ],
)
def test_term_names_follow_the_config(
    small: RandomSystem, config: dict, names: tuple
) -> None:
    pot = make(small, **config)
    assert pot.term_names == names
    for periodic in (False, True) if "cutoff" in config else (False,):
        assert tuple(pot.energy_terms(state_of(small, periodic))) == names


def test_pair_exclusions_are_the_system_exclusions(small: RandomSystem) -> None:
    pot = make(small, cutoff=6.0)
    got = {tuple(p) for p in pot.pair_exclusions().tolist()}
    assert got == {tuple(p) for p in small.exclusions.tolist()}


# ---------------------------------------------------------------- conformance


F64, F32 = torch.float64, torch.float32
SWITCHED = {"cutoff": 6.0, "switch_distance": 5.0, "reaction_field_dielectric": 10.0}


@pytest.mark.parametrize(
    "config, dtype",
    [
        ({}, F64),
        ({}, F32),
        ({"electrostatics": "none"}, F64),
        (SWITCHED, F64),
        (SWITCHED, F32),
    ],
    ids=[
        "nocutoff-f64",
        "nocutoff-f32",
        "lj_only-f64",
        "rf_nonperiodic_switch-f64",
        "rf_nonperiodic_switch-f32",
    ],
)
def test_conforms_without_box(
    small: RandomSystem, config: dict, dtype: torch.dtype
) -> None:
    check_potential(
        make(small, **config), replicas(small, periodic=False).to(dtype=dtype)
    )


@pytest.mark.parametrize(
    "config, box, dtype",
    [
        (SWITCHED, "orthorhombic", F64),
        (SWITCHED, "orthorhombic", F32),
        (SWITCHED, "triclinic", F64),
        (SWITCHED, "triclinic", F32),
        ({"cutoff": 6.0}, "triclinic", F64),
        (
            {"cutoff": 6.0, "electrostatics": "none", "dispersion_correction": False},
            "orthorhombic",
            F64,
        ),
    ],
    ids=[
        "rf_switch-ortho-f64",
        "rf_switch-ortho-f32",
        "rf_switch-tric-f64",
        "rf_switch-tric-f32",
        "rf-tric-f64",
        "lj_nodisp-ortho-f64",
    ],
)
def test_conforms_with_box(
    small: RandomSystem,
    small_triclinic: RandomSystem,
    config: dict,
    box: str,
    dtype: torch.dtype,
) -> None:
    rs = small if box == "orthorhombic" else small_triclinic
    check_potential(make(rs, **config), replicas(rs).to(dtype=dtype))


# ---------------------------------------------------------------- OpenMM parity


def _compare(rs: RandomSystem, mode: Mode) -> None:
    pot = Nonbonded(Nonbonded.Config(**mode.config()), rs.system())
    state = state_of(rs, mode.periodic)
    reference = openmm_terms(rs, mode)
    terms = pot.energy_terms(state)
    energy, forces = pot.energy_and_forces(state)
    e_ref, f_ref = reference.pop("total")
    assert set(terms) == set(reference)
    for name, (e_term, _) in reference.items():
        assert abs(float(terms[name][0]) - e_term) <= max(1e-3, 1e-7 * abs(e_term)), (
            name
        )
    assert abs(float(energy[0]) - e_ref) <= max(1e-3, 1e-7 * abs(e_ref))
    assert np.abs(forces[0].numpy() - f_ref).max() <= 1e-3
    # Per-term forces through autograd of each term.
    positions = state.positions.clone().requires_grad_(True)
    for name, (_, f_term) in reference.items():
        value = pot.energy_terms(state.replace(positions=positions))[name]
        if value.requires_grad:
            (grad,) = torch.autograd.grad(value.sum(), positions)
            assert np.abs(-grad[0].numpy() - f_term).max() <= 1e-3, name


@pytest.mark.parametrize("nbfix", [False, True], ids=["lorentz_berthelot", "nbfix"])
@pytest.mark.parametrize("mode", list(MODES), ids=list(MODES))
def test_matches_openmm_orthorhombic(mode: str, nbfix: bool) -> None:
    _compare(random_system(seed=11, nbfix=nbfix, **BOXES["orthorhombic"]), MODES[mode])


@pytest.mark.parametrize("nbfix", [False, True], ids=["lorentz_berthelot", "nbfix"])
@pytest.mark.parametrize(
    "mode",
    [m for m in MODES if MODES[m].periodic],
    ids=[m for m in MODES if MODES[m].periodic],
)
def test_matches_openmm_triclinic(mode: str, nbfix: bool) -> None:
    _compare(random_system(seed=12, nbfix=nbfix, **BOXES["triclinic"]), MODES[mode])


@pytest.mark.parametrize("mode", ["nocutoff", "rf_nonperiodic", "rf_periodic"])
def test_exceptions_are_plain_uncut_pairs_in_openmm(mode: str) -> None:
    """OpenMM evaluates exceptions (1-4 pairs) as plain Coulomb + LJ without cutoff or
    reaction field, and applies nothing to excluded pairs: its total is our nonbonded
    energy plus that plain sum, which is what the amber potential's lj14/coulomb14
    add."""
    rs = random_system(seed=13, nbfix=False, **BOXES["orthorhombic"])
    rng = np.random.default_rng(0)
    picked = rs.exclusions[rng.choice(len(rs.exclusions), 40, replace=False)]
    exceptions = {
        (int(i), int(j)): (
            rng.normal(0, 0.1),
            rng.uniform(2.5, 3.5),
            rng.uniform(0.05, 0.2),
        )
        for i, j in picked
    }
    e_omm, _ = openmm_energy_forces(
        openmm_system(rs, MODES[mode], exceptions=exceptions), rs
    )
    e_14 = 0.0
    for (i, j), (qq, s, e) in exceptions.items():
        r = np.linalg.norm(rs.positions[j] - rs.positions[i])  # never the minimum image
        e_14 += units.COULOMB_KCAL_MOL_A * qq / r + 4 * e * (
            (s / r) ** 12 - (s / r) ** 6
        )
    assert (
        max(np.linalg.norm(rs.positions[j] - rs.positions[i]) for i, j in picked) > 8.0
    )  # some beyond the cutoff
    pot = Nonbonded(Nonbonded.Config(**MODES[mode].config()), rs.system())
    energy = float(pot.energy(state_of(rs, MODES[mode].periodic))[0])
    assert abs(energy + e_14 - e_omm) <= max(1e-3, 1e-7 * abs(e_omm))


# ---------------------------------------------------------------- behaviour


def test_no_cutoff_ignores_the_box(small: RandomSystem) -> None:
    pot = make(small)
    assert_close(pot.energy(state_of(small, True)), pot.energy(state_of(small, False)))


def test_dispersion_correction_is_zero_without_box_and_scales_with_volume(
    small: RandomSystem,
) -> None:
    pot = make(small, cutoff=6.0, switch_distance=5.0)
    assert (
        pot.energy_terms(state_of(small, False))["dispersion_correction"].item() == 0.0
    )
    state = replicas(small, n=2)
    terms = pot.energy_terms(state)["dispersion_correction"]
    volume = torch.linalg.det(state.box)
    assert_close(terms * volume, terms[:1].expand(2) * volume[:1].expand(2))
    assert terms.requires_grad is False and bool((terms < 0).all())


def test_electrostatics_none_is_the_lj_term(small: RandomSystem) -> None:
    state = state_of(small, True)
    full = make(small, cutoff=6.0).energy_terms(state)
    lj_only = make(small, cutoff=6.0, electrostatics="none")
    assert_close(lj_only.energy(state), full["lj"] + full["dispersion_correction"])


def test_system_without_lj_parameters(small: RandomSystem) -> None:
    system = small.system()
    system.nonbonded = None
    pot = Nonbonded(Nonbonded.Config(cutoff=6.0), system)
    terms = pot.energy_terms(state_of(small, True))
    assert terms["lj"].item() == 0.0 and terms["dispersion_correction"].item() == 0.0
    assert_close(
        terms["coulomb"],
        make(small, cutoff=6.0).energy_terms(state_of(small, True))["coulomb"],
    )


def test_shared_neighbor_list_gives_the_standalone_energy(small: RandomSystem) -> None:
    pot = make(small, cutoff=6.0, switch_distance=5.0)
    total = PotentialSum([pot], system=small.system(), skin=1.5)
    state = replicas(small)
    with torch.no_grad():
        e_shared, f_shared = total.energy_and_forces(state)
        e_alone, f_alone = pot.energy_and_forces(state)
        moved = state.replace(
            positions=state.positions + 0.2 * torch.randn_like(state.positions)
        )
        e_moved = total.energy(moved)
    assert_close(e_shared, e_alone, **TOLERANCES[torch.float64])
    assert_close(f_shared, f_alone, **TOLERANCES[torch.float64])
    assert_close(e_moved, pot.energy(moved), **TOLERANCES[torch.float64])


def test_all_pairs_in_blocks_equals_one_block(
    small: RandomSystem, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a cutoff, big systems are summed in checkpointed row blocks."""
    one = make(small)
    monkeypatch.setattr(nonbonded_module, "_BLOCK_PAIRS", 200)
    blocks = make(small)
    assert len(one._blocks) == 1 and len(blocks._blocks) > 10
    state = replicas(small, periodic=False)
    e1, f1 = one.energy_and_forces(state)
    e2, f2 = blocks.energy_and_forces(state)
    assert_close(e2, e1, **TOLERANCES[torch.float64])
    assert_close(f2, f1, **TOLERANCES[torch.float64])
    # Second derivatives (force matching) go through the checkpointed blocks too.
    for pot in (one, blocks):
        pot.charges.requires_grad_(True)
    g1 = torch.autograd.grad(
        one.energy_and_forces(state)[1].square().sum(), one.charges
    )[0]
    g2 = torch.autograd.grad(
        blocks.energy_and_forces(state)[1].square().sum(), blocks.charges
    )[0]
    assert_close(g2, g1, **TOLERANCES[torch.float64])


@pytest.mark.parametrize(
    "config",
    [{}, {"cutoff": 6.0, "switch_distance": 5.0}],
    ids=["nocutoff", "rf_periodic_switch"],
)
def test_parameters_are_differentiable(small: RandomSystem, config: dict) -> None:
    """σ, ε, charges and pair tables are buffers the energy is rebuilt from."""
    pot = make(small, **config)
    state = state_of(small, "cutoff" in config)
    names = ["sigma", "epsilon", "charges", "pair_c12", "pair_c6"]
    for name in names:
        getattr(pot, name).requires_grad_(True)
    energy = pot.energy(state).sum()
    grads = torch.autograd.grad(energy, [getattr(pot, n) for n in names])
    for name, grad in zip(names, grads, strict=True):
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0, name
    # The ε = 0 type (like water hydrogens) gets a zero, not an infinite, gradient.
    assert small.epsilon[-1] == 0 and grads[1][-1] == 0
    # One component against a central difference.
    h = 1e-6
    with torch.no_grad():
        plus, minus = make(small, **config), make(small, **config)
        plus.sigma[0] += h
        minus.sigma[0] -= h
        fd = (plus.energy(state) - minus.energy(state)).sum() / (2 * h)
    assert_close(grads[0][0], fd, rtol=1e-6, atol=1e-8)


def test_float32_agrees_with_float64(small: RandomSystem) -> None:
    pot = make(small, cutoff=6.0, switch_distance=5.0)
    state = replicas(small)
    e64 = pot.energy(state)
    e32 = pot.to(torch.float32).energy(state.to(dtype=torch.float32))
    assert e32.dtype == torch.float32
    assert_close(e32.double(), e64, rtol=1e-5, atol=1e-4)


@pytest.mark.gpu
def test_cuda_matches_cpu(small: RandomSystem) -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    for config in ({}, {"cutoff": 6.0, "switch_distance": 5.0}):
        pot = make(small, **config)
        state = replicas(small, periodic="cutoff" in config)
        e_cpu, f_cpu = pot.energy_and_forces(state)
        e_gpu, f_gpu = pot.to("cuda").energy_and_forces(state.to(device="cuda"))
        assert_close(e_gpu.cpu(), e_cpu, **TOLERANCES[torch.float64])
        assert_close(f_gpu.cpu(), f_cpu, **TOLERANCES[torch.float64])


@pytest.mark.parametrize(
    "lengths, angles",
    [
        ((24.0, 24.0, 24.0), (60.0, 60.0, 90.0)),
        ((26.0, 26.0, 26.0), (109.4712206, 109.4712206, 109.4712206)),
    ],
    ids=["rhombic_dodecahedron", "truncated_octahedron"],
)
def test_triclinic_pairs_openmm_reference_misses(lengths: tuple, angles: tuple) -> None:
    """In these boxes OpenMM 8.6.1's Reference-platform voxel list misses pairs within
    the cutoff (by its own minimum image); its CPU platform and an O(N²) search do not.
    We list, and so count, exactly the pairs of the O(N²) search."""
    import openmm

    rs = random_system(seed=12, lengths=lengths, angles=angles)
    cutoff = 8.0
    pot = make(rs, cutoff=cutoff, electrostatics="none", dispersion_correction=False)
    state = state_of(rs, True)
    pairs = pot.neighbors(state).pairs
    positions, box = state.positions[0], state.box[0]
    from torchmd_core.geometry import minimum_image

    r = minimum_image(positions[pairs[1]] - positions[pairs[0]], box).norm(dim=-1)
    ours = int((r < cutoff).sum())
    n = rs.n_atoms
    i, j = torch.triu_indices(n, n, 1)
    r_all = minimum_image(positions[j] - positions[i], box).norm(dim=-1)
    excluded = {tuple(p) for p in rs.exclusions.tolist()}
    brute = sum(
        1
        for a, b, x in zip(i.tolist(), j.tolist(), r_all.tolist(), strict=True)
        if x < cutoff and (a, b) not in excluded
    )

    def openmm_count(platform: str) -> int:
        system = openmm.System()
        for _ in range(n):
            system.addParticle(1.0)
        system.setDefaultPeriodicBoxVectors(
            *[openmm.Vec3(*row) * 0.1 for row in rs.box]
        )
        counter = openmm.CustomNonbondedForce("1")  # one unit of energy per listed pair
        for _ in range(n):
            counter.addParticle([])
        for a, b in rs.exclusions.tolist():
            counter.addExclusion(a, b)
        counter.setNonbondedMethod(openmm.CustomNonbondedForce.CutoffPeriodic)
        counter.setCutoffDistance(cutoff * 0.1)
        system.addForce(counter)
        context = openmm.Context(
            system,
            openmm.VerletIntegrator(1e-3),
            openmm.Platform.getPlatformByName(platform),
        )
        context.setPositions(rs.positions * 0.1)
        return round(context.getState(getEnergy=True).getPotentialEnergy()._value)

    assert ours == brute == openmm_count("CPU")
    assert openmm_count("Reference") < ours


@pytest.mark.parametrize(
    "config",
    [
        {},
        {"electrostatics": "none"},
        {"cutoff": 6.0},
        SWITCHED,
        {"cutoff": 6.0, "switch_distance": 4.0, "electrostatics": "none"},
    ],
    ids=["nocutoff", "lj_only", "rf", "rf_switch", "lj_switch"],
)
@pytest.mark.parametrize("periodic", [False, True], ids=["open", "periodic"])
@pytest.mark.parametrize("dtype", [F64, F32], ids=["f64", "f32"])
def test_analytic_forces_equal_autograd(
    small_triclinic: RandomSystem, config: dict, periodic: bool, dtype: torch.dtype
) -> None:
    pot = make(small_triclinic, **config).to(dtype)
    state = replicas(small_triclinic, periodic=periodic).to(dtype=dtype)
    with torch.no_grad():
        e_analytic, f_analytic = pot.energy_and_forces(state)
    positions = state.positions.clone().requires_grad_(True)
    e_graph, f_graph = pot.energy_and_forces(state.replace(positions=positions))
    assert f_graph.requires_grad  # the autograd path, keeping the graph
    assert_close(e_analytic, e_graph.detach(), **TOLERANCES[dtype])
    scale = float(f_graph.detach().abs().max())
    assert_close(
        f_analytic,
        f_graph.detach(),
        rtol=0,
        atol=TOLERANCES[dtype]["atol"] * max(1.0, scale),
    )


def test_analytic_forces_in_blocks(
    small: RandomSystem, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(nonbonded_module, "_BLOCK_PAIRS", 150)
    pot = make(small)
    assert len(pot._blocks) > 10
    state = replicas(small, periodic=False)
    with torch.no_grad():
        e_analytic, f_analytic = pot.energy_and_forces(state)
    positions = state.positions.clone().requires_grad_(True)
    e_graph, f_graph = pot.energy_and_forces(state.replace(positions=positions))
    assert_close(e_analytic, e_graph.detach(), **TOLERANCES[F64])
    assert_close(f_analytic, f_graph.detach(), **TOLERANCES[F64])


def test_coulomb_is_the_no_cutoff_reaction_field(small: RandomSystem) -> None:
    state = state_of(small, False)
    plain = make(small, electrostatics="coulomb").energy_terms(state)
    default = make(small).energy_terms(state)
    assert_close(plain["coulomb"], default["coulomb"], rtol=0, atol=0)


def test_parameters_can_become_trainable(small: RandomSystem) -> None:
    """Issue 7 turns buffers into nn.Parameters; the energy then trains them."""
    pot = make(small, cutoff=6.0)
    pot.epsilon = torch.nn.Parameter(pot.epsilon.clone())
    assert "epsilon" in dict(pot.named_parameters())
    energy = pot.energy(state_of(small, True)).sum()
    energy.backward()
    assert pot.epsilon.grad is not None and torch.isfinite(pot.epsilon.grad).all()
    # With a parameter requiring grad, forces keep their graph (force matching).
    _, forces = pot.energy_and_forces(state_of(small, True))
    assert forces.requires_grad
