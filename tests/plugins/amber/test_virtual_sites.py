"""4- and 5-site waters (virtual sites) read by the loaders, against OpenMM, and in MD.

The inputs in tests/data/virtual_sites (see its SOURCES.md and build.py) are an ff19SB
peptide in OPC water, a TIP4P-Ew box (triclinic) and a TIP5P box, each as a prmtop +
rst7 laid out as tleap writes extra points, and as an OpenMM System XML + PDB. OpenMM
reads them with its own loaders (``AmberPrmtopFile``, ``XmlSerializer``) and is
evaluated on the Reference platform in double precision.

Two conventions are checked: our potentials rebuild the sites from their parents before
every evaluation (OpenMM after ``Context.computeVirtualSites``), and ``tmd energy``
evaluates the coordinates as the file gives them (OpenMM's ``getState`` after
``setPositions``); both hand the sites' forces on to their parents.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.plugins.amber.openmm_reference import evaluate, per_force, set_nonbonded
from torchmd_core import (
    PotentialSum,
    State,
    System,
    TopologyError,
    default_registry,
    parse_config,
    place_virtual_sites,
)
from torchmd_core.cli import main as tmd
from torchmd_core.simulation import Simulation

openmm = pytest.importorskip("openmm")

FOLDER = Path(__file__).resolve().parents[2] / "data" / "virtual_sites"
#: system → cutoff (Å) that fits its box.
CUTOFFS = {"opc_ff19sb": 9.0, "tip4pew": 7.5, "tip5p": 9.0}
ROUTES = ("prmtop", "xml")
MODES = ("nocutoff", "rf_nonperiodic", "rf_periodic")
KCAL, NM = 1.0 / 4.184, 10.0


def files(name: str, route: str) -> tuple[Path, list[Path], Path]:
    """(topology, parameter files, coordinates) of a system read one way."""
    folder = FOLDER / name
    if route == "prmtop":
        return folder / "structure.prmtop", [], folder / "structure.rst7"
    return folder / "system.xml", [folder / "structure.pdb"], folder / "structure.pdb"


@cache
def coordinates(name: str, route: str) -> tuple[np.ndarray, np.ndarray]:
    """(N, 3) positions as the file has them and the (3, 3) box, Å."""
    import openmm.app as app
    import openmm.unit as unit

    _, _, path = files(name, route)
    reader = (
        app.AmberInpcrdFile(str(path)) if route == "prmtop" else app.PDBFile(str(path))
    )
    xyz = np.asarray(reader.getPositions(asNumpy=True).value_in_unit(unit.angstrom))
    vectors = (
        reader.getBoxVectors()
        if route == "prmtop"
        else reader.topology.getPeriodicBoxVectors()
    )
    box = np.array(
        [[float(c.value_in_unit(unit.angstrom)) for c in v] for v in vectors]
    )
    return xyz, box


def openmm_system(name: str, route: str, mode: str = "nocutoff"):
    import openmm.app as app

    topology, _, _ = files(name, route)
    if route == "prmtop":
        system = app.AmberPrmtopFile(str(topology)).createSystem(
            nonbondedMethod=app.NoCutoff, constraints=None, rigidWater=False
        )
    else:
        system = openmm.XmlSerializer.deserialize(topology.read_text())
    cutoff = CUTOFFS[name]
    if mode == "nocutoff":
        set_nonbonded(system, "NoCutoff")
    elif mode == "rf_nonperiodic":
        set_nonbonded(system, "CutoffNonPeriodic", cutoff)
    else:
        set_nonbonded(system, "CutoffPeriodic", cutoff, dispersion=True)
    return system


def openmm_placed(system, xyz: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Positions with the sites where OpenMM puts them (``computeVirtualSites``)."""
    context = openmm.Context(
        system,
        openmm.VerletIntegrator(1e-3),
        openmm.Platform.getPlatformByName("Reference"),
    )
    context.setPeriodicBoxVectors(*(openmm.Vec3(*row) / NM for row in box))
    context.setPositions(xyz / NM)
    context.computeVirtualSites()
    return context.getState(getPositions=True).getPositions(asNumpy=True)._value * NM


