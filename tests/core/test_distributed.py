"""torch.distributed: runs split across 2 CPU processes (gloo) write the files of the
single-process run, resume across a changed number of processes, exchange replicas
across processes, stop together when one fails, and average training gradients.

One job of two processes (started as torchrun starts them: RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR, MASTER_PORT) runs every distributed operation of this module
in turn (tests/core/distributed_worker.py), so the processes start only once; the
tests then compare what it wrote with single-process runs. A timeout kills the job:
a hang fails the tests instead of blocking them.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from tests.core import toys
from tests.core.test_checkpoint import read_csv_rows, same_trajectory, set_steps
from tests.plugins.reporters.conftest import write_config
from torchmd_core import isolated_registry
from torchmd_core.checkpoint import read_checkpoint
from torchmd_core.cli import main
from torchmd_core.distributed import merge_checkpoints, split_checkpoint, split_replicas

ROOT = Path(__file__).resolve().parents[2]
JOB_TIMEOUT_S = 300

OUTPUTS = [
    {"kind": "csv", "file": "log.csv", "interval": 5},
    {"kind": "dcd", "file": "traj.dcd", "interval": 5},
    {"kind": "xtc", "file": "traj.xtc", "interval": 10},
    {"kind": "pdb", "file": "final.pdb"},
    {"kind": "checkpoint", "file": "run.chk", "interval": 10},
]
LANGEVIN = {"kind": "langevin", "timestep_fs": 1.0, "temperature_K": 300.0}
LADDER = {
    "temperatures_K": [300.0, 330.0, 363.0],
    "interval": 5,
    "file": "exchange.csv",
}


def config(
    folder: Path,
    reporters: list[dict[str, Any]] = OUTPUTS,
    steps: int = 20,
    **extra: Any,
) -> Path:
    """3 replicas of the toy chain with Langevin dynamics. The neighbour list's skin
    is large enough that it is never rebuilt: a shared list rebuilt when a replica on
    another process moved would change the order of force sums in the last bits."""
    folder.mkdir(parents=True, exist_ok=True)
    options: dict[str, Any] = {
        "n_replicas": 3,
        "integrator": LANGEVIN,
        "neighbor_skin_A": 3.0,
    }
    return write_config(folder, reporters, steps=steps, **{**options, **extra})


def tmd(*argv: str | Path) -> int:
    with isolated_registry(plugins=[toys]):
        return main([str(a) for a in argv])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch(
    plan: list[dict[str, Any]], folder: Path, nprocs: int = 2
) -> list[list[dict[str, Any]]]:
    """Run ``plan`` on ``nprocs`` processes; each operation's results, by rank."""
    for item in plan:
        item["port"] = free_port()
    plan_path = folder / "plan.json"
    plan_path.write_text(json.dumps(plan))
    env = {
        **os.environ,
        "WORLD_SIZE": str(nprocs),
        "MASTER_ADDR": "127.0.0.1",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(ROOT),
    }
    env.pop("TORCHMD_CORE_DEBUG", None)
    procs = []
    for rank in range(nprocs):
        env_rank = {**env, "RANK": str(rank), "LOCAL_RANK": str(rank)}
        log = (folder / f"rank{rank}.log").open("w")
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "tests.core.distributed_worker", str(plan_path)],
                cwd=ROOT,
                env=env_rank,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
        time.sleep(0.2)
    hung = [p for p in procs if p.poll() is None]
    for p in hung:
        p.kill()
        p.wait()
    results = []
    for rank in range(nprocs):
        path = plan_path.with_suffix(f".rank{rank}.json")
        results.append(json.loads(path.read_text()) if path.exists() else [])
    if hung:
        logs = "\n".join(
            (folder / f"rank{r}.log").read_text()[-3000:] for r in range(nprocs)
        )
        hung_for = f"the distributed job hung (killed after {JOB_TIMEOUT_S} s)"
        pytest.fail(f"{hung_for}:\n{logs}\n{results}")
    return results


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> types.SimpleNamespace:
    """Single-process references, then the 2-process job."""
    root = tmp_path_factory.mktemp("distributed")
    ref = config(root / "ref")
    assert tmd("run", ref, "--quiet") == 0
    per_rank = config(root / "per_rank")
    gather = config(root / "gather", distributed={"reporters": "gather"})
    # 1 -> 2: the first half on one process.
    resume12 = config(root / "resume12", steps=10)
    assert tmd("run", resume12, "--quiet") == 0
    set_steps(resume12, 20)
    # 2 -> 1: the first half on two processes, the second here (test below).
    resume21 = config(root / "resume21", steps=10)
    exchange_outputs = [
        OUTPUTS[0],
        OUTPUTS[1],
        {"kind": "checkpoint", "file": "run.chk", "interval": 20},
    ]
    exchange_ref = config(
        root / "exchange_ref", exchange_outputs, steps=60, exchange=LADDER
    )
    assert tmd("run", exchange_ref, "--quiet") == 0
    exchange = config(root / "exchange", exchange_outputs, steps=60, exchange=LADDER)
    interrupt = config(
        root / "interrupt", [*OUTPUTS, {"kind": "test.interrupt", "step": 7, "rank": 1}]
    )
    exists = config(root / "exists")
    (root / "exists/traj_r2.dcd").write_text("not ours")  # rank 1 would replace it
    fail = config(
        root / "fail",
        [
            OUTPUTS[0],
            {**OUTPUTS[4], "interval": 5},
            {"kind": "test.blowup", "step": 7, "replica": 2},
        ],
        distributed={"sync_interval": 5, "timeout_s": 60},
    )
    die = config(
        root / "die",
        [OUTPUTS[0], {"kind": "test.die", "step": 3, "rank": 1}],
        distributed={"sync_interval": 5, "timeout_s": 60},
    )
    plan = [
        {"op": "tmd", "argv": ["run", str(per_rank)]},
        {"op": "tmd", "argv": ["run", str(gather), "--quiet"]},
        {
            "op": "tmd",
            "argv": [
                "run",
                str(resume12),
                "--resume",
                str(root / "resume12/run.chk"),
                "--quiet",
            ],
        },
        {"op": "tmd", "argv": ["run", str(resume21), "--quiet"]},
        {"op": "tmd", "argv": ["run", str(exchange)]},
        {"op": "train"},
        {"op": "tmd", "argv": ["run", str(interrupt)]},
        {"op": "tmd", "argv": ["run", str(exists), "--quiet"]},
        {"op": "tmd", "argv": ["run", str(fail), "--quiet"]},
        {"op": "tmd", "argv": ["run", str(die), "--quiet"]},  # last: rank 1 exits
    ]
    started = time.monotonic()
    results = launch(plan, root)
    names = [
        "per_rank",
        "gather",
        "resume12",
        "resume21",
        "exchange",
        "train",
        "interrupt",
        "exists",
        "fail",
        "die",
    ]
    by_name = {
        n: [r[i] if i < len(r) else None for r in results] for i, n in enumerate(names)
    }
    return types.SimpleNamespace(
        root=root, results=by_name, seconds=time.monotonic() - started
    )


