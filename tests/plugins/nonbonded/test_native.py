"""The native cluster-pair kernel gives the PyTorch kernels' energies and forces, is
used only where no autograd graph is needed, and can be turned off."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch.testing import assert_close
from torchmd_plugins.nonbonded import native
from torchmd_plugins.nonbonded.nonbonded import Nonbonded

from tests.plugins.nonbonded.conftest import replicas
from tests.plugins.test_openmm_parity import (
    REFERENCE,
    load_npz,
    load_system,
    potential_for,
    reference_state,
)
from torchmd_core import ConfigError, PotentialSum, State

pytestmark = pytest.mark.skipif(
    not native.native_available(), reason="native kernels not available"
)

DTYPES = [torch.float64, torch.float32]
DTYPE_IDS = ["f64", "f32"]
#: float64: both sum the same pairs in double, in another order. float32: the native
#: kernel evaluates pairs in float32 like the torch path, with other roundings.
TOL = {
    torch.float64: dict(energy=1e-9, force=1e-7),
    torch.float32: dict(energy=2e-6, force=5e-4),
}
REFERENCES = [
    "ala2_solv__rf_periodic_switch",  # switching, dispersion correction
    "ala2_solv_ljpair__rf_periodic",  # AMBER pair table (NBFIX)
    "ala2_vacuum__nocutoff",
    "benzamidine__rf_nonperiodic",  # cutoff without a box
    "peptide_dodec__rf_periodic_eps50",  # triclinic (rhombic dodecahedron) box
    "waterbox__rf_periodic_nodisp",
]


def both_paths(pot, state, method: str = "energy_and_forces"):
    """(native result, torch result) of ``pot.<method>(state)`` under no_grad."""
    nonbonded = [p for p in _terms(pot) if isinstance(p, Nonbonded)]
    with torch.no_grad():
        fast = getattr(pot, method)(state)
        assert all(p._cluster is not None for p in nonbonded), "native path not used"
        for p in nonbonded:
            p.implementation = "torch"
        slow = getattr(pot, method)(state)
        for p in nonbonded:
            p.implementation = "auto"
    return fast, slow


def _terms(pot):
    return list(pot.potentials) if isinstance(pot, PotentialSum) else [pot]


def assert_same(fast, slow, dtype, scale: float = 1.0) -> None:
    (e1, f1), (e2, f2) = fast, slow
    tol = TOL[dtype]
    assert e1.dtype == e2.dtype == dtype and f1.dtype == f2.dtype == dtype
    assert_close(e1, e2, rtol=tol["energy"], atol=tol["energy"] * scale)
    assert_close(
        f1, f2, rtol=0.0, atol=tol["force"] * max(1.0, float(f2.abs().max()) / 50)
    )


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("reference", REFERENCES)
def test_native_matches_torch_on_reference_systems(reference, dtype):
    arrays, meta = load_npz(REFERENCE / f"{reference}.npz")
    nonbonded = potential_for(load_system(meta["system"]), meta).potentials[1]
    pot = nonbonded.to(dtype)
    state = reference_state(arrays, dtype)
    fast, slow = both_paths(pot, state)
    assert_same(fast, slow, dtype, scale=float(slow[0].abs().max()))
    terms_fast, terms_slow = both_paths(pot, state, "energy_terms")
    assert terms_fast.keys() == terms_slow.keys()
    for name in terms_slow:
        scale = max(1.0, float(terms_slow[name].abs().max()))
        tol = TOL[dtype]["energy"] * scale
        assert_close(terms_fast[name], terms_slow[name], rtol=0.0, atol=tol)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("periodic", [True, False], ids=["triclinic", "no_cutoff"])
def test_native_matches_torch_for_replicas(small_triclinic, periodic, dtype):
    config = {"cutoff": 6.0, "switch_distance": 5.0} if periodic else {}
    pot = Nonbonded(Nonbonded.Config(**config), small_triclinic.system()).to(dtype)
    state = replicas(small_triclinic, n=3, periodic=periodic)
    state = State(
        positions=state.positions.to(dtype),
        box=None if state.box is None else state.box.to(dtype),
    )
    fast, slow = both_paths(pot, state)
    assert_same(fast, slow, dtype, scale=float(slow[0].abs().max()))
    one = State(
        positions=state.positions[1:2],
        box=None if state.box is None else state.box[1:2],
    )
    with torch.no_grad():
        e1, f1 = (
            Nonbonded(Nonbonded.Config(**config), small_triclinic.system())
            .to(dtype)
            .energy_and_forces(one)
        )
    assert_close(
        e1[0], fast[0][1], rtol=TOL[dtype]["energy"], atol=TOL[dtype]["energy"]
    )
    assert_close(f1[0], fast[1][1], rtol=0.0, atol=TOL[dtype]["force"])


def test_the_cluster_list_follows_moving_atoms(small):
    """Move atoms far (several rebuilds) and change the box: never a missing pair."""
    pot = Nonbonded(Nonbonded.Config(cutoff=6.0), small.system())
    shared = PotentialSum([pot], system=small.system(), skin=0.5)
    g = torch.Generator().manual_seed(3)
    state = replicas(small, n=2)
    for step in range(6):
        state = State(
            positions=state.positions
            + 0.3
            * torch.randn(state.positions.shape, generator=g, dtype=torch.float64),
            box=state.box * (1.0 + 0.01 * step),
        )
        fast, slow = both_paths(shared, state)
        assert_same(fast, slow, torch.float64, scale=float(slow[0].abs().max()))
    assert pot._cluster is not None and pot._cluster.n_builds >= 3


def test_the_shared_list_is_only_tracked_while_native_runs(small):
    pot = Nonbonded(Nonbonded.Config(cutoff=6.0), small.system())
    shared = PotentialSum([pot], system=small.system())
    state = replicas(small, n=1)
    with torch.no_grad():
        shared.energy_and_forces(state)
    nl = shared.neighbor_list
    assert nl is not None and not nl._neighbors.complete and nl._neighbors.n_pairs == 0
    pot.implementation = "torch"
    with torch.no_grad():
        shared.energy_and_forces(state)
    assert nl._neighbors.complete and nl._neighbors.n_pairs > 0


def test_gradients_use_the_torch_kernels(small):
    pot = Nonbonded(Nonbonded.Config(cutoff=6.0), small.system())
    state = replicas(small, n=1)
    positions = state.positions.clone().requires_grad_(True)
    energy, forces = pot.energy_and_forces(State(positions=positions, box=state.box))
    assert pot._cluster is None and forces.requires_grad
    (grad,) = torch.autograd.grad(forces.square().sum(), positions)
    assert bool(grad.abs().max() > 0)
    pot.epsilon.requires_grad_(True)  # a trainable parameter: also the graph path
    energy = pot.energy(state)
    assert pot._cluster is None and energy.requires_grad


def test_environment_variable_and_config_turn_it_off(small, monkeypatch):
    state = replicas(small, n=1)
    pot = Nonbonded(
        Nonbonded.Config(cutoff=6.0, implementation="torch"), small.system()
    )
    with torch.no_grad():
        pot.energy_and_forces(state)
    assert pot._cluster is None
    monkeypatch.setenv("TORCHMD_CORE_NATIVE", "0")
    pot = Nonbonded(Nonbonded.Config(cutoff=6.0), small.system())
    with torch.no_grad():
        pot.energy_and_forces(state)
    assert pot._cluster is None
    with pytest.raises(ConfigError, match="TORCHMD_CORE_NATIVE=0"):
        Nonbonded(Nonbonded.Config(cutoff=6.0, implementation="native"), small.system())


def test_without_a_compiler_one_warning_then_torch(small, monkeypatch):
    monkeypatch.setattr(native, "_tried", True)
    monkeypatch.setattr(native, "_module", None)
    monkeypatch.setattr(native, "_error", "no C++ compiler found")
    monkeypatch.setattr(native, "_warned", False)
    with pytest.raises(ConfigError, match="no C\\+\\+ compiler found"):
        Nonbonded(Nonbonded.Config(cutoff=6.0, implementation="native"), small.system())
    pot = Nonbonded(Nonbonded.Config(cutoff=6.0), small.system())
    state = replicas(small, n=1)
    with (
        pytest.warns(RuntimeWarning, match="could not be built") as caught,
        torch.no_grad(),
    ):
        pot.energy_and_forces(state)
        pot.energy_and_forces(state)
    assert len(caught) == 1 and pot._cluster is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pot.energy(state)  # no second warning


def test_cuda_tensors_keep_the_torch_path():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    x = torch.zeros(1, 2, 3, device="cuda")
    assert not native.use_native("auto", x, None, [])


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_results_do_not_depend_on_the_thread_count(dtype):
    arrays, meta = load_npz(REFERENCE / "ala2_solv__rf_periodic_switch.npz")
    pot = potential_for(load_system(meta["system"]), meta).to(dtype)
    state = reference_state(arrays, dtype)
    threads = torch.get_num_threads()
    results = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            with torch.no_grad():
                results.append(pot.energy_and_forces(state))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(results[0][0], results[1][0])
    assert torch.equal(results[0][1], results[1][1])


def _langevin_run(implementation: str, steps: int) -> State:
    from tests.conftest import DATA
    from torchmd_core import Simulation
    from torchmd_core.config import parse_config

    config = parse_config(
        {
            "system": {
                "topology": str(DATA / "ala2_solv" / "structure.prmtop"),
                "coordinates": str(DATA / "ala2_solv" / "input.coor"),
                "constraints": "hbonds",
            },
            "potentials": [
                {"kind": "amber", "implementation": implementation},
                {
                    "kind": "nonbonded",
                    "cutoff": 9.0,
                    "switch_distance": 7.5,
                    "implementation": implementation,
                },
            ],
            "integrator": {
                "kind": "langevin",
                "timestep_fs": 2.0,
                "temperature_K": 300.0,
                "friction_per_ps": 1.0,
            },
            "precision": "float64",
            "n_replicas": 2,
            "neighbor_skin_A": 0.2,  # several rebuilds in a short run
            "seed": 3,
            "steps": steps,
        }
    )
    sim = Simulation.from_config(config)
    return sim.run(steps)


def test_a_simulation_follows_the_torch_trajectory():
    """Langevin from a config, float64, two replicas, list rebuilds along the way."""
    fast = _langevin_run("auto", 30)
    slow = _langevin_run("torch", 30)
    assert_close(fast.positions, slow.positions, rtol=0.0, atol=1e-8)
    assert_close(fast.velocities, slow.velocities, rtol=0.0, atol=1e-6)
    assert_close(fast.potential_energy, slow.potential_energy, rtol=1e-10, atol=1e-8)
