"""RLVR training with online prompt selection: `train_and_evaluate(config, workdir)`.

One run = an optional supervised warm start (steps [0, W), warmstart.py), then RL steps
[W, W + R) (rl_step.py):

    jit select -> host: fetch + encode prompts -> jit rollout -> host: verify -> jit learn

The loop only threads one TrainState (state.py) through the step functions built once by
setup.py. Step s uses the key fold_in(key(seed), s), so a run resumed from the checkpoint of
step s replays s, s+1, ... exactly; the checkpoint holds everything else that changes.

Bookkeeping: a record logged at step t describes the state after t steps (the train metrics of
the step that produced it, and the evaluations of it), and the checkpoint of t is written after
every record of t, so a restore at t keeps exactly the records with step <= t.

A workdir is one run: validate the config (before any work), lock the workdir, compare the config
with the one that made it (config.json; only keys in workdir.RESUME_SAFE_KEYS may change), then
restore the newest intact checkpoint (checkpoints verify their checksums) and repair
metrics.jsonl to it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import time
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from insight_jax import workdir as wd
from insight_jax.checkpointing import Checkpointer, committed_steps
from insight_jax.metrics import (
    MetricWriter,
    check_finite,
    plot_learning_curves,
    progress,
    read_metrics_jsonl,
    repair_metrics,
)
from insight_jax.rl import setup, warmstart
from insight_jax.rl.base_config import get_base_config
from insight_jax.rl.data import TRAIN_POOL_SET
from insight_jax.rl.evaluate import eval_metrics, eval_tables, evaluate_sets, pass_ks
from insight_jax.rl.host_data import process_0_says
from insight_jax.rl.rl_step import rl_step
from insight_jax.rl.setup import Components
from insight_jax.rl.state import TrainState
from insight_jax.rl.validate import validate_config

TIME_KEYS = ("time_select", "time_rollout", "time_verify", "time_update")


def _evaluate(comps: Components, state: TrainState) -> dict[str, float]:
    """avg@n, pass@k and mean reward on every held-out set, and their macro averages."""
    c = comps.config
    results = evaluate_sets(
        comps.eval_engine,
        state.model,
        comps.tokenizer,
        comps.eval_sets,
        comps.fns.eval_key(state),
        prompt=comps.policy.prompt,
        prompt_len=comps.prompt_len,
        sharding=comps.data_sharding,
        batch_multiple=comps.batch_multiple,
        batch_size=c.eval.batch_size,
        success_threshold=c.selection.success_threshold,
    )
    held_out = [s.name for s in comps.eval_sets if s.held_out]
    return eval_metrics(results, c.eval.num_samples, held_out)


def _write_eval_tables(comps: Components, rows: list[dict]) -> None:
    """eval_tables.md in the workdir: a table per held-out set, a row per evaluated step."""
    names = [s.name for s in comps.eval_sets]
    text = eval_tables(rows, names, comps.config.eval.num_samples)
    wd.write_text_atomic(comps.workdir / "eval_tables.md", f"# Held-out evaluations\n\n{text}")


def _evals_due(comps: Components, t: int) -> bool:
    """Held-out evaluation after t steps: at the start of RL, every eval.every RL steps, end."""
    w, total = comps.warm_steps, comps.total_steps
    return t == w or t == total or (t > w and (t - w) % comps.config.eval.every == 0)


def _summary(comps: Components, rows: list[dict], alpha, beta) -> dict[str, Any]:
    """The run's summary from metrics.jsonl (each step once): totals cover the whole run."""
    c = comps.config
    w, total = comps.warm_steps, comps.total_steps
    evals = {r["step"]: r for r in rows if "eval_accuracy" in r}
    n_eval = c.eval.num_samples
    summary: dict[str, Any] = {}
    between = [s for s in evals if w < s < total]
    for tag, t in (("before_rl", w), ("latest", max(between, default=None)), ("after", total)):
        if t in evals:
            summary[f"eval_accuracy_{tag}"] = evals[t]["eval_accuracy"]
            summary[f"eval_spread_{tag}"] = evals[t]["eval_spread"]
            for s in comps.eval_sets:  # each set's avg@n, held out or the train-pool sample
                summary[f"eval_{s.name}_{tag}"] = evals[t][f"eval_{s.name}_avg@{n_eval}"]
    if total in evals:  # the final evaluation of every set: {set: {avg@n, pass@k.., reward}}
        n = c.eval.num_samples
        final = evals[total]
        summary["eval"] = {
            s.name: {
                k: final[f"eval_{s.name}_{k}"]
                for k in (f"avg@{n}", *(f"pass@{k}" for k in pass_ks(n)), "reward")
            }
            for s in comps.eval_sets
        }
    rl_rows = [r for r in rows if "reward_mean" in r]
    n = alpha + beta
    prior = c.selection.alpha0 + c.selection.beta0
    summary.update(
        {
            "steps_warm_start": w,
            # True when no warm-start problem is in the RL pool or a held-out set (measured)
            "warm_start_disjoint": comps.warm_start_disjoint if w else None,
            "warm_start_pool_size": len(comps.warm_pool),
            "steps_rl": c.rl.steps,
            "rollouts": int(sum(r["rollouts"] for r in rl_rows)),
            # A visit adds K >= 1 to alpha + beta; a fitted prior's float32 sum may be off n0.
            "prompts_seen": int(np.sum(n > prior + 0.5)),
            "scorer": comps.scorer.name,
            "time_rl_steps_s": float(sum(sum(r[k] for k in TIME_KEYS) for r in rl_rows)),
            **{f"total_{k}_s": float(sum(r[k] for r in rl_rows)) for k in TIME_KEYS},
        }
    )
    if rl_rows:
        per_step = [sum(r[k] for k in TIME_KEYS) for r in rl_rows]
        summary["median_rl_step_s"] = float(np.median(per_step))
    fitted = [r["prior_mean"] for r in rl_rows if "prior_mean" in r]
    if fitted:  # selection.prior "warm_start": the mean it fitted at the start of RL
        summary["prior_mean"] = fitted[0]
    return summary


