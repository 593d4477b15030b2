"""Make the OpenMM reference energies and forces that the parity tests compare against.

Run from the repository root:

    python tests/reference/make_reference.py        # every stored (system, mode) pair
    python tests/reference/make_reference.py ala3   # only the named systems

Every reference System is built by one of OpenMM's own loaders (AmberPrmtopFile,
CharmmPsfFile + CharmmParameterSet, ForceField, XmlSerializer), never by parmed, so the
references are an independent cross-check of our parmed-based loaders. Everything is
flexible (``constraints=None``, ``rigidWater=False``), evaluated on the Reference
platform (double precision) and converted to kcal/mol, Å and kcal/mol/Å.

Each term is isolated by force groups (bonded terms) and by copies of the System whose
nonbonded parameters are partly zeroed (nonbonded terms); the terms are checked to add
up to the energy and forces of the unmodified System. See README.md beside this file.

The module is importable: ``compute_reference(system, mode)`` returns the same dict that
is saved to ``<system>__<mode>.npz``; ``dhfr_reference(mode)`` does the same for the
23,558-atom DHFR box, which is too large to store and needs ``../shared/data``.
"""

from __future__ import annotations

import copy
import datetime
import itertools
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as unit

ROOT = Path(__file__).resolve().parents[2]
REFERENCE_DIR = Path(__file__).resolve().parent
DATA_DIR = ROOT / "tests" / "data"
SHARED_DATA = ROOT.parent / "shared" / "data"

KJ_PER_KCAL = 4.184
ENERGY = 1.0 / KJ_PER_KCAL  # kJ/mol -> kcal/mol
FORCE = 1.0 / (KJ_PER_KCAL * 10.0)  # kJ/mol/nm -> kcal/mol/Å
WATERBOX_EDGE = 15.0  # Å; output.xtc stores an all-zero box, see README.md


# --------------------------------------------------------------------------- modes


@dataclass(frozen=True)
class Mode:
    """How the nonbonded interactions are evaluated. Lengths in Å."""

    name: str
    method: str  # "NoCutoff" | "CutoffNonPeriodic" | "CutoffPeriodic"
    cutoff: float | None = None
    switch_distance: float | None = None
    reaction_field_dielectric: float | None = None
    dispersion_correction: bool = False

    @property
    def periodic(self) -> bool:
        return self.method == "CutoffPeriodic"


def make_modes(cutoff: float = 9.0, switch: float = 7.5) -> dict[str, Mode]:
    rf = dict(cutoff=cutoff, reaction_field_dielectric=78.3)
    modes = [
        Mode("nocutoff", "NoCutoff"),
        Mode("rf_nonperiodic", "CutoffNonPeriodic", **rf),
        Mode("rf_periodic", "CutoffPeriodic", dispersion_correction=True, **rf),
        Mode(
            "rf_periodic_switch",
            "CutoffPeriodic",
            switch_distance=switch,
            dispersion_correction=True,
            **rf,
        ),
        Mode("rf_periodic_nodisp", "CutoffPeriodic", **rf),
        Mode(
            "rf_periodic_eps50",
            "CutoffPeriodic",
            cutoff=cutoff,
            reaction_field_dielectric=50.0,
            dispersion_correction=True,
        ),
    ]
    return {m.name: m for m in modes}


MODES = make_modes()
SMALL_BOX_MODES = make_modes(cutoff=7.0, switch=6.0)  # waterbox: 15 Å cube

APP_METHODS = {
    "NoCutoff": app.NoCutoff,
    "CutoffNonPeriodic": app.CutoffNonPeriodic,
    "CutoffPeriodic": app.CutoffPeriodic,
}


