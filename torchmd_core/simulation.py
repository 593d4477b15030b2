"""The one run loop: integrate, move the box, report, check, checkpoint.

Library use needs no config and no plugin names::

    sim = Simulation(system, amber + nonbonded, LangevinBAOAB(cfg, system), [CSVReporter(...)],
                     state=State.from_coordinates(coords.positions, coords.box))
    sim.run(1000)

The loop runs under ``torch.no_grad()`` unless ``differentiable=True`` is passed to
:meth:`Simulation.run`, in which case every state keeps its autograd graph (see the
differentiable-simulation guide).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from torchmd_core import units
from torchmd_core.barostat import Barostat
from torchmd_core.errors import NumericalInstabilityError, OutputExistsError
from torchmd_core.integrator import Integrator
from torchmd_core.potential import Potential, PotentialSum
from torchmd_core.reporter import Frame, Reporter, RunInfo
from torchmd_core.state import State
from torchmd_core.system import System

if TYPE_CHECKING:
    from torchmd_core.config import SimulationConfig
    from torchmd_core.registry import Registry

__all__ = ["Simulation", "kinetic_energy", "maxwell_boltzmann_velocities", "temperature"]

ProgressCallback = Callable[[int, int, float], None]


class Simulation:
    """A system, its potential, an integrator, optional barostat and reporters, and
    the current :class:`State`.

    Args:
        system: the parameterised system.
        potential: one potential, a sequence of them (summed), or a PotentialSum.
        integrator: advances the state.
        reporters: outputs, each called every ``interval`` steps.
        barostat: applied every ``barostat.interval`` steps.
        state: the starting state (R replicas); may be set later with :attr:`state`.
        registry: where lifecycle hooks come from (default: installed plugins).
        config: the configuration this simulation was built from, if any.
        seed: seed of the random streams (integrator, barostat).
        skin: Verlet skin of the shared neighbour list, Å.
    """

    def __init__(
        self,
        system: System,
        potential: Potential | Sequence[Potential],
        integrator: Integrator,
        reporters: Sequence[Reporter] = (),
        barostat: Barostat | None = None,
        state: State | None = None,
        registry: Registry | None = None,
        config: SimulationConfig | None = None,
        seed: int = 0,
        skin: float = 1.0,
    ) -> None:
        self.system = system
        if isinstance(potential, PotentialSum):
            self.potential = potential
        else:
            terms = [potential] if isinstance(potential, Potential) else list(potential)
            self.potential = PotentialSum(terms, system=system, skin=skin)
        self.integrator = integrator
        self.reporters = list(reporters)
        self.barostat = barostat
        self.config = config
        self.seed = seed
        self._registry = registry
        self._state: State | None = None
        self.header: list[str] = []
        #: Check for non-finite values every this many steps (each check syncs the device).
        self.check_interval = 1
        self._ready_for: tuple[int, torch.device] | None = None
        if state is not None:
            self.state = state

    # -- state -------------------------------------------------------------------------------
    @property
    def state(self) -> State:
        if self._state is None:
            raise RuntimeError("the simulation has no state yet: set Simulation.state first")
        return self._state

    @state.setter
    def state(self, state: State) -> None:
        if state.n_atoms != self.system.n_atoms:
            raise ValueError(
                f"state has {state.n_atoms} atoms, the system {self.system.n_atoms}"
            )
        self._state = state
        key = (state.n_replicas, state.device)
        if self._ready_for != key:
            self._ready_for = key
            self.potential.to(device=state.device, dtype=state.dtype)
            self.integrator.to(device=state.device, dtype=state.dtype)
            if self.barostat is not None:
                self.barostat.to(device=state.device, dtype=state.dtype)
            if len(self.integrator.generators) != state.n_replicas:
                self.integrator.seed(self.seed, state.n_replicas, state.device)
            if self.barostat is not None and len(self.barostat.generators) != state.n_replicas:
                self.barostat.seed(self.seed + 7919 * 1000, state.n_replicas, state.device)
            self.check_interval = 1 if state.device.type == "cpu" else 100

    @property
    def registry(self) -> Registry:
        if self._registry is None:
            from torchmd_core.plugins import default_registry

            self._registry = default_registry()
        return self._registry

    @property
    def degrees_of_freedom(self) -> int:
        return self.system.degrees_of_freedom(self.integrator.removes_com_motion)

    # -- running -----------------------------------------------------------------------------
    def run(
        self,
        steps: int,
        differentiable: bool = False,
        resume: bool = False,
        overwrite: bool = False,
        progress: ProgressCallback | None = None,
    ) -> State:
        """Advance ``steps`` steps, reporting along the way. Returns the final state.

        Args:
            steps: number of integration steps.
            differentiable: keep the autograd graph through the whole trajectory.
            resume: reporters append to the files of a previous segment.
            overwrite: allow replacing existing output files.
            progress: called as ``progress(step, end_step, ns_per_day)`` after each
                reporting interval or at most every few seconds.
        """
        if steps < 0:
            raise ValueError(f"steps must be >= 0, got {steps}")
        state = self.state
        start, end = state.step, state.step + steps
        if not resume and not overwrite:
            self.check_outputs()
        self.header = self._collect_header()
        info = RunInfo(
            system=self.system,
            n_replicas=state.n_replicas,
            term_names=self.potential.term_names,
            timestep_fs=self.integrator.timestep_fs,
            periodic=state.is_periodic,
            start_step=start,
            total_steps=end,
            resume=resume,
            overwrite=overwrite,
            header=tuple(self.header),
        )
        opened: list[Reporter] = []
        error: BaseException | None = None
        grad = contextlib.nullcontext() if differentiable else torch.no_grad()
        try:
            for reporter in self.reporters:
                reporter.open(info)
                opened.append(reporter)
            self.registry.hook.torchmd_core_run_started(simulation=self)
            with grad:
                self._loop(start, end, resume, progress)
        except BaseException as err:
            error = err
            raise
        finally:
            self._close(opened)
            self._finish(error)
        return self.state

    def _loop(self, start: int, end: int, resume: bool, progress: ProgressCallback | None) -> None:
        state = self.integrator.setup(self.state, self.potential)
        self._state = state
        clock = _Clock(self.integrator.timestep_fs, start)
        if not resume:
            self._report(state, clock, initial=True)
        while state.step < end:
            state = self.integrator.step(state, self.potential)
            if self.barostat is not None and state.step % self.barostat.interval == 0:
                state = self.barostat.apply(state, self.potential)
            if state.step % self.check_interval == 0 or state.step == end:
                check_finite(state, self.system)
            self._state = state
            self._report(state, clock)
            if progress is not None and clock.due_progress(state.step, end):
                progress(state.step, end, clock.ns_per_day(state.step))

    def _report(self, state: State, clock: _Clock, initial: bool = False) -> None:
        due = [r for r in self.reporters if state.step % r.interval == 0]
        if not due:
            return
        needs = frozenset().union(*(r.needs for r in due))
        frame = self.measure(state, needs, speed_ns_day=None if initial else clock.ns_per_day(state.step))
        clock.mark(state.step)
        for reporter in due:
            reporter.report(frame)

    def _close(self, opened: list[Reporter]) -> None:
        for reporter in opened:
            with contextlib.suppress(Exception):
                reporter.flush()
        for reporter in opened:
            with contextlib.suppress(Exception):
                reporter.close()

    def _finish(self, error: BaseException | None) -> None:
        try:
            self.registry.hook.torchmd_core_run_finished(simulation=self, error=error)
        except Exception:
            if error is None:
                raise

    def _collect_header(self) -> list[str]:
        from torchmd_core import __version__

        lines = [f"torchmd-core {__version__}, torch {torch.__version__}"]
        for result in self.registry.hook.torchmd_core_run_header(simulation=self):
            lines.extend(result or [])
        return lines

    def check_outputs(self) -> None:
        """Raise if any reporter's output file exists already (nothing is overwritten)."""
        existing = [str(p) for r in self.reporters for p in r.outputs() if Path(p).exists()]
        if existing:
            what = "output file " + existing[0] + " exists"
            if len(existing) > 1:
                what = "output files " + ", ".join(existing) + " exist"
            raise OutputExistsError(
                f"{what} already; continue the run with --resume CHECKPOINT, replace the "
                "files with --overwrite, or change the file names in the config"
            )

    def minimize(self, tolerance_kcal_mol_A: float = 0.24, max_iterations: int = 1000) -> State:
        """Minimise the potential energy in place (L-BFGS); returns the new state."""
        from torchmd_core.minimize import minimize

        with torch.no_grad():
            self.state = minimize(self.potential, self.state, tolerance_kcal_mol_A, max_iterations)
        return self.state

    # -- observations ---------------------------------------------------------------------------
    def measure(
        self, state: State, needs: frozenset[str] = frozenset(), speed_ns_day: float | None = None
    ) -> Frame:
        """A :class:`Frame` of ``state`` with the quantities in ``needs``."""
        terms = None
        forces = state.forces
        energy = state.potential_energy
        if "energy_terms" in needs:
            terms = {k: v.detach() for k, v in self.potential.energy_terms(state).items()}
            energy = torch.stack(list(terms.values())).sum(0) if terms else energy
        if "forces" in needs and forces is None:
            energy, forces = self.potential.energy_and_forces(state)
        if energy is None:
            energy = self.potential.energy(state)
        ke = kinetic_energy(state, self.system)
        volume = state.volume()
        density = None
        if volume is not None:
            density = self.system.total_mass() / volume * units.AMU_A3_TO_G_CM3
        return Frame(
            state=state,
            potential_energy=energy.detach(),
            kinetic_energy=ke.detach(),
            temperature_K=(2.0 * ke / (max(self.degrees_of_freedom, 1) * units.BOLTZMANN_KCAL_MOL_K)).detach(),
            volume_A3=volume,
            density_g_cm3=density,
            energy_terms=terms,
            forces=None if forces is None else forces.detach(),
            speed_ns_day=speed_ns_day,
        )

    # -- building from a config ------------------------------------------------------------------
    @classmethod
    def from_config(cls, config: SimulationConfig, registry: Registry | None = None) -> Simulation:
        """Build everything a config describes (loaders, components, initial state)."""
        from torchmd_core.builder import build_simulation

        return build_simulation(config, registry=registry)


