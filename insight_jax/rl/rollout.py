"""Batched sampling of K completions per prompt with a KV cache, inside one jit.

Layout. Prompts come LEFT-padded, [B, P] with lengths [B] (``tokenizers.encode_batch``), so
every prompt ends at column P - 1 and completion token t of every row sits at column P + t.
Each prompt is repeated K times (rows b*K .. b*K + K - 1 are prompt b: reshape to [B, K] for
group-relative advantages). Row r draws token t with key fold_in(split(key, B*K)[r], t), so the
draws do not depend on batch sharding and the cached and naive samplers agree token for token.

Log-prob convention. ``Rollout.logprobs[r, t] = log_softmax(logits / T)[token]``: the policy at
temperature T *before* top-p filtering, i.e. what ``token_logprobs(model, sequences,
sequence_mask, temperature=T)`` recomputes (see ``Rollout.sequence_logprobs``). Top-p only
restricts which tokens can be drawn. Greedy mode (temperature 0) reports T = 1 log-probs.

Cache. Each prompt is prefilled once ([B, P] rows, logits of the last column only) and its
cache copied to its K samples; decode then appends one slot per step to a cache of P + N slots
(models/transformer.py ``KVCache``).

Stopping. A row is done after it emits any of ``eos_ids`` (Qwen's tokenizers have several; the
EOS token is part of the completion,
mask True); later columns hold ``pad_id`` with mask False and log-prob 0. The decode loop is a
``lax.while_loop`` that exits once every row is done or max_new_tokens are drawn.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Protocol

import jax
import jax.numpy as jnp
from flax import nnx, struct
from jax.sharding import Mesh

from insight_jax import sharding as shd
from insight_jax.models.transformer import (
    Transformer,
    cache_logical_axes,
    default_positions,
    init_cache,
    logprobs_from_logits,
)


@struct.dataclass
class Rollout:
    """K completions per prompt. BK = B * K rows, N = max_new_tokens, P = prompt columns.

    tokens:        [BK, N] int32 completion tokens (pad_id after EOS / unused columns).
    logprobs:      [BK, N] float32 sampling log-probs (module docstring), 0 where ~mask.
    mask:          [BK, N] bool, real completion tokens (EOS included).
    lengths:       [BK] int32 = mask.sum(-1).
    finished:      [BK] bool, the row emitted EOS (False: truncated at N).
    sequences:     [BK, P + N] int32 = [left-padded prompt | completion].
    sequence_mask: [BK, P + N] bool real tokens of ``sequences``; feed both to token_logprobs.
    prompt_len:    P (static).
    """

    tokens: jax.Array
    logprobs: jax.Array
    mask: jax.Array
    lengths: jax.Array
    finished: jax.Array
    sequences: jax.Array
    sequence_mask: jax.Array
    prompt_len: int = struct.field(pytree_node=False)

    @property
    def loss_mask(self) -> jax.Array:
        """[BK, P + N - 1] bool, aligned with token_logprobs: target j + 1 is a completion
        token."""
        return jnp.pad(self.mask, ((0, 0), (self.prompt_len - 1, 0)))

    @property
    def sequence_logprobs(self) -> jax.Array:
        """[BK, P + N - 1] sampling log-probs aligned with ``token_logprobs(sequences, ...)``
        (0 on prompt targets): the "old" log-probs of a PPO/GRPO ratio."""
        return jnp.pad(self.logprobs, ((0, 0), (self.prompt_len - 1, 0)))


# ----------------------------------------------------------------------------------------------
# Token selection (pure)
# ----------------------------------------------------------------------------------------------


def _ordered_key(x: jax.Array) -> jax.Array:
    """float32 -> int32 with the same order (flip the magnitude bits of negative floats)."""
    i = jax.lax.bitcast_convert_type(x.astype(jnp.float32), jnp.int32)
    return jnp.where(i >= 0, i, i ^ 0x7FFFFFFF)


def top_p_filter(logits: jax.Array, top_p: float) -> jax.Array:
    """Keep the nucleus: the fewest highest-probability tokens whose mass reaches top_p.

    logits: [B, V]. In descending order, token i is kept iff the mass of the tokens before it
    is < top_p (so the argmax always stays); ties with the last kept logit are kept too; the
    rest become -inf. Equivalently, keep logits >= c with c the largest logit value such that
    mass(logits >= c) >= top_p. c is found exactly by bisection over the 2^32 float32 bit
    patterns (32 masked sums over V) instead of sorting the vocabulary, which costs about as
    much as a decode step of a 0.5B model on CPU. Masses are float32 sums, so a cutoff that
    lands within rounding of top_p may keep or drop one tail token.
    """
    logits = logits.astype(jnp.float32)
    if top_p >= 1.0:  # everything; also avoids float rounding of a total mass just below 1
        return logits
    probs = jax.nn.softmax(logits, axis=-1)
    keys = _ordered_key(logits)
    mass_at_least = lambda c: jnp.sum(jnp.where(keys >= c[:, None], probs, 0.0), axis=-1)
    # Invariant: mass(lo) >= top_p > mass(hi). Every logit is >= the min, none >= max + 1.
    lo = jnp.min(keys, axis=-1)
    hi = jnp.max(keys, axis=-1) + 1

    def halve(_, bounds):
        lo, hi = bounds
        mid = (lo >> 1) + (hi >> 1) + (lo & hi & 1)  # floor((lo + hi) / 2) without overflow
        ok = mass_at_least(mid) >= top_p
        return jnp.where(ok, mid, lo), jnp.where(ok, hi, mid)

    lo, _ = jax.lax.fori_loop(0, 32, halve, (lo, hi))
    return jnp.where(keys >= lo[:, None], logits, -jnp.inf)


def select_tokens(
    keys: jax.Array, logits: jax.Array, temperature: float, top_p: float
) -> tuple[jax.Array, jax.Array]:
    """Draw one token per row. keys: [B] keys, logits: [B, V] float32.

    Returns (tokens [B] int32, log_softmax(logits / T)[token] [B] float32). temperature == 0:
    argmax, with T = 1 log-probs. top_p >= 1 skips the nucleus filter.
    """
    logits = logits.astype(jnp.float32)
    if temperature == 0:
        tokens = jnp.argmax(logits, axis=-1).astype(jnp.int32)
        return tokens, logprobs_from_logits(logits, tokens, 1.0)
    scaled = logits / temperature
    filtered = top_p_filter(scaled, top_p) if top_p < 1.0 else scaled
    tokens = jax.vmap(jax.random.categorical)(keys, filtered).astype(jnp.int32)
    return tokens, logprobs_from_logits(scaled, tokens, 1.0)


# ----------------------------------------------------------------------------------------------
# The shared decode loop
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SamplingSettings:
    """Compile-time sampling settings (hashable: part of the jit cache key)."""

    max_new_tokens: int
    num_samples: int
    temperature: float
    top_p: float
    eos_ids: tuple[int, ...]  # a row stops at any of them (empty: never stops early)
    pad_id: int

    def __post_init__(self):
        object.__setattr__(self, "eos_ids", tuple(int(i) for i in self.eos_ids))


def _repeat_prompts(prompt_tokens, prompt_lengths, k):
    tokens = jnp.repeat(prompt_tokens, k, axis=0)
    lengths = jnp.repeat(prompt_lengths, k, axis=0)
    p = tokens.shape[1]
    mask = jnp.arange(p)[None, :] >= (p - lengths)[:, None]  # left padding
    return tokens, mask


def _generate(first_logits, aux, advance, row_keys, s: SamplingSettings):
    """Draw N tokens. ``advance(aux, t, prev_token, prev_valid) -> (logits [BK, V], aux)``
    feeds token t - 1 to the model and returns the distribution of token t."""
    bk, n = first_logits.shape[0], s.max_new_tokens

    def draw(c, t, logits):
        keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(row_keys, t)
        tok, lp = select_tokens(keys, logits, s.temperature, s.top_p)
        live = ~c["done"]
        tok = jnp.where(live, tok, s.pad_id)
        lp = jnp.where(live, lp, 0.0)
        is_eos = jnp.isin(tok, jnp.asarray(s.eos_ids, jnp.int32)) if s.eos_ids else False
        done = c["done"] | (live & is_eos)
        put = lambda buf, x: jax.lax.dynamic_update_slice(buf, x[:, None], (0, t))
        return dict(
            c,
            t=t + 1,
            done=done,
            tokens=put(c["tokens"], tok),
            logprobs=put(c["logprobs"], lp),
            mask=put(c["mask"], live),
            last=tok,
            last_valid=live,
        )

    c = dict(
        t=jnp.zeros((), jnp.int32),
        aux=aux,
        done=jnp.zeros((bk,), bool),
        tokens=jnp.full((bk, n), s.pad_id, jnp.int32),
        logprobs=jnp.zeros((bk, n), jnp.float32),
        mask=jnp.zeros((bk, n), bool),
        last=jnp.zeros((bk,), jnp.int32),
        last_valid=jnp.zeros((bk,), bool),
    )
    c = draw(c, jnp.zeros((), jnp.int32), first_logits)

    def cond(c):
        return (c["t"] < n) & ~jnp.all(c["done"])

    def body(c):
        logits, aux = advance(c["aux"], c["t"], c["last"], c["last_valid"])
        return draw(dict(c, aux=aux), c["t"], logits)

    c = jax.lax.while_loop(cond, body, c)
    return c["tokens"], c["logprobs"], c["mask"], c["done"]


def _rollout(prompts, prompt_mask, tokens, logprobs, mask, done) -> Rollout:
    return Rollout(
        tokens=tokens,
        logprobs=logprobs,
        mask=mask,
        lengths=jnp.sum(mask, axis=-1, dtype=jnp.int32),
        finished=done,
        sequences=jnp.concatenate([prompts, tokens], axis=1),
        sequence_mask=jnp.concatenate([prompt_mask, mask], axis=1),
        prompt_len=prompts.shape[1],
    )


def _cached_impl(state, prompt_tokens, prompt_lengths, key, *, graphdef, s, mesh, rules):
    model: Transformer = nnx.merge(graphdef, state)
    k = s.num_samples
    b, p = prompt_tokens.shape
    max_len = p + s.max_new_tokens
    # Prefill each prompt once, then copy its cache to its K samples: K x fewer prefill FLOPs.
    _, prompt_mask = _repeat_prompts(prompt_tokens, prompt_lengths, 1)
    cache = _cache_constraint(model.config, b, max_len, mesh, rules)(
        init_cache(model.config, b, max_len)
    )
    logits, cache = model(prompt_tokens, cache=cache, attention_mask=prompt_mask, last_only=True)
    constrain = _cache_constraint(model.config, b * k, max_len, mesh, rules)
    cache = constrain(cache.repeat_rows(k))

    def advance(cache, t, prev, prev_valid):
        del t  # the cache tracks its own write slot and positions
        logits, cache = model(prev[:, None], cache=cache, attention_mask=prev_valid[:, None])
        return logits[:, 0], constrain(cache)

    row_keys = jax.random.split(key, b * k)
    out = _generate(jnp.repeat(logits[:, -1], k, axis=0), cache, advance, row_keys, s)
    prompts, prompt_mask = _repeat_prompts(prompt_tokens, prompt_lengths, k)
    return _rollout(prompts, prompt_mask, *out)


def _naive_impl(state, prompt_tokens, prompt_lengths, key, *, graphdef, s, mesh, rules):
    del mesh, rules
    model: Transformer = nnx.merge(graphdef, state)
    prompts, prompt_mask = _repeat_prompts(prompt_tokens, prompt_lengths, s.num_samples)
    bk, p = prompts.shape
    n = s.max_new_tokens
    buf = jnp.concatenate([prompts, jnp.full((bk, n), s.pad_id, jnp.int32)], axis=1)
    buf_mask = jnp.concatenate([prompt_mask, jnp.zeros((bk, n), bool)], axis=1)

    def logits_at(buf, buf_mask, col):
        # Full forward over the whole buffer every step: O(N * (P + N)^2) reference.
        logits, _ = model(buf, default_positions(buf_mask), attention_mask=buf_mask)
        return jax.lax.dynamic_index_in_dim(logits, col, axis=1, keepdims=False)

    def advance(aux, t, prev, prev_valid):
        buf, buf_mask = aux
        col = p + t - 1
        buf = jax.lax.dynamic_update_slice(buf, prev[:, None], (0, col))
        buf_mask = jax.lax.dynamic_update_slice(buf_mask, prev_valid[:, None], (0, col))
        return logits_at(buf, buf_mask, col), (buf, buf_mask)

    row_keys = jax.random.split(key, bk)
    first = logits_at(buf, buf_mask, p - 1)
    out = _generate(first, (buf, buf_mask), advance, row_keys, s)
    return _rollout(prompts, prompt_mask, *out)


def _cache_constraint(config, batch, max_len, mesh, rules):
    """with_sharding_constraint for the cache (batch over data axes, kv heads over tensor where
    divisible) so the while-loop carry keeps one layout; identity without a mesh."""
    if mesh is None:
        return lambda cache: cache
    shapes = jax.eval_shape(lambda: init_cache(config, batch, max_len))
    shardings = jax.tree.map(
        lambda sds, axes: shd.logical_to_sharding(axes, mesh, rules, shape=sds.shape, strict=False),
        shapes,
        cache_logical_axes(config),
    )
    return lambda cache: jax.lax.with_sharding_constraint(cache, shardings)


@functools.lru_cache(maxsize=32)
def _jitted(impl, graphdef, s: SamplingSettings, mesh: Mesh | None, rules, **options):
    """impl(state, prompt_tokens, prompt_lengths, key) jitted once per (impl, model structure,
    settings, mesh, rules, the engine's static options)."""
    fn = functools.partial(impl, graphdef=graphdef, s=s, mesh=mesh, rules=rules, **options)
    if mesh is None:
        return jax.jit(fn)
    data = shd.data_sharding(mesh, rules)
    # State: None = keep the arrays' own (already sharded) layout.
    return jax.jit(fn, in_shardings=(None, data, data, shd.replicated(mesh)), out_shardings=data)


def _check_settings(s: SamplingSettings) -> None:
    if s.max_new_tokens < 1 or s.num_samples < 1:
        raise ValueError(f"need max_new_tokens >= 1 and num_samples >= 1, got {s}")
    if s.temperature < 0 or not 0 < s.top_p <= 1:
        raise ValueError(f"need temperature >= 0 and 0 < top_p <= 1, got {s}")


def _check_prompts(prompt_tokens, prompt_lengths, mesh, rules) -> None:
    if prompt_tokens.ndim != 2 or prompt_lengths.shape != prompt_tokens.shape[:1]:
        raise ValueError(
            f"prompt_tokens [B, P] and prompt_lengths [B] expected, got "
            f"{prompt_tokens.shape} and {prompt_lengths.shape}"
        )
    if mesh is not None:
        multiple = shd.batch_size_multiple(mesh, rules)
        if prompt_tokens.shape[0] % multiple:
            raise ValueError(
                f"{prompt_tokens.shape[0]} prompts cannot be split over the batch mesh axes "
                f"{shd.batch_axes(mesh, rules)} (size {multiple})"
            )


def _run(impl, model, prompt_tokens, prompt_lengths, key, *, mesh, rules, **settings):
    s = SamplingSettings(**settings)
    _check_settings(s)
    _check_prompts(prompt_tokens, prompt_lengths, mesh, rules)
    graphdef, state = nnx.split(model)
    rules = tuple(tuple(r) for r in rules)
    return _jitted(impl, graphdef, s, mesh, rules)(state, prompt_tokens, prompt_lengths, key)


# ----------------------------------------------------------------------------------------------
# The rollout-engine interface of the trainer
# ----------------------------------------------------------------------------------------------


class RolloutEngine(Protocol):
    """What the trainer needs from a sampler: K completions per prompt as a `Rollout`.

    An engine is built once per run from (graphdef, settings, mesh, rules), so it can compile
    and hold whatever it needs; `generate` takes the policy's parameter state (an nnx.State laid
    out as the learner keeps it), host prompts and a key, and returns device arrays split over
    the batch axes. Engines are registered in rl/engines.py under the names `rl.rollout_engine`
    selects.
    """

    settings: SamplingSettings

    def generate(self, model_state, prompt_tokens, prompt_lengths, key: jax.Array) -> Rollout: ...


def replicated_key(key: jax.Array, mesh: Mesh) -> jax.Array:
    """``key`` replicated on ``mesh`` with one canonical sharding spec.

    A key fresh out of a jit's first (compiling) call carries its data sharded as P(None,),
    later calls' as P(): equal shardings, but different entries of a jit's cache, so an engine
    fed the first RL step's key compiled its whole rollout a second time at step two."""
    data = jax.device_put(jax.random.key_data(key), shd.replicated(mesh))
    return jax.random.wrap_key_data(data, impl=jax.random.key_impl(key))


class JittedEngine:
    """An engine that is one jitted sampler impl(state, prompts, lengths, key) of the ``_impl``
    form; prompts are placed on the mesh explicitly, so a call makes no implicit host
    transfer, and keys get one canonical layout (``replicated_key``)."""

    def __init__(self, impl, graphdef, settings: SamplingSettings, mesh: Mesh, rules, **options):
        _check_settings(settings)
        self.settings = settings
        self.mesh = mesh
        self.rules = tuple(tuple(r) for r in rules)
        self._fn = _jitted(impl, graphdef, settings, mesh, self.rules, **options)
        self._data = shd.data_sharding(mesh, self.rules)

    def generate(self, model_state, prompt_tokens, prompt_lengths, key: jax.Array) -> Rollout:
        _check_prompts(prompt_tokens, prompt_lengths, self.mesh, self.rules)
        tokens, lengths = jax.device_put((prompt_tokens, prompt_lengths), self._data)
        return self._fn(model_state, tokens, lengths, replicated_key(key, self.mesh))


class DenseEngine(JittedEngine):
    """The KV-cache sampler of this module (`sample`) behind the engine interface: every row
    decodes until all rows are done or max_new_tokens are drawn (a dense loop)."""

    def __init__(self, graphdef, settings: SamplingSettings, mesh: Mesh, rules):
        super().__init__(_cached_impl, graphdef, settings, mesh, rules)


def sample(
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
    mesh: Mesh | None = None,
    rules: shd.LogicalRules = shd.DEFAULT_RULES,
) -> Rollout:
    """K = num_samples completions per prompt with the KV-cache sampler (module docstring).

    prompt_tokens: [B, P] int32 LEFT-padded, prompt_lengths: [B] int32 (>= 1 each).
    The cache holds P + max_new_tokens slots. Compiled once per (model structure, B, P, the
    keyword settings, mesh); temperature/top_p/eos are compile-time constants. With a mesh:
    prompts and all outputs are split over the batch axes (B must divide evenly), parameters
    stay where they are (e.g. ``create_sharded_model``), the key is replicated.
    """
    return _run(
        _cached_impl,
        model,
        prompt_tokens,
        prompt_lengths,
        key,
        mesh=mesh,
        rules=rules,
        max_new_tokens=max_new_tokens,
        num_samples=num_samples,
        temperature=temperature,
        top_p=top_p,
        eos_ids=eos_ids,
        pad_id=pad_id,
    )


def naive_sample(
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
    mesh: Mesh | None = None,
    rules: shd.LogicalRules = shd.DEFAULT_RULES,
) -> Rollout:
    """``sample`` without a cache: a full forward over [prompt | completion so far] per token.

    Same keys, same outputs as ``sample`` (up to float rounding); the reference for tests and
    the speed benchmark.
    """
    return _run(
        _naive_impl,
        model,
        prompt_tokens,
        prompt_lengths,
        key,
        mesh=mesh,
        rules=rules,
        max_new_tokens=max_new_tokens,
        num_samples=num_samples,
        temperature=temperature,
        top_p=top_p,
        eos_ids=eos_ids,
        pad_id=pad_id,
    )
