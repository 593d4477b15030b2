"""Validation of the dynamics (issue 4): the figures behind each acceptance criterion.

    python benchmarks/dynamics_validation.py                      # every suite
    python benchmarks/dynamics_validation.py nve langevin         # some suites
    python benchmarks/dynamics_validation.py --quick barostat     # shorter runs
    python benchmarks/dynamics_validation.py --list

Suites (each prints its figures and PASS/FAIL lines; the exit status counts failures):

- ``nve``: a minimised ~340-atom capped peptide (DHFR residues 2-24, amber14) in vacuum
  without cutoff, float64, velocity Verlet at 0.5 fs for 2000 steps from 300 K:
  std(E_total)/std(E_potential) <= 0.012, max |E_total(t) - E_total(0)| / N <= 5e-3
  kcal/mol; the same run with OpenMM's VerletIntegrator for comparison.
- ``nve_cutoff``: energy drift per ns and per atom with a 9 Å cutoff and 7.5 Å
  switching: the peptide in vacuum (reaction field, float64, 0.5 fs) and the solvated
  alanine dipeptide (periodic, hbonds + rigid water, 2 fs, float32 and float64).
- ``langevin``: the solvated alanine dipeptide at 300 K (hbonds, rigid water, 2 fs,
  γ = 1/ps, float32): mean temperature within 1%, kinetic-energy mean, variance and a
  Kolmogorov-Smirnov test against the canonical Gamma distribution.
- ``constraints``: 2 fs with hbonds and 4 fs with hbonds + hydrogen mass 4 amu, 10 ps
  each on the solvated dipeptide: stable (finite, temperature at the bath), every
  constrained distance within 1e-5 relative in every sampled frame.
- ``barostat``: a TIP3P box (rigid, 7.5 Å reaction-field cutoff, dispersion
  correction) at 300 K and 1 bar with the Monte Carlo barostat, ours against OpenMM's
  MonteCarloBarostat with identical settings: densities within 1%.
- ``replicas``: Langevin + hbonds + barostat, 2 replicas batched against two
  one-replica runs seeded as replicas 0 and 1: identical trajectories.

Inputs are built on the fly from ../shared/data with OpenMM's Modeller and bundled force
fields (into a cache folder), then loaded by our own loaders; every potential in our
runs is ours (amber + nonbonded). OpenMM runs on its CPU platform.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
SHARED = ROOT.parent / "shared" / "data"
CACHE = Path(tempfile.gettempdir()) / "torchmd_dynamics_validation"


@dataclass
class Report:
    """Figures and checks of one suite."""

    name: str
    figures: dict[str, Any] = field(default_factory=dict)
    checks: list[tuple[str, bool]] = field(default_factory=list)

    def figure(self, key: str, value: Any) -> None:
        self.figures[key] = value
        shown = f"{value:.6g}" if isinstance(value, float) else value
        print(f"  {key:58s} {shown}", flush=True)

    def check(self, what: str, ok: bool) -> None:
        self.checks.append((what, bool(ok)))
        print(f"  {'PASS' if ok else 'FAIL'}  {what}", flush=True)

    @property
    def failed(self) -> int:
        return sum(not ok for _, ok in self.checks)


SUITES: dict[str, Callable[[bool], Report]] = {}


def suite(fn: Callable[[bool], Report]) -> Callable[[bool], Report]:
    SUITES[fn.__name__] = fn
    return fn


# -- inputs --------------------------------------------------------------------------


def peptide(first: int = 0, last: int = 24) -> Path:
    """ACE-(5dfr residues first+2 .. last)-NME (amber14-all): system.xml + PDB."""
    import openmm
    import openmm.app as app
    import openmm.unit as unit

    out = CACHE / f"peptide_{first}_{last}"
    if (out / "system.xml").exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    ff = app.ForceField("amber14-all.xml")
    pdb = app.PDBFile(str(SHARED / "dhfr_5dfr" / "5dfr_solv-cube_equil.pdb"))
    residues = list(pdb.topology.residues())[first : last + 1]
    top = app.Topology()
    chain = top.addChain()
    positions = []

    def add(name: str, atoms: list[tuple[str, Any]]) -> None:
        res = top.addResidue(name, chain)
        for atom_name, atom in atoms:
            top.addAtom(atom_name, atom.element, res)
            positions.append(pdb.positions[atom.index].value_in_unit(unit.nanometer))

    head = {a.name: a for a in residues[0].atoms()}
    add("ACE", [("CH3", head["CA"]), ("C", head["C"]), ("O", head["O"])])
    for res in residues[1:-1]:
        add(res.name, [(a.name, a) for a in res.atoms() if a.element.symbol != "H"])
    tail = {a.name: a for a in residues[-1].atoms()}
    add("NME", [("N", tail["N"]), ("C", tail["CA"])])
    top.createStandardBonds()
    random.seed(4)
    modeller = app.Modeller(top, positions * unit.nanometer)
    modeller.addHydrogens(ff, platform=openmm.Platform.getPlatformByName("Reference"))
    system = ff.createSystem(
        modeller.topology,
        nonbondedMethod=app.NoCutoff,
        constraints=None,
        rigidWater=False,
        removeCMMotion=False,
    )
    (out / "system.xml").write_text(openmm.XmlSerializer.serialize(system))
    with open(out / "structure.pdb", "w") as fh:
        app.PDBFile.writeFile(modeller.topology, modeller.positions, fh, keepIds=False)
    return out


def water_box(edge_nm: float) -> Path:
    """A cubic TIP3P box (amber14/tip3p.xml), edge ``edge_nm``: system.xml + PDB."""
    import openmm
    import openmm.app as app
    import openmm.unit as unit

    out = CACHE / f"tip3p_{edge_nm:.2f}"
    if (out / "system.xml").exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    ff = app.ForceField("amber14/tip3p.xml")
    modeller = app.Modeller(app.Topology(), [])
    modeller.addSolvent(
        ff,
        model="tip3p",
        boxSize=openmm.Vec3(edge_nm, edge_nm, edge_nm) * unit.nanometer,
    )
    system = ff.createSystem(
        modeller.topology,
        nonbondedMethod=app.CutoffPeriodic,
        nonbondedCutoff=0.75 * unit.nanometer,
        constraints=None,
        rigidWater=False,
        removeCMMotion=False,
    )
    (out / "system.xml").write_text(openmm.XmlSerializer.serialize(system))
    with open(out / "structure.pdb", "w") as fh:
        app.PDBFile.writeFile(modeller.topology, modeller.positions, fh, keepIds=False)
    return out


def simulation(
    system: dict[str, Any],
    integrator: dict[str, Any],
    precision: str = "float64",
    cutoff: float | None = None,
    switch: float | None = None,
    **top: Any,
) -> Any:
    """Our Simulation of a config made of these pieces (amber + nonbonded)."""
    from torchmd_core import Simulation, parse_config

    nonbonded: dict[str, Any] = {"kind": "nonbonded"}
    if cutoff is not None:
        nonbonded["cutoff"] = cutoff
    if switch is not None:
        nonbonded["switch_distance"] = switch
    config = parse_config(
        {
            "system": system,
            "potentials": [{"kind": "amber"}, nonbonded],
            "integrator": integrator,
            "precision": precision,
            "steps": 0,
            **top,
        }
    )
    return Simulation.from_config(config)


def ala2_solvated(**options: Any) -> dict[str, Any]:
    return {
        "topology": str(DATA / "ala2_solv/structure.prmtop"),
        "coordinates": str(DATA / "ala2_solv/input.coor"),
        **options,
    }


def xml_system(folder: Path, **options: Any) -> dict[str, Any]:
    return {
        "topology": str(folder / "system.xml"),
        "coordinates": str(folder / "structure.pdb"),
        **options,
    }


def run_recording(
    sim: Any, steps: int, every: int = 1, on_frame: Callable[[Any], None] | None = None
) -> dict[str, np.ndarray]:
    """Advance ``sim`` ``steps`` steps; every ``every`` steps record energies and T."""
    from torchmd_core.simulation import check_finite

    integ, pot = sim.integrator, sim.potential
    rec: dict[str, list[Any]] = {
        "potential": [],
        "kinetic": [],
        "temperature": [],
        "volume": [],
    }
    with torch.no_grad():
        state = integ.setup(sim.state, pot)
        for i in range(1, steps + 1):
            state = integ.step(state, pot)
            if sim.barostat is not None and state.step % sim.barostat.interval == 0:
                state = sim.barostat.apply(state, pot)
            if i % every == 0:
                check_finite(state, sim.system)
                frame = sim.measure(state)
                rec["potential"].append(frame.potential_energy.double().numpy())
                rec["kinetic"].append(frame.kinetic_energy.double().numpy())
                rec["temperature"].append(frame.temperature_K.double().numpy())
                if frame.volume_A3 is not None:
                    rec["volume"].append(frame.volume_A3.double().numpy())
                if on_frame is not None:
                    on_frame(state)
    sim.state = state
    return {k: np.array(v) for k, v in rec.items() if v}


def minimised(sim: Any, tolerance: float = 0.05) -> None:
    from torchmd_core.minimize import minimize_with_result

    result = minimize_with_result(
        sim.potential, sim.state, tolerance, 20000, sim.integrator.constraint_solver
    )
    e0, e1 = float(result.initial_energy[0]), float(result.state.potential_energy[0])
    print(
        f"  minimised in {result.iterations} iterations: E {e0:.3f} -> {e1:.3f} "
        f"kcal/mol, max force {float(result.max_force.max()):.3g}"
    )
    sim.state = result.state


def with_velocities(sim: Any, temperature: float, seed: int) -> None:
    from torchmd_core import maxwell_boltzmann_velocities

    v = maxwell_boltzmann_velocities(
        sim.system, temperature, sim.state.n_replicas, seed, dtype=sim.state.dtype
    )
    sim.state = sim.state.replace(velocities=v)


def block_error(x: np.ndarray, blocks: int = 10) -> float:
    """Standard error of the mean from ``blocks`` contiguous block means."""
    n = len(x) // blocks * blocks
    means = x[:n].reshape(blocks, -1).mean(1)
    return float(means.std(ddof=1) / math.sqrt(blocks))


# -- suites --------------------------------------------------------------------------


@suite
def nve(quick: bool) -> Report:
    report = Report("nve")
    folder = peptide()
    sim = simulation(xml_system(folder), {"kind": "verlet", "timestep_fs": 0.5})
    report.figure("atoms", sim.system.n_atoms)
    minimised(sim, 0.1)
    with_velocities(sim, 300.0, seed=1)
    start_state = sim.state.replace(forces=None, potential_energy=None)
    steps = 500 if quick else 2000
    start = time.perf_counter()
    rec = run_recording(sim, steps)
    e_pot = rec["potential"][:, 0]
    e_tot = e_pot + rec["kinetic"][:, 0]
    report.figure("ms per step", 1e3 * (time.perf_counter() - start) / steps)
    report.figure("mean temperature, K", float(rec["temperature"].mean()))
    ratio = float(np.std(e_tot) / np.std(e_pot))
    drift = float(np.abs(e_tot - e_tot[0]).max() / sim.system.n_atoms)
    report.figure("std(E_total) / std(E_potential)", ratio)
    report.figure("max |E_total(t) - E_total(0)| per atom, kcal/mol", drift)
    ref_ratio, ref_drift = _nve_on_openmm_forces(folder, start_state, steps)
    report.figure("same Verlet on OpenMM's forces: std ratio", ref_ratio)
    report.figure("same Verlet on OpenMM's forces: max drift per atom", ref_drift)
    report.check("std(E_total)/std(E_potential) <= 0.012", ratio <= 0.012)
    report.check(
        "max |E_total(t) - E_total(0)| per atom <= 5e-3 kcal/mol", drift <= 5e-3
    )
    return report


def _nve_on_openmm_forces(folder: Path, start: Any, steps: int) -> tuple[float, float]:
    """Our velocity Verlet from the same start on OpenMM's forces (Reference)."""
    import openmm

    from tests.plugins.dynamics.openmm_helpers import OpenMMPotential
    from torchmd_core.simulation import kinetic_energy

    sim = simulation(xml_system(folder), {"kind": "verlet", "timestep_fs": 0.5})
    system = openmm.XmlSerializer.deserialize((folder / "system.xml").read_text())
    potential = OpenMMPotential(system)
    integ = sim.integrator
    tot, pot = [], []
    with torch.no_grad():
        state = integ.setup(start, potential)
        for _ in range(steps):
            state = integ.step(state, potential)
            pot.append(float(state.potential_energy[0]))
            tot.append(pot[-1] + float(kinetic_energy(state, sim.system)[0]))
    t, p = np.array(tot), np.array(pot)
    return float(np.std(t) / np.std(p)), float(
        np.abs(t - t[0]).max() / sim.system.n_atoms
    )


