"""The ``tmd`` command: run, energy, plugins, schema.

User errors print one clear message and exit with code 2 (bad input) or 1 (a run
that failed); no traceback. Set ``TORCHMD_CORE_DEBUG=1`` to see tracebacks of
unexpected internal errors.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torchmd_core.errors import ConfigError, OutputExistsError, TorchMDError

__all__ = ["main"]

DEBUG_ENV = "TORCHMD_CORE_DEBUG"


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as exit code 2 with a short hint."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    from torchmd_core import __version__

    parser = _Parser(
        prog="tmd",
        description="torchmd-core: differentiable molecular dynamics on PyTorch.",
    )
    parser.add_argument(
        "--version", action="version", version=f"tmd (torchmd-core) {__version__}"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    run = sub.add_parser(
        "run",
        help="run a simulation from a YAML config",
        description="Run a simulation to the config's 'steps'. Existing output files "
        "are never replaced unless --overwrite is given. Ctrl-C (or SIGTERM) stops "
        "after the current step and writes a checkpoint (the checkpoint reporter's "
        "file, else CONFIG.interrupted.chk); --resume continues exactly from it, "
        "appending to the outputs. Exit codes: 0 done, 1 run failed, 2 bad input, "
        "130/143 interrupted.",
    )
    run.add_argument(
        "config", type=Path, metavar="CONFIG", help="YAML configuration file"
    )
    run.add_argument(
        "--resume",
        type=Path,
        metavar="CHECKPOINT",
        help="continue from a checkpoint to the config's steps",
    )
    run.add_argument(
        "--overwrite", action="store_true", help="replace existing output files"
    )
    run.add_argument(
        "--quiet", action="store_true", help="no progress bar and no summary"
    )
    run.set_defaults(func=_cmd_run)

    energy = sub.add_parser(
        "energy",
        help="print the energy terms (and forces) of one structure",
        description="Evaluate every energy term of a structure, flexible (no "
        "constraints). Without --cutoff: all pairs, non-periodic. With --cutoff and a "
        "box (from the coordinates or --box): periodic reaction field; without a box: "
        "non-periodic reaction field. Virtual sites (extra points) are evaluated where "
        "the coordinate file puts them and their forces handed on to their parent "
        "atoms, as OpenMM's Context.getState reports them; --forces keeps the force "
        "that acted on each site in its row, as OpenMM does.",
    )
    energy.add_argument("topology", type=Path, metavar="TOPOLOGY")
    energy.add_argument("coordinates", type=Path, metavar="COORDINATES")
    energy.add_argument(
        "--parameters",
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help="force-field parameter file (repeatable)",
    )
    energy.add_argument(
        "--box",
        type=float,
        nargs="+",
        metavar="X",
        help="box lengths A B C (Å) [and angles ALPHA BETA GAMMA (°)]",
    )
    energy.add_argument("--cutoff", type=float, metavar="ANGSTROM")
    energy.add_argument("--switch-distance", type=float, metavar="ANGSTROM")
    energy.add_argument(
        "--reaction-field-dielectric", type=float, default=78.3, metavar="EPS"
    )
    energy.add_argument("--no-dispersion-correction", action="store_true")
    energy.add_argument(
        "--precision", choices=["float32", "float64", "double"], default="float64"
    )
    energy.add_argument("--device", default="cpu", metavar="DEV")
    energy.add_argument(
        "--json", action="store_true", help="print one JSON object on stdout"
    )
    energy.add_argument(
        "--forces",
        type=Path,
        metavar="FILE.npy",
        help="write (n_atoms, 3) float64 forces, kcal/mol/Å (replaces an earlier .npy "
        "or empty file)",
    )
    energy.add_argument(
        "--overwrite", action="store_true", help="replace an existing --forces file"
    )
    energy.set_defaults(func=_cmd_energy)

    plugins = sub.add_parser("plugins", help="list installed components by role")
    plugins.add_argument(
        "--check",
        action="store_true",
        help="import and validate every plugin; exit 1 on problems",
    )
    plugins.set_defaults(func=_cmd_plugins)

    schema = sub.add_parser(
        "schema", help="print the JSON Schema of configs (all installed kinds)"
    )
    schema.set_defaults(func=_cmd_schema)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except TorchMDError as err:
        if os.environ.get(DEBUG_ENV):
            traceback.print_exc()
        print(str(err), file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("tmd: interrupted", file=sys.stderr)
        return 130
    except OSError as err:  # disk full, permissions, ... while reading or writing files
        if os.environ.get(DEBUG_ENV):
            traceback.print_exc()
        where = f" '{err.filename}'" if err.filename else ""
        print(f"tmd: cannot access{where}: {err.strerror or err}", file=sys.stderr)
        return 1
    except Exception as err:  # the last line of defence: no raw traceback for users
        if os.environ.get(DEBUG_ENV):
            traceback.print_exc()
        print(
            f"tmd: internal error: {type(err).__name__}: {err}\n"
            f"This is a bug in torchmd-core or a plugin; rerun with {DEBUG_ENV}=1 for "
            "the traceback and report it.",
            file=sys.stderr,
        )
        return 1


# -- run -------------------------------------------------------------------------------


def _cmd_run(args: argparse.Namespace) -> int:
    from torchmd_core.runner import run_config

    return run_config(
        args.config, resume=args.resume, overwrite=args.overwrite, quiet=args.quiet
    )


# -- energy ----------------------------------------------------------------------------


def _cmd_energy(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from torchmd_core.builder import load_system, resolve_device, resolve_dtype
    from torchmd_core.config import SystemConfig
    from torchmd_core.errors import TopologyError
    from torchmd_core.plugins import default_registry
    from torchmd_core.potential import PotentialSum
    from torchmd_core.state import State

    if args.box is not None and len(args.box) not in (3, 6):
        raise ConfigError("--box: give 3 lengths (Å) or 3 lengths and 3 angles (°)")
    if args.switch_distance is not None and args.cutoff is None:
        raise ConfigError("--switch-distance needs --cutoff")
    if args.forces is not None:
        _check_forces_file(args.forces, args.overwrite)
    registry = default_registry()
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.precision)
    system_cfg = _validated(
        SystemConfig,
        dict(
            topology=args.topology,
            coordinates=args.coordinates,
            parameters=tuple(args.parameters),
            box=None if args.box is None else tuple(args.box),
        ),
        _ENERGY_FLAGS,
    )
    system, coords = load_system(system_cfg, registry)
    if not system.terms and system.nonbonded is None:
        raise TopologyError(
            f"topology '{args.topology}' holds no force-field parameters; give a "
            "prmtop, a psf (with --parameters), a GROMACS top or an OpenMM System XML"
        )
    box = None
    if args.cutoff is not None:
        box = (
            coords.box if args.box is not None else _energy_box(coords.box, system.box)
        )
    periodic = box is not None
    nonbonded: dict[str, Any] = {"kind": "nonbonded"}
    if args.cutoff is not None:
        nonbonded.update(
            cutoff=args.cutoff,
            reaction_field_dielectric=args.reaction_field_dielectric,
            dispersion_correction=not args.no_dispersion_correction,
        )
        if args.switch_distance is not None:
            nonbonded["switch_distance"] = args.switch_distance
    terms = []
    for raw in ({"kind": "amber"}, nonbonded):
        cls = registry.get("potentials", raw["kind"])
        cfg = _validated(cls.Config, raw, _ENERGY_FLAGS)
        terms.append(cls(cfg, system))
    potential = PotentialSum(terms, system=system).to(device=device, dtype=dtype)
    state = State.from_coordinates(coords.positions, box, dtype=dtype, device=device)
    if periodic:
        from torchmd_core.geometry import min_box_width

        half = 0.5 * float(min_box_width(state.box)[0])  # type: ignore[arg-type]
        if args.cutoff > half:
            raise ConfigError(
                f"--cutoff {args.cutoff} Å is more than half the smallest box width "
                f"({half:.3f} Å)"
            )
    _note_misplaced_sites(potential, state, args.coordinates)
    with torch.no_grad():
        # Virtual sites where the file has them, as OpenMM evaluates given coordinates.
        values = potential.energy_terms(state, rebuild_sites=False)
        _, forces = (
            potential.energy_and_forces(state, site_forces=True, rebuild_sites=False)
            if args.forces is not None
            else (None, None)
        )
    table = {name: float(v[0]) for name, v in values.items()}
    total = float(sum(table.values()))
    if args.forces is not None:
        assert forces is not None
        args.forces.parent.mkdir(parents=True, exist_ok=True)
        with args.forces.open("wb") as fh:  # exactly this name (np.save would add .npy)
            np.save(fh, forces[0].detach().cpu().to(torch.float64).numpy())
    if args.json:
        print(json.dumps({"total": total, "terms": table, "n_atoms": system.n_atoms}))
    else:
        width = max(len(n) for n in [*table, "total"])
        mode = (
            "no cutoff"
            if args.cutoff is None
            else (
                f"reaction field, cutoff {args.cutoff} Å, "
                f"{'periodic' if periodic else 'non-periodic'}"
            )
        )
        print(f"{system.n_atoms} atoms; {mode}; {args.precision}")
        for name, value in table.items():
            print(f"  {name:<{width}}  {value:>18.6f} kcal/mol")
        print(f"  {'total':<{width}}  {total:>18.6f} kcal/mol")
    return 0


def _note_misplaced_sites(potential: Any, state: Any, coordinates: Path) -> None:
    """Say on stderr when the file's virtual sites are not where their parents put them
    (rounded PDB coordinates, another water geometry): the energies are then those of
    the positions as given, while a simulation moves the sites onto their parents."""
    import torch

    sites = potential.virtual_sites
    if sites is None:
        return
    with torch.no_grad():
        placed = potential.place_sites(state).positions
        index = sites.sites.to(state.device)
        offset = (placed[:, index] - state.positions[:, index]).norm(dim=-1).max()
    if float(offset) > 1e-5:
        print(
            f"tmd energy: note: the {len(sites)} virtual sites in '{coordinates}' are "
            f"up to {float(offset):.2g} Å from where their parent atoms place them; "
            "the energies are those of the positions as given (as OpenMM reports "
            "them), a simulation moves the sites onto their parents",
            file=sys.stderr,
        )


def _check_forces_file(path: Path, overwrite: bool) -> None:
    """Refuse to replace a file that is not an earlier forces output or empty."""
    if overwrite or not path.exists():
        return
    if path.is_dir():
        raise OutputExistsError(f"--forces '{path}' is a directory; give a file name")
    with path.open("rb") as fh:
        head = fh.read(6)
    if head not in (b"", b"\x93NUMPY"):
        raise OutputExistsError(
            f"forces file '{path}' exists and is not a .npy array; remove it, choose "
            "another name or pass --overwrite"
        )


def _energy_box(coordinates_box: Any, topology_box: Any) -> Any:
    """The box of ``tmd energy`` with a cutoff: the coordinate file's, else the
    topology's. When both hold the same lattice to the coordinate file's precision (a
    PDB CRYST1 rounds to 0.001 Å), the topology's exact box is used."""
    import torch

    if coordinates_box is None or topology_box is None:
        return topology_box if coordinates_box is None else coordinates_box
    m = coordinates_box @ torch.linalg.inv(
        topology_box
    )  # integer, det ±1 for one lattice
    if (
        torch.allclose(m, m.round(), rtol=0.0, atol=2e-4)
        and abs(abs(float(torch.linalg.det(m.round()))) - 1.0) < 1e-9
    ):
        return topology_box
    return coordinates_box