def loader_kwargs(mode: Mode) -> dict:
    """Keyword arguments for AmberPrmtopFile/CharmmPsfFile/ForceField.createSystem."""
    kwargs = dict(
        nonbondedMethod=APP_METHODS[mode.method],
        constraints=None,
        rigidWater=False,
        removeCMMotion=False,
    )
    if mode.cutoff is not None:
        kwargs["nonbondedCutoff"] = mode.cutoff * unit.angstrom
    if mode.switch_distance is not None:
        kwargs["switchDistance"] = mode.switch_distance * unit.angstrom
    return kwargs


def configure_nonbonded(system: openmm.System, mode: Mode, check_loader: bool) -> None:
    """Put the mode's settings on the nonbonded forces.

    With ``check_loader`` the method, cutoff and switch set by the loader are asserted
    to be the mode's; the reaction-field dielectric and the dispersion correction are
    always set here (CharmmPsfFile turns the correction off, other loaders leave it on).
    """
    nb_method = getattr(openmm.NonbondedForce, mode.method)
    cnb_method = getattr(openmm.CustomNonbondedForce, mode.method)
    for force in system.getForces():
        if isinstance(force, (openmm.NonbondedForce, openmm.CustomNonbondedForce)):
            method = (
                nb_method if isinstance(force, openmm.NonbondedForce) else cnb_method
            )
            if check_loader:
                assert force.getNonbondedMethod() == method, (force, mode)
                if mode.cutoff is not None:
                    got = force.getCutoffDistance().value_in_unit(unit.angstrom)
                    assert abs(got - mode.cutoff) < 1e-12, (got, mode)
                assert force.getUseSwitchingFunction() == (
                    mode.switch_distance is not None
                )
            force.setNonbondedMethod(method)
            if mode.cutoff is not None:
                force.setCutoffDistance(mode.cutoff * unit.angstrom)
            force.setUseSwitchingFunction(mode.switch_distance is not None)
            if mode.switch_distance is not None:
                force.setSwitchingDistance(mode.switch_distance * unit.angstrom)
        if isinstance(force, openmm.NonbondedForce):
            if mode.reaction_field_dielectric is not None:
                force.setReactionFieldDielectric(mode.reaction_field_dielectric)
            force.setUseDispersionCorrection(mode.dispersion_correction)
        if isinstance(force, openmm.CustomNonbondedForce):
            force.setUseLongRangeCorrection(mode.dispersion_correction)


# --------------------------------------------------------------------------- systems


@dataclass
class Built:
    """A reference System with the positions (Å) and box (Å, rows) to evaluate it at."""

    system: openmm.System
    positions: np.ndarray
    box: np.ndarray | None
    loader: str
    files: list[str]
    notes: dict = field(default_factory=dict)


def rel(path: Path) -> str:
    return str(path.resolve().relative_to(ROOT))


def read_namd_coor(path: Path) -> np.ndarray:
    """NAMD/ACEMD binary coordinates: int32 atom count, then float64 xyz (Å)."""
    raw = path.read_bytes()
    n = int(np.frombuffer(raw[:4], dtype="<i4")[0])
    return np.frombuffer(raw[4:], dtype="<f8").reshape(n, 3).copy()


def read_xsc_box(path: Path) -> np.ndarray:
    """Box rows a, b, c (Å) from a NAMD .xsc file (step a b c origin ...)."""
    line = next(
        ln for ln in path.read_text().splitlines() if ln and not ln.startswith("#")
    )
    values = [float(v) for v in line.split()]
    return np.array(values[1:10]).reshape(3, 3)


def vectors(box: np.ndarray) -> list:
    return [openmm.Vec3(*row) * 0.1 for row in box] * unit.nanometer


def pdb_positions(path: Path) -> np.ndarray:
    pdb = app.PDBFile(str(path))
    return np.array(pdb.getPositions(asNumpy=True).value_in_unit(unit.angstrom))


