"""Small synthetic systems and states for tests (no files, no downloads)."""

from __future__ import annotations

import torch

from torchmd_core.geometry import box_from_lengths_angles
from torchmd_core.state import State
from torchmd_core.system import NonbondedParameters, ParameterTable, Residue, System

__all__ = ["random_state", "toy_system"]


def toy_system(
    n_atoms: int = 12, n_types: int = 2, chain: bool = True, seed: int = 0
) -> System:
    """A chain molecule (or free atoms) with bonds, angles, charges and LJ types.

    Atoms alternate carbon-like (12 amu) and hydrogen-like (1 amu); charges sum to 0.
    """
    g = torch.Generator().manual_seed(seed)
    z = torch.tensor(
        [6 if i % 2 == 0 else 1 for i in range(n_atoms)], dtype=torch.int64
    )
    masses = torch.where(z == 6, 12.011, 1.008).to(torch.float64)
    charges = torch.rand(n_atoms, generator=g, dtype=torch.float64) - 0.5
    charges = charges - charges.mean()
    bonds = (
        torch.stack([torch.arange(n_atoms - 1), torch.arange(1, n_atoms)], 1)
        if chain
        else torch.zeros(0, 2, dtype=torch.int64)
    )
    angles = (
        torch.stack(
            [
                torch.arange(n_atoms - 2),
                torch.arange(1, n_atoms - 1),
                torch.arange(2, n_atoms),
            ],
            1,
        )
        if chain
        else torch.zeros(0, 3, dtype=torch.int64)
    )
    terms = {}
    if chain:
        terms["bonds"] = ParameterTable(
            bonds,
            torch.zeros(len(bonds), dtype=torch.int64),
            {
                "k": torch.tensor([300.0], dtype=torch.float64),
                "r0": torch.tensor([1.5], dtype=torch.float64),
            },
        )
        terms["angles"] = ParameterTable(
            angles,
            torch.zeros(len(angles), dtype=torch.int64),
            {
                "k": torch.tensor([50.0], dtype=torch.float64),
                "theta0": torch.tensor([1.9], dtype=torch.float64),
            },
        )
    excl = (
        torch.cat([bonds, angles[:, [0, 2]]])
        if chain
        else torch.zeros(0, 2, dtype=torch.int64)
    )
    lj_types = torch.arange(n_atoms) % n_types
    nonbonded = NonbondedParameters(
        lj_types=lj_types,
        sigma=torch.linspace(2.5, 3.4, n_types, dtype=torch.float64),
        epsilon=torch.linspace(0.05, 0.2, n_types, dtype=torch.float64),
        type_names=tuple(f"T{i}" for i in range(n_types)),
    )
    return System(
        masses=masses,
        charges=charges,
        atomic_numbers=z,
        atom_names=tuple(
            ("C" if zi == 6 else "H") + str(i) for i, zi in enumerate(z.tolist())
        ),
        atom_types=tuple("CT" if zi == 6 else "HC" for zi in z.tolist()),
        residue_index=torch.zeros(n_atoms, dtype=torch.int64),
        residues=(Residue("MOL", 1),),
        bonds=bonds,
        exclusions=excl,
        terms=terms,
        nonbonded=nonbonded,
    )


def random_state(
    system: System,
    n_replicas: int = 2,
    box: float | tuple[float, ...] | None = None,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    spacing: float = 1.5,
    temperature_K: float | None = 300.0,
) -> State:
    """Replicas of a jittered zig-zag chain (atoms ≈ ``spacing`` Å apart), optionally in
    a periodic box (lengths, or lengths and angles)."""
    g = torch.Generator().manual_seed(seed)
    n = system.n_atoms
    idx = torch.arange(n, dtype=torch.float64)
    base = torch.stack(
        [
            idx * spacing * 0.8,
            (idx % 2) * spacing * 0.6,
            torch.zeros(n, dtype=torch.float64),
        ],
        1,
    )
    pos = base[None] + 0.1 * torch.randn(
        n_replicas, n, 3, generator=g, dtype=torch.float64
    )
    bx = None
    if box is not None:
        values = (box, box, box) if isinstance(box, (int, float)) else tuple(box)
        bx = box_from_lengths_angles(*values)[None].expand(n_replicas, 3, 3).clone()
    vel = None
    if temperature_K is not None:
        from torchmd_core.simulation import maxwell_boltzmann_velocities

        vel = maxwell_boltzmann_velocities(system, temperature_K, n_replicas, seed)
    state = State(positions=pos, velocities=vel, box=bx)
    return state.to(dtype=dtype)
