"""Figures of the nonbonded potential against OpenMM 8.6.1 (Reference platform, double).

    python benchmarks/nonbonded_parity.py

Prints, per system and method, the largest energy error of the terms lj, coulomb and
dispersion_correction (kcal/mol), the error of their sum, the largest force-component
error (kcal/mol/Å), and the float32 error relative to float64; then a timing of one
energy + forces evaluation (analytic vs autograd). Random systems are built by
tests/plugins/nonbonded/openmm_systems.py, real ones from tests/reference.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from torchmd_plugins.nonbonded.nonbonded import Nonbonded  # noqa: E402

from tests.plugins.nonbonded import test_reference as ref_tests  # noqa: E402
from tests.plugins.nonbonded.conftest import BOXES  # noqa: E402
from tests.plugins.nonbonded.openmm_systems import MODES, openmm_terms, random_system  # noqa: E402
from torchmd_core import Potential, PotentialSum, State  # noqa: E402

HEADER = (
    f"{'system':34s} {'method':26s} {'max dE term':>11s} {'dE total':>10s} "
    f"{'max dF':>9s} {'f32 rel':>9s}"
)


def row(
    label: str, mode: str, d_term: float, d_total: float, d_force: float, f32: float
) -> str:
    """One line of the table: errors in kcal/mol, kcal/mol/Å, and relative."""
    errors = f"{d_term:11.1e} {d_total:10.1e} {d_force:9.1e} {f32:9.1e}"
    return f"{label:34s} {mode:26s} {errors}"


def _f32_relative(pot: Nonbonded, state: State) -> float:
    with torch.no_grad():
        e64 = float(pot.energy(state)[0])
        e32 = float(pot.to(torch.float32).energy(state.to(dtype=torch.float32))[0])
    pot.to(torch.float64)
    return abs(e32 - e64) / abs(e64)


def random_systems() -> None:
    print(HEADER)
    for nbfix in (False, True):
        for box, geometry in BOXES.items():
            rs = random_system(
                seed=11 if box == "orthorhombic" else 12, nbfix=nbfix, **geometry
            )
            label = f"random {rs.n_atoms} {box}{' nbfix' if nbfix else ''}"
            for name, mode in MODES.items():
                if box == "triclinic" and not mode.periodic:
                    continue
                pot = Nonbonded(Nonbonded.Config(**mode.config()), rs.system())
                box_t = torch.as_tensor(rs.box)[None] if mode.periodic else None
                state = State(positions=torch.as_tensor(rs.positions)[None], box=box_t)
                reference = openmm_terms(rs, mode)
                e_ref, f_ref = reference.pop("total")
                terms = pot.energy_terms(state)
                energy, forces = pot.energy_and_forces(state)
                d_term = max(
                    abs(float(terms[k][0]) - v[0]) for k, v in reference.items()
                )
                d_total = abs(float(energy[0]) - e_ref)
                d_force = float(np.abs(forces[0].numpy() - f_ref).max())
                f32 = _f32_relative(pot, state)
                print(row(label, name, d_term, d_total, d_force, f32))


def reference_systems() -> None:
    print(HEADER)
    for case in ref_tests.ALL_CASES:
        ref = ref_tests.load_reference(case)
        pot = Nonbonded(
            ref_tests.config_of(ref["meta"]), ref_tests.openmm_route_system(case)
        )
        state = ref_tests.state_of(ref)
        terms = pot.energy_terms(state)
        energy, forces = pot.energy_and_forces(state)
        d_term, e_ref, f_ref = 0.0, 0.0, np.zeros_like(ref["positions"])
        for name in ref_tests.TERMS:
            value = float(ref.get(f"energy_{name}", 0.0))
            e_ref += value
            f_ref = f_ref + ref.get(f"forces_{name}", 0.0)
            if name in terms:
                d_term = max(d_term, abs(float(terms[name][0]) - value))
        d_force = float(np.abs(forces[0].numpy() - f_ref).max())
        system, mode = case.split("__")
        label = f"{system} {ref['meta']['n_atoms']}"
        d_total = abs(float(energy[0]) - e_ref)
        print(row(label, mode, d_term, d_total, d_force, _f32_relative(pot, state)))


def dhfr() -> None:
    """The 23,558-atom DHFR box, when ../shared/data is beside the checkout."""
    import json

    from tests.conftest import SHARED
    from tests.plugins.nonbonded.openmm_systems import system_from_openmm
    from tests.reference import make_reference

    if not SHARED.exists():
        return
    for mode in make_reference.DHFR_MODES:
        ref = make_reference.dhfr_reference(mode, SHARED)
        ref["meta"] = json.loads(str(ref["meta"]))
        pot = Nonbonded(
            ref_tests.config_of(ref["meta"]),
            system_from_openmm(
                make_reference.dhfr(make_reference.MODES[mode], SHARED).system
            ),
        )
        state = ref_tests.state_of(ref)
        terms = pot.energy_terms(state)
        energy, forces = pot.energy_and_forces(state)
        names = [n for n in ref_tests.TERMS if f"energy_{n}" in ref]
        e_ref = sum(float(ref[f"energy_{n}"]) for n in names)
        f_ref = sum(ref[f"forces_{n}"] for n in names)
        d_term = max(abs(float(terms[n][0]) - float(ref[f"energy_{n}"])) for n in names)
        d_force = float(np.abs(forces[0].numpy() - f_ref).max())
        d_total = abs(float(energy[0]) - e_ref)
        f32 = _f32_relative(pot, state)
        print(row("dhfr 23558", mode, d_term, d_total, d_force, f32))


def timings() -> None:
    threads = torch.get_num_threads()
    print(
        f"\none energy + forces (CPU time, {threads} threads, neighbour list prebuilt)"
    )
    for n_side in (10, 20, 30):
        length = 3.1 * n_side
        rs = random_system(seed=1, n_side=n_side, lengths=(length,) * 3)
        pot = Nonbonded(Nonbonded.Config(cutoff=9.0, switch_distance=7.5), rs.system())
        for dtype in (torch.float64, torch.float32):
            p = pot.to(dtype)
            state = State(
                positions=torch.as_tensor(rs.positions)[None],
                box=torch.as_tensor(rs.box)[None],
            ).to(dtype=dtype)
            state = PotentialSum([p], system=rs.system()).prepare(state)
            analytic = _cpu_ms(p.energy_and_forces, state)
            autograd = _cpu_ms(partial(Potential.energy_and_forces, p), state)
            print(
                f"  N={rs.n_atoms:6d} pairs={state.neighbors.n_pairs:8d} "
                f"{str(dtype)[6:]:8s} analytic {analytic:7.1f} ms   "
                f"autograd {autograd:7.1f} ms"
            )


def _cpu_ms(fn: Callable[[State], object], state: State, repeat: int = 5) -> float:
    """Mean CPU time of ``fn(state)`` in ms (CPU time: the machine is shared)."""
    with torch.no_grad():
        fn(state)
        t0 = time.process_time()
        for _ in range(repeat):
            fn(state)
    return (time.process_time() - t0) / repeat * 1e3


if __name__ == "__main__":
    random_systems()
    print()
    reference_systems()
    dhfr()
    timings()