def _fitted_prior_mean(comps: Components, at_rl_start: dict | None, jsonl: Path) -> float:
    """The mean of selection.prior "warm_start": pass@1 on the train-pool sample at the start
    of RL (this session's evaluation, or else the record of step W in metrics.jsonl, which
    every process reads, as it reads the evaluated steps), moved into (0, 1) by half a sample,
    (1/2) / (n_prompts n_samples), so that both Beta parameters stay positive. A float32
    value: what the beliefs hold, the same on a resumed run as on an uninterrupted one."""
    c = comps.config
    key = f"eval_{TRAIN_POOL_SET}_avg@{c.eval.num_samples}"
    if at_rl_start is None:
        rows = [r for r in read_metrics_jsonl(jsonl) if r["step"] == comps.warm_steps]
        at_rl_start = next((r for r in reversed(rows) if key in r), None)
        if at_rl_start is None:
            raise RuntimeError(
                f"{jsonl} has no {key} at step {comps.warm_steps}, the start of RL: "
                "selection.prior warm_start cannot fit its mean; use a new workdir"
            )
    half = 0.5 / (c.eval.train_pool_size * c.eval.num_samples)
    return float(np.float32(np.clip(at_rl_start[key], half, 1.0 - half)))


def _restore(comps: Components, ckpt: Checkpointer, cache: Path | None, log):
    """(start step, state, source): the newest intact checkpoint ("checkpoint"), else a
    cached warm start ("cache"), else step 0 ("scratch"). The initial state (for a Hugging
    Face policy: its weights read from disk) is made only when no checkpoint restores."""
    restored = ckpt.restore_latest(comps.abstract_state)
    for damaged in ckpt.damaged:
        log(f"damaged checkpoint moved aside: {damaged.message}")
    if restored is not None:
        start, state, _ = restored
        if int(jax.device_get(state.step)) != start:
            raise RuntimeError(f"checkpoint {start} in {ckpt.directory} holds another step")
        log(f"resumed from the checkpoint of step {start} in {ckpt.directory}")
        return start, state, "checkpoint"
    state = comps.init()
    if cache is not None:
        cached = warmstart.load(cache, comps.warm_steps, state)
        if cached is not None:
            log(f"warm-started policy loaded from {cache}")
            return comps.warm_steps, cached, "cache"
    return 0, state, "scratch"


def restore_run(workdir: str | Path, step: int | None = None) -> tuple[Components, int, TrainState]:
    """(components, step, state) of the run in `workdir` at `step` (default: its newest intact
    checkpoint), rebuilt from its config.json; for tools that read a run (export, evaluate).

    Raises:
      FileNotFoundError: if `workdir` holds no run's config or no checkpoint (of `step`).
    """
    workdir = Path(workdir).resolve()
    config_file = workdir / wd.CONFIG_NAME
    if not config_file.is_file():
        raise FileNotFoundError(f"{config_file} not found: {workdir} is not a run's workdir")
    config = ml_collections.ConfigDict(json.loads(config_file.read_text()))
    comps = setup.build(config, workdir)
    with Checkpointer(workdir / "checkpoints", max_to_keep=0) as ckpt:
        if step is None:
            restored = ckpt.restore_latest(comps.abstract_state)
            if restored is None:
                raise FileNotFoundError(f"no checkpoint in {workdir / 'checkpoints'}")
            step, state, _ = restored
        else:
            committed = committed_steps(workdir / "checkpoints")
            if step not in committed:
                raise FileNotFoundError(
                    f"no checkpoint of step {step} in {workdir / 'checkpoints'}; committed: "
                    f"{committed}"
                )
            state, _ = ckpt.restore(step, comps.abstract_state)
    return comps, step, state


