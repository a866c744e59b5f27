"""A cheap synthetic learner: latent prompt difficulties, a skill per topic, GRPO-like updates.

The simulator exists to study *selection* (which prompts to roll out) at pool sizes and step
counts that a real policy cannot afford. Everything here is a small pure function; the loop that
ties them to the real selector lives in loop.py.

Model (all quantities per seed; d, s in logits):

  Pool. Prompt i has a base difficulty d_i drawn from a mixture of normals
      d_i ~ sum_j w_j N(loc_j, scale_j^2)
  (e.g. "too easy" / "learnable" / "too hard" components, or one component = a normal), and a
  topic c_i ~ Uniform{0..C-1} independent of d_i.

  Policy. A skill s_c per topic, all 0 at the start. The success probability of one rollout is
      p_i(t) = sigmoid(s_{c_i}(t) - d_i - x_i(t)),
  with x_i(t) an optional per-prompt drift (below). Rollouts are i.i.d. Bernoulli(p_i).

  Learning signal (GRPO). For a Bernoulli policy with success logit theta, the GRPO surrogate with
  group-normalised advantages A_k = (r_k - rbar) / sigma has gradient
      sum_k A_k (r_k - p) = K sigma,      sigma = sqrt(rbar (1 - rbar)),  rbar = S / K,
  i.e. proportional to the group's reward std, and exactly 0 for all-0 or all-1 groups. Without
  std normalisation (Dr. GRPO) it is K sigma^2. So a group contributes g_i = sigma_i ("std") or
  g_i = sigma_i^2 ("var"); constant factors (K, ddof) are absorbed in the learning rate.

  Update with transfer. The loss is averaged over the M groups of the batch, so zero-variance
  groups dilute the step (they count in the mean but add nothing):
      s_c <- s_c + (lr / M) [ (1 - tau) sum_{i in batch, c_i = c} g_i + tau sum_{i in batch} g_i ]
  tau in [0, 1] is the transfer fraction: training on topic c raises s_c fully and every other
  topic by tau. The skill step is always >= 0 (for a Bernoulli policy the GRPO step always
  increases the probability of success).

  Drift (non-stationarity, optional). x_i(t) is an Ornstein-Uhlenbeck process with stationary std
  sigma_x and mean-reversion rate theta per step, started stationary (x_i(0) ~ N(0, sigma_x^2)):
      x(t + dt) = x(t) e^{-theta dt} + sigma_x sqrt(1 - e^{-2 theta dt}) z,   z ~ N(0, 1).
  For theta dt << 1 this is a random walk with per-step std sigma_x sqrt(2 theta); the
  stationary start keeps the pool's difficulty distribution fixed over time, so drift moves
  individual prompts (item-level forgetting/interference) without shifting held-out accuracy.
  x is sampled lazily, only when a prompt is rolled out (exact in distribution, O(M) per step).

  Memorisation (optional: SimConfig.memorisation, off by default). Each training prompt also has
  a memorised logit m_i and a training exposure G_i, both 0 at the start, and its success
  probability becomes
      p_i(t) = sigmoid(s_{c_i}(t) - d_i - x_i(t) + m_i(t)).
  A trained group's signal g_i is split by the prompt's exposure *before* the step,
      w_i = 1 / (1 + kappa G_i)                    (transferable share, kappa = memorise)
      s_c <- s_c + (lr / M) [ (1 - tau) sum_{i in batch, c_i = c} w_i g_i + tau sum_i w_i g_i ]
      m_i <- m_i + r (1 - w_i) g_i,   G_i <- G_i + g_i     (r = memory_rate)
  i.e. the skill update above with g_i replaced by w_i g_i. The first informative visit of a prompt
  teaches its topic fully (G_i = 0, w_i = 1); the more a prompt has been trained on, the more of
  its gradient goes into features of that prompt alone, which raise its own logit and nothing
  else. G_i counts gradient, not visits: an all-0 or all-1 group (g_i = 0) neither teaches nor
  memorises. r is in logits per unit of signal and absorbs the ratio of a prompt's self-kernel to
  the shared one (a step on a prompt moves its own logit much more than its topic-mates'; the
  topic step is diluted by lr / M, the memory step is not). With kappa = 0, w_i = 1 and m_i = 0:
  the model above exactly.
  Why this form: it is the simplest one in which *revisiting* has a cost. A fixed split (a share
  mu of every group memorised) slows all selectors alike; a memory step without the w_i split
  (m_i += r g_i, skill unchanged) raises train accuracy but keeps the held-out step per unit of
  signal, so a selector that finds more signal still wins by as much. With w_i the skill gained
  from one prompt saturates in its own exposure (sum over its visits of g / (1 + kappa G), about
  ln(1 + kappa G_total) / kappa, concave), so a fixed number of groups teaches the topic more
  when spread over many prompts than when concentrated on a few, and concentrating them raises
  those prompts' own (train-pool) accuracy instead. A prompt that was all-wrong when first
  seen has G = 0 and still teaches fully once the skill makes it learnable.
  Held-out prompts are never trained on, so held-out accuracy never includes m. The train-pool
  accuracy (reported with memorisation on) is
      acc_train(t) = (1/N) sum_i sigmoid(s_{c_i}(t) - d_i - x_i + m_i(t)),
  with x_i the prompt's drift offset when it was last rolled out (exact without drift).

  Held-out accuracy. H held-out prompts from the same mixture (plus a stationary drift offset),
  fixed for the run; the reported accuracy is the exact expectation over rollout noise,
      acc(t) = (1/H) sum_h sigmoid(s_{c_h}(t) - d_h),
  so curves carry no evaluation noise, only seed noise (pool, held-out draw, rollouts).

Assumptions worth knowing when reading results: learning speed is proportional to the
informative signal (the sim measures how well a selector *finds* informative prompts, not
whether they help); without memorisation (the default) a prompt teaches its topic, not itself,
so the train/held-out gap is zero; with it, a prompt's transfer falls with its own training
exposure only (not with its topic's, nor with time), memory is never forgotten and has no
shared capacity limit, and kappa, r are free parameters, not fitted to a real run; all topics
share one difficulty distribution; rewards are binary.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import jax
import jax.numpy as jnp
from flax import struct

Signal = Literal["std", "var"]

# Difficulty mixtures used by the studies: (weights, locs, scales) of the
# too-easy / learnable / too-hard components. At skill 0 a prompt at -4 succeeds with p = 0.98
# (86% of K=8 groups all-correct), one at +4 with p = 0.02 (86% all-wrong).
MIX_LOCS = (-4.0, 0.0, 4.0)
MIX_SCALES = (1.0, 1.5, 1.0)
MIXES = {
    "mostly_easy": (0.6, 0.3, 0.1),
    "balanced": (0.25, 0.5, 0.25),
    "mostly_hard": (0.1, 0.3, 0.6),
}


@struct.dataclass
class Pool:
    """Latent state of a pool of prompts (training pool or held-out set)."""

    difficulty: jax.Array  # [N] base difficulty d_i (logits)
    cluster: jax.Array  # [N] int32 topic c_i
    offset: jax.Array  # [N] drift x_i at the last time prompt i was rolled out
    last_step: jax.Array  # [N] int32 step of that last observation


@struct.dataclass
class SimParams:
    """The simulator's continuous parameters: traced (not static), so a grid of them can be
    vmapped without recompiling (calibrate.py)."""

    learning_rate: jax.Array | float = 0.05  # lr
    transfer: jax.Array | float = 0.5  # tau
    decay: jax.Array | float = 1.0  # lambda, the selector's forgetting factor
    drift_std: jax.Array | float = 0.0  # sigma_x (logits)
    drift_rate: jax.Array | float = 0.0  # theta (per step)
    # Memorisation (used only with SimConfig.memorisation = True): kappa and r.
    memorise: jax.Array | float = 0.0  # kappa: w_i = 1 / (1 + kappa G_i); 0 = no memorisation
    memory_rate: jax.Array | float = 1.0  # r: m_i += r (1 - w_i) g_i (logits per unit signal)
    mix_weights: jax.Array | tuple = MIXES["balanced"]
    mix_locs: jax.Array | tuple = MIX_LOCS
    mix_scales: jax.Array | tuple = MIX_SCALES


def as_arrays(params: SimParams) -> SimParams:
    """The same params with every field a float32 array (tuples become 1-D arrays)."""
    return SimParams(
        **{
            f.name: jnp.asarray(getattr(params, f.name), jnp.float32)
            for f in dataclasses.fields(params)
        }
    )


def mixture_params(mix: str | tuple[float, ...], **kwargs) -> SimParams:
    """SimParams with a named difficulty mix (MIXES) or explicit weights over MIX_LOCS."""
    weights = MIXES[mix] if isinstance(mix, str) else tuple(mix)
    return SimParams(mix_weights=weights, **kwargs)


def normal_params(mean: float, std: float, **kwargs) -> SimParams:
    """SimParams with difficulties d ~ N(mean, std^2) (a one-component mixture)."""
    return SimParams(mix_weights=(1.0,), mix_locs=(mean,), mix_scales=(std,), **kwargs)


def sample_difficulty(
    key: jax.Array, n: int, weights: jax.Array, locs: jax.Array, scales: jax.Array
) -> jax.Array:
    """d ~ sum_j w_j N(loc_j, scale_j^2), n draws. Weights need not be normalised."""
    k_comp, k_norm = jax.random.split(key)
    w = jnp.asarray(weights, jnp.float32)
    comp = jax.random.categorical(k_comp, jnp.log(w / jnp.sum(w)), shape=(n,))
    z = jax.random.normal(k_norm, (n,), jnp.float32)
    return jnp.asarray(locs, jnp.float32)[comp] + jnp.asarray(scales, jnp.float32)[comp] * z


def make_pool(key: jax.Array, n: int, num_clusters: int, params: SimParams) -> Pool:
    """A pool of n prompts: mixture difficulties, uniform topics, stationary drift offsets."""
    k_d, k_c, k_x = jax.random.split(key, 3)
    d = sample_difficulty(k_d, n, params.mix_weights, params.mix_locs, params.mix_scales)
    c = jax.random.randint(k_c, (n,), 0, num_clusters, jnp.int32)
    x = params.drift_std * jax.random.normal(k_x, (n,), jnp.float32)
    return Pool(d, c, x, jnp.zeros((n,), jnp.int32))


def success_prob(skill: jax.Array, cluster: jax.Array, difficulty: jax.Array) -> jax.Array:
    """p = sigmoid(s_c - d), d the current (drifted) difficulty."""
    return jax.nn.sigmoid(skill[cluster] - difficulty)


def drift_offsets(
    key: jax.Array,
    offset: jax.Array,
    elapsed: jax.Array,
    drift_std: jax.Array | float,
    drift_rate: jax.Array | float,
) -> jax.Array:
    """Exact OU transition over `elapsed` steps:
    x' = x e^{-theta dt} + sigma_x sqrt(1 - e^{-2 theta dt}) z.  With sigma_x = 0, x' = x."""
    dt = elapsed.astype(jnp.float32)
    keep = jnp.exp(-drift_rate * dt)
    # -expm1(-2 theta dt) = 1 - e^{-2 theta dt}, accurate when theta dt is tiny.
    noise_std = drift_std * jnp.sqrt(-jnp.expm1(-2.0 * drift_rate * dt))
    return offset * keep + noise_std * jax.random.normal(key, offset.shape, jnp.float32)


def rollout_successes(key: jax.Array, p: jax.Array, num_rollouts: int) -> jax.Array:
    """S_i = sum_k 1[u_ik < p_i], u ~ U[0, 1): K Bernoulli(p_i) rollouts per prompt (float32).
    p = 0 never succeeds and p = 1 always does, exactly."""
    u = jax.random.uniform(key, (*p.shape, num_rollouts), jnp.float32)
    return jnp.sum(u < p[..., None], axis=-1).astype(jnp.float32)


def group_signal(successes: jax.Array, num_rollouts: int, kind: Signal = "std") -> jax.Array:
    """Gradient magnitude of a group: sigma = sqrt(rbar (1 - rbar)) ("std", GRPO) or
    sigma^2 ("var", Dr. GRPO), rbar = S / K. Zero iff S in {0, K}."""
    rbar = successes / num_rollouts
    var = jnp.maximum(rbar * (1.0 - rbar), 0.0)
    if kind == "std":
        return jnp.sqrt(var)
    if kind == "var":
        return var
    raise ValueError(f"unknown signal {kind!r}; expected 'std' or 'var'")


def skill_increment(
    signal: jax.Array,
    cluster: jax.Array,
    num_clusters: int,
    batch_size: int,
    learning_rate: jax.Array | float,
    transfer: jax.Array | float,
) -> jax.Array:
    """Delta s_c = (lr / M) [(1 - tau) sum_{i: c_i = c} g_i + tau sum_i g_i], shape [C]."""
    per_topic = jax.ops.segment_sum(signal, cluster, num_segments=num_clusters)
    total = jnp.sum(per_topic)
    return (learning_rate / batch_size) * ((1.0 - transfer) * per_topic + transfer * total)


def memory_step(
    memory: jax.Array,
    exposure: jax.Array,
    signal: jax.Array,
    memorise: jax.Array | float,
    memory_rate: jax.Array | float,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """One training step of the rolled-out prompts' memorisation (all arrays [G]):
        w = 1 / (1 + kappa G),   m' = m + r (1 - w) g,   G' = G + g.
    Returns (w, m', G'); the skill update uses w g in place of g. kappa = 0: w = 1, m' = m."""
    kg = memorise * exposure
    share = 1.0 / (1.0 + kg)
    # 1 - w = kappa G / (1 + kappa G), without the cancellation of 1 - w for tiny kappa G.
    memory = memory + memory_rate * (kg / (1.0 + kg)) * signal
    return share, memory, exposure + signal


