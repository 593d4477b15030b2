"""Random nonbonded test systems, built twice: as torchmd Systems and as OpenMM Systems.

The OpenMM side is built the way OpenMM's own loaders do it: a NonbondedForce with
per-particle (q, σ, ε) and every excluded pair as a zero exception; with pair overrides
(NBFIX) the LJ moves to a CustomNonbondedForce '(a/r6)^2-b/r6' over tabulated
a = √c12, b = c6 per type pair (AmberPrmtopFile, CharmmPsfFile) and the NonbondedForce
keeps only the charges. Evaluated on the Reference platform in double precision.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import openmm
import torch
from torchmd_plugins.nonbonded.kernels import lj_tables

from torchmd_core import NonbondedParameters, Residue, System
from torchmd_core.geometry import box_from_lengths_angles

KCAL = 4.184  # kJ per kcal
ENERGY = 1.0 / KCAL  # kJ/mol → kcal/mol
FORCE = 1.0 / (KCAL * 10.0)  # kJ/mol/nm → kcal/mol/Å


@dataclass(frozen=True)
class Mode:
    """A nonbonded method: OpenMM's name plus our config (lengths in Å)."""

    name: str
    method: str  # NoCutoff | CutoffNonPeriodic | CutoffPeriodic
    cutoff: float | None = None
    switch_distance: float | None = None
    dielectric: float = 78.3
    dispersion: bool = True

    @property
    def periodic(self) -> bool:
        return self.method == "CutoffPeriodic"

    def config(self) -> dict:
        cfg: dict = {"kind": "nonbonded", "cutoff": self.cutoff}
        if self.cutoff is not None:
            cfg.update(
                reaction_field_dielectric=self.dielectric,
                dispersion_correction=self.dispersion,
            )
        if self.switch_distance is not None:
            cfg["switch_distance"] = self.switch_distance
        return cfg


MODES = {
    m.name: m
    for m in [
        Mode("nocutoff", "NoCutoff"),
        Mode("rf_nonperiodic", "CutoffNonPeriodic", cutoff=8.0),
        Mode(
            "rf_nonperiodic_switch",
            "CutoffNonPeriodic",
            cutoff=8.0,
            switch_distance=6.5,
        ),
        Mode("rf_periodic", "CutoffPeriodic", cutoff=8.0),
        Mode("rf_periodic_switch", "CutoffPeriodic", cutoff=8.0, switch_distance=6.5),
        Mode("rf_periodic_nodisp", "CutoffPeriodic", cutoff=8.0, dispersion=False),
        Mode(
            "rf_periodic_switch_nodisp",
            "CutoffPeriodic",
            cutoff=8.0,
            switch_distance=7.0,
            dispersion=False,
        ),
        Mode("rf_periodic_eps20", "CutoffPeriodic", cutoff=7.5, dielectric=20.0),
        Mode(
            "rf_periodic_eps1_switch",
            "CutoffPeriodic",
            cutoff=7.5,
            switch_distance=5.0,
            dielectric=1.0,
        ),
    ]
}


