"""From a validated :class:`~torchmd_core.config.SimulationConfig` to a ready
:class:`~torchmd_core.simulation.Simulation`: load files, make components, check the
combination, set up the initial state. Every setup problem is raised before the first
step, problems of one kind collected together.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from torchmd_core.config import SimulationConfig, SystemConfig
from torchmd_core.errors import ConfigError, InputFileError, TopologyError, TorchMDError
from torchmd_core.geometry import box_from_lengths_angles, min_box_width, reduce_box
from torchmd_core.loader import CoordinateLoader, Coordinates
from torchmd_core.potential import Potential
from torchmd_core.registry import Registry
from torchmd_core.simulation import Simulation, maxwell_boltzmann_velocities
from torchmd_core.state import State
from torchmd_core.system import System

if TYPE_CHECKING:
    from torchmd_core.distributed import ReplicaGroup

__all__ = [
    "build_potentials",
    "build_simulation",
    "load_system",
    "resolve_device",
    "resolve_dtype",
]


def load_system(
    config: SystemConfig, registry: Registry | None = None
) -> tuple[System, Coordinates]:
    """Read topology and coordinates with the loaders the file names (or formats) pick.

    Raises:
        InputFileError: a file is missing or unreadable.
        TopologyError: the files disagree (atom counts) or lack parameters.
    """
    from torchmd_core.plugins import default_registry

    registry = registry or default_registry()
    for path in (config.topology, config.coordinates, *config.parameters):
        if path is not None:
            _check_readable(Path(path))
    topo_loader = registry.loader_for(
        Path(config.topology), "topology", config.topology_format
    )
    system = topo_loader.load_topology(
        Path(config.topology), tuple(Path(p) for p in config.parameters)
    )
    _check_finite_parameters(system, config)
    coord_path = config.coordinates
    if coord_path is None:
        if not isinstance(topo_loader, CoordinateLoader):
            raise ConfigError(
                f"system.coordinates: required, '{Path(config.topology).name}' holds "
                "no coordinates (give a pdb, inpcrd, crd, coor, ... file)"
            )
        coord_path = config.topology
    coord_loader = registry.loader_for(
        Path(coord_path), "coordinates", config.coordinates_format
    )
    coords = coord_loader.load_coordinates(Path(coord_path), system)
    if not bool(torch.isfinite(coords.positions).all()):
        raise InputFileError(
            f"coordinate file '{coord_path}' holds NaN or infinite positions; "
            "it is corrupt"
        )
    if coords.n_atoms != system.n_atoms:
        raise TopologyError(
            f"coordinate file '{coord_path}' has {coords.n_atoms} atoms but topology "
            f"'{config.topology}' has {system.n_atoms}; use files of the same system"
        )
    if config.box is not None:
        coords = Coordinates(
            coords.positions, box_from_config(config.box), coords.velocities
        )
    # The starting structure, for terms tied to it (position restraints' reference).
    system.metadata["initial_coordinates"] = coords
    return system, coords


def _check_finite_parameters(system: System, config: SystemConfig) -> None:
    """A corrupt file can parse into NaN charges or parameters: refuse them here, for
    every loader, rather than print NaN energies or blow up at the first step."""
    bad: list[str] = []
    for name, values in (("masses", system.masses), ("charges", system.charges)):
        atoms = torch.nonzero(~torch.isfinite(values)).flatten().tolist()
        if atoms:
            bad.append(f"{name} of atoms {', '.join(map(str, atoms[:5]))}")
    for term, table in system.terms.items():
        bad.extend(
            f"{term} parameter '{key}'"
            for key, v in table.values.items()
            if not bool(torch.isfinite(v).all())
        )
    if system.nonbonded is not None:
        for key in ("sigma", "epsilon"):
            if not bool(torch.isfinite(getattr(system.nonbonded, key)).all()):
                bad.append(f"Lennard-Jones {key}")
    if bad:
        files = ", ".join(f"'{p}'" for p in (config.topology, *config.parameters))
        raise InputFileError(
            f"non-finite (NaN or infinite) values read from {files}: "
            f"{'; '.join(bad)}; the file is corrupt"
        )


def box_from_config(values: tuple[float, ...]) -> torch.Tensor:
    """(3, 3) float64 box from 3 lengths, 6 lengths + angles, or 9 components."""
    if len(values) == 3:
        return box_from_lengths_angles(*values)
    if len(values) == 6:
        return box_from_lengths_angles(*values)
    box = torch.tensor(values, dtype=torch.float64).reshape(3, 3)
    if box[0, 1] != 0 or box[0, 2] != 0 or box[1, 2] != 0:
        raise ConfigError(
            "system.box: box vectors must have a along x and b in the xy plane "
            "(a = (ax, 0, 0), b = (bx, by, 0)); give lengths and angles instead"
        )
    return reduce_box(box)


def _check_readable(path: Path) -> None:
    if not path.exists():
        raise InputFileError(f"input file '{path}' does not exist")
    if path.is_dir():
        raise InputFileError(f"input path '{path}' is a directory, expected a file")
    try:
        with path.open("rb") as fh:
            fh.read(1)
    except OSError as err:
        raise InputFileError(
            f"cannot read input file '{path}': {err.strerror}"
        ) from None


def resolve_dtype(precision: str) -> torch.dtype:
    return {
        "float32": torch.float32,
        "float64": torch.float64,
        "double": torch.float64,
    }[precision]


def resolve_device(name: str) -> torch.device:
    """The torch device for ``name``, checking it exists."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(
            f"device: {name!r} is not a torch device (cpu, cuda, cuda:1, ...)"
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"device: {name!r} requested but CUDA is not available; use device: cpu"
        )
    if (
        device.type == "cuda"
        and device.index is not None
        and device.index >= torch.cuda.device_count()
    ):
        raise ConfigError(
            f"device: {name!r} does not exist ({torch.cuda.device_count()} GPUs)"
        )
    return device


