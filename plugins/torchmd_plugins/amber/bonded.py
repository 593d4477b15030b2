"""The ``amber`` potential: every bonded term of an AMBER/CHARMM-style force field.

Terms (names as reported by :meth:`AmberBonded.energy_terms`): ``bonds``, ``angles``,
``urey_bradley``, ``torsions``, ``impropers`` (periodic), ``harmonic_impropers``,
``cmap``, ``lj14`` and ``coulomb14`` (the scaled 1-4 pairs). Parameters come from the
:class:`~torchmd_core.ParameterTable` of each term in ``System.terms`` and stay per
type: each term keeps its (n_types,) parameter buffers and gathers them for every
interaction at evaluation, so a parameter made trainable is shared by all the
interactions of its type.
"""

from __future__ import annotations

from typing import Literal, cast

import torch
from pydantic import Field
from torch import Tensor, nn

from torchmd_core import (
    ConfigError,
    ParameterTable,
    Potential,
    PotentialConfig,
    State,
    System,
)
from torchmd_core.units import COULOMB_KCAL_MOL_A
from torchmd_plugins.amber import cmap, kernels
from torchmd_plugins.amber.native import (
    NATIVE_TERMS,
    NativeBonded,
    coulomb14_products,
    native_bonded_energies_and_forces,
)
from torchmd_plugins.nonbonded import native

__all__ = ["TERM_NAMES", "AmberBonded", "TermParameters"]

#: The energy terms, in the order they are reported.
TERM_NAMES = (
    "bonds",
    "angles",
    "urey_bradley",
    "torsions",
    "impropers",
    "harmonic_impropers",
    "cmap",
    "lj14",
    "coulomb14",
)

TermName = Literal[
    "bonds",
    "angles",
    "urey_bradley",
    "torsions",
    "impropers",
    "harmonic_impropers",
    "cmap",
    "lj14",
    "coulomb14",
]

# System term → the energy terms it provides.
_PROVIDES = {
    "bonds": ("bonds",),
    "angles": ("angles",),
    "urey_bradley": ("urey_bradley",),
    "torsions": ("torsions",),
    "impropers": ("impropers",),
    "harmonic_impropers": ("harmonic_impropers",),
    "cmap": ("cmap",),
    "pairs14": ("lj14", "coulomb14"),
}


class TermParameters(nn.Module):
    """One bonded term: interaction atoms, their types, and per-type parameter buffers.

    Buffers: ``atoms`` (n, k) int64, ``types`` (n,) int64 and one (n_types, ...) float
    buffer per parameter (``k``, ``r0``, ...). :meth:`gathered` returns each parameter
    for every interaction.
    """

    atoms: Tensor
    types: Tensor

    def __init__(self, table: ParameterTable) -> None:
        super().__init__()
        self.register_buffer("atoms", table.atoms.clone())
        self.register_buffer("types", table.types.clone())
        self.parameter_names = tuple(table.values)
        self.type_names = table.type_names
        for name, value in table.values.items():
            self.register_buffer(name, value.clone())

    def __len__(self) -> int:
        return int(self.atoms.shape[0])

    def value(self, name: str) -> Tensor:
        """The per-type tensor of one parameter (a buffer, or a trainable Parameter)."""
        tensor = getattr(self, name)
        assert isinstance(tensor, Tensor)
        return tensor

    def gathered(self, name: str) -> Tensor:
        """(n, ...) parameter ``name`` of each interaction."""
        return self.value(name)[self.types]


