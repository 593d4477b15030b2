"""Whole-run configuration: the YAML file ``tmd run`` reads, validated in one pass.

Components (potentials, integrator, barostat, reporters) are validated by the
``Config`` model of the class registered under their ``kind``; every problem in a file
is collected and reported at once with its path and line:

    ConfigError: 2 problems in config 'ala2.yaml':
      line 9: potentials[1] (kind='nonbonded').cutoff: must be > 0, got -9.0
      line 14: integrator (kind='langevin').timestep_fs: must be > 0, got -2.0

Relative paths in a config file (inputs and outputs) are relative to the directory of
that file, so a run does not depend on where ``tmd`` is started.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from collections.abc import Mapping, Sequence
from itertools import pairwise
from pathlib import Path
from types import GenericAlias
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializeAsAny,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from torchmd_core.barostat import BarostatConfig
from torchmd_core.component import ComponentConfig
from torchmd_core.errors import ConfigError, InputFileError, PluginError
from torchmd_core.integrator import IntegratorConfig
from torchmd_core.potential import PotentialConfig
from torchmd_core.registry import Registry
from torchmd_core.reporter import ReporterConfig

__all__ = [
    "DistributedConfig",
    "ExchangeConfig",
    "MinimizeConfig",
    "SimulationConfig",
    "SystemConfig",
    "config_schema",
    "load_config",
    "parse_config",
]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SystemConfig(_Frozen):
    """Where the system comes from, and how it is constrained."""

    topology: Path = Field(
        description="Topology file: AMBER prmtop/parm7, CHARMM psf, GROMACS top, "
        "OpenMM System XML (with a PDB as coordinates), PDB/CIF, ..."
    )
    coordinates: Path | None = Field(
        None,
        description="Coordinate file (pdb, cif, inpcrd/rst7, crd, coor, any single "
        "frame mdtraj reads). Omit when the topology file has coordinates (PDB).",
    )
    parameters: tuple[Path, ...] = Field(
        (), description="Force-field parameter files (CHARMM prm/par/rtf/str; ...)."
    )
    box: tuple[float, ...] | None = Field(
        None,
        description="Periodic box: 3 lengths (Å), 3 lengths + 3 angles (Å, degrees), "
        "or 9 box-vector components (Å, rows a, b, c). Overrides the coordinate files' "
        "box.",
    )
    topology_format: str | None = Field(
        None, description="Loader kind for the topology (default: by file extension)."
    )
    coordinates_format: str | None = Field(
        None,
        description="Loader kind for the coordinates (default: by file extension).",
    )
    constraints: Literal["none", "hbonds", "allbonds", "hangles"] = Field(
        "none",
        description="Bonds to constrain: none, bonds to hydrogen, all bonds, or "
        "all bonds plus H-X-H / H-O-X angles.",
    )
    rigid_water: bool | None = Field(
        None,
        description="Keep waters rigid (SETTLE). Default: true when constraints "
        "are on, false otherwise.",
    )
    hydrogen_mass: float | None = Field(
        None,
        gt=0.0,
        description="Hydrogen mass repartitioning: hydrogens get this mass "
        "(amu), taken from their bonded heavy atom. 3-4 amu allows 4 fs steps.",
    )

    @field_validator("box")
    @classmethod
    def _box_size(cls, v: tuple[float, ...] | None) -> tuple[float, ...] | None:
        if v is not None and len(v) not in (3, 6, 9):
            raise ValueError(f"must have 3, 6 or 9 numbers, got {len(v)}")
        if v is not None and len(v) in (3, 6) and min(v[:3]) <= 0:
            raise ValueError("box lengths must be > 0")
        return v


class MinimizeConfig(_Frozen):
    """Energy minimisation (L-BFGS) before dynamics."""

    tolerance_kcal_mol_A: float = Field(
        0.24,
        gt=0.0,
        description="Stop when the largest force component is below "
        "this, kcal/mol/Å (0.24 = OpenMM's default 10 kJ/mol/nm).",
    )
    max_iterations: int = Field(
        1000, gt=0, description="Upper limit on L-BFGS iterations."
    )


class DistributedConfig(_Frozen):
    """How a run started by torchrun shares its replicas between processes.
    Ignored by single-process runs; may change between run segments (a run may resume
    on another number of processes)."""

    reporters: Literal["per_rank", "gather"] = Field(
        default="per_rank",
        description="per_rank: each process writes the per-replica files (dcd, xtc, "
        "pdb) of its own replicas, rank 0 writes the rest (csv) from gathered "
        "frames; gather: rank 0 writes every file from frames gathered from all "
        "processes. The files are the same either way.",
    )
    backend: Literal["auto", "gloo", "nccl"] = Field(
        default="auto",
        description="torch.distributed backend of the process group: auto is nccl "
        "when the device is cuda, else gloo. Control messages always use gloo.",
    )
    timeout_s: float = Field(
        default=600.0,
        gt=0.0,
        description="Seconds a process waits for the others at a collective "
        "operation before it gives up with an error (a hung or lost process).",
    )
    sync_interval: int = Field(
        default=100,
        gt=0,
        description="Steps between the checks where processes agree to stop (Ctrl-C, "
        "SIGTERM) or learn that another one failed; reporting steps are checks too.",
    )


class ExchangeConfig(_Frozen):
    """Temperature replica exchange (parallel tempering) between the replicas."""

    temperatures_K: tuple[float, ...] = Field(
        min_length=2,
        description="Bath temperature of each temperature slot, K, increasing; one per "
        "replica (replica r starts at temperatures_K[r]). Neighbouring slots swap.",
    )
    interval: int = Field(
        gt=0,
        description="Steps between exchange attempts (even and odd pairs alternate).",
    )
    file: Path | None = Field(
        default=None,
        description="Exchange log (CSV, relative to the config file): per attempt, the "
        "replica at each temperature and which neighbouring pairs swapped.",
    )

    @field_validator("temperatures_K")
    @classmethod
    def _increasing(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if min(v) <= 0:
            raise ValueError("temperatures must be > 0 K")
        if any(b <= a for a, b in pairwise(v)):
            raise ValueError("temperatures must increase strictly (neighbours swap)")
        return v


class SimulationConfig(_Frozen):
    """A whole simulation: system, potentials, integrator, outputs and run options."""

    system: SystemConfig = Field(description="Input files and constraints.")
    potentials: tuple[SerializeAsAny[PotentialConfig], ...] = Field(
        min_length=1, description="Energy terms, summed."
    )
    integrator: SerializeAsAny[IntegratorConfig] = Field(description="Dynamics.")
    barostat: SerializeAsAny[BarostatConfig] | None = Field(
        None, description="Pressure control."
    )
    reporters: tuple[SerializeAsAny[ReporterConfig], ...] = Field(
        (), description="Outputs written during the run."
    )
    steps: int = Field(ge=0, description="Total number of integration steps.")
    seed: int = Field(0, ge=0, description="Random seed; replica r uses seed + r.")
    precision: Literal["float32", "float64"] = Field(
        "float32",
        description="Floating-point precision of positions, forces and energies.",
    )
    device: str = Field("cpu", description="Torch device: cpu, cuda, cuda:1, ...")
    n_replicas: int = Field(1, gt=0, description="Independent copies run in one batch.")
    minimize: MinimizeConfig | None = Field(
        None, description="Minimise before dynamics."
    )
    initial_temperature_K: float | None = Field(
        None,
        ge=0.0,
        description="Draw Maxwell-Boltzmann velocities at this temperature, K. "
        "Default: the coordinate file's velocities when it has them, else the "
        "integrator's temperature (0 K for NVE without velocities).",
    )
    neighbor_skin_A: float = Field(
        1.0, ge=0.0, description="Verlet skin of the shared neighbour list, Å."
    )
    exchange: ExchangeConfig | None = Field(
        None, description="Temperature replica exchange between the replicas."
    )
    distributed: DistributedConfig = Field(
        default=DistributedConfig(),
        description="Runs launched by torchrun: how replicas and outputs are shared.",
    )

    @model_validator(mode="after")
    def _exchange_ladder(self) -> SimulationConfig:
        ex = self.exchange
        if ex is not None and len(ex.temperatures_K) != self.n_replicas:
            raise ValueError(
                f"exchange.temperatures_K: {len(ex.temperatures_K)} temperatures for "
                f"n_replicas: {self.n_replicas}; give one temperature per replica"
            )
        return self

    def fingerprint(self) -> str:
        """A hash of everything that defines the simulated system and its physics.

        Checkpoints store it; ``steps`` and reporters may change between segments.
        """
        data = self.model_dump(mode="json", exclude=_segment_fields(self))
        text = json.dumps(data, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _segment_fields(config: SimulationConfig) -> set[str]:
    """Fields that may change between run segments, and ``exchange`` when unset
    (checkpoints written before it existed stay valid)."""
    fields = {"steps", "reporters", "distributed"}
    if config.exchange is None:
        fields.add("exchange")
    return fields


# -- parsing ---------------------------------------------------------------------------

_COMPONENT_FIELDS: dict[str, tuple[str, bool]] = {
    # config key → (registry role, is a list)
    "potentials": ("potentials", True),
    "integrator": ("integrators", False),
    "barostat": ("barostats", False),
    "reporters": ("reporters", True),
}


def load_config(path: str | Path, registry: Registry | None = None) -> SimulationConfig:
    """Read and validate a YAML config file.

    Relative paths in it become relative to the file's folder.

    Raises:
        InputFileError: the file is missing, unreadable, or not valid YAML.
        ConfigError: every validation problem, with paths and line numbers.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise InputFileError(f"config file '{path}' does not exist") from None
    except (OSError, UnicodeDecodeError) as err:
        raise InputFileError(f"cannot read config file '{path}': {err}") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise InputFileError(
            f"'{path}' is not valid YAML{where}: {err.problem or err.context}. "
            "Check indentation and that every 'key: value' has a space after the colon."
        ) from None
    except yaml.YAMLError as err:
        raise InputFileError(f"'{path}' is not valid YAML: {err}") from None
    lines = _line_map(node) if node is not None else {}
    return parse_config(
        data, registry=registry, source=str(path), lines=lines, base_dir=path.parent
    )