def build_amber(
    prmtop: Path, coor: Path, box: np.ndarray | None, mode: Mode, n_atoms=None
):
    top = app.AmberPrmtopFile(str(prmtop))
    if box is not None:  # the .xsc box, not the prmtop's pre-equilibration box
        top.topology.setPeriodicBoxVectors(vectors(box))
    system = top.createSystem(**loader_kwargs(mode))
    configure_nonbonded(system, mode, check_loader=True)
    positions = read_namd_coor(coor)[: n_atoms or top.topology.getNumAtoms()]
    files = [rel(prmtop), rel(coor)]
    notes = {"prmtop_impropers": prmtop_improper_quads(top)}
    return Built(system, positions, box, "AmberPrmtopFile", files, notes)


def prmtop_improper_quads(top: app.AmberPrmtopFile) -> list[tuple[int, ...]]:
    """Dihedrals flagged improper in the prmtop (negative 4th index), via OpenMM."""
    raw = top._prmtop._raw_data
    pointers = [
        int(x)
        for x in raw["DIHEDRALS_INC_HYDROGEN"] + raw["DIHEDRALS_WITHOUT_HYDROGEN"]
    ]
    return sorted(
        tuple(abs(v) // 3 for v in pointers[k : k + 4])
        for k in range(0, len(pointers), 5)
        if pointers[k + 3] < 0
    )


def build_charmm(
    psf: Path,
    params: list[Path],
    mode: Mode,
    positions: np.ndarray,
    box: np.ndarray | None,
    position_file: Path,
) -> Built:
    structure = app.CharmmPsfFile(str(psf))
    if box is not None:
        a, b, c = np.diag(box) * 0.1
        assert np.allclose(box, np.diag(np.diag(box))), (
            "CharmmPsfFile.setBox: rectangular"
        )
        structure.setBox(a * unit.nanometer, b * unit.nanometer, c * unit.nanometer)
    parameters = app.CharmmParameterSet(*[str(p) for p in params])
    system = structure.createSystem(parameters, **loader_kwargs(mode))
    configure_nonbonded(system, mode, check_loader=True)
    files = [rel(psf)] + [rel(p) for p in params] + [rel(position_file)]
    return Built(system, positions, box, "CharmmPsfFile+CharmmParameterSet", files)


def build_xml(folder: Path, mode: Mode) -> Built:
    system = openmm.XmlSerializer.deserialize((folder / "system.xml").read_text())
    configure_nonbonded(system, mode, check_loader=False)
    box = None
    if mode.periodic:
        box = np.array([[v.x, v.y, v.z] for v in system.getDefaultPeriodicBoxVectors()])
        box = box * 10.0
    files = [rel(folder / "system.xml"), rel(folder / "structure.pdb")]
    positions = pdb_positions(folder / "structure.pdb")
    return Built(system, positions, box, "XmlSerializer", files)


def ala2_solv(mode: Mode, prmtop: str = "ala2_solv/structure.prmtop") -> Built:
    d = DATA_DIR / "ala2_solv"
    box = read_xsc_box(d / "input.xsc") if mode.periodic else None
    built = build_amber(DATA_DIR / prmtop, d / "input.coor", box, mode)
    if box is not None:
        built.files.append(rel(d / "input.xsc"))
    return built


def ala2_solv_ljpair(mode: Mode) -> Built:
    return ala2_solv(mode, prmtop="ala2_solv_ljpair/structure_ljpair.prmtop")


def ala2_vacuum(mode: Mode, prmtop: str = "ala2_vacuum/ala2_vacuum.prmtop") -> Built:
    # Solute positions: the first 22 atoms of the solvated input.coor.
    coor = DATA_DIR / "ala2_solv" / "input.coor"
    return build_amber(DATA_DIR / prmtop, coor, None, mode, n_atoms=22)


def ala2_ljpair(mode: Mode) -> Built:
    return ala2_vacuum(mode, prmtop="ala2_ljpair/ala2_ljpair.prmtop")


def benzamidine(mode: Mode) -> Built:
    d = DATA_DIR / "benzamidine"
    pdb = d / "mol.pdb"
    return build_charmm(
        d / "mol.psf",
        [d / "mol.rtf", d / "mol.prm"],
        mode,
        pdb_positions(pdb),
        None,
        pdb,
    )


def ala3(mode: Mode) -> Built:
    d = DATA_DIR / "ala3"
    pdb = d / "ala_ala_ala.pdb"
    return build_charmm(
        d / "ala_ala_ala.psf",
        [d / "charmm22.rtf", d / "charmm22.par"],
        mode,
        pdb_positions(pdb),
        None,
        pdb,
    )


def waterbox(mode: Mode) -> Built:
    import mdtraj  # only to read the XTC frame

    d = DATA_DIR / "waterbox"
    traj = mdtraj.load_frame(str(d / "output.xtc"), 0, top=str(d / "structure.pdb"))
    positions = traj.xyz[0].astype(np.float64) * 10.0
    box = np.eye(3) * WATERBOX_EDGE if mode.periodic else None
    built = build_charmm(
        d / "structure.psf",
        [d / "parameters.prm"],
        mode,
        positions,
        box,
        d / "output.xtc",
    )
    built.notes["box_source"] = (
        f"output.xtc has an all-zero box; {WATERBOX_EDGE} Å cube inferred from the"
        " coordinate extent (0.05-14.97 Å in structure.pdb)"
        if box is not None
        else None
    )
    return built


def peptide_ff19sb(mode: Mode) -> Built:
    return build_xml(DATA_DIR / "peptide_ff19sb", mode)


def peptide_dodec(mode: Mode) -> Built:
    return build_xml(DATA_DIR / "peptide_dodec", mode)


def dhfr(mode: Mode, shared: Path = SHARED_DATA) -> Built:
    """DHFR in water (23,558 atoms), amber99sb.xml + tip3p.xml, flexible; not stored."""
    pdb_path = shared / "dhfr_5dfr" / "5dfr_solv-cube_equil.pdb"
    pdb = app.PDBFile(str(pdb_path))
    ff = app.ForceField("amber99sb.xml", "tip3p.xml")
    system = ff.createSystem(pdb.topology, **loader_kwargs(mode))
    configure_nonbonded(system, mode, check_loader=True)
    positions = np.array(pdb.getPositions(asNumpy=True).value_in_unit(unit.angstrom))
    box = None
    if mode.periodic:
        vecs = pdb.topology.getPeriodicBoxVectors().value_in_unit(unit.angstrom)
        box = np.array([[v.x, v.y, v.z] for v in vecs])
    return Built(
        system, positions, box, "ForceField(amber99sb.xml, tip3p.xml)", [str(pdb_path)]
    )


@dataclass(frozen=True)
class Case:
    build: Callable[[Mode], Built]
    modes: tuple[str, ...]
    mode_table: dict = field(default_factory=lambda: MODES)


PERIODIC = ("rf_periodic", "rf_periodic_switch", "rf_periodic_nodisp")
CASES: dict[str, Case] = {
    "ala2_solv": Case(
        ala2_solv, ("nocutoff", "rf_nonperiodic", *PERIODIC, "rf_periodic_eps50")
    ),
    "ala2_vacuum": Case(ala2_vacuum, ("nocutoff", "rf_nonperiodic")),
    "ala2_ljpair": Case(ala2_ljpair, ("nocutoff", "rf_nonperiodic")),
    "ala2_solv_ljpair": Case(ala2_solv_ljpair, ("rf_periodic", "rf_periodic_switch")),
    "benzamidine": Case(benzamidine, ("nocutoff", "rf_nonperiodic")),
    "ala3": Case(ala3, ("nocutoff", "rf_nonperiodic")),
    "waterbox": Case(
        waterbox, ("nocutoff", "rf_nonperiodic", *PERIODIC), SMALL_BOX_MODES
    ),
    "peptide_ff19sb": Case(peptide_ff19sb, ("nocutoff", "rf_nonperiodic")),
    "peptide_dodec": Case(peptide_dodec, (*PERIODIC, "rf_periodic_eps50")),
}
DHFR_MODES = PERIODIC


# --------------------------------------------------------------------------- terms


def bonded_label(force: openmm.Force, loader: str) -> str:
    """Our engine's term name for a bonded OpenMM force."""
    if isinstance(force, openmm.HarmonicBondForce):
        is_ub = force.getName() == "UreyBradleyForce" or (
            loader.startswith("CharmmPsfFile")
            and force.getForceGroup() == app.CharmmPsfFile.UREY_BRADLEY_FORCE_GROUP
        )
        return "urey_bradley" if is_ub else "bonds"
    if isinstance(force, openmm.HarmonicAngleForce):
        return "angles"
    if isinstance(force, openmm.CustomTorsionForce):
        return "harmonic_impropers"
    if isinstance(force, openmm.CMAPTorsionForce):
        return "cmap"
    raise ValueError(f"no term name for {force.getName()}")


def bond_graph(system: openmm.System, loader: str) -> set[tuple[int, int]]:
    """Chemical bonds: every pair of the System's non-Urey-Bradley HarmonicBondForce."""
    bonds = set()
    for force in system.getForces():
        if (
            isinstance(force, openmm.HarmonicBondForce)
            and bonded_label(force, loader) == "bonds"
        ):
            for k in range(force.getNumBonds()):
                i, j = force.getBondParameters(k)[:2]
                bonds.add((min(i, j), max(i, j)))
    return bonds


def is_proper(quad: tuple[int, int, int, int], bonds: set[tuple[int, int]]) -> bool:
    """Proper when atoms 1-2, 2-3 and 3-4 are all bonded, otherwise improper."""
    return all((min(a, b), max(a, b)) in bonds for a, b in itertools.pairwise(quad))


def split_torsions(
    force: openmm.PeriodicTorsionForce, bonds
) -> dict[str, openmm.Force]:
    """Split into two forces: proper torsions and (AMBER-style) periodic impropers."""
    parts = {
        "torsions": openmm.PeriodicTorsionForce(),
        "impropers": openmm.PeriodicTorsionForce(),
    }
    for k in range(force.getNumTorsions()):
        *quad, n, phase, kphi = force.getTorsionParameters(k)
        name = "torsions" if is_proper(tuple(quad), bonds) else "impropers"
        parts[name].addTorsion(*quad, n, phase, kphi)
    return {name: f for name, f in parts.items() if f.getNumTorsions() > 0}


def check_improper_flags(parts: dict, built: Built) -> None:
    """For prmtops: the topology-based split must agree with the prmtop's own flags."""
    flagged = built.notes.pop("prmtop_impropers", None)
    if flagged is None:
        return
    found = parts.get("impropers")
    quads = (
        []
        if found is None
        else [
            tuple(found.getTorsionParameters(k)[:4])
            for k in range(found.getNumTorsions())
        ]
    )
    assert sorted(quads) == flagged, "impropers differ from the prmtop's flags"


def n_entries(force: openmm.Force) -> int:
    for getter in ("getNumBonds", "getNumAngles", "getNumTorsions"):
        if hasattr(force, getter):
            return getattr(force, getter)()
    raise ValueError(force)


def evaluate(system: openmm.System, built: Built, groups: int | set = -1):
    """Energy (kcal/mol) and forces (kcal/mol/Å) on the Reference platform, double."""
    context = openmm.Context(
        system,
        openmm.VerletIntegrator(1e-3),
        openmm.Platform.getPlatformByName("Reference"),
    )
    if built.box is not None:
        context.setPeriodicBoxVectors(*vectors(built.box))
    context.setPositions(built.positions * 0.1)
    state = context.getState(getEnergy=True, getForces=True, groups=groups)
    energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) * ENERGY
    forces = (
        state.getForces(asNumpy=True).value_in_unit(
            unit.kilojoule_per_mole / unit.nanometer
        )
        * FORCE
    )
    return energy, np.asarray(forces)


