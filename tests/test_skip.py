"""Predicted-zero-variance skipping: P(S=0) + P(S=K) against scipy, selection order against a
numpy lexicographic reference, sharded == single device, the exploration rate, and skip=None
selecting exactly what the documented key split gives."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P
from scipy import stats

from insight_jax.selection import (
    Beliefs,
    Skip,
    draw_candidates,
    get_scorer,
    pool_shard,
    select_batch,
    zero_variance_probability,
)
from insight_jax.selection.select import _select

K = 8


def ref_zero_variance(alpha, beta, k):
    a, b = np.asarray(alpha, np.float64), np.asarray(beta, np.float64)
    return stats.betabinom.pmf(0, k, a, b) + stats.betabinom.pmf(k, k, a, b)


def reference_order(scores, skipped):
    """Positions sorted by (not skipped first, score descending, lowest position first), with
    NaN / -inf scores below every finite one (select.py's _clean)."""
    s = np.asarray(scores, np.float64)
    s = np.where(np.isnan(s) | (s == -np.inf), -1e300, s)
    return np.lexsort((np.arange(s.size), -s, np.asarray(skipped)))


def _pool(n, seed, sharding=None):
    """Beliefs spanning certain and uncertain prompts, with exact duplicates (score ties); a
    sharded pool is padded with prior slots, as init_beliefs pads it."""
    rng = np.random.default_rng(seed)
    evidence = 10.0 ** rng.uniform(0.3, 3.0, n)
    mean = rng.uniform(0.005, 0.995, n)
    alpha, beta = mean * evidence, (1 - mean) * evidence
    dup = rng.choice(n, n // 5, replace=False)
    alpha[dup], beta[dup] = alpha[dup[0]], beta[dup[0]]
    size = n if sharding is None else -(-n // 8) * 8
    alpha = np.r_[alpha, np.ones(size - n)].astype(np.float32)
    beta = np.r_[beta, np.ones(size - n)].astype(np.float32)
    put = (lambda x: jax.device_put(x, sharding)) if sharding else jnp.asarray
    return Beliefs(put(alpha), put(beta), num_items=n)


def _threshold_between(p, quantile):
    """A threshold in the widest gap of p near the given quantile, so that float32 rounding of
    p (~1e-6) cannot move a prompt across it."""
    q = np.unique(p)  # sorted; duplicated beliefs share one value
    i = int(quantile * q.size)
    gaps = np.diff(q[i : i + 60])
    j = i + int(np.argmax(gaps))
    assert q[j + 1] - q[j] > 1e-4, "no usable gap in this seeded pool"
    return float(0.5 * (q[j] + q[j + 1]))


def _cached_scores(n, seed, sharding=None):
    """Integer-valued scores (many ties) with NaNs, padded like the pool."""
    rng = np.random.default_rng(seed)
    s = rng.integers(0, 40, n).astype(np.float32)
    s[rng.choice(n, n // 20, replace=False)] = np.nan
    if sharding is None:
        return s, jnp.asarray(s)
    size = -(-n // 8) * 8
    return s, jax.device_put(np.r_[s, np.zeros(size - n, np.float32)], sharding)


def _mesh_sharding(layout):
    if layout == "data8":
        mesh = jax.make_mesh((8,), ("data",), axis_types=(AxisType.Auto,))
        return NamedSharding(mesh, P("data"))
    mesh = jax.make_mesh((2, 4), ("data", "fsdp"), axis_types=(AxisType.Auto,) * 2)
    return NamedSharding(mesh, P(("data", "fsdp")))


@pytest.mark.parametrize("k", [1, 4, 8, 16])
def test_zero_variance_probability_matches_scipy(k):
    seed = 10 + k
    rng = np.random.default_rng(seed)
    a = (10.0 ** rng.uniform(-2, 5, 300)).astype(np.float32)
    b = (10.0 ** rng.uniform(-2, 5, 300)).astype(np.float32)
    # Large evidence on both sides, and certain beliefs: a >> b and b >> a.
    a[:100], b[:100] = (10.0 ** rng.uniform(3, 5, (2, 100))).astype(np.float32)
    a[100:110], b[100:110] = 1e5, rng.uniform(0.01, 2, 10)
    a[110:120], b[110:120] = rng.uniform(0.01, 2, 10), 1e5
    fn = jax.jit(zero_variance_probability, static_argnums=2)
    got = np.asarray(fn(a, b, k))
    ref = ref_zero_variance(a, b, k)
    rel = np.abs(got - ref) / ref  # O(K) float32 roundings (docstring)
    worst = int(np.argmax(rel))
    assert got.dtype == np.float32 and rel[worst] < 3e-7 * k, (
        f"seed={seed} K={k} a={a[worst]} b={b[worst]} got={got[worst]} ref={ref[worst]}"
    )
    with jax.enable_x64(True):
        got64 = np.asarray(fn(a.astype(np.float64), b.astype(np.float64), k))
    np.testing.assert_allclose(got64, ref, rtol=1e-9, err_msg=f"seed={seed} K={k} float64")


def test_zero_variance_probability_elementwise_and_validated():
    rng = np.random.default_rng(3)
    a, b = rng.uniform(0.1, 50, (4, 5)), rng.uniform(0.1, 50, (1, 5))
    got = np.asarray(zero_variance_probability(a, b, 4))
    assert got.shape == (4, 5)
    np.testing.assert_allclose(got, ref_zero_variance(a, b, 4), rtol=1e-5, err_msg="seed=3")
    assert np.all(np.asarray(zero_variance_probability(a, b, 1)) == 1.0)  # K=1: always
    with pytest.raises(ValueError, match="num_rollouts"):
        zero_variance_probability(a, b, 0)
    with pytest.raises(TypeError, match="num_rollouts"):
        zero_variance_probability(a, b, 4.0)


@pytest.mark.parametrize("batch_size", [48, 2200])  # many survivors / fewer than M survive
def test_whole_pool_matches_lexicographic_reference(batch_size):
    n, seed = 3001, 21
    b = _pool(n, seed)
    p = ref_zero_variance(b.alpha, b.beta, K)
    skip = Skip(_threshold_between(p, 0.4), explore=0.0, num_rollouts=K)
    skipped = p > skip.threshold
    assert 0 < n - skipped.sum() < 2200 < n, "the cases must cover both branches"
    host, scores = _cached_scores(n, seed)
    scorer = get_scorer("insight")
    got = np.asarray(select_batch(jax.random.key(0), b, batch_size, n, scorer, scores=scores))
    want = reference_order(host, np.zeros(n, bool))[:batch_size]
    np.testing.assert_array_equal(got, want, err_msg="skip=None")
    got = select_batch(jax.random.key(0), b, batch_size, n, scorer, scores=scores, skip=skip)
    want = reference_order(host, skipped)[:batch_size]
    np.testing.assert_array_equal(got, want, err_msg=f"seed={seed} M={batch_size}")


@pytest.mark.parametrize("batch_size", [32, 400])
def test_candidate_mode_matches_lexicographic_reference(batch_size):
    n, mhat, seed = 20_000, 512, 22
    b = _pool(n, seed)
    p = ref_zero_variance(b.alpha, b.beta, K)
    skip = Skip(_threshold_between(p, 0.5), explore=0.0, num_rollouts=K)
    scorer = get_scorer("insight", num_rollouts=K)
    key = jax.random.key(seed)
    got = np.asarray(select_batch(key, b, batch_size, mhat, scorer, skip=skip))
    cand = np.asarray(draw_candidates(jax.random.split(key)[0], n, mhat))
    scores = np.asarray(scorer(None, b.alpha, b.beta))[cand]
    skipped = p[cand] > skip.threshold
    assert 32 < mhat - skipped.sum() < 400
    np.testing.assert_array_equal(got, cand[reference_order(scores, skipped)[:batch_size]])


def test_few_survivors_filled_from_skipped_in_score_order():
    """Only r < M prompts survive: they come first by score, then the best skipped ones."""
    n, m, seed = 500, 40, 23
    rng = np.random.default_rng(seed)
    alpha = np.full(n, 0.05, np.float32)  # certain failures: P(zero variance) ~ 0.9
    beta = np.full(n, 20.0, np.float32)
    live = rng.choice(n, 7, replace=False)
    alpha[live], beta[live] = 3.0, 3.0  # uncertain: P ~ 0.01
    b = Beliefs(jnp.asarray(alpha), jnp.asarray(beta), num_items=n)
    scores = rng.normal(size=n).astype(np.float32)
    skip = Skip(0.5, 0.0, K)
    for mhat in (n, 300):
        key = jax.random.key(mhat)
        scorer, cached = get_scorer("insight"), jnp.asarray(scores)
        got = np.asarray(select_batch(key, b, m, mhat, scorer, scores=cached, skip=skip))
        pool = (
            np.arange(n)
            if mhat == n
            else np.asarray(draw_candidates(jax.random.split(key)[0], n, mhat))
        )
        is_live = np.isin(pool, live)
        first = pool[is_live][np.argsort(-scores[pool[is_live]], kind="stable")]
        rest = pool[~is_live][np.argsort(-scores[pool[~is_live]], kind="stable")]
        np.testing.assert_array_equal(got, np.r_[first, rest][:m], err_msg=f"Mhat={mhat}")


# mopps (a stochastic scorer: its stream must be untouched too) compiles slowly: ~1 min.
@pytest.mark.parametrize("name", ["insight", pytest.param("mopps", marks=pytest.mark.slow)])
def test_trivial_skips_and_none_follow_the_documented_streams(name):
    """skip=None is the top-M of the scorer's scores under split(key) (what selection did before
    skipping existed); explore=1 (every coin keeps), threshold=1 (P <= 1 never exceeds it) and
    threshold=0 with explore=0 (everything skipped, order unchanged) select exactly the same."""
    n, seed = 3001, 24
    b = _pool(n, seed)
    scorer = get_scorer(name)
    for mhat in (n, 256):
        key = jax.random.key(seed + mhat)
        k_cand, k_score = jax.random.split(key)
        if mhat == n:
            scores = np.asarray(scorer(k_score, b.alpha, b.beta))
            want = np.argsort(-scores, kind="stable")[:32]
        else:
            cand = np.asarray(draw_candidates(k_cand, n, mhat))
            scores = np.asarray(scorer(k_score, b.alpha[cand], b.beta[cand]))
            want = cand[np.argsort(-scores, kind="stable")[:32]]
        np.testing.assert_array_equal(select_batch(key, b, 32, mhat, scorer), want, f"{mhat}")
        for skip in (Skip(0.3, 1.0, K), Skip(1.0, 0.0, K), Skip(0.0, 0.0, K)):
            got = select_batch(key, b, 32, mhat, scorer, skip=skip)
            np.testing.assert_array_equal(got, want, err_msg=f"Mhat={mhat} {skip}")


def test_exploration_rate_is_honoured():
    """With M = the whole pool (or all candidates) and scores falling with the index, the output
    is the kept prompts in index order, then the skipped ones: the first descent is the split."""
    n, seed, explore = 4000, 25, 0.2
    b = _pool(n, seed)
    p = ref_zero_variance(b.alpha, b.beta, K)
    skip = Skip(_threshold_between(p, 0.3), explore, K)
    skippable = p > skip.threshold
    scores = -jnp.arange(n, dtype=jnp.float32)
    kept_sets = []
    for mhat in (n, 1024):
        for trial in range(4):
            key = jax.random.key(100 * trial + mhat)
            got = np.asarray(
                select_batch(key, b, mhat, mhat, get_scorer("insight"), scores=scores, skip=skip)
            )
            split = int(np.argmax(np.diff(got) < 0)) + 1
            kept, dropped = got[:split], got[split:]
            assert np.all(np.diff(kept) > 0) and np.all(np.diff(dropped) > 0)
            assert np.all(skippable[dropped]), "only predicted-zero-variance prompts are skipped"
            trials = int(skippable[got].sum())
            explored = int(skippable[kept].sum())
            tol = 5 * np.sqrt(trials * explore * (1 - explore))
            assert abs(explored - explore * trials) < tol, f"seed={seed} Mhat={mhat} {trial}"
            if mhat == n:
                kept_sets.append(set(kept[skippable[kept]]))
    # Independent coins per call: two calls keep the same prompt with probability explore^2.
    both = len(kept_sets[0] & kept_sets[1])
    trials = int(skippable.sum())
    tol = 5 * np.sqrt(trials * explore**2)
    assert abs(both - trials * explore**2) < tol, f"seed={seed} overlap {both}"


# One layout in the default run (each compiles 8 selections, ~30 s); both under -m slow.
@pytest.mark.parametrize("layout", [pytest.param("data8", marks=pytest.mark.slow), "data_fsdp"])
def test_sharded_equals_single_device(layout, devices):
    n, seed = 3001, 26  # not a multiple of 8: padded slots must never be selected
    sharding = _mesh_sharding(layout)
    single, sharded = _pool(n, seed), _pool(n, seed, sharding)
    p = ref_zero_variance(single.alpha, single.beta, K)
    skip = Skip(_threshold_between(p, 0.6), 0.3, K)
    host, cached = _cached_scores(n, seed, sharding)
    for name, scores_single, scores_sharded in [
        ("mopps", None, None),
        ("insight", jnp.asarray(host), cached),
    ]:
        scorer = get_scorer(name)
        for mhat, m in ((n, 2500), (n, 32), (256, 32)):
            key = jax.random.key(mhat + m)
            a = select_batch(key, single, m, mhat, scorer, scores=scores_single, skip=skip)
            s = select_batch(key, sharded, m, mhat, scorer, scores=scores_sharded, skip=skip)
            np.testing.assert_array_equal(a, s, err_msg=f"{layout} {name} Mhat={mhat} M={m}")
            assert len(np.unique(np.asarray(a))) == m and np.max(a) < n


def test_sharded_whole_pool_never_gathers_the_pool(devices):
    """Every collective in the compiled whole-pool selection moves at most S*M elements."""
    n, m = 3001, 32
    sharding = _mesh_sharding("data8")
    b = _pool(n, 27, sharding)
    hlo = (
        _select.lower(
            jax.random.key(0),
            b,
            None,
            batch_size=m,
            num_candidates=n,
            scorer=get_scorer("insight"),
            shard=pool_shard(b.alpha),
            skip=Skip(0.5, 0.1, K),
        )
        .compile()
        .as_text()
    )
    sizes = []
    op = re.compile(r"= (.*?) (all-gather|all-to-all|collective-permute)(-start)?\(")
    for line in hlo.splitlines():
        if found := op.search(line):
            for dims in re.findall(r"\[([\d,]*)\]", found.group(1)):
                sizes.append(int(np.prod([int(d) for d in dims.split(",") if d])))
    assert sizes, "expected the top-k all-gathers"
    assert max(sizes) <= 8 * m, f"a collective moves {max(sizes)} elements"


def test_skip_options_validated_and_hash_once():
    with pytest.raises(ValueError, match=r"Skip\.threshold must be in \[0, 1\]"):
        Skip(1.5, 0.1, K)
    with pytest.raises(TypeError, match=r"Skip\.explore must be a number"):
        Skip(0.5, True, K)
    with pytest.raises(ValueError, match="num_rollouts"):
        Skip(0.5, 0.1, 0)
    b = _pool(100, 28)
    with pytest.raises(TypeError, match="skip must be a Skip"):
        select_batch(jax.random.key(0), b, 4, 100, get_scorer("insight"), skip=(0.5, 0.1, K))
    select_batch(jax.random.key(0), b, 4, 100, get_scorer("insight"), skip=Skip(0.5, 0.1, K))
    size = _select._cache_size()
    select_batch(jax.random.key(1), b, 4, 100, get_scorer("insight"), skip=Skip(0.5, 0.1, K))
    assert _select._cache_size() == size  # an equal Skip is the same static argument
