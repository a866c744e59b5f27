"""End-to-end: the smoke config trains on the fake 8-device mesh; a run killed with SIGKILL and
restarted with the same command ends exactly like an uninterrupted one."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from insight_jax.metrics import read_metrics_jsonl

ROOT = Path(__file__).resolve().parents[1]
CONFIG = "configs/arithmetic_tiny.py:smoke"


def _load_config(arg="smoke"):
    sys.path.insert(0, str(ROOT / "configs"))
    try:
        import arithmetic_tiny

        return arithmetic_tiny.get_config(arg)
    finally:
        sys.path.pop(0)


def test_smoke_run_on_fake_mesh(tmp_path, devices, monkeypatch):
    from insight_jax.rl.train import train_and_evaluate

    config = _load_config()
    monkeypatch.chdir(tmp_path)
    summary = train_and_evaluate(config, "run")  # a relative workdir, as users type it
    tmp_path = tmp_path / "run"
    total = config.warmstart.steps + config.rl.steps
    records = read_metrics_jsonl(tmp_path / "metrics.jsonl")
    steps = [r["step"] for r in records if "sft_loss" in r or "reward_mean" in r]
    assert steps == list(range(total))
    rl = [r for r in records if "reward_mean" in r]
    assert all(0.0 <= r["reward_mean"] <= 1.0 and 0.0 <= r["zero_var_frac"] <= 1.0 for r in rl)
    assert all(r["time_rollout"] > 0 for r in rl)
    assert (tmp_path / "learning_curves.png").stat().st_size > 1000
    assert any((tmp_path / "tb").iterdir())
    beliefs = np.load(tmp_path / "final_beliefs.npz")
    n = beliefs["alpha"] + beliefs["beta"]
    # Every RL step adds K to the evidence of M distinct prompts.
    assert n.sum() == pytest.approx(2 * len(n) + config.rl.steps * config.rl.batch_size * 4)
    assert summary["prompts_seen"] == int(np.sum(n > 2))
    assert {"eval_accuracy_before_rl", "eval_accuracy_after"} <= set(summary)


def _rl_records(workdir):
    drop = ("time_", "eval_")  # wall times differ; compare what was learned
    return [
        {k: v for k, v in r.items() if not k.startswith(drop)}
        for r in read_metrics_jsonl(workdir / "metrics.jsonl")
        if "reward_mean" in r
    ]


def test_warm_start_cache_reproduces_the_uncached_run(tmp_path, devices):
    """A run that loads the cached warm start trains exactly like one that ran it itself."""
    from insight_jax.rl.train import train_and_evaluate

    config = _load_config("smoke,mopps")
    config.warmstart.cache_dir = str(tmp_path / "cache")
    first = train_and_evaluate(config, tmp_path / "first")  # runs the warm start, fills the cache
    (entry,) = (tmp_path / "cache").iterdir()
    assert entry.name == Path(first["warm_start_cache"]).name
    second = train_and_evaluate(config, tmp_path / "second")
    assert not any("sft_loss" in r for r in read_metrics_jsonl(tmp_path / "second/metrics.jsonl"))
    assert _rl_records(tmp_path / "first") == _rl_records(tmp_path / "second")
    assert first["eval_accuracy_after"] == second["eval_accuracy_after"]
    # Other RL or selection settings share the warm start; other warm-start settings do not.
    from insight_jax.rl.train import Run

    other = _load_config("smoke,insight")
    other.warmstart.cache_dir = config.warmstart.cache_dir
    other.rl.learning_rate = 1e-2
    assert Run(other, tmp_path / "third").warm_start_cache() == entry
    other.task.rl_pool_size = 16  # RL on a sub-pool starts from the same warm start
    assert Run(other, tmp_path / "third").warm_start_cache() == entry
    sub = train_and_evaluate(other, tmp_path / "third")  # beliefs of 16, not the cached pool's
    assert sub["warm_start_cache"] == str(entry) and sub["prompts_seen"] <= 16
    assert not any("sft_loss" in r for r in read_metrics_jsonl(tmp_path / "third/metrics.jsonl"))
    other.warmstart.learning_rate = 1e-3
    assert Run(other, tmp_path / "fourth").warm_start_cache() != entry
    other.warmstart.learning_rate = config.warmstart.learning_rate
    other.seed = 1
    assert Run(other, tmp_path / "fifth").warm_start_cache() != entry


def test_a_run_that_loses_the_warm_start_race_trains_from_the_winner(
    tmp_path, devices, monkeypatch
):
    """Runs of one seed that warm start at once may get different policies (GPU kernels are
    not bit-deterministic); each must start RL from the cache's entry, so they stay paired."""
    from insight_jax.rl import train

    winner_config = _load_config("smoke")
    winner_config.warmstart.cache_dir = str(tmp_path / "winner_cache")
    winner_config.warmstart.learning_rate *= 3  # a warm start that ends somewhere else
    winner = train.train_and_evaluate(winner_config, tmp_path / "winner")
    (winner_entry,) = (tmp_path / "winner_cache").iterdir()

    real_save = train._save_warm_start

    def save_after_a_faster_run(cache_dir, step, state):
        shutil.copytree(winner_entry, cache_dir)  # the other run wrote its entry first
        real_save(cache_dir, step, state)

    monkeypatch.setattr(train, "_save_warm_start", save_after_a_faster_run)
    config = _load_config("smoke")
    config.warmstart.cache_dir = str(tmp_path / "cache")
    loser = train.train_and_evaluate(config, tmp_path / "loser")
    sft = [
        [
            r["sft_loss"]
            for r in read_metrics_jsonl(tmp_path / d / "metrics.jsonl")
            if "sft_loss" in r
        ]
        for d in ("winner", "loser")
    ]
    assert len(sft[1]) == config.warmstart.steps and sft[0] != sft[1]  # it ran its own
    assert _rl_records(tmp_path / "loser") == _rl_records(tmp_path / "winner")
    assert loser["eval_accuracy_before_rl"] == winner["eval_accuracy_before_rl"]


