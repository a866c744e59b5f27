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

import jax
import numpy as np
import pytest

from configs import arithmetic_tiny
from insight_jax import workdir as wd
from insight_jax.metrics import read_metrics_jsonl
from insight_jax.rl import setup, warmstart
from insight_jax.rl.train import train_and_evaluate
from insight_jax.rl.validate import ConfigError, validate_config

ROOT = Path(__file__).resolve().parents[1]
CONFIG = "configs/arithmetic_tiny.py:smoke"


def _load_config(arg="smoke"):
    return arithmetic_tiny.get_config(arg)


def test_smoke_run_on_fake_mesh(tmp_path, devices, monkeypatch):
    config = _load_config()
    monkeypatch.chdir(tmp_path)
    summary = train_and_evaluate(config, "run")  # a relative workdir, as users type it
    tmp_path = tmp_path / "run"
    total = config.warmstart.steps + config.rl.steps
    records = read_metrics_jsonl(tmp_path / "metrics.jsonl")
    # A record at step t describes the state after t steps; each step is logged once.
    steps = [r["step"] for r in records if "sft_loss" in r or "reward_mean" in r]
    assert steps == list(range(1, total + 1))
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == total
    rl = [r for r in records if "reward_mean" in r]
    assert all(0.0 <= r["reward_mean"] <= 1.0 and 0.0 <= r["zero_var_frac"] <= 1.0 for r in rl)
    assert all(r["time_rollout"] > 0 and r["time_update"] > 0 for r in rl)
    assert (tmp_path / "learning_curves.png").stat().st_size > 1000
    assert any((tmp_path / "tb").iterdir())
    beliefs = np.load(tmp_path / "final_beliefs.npz")
    n = beliefs["alpha"] + beliefs["beta"]
    # Every RL step adds K to the evidence of M distinct prompts.
    assert n.sum() == pytest.approx(2 * len(n) + config.rl.steps * config.rl.batch_size * 4)
    assert summary["prompts_seen"] == int(np.sum(n > 2))
    assert summary["rollouts"] == config.rl.steps * config.rl.batch_size * 4
    assert {"eval_accuracy_before_rl", "eval_accuracy_after"} <= set(summary)
    evals = [r["step"] for r in records if "eval_accuracy" in r]
    assert evals == [config.warmstart.steps, config.warmstart.steps + 3, total]


def _records_without_times(workdir):
    """metrics.jsonl line by line (not merged by step), wall times left out."""
    return [
        {k: v for k, v in json.loads(line).items() if not k.startswith("time_")}
        for line in (workdir / "metrics.jsonl").read_text().splitlines()
    ]


def _rl_records(workdir):
    drop = ("time_", "eval_")  # wall times differ; compare what was learned
    return [
        {k: v for k, v in r.items() if not k.startswith(drop)}
        for r in read_metrics_jsonl(workdir / "metrics.jsonl")
        if "reward_mean" in r
    ]


def test_warm_start_cache_reproduces_the_uncached_run(tmp_path, devices):
    """A run that loads the cached warm start trains exactly like one that ran it itself."""
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
    def cache_of(config, name):
        return warmstart.cache_dir(setup.build(config, tmp_path / name))

    other = _load_config("smoke,insight")
    other.warmstart.cache_dir = config.warmstart.cache_dir
    other.rl.learning_rate = 1e-2
    assert cache_of(other, "third") == entry
    other.task.rl_pool_size = 16  # RL on a sub-pool starts from the same warm start
    assert cache_of(other, "third") == entry
    sub = train_and_evaluate(other, tmp_path / "third")  # beliefs of 16, not the cached pool's
    assert sub["warm_start_cache"] == str(entry) and sub["prompts_seen"] <= 16
    assert not any("sft_loss" in r for r in read_metrics_jsonl(tmp_path / "third/metrics.jsonl"))
    other.warmstart.learning_rate = 1e-3
    assert cache_of(other, "fourth") != entry
    other.warmstart.learning_rate = config.warmstart.learning_rate
    other.seed = 1
    assert cache_of(other, "fifth") != entry


