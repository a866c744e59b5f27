"""Continuous batching: a fixed set of decode slots fed from a queue of the call's rollouts.

The dense sampler (rl/rollout.py) steps every one of its B * K rows until the longest ends and
attends over every cache slot, filled or not. Reasoning traces are ragged (many short, a few
long), so most of that work is padding. Here S decode slots (S <= B * K) each hold one rollout;
when a slot's row emits an EOS id or reaches max_new_tokens, the slot takes the next waiting
rollout: its prompt's keys and values are copied in from the prompt's single prefill and its
first token is drawn from the prefill's last hidden state. The loop ends when the queue is empty
and every slot is idle, so it runs about (total tokens) / S steps (at least the longest row),
not max_new_tokens for every group of rows. Decode attention reads only the slots below the
deepest live row (``models.transformer.blocked_decode_attention``).

Same draws as the dense sampler. Rollout r = prompt r // K draws its token t with key
fold_in(split(key, B*K)[r], t), whichever slot it runs in, and every row's cache holds
[left-padded prompt | completion] at the same columns as the dense cache; so the tokens,
log-probs and masks are the dense sampler's for every row (equal up to float rounding of the
blocked softmax: the tests compare them in float32).

Sharding. With a mesh, the B prompts, the S slots and the B * K output rows are split into
G = (size of the batch mesh axes) groups; group g's slots serve only group g's rollouts, so
every gather (prompt cache -> slot) and scatter (token -> output row) stays inside one shard:
they are written as vmaps over the group axis, whose batch dimension the partitioner keeps
local. Each group has its own queue; the loop runs until every group's queue is drained.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import Mesh

from insight_jax import sharding as shd
from insight_jax.models.transformer import DECODE_BLOCK, KVCache, Transformer, init_cache
from insight_jax.rl.rollout import (
    JittedEngine,
    Rollout,
    SamplingSettings,
    _cache_constraint,
    _check_prompts,
    _check_settings,
    _jitted,
    _repeat_prompts,
    _rollout,
    select_tokens,
)


def num_decode_slots(requested: int, rows: int, groups: int) -> int:
    """The slots a call uses: ``requested`` (0: one per row, i.e. no queue), at most ``rows``,
    rounded down to a multiple of ``groups`` (at least one per group)."""
    if requested < 0:
        raise ValueError(f"num_slots must be >= 0 (0: one slot per rollout), got {requested}")
    s = rows if requested == 0 else min(requested, rows)
    return max(groups, s // groups * groups)


def _grouped(x: jax.Array, axis: int, groups: int) -> jax.Array:
    """Splits ``axis`` into (groups, size // groups): group g = the g-th contiguous block, which
    is the shard a batch-split array keeps on device g."""
    return x.reshape(*x.shape[:axis], groups, x.shape[axis] // groups, *x.shape[axis + 1 :])


def _ungrouped(x: jax.Array, axis: int) -> jax.Array:
    return x.reshape(*x.shape[:axis], x.shape[axis] * x.shape[axis + 1], *x.shape[axis + 2 :])


def _take_rows(x: jax.Array, axis: int, rows: jax.Array, groups: int) -> jax.Array:
    """x's rows ``rows`` (group-local indices, [groups, n]) along ``axis``, per group:
    result row g * n + i = x's row (g's block)[rows[g, i]]."""
    xg = _grouped(x, axis, groups)
    taken = jax.vmap(lambda a, i: jnp.take(a, i, axis=axis), in_axes=(axis, 0), out_axes=axis)(
        xg, rows
    )
    return _ungrouped(taken, axis)


def _put_rows(buf: jax.Array, rows: jax.Array, cols, values: jax.Array, groups: int):
    """Per group g: buf's g-th block gets [rows[g, i], cols[g, i]] (or [rows[g, i]] when cols is
    None) = values[g * n + i]; a row index past the block (rows per group) drops the write."""
    bg = _grouped(buf, 0, groups)
    vg = _grouped(values, 0, groups)
    if cols is None:
        return _ungrouped(jax.vmap(lambda b, r, v: b.at[r].set(v, mode="drop"))(bg, rows, vg), 0)
    put = lambda b, r, c, v: b.at[r, c].set(v, mode="drop")
    return _ungrouped(jax.vmap(put)(bg, rows, cols, vg), 0)


def _kv_leaves(cache: KVCache):
    """(k and v leaves, their row axis): one stacked [L, B, S, ...] array each or a tuple of
    per-layer [B, S, ...] arrays."""
    stacked = not isinstance(cache.k, tuple)
    leaves = [cache.k, cache.v] if stacked else [*cache.k, *cache.v]
    return leaves, (1 if stacked else 0), stacked


def _with_kv(cache: KVCache, leaves, stacked: bool) -> KVCache:
    if stacked:
        return cache._replace(k=leaves[0], v=leaves[1])
    n = len(leaves) // 2
    return cache._replace(k=tuple(leaves[:n]), v=tuple(leaves[n:]))


def _continuous_impl(
    state, prompt_tokens, prompt_lengths, key, *, graphdef, s, num_slots, mesh, rules
):
    model: Transformer = nnx.merge(graphdef, state)
    k, n = s.num_samples, s.max_new_tokens
    b, p = prompt_tokens.shape
    rows = b * k
    groups = 1 if mesh is None else shd.batch_size_multiple(mesh, rules)
    slots = num_decode_slots(num_slots, rows, groups)
    rows_g, slots_g = rows // groups, slots // groups
    # Cache rows padded to whole blocks of the decode attention (a short one is one block).
    max_len = p + n if p + n < DECODE_BLOCK else -(-(p + n) // DECODE_BLOCK) * DECODE_BLOCK

    # Prefill every prompt once: its keys/values ([B, P] per layer) and its last hidden state,
    # from which each of its K rollouts draws its first token.
    _, prompt_mask = _repeat_prompts(prompt_tokens, prompt_lengths, 1)
    pcache = _cache_constraint(model.config, b, p, mesh, rules)(init_cache(model.config, b, p))
    h_prompt, pcache = model.hidden(
        prompt_tokens, cache=pcache, attention_mask=prompt_mask, last_only=True
    )
    h_prompt = h_prompt[:, 0]
    prompt_kv, kv_axis, stacked = _kv_leaves(pcache)

    constrain = _cache_constraint(model.config, slots, max_len, mesh, rules)
    cache = constrain(init_cache(model.config, slots, max_len))
    cache = cache._replace(index=jnp.full((slots,), p, jnp.int32))
    row_keys = jax.random.split(key, rows)
    group_of_slot = jnp.arange(slots, dtype=jnp.int32) // slots_g

    def refill(c, want):
        """Idle slots in ``want`` take their group's next waiting rollouts (in row order)."""
        want_g = want.reshape(groups, slots_g)
        rank = jnp.cumsum(want_g, axis=1) - 1
        local = c["next"][:, None] + rank  # group-local row each wanting slot would take
        take = want_g & (local < rows_g)
        nxt = c["next"] + jnp.sum(take, axis=1, dtype=jnp.int32)
        take, local = take.reshape(slots), jnp.where(take, local, 0).reshape(slots)
        row = jnp.where(take, group_of_slot * rows_g + local, c["row"])
        src = (local // k).reshape(groups, slots_g)  # group-local prompt of the new row
        cache = c["cache"]

        def copy_prompts(cache):
            leaves, _, _ = _kv_leaves(cache)
            sel = take.reshape((1,) * kv_axis + (slots,) + (1,) * (leaves[0].ndim - kv_axis - 1))
            new = []
            for buf, pk in zip(leaves, prompt_kv, strict=True):
                head = jax.lax.slice_in_dim(buf, 0, p, axis=kv_axis + 1)
                gathered = _take_rows(pk, kv_axis, src, groups)
                head = jnp.where(sel, gathered.astype(buf.dtype), head)
                new.append(jax.lax.dynamic_update_slice_in_dim(buf, head, 0, axis=kv_axis + 1))
            return _with_kv(cache, new, stacked)

        # Copying prompt caches touches every slot's prompt columns: skip it on the (most)
        # steps where no slot is refilled.
        cache = jax.lax.cond(jnp.any(take), copy_prompts, lambda x: x, cache)
        src_mask = _take_rows(prompt_mask, 0, src, groups)
        src_len = _take_rows(prompt_lengths, 0, src, groups)
        key_mask = jnp.where(
            take[:, None], jnp.pad(src_mask, ((0, 0), (0, max_len - p))), cache.key_mask
        )
        cache = cache._replace(
            key_mask=key_mask,
            index=jnp.where(take, p, cache.index),
            lengths=jnp.where(take, src_len, cache.lengths),
        )
        h = jnp.where(take[:, None], _take_rows(h_prompt, 0, src, groups), c["h"])
        return dict(
            c,
            cache=constrain(cache),
            next=nxt,
            row=row,
            active=take | (c["active"] & ~want),
            t=jnp.where(take, 0, c["t"]),
            h=h,
        )

    def step(c):
        logits = model.unembed(c["h"])  # [S, V] float32
        active, t, row = c["active"], c["t"], c["row"]
        keys = jax.vmap(jax.random.fold_in)(row_keys[row], t)
        tok, lp = select_tokens(keys, logits, s.temperature, s.top_p)
        tok = jnp.where(active, tok, s.pad_id)
        is_eos = jnp.isin(tok, jnp.asarray(s.eos_ids, jnp.int32)) if s.eos_ids else False
        is_eos = active & is_eos
        finished = active & (is_eos | (t + 1 >= n))
        going = active & ~finished

        # Record the draws at (row, t) of the outputs: an idle slot's write is dropped.
        local = jnp.where(active, row % rows_g, rows_g).reshape(groups, slots_g)
        cols = t.reshape(groups, slots_g)
        put = lambda buf, v: _put_rows(buf, local, cols, v, groups)
        out = dict(
            tokens=put(c["tokens"], tok),
            logprobs=put(c["logprobs"], jnp.where(active, lp, 0.0)),
            mask=put(c["mask"], active),
            done=_put_rows(c["done"], local, None, is_eos, groups),
        )
        # Feed each going row's token at its slot (P + t); the others write a masked slot.
        cache = c["cache"]
        cache = cache._replace(index=jnp.where(going, p + t, p))
        h, cache = model.hidden(tok[:, None], cache=cache, attention_mask=going[:, None])
        c = dict(c, **out, cache=constrain(cache), h=h[:, 0], t=jnp.where(going, t + 1, t))
        c["active"] = going
        return refill(c, ~going)

    c = dict(
        cache=cache,
        next=jnp.zeros((groups,), jnp.int32),
        row=jnp.zeros((slots,), jnp.int32),
        active=jnp.zeros((slots,), bool),
        t=jnp.zeros((slots,), jnp.int32),
        h=jnp.zeros((slots, h_prompt.shape[-1]), h_prompt.dtype),
        tokens=jnp.full((rows, n), s.pad_id, jnp.int32),
        logprobs=jnp.zeros((rows, n), jnp.float32),
        mask=jnp.zeros((rows, n), bool),
        done=jnp.zeros((rows,), bool),
    )
    c = refill(c, jnp.ones((slots,), bool))
    c = jax.lax.while_loop(lambda c: jnp.any(c["active"]), step, c)
    prompts, prompt_mask = _repeat_prompts(prompt_tokens, prompt_lengths, k)
    return _rollout(prompts, prompt_mask, c["tokens"], c["logprobs"], c["mask"], c["done"])


class ContinuousEngine(JittedEngine):
    """The continuous-batching sampler (module docstring) behind the rollout-engine interface.

    num_slots: decode slots per call (0: one per rollout, i.e. every rollout starts at once and
    only the early exit of finished rows and the bounded attention remain); clamped to the
    call's B * K rollouts and rounded to a multiple of the batch mesh axes' size.
    """

    def __init__(self, graphdef, settings: SamplingSettings, mesh: Mesh, rules, num_slots=0):
        num_decode_slots(num_slots, 1, 1)  # rejects a negative count now, not at the first call
        self.num_slots = int(num_slots)
        super().__init__(
            _continuous_impl, graphdef, settings, mesh, rules, num_slots=self.num_slots
        )


def continuous_sample(
    model: Transformer,
    prompt_tokens: jax.Array,
    prompt_lengths: jax.Array,
    key: jax.Array,
    *,
    max_new_tokens: int,
    num_samples: int = 1,
    temperature: float = 1.0,
    top_p: float = 1.0,
    eos_ids: tuple[int, ...] = (),
    pad_id: int = 0,
    num_slots: int = 0,
    mesh: Mesh | None = None,
    rules: shd.LogicalRules = shd.DEFAULT_RULES,
) -> Rollout:
    """``rollout.sample`` with continuous batching over ``num_slots`` decode slots (module
    docstring); the other arguments as ``rollout.sample``. Compiled once per (model structure,
    B, P, settings, num_slots, mesh)."""
    s = SamplingSettings(max_new_tokens, num_samples, temperature, top_p, eos_ids, pad_id)
    _check_settings(s)
    _check_prompts(prompt_tokens, prompt_lengths, mesh, rules)
    num_decode_slots(num_slots, 1, 1)
    graphdef, state = nnx.split(model)
    rules = tuple(tuple(r) for r in rules)
    fn = _jitted(_continuous_impl, graphdef, s, mesh, rules, num_slots=int(num_slots))
    return fn(state, prompt_tokens, prompt_lengths, key)
