"""Virtual sites: placement and force distribution against OpenMM and autograd, and how
PotentialSum, System and Simulation use them."""

from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from torchmd_core import (
    Potential,
    PotentialConfig,
    PotentialSum,
    Residue,
    State,
    System,
    TopologyError,
    VirtualSites,
    distribute_site_forces,
    place_virtual_sites,
)
from torchmd_core.virtual_sites import site_positions

KJ, NM = 1.0 / 4.184, 10.0

#: atoms 0-2 and 8-10 are real; 3..7 and 11 are sites of every kind.
N_ATOMS = 12
REAL = [0, 1, 2, 8, 9, 10]


def make_sites() -> VirtualSites:
    return VirtualSites.build(
        linear=[
            (3, (0, 1, 2), (0.70, 0.15, 0.15)),  # OPC-like three-particle average
            (4, (8, 9), (0.3, 0.7)),  # two-particle average
        ],
        out_of_plane=[
            (5, (0, 1, 2), (-0.34, -0.34, -0.64)),  # TIP5P-like lone pair, wc in 1/Å
            (11, (8, 10, 9), (0.2, -0.1, 0.5)),
        ],
        local=[
            (6, (0, 1, 2), ((1, 0, 0), (-1, 1, 0), (-1, 0, 1)), (0.3, 0.4, -0.2)),
            (
                7,
                (0, 1, 2, 8),
                ((0.25,) * 4, (-1, 1, 0, 0), (-1, 0, 0, 1)),
                (0.5, -0.3, 0.8),
            ),
        ],
    )


def make_system(sites: VirtualSites | None = None) -> System:
    sites = make_sites() if sites is None else sites
    masses = torch.zeros(N_ATOMS, dtype=torch.float64)
    masses[REAL] = torch.tensor([16.0, 1.0, 1.0, 12.0, 1.0, 14.0], dtype=torch.float64)
    return System(
        masses=masses,
        charges=torch.zeros(N_ATOMS, dtype=torch.float64),
        atomic_numbers=torch.zeros(N_ATOMS, dtype=torch.int64),
        atom_names=tuple(f"A{i}" for i in range(N_ATOMS)),
        atom_types=("X",) * N_ATOMS,
        residue_index=torch.zeros(N_ATOMS, dtype=torch.int64),
        residues=(Residue("MOL", 1),),
        bonds=torch.tensor([[0, 1], [0, 2], [8, 9], [8, 10]]),
        exclusions=torch.zeros(0, 2, dtype=torch.int64),
        virtual_sites=sites,
    )


def random_positions(n_replicas: int = 2, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_replicas, N_ATOMS, 3, generator=g, dtype=torch.float64)
    x[:, 8:] += 3.0  # a second molecule beside the first
    return x


class Springs(Potential):
    """E = Σ k (|x_i − x_j| − r0)² over fixed pairs + Σ_i g_i · x_i (a field)."""

    class Config(PotentialConfig):
        kind: Literal["test.springs"] = "test.springs"

    pairs = torch.tensor(
        [[3, 9], [4, 0], [5, 10], [6, 11], [7, 1], [3, 6], [11, 2], [0, 9]]
    )

    def __init__(self) -> None:
        super().__init__(self.Config(), None)
        g = torch.Generator().manual_seed(7)
        self.register_buffer(
            "field", torch.randn(N_ATOMS, 3, generator=g, dtype=torch.float64)
        )

    def energy(self, state: State) -> torch.Tensor:
        x = state.positions
        r = torch.linalg.vector_norm(
            x[:, self.pairs[:, 0]] - x[:, self.pairs[:, 1]], dim=-1
        )
        return 3.0 * (r - 1.2).square().sum(-1) + (self.field * x).sum((1, 2))


# -- OpenMM ----------------------------------------------------------------------------