def drift_per_ns_per_atom(e_total: np.ndarray, dt_ps: float, n_atoms: int) -> float:
    """Slope of a straight line through E_total(t), kcal/mol per ns per atom."""
    t = dt_ps * np.arange(1, len(e_total) + 1)
    slope = np.polyfit(t, e_total, 1)[0]  # kcal/mol/ps
    return float(slope * 1000.0 / n_atoms)


@suite
def nve_cutoff(quick: bool) -> Report:
    report = Report("nve_cutoff")
    sim = simulation(
        xml_system(peptide()),
        {"kind": "verlet", "timestep_fs": 0.5},
        cutoff=9.0,
        switch=7.5,
    )
    minimised(sim, 0.1)
    with_velocities(sim, 300.0, seed=1)
    steps = 1000 if quick else 4000
    rec = run_recording(sim, steps)
    e_tot = (rec["potential"] + rec["kinetic"])[:, 0]
    report.figure(
        "peptide vacuum RF 9/7.5 Å, f64, 0.5 fs: std ratio",
        float(np.std(e_tot) / np.std(rec["potential"][:, 0])),
    )
    report.figure(
        "peptide vacuum RF: drift, kcal/mol/ns/atom",
        drift_per_ns_per_atom(e_tot, 0.5e-3, sim.system.n_atoms),
    )
    for precision in ("float64", "float32"):
        sim = simulation(
            ala2_solvated(constraints="hbonds"),
            {"kind": "verlet", "timestep_fs": 2.0},
            precision=precision,
            cutoff=9.0,
            switch=7.5,
            initial_temperature_K=300.0,
            seed=2,
        )
        steps = 500 if quick else 2500
        start = time.perf_counter()
        rec = run_recording(sim, steps)
        e_tot = (rec["potential"] + rec["kinetic"])[:, 0]
        label = f"ala2 solvated, periodic RF 9/7.5 Å, hbonds, 2 fs, {precision}"
        report.figure(f"{label}: ms/step", 1e3 * (time.perf_counter() - start) / steps)
        report.figure(
            f"{label}: drift, kcal/mol/ns/atom",
            drift_per_ns_per_atom(e_tot, 2e-3, sim.system.n_atoms),
        )
        report.figure(
            f"{label}: std(E_total)/std(E_pot)",
            float(np.std(e_tot) / np.std(rec["potential"][:, 0])),
        )
    report.check("all runs finite", True)
    return report