@pytest.mark.slow  # ~1 min: two warm starts; guards a GPU-only race (CPU runs are deterministic)
def test_a_run_that_loses_the_warm_start_race_trains_from_the_winner(
    tmp_path, devices, monkeypatch
):
    """Runs of one seed that warm start at once may get different policies (GPU kernels are
    not bit-deterministic); each must start RL from the cache's entry, so they stay paired."""
    winner_config = _load_config("smoke")
    winner_config.warmstart.cache_dir = str(tmp_path / "winner_cache")
    winner_config.warmstart.learning_rate *= 3  # a warm start that ends somewhere else
    winner = train_and_evaluate(winner_config, tmp_path / "winner")
    (winner_entry,) = (tmp_path / "winner_cache").iterdir()

    real_save = warmstart.save

    def save_after_a_faster_run(cache_dir, step, state, workdir):
        shutil.copytree(winner_entry, cache_dir)  # the other run wrote its entry first
        real_save(cache_dir, step, state, workdir)

    monkeypatch.setattr(warmstart, "save", save_after_a_faster_run)
    config = _load_config("smoke")
    config.warmstart.cache_dir = str(tmp_path / "cache")
    loser = train_and_evaluate(config, tmp_path / "loser")
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


def test_resume_at_the_rl_boundary_resets_the_optimizer_and_fits_the_prior(
    tmp_path, devices, monkeypatch
):
    """A checkpoint at the end of the warm start (a run with rl.steps=0, then extended: a
    resume-safe change) resumes exactly like an uninterrupted run: the RL optimizer is fresh,
    and selection.prior "warm_start" sets every belief to the train-pool pass@1 of step W (read
    back from metrics.jsonl on resume). A run that starts from a cached warm start (evaluating
    step W itself, before its loop) fits the same prior. That pass@1 is scripted to 0.3 (the
    smoke policy solves nothing) so the fitted mean is not the clip's floor."""
    from insight_jax.rl import train

    real = train._evaluate

    def evaluate(comps, state):
        metrics = real(comps, state)
        metrics[f"eval_train_pool_avg@{comps.config.eval.num_samples}"] = 0.3
        return metrics

    monkeypatch.setattr(train, "_evaluate", evaluate)

    def config(rl_steps=None, cache=""):
        c = _load_config("smoke")
        c.eval.train_pool_size, c.selection.prior = 8, "warm_start"
        c.selection.alpha0, c.selection.beta0 = 0.5, 1.5
        c.rl.steps = c.rl.steps if rl_steps is None else rl_steps
        c.warmstart.cache_dir = cache
        return c

    cache = str(tmp_path / "cache")
    full = train_and_evaluate(config(cache=cache), tmp_path / "full")  # fills the cache
    first = train_and_evaluate(config(rl_steps=0), tmp_path / "resumed")  # stops at step W
    assert "eval_accuracy_before_rl" in first
    train_and_evaluate(config(), tmp_path / "resumed")
    cached = train_and_evaluate(config(cache=cache), tmp_path / "cached")
    assert cached["warm_start_cache"] == full["warm_start_cache"]
    sft = [r for r in read_metrics_jsonl(tmp_path / "cached/metrics.jsonl") if "sft_loss" in r]
    assert not sft  # it did not warm start itself
    assert _rl_records(tmp_path / "full") == _rl_records(tmp_path / "resumed")
    assert _rl_records(tmp_path / "full") == _rl_records(tmp_path / "cached")
    fitted = float(np.float32(0.3))  # the beliefs' precision
    assert _rl_records(tmp_path / "full")[0]["prior_mean"] == full["prior_mean"] == fitted
    assert cached["prior_mean"] == fitted
    for run in ("full", "resumed", "cached"):
        beliefs = np.load(tmp_path / run / "final_beliefs.npz")
        a, b = beliefs["alpha"], beliefs["beta"]
        unseen = a + b < 2.5  # strength n0 = 0.5 + 1.5; a visit adds K = 4
        assert 0 < unseen.sum() < len(a)
        assert full["prompts_seen"] == len(a) - unseen.sum()
        np.testing.assert_array_equal(a[unseen], np.float32(0.3 * 2.0))
        np.testing.assert_array_equal(b[unseen], np.float32(0.7 * 2.0))
    np.testing.assert_array_equal(
        np.load(tmp_path / "full/final_beliefs.npz")["alpha"],
        np.load(tmp_path / "resumed/final_beliefs.npz")["alpha"],
    )


