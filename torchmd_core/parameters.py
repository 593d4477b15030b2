"""Force-field parameters as tensors: make families trainable, read them, export them.

Every potential that holds parameters of the :class:`~torchmd_core.system.System`
says so in :meth:`~torchmd_core.potential.Potential.parameter_sources`. Parameters are
named by *family*, one name per per-type tensor of the System:

========================== ============================== ===================
name                       shape                          unit
========================== ============================== ===================
``charges``                (N,)                           e
``nonbonded.sigma``        (T,) per LJ type               Å
``nonbonded.epsilon``      (T,) per LJ type               kcal/mol
``nonbonded.pair_c12``     (T, T), used where overridden  kcal/mol·Å¹²
``nonbonded.pair_c6``      (T, T), used where overridden  kcal/mol·Å⁶
``bonds.k``, ``bonds.r0``  (n_types,)                     kcal/mol/Å², Å
``angles.k``, ``.theta0``  (n_types,)                     kcal/mol/rad², rad
``urey_bradley.k``, ``.r0`` (n_types,)                    kcal/mol/Å², Å
``torsions.k``, ``.phase`` (n_types,)                     kcal/mol, rad
``impropers.k``, ``.phase`` (n_types,)                    kcal/mol, rad
``harmonic_impropers.k``,  (n_types,)                     kcal/mol/rad², rad
``.psi0``
``cmap.grid``              (n_maps, G, G)                 kcal/mol
``pairs14.charge_scale``,  (n_types,)                     1, Å, kcal/mol
``.sigma``, ``.epsilon``
========================== ============================== ===================

(``torsions.periodicity`` and ``impropers.periodicity`` are integers and cannot be
trained.) Rows are force-field *types*: every interaction of a type reads the same row,
so a trained value stays shared exactly as the topology shares it.

:func:`trainable` turns families into :class:`torch.nn.Parameter` s. Where several
terms hold the same family (``charges``: the 1-4 Coulomb of ``amber`` and the
``nonbonded`` sum) they get *one* parameter, so both stay consistent while it is
trained. :func:`fitted_system` copies the current values back into a System, and
:func:`~torchmd_core.export.export_parameters` writes them to an AMBER prmtop.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from torchmd_core.errors import ConfigError
from torchmd_core.potential import Potential
from torchmd_core.system import NonbondedParameters, ParameterTable, System

__all__ = [
    "fitted_system",
    "freeze",
    "parameter_names",
    "parameter_values",
    "trainable",
]

#: Families that hold integers and so cannot be trained.
_DISCRETE = ("torsions.periodicity", "impropers.periodicity")


@dataclasses.dataclass(frozen=True)
class _Holder:
    """One tensor that holds a family: ``module.<attribute>``, named ``path`` in the
    whole potential (as ``named_buffers`` names it)."""

    module: nn.Module
    attribute: str
    path: str

    @property
    def tensor(self) -> Tensor:
        value = getattr(self.module, self.attribute)
        assert isinstance(value, Tensor)
        return value


def _holders(potential: nn.Module) -> dict[str, list[_Holder]]:
    """Family name → every tensor of ``potential`` (any depth) that holds it."""
    found: dict[str, list[_Holder]] = {}
    for prefix, module in potential.named_modules():
        if not isinstance(module, Potential):
            continue
        for local, family in module.parameter_sources().items():
            owner_name, _, attribute = local.rpartition(".")
            owner = module.get_submodule(owner_name) if owner_name else module
            path = f"{prefix}.{local}" if prefix else local
            found.setdefault(family, []).append(_Holder(owner, attribute, path))
    return found


def _resolve(potential: nn.Module, names: Sequence[str]) -> dict[str, list[_Holder]]:
    holders = _holders(potential)
    unknown = [n for n in names if n not in holders]
    if unknown:
        raise ConfigError(
            f"no force-field parameter named {', '.join(repr(n) for n in unknown)} in "
            f"this potential; it holds: {', '.join(sorted(holders)) or 'none'}"
        )
    return {n: holders[n] for n in names}


def parameter_names(potential: nn.Module) -> tuple[str, ...]:
    """The parameter families ``potential`` holds, sorted: ``("angles.k", ...)``."""
    return tuple(sorted(_holders(potential)))


def parameter_values(potential: nn.Module, *names: str) -> dict[str, Tensor]:
    """The current tensor of each family (all of them by default).

    The tensors are the potential's own (parameters keep their graph and gradient):
    detach and clone them to keep a copy.
    """
    chosen = _resolve(potential, names) if names else _holders(potential)
    return {name: holders[0].tensor for name, holders in chosen.items()}


def trainable(
    potential: nn.Module,
    *names: str,
    types: Mapping[str, Sequence[int] | Tensor] | None = None,
) -> dict[str, nn.Parameter]:
    """Make parameter families trainable: their buffers become one shared Parameter.

    Example::

        params = trainable(potential, "bonds.k", "nonbonded.epsilon")
        optimizer = torch.optim.Adam(potential.parameters(), lr=1e-3)

    Calling it again for a family that is already trainable returns the same
    Parameter. Energies and forces keep their graph to the parameters whenever grad
    mode is on (the ``nonbonded`` term then uses autograd forces instead of its analytic
    ones).

    Args:
        potential: any potential (a :class:`~torchmd_core.potential.PotentialSum`,
            a single term, or a module containing potentials).
        names: families, see :mod:`torchmd_core.parameters`.
        types: optionally, for some families, the rows (types) that may change; the
            gradient of every other row is set to zero (a hook on the Parameter), so
            optimisers leave them as they are.

    Returns:
        Family name → its Parameter.

    Raises:
        ConfigError: an unknown family, a discrete one (periodicity), or families whose
            copies in different terms disagree.
    """
    if not names:
        raise ConfigError("trainable: name at least one parameter family")
    discrete = [n for n in names if n in _DISCRETE]
    if discrete:
        raise ConfigError(
            f"{', '.join(discrete)}: periodicities are integers and cannot be trained"
        )
    types = dict(types or {})
    stray = [n for n in types if n not in names]
    if stray:
        raise ConfigError(
            f"types: {', '.join(stray)} not among the names made trainable"
        )
    out: dict[str, nn.Parameter] = {}
    for name, holders in _resolve(potential, names).items():
        out[name] = _make_shared(name, holders)
        if name in types:
            _restrict_rows(out[name], types[name], name)
    return out


def _make_shared(name: str, holders: list[_Holder]) -> nn.Parameter:
    tensors = [h.tensor for h in holders]
    existing = [t for t in tensors if isinstance(t, nn.Parameter)]
    if existing:
        param = existing[0]
    else:
        first = tensors[0]
        for h, t in zip(holders[1:], tensors[1:], strict=True):
            if t.shape != first.shape or not torch.equal(t.to(first), first):
                raise ConfigError(
                    f"{name}: the copies in '{holders[0].path}' and '{h.path}' differ; "
                    "they cannot be trained as one parameter"
                )
        param = nn.Parameter(first.detach().clone())
    for h in holders:
        if h.tensor is not param:
            delattr(h.module, h.attribute)  # the buffer (or another parameter)
            h.module.register_parameter(h.attribute, param)
    return param


def _restrict_rows(
    param: nn.Parameter, rows: Sequence[int] | Tensor, name: str
) -> None:
    index = torch.as_tensor(rows, dtype=torch.int64).reshape(-1)
    n = int(param.shape[0])
    if index.numel() and (int(index.min()) < -n or int(index.max()) >= n):
        raise ConfigError(f"types[{name!r}]: rows must lie in 0..{n - 1}, got {rows}")
    mask = torch.zeros(n, dtype=torch.bool)
    mask[index] = True

    def keep_rows(grad: Tensor) -> Tensor:
        m = mask.to(grad.device).reshape(-1, *([1] * (grad.dim() - 1)))
        return torch.where(m, grad, torch.zeros_like(grad))

    param.register_hook(keep_rows)  # type: ignore[no-untyped-call]


def freeze(potential: nn.Module, *names: str) -> None:
    """Turn trainable families back into plain buffers (all of them by default), each
    holder keeping the current value."""
    chosen = _resolve(potential, names) if names else _holders(potential)
    for holders in chosen.values():
        for h in holders:
            value = h.tensor
            if not isinstance(value, nn.Parameter):
                continue
            delattr(h.module, h.attribute)
            h.module.register_buffer(h.attribute, value.detach().clone())


def _iter_families(potential: nn.Module) -> Iterator[tuple[str, Tensor]]:
    for name, holders in _holders(potential).items():
        yield name, holders[0].tensor.detach().to(device="cpu", dtype=torch.float64)


def fitted_system(system: System, potential: nn.Module) -> System:
    """A copy of ``system`` with the current values of every family ``potential`` holds.

    Use it to save or export parameters after training (see
    :func:`~torchmd_core.export.export_parameters`). Families the potential does not
    hold keep the System's values.

    Raises:
        ConfigError: a family whose shape differs from the System's (a potential built
            for another system).
    """
    terms = dict(system.terms)
    charges = system.charges
    nb = system.nonbonded
    nb_changes: dict[str, Tensor] = {}
    for name, value in _iter_families(potential):
        if name == "charges":
            charges = _checked(name, value, system.charges)
            continue
        group, _, field = name.partition(".")
        if group == "nonbonded":
            if nb is None:
                continue
            current = getattr(nb, field)
            if field in ("pair_c12", "pair_c6"):  # the potential uses (c + cᵀ)/2
                value = 0.5 * (value + value.T)
            if current is None:  # pair tables the system never had
                if bool(value.abs().max() > 0) if value.numel() else False:
                    raise ConfigError(
                        f"{name}: the system has no pair table but the potential's "
                        "holds non-zero values"
                    )
                continue
            nb_changes[field] = _checked(name, value, current)
            continue
        table = terms.get(group)
        if table is None or field not in table.values:
            raise ConfigError(f"{name}: the system has no such parameter table")
        values = dict(table.values)
        values[field] = _checked(name, value, table.values[field])
        terms[group] = ParameterTable(
            table.atoms, table.types, values, table.type_names
        )
    if nb is not None and nb_changes:
        nb = NonbondedParameters(**{**_fields(nb), **nb_changes})
    return dataclasses.replace(system, charges=charges, terms=terms, nonbonded=nb)


def _checked(name: str, value: Tensor, current: Tensor) -> Tensor:
    if tuple(value.shape) != tuple(current.shape):
        raise ConfigError(
            f"{name}: the potential holds shape {tuple(value.shape)}, the system "
            f"{tuple(current.shape)}; was the potential built for another system?"
        )
    return value.clone()


def _fields(nb: NonbondedParameters) -> dict[str, Any]:
    return {f.name: getattr(nb, f.name) for f in dataclasses.fields(nb)}