def openmm_system(sites: VirtualSites):
    """The same particles and sites as an OpenMM System (nm, kJ/mol), and Springs."""
    openmm = pytest.importorskip("openmm")
    system = openmm.System()
    masses = make_system(sites).masses
    for m in masses.tolist():
        system.addParticle(m)
    linear = zip(
        sites.linear_sites, sites.linear_parents, sites.linear_weights, strict=True
    )
    for s, p, w in (tuple(t.tolist() for t in row) for row in linear):
        if w[2] == 0.0:
            system.setVirtualSite(
                s, openmm.TwoParticleAverageSite(p[0], p[1], w[0], w[1])
            )
        else:
            system.setVirtualSite(s, openmm.ThreeParticleAverageSite(*p, *w))
    oop = zip(sites.out_of_plane_sites, sites.out_of_plane_parents,
              sites.out_of_plane_weights, strict=True)  # fmt: skip
    for s, p, w in (tuple(t.tolist() for t in row) for row in oop):
        system.setVirtualSite(s, openmm.OutOfPlaneSite(*p, w[0], w[1], w[2] * NM))
    local = zip(sites.local_sites, sites.local_parents, sites.local_weights,
                sites.local_positions, strict=True)  # fmt: skip
    for s, p, w, lp in (tuple(t.tolist() for t in row) for row in local):
        n = len(set(p))
        system.setVirtualSite(
            s,
            openmm.LocalCoordinatesSite(
                p[:n], w[0][:n], w[1][:n], w[2][:n], openmm.Vec3(*lp) / NM
            ),
        )
    springs = Springs()
    bond = openmm.CustomBondForce("k*(r-r0)^2")
    bond.addGlobalParameter("k", 3.0 / KJ * NM**2)
    bond.addGlobalParameter("r0", 1.2 / NM)
    for i, j in springs.pairs.tolist():
        bond.addBond(i, j, [])
    system.addForce(bond)
    field = openmm.CustomExternalForce("gx*x+gy*y+gz*z")
    for name in ("gx", "gy", "gz"):
        field.addPerParticleParameter(name)
    for i, g in enumerate(springs.field.tolist()):
        field.addParticle(i, [v / KJ * NM for v in g])
    system.addForce(field)
    return system


def openmm_evaluate(system, positions: np.ndarray):
    """(placed positions Å, energy kcal/mol, forces kcal/mol/Å), as OpenMM has them."""
    import openmm

    context = openmm.Context(
        system,
        openmm.VerletIntegrator(1e-3),
        openmm.Platform.getPlatformByName("Reference"),
    )
    context.setPositions(positions / NM)
    context.computeVirtualSites()
    state = context.getState(getPositions=True, getEnergy=True, getForces=True)
    x = state.getPositions(asNumpy=True)._value * NM
    energy = state.getPotentialEnergy()._value * KJ
    forces = state.getForces(asNumpy=True)._value * KJ / NM
    return x, energy, forces


def test_placement_matches_openmm_for_every_kind():
    sites = make_sites()
    system = openmm_system(sites)
    x = random_positions(2)
    placed = place_virtual_sites(x, sites)
    for r in range(2):
        want, _, _ = openmm_evaluate(system, x[r].numpy())
        assert_close(placed[r], torch.as_tensor(want), rtol=0, atol=1e-9)


def test_forces_are_distributed_as_openmm_does():
    sites = make_sites()
    system = openmm_system(sites)
    potential = PotentialSum([Springs()], system=make_system(sites))
    x = random_positions(2, seed=3)
    with torch.no_grad():
        energy, forces = potential.energy_and_forces(State.from_coordinates(x[0]))
        _, reported = potential.energy_and_forces(
            State.from_coordinates(x[0]), site_forces=True
        )
    _, e_ref, f_ref = openmm_evaluate(system, x[0].numpy())
    assert float(energy[0]) == pytest.approx(e_ref, abs=1e-9)
    assert_close(forces[0, REAL], torch.as_tensor(f_ref[REAL]), rtol=0, atol=1e-8)
    assert bool((forces[0, sites.sites] == 0).all())
    # site_forces=True: the site rows hold what OpenMM's getForces reports for them
    assert_close(reported[0], torch.as_tensor(f_ref), rtol=0, atol=1e-8)


# -- autograd and finite differences ---------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_distribution_equals_autograd_through_placement(dtype):
    sites = make_sites().to(dtype=dtype)
    x = random_positions(3, seed=1).to(dtype).requires_grad_(True)
    springs = Springs().to(dtype)
    energy = springs.energy(State(positions=place_virtual_sites(x, sites)))
    (grad,) = torch.autograd.grad(energy.sum(), x)
    placed = place_virtual_sites(x.detach(), sites)
    raw = -torch.autograd.grad(
        springs.energy(State(positions=placed.requires_grad_(True))).sum(), placed
    )[0]
    forces = distribute_site_forces(raw, placed.detach(), sites)
    tol = {torch.float32: 2e-4, torch.float64: 1e-10}[dtype]
    assert_close(forces, -grad, rtol=0, atol=tol)
    assert bool((grad[:, sites.sites] == 0).all())  # site rows are outputs, not inputs