@dataclass(frozen=True)
class RandomSystem:
    """Parameters and coordinates of a random test system (Å, kcal/mol, e)."""

    charges: np.ndarray  # (N,)
    lj_types: np.ndarray  # (N,)
    sigma: np.ndarray  # (T,)
    epsilon: np.ndarray  # (T,)
    pair_mask: np.ndarray | None  # (T, T)
    pair_c12: np.ndarray | None
    pair_c6: np.ndarray | None
    exclusions: np.ndarray  # (E, 2)
    positions: np.ndarray  # (N, 3)
    box: np.ndarray  # (3, 3), reduced form

    @property
    def n_atoms(self) -> int:
        return len(self.charges)

    def system(self) -> System:
        """The torchmd System."""
        n = self.n_atoms
        t = torch.as_tensor
        nb = NonbondedParameters(
            lj_types=t(self.lj_types, dtype=torch.int64),
            sigma=t(self.sigma, dtype=torch.float64),
            epsilon=t(self.epsilon, dtype=torch.float64),
            type_names=tuple(f"T{i}" for i in range(len(self.sigma))),
            pair_mask=None if self.pair_mask is None else t(self.pair_mask),
            pair_c12=None
            if self.pair_c12 is None
            else t(self.pair_c12, dtype=torch.float64),
            pair_c6=None
            if self.pair_c6 is None
            else t(self.pair_c6, dtype=torch.float64),
        )
        return System(
            masses=torch.full((n,), 12.0, dtype=torch.float64),
            charges=t(self.charges, dtype=torch.float64),
            atomic_numbers=torch.full((n,), 6, dtype=torch.int64),
            atom_names=tuple(f"C{i}" for i in range(n)),
            atom_types=tuple(f"T{k}" for k in self.lj_types.tolist()),
            residue_index=torch.zeros(n, dtype=torch.int64),
            residues=(Residue("MOL", 1),),
            bonds=torch.zeros(0, 2, dtype=torch.int64),
            exclusions=t(self.exclusions, dtype=torch.int64),
            nonbonded=nb,
        )

    def tables(self) -> tuple[np.ndarray, np.ndarray]:
        """(c12, c6) per type pair, kcal/mol·Å¹² and ·Å⁶."""
        t = lambda a: None if a is None else torch.as_tensor(a)  # noqa: E731
        c12, c6 = lj_tables(
            t(self.sigma),
            t(self.epsilon),
            t(self.pair_mask),
            t(self.pair_c12),
            t(self.pair_c6),
        )
        return c12.numpy(), c6.numpy()


def random_system(
    seed: int = 0,
    n_side: int = 6,
    n_types: int = 4,
    nbfix: bool = False,
    lengths: tuple[float, float, float] = (21.0, 22.0, 23.0),
    angles: tuple[float, float, float] = (90.0, 90.0, 90.0),
) -> RandomSystem:
    """n_side³ atoms on a jittered lattice filling a (possibly triclinic) box.

    Charges are random and neutral overall; one LJ type has ε = 0 (like water
    hydrogens); each atom is excluded from up to 3 lattice neighbours (bond-like) and a
    few random distant atoms; some atoms lie outside the box (positions are not
    wrapped).
    """
    rng = np.random.default_rng(seed)
    box = box_from_lengths_angles(*lengths, *angles).numpy()
    grid = (
        np.stack(np.meshgrid(*[np.arange(n_side)] * 3, indexing="ij"), -1).reshape(
            -1, 3
        )
        + 0.5
    ) / n_side
    n = len(grid)
    positions = grid @ box + rng.normal(scale=0.3, size=(n, 3))
    shifted = rng.random(n) < 0.15
    positions[shifted] += rng.integers(-1, 2, size=(int(shifted.sum()), 3)) @ box
    charges = rng.normal(scale=0.45, size=n)
    charges -= charges.mean()
    sigma = rng.uniform(2.2, 3.8, n_types)
    epsilon = rng.uniform(0.02, 0.3, n_types)
    epsilon[-1] = 0.0
    lj_types = rng.integers(0, n_types, n)
    mask = c12 = c6 = None
    if nbfix:
        mask = np.zeros((n_types, n_types), dtype=bool)
        c12 = np.zeros((n_types, n_types))
        c6 = np.zeros((n_types, n_types))
        for a, b in [(0, 1), (2, 2), (1, n_types - 1)]:
            s, e = rng.uniform(2.5, 3.5), rng.uniform(0.05, 0.4)
            for x, y in [(a, b), (b, a)]:
                mask[x, y] = True
                c6[x, y] = 4 * e * s**6
                c12[x, y] = 4 * e * s**12
    excl = set()
    for i in range(n):
        for j in (
            rng.choice(n, size=2, replace=False).tolist()
            + _lattice_neighbours(i, n_side)[: rng.integers(0, 4)]
        ):
            if i != j:
                excl.add((min(i, j), max(i, j)))
    exclusions = np.array(sorted(excl), dtype=np.int64).reshape(-1, 2)
    return RandomSystem(
        charges, lj_types, sigma, epsilon, mask, c12, c6, exclusions, positions, box
    )


def _lattice_neighbours(i: int, n_side: int) -> list[int]:
    x, y, z = np.unravel_index(i, (n_side,) * 3)
    out = []
    for dx, dy, dz in [(1, 0, 0), (0, 1, 0), (0, 0, 1)]:
        if x + dx < n_side and y + dy < n_side and z + dz < n_side:
            out.append(
                int(np.ravel_multi_index((x + dx, y + dy, z + dz), (n_side,) * 3))
            )
    return out


