"""torchmd-core: a differentiable, plugin-based molecular dynamics engine on PyTorch.

Units everywhere: kcal/mol, Å, K, amu, e; timesteps in fs, times in ps.
Shapes: positions (R, N, 3), box (R, 3, 3), energies (R,) for R replicas.
"""

from __future__ import annotations

from torchmd_core.barostat import Barostat, BarostatConfig
from torchmd_core.checkpoint import load_checkpoint, save_checkpoint
from torchmd_core.component import Component, ComponentConfig
from torchmd_core.config import (
    MinimizeConfig,
    SimulationConfig,
    SystemConfig,
    load_config,
    parse_config,
)
from torchmd_core.errors import (
    CheckpointError,
    ConfigError,
    DistributedError,
    InputFileError,
    NumericalInstabilityError,
    OutputExistsError,
    PluginConflictError,
    PluginError,
    PluginLoadError,
    PluginNotFoundError,
    SimulationError,
    TopologyError,
    TorchMDError,
)
from torchmd_core.export import ExportError, export_parameters
from torchmd_core.hookspecs import hookimpl, hookspec
from torchmd_core.integrator import (
    Integrator,
    IntegratorConfig,
    replica_generators,
    replica_normal,
)
from torchmd_core.loader import (
    CoordinateLoader,
    Coordinates,
    LoaderConfig,
    SystemLoader,
    TopologyLoader,
)
from torchmd_core.minimize import minimize
from torchmd_core.neighbors import NeighborList, Neighbors, build_pairs
from torchmd_core.parameters import (
    fitted_system,
    freeze,
    parameter_names,
    parameter_values,
    trainable,
)
from torchmd_core.plugins import default_registry, discover, isolated_registry
from torchmd_core.potential import Potential, PotentialConfig, PotentialSum
from torchmd_core.registry import Registry
from torchmd_core.reporter import Frame, Reporter, ReporterConfig, RunInfo
from torchmd_core.simulation import (
    Simulation,
    kinetic_energy,
    maxwell_boltzmann_velocities,
    temperature,
)
from torchmd_core.state import State
from torchmd_core.system import (
    BONDED_TERMS,
    Constraints,
    NonbondedParameters,
    ParameterTable,
    Residue,
    System,
    VirtualSites,
)
from torchmd_core.trajectory import Trajectory, simulate
from torchmd_core.virtual_sites import distribute_site_forces, place_virtual_sites

__version__ = "0.1.0"

__all__ = [
    "BONDED_TERMS",
    "Barostat",
    "BarostatConfig",
    "CheckpointError",
    "Component",
    "ComponentConfig",
    "ConfigError",
    "Constraints",
    "CoordinateLoader",
    "Coordinates",
    "DistributedError",
    "ExportError",
    "Frame",
    "InputFileError",
    "Integrator",
    "IntegratorConfig",
    "LoaderConfig",
    "MinimizeConfig",
    "NeighborList",
    "Neighbors",
    "NonbondedParameters",
    "NumericalInstabilityError",
    "OutputExistsError",
    "ParameterTable",
    "PluginConflictError",
    "PluginError",
    "PluginLoadError",
    "PluginNotFoundError",
    "Potential",
    "PotentialConfig",
    "PotentialSum",
    "Registry",
    "Reporter",
    "ReporterConfig",
    "Residue",
    "RunInfo",
    "Simulation",
    "SimulationConfig",
    "SimulationError",
    "State",
    "System",
    "SystemConfig",
    "SystemLoader",
    "TopologyError",
    "TopologyLoader",
    "TorchMDError",
    "Trajectory",
    "VirtualSites",
    "__version__",
    "build_pairs",
    "default_registry",
    "discover",
    "distribute_site_forces",
    "export_parameters",
    "fitted_system",
    "freeze",
    "hookimpl",
    "hookspec",
    "isolated_registry",
    "kinetic_energy",
    "load_checkpoint",
    "load_config",
    "maxwell_boltzmann_velocities",
    "minimize",
    "parameter_names",
    "parameter_values",
    "parse_config",
    "place_virtual_sites",
    "replica_generators",
    "replica_normal",
    "save_checkpoint",
    "simulate",
    "temperature",
    "trainable",
]