def test_potential_sum_forces_are_minus_the_gradient_by_finite_differences():
    potential = PotentialSum([Springs()], system=make_system())
    x = random_positions(1, seed=5)[0]
    state = State.from_coordinates(x)
    with torch.no_grad():
        _, forces = potential.energy_and_forces(state)
    h = 1e-6
    for atom in REAL:
        for k in range(3):
            plus, minus = x.clone(), x.clone()
            plus[atom, k] += h
            minus[atom, k] -= h
            e_plus = potential.energy(State.from_coordinates(plus))
            e_minus = potential.energy(State.from_coordinates(minus))
            fd = -float(e_plus[0] - e_minus[0]) / (2 * h)
            assert float(forces[0, atom, k]) == pytest.approx(fd, abs=1e-6)


def test_energy_ignores_whatever_the_state_holds_for_sites():
    potential = PotentialSum([Springs()], system=make_system())
    x = random_positions(1, seed=2)
    moved = x.clone()
    moved[:, make_sites().sites] += 5.0
    with torch.no_grad():
        assert_close(
            potential.energy(State(positions=x)),
            potential.energy(State(positions=moved)),
        )
        terms = potential.energy_terms(State(positions=moved))
    assert_close(terms["test.springs"], potential.energy(State(positions=x)))


def test_differentiable_forces_keep_the_graph_through_distribution():
    """Second derivatives: d(Σ F·v)/dx by autograd equals the finite difference."""
    potential = PotentialSum([Springs()], system=make_system())
    x = random_positions(1, seed=4).requires_grad_(True)
    v = torch.randn_like(x)
    _, forces = potential.energy_and_forces(State(positions=x))
    (hess_v,) = torch.autograd.grad((forces * v).sum(), x)
    h = 1e-6
    with torch.no_grad():
        direction = torch.zeros_like(x)
        direction[0, 1, 2] = 1.0
        f_plus = potential.energy_and_forces(State(positions=x + h * direction))[1]
        f_minus = potential.energy_and_forces(State(positions=x - h * direction))[1]
    fd = float(((f_plus - f_minus) * v).sum()) / (2 * h)
    assert float(hess_v[0, 1, 2]) == pytest.approx(fd, abs=1e-5)


def test_sites_are_placed_with_minimum_image_parents_in_a_box():
    sites = make_sites()
    x = random_positions(1, seed=6)
    box = torch.eye(3, dtype=torch.float64)[None] * 20.0
    shifted = x.clone()
    shifted[:, [1, 9]] += torch.tensor(
        [20.0, -20.0, 0.0], dtype=torch.float64
    )  # wrapped
    want = site_positions(x, sites, box)
    got = site_positions(shifted, sites, box)
    assert_close(got, want, rtol=0, atol=1e-12)


def test_batched_replicas_equal_one_by_one():
    sites = make_sites()
    x = random_positions(4, seed=8)
    batched = place_virtual_sites(x, sites)
    for r in range(4):
        assert_close(batched[r : r + 1], place_virtual_sites(x[r : r + 1], sites))


# -- System and Simulation -------------------------------------------------------------


def test_system_checks_its_virtual_sites():
    system = make_system()
    with pytest.raises(TopologyError, match="massless"):
        dataclasses.replace(system, masses=system.masses + 1.0)
    nested = VirtualSites.build(
        linear=[(3, (0, 1), (0.5, 0.5)), (4, (3, 1), (0.5, 0.5))]
    )
    with pytest.raises(TopologyError, match="parent of another virtual site"):
        make_system(nested)
    outside = VirtualSites.build(linear=[(3, (0, 40), (0.5, 0.5))])
    with pytest.raises(TopologyError, match="outside"):
        make_system(outside)
    with pytest.raises(ValueError, match="twice"):
        VirtualSites.build(
            linear=[(3, (0, 1), (0.5, 0.5))], out_of_plane=[(3, (0, 1, 2), (0, 0, 1))]
        )


def test_sites_belong_to_the_molecule_of_their_first_parent():
    system = make_system()
    mol = system.molecules
    assert system.n_molecules == 2
    assert mol[3] == mol[0] and mol[4] == mol[8] and mol[11] == mol[8]


def test_massless_sites_carry_no_degrees_of_freedom():
    assert make_system().degrees_of_freedom() == 3 * len(REAL)


def test_simulation_adds_the_system_sites_to_a_sum_built_without_them():
    from tests.core.toys import ToyVerlet
    from torchmd_core import Simulation

    system = make_system()
    plain = Springs() + Springs()
    assert plain.virtual_sites is None
    sim = Simulation(
        system, plain, ToyVerlet(ToyVerlet.Config(timestep_fs=1.0), system),
        state=State.from_coordinates(random_positions(1)[0]),
    )  # fmt: skip
    assert sim.potential.virtual_sites is system.virtual_sites