def without_charges(rs: RandomSystem) -> RandomSystem:
    return replace(rs, charges=np.zeros_like(rs.charges))


def without_lj(rs: RandomSystem) -> RandomSystem:
    return replace(
        rs,
        epsilon=np.zeros_like(rs.epsilon),
        pair_mask=None,
        pair_c12=None,
        pair_c6=None,
    )


# ---------------------------------------------------------------- OpenMM


def openmm_system(
    rs: RandomSystem,
    mode: Mode,
    dispersion: bool | None = None,
    exceptions: dict[tuple[int, int], tuple[float, float, float]] | None = None,
) -> openmm.System:
    """The OpenMM System of ``rs`` in ``mode``.

    Args:
        dispersion: override ``mode.dispersion``.
        exceptions: (i, j) → (q_i q_j e², σ Å, ε kcal/mol) for excluded pairs that
            interact as OpenMM exceptions (1-4 pairs); other exclusions are zero ones.
    """
    disp = mode.dispersion if dispersion is None else dispersion
    system = openmm.System()
    for _ in range(rs.n_atoms):
        system.addParticle(12.0)
    system.setDefaultPeriodicBoxVectors(*[openmm.Vec3(*row) * 0.1 for row in rs.box])
    force = openmm.NonbondedForce()
    custom = None
    if rs.pair_mask is not None:
        custom = _custom_lj(rs)
    for i in range(rs.n_atoms):
        k = rs.lj_types[i]
        if custom is None:
            force.addParticle(rs.charges[i], rs.sigma[k] * 0.1, rs.epsilon[k] * KCAL)
        else:
            force.addParticle(rs.charges[i], 0.1, 0.0)
    exceptions = exceptions or {}
    for i, j in rs.exclusions.tolist():
        qq, s, e = exceptions.get((i, j), (0.0, 0.1, 0.0))
        force.addException(i, j, qq, s * 0.1, e * KCAL)
    for f, kind in [
        (force, openmm.NonbondedForce),
        (custom, openmm.CustomNonbondedForce),
    ]:
        if f is None:
            continue
        f.setNonbondedMethod(getattr(kind, mode.method))
        if mode.cutoff is not None:
            f.setCutoffDistance(mode.cutoff * 0.1)
        if mode.switch_distance is not None:
            f.setUseSwitchingFunction(True)
            f.setSwitchingDistance(mode.switch_distance * 0.1)
        system.addForce(f)
    force.setReactionFieldDielectric(mode.dielectric)
    force.setUseDispersionCorrection(disp)
    if custom is not None:
        custom.setUseLongRangeCorrection(disp)
    return system


def _custom_lj(rs: RandomSystem) -> openmm.CustomNonbondedForce:
    c12, c6 = rs.tables()
    t = len(rs.sigma)
    a = np.sqrt(c12 * KCAL * 1e-12)  # √(kJ/mol·nm¹²)
    b = c6 * KCAL * 1e-6  # kJ/mol·nm⁶
    custom = openmm.CustomNonbondedForce(
        "(a/r6)^2-b/r6; r6=r^6; a=acoef(type1, type2); b=bcoef(type1, type2)"
    )
    # Discrete2DFunction is indexed [i + T*j]: a column-major flattening.
    custom.addTabulatedFunction(
        "acoef", openmm.Discrete2DFunction(t, t, a.T.reshape(-1).tolist())
    )
    custom.addTabulatedFunction(
        "bcoef", openmm.Discrete2DFunction(t, t, b.T.reshape(-1).tolist())
    )
    custom.addPerParticleParameter("type")
    for k in rs.lj_types.tolist():
        custom.addParticle([float(k)])
    for i, j in rs.exclusions.tolist():
        custom.addExclusion(i, j)
    return custom


