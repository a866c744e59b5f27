"""Transformer: reference parity (GQA, RoPE, norms), masks, KV cache, log-probs, tokenizer."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from insight_jax.models import tokenizers as tk
from insight_jax.models.transformer import (
    KVCache,
    Transformer,
    TransformerConfig,
    apply_rope,
    init_cache,
    token_logprobs,
)

V = 104


def _model(seed=0, perturb=True, **overrides):
    """Tiny model; ``perturb`` randomises every parameter (norm scales, biases too) so that
    reference comparisons exercise them."""
    cfg = TransformerConfig.tiny(V, **{"init_std": 0.1, **overrides})
    model = Transformer(cfg, rngs=nnx.Rngs(seed))
    if perturb:
        state = nnx.state(model)
        leaves, treedef = jax.tree.flatten(state)
        keys = jax.random.split(jax.random.key(seed + 100), len(leaves))
        leaves = [
            x + 0.1 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys, strict=True)
        ]
        nnx.update(model, jax.tree.unflatten(treedef, leaves))
    return model


def reference_logits(model: Transformer, tokens: np.ndarray) -> jax.Array:
    """Plain-jnp forward of unpadded [B, T] tokens, written like HF modeling_qwen3/llama:
    rotate_half RoPE with cat(freqs, freqs), repeat_kv for GQA, -inf causal mask."""
    c = model.config
    p = nnx.to_pure_dict(nnx.state(model))
    t = tokens.shape[1]
    inv = 1.0 / (c.rope_theta ** (np.arange(0, c.head_dim, 2) / c.head_dim))
    freqs = np.arange(t)[:, None] * inv[None]
    emb = np.concatenate([freqs, freqs], -1)
    cos, sin = jnp.cos(emb)[None, :, None, :], jnp.sin(emb)[None, :, None, :]

    def rope(x):
        x1, x2 = jnp.split(x, 2, axis=-1)
        return x * cos + jnp.concatenate([-x2, x1], -1) * sin

    def rms(x, w):
        return x / jnp.sqrt(jnp.mean(x**2, -1, keepdims=True) + c.rms_eps) * w

    x = p["embed_tokens"]["embedding"][tokens]
    causal = np.tril(np.ones((t, t), bool))
    for i in range(c.num_layers):
        lp = p["layers"][i]
        a = lp["self_attn"]
        h = rms(x, lp["input_layernorm"]["scale"])
        q = jnp.einsum("bte,ehd->bthd", h, a["q_proj"]["kernel"])
        k = jnp.einsum("bte,ehd->bthd", h, a["k_proj"]["kernel"])
        v = jnp.einsum("bte,ehd->bthd", h, a["v_proj"]["kernel"])
        if c.qkv_bias:
            q, k, v = q + a["q_proj"]["bias"], k + a["k_proj"]["bias"], v + a["v_proj"]["bias"]
        if c.qk_norm:
            q, k = rms(q, a["q_norm"]["scale"]), rms(k, a["k_norm"]["scale"])
        q, k = rope(q), rope(k)
        rep = c.num_heads // c.num_kv_heads
        k, v = jnp.repeat(k, rep, axis=2), jnp.repeat(v, rep, axis=2)
        s = jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(c.head_dim)
        s = jnp.where(causal, s, -jnp.inf)
        o = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(s, -1), v)
        x = x + jnp.einsum("bthd,hde->bte", o, a["o_proj"]["kernel"])
        h = rms(x, lp["post_attention_layernorm"]["scale"])
        m = lp["mlp"]
        x = (
            x
            + (jax.nn.silu(h @ m["gate_proj"]["kernel"]) * (h @ m["up_proj"]["kernel"]))
            @ m["down_proj"]["kernel"]
        )
    x = rms(x, p["norm"]["scale"])
    head = p["embed_tokens"]["embedding"].T if c.tie_embeddings else p["lm_head"]["kernel"]
    return x @ head


@nnx.jit
def fwd(model, tokens, positions=None, mask=None):
    """Jitted full forward: one compile per shape instead of op-by-op eager dispatch."""
    return model(tokens, positions, attention_mask=mask)[0]


def _tokens(key, shape):
    return np.asarray(jax.random.randint(jax.random.key(key), shape, 4, V), np.int32)


# ----------------------------------------------------------------------------------------------
# Forward pass
# ----------------------------------------------------------------------------------------------


def test_shapes_and_dtypes():
    model = _model(perturb=False)
    logits, cache = nnx.jit(lambda m, t: m(t))(model, _tokens(0, (2, 9)))
    assert logits.shape == (2, 9, V) and logits.dtype == jnp.float32 and cache is None


@pytest.mark.parametrize(
    "overrides",
    [
        {},  # Qwen3-like: qk-norm, untied, GQA 4 q heads / 2 kv heads
        {"qk_norm": False, "qkv_bias": True, "tie_embeddings": True},  # Qwen2-like
        {"qk_norm": False, "num_kv_heads": 1, "rope_theta": 500_000.0},  # MQA, Llama-3 theta
    ],
)
def test_matches_plain_jnp_reference(overrides):
    model = _model(**overrides)
    tokens = _tokens(1, (2, 11))
    got = fwd(model, tokens)
    np.testing.assert_allclose(got, reference_logits(model, tokens), atol=2e-5, rtol=1e-5)


def test_causal():
    model = _model()
    a = _tokens(2, (1, 10))
    b = a.copy()
    b[0, 6] = (b[0, 6] + 1 - 4) % (V - 4) + 4
    la, lb = fwd(model, a), fwd(model, b)
    np.testing.assert_array_equal(la[:, :6], lb[:, :6])
    assert not np.allclose(la[:, 6:], lb[:, 6:])


@pytest.mark.parametrize("side", ["left", "right"])
def test_padding_does_not_change_real_logits(side):
    model = _model()
    real = _tokens(3, (1, 6))
    pad = np.zeros((1, 4), np.int32)
    tokens = np.concatenate([pad, real] if side == "left" else [real, pad], axis=1)
    mask = np.concatenate(
        [pad.astype(bool), np.ones_like(real, bool)][:: 1 if side == "left" else -1], axis=1
    )
    padded = fwd(model, tokens, mask=mask)
    unpadded = fwd(model, real)
    np.testing.assert_allclose(padded[mask], unpadded[0], atol=1e-5, rtol=1e-5)
    assert np.all(np.isfinite(padded))  # padding queries see no key: uniform, not NaN


def test_rope_relative_position():
    q = jax.random.normal(jax.random.key(0), (1, 1, 1, 32))
    k = jax.random.normal(jax.random.key(1), (1, 1, 1, 32))

    def score(m, n):
        qm = apply_rope(q, jnp.array([[m]]), 10_000.0)
        kn = apply_rope(k, jnp.array([[n]]), 10_000.0)
        return jnp.sum(qm * kn)

    np.testing.assert_allclose(score(3, 1), score(110, 108), rtol=1e-4)
    np.testing.assert_allclose(score(0, 0), jnp.sum(q * k), rtol=1e-5)
    assert not np.isclose(score(3, 1), score(3, 2))
    # Whole model: shifting every position by a constant leaves the logits unchanged.
    model = _model()
    tokens = _tokens(4, (2, 8))
    pos = jnp.broadcast_to(jnp.arange(8), (2, 8))
    a, b = fwd(model, tokens, pos), fwd(model, tokens, pos + 37)
    np.testing.assert_allclose(a, b, atol=1e-4)


def test_bf16_compute_runs():
    model = _model(perturb=False, dtype="bfloat16")
    logits = fwd(model, _tokens(5, (2, 7)))
    assert logits.dtype == jnp.float32 and np.all(np.isfinite(logits))
    assert nnx.state(model)["norm"]["scale"][...].dtype == jnp.float32  # fp32 master params


# ----------------------------------------------------------------------------------------------
# Parameter tree and metadata
# ----------------------------------------------------------------------------------------------


def _paths(model):
    return {
        "/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in path[:-1])
        for path, _ in jax.tree_util.tree_leaves_with_path(nnx.state(model))
    }


def test_switches_change_param_tree():
    base = _paths(_model(perturb=False, qk_norm=False))
    qk = _paths(_model(perturb=False, qk_norm=True))
    bias = _paths(_model(perturb=False, qk_norm=False, qkv_bias=True))
    tied = _paths(_model(perturb=False, qk_norm=False, tie_embeddings=True))
    assert qk - base == {f"layers/{i}/self_attn/{n}_norm/scale" for i in (0, 1) for n in "qk"}
    assert bias - base == {f"layers/{i}/self_attn/{n}_proj/bias" for i in (0, 1) for n in "qkv"}
    assert base - tied == {"lm_head/kernel"} and not tied - base
    assert "embed_tokens/embedding" in base and "layers/1/mlp/down_proj/kernel" in base


def test_every_param_has_logical_axes():
    model = _model(perturb=False, qkv_bias=True)
    known = {"vocab", "embed", "q_heads", "kv_heads", "head_dim", "mlp", "norm"}
    for path, var in jax.tree_util.tree_leaves_with_path(
        nnx.state(model), is_leaf=lambda x: isinstance(x, nnx.Variable)
    ):
        axes = var.get_metadata()["out_sharding"]
        assert len(axes) == var[...].ndim and set(axes) <= known, (path, axes)
    s = nnx.state(model)
    assert s["layers"][0]["self_attn"]["q_proj"]["kernel"].out_sharding == (
        "embed",
        "q_heads",
        "head_dim",
    )
    assert s["embed_tokens"]["embedding"].out_sharding == ("vocab", "embed")


@pytest.mark.parametrize(
    "name,count",
    [("qwen3_0_6b", 596_049_920), ("qwen2_5_0_5b", 494_032_768), ("llama3_8b", 8_030_261_248)],
)
def test_presets_match_public_param_counts(name, count):
    cfg = TransformerConfig.preset(name)
    abstract = nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0)))
    assert sum(x.size for x in jax.tree.leaves(nnx.state(abstract))) == count
    assert cfg.num_params() == count


# ----------------------------------------------------------------------------------------------
# KV cache
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("side", ["left", "right"])
def test_prefill_and_decode_match_full_forward(side):
    """Prefill a padded batch of different prompt lengths, decode M tokens one by one; every
    next-token distribution equals an unpadded full forward of that row (float32)."""
    model = _model()
    lengths, p, m = [3, 7, 5], 7, 4
    seqs = _tokens(6, (3, p + m))
    prompts = np.zeros((3, p), np.int32)
    mask = np.zeros((3, p), bool)
    for b, n in enumerate(lengths):
        cols = slice(p - n, p) if side == "left" else slice(0, n)
        prompts[b, cols], mask[b, cols] = seqs[b, :n], True

    forward = nnx.jit(lambda mdl, t, c, am: mdl(t, cache=c, attention_mask=am))
    cache = init_cache(model.config, 3, p + m)
    logits, cache = forward(model, prompts, cache, mask)
    last, _ = nnx.jit(lambda mdl, t, c, am: mdl(t, cache=c, attention_mask=am, last_only=True))(
        model, prompts, init_cache(model.config, 3, p + m), mask
    )
    np.testing.assert_allclose(last[:, 0], logits[:, -1], atol=1e-6)
    assert isinstance(cache, KVCache) and cache.k[0].shape == (3, p + m, 2, 32)
    np.testing.assert_array_equal(cache.lengths, lengths)
    steps = [logits[np.arange(3), [p - 1 if side == "left" else n - 1 for n in lengths]]]
    for i in range(m - 1):
        nxt = np.array([seqs[b, n + i] for b, n in enumerate(lengths)])[:, None]
        logits, cache = forward(model, nxt, cache, np.ones((3, 1), bool))
        steps.append(logits[:, 0])
    assert int(cache.index) == p + m - 1
    for b, n in enumerate(lengths):
        ref = fwd(model, seqs[b : b + 1, : n + m - 1])
        got = np.stack([s[b] for s in steps])
        np.testing.assert_allclose(got, ref[0, n - 1 :], atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------------------------
# Log-probs
# ----------------------------------------------------------------------------------------------


def test_token_logprobs_and_entropy():
    model = _model()
    tokens = _tokens(7, (2, 9))
    mask = np.ones((2, 9), bool)
    mask[1, :3] = False  # left padding
    lp, ent = nnx.jit(token_logprobs, static_argnames=("temperature", "return_entropy"))(
        model, tokens, mask, temperature=0.7, return_entropy=True
    )
    assert lp.shape == ent.shape == (2, 8)
    logits = fwd(model, tokens, mask=mask)
    logp = jax.nn.log_softmax(logits[:, :-1] / 0.7, -1)
    want = np.take_along_axis(np.asarray(logp), tokens[:, 1:, None], -1)[..., 0]
    want_ent = -np.sum(np.exp(logp) * logp, -1)
    np.testing.assert_allclose(lp, np.where(mask[:, 1:], want, 0), atol=1e-5)
    np.testing.assert_allclose(ent, np.where(mask[:, 1:], want_ent, 0), atol=1e-5)
    assert np.all(lp[1, :2] == 0) and np.all(ent[1, :2] == 0)
    with pytest.raises(ValueError, match="temperature"):
        token_logprobs(model, tokens, mask, temperature=0.0)


# ----------------------------------------------------------------------------------------------
# Tokenizer
# ----------------------------------------------------------------------------------------------


def test_char_tokenizer_roundtrip_and_fallback():
    tok = tk.CharTokenizer()
    assert isinstance(tok, tk.Tokenizer)
    assert tok.vocab_size == V and (tok.pad_id, tok.bos_id, tok.eos_id, tok.unk_id) == (0, 1, 2, 3)
    text = "Countdown: 3 + 4 * (5 - 1) = 19\n"
    ids = tok.encode(text)
    assert ids == tk.CharTokenizer().encode(text) and min(ids) >= 4
    assert tok.decode(ids) == text
    assert tok.encode("é") == [tok.unk_id] and tok.decode([tok.unk_id]) == "\ufffd"
    assert tok.decode([tok.bos_id, *tok.encode("ab"), tok.eos_id, tok.pad_id]) == "ab"


def test_encode_batch_left_and_right():
    tok = tk.CharTokenizer()
    texts = ["ab", "abcd", ""]
    left, lengths = tk.encode_batch(tok, texts, pad_to_multiple=4)
    assert left.dtype == np.int32 and left.shape == (3, 8) and list(lengths) == [3, 5, 1]
    assert list(left[0]) == [0] * 5 + [tok.bos_id, *tok.encode("ab")]
    right, _ = tk.encode_batch(tok, texts, side="right", add_bos=False, max_len=6)
    assert list(right[1]) == [*tok.encode("abcd"), 0, 0]
    mask = tk.padding_mask(lengths, 8, "left")
    assert tk.decode_batch(tok, left, mask) == texts
    with pytest.raises(ValueError, match="max_len"):
        tk.encode_batch(tok, ["abcdef"], max_len=4)
    cut, n = tk.encode_batch(tok, ["abcdef"], max_len=4, truncate="left", add_bos=False)
    assert tok.decode(cut[0]) == "cdef" and n[0] == 4


# ------------------------------------------------------------------ scan, remat, chunked logits


def _padded_batch(b=3, t=21, seed=0):
    rng = np.random.default_rng(seed)
    tokens = jnp.asarray(rng.integers(4, V, (b, t)), jnp.int32)
    lengths = rng.integers(t // 2, t + 1, b)
    return tokens, jnp.asarray(tk.padding_mask(lengths, t, "left"))


def test_scan_layers_is_the_same_model():
    """scan_layers stacks the same per-layer draws: same parameters, logits and cached decode."""
    plain = _model(num_layers=3, perturb=False)
    scanned = _model(num_layers=3, perturb=False, scan_layers=True)
    a = nnx.to_pure_dict(nnx.state(plain))
    b = nnx.to_pure_dict(nnx.state(scanned))
    q = b["layers"]["self_attn"]["q_proj"]["kernel"]
    assert q.shape == (3, *a["layers"][0]["self_attn"]["q_proj"]["kernel"].shape)
    for i in range(3):
        np.testing.assert_array_equal(q[i], a["layers"][i]["self_attn"]["q_proj"]["kernel"])
    axes = scanned.layers.self_attn.q_proj.kernel.get_metadata()["out_sharding"]
    assert axes == ("layers", "embed", "q_heads", "head_dim")

    tokens, mask = _padded_batch()
    np.testing.assert_allclose(
        scanned(tokens, attention_mask=mask)[0], plain(tokens, attention_mask=mask)[0], atol=1e-5
    )
    outs = []
    for model in (plain, scanned):
        cache = init_cache(model.config, 3, tokens.shape[1] + 2)
        _, cache = model(tokens, cache=cache, attention_mask=mask)
        step, cache = model(tokens[:, :1], cache=cache)
        outs.append(step)
    assert isinstance(cache.k, jax.Array) and cache.k.shape[0] == 3
    np.testing.assert_allclose(outs[1], outs[0], atol=1e-5)


def test_scan_compiles_flat_in_depth():
    """The lowered program of a scanned model does not grow with depth; the loop's does."""

    def size(layers, scan):
        model = _model(num_layers=layers, perturb=False, scan_layers=scan)
        g, state = nnx.split(model)
        tokens, mask = _padded_batch()
        fn = jax.jit(lambda s: token_logprobs(nnx.merge(g, s), tokens, mask).sum())
        return len(fn.lower(state).as_text())

    assert size(8, True) < 1.1 * size(2, True)
    assert size(8, False) > 2 * size(2, False)


