"""Figures of 4- and 5-site waters (virtual sites) against OpenMM.

    python benchmarks/virtual_sites_parity.py

For the inputs of tests/data/virtual_sites (OPC + ff19SB peptide, TIP4P-Ew in a
triclinic box, TIP5P; each as prmtop + rst7 and as OpenMM System XML + PDB), prints
|ΔE| (kcal/mol) and max |ΔF| (kcal/mol/Å, every atom, site rows as OpenMM reports them)
against OpenMM's Reference platform in double precision, two ways:

- ``placed``: our PotentialSum (sites rebuilt from their parents) against OpenMM after
  ``Context.computeVirtualSites``, from the file's coordinates;
- ``as given``: ``tmd energy``'s evaluation (sites where the file has them) against
  OpenMM's ``getState`` after ``setPositions``.

Exit status 1 when any figure exceeds the acceptance (max(1e-3, 1e-7 |E|) kcal/mol,
1e-3 kcal/mol/Å).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.plugins.amber.openmm_reference import evaluate  # noqa: E402
from tests.plugins.amber.test_virtual_sites import (  # noqa: E402
    CUTOFFS,
    MODES,
    ROUTES,
    coordinates,
    openmm_placed,
    openmm_system,
    our_potential,
    our_system,
)
from torchmd_core import State  # noqa: E402


def figures(name: str, route: str, mode: str) -> list[tuple[str, float, float, float]]:
    """(how, |ΔE|, max |ΔF|, energy tolerance) for both conventions."""
    omm = openmm_system(name, route, mode)
    xyz, box = coordinates(name, route)
    periodic = mode == "rf_periodic"
    potential = our_potential(our_system(name, route), name, mode)
    state = State.from_coordinates(
        torch.as_tensor(xyz), torch.as_tensor(box) if periodic else None
    )
    out = []
    for how, rebuild in (("placed", True), ("as given", False)):
        at = openmm_placed(omm, xyz, box) if rebuild else xyz
        energy, forces = evaluate(omm, at, box if periodic else None)
        with torch.no_grad():
            e, f = potential.energy_and_forces(
                state, site_forces=True, rebuild_sites=rebuild
            )
        de = abs(float(e[0]) - energy)
        df = float(np.abs(f[0].numpy() - forces).max())
        out.append((how, de, df, max(1e-3, 1e-7 * abs(energy))))
    return out


def main() -> int:
    worst = 0.0
    header = ("system", "route", "mode", "how", "|ΔE|", "max|ΔF|")
    print("{:<12} {:<7} {:<15} {:<9} {:>9} {:>9}".format(*header))
    for name in sorted(CUTOFFS):
        for route in ROUTES:
            for mode in MODES:
                for how, de, df, tol in figures(name, route, mode):
                    worst = max(worst, de / tol, df / 1e-3)
                    print(
                        f"{name:<12} {route:<7} {mode:<15} {how:<9} {de:9.2e} {df:9.2e}"
                    )
    print(f"worst figure / acceptance: {worst:.2e}")
    return int(worst > 1.0)


if __name__ == "__main__":
    sys.exit(main())
