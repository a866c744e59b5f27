"""RLVR training with online prompt selection: `train_and_evaluate(config, workdir)`.

One run = an optional supervised warm start (steps [0, W): teacher-forced reference solutions, so
a tiny policy starts out solving part of the task), then RL steps [W, W + R), each:

    beliefs --select_batch--> M prompt indices --pool[i]--> prompts --sample--> K rollouts each
      --task.verify--> rewards [M, K] --group_advantages--> GRPO update (jitted, sharded)
      --successes--> update_beliefs (+ rescore the M cached scores)

The RNG of step s is fold_in(key(seed), s), so a step's randomness depends only on the seed and
the step: a run resumed from the checkpoint of step s replays steps s, s+1, ... exactly. The
checkpoint holds everything else that changes: policy, optimizer state, beliefs, cached scores,
the base key and the step (the step is also the data position: the pool is indexed, not
iterated). Metrics of a step are written before any checkpoint that follows it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from insight_jax import sharding as shd
from insight_jax.checkpointing import Checkpointer
from insight_jax.metrics import (
    DeferredWriter,
    MetricWriter,
    plot_learning_curves,
    progress,
    read_metrics_jsonl,
)
from insight_jax.models.tokenizers import CharTokenizer, encode_batch
from insight_jax.models.transformer import Transformer, TransformerConfig
from insight_jax.rl import grpo as grpo_lib
from insight_jax.rl.evaluate import encode_prompts, evaluate, rollout_rewards
from insight_jax.rl.rollout import sample
from insight_jax.rl.steps import make_step_fns
from insight_jax.selection import (
    Beliefs,
    apply_update,
    draw_candidates,
    get_scorer,
    init_beliefs,
    init_scores,
    rescore,
    select_batch,
    successes_from_rewards,
    validate_update,
)
from insight_jax.tasks import get_task
from insight_jax.tasks.datasets import build_pool

EVAL_KEY_OFFSET = 1 << 30  # eval keys live apart from step keys: fold_in(key, offset + step)


def _to_dict(x):
    return x.to_dict() if isinstance(x, ml_collections.ConfigDict) else dict(x)


class Run:
    """Everything a run needs that is built once from the config (no training state)."""

    def __init__(self, config: ml_collections.ConfigDict, workdir: str | Path):
        self.config = c = config
        self.workdir = Path(workdir).resolve()  # orbax needs absolute paths
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.tokenizer = CharTokenizer()
        self.task = get_task(c.task.name, **_to_dict(c.task.kwargs))
        self.pool = build_pool(self.task, c.task.num_train, c.seed, self.workdir / "data")
        # RL selects among the first rl_pool_size prompts (0: all); the warm start uses them all.
        self.num_items = c.task.rl_pool_size or c.task.num_train
        self.test = self.task.generate(c.task.num_test, c.seed, split="test")
        self.prompt_len = c.task.max_prompt_len or 1 + max(
            len(self.task.prompt(self.pool[i])) for i in range(len(self.pool))
        )
        self.mesh = shd.make_mesh(tuple(c.mesh.shape), tuple(c.mesh.axes))
        self.batch_axes = shd.batch_axes(self.mesh)
        self.batch_multiple = shd.batch_size_multiple(self.mesh)
        self.model_config = TransformerConfig.preset(
            c.model.preset, vocab_size=self.tokenizer.vocab_size, **_to_dict(c.model.overrides)
        )
        self.sharded = shd.create_sharded_model(
            Transformer, self.model_config, self.mesh, seed=c.seed
        )
        rl = c.rl
        self.grpo = grpo_lib.GRPOConfig(
            clip_low=rl.clip_low,
            clip_high=rl.clip_high,
            aggregation=rl.aggregation,
            kl_coef=0.0,
            entropy_coef=rl.entropy_coef,
            num_minibatches=rl.num_minibatches,
            num_ppo_epochs=rl.num_ppo_epochs,
        )
        opt = dict(weight_decay=rl.weight_decay, grad_clip=rl.grad_clip)
        self.steps = make_step_fns(
            self.sharded.graphdef,
            self.sharded.shardings,
            self.mesh,
            self.batch_axes,
            grpo_lib.make_optimizer(c.warmstart.learning_rate, **opt),
            grpo_lib.make_optimizer(rl.learning_rate, **opt),
            self.grpo,
            rl.temperature,
        )
        sel = c.selection
        self.scorer = get_scorer(sel.scorer, num_rollouts=rl.num_rollouts, **_to_dict(sel.params))
        self.pool_sharding = jax.sharding.NamedSharding(
            self.mesh, jax.sharding.PartitionSpec(self.batch_axes)
        )
        self.warm_steps = c.warmstart.steps
        self.total_steps = c.warmstart.steps + rl.steps
        self._check()

    def _check(self):
        c = self.config
        m, k = c.rl.batch_size, c.rl.num_rollouts
        if m % self.batch_multiple or c.warmstart.batch_size % self.batch_multiple:
            raise ValueError(
                f"rl.batch_size={m} and warmstart.batch_size={c.warmstart.batch_size} must be "
                f"multiples of the mesh's batch shards ({self.batch_multiple})"
            )
        if (m * k) % c.rl.num_minibatches:
            raise ValueError(f"M*K={m * k} rows must split into {c.rl.num_minibatches} minibatches")
        if not 0 <= c.task.rl_pool_size <= c.task.num_train:
            raise ValueError(
                f"task.rl_pool_size={c.task.rl_pool_size} must be in [0, {c.task.num_train}]"
            )
        if m > self.num_items:
            raise ValueError(f"rl.batch_size={m} exceeds the RL pool size {self.num_items}")
        rounds = c.selection.dynamic_sampling_rounds
        if rounds < 0 or (rounds and c.selection.scorer != "random"):
            raise ValueError(
                "selection.dynamic_sampling_rounds must be >= 0, and > 0 only with scorer "
                f"'random' (DAPO samples uniformly); got {rounds} with {c.selection.scorer!r}"
            )
        if rounds * m > self.num_items:
            raise ValueError(
                f"dynamic sampling draws up to rounds*M={rounds * m} distinct prompts per step, "
                f"more than the RL pool ({self.num_items})"
            )

    def warm_start_cache(self) -> Path | None:
        """The cache directory of this run's warm-started policy, or None (no cache/warm start).

        Keyed by a hash of every setting the warm start depends on, so a run never picks up a
        policy trained under different settings.
        """
        c = self.config
        if not c.warmstart.cache_dir or not self.warm_steps:
            return None
        ws = {k: v for k, v in _to_dict(c.warmstart).items() if k != "cache_dir"}
        key = {
            "seed": c.seed,
            "task": {k: v for k, v in _to_dict(c.task).items() if k != "rl_pool_size"},
            "model": _to_dict(c.model),
            "mesh": [list(c.mesh.shape), list(c.mesh.axes), jax.device_count()],
            "warmstart": ws,
            "sequence": [self.prompt_len, c.rl.max_new_tokens],
            "optimizer": [c.rl.weight_decay, c.rl.grad_clip],
        }
        digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()
        name = f"{c.task.name}-s{c.seed}-w{self.warm_steps}-{digest[:12]}"
        return Path(c.warmstart.cache_dir).resolve() / name

    # ---------------------------------------------------------------------------- state

    def initial_state(self) -> dict[str, Any]:
        c = self.config
        beliefs = init_beliefs(
            self.num_items, c.selection.alpha0, c.selection.beta0, sharding=self.pool_sharding
        )
        model_state = self.sharded.state
        first_opt = self.steps.init_sft_opt if self.warm_steps else self.steps.init_rl_opt
        # Small replicated leaves live on the mesh too, so a restored checkpoint (which keeps
        # each leaf's sharding) never mixes single-device and mesh arrays.
        replicated = shd.replicated(self.mesh)
        return {
            "model": model_state,
            "opt": first_opt(model_state),
            "alpha": beliefs.alpha,
            "beta": beliefs.beta,
            "scores": self._full_scores(beliefs),
            "rng": jax.device_put(jax.random.key_data(jax.random.key(c.seed)), replicated),
            "step": jax.device_put(jnp.zeros((), jnp.int32), replicated),
        }

    def beliefs(self, state) -> Beliefs:
        sel = self.config.selection
        return Beliefs(state["alpha"], state["beta"], sel.alpha0, sel.beta0, self.num_items)

    def _full_scores(self, beliefs: Beliefs) -> jax.Array:
        if self.scorer.deterministic:
            return init_scores(beliefs, self.scorer)
        return jnp.zeros_like(beliefs.alpha)  # stochastic scorers rescore every step

    def step_key(self, state, step: int) -> jax.Array:
        return jax.random.fold_in(jax.random.wrap_key_data(state["rng"]), step)

    # ---------------------------------------------------------------------------- phases

    def warm_start_step(self, state, step: int) -> dict[str, Any]:
        """One supervised step on reference completions of a random batch of pool prompts."""
        c = self.config
        key = self.step_key(state, step)
        idx = np.asarray(
            jax.random.choice(key, c.task.num_train, (c.warmstart.batch_size,), replace=False)
        )
        records = [self.pool[int(i)] for i in idx]
        prompts = [self.task.prompt(r) for r in records]
        full = [
            p + self.task.reference_completion(r) for p, r in zip(prompts, records, strict=True)
        ]
        length = self.prompt_len + c.rl.max_new_tokens
        tok = self.tokenizer
        tokens, lengths = encode_batch(tok, [f + "\0" for f in full], max_len=length)
        # The trailing "\0" placeholder becomes EOS: the policy must learn to stop.
        tokens[:, -1] = np.where(lengths > 0, tok.eos_id, tok.pad_id)
        mask = np.arange(length)[None] >= (length - lengths)[:, None]
        prompt_lens = np.array([1 + len(p) for p in prompts])
        completion_len = lengths - prompt_lens
        # loss_mask[j] covers target j + 1: the completion (incl. EOS) is the last columns.
        loss_mask = np.arange(length - 1)[None] >= (length - 1 - completion_len)[:, None]
        model, opt, metrics = self.steps.sft_step(
            state["model"], state["opt"], tokens, mask, loss_mask
        )
        return {**state, "model": model, "opt": opt}, metrics

    def _rollout(self, model, idx: np.ndarray, key: jax.Array):
        """K completions for each prompt of `idx` and their rewards [len(idx), K]."""
        rl = self.config.rl
        records = [self.pool[int(i)] for i in idx]
        tokens, lengths = encode_prompts(self.tokenizer, self.task, records, self.prompt_len)
        rollout = sample(
            model,
            tokens,
            lengths,
            key,
            max_new_tokens=rl.max_new_tokens,
            num_samples=rl.num_rollouts,
            temperature=rl.temperature,
            top_p=rl.top_p,
            eos_id=self.tokenizer.eos_id,
            pad_id=self.tokenizer.pad_id,
            mesh=self.mesh,
        )
        rewards, _ = rollout_rewards(self.tokenizer, self.task, records, rollout, rl.num_rollouts)
        return rollout, rewards

    def _dynamic_sampling(self, model, k_sel, k_roll):
        """DAPO dynamic sampling: uniform batches of M until M groups have mixed rewards.

        The prompts of all rounds are one uniform draw without replacement (so no prompt is
        rolled out twice in a step). Kept: the first M mixed groups in draw order; if fewer than
        M after the last round, the batch is filled with uniform (zero-advantage) groups, as
        DAPO's batch must be full. Returns the M kept indices, their rollout fields and rewards,
        every rolled-out index and its rewards (for the belief update), and the round count.
        """
        m, k = self.config.rl.batch_size, self.config.rl.num_rollouts
        rounds = self.config.selection.dynamic_sampling_rounds
        drawn = np.asarray(draw_candidates(k_sel, self.num_items, rounds * m))
        fields = ("sequences", "sequence_mask", "sequence_logprobs", "loss_mask")
        parts, rewards_all, mixed = [], [], 0
        for r in range(rounds):
            rollout, rewards = self._rollout(
                model, drawn[r * m : (r + 1) * m], jax.random.fold_in(k_roll, r)
            )
            parts.append({f: np.asarray(getattr(rollout, f)) for f in fields})
            rewards_all.append(rewards)
            mixed += int(np.sum(~np.all(rewards == rewards[:, :1], axis=1)))
            if mixed >= m:
                break
        rewards_all = np.concatenate(rewards_all)
        is_mixed = ~np.all(rewards_all == rewards_all[:, :1], axis=1)
        # Mixed groups first, then the rest, each in draw order (stable sort).
        keep = np.argsort(~is_mixed, kind="stable")[:m]
        rows = (keep[:, None] * k + np.arange(k)[None]).reshape(-1)
        batch = {f: np.concatenate([p[f] for p in parts])[rows] for f in fields}
        used = drawn[: len(rewards_all)]
        return used[keep], batch, rewards_all[keep], used, rewards_all, len(parts)

    def rl_step(self, state, step: int) -> tuple[dict[str, Any], dict[str, float]]:
        c, rl = self.config, self.config.rl
        m, k = rl.batch_size, rl.num_rollouts
        k_sel, k_roll, k_upd = jax.random.split(self.step_key(state, step), 3)
        times = {}
        model = nnx.merge(self.sharded.graphdef, state["model"])
        beliefs = self.beliefs(state)

        if c.selection.dynamic_sampling_rounds:
            t0 = time.perf_counter()
            idx, fields, rewards, seen, seen_rewards, rounds = self._dynamic_sampling(
                model, k_sel, k_roll
            )
            times["time_select"] = 0.0  # uniform draws; the cost is in the extra rollouts
            times["time_rollout"] = time.perf_counter() - t0
            alpha_sel, beta_sel = jax.device_get((beliefs.alpha[idx], beliefs.beta[idx]))
        else:
            t0 = time.perf_counter()
            cached = state["scores"] if self.scorer.deterministic else None
            idx = select_batch(
                k_sel, beliefs, m, c.selection.num_candidates, self.scorer, scores=cached
            )
            idx = np.asarray(idx)
            # Gather the M selected beliefs on device: copying the whole pool to the host
            # every step would cost O(N).
            alpha_sel, beta_sel = jax.device_get((beliefs.alpha[idx], beliefs.beta[idx]))
            times["time_select"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            rollout, rewards = self._rollout(model, idx, k_roll)
            fields = {
                "sequences": rollout.sequences,
                "sequence_mask": rollout.sequence_mask,
                "sequence_logprobs": rollout.sequence_logprobs,
                "loss_mask": rollout.loss_mask,
            }
            seen, seen_rewards, rounds = idx, rewards, 1
            times["time_rollout"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        advantages = np.asarray(
            grpo_lib.group_advantages(jnp.asarray(rewards), normalize_std=self.grpo.normalize_std)
        ).reshape(-1)
        batch = {
            "sequences": fields["sequences"],
            "sequence_mask": fields["sequence_mask"],
            "old_logprobs": fields["sequence_logprobs"],
            "advantages": jnp.asarray(advantages),
            "loss_mask": fields["loss_mask"],
        }
        new_model, new_opt, upd = self.steps.grpo_step(state["model"], state["opt"], batch, k_upd)
        jax.block_until_ready(new_model)
        times["time_update"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        # Beliefs learn from every group rolled out (for dynamic sampling: all rounds).
        successes = successes_from_rewards(
            seen_rewards, c.selection.success_rule, c.selection.success_threshold
        )
        sel_idx, sel_s = validate_update(self.num_items, seen, successes, k, c.selection.decay)
        beliefs = apply_update(
            beliefs, jnp.asarray(sel_idx), jnp.asarray(sel_s), k, float(c.selection.decay)
        )
        scores = state["scores"]
        if self.scorer.deterministic:
            scores = rescore(scores, beliefs, sel_idx, self.scorer)
        times["time_belief_update"] = time.perf_counter() - t0

        s = successes_from_rewards(rewards, c.selection.success_rule, c.selection.success_threshold)
        metrics = {
            "reward_mean": float(rewards.mean()),
            "train_accuracy": float(np.mean(rewards >= c.selection.success_threshold)),
            "zero_var_frac": float(np.mean(np.all(rewards == rewards[:, :1], axis=1))),
            "adv_abs_mean": float(np.abs(advantages).mean()),
            "adv_std": float(advantages.std()),
            "sel_mean_phibar": float(np.mean(alpha_sel / (alpha_sel + beta_sel))),
            "sel_mean_evidence": float(np.mean(alpha_sel + beta_sel)),
            "sel_success_rate": float(np.mean(s) / k),
            "completion_len": float(
                np.mean(np.asarray(fields["sequence_mask"])[:, self.prompt_len :].sum(-1))
            ),
            "rollouts": float(len(seen) * k),  # generated this step (incl. discarded)
            "sampling_rounds": float(rounds),
            **{kk: float(v) for kk, v in jax.device_get(upd).items()},
            **times,
        }
        new_state = {
            **state,
            "model": new_model,
            "opt": new_opt,
            "alpha": beliefs.alpha,
            "beta": beliefs.beta,
            "scores": scores,
        }
        return new_state, metrics

    def evaluate(self, state, step: int) -> dict[str, Any]:
        c = self.config
        key = jax.random.fold_in(jax.random.wrap_key_data(state["rng"]), EVAL_KEY_OFFSET + step)
        return evaluate(
            nnx.merge(self.sharded.graphdef, state["model"]),
            self.tokenizer,
            self.task,
            self.test,
            key,
            prompt_len=self.prompt_len,
            max_new_tokens=c.rl.max_new_tokens,
            num_samples=c.eval.num_samples,
            temperature=c.eval.temperature,
            top_p=c.eval.top_p,
            batch_multiple=self.batch_multiple,
            mesh=self.mesh,
            success_threshold=c.selection.success_threshold,
        )


# -------------------------------------------------------------------------------- the loop


def _abstract(tree):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


def _write_atomic(path: Path, text: str) -> None:
    """Writes text so that a kill -9 leaves the old file or the new one, never a torn one (a
    torn summary.json would stop the next run from resuming)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _warm_start_part(state: dict[str, Any]) -> dict[str, Any]:
    """The leaves the warm start determines (beliefs and scores depend on the RL settings)."""
    return {k: state[k] for k in ("model", "opt", "rng", "step")}


