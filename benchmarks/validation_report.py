"""Write the validation page, docs/pages/validation.md, from a live run.

    python benchmarks/validation_report.py          # all systems, full dynamics runs
    python benchmarks/validation_report.py --quick  # shorter dynamics runs
    python benchmarks/validation_report.py --systems ala2_vacuum benzamidine \\
        --suites none --output /tmp/validation.md   # a small page (the test's run)
    python benchmarks/validation_report.py --list   # the systems and suites

Parity: for every input in tests/data (and DHFR when ../shared/data is present) the
OpenMM System is built by OpenMM's own loader and split into our terms by
tests/reference/make_reference.py (``reference_from_built``: Reference platform,
double precision, evaluated here, not read from the stored npz); our side is the
registry's loader + ``amber`` + ``nonbonded`` in float64
(tests/plugins/test_openmm_parity.py helpers). Per term: |ΔE| against
max(1e-3, 1e-7 |E|) kcal/mol and the largest force-component error (our forces of a term
are −∇ of its energy by autograd) against 1e-3 kcal/mol/Å.

Dynamics: the suites of benchmarks/dynamics_validation.py (NVE, Langevin, barostat
against OpenMM, replicas), plus an NVE drift matrix (float32/float64, with and without
constraints) on the solvated alanine dipeptide.

Exit status: 1 when any parity row or dynamics check fails, else 0.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import openmm
import torch

ROOT = Path(__file__).resolve().parents[1]
for _path in (ROOT, ROOT / "tests" / "reference", ROOT / "benchmarks"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import make_reference as mr  # noqa: E402  (tests/reference/make_reference.py)

from tests.conftest import DATA, SHARED  # noqa: E402
from tests.plugins.test_openmm_parity import (  # noqa: E402
    load_system,
    potential_for,
    reference_state,
)
from torchmd_core import PotentialSum, State, System, default_registry  # noqa: E402

PAGE = ROOT / "docs" / "pages" / "validation.md"
FORCE_TOLERANCE = 1e-3  # kcal/mol/Å

#: How the page names our terms.
TERM_LABELS = {
    "bonds": "bonds",
    "angles": "angles",
    "urey_bradley": "Urey–Bradley",
    "torsions": "torsions",
    "impropers": "impropers (periodic)",
    "harmonic_impropers": "impropers (harmonic)",
    "cmap": "CMAP",
    "lj14": "1-4 LJ",
    "coulomb14": "1-4 Coulomb",
    "lj": "LJ",
    "coulomb": "electrostatics (Coulomb / RF)",
    "dispersion_correction": "dispersion correction",
}


def energy_tolerance(energy: float) -> float:
    """The acceptance tolerance on an energy: max(1e-3, 1e-7 |E|) kcal/mol."""
    return max(1e-3, 1e-7 * abs(energy))


# -- parity rows --


@dataclass
class Row:
    """One term (or the total) of one (system, mode): OpenMM's value and our errors."""

    term: str
    reference: float  # kcal/mol
    ours: float
    force_error: float  # max |ΔF| component, kcal/mol/Å

    @property
    def energy_error(self) -> float:
        return abs(self.ours - self.reference)

    @property
    def tolerance(self) -> float:
        return energy_tolerance(self.reference)

    @property
    def passed(self) -> bool:
        return (
            self.energy_error <= self.tolerance and self.force_error <= FORCE_TOLERANCE
        )


@dataclass
class Comparison:
    """Every term and the total of one system in one nonbonded mode."""

    system: str
    mode: str
    n_atoms: int
    openmm_loader: str
    rows: list[Row]
    total: Row
    float32_relative: float
    seconds: float
    key: str = ""  # the SYSTEMS entry it belongs to

    @property
    def passed(self) -> bool:
        return self.total.passed and all(r.passed for r in self.rows)

    @property
    def worst(self) -> tuple[float, float]:
        """(largest |ΔE|/tolerance, largest |ΔF|/tolerance) over the terms and total."""
        rows = [*self.rows, self.total]
        return (
            max(r.energy_error / r.tolerance for r in rows),
            max(r.force_error / FORCE_TOLERANCE for r in rows),
        )