@suite
def langevin(quick: bool) -> Report:
    from scipy import stats

    from torchmd_core.units import BOLTZMANN_KCAL_MOL_K

    report = Report("langevin")
    temperature = 300.0
    integrator = {
        "kind": "langevin",
        "timestep_fs": 2.0,
        "temperature_K": temperature,
        "friction_per_ps": 1.0,
    }
    sim = simulation(
        ala2_solvated(constraints="hbonds"),
        integrator,
        precision="float32",
        cutoff=9.0,
        switch=7.5,
        initial_temperature_K=temperature,
        seed=3,
    )
    dof = sim.degrees_of_freedom
    report.figure("atoms / degrees of freedom", f"{sim.system.n_atoms} / {dof}")
    # The input structure starts a little cold: 5 ps bring it to the bath.
    equilibration, production = (2500, 2500) if quick else (2500, 10000)
    run_recording(sim, equilibration, every=equilibration)
    start = time.perf_counter()
    rec = run_recording(sim, production, every=5)
    report.figure("ms per step", 1e3 * (time.perf_counter() - start) / production)
    t = rec["temperature"][:, 0]
    ke = rec["kinetic"][:, 0]
    kT = BOLTZMANN_KCAL_MOL_K * temperature
    mean_t, err_t = float(t.mean()), block_error(t)
    report.figure(
        f"mean temperature over {production * 2e-3:.0f} ps, K",
        f"{mean_t:.2f} ± {err_t:.2f}",
    )
    report.figure("mean KE / (dof/2 kT)", float(ke.mean() / (0.5 * dof * kT)))
    report.figure("var KE / (dof/2 (kT)^2)", float(ke.var() / (0.5 * dof * kT * kT)))
    thinned = ke[::20]  # one sample per 0.2 ps: nearly independent
    ks = stats.kstest(thinned, stats.gamma(a=0.5 * dof, scale=kT).cdf)
    report.figure(
        f"KS test of {len(thinned)} KE samples vs Gamma(dof/2, kT): D, p",
        f"{ks.statistic:.4f}, {ks.pvalue:.3f}",
    )
    report.check(
        "mean temperature within 1% of 300 K", abs(mean_t / temperature - 1) < 0.01
    )
    report.check(
        "kinetic energy consistent with the canonical Gamma (KS p > 0.01)",
        ks.pvalue > 0.01,
    )
    return report