def result(job: types.SimpleNamespace, name: str, rank: int) -> dict[str, Any]:
    value = job.results[name][rank]
    assert value is not None and "error" not in value, f"{name} on rank {rank}: {value}"
    return value


def same_outputs(a: Path, b: Path, files: list[str], resumed: bool = False) -> None:
    """The files of two runs agree: csv rows (but the speed), trajectories byte for
    byte, pdb text, and every replica's state and random streams in the checkpoint;
    the frames each reporter recorded per file too unless ``b`` was resumed (the pdb
    is written at the end of each segment)."""
    for name in files:
        x, y = a / name, b / name
        assert x.exists() and y.exists(), name
        if name.endswith(".csv"):
            assert read_csv_rows(x) == read_csv_rows(y), name
        elif name.endswith((".dcd", ".xtc")):
            same_trajectory(x, y)
        elif name.endswith(".chk"):
            p, q = read_checkpoint(x), read_checkpoint(y)
            for key in ("positions", "velocities", "box", "forces", "potential_energy"):
                u, v = p["state"][key], q["state"][key]
                assert (u is None and v is None) or torch.equal(u, v), key
            assert p["state"]["step"] == q["state"]["step"]
            gens = p["integrator"]["generators"], q["integrator"]["generators"]
            assert len(gens[0]) == len(gens[1]) == 3
            assert all(torch.equal(g, h) for g, h in zip(*gens, strict=True))
            assert p["reporters"].keys() == q["reporters"].keys()
            if not resumed:
                assert frames_recorded(p) == frames_recorded(q)
        else:
            assert x.read_text() == y.read_text(), name


def frames_recorded(payload: dict[str, Any]) -> dict[str, dict[str, int]]:
    return {
        key: {name: rec["frames"] for name, rec in (state.get("files") or {}).items()}
        for key, state in payload["reporters"].items()
    }


FILES = [
    "log.csv",
    "traj_r0.dcd",
    "traj_r1.dcd",
    "traj_r2.dcd",
    "traj_r0.xtc",
    "traj_r1.xtc",
    "traj_r2.xtc",
    "final_r0.pdb",
    "final_r1.pdb",
    "final_r2.pdb",
    "run.chk",
]