def term_forces(
    potential: PotentialSum, state: State
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Our energy (kcal/mol) and forces (N, 3; −∇E by autograd) of every term."""
    positions = state.positions.detach().clone().requires_grad_(True)
    terms = potential.energy_terms(state.replace(positions=positions))
    energies, forces = {}, {}
    for name, value in terms.items():
        energies[name] = float(value[0].detach())
        if value.requires_grad:
            (grad,) = torch.autograd.grad(value.sum(), positions, retain_graph=True)
            forces[name] = -grad[0].detach().numpy()
        else:
            forces[name] = np.zeros(tuple(positions.shape[1:]))
    return energies, forces


def float32_relative(potential: PotentialSum, state: State, e64: float) -> float:
    """|E(float32) − E(float64)| / |E(float64)| of the total."""
    with torch.no_grad():
        e32 = float(
            potential.to(torch.float32).energy(state.to(dtype=torch.float32))[0]
        )
    potential.to(torch.float64)
    return abs(e32 - e64) / max(abs(e64), 1e-12)


def compare(name: str, mode: mr.Mode, built: mr.Built, system: System) -> Comparison:
    """OpenMM (live, split into our terms) against our loader + amber + nonbonded."""
    start = time.perf_counter()
    data = mr.reference_from_built(built, name, mode)
    meta = json.loads(str(data["meta"]))
    potential = potential_for(system, meta)
    state = reference_state(data)
    energies, forces = term_forces(potential, state)
    rows = []
    order = list(TERM_LABELS)
    for term in sorted(meta["terms"], key=order.index):
        df = float(np.abs(forces[term] - data[f"forces_{term}"]).max())
        rows.append(Row(term, float(data[f"energy_{term}"]), energies[term], df))
    for term in sorted(set(energies) - set(meta["terms"])):  # ours only: must be 0
        rows.append(Row(term, 0.0, energies[term], float(np.abs(forces[term]).max())))
    total = (float(data["energy_total"]), data["forces_total"])
    return finish(name, mode.name, built.loader, rows, potential, state, total, start)


def finish(
    name: str,
    mode: str,
    loader: str,
    rows: list[Row],
    potential: PotentialSum,
    state: State,
    total: tuple[float, np.ndarray],
    start: float,
) -> Comparison:
    """The comparison with its total row (forces on every row, virtual sites as OpenMM
    reports them) and the float32 figure."""
    with torch.no_grad():
        energy, forces = potential.energy_and_forces(state, site_forces=True)
    df = float(np.abs(forces[0].numpy() - total[1]).max())
    row = Row("total", total[0], float(energy[0]), df)
    f32 = float32_relative(potential, state, row.ours)
    n_atoms = state.n_atoms
    return Comparison(
        name, mode, n_atoms, loader, rows, row, f32, time.perf_counter() - start
    )


# -- the systems --


@dataclass
class SystemCase:
    """One input: what it covers, its files, and how to compare it in each mode."""

    title: str
    covers: str
    files: str
    modes: tuple[str, ...]
    run: Callable[[str], Comparison]


def stored(name: str) -> Callable[[str], Comparison]:
    """A system of make_reference.CASES, read by the loader the registry picks."""
    case = mr.CASES[name]
    return lambda mode: compare(
        name,
        case.mode_table[mode],
        case.build(case.mode_table[mode]),
        load_system(name),
    )


def cache_dir() -> Path:
    path = Path(tempfile.gettempdir()) / "torchmd_validation_report"
    path.mkdir(exist_ok=True)
    return path


def gromacs(mode_name: str) -> Comparison:
    """ala2_vacuum.prmtop, written as a GROMACS top by parmed, vs GromacsTopFile."""
    import warnings

    import openmm.app as app
    import parmed

    top = cache_dir() / "ala2_vacuum.top"
    if not top.exists():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            structure = parmed.load_file(str(DATA / "ala2_vacuum/ala2_vacuum.prmtop"))
            structure.save(str(top), format="gromacs", overwrite=True)
    mode = mr.MODES[mode_name]
    system = app.GromacsTopFile(str(top)).createSystem(**mr.loader_kwargs(mode))
    mr.configure_nonbonded(system, mode, check_loader=True)
    positions = mr.read_namd_coor(DATA / "ala2_solv/input.coor")[:22]
    built = mr.Built(system, positions, None, "GromacsTopFile", [str(top)])
    ours = default_registry().loader_for(top, "topology").load_topology(top, [])
    return compare("ala2_gromacs", mode, built, ours)


def charmm36(mode_name: str) -> Comparison:
    """The CHARMM36 heptapeptide (psf + the CHARMM36 toppar) through CharmmPsfFile."""
    folder, params = DATA / "peptide_charmm36", DATA / "waterbox" / "parameters.prm"
    mode = mr.MODES[mode_name]
    built = mr.build_charmm(
        folder / "peptide.psf",
        [params],
        mode,
        mr.pdb_positions(folder / "structure.pdb"),
        None,
        folder / "structure.pdb",
    )
    registry = default_registry()
    ours = registry.loader_for(folder / "peptide.psf", "topology").load_topology(
        folder / "peptide.psf", [params]
    )
    return compare("peptide_charmm36", mode, built, ours)


#: OpenMM force class → our terms (virtual-site systems are compared force by force:
#: the term split of make_reference assumes no force acts on a site through bonds).
FORCE_CLASSES = {
    "HarmonicBondForce": ("bonds", ("bonds",)),
    "HarmonicAngleForce": ("angles", ("angles",)),
    "PeriodicTorsionForce": ("torsions + impropers", ("torsions", "impropers")),
    "CMAPTorsionForce": ("CMAP", ("cmap",)),
    "NonbondedForce": (
        "nonbonded (LJ, Coulomb/RF, 1-4, dispersion)",
        ("lj", "coulomb", "lj14", "coulomb14", "dispersion_correction"),
    ),
}


def virtual_sites(name: str, route: str) -> Callable[[str], Comparison]:
    """4-/5-site waters (tests/data/virtual_sites), sites placed by OpenMM, compared
    per OpenMM force (tests/plugins/amber/test_virtual_sites.py helpers)."""

    def run(mode_name: str) -> Comparison:
        from tests.plugins.amber import test_virtual_sites as vs
        from tests.plugins.amber.openmm_reference import evaluate, per_force

        start = time.perf_counter()
        omm = vs.openmm_system(name, route, mode_name)
        xyz, box = vs.coordinates(name, route)
        xyz = vs.openmm_placed(omm, xyz, box)
        box = box if mode_name == "rf_periodic" else None
        system = vs.our_system(name, route)
        potential = vs.our_potential(system, name, mode_name)
        state = State.from_coordinates(
            torch.as_tensor(xyz), None if box is None else torch.as_tensor(box)
        )
        energies, forces = term_forces(potential, state)
        real = np.ones(system.n_atoms, dtype=bool)
        real[system.virtual_sites.sites.numpy()] = False
        rows = []
        for cls, _, energy, f in per_force(omm, xyz, box):
            if cls not in FORCE_CLASSES:
                continue  # CMMotionRemover: no energy
            label, terms = FORCE_CLASSES[cls]
            ours = sum(energies.get(t, 0.0) for t in terms)
            ours_f = sum(forces[t] for t in terms if t in forces)
            rows.append(Row(label, energy, ours, float(np.abs(ours_f - f)[real].max())))
        total = evaluate(omm, xyz, box)
        loader = "AmberPrmtopFile" if route == "prmtop" else "XmlSerializer"
        return finish(f"{name} ({route})", mode_name, loader, rows, potential, state,
                      total, start)  # fmt: skip

    return run


def dhfr(mode_name: str) -> Comparison:
    """DHFR in water (OpenMM ForceField amber99sb + tip3p), read back as System XML."""
    import openmm

    mode = mr.MODES[mode_name]
    built = mr.dhfr(mode, SHARED)
    xml = cache_dir() / "dhfr.xml"
    xml.write_text(openmm.XmlSerializer.serialize(built.system))
    pdb = SHARED / "dhfr_5dfr" / "5dfr_solv-cube_equil.pdb"
    system = default_registry().loader_for(xml, "topology").load_topology(xml, [pdb])
    return compare("dhfr", mode, built, system)


def _modes(name: str) -> tuple[str, ...]:
    return mr.CASES[name].modes


VS_MODES = ("nocutoff", "rf_nonperiodic", "rf_periodic")
ROUTE_LABELS = {"prmtop": "prmtop + rst7", "xml": "OpenMM System XML + PDB"}
SYSTEMS: dict[str, SystemCase] = {
    "ala2_vacuum": SystemCase(
        "Alanine dipeptide in vacuum (AMBER prmtop)",
        "AMBER ff14SB bonded terms, 1-4 scaling",
        "`ala2_vacuum/ala2_vacuum.prmtop`",
        _modes("ala2_vacuum"),
        stored("ala2_vacuum"),
    ),
    "ala2_solv": SystemCase(
        "Solvated alanine dipeptide (AMBER prmtop)",
        "ff14SB + flexible TIP3P, periodic reaction field, switching, "
        "dispersion correction",
        "`ala2_solv/structure.prmtop`, `input.coor`, `input.xsc`",
        _modes("ala2_solv"),
        stored("ala2_solv"),
    ),
    "ala2_ljpair": SystemCase(
        "Alanine dipeptide with a modified LJ pair (AMBER pair table)",
        "prmtop LJ table off the combining rule → OpenMM CustomNonbondedForce table",
        "`ala2_ljpair/ala2_ljpair.prmtop`",
        _modes("ala2_ljpair"),
        stored("ala2_ljpair"),
    ),
    "ala2_solv_ljpair": SystemCase(
        "Solvated alanine dipeptide with a modified O–OW pair",
        "pair table with periodic cutoff, switching and long-range correction",
        "`ala2_solv_ljpair/structure_ljpair.prmtop`",
        _modes("ala2_solv_ljpair"),
        stored("ala2_solv_ljpair"),
    ),
    "ala2_gromacs": SystemCase(
        "Alanine dipeptide as a GROMACS topology",
        "GROMACS top (written by parmed from `ala2_vacuum.prmtop`) against OpenMM's "
        "GromacsTopFile",
        "`ala2_vacuum.top` (made at run time)",
        ("nocutoff", "rf_nonperiodic"),
        gromacs,
    ),
    "benzamidine": SystemCase(
        "Benzamidine (CHARMM psf + CGenFF-style prm)",
        "CHARMM harmonic improper",
        "`benzamidine/mol.psf`, `mol.rtf`, `mol.prm`",
        _modes("benzamidine"),
        stored("benzamidine"),
    ),
    "ala3": SystemCase(
        "Ala-Ala-Ala (CHARMM22 psf + par)",
        "Urey–Bradley, harmonic impropers, CMAP, special 1-4 LJ (a strained structure)",
        "`ala3/ala_ala_ala.psf`, `charmm22.rtf`, `charmm22.par`",
        _modes("ala3"),
        stored("ala3"),
    ),
    "peptide_charmm36": SystemCase(
        "CHARMM36 heptapeptide with ions (psf + CHARMM36 toppar)",
        "CHARMM36 wildcards, UB, CMAP, NBFIX (SOD–OC, SOD–CLA)",
        "`peptide_charmm36/peptide.psf`, `waterbox/parameters.prm`",
        ("nocutoff", "rf_nonperiodic"),
        charmm36,
    ),
    "waterbox": SystemCase(
        "CHARMM TIP3P water box with Na⁺/Cl⁻ (NBFIX)",
        "NBFIX pair → CustomNonbondedForce, 15 Å cube, cutoff 7 Å / switch 6 Å",
        "`waterbox/structure.psf`, `parameters.prm`, `output.xtc`",
        _modes("waterbox"),
        stored("waterbox"),
    ),
    "peptide_ff19sb": SystemCase(
        "Capped peptide, ff19SB (OpenMM System XML)",
        "AMBER-style CMAP",
        "`peptide_ff19sb/system.xml`, `structure.pdb`",
        _modes("peptide_ff19sb"),
        stored("peptide_ff19sb"),
    ),
    "peptide_dodec": SystemCase(
        "Solvated peptide in a rhombic dodecahedron (OpenMM System XML)",
        "triclinic box, minimum image in reduced form",
        "`peptide_dodec/system.xml`, `structure.pdb`",
        _modes("peptide_dodec"),
        stored("peptide_dodec"),
    ),
    **{
        f"{name}_{route}": SystemCase(
            f"{label} ({ROUTE_LABELS[route]})",
            covers,
            f"`virtual_sites/{name}/`",
            VS_MODES,
            virtual_sites(name, route),
        )
        for name, label, covers in (
            (
                "opc_ff19sb",
                "OPC water + ff19SB peptide",
                "4-site water (one out-of-plane site)",
            ),
            ("tip4pew", "TIP4P-Ew water", "4-site water in a triclinic box"),
            ("tip5p", "TIP5P water", "5-site water (two out-of-plane sites)"),
        )
        for route in ("prmtop", "xml")
    },
    "dhfr": SystemCase(
        "DHFR in water, 23,558 atoms (ForceField amber99sb + tip3p → System XML)",
        "a large periodic system",
        "`../shared/data/dhfr_5dfr/5dfr_solv-cube_equil.pdb`",
        mr.DHFR_MODES,
        dhfr,
    ),
}


# -- dynamics --


@dataclass
class SuiteResult:
    name: str
    title: str
    figures: dict[str, Any]
    checks: list[tuple[str, bool]]
    seconds: float
    table: tuple[tuple[str, ...], list[list[str]]] | None = None


@dataclass
class Options:
    quick: bool
    systems: list[str]
    suites: list[str]
    output: Path
    argv: list[str] = field(default_factory=list)  # as given, for the page


def nve_matrix(quick: bool) -> Any:
    """Velocity Verlet on the minimised capped peptide of the ``nve`` suite (vacuum, no
    cutoff, from 300 K): float64 and float32, flexible at 0.5 fs and with bonds to
    hydrogen constrained at 2 fs; each against the same integrator (float64) driven
    by OpenMM's forces (Reference platform) from the same start."""
    import openmm
    from dynamics_validation import Report, minimised, peptide, with_velocities

    from tests.plugins.dynamics.openmm_helpers import OpenMMPotential

    report = Report("nve_matrix")
    table: list[list[str]] = []
    report.table = (NVE_COLUMNS, table)  # type: ignore[attr-defined]
    ps, folder, start = (2.0 if quick else 10.0), peptide(), None
    omm = openmm.XmlSerializer.deserialize((folder / "system.xml").read_text())
    for label, dt, options in (
        ("flexible, 0.5 fs", 0.5, {}),
        ("hbonds, 2 fs", 2.0, {"constraints": "hbonds"}),
    ):
        runs = {}
        for precision in ("float64", "float32", "OpenMM forces"):
            sim = _verlet(
                folder, dt, options, "float32" if precision == "float32" else "float64"
            )
            if start is None:  # minimise once (float64); every run starts there
                minimised(sim, 0.1)
                with_velocities(sim, 300.0, seed=1)
                start = sim.state.replace(forces=None, potential_energy=None)
            potential = OpenMMPotential(omm) if precision == "OpenMM forces" else None
            runs[precision] = _nve_energies(
                sim, start, int(ps / (dt * 1e-3)), potential
            )
        dof = float(sim.degrees_of_freedom)
        for precision, (t, e_tot, e_pot, temp) in runs.items():
            slope = float(np.polyfit(t, e_tot, 1)[0]) * 1000.0  # kcal/mol/ns
            table.append([
                label, precision, f"{round(t[-1] / (dt * 1e-3))}", f"{dof:.0f}",
                f"{slope / dof:.2e}", f"{np.abs(e_tot - e_tot[0]).max() / dof:.2e}",
                f"{np.std(e_tot) / np.std(e_pot):.4f}", f"{temp.mean():.1f}",
            ])  # fmt: skip
        # Chaos amplifies 1e-12 force differences within ps: the first ps pointwise,
        # then the fluctuation ratio of the whole runs.
        early = runs["float64"][0] <= 1.0
        ours, theirs = runs["float64"][1], runs["OpenMM forces"][1]
        same = float(np.abs(ours - theirs)[early].max())
        report.figure(
            f"{label}: max |E_ours(t) - E_OpenMM forces(t)|, first ps, f64, kcal/mol",
            same,
        )
        report.check(
            f"{label}, float64: energies as on OpenMM's forces, first ps (1e-6)",
            same <= 1e-6,
        )
        ratio = {k: float(np.std(v[1]) / np.std(v[2])) for k, v in runs.items()}
        report.check(
            f"{label}, float64: std(E_total)/std(E_pot) within 10% of OpenMM forces'",
            abs(ratio["float64"] / ratio["OpenMM forces"] - 1) <= 0.1,
        )
        report.check(
            f"{label}, float32: std(E_total)/std(E_pot) within 10% of float64's",
            abs(ratio["float32"] / ratio["float64"] - 1) <= 0.1,
        )
    return report


NVE_COLUMNS = (
    "run", "forces", "steps", "dof", "drift, kcal/mol/ns/dof",
    "max \\|E(t) − E(0)\\| / dof, kcal/mol", "std(E_total)/std(E_pot)", "mean T, K",
)  # fmt: skip


def _verlet(folder: Path, dt: float, options: dict[str, Any], precision: str) -> Any:
    import dynamics_validation as dv

    integrator = {"kind": "verlet", "timestep_fs": dt}
    return dv.simulation(
        dv.xml_system(folder, **options), integrator, precision=precision
    )


def _nve_energies(
    sim: Any, start: Any, steps: int, potential: Any = None
) -> tuple[np.ndarray, ...]:
    """(time ps, E_total, E_potential, T) every 10 fs of a run from ``start``; on
    ``potential`` (default: the simulation's) with the simulation's integrator."""
    from torchmd_core.simulation import kinetic_energy
    from torchmd_core.units import BOLTZMANN_KCAL_MOL_K

    potential = sim.potential if potential is None else potential
    integ, dt_ps = sim.integrator, sim.integrator.timestep_fs * 1e-3
    every = max(1, round(0.01 / dt_ps))
    rows = []
    with torch.no_grad():
        state = integ.setup(start.to(dtype=sim.state.dtype), potential)
        for i in range(1, steps + 1):
            state = integ.step(state, potential)
            if i % every == 0:
                ke = float(kinetic_energy(state, sim.system)[0])
                rows.append((i * dt_ps, float(state.potential_energy[0]), ke))
    t, e_pot, ke = (np.array(c) for c in zip(*rows, strict=True))
    temp = 2.0 * ke / (sim.degrees_of_freedom * BOLTZMANN_KCAL_MOL_K)
    return t, e_pot + ke, e_pot, temp


SUITE_TITLES = {
    "nve": "NVE: energy conservation without cutoff",
    "nve_cutoff": "NVE: drift with a cutoff",
    "nve_matrix": "NVE drift: float32/float64, with and without constraints",
    "langevin": "Langevin thermostat: temperature and kinetic-energy distribution",
    "constraints": "Constraints: accuracy and 2/4 fs stability",
    "barostat": "Monte Carlo barostat: density against OpenMM",
    "replicas": "Replica independence",
}
SUITE_ORDER = tuple(SUITE_TITLES)


def run_suite(name: str, quick: bool) -> SuiteResult:
    import dynamics_validation as dv

    fn = nve_matrix if name == "nve_matrix" else dv.SUITES[name]
    print(f"-- {name}", flush=True)
    start = time.perf_counter()
    report = fn(quick)
    seconds = time.perf_counter() - start
    print(f"   {name}: {seconds:.0f} s, {report.failed} failed", flush=True)
    table = getattr(report, "table", None)
    return SuiteResult(
        name, SUITE_TITLES[name], report.figures, report.checks, seconds, table
    )


# -- the page --


def fmt_e(x: float) -> str:
    return f"{x:.6f}"


def fmt_err(x: float) -> str:
    return "0" if x == 0.0 else f"{x:.1e}"


def mark(ok: bool) -> str:
    return "✓" if ok else "**✗ FAIL**"


def versions() -> list[str]:
    import torchmd_core

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
            capture_output=True, text=True, check=True,
        ).stdout.splitlines()  # fmt: skip
        if changed:
            commit += f" + uncommitted changes in {len(changed)} tracked files"
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    return [
        f"torchmd-core {torchmd_core.__version__} (git {commit})",
        f"torch {torch.__version__}",
        f"OpenMM {openmm.__version__} (git {openmm.version.git_revision[:12]})",
        f"numpy {np.__version__}",
        f"Python {platform.python_version()}",
        f"{platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch threads {torch.get_num_threads()}",
    ]