def build_potentials(
    config: SimulationConfig, system: System, registry: Registry
) -> list[Potential]:
    """The configured potentials plus those plugins add through the hook.

    A potential whose class declares a region (:meth:`Potential.replaced_atoms`, e.g.
    a neural network on ``atoms:``) is built from ``system``; every other one from
    ``system`` without the interactions wholly inside each such region (mechanical
    embedding, see :meth:`System.without_interactions_within`).
    """
    problems: list[str] = []
    classes = [registry.get("potentials", cfg.kind) for cfg in config.potentials]
    regions: list[torch.Tensor | None] = []
    failed: set[int] = set()
    for i, (cls, cfg) in enumerate(zip(classes, config.potentials, strict=True)):
        try:
            regions.append(cls.replaced_atoms(cfg, system))
        except (TopologyError, ConfigError, ValueError) as err:
            problems.append(f"potentials[{i}] (kind={cfg.kind!r}): {_bare(err)}")
            regions.append(None)
            failed.add(i)
    classical = system
    for region in regions:
        if region is not None:
            classical = classical.without_interactions_within(region)
    potentials: list[Potential] = []
    for i, (cls, cfg, region) in enumerate(
        zip(classes, config.potentials, regions, strict=True)
    ):
        if i in failed:
            continue
        try:
            potentials.append(cls(cfg, system if region is not None else classical))
        except (TopologyError, ConfigError, ValueError) as err:
            problems.append(f"potentials[{i}] (kind={cfg.kind!r}): {_bare(err)}")
    if problems:
        raise ConfigError(problems)
    for extra in registry.hook.torchmd_core_add_potentials(
        config=config, system=system
    ):
        potentials.extend(extra or [])
    return potentials


def _bare(err: Exception) -> str:
    text = str(err)
    if isinstance(err, TorchMDError):
        text = text.split(": ", 1)[1] if ": " in text else text
    return text