@cache
def our_system(name: str, route: str) -> System:
    topology, parameters, _ = files(name, route)
    loader = default_registry().loader_for(topology, "topology")
    return loader.load_topology(topology, parameters)


def our_potential(system: System, name: str, mode: str) -> PotentialSum:
    registry = default_registry()
    amber = registry.get("potentials", "amber")
    nonbonded = registry.get("potentials", "nonbonded")
    config = nonbonded.Config()
    if mode != "nocutoff":
        config = nonbonded.Config(cutoff=CUTOFFS[name], dispersion_correction=True)
    terms = [amber(amber.Config(), system), nonbonded(config, system)]
    return PotentialSum(terms, system=system)


def openmm_sites(system) -> dict[int, tuple[str, list[int], list[float]]]:
    """site → (kind, parents, weights in our units) of an OpenMM System."""
    out = {}
    for i in range(system.getNumParticles()):
        if not system.isVirtualSite(i):
            continue
        site = system.getVirtualSite(i)
        parents = [site.getParticle(k) for k in range(site.getNumParticles())]
        if isinstance(site, openmm.OutOfPlaneSite):
            weights = [
                site.getWeight12(),
                site.getWeight13(),
                site.getWeightCross() / NM,
            ]
            out[i] = ("out_of_plane", parents, weights)
        else:
            weights = [site.getWeight(k) for k in range(site.getNumParticles())]
            out[i] = ("linear", parents, weights)
    return out


# -- loaders -------------------------------------------------------------------------


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("name", sorted(CUTOFFS))
def test_loaders_make_the_virtual_sites_openmm_makes(name, route):
    sites = our_system(name, route).virtual_sites
    assert sites is not None
    want = openmm_sites(openmm_system(name, route))
    got = {}
    linear = (sites.linear_sites, sites.linear_parents, sites.linear_weights)
    for s, p, w in zip(*(t.tolist() for t in linear), strict=True):
        n = len(want.get(s, ("", []))[1])
        got[s] = ("linear", p[:n], w[:n])
    oop = (
        sites.out_of_plane_sites,
        sites.out_of_plane_parents,
        sites.out_of_plane_weights,
    )
    for s, p, w in zip(*(t.tolist() for t in oop), strict=True):
        got[s] = ("out_of_plane", p, w)
    assert set(got) == set(want)
    for s, (kind, parents, weights) in want.items():
        assert got[s][0] == kind and got[s][1] == parents, s
        np.testing.assert_allclose(got[s][2], weights, rtol=1e-12, atol=1e-15)


def test_sites_are_massless_and_in_their_water_molecule():
    system = our_system("opc_ff19sb", "xml")  # no O-M bond in the XML: merged anyway
    sites = system.virtual_sites
    assert bool((system.masses[sites.sites] == 0).all())
    parents = sites.linear_parents[:, 0]
    assert torch.equal(system.molecules[sites.linear_sites], system.molecules[parents])
    assert system.degrees_of_freedom() == 3 * (system.n_atoms - len(sites))


# -- energies and forces ---------------------------------------------------------------