class _Clock:
    """Wall-clock speed between reports and progress updates."""

    def __init__(self, timestep_fs: float, step: int) -> None:
        self.timestep_fs = timestep_fs
        self._t0, self._s0 = time.perf_counter(), step
        self._last_progress = 0.0

    def mark(self, step: int) -> None:
        self._t0, self._s0 = time.perf_counter(), step

    def ns_per_day(self, step: int) -> float:
        dt = time.perf_counter() - self._t0
        if step <= self._s0 or dt <= 0:
            return 0.0
        return units.ns_per_day((step - self._s0) / dt, self.timestep_fs)

    def due_progress(self, step: int, end: int) -> bool:
        now = time.perf_counter()
        if step == end or now - self._last_progress > 0.5:
            self._last_progress = now
            return True
        return False


def kinetic_energy(state: State, system: System) -> Tensor:
    """(R,) kinetic energy, kcal/mol (zeros without velocities)."""
    if state.velocities is None:
        return state.positions.new_zeros(state.n_replicas)
    m = system.masses.to(device=state.device, dtype=state.dtype)
    return 0.5 * units.AMU_A2_PS2_TO_KCAL_MOL * (m[None, :, None] * state.velocities.square()).sum((1, 2))


def temperature(state: State, system: System, remove_com_motion: bool = False) -> Tensor:
    """(R,) instantaneous temperature, K, from the system's degrees of freedom."""
    dof = max(system.degrees_of_freedom(remove_com_motion), 1)
    return 2.0 * kinetic_energy(state, system) / (dof * units.BOLTZMANN_KCAL_MOL_K)