def bonded_terms(built: Built) -> dict[str, tuple[float, np.ndarray]]:
    """Bonded terms: one force group per term in a System holding only bonded forces."""
    system = openmm.System()
    for i in range(built.system.getNumParticles()):
        system.addParticle(built.system.getParticleMass(i))
    if built.box is not None:
        system.setDefaultPeriodicBoxVectors(*vectors(built.box))
    bonds = bond_graph(built.system, built.loader)
    groups: dict[str, int] = {}
    for force in built.system.getForces():
        if isinstance(force, (openmm.NonbondedForce, openmm.CustomNonbondedForce)):
            continue
        if isinstance(force, openmm.PeriodicTorsionForce):
            parts = split_torsions(force, bonds)
            check_improper_flags(parts, built)
        else:
            parts = {bonded_label(force, built.loader): copy.deepcopy(force)}
        for name, part in parts.items():
            if n_entries(part) == 0:
                continue
            assert name not in groups, f"two forces for term {name}"
            groups[name] = len(groups)
            part.setForceGroup(groups[name])
            system.addForce(part)
    return {name: evaluate(system, built, {g}) for name, g in groups.items()}


def nonbonded_variant(
    built: Built, keep: str, dispersion: bool = False
) -> openmm.System:
    """A copy with only the nonbonded forces, whose parameters are zeroed per ``keep``.

    keep: "coulomb" (particle charges), "lj" (particle LJ incl. any CustomNonbondedForce
    table), "coulomb14" (exception chargeProd), "lj14" (exception epsilon). With
    ``dispersion`` the "lj" copy keeps the dispersion/long-range correction switched on.
    """
    system = copy.deepcopy(built.system)
    for index in reversed(range(system.getNumForces())):
        force = system.getForce(index)
        is_table = isinstance(force, openmm.CustomNonbondedForce)
        if isinstance(force, openmm.NonbondedForce):
            zero_nonbonded(force, keep)
            force.setUseDispersionCorrection(dispersion and keep == "lj")
            force.setForceGroup(0)
        elif is_table and keep == "lj":
            force.setUseLongRangeCorrection(dispersion)
            force.setForceGroup(0)
        else:
            system.removeForce(index)
    return system