GROUPS = {
    "HarmonicBondForce": ("bonds",),
    "HarmonicAngleForce": ("angles",),
    "PeriodicTorsionForce": ("torsions", "impropers"),
    "CMAPTorsionForce": ("cmap",),
    "NonbondedForce": ("lj", "coulomb", "lj14", "coulomb14", "dispersion_correction"),
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("name", sorted(CUTOFFS))
def test_energy_and_forces_match_openmm(name, route, mode):
    omm = openmm_system(name, route, mode)
    xyz, box = coordinates(name, route)
    xyz = openmm_placed(omm, xyz, box)
    periodic = mode == "rf_periodic"
    reference = per_force(omm, xyz, box if periodic else None)
    total, total_forces = evaluate(omm, xyz, box if periodic else None)
    system = our_system(name, route)
    potential = our_potential(system, name, mode)
    state = State.from_coordinates(
        torch.as_tensor(xyz), torch.as_tensor(box) if periodic else None
    )
    with torch.no_grad():
        terms = {k: float(v[0]) for k, v in potential.energy_terms(state).items()}
        energy, forces = potential.energy_and_forces(state)
        _, reported = potential.energy_and_forces(state, site_forces=True)
    for cls, names in GROUPS.items():
        want = sum(e for c, _, e, _ in reference if c == cls)
        got = sum(terms.get(n, 0.0) for n in names)
        assert abs(got - want) <= max(1e-6, 1e-10 * abs(want)), (cls, got, want)
    assert abs(float(energy[0]) - total) <= max(1e-3, 1e-7 * abs(total))
    sites = system.virtual_sites.sites
    assert bool((forces[0, sites] == 0).all())
    real = torch.ones(system.n_atoms, dtype=torch.bool)
    real[sites] = False
    assert np.abs(forces[0, real].numpy() - total_forces[real.numpy()]).max() < 1e-6
    # site rows as OpenMM's getForces reports them (the force before it is handed on)
    assert np.abs(reported[0].numpy() - total_forces).max() < 1e-6


@pytest.mark.parametrize(("name", "route"), [("tip5p", "xml"), ("opc_ff19sb", "xml")])
def test_sites_are_rebuilt_from_rounded_coordinates(name, route):
    """The PDB's 3-decimal sites are off their construction; ours are rebuilt, as
    OpenMM's after computeVirtualSites."""
    omm = openmm_system(name, route)
    xyz, box = coordinates(name, route)
    placed = openmm_placed(omm, xyz, box)
    assert np.abs(placed - xyz).max() > 1e-4  # the file's sites really are off
    total, total_forces = evaluate(omm, placed)
    system = our_system(name, route)
    with torch.no_grad():
        energy, forces = our_potential(system, name, "nocutoff").energy_and_forces(
            State.from_coordinates(torch.as_tensor(xyz)), site_forces=True
        )
    assert abs(float(energy[0]) - total) <= max(1e-3, 1e-7 * abs(total))
    assert np.abs(forces[0].numpy() - total_forces).max() < 1e-6


def test_float32_agrees_with_float64():
    """Term by term within 1e-5 of each term. (The total of this minimised box, -376
    kcal/mol, is a small difference of large terms, LJ +4124 and Coulomb -5179: float32
    summation error of those, not the sites, keeps it from 1e-5 of itself.)"""
    xyz, box = coordinates("opc_ff19sb", "prmtop")
    system = our_system("opc_ff19sb", "prmtop")
    potential = our_potential(system, "opc_ff19sb", "rf_periodic")
    state = State.from_coordinates(torch.as_tensor(xyz), torch.as_tensor(box))
    with torch.no_grad():
        t64 = potential.energy_terms(state)
        _, f64 = potential.energy_and_forces(state)
        potential.to(torch.float32)
        t32 = potential.energy_terms(state.to(dtype=torch.float32))
        _, f32 = potential.energy_and_forces(state.to(dtype=torch.float32))
    for name, value in t64.items():
        want = float(value[0])
        assert abs(float(t32[name][0]) - want) <= max(1e-3, 1e-5 * abs(want)), name
    # stiff water bonds (k = 553 kcal/mol/Å², the O-EP one too) amplify the float32
    # rounding of r - r0 at ~20 Å from the origin: ~6e-3 measured, also without sites
    assert float((f32.double() - f64).abs().max()) < 2e-2


# -- tmd energy ------------------------------------------------------------------------

CLI_CASES = [
    ("opc_ff19sb", "prmtop", "nocutoff"),
    ("opc_ff19sb", "prmtop", "rf_periodic"),
    ("opc_ff19sb", "xml", "rf_periodic"),
    ("tip4pew", "prmtop", "rf_periodic"),
    ("tip5p", "xml", "nocutoff"),
    ("tip5p", "prmtop", "rf_periodic"),
]


@pytest.mark.parametrize(("name", "route", "mode"), CLI_CASES)
def test_tmd_energy_matches_openmm_on_the_coordinates_as_given(
    name, route, mode, tmp_path, capsys
):
    topology, parameters, coordinate_file = files(name, route)
    argv = ["energy", str(topology), str(coordinate_file), "--json"]
    argv += ["--forces", str(tmp_path / "f.npy")]
    for p in parameters:
        argv += ["--parameters", str(p)]
    if mode != "nocutoff":
        argv += ["--cutoff", str(CUTOFFS[name])]
    xyz, box = coordinates(name, route)
    assert tmd(argv) == 0
    out = json.loads(capsys.readouterr().out)
    total, total_forces = evaluate(
        openmm_system(name, route, mode), xyz, box if mode == "rf_periodic" else None
    )
    assert abs(out["total"] - total) <= max(1e-3, 1e-7 * abs(total))
    forces = np.load(tmp_path / "f.npy")
    assert np.abs(forces - total_forces).max() <= 1e-3  # site rows included


def test_tmd_energy_notes_sites_off_their_construction(capsys):
    topology, parameters, coordinate_file = files("tip5p", "xml")
    argv = [
        "energy",
        str(topology),
        str(coordinate_file),
        "--parameters",
        str(parameters[0]),
    ]
    assert tmd(argv) == 0
    err = capsys.readouterr().err
    assert "516 virtual sites" in err and "as given" in err


# -- dynamics --------------------------------------------------------------------


def opc_simulation(
    integrator: dict, barostat: dict | None = None, **system_options
) -> Simulation:
    topology, _, coordinate_file = files("opc_ff19sb", "prmtop")
    config = parse_config(
        {
            "system": {
                "topology": str(topology),
                "coordinates": str(coordinate_file),
                **system_options,
            },
            "potentials": [
                {"kind": "amber"},
                {"kind": "nonbonded", "cutoff": 9.0, "switch_distance": 7.5},
            ],
            "integrator": integrator,
            "barostat": barostat,
            "initial_temperature_K": 300.0,
            "steps": 0,
        }
    )  # fmt: skip
    return Simulation.from_config(config)


def assert_sites_placed(sim: Simulation) -> None:
    state = sim.state
    sites = sim.system.virtual_sites.to(dtype=state.dtype)
    placed = place_virtual_sites(state.positions, sites, state.box)
    assert float((placed - state.positions).abs().max()) < 1e-10


def test_langevin_with_rigid_opc_water_is_stable():
    """SETTLE holds the O-H-H of each 4-site water, the extra point follows."""
    sim = opc_simulation(
        {"kind": "langevin", "timestep_fs": 2.0, "temperature_K": 300.0,
         "friction_per_ps": 5.0},
        constraints="hbonds",
    )  # fmt: skip
    system = sim.system
    assert len(system.constraints.waters) == 291
    temperatures = []
    with torch.no_grad():
        for _ in range(10):
            sim.run(10)
            temperatures.append(float(sim.measure(sim.state).temperature_K[0]))
    assert_sites_placed(sim)
    x = sim.state.positions[0]
    o, h1, h2 = system.constraints.waters.T
    assert float(((x[o] - x[h1]).norm(dim=-1) - 0.8724).abs().max()) < 1e-5
    assert float(((x[h1] - x[h2]).norm(dim=-1) - 1.3712).abs().max()) < 1e-5
    assert bool((sim.state.velocities[0, system.virtual_sites.sites] == 0).all())
    assert 200.0 < float(np.mean(temperatures)) < 400.0


def test_verlet_conserves_energy_with_virtual_sites():
    """Wrongly handed-on site forces would heat the system or drift the energy."""
    sim = opc_simulation({"kind": "verlet", "timestep_fs": 1.0}, constraints="hbonds")
    totals = []
    with torch.no_grad():
        for _ in range(10):
            sim.run(5)
            frame = sim.measure(sim.state)
            totals.append(float(frame.potential_energy[0] + frame.kinetic_energy[0]))
    assert_sites_placed(sim)
    # 0.5 kcal/mol measured over 50 fs of these 1,283 atoms; without the site forces
    # handed on to the parents the box heats to ~8000 K in the same time.
    assert np.ptp(totals) < 2.0


def test_barostat_moves_each_4_site_water_as_one_molecule():
    barostat = {"kind": "montecarlo", "temperature_K": 300.0, "interval": 2}
    langevin = {"kind": "langevin", "timestep_fs": 2.0, "temperature_K": 300.0}
    sim = opc_simulation(langevin, barostat, constraints="hbonds")
    assert sim.barostat.n_molecules == 1 + 291  # the peptide and the waters
    box = sim.state.box.clone()
    with torch.no_grad():
        sim.run(20)
    assert not torch.equal(sim.state.box, box)  # some volume moves were accepted
    assert_sites_placed(sim)


def test_minimisation_leaves_the_sites_on_their_parents():
    sim = opc_simulation({"kind": "verlet", "timestep_fs": 1.0})
    moved = sim.state.positions.clone()
    moved[:, sim.system.virtual_sites.sites] += 0.05
    sim.state = sim.state.replace(positions=moved)
    sim.minimize(max_iterations=5)
    assert_sites_placed(sim)


# -- refused ---------------------------------------------------------------------------


def test_symmetry_sites_are_refused(tmp_path):
    system = openmm.System()
    for _ in range(3):
        system.addParticle(1.0)
    system.addParticle(0.0)
    system.setVirtualSite(
        3, openmm.SymmetrySite(0, openmm.Vec3(1, 0, 0), openmm.Vec3(0, 1, 0),
                               openmm.Vec3(0, 0, 1), openmm.Vec3(0, 0, 0), False)
    )  # fmt: skip
    path = tmp_path / "system.xml"
    path.write_text(openmm.XmlSerializer.serialize(system))
    with pytest.raises(TopologyError, match="SymmetrySite"):
        default_registry().loader_for(path, "topology").load_topology(path, [])


# -- GROMACS -----------------------------------------------------------------------

GROMACS_TOP = """
[ defaults ]
; nbfunc comb-rule gen-pairs fudgeLJ fudgeQQ
1 2 yes 0.5 0.8333

[ atomtypes ]
; name at.num mass charge ptype sigma epsilon
OW 8 15.9994 0.0 A 0.316435 0.680946
HW 1 1.008 0.0 A 0.0 0.0
MW 0 0.0 0.0 D 0.0 0.0
C 6 12.011 0.0 A 0.34 0.36
O 8 15.999 0.0 A 0.30 0.88

[ moleculetype ]
SOL 2

[ atoms ]
1 OW 1 SOL OW 1 0.0 15.9994
2 HW 1 SOL HW1 1 0.52422 1.008
3 HW 1 SOL HW2 1 0.52422 1.008
4 MW 1 SOL MW 1 -1.04844 0.0

[ bonds ]
1 2 1 0.09572 502416.0
1 3 1 0.09572 502416.0

[ angles ]
2 1 3 1 104.52 628.02

[ exclusions ]
1 2 3 4
2 1 3 4
3 1 2 4
4 1 2 3

[ virtual_sites3 ]
4 1 2 3 1 0.106676721 0.106676721

[ moleculetype ]
CO 3

[ atoms ]
1 C 1 CO C 1 0.3 12.011
2 O 1 CO O 1 -0.5 15.999
3 MW 1 CO M 1 0.2 0.0

[ bonds ]
1 2 1 0.113 800000.0

[ exclusions ]
3 1 2

[ virtual_sites2 ]
3 1 2 1 0.4

[ system ]
TIP4P-Ew waters and CO with a site on the bond

[ molecules ]
SOL 20
CO 2
"""


@pytest.fixture(scope="module")
def gromacs_case(tmp_path_factory):
    """The topology above, its OpenMM GromacsTopFile System and placed positions."""
    import openmm.app as app

    path = tmp_path_factory.mktemp("gmx") / "sites.top"
    path.write_text(GROMACS_TOP)
    omm = app.GromacsTopFile(str(path)).createSystem(
        nonbondedMethod=app.NoCutoff, constraints=None, rigidWater=False
    )
    waters, box = coordinates("tip4pew", "prmtop")
    co = np.array([[40.0, 40.0, 40.0], [41.13, 40.2, 40.0], [0.0, 0.0, 0.0]])
    xyz = np.concatenate([waters[:80], co, co + np.array([4.0, 1.0, -0.5])])
    return path, omm, openmm_placed(omm, xyz, box)


def test_gromacs_virtual_sites_match_openmm(gromacs_case):
    path, omm, xyz = gromacs_case
    system = default_registry().loader_for(path, "topology").load_topology(path, [])
    sites = system.virtual_sites
    assert len(sites) == 22
    want = openmm_sites(omm)
    linear = (sites.linear_sites, sites.linear_parents, sites.linear_weights)
    for s, p, w in zip(*(t.tolist() for t in linear), strict=True):
        n = len(want[s][1])
        assert want[s][0] == "linear" and p[:n] == want[s][1], s
        np.testing.assert_allclose(w[:n], want[s][2], rtol=1e-12)
    # parmed's zero-force stand-in bonds to the sites are gone: no bond, no exclusion
    assert not (set(system.bonds.flatten().tolist()) & set(sites.sites.tolist()))
    potential = our_potential(system, "tip4pew", "nocutoff")
    total, total_forces = evaluate(omm, xyz)
    with torch.no_grad():
        energy, forces = potential.energy_and_forces(
            State.from_coordinates(torch.as_tensor(xyz)), site_forces=True
        )
    assert abs(float(energy[0]) - total) <= max(1e-3, 1e-7 * abs(total))
    assert np.abs(forces[0].numpy() - total_forces).max() < 1e-4  # top: 7 digits


def test_gromacs_unsupported_virtual_sites_are_named(tmp_path):
    path = tmp_path / "bad.top"
    path.write_text(GROMACS_TOP.replace("3 1 2 1 0.4", "3 1 2 2 0.4"))
    with pytest.raises(TopologyError, match=r"\[ virtual_sites2 \] funct 2"):
        default_registry().loader_for(path, "topology").load_topology(path, [])
    path.write_text(GROMACS_TOP.replace("[ virtual_sites2 ]", "[ virtual_sitesn ]"))
    with pytest.raises(TopologyError, match=r"\[ virtual_sitesn \]"):
        default_registry().loader_for(path, "topology").load_topology(path, [])


def test_prmtop_extra_points_without_the_bonds_that_place_them_are_refused(tmp_path):
    """OpenMM's rule needs the water's H-H bond length; without it: a clear error."""
    import parmed

    topology, _, _ = files("tip4pew", "prmtop")
    parm = parmed.amber.AmberFormat(str(topology))
    names = [n.strip() for n in parm.parm_data["ATOM_NAME"]]
    flat = parm.parm_data["BONDS_INC_HYDROGEN"]
    kept = [
        flat[k : k + 3]
        for k in range(0, len(flat), 3)
        if not (names[flat[k] // 3][0] == names[flat[k + 1] // 3][0] == "H")
    ]
    parm.parm_data["BONDS_INC_HYDROGEN"] = [x for bond in kept for x in bond]
    parm.parm_data["POINTERS"][2] = len(kept)
    path = tmp_path / "no_hh.prmtop"
    parm.write_parm(str(path))
    with pytest.raises(TopologyError, match="no H-H bond"):
        default_registry().loader_for(path, "topology").load_topology(path, [])