def maxwell_boltzmann_velocities(
    system: System,
    temperature_K: float,
    n_replicas: int = 1,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
    remove_com_motion: bool = True,
) -> Tensor:
    """(R, N, 3) velocities (Å/ps) drawn from the Maxwell-Boltzmann distribution.

    Replica r uses a generator seeded from ``seed`` and r. Massless atoms get zero
    velocity; with ``remove_com_motion`` the total momentum is removed.
    """
    masses = system.masses.to(torch.float64)
    sigma = torch.where(
        masses > 0,
        torch.sqrt(units.BOLTZMANN_KCAL_MOL_K * temperature_K / (masses.clamp(min=1e-12) * units.AMU_A2_PS2_TO_KCAL_MOL)),
        torch.zeros_like(masses),
    )
    out = []
    for r in range(n_replicas):
        g = torch.Generator().manual_seed(int(seed) * 1_000_003 + 7 + r)
        v = torch.randn((system.n_atoms, 3), generator=g, dtype=torch.float64) * sigma[:, None]
        if remove_com_motion and float(masses.sum()) > 0:
            v = v - (masses[:, None] * v).sum(0) / masses.sum()
            v = torch.where(masses[:, None] > 0, v, torch.zeros_like(v))
        out.append(v)
    return torch.stack(out).to(device=device, dtype=dtype)


def check_finite(state: State, system: System) -> None:
    """Raise :class:`NumericalInstabilityError` naming the step and the worst atoms."""
    checks: list[tuple[str, Tensor | None]] = [
        ("positions", state.positions),
        ("velocities", state.velocities),
        ("forces", state.forces),
        ("energies", state.potential_energy),
    ]
    for name, value in checks:
        if value is None:
            continue
        v = value.detach()
        if bool(torch.isfinite(v).all()):
            continue
        raise NumericalInstabilityError(_instability_message(name, v, state, system))


def _instability_message(name: str, value: Tensor, state: State, system: System) -> str:
    msg = f"{name} became non-finite at step {state.step} (t = {state.time_ps:.4f} ps)"
    if value.dim() == 3:
        bad = (~torch.isfinite(value)).any(-1)  # (R, N)
        reps = torch.nonzero(bad.any(-1)).flatten().tolist()
        atoms = torch.nonzero(bad[reps[0]]).flatten().tolist()[:5]
        described = ", ".join(_describe_atom(system, a) for a in atoms)
        msg += f" in replica {reps[0]}; first atoms: {described}"
    msg += (
        ". Usual causes: overlapping atoms in the input (minimise first), a timestep too "
        "large for the constraints used, or missing parameters."
    )
    return msg


def _describe_atom(system: System, index: int) -> str:
    res = system.residues[int(system.residue_index[index])]
    return f"{index} ({system.atom_names[index]} {res.name}{res.number})"

