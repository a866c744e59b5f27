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


def _random_beliefs(n, *, seed, sharding=None, steps=3, k=8):
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
    trials, seed = 20_000, 1000 * n + m
    keys = jax.random.split(jax.random.key(seed), trials)
    draws = np.asarray(jax.vmap(lambda k: draw_candidates(k, n, m))(keys))
    assert all(len(set(row)) == m for row in draws[:500])
    if len(list(itertools.combinations(range(n), m))) <= 200:
        subsets = {s: i for i, s in enumerate(itertools.combinations(range(n), m))}
        counts = np.bincount([subsets[tuple(sorted(r))] for r in draws], minlength=len(subsets))
    else:
        counts = np.bincount(draws.ravel(), minlength=n)
    assert stats.chisquare(counts).pvalue > 1e-4, f"seed={seed}"


def test_top_k_ties_go_to_lowest_index():
    v = jnp.array([1.0, 3.0, 3.0, 2.0, 3.0, 2.0])
    np.testing.assert_array_equal(top_k_indices(v, 4), [1, 2, 4, 3])


@pytest.mark.parametrize("name", SCORER_NAMES)
def test_whole_pool_selection_matches_reference(name):
    b = _random_beliefs(5000, seed=6)
    scorer = get_scorer(name)
    key = jax.random.key(3)
    got = np.asarray(select_batch(key, b, 64, 5000, scorer))
    # The same key split that select_batch documents: (candidates, scores).
    scores = np.asarray(scorer(jax.random.split(key)[1], b.alpha, b.beta))
    np.testing.assert_array_equal(got, reference_top(scores, 64), err_msg=f"seed=6 {name}")


def test_candidate_selection_is_top_of_candidates():
    b = _random_beliefs(20_000, seed=7)
    scorer = get_scorer("insight")
    key = jax.random.key(11)
    got = np.asarray(select_batch(key, b, 32, 512, scorer))
    cand = np.asarray(draw_candidates(jax.random.split(key)[0], 20_000, 512))
    cand_scores = np.asarray(scorer(None, b.alpha, b.beta))[cand]
    np.testing.assert_array_equal(got, cand[reference_top(cand_scores, 32)], err_msg="seed=7")


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
    seed = 3
    rng = np.random.default_rng(seed)
    for name in ("insight", "expected_difficulty", "inverse_evidence"):
        scorer = get_scorer(name, num_rollouts=k)
        cache = init_scores(b, scorer)
        for _ in range(3):
            key = jax.random.key(int(rng.integers(2**31)))
            idx = select_batch(key, b, 64, n, scorer, scores=cache)
            np.testing.assert_array_equal(idx, select_batch(key, b, 64, n, scorer))
            b = update_beliefs(b, idx, rng.integers(0, k + 1, 64), k)
            cache = rescore(cache, b, idx, scorer)
            msg = f"seed={seed} {name}"
            np.testing.assert_allclose(cache, init_scores(b, scorer), rtol=1e-6, err_msg=msg)
        if name == "inverse_evidence":  # independently: the cache is -(alpha + beta)
            alpha, beta = np.asarray(b.alpha, np.float64), np.asarray(b.beta, np.float64)
            np.testing.assert_allclose(cache[:n], -(alpha + beta)[:n], rtol=1e-6, err_msg=msg)
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
    with pytest.raises(ValueError, match=r"batch_size must be in \[1, min\(num_items=10, "):
        select_batch(jax.random.key(0), b, 11, 100, get_scorer("insight"))
    with pytest.raises(ValueError, match=r"num_candidates=4\)\], got 5"):
        select_batch(jax.random.key(0), b, 5, 4, get_scorer("insight"))
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1, got 0"):
        select_batch(jax.random.key(0), b, 0, 10, get_scorer("insight"))
    with pytest.raises(ValueError, match="num_candidates must be an integer >= 1, got -3"):
        select_batch(jax.random.key(0), b, 2, -3, get_scorer("insight"))


NON_INTEGERS = [2.5, 4.0, np.float32(4.0), np.float64(2.0), True, np.True_, "4", None]


