"""The run loop: reporting order and frequency, stopping, failures, output safety."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import pytest

from tests.core import toys
from tests.plugins.reporters.conftest import write_config
from torchmd_core import (
    Frame,
    NumericalInstabilityError,
    OutputExistsError,
    Reporter,
    ReporterConfig,
    RunInfo,
    Simulation,
    State,
    load_config,
)
from torchmd_core.checkpoint import read_checkpoint
from torchmd_core.simulation import check_finite
from torchmd_core.testing import random_state, toy_system


class Recorder(Reporter):
    """Appends (name, step) to a shared list."""

    def __init__(
        self,
        name: str,
        interval: int,
        log: list[tuple[str, int]],
        runs_last: bool = False,
        at_end: bool = False,
    ) -> None:
        super().__init__(
            ReporterConfig(kind="test.recorder", interval=max(interval, 1)),
            toy_system(4),
        )
        self.name, self.log, self._interval = name, log, interval
        self.runs_last = runs_last  # type: ignore[misc]
        self.at_end = at_end  # type: ignore[misc]

    @property
    def interval(self) -> int:
        return self._interval  # 0: only at the end

    def report(self, frame: Frame) -> None:
        self.log.append((self.name, frame.step))


def toy_simulation(
    reporters=(), n_replicas: int = 1, noise: float = 0.05
) -> Simulation:
    system = toy_system(12)
    potential = [
        toys.HarmonicBonds(toys.HarmonicBonds.Config(), system),
        toys.SoftPairs(toys.SoftPairs.Config(cutoff=3.0), system),
    ]
    integrator = toys.ToyVerlet(toys.ToyVerlet.Config(noise=noise), system)
    state = random_state(system, n_replicas, box=14.0)
    return Simulation(
        system, potential, integrator, list(reporters), state=state, seed=1
    )


def test_reports_at_start_and_every_interval_checkpoint_writers_last():
    log: list[tuple[str, int]] = []
    chk = Recorder("chk", 4, log, runs_last=True)
    sim = toy_simulation([chk, Recorder("a", 2, log), Recorder("b", 4, log)])
    sim.run(8)
    assert log == [
        ("a", 0),
        ("b", 0),
        ("chk", 0),
        ("a", 2),
        ("a", 4),
        ("b", 4),
        ("chk", 4),
        ("a", 6),
        ("a", 8),
        ("b", 8),
        ("chk", 8),
    ]


def test_at_end_reporters_get_the_final_frame_once():
    log: list[tuple[str, int]] = []
    sim = toy_simulation(
        [Recorder("end", 0, log, at_end=True), Recorder("every3", 3, log, at_end=True)]
    )
    sim.run(7)
    assert log == [
        ("every3", 0),
        ("every3", 3),
        ("every3", 6),
        ("end", 7),
        ("every3", 7),
    ]
    log.clear()
    sim.run(2)  # continues: step 7 is not reported again
    assert log == [("end", 9), ("every3", 9)]


def test_a_second_run_continues_without_reporting_the_start_again():
    log: list[tuple[str, int]] = []
    sim = toy_simulation([Recorder("a", 1, log)])
    sim.run(2)
    sim.run(2)
    assert [s for _, s in log] == [0, 1, 2, 3, 4]
    sim.state = sim.state.replace(positions=sim.state.positions + 0.01)  # a new state
    sim.run(0)
    assert [s for _, s in log] == [0, 1, 2, 3, 4, 4]


def test_setup_runs_once_per_new_state():
    sim = toy_simulation()
    calls: list[int] = []
    original = sim.integrator.setup

    def setup(state: State, potential: Any) -> State:
        calls.append(state.step)
        return original(state, potential)

    sim.integrator.setup = setup  # type: ignore[method-assign]
    sim.run(3)
    sim.run(3)
    assert calls == [0]
    sim.state = sim.state.detach()
    sim.run(1)
    assert calls == [0, 6]


def test_request_stop_ends_after_a_complete_step():
    log: list[tuple[str, int]] = []

    class StopAt(Recorder):
        def report(self, frame: Frame) -> None:
            super().report(frame)
            if frame.step == 5:
                sim.request_stop()

    sim = toy_simulation(
        [
            StopAt("stop", 1, log),
            Recorder("end", 0, log, at_end=True),
            Recorder("chk", 100, log, runs_last=True, at_end=True),
        ]
    )
    state = sim.run(20)
    assert state.step == 5
    assert log[-3:] == [("stop", 5), ("end", 5), ("chk", 5)]
    sim.run(2)  # the request does not outlive its run
    assert sim.state.step == 7


def test_progress_is_reported_with_the_end_step():
    calls: list[tuple[int, int, float]] = []
    toy_simulation().run(6, progress=lambda s, e, r: calls.append((s, e, r)))
    assert calls and calls[-1][:2] == (6, 6) and all(r >= 0 for _, _, r in calls)


def test_non_finite_forces_stop_the_run_naming_step_and_atoms():
    log: list[tuple[str, int]] = []
    sim = toy_simulation([Recorder("a", 1, log)], n_replicas=2)
    original = sim.integrator.step

    def step(state: State, potential: Any) -> State:
        new = original(state, potential)
        if new.step == 4:
            forces = new.forces.clone()
            forces[1, 7, 0] = float("nan")
            new = new.replace(forces=forces)
        return new

    sim.integrator.step = step  # type: ignore[method-assign]
    with pytest.raises(NumericalInstabilityError) as info:
        sim.run(10)
    text = str(info.value)
    assert "forces became non-finite at step 4" in text
    assert "replica 1: 1 atom(s) affected: 7 (H7 MOL1)" in text
    assert "largest forces at step 3 (replica 1" in text
    assert log[-1] == ("a", 3)  # the bad step was never reported
    assert sim.state.step == 3  # the simulation keeps the last good state


def test_check_finite_names_positions_of_each_replica():
    system = toy_system(12)
    state = random_state(system, 3)
    positions = state.positions.clone()
    positions[0, 2] = float("inf")
    positions[2, 3:10, 1] = float("nan")
    with pytest.raises(NumericalInstabilityError) as info:
        check_finite(state.replace(positions=positions), system)
    text = str(info.value)
    assert "positions became non-finite at step 0" in text
    assert "replica 0: 1 atom(s) affected: 2 (C2 MOL1)" in text
    assert (
        "replica 2: 7 atom(s) affected: 3 (H3 MOL1), 4 (C4 MOL1)" in text
        and "and 2 more" in text
    )
    check_finite(state, system)  # finite: no error


def test_reporters_are_flushed_and_closed_when_the_run_fails():
    events: list[str] = []

    class Tracking(Reporter):
        def __init__(self) -> None:
            super().__init__(
                ReporterConfig(kind="test.tracking", interval=1), toy_system(4)
            )

        def report(self, frame: Frame) -> None:
            events.append(f"report {frame.step}")

        def flush(self) -> None:
            events.append("flush")

        def close(self) -> None:
            events.append("close")

    sim = toy_simulation([Tracking()])

    def explode(state: State, potential: Any) -> State:
        raise NumericalInstabilityError("boom")

    sim.integrator.step = explode  # type: ignore[method-assign]
    with pytest.raises(NumericalInstabilityError):
        sim.run(3)
    assert events == ["report 0", "flush", "close"]


def test_run_refuses_existing_outputs_and_touches_nothing(tmp_path, toy_registry):
    cfg = write_config(
        tmp_path,
        [
            {"kind": "csv", "file": "log.csv", "interval": 1},
            {"kind": "dcd", "file": "t.dcd", "interval": 1},
        ],
        steps=3,
    )
    (tmp_path / "t.dcd").write_text("someone else's file")
    sim = Simulation.from_config(load_config(cfg))
    with pytest.raises(
        OutputExistsError,
        match=r"'.*t\.dcd' exists already; continue the run with --resume",
    ):
        sim.run(3)
    assert (tmp_path / "t.dcd").read_text() == "someone else's file"
    assert not (tmp_path / "log.csv").exists()  # nothing was started either
    sim.run(3, overwrite=True)
    assert (tmp_path / "t.dcd").stat().st_size > 100


def test_resume_refuses_files_the_checkpointed_run_did_not_write(
    tmp_path, toy_registry
):
    from torchmd_core import load_checkpoint, save_checkpoint

    cfg = write_config(
        tmp_path, [{"kind": "csv", "file": "log.csv", "interval": 1}], steps=3
    )
    sim = Simulation.from_config(load_config(cfg))
    sim.run(3)
    save_checkpoint(sim, tmp_path / "c.chk")
    (tmp_path / "new.csv").write_text("precious")
    cfg2 = write_config(
        tmp_path,
        [
            {"kind": "csv", "file": "log.csv", "interval": 1},
            {"kind": "csv", "file": "new.csv", "interval": 1},
        ],
        steps=6,
    )
    resumed = Simulation.from_config(load_config(cfg2))
    load_checkpoint(resumed, tmp_path / "c.chk")
    with pytest.raises(OutputExistsError, match="did not write it"):
        resumed.run(3, resume=True)
    assert (tmp_path / "new.csv").read_text() == "precious"


def test_hand_made_reporter_without_files_needs_no_checks(tmp_path):
    class Plain(Reporter):
        frames: ClassVar[list[int]] = []

        def report(self, frame: Frame) -> None:
            self.frames.append(frame.step)

    reporter = Plain(ReporterConfig(kind="plain", interval=2), toy_system(4))
    assert reporter.output_conflicts(RunInfo(toy_system(4), 1, (), 1.0, False)) == []
    assert reporter.checkpoint_key() == "plain:"
    sim = toy_simulation([reporter])
    sim.run(4)
    assert Plain.frames == [0, 2, 4]


def test_final_checkpoint_records_the_final_step_as_reported(tmp_path, toy_registry):
    cfg = write_config(
        tmp_path, [{"kind": "checkpoint", "file": "c.chk", "interval": 4}], steps=6
    )
    sim = Simulation.from_config(load_config(cfg))
    sim.run(6)
    payload = read_checkpoint(tmp_path / "c.chk")
    assert payload["state"]["step"] == 6 and payload["reported_step"] == 6
    assert Path(tmp_path / "c.chk").exists()