def summary_table(comparisons: list[Comparison]) -> list[str]:
    lines = [
        "| system | mode | atoms | OpenMM loader | E OpenMM | \\|ΔE\\| | tolerance | "
        "max \\|ΔF\\| | worst term \\|ΔE\\|/tol | f32 rel. | pass |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|---:|:---:|",
    ]
    for c in comparisons:
        t = c.total
        worst_term = max((r.energy_error / r.tolerance for r in c.rows), default=0.0)
        lines.append(
            f"| {c.system} | {c.mode} | {c.n_atoms} | {c.openmm_loader} | "
            f"{fmt_e(t.reference)} | {fmt_err(t.energy_error)} | {t.tolerance:.0e} | "
            f"{fmt_err(t.force_error)} | "
            f"{fmt_err(worst_term)} | {c.float32_relative:.0e} | {mark(c.passed)} |"
        )
    return lines


def term_table(comparisons: list[Comparison]) -> list[str]:
    lines = [
        "| mode | term | E OpenMM | E ours | \\|ΔE\\| | tolerance | max \\|ΔF\\| "
        "| pass |",
        "|---|---|---:|---:|---:|---:|---:|:---:|",
    ]
    for c in comparisons:
        for r in [*c.rows, c.total]:
            term = "**total**" if r.term == "total" else TERM_LABELS.get(r.term, r.term)
            lines.append(
                f"| {c.mode} | {term} | {fmt_e(r.reference)} | {fmt_e(r.ours)} | "
                f"{fmt_err(r.energy_error)} | {r.tolerance:.0e} | "
                f"{fmt_err(r.force_error)} | "
                f"{mark(r.passed)} |"
            )
    return lines