def build_simulation(
    config: SimulationConfig,
    registry: Registry | None = None,
    group: ReplicaGroup | None = None,
) -> Simulation:
    """Load the system and make every component of ``config``; check them together.

    With ``group`` (a process of a distributed run, see
    :mod:`torchmd_core.distributed`) only the replicas ``group.replicas`` are made, on
    the device of this process.
    """
    from torchmd_core.plugins import default_registry

    registry = registry or default_registry()
    device = (
        resolve_device(config.device)
        if group is None
        else group.device_for(config.device)
    )
    replicas = range(config.n_replicas) if group is None else group.replicas
    dtype = resolve_dtype(config.precision)
    system, coords = load_system(config.system, registry)
    system = prepare_system(system, config.system)
    potentials = build_potentials(config, system, registry)
    integrator = registry.get("integrators", config.integrator.kind)(
        config.integrator, system
    )
    barostat = None
    if config.barostat is not None:
        barostat = registry.get("barostats", config.barostat.kind)(
            config.barostat, system
        )
        if coords.box is None:
            raise ConfigError(
                "barostat: needs a periodic box (system.box or a coordinate file "
                "with one)"
            )
    reporters = [registry.get("reporters", c.kind)(c, system) for c in config.reporters]
    for extra in registry.hook.torchmd_core_add_reporters(config=config, system=system):
        reporters.extend(extra or [])
    _check_cutoffs(config, potentials, coords)
    exchange = None
    if config.exchange is not None:
        from torchmd_core.exchange import ReplicaExchange

        if barostat is not None:
            raise ConfigError(
                "exchange: temperature replica exchange runs at constant volume; "
                "remove the barostat (or the exchange section)"
            )
        exchange = ReplicaExchange.from_config(config.exchange, config.seed)
        reporters.extend(exchange.reporters(system))
    state = State.from_coordinates(
        coords.positions,
        coords.box,
        n_replicas=len(replicas),
        dtype=dtype,
        device=device,
    )
    bath = integrator.temperature_K
    velocities = _initial_velocities(
        config, system, coords, bath, dtype, device, replicas
    )
    state = state.replace(velocities=velocities)
    return Simulation(
        system,
        potentials,
        integrator,
        reporters,
        barostat=barostat,
        state=state,
        registry=registry,
        config=config,
        seed=config.seed,
        skin=config.neighbor_skin_A,
        group=group,
        exchange=exchange,
    )


def prepare_system(system: System, config: SystemConfig) -> System:
    """Apply hydrogen mass repartitioning and constraints requested in ``config``."""
    from torchmd_core.constraints import apply_system_options

    return apply_system_options(system, config)


def _check_cutoffs(
    config: SimulationConfig, potentials: list[Potential], coords: Coordinates
) -> None:
    if coords.box is None:
        return
    half = 0.5 * float(min_box_width(coords.box))
    problems = []
    for i, pot in enumerate(potentials[: len(config.potentials)]):
        if pot.cutoff is not None and pot.cutoff > half:
            problems.append(
                f"potentials[{i}] (kind={config.potentials[i].kind!r}).cutoff: "
                f"{pot.cutoff} Å is more than half the smallest box width "
                f"({half:.3f} Å); use a smaller cutoff or a larger box"
            )
    if problems:
        raise ConfigError(problems)


def _initial_velocities(
    config: SimulationConfig,
    system: System,
    coords: Coordinates,
    bath_K: float | None,
    dtype: torch.dtype,
    device: torch.device,
    replicas: range,
) -> torch.Tensor:
    t_init = config.initial_temperature_K
    if t_init is None and coords.velocities is not None:
        v = coords.velocities.to(device=device, dtype=dtype)
        return v.unsqueeze(0).expand(len(replicas), *v.shape).clone()
    if t_init is None and config.exchange is not None:  # each at its own temperature
        ladder = torch.tensor(config.exchange.temperatures_K, dtype=torch.float64)
        ladder = ladder[list(replicas)]
        unit = maxwell_boltzmann_velocities(
            system, 1.0, seed=config.seed, replicas=replicas
        )
        return (unit * ladder.sqrt()[:, None, None]).to(device=device, dtype=dtype)
    if t_init is None:
        t_init = bath_K or 0.0
    return maxwell_boltzmann_velocities(
        system,
        t_init,
        config.n_replicas,
        config.seed,
        dtype=dtype,
        device=device,
        replicas=replicas,
    )
