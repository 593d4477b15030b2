"""``tmd run``: progress display, Ctrl-C and SIGTERM, failures, resuming."""

from __future__ import annotations

import io
import os
import signal
import types
from typing import Any, Literal

import pytest
import yaml
from pydantic import Field

from tests.core import toys
from tests.core.test_checkpoint import read_csv_rows, same_trajectory
from tests.plugins.reporters.conftest import write_config
from torchmd_core import (
    Frame,
    NumericalInstabilityError,
    Reporter,
    ReporterConfig,
    hookimpl,
    isolated_registry,
)
from torchmd_core.checkpoint import read_checkpoint
from torchmd_core.cli import main
from torchmd_core.runner import ProgressBar, run_config


class SignalAt(Reporter):
    """Sends a signal to this process at given steps (a user pressing Ctrl-C)."""

    class Config(ReporterConfig):
        kind: Literal["test.signal"] = "test.signal"
        interval: int = Field(1, gt=0, description="Steps between checks.")
        steps: tuple[int, ...] = Field(description="Steps at which to signal.")
        signal: int = Field(int(signal.SIGINT), description="Signal number.")

    def report(self, frame: Frame) -> None:
        if frame.step in self.config.steps:  # type: ignore[attr-defined]
            os.kill(os.getpid(), self.config.signal)  # type: ignore[attr-defined]


class Explode(Reporter):
    """Puts NaN into the forces of the state at a given step (a blow-up)."""

    class Config(ReporterConfig):
        kind: Literal["test.explode"] = "test.explode"
        interval: int = Field(1, gt=0, description="Steps between checks.")
        step: int = Field(description="Step after which the forces become NaN.")

    def open(self, run: Any) -> None:
        sim = run.simulation
        original = sim.integrator.step
        at = self.config.step  # type: ignore[attr-defined]

        def step(state: Any, potential: Any) -> Any:
            new = original(state, potential)
            if new.step == at:
                forces = new.forces.clone()
                forces[0, 5] = float("inf")
                new = new.replace(forces=forces)
            return new

        sim.integrator.step = step

    def report(self, frame: Frame) -> None:
        pass


@hookimpl
def torchmd_core_register_reporters(register: Any) -> None:
    register(SignalAt)
    register(Explode)


plugin = types.SimpleNamespace(
    torchmd_core_register_reporters=torchmd_core_register_reporters
)

OUTPUTS = [
    {"kind": "csv", "file": "out/log.csv", "interval": 1},
    {"kind": "dcd", "file": "out/traj.dcd", "interval": 1},
]


@pytest.fixture
def registry():
    with isolated_registry(plugins=[toys, plugin]) as reg:
        yield reg


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_shows_steps_speed_and_time_left():
    stream = io.StringIO()
    bar = ProgressBar(stream, width=10)
    bar(10, 100, 0.0)
    bar(50, 100, 12.5)
    bar(100, 100, 13.0)
    text = stream.getvalue()
    assert "\r[#         ] 10/100 steps  10.0%" in text and "--:--:-- left" in text
    assert (
        "50/100 steps  50.0%" in text
        and "12.50 ns/day" in text
        and "00:00:00 left" in text
    )
    assert text.endswith(" left \n")


def test_progress_bar_is_drawn_on_a_terminal(tmp_path, registry):
    cfg = write_config(tmp_path, [], steps=10)
    stream = FakeTerminal()
    assert run_config(cfg, stream=stream) == 0
    text = stream.getvalue()
    assert "\r[" in text and "10/10 steps" in text and "ns/day" in text
    assert "finished 10 steps" in text


def test_no_progress_bar_when_not_a_terminal_and_nothing_with_quiet(tmp_path, registry):
    cfg = write_config(tmp_path, [], steps=10)
    stream = io.StringIO()
    assert run_config(cfg, stream=stream) == 0
    assert "\r" not in stream.getvalue() and "finished 10 steps" in stream.getvalue()
    stream = FakeTerminal()
    assert run_config(cfg, quiet=True, stream=stream) == 0
    assert stream.getvalue() == ""


