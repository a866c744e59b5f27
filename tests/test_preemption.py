"""SIGTERM (TPU maintenance, spot preemption): the run finishes its step, checkpoints, exits 0,
and the same command resumes it exactly."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from configs import arithmetic_tiny
from insight_jax.checkpointing import committed_steps
from insight_jax.rl import train

ROOT = Path(__file__).resolve().parents[1]


def _metrics(workdir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.startswith("time_")} for r in rows]


def test_sigterm_checkpoints_exits_zero_and_resumes_exactly(tmp_path, devices):
    config = arithmetic_tiny.get_config("smoke")
    total = config.warmstart.steps + config.rl.steps
    reference = tmp_path / "reference"
    train.train_and_evaluate(config, reference, log=lambda m: None)

    workdir = tmp_path / "run"
    command = [
        sys.executable, "-m", "insight_jax.main", "--config=configs/arithmetic_tiny.py:smoke",
        f"--workdir={workdir}",
    ]  # fmt: skip
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}  # the test mesh's 8 devices (XLA_FLAGS)
    proc = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    deadline = time.monotonic() + 300
    while max(committed_steps(workdir / "checkpoints"), default=0) < 2:
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-3000:]
    assert "stopped by SIGTERM after step" in out
    stopped = int(out.split("stopped by SIGTERM after step ")[1].split(",")[0])
    assert stopped < total and max(committed_steps(workdir / "checkpoints")) == stopped

    rerun = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"resumed from the checkpoint of step {stopped}" in rerun.stdout
    assert _metrics(workdir) == _metrics(reference)
    a, b = np.load(workdir / "final_beliefs.npz"), np.load(reference / "final_beliefs.npz")
    np.testing.assert_array_equal(a["alpha"], b["alpha"])