def train_accuracy(skill: jax.Array, pool: Pool, memory: jax.Array) -> jax.Array:
    """acc_train = mean_i sigmoid(s_{c_i} - d_i - x_i + m_i) over the training pool, x_i the
    offset at prompt i's last rollout: exact expected pass@1 on the pool (O(N))."""
    return jnp.mean(success_prob(skill, pool.cluster, pool.difficulty + pool.offset - memory))


def heldout_accuracy(skill: jax.Array, heldout: Pool) -> jax.Array:
    """acc = mean_h sigmoid(s_{c_h} - d_h - x_h): exact expected pass@1 on the held-out set."""
    return jnp.mean(success_prob(skill, heldout.cluster, heldout.difficulty + heldout.offset))


def heldout_spread(skill: jax.Array, heldout: Pool, num_samples: int) -> jax.Array:
    """Expected fraction of held-out prompts with mixed outcomes in `num_samples` samples:
    mean_h [1 - p_h^k - (1 - p_h)^k] (the real trainer's eval_spread)."""
    p = success_prob(skill, heldout.cluster, heldout.difficulty + heldout.offset)
    return jnp.mean(1.0 - p**num_samples - (1.0 - p) ** num_samples)


def ds_keep(informative: jax.Array, batch_size: int) -> tuple[jax.Array, jax.Array]:
    """DAPO dynamic sampling over R rounds of M groups, given in draw order ([R * M] bool).

    Rounds are generated one after another until M informative groups have been collected (or R
    rounds are used up); the first M informative groups in draw order are trained on. Returns
      keep:        [R * M] bool, informative and among the first M informative ones;
      rounds_used: int32, the smallest r with #informative in the first r M groups >= M, else R.
    """
    num_rounds = informative.shape[0] // batch_size
    count = jnp.cumsum(informative.astype(jnp.int32))
    keep = informative & (count <= batch_size)
    per_round_total = count.reshape(num_rounds, batch_size)[:, -1]
    # Rounds that ended short of M trigger one more round (the last round is always the last).
    rounds_used = 1 + jnp.sum(per_round_total[:-1] < batch_size).astype(jnp.int32)
    return keep, rounds_used