def resume_safe_keys(config: ml_collections.ConfigDict) -> tuple[str, ...]:
    """Keys a rerun in the same workdir may change (workdir.RESUME_SAFE_KEYS), less rl.steps
    under a cosine schedule: its decay length is rl.steps, so a longer run would change the
    learning rate of steps already taken on the way."""
    if config.rl.lr_schedule == "constant":
        return wd.RESUME_SAFE_KEYS
    return tuple(k for k in wd.RESUME_SAFE_KEYS if k != "rl.steps")


def train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str | Path,
    *,
    log=None,
    log_file: str | None = None,
) -> dict[str, Any]:
    """Runs (or resumes) the configured training and returns the final summary metrics.

    Writes under workdir: config.json (the run's fingerprint), metrics.jsonl + tb/
    (TensorBoard), checkpoints/, data/ (the prompt pool), learning_curves.png, summary.json and
    final_beliefs.npz (alpha, beta per prompt). Raises ConfigError (bad config, before any
    work), WorkdirBusy (another process runs in this workdir) or WorkdirMismatch (the workdir
    belongs to a run with another config). `log` prints the few run-info lines (default print);
    with `log_file`, Python's (and so absl's and orbax's) log records also go to that file in
    the workdir, once the workdir is this run's.
    """
    log = log or (lambda msg: print(msg, flush=True))
    validate_config(config)
    workdir = Path(workdir).resolve()
    # Process 0 holds the workdir's lock and checks its config for all processes (they share
    # the workdir); the others start once it has, or stop with it.
    lock = wd.WorkdirLock(workdir) if jax.process_index() == 0 else contextlib.nullcontext()
    with lock:
        failure = None
        if jax.process_index() == 0:
            try:
                _claim(config, workdir, log)
            except Exception as e:
                failure = e
        if process_0_says(failure is not None):
            if failure is not None:
                raise failure
            raise RuntimeError(f"process 0 refused the workdir {workdir}; see its error")
        with _logs_to(workdir / log_file if log_file else None):
            return _train(config, workdir, log)


def _claim(config: ml_collections.ConfigDict, workdir: Path, log) -> None:
    # Before claim() records the new config: a run cannot be shortened below its progress.
    done = max(committed_steps(workdir / "checkpoints"), default=0)
    last = config.warmstart.steps + config.rl.steps
    if done > last:
        raise ValueError(
            f"{workdir} holds a checkpoint of step {done}, past this config's last step "
            f"{last} (warmstart.steps + rl.steps): use rl.steps >= "
            f"{done - config.warmstart.steps} or a new workdir"
        )
    # Keys this version added resume an older run at their defaults (the old behaviour).
    added_at = wd.flatten(get_base_config().to_dict())
    if wd.claim(workdir, config.to_dict(), resume_safe_keys(config), added_at):
        log(f"continuing the run in {workdir}")


@contextlib.contextmanager
def _logs_to(path: Path | None):
    """Python logging records of INFO and above also go to `path` while the context lasts."""
    if path is None:
        yield
        return
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()


class Preempted(Exception):
    """The run stopped on SIGTERM after checkpointing step `step`; rerunning resumes it."""

    def __init__(self, step: int):
        super().__init__(f"stopped by SIGTERM after step {step} (checkpointed)")
        self.step = step


class _Preemption:
    """SIGTERM (TPU maintenance, spot preemption) asks the loop to stop after the step it is in.
    The handler only sets a flag; `requested()` is every process's agreement (any process's
    signal stops all of them after the same step)."""

    def __init__(self):
        self._flag = False
        self._previous = None

    def __enter__(self):
        self._flag = False
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread: no handler, the default action stays
            self._previous = None
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)

    def _handle(self, signum, frame):
        self._flag = True

    def requested(self) -> bool:
        if jax.process_count() == 1:
            return self._flag
        flags = multihost_utils.process_allgather(np.int32(self._flag))
        return bool(np.any(flags))


preemption = _Preemption()


def _train(c: ml_collections.ConfigDict, workdir: Path, log) -> dict[str, Any]:
    with preemption:
        return _train_steps(c, workdir, log)