@suite
def constraints(quick: bool) -> Report:
    report = Report("constraints")
    cases = [("hbonds, 2 fs", 2.0, None), ("hbonds + H mass 4 amu, 4 fs", 4.0, 4.0)]
    for label, dt, h_mass in cases:
        options = {"constraints": "hbonds"} | (
            {"hydrogen_mass": h_mass} if h_mass else {}
        )
        integrator = {"kind": "langevin", "timestep_fs": dt, "temperature_K": 300.0}
        sim = simulation(
            ala2_solvated(**options),
            integrator,
            precision="float32",
            cutoff=9.0,
            switch=7.5,
            initial_temperature_K=300.0,
            seed=4,
        )
        solver = sim.integrator.solver
        worst = [0.0]

        def track(state: Any, solver: Any = solver, worst: list[float] = worst) -> None:
            worst[0] = max(
                worst[0],
                float(solver.relative_errors(state.positions, state.box).max()),
            )

        # The input starts ~30 K cold once constrained (OpenMM's LangevinMiddle does the
        # same from it) and warms up over ~2 ps with 1/ps friction: not recorded.
        run_recording(sim, int(2.0 / (dt * 1e-3)), every=25, on_frame=track)
        steps = int((4.0 if quick else 10.0) / (dt * 1e-3))
        rec = run_recording(sim, steps, every=25, on_frame=track)
        late = rec["temperature"][:, 0]
        report.figure(
            f"{label}: steps, ps (after 2 ps warm-up)",
            f"{steps}, {steps * dt * 1e-3:.1f}",
        )
        # On-step BAOAB velocities read the kinetic temperature low by ~(ωh/2)² for
        # fast modes (a few % at 4 fs); the sampled configurations are unaffected.
        report.figure(f"{label}: mean kinetic T, K", float(late.mean()))
        report.figure(f"{label}: largest relative constraint error", worst[0])
        report.figure(f"{label}: CCMA fallbacks", solver.fallbacks)
        report.check(
            f"{label}: stable, T within 5% of 300 K",
            abs(late.mean() / 300.0 - 1) < 0.05,
        )
        report.check(
            f"{label}: constrained distances within 1e-5 relative", worst[0] <= 1e-5
        )
    sim = simulation(
        ala2_solvated(constraints="hbonds"),
        {"kind": "langevin", "timestep_fs": 2.0, "temperature_K": 300.0},
        precision="float64",
        cutoff=9.0,
        initial_temperature_K=300.0,
    )
    run_recording(sim, 100, every=100)
    err = float(
        sim.integrator.solver.relative_errors(sim.state.positions, sim.state.box).max()
    )
    report.figure("float64, default tolerance 1e-6: largest relative error", err)
    report.check("float64: constrained distances within 1e-5 relative", err <= 1e-5)
    return report