def parse_config(
    data: Any,
    registry: Registry | None = None,
    source: str | None = None,
    lines: Mapping[tuple[Any, ...], int] | None = None,
    base_dir: Path | None = None,
) -> SimulationConfig:
    """Validate a config mapping into a :class:`SimulationConfig`.

    Args:
        data: the parsed YAML/JSON mapping.
        registry: where component kinds are looked up (default: installed plugins).
        source: file name for messages.
        lines: path → line number, for messages.
        base_dir: relative paths are taken relative to it (default: left as they are).

    Raises:
        ConfigError: all problems found.
    """
    from torchmd_core.plugins import default_registry

    registry = registry or default_registry()
    lines = lines or {}
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"the top level must be a mapping of keys (system:, potentials:, ...), got "
            f"{type(data).__name__}",
            source=source,
        )
    problems: list[tuple[tuple[Any, ...], str]] = []
    resolved: dict[str, Any] = dict(data)
    for key, (role, is_list) in _COMPONENT_FIELDS.items():
        if key not in data or data[key] is None:
            continue
        raw = data[key]
        if is_list:
            if not isinstance(raw, list):
                problems.append(
                    (
                        (key,),
                        "must be a list of components (- kind: ...), "
                        f"got {type(raw).__name__}",
                    )
                )
                continue
            items = []
            for i, item in enumerate(raw):
                cfg = _parse_component(registry, role, item, (key, i), problems)
                items.append(cfg)
            resolved[key] = items
        else:
            resolved[key] = _parse_component(registry, role, raw, (key,), problems)

    # With broken components, still check the rest so that all problems come at once.
    model = SimulationConfig if not problems else _top_level_model()
    try:
        config = model.model_validate(resolved)
    except ValidationError as err:
        problems.extend(_problems_from(err, (), SimulationConfig))
    if problems:
        raise ConfigError(_format_problems(problems, lines, data), source=source)
    if base_dir is not None:
        config = _resolve_paths(config, base_dir)
    hook_problems: list[str] = []
    for result in registry.hook.torchmd_core_validate_config(config=config):
        hook_problems.extend(result or [])
    if hook_problems:
        raise ConfigError(hook_problems, source=source)
    return config