def test_dynamic_sampling_counts_every_rollout(tmp_path, devices):
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


def test_mixed_groups():
    from insight_jax.rl.rl_step import mixed_groups

    r = np.array([[1, 1, 1, 1], [0, 0, 0, 0], [1, 0, 1, 1], [0.1, 0.1, 0.1, 0.1], [0.1, 0, 0, 0]])
    np.testing.assert_array_equal(mixed_groups(r), [False, False, True, False, True])


def test_a_run_written_before_new_config_keys_resumes_on_this_code(tmp_path):
    """config.json of an older version lacks keys added since; at their defaults the run is
    the same one, so it resumes; set to anything else, it is another run."""
    from insight_jax.rl import train

    config = _load_config("smoke")
    old = config.to_dict()
    del old["selection"]["prior"], old["selection"]["dynamic_sampling_band"]
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "config.json").write_text(json.dumps(old))
    logs = []
    train._claim(config, tmp_path, logs.append)
    assert logs == [f"continuing the run in {tmp_path}"]
    assert json.loads((tmp_path / "config.json").read_text())["selection"]["prior"] == "fixed"
    (tmp_path / "config.json").write_text(json.dumps(old))
    config.selection.prior, config.eval.train_pool_size = "warm_start", 8
    with pytest.raises(wd.WorkdirMismatch, match=r"selection\.prior"):
        train._claim(config, tmp_path, logs.append)


def test_kept_groups_with_and_without_a_band():
    from insight_jax.rl.rl_step import kept_groups

    r = np.array([[1, 1, 1, 1], [0, 0, 0, 0], [1, 0, 1, 1], [0.1, 0, 0, 0], [1, 0, 0, 0]])
    s = np.array([4, 0, 3, 0, 1])  # successes at threshold 1
    np.testing.assert_array_equal(kept_groups(r, s, ()), [False, False, True, True, True])
    # Rates 1, 0, 0.75, 0, 0.25; both ends of the band are kept.
    np.testing.assert_array_equal(kept_groups(r, s, (0.25, 0.75)), [0, 0, 1, 0, 1])
    np.testing.assert_array_equal(kept_groups(r, s, (0.0, 0.0)), [0, 1, 0, 1, 0])
    np.testing.assert_array_equal(kept_groups(r, s, (0.5, 1.0)), [1, 0, 1, 0, 0])


def test_dynamic_sampling_band_keeps_the_groups_in_the_band(tmp_path, devices, monkeypatch):
    """Scripted rewards: even prompts' K rollouts all succeed, odd ones' all fail, so no group is
    mixed and DAPO's rule would keep none. A band of (1, 1) trains on even prompts only."""
    from insight_jax.rl import rl_step

    def scripted(tokenizer, task, records, rollout, k, m):
        even = np.array([records[i]["index"] % 2 == 0 for i in range(m)], np.float32)
        return np.repeat(even[:, None], k, axis=1)

    monkeypatch.setattr(rl_step, "rollout_rewards", scripted)
    config = _load_config("smoke,ds")
    config.task.rl_pool_size = 40
    config.warmstart.steps, config.rl.steps = 0, 3
    config.selection.dynamic_sampling_band = (1.0, 1.0)
    train_and_evaluate(config, tmp_path)
    rl = [r for r in read_metrics_jsonl(tmp_path / "metrics.jsonl") if "reward_mean" in r]
    assert len(rl) == config.rl.steps
    for r in rl:
        # 4 rounds x M = 8 distinct prompts of 40 hold at least 12 even ones, so M pass the
        # band, and every kept group succeeds K times of K.
        assert r["ds_pass_frac"] == 1.0
        assert r["sel_success_rate"] == r["train_accuracy"] == 1.0