def openmm_energy_forces(
    system: openmm.System, rs: RandomSystem
) -> tuple[float, np.ndarray]:
    """Energy (kcal/mol) and forces (N, 3) kcal/mol/Å on the Reference platform."""
    platform = openmm.Platform.getPlatformByName("Reference")
    context = openmm.Context(system, openmm.VerletIntegrator(1e-3), platform)
    context.setPeriodicBoxVectors(*[openmm.Vec3(*row) * 0.1 for row in rs.box])
    context.setPositions(rs.positions * 0.1)
    state = context.getState(getEnergy=True, getForces=True)
    energy = (
        state.getPotentialEnergy().value_in_unit(openmm.unit.kilojoule_per_mole)
        * ENERGY
    )
    forces = (
        state.getForces(asNumpy=True).value_in_unit(
            openmm.unit.kilojoule_per_mole / openmm.unit.nanometer
        )
        * FORCE
    )
    return energy, np.asarray(forces)


def openmm_terms(rs: RandomSystem, mode: Mode) -> dict[str, tuple[float, np.ndarray]]:
    """OpenMM's energy and forces split as our terms, plus 'total'."""
    lj_only = without_charges(rs)
    lj = openmm_energy_forces(openmm_system(lj_only, mode, dispersion=False), lj_only)
    out = {"lj": lj}
    coul_only = without_lj(rs)
    out["coulomb"] = openmm_energy_forces(
        openmm_system(coul_only, mode, dispersion=False), coul_only
    )
    if mode.cutoff is not None and mode.dispersion:
        e, f = openmm_energy_forces(
            openmm_system(lj_only, mode, dispersion=True), lj_only
        )
        out["dispersion_correction"] = (e - lj[0], f - lj[1])
    out["total"] = openmm_energy_forces(openmm_system(rs, mode), rs)
    return out


def system_from_openmm(omm: openmm.System) -> System:
    """A torchmd System with the nonbonded part of an OpenMM System (no loader used).

    Charges and exclusions (every exception) come from the NonbondedForce; LJ from its
    per-particle σ, ε (one type per distinct pair), or, when a CustomNonbondedForce
    '(a/r6)^2-b/r6' over tabulated acoef/bcoef holds the LJ, from those tables (every
    type pair overridden).
    """
    force = next(f for f in omm.getForces() if isinstance(f, openmm.NonbondedForce))
    custom = [f for f in omm.getForces() if isinstance(f, openmm.CustomNonbondedForce)]
    n = omm.getNumParticles()
    params = np.array(
        [[_value(x) for x in force.getParticleParameters(i)] for i in range(n)]
    )
    charges = params[:, 0]
    exclusions = np.array(
        sorted(
            {
                tuple(sorted(force.getExceptionParameters(k)[:2]))
                for k in range(force.getNumExceptions())
            }
        ),
        dtype=np.int64,
    ).reshape(-1, 2)
    if custom:
        (cforce,) = custom
        assert (
            cforce.getEnergyFunction().replace(" ", "").startswith("(a/r6)^2-b/r6")
        ), cforce.getEnergyFunction()
        assert not params[:, 2].any(), (
            "LJ both in NonbondedForce and CustomNonbondedForce"
        )
        tables = {
            cforce.getTabulatedFunctionName(k): cforce.getTabulatedFunction(k)
            for k in range(cforce.getNumTabulatedFunctions())
        }
        t, _, a = tables["acoef"].getFunctionParameters()
        _, _, b = tables["bcoef"].getFunctionParameters()
        a = np.asarray(a).reshape(t, t).T  # stored [i + T*j]
        b = np.asarray(b).reshape(t, t).T
        lj_types = np.array([int(cforce.getParticleParameters(i)[0]) for i in range(n)])
        sigma, epsilon = np.ones(t), np.zeros(t)
        mask = np.ones((t, t), dtype=bool)
        c12, c6 = a * a / KCAL * 1e12, b / KCAL * 1e6
    else:
        keys, lj_types = np.unique(params[:, 1:], axis=0, return_inverse=True)
        sigma, epsilon = keys[:, 0] * 10.0, keys[:, 1] / KCAL
        mask = c12 = c6 = None
    box = np.array([[v.x, v.y, v.z] for v in omm.getDefaultPeriodicBoxVectors()]) * 10.0
    rs = RandomSystem(
        charges,
        lj_types.reshape(-1),
        sigma,
        epsilon,
        mask,
        c12,
        c6,
        exclusions,
        np.zeros((n, 3)),
        box,
    )
    return rs.system()


def _value(x: object) -> float:
    return float(x.value_in_unit(x.unit)) if hasattr(x, "unit") else float(x)  # type: ignore[attr-defined]