def zero_nonbonded(force: openmm.NonbondedForce, keep: str) -> None:
    for i in range(force.getNumParticles()):
        q, sigma, eps = force.getParticleParameters(i)
        force.setParticleParameters(
            i, q if keep == "coulomb" else 0.0, sigma, eps if keep == "lj" else 0.0
        )
    for k in range(force.getNumExceptions()):
        i, j, qq, sigma, eps = force.getExceptionParameters(k)
        force.setExceptionParameters(
            k,
            i,
            j,
            qq if keep == "coulomb14" else 0.0,
            sigma,
            eps if keep == "lj14" else 0.0,
        )


def nonbonded_terms(built: Built, mode: Mode) -> dict[str, tuple[float, np.ndarray]]:
    if not any(isinstance(f, openmm.NonbondedForce) for f in built.system.getForces()):
        return {}
    terms = {k: evaluate(nonbonded_variant(built, k), built) for k in ("lj", "coulomb")}
    for name in ("lj14", "coulomb14"):
        if has_exception_term(built.system, name):
            terms[name] = evaluate(nonbonded_variant(built, name), built)
    if mode.dispersion_correction and mode.periodic:
        e_on, f_on = evaluate(nonbonded_variant(built, "lj", dispersion=True), built)
        e_off, f_off = terms["lj"]
        # The correction is E = C/V: it moves no atom. Check, then store exact zeros.
        assert np.abs(f_on - f_off).max() < 1e-9, np.abs(f_on - f_off).max()
        terms["dispersion_correction"] = (e_on - e_off, np.zeros_like(f_on))
    return terms


