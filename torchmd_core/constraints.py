"""Which distances are constrained (bonds to H, all bonds, rigid water), and hydrogen
mass repartitioning. The solvers (SETTLE, SHAKE/RATTLE) live with the integrators;
this module only decides *what* is constrained, from the system's bonds and the
equilibrium values of its bonded parameters.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Protocol

import torch
from torch import Tensor

from torchmd_core.errors import TopologyError
from torchmd_core.system import Constraints, System

__all__ = [
    "ConstraintProjector",
    "apply_system_options",
    "find_constraints",
    "find_waters",
    "repartition_hydrogen_mass",
]

_HYDROGEN, _OXYGEN = 1, 8


class ConstraintProjector(Protocol):
    """What the minimiser needs from a constraint solver (the dynamics plugin's
    ``ConstraintSolver`` is one). All tensors are (R, N, 3); corrections are added
    to their inputs."""

    #: (N,) 1/amu, 0 for massless atoms: constraint forces are mass-weighted.
    inv_mass: Tensor

    def projection(self, positions: Tensor, box: Tensor | None = None) -> Tensor:
        """Displacement putting any structure on the constraint surface."""
        ...

    def position_correction(
        self, positions: Tensor, reference: Tensor, box: Tensor | None = None
    ) -> Tensor:
        """SHAKE: displacement putting ``positions`` back on the surface along the
        constrained vectors of ``reference`` (which is on it)."""
        ...

    def velocity_correction(
        self, velocities: Tensor, positions: Tensor, box: Tensor | None = None
    ) -> Tensor:
        """RATTLE: velocity change removing relative velocities along constraints."""
        ...


def apply_system_options(system: System, config: object) -> System:
    """Apply ``hydrogen_mass``, ``constraints``, ``rigid_water`` of a SystemConfig."""
    mode = str(getattr(config, "constraints", "none"))
    rigid = getattr(config, "rigid_water", None)
    rigid_water = (mode != "none") if rigid is None else bool(rigid)
    h_mass = getattr(config, "hydrogen_mass", None)
    if h_mass is not None:
        system = repartition_hydrogen_mass(system, float(h_mass))
    if mode != "none" or rigid_water:
        system = dataclasses.replace(
            system, constraints=find_constraints(system, mode, rigid_water)
        )
    return system


def find_waters(system: System) -> Tensor:
    """(W, 3) (O, H1, H2) of every three-atom molecule made of one O and two H
    (massless virtual sites, the extra points of 4- and 5-site waters, not counted)."""
    real = torch.nonzero(system.masses > 0).flatten()
    mol = system.molecules[real]
    z = system.atomic_numbers
    counts = torch.bincount(mol, minlength=system.n_molecules)
    waters = []
    order = real[torch.argsort(mol, stable=True)]
    starts = torch.cumsum(counts, 0) - counts
    for m in torch.nonzero(counts == 3).flatten().tolist():
        atoms = order[starts[m] : starts[m] + 3]
        zs = z[atoms].tolist()
        if sorted(zs) == [_HYDROGEN, _HYDROGEN, _OXYGEN]:
            o = atoms[zs.index(_OXYGEN)]
            hs = [
                a for a, zz in zip(atoms.tolist(), zs, strict=True) if zz == _HYDROGEN
            ]
            waters.append([int(o), *hs])
    if not waters:
        return torch.zeros(0, 3, dtype=torch.int64)
    return torch.tensor(waters, dtype=torch.int64)


def _bond_lengths(system: System) -> dict[tuple[int, int], float]:
    table = system.terms.get("bonds")
    if table is None or len(table) == 0:
        return {}
    r0 = table.parameters_per_interaction()["r0"].tolist()
    return {
        (min(i, j), max(i, j)): r
        for (i, j), r in zip(table.atoms.tolist(), r0, strict=True)
    }


def _angle_values(system: System) -> dict[tuple[int, int, int], float]:
    table = system.terms.get("angles")
    if table is None or len(table) == 0:
        return {}
    th = table.parameters_per_interaction()["theta0"].tolist()
    out = {}
    for (i, j, k), t in zip(table.atoms.tolist(), th, strict=True):
        out[(i, j, k)] = t
        out[(k, j, i)] = t
    return out


def find_constraints(system: System, mode: str, rigid_water: bool) -> Constraints:
    """Constraints for ``mode`` (none, hbonds, allbonds, hangles), plus rigid waters.

    Distances are the equilibrium bond lengths (r0); H-X-H and H-O-X angles (hangles)
    become 1-3 distances by the law of cosines, as in OpenMM. A pair is constrained
    once even when it is reached twice (a bond listed twice, a 1-3 pair that is also
    a bond). Rigid waters (SETTLE) take their O-H and H-H distances from the bond
    parameters (an H-O-H angle when there is no H-H bond); all must share one model.

    Raises:
        TopologyError: a bond to constrain has no bond parameters, or waters differ.
    """
    z = system.atomic_numbers.tolist()
    lengths = _bond_lengths(system)
    waters = (
        find_waters(system) if rigid_water else torch.zeros(0, 3, dtype=torch.int64)
    )
    in_water = set(waters.flatten().tolist())
    chosen: dict[tuple[int, int], float] = {}
    massless = set(torch.nonzero(system.masses <= 0).flatten().tolist())
    if mode != "none":
        for i, j in system.bonds.tolist():
            if (i in in_water and j in in_water) or i in massless or j in massless:
                continue  # rigid waters; bonds to virtual sites (as OpenMM)
            if mode == "hbonds" and _HYDROGEN not in (z[i], z[j]):
                continue
            key = (min(i, j), max(i, j))
            if key not in lengths:
                raise TopologyError(
                    f"cannot constrain bond {i}-{j} ({system.atom_names[i]}-"
                    f"{system.atom_names[j]}): it has no bond parameters (r0)"
                )
            chosen[key] = lengths[key]
    if mode == "hangles":
        for (i, j, k), theta in _angle_values(system).items():
            if i >= k or i in in_water or (i, k) in chosen or {i, j, k} & massless:
                continue
            h_count = (z[i] == _HYDROGEN) + (z[k] == _HYDROGEN)
            if h_count == 2 or (h_count == 1 and z[j] == _OXYGEN):
                a = lengths.get((min(i, j), max(i, j)))
                b = lengths.get((min(j, k), max(j, k)))
                if a is not None and b is not None:
                    chosen[(i, k)] = math.sqrt(
                        a * a + b * b - 2 * a * b * math.cos(theta)
                    )
    return Constraints(
        pairs=torch.tensor(list(chosen), dtype=torch.int64).reshape(-1, 2),
        distances=torch.tensor(list(chosen.values()), dtype=torch.float64),
        waters=waters,
        water_distances=_water_distances(system, waters, lengths),
    )


def _water_distances(
    system: System, waters: Tensor, lengths: dict[tuple[int, int], float]
) -> tuple[float, float]:
    """(d_OH, d_HH) shared by every rigid water, Å; (0, 0) without waters."""
    if len(waters) == 0:
        return 0.0, 0.0
    angles = _angle_values(system)
    found: list[tuple[float, float]] = []
    for o, h1, h2 in waters.tolist():
        oh = [lengths.get((min(o, h), max(o, h))) for h in (h1, h2)]
        if oh[0] is None or oh[1] is None:
            raise TopologyError(
                f"rigid water {o}-{h1}-{h2} ({system.atom_names[o]}): no O-H bond "
                "parameters; give the water bonds parameters or set rigid_water: false"
            )
        hh = lengths.get((min(h1, h2), max(h1, h2)))
        if hh is None:
            theta = angles.get((h1, o, h2))
            if theta is None:
                raise TopologyError(
                    f"rigid water {o}-{h1}-{h2}: needs an H-H bond or an H-O-H angle "
                    "parameter"
                )
            hh = 2.0 * oh[0] * math.sin(theta / 2.0)
        found += [(oh[0], hh), (oh[1], hh)]
    first = found[0]
    odd = next(
        (
            f
            for f in found
            if abs(f[0] - first[0]) > 1e-6 or abs(f[1] - first[1]) > 1e-6
        ),
        None,
    )
    if odd is not None:
        raise TopologyError(
            f"rigid waters of different geometries (O-H {first[0]} Å / H-H "
            f"{first[1]} Å and O-H {odd[0]} Å / H-H {odd[1]} Å); SETTLE needs one "
            "water model: use one, or set rigid_water: false"
        )
    return first


def repartition_hydrogen_mass(system: System, hydrogen_mass: float) -> System:
    """Move mass from heavy atoms to their bonded hydrogens so each H weighs
    ``hydrogen_mass`` amu (waters are left alone). Total mass is unchanged."""
    masses = system.masses.clone()
    z = system.atomic_numbers
    in_water = set(find_waters(system).flatten().tolist())
    for i, j in system.bonds.tolist():
        for h, heavy in ((i, j), (j, i)):
            if (
                int(z[h]) == _HYDROGEN
                and int(z[heavy]) != _HYDROGEN
                and h not in in_water
            ):
                delta = hydrogen_mass - float(masses[h])
                masses[h] = hydrogen_mass
                masses[heavy] -= delta
    if bool((masses[system.masses > 0] <= 0).any()):
        raise TopologyError(
            f"hydrogen_mass {hydrogen_mass} amu leaves a heavy atom with no mass; use "
            "a smaller value"
        )
    return dataclasses.replace(system, masses=masses)
