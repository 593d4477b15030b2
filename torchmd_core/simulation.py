"""The one run loop: integrate, move the box, check, report, checkpoint.

Library use needs no config and no plugin names::

    sim = Simulation(system, amber + nonbonded, LangevinBAOAB(cfg, system),
                     [CSVReporter(...)], state=State.from_coordinates(coords.positions))
    sim.run(1000)

The loop runs under ``torch.no_grad()`` unless ``differentiable=True`` is passed to
:meth:`Simulation.run`, in which case every state keeps its autograd graph (see the
differentiable-simulation guide).

Continuing is exact: ``run(a)`` then ``run(b)`` gives bit for bit the trajectory of
``run(a + b)``, and so does a run resumed from a checkpoint. Nothing in the loop
depends on where a run segment started: :meth:`Integrator.setup` runs once for a new
state (not again when a run continues), the forces cached in the state and the shared
neighbour list's build positions travel in checkpoints, and each step is reported once.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
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
    from torchmd_core.distributed import ReplicaGroup
    from torchmd_core.exchange import ReplicaExchange
    from torchmd_core.registry import Registry

__all__ = [
    "Simulation",
    "check_finite",
    "kinetic_energy",
    "maxwell_boltzmann_velocities",
    "temperature",
]

#: ``progress(step, end_step, ns_per_day)``; ns/day is the speed since the run started.
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
        group: this process's share of a distributed run (see
            :mod:`torchmd_core.distributed`): the state holds replicas
            ``group.replicas`` of the ensemble, which keep their global identity
            (random streams, file names).
        exchange: temperature replica exchange between the replicas (see
            :mod:`torchmd_core.exchange`).
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
        group: ReplicaGroup | None = None,
        exchange: ReplicaExchange | None = None,
    ) -> None:
        self.system = system
        if isinstance(potential, PotentialSum) and (
            potential.virtual_sites is not None or not system.virtual_sites
        ):
            self.potential = potential
        elif isinstance(potential, PotentialSum):  # built without the system's sites
            nl = potential.neighbor_list
            self.potential = PotentialSum(  # flattens the given sum's terms
                [potential], system=system, skin=nl.skin if nl else skin
            )
        else:
            terms = [potential] if isinstance(potential, Potential) else list(potential)
            self.potential = PotentialSum(terms, system=system, skin=skin)
        self.integrator = integrator
        self.reporters = list(reporters)
        self.barostat = barostat
        self.config = config
        self.seed = seed
        self.group = group
        self.exchange = exchange
        self._registry = registry
        self._state: State | None = None
        self.header: list[str] = []
        #: Check for non-finite values every this many steps (each check syncs the
        #: device); every reporting step is checked too.
        self.check_interval = 1
        self._ready_for: tuple[int, torch.device] | None = None
        #: Integrator.setup is due: the state was set from outside, not by the loop.
        self._needs_setup = True
        #: Step whose reporting is complete (None: the current state was not reported).
        self._reported_step: int | None = None
        #: Reporters were opened by an earlier run: later runs append to their files.
        self._has_run = False
        self._stop_requested = False
        self._stop_agreed = False  # distributed runs: the stop all processes agreed on
        if state is not None:
            self.state = state
        if exchange is not None:
            exchange.attach(self)

    # -- state -------------------------------------------------------------------------
    @property
    def state(self) -> State:
        if self._state is None:
            raise RuntimeError(
                "the simulation has no state yet: set Simulation.state first"
            )
        return self._state

    @state.setter
    def state(self, state: State) -> None:
        if state.n_atoms != self.system.n_atoms:
            raise ValueError(
                f"state has {state.n_atoms} atoms, the system {self.system.n_atoms}"
            )
        if self.group is not None and state.n_replicas != len(self.group.replicas):
            raise ValueError(
                f"state has {state.n_replicas} replicas, this process runs "
                f"{len(self.group.replicas)} ({self.group.describe()})"
            )
        self._state = state
        self._needs_setup = True
        self._reported_step = None
        key = (state.n_replicas, state.device)
        if self._ready_for != key:
            self._ready_for = key
            self.potential.to(device=state.device, dtype=state.dtype)
            self.integrator.to(device=state.device, dtype=state.dtype)
            if self.barostat is not None:
                self.barostat.to(device=state.device, dtype=state.dtype)
            first = self.first_replica  # replica r draws as replica first + r
            if len(self.integrator.generators) != state.n_replicas:
                self.integrator.seed(self.seed + first, state.n_replicas, state.device)
            if (
                self.barostat is not None
                and len(self.barostat.generators) != state.n_replicas
            ):
                self.barostat.seed(
                    self.seed + first + 7919 * 1000, state.n_replicas, state.device
                )
            self.check_interval = 1 if state.device.type == "cpu" else 100

    def continue_from(self, state: State, reported_step: int | None) -> None:
        """Adopt a state the run loop produced earlier (a checkpoint's): no
        :meth:`Integrator.setup`, and ``reported_step`` is not reported again."""
        self.state = state
        self._needs_setup = False
        self._reported_step = reported_step

    @property
    def first_replica(self) -> int:
        """Global index of this simulation's first replica (0 unless distributed)."""
        return 0 if self.group is None else self.group.replicas.start

    @property
    def reported_step(self) -> int | None:
        """The step whose reports are complete, None when the state was not reported."""
        return self._reported_step

    @property
    def registry(self) -> Registry:
        if self._registry is None:
            from torchmd_core.plugins import default_registry

            self._registry = default_registry()
        return self._registry

    @property
    def degrees_of_freedom(self) -> int:
        return self.system.degrees_of_freedom(self.integrator.removes_com_motion)

    def request_stop(self) -> None:
        """Ask a running :meth:`run` to stop after the current step, cleanly: that step
        is reported, reporters with ``at_end`` (checkpoints) write, files are closed.
        Safe to call from a signal handler."""
        self._stop_requested = True

    # -- running -----------------------------------------------------------------------
    def run(
        self,
        steps: int,
        differentiable: bool = False,
        resume: bool = False,
        overwrite: bool = False,
        progress: ProgressCallback | None = None,
    ) -> State:
        """Advance ``steps`` steps, reporting along the way. Returns the final state.

        The run stops early, after a complete step, when :meth:`request_stop` is called
        (e.g. from a signal handler); ``state.step`` then tells how far it got.

        Args:
            steps: number of integration steps.
            differentiable: keep the autograd graph through the whole trajectory.
            resume: reporters append to the files of a previous segment (implied for
                every run of this simulation after the first).
            overwrite: allow replacing existing output files.
            progress: called as ``progress(step, end_step, ns_per_day)`` after each
                reporting step and at most every half second in between.

        Raises:
            OutputExistsError: an output file exists (without ``overwrite``).
            NumericalInstabilityError: positions, velocities, forces or energies
                became non-finite; the reporters are flushed and closed first.
        """
        if steps < 0:
            raise ValueError(f"steps must be >= 0, got {steps}")
        state = self.state
        self.header = self._collect_header()
        info = self._run_info(state.step, state.step + steps, resume, overwrite)
        if not overwrite:
            self._refuse_existing_outputs(info)
        self._stop_requested = self._stop_agreed = False
        opened: list[Reporter] = []
        error: BaseException | None = None
        grad = contextlib.nullcontext() if differentiable else torch.no_grad()
        try:
            for reporter in self._ordered(self._reporters_here()):
                reporter.open(self._info_for(reporter, info))
                opened.append(reporter)
            self._has_run = True
            if self.group is not None:  # every process opened its outputs
                self.group.check()
            self.registry.hook.torchmd_core_run_started(simulation=self)
            with grad:
                self._loop(info.total_steps, progress)
        except BaseException as err:
            error = err
            if self.group is not None:  # tell the others; raise what all agree on
                self.group.fail(err)
            raise
        finally:
            self._close(opened, failing=error is not None)
            self._finish(error)
        return self.state

    def _run_info(self, start: int, end: int, resume: bool, overwrite: bool) -> RunInfo:
        state = self.state
        return RunInfo(
            system=self.system,
            n_replicas=state.n_replicas,
            term_names=self.potential.term_names,
            timestep_fs=self.integrator.timestep_fs,
            periodic=state.is_periodic,
            start_step=start,
            total_steps=end,
            resume=resume or self._has_run,
            overwrite=overwrite,
            header=tuple(self.header),
            simulation=self,
            first_replica=self.first_replica,
            total_replicas=None if self.group is None else self.group.n_replicas,
            extras=() if self.exchange is None else self.exchange.frame_extras,
        )

    def _reporters_here(self) -> list[Reporter]:
        """The reporters this process runs (all of them unless distributed)."""
        if self.group is None:
            return self.reporters
        return [r for r in self.reporters if self.group.runs_here(r)]

    def _info_for(self, reporter: Reporter, info: RunInfo) -> RunInfo:
        return info if self.group is None else self.group.run_info(reporter, info)

    def _stopping(self, step: int | None = None, end: int = 0) -> bool:
        """Whether to stop after this step. Distributed: the stop all processes agreed
        on at the last check (``step`` given: check now if this is a check step)."""
        if self.group is None:
            return self._stop_requested
        if step is not None and self.group.check_due(step, end, self.reporters):
            self._stop_agreed = self.group.sync(self._stop_requested) > 0
        return self._stop_agreed

    def _loop(self, end: int, progress: ProgressCallback | None) -> None:
        state = self.state
        # 1. Once per new state: the integrator's preparation (e.g. constraints).
        if self._needs_setup:
            state = self.integrator.setup(state, self.potential)
            self._needs_setup = False
            self._state = state
        clock = _Clock(self.integrator.timestep_fs, state.step)
        ended_at: int | None = None  # the step whose reports included the at_end ones
        # 2. Report the starting point, unless an earlier segment did.
        if self._reported_step != state.step:
            check_finite(state, self.system, first_replica=self.first_replica)
            final = state.step >= end
            self._report(state, clock, self._due(state.step, final))
            self._reported_step = state.step
            ended_at = state.step if final else None
        last_checked = state
        while state.step < end and not self._stopping():
            # 3. One step, then the barostat's move and replica exchange.
            state = self.integrator.step(state, self.potential)
            if self.barostat is not None and state.step % self.barostat.interval == 0:
                state = self.barostat.apply(state, self.potential)
            if self.exchange is not None and state.step % self.exchange.interval == 0:
                state = self.exchange.apply(state, self)
            # 4. Check before anything is written (never report or checkpoint NaNs).
            final = state.step >= end or self._stopping(state.step, end)
            due = self._due(state.step, final)
            if due or state.step % self.check_interval == 0:
                check_finite(
                    state, self.system, last_checked, first_replica=self.first_replica
                )
                last_checked = state
            self._state = state
            # 5. Report; checkpoint writers last.
            if due:
                self._report(state, clock, due)
            self._reported_step = state.step
            ended_at = state.step if final else None
            if progress is not None and clock.due_progress(state.step, end):
                progress(state.step, end, clock.run_ns_per_day(state.step))
        # 6. The final frame for at_end reporters, when step 5 did not include them
        #    (no step taken, or a stop requested while reporting).
        if ended_at != state.step:
            check_finite(
                state, self.system, last_checked, first_replica=self.first_replica
            )
            self._report(
                state, clock, self._ordered([r for r in self.reporters if r.at_end])
            )

    def _due(self, step: int, final: bool = False) -> list[Reporter]:
        """Reporters due at ``step`` (with ``final``, also the at_end ones), checkpoint
        writers last."""
        due = [
            r
            for r in self.reporters
            if (r.interval > 0 and step % r.interval == 0) or (final and r.at_end)
        ]
        return self._ordered(due) if due else due

    @staticmethod
    def _ordered(reporters: list[Reporter]) -> list[Reporter]:
        return [r for r in reporters if not r.runs_last] + [
            r for r in reporters if r.runs_last
        ]

    def _report(self, state: State, clock: _Clock, due: list[Reporter]) -> None:
        if not due:
            return
        needs = frozenset().union(*(r.needs for r in due))
        frame = self.measure(state, needs, speed_ns_day=clock.ns_per_day(state.step))
        clock.mark(state.step)
        # Distributed: rank 0 gets frames of all replicas for the reporters it runs.
        frames = None if self.group is None else self.group.frames(frame, due)
        for reporter in due:
            if reporter.runs_last:  # the others are done: a checkpoint records that
                self._reported_step = state.step
            shown = frame if frames is None else frames(reporter)
            if shown is not None:  # None: another process writes this reporter
                reporter.report(shown)

    def _close(self, opened: list[Reporter], failing: bool) -> None:
        # Closing must not hide the error that ended the run, and one reporter failing
        # to close must not keep the others from flushing their files.
        problems: list[BaseException] = []
        for reporter in opened:
            try:
                reporter.flush()
            except Exception as err:
                problems.append(err)
        for reporter in opened:
            try:
                reporter.close()
            except Exception as err:
                problems.append(err)
        if problems and not failing:
            raise problems[0]

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

    def check_outputs(self, resume: bool = False) -> None:
        """Raise :class:`OutputExistsError` if a run would replace a file its
        reporters did not write (with ``resume``, files they have no record of)."""
        state = self.state
        self._refuse_existing_outputs(
            self._run_info(state.step, state.step, resume, False)
        )

    def _refuse_existing_outputs(self, info: RunInfo) -> None:
        existing = [
            str(p)
            for r in self._reporters_here()
            for p in r.output_conflicts(self._info_for(r, info))
        ]
        if not existing:
            return
        what = f"output file '{existing[0]}' exists"
        if len(existing) > 1:
            what = "output files " + ", ".join(f"'{p}'" for p in existing) + " exist"
        if info.resume:
            raise OutputExistsError(
                f"{what} already, but the run being continued did not write "
                f"{'it' if len(existing) == 1 else 'them'} (a reporter added since the "
                "checkpoint?); move it away, change the file name in the config, or "
                "replace it with --overwrite"
            )
        raise OutputExistsError(
            f"{what} already; continue the run with --resume CHECKPOINT, replace the "
            "files with --overwrite, or change the file names in the config"
        )

    def minimize(
        self, tolerance_kcal_mol_A: float = 0.24, max_iterations: int = 1000
    ) -> State:
        """Minimise the potential energy in place (L-BFGS); returns the new state.

        The integrator's constraints (its ``constraint_solver``) stay satisfied.
        """
        from torchmd_core.minimize import minimize

        with torch.no_grad():
            self.state = minimize(
                self.potential,
                self.state,
                tolerance_kcal_mol_A,
                max_iterations,
                constraints=self.integrator.constraint_solver,
            )
        return self.state

    # -- observations ------------------------------------------------------------------
    def measure(
        self,
        state: State,
        needs: frozenset[str] = frozenset(),
        speed_ns_day: float | None = None,
    ) -> Frame:
        """A :class:`Frame` of ``state`` with the quantities in ``needs``."""
        terms = None
        forces = state.forces
        energy = state.potential_energy
        if "energy_terms" in needs:
            terms = {
                k: v.detach() for k, v in self.potential.energy_terms(state).items()
            }
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
        dof = max(self.degrees_of_freedom, 1)
        extras = {} if self.exchange is None else self.exchange.measure(state)
        return Frame(
            state=state,
            potential_energy=energy.detach(),
            kinetic_energy=ke.detach(),
            temperature_K=(2.0 * ke / (dof * units.BOLTZMANN_KCAL_MOL_K)).detach(),
            volume_A3=None if volume is None else volume.detach(),
            density_g_cm3=None if density is None else density.detach(),
            energy_terms=terms,
            forces=None if forces is None else forces.detach(),
            speed_ns_day=speed_ns_day,
            extras=extras,
        )

    # -- building from a config --------------------------------------------------------
    @classmethod
    def from_config(
        cls,
        config: SimulationConfig,
        registry: Registry | None = None,
        group: ReplicaGroup | None = None,
    ) -> Simulation:
        """Build everything a config describes (loaders, components, initial state);
        with ``group``, this process's share of a distributed run."""
        from torchmd_core.builder import build_simulation

        return build_simulation(config, registry=registry, group=group)


class _Clock:
    """Wall-clock speed between reports, and since the run started."""

    def __init__(self, timestep_fs: float, step: int) -> None:
        self.timestep_fs = timestep_fs
        self._start_t, self._start_s = time.perf_counter(), step
        self._t0, self._s0 = self._start_t, step
        self._last_progress = 0.0

    def mark(self, step: int) -> None:
        self._t0, self._s0 = time.perf_counter(), step

    def ns_per_day(self, step: int) -> float | None:
        """Speed since the previous report (None before any step was timed)."""
        return self._speed(step, self._t0, self._s0)

    def run_ns_per_day(self, step: int) -> float:
        return self._speed(step, self._start_t, self._start_s) or 0.0

    def _speed(self, step: int, t0: float, s0: int) -> float | None:
        dt = time.perf_counter() - t0
        if step <= s0 or dt <= 0:
            return None
        return units.ns_per_day((step - s0) / dt, self.timestep_fs)

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
    return (
        0.5
        * units.AMU_A2_PS2_TO_KCAL_MOL
        * (m[None, :, None] * state.velocities.square()).sum((1, 2))
    )


def temperature(
    state: State, system: System, remove_com_motion: bool = False
) -> Tensor:
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
    replicas: Sequence[int] | None = None,
) -> Tensor:
    """(R, N, 3) velocities (Å/ps) drawn from the Maxwell-Boltzmann distribution.

    Replica r uses a generator seeded from ``seed`` and r. Massless atoms get zero
    velocity; with ``remove_com_motion`` the total momentum is removed. ``replicas``
    draws only those replicas (global indices, e.g. one process's share of a
    distributed run) instead of ``range(n_replicas)``.
    """
    masses = system.masses.to(torch.float64)
    sigma = torch.where(
        masses > 0,
        torch.sqrt(
            units.BOLTZMANN_KCAL_MOL_K
            * temperature_K
            / (masses.clamp(min=1e-12) * units.AMU_A2_PS2_TO_KCAL_MOL)
        ),
        torch.zeros_like(masses),
    )
    out = []
    for r in range(n_replicas) if replicas is None else replicas:
        g = torch.Generator().manual_seed(int(seed) * 1_000_003 + 7 + r)
        v = (
            torch.randn((system.n_atoms, 3), generator=g, dtype=torch.float64)
            * sigma[:, None]
        )
        if remove_com_motion and float(masses.sum()) > 0:
            v = v - (masses[:, None] * v).sum(0) / masses.sum()
            v = torch.where(masses[:, None] > 0, v, torch.zeros_like(v))
        out.append(v)
    return torch.stack(out).to(device=device, dtype=dtype)