@pytest.mark.parametrize("remat", ["full", "dots"])
def test_remat_keeps_values_and_gradients(remat):
    tokens, mask = _padded_batch()

    def grads(**overrides):
        # Unperturbed: the perturbation draws per leaf, so it differs between layouts.
        g, state = nnx.split(_model(perturb=False, **overrides))
        loss = lambda s: token_logprobs(nnx.merge(g, s), tokens, mask).sum()
        return jax.value_and_grad(loss)(state)

    (v0, g0), (v1, g1) = grads(), grads(remat=remat, scan_layers=remat == "dots")
    np.testing.assert_allclose(v1, v0, rtol=1e-6)
    g1 = nnx.to_pure_dict(g1)
    if remat == "dots":  # compare per layer: unstack the scanned gradients
        stacked = g1["layers"]
        g1["layers"] = {
            i: jax.tree.map(lambda x, i=i: x[i], stacked) for i in range(len(g0["layers"]))
        }
    # float32 sums reassociate under scan / remat: a few 1e-6 of gradients of size ~0.5.
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-5),
        nnx.to_pure_dict(g0),
        g1,
    )


def test_remat_of_scanned_layers_saves_memory():
    """Compiled temp memory of the log-prob gradient (XLA's memory analysis) of 6 scanned
    layers: "full" keeps only each layer's input, far below keeping every activation."""

    def temp_bytes(remat):
        cfg = TransformerConfig.tiny(256, num_layers=6, remat=remat, scan_layers=True)
        g, state = nnx.split(nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0))))
        tokens = jax.ShapeDtypeStruct((4, 256), jnp.int32)
        mask = jax.ShapeDtypeStruct((4, 256), bool)
        loss = lambda s, x, m: token_logprobs(nnx.merge(g, s), x, m).sum()
        compiled = jax.jit(jax.grad(loss)).lower(state, tokens, mask).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    assert temp_bytes("full") < 0.4 * temp_bytes("none")