@suite
def barostat(quick: bool) -> Report:
    from torchmd_core.units import AMU_A3_TO_G_CM3

    report = Report("barostat")
    folder = water_box(1.75)
    report.figure(
        "settings",
        "TIP3P rigid, RF 7.5 Å (eps 78.3), dispersion correction, "
        "LangevinMiddle 2 fs 1/ps, 300 K, 1 bar, MC every 25 steps",
    )
    # Both start from the same box (Modeller's, 0.94 g/cm3), minimised by each engine.
    # A 168-water box fluctuates by ~2% in density and its volume decorrelates slowly,
    # so one short run cannot resolve 1%: ours runs independent replicas (their spread
    # gives an honest error bar), OpenMM one long run (error from 10 block means).
    equil_ps, ours_ps, openmm_ps = (4.0, 10.0, 40.0) if quick else (10.0, 50.0, 200.0)
    n_replicas = 4 if quick else 8
    integrator = {
        "kind": "langevin",
        "timestep_fs": 2.0,
        "temperature_K": 300.0,
        "friction_per_ps": 1.0,
    }
    sim = simulation(
        xml_system(folder, rigid_water=True),
        integrator,
        precision="float32",
        cutoff=7.5,
        initial_temperature_K=300.0,
        seed=5,
        n_replicas=n_replicas,
        barostat={
            "kind": "montecarlo",
            "pressure_bar": 1.0,
            "temperature_K": 300.0,
            "interval": 25,
        },
    )
    report.figure("atoms / waters", f"{sim.system.n_atoms} / {sim.system.n_atoms // 3}")
    mass = sim.system.total_mass()
    sim.minimize(0.5, 2000)
    equilibration = run_recording(sim, int(equil_ps / 2e-3), every=25)
    steps = int(ours_ps / 2e-3)
    start = time.perf_counter()
    rec = run_recording(sim, steps, every=25)
    report.figure(
        f"ours: ms per step ({n_replicas} replicas batched)",
        1e3 * (time.perf_counter() - start) / steps,
    )
    ours = mass / rec["volume"] * AMU_A3_TO_G_CM3  # (frames, replicas)
    per_replica = ours.mean(0)
    ours_error = float(per_replica.std(ddof=1) / math.sqrt(n_replicas))
    reference = _openmm_density(folder, equil_ps, openmm_ps)
    early = mass / equilibration["volume"] * AMU_A3_TO_G_CM3
    np.save(CACHE / "density_ours.npy", np.concatenate([early, ours]))
    np.save(CACHE / "density_openmm.npy", reference)
    report.figure(
        f"ours ({n_replicas} replicas x {ours_ps:.0f} ps): density, g/cm3",
        f"{ours.mean():.4f} ± {ours_error:.4f}",
    )
    report.figure(
        "ours: replica means, g/cm3", " ".join(f"{m:.3f}" for m in per_replica)
    )
    report.figure(
        f"OpenMM ({openmm_ps:.0f} ps): density, g/cm3",
        f"{reference.mean():.4f} ± {block_error(reference):.4f}",
    )
    report.figure("ours: mean temperature, K", float(rec["temperature"].mean()))
    rate = sim.barostat.acceptance_rate
    report.figure(
        "ours: acceptance rate",
        float(rate.mean()) if rate is not None else float("nan"),
    )
    diff = float(ours.mean() / reference.mean() - 1)
    report.figure("relative difference", diff)
    if quick:  # 4 × 10 ps resolve about ±2%: check agreement within the statistics
        sigma = math.hypot(ours_error, block_error(reference)) / float(reference.mean())
        report.figure("combined standard error, relative", sigma)
        report.check(
            "densities agree within 3 combined standard errors (quick mode)",
            abs(diff) < 3 * sigma,
        )
    else:
        report.check("densities agree within 1%", abs(diff) < 0.01)
    return report


