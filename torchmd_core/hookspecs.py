"""The contract between torchmd-core and its plugins: pluggy hook specifications.

A plugin is a module named by an entry point in the ``torchmd_core`` group. It defines
functions decorated with :data:`hookimpl` whose names match the specifications below.

Registration hooks (one per role) hand the core the classes a plugin provides. They
run once, when the plugins are discovered. Lifecycle hooks run at the moments of a
whole simulation named in their docstrings; no hook runs inside the per-step loop.
Every hook is optional for a plugin. Unless stated otherwise, implementations run in
pluggy's order (last registered first; ``tryfirst``/``trylast`` adjust it) and all
results are collected.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from torchmd_core.config import SimulationConfig
    from torchmd_core.potential import Potential
    from torchmd_core.reporter import Reporter
    from torchmd_core.simulation import Simulation
    from torchmd_core.system import System

PROJECT = "torchmd_core"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

Register = Callable[[type], None]

# -- registration ----------------------------------------------------------------------


@hookspec
def torchmd_core_register_potentials(register: Register) -> None:
    """Register :class:`~torchmd_core.Potential` subclasses: call ``register(cls)``
    once per class. Its ``Config.kind`` is the name users write in ``potentials:``."""


@hookspec
def torchmd_core_register_integrators(register: Register) -> None:
    """Register :class:`~torchmd_core.Integrator` subclasses (``integrator: kind``)."""


@hookspec
def torchmd_core_register_barostats(register: Register) -> None:
    """Register :class:`~torchmd_core.Barostat` subclasses (``barostat: kind``)."""


@hookspec
def torchmd_core_register_reporters(register: Register) -> None:
    """Register :class:`~torchmd_core.Reporter` subclasses (``reporters: - kind``)."""


@hookspec
def torchmd_core_register_loaders(register: Register) -> None:
    """Register topology and coordinate loaders
    (:class:`~torchmd_core.TopologyLoader`, :class:`~torchmd_core.CoordinateLoader`),
    chosen by file extension or by ``system.topology_format``."""


# -- lifecycle -------------------------------------------------------------------------


@hookspec
def torchmd_core_validate_config(config: SimulationConfig) -> list[str] | None:
    """Check a whole configuration after each component validated its own fields.

    Fires once per config, before anything is loaded. Return problem lines (each
    naming its field, e.g. ``"integrator.timestep_fs: ..."``) or None. All problems
    from all plugins are reported together as one ConfigError.
    """


@hookspec
def torchmd_core_add_potentials(
    config: SimulationConfig, system: System
) -> list[Potential] | None:
    """Return extra potentials to add to the simulation (e.g. restraints derived from
    the config), or None. Fires once while a simulation is built from a config, after
    the system is loaded and the configured potentials are made."""


@hookspec
def torchmd_core_add_reporters(
    config: SimulationConfig, system: System
) -> list[Reporter] | None:
    """Return extra reporters, or None. Fires once while a simulation is built from a
    config, after the configured reporters are made."""


@hookspec
def torchmd_core_run_header(simulation: Simulation) -> list[str] | None:
    """Return provenance lines (name, version, settings) for run logs and file
    headers. Fires once when a run starts, before ``torchmd_core_run_started``."""


@hookspec
def torchmd_core_run_started(simulation: Simulation) -> None:
    """A run is about to take its first step (reporters are open, state prepared).
    Fires once per :meth:`Simulation.run` call."""


@hookspec
def torchmd_core_run_finished(
    simulation: Simulation, error: BaseException | None
) -> None:
    """A run ended. ``error`` is None on success, else the exception that stopped it
    (also ``KeyboardInterrupt``). Fires once per run, after reporters are closed; an
    exception raised here is reported but does not hide ``error``."""


@hookspec
def torchmd_core_checkpoint_save(simulation: Simulation, extra: dict[str, Any]) -> None:
    """A checkpoint is being written: add what your plugin needs to resume under a
    key of your own, ``extra["my_plugin"] = {...}`` (picklable by ``torch.save``)."""


@hookspec
def torchmd_core_checkpoint_load(simulation: Simulation, extra: dict[str, Any]) -> None:
    """A checkpoint was read, before the run continues: restore from
    ``extra["my_plugin"]`` (may be absent for checkpoints written without you)."""