def figure_text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|")


def suite_section(result: SuiteResult) -> list[str]:
    lines = [
        f"### {result.title}",
        "",
        f"Suite `{result.name}` ({result.seconds:.0f} s).",
        "",
    ]
    if result.table is not None:
        header, rows = result.table
        lines += ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        lines += [""]
    lines += ["| figure | value |", "|---|---|"]
    lines += [
        f"| {k.replace('|', chr(92) + '|')} | {figure_text(v)} |"
        for k, v in result.figures.items()
    ]
    lines += ["", "| check | result |", "|---|:---:|"]
    lines += [
        f"| {what.replace('|', chr(92) + '|')} | {mark(ok)} |"
        for what, ok in result.checks
    ]
    return [*lines, ""]


def page(
    options: Options,
    comparisons: list[Comparison],
    suites: list[SuiteResult],
    skipped: list[str],
    started: datetime.datetime,
    seconds: float,
) -> str:
    mode = (
        "**quick** (`--quick`: shorter dynamics runs)" if options.quick else "**full**"
    )
    command = " ".join(["python benchmarks/validation_report.py", *options.argv])
    failed_rows = sum(not c.passed for c in comparisons)
    failed_checks = sum(not ok for s in suites for _, ok in s.checks)
    worst_e = max((c.worst[0] for c in comparisons), default=0.0)
    worst_f = max((c.worst[1] for c in comparisons), default=0.0)
    max_de = max(
        (r.energy_error for c in comparisons for r in [*c.rows, c.total]), default=0.0
    )
    max_df = max(
        (r.force_error for c in comparisons for r in [*c.rows, c.total]), default=0.0
    )
    out = [
        "# Validation",
        "",
        "<!-- Generated by benchmarks/validation_report.py: do not edit by hand. -->",
        "",
        "How far torchmd-core's energies, forces and dynamics are from OpenMM's,",
        "measured by a script and written to this page by it. Regenerate with:",
        "",
        "```bash",
        command,
        "```",
        "",
        f"This page: {mode} mode, generated {started:%Y-%m-%d %H:%M} UTC in "
        f"{seconds / 60:.1f} min on a shared 2-core CPU machine, with "
        + ", ".join(versions())
        + ".",
        "",
        *(QUICK_NOTE if options.quick and suites else []),
        "**Result:** "
        + (
            f"{len(comparisons)} (system, mode) comparisons, {failed_rows} failed; "
            if comparisons
            else ""
        )
        + (
            f"{sum(len(s.checks) for s in suites)} dynamics checks, "
            f"{failed_checks} failed. "
            if suites
            else ""
        )
        + (
            f"Largest energy error {fmt_err(max_de)} kcal/mol "
            f"({worst_e:.1e} of its tolerance), largest force-component error "
            f"{fmt_err(max_df)} kcal/mol/Å ({worst_f:.1e} of its tolerance)."
            if comparisons
            else ""
        ),
        "",
    ]
    out += EXPLANATION
    if comparisons:
        out += ["## Summary: total energy and forces", ""]
        out += [*summary_table(comparisons), ""]
        out += [
            "*f32 rel.*: |E(float32) − E(float64)| / |E| of our total (informative;",
            "the acceptance is in float64).",
            "",
            "## Per system and term",
            "",
        ]
        for key, case in SYSTEMS.items():
            mine = [c for c in comparisons if c.key == key]
            if not mine:
                continue
            out += [
                f"### {case.title}",
                "",
                f"Covers: {case.covers}. Inputs: {case.files}.",
                "",
            ]
            if key.startswith(("opc", "tip4pew", "tip5p")):
                out += [VS_NOTE, ""]
            out += [*term_table(mine), ""]
    if skipped:
        out += ["Not run: " + "; ".join(skipped) + ".", ""]
    if suites:
        out += ["## Dynamics", "", *DYNAMICS_TEXT]
        for result in suites:
            out += suite_section(result)
    out += KNOWN_DIFFERENCES
    return "\n".join(out).rstrip() + "\n"


