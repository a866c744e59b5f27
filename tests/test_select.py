"""Candidate draws, whole-pool / candidate top-k, sharded == single-device, score caching."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P
from scipy import stats

from insight_jax.selection import (
    SCORER_NAMES,
    draw_candidates,
    dynamic_sampling_mask,
    get_scorer,
    init_beliefs,
    init_scores,
    rescore,
    select_batch,
    top_k_indices,
    update_beliefs,
)
from insight_jax.selection.select import Shard, _select


def reference_top(scores, m):
    """Top m by score, ties to the lowest index (a stable sort of -score)."""
    return np.argsort(-np.asarray(scores, np.float64), kind="stable")[:m]


def _shardings():
    mesh8 = jax.make_mesh((8,), ("data",), axis_types=(AxisType.Auto,))
    mesh24 = jax.make_mesh((2, 4), ("data", "fsdp"), axis_types=(AxisType.Auto,) * 2)
    return {
        "data8": NamedSharding(mesh8, P("data")),
        "data_fsdp": NamedSharding(mesh24, P(("data", "fsdp"))),
        "fsdp_only": NamedSharding(mesh24, P("fsdp")),  # replicated over "data"
    }


def _random_beliefs(n, sharding=None, seed=None, steps=3, k=8):
    rng = np.random.default_rng(seed)
    b = init_beliefs(n, sharding=sharding)
    for _ in range(steps):
        idx = rng.choice(n, min(n, 400), replace=False)
        b = update_beliefs(b, idx, rng.integers(0, k + 1, idx.size), k)
    return b


def test_draw_candidates_distinct_in_range():
    for n, m in [(10_000_000, 4096), (1000, 300), (50, 50), (7, 1)]:
        c = np.asarray(draw_candidates(jax.random.key(n), n, m))
        assert c.shape == (m,) and c.dtype == np.int32
        assert len(np.unique(c)) == m and c.min() >= 0 and c.max() < n
    with pytest.raises(ValueError, match="num_candidates"):
        draw_candidates(jax.random.key(0), 10, 11)


@pytest.mark.parametrize("n, m", [(8, 2), (9, 5), (40, 3)])
def test_draw_candidates_uniform_without_replacement(n, m):
    """Every m-subset equally likely (chi-square over subsets), whichever internal path runs.

    (8, 2) uses the i.i.d.-stream path and hits its rare fallback (all 4 draws equal, p = 1/512);
    (9, 5) the dense path; (40, 3) the stream path with 9880 subsets (chi-square on indices)."""
    trials = 20_000
    keys = jax.random.split(jax.random.key(np.random.default_rng().integers(2**31)), trials)
    draws = np.asarray(jax.vmap(lambda k: draw_candidates(k, n, m))(keys))
    assert all(len(set(row)) == m for row in draws[:500])
    if len(list(itertools.combinations(range(n), m))) <= 200:
        subsets = {s: i for i, s in enumerate(itertools.combinations(range(n), m))}
        counts = np.bincount([subsets[tuple(sorted(r))] for r in draws], minlength=len(subsets))
    else:
        counts = np.bincount(draws.ravel(), minlength=n)
    assert stats.chisquare(counts).pvalue > 1e-4


def test_top_k_ties_go_to_lowest_index():
    v = jnp.array([1.0, 3.0, 3.0, 2.0, 3.0, 2.0])
    np.testing.assert_array_equal(top_k_indices(v, 4), [1, 2, 4, 3])


@pytest.mark.parametrize("name", SCORER_NAMES)
def test_whole_pool_selection_matches_reference(name):
    b = _random_beliefs(5000)
    scorer = get_scorer(name)
    key = jax.random.key(3)
    got = np.asarray(select_batch(key, b, 64, 5000, scorer))
    # The same key split that select_batch documents: (candidates, scores).
    scores = np.asarray(scorer(jax.random.split(key)[1], b.alpha, b.beta))
    np.testing.assert_array_equal(got, reference_top(scores, 64))


def test_candidate_selection_is_top_of_candidates():
    b = _random_beliefs(20_000)
    scorer = get_scorer("insight")
    key = jax.random.key(11)
    got = np.asarray(select_batch(key, b, 32, 512, scorer))
    cand = np.asarray(draw_candidates(jax.random.split(key)[0], 20_000, 512))
    cand_scores = np.asarray(scorer(None, b.alpha, b.beta))[cand]
    np.testing.assert_array_equal(got, cand[reference_top(cand_scores, 32)])


def test_whole_pool_ties_deterministic_lowest_index():
    b = init_beliefs(1000)  # every prompt at the prior: all scores tie
    for key in (jax.random.key(0), jax.random.key(1)):
        got = select_batch(key, b, 16, 10**9, get_scorer("insight"))
        np.testing.assert_array_equal(got, np.arange(16))


SHARDED_CASES = [("data8", name) for name in SCORER_NAMES] + [
    (layout, name) for layout in ("data_fsdp", "fsdp_only") for name in ("insight", "mopps")
]


@pytest.mark.parametrize("layout, name", SHARDED_CASES)
def test_sharded_equals_single_device(layout, name, devices):
    n = 3001  # not divisible by the shard count: exercises padding
    sharding = _shardings()[layout]
    single = _random_beliefs(n, seed=5)
    sharded = _random_beliefs(n, sharding=sharding, seed=5)
    scorer = get_scorer(name)
    for num_candidates in (256, n):
        key = jax.random.key(num_candidates)
        a = select_batch(key, single, 32, num_candidates, scorer)
        s = select_batch(key, sharded, 32, num_candidates, scorer)
        np.testing.assert_array_equal(a, s)


def test_padding_never_selected(devices):
    n = 1003
    b = _random_beliefs(n, sharding=_shardings()["data8"], seed=1)
    # Selecting the whole pool returns every real prompt exactly once, no padded slot.
    got = np.asarray(select_batch(jax.random.key(0), b, n, n, get_scorer("inverse_evidence")))
    np.testing.assert_array_equal(np.sort(got), np.arange(n))


def test_nan_scores_rank_last_but_above_padding(devices):
    n = 20
    b = init_beliefs(n, sharding=_shardings()["data8"])
    scores = jnp.asarray(np.r_[np.full(10, np.nan), np.arange(10.0), np.zeros(4)], jnp.float32)
    scores = jax.device_put(scores, b.alpha.sharding)
    got = np.asarray(
        select_batch(jax.random.key(0), b, 15, n, get_scorer("insight"), scores=scores)
    )
    np.testing.assert_array_equal(got[:10], np.arange(19, 9, -1))
    np.testing.assert_array_equal(got[10:], np.arange(5))  # NaN entries, lowest index first


@pytest.mark.parametrize("sharded", [False, True])
def test_incremental_rescore_equals_full_rescore(sharded, devices):
    n, k = 4099, 8
    sharding = _shardings()["data_fsdp"] if sharded else None
    b = _random_beliefs(n, sharding=sharding, seed=2)
    rng = np.random.default_rng()
    for name in ("insight", "expected_difficulty", "inverse_evidence"):
        scorer = get_scorer(name, num_rollouts=k)
        cache = init_scores(b, scorer)
        for _ in range(3):
            key = jax.random.key(int(rng.integers(2**31)))
            idx = select_batch(key, b, 64, n, scorer, scores=cache)
            np.testing.assert_array_equal(idx, select_batch(key, b, 64, n, scorer))
            b = update_beliefs(b, idx, rng.integers(0, k + 1, 64), k)
            cache = rescore(cache, b, idx, scorer)
            np.testing.assert_allclose(cache, init_scores(b, scorer), rtol=1e-6)
        if sharded:
            assert cache.sharding == b.alpha.sharding


def test_cache_refused_for_stochastic_scorers():
    b = init_beliefs(10)
    with pytest.raises(ValueError, match="deterministic"):
        init_scores(b, get_scorer("mopps"))
    with pytest.raises(ValueError, match="deterministic"):
        select_batch(jax.random.key(0), b, 2, 10, get_scorer("random"), scores=jnp.zeros(10))


def test_batch_size_validation():
    b = init_beliefs(10)
    with pytest.raises(ValueError, match="batch_size"):
        select_batch(jax.random.key(0), b, 11, 100, get_scorer("insight"))
    with pytest.raises(ValueError, match="batch_size"):
        select_batch(jax.random.key(0), b, 5, 4, get_scorer("insight"))


def test_select_compiles_once_per_shape(devices):
    b = _random_beliefs(2000, seed=3)
    scorer = get_scorer("insight", eta=2.5)
    select_batch(jax.random.key(0), b, 16, 256, scorer)
    size = _select._cache_size()
    b2 = update_beliefs(b, np.arange(16), np.ones(16), 8)
    select_batch(jax.random.key(1), b2, 16, 256, get_scorer("insight", eta=2.5))
    assert _select._cache_size() == size  # new key, new beliefs, equal scorer: no re-trace


def test_dynamic_sampling_mask():
    r = jnp.array([[1, 1, 1, 1], [0, 0, 0, 0], [1, 0, 1, 1], [0.1, 0.1, 0.1, 0.1], [0.1, 0, 0, 0]])
    np.testing.assert_array_equal(dynamic_sampling_mask(r), [False, False, True, False, True])


def test_shard_inference():
    from insight_jax.selection import pool_shard

    assert pool_shard(jnp.zeros(16)) is None
    s = pool_shard(jax.device_put(jnp.zeros(16), _shardings()["data_fsdp"]))
    assert isinstance(s, Shard) and s.axes == ("data", "fsdp")
