"""OpenMM as a force provider and reference integrator for the dynamics tests.

:class:`OpenMMPotential` evaluates energies and forces with an OpenMM ``System`` on the
Reference platform, so integrator tests can compare trajectories with OpenMM's own
integrators driven by exactly the same forces.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from torchmd_core import Potential, State

openmm = __import__("pytest").importorskip("openmm")
app = __import__("openmm.app", fromlist=["app"])
unit = __import__("openmm.unit", fromlist=["unit"])

KJ_TO_KCAL = 1.0 / 4.184
FORCE = KJ_TO_KCAL / 10.0  # kJ/mol/nm → kcal/mol/Å


class OpenMMPotential(Potential):
    """Energy and forces of an OpenMM System (Reference platform, double precision).

    Not differentiable; one OpenMM context evaluates the replicas one after another.
    """

    def __init__(self, system: openmm.System) -> None:
        super().__init__(None, None)
        self.omm_system = system
        integrator = openmm.VerletIntegrator(0.001)
        platform = openmm.Platform.getPlatformByName("Reference")
        self.context = openmm.Context(system, integrator, platform)

    def _evaluate(self, state: State) -> tuple[Tensor, Tensor]:
        energies, forces = [], []
        pos = state.positions.detach().double().cpu().numpy() / 10.0
        box = (
            None
            if state.box is None
            else state.box.detach().double().cpu().numpy() / 10.0
        )
        for r in range(state.n_replicas):
            if box is not None:
                self.context.setPeriodicBoxVectors(*box[r])
            self.context.setPositions(pos[r])
            s = self.context.getState(getEnergy=True, getForces=True)
            energies.append(
                s.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
                * KJ_TO_KCAL
            )
            forces.append(
                np.asarray(
                    s.getForces(asNumpy=True).value_in_unit(
                        unit.kilojoule_per_mole / unit.nanometer
                    )
                )
                * FORCE
            )
        e = torch.tensor(energies, dtype=state.dtype, device=state.device)
        f = torch.as_tensor(np.stack(forces), dtype=state.dtype, device=state.device)
        return e, f

    def energy(self, state: State) -> Tensor:
        return self._evaluate(state)[0]

    def energy_and_forces(self, state: State) -> tuple[Tensor, Tensor]:
        return self._evaluate(state)


def amber_system(
    prmtop: Path,
    constraints: str | None = None,
    rigid_water: bool = False,
    cutoff_A: float | None = None,
    periodic: bool = False,
    hydrogen_mass: float | None = None,
) -> openmm.System:
    """An OpenMM System from a prmtop, built by OpenMM's own loader, no COM remover."""
    top = app.AmberPrmtopFile(str(prmtop))
    method = (
        app.NoCutoff
        if cutoff_A is None
        else (app.CutoffPeriodic if periodic else app.CutoffNonPeriodic)
    )
    kwargs = (
        {}
        if cutoff_A is None
        else {"nonbondedCutoff": cutoff_A / 10.0 * unit.nanometer}
    )
    cons = {
        None: None,
        "hbonds": app.HBonds,
        "allbonds": app.AllBonds,
        "hangles": app.HAngles,
    }[constraints]
    extra = {} if hydrogen_mass is None else {"hydrogenMass": hydrogen_mass * unit.amu}
    return top.createSystem(
        nonbondedMethod=method,
        constraints=cons,
        rigidWater=rigid_water,
        removeCMMotion=False,
        **kwargs,
        **extra,
    )