def _load_warm_start(cache_dir: Path, warm_steps: int, state) -> dict[str, Any] | None:
    """`state` with its warm-start leaves replaced by the cached ones, or None (no entry)."""
    if not (cache_dir / "checkpoints").exists():
        return None
    with Checkpointer(cache_dir / "checkpoints", max_to_keep=1) as cache:
        cached = cache.restore_latest(_abstract(_warm_start_part(state)))
    if cached is None or cached[0] != warm_steps:
        return None
    # Beliefs and scores stay this run's prior: the warm start does not touch them.
    return {**state, **cached[1]}


def _save_warm_start(cache_dir: Path, step: int, state) -> None:
    """Adds the warm-started state to the shared cache (first writer wins; never fatal)."""
    if (cache_dir / "checkpoints").exists():
        return
    tmp = cache_dir.with_name(f"{cache_dir.name}.tmp-{time.time_ns()}")
    try:
        with Checkpointer(tmp / "checkpoints", max_to_keep=1) as cache:
            cache.save(step, _warm_start_part(state), {"step": step}, force=True)
        tmp.rename(cache_dir)  # atomic: readers see a whole cache entry or none
    except OSError as e:  # another run won the race, or the disk is read-only
        shutil.rmtree(tmp, ignore_errors=True)
        print(f"warm-start cache not written ({e})", flush=True)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | Path) -> dict[str, Any]:
    """Runs (or resumes) the configured training and returns the final summary metrics.

    Writes under workdir: config.json, metrics.jsonl + tb/ (TensorBoard), checkpoints/, data/
    (the prompt pool), learning_curves.png, summary.json and final_beliefs.npz (alpha, beta per
    prompt). With warmstart.cache_dir set, the warm-started policy is shared through that cache.
    """
    run = Run(config, workdir)
    c = config
    _write_atomic(run.workdir / "config.json", c.to_json_best_effort(indent=1, sort_keys=True))
    writer = MetricWriter(run.workdir)
    deferred = DeferredWriter(writer)
    ckpt = Checkpointer(
        run.workdir / "checkpoints",
        max_to_keep=c.checkpoint.max_to_keep,
        save_interval_steps=c.checkpoint.every,
    )
    state = run.initial_state()
    restored = ckpt.restore_latest(_abstract(state))
    start = 0
    cache_dir = run.warm_start_cache()
    if restored is not None:
        start, state, _ = restored
        print(f"resumed from the checkpoint of step {start} in {ckpt.directory}", flush=True)
    elif cache_dir is not None:
        cached = _load_warm_start(cache_dir, run.warm_steps, state)
        if cached is not None:
            start, state = run.warm_steps, cached
            print(f"warm-started policy loaded from {cache_dir}", flush=True)

    summary_path = run.workdir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() and start else {}
    if cache_dir is not None:
        summary["warm_start_cache"] = str(cache_dir)
    wall0 = time.perf_counter()
    split = {"time_select": 0.0, "time_rollout": 0.0, "time_update": 0.0, "time_belief_update": 0.0}
    bar = progress(run.total_steps, desc="train", initial=start)

    def eval_and_log(step, tag):
        deferred.flush()
        ev = run.evaluate(state, step)
        ok = ev["successes"]
        k = c.eval.num_samples
        metrics = {
            "eval_accuracy": ev["accuracy"],
            "eval_reward": ev["reward"],
            "eval_spread": float(np.mean((ok > 0) & (ok < k))),
        }
        writer.write_scalars(step, metrics)
        summary[f"eval_accuracy_{tag}"] = ev["accuracy"]
        summary[f"eval_spread_{tag}"] = metrics["eval_spread"]
        bar.set_postfix(acc=f"{ev['accuracy']:.3f}")
        return metrics

    for step in range(start, run.total_steps):
        if step == run.warm_steps:
            # Decided by the step alone, never by summary.json: a state at step W always holds
            # the warm start's optimizer (a summary can be newer than the checkpoint restored).
            if run.warm_steps:  # fresh optimizer moments for RL
                state = {**state, "opt": run.steps.init_rl_opt(state["model"])}
            eval_and_log(step, "before_rl")  # deterministic: a rerun rewrites the same values
        if step < run.warm_steps:
            state, metrics = run.warm_start_step(state, step)
        else:
            state, metrics = run.rl_step(state, step)
            for key in split:
                split[key] += metrics[key]
            rl_index = step - run.warm_steps + 1
            if rl_index % c.eval.every == 0 and step + 1 < run.total_steps:
                eval_and_log(step + 1, "latest")
        state = {**state, "step": jax.device_put(jnp.int32(step + 1), state["step"].sharding)}
        if step + 1 == run.warm_steps and cache_dir is not None:
            _save_warm_start(cache_dir, step + 1, state)
            # Train on from the cache's entry, not this run's own: if runs of one seed warm
            # started at once and their results differ (non-deterministic GPU kernels), every
            # run still starts RL from the one policy that won the race, so they stay paired.
            state = _load_warm_start(cache_dir, run.warm_steps, state) or state
        deferred.push(step, metrics)
        bar.update(1)
        if ckpt.should_save(step + 1) or step + 1 == run.total_steps:
            deferred.flush()  # metrics of every step before the checkpoint are on disk
            writer.flush()
            _write_atomic(summary_path, json.dumps(summary, indent=1))
            ckpt.save(step + 1, state, {"step": step + 1}, force=step + 1 == run.total_steps)
    bar.close()
    if run.warm_steps == run.total_steps:
        eval_and_log(run.total_steps, "before_rl")
    eval_and_log(run.total_steps, "after")
    deferred.flush()
    writer.close()
    ckpt.close()

    rows = read_metrics_jsonl(run.workdir / "metrics.jsonl")
    beliefs = run.beliefs(state)
    alpha = np.asarray(beliefs.alpha)[: run.num_items]
    beta = np.asarray(beliefs.beta)[: run.num_items]
    np.savez(run.workdir / "final_beliefs.npz", alpha=alpha, beta=beta)
    n = alpha + beta
    prior = c.selection.alpha0 + c.selection.beta0
    summary.update(
        {
            "steps_warm_start": run.warm_steps,
            "steps_rl": c.rl.steps,
            "rollouts": int(sum(r["rollouts"] for r in rows if "rollouts" in r)),
            "prompts_seen": int(np.sum(n > prior)),
            "scorer": run.scorer.name,
            "wall_time_this_session_s": time.perf_counter() - wall0,
            **{f"total_{k}_s": v for k, v in split.items()},
        }
    )
    _write_atomic(summary_path, json.dumps(summary, indent=1))
    try:
        plot_learning_curves(
            run.workdir / "metrics.jsonl",
            run.workdir / "learning_curves.png",
            keys=["eval_accuracy", "train_accuracy", "zero_var_frac", "sel_mean_evidence"],
        )
    except Exception as e:  # a missing curve must not lose a finished run
        print(f"learning-curve plot failed: {e}", flush=True)
    return summary