VS_NOTE = (
    "Compared per OpenMM force (the bonded terms of these waters are too few to split "
    "further); force errors over the real atoms only, since OpenMM reports on each "
    "virtual site the force that acted on it before handing it on to the parents, "
    "which one force alone cannot reproduce. The **total** row compares every row, "
    "sites included, as OpenMM reports them (`energy_and_forces(site_forces=True)`). "
    "Sites are placed by OpenMM (`computeVirtualSites`), rebuilt by us from their "
    "parents."
)

EXPLANATION = f"""\
## What is compared

- **Reference:** OpenMM {openmm.__version__}, Reference platform (double precision),
  each System built by OpenMM's own loader (`AmberPrmtopFile`, `CharmmPsfFile` +
  `CharmmParameterSet`, `GromacsTopFile`, `XmlSerializer`, `ForceField`), never by
  parmed: an independent cross-check of our loaders. Everything is flexible
  (`constraints=None`, `rigidWater=False`). The OpenMM energies and forces are computed
  live by this script with `tests/reference/make_reference.py` (`reference_from_built`),
  which also checks that the terms add up to the unmodified System's energy and forces
  (to 1e-10).
- **Terms:** bonded terms are isolated by force groups (propers and periodic impropers
  told apart by the bond graph); nonbonded ones by copies of the System with parameters
  zeroed: `lj` (incl. NBFIX / pair tables), `coulomb` (all non-excluded pairs, plain
  Coulomb without a cutoff, reaction field with one), `lj14`, `coulomb14` (the
  exceptions), and `dispersion_correction` (E = C/V, no force). See
  `tests/reference/README.md` for every detail.
- **Ours:** the registry's loader for the same files, the `amber` and `nonbonded`
  potentials, float64, at exactly the positions and box OpenMM was given. A term's
  forces are −∇ of its energy (autograd); the total's are `energy_and_forces`
  (analytic where available).
- **Acceptance:** energy within max(1e-3 kcal/mol, 1e-7 |E|) of OpenMM, for the total
  and for each term against its own value; every force component within 1e-3
  kcal/mol/Å. Units: kcal/mol, Å, kcal/mol/Å.
- **Modes** (lengths in Å; waterbox: cutoff 7, switch 6; virtual-site systems: the
  cutoff fitting their box): `nocutoff` (all pairs), `rf_nonperiodic` (cutoff 9,
  reaction field ε_rf = 78.3), `rf_periodic` (+ periodic box, dispersion correction),
  `rf_periodic_switch` (+ LJ switch from 7.5), `rf_periodic_nodisp` (no dispersion
  correction), `rf_periodic_eps50` (ε_rf = 50).

### OpenMM conventions we follow

Checked numerically against OpenMM by `tests/reference/check_conventions.py`:

- Coulomb constant 332.0637132991921 kcal/mol·Å·e⁻² (OpenMM's `ONE_4PI_EPS0`), k_B
  0.0019872042586408316 kcal/mol/K.
- Reaction field for every non-excluded pair within the cutoff, E = C qᵢqⱼ(1/r + k_rf r²
  − c_rf), zero at the cutoff; excluded pairs get no reaction-field term and there is no
  self term; 1-4 exceptions are plain Coulomb + LJ without cutoff, RF or periodicity.
- LJ is truncated, not shifted; the switch S = 1 − 10t³ + 15t⁴ − 6t⁵ multiplies LJ only.
- Dispersion correction C/V averaged over all N(N+1)/2 pairs including self pairs,
  exclusions not subtracted; pair tables (AMBER modified pairs, CHARMM NBFIX) are
  integrated numerically by OpenMM (2–5e-7 relative).
- CMAP grids in OpenMM's order (φ from 0, bicubic patches on periodic-spline
  derivatives); CHARMM impropers harmonic with the central atom first, AMBER impropers
  periodic with it third; AMBER 1-4 LJ from the pair's own table entry; CHARMM 1-4 pairs
  from the bond graph.
- `CharmmPsfFile` turns the dispersion correction off by default: the periodic modes
  here set it explicitly (`rf_periodic_nodisp` is what the loader gives).
- Minimum image in OpenMM's reduced triclinic form.

""".splitlines()