# -- without processes -----------------------------------------------------------------


def test_replicas_are_split_in_contiguous_blocks():
    assert [split_replicas(7, 3, k) for k in range(3)] == [
        range(0, 3),
        range(3, 5),
        range(5, 7),
    ]
    assert [split_replicas(4, 2, k) for k in range(2)] == [range(0, 2), range(2, 4)]
    with pytest.raises(ValueError):
        split_replicas(4, 2, 2)


def test_checkpoints_split_and_merge_by_replica():
    gens = [torch.Generator().manual_seed(s).get_state() for s in range(5)]
    whole = {
        "state": {
            "positions": torch.arange(30.0).reshape(5, 2, 3),
            "velocities": None,
            "box": None,
            "forces": torch.ones(5, 2, 3),
            "potential_energy": torch.arange(5.0),
            "step": 4,
        },
        "neighbor_list": {
            "positions": torch.arange(30.0).reshape(5, 2, 3),
            "box": None,
        },
        "integrator": {
            "seed": 1,
            "generators": gens,
            "replica_temperatures_K": torch.arange(5.0),
        },
        "barostat": None,
        "reporters": {
            "dcd:t.dcd": {
                "files": {f"t_r{r}.dcd": {"bytes": r} for r in range(5)},
                "step": 4,
            }
        },
    }
    keys = ("generators", "replica_temperatures_K")
    parts = [split_checkpoint(whole, split_replicas(5, 2, k), keys) for k in range(2)]
    assert parts[1]["state"]["positions"].shape == (2, 2, 3)
    assert len(parts[0]["integrator"]["generators"]) == 3
    merged = merge_checkpoints(parts, keys, baseline=whole["reporters"])
    for key in ("positions", "forces", "potential_energy"):
        assert torch.equal(merged["state"][key], whole["state"][key])
    assert torch.equal(
        merged["neighbor_list"]["positions"], whole["neighbor_list"]["positions"]
    )
    assert all(
        torch.equal(a, b)
        for a, b in zip(merged["integrator"]["generators"], gens, strict=True)
    )
    assert torch.equal(
        merged["integrator"]["replica_temperatures_K"], torch.arange(5.0)
    )
    # Each process continued its own files; the others' records are stale copies.
    parts[0]["reporters"]["dcd:t.dcd"]["files"]["t_r0.dcd"] = {"bytes": 10}
    parts[1]["reporters"]["dcd:t.dcd"]["files"]["t_r4.dcd"] = {"bytes": 14}
    files = merge_checkpoints(parts, keys, baseline=whole["reporters"])["reporters"][
        "dcd:t.dcd"
    ]["files"]
    assert files == {
        "t_r0.dcd": {"bytes": 10},
        "t_r1.dcd": {"bytes": 1},
        "t_r2.dcd": {"bytes": 2},
        "t_r3.dcd": {"bytes": 3},
        "t_r4.dcd": {"bytes": 14},
    }


def test_a_single_process_launch_runs_alone(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "1")
    path = config(tmp_path, [OUTPUTS[0]], steps=5)
    assert tmd("run", path, "--quiet") == 0  # no process group needed


def test_more_processes_than_replicas_is_a_config_error(tmp_path, monkeypatch):
    from torchmd_core import ConfigError, load_config
    from torchmd_core.distributed import join

    path = config(tmp_path, [], steps=5)
    with isolated_registry(plugins=[toys]):
        cfg = load_config(path).model_copy(update={"n_replicas": 1})

    class FakeDist:
        @staticmethod
        def is_initialized() -> bool:
            return True

        get_world_size = staticmethod(lambda: 2)
        get_rank = staticmethod(lambda: 0)
        new_group = staticmethod(lambda **kw: None)

    monkeypatch.setattr("torchmd_core.distributed.dist", FakeDist)
    with pytest.raises(ConfigError, match="1 replicas cannot be shared by 2 processes"):
        join(cfg)


# -- the 2-process job -----------------------------------------------------------------


def test_two_processes_write_the_files_of_one(job):
    """Each process writes its replicas' trajectories (NAME_r<k> by global index),
    rank 0 the csv from gathered frames, and the checkpoint holds all replicas: all as
    the single-process run with the same seed, bit for bit."""
    same_outputs(job.root / "ref", job.root / "per_rank", FILES)
    ranks = [result(job, "per_rank", r) for r in range(2)]
    assert [r["code"] for r in ranks] == [0, 0]
    assert "finished 20 steps" in ranks[0]["stderr"]
    assert ranks[1]["stderr"] == ""  # rank 0 speaks for all