@pytest.mark.parametrize("value", NON_INTEGERS, ids=repr)
@pytest.mark.parametrize("argument", ["batch_size", "num_candidates"])
def test_non_integer_sizes_rejected(argument, value):
    b = init_beliefs(10)
    sizes = dict(batch_size=2, num_candidates=10) | {argument: value}
    with pytest.raises(TypeError, match=rf"{argument} must be an integer >= 1, got "):
        select_batch(jax.random.key(0), b, scorer=get_scorer("insight"), **sizes)


def test_numpy_integer_sizes_accepted():
    b = _random_beliefs(50, seed=4)
    scorer = get_scorer("insight")
    want = np.asarray(select_batch(jax.random.key(0), b, 4, 20, scorer))
    for m, mhat in [(np.int64(4), np.int32(20)), (np.int8(4), np.uint16(20))]:
        got = np.asarray(select_batch(jax.random.key(0), b, m, mhat, scorer))
        np.testing.assert_array_equal(got, want)


BAD_INDICES = [
    ([3, 10], r"indices\[1\] = 10 is out of range: allowed \[0, 10\)"),
    ([-1, 2], r"indices\[0\] = -1 is out of range: allowed \[0, 10\)"),
    ([4, 4], r"duplicate indices"),
    ([0.0, 1.0], "indices must be integers"),
    ([[0, 1]], "indices must be 1-D"),
]


@pytest.mark.parametrize("indices, message", BAD_INDICES)
@pytest.mark.parametrize("kind", ["list", "numpy", "jax"])
def test_rescore_rejects_bad_indices_before_donating(indices, message, kind):
    b = update_beliefs(init_beliefs(10), [0, 4], [8, 0], 8)
    scorer = get_scorer("inverse_evidence")
    cache = jnp.zeros(10)  # stale: only the rescored entries change
    idx = {"list": indices, "numpy": np.asarray(indices), "jax": jnp.asarray(indices)}[kind]
    with pytest.raises(ValueError, match=message):
        rescore(cache, b, idx, scorer)
    np.testing.assert_array_equal(cache, 0.0)  # not donated, still usable
    want = np.zeros(10)
    want[[0, 4]] = -10.0  # n = 1 + 1 + 8 after one update with K = 8
    np.testing.assert_array_equal(rescore(cache, b, [0, 4], scorer), want)


def test_rescore_rejects_padding_slots_of_a_sharded_pool(devices):
    n = 1003  # padded to 1008 over 8 shards: 1003 .. 1007 are padding, not prompts
    b = init_beliefs(n, sharding=_shardings()["data8"])
    scorer = get_scorer("insight")
    cache = init_scores(b, scorer)
    with pytest.raises(ValueError, match=r"= 1005 is out of range: allowed \[0, 1003\)"):
        rescore(cache, b, jnp.array([0, 1005]), scorer)


def test_rescore_under_jit_takes_traced_indices():
    """Traced indices cannot be checked on the host (documented); the jitted path still works."""
    b = update_beliefs(init_beliefs(6), [1, 2], [3, 1], 4)
    scorer = get_scorer("inverse_evidence")
    cache = jnp.zeros(6)
    got = jax.jit(lambda c, i: rescore(c, b, i, scorer))(cache, jnp.array([2, 1]))
    np.testing.assert_array_equal(got, [0, -6, -6, 0, 0, 0])


def test_select_compiles_once_per_shape(devices):
    b = _random_beliefs(2000, seed=3)
    scorer = get_scorer("insight", eta=2.5)
    select_batch(jax.random.key(0), b, 16, 256, scorer)
    size = _select._cache_size()
    b2 = update_beliefs(b, np.arange(16), np.ones(16), 8)
    select_batch(jax.random.key(1), b2, 16, 256, get_scorer("insight", eta=2.5))
    assert _select._cache_size() == size  # new key, new beliefs, equal scorer: no re-trace


def test_shard_inference():
    from insight_jax.selection import pool_shard

    assert pool_shard(jnp.zeros(16)) is None
    s = pool_shard(jax.device_put(jnp.zeros(16), _shardings()["data_fsdp"]))
    assert isinstance(s, Shard) and s.axes == ("data", "fsdp")
