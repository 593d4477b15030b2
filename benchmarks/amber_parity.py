"""Figures of the loaders + ``amber`` (+ ``nonbonded``) against OpenMM.

One line per system and term.

    python benchmarks/amber_parity.py

For every stored reference in tests/reference (OpenMM Reference platform, double) and
the CHARMM36 inputs of tests/data/peptide_charmm36 (OpenMM evaluated here), prints
max |ΔE| (kcal/mol) per term and in total, max |ΔF| (kcal/mol/Å) per bonded term and
in total, and the float32 vs float64 total. With ../shared/data present it adds the
23,558-atom DHFR box (OpenMM ForceField amber99sb + tip3p, read back as System XML).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from torchmd_plugins.amber.bonded import TERM_NAMES, AmberBonded  # noqa: E402

from tests.conftest import DATA, REFERENCE, SHARED  # noqa: E402
from tests.plugins.test_openmm_parity import (  # noqa: E402
    load_npz,
    load_system,
    potential_for,
    reference_state,
)
from torchmd_core import PotentialSum, State, default_registry  # noqa: E402


def compare(
    name: str, system, potential, state, energies, forces, total_e, total_f
) -> float:
    """Print one line per term and the total.

    Returns:
        The worst total |ΔE| relative to the tolerance.
    """
    with torch.no_grad():
        terms = {k: float(v[0]) for k, v in potential.energy_terms(state).items()}
        energy, f = potential.energy_and_forces(state)
        e32 = float(
            potential.to(torch.float32).energy(state.to(dtype=torch.float32))[0]
        )
        potential.to(torch.float64)
    print(f"{name}")
    for term, want in energies.items():
        de = abs(terms.get(term, 0.0) - want)
        df = ""
        if term in TERM_NAMES and term in forces:
            single = AmberBonded(AmberBonded.Config(terms=(term,)), system)
            with torch.no_grad():
                _, ft = single.energy_and_forces(state)
            df = f"{np.abs(ft[0].numpy() - forces[term]).max():9.2e}"
        print(f"    {term:22s} {want:16.6f}  |ΔE| {de:9.2e}  |ΔF| {df}")
    de = abs(float(energy[0]) - total_e)
    df = np.abs(f[0].numpy() - total_f).max()
    rel32 = abs(e32 - float(energy[0])) / abs(float(energy[0]))
    print(
        f"    {'total':22s} {total_e:16.6f}  |ΔE| {de:9.2e}  |ΔF| {df:9.2e}  "
        f"f32 rel {rel32:8.1e}"
    )
    return de / max(1e-3, 1e-7 * abs(total_e))


def stored_references() -> float:
    worst = 0.0
    for path in sorted(REFERENCE.glob("*.npz")):
        arrays, meta = load_npz(path)
        system = load_system(meta["system"])
        energies = {t: float(arrays[f"energy_{t}"]) for t in meta["terms"]}
        forces = {t: arrays[f"forces_{t}"] for t in meta["terms"]}
        worst = max(
            worst,
            compare(
                path.stem,
                system,
                potential_for(system, meta),
                reference_state(arrays),
                energies,
                forces,
                float(arrays["energy_total"]),
                arrays["forces_total"],
            ),
        )
    return worst


def charmm36() -> float:
    import openmm.app as app
    import openmm.unit as unit

    from tests.plugins.amber.openmm_reference import evaluate, set_nonbonded

    folder = DATA / "peptide_charmm36"
    params = DATA / "waterbox" / "parameters.prm"
    pdb = app.PDBFile(str(folder / "structure.pdb"))
    xyz = np.array(pdb.getPositions(asNumpy=True).value_in_unit(unit.angstrom))
    psf = app.CharmmPsfFile(str(folder / "peptide.psf"))
    omm = psf.createSystem(
        app.CharmmParameterSet(str(params)), constraints=None, rigidWater=False
    )
    set_nonbonded(omm, "NoCutoff")
    registry = default_registry()
    system = registry.loader_for(folder / "peptide.psf", "topology").load_topology(
        folder / "peptide.psf", [params]
    )
    amber, nonbonded = (
        registry.get("potentials", "amber"),
        registry.get("potentials", "nonbonded"),
    )
    potential = PotentialSum(
        [amber(amber.Config(), system), nonbonded(nonbonded.Config(), system)],
        system=system,
    )
    e, f = evaluate(omm, xyz)
    state = State.from_coordinates(torch.as_tensor(xyz))
    return compare(
        "peptide_charmm36 (psf + CHARMM36 toppar, NBFIX) vs CharmmPsfFile",
        system,
        potential,
        state,
        {},
        {},
        e,
        f,
    )


def dhfr() -> float:
    if not SHARED.exists():
        print("dhfr: ../shared/data not found, skipped")
        return 0.0
    import importlib.util

    import openmm

    spec = importlib.util.spec_from_file_location(
        "make_reference", REFERENCE / "make_reference.py"
    )
    make_reference = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules["make_reference"] = make_reference  # dataclasses look the module up
    spec.loader.exec_module(make_reference)  # type: ignore[union-attr]
    worst = 0.0
    for mode in ("rf_periodic", "rf_periodic_switch"):
        built = make_reference.dhfr(make_reference.MODES[mode], SHARED)
        data = make_reference.reference_from_built(
            built, "dhfr", make_reference.MODES[mode]
        )
        with tempfile.TemporaryDirectory() as tmp:
            xml = Path(tmp) / "dhfr.xml"
            xml.write_text(openmm.XmlSerializer.serialize(built.system))
            start = time.perf_counter()
            pdb = SHARED / "dhfr_5dfr" / "5dfr_solv-cube_equil.pdb"
            system = (
                default_registry().loader_for(xml, "topology").load_topology(xml, [pdb])
            )
            load_s = time.perf_counter() - start
        import json

        meta = json.loads(str(data["meta"]))
        energies = {t: float(data[f"energy_{t}"]) for t in meta["terms"]}
        forces = {t: data[f"forces_{t}"] for t in meta["terms"]}
        state = reference_state({"positions": data["positions"], "box": data["box"]})
        worst = max(
            worst,
            compare(
                f"dhfr__{mode} (23,558 atoms; XML read in {load_s:.1f} s)",
                system,
                potential_for(system, meta),
                state,
                energies,
                forces,
                float(data["energy_total"]),
                data["forces_total"],
            ),
        )
    return worst


def main() -> int:
    torch.set_num_threads(2)
    worst = max(stored_references(), charmm36(), dhfr())
    print(f"worst total |ΔE| / acceptance tolerance: {worst:.2e}")
    return 0 if worst <= 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())