class AmberBonded(Potential):
    """Bonded AMBER/CHARMM terms: bonds, angles, UB, torsions, impropers, CMAP, 1-4.

    Energies (kcal/mol, Å, rad), as OpenMM evaluates them (see ``kernels.py``):
    k(r − r0)², k(θ − θ0)², k(r13 − r0)², k(1 + cos(nφ − phase)) for torsions and
    periodic impropers, k(ψ − ψ0)² for harmonic impropers, bicubic CMAP (``cmap.py``),
    and for each 1-4 pair 4ε((σ/r)¹² − (σ/r)⁶) (``lj14``) plus C·s·q_i q_j / r
    (``coulomb14``) with its own σ, ε and charge scale s, no cutoff. With a periodic
    box every bonded vector is the minimum image.

    Reads ``System.terms`` (``bonds``, ``angles``, ``urey_bradley``, ``torsions``,
    ``impropers``, ``harmonic_impropers``, ``cmap``, ``pairs14``) and
    ``System.charges``.

    Plain MD on the CPU computes bonds, Urey-Bradley, angles, torsions, periodic
    impropers and 1-4 pairs in a native kernel with analytic forces
    (``implementation``; :mod:`~torchmd_plugins.amber.native`); anything needing
    gradients uses the PyTorch kernels.

    References: Cornell et al., J. Am. Chem. Soc. 117, 5179 (1995); MacKerell et al.,
    J. Phys. Chem. B 102, 3586 (1998).
    """

    class Config(PotentialConfig):
        kind: Literal["amber"] = "amber"
        terms: tuple[TermName, ...] | None = Field(
            None,
            min_length=1,
            description="Energy terms to evaluate (default: every bonded term the "
            "topology defines): bonds, angles, urey_bradley, torsions, impropers, "
            "harmonic_impropers, cmap, lj14, coulomb14. Energies in kcal/mol.",
        )
        implementation: native.Implementation = Field(
            default="auto", description=native.IMPLEMENTATION_DESCRIPTION
        )

    def __init__(
        self, config: Config | None = None, system: System | None = None
    ) -> None:
        config = config if config is not None else self.Config(terms=None)
        super().__init__(config, system)
        if system is None:
            raise ValueError(
                "AmberBonded needs the System whose bonded terms it evaluates"
            )
        available = [
            name
            for table_name, provides in _PROVIDES.items()
            if table_name in system.terms and len(system.terms[table_name])
            for name in provides
        ]
        if config.terms is None:
            selected = available
        else:
            missing = [t for t in config.terms if t not in available]
            if missing:
                raise ConfigError(
                    f"terms: {', '.join(repr(t) for t in missing)} requested but the "
                    f"topology defines no such interactions (it has: "
                    f"{', '.join(available) or 'no bonded terms'})"
                )
            selected = [t for t in TERM_NAMES if t in config.terms]
        self._selected = tuple(t for t in TERM_NAMES if t in selected)
        self.tables = nn.ModuleDict()
        for table_name, provides in _PROVIDES.items():
            if any(t in self._selected for t in provides):
                self.tables[table_name] = TermParameters(system.terms[table_name])
        if "pairs14" in self.tables:
            self.register_buffer("charges", system.charges.clone())
        self.implementation = config.implementation
        native.check_implementation(self.implementation)
        self._native_cache: tuple[tuple[object, ...], NativeBonded] | None = None
        self._modules_seen: tuple[nn.Module, ...] | None = None

    @property
    def term_names(self) -> tuple[str, ...]:
        return self._selected

    def parameter_sources(self) -> dict[str, str]:
        """Every per-type parameter buffer (``tables.<term>.<value>``) and the
        charges."""
        tables = cast("dict[str, TermParameters]", dict(self.tables.items()))
        sources = {
            f"tables.{term}.{value}": f"{term}.{value}"
            for term, table in tables.items()
            for value in table.parameter_names
        }
        if "pairs14" in self.tables:
            sources["charges"] = "charges"
        return sources

    def energy(self, state: State) -> Tensor:
        terms = self.energy_terms(state)
        total = state.positions.new_zeros(state.n_replicas)
        for value in terms.values():
            total = total + value
        return total

    def energy_terms(self, state: State) -> dict[str, Tensor]:
        pos, box = state.positions, state.box
        out: dict[str, Tensor] = {}
        for name in self._selected:
            if name in ("lj14", "coulomb14"):
                continue
            out[name] = self._bonded_term(name, pos, box)
        if "pairs14" in self.tables:
            out.update(self._pairs14(pos, box))
        return {name: out[name] for name in self._selected}

    def energy_and_forces(self, state: State) -> tuple[Tensor, Tensor]:
        """Native analytic forces for plain MD on the CPU, else autograd."""
        if self._modules_seen is None:
            self._modules_seen = tuple(self.modules())
        if not native.use_native(
            self.implementation, state.positions, state.box, self._modules_seen
        ):
            return super().energy_and_forces(state)
        energy, forces = native_bonded_energies_and_forces(
            state.positions, state.box, self._native_inputs()
        )
        energy = energy.to(state.dtype)
        rest = [t for t in self._selected if t not in NATIVE_TERMS]
        if rest:  # harmonic impropers, CMAP: autograd, without a graph kept
            with torch.enable_grad():
                pos = state.positions.detach().requires_grad_(True)
                e = sum(self._bonded_term(t, pos, state.box) for t in rest)
                assert isinstance(e, Tensor)
                (grad,) = torch.autograd.grad(e.sum(), pos)
            energy = energy + e.detach()
            forces = forces - grad
        return energy, forces

    def _native_inputs(self) -> NativeBonded:
        """Kernel inputs from the current parameter tables, cached until one changes."""
        assert self._modules_seen is not None
        key = tuple(
            (t, t._version)
            for m in self._modules_seen
            for t in (*m._parameters.values(), *m._buffers.values())
            if t is not None
        )
        cached = self._native_cache
        if (
            cached is not None
            and len(cached[0]) == len(key)
            and all(
                a[0] is b[0] and a[1] == b[1]  # type: ignore[index]
                for a, b in zip(cached[0], key, strict=True)
            )
        ):
            return cached[1]
        with torch.no_grad():
            prepared = self._gather_native()
        self._native_cache = (key, prepared)
        return prepared

    def _gather_native(self) -> NativeBonded:
        selected = self._selected
        harmonic = [
            (t.atoms, t.gathered("k"), t.gathered("r0"))
            for t in (
                self._table(n) for n in ("bonds", "urey_bradley") if n in selected
            )
        ]
        angles = None
        if "angles" in selected:
            t = self._table("angles")
            angles = (t.atoms, t.gathered("k"), t.gathered("theta0"))
        torsions = [
            (t.atoms, t.gathered("k"), t.gathered("phase"), t.gathered("periodicity"))
            for t in (
                self._table(n) for n in ("torsions", "impropers") if n in selected
            )
        ]
        pairs14 = None
        if "pairs14" in self.tables:
            t = self._table("pairs14")
            sigma, epsilon = t.gathered("sigma"), t.gathered("epsilon")
            s6 = sigma.to(torch.float64) ** 6
            lj = 4.0 * epsilon.to(torch.float64) * ("lj14" in selected)
            q = self.charges
            assert isinstance(q, Tensor)
            qq = coulomb14_products(t.gathered("charge_scale"), q, t.atoms)
            qq = qq.to(torch.float64) * ("coulomb14" in selected)
            pairs14 = (t.atoms, qq, lj * s6, lj * s6 * s6)
        return NativeBonded.gather(harmonic, angles, torsions, pairs14)

    # -- the terms ---------------------------------------------------------------------
    def _table(self, name: str) -> TermParameters:
        table = self.tables[name]
        assert isinstance(table, TermParameters)
        return table

    def _bonded_term(self, name: str, pos: Tensor, box: Tensor | None) -> Tensor:
        t = self._table(name)
        if name in ("bonds", "urey_bradley"):
            return kernels.harmonic_bond_energy(
                pos, t.atoms, t.gathered("k"), t.gathered("r0"), box
            )
        if name == "angles":
            return kernels.harmonic_angle_energy(
                pos, t.atoms, t.gathered("k"), t.gathered("theta0"), box
            )
        if name in ("torsions", "impropers"):
            return kernels.periodic_torsion_energy(
                pos,
                t.atoms,
                t.gathered("k"),
                t.gathered("phase"),
                t.gathered("periodicity"),
                box,
            )
        if name == "harmonic_impropers":
            return kernels.harmonic_improper_energy(
                pos, t.atoms, t.gathered("k"), t.gathered("psi0"), box
            )
        if name == "cmap":
            coefficients = cmap.cmap_coefficients(t.value("grid"))
            return cmap.cmap_energy(pos, t.atoms, t.types, coefficients, box)
        raise AssertionError(f"unknown bonded term {name!r}")

    def _pairs14(self, pos: Tensor, box: Tensor | None) -> dict[str, Tensor]:
        t = self._table("pairs14")
        r = kernels.pair_distances(pos, t.atoms, box)  # (R, n)
        out = {}
        if "lj14" in self._selected:
            out["lj14"] = kernels.lj14_energy(
                r, t.gathered("sigma"), t.gathered("epsilon")
            )
        if "coulomb14" in self._selected:
            q = self.charges
            assert isinstance(q, Tensor)
            qq = t.gathered("charge_scale") * q[t.atoms[:, 0]] * q[t.atoms[:, 1]]
            out["coulomb14"] = kernels.coulomb14_energy(r, qq, COULOMB_KCAL_MOL_A)
        return out