def has_exception_term(system: openmm.System, name: str) -> bool:
    index = 2 if name == "coulomb14" else 4
    for force in system.getForces():
        if isinstance(force, openmm.NonbondedForce):
            params = (
                force.getExceptionParameters(k) for k in range(force.getNumExceptions())
            )
            return any(_value(p[index]) != 0.0 for p in params)
    return False


def _value(quantity) -> float:
    return quantity._value if unit.is_quantity(quantity) else float(quantity)


# --------------------------------------------------------------------------- driver


def reference_from_built(built: Built, system_name: str, mode: Mode) -> dict:
    """Per-term and total energies/forces, checked to add up; the npz content."""
    total_e, total_f = evaluate(built.system, built)
    terms = {**bonded_terms(built), **nonbonded_terms(built, mode)}
    sum_e = sum(e for e, _ in terms.values())
    sum_f = sum(f for _, f in terms.values())
    scale_e = max(1.0, sum(abs(e) for e, _ in terms.values()))
    scale_f = max(1.0, float(np.abs(total_f).max()))
    de, df = abs(sum_e - total_e), float(np.abs(sum_f - total_f).max())
    assert de <= 1e-10 * scale_e, (system_name, mode.name, de, scale_e)
    assert df <= 1e-10 * scale_f, (system_name, mode.name, df, scale_f)
    meta = {
        "system": system_name,
        "mode": mode.name,
        "n_atoms": int(built.system.getNumParticles()),
        "nonbonded_method": mode.method,
        "periodic": mode.periodic,
        "cutoff": mode.cutoff,
        "switch_distance": mode.switch_distance,
        "reaction_field_dielectric": mode.reaction_field_dielectric,
        "dispersion_correction": mode.dispersion_correction,
        "terms": sorted(terms),
        "lj_table": any(
            isinstance(f, openmm.CustomNonbondedForce) for f in built.system.getForces()
        ),
        "files": built.files,
        "loader": built.loader,
        "units": {
            "energy": "kcal/mol",
            "length": "angstrom",
            "force": "kcal/mol/angstrom",
        },
        "openmm_version": openmm.__version__,
        "openmm_git_revision": openmm.version.git_revision,
        "platform": "Reference",
        "precision": "double",
        "sum_check": {"energy_abs_diff": de, "force_max_abs_diff": df},
        "generated": datetime.date.today().isoformat(),
        **{k: v for k, v in built.notes.items() if v is not None},
    }
    data = {
        "positions": built.positions.astype(np.float64),
        "energy_total": np.float64(total_e),
        "forces_total": total_f,
    }
    if built.box is not None:
        data["box"] = built.box.astype(np.float64)
    for name in sorted(terms):
        data[f"energy_{name}"] = np.float64(terms[name][0])
        data[f"forces_{name}"] = terms[name][1]
    data["meta"] = np.array(json.dumps(meta))
    return data


def compute_reference(system_name: str, mode_name: str) -> dict:
    case = CASES[system_name]
    mode = case.mode_table[mode_name]
    return reference_from_built(case.build(mode), system_name, mode)


def dhfr_reference(mode_name: str = "rf_periodic", shared: Path = SHARED_DATA) -> dict:
    """The DHFR reference, computed on the fly (about 10 s); needs ../shared/data."""
    mode = MODES[mode_name]
    return reference_from_built(dhfr(mode, shared), "dhfr", mode)


def main(names: list[str]) -> None:
    from check_conventions import check_all

    check_all()
    for system_name in names or list(CASES):
        for mode_name in CASES[system_name].modes:
            data = compute_reference(system_name, mode_name)
            path = REFERENCE_DIR / f"{system_name}__{mode_name}.npz"
            np.savez_compressed(path, **data)
            meta = json.loads(str(data["meta"]))
            print(
                f"{system_name:18s} {mode_name:20s} {meta['n_atoms']:6d} "
                f"{float(data['energy_total']):16.6f}  {path.stat().st_size:8d} B"
            )


if __name__ == "__main__":
    sys.path.insert(0, str(REFERENCE_DIR))
    main(sys.argv[1:])
