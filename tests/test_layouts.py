"""Parallelism is config data: the same run on one device and on the fake 8-device mesh laid out
as data, FSDP and tensor parallelism gives the same losses."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from configs import arithmetic_tiny
from insight_jax.rl import train

ROOT = Path(__file__).resolve().parents[1]
AXES = ("data", "fsdp", "tensor")
# Reductions split over devices sum in another order: losses agree to float32 rounding.
RTOL = 1e-5


def _config(shape):
    c = arithmetic_tiny.get_config("smoke")
    c.model.overrides = {**c.model.overrides, "num_heads": 4, "num_kv_heads": 2}
    c.warmstart.steps, c.rl.steps = 4, 2
    c.mesh.shape, c.mesh.axes = shape, AXES
    return c


def _losses(workdir: Path) -> list[tuple[int, float]]:
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r[k]) for r in rows for k in ("sft_loss", "loss", "reward_mean") if k in r]


@pytest.fixture(scope="module")
def one_device(tmp_path_factory):
    """The reference: the same config in a process with one CPU device."""
    workdir = tmp_path_factory.mktemp("one") / "run"
    code = (
        "import sys; from tests.test_layouts import _config; from insight_jax.rl import train;"
        "train.train_and_evaluate(_config((1, 1, 1)), sys.argv[1], log=lambda m: None)"
    )
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
    out = subprocess.run(
        [sys.executable, "-c", code, str(workdir)], cwd=ROOT, env=env, capture_output=True,
        text=True, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    return _losses(workdir)


@pytest.mark.parametrize("shape", [(1, 8, 1), (2, 2, 2)], ids=str)  # FSDP; all three axes
def test_every_layout_trains_like_one_device(shape, one_device, tmp_path, devices):
    train.train_and_evaluate(_config(shape), tmp_path / "run", log=lambda m: None)
    losses = _losses(tmp_path / "run")
    assert [s for s, _ in losses] == [s for s, _ in one_device]
    assert any(v > 0 for _, v in losses)  # the warm start's losses: a real comparison
    for (step, v), (_, ref) in zip(losses, one_device, strict=True):
        assert v == pytest.approx(ref, rel=RTOL, abs=1e-7), step