@pytest.mark.parametrize("chunk", [4, 7, 100])
def test_chunked_logprobs_equal_whole(chunk):
    """Chunks that divide L - 1, that do not (padding), and one larger than L - 1."""
    tokens, mask = _padded_batch(t=29)
    plain = _model()
    g, state = nnx.split(plain)
    g_chunk, _ = nnx.split(_model(logits_chunk=chunk))

    def loss(graphdef, s):
        lp, ent = token_logprobs(
            nnx.merge(graphdef, s), tokens, mask, temperature=0.7, return_entropy=True
        )
        return (lp * 1.3 + ent).sum(), (lp, ent)

    (_, (lp0, e0)), g0 = jax.value_and_grad(lambda s: loss(g, s), has_aux=True)(state)
    (_, (lp1, e1)), g1 = jax.value_and_grad(lambda s: loss(g_chunk, s), has_aux=True)(state)
    np.testing.assert_allclose(lp1, lp0, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(e1, e0, rtol=1e-6, atol=1e-6)
    assert lp0.shape == (3, 28)
    # The gradient sums over chunks in another order: float32 differences of ~1e-5.
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=5e-5), g0, g1)


def test_chunked_logprobs_never_hold_the_full_logits():
    """Compiled temp memory of the log-prob gradient, from XLA's memory analysis. A large
    vocabulary and a narrow model, so logits dominate: whole-sequence logits need more than
    B L V float32 bytes; chunks of 8 positions (a few [B, 8, V] buffers live in the backward
    pass) stay below half of it."""
    vocab, b, t = 32768, 8, 129
    full_bytes = b * (t - 1) * vocab * 4
    small = dict(num_layers=1, embed_dim=32, mlp_dim=64, num_heads=2, num_kv_heads=1, head_dim=16)

    def temp_bytes(chunk):
        cfg = TransformerConfig.tiny(vocab, logits_chunk=chunk, **small)
        g, state = nnx.split(nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0))))
        tokens = jax.ShapeDtypeStruct((b, t), jnp.int32)
        mask = jax.ShapeDtypeStruct((b, t), bool)
        loss = lambda s, x, m: token_logprobs(nnx.merge(g, s), x, m).sum()
        compiled = jax.jit(jax.grad(loss)).lower(state, tokens, mask).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    assert temp_bytes(0) > full_bytes
    assert temp_bytes(8) < full_bytes / 2


def test_llama3_rope_scaling_matches_transformers():
    """inv_freq against transformers' own llama3 rope initialisation (the reference)."""
    transformers = pytest.importorskip("transformers")
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    from insight_jax.models.transformer import rope_inv_freq

    for factor, low, high, ctx in [
        (8.0, 1.0, 4.0, 8192),
        (32.0, 1.0, 4.0, 64),
        (4.0, 2.0, 8.0, 32),
    ]:
        cfg = transformers.LlamaConfig(
            hidden_size=256,
            num_attention_heads=2,
            rope_parameters=dict(
                rope_type="llama3",
                rope_theta=5e5,
                factor=factor,
                low_freq_factor=low,
                high_freq_factor=high,
                original_max_position_embeddings=ctx,
            ),
        )
        ref, scale = ROPE_INIT_FUNCTIONS["llama3"](cfg, "cpu")
        assert scale == 1.0
        ours = rope_inv_freq(128, 5e5, (factor, low, high, ctx))
        np.testing.assert_allclose(ours, ref.numpy(), rtol=1e-6)
        assert not np.allclose(ours, rope_inv_freq(128, 5e5))  # the scaling is exercised
