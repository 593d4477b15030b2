"""The quickstart from Python: the run that ala2.yaml describes, then a short summary.

``tmd run examples/quickstart/ala2.yaml`` and this script do the same: build the
simulation from the config, minimise if it asks to, run the config's steps with its
reporters (a csv log and a DCD trajectory in examples/quickstart/output/), and print
where it ended.

    python examples/quickstart/run_ala2.py                # the config's 3,000 steps
    python examples/quickstart/run_ala2.py --steps 200 --overwrite
"""

from __future__ import annotations

import argparse
from pathlib import Path

from torchmd_core import Simulation, load_config

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=HERE / "ala2.yaml")
    parser.add_argument(
        "--steps", type=int, help="steps to run (default: the config's)"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace earlier output"
    )
    args = parser.parse_args(argv)

    config = load_config(args.config)  # validated; paths relative to the config file
    simulation = Simulation.from_config(
        config
    )  # system, potentials, integrator, reporters
    print(simulation.system.summary())
    if config.minimize is not None:
        simulation.minimize(config.minimize.tolerance_kcal_mol_A)
    steps = config.steps if args.steps is None else args.steps
    simulation.run(steps, overwrite=args.overwrite)

    frame = simulation.measure(
        simulation.state
    )  # energies and temperature, per replica
    print(
        f"{steps} steps, {float(simulation.state.time_ps):.2f} ps: "
        f"potential {float(frame.potential_energy[0]):.1f} kcal/mol, "
        f"temperature {float(frame.temperature_K[0]):.0f} K"
    )
    for reporter in config.reporters:
        print(f"{reporter.kind}: {reporter.file}")  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