def test_resume_at_the_rl_boundary_resets_the_optimizer(tmp_path, devices):
    """A checkpoint at the end of the warm start, with a summary that already records the
    pre-RL eval, resumes exactly like an uninterrupted run (the RL optimizer is fresh)."""
    from insight_jax.rl.train import train_and_evaluate

    config = _load_config("smoke")
    train_and_evaluate(config, tmp_path / "full")
    warm_only = _load_config("smoke")
    warm_only.rl.steps = 0  # stops at step W: checkpoint W + a summary with the pre-RL eval
    first = train_and_evaluate(warm_only, tmp_path / "resumed")
    assert "eval_accuracy_before_rl" in first
    train_and_evaluate(config, tmp_path / "resumed")
    assert _rl_records(tmp_path / "full") == _rl_records(tmp_path / "resumed")


def test_dynamic_sampling_counts_every_rollout(tmp_path, devices):
    from insight_jax.rl.train import train_and_evaluate

    config = _load_config("smoke,ds")
    config.task.rl_pool_size = 40  # RL on the first 40 of the 64 prompts
    summary = train_and_evaluate(config, tmp_path)
    m, k = config.rl.batch_size, config.rl.num_rollouts
    rl = [r for r in read_metrics_jsonl(tmp_path / "metrics.jsonl") if "reward_mean" in r]
    rounds = [r["sampling_rounds"] for r in rl]
    assert all(1 <= x <= config.selection.dynamic_sampling_rounds for x in rounds)
    assert [r["rollouts"] for r in rl] == [x * m * k for x in rounds]
    assert summary["rollouts"] == sum(r["rollouts"] for r in rl)
    # The kept batch holds mixed groups first: if a step stopped early, none is zero-variance.
    last = config.selection.dynamic_sampling_rounds
    assert all(r["zero_var_frac"] == 0.0 for r in rl if r["sampling_rounds"] < last)
    # Beliefs saw every generated group, not only the M kept ones.
    beliefs = np.load(tmp_path / "final_beliefs.npz")
    assert beliefs["alpha"].shape == (40,)
    assert (beliefs["alpha"] + beliefs["beta"] - 2).sum() == pytest.approx(summary["rollouts"])


