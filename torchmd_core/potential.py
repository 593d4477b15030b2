"""The ``Potential`` role: an energy term, and sums of them.

A potential is a :class:`torch.nn.Module` with one abstract method,
:meth:`Potential.energy`, returning (R,) energies in kcal/mol. Forces come from autograd
unless a subclass overrides :meth:`Potential.energy_and_forces` with an analytic form. A
potential that needs pairs of atoms sets :attr:`Potential.cutoff`; the simulation then
keeps one shared :class:`~torchmd_core.neighbors.NeighborList` for all of them and hands
the pairs in through ``state.neighbors``.

Gradients follow PyTorch's grad mode: with grad mode on (the default) energies and
forces keep their autograd graph to positions and to every parameter, so losses on
trajectories can be backpropagated; under ``torch.no_grad()`` (plain MD), forces are
computed and detached, which is faster and keeps memory flat.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from typing import ClassVar, cast

import torch
from torch import Tensor, nn

from torchmd_core.component import Component, ComponentConfig
from torchmd_core.neighbors import NeighborList, Neighbors, build_pairs
from torchmd_core.state import State
from torchmd_core.system import System, VirtualSites
from torchmd_core.virtual_sites import distribute_site_forces, place_virtual_sites

__all__ = ["Potential", "PotentialConfig", "PotentialSum"]


class PotentialConfig(ComponentConfig):
    """Base of potential configurations."""


class Potential(Component, nn.Module, ABC):
    """An energy term of R replicas: ``energy(state) -> (R,)`` in kcal/mol.

    Subclasses set ``Config`` (with its ``kind``), build buffers from the
    :class:`~torchmd_core.system.System` in ``__init__``, and implement :meth:`energy`.

    Attributes:
        cutoff: the pair distance (Å) this term needs listed, or None if it needs no
            neighbour list. Set it in ``__init__``.
    """

    Config: ClassVar[type[ComponentConfig]] = PotentialConfig
    cutoff: float | None = None

    def __init__(
        self, config: ComponentConfig | None = None, system: System | None = None
    ):
        nn.Module.__init__(self)
        self.config = config

    # -- the one thing to implement ----------------------------------------------------
    @abstractmethod
    def energy(self, state: State) -> Tensor:
        """(R,) potential energy of each replica, kcal/mol."""

    # -- ML/MM -------------------------------------------------------------------------
    @classmethod
    def replaced_atoms(cls, config: ComponentConfig, system: System) -> Tensor | None:
        """The region whose internal interactions this potential replaces, or None.

        A potential that describes a group of atoms on its own (a neural network on a
        ligand, say) returns the atom indices here.
        :func:`~torchmd_core.builder.build_potentials` then builds every potential that
        returns None from ``system.without_interactions_within(region)`` (mechanical
        embedding): the classical terms wholly inside the region are dropped, those
        between the region and the rest stay. Called before the potential is
        constructed; may raise :class:`~torchmd_core.errors.TopologyError` for a bad
        selection.
        """
        return None

    # -- derived quantities (override for speed) ---------------------------------------
    @property
    def name(self) -> str:
        """The name of this term in reports: the config's kind, else the class name."""
        if self.config is not None:
            return str(self.config.kind)
        return type(self).__name__.lower()

    @property
    def term_names(self) -> tuple[str, ...]:
        """The names :meth:`energy_terms` returns, known before any evaluation."""
        return (self.name,)

    def energy_terms(self, state: State) -> dict[str, Tensor]:
        """Energy split into named terms, each (R,); they sum to :meth:`energy`."""
        return {self.name: self.energy(state)}

    def energy_and_forces(self, state: State) -> tuple[Tensor, Tensor]:
        """(R,) energies and (R, N, 3) forces −∂E/∂x, kcal/mol/Å.

        Default: autograd through :meth:`energy`. The graph is kept (``create_graph``)
        when grad mode is on and something upstream needs gradients: positions, box or
        a parameter of this module that requires grad.
        """
        keep_graph = torch.is_grad_enabled() and self._needs_graph(state)
        positions = state.positions
        with torch.enable_grad():
            if not positions.requires_grad:
                positions = positions.detach().requires_grad_(True)
                state = state.replace(positions=positions, neighbors=state.neighbors)
            energy = self.energy(state)
            if not energy.requires_grad:  # constant terms (e.g. dispersion correction)
                forces = torch.zeros_like(positions)
            else:
                (grad,) = torch.autograd.grad(
                    energy.sum(), positions, create_graph=keep_graph, allow_unused=True
                )
                forces = torch.zeros_like(positions) if grad is None else -grad
        if not keep_graph:
            return energy.detach(), forces.detach()
        return energy, forces

    def forces(self, state: State) -> Tensor:
        """(R, N, 3) forces, kcal/mol/Å."""
        return self.energy_and_forces(state)[1]

    def forward(self, state: State) -> Tensor:
        return self.energy(state)

    # -- force-field parameters --------------------------------------------------------
    def parameter_sources(self) -> dict[str, str]:
        """The force-field parameters of the :class:`System` this term holds as tensors.

        Maps the dotted name of each buffer (or parameter) of this module, as
        ``named_buffers()`` gives it (``"tables.bonds.k"``), to the System parameter it
        was copied from, named as in :mod:`torchmd_core.parameters`: ``"charges"``,
        ``"nonbonded.sigma"``, ``"nonbonded.epsilon"``, ``"nonbonded.pair_c12"``,
        ``"nonbonded.pair_c6"``, or ``"<term>.<value>"`` for a table of
        ``System.terms`` (``"bonds.k"``, ``"cmap.grid"``). Such tensors keep the
        System's per-type shape and are read at every evaluation, so that
        :func:`~torchmd_core.parameters.trainable` can turn them into parameters and
        :func:`~torchmd_core.parameters.fitted_system` can export them. Default: none.
        """
        return {}

    # -- neighbours --------------------------------------------------------------------
    def neighbors(self, state: State) -> Neighbors:
        """Pairs within :attr:`cutoff`: the shared list when attached, else built now.

        Excluded pairs (``System.exclusions``) are never in the list.
        """
        if self.cutoff is None:
            raise RuntimeError(
                f"{type(self).__name__} declared no cutoff but asked for pairs"
            )
        nb = state.neighbors
        if (
            nb is not None
            and nb.complete
            and nb.radius >= self.cutoff
            and nb.n_atoms == state.n_atoms
        ):
            return nb
        return build_pairs(
            state.positions.detach(),
            _detached(state.box),
            self.cutoff,
            self.pair_exclusions(),
        )

    def pair_exclusions(self) -> Tensor | None:
        """(E, 2) pairs this term never wants listed (default: none)."""
        return None

    def reads_pairs(self, state: State) -> bool:
        """Whether evaluating ``state`` reads ``state.neighbors.pairs`` (default: when
        :attr:`cutoff` is set). A term with its own pair search (a native kernel)
        returns False, so the shared list only tracks where it would rebuild."""
        return self.cutoff is not None

    # -- composition -------------------------------------------------------------------
    def __add__(self, other: Potential) -> PotentialSum:
        left = list(self.potentials) if isinstance(self, PotentialSum) else [self]
        right = list(other.potentials) if isinstance(other, PotentialSum) else [other]
        return PotentialSum([*left, *right])

    def _needs_graph(self, state: State) -> bool:
        if state.positions.requires_grad or (
            state.box is not None and state.box.requires_grad
        ):
            return True
        return any(t.requires_grad for t in self.parameters()) or any(
            t.requires_grad for t in self.buffers()
        )


