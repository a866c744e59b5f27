"""Per-prompt Beta beliefs over the policy's success rate, and their conjugate update.

Each prompt tau carries phi_tau ~ Beta(alpha_tau, beta_tau), initialised at the prior
(alpha0, beta0). After K rollouts of prompt tau with S successes (METHOD.md):

    alpha <- lambda * alpha + (1 - lambda) * alpha0 + S
    beta  <- lambda * beta  + (1 - lambda) * beta0  + (K - S)

lambda in (0, 1] is the forgetting factor (`decay`): 1 keeps all evidence, smaller values pull old
evidence back towards the prior so beliefs track a policy that changes. Only rolled-out prompts
are updated.

Beliefs are float32 arrays, optionally sharded over a mesh axis. jax needs a sharded dimension to
divide evenly, so a sharded pool is padded up to a multiple of the shard count; `num_items` is the
true pool size and padded slots are never selected (select.py masks them).
"""

from __future__ import annotations

import functools
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct


@struct.dataclass
class Beliefs:
    """Beta(alpha, beta) per prompt. Arrays may be longer than num_items (sharding padding)."""

    alpha: jax.Array
    beta: jax.Array
    alpha0: float = struct.field(pytree_node=False, default=1.0)
    beta0: float = struct.field(pytree_node=False, default=1.0)
    num_items: int = struct.field(pytree_node=False, default=0)

    @property
    def mean(self) -> jax.Array:
        """Posterior mean phibar = alpha / (alpha + beta)."""
        return self.alpha / (self.alpha + self.beta)

    @property
    def evidence(self) -> jax.Array:
        """Evidence n = alpha + beta."""
        return self.alpha + self.beta