QUICK_NOTE = """\
Quick mode shortens only the dynamics runs (the parity tables are the same in both
modes): NVE 500 instead of 2,000 steps; NVE with a cutoff 1,000/500 instead of
4,000/2,500 steps; Langevin 5 instead of 20 ps of production after 5 ps of
equilibration; constraints 4 instead of 10 ps per case; barostat 4 ps equilibration and
8 ps of ours against 40 ps of OpenMM, instead of 10, 40 and 200 ps; NVE matrix 2
instead of 10 ps per run. The full mode (`python benchmarks/validation_report.py`)
runs each suite 4–5 times longer and about halves the statistical errors. Some checks
need the full length: the 4 fs run of `constraints` starts ~20 K cold and may not
reach 300 K ± 5% within 4 ps.

""".splitlines()

DYNAMICS_TEXT = """\
Our integrators, constraints and barostat run with our own `amber` + `nonbonded`
potentials; the inputs are built with OpenMM's Modeller and force fields from
`../shared/data` by `benchmarks/dynamics_validation.py`, whose suites this page runs
(the NVE matrix is added here). Drift is the slope of a straight line through
E_total(t), per ns and per degree of freedom (or relative to the mean kinetic energy);
statistical errors are standard errors from 10 block means. Temperatures count the
constrained degrees of freedom out (3N − constraints, 3 per rigid water). The NVE runs
of the peptide start from 300 K velocities on a minimised structure, so they settle
near 150 K (equipartition with the potential energy).

""".splitlines()

