"""The continuous-batching engine: the dense sampler's tokens for every row (any slot count,
stacked or per-layer caches, sharded over the batch axes, in the trainer), log-probs of a full
forward, the blocked decode attention against a float64 softmax, one compile per shape, clear
errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from insight_jax import sharding as shd
from insight_jax.models.tokenizers import CharTokenizer, encode_batch
from insight_jax.models.transformer import (
    Transformer,
    TransformerConfig,
    blocked_decode_attention,
    token_logprobs,
)
from insight_jax.rl import continuous, engines
from insight_jax.rl import rollout as ro
from insight_jax.rl.validate import ConfigError, validate_config

TOK = CharTokenizer()
PROMPTS = ["2+2=", "hello there", "a", "Countdown 3 5 7 -> 8", "xy", "12*3=", "q", "long-ish one"]
# Two EOS ids that a peaked random model (large init) emits often enough for ragged lengths.
EOS = (TOK.eos_id, TOK.encode("e")[-1])
K, T, TOP_P = 3, 0.9, 0.95

logprobs_fn = nnx.jit(token_logprobs, static_argnames=("temperature", "return_entropy"))


def _model(scan_layers=False, dtype="float32"):
    cfg = TransformerConfig.tiny(TOK.vocab_size, init_std=0.3, scan_layers=scan_layers, dtype=dtype)
    return Transformer(cfg, rngs=nnx.Rngs(0))


@pytest.fixture(scope="module")
def model():
    return _model()


@pytest.fixture(scope="module")
def prompts():
    return encode_batch(TOK, PROMPTS)  # left-padded [8, P], lengths [8]


def _settings(n):
    return dict(max_new_tokens=n, num_samples=K, temperature=T, top_p=TOP_P, eos_ids=EOS)


def _assert_same_rollout(got, want):
    np.testing.assert_array_equal(got.tokens, want.tokens)
    np.testing.assert_array_equal(got.mask, want.mask)
    np.testing.assert_array_equal(got.finished, want.finished)
    np.testing.assert_array_equal(got.sequences, want.sequences)
    np.testing.assert_array_equal(got.sequence_mask, want.sequence_mask)
    # Equal up to the rounding of the blocked softmax against the dense one.
    np.testing.assert_allclose(got.logprobs, want.logprobs, rtol=1e-5, atol=2e-5)


@pytest.fixture(scope="module")
def dense(model, prompts):
    return ro.sample(model, *prompts, jax.random.key(7), **_settings(24))


def test_the_reference_rollout_is_ragged(dense):
    """Guards the other tests from passing vacuously: rows stop at different lengths, some on
    each EOS id, some at the cap."""
    lengths, finished = np.asarray(dense.lengths), np.asarray(dense.finished)
    assert len(set(lengths.tolist())) >= 4
    assert finished.any() and (~finished).any()
    last = np.asarray(dense.tokens)[np.arange(len(lengths)), np.maximum(lengths - 1, 0)]
    assert set(EOS) <= set(last[finished].tolist())


@pytest.mark.parametrize("num_slots", [0, 7, 1])
def test_same_tokens_as_the_dense_sampler(model, prompts, dense, num_slots):
    """0: a slot per rollout; 7: fewer slots than the 24 rollouts (not a divisor), refilled
    from the queue as rows finish; 1: one rollout at a time."""
    got = continuous.continuous_sample(
        model, *prompts, jax.random.key(7), num_slots=num_slots, **_settings(24)
    )
    _assert_same_rollout(got, dense)


def test_many_attention_blocks_with_stacked_layers(prompts):
    """P + N = 13 + 180 slots: the decode attention reads up to two 128-slot blocks, and a
    refilled slot's stale tokens from its previous rollout sit past its own; the layers are
    scanned, so the cache is one stacked array (the other tests use per-layer caches)."""
    model = _model(scan_layers=True)
    settings = _settings(180)
    want = ro.sample(model, *prompts, jax.random.key(3), **settings)
    got = continuous.continuous_sample(model, *prompts, jax.random.key(3), num_slots=5, **settings)
    _assert_same_rollout(got, want)
    assert int(np.asarray(want.lengths).max()) > 128 - prompts[0].shape[1]


@pytest.mark.parametrize("shape", [(2, 2, 2), (1, 8, 1)])
def test_sharded_over_the_batch_axes(model, prompts, dense, shape, devices):
    """Slots and queues split into one group per batch shard; same rollout as one device."""
    mesh = shd.make_mesh(dict(zip(("data", "fsdp", "tensor"), shape, strict=True)))
    slots = 8  # one per shard on (1, 8, 1), two on (2, 2, 2)
    settings = ro.SamplingSettings(
        max_new_tokens=24, num_samples=K, temperature=T, top_p=TOP_P, eos_ids=EOS, pad_id=TOK.pad_id
    )
    engine = engines.make_rollout_engine(
        "continuous", nnx.graphdef(model), settings, mesh, shd.DEFAULT_RULES, num_slots=slots
    )
    tokens, lengths = (np.asarray(x) for x in prompts)
    got = engine.generate(nnx.state(model), tokens, lengths, jax.random.key(7))
    assert got.tokens.sharding.spec[0] is not None  # rows stay split over the batch axes
    _assert_same_rollout(got, dense)
    # Compiled once per shape: other prompts of the same shape, another key.
    other = encode_batch(TOK, [p[::-1] for p in PROMPTS], max_len=tokens.shape[1])
    engine.generate(nnx.state(model), *(np.asarray(x) for x in other), jax.random.key(1))
    assert engine._fn._cache_size() == 1


def test_logprobs_equal_a_full_forward(model, prompts):
    r = continuous.continuous_sample(
        model, *prompts, jax.random.key(11), num_slots=4, **_settings(24)
    )
    lp = logprobs_fn(model, r.sequences, r.sequence_mask, temperature=T)
    mask = np.asarray(r.loss_mask)
    np.testing.assert_allclose(
        np.asarray(lp)[mask], np.asarray(r.sequence_logprobs)[mask], atol=2e-5
    )
    assert np.all(np.asarray(r.sequence_logprobs)[~mask] == 0)


def test_bf16_compute_keeps_float32_logprobs(prompts):
    """bf16 activations and caches; log-probs and sampling stay float32. bf16 decode and a bf16
    full forward round differently, for either engine: the continuous engine's log-probs are as
    close to the model's own full forward as the dense sampler's are."""
    model = _model(dtype="bfloat16")
    errors = []
    for fn, extra in ((ro.sample, {}), (continuous.continuous_sample, dict(num_slots=6))):
        r = fn(model, *prompts, jax.random.key(5), **_settings(16), **extra)
        assert r.logprobs.dtype == jnp.float32
        lp = logprobs_fn(model, r.sequences, r.sequence_mask, temperature=T)
        mask = np.asarray(r.loss_mask)
        errors.append(np.abs(np.asarray(lp)[mask] - np.asarray(r.sequence_logprobs)[mask]))
    dense_err, cont_err = errors
    # A one-pass online softmax fails this: median 1e-2 against the dense sampler's 2e-7.
    assert np.median(cont_err) <= max(2 * np.median(dense_err), 1e-5)
    assert cont_err.max() <= 2 * dense_err.max() + 1e-3


def test_blocked_decode_attention_matches_a_float64_softmax():
    """Random q, k, v and masks (left padding, holes), a bound below the cache size, slots past
    the bound filled with garbage: equals softmax(q k^T / sqrt(D)) v in float64 over the
    visible keys."""
    rng = np.random.default_rng(0)
    b, s, h, kv, d, block = 5, 96, 4, 2, 8, 16
    q = rng.normal(size=(b, 1, h, d))
    k = rng.normal(size=(b, s, kv, d)) * 3
    v = rng.normal(size=(b, s, kv, d))
    depth = rng.integers(1, 70, b)  # slots each row may see: [0, depth]
    mask = rng.random((b, s)) < 0.8
    mask &= np.arange(s)[None] <= depth[:, None]
    mask[np.arange(b), depth] = True  # the query's own slot
    bound = int(depth.max()) + 1
    k[:, bound:] = 1e6  # never read
    got = blocked_decode_attention(
        *(jnp.asarray(x, jnp.float32) for x in (q, k, v)),
        jnp.asarray(mask[:, None]),
        jnp.asarray(bound, jnp.int32),
        block,
    )
    scores = np.einsum("bhd,bshd->bhs", q[:, 0], np.repeat(k, h // kv, axis=2)) / np.sqrt(d)
    scores = np.where(mask[:, None], scores, -np.inf)
    p = np.exp(scores - scores.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    want = np.einsum("bhs,bshd->bhd", p, np.repeat(v, h // kv, axis=2))
    np.testing.assert_allclose(np.asarray(got)[:, 0], want, atol=2e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="does not divide"):
        blocked_decode_attention(
            jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), jnp.asarray(mask[:, None]), bound, 17
        )


def test_bad_slot_counts_are_refused_before_any_work(model):
    settings = ro.SamplingSettings(8, K, T, TOP_P, EOS, TOK.pad_id)
    mesh = shd.make_mesh({"data": 1, "fsdp": 8, "tensor": 1})
    with pytest.raises(ValueError, match="num_slots must be >= 0"):
        engines.make_rollout_engine(
            "continuous", nnx.graphdef(model), settings, mesh, shd.DEFAULT_RULES, num_slots=-1
        )
    with pytest.raises(ValueError, match="no decode slots"):
        engines.make_rollout_engine(
            "dense", nnx.graphdef(model), settings, mesh, shd.DEFAULT_RULES, num_slots=4
        )
    # Fewer slots than batch shards: one per shard; more than rollouts: one per rollout.
    assert continuous.num_decode_slots(3, rows=64, groups=8) == 8
    assert continuous.num_decode_slots(100, rows=64, groups=8) == 64
    assert continuous.num_decode_slots(0, rows=64, groups=8) == 64
    assert continuous.num_decode_slots(20, rows=64, groups=8) == 16


def test_config_checks_the_engine_and_its_slots():
    from configs import arithmetic_tiny

    config = arithmetic_tiny.get_config("smoke")
    config.rl.rollout_slots = 8
    with pytest.raises(ConfigError, match=r"rl\.rollout_slots"):
        validate_config(config)
    config.rl.rollout_engine = "continuous"
    validate_config(config)
    config.rl.rollout_slots = -2
    with pytest.raises(ConfigError, match=r"rl\.rollout_slots"):
        validate_config(config)


def test_the_trainer_on_the_continuous_engine_trains_on_the_dense_rollouts(tmp_path, devices):
    """Two RL steps of the smoke run on the fake 8-device mesh: the same rewards and
    selections as with the dense engine, losses equal up to log-prob rounding, no implicit
    host transfer, the engine compiled once."""
    from test_train import _run_steps  # tests/ is on sys.path (pytest rootdir conftest)

    from configs import arithmetic_tiny

    runs = {}
    for engine, slots in (("dense", 0), ("continuous", 8)):
        config = arithmetic_tiny.get_config("smoke")
        config.rl.rollout_engine, config.rl.rollout_slots = engine, slots
        with jax.transfer_guard("disallow"):
            comps, _, metrics = _run_steps(config, tmp_path / engine, rl_steps=2)
            runs[engine] = comps, metrics
    (dense_comps, dense), (comps, cont) = runs["dense"], runs["continuous"]
    # Both engines compile once: the first step's key (fresh out of a compiling jit) used to
    # trigger a second compile of the whole rollout at step two.
    assert comps.rollout_engine._fn._cache_size() == 1
    assert dense_comps.rollout_engine._fn._cache_size() == 1
    for d, c in zip(dense, cont, strict=True):
        for key in ("reward_mean", "completion_len", "sel_mean_phibar"):
            assert d[key] == c[key], key
        np.testing.assert_allclose(c["loss"], d["loss"], rtol=1e-4, atol=1e-6)