def _top_level_model() -> type[SimulationConfig]:
    """SimulationConfig with the component fields unchecked."""
    return create_model(
        "SimulationConfig",
        __base__=SimulationConfig,
        potentials=(Any, None),
        integrator=(Any, None),
        barostat=(Any, None),
        reporters=(Any, None),
    )


def _parse_component(
    registry: Registry,
    role: str,
    item: Any,
    loc: tuple[Any, ...],
    problems: list[tuple[tuple[Any, ...], str]],
) -> Any:
    if isinstance(item, ComponentConfig):
        return item
    if not isinstance(item, Mapping):
        hint = (
            f" (write {{kind: {item}}}, with its fields)"
            if isinstance(item, str)
            else ""
        )
        problems.append((loc, f"must be a mapping with a 'kind', got {item!r}{hint}"))
        return None
    kind = item.get("kind")
    if kind is None:
        problems.append(
            (
                loc,
                "missing 'kind' (available: "
                f"{', '.join(registry.kinds(role)) or 'none'})",
            )
        )
        return None
    try:
        cls = registry.get(role, str(kind))
    except PluginError as err:
        problems.append(((*loc, "kind"), str(err).split(": ", 1)[1]))
        return None
    try:
        return cls.Config.model_validate(dict(item))
    except ValidationError as err:
        problems.extend(_problems_from(err, loc, cls.Config))
        return None