KNOWN_DIFFERENCES = """\
## Known differences and limits

- **Strongly sheared triclinic boxes:** OpenMM 8.6.1's Reference platform misses pairs
  near the cutoff in strongly sheared boxes (rhombic dodecahedron, truncated
  octahedron built from random positions); its CPU platform and an O(N²) search agree
  with our neighbour list (`test_triclinic_pairs_openmm_reference_misses`). The
  triclinic systems here (`peptide_dodec`, TIP4P-Ew) are boxes where Reference is
  right.
- **Pair-table dispersion correction:** OpenMM integrates the long-range correction of a
  CustomNonbondedForce numerically (≈1e-6 relative, ~5e-6 kcal/mol here); we integrate
  exactly.
- **CHARMM dispersion correction:** `CharmmPsfFile` never enables it, whatever the
  box; our `nonbonded` enables it by default with a periodic cutoff. Set
  `dispersion_correction: false` to match a CHARMM-loaded OpenMM System.
- **Parmed-built Systems:** parmed combines per-atom LJ values for AMBER 1-4 pairs where
  OpenMM's `AmberPrmtopFile` (and we) use the pair's table entry: ~1e-9 relative.
- **GROMACS topologies** store parameters to 7–8 digits, so the GROMACS rows compare
  against OpenMM reading the same `.top`, not against the prmtop it came from.
- **Virtual sites:** OpenMM reports the force on a site before handing it on; we do the
  same with `site_forces=True` (used by `tmd energy`), otherwise the site rows are 0.
- **No PME/Ewald:** electrostatics with a cutoff are reaction field only, as in OpenMM's
  `CutoffNonPeriodic`/`CutoffPeriodic`.
- **BAOAB on-step velocities** are slightly cold for stiff unconstrained bonds at long
  timesteps (about (ω dt/2)²); constrain bonds to hydrogen at 2 fs.
""".splitlines()


