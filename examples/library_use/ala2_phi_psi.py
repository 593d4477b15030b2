"""torchmd-core inside research code: simulate, then analyse with mdtraj and matplotlib.

Four replicas of alanine dipeptide in vacuum (AMBER parameters from
tests/data/ala2_vacuum, all pairs, no cutoff) run as one batch of Langevin dynamics at
300 K with 2 fs steps and rigid bonds to hydrogen. The config is a Python dict here,
the same keys a YAML file takes. The reporters write a csv log and one DCD trajectory
per replica; then

- mdtraj loads the trajectories with the prmtop topology and computes the backbone
  dihedrals φ/ψ and the heavy-atom RMSD to the starting structure;
- the csv log gives potential, total energy and temperature along the run;
- matplotlib (Agg backend, no display needed) draws energies, temperature, the
  Ramachandran plot and the RMSD into one PNG.

    python examples/library_use/ala2_phi_psi.py   # 20 ps x 4 replicas, ~1 min
    python examples/library_use/ala2_phi_psi.py --steps 2000 --out /tmp/ala2
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import matplotlib
import mdtraj
import numpy as np

from torchmd_core import Simulation, parse_config

matplotlib.use("Agg")  # files only: works without a display
import matplotlib.pyplot as plt

HERE = Path(__file__).resolve().parent
DATA = HERE.parents[1] / "tests" / "data" / "ala2_vacuum"
TOPOLOGY, COORDINATES = DATA / "ala2_vacuum.prmtop", DATA / "ala2_vacuum.pdb"
N_REPLICAS, TEMPERATURE_K = 4, 300.0


def simulate(out: Path, steps: int, interval: int) -> Simulation:
    """Run the replicas; the csv log and trajectories go to ``out``."""
    config = parse_config(
        {
            "system": {
                "topology": str(TOPOLOGY),
                "coordinates": str(COORDINATES),
                "constraints": "hbonds",
            },
            "potentials": [{"kind": "amber"}, {"kind": "nonbonded"}],  # no cutoff
            "integrator": {
                "kind": "langevin",
                "temperature_K": TEMPERATURE_K,
                "timestep_fs": 2.0,
                "friction_per_ps": 1.0,
            },
            "reporters": [
                {"kind": "csv", "file": str(out / "ala2.csv"), "interval": interval},
                {"kind": "dcd", "file": str(out / "ala2.dcd"), "interval": interval},
            ],
            "n_replicas": N_REPLICAS,
            "initial_temperature_K": TEMPERATURE_K,
            "steps": steps,
            "seed": 7,
        }
    )
    simulation = Simulation.from_config(config)
    simulation.minimize(tolerance_kcal_mol_A=1.0)
    simulation.run(steps)
    return simulation


def read_log(path: Path) -> dict[str, np.ndarray]:
    """The csv reporter's columns as float arrays (one row per step and replica)."""
    with path.open() as fh:
        rows = list(csv.DictReader(fh))
    return {
        name: np.array([float(row[name]) if row[name] else np.nan for row in rows])
        for name in rows[0]
    }


def analyse(out: Path) -> dict[str, np.ndarray]:
    """φ, ψ (degrees) and heavy-atom RMSD (Å), each (n_replicas, n_frames)."""
    start = mdtraj.load(str(COORDINATES))
    heavy = start.topology.select("element != H")
    phi, psi, rmsd = [], [], []
    for r in range(N_REPLICAS):
        traj = mdtraj.load_dcd(str(out / f"ala2_r{r}.dcd"), top=str(TOPOLOGY))
        phi.append(np.degrees(mdtraj.compute_phi(traj)[1][:, 0]))
        psi.append(np.degrees(mdtraj.compute_psi(traj)[1][:, 0]))
        rmsd.append(10.0 * mdtraj.rmsd(traj, start, atom_indices=heavy))  # nm -> Å
    return {"phi": np.array(phi), "psi": np.array(psi), "rmsd": np.array(rmsd)}


def plot(log: dict[str, np.ndarray], angles: dict[str, np.ndarray], png: Path) -> None:
    fig, ax = plt.subplots(2, 2, figsize=(10, 8), layout="constrained")
    for r in range(N_REPLICAS):
        rows = log["replica"] == r
        t = log["time_ps"][rows]
        ax[0, 0].plot(t, log["potential_kcal_mol"][rows], lw=0.8, label=f"replica {r}")
        ax[0, 0].plot(t, log["total_kcal_mol"][rows], lw=0.8, ls="--", color=f"C{r}")
        ax[0, 1].plot(t, log["temperature_K"][rows], lw=0.8)
        ax[1, 1].plot(t, angles["rmsd"][r], lw=0.8)
        ax[1, 0].scatter(angles["phi"][r], angles["psi"][r], s=4)
    ax[0, 0].set(
        xlabel="time (ps)",
        ylabel="energy (kcal/mol)",
        title="potential (solid) and total (dashed)",
    )
    ax[0, 0].legend(fontsize="small")
    ax[0, 1].axhline(TEMPERATURE_K, color="k", lw=0.8)
    ax[0, 1].set(xlabel="time (ps)", ylabel="temperature (K)", title="temperature")
    ax[1, 0].set(
        xlim=(-180, 180),
        ylim=(-180, 180),
        xlabel="φ (degrees)",
        ylabel="ψ (degrees)",
        title="Ramachandran plot",
    )
    ax[1, 1].set(
        xlabel="time (ps)", ylabel="RMSD (Å)", title="heavy-atom RMSD to the start"
    )
    fig.savefig(png, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10_000, help="steps per replica")
    parser.add_argument(
        "--interval", type=int, default=100, help="steps between frames"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=HERE / "output",
        help="folder for the log, trajectories and figure (must not hold them yet)",
    )
    args = parser.parse_args(argv)

    args.out.mkdir(parents=True, exist_ok=True)
    simulate(args.out, args.steps, args.interval)
    log = read_log(args.out / "ala2.csv")
    angles = analyse(args.out)
    plot(log, angles, args.out / "ala2.png")

    later = log["time_ps"] >= log["time_ps"].max() / 2  # after a short equilibration
    summary = {
        "mean_temperature_K": float(log["temperature_K"][later].mean()),
        "beta_fraction": float((angles["phi"] < -90).mean()),  # β/C5 vs C7eq, αR
        "max_rmsd_A": float(angles["rmsd"].max()),
    }
    print(
        f"mean temperature over the second half: {summary['mean_temperature_K']:.0f} K"
    )
    share = 100 * summary["beta_fraction"]
    print(f"frames with φ < -90° (β, C5; the rest mostly C7eq, αR): {share:.0f}%")
    print(f"largest heavy-atom RMSD to the start: {summary['max_rmsd_A']:.2f} Å")
    print(f"figure: {args.out / 'ala2.png'}")
    return summary


if __name__ == "__main__":
    main()