def test_tmd_run_quiet_prints_nothing(tmp_path, registry, capsys):
    assert main(["run", str(write_config(tmp_path, [], steps=5)), "--quiet"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


@pytest.mark.parametrize(
    "signum, code",
    [(signal.SIGINT, 130), (signal.SIGTERM, 143)],
    ids=["ctrl-c", "sigterm"],
)
def test_interrupt_writes_a_checkpoint_and_resume_is_exact(
    tmp_path, registry, capsys, signum, code
):
    reference = tmp_path / "reference"
    reference.mkdir()
    assert (
        main(["run", str(write_config(reference, OUTPUTS, steps=30)), "--quiet"]) == 0
    )
    cfg = write_config(
        tmp_path,
        [*OUTPUTS, {"kind": "test.signal", "steps": [12], "signal": int(signum)}],
        steps=30,
    )
    assert main(["run", str(cfg)]) == code
    err = capsys.readouterr().err
    target = tmp_path / "run.interrupted.chk"
    assert "stopped at step 12; checkpoint written to" in err
    assert f"Continue with: tmd run {cfg} --resume {target}" in err
    assert "Traceback" not in err
    assert read_checkpoint(target)["state"]["step"] == 12
    assert (
        signal.getsignal(signal.SIGINT) is signal.default_int_handler
    )  # handlers restored
    data = yaml.safe_load(cfg.read_text())
    data["reporters"] = OUTPUTS
    cfg.write_text(yaml.safe_dump(data))
    assert main(["run", str(cfg), "--resume", str(target), "--quiet"]) == 0
    assert read_csv_rows(tmp_path / "out/log.csv") == read_csv_rows(
        reference / "out/log.csv"
    )
    same_trajectory(tmp_path / "out/traj.dcd", reference / "out/traj.dcd")


def test_interrupt_saves_to_the_checkpoint_reporters_file(tmp_path, registry, capsys):
    chk = {"kind": "checkpoint", "file": "out/state.chk", "interval": 100}
    cfg = write_config(tmp_path, [chk, {"kind": "test.signal", "steps": [7]}], steps=50)
    assert main(["run", str(cfg)]) == 130
    assert read_checkpoint(tmp_path / "out/state.chk")["state"]["step"] == 7
    assert f"--resume {tmp_path / 'out/state.chk'}" in capsys.readouterr().err
    assert not (tmp_path / "run.interrupted.chk").exists()


def test_second_ctrl_c_stops_at_once(tmp_path, registry, capsys):
    # The first signal asks for a stop after step 5; the at_end reporters then report
    # step 5 again, and that raises the second signal inside the final report.
    cfg = write_config(
        tmp_path,
        [{"kind": "test.signal", "steps": [5]}, {"kind": "pdb", "file": "final.pdb"}],
        steps=50,
    )
    data = yaml.safe_load(cfg.read_text())
    data["reporters"][0]["interval"] = 5
    cfg.write_text(yaml.safe_dump(data))
    # Send the second signal from the pdb writer's report via a patched reporter.
    from torchmd_plugins.reporters.trajectory import PDBReporter

    original = PDBReporter.report

    def report(self: Any, frame: Frame) -> None:
        os.kill(os.getpid(), signal.SIGINT)
        original(self, frame)

    PDBReporter.report = report  # type: ignore[method-assign]
    try:
        assert main(["run", str(cfg)]) == 130
    finally:
        PDBReporter.report = original  # type: ignore[method-assign]
    err = capsys.readouterr().err
    assert "tmd: interrupted" in err and "Traceback" not in err


def test_blow_up_exits_1_naming_the_step_and_keeps_the_last_checkpoint(
    tmp_path, registry, capsys
):
    chk = {"kind": "checkpoint", "file": "out/run.chk", "interval": 5}
    cfg = write_config(
        tmp_path, [*OUTPUTS, chk, {"kind": "test.explode", "step": 13}], steps=40
    )
    assert main(["run", str(cfg)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(
        "NumericalInstabilityError: forces became non-finite at step 13"
    )
    assert "replica 0: 1 atom(s) affected: 5 (H5 MOL1)" in err
    assert (
        f"The last good checkpoint, '{tmp_path / 'out/run.chk'}' (step 10), is intact."
        in err
    )
    assert "Traceback" not in err
    assert read_checkpoint(tmp_path / "out/run.chk")["state"]["step"] == 10
    rows = read_csv_rows(tmp_path / "out/log.csv")
    assert rows[-1][0] == "12"  # flushed up to the last good step


def test_blow_up_without_checkpoint_says_so(tmp_path, registry):
    cfg = write_config(tmp_path, [{"kind": "test.explode", "step": 3}], steps=10)
    with pytest.raises(NumericalInstabilityError, match="No checkpoint was written"):
        run_config(cfg, quiet=True)


def test_resume_past_the_configs_steps_is_refused(tmp_path, registry, capsys):
    chk = {"kind": "checkpoint", "file": "run.chk", "interval": 5}
    cfg = write_config(tmp_path, [chk], steps=10)
    assert main(["run", str(cfg), "--quiet"]) == 0
    data = yaml.safe_load(cfg.read_text())
    data["steps"] = 8
    cfg.write_text(yaml.safe_dump(data))
    assert main(["run", str(cfg), "--resume", str(tmp_path / "run.chk")]) == 2
    assert (
        "the checkpoint is at step 10, beyond the config's steps (8)"
        in capsys.readouterr().err
    )


def test_resume_to_the_same_steps_does_nothing_and_succeeds(tmp_path, registry, capsys):
    chk = {"kind": "checkpoint", "file": "run.chk", "interval": 5}
    cfg = write_config(tmp_path, [*OUTPUTS, chk], steps=10)
    assert main(["run", str(cfg), "--quiet"]) == 0
    before = (tmp_path / "out/log.csv").read_text()
    assert (
        main(["run", str(cfg), "--resume", str(tmp_path / "run.chk"), "--quiet"]) == 0
    )
    assert (tmp_path / "out/log.csv").read_text() == before
