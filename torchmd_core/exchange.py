"""Temperature replica exchange (parallel tempering) between the replicas of a run.

Replica ``r`` starts in temperature slot ``r`` of an increasing ladder T_0 < T_1 < ...
(one slot per replica). Every ``interval`` steps neighbouring slots try to swap their
replicas, the even pairs (0, 1), (2, 3), ... and the odd pairs (1, 2), (3, 4), ... in
turn. The replicas i (at β_k = 1/k_B T_k) and j (at β_{k+1}) swap with probability

    min(1, exp((β_k − β_{k+1}) (U_i − U_j)))

(Metropolis; U the potential energies), which keeps the product of the canonical
distributions of all slots stationary (Sugita & Okamoto, Chem. Phys. Lett. 314, 141
(1999)). A swap exchanges temperatures, not configurations: each replica keeps its
positions and trajectory files and moves to the other bath (the integrator's
per-replica temperature, :meth:`Integrator.set_replica_temperatures
<torchmd_core.Integrator.set_replica_temperatures>`), its velocities rescaled by
sqrt(T_new / T_old). Frames carry each replica's ``bath_temperature_K`` (a column of the
``csv`` reporter) and the optional exchange log records the replica in every slot after
each attempt, so trajectories can be sorted by temperature afterwards.

The decisions use one random stream shared by the whole ensemble. In a distributed run
every process gathers all potential energies and takes the same decisions with its own
copy of that stream, so nothing but the energies travels and the run is the same as on
one process. The stream, the slot of every replica and the acceptance counts are part
of checkpoints.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal

import torch
from pydantic import Field
from torch import Tensor

from torchmd_core import units
from torchmd_core.errors import CheckpointError, OutputExistsError
from torchmd_core.reporter import Frame, Reporter, ReporterConfig, RunInfo
from torchmd_core.state import State

if TYPE_CHECKING:
    from torchmd_core.config import ExchangeConfig
    from torchmd_core.simulation import Simulation
    from torchmd_core.system import System

__all__ = ["ExchangeLog", "ReplicaExchange", "mean_acceptance"]

#: Offset of the exchange's random stream from the run's seed (apart from the
#: integrator's seed + r and the barostat's seed + 7919000 + r).
_SEED_OFFSET = 7919 * 2000


@dataclass(frozen=True)
class Attempt:
    """One round of swap attempts.

    Attributes:
        step: the step it happened at.
        swapped: (K − 1,) int8 per neighbouring slot pair (k, k + 1): 1 swapped,
            0 rejected, −1 not attempted in this round.
    """

    step: int
    swapped: Tensor


class ReplicaExchange:
    """Temperature replica exchange over ``len(temperatures_K)`` replicas.

    Args:
        temperatures_K: the ladder, K, strictly increasing; one slot per replica.
        interval: steps between attempts.
        seed: seed of the shared random stream (the run's seed).
        file: exchange log (CSV) to write, or None.
    """

    #: Per-replica quantities added to every frame (see :attr:`Frame.extras`).
    frame_extras: tuple[str, ...] = ("bath_temperature_K",)

    def __init__(
        self,
        temperatures_K: Sequence[float],
        interval: int,
        seed: int = 0,
        file: str | Path | None = None,
    ) -> None:
        temps = torch.as_tensor(temperatures_K, dtype=torch.float64).reshape(-1)
        if temps.numel() < 2 or bool((temps[1:] <= temps[:-1]).any()):
            raise ValueError(
                "temperatures_K must be 2 or more increasing values, got "
                f"{temps.tolist()}"
            )
        if interval <= 0:
            raise ValueError(f"interval must be > 0, got {interval}")
        self.temperatures_K = temps  # (K,)
        self.beta = 1.0 / (units.BOLTZMANN_KCAL_MOL_K * temps)  # (K,) mol/kcal
        self.interval = int(interval)
        self.seed = int(seed)
        self.file = None if file is None else Path(file)
        #: slot[r]: the temperature slot of replica r.
        self.slot = torch.arange(temps.numel())
        #: Rounds attempted so far (even rounds try the even pairs).
        self.n_rounds = 0
        #: Per neighbouring pair (k, k + 1): attempts and accepted swaps.
        self.attempted = torch.zeros(temps.numel() - 1, dtype=torch.int64)
        self.accepted = torch.zeros(temps.numel() - 1, dtype=torch.int64)
        self.generator = torch.Generator().manual_seed(self.seed + _SEED_OFFSET)
        #: The latest round, None before the first.
        self.last: Attempt | None = None
        self._simulation: Simulation | None = None

    @classmethod
    def from_config(cls, config: ExchangeConfig, seed: int) -> ReplicaExchange:
        return cls(config.temperatures_K, config.interval, seed, config.file)

    @property
    def n_replicas(self) -> int:
        return int(self.temperatures_K.numel())

    # -- the simulation ----------------------------------------------------------------
    def attach(self, simulation: Simulation) -> None:
        """Run within ``simulation``: set its integrator's per-replica baths.

        Raises:
            ConfigError: the integrator has no heat bath.
            ValueError: the simulation's replicas do not fit the ladder.
        """
        group, state = simulation.group, simulation._state
        total = state.n_replicas if group is None and state is not None else None
        if group is not None:
            total = group.n_replicas
        if total is not None and total != self.n_replicas:
            raise ValueError(
                f"replica exchange over {self.n_replicas} temperatures needs as many "
                f"replicas, the simulation has {total}"
            )
        self._simulation = simulation
        simulation.integrator.set_replica_temperatures(self.local_temperatures())

    def _local(self, simulation: Simulation) -> range:
        """The replicas the simulation runs (a distributed run's share, else all)."""
        if simulation.group is not None:
            return simulation.group.replicas
        return range(self.n_replicas)

    def local_temperatures(self) -> Tensor:
        """(R,) K, the bath temperature of each replica of the attached simulation."""
        sim = self._require()
        return self.temperatures_K[self.slot[list(self._local(sim))]]

    def bath_temperatures(self) -> Tensor:
        """(K,) K, the bath temperature of every replica of the ensemble."""
        return self.temperatures_K[self.slot]

    def replica_in_slot(self) -> Tensor:
        """(K,) the replica at each temperature slot."""
        return torch.argsort(self.slot)

    def measure(self, state: State) -> dict[str, Tensor]:
        """The per-replica quantities of a :class:`Frame`."""
        t = self.local_temperatures()
        return {"bath_temperature_K": t.to(device=state.device, dtype=state.dtype)}

    def apply(self, state: State, simulation: Simulation) -> State:
        """One round of swaps at ``state`` (in a distributed run, every process calls
        it: the energies are gathered from all). Returns the state with the velocities
        of replicas that changed bath rescaled."""
        energy = state.potential_energy
        if energy is None:
            energy = simulation.potential.energy(state)
        local = energy.detach().to(device="cpu", dtype=torch.float64)
        group = simulation.group
        energies = local if group is None else group.all_gather_replicas(local)
        before = self.local_temperatures()
        swapped = self.attempt(energies)
        self.last = Attempt(step=state.step, swapped=swapped)
        after = self.local_temperatures()
        if torch.equal(before, after):
            return state
        simulation.integrator.set_replica_temperatures(after)
        if state.velocities is None:
            return state
        scale = (after / before).sqrt().to(device=state.device, dtype=state.dtype)
        return state.replace(velocities=state.velocities * scale[:, None, None])

    # -- the criterion -----------------------------------------------------------------
    def attempt(self, energies: Tensor) -> Tensor:
        """One round of Metropolis swaps between neighbouring slots.

        Args:
            energies: (K,) potential energy of every replica, kcal/mol.

        Returns:
            (K − 1,) int8 per slot pair: 1 swapped, 0 rejected, −1 not attempted.
        """
        energies = energies.to(dtype=torch.float64, device="cpu").reshape(-1)
        if energies.numel() != self.n_replicas:
            raise ValueError(
                f"{energies.numel()} energies for {self.n_replicas} replicas"
            )
        lower = torch.arange(self.n_rounds % 2, self.n_replicas - 1, 2)  # slot k
        u = torch.rand(lower.numel(), generator=self.generator, dtype=torch.float64)
        occupant = self.replica_in_slot()
        i, j = occupant[lower], occupant[lower + 1]
        log_p = (self.beta[lower] - self.beta[lower + 1]) * (energies[i] - energies[j])
        accept = u < torch.exp(log_p.clamp(max=0.0))
        slot = self.slot.clone()
        slot[i[accept]], slot[j[accept]] = self.slot[j[accept]], self.slot[i[accept]]
        self.slot = slot
        self.attempted[lower] += 1
        self.accepted[lower] += accept.to(torch.int64)
        self.n_rounds += 1
        swapped = torch.full((self.n_replicas - 1,), -1, dtype=torch.int8)
        swapped[lower] = accept.to(torch.int8)
        return swapped

    def acceptance_rates(self) -> Tensor:
        """(K − 1,) accepted / attempted swaps of each neighbouring pair (NaN before
        the first attempt)."""
        return self.accepted.double() / self.attempted.double()

    def summary(self) -> str:
        """One line: the acceptance rate of every neighbouring pair."""
        t = self.temperatures_K.tolist()
        rates = self.acceptance_rates().tolist()
        parts = [
            f"{a:g}-{b:g} K {rate:.2f}" if n else f"{a:g}-{b:g} K -"
            for a, b, rate, n in zip(
                t, t[1:], rates, self.attempted.tolist(), strict=False
            )
        ]
        return "replica exchange acceptance: " + ", ".join(parts)

    # -- checkpoints -------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Slots, counts and the random stream (the same on every process)."""
        return {
            "temperatures_K": self.temperatures_K.clone(),
            "slot": self.slot.clone(),
            "n_rounds": self.n_rounds,
            "attempted": self.attempted.clone(),
            "accepted": self.accepted.clone(),
            "generator": self.generator.get_state(),
            "last": None
            if self.last is None
            else {"step": self.last.step, "swapped": self.last.swapped.clone()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; the attached integrator gets the baths back."""
        temps = torch.as_tensor(state["temperatures_K"], dtype=torch.float64)
        if not torch.equal(temps, self.temperatures_K):
            raise CheckpointError(
                f"the checkpoint's exchange ladder {temps.tolist()} K differs from "
                f"this run's {self.temperatures_K.tolist()} K"
            )
        self.slot = state["slot"].clone()
        self.n_rounds = int(state["n_rounds"])
        self.attempted = state["attempted"].clone()
        self.accepted = state["accepted"].clone()
        self.generator.set_state(state["generator"])
        last = state.get("last")
        self.last = None if last is None else Attempt(last["step"], last["swapped"])
        if self._simulation is not None:
            self._simulation.integrator.set_replica_temperatures(
                self.local_temperatures()
            )

    # -- outputs -----------------------------------------------------------------------
    def reporters(self, system: System) -> list[Reporter]:
        """The exchange log, when a file is configured."""
        if self.file is None:
            return []
        config = ExchangeLog.Config(file=self.file, interval=self.interval)
        return [ExchangeLog(config, system, self)]

    def _require(self) -> Simulation:
        if self._simulation is None:
            raise RuntimeError("the replica exchange is not attached to a simulation")
        return self._simulation


def mean_acceptance(
    beta_i: float,
    beta_j: float,
    energies: Tensor,
    probabilities_i: Tensor,
    probabilities_j: Tensor,
) -> float:
    """The mean swap acceptance of two slots whose replicas sample discrete energy
    levels independently: Σ_ab p_i(a) p_j(b) min(1, exp((β_i − β_j)(E_a − E_b))).

    Args:
        beta_i: inverse temperature of slot i, mol/kcal.
        beta_j: inverse temperature of slot j, mol/kcal.
        energies: (L,) the energy levels, kcal/mol.
        probabilities_i: (L,) occupation of each level at slot i.
        probabilities_j: (L,) occupation of each level at slot j.
    """
    e = energies.double()
    log_p = (beta_i - beta_j) * (e[:, None] - e[None, :])
    accept = torch.exp(log_p.clamp(max=0.0))
    joint = probabilities_i.double()[:, None] * probabilities_j.double()[None, :]
    return float((joint * accept).sum())


class ExchangeLog(Reporter):
    """The exchange log: one CSV row per round of swap attempts,
    ``step, time_ps, replica_at_<T>K ... , swapped_<Ti>K_<Tj>K ...``: the replica in
    each temperature slot after the round, and per neighbouring pair 1 (swapped),
    0 (rejected) or empty (not attempted in this round). Continued exactly after a
    checkpoint, like the built-in file reporters. In a distributed run rank 0 writes it
    (every process holds the same exchange state)."""

    collective = True  # every process reports; rank 0 writes

    class Config(ReporterConfig):
        kind: Literal["exchange_log"] = "exchange_log"
        file: Path = Field(description="Exchange log (CSV).")
        interval: int = Field(1000, gt=0, description="Steps between exchange rounds.")

    def __init__(
        self, config: Config, system: System, exchange: ReplicaExchange
    ) -> None:
        super().__init__(config, system)
        self.file = Path(config.file)
        self.exchange = exchange
        self.record: dict[str, int] | None = None  # {"bytes": size at the checkpoint}
        self.last_step: int | None = None
        self._fh: IO[str] | None = None
        self._writes = True

    def columns(self) -> list[str]:
        t = [f"{x:g}K" for x in self.exchange.temperatures_K.tolist()]
        return (
            ["step", "time_ps"]
            + [f"replica_at_{x}" for x in t]
            + [f"swapped_{a}_{b}" for a, b in itertools.pairwise(t)]
        )

    def output_conflicts(self, run: RunInfo) -> list[Path]:
        if not _writes_here(run) or not self.file.exists():
            return []
        if run.resume and self.record is not None:
            return []
        return [self.file]

    def open(self, run: RunInfo) -> None:
        self._writes = _writes_here(run)
        if not self._writes:
            return
        header = ",".join(self.columns())
        if run.resume and self.record is not None:
            self._continue(header)
            return
        if self.file.exists() and not run.overwrite:
            raise OutputExistsError(
                f"output file '{self.file}' exists already; pass --overwrite to "
                "replace it"
            )
        self.file.parent.mkdir(parents=True, exist_ok=True)
        self._fh = self.file.open("w", newline="", buffering=1)
        self._fh.write(header + "\n")

    def _continue(self, header: str) -> None:
        assert self.record is not None
        if not self.file.exists() or self.file.stat().st_size < self.record["bytes"]:
            raise CheckpointError(
                f"'{self.file}' is missing or shorter than when the checkpoint was "
                "written; restore it, or start it anew with --overwrite"
            )
        with self.file.open("r", newline="") as fh:
            first = fh.readline().rstrip("\r\n")
        if first != header:
            raise CheckpointError(
                f"'{self.file}' does not start with the columns of this run's exchange "
                "log; restore it, or start it anew with --overwrite"
            )
        os.truncate(self.file, self.record["bytes"])
        self._fh = self.file.open("a", newline="", buffering=1)

    def report(self, frame: Frame) -> None:
        last = self.exchange.last
        if not self._writes or last is None or last.step != frame.step:
            return
        assert self._fh is not None
        at = [str(r) for r in self.exchange.replica_in_slot().tolist()]
        swapped = ["" if s < 0 else str(s) for s in last.swapped.tolist()]
        self._fh.write(
            ",".join([str(frame.step), f"{frame.time_ps:.6f}", *at, *swapped])
        )
        self._fh.write("\n")
        self.last_step = frame.step

    def flush(self) -> None:
        if self._fh is not None and not self._fh.closed:
            self._fh.flush()
            os.fsync(self._fh.fileno())

    def close(self) -> None:
        self.record = self.state_dict()["file"]
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def outputs(self) -> tuple[Path, ...]:
        return (self.file,)

    def state_dict(self) -> dict[str, Any]:
        self.flush()
        record = self.record
        if self._writes and self.file.exists() and self._fh is not None:
            record = {"bytes": self.file.stat().st_size}
        return {"file": record, "step": self.last_step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.record = state.get("file")
        self.last_step = state.get("step")


def _writes_here(run: RunInfo) -> bool:
    simulation = run.simulation
    return simulation is None or simulation.group is None or simulation.group.rank == 0