def test_dynamic_sampling_needs_the_random_scorer(tmp_path, devices):
    from insight_jax.rl.train import Run

    config = _load_config("smoke,ds")
    config.selection.scorer = "insight"
    with pytest.raises(ValueError, match="random"):
        Run(config, tmp_path)
    config = _load_config("smoke,ds")
    config.task.rl_pool_size = 16  # 4 rounds x M=8 distinct prompts do not fit
    with pytest.raises(ValueError, match="distinct prompts"):
        Run(config, tmp_path)
    config.task.rl_pool_size = 65
    with pytest.raises(ValueError, match="rl_pool_size"):
        Run(config, tmp_path)


def _command(workdir):
    return [sys.executable, "-m", "insight_jax.main", f"--config={CONFIG}", f"--workdir={workdir}"]


def _env(cache_dir):
    # A shared persistent compilation cache keeps the three processes from compiling 3 times.
    return dict(
        os.environ,
        PYTHONPATH=str(ROOT),
        JAX_PLATFORMS="cpu",
        XLA_FLAGS="--xla_force_host_platform_device_count=2",
        JAX_COMPILATION_CACHE_DIR=str(cache_dir),
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
        JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
    )


def _metrics_steps(path):
    if not path.exists():
        return []
    return [r["step"] for r in read_metrics_jsonl(path)]


def test_kill9_and_resume_is_exact(tmp_path):
    env = _env(tmp_path / "jax_cache")
    full, killed = tmp_path / "full", tmp_path / "killed"
    subprocess.run(_command(full), env=env, cwd=ROOT, check=True, capture_output=True, timeout=600)

    # Kill at a random step past the first checkpoint (every 2 steps), mid-way between saves.
    kill_at = int(np.random.default_rng().integers(3, 7))  # leave steps to kill in
    proc = subprocess.Popen(
        _command(killed), env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if max(_metrics_steps(killed / "metrics.jsonl"), default=-1) >= kill_at:
            break
        time.sleep(0.05)
    assert proc.poll() is None, f"run finished before the kill at step {kill_at}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "final_beliefs.npz").exists()

    out = subprocess.run(
        _command(killed), env=env, cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, (
        f"resume failed (killed after step {kill_at}):\n{out.stderr[-3000:]}"
    )
    assert "resumed from the checkpoint of step" in out.stdout

    a = np.load(full / "final_beliefs.npz")
    b = np.load(killed / "final_beliefs.npz")
    np.testing.assert_array_equal(a["alpha"], b["alpha"])
    np.testing.assert_array_equal(a["beta"], b["beta"])
    ma = read_metrics_jsonl(full / "metrics.jsonl")
    mb = read_metrics_jsonl(killed / "metrics.jsonl")
    drop = lambda r: {k: v for k, v in r.items() if not k.startswith("time_")}
    diffs = [
        (x["step"], k)
        for x, y in zip(ma, mb, strict=True)
        for k in set(x) | set(y)
        if not k.startswith("time_") and x.get(k) != y.get(k)
    ]
    assert not diffs, diffs
    assert [drop(r) for r in ma] == [drop(r) for r in mb]
    sa = json.loads((full / "summary.json").read_text())
    sb = json.loads((killed / "summary.json").read_text())
    for key in ("eval_accuracy_before_rl", "eval_accuracy_after", "prompts_seen"):
        assert sa[key] == sb[key]