class PotentialSum(Potential):
    """The sum of several potentials, sharing one neighbour list.

    When the system has virtual sites (:class:`~torchmd_core.system.VirtualSites`),
    every evaluation first rebuilds their positions from their parents, so the terms
    see them in place whatever the state holds, and each site's force is handed on to
    its parents (autograd through :meth:`energy`, the chain rule in
    :meth:`energy_and_forces`): energies are those of the placed positions and forces
    are their exact negative gradient with respect to the other atoms.

    Args:
        potentials: the terms.
        system: used for the pair exclusions of the shared list and the virtual sites.
        skin: Verlet skin of the shared list, Å.
    """

    potentials: nn.ModuleList

    def __init__(
        self,
        potentials: Sequence[Potential],
        system: System | None = None,
        skin: float = 1.0,
    ) -> None:
        super().__init__(None, system)
        flat: list[Potential] = []
        for p in potentials:
            flat.extend(p._terms if isinstance(p, PotentialSum) else [p])
        self.potentials = nn.ModuleList(flat)
        cutoffs = [p.cutoff for p in flat if p.cutoff is not None]
        self.cutoff = max(cutoffs) if cutoffs else None
        exclusions = _merge_exclusions(
            [system.exclusions if system is not None else None]
            + [p.pair_exclusions() for p in flat if p.cutoff is not None]
        )
        self._exclusions = exclusions
        #: The system's virtual sites, or None.
        self.virtual_sites: VirtualSites | None = (
            None if system is None or not system.virtual_sites else system.virtual_sites
        )
        self._sites_on: VirtualSites | None = None  # on the device/dtype last used
        self.neighbor_list = (
            NeighborList(self.cutoff, skin=skin, exclusions=exclusions)
            if self.cutoff is not None
            else None
        )

    @property
    def _terms(self) -> Iterator[Potential]:
        """The terms, typed: iterating an ``nn.ModuleList`` yields plain Modules."""
        return cast(Iterator[Potential], iter(self.potentials))

    @property
    def name(self) -> str:
        return "total"

    @property
    def term_names(self) -> tuple[str, ...]:
        names: list[str] = []
        for p in self._terms:
            names.extend(p.term_names)
        return tuple(_unique_names(names))

    def pair_exclusions(self) -> Tensor | None:
        return self._exclusions

    def prepare(self, state: State) -> State:
        """``state`` with the shared neighbour list attached (rebuilt if needed)."""
        if self.neighbor_list is None:
            return state
        pairs = any(p.reads_pairs(state) for p in self._terms)
        nb = self.neighbor_list.update(
            state.positions, _detached(state.box), pairs=pairs
        )
        return state.replace(neighbors=nb)

    def place_sites(self, state: State) -> State:
        """``state`` with its virtual sites rebuilt from their parents (itself when the
        system has none)."""
        sites = self._sites_like(state)
        if sites is None:
            return state
        return state.replace(
            positions=place_virtual_sites(state.positions, sites, state.box)
        )

    def _sites_like(self, state: State) -> VirtualSites | None:
        if self.virtual_sites is None:
            return None
        cached = self._sites_on
        if (
            cached is None
            or cached.linear_weights.device != state.device
            or cached.linear_weights.dtype != state.dtype
        ):
            cached = self._sites_on = self.virtual_sites.to(state.device, state.dtype)
        return cached

    def energy(self, state: State) -> Tensor:
        state = self.prepare(self.place_sites(state))
        return _stack_sum([p.energy(state) for p in self._terms], state)

    def energy_terms(
        self, state: State, rebuild_sites: bool = True
    ) -> dict[str, Tensor]:
        """Energy split into named terms, each (R,).

        Args:
            state: the positions.
            rebuild_sites: rebuild the virtual sites from their parents first (the
                default); False evaluates the positions as given, as OpenMM's
                ``Context.getState`` does after ``setPositions``.
        """
        state = self.prepare(self.place_sites(state) if rebuild_sites else state)
        items: list[tuple[str, Tensor]] = []
        for p in self._terms:
            items.extend(p.energy_terms(state).items())
        names = _unique_names([k for k, _ in items])
        return {name: value for name, (_, value) in zip(names, items, strict=True)}

    def energy_and_forces(
        self, state: State, site_forces: bool = False, rebuild_sites: bool = True
    ) -> tuple[Tensor, Tensor]:
        """(R,) energies and (R, N, 3) forces.

        Args:
            state: the positions.
            site_forces: report on each virtual site the force that acted on it before
                it was handed on (as OpenMM's ``State.getForces`` does) instead of 0.
            rebuild_sites: rebuild the virtual sites from their parents first (the
                default); False evaluates the positions as given, as OpenMM's
                ``Context.getState`` does after ``setPositions`` (the site forces are
                still handed on to the parents).
        """
        state = self.prepare(self.place_sites(state) if rebuild_sites else state)
        energy = state.positions.new_zeros(state.n_replicas)
        forces = torch.zeros_like(state.positions)
        for p in self._terms:
            e, f = p.energy_and_forces(state)
            energy = energy + e
            forces = forces + f
        sites = self._sites_like(state)
        if sites is not None:
            forces = distribute_site_forces(
                forces, state.positions, sites, state.box, keep_site_forces=site_forces
            )
        return energy, forces


def _detached(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.detach()


def _stack_sum(values: Iterable[Tensor], state: State) -> Tensor:
    total = state.positions.new_zeros(state.n_replicas)
    for v in values:
        total = total + v
    return total


def _unique_names(names: list[str]) -> list[str]:
    """Disambiguate repeated term names: 'bonds', 'bonds_2', ..."""
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n}_{seen[n]}")
    return out


def _merge_exclusions(parts: list[Tensor | None]) -> Tensor | None:
    present = [p for p in parts if p is not None and p.numel()]
    if not present:
        return None
    return torch.cat([p.to(torch.int64).reshape(-1, 2) for p in present])
