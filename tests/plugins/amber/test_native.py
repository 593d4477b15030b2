"""The native bonded kernel gives the PyTorch (autograd) energies and forces, and is
used only where no autograd graph is needed."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close
from torchmd_plugins.amber.bonded import AmberBonded
from torchmd_plugins.nonbonded import native

from tests.plugins.test_openmm_parity import (
    REFERENCE,
    load_npz,
    load_system,
    reference_state,
)
from torchmd_core import State

pytestmark = pytest.mark.skipif(
    not native.native_available(), reason="native kernels not available"
)

CASES = [
    "ala2_solv__rf_periodic",  # minimum image across the box
    "ala3__nocutoff",  # Urey-Bradley, harmonic impropers, CMAP (torch part)
    "peptide_ff19sb__nocutoff",  # periodic impropers, CMAP
    "peptide_dodec__rf_periodic",  # triclinic box
]


def evaluate(pot: AmberBonded, state: State, implementation: str):
    pot.implementation = implementation
    pot._native_cache = None
    with torch.no_grad():
        energy, forces = pot.energy_and_forces(state)
    used = pot._native_cache is not None
    pot.implementation = "auto"
    return energy, forces, used


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("reference", CASES)
def test_native_bonded_matches_torch(reference, dtype):
    arrays, meta = load_npz(REFERENCE / f"{reference}.npz")
    pot = AmberBonded(AmberBonded.Config(), load_system(meta["system"])).to(dtype)
    state = reference_state(arrays, dtype)
    if state.box is not None:  # two replicas, the second shifted by a box vector
        shifted = state.positions + state.box[:, 1][:, None]
        state = State(
            positions=torch.cat([state.positions, shifted]),
            box=state.box.repeat(2, 1, 1),
        )
    e1, f1, used = evaluate(pot, state, "auto")
    e2, f2, _ = evaluate(pot, state, "torch")
    assert used
    assert e1.dtype == dtype and f1.dtype == dtype
    scale = float(f2.abs().max())
    # float32: the native kernel works in float64, the torch kernels in float32.
    rtol = 1e-12 if dtype == torch.float64 else 2e-6
    assert_close(e1, e2, rtol=rtol, atol=rtol * float(e2.abs().max()))
    assert_close(f1, f2, rtol=0.0, atol=rtol * 10 * scale)


def test_native_bonded_is_not_used_for_gradients():
    arrays, meta = load_npz(REFERENCE / "ala2_vacuum__nocutoff.npz")
    pot = AmberBonded(AmberBonded.Config(), load_system(meta["system"]))
    state = reference_state(arrays)
    positions = state.positions.clone().requires_grad_(True)
    energy, forces = pot.energy_and_forces(State(positions=positions))
    assert pot._native_cache is None and forces.requires_grad
    pot.tables["bonds"].k.requires_grad_(True)
    energy, forces = pot.energy_and_forces(state)
    assert pot._native_cache is None and energy.requires_grad
