"""The jitted functions of a run: TrainState in, TrainState (and metrics) out.

Built once per run by `make_step_fns` with explicit in/out shardings and the state donated:

    select(state)        -> (indices [M], rollout key)       selection over the beliefs
    draw_uniform(state)  -> (indices [R*M], R round keys)    DAPO dynamic sampling's draws
    warm_indices(state)  -> indices [B_w]                    the warm start's batch
    sft_step(state, b)   -> (state, metrics)                 one supervised step
    start_rl(state)      -> state                            fresh RL optimizer (+ reference)
    fit_prior(state, m)  -> state                            every belief at a prior of mean m
    learn(state, b)      -> (state, metrics)                 THE learner step of RL (below)
    eval_key(state)      -> key                              held-out evaluation's key

`learn` is one XLA program: group advantages, the GRPO epochs over shuffled minibatches as a
`lax.scan`, the belief update of every rolled-out prompt, the O(M) rescore of a deterministic
scorer's cache and the step's metrics. Every key is derived inside from (state.rng, state.step)
(big_vision's update_fn), so no key crosses from the host.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from insight_jax import sharding as shd
from insight_jax.models.transformer import token_logprobs
from insight_jax.rl.grpo import GRPOConfig, group_advantages, grpo_objective, minibatch_indices
from insight_jax.rl.state import TrainState
from insight_jax.selection import (
    Scorer,
    Shard,
    Skip,
    apply_update,
    draw_candidates,
    rescore,
    select_batch,
)

EVAL_KEY_OFFSET = 1 << 30  # eval keys live apart from step keys: fold_in(key, offset + step)

# The learner batch: "rollout" (a Rollout of M*K rows, split over the batch mesh axes) and
# these per-prompt fields, replicated (M or R*M rows: tiny).
PROMPT_FIELDS = ("rewards", "successes", "indices", "seen_indices", "seen_successes", "seen_valid")


@dataclasses.dataclass(frozen=True)
class StepSettings:
    """The static settings the jitted functions close over (all from the config)."""

    batch_size: int  # M
    num_candidates: int  # Mhat
    num_rollouts: int  # K
    num_items: int  # N, the RL pool
    num_train: int  # the warm start's pool
    warm_batch_size: int
    dynamic_sampling_rounds: int  # R (0: off)
    decay: float  # lambda
    skip: Skip | None  # predicted-zero-variance skipping (selection.skip_threshold; None: off)
    success_threshold: float  # for train_accuracy
    temperature: float  # of the rollouts, for the log-probs of the ratio
    grpo: GRPOConfig


@dataclasses.dataclass(frozen=True)
class StepFns:
    select: Callable[[TrainState], tuple[jax.Array, jax.Array]]
    draw_uniform: Callable[[TrainState], tuple[jax.Array, jax.Array]]
    warm_indices: Callable[[TrainState], jax.Array]
    sft_step: Callable[[TrainState, dict], tuple[TrainState, dict]]
    start_rl: Callable[[TrainState], TrainState]
    fit_prior: Callable[[TrainState, jax.Array], TrainState]
    learn: Callable[[TrainState, dict], tuple[TrainState, dict]]
    eval_key: Callable[[TrainState], jax.Array]


# ------------------------------------------------------------------------------- pure pieces


def sft_loss(params, graphdef, tokens, mask, loss_mask):
    """Mean NLL of the completion tokens: -sum(loss_mask * log p) / sum(loss_mask)."""
    lp = token_logprobs(nnx.merge(graphdef, params), tokens, mask)
    return -jnp.sum(jnp.where(loss_mask, lp, 0.0)) / jnp.maximum(jnp.sum(loss_mask), 1)


def grpo_minibatch_loss(
    params, graphdef, mb, grpo: GRPOConfig, temperature: float, shard_rows=None
):
    """GRPO objective of one minibatch (grpo.grpo_objective) at the current parameters;
    `shard_rows` keeps the log-prob chunks split over the batch axes (token_logprobs)."""
    need_entropy = grpo.entropy_coef != 0.0
    out = token_logprobs(
        nnx.merge(graphdef, params),
        mb["sequences"],
        mb["sequence_mask"],
        temperature=temperature,
        return_entropy=need_entropy,
        shard_rows=shard_rows,
    )
    lp, ent = out if need_entropy else (out, None)
    return grpo_objective(
        lp,
        mb["old_logprobs"],
        mb["advantages"],
        mb["loss_mask"],
        grpo,
        ref_logprobs=mb.get("ref_logprobs"),
        entropy=ent,
    )


# ------------------------------------------------------------------------------- builder


def opt_state_shardings(optimizer, param_shardings, replicated):
    """Shardings of `optimizer.init(params)`: every sub-tree shaped like the parameters (Adam's
    mu and nu) is laid out like them, everything else (step counters) is replicated."""
    params_def = jax.tree.structure(param_shardings)
    abstract_params = jax.tree.map(lambda s: jax.ShapeDtypeStruct((), jnp.float32), param_shardings)
    abstract = jax.eval_shape(optimizer.init, abstract_params)

    def is_params(x):
        return jax.tree.structure(x) == params_def

    return jax.tree.map(
        lambda x: param_shardings if is_params(x) else replicated, abstract, is_leaf=is_params
    )


def train_state_shardings(
    abstract_state: TrainState,
    model_shardings: nnx.State,
    optimizer: optax.GradientTransformation,
    mesh: jax.sharding.Mesh,
    pool_sharding: jax.sharding.NamedSharding,
) -> TrainState:
    """The layout of a TrainState: the model (and its reference copy, if any) as
    `model_shardings`, the optimizer state like the parameters, beliefs and scores split over
    the pool, everything else replicated."""
    repl = shd.replicated(mesh)
    state_sh = jax.tree.map(lambda _: repl, abstract_state)
    return state_sh.replace(
        model=model_shardings,
        opt=opt_state_shardings(optimizer, model_shardings, repl),
        beliefs=state_sh.beliefs.replace(alpha=pool_sharding, beta=pool_sharding),
        scores=pool_sharding,
        ref_model=None if abstract_state.ref_model is None else model_shardings,
    )


def make_step_fns(
    graphdef: nnx.GraphDef,
    state_shardings: TrainState,
    mesh: jax.sharding.Mesh,
    rules: shd.LogicalRules,
    sft_optimizer: optax.GradientTransformation,
    rl_optimizer: optax.GradientTransformation,
    scorer: Scorer,
    pool_shard: Shard | None,
    s: StepSettings,
) -> StepFns:
    """Jits the step functions of one run (module docstring) once, with explicit shardings."""
    data = shd.data_sharding(mesh, rules)
    repl = shd.replicated(mesh)
    grpo = s.grpo
    st_sh = state_shardings

    def shard_rows(x):
        return jax.lax.with_sharding_constraint(x, data)

    def apply(optimizer, params, opt_state, grads):
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    def select(state):
        k_sel, k_roll, _ = jax.random.split(state.key(), 3)
        cached = state.scores if scorer.deterministic else None
        idx = select_batch(
            k_sel,
            state.beliefs,
            s.batch_size,
            s.num_candidates,
            scorer,
            scores=cached,
            shard=pool_shard,
            skip=s.skip,
        )
        return idx, k_roll

    def draw_uniform(state):
        # One uniform draw without replacement for all rounds: no prompt twice in a step.
        k_sel, k_roll, _ = jax.random.split(state.key(), 3)
        rounds = s.dynamic_sampling_rounds
        drawn = draw_candidates(k_sel, s.num_items, rounds * s.batch_size)
        # A tuple of R keys (not one [R] array): taking one needs no host-side index.
        return drawn, tuple(jax.random.fold_in(k_roll, r) for r in range(rounds))

    def warm_indices(state):
        return jax.random.choice(
            state.key(), s.num_train, (s.warm_batch_size,), replace=False
        ).astype(jnp.int32)

    def sft_step(state, batch):
        loss, grads = jax.value_and_grad(sft_loss)(
            state.model, graphdef, batch["tokens"], batch["mask"], batch["loss_mask"]
        )
        params, opt = apply(sft_optimizer, state.model, state.opt, grads)
        metrics = {"sft_loss": loss, "grad_norm": optax.tree.norm(grads)}
        return state.replace(model=params, opt=opt, step=state.step + 1), metrics

    def start_rl(state):
        # Fresh Adam moments for RL; the reference policy of the KL term is the policy here
        # (a copy: the state is donated, and one buffer cannot back two leaves).
        ref = jax.tree.map(jnp.copy, state.model) if grpo.kl_coef > 0 else None
        return state.replace(opt=rl_optimizer.init(state.model), ref_model=ref)

    def fit_prior(state, mean):
        """Every prompt at Beta(mean n0, (1 - mean) n0), n0 = alpha0 + beta0 (the config's
        prior strength), and a deterministic scorer's cache rescored on it."""
        b = state.beliefs
        n0 = b.alpha0 + b.beta0
        beliefs = b.replace(
            alpha=jnp.full_like(b.alpha, mean * n0), beta=jnp.full_like(b.beta, (1 - mean) * n0)
        )
        scores = scorer(None, beliefs.alpha, beliefs.beta) if scorer.deterministic else state.scores
        return state.replace(beliefs=beliefs, scores=scores)

    def reference_logprobs(ref_params, ro):
        """log pi_ref of the rollout's tokens, computed once per batch (the reference never
        changes) in num_minibatches chunks, so peak memory is one minibatch's logits."""
        chunks = grpo.num_minibatches
        split = lambda x: x.reshape(chunks, x.shape[0] // chunks, *x.shape[1:])
        ref = nnx.merge(graphdef, ref_params)
        lp = jax.lax.map(
            lambda c: token_logprobs(ref, c[0], c[1], temperature=s.temperature),
            (split(ro.sequences), split(ro.sequence_mask)),
        )
        return jax.lax.stop_gradient(lp.reshape(ro.sequences.shape[0], -1))

    def learn(state, batch):
        _, _, k_upd = jax.random.split(state.key(), 3)
        rewards = batch["rewards"]  # [M, K]
        rows = rewards.shape[0] * rewards.shape[1]
        adv = group_advantages(rewards, normalize_std=grpo.normalize_std, eps=grpo.adv_eps)
        adv = adv.reshape(-1)
        ro = batch["rollout"]
        data_fields = {
            "sequences": ro.sequences,
            "sequence_mask": ro.sequence_mask,
            "old_logprobs": ro.sequence_logprobs,
            "loss_mask": ro.loss_mask,
            "advantages": jax.lax.with_sharding_constraint(adv, data),
        }
        if grpo.kl_coef > 0:
            data_fields["ref_logprobs"] = reference_logprobs(state.ref_model, ro)
        perms = jnp.concatenate(
            [
                minibatch_indices(jax.random.fold_in(k_upd, epoch), rows, grpo.num_minibatches)
                for epoch in range(grpo.num_ppo_epochs)
            ]
        )  # [epochs * minibatches, rows / minibatches]

        def minibatch(carry, take):
            params, opt = carry
            # The gather of a replicated permutation would come out replicated: split the
            # minibatch over the batch axes again, so each device computes only its rows.
            mb = jax.lax.with_sharding_constraint(
                jax.tree.map(lambda x: x[take], data_fields), data
            )
            (_, aux), grads = jax.value_and_grad(grpo_minibatch_loss, has_aux=True)(
                params, graphdef, mb, grpo, s.temperature, shard_rows
            )
            params, opt = apply(rl_optimizer, params, opt, grads)
            return (params, opt), {**aux, "grad_norm": optax.tree.norm(grads)}

        (params, opt), per_mb = jax.lax.scan(minibatch, (state.model, state.opt), perms)

        beliefs = state.beliefs
        idx = batch["indices"]
        a_sel, b_sel = beliefs.alpha[idx], beliefs.beta[idx]  # before the update
        beliefs = apply_update(
            beliefs,
            batch["seen_indices"],
            batch["seen_successes"],
            s.num_rollouts,
            s.decay,
            valid=batch["seen_valid"],
        )
        scores = state.scores
        if scorer.deterministic:  # only the rolled-out prompts' scores change: O(M)
            scores = rescore(scores, beliefs, batch["seen_indices"], scorer, shard=pool_shard)

        constant = jnp.all(rewards == rewards[:, :1], axis=1)
        metrics = {
            **jax.tree.map(jnp.mean, per_mb),
            "reward_mean": jnp.mean(rewards),
            "train_accuracy": jnp.mean(rewards >= s.success_threshold),
            "zero_var_frac": jnp.mean(constant),
            "adv_abs_mean": jnp.mean(jnp.abs(adv)),
            "adv_std": jnp.std(adv),
            "sel_mean_phibar": jnp.mean(a_sel / (a_sel + b_sel)),
            "sel_mean_evidence": jnp.mean(a_sel + b_sel),
            "sel_success_rate": jnp.mean(batch["successes"]) / s.num_rollouts,
            "completion_len": jnp.mean(ro.lengths),
            "prompt_len": jnp.mean(jnp.sum(ro.sequence_mask[:, : ro.prompt_len], axis=-1)),
        }
        new = state.replace(
            model=params, opt=opt, beliefs=beliefs, scores=scores, step=state.step + 1
        )
        return new, metrics

    def eval_key(state):
        base = jax.random.wrap_key_data(state.rng)
        return jax.random.fold_in(base, EVAL_KEY_OFFSET + state.step)

    learn_in = {"rollout": data} | {f: repl for f in PROMPT_FIELDS}
    sft_in = {"tokens": data, "mask": data, "loss_mask": data}
    return StepFns(
        select=jax.jit(select, in_shardings=(st_sh,), out_shardings=(repl, repl)),
        draw_uniform=jax.jit(draw_uniform, in_shardings=(st_sh,), out_shardings=(repl, repl)),
        warm_indices=jax.jit(warm_indices, in_shardings=(st_sh,), out_shardings=repl),
        sft_step=jax.jit(
            sft_step,
            in_shardings=(st_sh, sft_in),
            out_shardings=(st_sh, repl),
            donate_argnums=(0,),
        ),
        start_rl=jax.jit(start_rl, in_shardings=(st_sh,), out_shardings=st_sh, donate_argnums=0),
        fit_prior=jax.jit(
            fit_prior, in_shardings=(st_sh, repl), out_shardings=st_sh, donate_argnums=0
        ),
        learn=jax.jit(
            learn,
            in_shardings=(st_sh, learn_in),
            out_shardings=(st_sh, repl),
            donate_argnums=(0,),
        ),
        eval_key=jax.jit(eval_key, in_shardings=(st_sh,), out_shardings=repl),
    )