def test_dynamic_sampling_needs_the_random_scorer():
    config = _load_config("smoke,ds")
    config.selection.scorer = "insight"
    with pytest.raises(ConfigError, match="random"):
        validate_config(config)
    config = _load_config("smoke,ds")
    config.task.rl_pool_size = 16  # 4 rounds x M=8 distinct prompts do not fit
    with pytest.raises(ConfigError, match="dynamic_sampling_rounds"):
        validate_config(config)
    config.task.rl_pool_size = 65
    with pytest.raises(ConfigError, match="rl_pool_size"):
        validate_config(config)


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
    seed = int(os.environ.get("KILL_SEED", time.time_ns() % 1000))  # rerun with KILL_SEED=...
    kill_at = int(np.random.default_rng(seed).integers(3, 7))  # leave steps to kill in
    proc = subprocess.Popen(
        _command(killed), env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if max(_metrics_steps(killed / "metrics.jsonl"), default=-1) >= kill_at:
            break
        time.sleep(0.05)
    assert proc.poll() is None, f"run finished before the kill at step {kill_at} (seed {seed})"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "final_beliefs.npz").exists()

    out = subprocess.run(
        _command(killed), env=env, cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, (
        f"resume failed (killed after step {kill_at}, KILL_SEED={seed}):\n{out.stderr[-3000:]}"
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
    for key in ("eval_accuracy_before_rl", "eval_accuracy_after", "prompts_seen", "rollouts"):
        assert sa[key] == sb[key]
    # Each step is in metrics.jsonl once (records after the restored step were dropped, then
    # replayed), and the summary's totals cover the whole run, not the session after the kill.
    lines = (killed / "metrics.jsonl").read_text().splitlines()
    assert sorted(json.loads(x)["step"] for x in lines) == list(range(1, len(ma) + 1))
    total_update = sum(r["time_update"] for r in mb if "time_update" in r)
    assert sb["total_time_update_s"] == pytest.approx(total_update)


# ------------------------------------------------------------------ the step's shape


def _run_steps(config, workdir, rl_steps):
    """Builds a run and drives its warm start and `rl_steps` RL steps by hand."""
    from insight_jax.rl.rl_step import rl_step

    comps = setup.build(config, workdir)
    state = comps.init()
    for _ in range(config.warmstart.steps):
        state, _ = warmstart.warm_start_step(comps, state)
    state = comps.fns.start_rl(state)
    metrics = []
    for _ in range(rl_steps):
        state, m = rl_step(comps, state)
        metrics.append(m)
    return comps, state, metrics


@pytest.mark.parametrize("arg", ["smoke", "smoke,ds"])
def test_steps_make_no_implicit_transfer_and_compile_once(tmp_path, devices, arg):
    """Every host <-> device crossing of a step is an explicit device_put / device_get, and the
    jitted functions are traced once however many steps run."""
    config = _load_config(arg)
    config.task.rl_pool_size = 40 if "ds" in arg else 0
    with jax.transfer_guard("disallow"):
        comps, state, metrics = _run_steps(config, tmp_path, rl_steps=3)
    assert int(jax.device_get(state.step)) == config.warmstart.steps + 3
    fns = comps.fns
    compiled = [fns.sft_step, fns.start_rl, fns.learn, fns.warm_indices]
    compiled.append(fns.draw_uniform if "ds" in arg else fns.select)
    assert [f._cache_size() for f in compiled] == [1] * len(compiled)
    assert all(np.isfinite(m["loss"]) for m in metrics)


def test_kl_reference_is_the_policy_at_the_start_of_rl(tmp_path, devices):
    config = _load_config()
    config.rl.kl_coef = 0.5
    comps = setup.build(config, tmp_path)
    state = comps.init()
    for _ in range(config.warmstart.steps):
        state, _ = warmstart.warm_start_step(comps, state)
    policy = jax.device_get(state.model)
    state = comps.fns.start_rl(state)
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(state.ref_model), policy)
    from insight_jax.rl.rl_step import rl_step

    state, m = rl_step(comps, state)
    # The reference stays frozen while the policy moves; the KL term is reported and >= 0.
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(state.ref_model), policy)
    assert m["kl"] >= 0.0 and np.isfinite(m["kl"])
    config.rl.kl_coef = 0.0
    assert setup.build(config, tmp_path / "nokl").init().ref_model is None


