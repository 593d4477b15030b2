"""The parameterised system: atoms, topology and force-field parameters.

A :class:`System` is what a topology loader produces and what potentials read. It
holds no positions (those are in :class:`~torchmd_core.state.State`). All tensors are
stored on the CPU in float64 (indices in int64); potentials copy what they need into
their own buffers and follow ``.to(device, dtype)``.

Bonded parameters live in :attr:`System.terms`, one :class:`ParameterTable` per term.
Parameters are stored *per type* (rows of ``values``) and each interaction points at
its type (``types``), so a force-field type shared by many interactions is one
parameter (this is what makes fitting parameters meaningful). The conventions every
loader and potential follow (units: kcal/mol, Å, radians):

====================== ===== ========================== ================================
term                   atoms values                     energy
====================== ===== ========================== ================================
``bonds``              2     ``k`` kcal/mol/Å²,         k (r − r0)²
                             ``r0`` Å
``angles``             3     ``k`` kcal/mol/rad²,       k (θ − θ0)²
                             ``theta0``
``urey_bradley``       2     ``k`` kcal/mol/Å²,         k (r13 − r0)²  (atoms 1 and 3)
                             ``r0`` Å
``torsions``           4     ``k`` kcal/mol,            k (1 + cos(n φ − phase))
                             ``phase`` rad,
                             ``periodicity`` n
                             (integer-valued)
``impropers``          4     as ``torsions``            as ``torsions`` (periodic
                                                        improper)
``harmonic_impropers`` 4     ``k`` kcal/mol/rad²,       k (ψ − ψ0)², ψ − ψ0 wrapped to
                             ``psi0``                   (−π, π]
``cmap``               8     ``grid`` (n_maps, G, G)    bicubic in (φ of atoms 0-3,
                             kcal/mol                   ψ of atoms 4-7); grid[m, i, j]
                                                        at φ = −π + 2πi/G,
                                                        ψ = −π + 2πj/G
``pairs14``            2     ``charge_scale``,          4ε((σ/r)¹² − (σ/r)⁶)
                             ``sigma`` Å,               + C · charge_scale · q_i q_j / r
                             ``epsilon`` kcal/mol
====================== ===== ========================== ================================

Non-bonded parameters are in :attr:`System.nonbonded` (:class:`NonbondedParameters`)
and :attr:`System.charges`; :attr:`System.exclusions` lists every pair left out of the
normal non-bonded sum (1-2, 1-3 and the 1-4 pairs that ``pairs14`` handles).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from torchmd_core.errors import TopologyError

if TYPE_CHECKING:
    import mdtraj

__all__ = [
    "BONDED_TERMS",
    "Constraints",
    "NonbondedParameters",
    "ParameterTable",
    "Residue",
    "System",
    "VirtualSites",
]

#: The bonded term names, in the order reported. See the module docstring.
BONDED_TERMS = (
    "bonds",
    "angles",
    "urey_bradley",
    "torsions",
    "impropers",
    "harmonic_impropers",
    "cmap",
    "pairs14",
)

_TERM_ATOMS = {
    "bonds": 2,
    "angles": 3,
    "urey_bradley": 2,
    "torsions": 4,
    "impropers": 4,
    "harmonic_impropers": 4,
    "cmap": 8,
    "pairs14": 2,
}


@dataclass(frozen=True)
class ParameterTable:
    """Interactions of one bonded term and their per-type parameters.

    Attributes:
        atoms: (n, k) int64 atom indices of each interaction.
        types: (n,) int64 row of ``values`` that holds each interaction's parameters.
        values: parameter name → (n_types, ...) float64 tensor.
        type_names: optional human-readable name of each type (e.g. ``"CT-HC"``).
    """

    atoms: Tensor
    types: Tensor
    values: dict[str, Tensor]
    type_names: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.atoms.dim() != 2 or self.types.shape != (self.atoms.shape[0],):
            raise ValueError(
                f"atoms must be (n, k) and types (n,), got {tuple(self.atoms.shape)} "
                f"and {tuple(self.types.shape)}"
            )
        n_types = {int(v.shape[0]) for v in self.values.values()}
        if len(n_types) > 1:
            raise ValueError(
                f"parameter tables disagree on the number of types: {n_types}"
            )
        if self.types.numel() and n_types and int(self.types.max()) >= n_types.pop():
            raise ValueError("a type index points past the end of the parameter table")

    def __len__(self) -> int:
        return int(self.atoms.shape[0])

    @classmethod
    def per_interaction(
        cls, atoms: Tensor | Sequence[Sequence[int]], **values: Tensor | Sequence[float]
    ) -> ParameterTable:
        """A table where every interaction is its own type."""
        idx = torch.as_tensor(atoms, dtype=torch.int64)
        if idx.dim() == 1:
            idx = idx.reshape(0, 0) if idx.numel() == 0 else idx.unsqueeze(0)
        vals = {k: torch.as_tensor(v, dtype=torch.float64) for k, v in values.items()}
        return cls(atoms=idx, types=torch.arange(len(idx)), values=vals)

    def parameters_per_interaction(self) -> dict[str, Tensor]:
        """Each parameter gathered for every interaction: name → (n, ...)."""
        return {k: v[self.types] for k, v in self.values.items()}

    def subset(self, keep: Tensor) -> ParameterTable:
        """The interactions where ``keep`` (n,) is true, sharing the same type table."""
        return ParameterTable(
            self.atoms[keep], self.types[keep], self.values, self.type_names
        )


@dataclass(frozen=True)
class NonbondedParameters:
    """Lennard-Jones types and optional pair tables.

    The LJ energy of a pair of types (a, b) is c12/r¹² − c6/r⁶. By default c12 and c6
    follow the Lorentz-Berthelot rules from per-type σ and ε: σ_ab = (σ_a + σ_b)/2,
    ε_ab = √(ε_a ε_b), c12 = 4 ε σ¹², c6 = 4 ε σ⁶. Where ``pair_mask[a, b]`` is true,
    ``pair_c12``/``pair_c6`` give the pair's coefficients instead (CHARMM NBFIX, AMBER
    modified pair tables such as ff14ipq).

    Attributes:
        lj_types: (N,) int64 LJ type of each atom.
        sigma: (T,) Å.
        epsilon: (T,) kcal/mol.
        type_names: name of each LJ type.
        pair_mask: (T, T) bool, symmetric, or None when no pair is overridden.
        pair_c12: (T, T) kcal/mol·Å¹², used where ``pair_mask``.
        pair_c6: (T, T) kcal/mol·Å⁶, used where ``pair_mask``.
    """

    lj_types: Tensor
    sigma: Tensor
    epsilon: Tensor
    type_names: tuple[str, ...] = ()
    pair_mask: Tensor | None = None
    pair_c12: Tensor | None = None
    pair_c6: Tensor | None = None

    @property
    def n_types(self) -> int:
        return int(self.sigma.shape[0])

    def lj_tables(
        self, sigma: Tensor | None = None, epsilon: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """(c12, c6), each (T, T), from σ, ε and the pair overrides.

        σ and ε are the arguments given, or the stored ones where None.
        """
        sigma = self.sigma if sigma is None else sigma
        epsilon = self.epsilon if epsilon is None else epsilon
        s = 0.5 * (sigma[:, None] + sigma[None, :])
        e = torch.sqrt(epsilon[:, None] * epsilon[None, :])
        s6 = s**6
        c6 = 4.0 * e * s6
        c12 = c6 * s6
        if self.pair_mask is not None:
            assert self.pair_c12 is not None and self.pair_c6 is not None
            mask = self.pair_mask.to(c12.device)
            c12 = torch.where(mask, self.pair_c12.to(c12), c12)
            c6 = torch.where(mask, self.pair_c6.to(c6), c6)
        return c12, c6


@dataclass(frozen=True)
class Constraints:
    """Holonomic distance constraints.

    Attributes:
        pairs: (C, 2) int64 constrained atom pairs (not in rigid waters).
        distances: (C,) Å.
        waters: (W, 3) int64 (O, H1, H2) of rigid waters solved analytically (SETTLE).
        water_distances: (d_OH, d_HH) in Å for ``waters``.
    """

    pairs: Tensor
    distances: Tensor
    waters: Tensor = field(default_factory=lambda: torch.zeros(0, 3, dtype=torch.int64))
    water_distances: tuple[float, float] = (0.0, 0.0)

    @property
    def count(self) -> int:
        """Number of independent constraints (3 per rigid water)."""
        return int(self.pairs.shape[0]) + 3 * int(self.waters.shape[0])


@dataclass(frozen=True)
class VirtualSites:
    """Massless atoms whose positions are functions of other atoms' (OpenMM's virtual
    sites: the extra points of 4- and 5-site waters, lone pairs).

    Three kinds, as OpenMM defines them (x: positions, Å; p_k: the parents):

    - ``linear`` (``TwoParticleAverageSite``, ``ThreeParticleAverageSite``; GROMACS
      ``virtual_sites2``/``virtual_sites3`` funct 1): x = Σ_k w_k x_{p_k}.
    - ``out_of_plane`` (``OutOfPlaneSite``; GROMACS ``virtual_sites3`` funct 4): with
      r12 = x_{p2} − x_{p1}, r13 = x_{p3} − x_{p1},
      x = x_{p1} + w12 r12 + w13 r13 + wc (r12 × r13); wc in 1/Å.
    - ``local`` (``LocalCoordinatesSite``): origin o = Σ wo_k x_{p_k}, directions
      dx = Σ wx_k x_{p_k}, dy = Σ wy_k x_{p_k}; e_x = dx/|dx|,
      e_z = (dx × dy)/|dx × dy|, e_y = e_z × e_x; x = o + l_x e_x + l_y e_y + l_z e_z,
      l in Å.

    Rows of one kind share a parent count P; a site with fewer parents is padded with
    its first parent and weight 0. A site is never the parent of another site, and
    sites are massless. :func:`~torchmd_core.virtual_sites.place_virtual_sites` builds
    their positions; :class:`~torchmd_core.potential.PotentialSum` does it before every
    evaluation and hands their forces on to the parents.

    Attributes:
        linear_sites: (A,) int64 site atoms.
        linear_parents: (A, P) int64.
        linear_weights: (A, P) w_k.
        out_of_plane_sites: (O,) int64.
        out_of_plane_parents: (O, 3) int64 (p1, p2, p3).
        out_of_plane_weights: (O, 3) (w12, w13, wc).
        local_sites: (L,) int64.
        local_parents: (L, P) int64.
        local_weights: (L, 3, P) origin, x and y weights (wo, wx, wy).
        local_positions: (L, 3) l, Å.
    """

    linear_sites: Tensor = field(default_factory=lambda: _empty_index(0))
    linear_parents: Tensor = field(default_factory=lambda: _empty_index(0, 2))
    linear_weights: Tensor = field(
        default_factory=lambda: torch.zeros(0, 2, dtype=torch.float64)
    )
    out_of_plane_sites: Tensor = field(default_factory=lambda: _empty_index(0))
    out_of_plane_parents: Tensor = field(default_factory=lambda: _empty_index(0, 3))
    out_of_plane_weights: Tensor = field(
        default_factory=lambda: torch.zeros(0, 3, dtype=torch.float64)
    )
    local_sites: Tensor = field(default_factory=lambda: _empty_index(0))
    local_parents: Tensor = field(default_factory=lambda: _empty_index(0, 3))
    local_weights: Tensor = field(
        default_factory=lambda: torch.zeros(0, 3, 3, dtype=torch.float64)
    )
    local_positions: Tensor = field(
        default_factory=lambda: torch.zeros(0, 3, dtype=torch.float64)
    )

    def __post_init__(self) -> None:
        shapes = {
            "linear": (self.linear_sites, self.linear_parents, self.linear_weights),
            "out_of_plane": (
                self.out_of_plane_sites,
                self.out_of_plane_parents,
                self.out_of_plane_weights,
            ),
            "local": (self.local_sites, self.local_parents, self.local_weights),
        }
        for name, (sites, parents, weights) in shapes.items():
            n, p = int(sites.shape[0]), int(parents.shape[-1])
            want = {"linear": (n, p), "out_of_plane": (n, 3), "local": (n, 3, p)}[name]
            if sites.dim() != 1 or parents.dim() != 2 or parents.shape[0] != n:
                raise ValueError(
                    f"VirtualSites.{name}: sites must be (n,) and parents (n, P), got "
                    f"{tuple(sites.shape)} and {tuple(parents.shape)}"
                )
            if tuple(weights.shape) != want:
                raise ValueError(
                    f"VirtualSites.{name}: weights must be {want}, "
                    f"got {tuple(weights.shape)}"
                )
        if self.out_of_plane_parents.shape[1] != 3:
            raise ValueError("VirtualSites.out_of_plane_parents must be (O, 3)")
        if self.local_positions.shape != (int(self.local_sites.shape[0]), 3):
            raise ValueError("VirtualSites.local_positions must be (L, 3)")
        sites = self.sites
        if int(torch.unique(sites).numel()) != int(sites.numel()):
            raise ValueError("VirtualSites: an atom is listed as a virtual site twice")

    @classmethod
    def build(
        cls,
        linear: Sequence[tuple[int, Sequence[int], Sequence[float]]] = (),
        out_of_plane: Sequence[tuple[int, Sequence[int], Sequence[float]]] = (),
        local: Sequence[
            tuple[int, Sequence[int], Sequence[Sequence[float]], Sequence[float]]
        ] = (),
    ) -> VirtualSites:
        """From per-site entries (units as in the class docstring):

        - ``linear``: (site, parents, weights);
        - ``out_of_plane``: (site, (p1, p2, p3), (w12, w13, wc));
        - ``local``: (site, parents, (origin, x and y weights), (l_x, l_y, l_z)).
        """
        lin_p, lin_w = _padded([(p, [w]) for _, p, w in linear], 2, 1)
        loc_p, loc_w = _padded([(p, list(w)) for _, p, w, _ in local], 3, 3)
        return cls(
            linear_sites=_index([s for s, *_ in linear]),
            linear_parents=lin_p,
            linear_weights=lin_w[:, 0],
            out_of_plane_sites=_index([s for s, *_ in out_of_plane]),
            out_of_plane_parents=_index([list(p) for _, p, _ in out_of_plane]).reshape(
                -1, 3
            ),
            out_of_plane_weights=torch.as_tensor(
                [list(w) for _, _, w in out_of_plane], dtype=torch.float64
            ).reshape(-1, 3),
            local_sites=_index([s for s, *_ in local]),
            local_parents=loc_p,
            local_weights=loc_w,
            local_positions=torch.as_tensor(
                [list(x) for *_, x in local], dtype=torch.float64
            ).reshape(-1, 3),
        )

    @cached_property
    def sites(self) -> Tensor:
        """(S,) int64 every site atom (linear, out-of-plane, local)."""
        return torch.cat([self.linear_sites, self.out_of_plane_sites, self.local_sites])

    @property
    def parents(self) -> Tensor:
        """(K,) int64 every atom some site is built from (with repeats)."""
        return torch.cat(
            [
                self.linear_parents.flatten(),
                self.out_of_plane_parents.flatten(),
                self.local_parents.flatten(),
            ]
        )

    def __len__(self) -> int:
        return (
            len(self.linear_sites)
            + len(self.out_of_plane_sites)
            + len(self.local_sites)
        )

    def first_parents(self) -> Tensor:
        """(S, 2) int64 (site, its first parent), in the order of :attr:`sites`."""
        first = torch.cat(
            [
                self.linear_parents[:, :1],
                self.out_of_plane_parents[:, :1],
                self.local_parents[:, :1],
            ]
        ).reshape(-1)
        return torch.stack([self.sites, first], dim=1)

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> VirtualSites:
        """A copy with indices on ``device`` and weights in ``dtype``."""
        moved = {}
        for f in dataclasses.fields(self):
            t: Tensor = getattr(self, f.name)
            moved[f.name] = t.to(
                device=device, dtype=None if not t.is_floating_point() else dtype
            )
        return VirtualSites(**moved)

    def check(self, masses: Tensor) -> None:
        """Raise TopologyError unless every index is an atom, sites are massless and no
        site is built from another site."""
        n = int(masses.shape[0])
        every = torch.cat([self.sites, self.parents])
        if every.numel() and (int(every.min()) < 0 or int(every.max()) >= n):
            raise TopologyError(f"a virtual site refers to atoms outside 0..{n - 1}")
        heavy = self.sites[masses[self.sites] != 0].tolist()
        if heavy:
            raise TopologyError(
                f"virtual site atom {heavy[0]} has mass {float(masses[heavy[0]])} amu; "
                "virtual sites must be massless (OpenMM requires it too)"
            )
        nested = sorted(set(self.sites.tolist()) & set(self.parents.tolist()))
        if nested:
            raise TopologyError(
                f"virtual site atom {nested[0]} is itself the parent of another "
                "virtual site; sites built from sites are not supported"
            )


def _empty_index(*shape: int) -> Tensor:
    return torch.zeros(shape, dtype=torch.int64)


def _index(values: Sequence[Any]) -> Tensor:
    return (
        torch.as_tensor(values, dtype=torch.int64) if len(values) else _empty_index(0)
    )


def _padded(
    rows: Sequence[tuple[Sequence[int], Sequence[Sequence[float]]]],
    minimum: int,
    k: int,
) -> tuple[Tensor, Tensor]:
    """(n, P) parents and (n, k, P) weights; short rows are padded with their first
    parent and weight 0."""
    width = max([minimum, *(len(p) for p, _ in rows)])
    parents = torch.zeros(len(rows), width, dtype=torch.int64)
    weights = torch.zeros(len(rows), k, width, dtype=torch.float64)
    for i, (p, w) in enumerate(rows):
        if len(w) != k or any(len(ws) != len(p) for ws in w):
            raise ValueError(f"virtual site {i}: {len(p)} parents but weights {w}")
        parents[i] = p[0]
        parents[i, : len(p)] = torch.as_tensor(list(p))
        weights[i, :, : len(p)] = torch.as_tensor(
            [list(ws) for ws in w], dtype=torch.float64
        )
    return parents, weights


@dataclass(frozen=True)
class Residue:
    name: str
    number: int
    chain: str = "A"
    segment: str = ""


@dataclass(eq=False)
class System:
    """A parameterised molecular system of ``N`` atoms.

    Attributes:
        masses: (N,) amu.
        charges: (N,) e.
        atomic_numbers: (N,) int64 (0 for virtual sites / unknown).
        atom_names: name of each atom ("CA").
        atom_types: force-field type of each atom ("CT").
        residue_index: (N,) int64 index into ``residues``.
        residues: the residues.
        bonds: (B, 2) int64, the bond graph (all chemical bonds, also in rigid waters).
        exclusions: (E, 2) int64, i < j, pairs left out of the normal non-bonded sum.
        terms: bonded parameter tables by term name (see module docstring).
        nonbonded: LJ parameters, or None for a system without LJ.
        constraints: holonomic constraints, or None.
        box: (3, 3) Å default box from the topology file, or None.
        metadata: free-form provenance (source files, force field names).
        virtual_sites: massless atoms placed from other atoms (extra points of 4- and
            5-site waters), or None.
    """

    masses: Tensor
    charges: Tensor
    atomic_numbers: Tensor
    atom_names: tuple[str, ...]
    atom_types: tuple[str, ...]
    residue_index: Tensor
    residues: tuple[Residue, ...]
    bonds: Tensor
    exclusions: Tensor
    terms: dict[str, ParameterTable] = field(default_factory=dict)
    nonbonded: NonbondedParameters | None = None
    constraints: Constraints | None = None
    box: Tensor | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    virtual_sites: VirtualSites | None = None

    def __post_init__(self) -> None:
        n = self.n_atoms
        for name in ("charges", "atomic_numbers", "residue_index"):
            if getattr(self, name).shape != (n,):
                raise TopologyError(
                    f"System.{name} has shape {tuple(getattr(self, name).shape)}, "
                    f"expected ({n},) to match the {n} masses"
                )
        for name in ("atom_names", "atom_types"):
            if len(getattr(self, name)) != n:
                raise TopologyError(
                    f"System.{name} has {len(getattr(self, name))} entries, "
                    f"expected {n}"
                )
        for name, table in self.terms.items():
            want = _TERM_ATOMS.get(name)
            if want is not None and len(table) and table.atoms.shape[1] != want:
                raise TopologyError(
                    f"term '{name}' needs {want} atoms per interaction, "
                    f"got {table.atoms.shape[1]}"
                )
            if len(table) and (
                int(table.atoms.max()) >= n or int(table.atoms.min()) < 0
            ):
                raise TopologyError(f"term '{name}' refers to atoms outside 0..{n - 1}")
        if self.virtual_sites is not None:
            self.virtual_sites.check(self.masses)

    # -- sizes and derived data --------------------------------------------------------
    @property
    def n_atoms(self) -> int:
        return int(self.masses.shape[0])

    @cached_property
    def molecules(self) -> Tensor:
        """(N,) int64 molecule index of each atom: connected components of ``bonds``
        (a virtual site belongs to the molecule of its first parent)."""
        edges = self.bonds.reshape(-1, 2)
        if self.virtual_sites is not None:
            edges = torch.cat([edges, self.virtual_sites.first_parents()])
        return connected_components(self.n_atoms, edges)

    @property
    def n_molecules(self) -> int:
        return int(self.molecules.max()) + 1 if self.n_atoms else 0

    def degrees_of_freedom(self, remove_com_motion: bool = False) -> int:
        """3N minus constraints, minus 3 when centre-of-mass motion is removed.

        Massless atoms (virtual sites) carry no degrees of freedom.
        """
        dof = 3 * int((self.masses > 0).sum())
        if self.constraints is not None:
            dof -= self.constraints.count
        if remove_com_motion:
            dof -= 3
        return dof

    def total_mass(self) -> float:
        return float(self.masses.sum())

    # -- selections --------------------------------------------------------------------
    @cached_property
    def topology(self) -> mdtraj.Topology:
        """An mdtraj topology of this system (for selections and trajectory writers)."""
        return to_mdtraj_topology(self)

    def select(self, selection: str | Sequence[int] | Tensor) -> Tensor:
        """Atom indices from a list of indices or an mdtraj selection string.

        Raises:
            TopologyError: the selection is invalid, empty or out of range.
        """
        if isinstance(selection, str):
            try:
                idx = self.topology.select(selection)
            except (
                Exception
            ) as err:  # mdtraj raises ValueError and its own parse errors
                raise TopologyError(
                    f"invalid atom selection {selection!r}: {err}. See the mdtraj "
                    "selection syntax (e.g. 'resname ALA and name CA', 'index 0 to 9')."
                ) from None
            result = torch.as_tensor(np.asarray(idx, dtype=np.int64))
        else:
            result = torch.as_tensor(selection, dtype=torch.int64).reshape(-1)
        if result.numel() == 0:
            raise TopologyError(f"atom selection {selection!r} matches no atom")
        if int(result.min()) < 0 or int(result.max()) >= self.n_atoms:
            raise TopologyError(
                f"atom selection refers to atoms outside 0..{self.n_atoms - 1}"
            )
        return result

    # -- ML/MM -------------------------------------------------------------------------
    def without_interactions_within(
        self, atoms: str | Sequence[int] | Tensor
    ) -> System:
        """A copy without interactions wholly inside a region (mechanical embedding).

        Use it for the classical potentials when another potential (a neural network,
        say) describes the region on its own, as openmm-ml's mixed systems do: every
        bonded interaction (``terms``: bonds, angles, torsions, CMAP, 1-4 pairs, ...)
        whose atoms all lie in the region is dropped, and every pair of region atoms
        becomes an exclusion of the normal non-bonded sum. Interactions between the
        region and the rest stay. Masses, charges, LJ types, bonds graph and
        constraints are unchanged.

        Args:
            atoms: the region, as for :meth:`select` (indices or an mdtraj selection).

        Returns:
            The reduced copy; ``metadata["replaced_regions"]`` lists the regions removed
            so far (each a tuple of atom indices).
        """
        idx = torch.unique(self.select(atoms))  # sorted, so combinations give i < j
        inside = torch.zeros(self.n_atoms, dtype=torch.bool)
        inside[idx] = True
        terms = {
            name: table.subset(~inside[table.atoms].all(dim=1)) if len(table) else table
            for name, table in self.terms.items()
        }
        region_pairs = (
            torch.combinations(idx, 2) if idx.numel() > 1 else idx.new_zeros(0, 2)
        )
        exclusions = torch.cat(
            [self.exclusions.reshape(-1, 2).to(torch.int64), region_pairs]
        )
        exclusions = torch.unique(torch.sort(exclusions, dim=1).values, dim=0)
        regions = (*self.metadata.get("replaced_regions", ()), tuple(idx.tolist()))
        return dataclasses.replace(
            self,
            terms=terms,
            exclusions=exclusions,
            metadata={**self.metadata, "replaced_regions": regions},
        )

    def summary(self) -> str:
        """One line describing the system."""
        terms = ", ".join(f"{k} {len(v)}" for k, v in self.terms.items() if len(v))
        return (
            f"{self.n_atoms} atoms, {len(self.residues)} residues, "
            f"{self.n_molecules} molecules; {terms or 'no bonded terms'}"
        )


def connected_components(n_atoms: int, bonds: Tensor) -> Tensor:
    """(N,) component index of each node of an undirected graph.

    Components are numbered in the order of their first atom.
    """
    parent = np.arange(n_atoms)

    def find(a: int) -> int:
        root = a
        while parent[root] != root:
            root = parent[root]
        while parent[a] != root:
            parent[a], a = root, parent[a]
        return root

    for i, j in bonds.tolist():
        ri, rj = find(i), find(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
    roots = np.array([find(a) for a in range(n_atoms)], dtype=np.int64)
    _, labels = np.unique(roots, return_inverse=True)
    return torch.as_tensor(labels, dtype=torch.int64)


def to_mdtraj_topology(system: System) -> mdtraj.Topology:
    """Build an mdtraj topology (chains, residues, atoms with elements, bonds)."""
    import mdtraj
    from mdtraj.core import element as md_element

    top = mdtraj.Topology()
    chains: dict[str, Any] = {}
    md_residues: list[Any] = []
    for res in system.residues:
        chain = chains.get(res.chain)
        if chain is None:
            chain = chains[res.chain] = top.add_chain()
        md_residues.append(
            top.add_residue(res.name, chain, resSeq=res.number, segment_id=res.segment)
        )
    for i in range(system.n_atoms):
        z = int(system.atomic_numbers[i])
        try:
            elem = (
                md_element.Element.getByAtomicNumber(z) if z > 0 else md_element.virtual
            )
        except KeyError:
            elem = md_element.virtual
        top.add_atom(
            system.atom_names[i], elem, md_residues[int(system.residue_index[i])]
        )
    atoms = list(top.atoms)
    for i, j in system.bonds.tolist():
        top.add_bond(atoms[i], atoms[j])
    return top
