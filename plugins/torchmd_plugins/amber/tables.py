"""Helpers the topology loaders share: per-type parameter tables, pairs, elements.

Every loader collects its interactions through a :class:`TableBuilder`, which keeps
one row of parameters per force-field type (interactions with the same type key share
the row), so all formats produce the same per-type
:class:`~torchmd_core.ParameterTable`.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from torchmd_core import InputFileError, ParameterTable

__all__ = [
    "TableBuilder",
    "check_file",
    "cmap_table",
    "element_from_mass",
    "pair_tensor",
    "pairs_12_13_14",
]


class TableBuilder:
    """Collects interactions of one term, deduplicating parameters by a type key.

    Args:
        n_atoms: atoms per interaction.
        parameters: parameter names, in order (e.g. ``("k", "r0")``).
    """

    def __init__(self, n_atoms: int, parameters: Sequence[str]) -> None:
        self.n_atoms = n_atoms
        self.parameters = tuple(parameters)
        self._atoms: list[Sequence[int]] = []
        self._types: list[int] = []
        self._rows: dict[Hashable, int] = {}
        self._values: list[Sequence[float]] = []
        self._names: list[str] = []

    def __len__(self) -> int:
        return len(self._atoms)

    def add(
        self,
        atoms: Sequence[int],
        key: Hashable,
        values: Sequence[float],
        name: str = "",
    ) -> None:
        """One interaction of type ``key`` with ``values`` (in ``parameters`` order).

        Interactions with equal keys must carry equal values; the key should include
        the values whenever a type name alone does not determine them.
        """
        row = self._rows.get(key)
        if row is None:
            row = self._rows[key] = len(self._values)
            self._values.append(tuple(values))
            self._names.append(name)
        self._atoms.append(atoms)
        self._types.append(row)

    def build(self) -> ParameterTable:
        atoms = torch.as_tensor(
            np.asarray(self._atoms, dtype=np.int64).reshape(-1, self.n_atoms)
        )
        values = np.asarray(self._values, dtype=np.float64).reshape(
            -1, len(self.parameters)
        )
        return ParameterTable(
            atoms=atoms,
            types=torch.as_tensor(np.asarray(self._types, dtype=np.int64)),
            values={
                n: torch.as_tensor(values[:, i].copy())
                for i, n in enumerate(self.parameters)
            },
            type_names=tuple(self._names),
        )


def pair_tensor(pairs: Iterable[tuple[int, int]]) -> Tensor:
    """(E, 2) int64 unique pairs with i < j, sorted."""
    unique = sorted({(min(i, j), max(i, j)) for i, j in pairs if i != j})
    return torch.as_tensor(np.asarray(unique, dtype=np.int64).reshape(-1, 2))


def pairs_12_13_14(
    n_atoms: int, bonds: Iterable[tuple[int, int]]
) -> tuple[set[tuple[int, int]], set[tuple[int, int]], set[tuple[int, int]]]:
    """1-2, 1-3 and 1-4 pairs (i < j) of a bond graph, each without the closer ones.

    A pair that is both 1-3 and 1-4 (in a ring) counts as 1-3, as in CHARMM and OpenMM.
    """
    partners: list[set[int]] = [set() for _ in range(n_atoms)]
    p12: set[tuple[int, int]] = set()
    for i, j in bonds:
        partners[i].add(j)
        partners[j].add(i)
        p12.add((min(i, j), max(i, j)))
    p13: set[tuple[int, int]] = set()
    for j in range(n_atoms):
        near = sorted(partners[j])
        for a in range(len(near)):
            for b in range(a + 1, len(near)):
                p13.add((near[a], near[b]))
    p14: set[tuple[int, int]] = set()
    for i, j in p12:
        for a in partners[i]:
            for b in partners[j]:
                if a != j and b != i and a != b:
                    p14.add((min(a, b), max(a, b)))
    p13 -= p12
    p14 -= p12 | p13
    return p12, p13, p14


# Element symbols by atomic number, and standard masses (amu) for guessing elements.
_MASSES = {
    1: 1.008,
    3: 6.94,
    4: 9.012,
    5: 10.81,
    6: 12.011,
    7: 14.007,
    8: 15.999,
    9: 18.998,
    11: 22.990,
    12: 24.305,
    13: 26.982,
    14: 28.085,
    15: 30.974,
    16: 32.06,
    17: 35.45,
    19: 39.098,
    20: 40.078,
    25: 54.938,
    26: 55.845,
    27: 58.933,
    28: 58.693,
    29: 63.546,
    30: 65.38,
    34: 78.971,
    35: 79.904,
    37: 85.468,
    38: 87.62,
    53: 126.904,
    55: 132.905,
    56: 137.327,
}


def element_from_mass(mass: float) -> int:
    """The atomic number whose standard mass is closest to ``mass`` (0 if none is near).

    Heavy hydrogens (hydrogen mass repartitioning, up to 4 amu) count as hydrogen;
    massless sites and unknown masses give 0.
    """
    if mass <= 0.5:
        return 0
    if mass < 4.5:
        return 1
    z, ref = min(_MASSES.items(), key=lambda item: abs(item[1] - mass))
    return z if abs(ref - mass) < 1.0 else 0


def cmap_table(
    atoms: Sequence[Sequence[int]], maps: Sequence[int], grids: Sequence[np.ndarray]
) -> ParameterTable:
    """The ``cmap`` table: one row (type) per map that is used, grid[φ, ψ] from −π.

    Args:
        atoms: (n, 8) atoms of each CMAP term.
        maps: (n,) index into ``grids`` of each term.
        grids: the maps, each (G, G) kcal/mol; all must have the same G.
    """
    used = sorted(set(maps))
    row = {m: r for r, m in enumerate(used)}
    sizes = {grids[m].shape for m in used}
    if len(sizes) > 1:
        raise ValueError(
            f"CMAP grids of different sizes {sorted(sizes)} are not supported"
        )
    return ParameterTable(
        atoms=torch.as_tensor(np.asarray(atoms, dtype=np.int64).reshape(-1, 8)),
        types=torch.as_tensor(np.asarray([row[m] for m in maps], dtype=np.int64)),
        values={
            "grid": torch.as_tensor(
                np.stack([np.asarray(grids[m], dtype=np.float64) for m in used])
            )
        },
        type_names=tuple(f"map{m + 1}" for m in used),
    )


def check_file(path: Path, what: str) -> None:
    """Raise InputFileError unless ``path`` is a readable file.

    Args:
        path: the file.
        what: its description in messages ("AMBER prmtop", ...).
    """
    if not path.exists():
        raise InputFileError(f"{what} '{path}' does not exist")
    if path.is_dir():
        raise InputFileError(f"{what} '{path}' is a directory, expected a file")
    try:
        with path.open("rb") as fh:
            fh.read(1)
    except OSError as err:
        raise InputFileError(f"cannot read {what} '{path}': {err.strerror}") from None
