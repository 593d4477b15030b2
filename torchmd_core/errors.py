"""Exceptions raised by torchmd-core and its plugins.

Every message says what happened, where, and what to do. The ``tmd`` command prints
``str(error)`` for any :class:`TorchMDError` and exits without a traceback: exit code 2
for bad input (configuration, files, plugins) and 1 for failures during a run.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DistributedError",
    "InputFileError",
    "NumericalInstabilityError",
    "OutputExistsError",
    "PluginConflictError",
    "PluginError",
    "PluginLoadError",
    "PluginNotFoundError",
    "SimulationError",
    "TopologyError",
    "TorchMDError",
]


class TorchMDError(Exception):
    """Base class of every error torchmd-core raises on purpose."""

    exit_code: int = 2

    def __str__(self) -> str:
        return f"{type(self).__name__}: {super().__str__()}"


class ConfigError(TorchMDError):
    """A configuration is invalid. Holds every problem found, each with its location.

    Args:
        problems: one line per problem, e.g.
            ``"integrator (kind='langevin').timestep_fs: must be > 0, got -2.0"``.
        source: where the configuration came from (a file name), if known.
    """

    def __init__(
        self, problems: Sequence[str] | str, source: str | None = None
    ) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        self.source = source
        super().__init__(self._format())

    def _format(self) -> str:
        where = f" in config '{self.source}'" if self.source else ""
        if len(self.problems) == 1 and not where:
            return self.problems[0]
        count = (
            "1 problem" if len(self.problems) == 1 else f"{len(self.problems)} problems"
        )
        return "\n".join([f"{count}{where}:", *(f"  {p}" for p in self.problems)])


class PluginError(TorchMDError):
    """A plugin could not be found, loaded or registered."""


class PluginNotFoundError(PluginError):
    """No component of the requested role and kind is installed."""


class PluginConflictError(PluginError):
    """Two plugins register the same kind for one role."""


class PluginLoadError(PluginError):
    """A plugin module failed to import, or needs an optional dependency."""


class TopologyError(TorchMDError):
    """A topology or coordinate file is inconsistent or lacks needed parameters."""


class InputFileError(TorchMDError):
    """An input file is missing, unreadable, truncated or malformed."""


class CheckpointError(TorchMDError):
    """A checkpoint cannot be read, or does not belong to this simulation."""


class OutputExistsError(TorchMDError):
    """An output file exists already and would be overwritten."""


class SimulationError(TorchMDError):
    """A run failed after it started."""

    exit_code = 1


class NumericalInstabilityError(SimulationError):
    """Energies, forces or positions became non-finite (or exploded) during a run."""


class DistributedError(SimulationError):
    """A process of a distributed run failed, or lost contact with the others; every
    process stops with it. ``exit_code`` is that of the failure (2 for bad input)."""

    def __init__(
        self, message: str, exit_code: int = 1, lost_contact: bool = False
    ) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        #: True when the processes could not agree (one died or hung): each process
        #: then reports its own view.
        self.lost_contact = lost_contact


def join_problems(problems: Iterable[str]) -> str:
    """Join problem lines into one indented block (for error messages)."""
    return "\n".join(f"  {p}" for p in problems)