# -- numerical failure -----------------------------------------------------------------

_SHOWN_ATOMS = 5


def check_finite(
    state: State,
    system: System,
    previous: State | None = None,
    first_replica: int = 0,
) -> None:
    """Raise :class:`NumericalInstabilityError` when positions, velocities, forces or
    energies of ``state`` are not all finite.

    The message names the step, the replicas and atoms with non-finite values and,
    when ``previous`` (the last state that passed this check) has forces, the atoms
    with the largest forces there: usually where the trouble started. Replicas are
    named by their global index, ``first_replica`` + their index in ``state``.
    """
    checks: list[tuple[str, Tensor | None]] = [
        ("positions", state.positions),
        ("velocities", state.velocities),
        ("forces", state.forces),
        ("potential energies", state.potential_energy),
    ]
    finite = [torch.isfinite(v.detach()).all() for _, v in checks if v is not None]
    if bool(torch.stack(finite).all()):  # one device sync for all checks
        return
    for name, value in checks:
        if value is not None and not bool(torch.isfinite(value.detach()).all()):
            raise NumericalInstabilityError(
                _instability_message(
                    name, value.detach(), state, system, previous, first_replica
                )
            )


def _instability_message(
    name: str,
    value: Tensor,
    state: State,
    system: System,
    previous: State | None,
    first_replica: int = 0,
) -> str:
    lines = [
        f"{name} became non-finite at step {state.step} (t = {state.time_ps:.4f} ps)"
    ]
    if value.dim() == 3:  # per atom: which ones
        bad = (~torch.isfinite(value)).any(-1)  # (R, N)
        reps = torch.nonzero(bad.any(-1)).flatten().tolist()
        for r in reps[:3]:
            atoms = torch.nonzero(bad[r]).flatten().tolist()
            shown = ", ".join(_describe_atom(system, a) for a in atoms[:_SHOWN_ATOMS])
            more = (
                f" and {len(atoms) - _SHOWN_ATOMS} more"
                if len(atoms) > _SHOWN_ATOMS
                else ""
            )
            lines.append(
                f"  replica {first_replica + r}: {len(atoms)} atom(s) affected: "
                f"{shown}{more}"
            )
        if len(reps) > 3:
            lines.append(f"  ... and {len(reps) - 3} more replicas")
    else:
        reps = torch.nonzero(~torch.isfinite(value)).flatten().tolist()
        shown = ", ".join(str(first_replica + r) for r in reps[:10])
        lines.append(f"  replica(s) {shown}")
    lines.extend(_largest_forces(system, previous, reps, first_replica))
    lines.append(
        "Usual causes: overlapping atoms in the input (minimise first), a timestep too "
        "large for the constraints used (try 1 fs or constraints: hbonds), missing or "
        "wrong parameters on the atoms named above, or a box that is too small."
    )
    return "\n".join(lines)


def _largest_forces(
    system: System, previous: State | None, reps: list[int], first_replica: int = 0
) -> list[str]:
    if previous is None or previous.forces is None or not reps:
        return []
    r = reps[0]
    norms = torch.linalg.vector_norm(previous.forces[r].detach(), dim=-1)  # (N,)
    k = min(_SHOWN_ATOMS, int(norms.shape[0]))
    top = torch.topk(norms, k)
    shown = ", ".join(
        f"{_describe_atom(system, int(i))} {float(f):.3g}"
        for f, i in zip(top.values.tolist(), top.indices.tolist(), strict=True)
    )
    return [
        f"  largest forces at step {previous.step} (replica {first_replica + r}, "
        f"kcal/mol/Å): {shown}"
    ]


def _describe_atom(system: System, index: int) -> str:
    res = system.residues[int(system.residue_index[index])]
    return f"{index} ({system.atom_names[index]} {res.name}{res.number})"