def _problems_from(
    err: ValidationError, prefix: tuple[Any, ...], model: type[BaseModel]
) -> list[tuple[tuple[Any, ...], str]]:
    out = []
    for e in err.errors(include_url=False):
        out.append((prefix + tuple(e["loc"]), _message(e, model)))
    return out


def _message(e: Mapping[str, Any], model: type[BaseModel]) -> str:
    kind = e["type"]
    ctx = e.get("ctx") or {}
    shown = (
        f", got {e.get('input')!r}"
        if kind not in ("missing", "extra_forbidden")
        else ""
    )
    if kind == "missing":
        return "required field missing"
    if kind == "extra_forbidden":
        fields = _nested_fields(model, tuple(e["loc"][:-1]))
        close = difflib.get_close_matches(str(e["loc"][-1]), fields, n=1, cutoff=0.6)
        hint = (
            f"did you mean '{close[0]}'?"
            if close
            else f"known keys: {', '.join(fields)}"
        )
        return f"unknown key ({hint})"
    ops = {
        "greater_than": ">",
        "greater_than_equal": ">=",
        "less_than": "<",
        "less_than_equal": "<=",
    }
    if kind in ops:
        bound = next(iter(ctx.values())) if ctx else "?"
        if isinstance(bound, float):
            bound = f"{bound:g}"
        return f"must be {ops[kind]} {bound}{shown}"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected', '')}{shown}"
    msg = str(e["msg"]).removeprefix("Value error, ")
    msg = msg[:1].lower() + msg[1:]
    return f"{msg}{shown}"


def _nested_fields(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Field names of the (sub)model at ``loc`` inside ``model``."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        fields = getattr(current, "model_fields", {})
        info = fields.get(part)
        if info is None:
            return []
        current = _model_in(info.annotation)
        if current is None:
            return []
    return sorted(getattr(current, "model_fields", {}))


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The first BaseModel class inside a (possibly Optional/tuple) annotation."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _format_problems(
    problems: list[tuple[tuple[Any, ...], str]],
    lines: Mapping[tuple[Any, ...], int],
    data: Mapping[str, Any],
) -> list[str]:
    out = []
    for loc, msg in problems:
        line = None
        for n in range(len(loc), -1, -1):
            line = lines.get(tuple(loc[:n]))
            if line is not None:
                break
        where = _path_text(loc, data)
        out.append(
            f"line {line}: {where}: {msg}" if line is not None else f"{where}: {msg}"
        )
    return out


