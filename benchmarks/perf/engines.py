"""The engines timed, each driven through its own public API on the same inputs.

- ``torchmd-core``: a :class:`torchmd_core.Simulation` built from a config (the
  ``amber`` and ``nonbonded`` potentials, ``langevin`` BAOAB, float32), advanced with
  ``Simulation.run(k)``; whatever fast paths the installed plugins have are used.
- ``openmm``: ``LangevinMiddleIntegrator`` on the serialised ``System`` (CPU platform
  with ``Threads``, or CUDA); replicas are separate contexts stepped in turn.
- ``torchmd``: TorchMD's ``ForceField``/``Parameters``/``Forces``/``Integrator``
  (velocity Verlet with a Langevin kick, float32). It has reaction field (``rfa``,
  the same Tironi formula as OpenMM) and the same LJ switching polynomial, but no
  neighbour list: every step computes all N(N-1)/2 pair distances and then drops
  those beyond the cutoff; no constraints; orthorhombic boxes only.

Each ``setup_*`` builds the simulation and returns a :class:`Run`, which can also
evaluate energy and forces at fixed positions (the ``forces`` task, issue 3):

- ``torchmd-core``: ``sim.potential.energy_and_forces(sim.state)`` under
  ``torch.no_grad()``, the call the integrator makes each step (same native kernels).
  The first evaluation builds the neighbour lists; at fixed positions no atom moves
  beyond half the skin, so the timed evaluations reuse them, as most steps of a run do.
- ``openmm``: ``Context.getState(getEnergy=True, getForces=True)``. OpenMM caches
  nothing between calls: each ``getState`` asking for energy or forces runs every
  force kernel (its neighbour list is kept while atoms stay within the padding). The
  forces stay in the C++ ``State`` (not converted to Python objects). ``info`` records
  a check: ``getState`` with forces against one with positions only.
- ``torchmd``: ``Forces.compute(pos, box, forces)`` with TorchMD's explicit forces
  (all N(N-1)/2 pairs each call, as in its steps).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from perf.cases import SETTINGS, Case
from perf.prepare import Prepared

__all__ = ["ENGINES", "Run", "setup"]

BOLTZMANN_KCAL = 0.001987204259  # kcal/mol/K


@dataclass
class Run:
    """A ready simulation: ``advance(k)`` runs k steps (every replica);
    ``evaluate(k)`` computes energy and forces k times at the current positions and
    ``energy_kcal_mol()`` gives the last evaluation's potential energy (replica mean).
    """

    advance: Callable[[int], object]
    evaluate: Callable[[int], object]
    energy_kcal_mol: Callable[[], float]
    sync: Callable[[], object] = lambda: None
    temperature_K: Callable[[], float] = lambda: float("nan")
    info: dict[str, Any] = field(default_factory=dict)


def setup_torchmd_core(
    case: Case, prepared: Prepared, device: str, threads: int
) -> Run:
    import torch

    import torchmd_core
    from torchmd_core import Simulation, parse_config, temperature

    files = prepared.engine_files
    nonbonded: dict[str, Any] = {"kind": "nonbonded", "dispersion_correction": False}
    if case.periodic:
        nonbonded |= {
            "cutoff": SETTINGS["cutoff_A"],
            "switch_distance": SETTINGS["switch_A"],
            "reaction_field_dielectric": SETTINGS["reaction_field_dielectric"],
        }
    system: dict[str, Any] = {
        "topology": files["topology"],
        "coordinates": files["coordinates"],
        "parameters": files["parameters"],
        "constraints": case.constraints,
        "rigid_water": case.rigid,
    }
    config = parse_config(
        {
            "system": system,
            "potentials": [{"kind": "amber"}, nonbonded],
            "integrator": {
                "kind": "langevin",
                "timestep_fs": case.timestep_fs,
                "temperature_K": SETTINGS["temperature_K"],
                "friction_per_ps": SETTINGS["friction_per_ps"],
            },
            "steps": 0,
            "seed": 1,
            "precision": "float32",
            "device": device,
            "n_replicas": case.replicas,
            "initial_temperature_K": SETTINGS["temperature_K"],
        }
    )
    sim = Simulation.from_config(config)
    cuda = torch.device(device).type == "cuda"
    last: dict[str, Any] = {}

    def evaluate(k: int) -> None:
        with torch.no_grad():
            for _ in range(k):
                last["E"], last["F"] = sim.potential.energy_and_forces(sim.state)

    return Run(
        advance=sim.run,
        evaluate=evaluate,
        energy_kcal_mol=lambda: float(last["E"].mean()),
        sync=torch.cuda.synchronize if cuda else (lambda: None),
        temperature_K=lambda: float(temperature(sim.state, sim.system).mean()),
        info={
            "version": torchmd_core.__version__,
            "precision": "float32",
            "potentials": [type(p).__name__ for p in sim.potential.potentials],
        },
    )


def setup_openmm(case: Case, prepared: Prepared, device: str, threads: int) -> Run:
    import openmm as mm
    import openmm.unit as u

    system = mm.XmlSerializer.deserialize(
        prepared.system_xml(case.constraints).read_text()
    )
    coords = np.load(prepared.coordinates)
    platform = mm.Platform.getPlatformByName("CUDA" if device == "cuda" else "CPU")
    properties = {"Threads": str(threads)} if device == "cpu" else {}
    contexts = []
    for replica in range(case.replicas):
        integrator = mm.LangevinMiddleIntegrator(
            SETTINGS["temperature_K"] * u.kelvin,
            SETTINGS["friction_per_ps"] / u.picosecond,
            case.timestep_fs * u.femtosecond,
        )
        integrator.setRandomNumberSeed(replica + 1)
        context = mm.Context(system, integrator, platform, properties)
        if "box" in coords:
            context.setPeriodicBoxVectors(*(coords["box"] / 10.0))
        context.setPositions(coords["positions"] / 10.0)
        context.applyConstraints(1e-6)
        context.setVelocitiesToTemperature(
            SETTINGS["temperature_K"] * u.kelvin, replica + 1
        )
        contexts.append(context)

    def advance(k: int) -> None:
        for context in contexts:
            context.getIntegrator().step(k)

    kcal = u.kilocalorie_per_mole
    last: dict[str, float] = {}

    def evaluate(k: int) -> None:
        for _ in range(k):
            for context in contexts:
                state = context.getState(getEnergy=True, getForces=True)
        last["E"] = float(state.getPotentialEnergy().value_in_unit(kcal))

    def sync() -> None:  # CUDA steps are queued: reading a state waits for them
        for context in contexts:
            context.getState(getEnergy=True)

    dof = int(3 * system.getNumParticles() - system.getNumConstraints())

    def temperature_K() -> float:
        kinetic = [c.getState(getEnergy=True).getKineticEnergy() for c in contexts]
        energies = [e.value_in_unit(kcal) for e in kinetic]
        return float(np.mean(energies)) * 2.0 / (dof * BOLTZMANN_KCAL)

    return Run(
        advance=advance,
        evaluate=evaluate,
        energy_kcal_mol=lambda: last["E"],
        sync=sync if device == "cuda" else (lambda: None),
        temperature_K=temperature_K,
        info={
            "version": mm.__version__,
            "platform": platform.getName(),
            "precision": contexts[0]
            .getPlatform()
            .getPropertyValue(contexts[0], "Precision")
            if platform.getName() == "CUDA"
            else "single (mixed accumulation)",
            **({"threads": threads} if device == "cpu" else {}),
            "getstate_ms": _getstate_check(contexts[0]),
        },
    )


def _getstate_check(context: Any) -> dict[str, float]:
    """Best-of-3 ms of ``getState`` with positions only and with energy + forces:
    the second costs a force evaluation when OpenMM recomputes on each call."""

    def best(**what: bool) -> float:
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            context.getState(**what)
            times.append(time.perf_counter() - t0)
        return 1e3 * min(times)

    best(getEnergy=True, getForces=True)  # first call: neighbour list, kernels
    return {
        "positions": best(getPositions=True),
        "energy_forces": best(getEnergy=True, getForces=True),
    }


class _Molecule:
    """The attributes of moleculekit's ``Molecule`` that TorchMD's ``Parameters``
    reads (moleculekit itself is not needed): filled from a prmtop with parmed."""

    def __init__(self, prmtop: str) -> None:
        import parmed

        st = parmed.load_file(prmtop)
        self.numAtoms = len(st.atoms)
        self.atomtype = np.array([a.type for a in st.atoms], dtype=object)
        self.charge = np.array([a.charge for a in st.atoms], dtype=np.float32)
        self.masses = np.array([a.mass for a in st.atoms], dtype=np.float32)
        self.element = np.array([a.element_name for a in st.atoms], dtype=object)
        self.bonds = _index_array([(b.atom1, b.atom2) for b in st.bonds], 2)
        self.angles = _index_array([(a.atom1, a.atom2, a.atom3) for a in st.angles], 3)
        proper = {_quad(d) for d in st.dihedrals if not d.improper}
        improper = {_quad(d) for d in st.dihedrals if d.improper}
        self.dihedrals = np.array(sorted(proper), dtype=np.int64).reshape(-1, 4)
        self.impropers = np.array(sorted(improper), dtype=np.int64).reshape(-1, 4)


def _index_array(items: list[tuple[Any, ...]], width: int) -> np.ndarray:
    return np.array([[a.idx for a in t] for t in items], dtype=np.int64).reshape(
        -1, width
    )


def _quad(d: Any) -> tuple[int, int, int, int]:
    return (d.atom1.idx, d.atom2.idx, d.atom3.idx, d.atom4.idx)


def setup_torchmd(case: Case, prepared: Prepared, device: str, threads: int) -> Run:
    import torch
    from torchmd.forcefields.forcefield import ForceField
    from torchmd.forces import Forces
    from torchmd.integrator import Integrator, maxwell_boltzmann
    from torchmd.parameters import Parameters
    from torchmd.systems import System

    torch.manual_seed(1)
    prmtop = str(prepared.prmtop)
    mol = _Molecule(prmtop)
    terms = ["bonds", "angles", "dihedrals", "impropers", "1-4", "electrostatics", "lj"]
    params = Parameters(
        ForceField.create(mol, prmtop),
        mol,
        terms,
        precision=torch.float32,
        device=device,
    )
    cutoff: dict[str, Any] = {}
    if case.periodic:
        cutoff = {
            "cutoff": SETTINGS["cutoff_A"],
            "rfa": True,
            "switch_dist": SETTINGS["switch_A"],
            "solventDielectric": SETTINGS["reaction_field_dielectric"],
        }
    forces = Forces(params, terms=terms, external=None, **cutoff)
    coords = np.load(prepared.coordinates)
    system = System(mol.numAtoms, case.replicas, torch.float32, device)
    system.set_positions(
        np.repeat(coords["positions"][:, :, None], case.replicas, axis=2)
    )
    if "box" in coords:
        system.set_box(
            np.repeat(np.diag(coords["box"])[:, None], case.replicas, axis=1)
        )
    system.set_velocities(
        maxwell_boltzmann(
            params.masses, T=SETTINGS["temperature_K"], replicas=case.replicas
        )
    )
    integrator = Integrator(
        system,
        forces,
        case.timestep_fs,
        device,
        gamma=SETTINGS["friction_per_ps"],
        T=SETTINGS["temperature_K"],
    )
    forces.compute(system.pos, system.box, system.forces)
    last: dict[str, float] = {"T": float("nan")}

    def advance(k: int) -> None:
        _, _, t = integrator.step(niter=k)
        last["T"] = float(np.mean(t))

    def evaluate(k: int) -> None:
        for _ in range(k):
            energies = forces.compute(system.pos, system.box, system.forces)
        last["E"] = float(np.mean(energies))

    cuda = torch.device(device).type == "cuda"
    import torchmd

    return Run(
        advance=advance,
        evaluate=evaluate,
        energy_kcal_mol=lambda: last["E"],
        sync=torch.cuda.synchronize if cuda else (lambda: None),
        temperature_K=lambda: last["T"],
        info={
            "version": getattr(torchmd, "__version__", _dist_version("torchmd")),
            "precision": "float32",
            "electrostatics": "reaction field (rfa) on all pairs within the cutoff"
            if case.periodic
            else "Coulomb, all pairs",
        },
    )


def _dist_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "unknown"


ENGINES: dict[str, Callable[[Case, Prepared, str, int], Run]] = {
    "torchmd-core": setup_torchmd_core,
    "openmm": setup_openmm,
    "torchmd": setup_torchmd,
}


def setup(
    engine: str, case: Case, prepared: Prepared, device: str, threads: int
) -> Run:
    """``engine``'s simulation of ``case`` on ``device``, ``threads`` CPU threads."""
    return ENGINES[engine](case, prepared, device, threads)
