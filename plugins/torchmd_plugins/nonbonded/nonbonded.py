"""The ``nonbonded`` potential: Lennard-Jones with pair tables plus electrostatics."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, ValidationInfo, field_validator
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from torchmd_core import Potential, PotentialConfig, State, System
from torchmd_core.units import COULOMB_KCAL_MOL_A
from torchmd_plugins.nonbonded import kernels, native
from torchmd_plugins.nonbonded.cluster import ClusterList, cluster_energies_and_forces
from torchmd_plugins.nonbonded.kernels import PairSettings

__all__ = ["Nonbonded"]

#: Pair slots (per replica) evaluated at once without a cutoff: bounds the memory.
_BLOCK_PAIRS = 1 << 20


class Nonbonded(Potential):
    """Lennard-Jones (with NBFIX / pair tables) + Coulomb or reaction field, as OpenMM.

    E = Σ_{i<j, not excluded} [S(r) (c12_ab/r¹² − c6_ab/r⁶) + E_el(r)] (+ E_disp), where
    a, b are the atoms' LJ types. The methods are OpenMM NonbondedForce's:

    - no ``cutoff``: all pairs, non-periodic (a box is ignored), E_el = C qᵢqⱼ/r
      (``NoCutoff``);
    - ``cutoff`` r_c: pairs closer than r_c, E_el = C qᵢqⱼ (1/r + k_rf r² − c_rf),
      with the minimum image when the state has a box (``CutoffPeriodic``) and without
      otherwise (``CutoffNonPeriodic``); see :mod:`~torchmd_plugins.nonbonded.kernels`;
    - ``switch_distance``: LJ times OpenMM's switching function S(r) from there to r_c;
    - ``dispersion_correction`` (periodic with a cutoff only): E_disp = K / V, OpenMM's
      long-range correction including the switched region and pair tables.

    Pairs in ``System.exclusions`` (1-2, 1-3 and the 1-4 pairs, which the ``amber``
    potential computes as lj14/coulomb14) contribute nothing: OpenMM applies no
    reaction-field term to excluded pairs or exceptions.

    Reads from :class:`~torchmd_core.system.System`: ``charges`` (e), ``nonbonded``
    (``lj_types``; per-type ``sigma`` Å and ``epsilon`` kcal/mol, Lorentz-Berthelot; the
    ``pair_mask``/``pair_c12``/``pair_c6`` overrides) and ``exclusions``. These are
    buffers (``charges``, ``sigma``, ``epsilon``, ``pair_c12``, ``pair_c6``); the (T, T)
    c12/c6 tables are rebuilt from them at every evaluation, so they can be made
    trainable.

    Terms: ``lj``, ``coulomb`` (unless ``electrostatics: none``) and
    ``dispersion_correction`` (when configured: a cutoff and ``dispersion_correction:
    true``; zero for states without a box, as OpenMM's ``CutoffNonPeriodic``).

    Plain MD on the CPU runs a native cluster-pair kernel (``implementation``; see
    :mod:`~torchmd_plugins.nonbonded.native` and
    :mod:`~torchmd_plugins.nonbonded.cluster`) with its own list of atom clusters;
    anything needing gradients runs the PyTorch kernels. Both give the same energies
    and forces to rounding.

    References: Tironi et al., J. Chem. Phys. 102, 5451 (1995) (reaction field); Shirts
    et al., J. Phys. Chem. B 111, 13052 (2007) (dispersion correction); OpenMM user
    guide.
    """

    charges: Tensor  # (N,) e
    lj_types: Tensor  # (N,) int64
    sigma: Tensor  # (T,) Å
    epsilon: Tensor  # (T,) kcal/mol
    pair_mask: Tensor  # (T, T) bool
    pair_c12: Tensor  # (T, T) kcal/mol·Å¹²
    pair_c6: Tensor  # (T, T) kcal/mol·Å⁶
    type_counts: Tensor  # (T,)
    exclusions: Tensor  # (E, 2) int64, i < j, sorted

    class Config(PotentialConfig):
        kind: Literal["nonbonded"] = "nonbonded"
        cutoff: float | None = Field(
            None,
            gt=0.0,
            description="Cutoff, Å. Omitted: no cutoff (all pairs, non-periodic, "
            "plain Coulomb). With a cutoff: reaction field, periodic when the state "
            "has a box.",
        )
        switch_distance: float | None = Field(
            None,
            gt=0.0,
            description="Å; LJ is smoothly switched off from here to the cutoff "
            "(OpenMM's switching function). Must be < cutoff. Omitted: no switching.",
        )
        reaction_field_dielectric: float = Field(
            78.3,
            ge=1.0,
            description="Dielectric constant of the reaction-field continuum "
            "beyond the cutoff, dimensionless (inf: conducting).",
        )
        dispersion_correction: bool = Field(
            True,
            description="Add the long-range LJ dispersion correction (periodic states "
            "with a cutoff only), as OpenMM.",
        )
        electrostatics: Literal["reaction_field", "coulomb", "none"] = Field(
            "reaction_field",
            description="'reaction_field' (plain Coulomb when there is no "
            "cutoff), 'coulomb' (only without a cutoff), or 'none' (LJ only, for a "
            "plugin that owns electrostatics).",
        )

        implementation: native.Implementation = Field(
            default="auto", description=native.IMPLEMENTATION_DESCRIPTION
        )

        @field_validator("switch_distance")
        @classmethod
        def _switch_below_cutoff(
            cls, v: float | None, info: ValidationInfo
        ) -> float | None:
            cutoff = info.data.get("cutoff")
            if v is not None and cutoff is None and "cutoff" in info.data:
                raise ValueError(
                    "needs a cutoff (switching applies from here to the cutoff)"
                )
            if v is not None and cutoff is not None and v >= cutoff:
                raise ValueError(f"must be < cutoff ({cutoff:g} Å)")
            return v

        @field_validator("electrostatics")
        @classmethod
        def _coulomb_without_cutoff(cls, v: str, info: ValidationInfo) -> str:
            if v == "coulomb" and info.data.get("cutoff") is not None:
                raise ValueError(
                    "'coulomb' is plain Coulomb without a cutoff; with a cutoff use "
                    "'reaction_field' (or remove the cutoff)"
                )
            return v

    def __init__(self, config: Config, system: System) -> None:
        super().__init__(config, system)
        self.cutoff = config.cutoff
        self.settings = PairSettings(
            cutoff=config.cutoff,
            switch_distance=config.switch_distance,
            reaction_field_dielectric=config.reaction_field_dielectric,
            electrostatics=config.electrostatics != "none",
        )
        self._register_parameters(system)
        self.register_buffer(
            "exclusions", _normalised_pairs(system.exclusions, system.n_atoms)
        )
        self._blocks: list[tuple[int, int, int, int]] = []
        if self.cutoff is None:
            self._prepare_blocks(system.n_atoms)
        names = ["lj"]
        if self.settings.electrostatics:
            names.append("coulomb")
        if self.cutoff is not None and config.dispersion_correction:
            names.append("dispersion_correction")
        self._term_names = tuple(names)
        self.implementation = config.implementation
        native.check_implementation(self.implementation)
        self._cluster: ClusterList | None = None
        self._modules_seen: tuple[nn.Module, ...] | None = None
        self._volume: tuple[Tensor, int, Tensor] | None = None  # box, version, volume
        self._native_cache: tuple[tuple[object, ...], dict[str, object]] | None = None

    def _register_parameters(self, system: System) -> None:
        n = system.n_atoms
        nb = system.nonbonded
        self._has_lj = nb is not None
        if nb is None:  # no LJ: one type with ε = 0
            lj_types = torch.zeros(n, dtype=torch.int64)
            sigma = torch.ones(1, dtype=torch.float64)
            epsilon = torch.zeros(1, dtype=torch.float64)
            mask = c12 = c6 = None
        else:
            lj_types, sigma, epsilon = nb.lj_types, nb.sigma, nb.epsilon
            mask, c12, c6 = nb.pair_mask, nb.pair_c12, nb.pair_c6
        t = int(sigma.shape[0])
        zeros = torch.zeros(t, t, dtype=torch.float64)
        self.register_buffer(
            "charges", system.charges.to(torch.float64).clone()
        )  # (N,) e
        self.register_buffer("lj_types", lj_types.to(torch.int64).clone())  # (N,)
        self.register_buffer("sigma", sigma.to(torch.float64).clone())  # (T,) Å
        self.register_buffer(
            "epsilon", epsilon.to(torch.float64).clone()
        )  # (T,) kcal/mol
        self.register_buffer(  # (T, T) bool: pairs whose c12/c6 are given, not combined
            "pair_mask",
            torch.zeros(t, t, dtype=torch.bool) if mask is None else mask.clone(),
        )
        self.register_buffer(
            "pair_c12", zeros if c12 is None else c12.to(torch.float64).clone()
        )
        self.register_buffer(
            "pair_c6", zeros.clone() if c6 is None else c6.to(torch.float64).clone()
        )
        counts = torch.bincount(self.lj_types, minlength=t).to(torch.float64)
        self.register_buffer("type_counts", counts)  # (T,) atoms per LJ type

    def _prepare_blocks(self, n_atoms: int) -> None:
        """Row blocks of the all-pairs sum, and the range of exclusions in each.

        ``exclusions`` is sorted by (i, j), so the exclusions with i in a block's rows
        are one slice of it.
        """
        first = self.exclusions[:, 0].contiguous()
        start = 0
        while start < n_atoms:
            stop = min(n_atoms, start + max(1, _BLOCK_PAIRS // (n_atoms - start)))
            lo, hi = (int(torch.searchsorted(first, x)) for x in (start, stop))
            self._blocks.append((start, stop, lo, hi))
            start = stop

    # -- the potential -------------------------------------------------------------
    @property
    def term_names(self) -> tuple[str, ...]:
        return self._term_names

    def pair_exclusions(self) -> Tensor:
        """(E, 2) System.exclusions, which a standalone neighbour list then omits."""
        return self.exclusions

    def parameter_sources(self) -> dict[str, str]:
        """``charges`` and, with LJ parameters in the System, σ, ε and pair tables."""
        sources = {"charges": "charges"}
        if self._has_lj:
            for name in ("sigma", "epsilon", "pair_c12", "pair_c6"):
                sources[name] = f"nonbonded.{name}"
        return sources

    def lj_tables(self) -> tuple[Tensor, Tensor]:
        """(c12, c6), each (T, T), from the current σ, ε and pair overrides.

        The overrides are symmetrised, (c + cᵀ)/2, so that a trained pair table stays
        one value per pair of types (the loaders' tables are symmetric already).
        """
        return kernels.lj_tables(
            self.sigma,
            self.epsilon,
            self.pair_mask,
            0.5 * (self.pair_c12 + self.pair_c12.T),
            0.5 * (self.pair_c6 + self.pair_c6.T),
        )

    def energy(self, state: State) -> Tensor:
        return _summed(self.energy_terms(state))

    def energy_terms(self, state: State) -> dict[str, Tensor]:
        if self._use_native(state):
            return self._evaluate_native(state, with_forces=False)[0]
        return self._evaluate(state, with_forces=False)[0]

    def reads_pairs(self, state: State) -> bool:
        """False when the native kernel (own cluster list) evaluates ``state``."""
        return self.cutoff is not None and not self._use_native(state)

    def energy_and_forces(self, state: State) -> tuple[Tensor, Tensor]:
        """Analytic forces (about 2.5× faster than autograd) unless a graph is needed.

        With grad mode on and positions, box or a parameter requiring grad, autograd
        through :meth:`energy` keeps the graph (training through forces).
        """
        if self._use_native(state):
            terms, forces = self._evaluate_native(state, with_forces=True)
            assert forces is not None
            return _summed(terms), forces
        if torch.is_grad_enabled() and self._needs_graph(state):
            return super().energy_and_forces(state)
        with torch.no_grad():
            terms, forces = self._evaluate(state, with_forces=True)
        assert forces is not None
        return _summed(terms), forces

    def _evaluate(
        self, state: State, with_forces: bool
    ) -> tuple[dict[str, Tensor], Tensor | None]:
        """Energy terms, and analytic forces when asked (no autograd graph then)."""
        c12, c6 = self.lj_tables()
        charges = self.charges if self.settings.electrostatics else None
        forces = None
        if self.cutoff is None:
            lj, coul, forces = self._all_pairs(
                state.positions, charges, c12, c6, with_forces
            )
        else:
            args = (
                state.positions,
                state.box,
                self.neighbors(state).pairs,
                charges,
                self.lj_types,
                c12,
                c6,
                self.settings,
            )
            if with_forces:
                lj, coul, forces = kernels.neighbor_list_forces(*args)
            else:
                lj, coul = kernels.neighbor_list_energies(*args)
        terms = {"lj": lj}
        if coul is not None:
            terms["coulomb"] = coul
        if "dispersion_correction" in self._term_names:
            terms["dispersion_correction"] = self._dispersion(state, c12, c6)
        return terms, forces

    # -- the native path ---------------------------------------------------------------
    def _use_native(self, state: State) -> bool:
        if self._modules_seen is None:
            self._modules_seen = tuple(self.modules())
        return native.use_native(
            self.implementation, state.positions, state.box, self._modules_seen
        )

    def _evaluate_native(
        self, state: State, with_forces: bool
    ) -> tuple[dict[str, Tensor], Tensor | None]:
        """:meth:`_evaluate` by the native cluster-pair kernel (no autograd graph)."""
        prepared = self._native_inputs(state.dtype)
        if self._cluster is None:
            self._cluster = ClusterList(
                self.cutoff, self.exclusions, int(self.charges.shape[0])
            )
        box = state.box if self.cutoff is not None else None
        lj, coul, forces = cluster_energies_and_forces(
            state.positions,
            box,
            self._cluster.update(state),
            prepared["charges"],  # type: ignore[arg-type]
            prepared["types"],  # type: ignore[arg-type]
            prepared["c12"],  # type: ignore[arg-type]
            prepared["c6"],  # type: ignore[arg-type]
            self.cutoff,
            self.settings.switch_distance,
            prepared["rf"],  # type: ignore[arg-type]
            COULOMB_KCAL_MOL_A,
            with_forces,
        )
        dtype = state.dtype
        terms = {"lj": lj.to(dtype)}
        if self.settings.electrostatics:
            terms["coulomb"] = coul.to(dtype)
        if "dispersion_correction" in self._term_names:
            if state.box is None:
                terms["dispersion_correction"] = state.positions.new_zeros(
                    state.n_replicas
                )
            else:
                k = prepared["dispersion"]
                assert isinstance(k, Tensor)
                terms["dispersion_correction"] = (k / self._box_volume(state.box)).to(
                    dtype
                )
        return terms, forces

    def _box_volume(self, box: Tensor) -> Tensor:
        """(R,) |det box|, remembered while the box tensor stays the same."""
        cached = self._volume
        if cached is not None and cached[0] is box and cached[1] == box._version:
            return cached[2]
        volume: Tensor = torch.linalg.det(box.detach().to(torch.float64)).abs()
        self._volume = (box, box._version, volume)
        return volume

    def _native_inputs(self, dtype: torch.dtype) -> dict[str, object]:
        """Kernel inputs from the current parameters, cached until one changes."""
        sources = (
            self.charges,
            self.lj_types,
            self.sigma,
            self.epsilon,
            self.pair_mask,
            self.pair_c12,
            self.pair_c6,
        )
        key = (dtype, *((t, t._version) for t in sources))
        cached = self._native_cache
        if cached is not None and _same_key(cached[0], key):
            return cached[1]
        with torch.no_grad():
            c12, c6 = self.lj_tables()
            charges = self.charges if self.settings.electrostatics else None
            prepared: dict[str, object] = {
                "charges": (
                    torch.zeros_like(self.charges) if charges is None else charges
                )
                .to("cpu", dtype)
                .contiguous(),
                "types": self.lj_types.to("cpu", torch.int32).contiguous(),
                "c12": c12.to("cpu", dtype).contiguous(),
                "c6": c6.to("cpu", dtype).contiguous(),
                "rf": (0.0, 0.0)
                if self.cutoff is None
                else kernels.reaction_field_constants(
                    self.cutoff, self.settings.reaction_field_dielectric
                ),
            }
            if "dispersion_correction" in self._term_names:
                assert self.cutoff is not None
                prepared["dispersion"] = kernels.dispersion_coefficient(
                    c12,
                    c6,
                    self.type_counts,
                    self.cutoff,
                    self.settings.switch_distance,
                ).to(torch.float64)
        self._native_cache = (key, prepared)
        return prepared

    def _dispersion(self, state: State, c12: Tensor, c6: Tensor) -> Tensor:
        if state.box is None:
            return state.positions.new_zeros(state.n_replicas)
        assert self.cutoff is not None
        k = kernels.dispersion_coefficient(
            c12, c6, self.type_counts, self.cutoff, self.settings.switch_distance
        )
        volume: Tensor = torch.linalg.det(state.box).abs()
        return k / volume

    def _all_pairs(
        self,
        positions: Tensor,
        charges: Tensor | None,
        c12: Tensor,
        c6: Tensor,
        with_forces: bool,
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """No cutoff: every non-excluded pair, in row blocks of bounded size.

        With several blocks under autograd, each block is checkpointed (recomputed in
        the backward pass) so memory stays that of one block.
        """
        lj = positions.new_zeros(positions.shape[0])
        coul = positions.new_zeros(positions.shape[0]) if charges is not None else None
        forces = torch.zeros_like(positions) if with_forces else None
        tensors = [positions, c12, c6] + ([] if charges is None else [charges])
        recompute = (
            len(self._blocks) > 1
            and torch.is_grad_enabled()
            and any(t.requires_grad for t in tensors)
        )
        for block in self._blocks:
            args = (block, positions, charges, c12, c6, with_forces)
            if recompute:
                e_lj, e_coul, f = checkpoint(self._block, *args, use_reentrant=False)
            else:
                e_lj, e_coul, f = self._block(*args)
            lj = lj + e_lj
            if coul is not None:
                coul = coul + e_coul
            if forces is not None:
                forces[:, block[0] :] += f
        return lj, coul, forces

    def _block(
        self,
        block: tuple[int, int, int, int],
        positions: Tensor,
        charges: Tensor | None,
        c12: Tensor,
        c6: Tensor,
        with_forces: bool,
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        start, stop, lo, hi = block
        n_atoms = positions.shape[1]
        excl = self.exclusions[lo:hi]
        excluded = torch.zeros(
            stop - start, n_atoms - start, dtype=torch.bool, device=positions.device
        )
        excluded[excl[:, 0] - start, excl[:, 1] - start] = True
        args = (
            positions,
            start,
            stop,
            charges,
            self.lj_types,
            c12,
            c6,
            excluded,
            self.settings,
        )
        if with_forces:
            return kernels.all_pairs_block_forces(*args)
        return (*kernels.all_pairs_block_energies(*args), None)


def _same_key(a: tuple[object, ...], b: tuple[object, ...]) -> bool:
    """Keys of (dtype, (tensor, version), ...): same dtype, same tensors, unchanged."""
    if a[0] != b[0] or len(a) != len(b):
        return False
    for x, y in zip(a[1:], b[1:], strict=True):
        assert isinstance(x, tuple) and isinstance(y, tuple)
        if x[0] is not y[0] or x[1] != y[1]:
            return False
    return True


def _summed(terms: dict[str, Tensor]) -> Tensor:
    values = iter(terms.values())
    total = next(values)
    for value in values:
        total = total + value
    return total


def _normalised_pairs(pairs: Tensor, n_atoms: int) -> Tensor:
    """(E, 2) int64 unique pairs with i < j, sorted by (i, j); self-pairs dropped."""
    pairs = pairs.to(torch.int64).reshape(-1, 2)
    lo, hi = (
        torch.minimum(pairs[:, 0], pairs[:, 1]),
        torch.maximum(pairs[:, 0], pairs[:, 1]),
    )
    keys = torch.unique(lo[lo != hi] * n_atoms + hi[lo != hi])
    return torch.stack([keys // n_atoms, keys % n_atoms], dim=1)