def test_rank_zero_can_write_every_file(job):
    same_outputs(job.root / "ref", job.root / "gather", FILES)


def test_a_single_process_checkpoint_resumes_on_two(job):
    assert result(job, "resume12", 0)["code"] == 0
    same_outputs(job.root / "ref", job.root / "resume12", FILES, resumed=True)


def test_a_two_process_checkpoint_resumes_on_one(job):
    folder = job.root / "resume21"
    assert [result(job, "resume21", r)["code"] for r in range(2)] == [0, 0]
    assert read_checkpoint(folder / "run.chk")["state"]["positions"].shape[0] == 3
    set_steps(folder / "run.yaml", 20)
    assert (
        tmd("run", folder / "run.yaml", "--resume", folder / "run.chk", "--quiet") == 0
    )
    same_outputs(job.root / "ref", folder, FILES, resumed=True)


def test_replica_exchange_across_processes_is_that_of_one_process(job):
    folder, ref = job.root / "exchange", job.root / "exchange_ref"
    same_outputs(
        ref, folder, ["log.csv", "traj_r0.dcd", "traj_r1.dcd", "traj_r2.dcd", "run.chk"]
    )
    log = (folder / "exchange.csv").read_text()
    assert log == (ref / "exchange.csv").read_text()
    # Replica 2 runs on rank 1; slots 1 and 2 swapped across the processes.
    rows = [line.split(",") for line in log.splitlines()[1:]]
    assert any(row[6] == "1" for row in rows), "no swap of slots 1 and 2 was accepted"
    assert read_checkpoint(folder / "run.chk")["exchange"]["accepted"].sum() > 0
    assert (
        "replica exchange acceptance: 300-330 K" in result(job, "exchange", 0)["stderr"]
    )


def test_gradients_of_training_through_md_are_averaged(job):
    from tests.core.distributed_worker import trajectory_loss

    loss = trajectory_loss(replicas=[0, 1])  # both processes' data in one batch
    loss().backward()
    expected = [p.grad for p in loss.parameters()]
    for rank in range(2):
        got = result(job, "train", rank)
        for how in ("ddp", "all_reduce"):
            for g, e in zip(got[how], expected, strict=True):
                torch.testing.assert_close(
                    torch.tensor(g, dtype=e.dtype), e, rtol=1e-9, atol=1e-12
                )


def test_ctrl_c_on_one_process_stops_all_at_one_step_with_a_checkpoint(job):
    """Rank 1 gets Ctrl-C (twice, as torchrun passes it on) while reporting step 7:
    every process stops at the next check (step 8, the checks are every step here),
    the checkpoint holds all replicas, and resuming it gives the uninterrupted run."""
    folder = job.root / "interrupt"
    ranks = [result(job, "interrupt", r) for r in range(2)]
    assert [r["code"] for r in ranks] == [130, 130]
    assert "Ctrl-C: stopped at step 8; checkpoint written to" in ranks[0]["stderr"]
    assert ranks[1]["stderr"] == ""
    assert read_checkpoint(folder / "run.chk")["state"]["step"] == 8
    set_steps(folder / "run.yaml", 20, OUTPUTS)
    assert (
        tmd("run", folder / "run.yaml", "--resume", folder / "run.chk", "--quiet") == 0
    )
    same_outputs(job.root / "ref", folder, FILES, resumed=True)


def test_a_problem_before_the_first_step_on_one_process_stops_all(job):
    """Only rank 1 would replace a file (its replica's trajectory): both processes
    refuse to start, with the exit code of bad input; rank 0 says which process."""
    ranks = [result(job, "exists", r) for r in range(2)]
    assert [r["code"] for r in ranks] == [2, 2]
    message = ranks[0]["stderr"]
    assert "rank 1 (replica 2) of 2 processes failed:" in message
    assert "traj_r2.dcd' exists already" in message
    assert ranks[1]["stderr"] == ""
    assert (job.root / "exists/traj_r2.dcd").read_text() == "not ours"
    assert not (job.root / "exists/log.csv").exists()  # rank 0 did not start either


def test_one_failing_process_stops_every_process_with_one_message(job):
    """Replica 2 (on rank 1) blows up at step 7: both processes stop, rank 0 prints
    one message naming the process, the replica and the intact checkpoint, rank 1
    prints nothing."""
    ranks = [result(job, "fail", r) for r in range(2)]
    assert [r["code"] for r in ranks] == [1, 1]
    message = ranks[0]["stderr"]
    assert "rank 1 (replica 2) of 2 processes failed:" in message
    assert "forces became non-finite at step 7" in message and "replica 2:" in message
    assert "Every process stopped." in message
    assert "(step 5), is intact" in message
    assert ranks[1]["stderr"] == ""
    assert read_checkpoint(job.root / "fail/run.chk")["state"]["step"] == 5