def _openmm_density(folder: Path, equil_ps: float, production_ps: float) -> np.ndarray:
    """OpenMM's MonteCarloBarostat, same settings (CPU platform, rigid water)."""
    import openmm
    import openmm.app as app
    import openmm.unit as unit

    pdb = app.PDBFile(str(folder / "structure.pdb"))
    ff = app.ForceField("amber14/tip3p.xml")
    system = ff.createSystem(
        pdb.topology,
        nonbondedMethod=app.CutoffPeriodic,
        nonbondedCutoff=0.75 * unit.nanometer,
        constraints=None,
        rigidWater=True,
        removeCMMotion=False,
    )
    system.addForce(openmm.MonteCarloBarostat(1.0 * unit.bar, 300 * unit.kelvin, 25))
    integ = openmm.LangevinMiddleIntegrator(
        300 * unit.kelvin, 1.0 / unit.picosecond, 2 * unit.femtosecond
    )
    platform = openmm.Platform.getPlatformByName("CPU")
    context = openmm.Context(system, integ, platform, {"Threads": "1"})
    context.setPositions(pdb.positions)
    context.setPeriodicBoxVectors(*pdb.topology.getPeriodicBoxVectors())
    openmm.LocalEnergyMinimizer.minimize(context, 0.5 * 41.84, 2000)
    context.setVelocitiesToTemperature(300 * unit.kelvin, 5)
    integ.step(int(equil_ps / 2e-3))
    mass = sum(
        system.getParticleMass(i).value_in_unit(unit.dalton)
        for i in range(system.getNumParticles())
    )
    out = []
    for _ in range(int(production_ps / 2e-3) // 25):
        integ.step(25)
        volume = (
            context.getState().getPeriodicBoxVolume().value_in_unit(unit.angstrom**3)
        )
        out.append(mass / volume * 1.0e24 / 6.02214076e23)
    return np.array(out)


@suite
def replicas(quick: bool) -> Report:
    report = Report("replicas")
    integrator = {"kind": "langevin", "timestep_fs": 2.0, "temperature_K": 300.0}
    barostat = {"kind": "montecarlo", "temperature_K": 300.0, "interval": 5}
    common = {
        "precision": "float64",
        "cutoff": 9.0,
        "initial_temperature_K": 300.0,
        "barostat": barostat,
    }
    batched = simulation(
        ala2_solvated(constraints="hbonds"), integrator, n_replicas=2, seed=10, **common
    )
    start = batched.state
    steps = 20
    batched.run(steps)
    worst_x = worst_box = 0.0
    for r in range(2):
        alone = simulation(
            ala2_solvated(constraints="hbonds"),
            integrator,
            n_replicas=1,
            seed=10 + r,
            **common,
        )
        alone.state = start.select([r])
        alone.run(steps)
        worst_x = max(
            worst_x,
            float((alone.state.positions[0] - batched.state.positions[r]).abs().max()),
        )
        worst_box = max(
            worst_box, float((alone.state.box[0] - batched.state.box[r]).abs().max())
        )
    report.figure(
        f"max |x_batched - x_alone| after {steps} steps (2 replicas, with barostat), Å",
        worst_x,
    )
    report.figure("max |box_batched - box_alone|, Å", worst_box)
    report.check(
        "batched replicas equal one-replica runs (1e-8 Å)",
        worst_x <= 1e-8 and worst_box <= 1e-8,
    )
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "suites", nargs="*", help=f"any of: {', '.join(SUITES)} (default: all)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="shorter runs (what the slow tests use)"
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (default 1)"
    )
    parser.add_argument("--list", action="store_true", help="list the suites and exit")
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(SUITES))
        return 0
    unknown = [n for n in args.suites if n not in SUITES]
    if unknown:
        parser.error(f"unknown suite(s) {unknown}; known: {', '.join(SUITES)}")
    torch.set_num_threads(args.threads)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    failed = 0
    for name in args.suites or list(SUITES):
        print(f"== {name}{' (quick)' if args.quick else ''}", flush=True)
        start = time.perf_counter()
        report = SUITES[name](args.quick)
        print(f"   ({time.perf_counter() - start:.0f} s)", flush=True)
        failed += report.failed
    print(
        "all dynamics validations passed"
        if not failed
        else f"{failed} dynamics check(s) failed"
    )
    return failed


if __name__ == "__main__":
    sys.exit(main())
