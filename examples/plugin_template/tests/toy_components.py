"""Tiny loaders and an integrator, so tests run a whole config without real input files.

They are registered as a plain plugin object in the ``registry`` fixture
(``isolated_registry(plugins=[toy_components])``), not through an entry point.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field
from torchmd_core import (
    CoordinateLoader,
    Coordinates,
    Integrator,
    IntegratorConfig,
    LoaderConfig,
    Potential,
    State,
    System,
    TopologyLoader,
    hookimpl,
    units,
)
from torchmd_core.geometry import box_from_lengths_angles
from torchmd_core.testing import random_state, toy_system


class ToyTopology(TopologyLoader):
    """Reads ``{"n_atoms": N}`` JSON into torchmd_core.testing.toy_system(N)."""

    extensions = ("toytop",)

    class Config(LoaderConfig):
        kind: Literal["test.toytop"] = "test.toytop"

    def load_topology(self, path: Path, parameters: Any = ()) -> System:
        return toy_system(int(json.loads(Path(path).read_text())["n_atoms"]))


class ToyCoordinates(CoordinateLoader):
    """Reads ``{"positions": [[x, y, z], ...], "box": [a, b, c] or null}`` JSON, Å."""

    extensions = ("toycrd",)

    class Config(LoaderConfig):
        kind: Literal["test.toycrd"] = "test.toycrd"

    def load_coordinates(self, path: Path, system: System | None = None) -> Coordinates:
        data = json.loads(Path(path).read_text())
        box = data.get("box")
        return Coordinates(
            positions=torch.tensor(data["positions"], dtype=torch.float64),
            box=None if box is None else box_from_lengths_angles(*box),
        )


class ToyVerlet(Integrator):
    """Velocity Verlet, enough to run a few steps."""

    class Config(IntegratorConfig):
        kind: Literal["test.verlet"] = "test.verlet"
        timestep_fs: float = Field(1.0, gt=0, description="Timestep, fs.")

    def step(self, state: State, potential: Potential) -> State:
        dt = self.timestep_ps
        inv_m = (units.KCAL_MOL_A_AMU_TO_A_PS2 / self.system.masses).to(
            state.positions
        )[:, None]
        assert state.velocities is not None
        forces = state.forces if state.forces is not None else potential.forces(state)
        v = state.velocities + 0.5 * dt * forces * inv_m
        moved = state.replace(positions=state.positions + dt * v)
        energy, forces = potential.energy_and_forces(moved)
        return moved.replace(
            velocities=v + 0.5 * dt * forces * inv_m,
            forces=forces,
            potential_energy=energy,
            step=state.step + 1,
            time_ps=state.time_ps + dt,
        )


def write_inputs(
    folder: Path, n_atoms: int = 12, box: float | None = None
) -> tuple[Path, Path]:
    """A toy topology and coordinates (a zig-zag chain) in ``folder``."""
    positions = random_state(
        toy_system(n_atoms), 1, seed=0, temperature_K=None
    ).positions[0]
    top, crd = folder / "chain.toytop", folder / "chain.toycrd"
    top.write_text(json.dumps({"n_atoms": n_atoms}))
    crd.write_text(
        json.dumps(
            {"positions": positions.tolist(), "box": None if box is None else [box] * 3}
        )
    )
    return top, crd


@hookimpl
def torchmd_core_register_loaders(register: Callable[[type], None]) -> None:
    register(ToyTopology)
    register(ToyCoordinates)


@hookimpl
def torchmd_core_register_integrators(register: Callable[[type], None]) -> None:
    register(ToyVerlet)
