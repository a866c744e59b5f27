"""GRPO math: group-relative advantages, the clipped policy loss, KL and entropy terms.

Pure, jittable functions in the style of tunix `rl/algo_core.py`; the formula is in each
docstring and tests/test_grpo.py checks hand-computed values. Shapes:

    M prompts x K rollouts per prompt = B sequences, T generated tokens per sequence;
    rewards [M, K] -> advantages [M, K] -> flattened to [B] (row-major, B = M*K);
    logprobs / old_logprobs / ref_logprobs / entropy / mask: [B, T]  (mask: 1 = real token).

GRPOConfig's hyper-parameters have no defaults: a run's values come from its config (one
source: insight_jax/rl/base_config.py, which also says where they differ from the paper's
settings). The keyword defaults of the pure functions below are the common choices (clip
0.2 / 0.28, k3, std-normalised advantages) for calling them on their own.

Aggregations and KL estimators are registered by name, so a config can swap them for an ablation
(`get_aggregation`, `get_kl_estimator`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

Aggregation = Callable[[jax.Array, jax.Array], jax.Array]
KLEstimator = Callable[[jax.Array, jax.Array], jax.Array]


@dataclasses.dataclass(frozen=True)
class GRPOConfig:
    """GRPO hyperparameters. Frozen (hashable), so it can be a static argument of jax.jit."""

    clip_low: float  # ratio lower bound 1 - clip_low
    clip_high: float  # ratio upper bound 1 + clip_high (DAPO clip-higher)
    aggregation: str  # see AGGREGATIONS
    kl_coef: float  # weight of KL(pi || pi_ref); 0: no reference policy is kept
    kl_kind: str  # see KL_ESTIMATORS
    entropy_coef: float  # loss -= entropy_coef * entropy
    normalize_std: bool  # False = Dr.GRPO (no division by the group std)
    num_minibatches: int  # optimizer steps per PPO epoch
    num_ppo_epochs: int  # passes over the rollout batch
    adv_eps: float = 1e-6  # added to the group std (a numerical guard, not a hyper-parameter)

    def __post_init__(self):
        if not (0.0 <= self.clip_low < 1.0 and self.clip_high >= 0.0):
            raise ValueError(f"need 0 <= clip_low < 1 and clip_high >= 0, got {self}")
        get_aggregation(self.aggregation)  # fail at config time, not inside jit
        get_kl_estimator(self.kl_kind)
        if self.num_minibatches < 1 or self.num_ppo_epochs < 1:
            raise ValueError("num_minibatches and num_ppo_epochs must be >= 1")


# ----------------------------------------------------------------------------------- advantages


def group_advantages(
    rewards: jax.Array, *, normalize_std: bool = True, eps: float = 1e-6
) -> jax.Array:
    """Group-relative advantages of K rollouts per prompt.

        A_ik = (r_ik - mean_k r_ik) / (std_k r_ik + eps)     (normalize_std=True, GRPO)
        A_ik =  r_ik - mean_k r_ik                           (normalize_std=False, Dr.GRPO)

    std is the population std (divide by K, numpy's ddof=0), as in verl/tunix. A group whose K
    rewards are all equal gets exactly 0 (not a rounding residue of r - mean): it carries no
    learning signal, and exact zeros keep its gradient exactly zero.

    Args:
      rewards: [M, K] rewards, one row per prompt.
    Returns:
      [M, K] advantages (float32 or the rewards' float dtype).
    """
    r = jnp.asarray(rewards)
    r = r.astype(jnp.result_type(r.dtype, jnp.float32))
    centred = r - jnp.mean(r, axis=-1, keepdims=True)
    if normalize_std:
        centred = centred / (jnp.std(r, axis=-1, keepdims=True) + eps)
    constant = jnp.max(r, axis=-1, keepdims=True) == jnp.min(r, axis=-1, keepdims=True)
    return jnp.where(constant, 0.0, centred)


# --------------------------------------------------------------------------------- aggregation

AGGREGATIONS: dict[str, Aggregation] = {}


def register_aggregation(name: str) -> Callable[[Aggregation], Aggregation]:
    def deco(fn: Aggregation) -> Aggregation:
        AGGREGATIONS[name] = fn
        return fn

    return deco


def get_aggregation(name: str) -> Aggregation:
    if name not in AGGREGATIONS:
        raise KeyError(f"unknown aggregation {name!r}; known: {sorted(AGGREGATIONS)}")
    return AGGREGATIONS[name]


@register_aggregation("token_mean")
def token_mean(values: jax.Array, mask: jax.Array) -> jax.Array:
    """sum_{b,t} m_bt v_bt / sum_{b,t} m_bt: every valid token in the batch weighs the same
    (DAPO). Returns 0 if no token is valid."""
    m = mask.astype(values.dtype)
    return jnp.sum(values * m) / jnp.maximum(jnp.sum(m), 1.0)


@register_aggregation("sequence_mean")
def sequence_mean(values: jax.Array, mask: jax.Array) -> jax.Array:
    """mean over sequences of (sum_t m_bt v_bt / sum_t m_bt): every sequence weighs the same
    (original GRPO). Sequences with no valid token (padding rows) are left out of the mean."""
    m = mask.astype(values.dtype)
    lengths = jnp.sum(m, axis=-1)
    per_seq = jnp.sum(values * m, axis=-1) / jnp.maximum(lengths, 1.0)
    has_tokens = (lengths > 0).astype(values.dtype)
    return jnp.sum(per_seq * has_tokens) / jnp.maximum(jnp.sum(has_tokens), 1.0)


@register_aggregation("token_sum_norm")
def token_sum_norm(values: jax.Array, mask: jax.Array) -> jax.Array:
    """sum_{b,t} m_bt v_bt / (B * T): a constant normaliser, no length bias (Dr.GRPO), with T the
    padded generation length (the budget)."""
    m = mask.astype(values.dtype)
    return jnp.sum(values * m) / (values.shape[0] * values.shape[1])


# --------------------------------------------------------------------------------- policy loss


def policy_loss(
    logprobs: jax.Array,
    old_logprobs: jax.Array,
    advantages: jax.Array,
    mask: jax.Array,
    *,
    clip_low: float = 0.2,
    clip_high: float = 0.28,
    aggregation: str = "token_mean",
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """PPO/GRPO clipped surrogate with asymmetric clip (clip-higher).

        rho_bt  = exp(logp_bt - old_logp_bt)
        l_bt    = -min(rho_bt A_b, clip(rho_bt, 1 - clip_low, 1 + clip_high) A_b)
        loss    = aggregation(l, mask)

    The gradient is zero where the clipped branch is the minimum: A > 0 and rho > 1 + clip_high,
    or A < 0 and rho < 1 - clip_low.

    Args:
      logprobs: [B, T] log pi_theta(y_t | ...), differentiated.
      old_logprobs: [B, T] log-probs of the policy that sampled (treated as constants).
      advantages: [B] one advantage per sequence (broadcast over its tokens).
      mask: [B, T] 1 for generated tokens, 0 for prompt/padding.
    Returns:
      (loss, aux) with aux (token means over valid tokens, no gradient):
        clip_frac_low / clip_frac_high: fraction of tokens where the lower / upper clip is active,
        approx_kl: KL(old || new) estimated by k3, mean of (rho - 1) - log rho,
        ratio_mean: mean of rho.
    """
    old_logprobs = jax.lax.stop_gradient(old_logprobs)
    advantages = jax.lax.stop_gradient(advantages)[:, None].astype(logprobs.dtype)
    valid = mask.astype(bool)
    # Padding positions may hold -inf log-probs; zero their log-ratio so no NaN leaks into sums.
    log_ratio = jnp.where(valid, logprobs - old_logprobs, 0.0)
    ratio = jnp.exp(log_ratio)
    unclipped = ratio * advantages
    clipped = jnp.clip(ratio, 1.0 - clip_low, 1.0 + clip_high) * advantages
    per_token = -jnp.minimum(unclipped, clipped)
    loss = get_aggregation(aggregation)(per_token, mask)

    r = jax.lax.stop_gradient(ratio)
    a = jax.lax.stop_gradient(advantages)
    dt = logprobs.dtype
    aux = {
        "clip_frac_low": token_mean(((r < 1.0 - clip_low) & (a < 0)).astype(dt), mask),
        "clip_frac_high": token_mean(((r > 1.0 + clip_high) & (a > 0)).astype(dt), mask),
        "approx_kl": token_mean((r - 1.0) - jax.lax.stop_gradient(log_ratio), mask),
        "ratio_mean": token_mean(r, mask),
    }
    return loss, aux


# ---------------------------------------------------------------------------- KL and entropy

KL_ESTIMATORS: dict[str, KLEstimator] = {}


def register_kl_estimator(name: str) -> Callable[[KLEstimator], KLEstimator]:
    def deco(fn: KLEstimator) -> KLEstimator:
        KL_ESTIMATORS[name] = fn
        return fn

    return deco


def get_kl_estimator(name: str) -> KLEstimator:
    if name not in KL_ESTIMATORS:
        raise KeyError(f"unknown KL estimator {name!r}; known: {sorted(KL_ESTIMATORS)}")
    return KL_ESTIMATORS[name]


# Per-token estimators of KL(pi_theta || pi_ref) from samples of pi_theta (Schulman's k1/k2/k3),
# with d = ref_logp - logp.
@register_kl_estimator("k1")
def kl_k1(logprobs: jax.Array, ref_logprobs: jax.Array) -> jax.Array:
    """k1 = -d = logp - ref_logp (unbiased, can be negative)."""
    return logprobs - ref_logprobs


@register_kl_estimator("k2")
def kl_k2(logprobs: jax.Array, ref_logprobs: jax.Array) -> jax.Array:
    """k2 = d^2 / 2 (biased, >= 0)."""
    return 0.5 * jnp.square(ref_logprobs - logprobs)


@register_kl_estimator("k3")
def kl_k3(logprobs: jax.Array, ref_logprobs: jax.Array) -> jax.Array:
    """k3 = exp(d) - d - 1 (unbiased, >= 0; GRPO's choice)."""
    d = ref_logprobs - logprobs
    return jnp.expm1(d) - d


def kl_penalty(
    logprobs: jax.Array,
    ref_logprobs: jax.Array,
    mask: jax.Array,
    kind: str = "k3",
    *,
    aggregation: str = "token_mean",
) -> jax.Array:
    """aggregation(k(logp, ref_logp), mask), k from KL_ESTIMATORS (default k3:
    exp(ref - logp) - (ref - logp) - 1). ref_logprobs are constants."""
    ref_logprobs = jax.lax.stop_gradient(ref_logprobs)
    valid = mask.astype(bool)
    # Pin padding to logp = ref so a -inf there cannot turn the masked sum into NaN.
    logprobs = jnp.where(valid, logprobs, 0.0)
    ref_logprobs = jnp.where(valid, ref_logprobs, 0.0)
    per_token = get_kl_estimator(kind)(logprobs, ref_logprobs)
    return get_aggregation(aggregation)(per_token, mask)


def entropy_bonus(
    entropy: jax.Array, mask: jax.Array, *, aggregation: str = "token_mean"
) -> jax.Array:
    """aggregation(H_bt, mask), H_bt = -sum_v pi(v) log pi(v) the per-token policy entropy."""
    return get_aggregation(aggregation)(jnp.where(mask.astype(bool), entropy, 0.0), mask)


# ------------------------------------------------------------------------------- the objective


def grpo_objective(
    logprobs: jax.Array,
    old_logprobs: jax.Array,
    advantages: jax.Array,
    mask: jax.Array,
    config: GRPOConfig,
    *,
    ref_logprobs: jax.Array | None = None,
    entropy: jax.Array | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """loss = policy_loss + kl_coef * kl_penalty - entropy_coef * entropy_bonus.

    All three terms use config.aggregation. The KL term needs ref_logprobs when kl_coef != 0 and
    the entropy term needs entropy when entropy_coef != 0 (a ValueError otherwise, at trace time).
    Jit with config static: `jax.jit(grpo_objective, static_argnames="config")`.

    Returns:
      (loss, aux): aux holds policy_loss, the policy_loss aux (clip fractions, approx_kl,
      ratio_mean), and kl / entropy when those terms are on; all without gradient.
    """
    agg = config.aggregation
    pg_loss, aux = policy_loss(
        logprobs,
        old_logprobs,
        advantages,
        mask,
        clip_low=config.clip_low,
        clip_high=config.clip_high,
        aggregation=agg,
    )
    loss = pg_loss
    aux = {"policy_loss": pg_loss, **aux}
    if config.kl_coef != 0.0:
        if ref_logprobs is None:
            raise ValueError("kl_coef != 0 needs ref_logprobs")
        kl = kl_penalty(logprobs, ref_logprobs, mask, config.kl_kind, aggregation=agg)
        loss = loss + config.kl_coef * kl
        aux["kl"] = kl
    if config.entropy_coef != 0.0:
        if entropy is None:
            raise ValueError("entropy_coef != 0 needs the per-token entropy")
        ent = entropy_bonus(entropy, mask, aggregation=agg)
        loss = loss - config.entropy_coef * ent
        aux["entropy"] = ent
    aux["loss"] = loss
    return loss, jax.tree.map(jax.lax.stop_gradient, aux)


# ------------------------------------------------------------------------ minibatches, optimizer


def minibatch_indices(key: jax.Array, batch_size: int, num_minibatches: int) -> jax.Array:
    """A random permutation of range(batch_size) cut into equal minibatches.

    Returns [num_minibatches, batch_size // num_minibatches] int32 indices; every example appears
    exactly once. batch_size and num_minibatches are static; unequal minibatches would change the
    shapes (and re-compile the step), so an indivisible batch is a ValueError.
    """
    if batch_size < 1 or num_minibatches < 1 or batch_size % num_minibatches:
        raise ValueError(
            f"batch_size={batch_size} is not divisible into {num_minibatches} minibatches"
        )
    perm = jax.random.permutation(key, batch_size).astype(jnp.int32)
    return perm.reshape(num_minibatches, batch_size // num_minibatches)


def make_lr_schedule(
    learning_rate: float, *, warmup_steps: int = 0, total_steps: int | None = None
) -> optax.Schedule:
    """Linear warmup 0 -> lr over warmup_steps, then constant (total_steps None) or cosine decay
    to 0 at total_steps. warmup_steps=0 and total_steps=None is a constant lr (the paper's)."""
    if total_steps is not None:
        return optax.warmup_cosine_decay_schedule(
            0.0, learning_rate, warmup_steps, max(total_steps, warmup_steps + 1), end_value=0.0
        )
    if warmup_steps > 0:
        return optax.join_schedules(
            [optax.linear_schedule(0.0, learning_rate, warmup_steps),
             optax.constant_schedule(learning_rate)],
            [warmup_steps],
        )  # fmt: skip
    return optax.constant_schedule(learning_rate)


def make_optimizer(
    learning_rate: float | optax.Schedule,
    *,
    weight_decay: float,
    grad_clip: float | None,
    b1: float = 0.9,
    b2: float = 0.999,
) -> optax.GradientTransformation:
    """clip_by_global_norm(grad_clip) then AdamW(schedule, b1, b2, weight_decay).

    Weight decay applies to every parameter, as torch AdamW does in verl (the paper's trainer).
    grad_clip None or <= 0 disables clipping. learning_rate: a number (constant) or a schedule
    from make_lr_schedule. Schedules count
    optimizer updates (a GRPO step makes num_ppo_epochs * num_minibatches of them).
    """
    # A number becomes a constant schedule, so both kinds give one optimizer-state structure
    # (the warm start's and RL's states are checkpointed in one TrainState).
    schedule = learning_rate if callable(learning_rate) else make_lr_schedule(learning_rate)
    adamw = optax.adamw(schedule, b1=b1, b2=b2, weight_decay=weight_decay)
    if grad_clip is None or grad_clip <= 0:
        return adamw
    return optax.chain(optax.clip_by_global_norm(grad_clip), adamw)
