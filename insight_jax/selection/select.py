"""Batch selection: uniform candidates, scores, top-M; single-device or sharded over a mesh.

One training step picks M prompts (METHOD.md):
  1. draw Mhat candidates uniformly without replacement (Mhat >= N: the whole pool);
  2. score them (scores.py), or read the cached scores of a deterministic scorer;
  3. keep the top M.

Everything is jitted once per (shapes, batch_size, num_candidates, scorer). Ties are broken
deterministically: in whole-pool mode by the lowest prompt index (lax.top_k's order); in
candidate mode by the (random, key-determined) order in which candidates were drawn.

Sharded pools. When the belief arrays are sharded along their only axis, selection never gathers
the pool: each shard takes a local top-M of its slice, the shards all-gather those M (value,
index) pairs, and a global top-M of the S*M pairs gives exactly the single-device answer (ties
included: shard order is index order). Candidate gathers and cache updates are also done shard-
locally inside shard_map.

Skipping (optional, `Skip`). Prompts whose next K rollouts are predicted to be uninformative for
GRPO (all fail or all succeed: zero_variance_probability > threshold) are ranked below every other
prompt unless an exploration coin keeps them, as GRESO does from past rewards, here from the
beliefs. The order is exactly lexicographic (kept first, then score, the usual ties), computed as a
top-M of the kept prompts and, only when fewer than M are kept, a top-M of the skipped ones to fill
the batch; both are shard-local top-ks like the plain selection.

Padding. Pools are padded to a multiple of the shard count (beliefs.py); padded slots score -inf
and non-finite real scores are mapped to the lowest finite float, so a padded slot can never be
selected while there are real prompts left.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from insight_jax.selection.beliefs import Beliefs, _check_indices, _check_int
from insight_jax.selection.information import _check_num_rollouts, zero_variance_probability
from insight_jax.selection.scores import Scorer

_LOWEST = float(np.finfo(np.float32).min)

# The exploration coins come from fold_in(key, _EXPLORE_STREAM), a stream of their own: the
# split that feeds the candidate draw and the scorer is untouched, so skip=None selects exactly
# what it did before skipping existed.
_EXPLORE_STREAM = 0x736B6970  # "skip"


@dataclasses.dataclass(frozen=True)
class Skip:
    """Skip prompts predicted to give a zero-variance group of rollouts (hashable: static).

    A prompt with zero_variance_probability(alpha, beta, num_rollouts) > threshold is ranked below
    every prompt that is not skipped, unless its exploration coin (probability `explore`, one
    independent coin per prompt per selection) keeps it. Skipped prompts keep their order by
    score, so when fewer than M prompts survive the best skipped ones fill the batch.

    threshold: in [0, 1]; 1 skips nothing. explore: in [0, 1]; 1 keeps everything.
    num_rollouts: K, the rollouts per prompt, a Python int in [1, MAX_ROLLOUTS].
    """

    threshold: float
    explore: float
    num_rollouts: int

    def __post_init__(self):
        for name in ("threshold", "explore"):
            v = getattr(self, name)
            if isinstance(v, bool | np.bool_) or not isinstance(v, int | float | np.number):
                raise TypeError(f"Skip.{name} must be a number in [0, 1], got {v!r}")
            if not 0.0 <= float(v) <= 1.0:
                raise ValueError(f"Skip.{name} must be in [0, 1], got {v!r}")
            # Plain floats: equal options hash equally, so _select compiles once for them.
            object.__setattr__(self, name, float(v))
        object.__setattr__(self, "num_rollouts", _check_num_rollouts(self.num_rollouts))


class Shard(NamedTuple):
    """Where a pool array is sharded: the mesh and the mesh axes of its only dimension."""

    mesh: jax.sharding.Mesh
    axes: str | tuple[str, ...]


def pool_shard(x: jax.Array) -> Shard | None:
    """The Shard of a concrete pool array, or None if it is not split across devices."""
    sharding = getattr(x, "sharding", None)
    if isinstance(sharding, NamedSharding) and len(sharding.spec) and sharding.spec[0]:
        if sharding.shard_shape(x.shape)[0] < x.shape[0]:
            return Shard(sharding.mesh, sharding.spec[0])
    return None


def _shard_offset(shard_len: int, axes) -> jax.Array:
    return lax.axis_index(axes) * shard_len


def _clean(scores: jax.Array, valid: jax.Array) -> jax.Array:
    """Padded slots -> -inf; NaN / -inf real scores -> lowest finite float (still selectable)."""
    scores = jnp.where(jnp.isnan(scores) | (scores == -jnp.inf), _LOWEST, scores)
    return jnp.where(valid, scores, -jnp.inf)


def top_k_indices(values: jax.Array, k: int, shard: Shard | None = None) -> jax.Array:
    """Indices of the k largest values, in descending order, ties to the lowest index.

    With `shard`, a two-stage top-k: local top-k per shard, all-gather, global top-k. Returns a
    replicated int32 array identical to the single-device result.
    """
    if shard is None:
        return lax.top_k(values, k)[1].astype(jnp.int32)

    def local(v):
        shard_len = v.shape[0]
        k_local = min(k, shard_len)
        vals, idx = lax.top_k(v, k_local)
        idx = idx.astype(jnp.int32) + _shard_offset(shard_len, shard.axes).astype(jnp.int32)
        vals = lax.all_gather(vals, shard.axes, tiled=True)
        idx = lax.all_gather(idx, shard.axes, tiled=True)
        return idx[lax.top_k(vals, k)[1]]

    return jax.shard_map(
        local, mesh=shard.mesh, in_specs=P(shard.axes), out_specs=P(), check_vma=False
    )(values)


def take(x: jax.Array, indices: jax.Array, shard: Shard | None = None) -> jax.Array:
    """x[indices] for replicated indices; on a sharded x each shard contributes its own rows and
    a psum combines them (exact: every row comes from exactly one shard)."""
    if shard is None:
        return x[indices]

    def local(xs, idx):
        shard_len = xs.shape[0]
        pos = idx - _shard_offset(shard_len, shard.axes)
        mine = (pos >= 0) & (pos < shard_len)
        vals = jnp.where(mine, xs[jnp.clip(pos, 0, shard_len - 1)], 0)
        return lax.psum(vals, shard.axes)

    return jax.shard_map(
        local, mesh=shard.mesh, in_specs=(P(shard.axes), P()), out_specs=P(), check_vma=False
    )(x, indices)


def _skipped(key, alpha, beta, skip: Skip, shard: Shard | None) -> jax.Array:
    """True where a prompt is skipped: predicted zero-variance and not kept by its coin.

    Elementwise, so on a sharded pool every shard handles its own slice. The coins of a pool
    are one uniform draw over its (padded) shape; with jax's default partitionable threefry the
    bits of element i depend only on the key and i, so padding and sharding leave a real
    prompt's coin unchanged (as for the stochastic scorers' draws).
    """
    p = zero_variance_probability(alpha, beta, skip.num_rollouts)
    coin = jax.random.uniform(key, p.shape)
    if shard is not None:
        coin = lax.with_sharding_constraint(coin, NamedSharding(shard.mesh, P(shard.axes)))
    return (p > skip.threshold) & (coin >= skip.explore)


def _top_k_skipping(values, skipped, k: int, shard: Shard | None) -> jax.Array:
    """top_k_indices(values, k) with every skipped entry ranked below every kept finite one.

    Lexicographic (kept first, then value, ties to the lowest index): the top k of the kept
    entries, and only if fewer than k are kept, the top of the skipped ones after them. -inf
    entries (padding, never skipped) stay last. Subtracting a shift from skipped values instead
    would round close float32 scores together and overflow at the lowest finite score (_clean's
    NaN).
    """
    kept = jnp.where(skipped, -jnp.inf, values)
    first = top_k_indices(kept, k, shard)
    num_kept = jnp.sum(kept > -jnp.inf)

    def fill():
        rest = top_k_indices(jnp.where(skipped, values, -jnp.inf), k, shard)
        pos = jnp.arange(k)
        return jnp.where(pos < num_kept, first, rest[jnp.maximum(pos - num_kept, 0)])

    return lax.cond(num_kept >= k, lambda: first, fill)


def draw_candidates(key: jax.Array, num_items: int, num_candidates: int) -> jax.Array:
    """`num_candidates` distinct prompt indices, uniform without replacement from [0, num_items).

    For num_candidates <= num_items / 4 this costs O(Mhat log Mhat), independent of N: draw
    2 Mhat indices i.i.d. and keep the first Mhat distinct ones in draw order (the distinct values
    of an i.i.d. uniform stream, in order of first appearance, are a uniform sample without
    replacement). If fewer than Mhat are distinct (rare), or for larger Mhat, it falls back to
    the top Mhat of i.i.d. random priorities over the whole pool.
    """
    num_items = _check_int("num_items", num_items)
    num_candidates = _check_int("num_candidates", num_candidates)
    if num_candidates > num_items:
        raise ValueError(f"num_candidates must be in [1, {num_items}], got {num_candidates}")
    k_stream, k_dense = jax.random.split(key)

    def dense():
        prio = jax.random.bits(k_dense, (num_items,), jnp.uint32) >> 1  # non-negative int32
        return lax.top_k(prio.astype(jnp.int32), num_candidates)[1].astype(jnp.int32)

    if 4 * num_candidates > num_items:
        return dense()
    num_draws = 2 * num_candidates
    draws = jax.random.randint(k_stream, (num_draws,), 0, num_items, dtype=jnp.int32)
    order = jnp.argsort(draws, stable=True)  # by value, then by draw position
    sorted_draws = draws[order]
    first = jnp.concatenate([jnp.ones((1,), bool), sorted_draws[1:] != sorted_draws[:-1]])
    first_pos = jnp.sort(jnp.where(first, order, num_draws))[:num_candidates]
    stream = draws[jnp.minimum(first_pos, num_draws - 1)]
    return lax.cond(jnp.sum(first) >= num_candidates, lambda: stream, dense)


@functools.partial(
    jax.jit, static_argnames=("batch_size", "num_candidates", "scorer", "shard", "skip")
)
def _select(key, beliefs, scores, *, batch_size, num_candidates, scorer, shard, skip=None):
    num_items = beliefs.num_items
    k_cand, k_score = jax.random.split(key)
    if num_candidates >= num_items:
        if scores is None:
            scores = scorer(k_score, beliefs.alpha, beliefs.beta)
        valid = jnp.arange(scores.shape[0]) < num_items
        if shard is not None:
            valid = lax.with_sharding_constraint(valid, NamedSharding(shard.mesh, P(shard.axes)))
        values = _clean(scores, valid)
        if skip is None:
            return top_k_indices(values, batch_size, shard)
        k_explore = jax.random.fold_in(key, _EXPLORE_STREAM)
        skipped = valid & _skipped(k_explore, beliefs.alpha, beliefs.beta, skip, shard)
        return _top_k_skipping(values, skipped, batch_size, shard)
    cand = draw_candidates(k_cand, num_items, num_candidates)
    if scores is None:
        cand_scores = scorer(
            k_score, take(beliefs.alpha, cand, shard), take(beliefs.beta, cand, shard)
        )
    else:
        cand_scores = take(scores, cand, shard)
    values = _clean(cand_scores, jnp.ones_like(cand, bool))
    if skip is None:
        return cand[lax.top_k(values, batch_size)[1]]
    # O(Mhat) gathers; the candidates' coins and skip tests are replicated, like their scores.
    alpha, beta = take(beliefs.alpha, cand, shard), take(beliefs.beta, cand, shard)
    skipped = _skipped(jax.random.fold_in(key, _EXPLORE_STREAM), alpha, beta, skip, None)
    return cand[_top_k_skipping(values, skipped, batch_size, None)]


def select_batch(
    key: jax.Array,
    beliefs: Beliefs,
    batch_size: int,
    num_candidates: int,
    scorer: Scorer,
    *,
    scores: jax.Array | None = None,
    shard: Shard | None = None,
    skip: Skip | None = None,
) -> jax.Array:
    """Indices (int32, [batch_size], best first) of the prompts to roll out this step.

    Args:
      key: PRNG key for the candidate draw and stochastic scorers.
      beliefs: the pool's Beliefs (sharded or not).
      batch_size: M, an integer (Python or numpy; not a float or bool) in
        [1, min(num_items, num_candidates)].
      num_candidates: Mhat, an integer >= 1; >= num_items means the whole pool.
      scorer: a Scorer from get_scorer.
      scores: optional cached scores (init_scores/rescore) of a deterministic scorer; used
        instead of rescoring.
      shard: where the pool is sharded; inferred from concrete arrays if not given (pass it
        explicitly when calling under an outer jit).
      skip: optional Skip: prompts predicted to give zero-variance groups rank last unless
        their exploration coin keeps them. None selects exactly as without the option.
    """
    num_items = beliefs.num_items
    batch_size = _check_int("batch_size", batch_size)
    num_candidates = _check_int("num_candidates", num_candidates)
    if not batch_size <= min(num_items, num_candidates):
        raise ValueError(
            f"batch_size must be in [1, min(num_items={num_items}, "
            f"num_candidates={num_candidates})], got {batch_size}"
        )
    if scores is not None and not scorer.deterministic:
        raise ValueError(
            f"cached scores are only valid for deterministic scorers, not {scorer.name!r}"
        )
    if skip is not None and not isinstance(skip, Skip):
        raise TypeError(f"skip must be a Skip or None, got {skip!r}")
    if shard is None and not isinstance(beliefs.alpha, jax.core.Tracer):
        shard = pool_shard(beliefs.alpha)
    return _select(
        key,
        beliefs,
        scores,
        batch_size=batch_size,
        num_candidates=min(num_candidates, num_items),
        scorer=scorer,
        shard=shard,
        skip=skip,
    )


@functools.partial(jax.jit, static_argnames=("scorer",))
def init_scores(beliefs: Beliefs, scorer: Scorer) -> jax.Array:
    """Scores of the whole pool for a deterministic scorer, with the beliefs' sharding."""
    if not scorer.deterministic:
        raise ValueError(f"only deterministic scorers can be cached, not {scorer.name!r}")
    return scorer(None, beliefs.alpha, beliefs.beta)


