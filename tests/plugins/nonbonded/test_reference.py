"""The ``nonbonded`` potential on the real systems of tests/reference (OpenMM).

Two routes to our System: (1) the nonbonded part of the very OpenMM System the reference
was made from (tests/reference/make_reference.py builds it with OpenMM's own loaders;
openmm_systems.system_from_openmm reads its forces), which checks the potential
independently of our loaders; (2) our own topology loaders, when registered, which
checks what they produce for the nonbonded terms. Terms compared: lj, coulomb,
dispersion_correction (energies and forces); total within max(1e-3, 1e-7|E|) kcal/mol,
force components within 1e-3 kcal/mol/Å.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torchmd_plugins.nonbonded.nonbonded import Nonbonded

from tests.conftest import REFERENCE
from tests.plugins.nonbonded.openmm_systems import system_from_openmm
from torchmd_core import PluginNotFoundError, State, System

TERMS = ("lj", "coulomb", "dispersion_correction")
ALL_CASES = sorted(p.name.removesuffix(".npz") for p in REFERENCE.glob("*__*.npz"))
FAST_CASES = [
    "ala2_vacuum__nocutoff",
    "ala2_ljpair__rf_nonperiodic",
    "ala2_solv__rf_periodic_switch",
    "ala2_solv_ljpair__rf_periodic_switch",
    "waterbox__rf_periodic",
    "ala3__nocutoff",
    "peptide_dodec__rf_periodic_eps50",
]
SLOW_CASES = [c for c in ALL_CASES if c not in FAST_CASES]


def _cases(names: list[str], slow: bool = False) -> list[Any]:
    marks = [pytest.mark.slow] if slow else []
    return [pytest.param(n, id=n, marks=marks) for n in names if n in ALL_CASES]


def load_reference(case: str) -> dict[str, Any]:
    data = np.load(REFERENCE / f"{case}.npz")
    out = {k: data[k] for k in data.files}
    out["meta"] = json.loads(str(data["meta"]))
    return out


def config_of(meta: dict[str, Any]) -> Nonbonded.Config:
    cfg: dict[str, Any] = {"cutoff": meta["cutoff"]}
    if meta["cutoff"] is not None:
        cfg.update(dispersion_correction=meta["dispersion_correction"])
        if meta["reaction_field_dielectric"] is not None:
            cfg["reaction_field_dielectric"] = meta["reaction_field_dielectric"]
        if meta["switch_distance"] is not None:
            cfg["switch_distance"] = meta["switch_distance"]
    return Nonbonded.Config(**cfg)


def state_of(ref: dict[str, Any], dtype: torch.dtype = torch.float64) -> State:
    box = torch.as_tensor(ref["box"])[None] if ref["meta"]["periodic"] else None
    return State(positions=torch.as_tensor(ref["positions"])[None], box=box).to(
        dtype=dtype
    )


def openmm_route_system(case: str) -> System:
    make_reference = pytest.importorskip("tests.reference.make_reference")
    name, mode = case.split("__")
    built_case = make_reference.CASES[name]
    built = built_case.build(built_case.mode_table[mode])
    return system_from_openmm(built.system)


def assert_matches_reference(system: System, ref: dict[str, Any]) -> None:
    pot = Nonbonded(config_of(ref["meta"]), system)
    state = state_of(ref)
    positions = state.positions.clone().requires_grad_(True)
    terms = pot.energy_terms(state.replace(positions=positions))
    total = 0.0
    total_ref = 0.0
    for name in TERMS:
        e_ref = float(ref.get(f"energy_{name}", 0.0))
        f_ref = ref.get(f"forces_{name}", np.zeros_like(ref["positions"]))
        if name not in terms:
            assert e_ref == 0.0, f"{name} is in the reference but not configured"
            continue
        value = terms[name]
        e = float(value[0].detach())
        assert abs(e - e_ref) <= max(1e-3, 1e-7 * abs(e_ref)), (
            f"{name}: {e} vs OpenMM {e_ref}"
        )
        if value.requires_grad:
            (grad,) = torch.autograd.grad(value.sum(), positions, retain_graph=True)
            error = np.abs(-grad[0].numpy() - f_ref).max()
            assert error <= 1e-3, f"{name} forces differ by {error:.2e} kcal/mol/Å"
        total, total_ref = total + e, total_ref + e_ref
    assert abs(total - total_ref) <= max(1e-3, 1e-7 * abs(total_ref))


@pytest.mark.parametrize("case", _cases(FAST_CASES) + _cases(SLOW_CASES, slow=True))
def test_matches_openmm_reference(case: str) -> None:
    assert_matches_reference(openmm_route_system(case), load_reference(case))


@pytest.mark.parametrize(
    "case",
    _cases(
        [
            "ala2_solv__rf_periodic_switch",
            "waterbox__rf_periodic",
            "peptide_dodec__rf_periodic",
        ]
    ),
)
def test_float32_within_1e5_relative_on_solvated_systems(case: str) -> None:
    ref = load_reference(case)
    pot = Nonbonded(config_of(ref["meta"]), openmm_route_system(case))
    with torch.no_grad():
        e64 = pot.energy(state_of(ref))
        e32 = pot.to(torch.float32).energy(state_of(ref, torch.float32))
    assert e32.dtype == torch.float32
    assert abs(float(e32[0]) - float(e64[0])) <= 1e-5 * abs(float(e64[0]))


# ---------------------------------------------------------------- our loaders

LOADER_CASES = [
    "ala2_solv__rf_periodic_switch",
    "ala2_solv_ljpair__rf_periodic",
    "ala2_ljpair__nocutoff",
    "ala3__rf_nonperiodic",
    "benzamidine__nocutoff",
    "waterbox__rf_periodic_switch",
    "peptide_dodec__rf_periodic",
]
_PARAMETER_SUFFIXES = {".prm", ".par", ".rtf", ".str", ".inp"}


def loader_route_system(case: str, ref: dict[str, Any]) -> System:
    """Our loaders on the reference's input files (skip when none is registered)."""
    from torchmd_core.plugins import default_registry

    root = REFERENCE.parents[1]
    files = [root / f for f in ref["meta"]["files"]]
    topology = files[0]
    parameters = tuple(f for f in files[1:] if f.suffix.lower() in _PARAMETER_SUFFIXES)
    try:
        loader = default_registry().loader_for(topology, "topology")
    except PluginNotFoundError:
        pytest.skip(f"no topology loader registered for {topology.name}")
    return loader.load_topology(Path(topology), parameters)  # type: ignore[attr-defined,no-any-return]