def _train_steps(c: ml_collections.ConfigDict, workdir: Path, log) -> dict[str, Any]:
    comps = setup.build(c, workdir)
    ckpt = Checkpointer(
        workdir / "checkpoints",
        max_to_keep=c.checkpoint.max_to_keep,
        save_interval_steps=c.checkpoint.every,
    )
    w, total = comps.warm_steps, comps.total_steps
    cache = warmstart.cache_dir(comps)
    start, state, source = _restore(comps, ckpt, cache, log)
    # Records after the restored step are replayed (deterministically) below: drop them first.
    # From scratch or from the warm-start cache, no record of this workdir describes the state.
    if jax.process_index() == 0:
        repair_metrics(
            workdir / "metrics.jsonl", last_step=start if source == "checkpoint" else None
        )
    writer = MetricWriter(workdir)  # process 0's creates metrics.jsonl
    if jax.process_count() > 1:  # no process reads metrics.jsonl before it is repaired
        multihost_utils.sync_global_devices("metrics repaired")
    wall0 = time.perf_counter()
    bar = progress(total, desc="train", initial=start)

    def record(t: int, metrics: dict[str, float]) -> None:
        check_finite(metrics, t)  # fail fast on NaN (the newest checkpoint stays a healthy one)
        writer.write_scalars(t, metrics)
        if "eval_accuracy" in metrics and jax.process_index() == 0:
            writer.flush()
            _write_eval_tables(comps, read_metrics_jsonl(writer.jsonl_path))

    evaluated = {r["step"] for r in read_metrics_jsonl(writer.jsonl_path) if "eval_accuracy" in r}
    at_rl_start = None  # the evaluation of step W, when this session makes it
    if start == w and start not in evaluated:  # RL starts here: a fresh run or a cached warm start
        at_rl_start = _evaluate(comps, state)
        record(start, at_rl_start)
    for step in range(start, total):
        rl_start = {}
        if step == w:  # decided by the step alone: a state at step W holds the warm optimizer
            state = comps.fns.start_rl(state)
            if c.selection.prior == "warm_start":
                mean = _fitted_prior_mean(comps, at_rl_start, writer.jsonl_path)
                state = comps.fns.fit_prior(state, np.float32(mean))
                rl_start["prior_mean"] = mean
        if step < w:
            state, metrics = warmstart.warm_start_step(comps, state)
            metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
        else:
            state, metrics = rl_step(comps, state)
        t = step + 1
        if t == w and cache is not None:
            warmstart.save(cache, t, state, workdir)
            # Train on from the cache's entry, not this run's own: if runs of one seed warm
            # started at once and their results differ (non-deterministic GPU kernels), every
            # run still starts RL from the one policy that won the race, so they stay paired.
            state = warmstart.load(cache, w, state) or state
        metrics.update(rl_start)
        if _evals_due(comps, t):
            metrics.update(_evaluate(comps, state))
            if t == w:
                at_rl_start = metrics
            bar.set_postfix(acc=f"{metrics['eval_accuracy']:.3f}")
        record(t, metrics)
        bar.update(1)
        stop = preemption.requested()  # every process stops after the same step
        if ckpt.should_save(t) or t == total or stop:
            writer.flush()  # every record of t is on disk before the checkpoint of t
            ckpt.save(t, state, {"step": t}, force=t == total or stop)
        if stop:
            bar.close()
            writer.close()
            ckpt.close()
            log(f"stopped by SIGTERM after step {t}, checkpointed; the same command resumes")
            raise Preempted(t)
    bar.close()
    writer.close()
    ckpt.close()

    # The beliefs are sharded over the pool: every process takes part in gathering them.
    alpha, beta = (
        np.asarray(multihost_utils.process_allgather(x, tiled=True))[: comps.num_items]
        for x in (state.beliefs.alpha, state.beliefs.beta)
    )
    if jax.process_index() == 0:  # the one writer of the workdir's files
        np.savez(workdir / "final_beliefs.npz", alpha=alpha, beta=beta)
        summary = _summary(comps, read_metrics_jsonl(workdir / "metrics.jsonl"), alpha, beta)
        summary["wall_time_this_session_s"] = time.perf_counter() - wall0
        if cache is not None:
            summary["warm_start_cache"] = str(cache)
        wd.write_text_atomic(workdir / "summary.json", json.dumps(summary, indent=1))
        try:
            plot_learning_curves(
                workdir / "metrics.jsonl",
                workdir / "learning_curves.png",
                keys=["eval_accuracy", "train_accuracy", "zero_var_frac", "sel_mean_evidence"],
            )
        except Exception as e:  # a missing curve must not lose a finished run
            log(f"learning-curve plot failed: {e}")
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices("summary written")
    return json.loads((workdir / "summary.json").read_text())
