"""Multi-controller training: two local processes x 4 CPU devices (gloo collectives) form one
8-device mesh, train the smoke config like one process with 8 devices, and resume exactly after
one of them is killed with SIGKILL mid-run. Rollouts use the continuous engine with one decode
slot per device (the paper configs' engine; its per-shard queues then span both processes), and
the beliefs start RL at the prior fitted to the train-pool pass@1 (selection.prior "warm_start":
an evaluation gathered over both processes, then a jitted reset of the sharded beliefs)."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from configs import arithmetic_tiny
from insight_jax.checkpointing import committed_steps
from insight_jax.rl import train

ROOT = Path(__file__).resolve().parents[1]
CONFIG = "configs/arithmetic_tiny.py:smoke"
OVERRIDES = {
    "rl.rollout_engine": "continuous",
    "rl.rollout_slots": 8,
    "selection.prior": "warm_start",
    "eval.train_pool_size": 8,
}
# Cross-process all-reduces (gloo) sum in another order than one process does, so a loss can
# differ in its last bits; every other metric is equal.
RTOL = 1e-6


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _start(workdir: Path, port: int, log_dir: Path, *flags: str) -> list[subprocess.Popen]:
    env = {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
    }
    procs = []
    for i in range(2):
        log = open(log_dir / f"process{i}.log", "ab")  # closed by _wait
        procs.append(
            subprocess.Popen(
                [
                    sys.executable, "-m", "insight_jax.main", f"--config={CONFIG}",
                    f"--workdir={workdir}", f"--coordinator_address=localhost:{port}",
                    "--num_processes=2", f"--process_id={i}",
                    *(f"--config.{k}={v}" for k, v in OVERRIDES.items()),
                    *flags,
                ],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
            )
        )  # fmt: skip
        procs[-1].log = log
    return procs


def _wait(procs: list[subprocess.Popen], log_dir: Path, timeout: float = 900) -> None:
    for p in procs:
        p.wait(timeout=timeout)
        p.log.close()
    assert [p.returncode for p in procs] == [0, 0], _logs(log_dir)


def _logs(log_dir: Path) -> str:
    """Each process's first Python traceback (the cause: a process that fails leaves the
    other waiting on a collective until both abort) and the end of its log."""
    parts = []
    for f in sorted(log_dir.glob("*.log")):
        text = f.read_text(errors="replace")
        first = text.find("Traceback (most recent call last)")
        cause = text[first : first + 3000] if first >= 0 else ""
        parts.append(f"== {f.name}\n{cause}\n...\n{text[-3000:]}")
    return "\n".join(parts)


def _metrics(workdir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.startswith("time_")} for r in rows]


def _assert_same_run(a: Path, b: Path) -> None:
    ra, rb = _metrics(a), _metrics(b)
    assert [r["step"] for r in ra] == [r["step"] for r in rb]
    for x, y in zip(ra, rb, strict=True):
        assert x.keys() == y.keys()
        for key in x:
            assert x[key] == pytest.approx(y[key], rel=RTOL), (x["step"], key)
    fa, fb = np.load(a / "final_beliefs.npz"), np.load(b / "final_beliefs.npz")
    np.testing.assert_array_equal(fa["alpha"], fb["alpha"])
    np.testing.assert_array_equal(fa["beta"], fb["beta"])


@pytest.fixture(scope="module")
def single(tmp_path_factory, devices):
    """The reference: one process with the 8 devices of the test mesh."""
    workdir = tmp_path_factory.mktemp("single") / "run"
    config = arithmetic_tiny.get_config("smoke")
    config.update_from_flattened_dict(OVERRIDES)
    train.train_and_evaluate(config, workdir, log=lambda m: None)
    return workdir


def test_two_processes_train_like_one(single, tmp_path):
    """Also through a warm-start cache: the processes write one entry and train on from it."""
    workdir, cache = tmp_path / "run", tmp_path / "cache"
    flag = f"--config.warmstart.cache_dir={cache}"
    _wait(_start(workdir, _free_port(), tmp_path, flag), tmp_path)
    _assert_same_run(workdir, single)
    # The fitted prior ran once, at the start of RL (and, by the comparison above, as in one
    # process: the same mean, the same beliefs after it).
    assert sum("prior_mean" in r for r in _metrics(workdir)) == 1
    (entry,) = cache.iterdir()  # one entry, no temporary left
    assert committed_steps(entry / "checkpoints") == [
        arithmetic_tiny.get_config("smoke").warmstart.steps
    ]
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["steps_rl"] == arithmetic_tiny.get_config("smoke").rl.steps


def test_sigkill_of_one_process_then_both_resume_exactly(single, tmp_path):
    workdir = tmp_path / "run"
    procs = _start(workdir, _free_port(), tmp_path)
    # Generous: under CI both processes share 2 cores with another test worker, and reaching a
    # mid-run checkpoint means compiling the warm start, the rollout and the learner first.
    deadline = time.monotonic() + 900
    while max(committed_steps(workdir / "checkpoints"), default=0) < 4:  # mid-run
        alive = all(p.poll() is None for p in procs)
        assert alive and time.monotonic() < deadline, _logs(tmp_path)
        time.sleep(0.2)
    procs[1].send_signal(signal.SIGKILL)
    procs[1].wait()
    time.sleep(1.0)  # process 0 is left waiting on a collective: stop it too
    procs[0].send_signal(signal.SIGKILL)
    procs[0].wait()
    for p in procs:
        p.log.close()
    steps_then = max(committed_steps(workdir / "checkpoints"))
    assert steps_then < arithmetic_tiny.get_config("smoke").warmstart.steps + 6  # not finished
    _wait(_start(workdir, _free_port(), tmp_path), tmp_path)
    assert "resumed from the checkpoint" in (tmp_path / "process0.log").read_text()
    _assert_same_run(workdir, single)