@functools.partial(jax.jit, donate_argnums=(0,), static_argnames=("scorer", "shard"))
def _rescore(scores, beliefs, indices, *, scorer, shard):
    if shard is None:
        new = scorer(None, beliefs.alpha[indices], beliefs.beta[indices])
        return scores.at[indices].set(new, unique_indices=True)

    def local(sc, al, be, idx):
        shard_len = sc.shape[0]
        pos = idx - _shard_offset(shard_len, shard.axes)
        mine = (pos >= 0) & (pos < shard_len)
        safe = jnp.clip(pos, 0, shard_len - 1)
        new = scorer(None, al[safe], be[safe])
        # Rows of other shards are routed out of bounds and dropped.
        return sc.at[jnp.where(mine, pos, shard_len)].set(new, mode="drop")

    spec = P(shard.axes)
    return jax.shard_map(
        local, mesh=shard.mesh, in_specs=(spec, spec, spec, P()), out_specs=spec, check_vma=False
    )(scores, beliefs.alpha, beliefs.beta, indices)


def rescore(
    scores: jax.Array, beliefs: Beliefs, indices: jax.Array, scorer: Scorer, *, shard=None
) -> jax.Array:
    """Cached scores with the entries at `indices` recomputed from the (updated) beliefs.

    Only the M updated beliefs change per step, so this costs O(M) instead of O(N). `scores` is
    donated (updated in place); the result equals init_scores(beliefs, scorer).

    `indices` must be 1-D, distinct integers in [0, beliefs.num_items). Concrete indices (numpy,
    lists, jax arrays) are checked on the host first (a device array is fetched with an explicit
    jax.device_get: one O(M) transfer and a sync) and a bad one raises ValueError before
    anything is donated. Traced indices (rescore called under an outer jit) cannot be checked:
    there they follow jnp indexing (a negative index counts from the end, one past the end is
    clamped when read and dropped when written) and duplicates are undefined, so a jitted
    caller must pass indices that select_batch returned.
    """
    if not scorer.deterministic:
        raise ValueError(f"only deterministic scorers can be cached, not {scorer.name!r}")
    if not isinstance(indices, jax.core.Tracer):
        host = jax.device_get(indices) if isinstance(indices, jax.Array) else indices
        _check_indices(beliefs.num_items, host)
    if shard is None and not isinstance(scores, jax.core.Tracer):
        shard = pool_shard(scores)
    return _rescore(scores, beliefs, jnp.asarray(indices, jnp.int32), scorer=scorer, shard=shard)
