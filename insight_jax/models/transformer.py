"""Decoder-only transformer of the Llama / Qwen2 / Qwen3 family, in Flax NNX.

Pre-norm blocks: ``x += Attn(RMSNorm(x)); x += SwiGLU(RMSNorm(x))``, rotary position embeddings
(half-split "rotate_half" convention, as in Hugging Face), grouped-query attention, optional
per-head q/k RMSNorm (Qwen3), optional q/k/v bias (Qwen2), tied or untied embeddings.

Parameter tree (names mirror the Hugging Face checkpoints so weight loading is a rename plus a
reshape/transpose; logical axes in brackets, HF tensor on the right):

    embed_tokens.embedding          [vocab, embed]               model.embed_tokens.weight
    layers[i].input_layernorm.scale [norm]                       ...input_layernorm.weight
    layers[i].self_attn.q_proj.kernel [embed, q_heads, head_dim] ...q_proj.weight.T reshaped
    layers[i].self_attn.q_proj.bias   [q_heads, head_dim]        ...q_proj.bias (qkv_bias only)
    layers[i].self_attn.k_proj.kernel [embed, kv_heads, head_dim] (v_proj likewise)
    layers[i].self_attn.o_proj.kernel [q_heads, head_dim, embed] ...o_proj.weight.T reshaped
    layers[i].self_attn.q_norm.scale  [head_dim]                 ...q_norm.weight (qk_norm only)
    layers[i].post_attention_layernorm.scale [norm]
    layers[i].mlp.gate_proj.kernel  [embed, mlp]                 ...gate_proj.weight.T (up_proj too)
    layers[i].mlp.down_proj.kernel  [mlp, embed]                 ...down_proj.weight.T
    norm.scale                      [norm]                       model.norm.weight
    lm_head.kernel                  [embed, vocab]               lm_head.weight.T (untied only)

Every parameter carries its logical axis names in the ``out_sharding`` variable metadata
(flax >= 0.12 spelling); ``insight_jax.sharding`` maps them to mesh axes with rules kept as data.

Attention masking and the KV cache. A forward pass takes ``attention_mask[B, T]`` (True = real
token). Keys are attended iff they are real tokens and not in the future (by slot order), so left
and right padding both work. RoPE positions are passed explicitly; the default (and the
convention everything here uses) is ``position = number of real tokens before this one``.
With a cache, the T new keys/values are written at slots ``[cache.index, cache.index + T)`` of
fixed-size buffers, so a decode loop has static shapes. A cache may instead carry one write slot
per row (``index`` of shape [B], one token per call): the continuous-batching engine
(rl/continuous.py) refills finished rows with new prompts, so rows sit at different depths; its
decode attention then reads only the slots below the deepest row (``blocked_decode_attention``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

# Large finite negative for masked attention scores: a query with every key masked (a padding
# query) gets a uniform softmax instead of NaN, so NaNs never reach gradients.
_MASK_VALUE = -0.7 * float(jnp.finfo(jnp.float32).max)

# Per-layer rematerialisation (``TransformerConfig.remat``): what a layer keeps for the backward
# pass. "none": everything (no recompute); "full": only the layer's input (recompute the whole
# layer); "dots": the outputs of the weight matmuls (no batch dimensions), recomputing norms,
# activations and attention scores, whose [B, H, T, S] tensors dominate at long sequences.
REMAT_POLICIES: dict[str, Any] = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


# ----------------------------------------------------------------------------------------------
# Config
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    """Shape and numerics of the policy. Hashable, so it can be a static jit argument.

    ``dtype`` is the compute dtype of activations and matmuls; ``param_dtype`` the storage dtype
    of parameters (fp32 master weights with bf16 compute: param_dtype=float32, dtype=bfloat16).
    Logits and log-probs are always float32.
    """

    vocab_size: int
    num_layers: int
    embed_dim: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    mlp_dim: int
    rope_theta: float = 10_000.0
    rms_eps: float = 1e-6
    qk_norm: bool = False
    qkv_bias: bool = False
    tie_embeddings: bool = False
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    max_seq_len: int = 2048
    init_std: float = 0.02  # normal init of kernels/embeddings (HF initializer_range)
    # Llama 3 RoPE scaling (factor, low_freq_factor, high_freq_factor,
    # original_max_position_embeddings); None: plain RoPE. See ``rope_inv_freq``.
    rope_scaling: tuple[float, float, float, int] | None = None
    # Memory and compile time (no effect on the function computed):
    # scan_layers: the layers' parameters stacked on a leading "layers" axis and run by one
    #   lax.scan, so compile time stays flat in depth;
    # remat: per-layer rematerialisation policy, a name in REMAT_POLICIES; it takes effect with
    #   scan_layers (unrolled, XLA on CPU schedules every layer's recompute early: no saving);
    # logits_chunk: token_logprobs computes [B, chunk, V] logits at a time (0: all at once).
    scan_layers: bool = False
    remat: str = "none"
    logits_chunk: int = 0

    def __post_init__(self):
        # Accept "bfloat16" strings from ml_collections configs; store canonical np dtypes.
        object.__setattr__(self, "dtype", jnp.dtype(self.dtype))
        object.__setattr__(self, "param_dtype", jnp.dtype(self.param_dtype))
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"num_kv_heads={self.num_kv_heads} must divide num_heads={self.num_heads}"
            )
        if self.head_dim % 2:
            raise ValueError(f"RoPE needs an even head_dim, got {self.head_dim}")
        if self.remat not in REMAT_POLICIES:
            raise ValueError(f"remat={self.remat!r}; allowed: {', '.join(REMAT_POLICIES)}")
        if self.logits_chunk < 0:
            raise ValueError(f"logits_chunk must be >= 0, got {self.logits_chunk}")
        if self.rope_scaling is not None:
            rs = tuple(self.rope_scaling)
            if len(rs) != 4 or not rs[0] >= 1 or not 0 < rs[1] < rs[2] or rs[3] <= 0:
                raise ValueError(
                    "rope_scaling must be (factor >= 1, low_freq_factor, high_freq_factor > "
                    f"low_freq_factor > 0, original_max_position_embeddings > 0), got {rs}"
                )
            object.__setattr__(
                self, "rope_scaling", (float(rs[0]), float(rs[1]), float(rs[2]), int(rs[3]))
            )

    # Presets ----------------------------------------------------------------------------------

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> TransformerConfig:
        """Config by name from ``PRESETS`` (e.g. from an ml_collections string), with overrides."""
        if name == "tiny":
            return cls.tiny(**overrides)
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; known: tiny, {', '.join(PRESETS)}")
        return cls(**{**dict(zip(_PRESET_FIELDS, PRESETS[name], strict=True)), **overrides})

    @classmethod
    def tiny(cls, vocab_size: int = 128, **overrides: Any) -> TransformerConfig:
        """A 2-layer GQA model (4 q heads, 2 kv heads, qk-norm) that runs in milliseconds on a
        laptop CPU: tests and smoke runs."""
        base = dict(
            zip(
                _PRESET_FIELDS,
                (vocab_size, 2, 128, 4, 2, 32, 256, 1e4, 1e-6, True, False, False, 512),
                strict=True,
            )
        )
        return cls(**{**base, **overrides})

    @classmethod
    def qwen3_0_6b(cls, **overrides: Any) -> TransformerConfig:
        return cls.preset("qwen3_0_6b", **overrides)

    @classmethod
    def qwen3_4b(cls, **overrides: Any) -> TransformerConfig:
        return cls.preset("qwen3_4b", **overrides)

    @classmethod
    def qwen2_5_0_5b(cls, **overrides: Any) -> TransformerConfig:
        return cls.preset("qwen2_5_0_5b", **overrides)

    @classmethod
    def r1_distill_qwen_7b(cls, **overrides: Any) -> TransformerConfig:
        return cls.preset("r1_distill_qwen_7b", **overrides)

    @classmethod
    def llama3_8b(cls, **overrides: Any) -> TransformerConfig:
        return cls.preset("llama3_8b", **overrides)

    # Accounting -------------------------------------------------------------------------------

    def num_params(self) -> int:
        """Exact parameter count of ``Transformer(self)``."""
        e, h, k, d, f, v = (
            self.embed_dim,
            self.num_heads,
            self.num_kv_heads,
            self.head_dim,
            self.mlp_dim,
            self.vocab_size,
        )
        attn = e * h * d + 2 * e * k * d + h * d * e
        attn += (h * d + 2 * k * d) if self.qkv_bias else 0
        attn += 2 * d if self.qk_norm else 0
        layer = attn + 3 * e * f + 2 * e
        head = 0 if self.tie_embeddings else e * v
        return v * e + self.num_layers * layer + e + head

    def forward_flops_per_token(self, context_len: int) -> float:
        """Matmul FLOPs of one token's forward pass attending to ``context_len`` keys.

        2 * (matmul weights, embedding lookup excluded, lm head included)
        + 4 * layers * heads * head_dim * context  (q.k scores and probs.v).
        """
        e, h, k, d, f = (
            self.embed_dim,
            self.num_heads,
            self.num_kv_heads,
            self.head_dim,
            self.mlp_dim,
        )
        per_layer = e * h * d + 2 * e * k * d + h * d * e + 3 * e * f
        weights = self.num_layers * per_layer + e * self.vocab_size
        attention = 2 * self.num_layers * h * d * context_len
        return 2.0 * (weights + attention)


# Shapes from each checkpoint's public config.json (random weights unless loaded).
_PRESET_FIELDS = (
    "vocab_size", "num_layers", "embed_dim", "num_heads", "num_kv_heads", "head_dim", "mlp_dim",
    "rope_theta", "rms_eps", "qk_norm", "qkv_bias", "tie_embeddings", "max_seq_len",
)  # fmt: skip
PRESETS: dict[str, tuple] = {
    # name: (vocab, layers, embed, heads, kv_heads, head_dim, mlp, theta, eps,
    #        qk_norm, qkv_bias, tie_embeddings, max_seq_len)
    "qwen3_0_6b": (151_936, 28, 1024, 16, 8, 128, 3072, 1e6, 1e-6, True, False, True, 40_960),
    "qwen3_4b": (151_936, 36, 2560, 32, 8, 128, 9728, 1e6, 1e-6, True, False, True, 40_960),
    "qwen2_5_0_5b": (151_936, 24, 896, 14, 2, 64, 4864, 1e6, 1e-6, False, True, True, 32_768),
    # deepseek-ai/DeepSeek-R1-Distill-Qwen-7B (a Qwen2.5-Math-7B body).
    "r1_distill_qwen_7b": (
        152_064, 28, 3584, 28, 4, 128, 18_944, 1e4, 1e-6, False, True, False, 131_072
    ),
    # meta-llama/Meta-Llama-3-8B: Llama 3.0; 3.1's "llama3" rope_scaling is not implemented.
    "llama3_8b": (128_256, 32, 4096, 32, 8, 128, 14_336, 5e5, 1e-5, False, False, False, 8192),
}  # fmt: skip


# ----------------------------------------------------------------------------------------------
# Pure building blocks
# ----------------------------------------------------------------------------------------------


def rms_norm(x: jax.Array, scale: jax.Array, eps: float) -> jax.Array:
    """y = x / sqrt(mean(x^2, -1) + eps) * scale, statistics in float32 (HF RMSNorm)."""
    x32 = x.astype(jnp.float32)
    y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
    return y.astype(x.dtype) * scale.astype(x.dtype)


def rope_inv_freq(
    head_dim: int, theta: float, scaling: tuple[float, float, float, int] | None = None
) -> jax.Array:
    """Inverse frequencies inv_freq_i = theta^(-2i/D), i < D/2, float32 [D/2].

    Llama 3 scaling (factor s, low_freq_factor l, high_freq_factor h, original context C): with
    wavelength w_i = 2 pi / inv_freq_i, long wavelengths (w > C / l) are divided by s, short ones
    (w < C / h) kept, and the band between interpolates with smooth = (C / w - l) / (h - l):
        inv_freq'_i = (1 - smooth) inv_freq_i / s + smooth inv_freq_i.
    """
    inv_freq = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
    if scaling is None:
        return inv_freq
    factor, low, high, context = scaling
    wavelen = 2 * math.pi / inv_freq
    smooth = (context / wavelen - low) / (high - low)
    medium = (1 - smooth) * inv_freq / factor + smooth * inv_freq
    scaled = jnp.where(wavelen > context / low, inv_freq / factor, inv_freq)
    is_medium = (wavelen >= context / high) & (wavelen <= context / low)
    return jnp.where(is_medium, medium, scaled)


def apply_rope(
    x: jax.Array,
    positions: jax.Array,
    theta: float,
    scaling: tuple[float, float, float, int] | None = None,
) -> jax.Array:
    """Rotary embedding, half-split convention of HF ``rotate_half``.

    x: [B, T, H, D], positions: [B, T] int. With inv_freq from ``rope_inv_freq`` and
    angle = pos * inv_freq (shape [B, T, D/2]), x = [x1, x2] (halves of D):
        out = [x1 cos - x2 sin, x2 cos + x1 sin].
    Scores q(m).k(n) then depend on positions only through m - n.
    """
    inv_freq = rope_inv_freq(x.shape[-1], theta, scaling)
    angle = positions.astype(jnp.float32)[..., None] * inv_freq  # [B, T, D/2]
    sin = jnp.sin(angle)[:, :, None, :]
    cos = jnp.cos(angle)[:, :, None, :]
    x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return out.astype(x.dtype)


def make_attention_mask(
    key_valid: jax.Array, query_slots: jax.Array, num_key_slots: int
) -> jax.Array:
    """Boolean attention mask [B, T, S]: key s is visible to query t iff it is a real token
    (``key_valid[B, S]``) and not in the future (``s <= query_slots[B, T]``)."""
    key_slots = jnp.arange(num_key_slots, dtype=jnp.int32)
    causal = key_slots[None, None, :] <= query_slots[:, :, None]
    return causal & key_valid[:, None, :]


def gqa_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array) -> jax.Array:
    """softmax(q k^T / sqrt(D) + mask) v with grouped kv heads, scores in float32.

    q: [B, T, H, D]; k, v: [B, S, K, D] with K | H; mask: [B, T, S] bool. Query head
    h = kv * (H // K) + g uses kv head ``kv`` (HF ``repeat_kv`` order), without materialising
    repeated keys. Returns [B, T, H, D] in q.dtype.
    """
    b, t, h, d = q.shape
    kv_heads = k.shape[2]
    q = q.reshape(b, t, kv_heads, h // kv_heads, d)
    scores = jnp.einsum("btkgd,bskd->bkgts", q, k, preferred_element_type=jnp.float32)
    scores = scores * (1.0 / math.sqrt(d))
    scores = jnp.where(mask[:, None, None, :, :], scores, _MASK_VALUE)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    out = jnp.einsum("bkgts,bskd->btkgd", probs, v)
    return out.reshape(b, t, h, d)


# Slots per block of ``blocked_decode_attention``: large enough that a block's matmul amortises
# the loop step, small enough that a short row reads little past its last token.
DECODE_BLOCK = 128


def _decode_block(num_slots: int) -> int:
    """The block size for a cache of ``num_slots`` slots: DECODE_BLOCK when it divides them (the
    continuous engine pads its caches to a multiple), else the whole cache as one block."""
    return DECODE_BLOCK if num_slots % DECODE_BLOCK == 0 else num_slots


def blocked_decode_attention(
    q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array, num_slots: jax.Array, block: int
) -> jax.Array:
    """``gqa_attention`` for one query per row that reads only the first ``num_slots`` slots.

    q: [B, 1, H, D]; k, v: [B, S, K, D]; mask: [B, 1, S] bool; num_slots: [] int32, a traced
    bound (slots >= num_slots must be masked for every row); block divides S. Keys and values
    are read in blocks of ``block`` slots, ceil(num_slots / block) of them (a dynamic trip
    count), so a step's cost follows the tokens present, not the cache size:
        pass 1:  s_j = q.k_j / sqrt(D) (float32) into a [B, H, S] buffer of masked scores
        softmax: p = softmax(s) over all S slots (unread ones stay masked: probability 0)
        pass 2:  out = sum_j round(p_j) v_j, accumulated in float32
    round() casts the probabilities to v's dtype, as ``gqa_attention`` does, so in bf16 the
    sampler rounds like the learner's full forward (an online softmax, which rescales
    unnormalised bf16 terms, leaves the two ~1e-2 apart in log-prob on a peaked model). Keys
    and values are each read once; the buffer holds H floats per slot against the cache's
    2 K D. Returns [B, 1, H, D] in q.dtype.
    """
    b, t, h, d = q.shape
    if t != 1:
        raise ValueError(f"blocked decode attention takes one query per row, got {t}")
    s, kv_heads = k.shape[1], k.shape[2]
    if s % block:
        raise ValueError(f"block {block} does not divide the {s} cache slots")
    g = h // kv_heads
    q = q.reshape(b, kv_heads, g, d)
    num_blocks = (num_slots + block - 1) // block

    def score_block(j, scores):
        kb = jax.lax.dynamic_slice_in_dim(k, j * block, block, axis=1)
        sb = jnp.einsum("bkgd,bskd->bkgs", q, kb, preferred_element_type=jnp.float32)
        return jax.lax.dynamic_update_slice_in_dim(scores, sb * (1.0 / math.sqrt(d)), j * block, 3)

    scores = jnp.zeros((b, kv_heads, g, s), jnp.float32)
    scores = jax.lax.fori_loop(0, num_blocks, score_block, scores)
    scores = jnp.where(mask[:, :, None, :], scores, _MASK_VALUE)  # also every unread slot
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)

    def accumulate(j, acc):
        pb = jax.lax.dynamic_slice_in_dim(probs, j * block, block, axis=3)
        vb = jax.lax.dynamic_slice_in_dim(v, j * block, block, axis=1)
        return acc + jnp.einsum("bkgs,bskd->bkgd", pb, vb, preferred_element_type=jnp.float32)

    acc = jax.lax.fori_loop(0, num_blocks, accumulate, jnp.zeros((b, kv_heads, g, d)))
    return acc.astype(q.dtype).reshape(b, 1, h, d)


def _put_per_row(buf: jax.Array, x: jax.Array, index: jax.Array) -> jax.Array:
    """buf[r, index[r]] = x[r, 0] for every row r (buf: [B, S, ...], x: [B, 1, ...]).

    A vmapped dynamic_update_slice: a scatter with the row as a batch dimension, so a cache
    split over rows is updated where it lives."""
    put = lambda b_, x_, i: jax.lax.dynamic_update_slice_in_dim(b_, x_, i, axis=0)
    return jax.vmap(put)(buf, x, index)


def default_positions(attention_mask: jax.Array, offset: jax.Array | None = None) -> jax.Array:
    """position = (real tokens before this one) + offset; padding gets the previous position.

    attention_mask: [B, T] bool; offset: [B] (e.g. ``cache.lengths``) or None.
    """
    pos = jnp.maximum(jnp.cumsum(attention_mask.astype(jnp.int32), axis=-1) - 1, 0)
    if offset is not None:
        pos = pos + offset[:, None]
    return pos.astype(jnp.int32)


# ----------------------------------------------------------------------------------------------
# KV cache
# ----------------------------------------------------------------------------------------------


class KVCache(NamedTuple):
    """Fixed-size decode state (a pytree).

    k, v:      per layer [B, S, num_kv_heads, head_dim] (S = max cache length), compute dtype:
               a tuple of num_layers arrays, or one [num_layers, B, S, ...] array when the
               model scans over its layers (``config.scan_layers``).
    key_mask:  [B, S] bool, slot holds a real (non-padding) token.
    index:     [] int32, slots written so far; the next T tokens go to [index, index + T).
               Shared by the batch: every row writes one slot per token fed, padding included.
               Or [B] int32: row r's next token goes to slot index[r] (one token per call; the
               continuous-batching engine, rl/continuous.py).
    lengths:   [B] int32, real tokens per row = the RoPE position of the row's next token.
    """

    k: tuple[jax.Array, ...] | jax.Array
    v: tuple[jax.Array, ...] | jax.Array
    key_mask: jax.Array
    index: jax.Array
    lengths: jax.Array

    @property
    def max_len(self) -> int:
        return self.key_mask.shape[1]

    def repeat_rows(self, k: int) -> KVCache:
        """Each row repeated k times (rows b*k .. b*k + k - 1 are row b): one prefill per
        prompt, copied to its k samples."""

        def rep(x, axis):
            return jnp.repeat(x, k, axis=axis)

        stacked = not isinstance(self.k, tuple)
        kv = lambda x: rep(x, 1) if stacked else tuple(rep(y, 0) for y in x)
        return KVCache(
            k=kv(self.k),
            v=kv(self.v),
            key_mask=rep(self.key_mask, 0),
            index=self.index,
            lengths=rep(self.lengths, 0),
        )


def init_cache(
    config: TransformerConfig, batch_size: int, max_len: int, dtype: Any = None
) -> KVCache:
    """Empty cache for ``batch_size`` rows of up to ``max_len`` slots (prompt + new tokens)."""
    dtype = config.dtype if dtype is None else dtype
    shape = (batch_size, max_len, config.num_kv_heads, config.head_dim)
    if config.scan_layers:
        k = jnp.zeros((config.num_layers, *shape), dtype)
        v = jnp.zeros((config.num_layers, *shape), dtype)
    else:
        k = tuple(jnp.zeros(shape, dtype) for _ in range(config.num_layers))
        v = tuple(jnp.zeros(shape, dtype) for _ in range(config.num_layers))
    return KVCache(
        k=k,
        v=v,
        key_mask=jnp.zeros((batch_size, max_len), bool),
        index=jnp.zeros((), jnp.int32),
        lengths=jnp.zeros((batch_size,), jnp.int32),
    )


def cache_logical_axes(config: TransformerConfig) -> KVCache:
    """Logical axis names of every cache leaf (same tree as ``init_cache``), for sharding."""
    kv = ("batch", "length", "kv_heads", "head_dim")
    if config.scan_layers:
        k = v = ("layers", *kv)
    else:
        k = v = (kv,) * config.num_layers
    return KVCache(k=k, v=v, key_mask=("batch", "length"), index=(), lengths=("batch",))


# ----------------------------------------------------------------------------------------------
# Modules
# ----------------------------------------------------------------------------------------------


def _param(
    rngs: nnx.Rngs,
    init: Any,
    shape: tuple[int, ...],
    axes: tuple[str, ...],
    dtype: Any,
) -> nnx.Param:
    """A Param with logical axis names as metadata.

    ``eager_sharding=False``: the names are logical, not mesh axes; they are resolved by
    ``insight_jax.sharding`` (flax would otherwise try to shard eagerly at construction).
    """
    assert len(shape) == len(axes), (shape, axes)
    return nnx.Param(init(rngs.params(), shape, dtype), out_sharding=axes, eager_sharding=False)


class RMSNorm(nnx.Module):
    def __init__(self, dim: int, eps: float, axis_name: str, *, dtype: Any, rngs: nnx.Rngs):
        self.eps = eps
        self.scale = _param(rngs, nnx.initializers.ones, (dim,), (axis_name,), dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        return rms_norm(x, self.scale[...], self.eps)


class Linear(nnx.Module):
    """y = x . kernel (+ bias), contracting the last ``len(in_shape)`` axes of x.

    kernel: [*in_shape, *out_shape]; multi-axis shapes keep heads as explicit (shardable) axes.
    """

    def __init__(
        self,
        in_shape: tuple[int, ...],
        out_shape: tuple[int, ...],
        in_axes: tuple[str, ...],
        out_axes: tuple[str, ...],
        *,
        use_bias: bool,
        config: TransformerConfig,
        rngs: nnx.Rngs,
    ):
        self.num_in = len(in_shape)
        self.dtype = config.dtype
        init = nnx.initializers.normal(config.init_std)
        self.kernel = _param(
            rngs, init, in_shape + out_shape, in_axes + out_axes, config.param_dtype
        )
        self.bias = (
            _param(rngs, nnx.initializers.zeros, out_shape, out_axes, config.param_dtype)
            if use_bias
            else None
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.kernel[...].astype(self.dtype)
        n = self.num_in
        contract = (tuple(range(x.ndim - n, x.ndim)), tuple(range(n)))
        y = jax.lax.dot_general(x.astype(self.dtype), kernel, (contract, ((), ())))
        if self.bias is not None:
            y = y + self.bias[...].astype(self.dtype)
        return y


class Attention(nnx.Module):
    def __init__(self, config: TransformerConfig, *, rngs: nnx.Rngs):
        c = config
        self.config = c
        e, h, k, d = c.embed_dim, c.num_heads, c.num_kv_heads, c.head_dim
        kw = dict(config=c, rngs=rngs)
        self.q_proj = Linear(
            (e,), (h, d), ("embed",), ("q_heads", "head_dim"), use_bias=c.qkv_bias, **kw
        )
        self.k_proj = Linear(
            (e,), (k, d), ("embed",), ("kv_heads", "head_dim"), use_bias=c.qkv_bias, **kw
        )
        self.v_proj = Linear(
            (e,), (k, d), ("embed",), ("kv_heads", "head_dim"), use_bias=c.qkv_bias, **kw
        )
        self.o_proj = Linear(
            (h, d), (e,), ("q_heads", "head_dim"), ("embed",), use_bias=False, **kw
        )
        if c.qk_norm:
            self.q_norm = RMSNorm(d, c.rms_eps, "head_dim", dtype=c.param_dtype, rngs=rngs)
            self.k_norm = RMSNorm(d, c.rms_eps, "head_dim", dtype=c.param_dtype, rngs=rngs)
        else:
            self.q_norm = self.k_norm = None

    def __call__(
        self,
        x: jax.Array,
        positions: jax.Array,
        mask: jax.Array,
        kv: tuple[jax.Array, jax.Array] | None,
        index: jax.Array | None,
    ) -> tuple[jax.Array, tuple[jax.Array, jax.Array] | None]:
        """x: [B, T, E]; mask: [B, T, S]; kv: this layer's cache buffers or None (then S = T)."""
        q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        if self.q_norm is not None:  # Qwen3: RMSNorm over head_dim, before RoPE
            q, k = self.q_norm(q), self.k_norm(k)
        rope = (self.config.rope_theta, self.config.rope_scaling)
        q, k = apply_rope(q, positions, *rope), apply_rope(k, positions, *rope)
        if kv is not None and index.ndim == 1:  # one write slot per row
            k_buf = _put_per_row(kv[0], k.astype(kv[0].dtype), index)
            v_buf = _put_per_row(kv[1], v.astype(kv[1].dtype), index)
            # No row sees past its own slot, so slots > max(index) are never read.
            out = blocked_decode_attention(
                q,
                k_buf.astype(q.dtype),
                v_buf.astype(q.dtype),
                mask,
                jnp.max(index) + 1,
                _decode_block(k_buf.shape[1]),
            )
            return self.o_proj(out), (k_buf, v_buf)
        if kv is not None:
            k_buf, v_buf = kv
            start = (0, index, 0, 0)
            k_buf = jax.lax.dynamic_update_slice(k_buf, k.astype(k_buf.dtype), start)
            v_buf = jax.lax.dynamic_update_slice(v_buf, v.astype(v_buf.dtype), start)
            k, v, kv = k_buf, v_buf, (k_buf, v_buf)
        out = gqa_attention(q, k.astype(q.dtype), v.astype(q.dtype), mask)
        return self.o_proj(out), kv