# -- driver --


def run_parity(options: Options) -> tuple[list[Comparison], list[str]]:
    comparisons, skipped = [], []
    for key in options.systems:
        case = SYSTEMS[key]
        if key == "dhfr" and not (SHARED / "dhfr_5dfr").exists():
            skipped.append("DHFR (`../shared/data/dhfr_5dfr` not present)")
            continue
        for mode in case.modes:
            c = case.run(mode)
            c.key = key
            e, f = c.worst
            print(
                f"   {key:22s} {mode:20s} |ΔE|/tol {e:8.1e}  |ΔF|/tol {f:8.1e}  "
                f"{'ok' if c.passed else 'FAIL'}  ({c.seconds:.1f} s)",
                flush=True,
            )
            comparisons.append(c)
    return comparisons, skipped


def parse(argv: list[str] | None) -> Options | None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter dynamics runs")
    parser.add_argument(
        "--systems",
        nargs="+",
        default=list(SYSTEMS),
        help="parity systems (default: all; 'none' for none)",
    )
    parser.add_argument(
        "--suites",
        nargs="+",
        default=list(SUITE_ORDER),
        help="dynamics suites (default: all; 'none' for none)",
    )
    parser.add_argument(
        "--output", "-o", type=Path, default=PAGE, help=f"default {PAGE}"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--list", action="store_true", help="list systems and suites")
    args = parser.parse_args(argv)
    if args.list:
        print("systems:", " ".join(SYSTEMS))
        print("suites:", " ".join(SUITE_ORDER))
        return None
    systems = [] if args.systems == ["none"] else args.systems
    suites = [] if args.suites == ["none"] else args.suites
    bad = [s for s in systems if s not in SYSTEMS] + [
        s for s in suites if s not in SUITE_ORDER
    ]
    if bad:
        parser.error(f"unknown system(s)/suite(s) {bad}; see --list")
    torch.set_num_threads(args.threads)
    shown = sys.argv[1:] if argv is None else argv
    return Options(args.quick, systems, suites, args.output, list(shown))


def main(argv: list[str] | None = None) -> int:
    options = parse(argv)
    if options is None:
        return 0
    started = datetime.datetime.now(datetime.timezone.utc)
    start = time.perf_counter()
    print("== parity with OpenMM", flush=True)
    comparisons, skipped = run_parity(options)
    print("== dynamics" + (" (quick)" if options.quick else ""), flush=True)
    suites = [run_suite(name, options.quick) for name in options.suites]
    text = page(
        options, comparisons, suites, skipped, started, time.perf_counter() - start
    )
    options.output.parent.mkdir(parents=True, exist_ok=True)
    options.output.write_text(text)
    failed = sum(not c.passed for c in comparisons) + sum(
        not ok for s in suites for _, ok in s.checks
    )
    print(f"wrote {options.output} ({failed} failure(s))")
    return int(failed > 0)


if __name__ == "__main__":
    sys.exit(main())
