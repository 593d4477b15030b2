"""Systems for the dynamics and barostat tests: real inputs from tests/data through the
config builder, and a synthetic box of three-site waters for toy potentials."""

from __future__ import annotations

import math
from typing import Any

import torch

from tests.conftest import DATA
from torchmd_core import (
    NonbondedParameters,
    ParameterTable,
    Potential,
    Residue,
    Simulation,
    State,
    System,
    parse_config,
)

#: Name → (topology, coordinates) under tests/data.
INPUTS = {
    "ala2_vacuum": ("ala2_vacuum/ala2_vacuum.prmtop", "ala2_vacuum/ala2_vacuum.pdb"),
    "ala2_solv": ("ala2_solv/structure.prmtop", "ala2_solv/input.coor"),
}

TIP3P_OH, TIP3P_HOH = 0.9572, math.radians(104.52)


def simulation(
    name: str,
    integrator: dict[str, Any] | None = None,
    precision: str = "float64",
    n_replicas: int = 1,
    cutoff: float | None = None,
    seed: int = 0,
    initial_temperature_K: float | None = None,
    barostat: dict[str, Any] | None = None,
    **system: Any,
) -> Simulation:
    """A Simulation of a stored input, amber + nonbonded (no cutoff unless given)."""
    topology, coordinates = INPUTS[name]
    nonbonded: dict[str, Any] = {"kind": "nonbonded"}
    if cutoff is not None:
        nonbonded["cutoff"] = cutoff
    config = parse_config(
        {
            "system": {
                "topology": str(DATA / topology),
                "coordinates": str(DATA / coordinates),
                **system,
            },
            "potentials": [{"kind": "amber"}, nonbonded],
            "integrator": integrator or {"kind": "verlet", "timestep_fs": 1.0},
            "precision": precision,
            "n_replicas": n_replicas,
            "seed": seed,
            "steps": 0,
            "initial_temperature_K": initial_temperature_K,
            "barostat": barostat,
        }
    )
    return Simulation.from_config(config)


def water_system(n_waters: int, rigid: bool = True) -> System:
    """``n_waters`` three-site waters (O, H, H) with TIP3P-like bond and angle
    parameters and an H-H bond (as AMBER water models carry); rigid if asked."""
    from torchmd_core.constraints import find_constraints

    o = torch.arange(n_waters) * 3
    bonds = torch.cat(
        [
            torch.stack([o, o + 1], 1),
            torch.stack([o, o + 2], 1),
            torch.stack([o + 1, o + 2], 1),
        ]
    )
    d_hh = 2 * TIP3P_OH * math.sin(TIP3P_HOH / 2)
    r0 = torch.tensor(
        [TIP3P_OH] * (2 * n_waters) + [d_hh] * n_waters, dtype=torch.float64
    )
    angles = torch.stack([o + 1, o, o + 2], 1)
    excl = torch.sort(bonds, dim=1).values
    n = 3 * n_waters
    z = torch.tensor([8, 1, 1] * n_waters)
    system = System(
        masses=torch.tensor([15.999, 1.008, 1.008] * n_waters, dtype=torch.float64),
        charges=torch.tensor([-0.834, 0.417, 0.417] * n_waters, dtype=torch.float64),
        atomic_numbers=z,
        atom_names=("OH2", "H1", "H2") * n_waters,
        atom_types=("OW", "HW", "HW") * n_waters,
        residue_index=torch.arange(n) // 3,
        residues=tuple(Residue("HOH", i + 1) for i in range(n_waters)),
        bonds=bonds,
        exclusions=excl,
        terms={
            "bonds": ParameterTable.per_interaction(
                bonds, k=torch.full((len(bonds),), 450.0), r0=r0
            ),
            "angles": ParameterTable.per_interaction(
                angles,
                k=torch.full((n_waters,), 55.0),
                theta0=torch.full((n_waters,), TIP3P_HOH),
            ),
        },
        nonbonded=NonbondedParameters(
            lj_types=torch.tensor([0, 1, 1] * n_waters),
            sigma=torch.tensor([3.15, 1.0], dtype=torch.float64),
            epsilon=torch.tensor([0.152, 0.0], dtype=torch.float64),
        ),
    )
    if rigid:
        system.constraints = find_constraints(system, "none", rigid_water=True)
    return system


def water_state(
    system: System,
    n_replicas: int = 1,
    spacing: float = 3.1,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
) -> State:
    """Waters on a cubic lattice, randomly oriented, in a periodic box of that size."""
    n_waters = system.n_atoms // 3
    side = math.ceil(n_waters ** (1 / 3))
    g = torch.Generator().manual_seed(seed)
    height = TIP3P_OH * math.cos(TIP3P_HOH / 2)
    half = TIP3P_OH * math.sin(TIP3P_HOH / 2)
    ideal = torch.tensor(
        [[0.0, 0.0, 0.0], [half, height, 0.0], [-half, height, 0.0]],
        dtype=torch.float64,
    )
    frames = []
    for _ in range(n_replicas):
        sites = []
        for w in range(n_waters):
            q, _ = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=torch.float64))
            cell = torch.tensor(
                [w % side, (w // side) % side, w // side**2], dtype=torch.float64
            )
            sites.append(ideal @ q.T + spacing * (cell + 0.5))
        frames.append(torch.cat(sites))
    positions = torch.stack(frames)
    box = (
        (spacing * side * torch.eye(3, dtype=torch.float64))
        .expand(n_replicas, 3, 3)
        .clone()
    )
    return State(positions=positions, box=box).to(dtype=dtype)


class HarmonicWells(Potential):
    """E = Σ_i ½ k |x_i − c_i|²: independent 3-D oscillators (exact averages known)."""

    def __init__(self, centres: torch.Tensor, k: float = 50.0) -> None:
        super().__init__(None, None)
        self.register_buffer("centres", centres)  # (N, 3)
        self.k = k

    def energy(self, state: State) -> torch.Tensor:
        return 0.5 * self.k * (state.positions - self.centres).square().sum((1, 2))

    def energy_and_forces(self, state: State) -> tuple[torch.Tensor, torch.Tensor]:
        d = state.positions - self.centres
        return 0.5 * self.k * d.square().sum((1, 2)), -self.k * d
