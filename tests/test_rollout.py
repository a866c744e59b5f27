"""KV-cache sampler: determinism, EOS, top-p, log-prob convention, naive parity, sharding,
no re-tracing."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from insight_jax import sharding as shd
from insight_jax.models.tokenizers import CharTokenizer, encode_batch
from insight_jax.models.transformer import Transformer, TransformerConfig, token_logprobs
from insight_jax.rl import engines
from insight_jax.rl import rollout as ro

TOK = CharTokenizer()
# A peaked random model (large init) so that samples have structure and EOS can be hit.
CFG = TransformerConfig.tiny(TOK.vocab_size, init_std=0.3)
PROMPTS = ["2+2=", "hello there", "a", "Countdown 3 5 7 -> 8"]
K, N, T, TOP_P = 2, 8, 0.8, 0.9
SETTINGS = dict(max_new_tokens=N, num_samples=K, temperature=T, top_p=TOP_P)


# Jitted: eager op-by-op dispatch of a forward pass is several times slower on CPU.
logprobs_fn = nnx.jit(token_logprobs, static_argnames=("temperature", "return_entropy"))


@pytest.fixture(scope="module")
def model():
    return Transformer(CFG, rngs=nnx.Rngs(0))


@pytest.fixture(scope="module")
def prompts():
    return encode_batch(TOK, PROMPTS)  # left-padded [4, P], lengths [4]


@pytest.fixture(scope="module")
def rollout(model, prompts):
    return ro.sample(model, *prompts, jax.random.key(0), **SETTINGS)


def test_layout(rollout, prompts):
    tokens, lengths = prompts
    b, p = tokens.shape
    assert rollout.tokens.shape == rollout.logprobs.shape == rollout.mask.shape == (b * K, N)
    assert rollout.sequences.shape == rollout.sequence_mask.shape == (b * K, p + N)
    assert rollout.prompt_len == p and rollout.loss_mask.shape == (b * K, p + N - 1)
    # Rows b*K .. b*K+K-1 are the K samples of prompt b.
    np.testing.assert_array_equal(rollout.sequences[:, :p], np.repeat(tokens, K, axis=0))
    np.testing.assert_array_equal(rollout.sequences[:, p:], rollout.tokens)
    np.testing.assert_array_equal(
        rollout.sequence_mask[:, :p].sum(-1), np.repeat(lengths, K, axis=0)
    )
    np.testing.assert_array_equal(rollout.lengths, rollout.mask.sum(-1))
    assert rollout.tokens.dtype == jnp.int32 and rollout.logprobs.dtype == jnp.float32


def test_fixed_key_reproduces_and_keys_differ(model, prompts, rollout):
    again = ro.sample(model, *prompts, jax.random.key(0), **SETTINGS)
    other = ro.sample(model, *prompts, jax.random.key(1), **SETTINGS)
    np.testing.assert_array_equal(again.tokens, rollout.tokens)
    np.testing.assert_array_equal(again.logprobs, rollout.logprobs)
    assert not np.array_equal(other.tokens, rollout.tokens)
    # The K samples of one prompt use different keys.
    assert not np.array_equal(rollout.tokens[0::K], rollout.tokens[1::K])


def test_logprobs_equal_token_logprobs(model, rollout):
    """Sampling log-probs = log_softmax(logits / T) before top-p = what the update uses."""
    lp = logprobs_fn(model, rollout.sequences, rollout.sequence_mask, temperature=T)
    mask = np.asarray(rollout.loss_mask)
    np.testing.assert_allclose(
        np.asarray(lp)[mask], np.asarray(rollout.sequence_logprobs)[mask], atol=2e-5
    )
    assert np.all(np.asarray(rollout.sequence_logprobs)[~mask] == 0)
    assert np.all(np.asarray(rollout.logprobs) <= 0)


def test_cached_sampler_equals_naive(model, prompts, rollout):
    naive = ro.naive_sample(model, *prompts, jax.random.key(0), **SETTINGS)
    np.testing.assert_array_equal(naive.tokens, rollout.tokens)
    np.testing.assert_array_equal(naive.mask, rollout.mask)
    np.testing.assert_allclose(naive.logprobs, rollout.logprobs, atol=2e-5)


def test_eos_stops_and_masks(model, prompts, rollout):
    """Two EOS ids (as Qwen's tokenizers have): each row stops at the first of either."""
    free = np.asarray(rollout.tokens)
    # Row 0's first token, and the first token of the first row that starts differently:
    # each of those rows stops after one token, each on another id.
    other = next(r for r in range(free.shape[0]) if free[r, 0] != free[0, 0])
    eos = (int(free[0, 0]), int(free[other, 0]))
    r = ro.sample(model, *prompts, jax.random.key(0), **SETTINGS, eos_ids=eos, pad_id=TOK.pad_id)
    stopped_by = set()
    for row in range(free.shape[0]):
        hits = np.flatnonzero(np.isin(free[row], eos))
        stop = hits[0] + 1 if hits.size else N  # EOS itself is part of the completion
        if hits.size:
            stopped_by.add(int(free[row, hits[0]]))
        # Same keys -> identical tokens up to and including EOS; pad and mask after it.
        np.testing.assert_array_equal(r.tokens[row, :stop], free[row, :stop])
        assert np.all(np.asarray(r.tokens[row, stop:]) == TOK.pad_id)
        assert np.all(r.mask[row, :stop]) and not np.any(r.mask[row, stop:])
        assert np.all(np.asarray(r.logprobs[row, stop:]) == 0)
        assert int(r.lengths[row]) == stop and bool(r.finished[row]) == bool(hits.size)
    assert int(r.lengths[0]) == int(r.lengths[other]) == 1
    assert stopped_by == set(eos)  # both ids ended rows


def test_tiny_top_p_is_greedy(model, prompts):
    greedy = ro.sample(model, *prompts, jax.random.key(0), max_new_tokens=N, temperature=0.0)
    nucleus = ro.sample(
        model, *prompts, jax.random.key(5), max_new_tokens=N, temperature=1.0, top_p=1e-6
    )
    np.testing.assert_array_equal(nucleus.tokens, greedy.tokens)
    # Greedy reports temperature-1 log-probs (documented convention).
    lp = logprobs_fn(model, greedy.sequences, greedy.sequence_mask)
    mask = np.asarray(greedy.loss_mask)
    np.testing.assert_allclose(
        np.asarray(lp)[mask], np.asarray(greedy.sequence_logprobs)[mask], atol=2e-5
    )


def test_top_p_filter_exact():
    logits = jnp.log(jnp.array([[0.05, 0.5, 0.15, 0.3]]))
    keep = lambda p: np.isfinite(np.asarray(ro.top_p_filter(logits, p)))[0].tolist()
    assert keep(0.4) == [False, True, False, False]  # argmax alone reaches 0.4
    assert keep(0.8) == [False, True, False, True]  # 0.5 + 0.3 = 0.8 reaches 0.8
    assert keep(0.81) == [False, True, True, True]
    assert keep(1.0) == [True, True, True, True]
    assert keep(1e-9) == [False, True, False, False]


def _top_p_by_sorting(logits, top_p):
    """Textbook nucleus filter: sort, cumulative mass, keep while the mass before is < p."""
    order = np.argsort(-logits, axis=-1, kind="stable")
    probs = np.asarray(jax.nn.softmax(jnp.asarray(logits), axis=-1), np.float64)
    sorted_p = np.take_along_axis(probs, order, -1)
    kept = (np.cumsum(sorted_p, -1) - sorted_p) < top_p
    cutoff = np.take_along_axis(logits, order, -1)[np.arange(len(logits)), kept.sum(-1) - 1]
    return logits >= cutoff[:, None]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_top_p_bisection_matches_sorting(seed):
    rng = np.random.default_rng(seed)
    logits = np.round(rng.normal(size=(4, 500)) * (1 + 2 * seed) * 4) / 4  # many ties
    logits[0, :5] = -np.inf
    logits = logits.astype(np.float32)
    for p in (0.05, 0.3, 0.6, 0.9):
        got = np.isfinite(np.asarray(ro.top_p_filter(jnp.asarray(logits), p)))
        np.testing.assert_array_equal(got, _top_p_by_sorting(logits, p), err_msg=f"p={p}")


def test_sharded_equals_unsharded(model, prompts, rollout, devices):
    mesh = shd.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    _, _, shardings = shd.abstract_sharded_state(Transformer, CFG, mesh)
    # Exactly the fixture's weights, laid out over the mesh.
    sharded = nnx.merge(nnx.graphdef(model), jax.device_put(nnx.state(model), shardings))
    wq = nnx.state(sharded)["layers"][0]["self_attn"]["q_proj"]["kernel"][...]
    assert wq.sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor", None)
    r = ro.sample(sharded, *prompts, jax.random.key(0), **SETTINGS, mesh=mesh)
    assert r.tokens.sharding.spec == shd.data_sharding(mesh).spec
    np.testing.assert_array_equal(r.tokens, rollout.tokens)
    np.testing.assert_allclose(r.logprobs, rollout.logprobs, atol=2e-5)
    with pytest.raises(ValueError, match="cannot be split"):
        ro.sample(sharded, prompts[0][:3], prompts[1][:3], jax.random.key(0), **SETTINGS, mesh=mesh)


def test_no_retrace_on_second_call(model, prompts):
    tokens, lengths = prompts
    settings = dict(max_new_tokens=5, num_samples=3, temperature=1.0)
    ro.sample(model, tokens, lengths, jax.random.key(0), **settings)
    fn = ro._jitted(
        ro._cached_impl,
        nnx.graphdef(model),
        ro.SamplingSettings(**settings, top_p=1.0, eos_ids=(), pad_id=0),
        None,
        tuple(tuple(r) for r in shd.DEFAULT_RULES),
    )
    assert fn._cache_size() == 1
    other = encode_batch(TOK, ["x", "yy", "zzz", "w"], max_len=tokens.shape[1])
    ro.sample(model, *other, jax.random.key(1), **settings)
    assert fn._cache_size() == 1  # same shapes and settings: no second trace


def test_dense_engine_is_the_sampler(model, prompts):
    """The trainer's engine returns exactly `sample`'s rollout (host prompts placed on the
    mesh by the engine, parameters as the learner keeps them)."""
    mesh = shd.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    settings = ro.SamplingSettings(
        max_new_tokens=5, num_samples=2, temperature=1.0, top_p=0.9, eos_ids=(), pad_id=0
    )
    engine = engines.make_rollout_engine(
        "dense", nnx.graphdef(model), settings, mesh, shd.DEFAULT_RULES
    )
    tokens, lengths = (np.asarray(x) for x in prompts)
    got = engine.generate(nnx.state(model), tokens, lengths, jax.random.key(3))
    want = ro.sample(model, *prompts, jax.random.key(3), max_new_tokens=5, num_samples=2, top_p=0.9)
    np.testing.assert_array_equal(got.tokens, want.tokens)
    np.testing.assert_allclose(got.logprobs, want.logprobs, atol=2e-5)
    with pytest.raises(ValueError, match="unknown rollout engine"):
        engines.make_rollout_engine("paged", nnx.graphdef(model), settings, mesh, shd.DEFAULT_RULES)


def test_long_responses_match_the_full_forward():
    """Prompt + response of 4,608 tokens (a reasoning-length rollout): the cached sampler's
    log-probs equal a full forward's over the whole sequence at positions up to 4.6k, with the
    scanned layers and chunked log-probs real models use."""
    cfg = TransformerConfig.tiny(
        TOK.vocab_size, num_layers=1, embed_dim=32, mlp_dim=64, num_heads=2, num_kv_heads=1,
        head_dim=16, scan_layers=True, logits_chunk=512, max_seq_len=8192,
    )  # fmt: skip
    model = Transformer(cfg, rngs=nnx.Rngs(1))
    tokens, lengths = encode_batch(TOK, ["x" * 500, "y" * 511], max_len=512)
    n = 4096
    r = ro.sample(model, tokens, lengths, jax.random.key(3), max_new_tokens=n, temperature=1.0)
    assert r.sequences.shape == (2, 512 + n) and bool(r.mask.all())  # no EOS: every token drawn
    recomputed = logprobs_fn(model, r.sequences, r.sequence_mask, temperature=1.0)
    got = np.asarray(r.sequence_logprobs)[np.asarray(r.loss_mask)]
    want = np.asarray(recomputed)[np.asarray(r.loss_mask)]
    np.testing.assert_allclose(got, want, atol=2e-4)