def _check_int(name: str, value, minimum: int = 1) -> int:
    """`value` as an int if it is an integer (Python or numpy, not a bool) >= minimum.

    Raises TypeError for a non-integer type (2.5, 4.0, np.float32(4), True) and ValueError for
    an integer below `minimum`; both name the argument, the value and what is allowed.
    """
    allowed = f"an integer >= {minimum}"
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | np.integer):
        raise TypeError(f"{name} must be {allowed}, got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    return int(value)


def _check_indices(num_items: int, indices, name: str = "indices") -> np.ndarray:
    """Host-side check of concrete prompt indices: 1-D integers, in [0, num_items), distinct.

    Returns them as an int32 numpy array; raises ValueError naming the first bad entry.
    """
    idx = np.asarray(indices)
    if idx.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {idx.shape}")
    if idx.size and not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(f"{name} must be integers, got dtype {idx.dtype}")
    bad = np.flatnonzero((idx < 0) | (idx >= num_items))
    if bad.size:
        raise ValueError(
            f"{name}[{bad[0]}] = {idx[bad[0]]} is out of range: allowed [0, {num_items})"
        )
    uniq, counts = np.unique(idx, return_counts=True)
    if np.any(counts > 1):
        raise ValueError(
            f"duplicate {name} (each must appear once): {uniq[counts > 1][:5].tolist()}"
        )
    return idx.astype(np.int32)


def _padded_size(num_items: int, sharding: jax.sharding.Sharding | None) -> int:
    """num_items rounded up to a multiple of the number of shards along dimension 0."""
    if sharding is None:
        return num_items
    # Any sharding splits a length-num_devices axis evenly, which tells the shard count.
    num_shards = sharding.num_devices // sharding.shard_shape((sharding.num_devices,))[0]
    return -(-num_items // num_shards) * num_shards


def init_beliefs(
    num_items: int,
    alpha0: float = 1.0,
    beta0: float = 1.0,
    *,
    sharding: jax.sharding.Sharding | None = None,
) -> Beliefs:
    """Beliefs of a pool of `num_items` prompts, all at the prior Beta(alpha0, beta0).

    With `sharding` (e.g. NamedSharding(mesh, P("data"))) the arrays are created directly on the
    devices, shard by shard, padded to a multiple of the shard count.
    """
    num_items = _check_int("num_items", num_items)
    for name, v in (("alpha0", alpha0), ("beta0", beta0)):
        if isinstance(v, bool | np.bool_) or not isinstance(v, int | float | np.number):
            raise TypeError(f"{name} must be a finite positive number, got {v!r}")
        if not (np.isfinite(v) and v > 0):
            raise ValueError(f"{name} must be a finite positive number, got {v!r}")
    size = _padded_size(num_items, sharding)
    make = functools.partial(
        lambda a0, b0: (
            jnp.full((size,), a0, jnp.float32),
            jnp.full((size,), b0, jnp.float32),
        ),
        float(alpha0),
        float(beta0),
    )
    if sharding is not None:
        make = jax.jit(make, out_shardings=(sharding, sharding))
    alpha, beta = make()
    return Beliefs(alpha, beta, float(alpha0), float(beta0), num_items)


SuccessRule = Literal["threshold", "fractional"]


def successes_from_rewards(
    rewards: jax.Array | np.ndarray, rule: SuccessRule = "threshold", threshold: float = 1.0
) -> np.ndarray:
    """Success counts S per prompt from rewards of shape [M, K].

    rule="threshold": S = #{k : r_k >= threshold} (MoPPS' rule; threshold 1.0 counts only fully
      correct answers, so Countdown's 0.1 format reward is a failure).
    rule="fractional": S = sum_k clip(r_k, 0, 1), a fractional count for graded rewards.
    """
    r = np.asarray(rewards, dtype=np.float64)
    if r.ndim != 2:
        raise ValueError(f"rewards must have shape [num_prompts, num_rollouts], got {r.shape}")
    if not np.all(np.isfinite(r)):
        raise ValueError("rewards contain NaN or inf")
    if rule == "threshold":
        return np.sum(r >= threshold, axis=1).astype(np.float32)
    if rule == "fractional":
        return np.sum(np.clip(r, 0.0, 1.0), axis=1).astype(np.float32)
    raise ValueError(f"unknown success rule {rule!r}; expected 'threshold' or 'fractional'")


def validate_update(
    num_items: int, indices, successes, num_rollouts: int, decay: float
) -> tuple[np.ndarray, np.ndarray]:
    """Host-side checks of a belief update; returns (indices int32, successes float32).

    Raises ValueError naming the first problem found. Called before any state changes.
    """
    num_rollouts = _check_int("num_rollouts", num_rollouts)
    if isinstance(decay, bool | np.bool_) or not isinstance(decay, int | float | np.number):
        raise TypeError(f"decay (lambda) must be a number in (0, 1], got {decay!r}")
    if not 0.0 < float(decay) <= 1.0:
        raise ValueError(f"decay (lambda) must be in (0, 1], got {decay!r}")
    s = np.asarray(successes)
    if np.ndim(indices) == 1 and s.shape != np.shape(indices):
        raise ValueError(
            f"successes shape {s.shape} does not match indices shape {np.shape(indices)}"
        )
    idx = _check_indices(num_items, indices)
    s = s.astype(np.float64)
    nan = np.flatnonzero(~np.isfinite(s))
    if nan.size:
        raise ValueError(f"successes[{nan[0]}] is {s[nan[0]]} (NaN or inf)")
    out = np.flatnonzero((s < 0) | (s > num_rollouts))
    if out.size:
        raise ValueError(
            f"successes must lie in [0, K={num_rollouts}]: successes[{out[0]}] = {s[out[0]]}"
        )
    return idx, s.astype(np.float32)


@functools.partial(jax.jit, donate_argnums=(0,), static_argnames=("num_rollouts",))
def apply_update(
    beliefs: Beliefs,
    indices: jax.Array,
    successes: jax.Array,
    num_rollouts: int,
    decay: jax.Array | float = 1.0,
    valid: jax.Array | None = None,
) -> Beliefs:
    """Jitted conjugate update with forgetting, no validation (see `update_beliefs`).

    alpha[i] <- decay * alpha[i] + (1 - decay) * alpha0 + S_i
    beta[i]  <- decay * beta[i]  + (1 - decay) * beta0  + (K - S_i)

    Indices must be distinct. With `valid` (bool, like indices) only those rows are applied and
    the others are dropped, so one compiled update serves a varying number of rows padded to a
    fixed length (the trainer's dynamic-sampling rounds). The input beliefs are donated so the
    pool arrays are updated in place.
    """
    decay = jnp.asarray(decay, jnp.float32)
    s = successes.astype(jnp.float32)
    if valid is not None:
        indices = jnp.where(valid, indices, 0)  # padded rows read slot 0, then are dropped
    a_new = decay * beliefs.alpha[indices] + (1.0 - decay) * beliefs.alpha0 + s
    b_new = decay * beliefs.beta[indices] + (1.0 - decay) * beliefs.beta0 + (num_rollouts - s)
    if valid is None:
        at = lambda x: x.at[indices].set
        put = dict(unique_indices=True)
    else:  # out of bounds: dropped
        target = jnp.where(valid, indices, beliefs.alpha.shape[0])
        at = lambda x: x.at[target].set
        put = dict(mode="drop")
    return beliefs.replace(
        alpha=at(beliefs.alpha)(a_new, **put), beta=at(beliefs.beta)(b_new, **put)
    )


def update_beliefs(
    beliefs: Beliefs,
    indices,
    successes,
    num_rollouts: int,
    decay: float = 1.0,
) -> Beliefs:
    """Validated belief update of the rolled-out prompts (public API).

    Checks every input on the host first (index range, duplicates, NaN, successes in [0, K],
    decay in (0, 1]) and raises ValueError before anything changes; then runs `apply_update`.
    The passed-in `beliefs` buffers are donated: use the returned value.
    """
    idx, s = validate_update(beliefs.num_items, indices, successes, num_rollouts, decay)
    return apply_update(beliefs, jnp.asarray(idx), jnp.asarray(s), int(num_rollouts), float(decay))
