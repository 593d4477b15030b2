"""Minimal components for testing the core without the built-in plugins."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field
from torch import Tensor

from torchmd_core import (
    CoordinateLoader,
    Coordinates,
    Frame,
    Integrator,
    IntegratorConfig,
    LoaderConfig,
    Potential,
    PotentialConfig,
    Reporter,
    ReporterConfig,
    State,
    System,
    TopologyLoader,
    hookimpl,
    replica_normal,
    units,
)
from torchmd_core.geometry import distances, minimum_image


class HarmonicBonds(Potential):
    """E = Σ k (r − r0)² over the system's bonds table."""

    class Config(PotentialConfig):
        kind: Literal["toy.bonds"] = "toy.bonds"
        scale: float = Field(1.0, gt=0, description="Multiplier of k, dimensionless.")

    def __init__(self, config: Config, system: System) -> None:
        super().__init__(config, system)
        table = system.terms["bonds"]
        p = table.parameters_per_interaction()
        self.register_buffer("pairs", table.atoms)
        self.register_buffer("k", p["k"] * config.scale)
        self.register_buffer("r0", p["r0"])

    def energy(self, state: State) -> Tensor:
        r = distances(state.positions, self.pairs, state.box)
        return (self.k * (r - self.r0).square()).sum(-1)


class SoftPairs(Potential):
    """E = Σ_{r<rc} A (1 − r/rc)² over non-excluded pairs (uses the neighbour list)."""

    class Config(PotentialConfig):
        kind: Literal["toy.pairs"] = "toy.pairs"
        cutoff: float = Field(4.0, gt=0, description="Cutoff, Å.")
        strength: float = Field(2.0, description="A, kcal/mol.")

    def __init__(self, config: Config, system: System) -> None:
        super().__init__(config, system)
        self.cutoff = config.cutoff
        self.strength = config.strength
        self.register_buffer("exclusions", system.exclusions)

    def pair_exclusions(self) -> Tensor:
        return self.exclusions

    def energy(self, state: State) -> Tensor:
        nb = self.neighbors(state)
        flat = state.positions.reshape(-1, 3)
        d = flat[nb.pairs[1]] - flat[nb.pairs[0]]
        rep = nb.replica()
        if state.box is not None:
            d = minimum_image(d, state.box[rep])
        r = torch.linalg.vector_norm(d, dim=-1)
        e = torch.where(
            r < self.cutoff,
            self.strength * (1 - r / self.cutoff).square(),
            torch.zeros_like(r),
        )
        return torch.zeros(state.n_replicas, dtype=e.dtype, device=e.device).index_add(
            0, rep, e
        )


class ToyVerlet(Integrator):
    """Velocity Verlet with an optional random velocity kick (to test the streams)."""

    class Config(IntegratorConfig):
        kind: Literal["toy.verlet"] = "toy.verlet"
        timestep_fs: float = Field(1.0, gt=0, description="Timestep, fs.")
        noise: float = Field(0.0, ge=0, description="Random kick size, Å/ps.")

    def __init__(self, config: Config, system: System) -> None:
        super().__init__(config, system)
        self.noise = config.noise
        self.inv_m = 1.0 / system.masses

    def to(self, device: Any = None, dtype: Any = None) -> ToyVerlet:
        self.inv_m = self.inv_m.to(device=device, dtype=dtype)
        return self

    def step(self, state: State, potential: Potential) -> State:
        dt = self.timestep_ps
        if state.forces is None:
            e, f = potential.energy_and_forces(state)
            state = state.replace(forces=f, potential_energy=e)
        a = state.forces * self.inv_m[:, None] * units.KCAL_MOL_A_AMU_TO_A_PS2
        v = state.velocities + 0.5 * dt * a
        if self.noise:
            v = v + self.noise * replica_normal(self.generators, tuple(v.shape[1:]), v)
        x = state.positions + dt * v
        new = state.replace(positions=x, velocities=v)
        e, f = potential.energy_and_forces(new)
        v = v + 0.5 * dt * f * self.inv_m[:, None] * units.KCAL_MOL_A_AMU_TO_A_PS2
        return new.replace(
            velocities=v,
            forces=f,
            potential_energy=e,
            step=state.step + 1,
            time_ps=state.time_ps + dt,
        )


class MemoryReporter(Reporter):
    """Keeps frames in memory."""

    needs = frozenset({"energy_terms"})

    class Config(ReporterConfig):
        kind: Literal["toy.memory"] = "toy.memory"
        interval: int = Field(1, gt=0, description="Steps between reports.")

    def __init__(self, config: Config, system: System) -> None:
        super().__init__(config, system)
        self.frames: list[Frame] = []
        self.opened = self.closed = 0

    def open(self, run: Any) -> None:
        self.opened += 1

    def report(self, frame: Frame) -> None:
        self.frames.append(frame)

    def close(self) -> None:
        self.closed += 1


class ToyTopologyLoader(TopologyLoader):
    """Reads ``{"n_atoms": N, "seed": s}`` JSON into torchmd_core.testing.toy_system."""

    extensions = ("toytop",)

    class Config(LoaderConfig):
        kind: Literal["toy.top"] = "toy.top"

    def load_topology(self, path: Any, parameters: Any = ()) -> System:
        import json

        from torchmd_core.testing import toy_system

        data = json.loads(Path(path).read_text())
        return toy_system(int(data["n_atoms"]), seed=int(data.get("seed", 0)))


class ToyCoordinateLoader(CoordinateLoader):
    """Reads ``{"positions": [[x, y, z], ...], "box": [a, b, c] | null}`` JSON."""

    extensions = ("toycrd",)

    class Config(LoaderConfig):
        kind: Literal["toy.crd"] = "toy.crd"

    def load_coordinates(self, path: Any, system: Any = None) -> Coordinates:
        import json

        from torchmd_core.geometry import box_from_lengths_angles

        data = json.loads(Path(path).read_text())
        box = data.get("box")
        return Coordinates(
            positions=torch.tensor(data["positions"], dtype=torch.float64),
            box=None if box is None else box_from_lengths_angles(*box),
        )


def write_toy_inputs(
    folder: Path, n_atoms: int = 12, box: float | None = 14.0, seed: int = 0
) -> tuple[Path, Path]:
    """Write a toy topology and coordinates (a zig-zag chain) into ``folder``."""
    import json

    from torchmd_core.testing import random_state, toy_system

    system = toy_system(n_atoms, seed=seed)
    state = random_state(system, 1, seed=seed, temperature_K=None)
    top = folder / "toy.toytop"
    crd = folder / "toy.toycrd"
    top.write_text(json.dumps({"n_atoms": n_atoms, "seed": seed}))
    crd.write_text(
        json.dumps(
            {
                "positions": state.positions[0].tolist(),
                "box": None if box is None else [box] * 3,
            }
        )
    )
    return top, crd


@hookimpl
def torchmd_core_register_loaders(register: Any) -> None:
    register(ToyTopologyLoader)
    register(ToyCoordinateLoader)


@hookimpl
def torchmd_core_register_potentials(register: Any) -> None:
    register(HarmonicBonds)
    register(SoftPairs)


@hookimpl
def torchmd_core_register_integrators(register: Any) -> None:
    register(ToyVerlet)


@hookimpl
def torchmd_core_register_reporters(register: Any) -> None:
    register(MemoryReporter)
