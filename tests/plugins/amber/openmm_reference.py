"""Evaluate OpenMM Systems built at test time (Reference platform, double precision).

The stored references in tests/reference cover the shared inputs; tests that build
further systems through OpenMM's own loaders (CHARMM36 psf, force-field XML) use these
helpers to get OpenMM's energies and forces force by force, in kcal/mol and kcal/mol/Å.
"""

from __future__ import annotations

import copy

import numpy as np

KCAL = 1.0 / 4.184


def evaluate(
    system, positions: np.ndarray, box: np.ndarray | None = None, groups: int | set = -1
):
    """(energy kcal/mol, forces (N, 3) kcal/mol/Å) of ``system``.

    At ``positions`` (Å) and ``box`` (Å, rows a, b, c).
    """
    import openmm
    import openmm.unit as unit

    context = openmm.Context(
        system,
        openmm.VerletIntegrator(1e-3),
        openmm.Platform.getPlatformByName("Reference"),
    )
    if box is not None:
        context.setPeriodicBoxVectors(*(openmm.Vec3(*row) * 0.1 for row in box))
    context.setPositions(np.asarray(positions) * 0.1)
    state = context.getState(getEnergy=True, getForces=True, groups=groups)
    energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) * KCAL
    forces = state.getForces(asNumpy=True).value_in_unit(
        unit.kilojoule_per_mole / unit.nanometer
    )
    return energy, np.asarray(forces) * KCAL * 0.1


def per_force(
    system, positions: np.ndarray, box: np.ndarray | None = None
) -> list[tuple[str, str, float, np.ndarray]]:
    """(force class, force name, energy, forces) of every force of ``system``."""
    system = copy.deepcopy(system)
    forces = list(system.getForces())
    for i, force in enumerate(forces):
        force.setForceGroup(i)
    out = []
    for i, force in enumerate(forces):
        energy, f = evaluate(system, positions, box, {i})
        out.append((type(force).__name__, force.getName(), energy, f))
    return out


def set_nonbonded(
    system,
    method: str,
    cutoff_A: float | None = None,
    switch_A: float | None = None,
    rf_dielectric: float = 78.3,
    dispersion: bool = False,
) -> None:
    """Put the same nonbonded settings on every NonbondedForce/CustomNonbondedForce."""
    import openmm

    for force in system.getForces():
        if isinstance(force, (openmm.NonbondedForce, openmm.CustomNonbondedForce)):
            cls = type(force)
            force.setNonbondedMethod(getattr(cls, method))
            if cutoff_A is not None:
                force.setCutoffDistance(cutoff_A * 0.1)
            force.setUseSwitchingFunction(switch_A is not None)
            if switch_A is not None:
                force.setSwitchingDistance(switch_A * 0.1)
        if isinstance(force, openmm.NonbondedForce):
            force.setReactionFieldDielectric(rf_dielectric)
            force.setUseDispersionCorrection(dispersion)
        if isinstance(force, openmm.CustomNonbondedForce):
            force.setUseLongRangeCorrection(dispersion)
