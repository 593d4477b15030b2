"""The conformance kit: checks every component must pass, for plugin authors too.

Use it in your plugin's tests::

    from torchmd_core.testing import check_potential
    def test_my_term_conforms(state):
        check_potential(MyTerm(MyTerm.Config(), system), state)

Each ``check_*`` raises ``AssertionError`` with a message naming the failed property.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import TypedDict

import torch
from pydantic import BaseModel

from torchmd_core.component import Component
from torchmd_core.integrator import Integrator
from torchmd_core.plugins import isolated_registry
from torchmd_core.potential import Potential
from torchmd_core.state import State
from torchmd_core.testing.systems import random_state, toy_system

__all__ = [
    "TOLERANCES",
    "Tolerance",
    "check_config_roundtrip",
    "check_integrator",
    "check_potential",
    "finite_difference_forces",
    "isolated_registry",
    "random_state",
    "toy_system",
]


class Tolerance(TypedDict):
    """Keyword arguments of :func:`torch.testing.assert_close`."""

    rtol: float
    atol: float


#: Tolerances for comparing results of one computation done two ways, per dtype.
TOLERANCES: dict[torch.dtype, Tolerance] = {
    torch.float32: {"rtol": 1e-4, "atol": 1e-4},
    torch.float64: {"rtol": 1e-9, "atol": 1e-9},
}


def check_config_roundtrip(
    component: Component | type[Component], config: BaseModel | None = None
) -> None:
    """The config survives dump → validate, in Python and JSON form, unchanged."""
    cls = component if isinstance(component, type) else type(component)
    cfg = config if config is not None else getattr(component, "config", None)
    if cfg is None:
        cfg = cls.Config.model_validate({})
    again = cls.Config.model_validate(cfg.model_dump())
    assert again == cfg, (
        f"{cls.__name__}.Config changed in a dict round-trip: {cfg} → {again}"
    )
    again = cls.Config.model_validate_json(cfg.model_dump_json())
    assert again == cfg, (
        f"{cls.__name__}.Config changed in a JSON round-trip: {cfg} → {again}"
    )
    assert again.kind == cls.kind_name(), (
        "Config.kind must default to the registered name"
    )
    for name, field in cls.Config.model_fields.items():
        assert name == "kind" or field.description, (
            f"{cls.__name__}.Config.{name} has no description (state its unit there)"
        )


def finite_difference_forces(
    potential: Potential, state: State, atoms: torch.Tensor, h: float = 1e-5
) -> torch.Tensor:
    """(R, len(atoms), 3) central-difference forces −ΔE/Δx in float64."""
    pot = copy.deepcopy(potential).to(torch.float64)
    st = state.to(dtype=torch.float64)
    out = torch.zeros(st.n_replicas, len(atoms), 3, dtype=torch.float64)
    with torch.no_grad():
        for a_i, a in enumerate(atoms.tolist()):
            for d in range(3):
                plus = st.positions.clone()
                minus = st.positions.clone()
                plus[:, a, d] += h
                minus[:, a, d] -= h
                e_plus = pot.energy(st.replace(positions=plus))
                e_minus = pot.energy(st.replace(positions=minus))
                out[:, a_i, d] = -(e_plus - e_minus) / (2 * h)
    return out


def check_potential(
    potential: Potential,
    state: State,
    *,
    translation_invariant: bool = True,
    n_fd_atoms: int = 4,
    fd_tolerance: float = 1e-4,
    config: bool = True,
) -> None:
    """Check shapes, dtypes, purity, forces, invariances, batching and config.

    Args:
        potential: the component under test (its dtype follows ``state``).
        state: a state with 2 or more replicas ideally (batched vs one-by-one).
        translation_invariant: False for terms tied to absolute positions (restraints).
        n_fd_atoms: atoms whose forces are checked by central finite differences.
        fd_tolerance: absolute tolerance of that check, kcal/mol/Å (relative to max |F|
            when forces are larger than 1).
        config: also check the config round-trip.
    """
    name = type(potential).__name__
    potential = potential.to(dtype=state.dtype, device=state.device)
    before = state.positions.clone()
    box_before = None if state.box is None else state.box.clone()

    with torch.no_grad():
        energy = potential.energy(state)
    assert energy.shape == (state.n_replicas,), (
        f"{name}.energy must return (R,) = ({state.n_replicas},), "
        f"got {tuple(energy.shape)}"
    )
    assert energy.dtype == state.dtype, (
        f"{name}.energy returned {energy.dtype} for a {state.dtype} state"
    )
    assert torch.isfinite(energy).all(), f"{name}.energy is not finite: {energy}"

    with torch.no_grad():
        e2, forces = potential.energy_and_forces(state)
    assert forces.shape == state.positions.shape, (
        f"{name} forces shape {tuple(forces.shape)} != "
        f"positions {tuple(state.positions.shape)}"
    )
    torch.testing.assert_close(
        e2,
        energy,
        **TOLERANCES[state.dtype],
        msg=f"{name}: energy_and_forces energy differs from energy()",
    )
    assert torch.equal(state.positions, before), f"{name} modified the input positions"
    if box_before is not None:
        assert state.box is not None and torch.equal(state.box, box_before), (
            f"{name} modified the input box"
        )

    terms = potential.energy_terms(state)
    assert set(terms) == set(potential.term_names), (
        f"{name}.energy_terms keys {sorted(terms)} != "
        f"term_names {sorted(potential.term_names)}"
    )
    total = torch.stack([v.detach() for v in terms.values()]).sum(0)
    torch.testing.assert_close(
        total,
        energy,
        rtol=1e-5 if state.dtype == torch.float32 else 1e-9,
        atol=1e-3 if state.dtype == torch.float32 else 1e-8,
        msg=f"{name}: energy_terms do not sum to energy",
    )

    # Forces: analytic (or autograd) forces equal −∇E by central differences.
    g = torch.Generator().manual_seed(0)
    atoms = torch.randperm(state.n_atoms, generator=g)[: min(n_fd_atoms, state.n_atoms)]
    fd = finite_difference_forces(potential, state, atoms)
    with torch.no_grad():
        _, f64 = (
            copy.deepcopy(potential)
            .to(torch.float64)
            .energy_and_forces(state.to(dtype=torch.float64))
        )
    scale = max(1.0, float(fd.abs().max()))
    err = float((f64[:, atoms] - fd).abs().max())
    assert err <= fd_tolerance * scale, (
        f"{name}: forces differ from −dE/dx by finite differences by "
        f"{err:.3g} kcal/mol/Å"
    )

    # Batched equals one-by-one.
    if state.n_replicas > 1:
        with torch.no_grad():
            single = torch.cat(
                [potential.energy(state.select([r])) for r in range(state.n_replicas)]
            )
        torch.testing.assert_close(
            single,
            energy,
            **_loose(state.dtype),
            msg=f"{name}: batched energies differ from one-by-one",
        )

    # Translation invariance, periodic-image invariance.
    if translation_invariant:
        shift = torch.tensor([1.3, -0.7, 2.1], dtype=state.dtype, device=state.device)
        with torch.no_grad():
            moved = potential.energy(state.replace(positions=state.positions + shift))
        torch.testing.assert_close(
            moved,
            energy,
            **_loose(state.dtype),
            msg=f"{name}: energy changed under a rigid translation",
        )
    if state.box is not None:
        jumped = state.positions.clone()
        jumped[:, 0] += state.box[:, 0] - state.box[:, 2]
        with torch.no_grad():
            image = potential.energy(state.replace(positions=jumped))
        torch.testing.assert_close(
            image,
            energy,
            **_loose(state.dtype),
            msg=f"{name}: energy changed when an atom moved by a box vector",
        )

    if config and potential.config is not None:
        check_config_roundtrip(potential)


def _loose(dtype: torch.dtype) -> Tolerance:
    return (
        {"rtol": 1e-5, "atol": 1e-3}
        if dtype == torch.float32
        else {"rtol": 1e-9, "atol": 1e-8}
    )


def check_integrator(
    make: Callable[[], Integrator],
    potential: Potential,
    state: State,
    *,
    steps: int = 5,
    seed: int = 3,
    config: bool = True,
) -> None:
    """Check step bookkeeping, purity, seeded reproducibility, batched == one-by-one,
    and an exact continuation from :meth:`Integrator.state_dict`.

    Args:
        make: builds a fresh integrator (same config each call).
        potential: the potential to integrate.
        state: starting state with velocities (2+ replicas ideally).
    """
    name = type(make()).__name__
    assert state.velocities is not None, (
        "check_integrator needs a state with velocities"
    )

    def run(integ: Integrator, st: State, n: int) -> State:
        with torch.no_grad():
            st = integ.setup(st, potential)
            for _ in range(n):
                st = integ.step(st, potential)
        return st

    a = make()
    a.seed(seed, state.n_replicas, state.device)
    before = state.positions.clone()
    one = run(a, state, 1)
    assert torch.equal(state.positions, before), f"{name} modified the input state"
    assert one.step == state.step + 1, f"{name}.step must advance state.step by 1"
    assert abs(one.time_ps - (state.time_ps + a.timestep_ps)) < 1e-9, (
        f"{name}.step must advance time_ps by the timestep"
    )
    assert (
        one.positions.shape == state.positions.shape
        and one.positions.dtype == state.dtype
    )

    first = run(_seeded(make, seed, state), state, steps)
    second = run(_seeded(make, seed, state), state, steps)
    assert torch.equal(first.positions, second.positions), (
        f"{name}: the same seed gave different trajectories"
    )

    if state.n_replicas > 1:
        for r in range(state.n_replicas):
            alone = run(
                _seeded(make, seed + r, state.select([r])), state.select([r]), steps
            )
            torch.testing.assert_close(
                alone.positions,
                first.positions[r : r + 1],
                **TOLERANCES[state.dtype],
                msg=f"{name}: replica {r} batched differs from a one-replica run "
                f"with seed {seed + r}",
            )

    integ = _seeded(make, seed, state)
    mid = run(integ, state, steps)
    saved = copy.deepcopy(integ.state_dict())
    end1 = run(integ, mid, steps)
    again = _seeded(make, seed + 100, state)
    again.load_state_dict(saved)
    end2 = run(again, mid, steps)
    assert torch.equal(end1.positions, end2.positions), (
        f"{name}: continuing from state_dict() is not exact"
    )
    if config:
        check_config_roundtrip(make())


def _seeded(make: Callable[[], Integrator], seed: int, state: State) -> Integrator:
    integ = make()
    integ.seed(seed, state.n_replicas, state.device)
    return integ