class MLP(nnx.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self, config: TransformerConfig, *, rngs: nnx.Rngs):
        e, f = config.embed_dim, config.mlp_dim
        kw = dict(use_bias=False, config=config, rngs=rngs)
        self.gate_proj = Linear((e,), (f,), ("embed",), ("mlp",), **kw)
        self.up_proj = Linear((e,), (f,), ("embed",), ("mlp",), **kw)
        self.down_proj = Linear((f,), (e,), ("mlp",), ("embed",), **kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.down_proj(jax.nn.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nnx.Module):
    def __init__(self, config: TransformerConfig, *, rngs: nnx.Rngs):
        c = config
        self.input_layernorm = RMSNorm(
            c.embed_dim, c.rms_eps, "norm", dtype=c.param_dtype, rngs=rngs
        )
        self.self_attn = Attention(c, rngs=rngs)
        self.post_attention_layernorm = RMSNorm(
            c.embed_dim, c.rms_eps, "norm", dtype=c.param_dtype, rngs=rngs
        )
        self.mlp = MLP(c, rngs=rngs)

    def __call__(self, x, positions, mask, kv, index):
        h, kv = self.self_attn(self.input_layernorm(x), positions, mask, kv, index)
        x = x + h
        x = x + self.mlp(self.post_attention_layernorm(x))
        return x, kv


class Embed(nnx.Module):
    def __init__(self, config: TransformerConfig, *, rngs: nnx.Rngs):
        self.dtype = config.dtype
        self.embedding = _param(
            rngs,
            nnx.initializers.normal(config.init_std),
            (config.vocab_size, config.embed_dim),
            ("vocab", "embed"),
            config.param_dtype,
        )

    def __call__(self, tokens: jax.Array) -> jax.Array:
        return jnp.take(self.embedding[...], tokens, axis=0).astype(self.dtype)

    def attend(self, x: jax.Array) -> jax.Array:
        """Tied lm head: logits = x . embedding^T, accumulated and returned in float32."""
        emb = self.embedding[...].astype(self.dtype)
        return jnp.einsum("...e,ve->...v", x, emb, preferred_element_type=jnp.float32)


def _stack_layers(blocks: list[Block]) -> Block:
    """One Block whose every parameter is the blocks' parameters stacked on a new leading axis,
    with logical axis "layers" (``config.scan_layers``). Built from the same per-layer draws as
    the unstacked list, so both layouts initialise to the same model."""
    graphdef, _ = nnx.split(blocks[0])

    def stack(*variables):
        axes = ("layers", *variables[0].get_metadata()["out_sharding"])
        value = jnp.stack([v[...] for v in variables])
        return type(variables[0])(value, out_sharding=axes, eager_sharding=False)

    states = [nnx.split(b)[1] for b in blocks]
    stacked = jax.tree.map(stack, *states, is_leaf=lambda x: isinstance(x, nnx.Variable))
    return nnx.merge(graphdef, stacked)


class Transformer(nnx.Module):
    """The policy. ``Transformer(config, rngs=nnx.Rngs(0))``; see the module docstring.

    ``layers`` is an ``nnx.List`` of Blocks, or with ``config.scan_layers`` one Block holding
    every layer's parameters stacked on a leading axis (run by ``lax.scan``).
    """

    def __init__(self, config: TransformerConfig, *, rngs: nnx.Rngs):
        c = config
        self.config = c
        self.embed_tokens = Embed(c, rngs=rngs)
        blocks = [Block(c, rngs=rngs) for _ in range(c.num_layers)]
        self.layers = _stack_layers(blocks) if c.scan_layers else nnx.List(blocks)
        self.norm = RMSNorm(c.embed_dim, c.rms_eps, "norm", dtype=c.param_dtype, rngs=rngs)
        if c.tie_embeddings:
            self.lm_head = None
        else:
            self.lm_head = Linear(
                (c.embed_dim,),
                (c.vocab_size,),
                ("embed",),
                ("vocab",),
                use_bias=False,
                config=c,
                rngs=rngs,
            )

    def __call__(
        self,
        tokens: jax.Array,
        positions: jax.Array | None = None,
        *,
        cache: KVCache | None = None,
        attention_mask: jax.Array | None = None,
        last_only: bool = False,
    ) -> tuple[jax.Array, KVCache | None]:
        """Logits of the next token at every input position.

        tokens: [B, T] int32. attention_mask: [B, T] bool (True = real token; default all).
        positions: [B, T] int32 RoPE positions; default ``default_positions(mask, offset)``
        with offset = ``cache.lengths`` (0 without cache).
        cache: None for a full-sequence forward (training, log-probs); else the tokens are
        appended at slots [cache.index, cache.index + T) and attend to everything cached
        (prefill: T = prompt length; decode: T = 1). Caller guarantees index + T <= S:
        ``dynamic_update_slice`` would silently clamp an overflowing write.
        last_only: logits of the last column only, [B, 1, V] (prefill of left-padded prompts:
        [B, P, V] float32 logits would be the largest tensor of the whole rollout).
        Returns (logits [B, T, V] float32, updated cache or None).
        """
        x, cache = self.hidden(
            tokens, positions, cache=cache, attention_mask=attention_mask, last_only=last_only
        )
        return self.unembed(x), cache

    def hidden(
        self,
        tokens: jax.Array,
        positions: jax.Array | None = None,
        *,
        cache: KVCache | None = None,
        attention_mask: jax.Array | None = None,
        last_only: bool = False,
    ) -> tuple[jax.Array, KVCache | None]:
        """The final-normed hidden states [B, T, E] (compute dtype) that ``unembed`` turns into
        logits; arguments as ``__call__``."""
        b, t = tokens.shape
        if attention_mask is None:
            attention_mask = jnp.ones((b, t), bool)
        attention_mask = attention_mask.astype(bool)
        if positions is None:
            offset = None if cache is None else cache.lengths
            positions = default_positions(attention_mask, offset)

        if cache is None:
            query_slots = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
            mask = make_attention_mask(attention_mask, query_slots, t)
            index = None
        else:
            if t > cache.max_len:
                raise ValueError(f"{t} tokens do not fit a cache of {cache.max_len} slots")
            index = cache.index
            if index.ndim == 1:  # one write slot per row
                if t != 1:
                    raise ValueError(f"a cache with a write slot per row takes 1 token, got {t}")
                key_mask = _put_per_row(cache.key_mask, attention_mask, index)
                query_slots = index[:, None]
            else:
                key_mask = jax.lax.dynamic_update_slice(cache.key_mask, attention_mask, (0, index))
                query_slots = index + jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
            mask = make_attention_mask(key_mask, query_slots, cache.max_len)

        x = self.embed_tokens(tokens)
        kv = None if cache is None else (cache.k, cache.v)
        x, kv = self._run_layers(x, positions, mask, kv, index)
        if last_only:
            x = x[:, -1:]
        x = self.norm(x)
        if cache is not None:
            cache = KVCache(
                k=kv[0],
                v=kv[1],
                key_mask=key_mask,
                index=index + t,
                lengths=cache.lengths + jnp.sum(attention_mask, axis=-1, dtype=jnp.int32),
            )
        return x, cache

    def _run_layers(self, x, positions, mask, kv, index):
        """x through every layer (a Python loop, or one lax.scan over stacked layers), each
        rematerialised as ``config.remat`` says. kv: (k, v) cache buffers in the layout of
        ``init_cache``, or None."""
        c = self.config

        def apply(graphdef, state, x, layer_kv):
            return nnx.merge(graphdef, state)(x, positions, mask, layer_kv, index)

        policy = REMAT_POLICIES[c.remat]
        if c.remat != "none":
            apply = jax.checkpoint(apply, policy=policy, static_argnums=(0,))

        if c.scan_layers:
            graphdef, stacked = nnx.split(self.layers)
            if kv is None:
                x, _ = jax.lax.scan(
                    lambda x, st: (apply(graphdef, st, x, None)[0], None), x, stacked
                )
                return x, None
            x, kv = jax.lax.scan(lambda x, xs: apply(graphdef, xs[0], x, xs[1]), x, (stacked, kv))
            return x, kv

        new_k, new_v = [], []
        for i, layer in enumerate(self.layers):
            graphdef, state = nnx.split(layer)
            x, layer_kv = apply(graphdef, state, x, None if kv is None else (kv[0][i], kv[1][i]))
            if kv is not None:
                new_k.append(layer_kv[0])
                new_v.append(layer_kv[1])
        return x, None if kv is None else (tuple(new_k), tuple(new_v))

    def unembed(self, x: jax.Array) -> jax.Array:
        """Logits [..., V] float32 of hidden states [..., E] (tied: x . embedding^T)."""
        if self.lm_head is None:
            return self.embed_tokens.attend(x)
        kernel = self.lm_head.kernel[...].astype(x.dtype)
        return jnp.einsum("...e,ev->...v", x, kernel, preferred_element_type=jnp.float32)


# ----------------------------------------------------------------------------------------------
# Log-probs for the policy-gradient update
# ----------------------------------------------------------------------------------------------


def logprobs_from_logits(
    logits: jax.Array, targets: jax.Array, temperature: float = 1.0
) -> jax.Array:
    """log pi_T(target) = log_softmax(logits / T)[target], float32.

    logits: [..., V]; targets: [...] int. No top-p/top-k filtering: this is the policy whose
    gradient GRPO takes, and what the sampler reports for the tokens it drew.
    """
    logp = jax.nn.log_softmax(logits.astype(jnp.float32) / temperature, axis=-1)
    return jnp.take_along_axis(logp, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]


def entropy_from_logits(logits: jax.Array, temperature: float = 1.0) -> jax.Array:
    """H = -sum_v p_v log p_v with p = softmax(logits / T); [..., V] -> [...] float32."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32) / temperature, axis=-1)
    return -jnp.sum(jnp.exp(logp) * logp, axis=-1)


def token_logprobs(
    model: Transformer,
    tokens: jax.Array,
    mask: jax.Array,
    *,
    temperature: float = 1.0,
    return_entropy: bool = False,
    shard_rows: Callable[[jax.Array], jax.Array] | None = None,
) -> jax.Array | tuple[jax.Array, jax.Array]:
    """Per-token log-probs of tokens[:, 1:] given the prefix, at temperature T.

    tokens: [B, L] int32, mask: [B, L] bool (real tokens; left/right padding both fine).
    out[b, j] = log_softmax(logits[b, j] / T)[tokens[b, j + 1]], shape [B, L - 1], zeroed where
    mask[b, j + 1] is False. Positions follow ``default_positions(mask)``, as in the sampler.
    With ``return_entropy`` also the entropy of the predictive distribution at j (same mask).

    With ``config.logits_chunk = C > 0`` the float32 logits exist C positions at a time
    ([B, C, V], recomputed in the backward pass): at a 152k vocabulary the whole [B, L, V]
    would be the largest tensor of the step by far. ``shard_rows`` (a sharding constraint on the
    batch rows, from a caller that knows the mesh) is applied to each chunk's hidden states and
    logits: sharding propagation does not reach into the chunk loop, and without it every
    device would compute the logits of the whole batch.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    mask = mask.astype(bool)
    hidden, _ = model.hidden(tokens, attention_mask=mask)
    hidden, targets, target_mask = hidden[:, :-1], tokens[:, 1:], mask[:, 1:]

    constrain = shard_rows or (lambda x: x)

    def score(h, tgt):
        logits = constrain(model.unembed(constrain(h)))
        ent = entropy_from_logits(logits, temperature) if return_entropy else None
        return logprobs_from_logits(logits, tgt, temperature), ent

    n = hidden.shape[1]
    chunk = model.config.logits_chunk
    if chunk == 0 or chunk >= n:
        lp, ent = score(hidden, targets)
    else:
        # [B, n, ...] -> [n / C, B, C, ...] (padded), scored chunk by chunk.
        pad = -n % chunk
        to_chunks = lambda x: jnp.moveaxis(
            jnp.pad(x, [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2)).reshape(
                x.shape[0], -1, chunk, *x.shape[2:]
            ),
            1,
            0,
        )
        from_chunks = lambda x: jnp.moveaxis(x, 0, 1).reshape(x.shape[1], -1)[:, :n]
        lp, ent = jax.lax.map(
            jax.checkpoint(lambda xs: score(*xs)), (to_chunks(hidden), to_chunks(targets))
        )
        lp = from_chunks(lp)
        ent = None if ent is None else from_chunks(ent)
    lp = jnp.where(target_mask, lp, 0.0)
    if not return_entropy:
        return lp
    return lp, jnp.where(target_mask, ent, 0.0)