def test_a_process_that_dies_does_not_hang_the_others(job):
    survivor = result(job, "die", 0)
    assert survivor["code"] == 1
    assert "lost contact with the other processes" in survivor["stderr"]
    assert job.results["die"][1] is None  # it died before reporting


# -- the examples, with torchrun (slow) ------------------------------------------------

EXAMPLES = ROOT / "examples" / "distributed"


def torchrun(*args: str | Path, timeout: int = 900) -> subprocess.CompletedProcess[str]:
    """``torchrun --standalone --nproc-per-node 2 ARGS`` from the repository root."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc-per-node", "2", *map(str, args)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def example_copy(name: str, folder: Path, steps: int) -> Path:
    """The example config ``name`` in ``folder`` with absolute inputs and ``steps``."""
    data = yaml.safe_load((EXAMPLES / name).read_text())
    for key in ("topology", "coordinates"):
        data["system"][key] = str((EXAMPLES / data["system"][key]).resolve())
    data["steps"] = steps
    path = folder / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.mark.slow
def test_torchrun_runs_the_ensemble_example_as_one_process(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    for folder in (one, two):
        folder.mkdir()
    assert main(["run", str(example_copy("ensemble.yaml", one, 300)), "--quiet"]) == 0
    done = torchrun(
        "-m", "torchmd_core", "run", example_copy("ensemble.yaml", two, 300)
    )
    assert done.returncode == 0, done.stderr
    assert "finished 300 steps" in done.stderr
    out = ["ensemble.csv", *(f"traj_r{r}.dcd" for r in range(8)), "ensemble.chk"]
    same_outputs(one / "output", two / "output", out[:-1])
    a = read_checkpoint(one / "output/ensemble.chk")["state"]
    b = read_checkpoint(two / "output/ensemble.chk")["state"]
    assert torch.equal(a["positions"], b["positions"])


@pytest.mark.slow
def test_torchrun_runs_the_replica_exchange_example(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    for folder in (one, two):
        folder.mkdir()
    assert main(["run", str(example_copy("remd.yaml", one, 2000)), "--quiet"]) == 0
    done = torchrun("-m", "torchmd_core", "run", example_copy("remd.yaml", two, 2000))
    assert done.returncode == 0, done.stderr
    summary = next(
        line for line in done.stderr.splitlines() if "exchange acceptance" in line
    )
    print(summary)
    log = (two / "output/exchange.csv").read_text()
    assert log == (one / "output/exchange.csv").read_text()
    swapped = [row.split(",")[10:] for row in log.splitlines()[1:]]
    assert any("1" in row for row in swapped)


@pytest.mark.slow
def test_torchrun_trains_through_md_like_one_process():
    """train_ddp.py on 2 processes prints the losses of the single-process run (the
    averaged gradients equal the full batch's up to the order of sums)."""
    args = ["--epochs", "5", "--steps", "20"]
    one = subprocess.run(
        [sys.executable, str(EXAMPLES / "train_ddp.py"), *args],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    two = torchrun(EXAMPLES / "train_ddp.py", *args)
    assert one.returncode == 0 and two.returncode == 0, one.stderr + two.stderr

    def losses(text: str) -> list[float]:
        return [float(line.split()[3]) for line in text.splitlines() if "loss" in line]

    a, b = losses(one.stdout), losses(two.stdout)
    assert len(a) == len(b) == 2 and a[1] < a[0]
    torch.testing.assert_close(torch.tensor(b), torch.tensor(a), rtol=1e-6, atol=0)


@pytest.mark.slow
def test_the_differentiable_finetuning_example_runs_under_ddp():
    """examples/differentiable/finetune_torchmdnet.py and its DDP version on 2
    processes (2 starting frames each) print the same losses."""
    pytest.importorskip("torchmdnet")
    args = ["--iterations", "3", "--steps", "10", "--warmup-steps", "50"]
    one = subprocess.run(
        [sys.executable, "examples/differentiable/finetune_torchmdnet.py", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    two = torchrun(EXAMPLES / "finetune_torchmdnet_ddp.py", *args)
    assert one.returncode == 0 and two.returncode == 0, one.stderr + two.stderr

    def iterations(text: str) -> list[str]:
        return [line for line in text.splitlines() if line.startswith("iteration")]

    assert len(iterations(one.stdout)) == 3
    assert iterations(two.stdout) == iterations(one.stdout)