@pytest.mark.parametrize("case", _cases(LOADER_CASES))
def test_loaded_system_matches_openmm_reference(case: str) -> None:
    ref = load_reference(case)
    system = loader_route_system(case, ref)
    assert system.n_atoms == ref["meta"]["n_atoms"]
    assert_matches_reference(system, ref)


# ---------------------------------------------------------------- DHFR


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["rf_periodic", "rf_periodic_switch"])
def test_dhfr_matches_openmm_reference(mode: str, shared_data: Path) -> None:
    """The 23,558-atom DHFR box (amber99sb + TIP3P by OpenMM's ForceField), live."""
    make_reference = pytest.importorskip("tests.reference.make_reference")
    ref = make_reference.dhfr_reference(mode, shared_data)
    ref["meta"] = json.loads(str(ref["meta"]))
    system = system_from_openmm(
        make_reference.dhfr(make_reference.MODES[mode], shared_data).system
    )
    assert_matches_reference(system, ref)
    pot = Nonbonded(config_of(ref["meta"]), system)
    with torch.no_grad():
        e64 = float(pot.energy(state_of(ref))[0])
        e32 = float(pot.to(torch.float32).energy(state_of(ref, torch.float32))[0])
    assert abs(e32 - e64) <= 1e-5 * abs(e64)