def _path_text(loc: tuple[Any, ...], data: Mapping[str, Any]) -> str:
    """('potentials', 1, 'cutoff') → "potentials[1] (kind='nonbonded').cutoff"."""
    text = ""
    node: Any = data
    for i, part in enumerate(loc):
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += ("." if text else "") + str(part)
        node = _child(node, part)
        is_component = loc[0] in _COMPONENT_FIELDS and (
            (i == 0 and not _COMPONENT_FIELDS[loc[0]][1])
            or (i == 1 and _COMPONENT_FIELDS[loc[0]][1])
        )
        kind = _kind_of(node)
        if (
            is_component
            and kind is not None
            and i < len(loc) - 1
            and loc[i + 1] != "kind"
        ):
            text += f" (kind={kind!r})"
    return text or "(top level)"


def _child(node: Any, part: Any) -> Any:
    try:
        if isinstance(node, Mapping):
            return node.get(part)
        if isinstance(node, Sequence) and isinstance(part, int):
            return node[part]
    except (IndexError, KeyError):
        return None
    return None


def _kind_of(node: Any) -> str | None:
    if isinstance(node, Mapping):
        kind = node.get("kind")
        return None if kind is None else str(kind)
    if isinstance(node, ComponentConfig):
        return str(node.kind)
    return None


def _line_map(
    node: yaml.Node, path: tuple[Any, ...] = ()
) -> dict[tuple[Any, ...], int]:
    """Path of every YAML node → its 1-based line."""
    out = {path: node.start_mark.line + 1}
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            sub = (*path, key.value)
            out[sub] = key.start_mark.line + 1
            out.update({k: v for k, v in _line_map(value, sub).items() if k != sub})
    elif isinstance(node, yaml.SequenceNode):
        for i, value in enumerate(node.value):
            out.update(_line_map(value, (*path, i)))
    return out


def _resolve_paths(model: Any, base: Path) -> Any:
    """A copy of ``model`` with every relative Path field made relative to ``base``."""
    if not isinstance(model, BaseModel):
        return model
    updates: dict[str, Any] = {}
    for name in type(model).model_fields:
        value = getattr(model, name)
        new = _resolve_value(value, base)
        if new is not value:
            updates[name] = new
    return model.model_copy(update=updates) if updates else model


def _resolve_value(value: Any, base: Path) -> Any:
    if isinstance(value, Path):
        return value if value.is_absolute() else base / value
    if isinstance(value, BaseModel):
        return _resolve_paths(value, base)
    if isinstance(value, tuple):
        items = tuple(_resolve_value(v, base) for v in value)
        return (
            value if all(a is b for a, b in zip(items, value, strict=True)) else items
        )
    return value


# -- JSON schema -----------------------------------------------------------------------


def config_schema(registry: Registry | None = None) -> dict[str, Any]:
    """JSON Schema of :class:`SimulationConfig` with every installed component kind."""
    from torchmd_core.plugins import default_registry

    registry = registry or default_registry()

    def union(role: str, base: type[ComponentConfig]) -> Any:
        models = [registry.get(role, k).Config for k in registry.kinds(role)]
        if not models:
            return base
        if len(models) == 1:
            return models[0]
        return Annotated[Union[tuple(models)], Field(discriminator="kind")]  # noqa: UP007

    # The field types are built at run time, so they are values to mypy (Any), and
    # tuple[X, ...] is spelt GenericAlias(tuple, (X, ...)).
    potentials: Any = GenericAlias(tuple, (union("potentials", PotentialConfig), ...))
    integrator: Any = union("integrators", IntegratorConfig)
    barostat: Any = union("barostats", BarostatConfig) | None
    reporters: Any = GenericAlias(tuple, (union("reporters", ReporterConfig), ...))
    model = create_model(
        "SimulationConfig",
        __base__=SimulationConfig,
        potentials=(potentials, Field(min_length=1)),
        integrator=(integrator, ...),
        barostat=(barostat, None),
        reporters=(reporters, ()),
    )
    return model.model_json_schema()
