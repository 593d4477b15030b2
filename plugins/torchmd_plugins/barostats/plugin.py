"""Hook implementations of the built-in barostats plugin: the ``montecarlo`` barostat,
and a check that its temperature matches the thermostat's."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torchmd_core import hookimpl

if TYPE_CHECKING:
    from torchmd_core import SimulationConfig


@hookimpl
def torchmd_core_register_barostats(register: Any) -> None:
    from torchmd_plugins.barostats.montecarlo import MonteCarloBarostat

    register(MonteCarloBarostat)


@hookimpl
def torchmd_core_validate_config(config: SimulationConfig) -> list[str] | None:
    """A Monte Carlo barostat samples NPT only with a thermostat at its temperature."""
    barostat = config.barostat
    if barostat is None or barostat.kind != "montecarlo":
        return None
    bath = getattr(config.integrator, "temperature_K", None)
    mine = getattr(barostat, "temperature_K", None)
    if bath is None:
        return [
            "barostat (kind='montecarlo'): needs a thermostatted integrator "
            "(langevin); "
            f"integrator kind={config.integrator.kind!r} has no temperature_K"
        ]
    if mine is not None and abs(float(bath) - float(mine)) > 1e-9:
        return [
            f"barostat (kind='montecarlo').temperature_K: {mine} K differs from the "
            f"integrator's {bath} K; use the same temperature"
        ]
    return None
