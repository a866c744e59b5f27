"""One RL step, exactly:

    jit select -> host: fetch + encode prompts -> jit rollout -> host: verify -> jit learn

Only the two host stages touch numpy, and every crossing is explicit (`jax.device_get` of the
replicated indices, global arrays built from each process's own prompt rows, each process's
completion rows read back and verified there, the rewards all-gathered: host_data.py); the
rollout's sequences and log-probs stay on the devices between the rollout and the learner.
Each phase is timed after blocking on its outputs (time_select, time_rollout, time_verify,
time_update; the belief update and rescore are part of the learner step, so of time_update).
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from insight_jax import sharding as shd
from insight_jax.rl.evaluate import generate_for, rollout_rewards
from insight_jax.rl.host_data import replicated
from insight_jax.rl.rollout import Rollout
from insight_jax.rl.setup import Components
from insight_jax.rl.state import TrainState
from insight_jax.rl.throughput import peak_flops, rl_step_flops
from insight_jax.selection import successes_from_rewards, validate_update


def _rollout(comps: Components, state: TrainState, indices: np.ndarray, key: jax.Array):
    """The rollout of the prompts `indices` (this process fetches and encodes its rows)."""
    return generate_for(
        comps.rollout_engine,
        state.model,
        comps.tokenizer,
        lambda b: comps.pool[int(indices[b])],
        len(indices),
        comps.prompt,
        comps.prompt_len,
        comps.data_sharding,
        key,
    )


@jax.jit
def _gather_groups(parts: list[Rollout], rows: jax.Array) -> Rollout:
    """The rows `rows` of the rollouts of several rounds, concatenated in round order."""
    return jax.tree.map(lambda *xs: jnp.concatenate(xs)[rows], *parts)


def _successes(comps: Components, rewards: np.ndarray) -> np.ndarray:
    sel = comps.config.selection
    return successes_from_rewards(rewards, sel.success_rule, sel.success_threshold)


def rl_step(comps: Components, state: TrainState) -> tuple[TrainState, dict[str, float]]:
    """Runs RL step `state.step`; returns the new state and the step's metrics (host floats)."""
    if comps.config.selection.dynamic_sampling_rounds:
        return _dynamic_sampling_step(comps, state)
    k = comps.config.rl.num_rollouts
    times = {}
    t0 = time.perf_counter()
    idx_dev, k_roll = comps.fns.select(state)
    idx = jax.device_get(idx_dev)
    times["time_select"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    rollout, records = _rollout(comps, state, idx, k_roll)
    rollout = jax.block_until_ready(rollout)
    times["time_rollout"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    rewards = rollout_rewards(comps.tokenizer, comps.task, records, rollout, k, len(idx))
    successes = _successes(comps, rewards)
    validate_update(comps.num_items, idx, successes, k, comps.config.selection.decay)
    times["time_verify"] = time.perf_counter() - t0

    fields = _prompt_fields(rewards, successes, idx, idx, successes, np.ones(len(idx), bool))
    return _learn(comps, state, rollout, fields, times, rollouts=len(idx) * k, rounds=1)


def _prompt_fields(rewards, successes, idx, seen, seen_s, seen_valid) -> dict[str, np.ndarray]:
    return {
        "rewards": rewards.astype(np.float32),
        "successes": successes.astype(np.float32),
        "indices": idx.astype(np.int32),
        "seen_indices": seen.astype(np.int32),
        "seen_successes": seen_s.astype(np.float32),
        "seen_valid": seen_valid,
    }


def _learn(comps, state, rollout, prompt_fields, times, *, rollouts: int, rounds: int):
    t0 = time.perf_counter()  # the learner phase includes placing its per-prompt inputs
    batch = {"rollout": rollout} | replicated(prompt_fields, shd.replicated(comps.mesh))
    state, metrics = comps.fns.learn(state, batch)
    metrics = jax.device_get(metrics)
    jax.block_until_ready(state)
    times["time_update"] = time.perf_counter() - t0
    out = {k: float(v) for k, v in metrics.items()}
    out.update(rollouts=float(rollouts), sampling_rounds=float(rounds), **times)
    out.update(_throughput(comps, out, rollouts))
    return state, out


def _throughput(comps: Components, m: dict[str, float], rollouts: int) -> dict[str, float]:
    """Generated tokens/s of the rollout, model TFLOP/s of the step and MFU (throughput.py;
    MFU only on chips with a known peak). Counts the learner's batch (the kept groups). Named
    time_* as every wall-clock-derived metric, so comparisons of runs can leave them out."""
    c = comps.config
    batch = c.rl.batch_size * c.rl.num_rollouts
    rollout_flops, learner_flops = rl_step_flops(
        comps.policy.model_config,
        num_sequences=batch,
        num_samples=c.rl.num_rollouts,
        prompt_len=m["prompt_len"],
        completion_len=m["completion_len"],
        ppo_epochs=c.rl.num_ppo_epochs,
        reference_forward=c.rl.kl_coef > 0,
    )
    seconds = m["time_rollout"] + m["time_update"]
    out = {
        "time_rollout_tokens_per_s": rollouts * m["completion_len"] / max(m["time_rollout"], 1e-9),
        "time_step_tflops_per_s": (rollout_flops + learner_flops) / max(seconds, 1e-9) / 1e12,
    }
    peak = peak_flops(jax.devices()[0].device_kind)
    if peak is not None:
        out["time_step_mfu"] = out["time_step_tflops_per_s"] * 1e12 / (peak * jax.device_count())
    return out


def mixed_groups(rewards: np.ndarray) -> np.ndarray:
    """[G, K] -> [G] bool: the group's K rewards are not all equal (DAPO keeps these)."""
    return np.any(rewards != rewards[:, :1], axis=1)


def kept_groups(rewards: np.ndarray, successes: np.ndarray, band: tuple) -> np.ndarray:
    """[G, K] rewards, [G] success counts S -> [G] bool: the groups dynamic sampling keeps.

    Without a band, those with mixed rewards (DAPO); with band (lo, hi), those whose success
    rate lies in it, lo <= S / K <= hi (a band-pass filter)."""
    if not band:
        return mixed_groups(rewards)
    lo, hi = band
    rate = successes / rewards.shape[1]
    return (rate >= lo) & (rate <= hi)


def _dynamic_sampling_step(comps: Components, state: TrainState):
    """DAPO dynamic sampling: uniform batches of M until M groups pass its filter (mixed
    rewards, or a success rate in selection.dynamic_sampling_band: `kept_groups`).

    The prompts of all rounds are one uniform draw without replacement (no prompt is rolled out
    twice in a step). Kept: the first M passing groups in draw order; if fewer than M after the
    last round, the batch is filled with the others in draw order, as DAPO's batch must be
    full. Beliefs learn from every group rolled out (all rounds); every rollout is counted.
    """
    c = comps.config
    m, k = c.rl.batch_size, c.rl.num_rollouts
    rounds = c.selection.dynamic_sampling_rounds
    band = tuple(c.selection.dynamic_sampling_band)  # a list when read back from config.json
    t0 = time.perf_counter()
    drawn_dev, keys = comps.fns.draw_uniform(state)
    drawn = jax.device_get(drawn_dev)
    parts, rewards_all, successes_all, passed = [], [], [], 0
    rollout_time = verify_time = 0.0
    for r in range(rounds):
        t1 = time.perf_counter()
        rollout, records = _rollout(comps, state, drawn[r * m : (r + 1) * m], keys[r])
        rollout = jax.block_until_ready(rollout)
        t2 = time.perf_counter()
        rewards = rollout_rewards(comps.tokenizer, comps.task, records, rollout, k, m)
        verify_time += time.perf_counter() - t2
        rollout_time += t2 - t1
        successes = _successes(comps, rewards)
        parts.append(rollout)
        rewards_all.append(rewards)
        successes_all.append(successes)
        passed += int(np.sum(kept_groups(rewards, successes, band)))
        if passed >= m:
            break
    rewards_all = np.concatenate(rewards_all)
    successes = np.concatenate(successes_all)
    passes = kept_groups(rewards_all, successes, band)
    # Passing groups first, then the rest, each in draw order (stable sort).
    keep = np.argsort(~passes, kind="stable")[:m]
    rows = (keep[:, None] * k + np.arange(k)[None]).reshape(-1)
    rows = replicated(rows, shd.replicated(comps.mesh))
    kept = jax.device_put(_gather_groups(parts, rows), comps.data_sharding)
    used = len(rewards_all)
    seen = np.zeros(rounds * m, np.int32)
    seen[:used] = drawn[:used]
    seen_s = np.zeros(rounds * m, np.float32)
    seen_s[:used] = successes
    valid = np.arange(rounds * m) < used
    validate_update(comps.num_items, seen[:used], seen_s[:used], k, c.selection.decay)
    times = {
        "time_select": time.perf_counter() - t0 - rollout_time - verify_time,
        "time_rollout": rollout_time,
        "time_verify": verify_time,
    }
    kept_rewards = rewards_all[keep]
    fields = _prompt_fields(kept_rewards, seen_s[keep], drawn[keep], seen, seen_s, valid)
    state, out = _learn(comps, state, kept, fields, times, rollouts=used * k, rounds=len(parts))
    out["ds_pass_frac"] = float(np.mean(passes[keep]))  # of the batch; below 1: filled up
    return state, out