_ENERGY_FLAGS = {
    "cutoff": "--cutoff",
    "switch_distance": "--switch-distance",
    "reaction_field_dielectric": "--reaction-field-dielectric",
    "box": "--box",
    "topology": "TOPOLOGY",
    "coordinates": "COORDINATES",
    "parameters": "--parameters",
}


def _validated(model: Any, data: dict[str, Any], flags: dict[str, str]) -> Any:
    from pydantic import ValidationError

    try:
        return model.model_validate(data)
    except ValidationError as err:
        problems = []
        for e in err.errors(include_url=False):
            field = str(e["loc"][0]) if e["loc"] else ""
            msg = str(e["msg"]).removeprefix("Value error, ")
            problems.append(f"{flags.get(field, field)}: {msg[:1].lower() + msg[1:]}")
        raise ConfigError(problems) from None


# -- plugins and schema ----------------------------------------------------------------


def _cmd_plugins(args: argparse.Namespace) -> int:
    from torchmd_core.plugins import default_registry

    registry = default_registry()
    rows = [
        (
            r.role,
            r.kind,
            r.plugin,
            f"{r.distribution} {r.version}".strip(),
            r.description,
        )
        for r in registry
    ]
    problems = [str(p) for p in registry.problems]
    if args.check:
        problems.extend(_check_plugins(registry))
    headers = ("role", "kind", "plugin", "distribution", "description")
    widths = [
        max(len(str(x)) for x in col) for col in zip(headers, *rows, strict=False)
    ]
    widths[-1] = 0
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    for row in rows:
        print(
            "  ".join(
                str(x).ljust(w) for x, w in zip(row, widths, strict=True)
            ).rstrip()
        )
    if problems:
        print(
            f"\n{len(problems)} plugin problem{'s' if len(problems) > 1 else ''}:",
            file=sys.stderr,
        )
        for p in problems:
            print(f"  {p}", file=sys.stderr)
        return 1 if args.check else 0
    if args.check:
        print(
            f"\nall {len(registry.plugins)} plugins loaded; "
            f"{len(rows)} components checked"
        )
    return 0


def _check_plugins(registry: Any) -> list[str]:
    """Validate what each plugin and registered class declares (see plugin_checks)."""
    from torchmd_core.plugin_checks import check_plugins

    return check_plugins(registry)


def _cmd_schema(args: argparse.Namespace) -> int:
    from torchmd_core.config import config_schema

    print(json.dumps(config_schema(), indent=2))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