def test_every_grpo_option_reaches_the_learner_settings():
    """Dr.GRPO, KL and the aggregation are config keys: each lands in the GRPOConfig the
    learner step is built with (the GRPO math itself is tested in test_grpo.py)."""
    config = _load_config()
    config.rl.normalize_std, config.rl.aggregation = False, "token_sum_norm"  # Dr.GRPO
    config.rl.kl_coef, config.rl.kl_kind, config.rl.entropy_coef = 0.05, "k2", 0.001
    validate_config(config)
    g = setup.grpo_config(config)
    assert (g.normalize_std, g.aggregation, g.kl_coef, g.kl_kind, g.entropy_coef) == (
        False,
        "token_sum_norm",
        0.05,
        "k2",
        0.001,
    )


def test_rl_steps_may_grow_on_resume_only_under_a_constant_schedule():
    from insight_jax.rl.train import resume_safe_keys

    config = _load_config()
    assert "rl.steps" in resume_safe_keys(config)
    config.rl.lr_schedule = "cosine"  # its decay length is rl.steps
    assert "rl.steps" not in resume_safe_keys(config)
    assert "eval.every" in resume_safe_keys(config)


def test_cosine_schedule_decays_to_zero_over_the_rl_updates():
    """The config's schedule, in optimizer updates (num_ppo_epochs * num_minibatches per RL
    step), against the closed-form linear warmup + cosine decay."""
    config = _load_config()
    config.rl.lr_schedule, config.rl.warmup_steps, config.rl.steps = "cosine", 2, 10
    config.rl.num_ppo_epochs = 3
    schedule = setup.rl_lr_schedule(config)
    per_step = config.rl.num_minibatches * 3
    total, warm, lr = 10 * per_step, 2 * per_step, config.rl.learning_rate
    for count in (0, warm // 2, warm, warm + 5, total // 2, total - 1, total):
        if count < warm:
            want = lr * count / warm
        else:
            want = lr * 0.5 * (1 + np.cos(np.pi * (count - warm) / (total - warm)))
        assert float(schedule(count)) == pytest.approx(want, rel=1e-5, abs=1e-12), count
    config.rl.lr_schedule, config.rl.warmup_steps = "constant", 0
    assert float(setup.rl_lr_schedule(config)(total)) == pytest.approx(lr)


# ------------------------------------------------------------- a workdir is one run


def test_a_workdir_refuses_another_run_a_second_process_and_repairs_damage(tmp_path, devices):
    config = _load_config()
    config.checkpoint.max_to_keep = 3
    first = train_and_evaluate(config, tmp_path / "run")
    run = tmp_path / "run"
    before = _records_without_times(run)

    other_seed = _load_config()
    other_seed.seed = 1
    with pytest.raises(wd.WorkdirMismatch, match="seed"):
        train_and_evaluate(other_seed, run)
    other_scorer = _load_config("smoke,mopps")
    with pytest.raises(wd.WorkdirMismatch, match=r"selection\.scorer"):
        train_and_evaluate(other_scorer, run)
    with wd.WorkdirLock(run), pytest.raises(wd.WorkdirBusy):
        train_and_evaluate(config, run)
    shorter = _load_config()
    shorter.rl.steps = 2  # a resume-safe key, but not below the run's progress
    with pytest.raises(ValueError, match="past this config's last step"):
        train_and_evaluate(shorter, run)
    assert json.loads((run / "config.json").read_text())["rl"]["steps"] == config.rl.steps

    # Damage the newest checkpoint: it is moved aside, the run replays from the one before and
    # ends exactly as before, with each step logged once.
    total = config.warmstart.steps + config.rl.steps
    data = sorted(
        (run / "checkpoints" / str(total) / "state").rglob("*"), key=lambda p: p.stat().st_size
    )
    victim = [p for p in data if p.is_file()][-1]
    raw = bytearray(victim.read_bytes())
    for i in range(0, len(raw), max(1, len(raw) // 64))[:64]:
        raw[i] ^= 0xFF
    victim.write_bytes(bytes(raw))
    again = train_and_evaluate(config, run)
    assert (run / "checkpoints" / f"{total}.damaged").exists()
    after = _records_without_times(run)
    assert after == before and len(after) == config.warmstart.steps + config.rl.steps
    for key in ("eval_accuracy_after", "prompts_seen", "rollouts"):
        assert again[key] == first[key]
