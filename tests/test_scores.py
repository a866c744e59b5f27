"""Scorer registry: each score against an independent float64 / mpmath formula, parameters."""

import functools

import jax
import jax.numpy as jnp
import mpmath as mp
import numpy as np
import pytest
from scipy import special as sps

import insight_jax.selection as selection
from insight_jax.selection import SCORER_NAMES, get_scorer, insight_score, scorer_defaults

POOL_SEED = 20240611


def mi_float64(a, b, k):
    """I_K = H(S) - E_phi[H(S|phi)], the discrete form (accurate in float64 for moderate n)."""
    s = np.arange(k + 1)
    logc = sps.gammaln(k + 1) - sps.gammaln(s + 1) - sps.gammaln(k - s + 1)
    logp = logc + sps.betaln(a[:, None] + s, b[:, None] + k - s) - sps.betaln(a, b)[:, None]
    h_s = -np.sum(np.exp(logp) * logp, axis=1)
    n = a + b
    e_plogp = (a / n) * (sps.digamma(a + 1) - sps.digamma(n + 1))
    e_qlogq = (b / n) * (sps.digamma(b + 1) - sps.digamma(n + 1))
    e_h_binom = -np.sum(np.exp(logp) * logc, axis=1) - k * (e_plogp + e_qlogq)
    return h_s - e_h_binom


@functools.cache
def mi_mpmath(a: float, b: float, k: int) -> float:
    """The same discrete form, I_K = H(S) - E_phi[H(S | phi)], at 40 digits (any n)."""
    with mp.workdps(40):
        a, b = mp.mpf(a), mp.mpf(b)
        n, log_b = a + b, mp.log(mp.beta(a, b))
        h_s = e_logc = mp.mpf(0)
        for s in range(k + 1):
            logc = mp.log(mp.binomial(k, s))
            logp = logc + mp.log(mp.beta(a + s, b + k - s)) - log_b
            h_s -= mp.exp(logp) * logp
            e_logc += mp.exp(logp) * logc
        e_plogp = (a / n) * (mp.digamma(a + 1) - mp.digamma(n + 1))
        e_qlogq = (b / n) * (mp.digamma(b + 1) - mp.digamma(n + 1))
        return float(h_s + e_logc + k * (e_plogp + e_qlogq))


def weight64(a, b, eta, mu):
    """w(phibar) in float64 from the counts: phibar (1 - phibar) = a b / n^2."""
    n = a + b
    return a * b / n**2 * np.exp(-eta * (a / n - mu) ** 2)


def _log_uniform_pool(seed, size, lo, hi):
    rng = np.random.default_rng(seed)
    a = (10 ** rng.uniform(lo, hi, size)).astype(np.float32)
    b = (10 ** rng.uniform(lo, hi, size)).astype(np.float32)
    # The corners: phibar nearest 0 and 1 (where 1 - phibar cancels) and the extreme evidences.
    a[:4], b[:4] = [10**lo, 10**hi, 10**lo, 10**hi], [10**hi, 10**lo, 10**lo, 10**hi]
    return a, b


@pytest.fixture
def pool():
    return _log_uniform_pool(POOL_SEED, 300, 0.0, 2.5)


def test_insight_matches_float64(pool):
    a, b = pool
    a64, b64 = a.astype(float), b.astype(float)
    for k, eta, mu in [(8, 3.0, 0.3), (4, 1.0, 0.7), (16, 0.0, 0.1)]:
        ref = weight64(a64, b64, eta, mu) * mi_float64(a64, b64, k)
        got = get_scorer("insight", num_rollouts=k, eta=eta, mu=mu)(None, a, b)
        np.testing.assert_allclose(got, ref, rtol=1e-4, err_msg=f"seed={POOL_SEED} K={k}")
        np.testing.assert_allclose(
            insight_score(a, b, k, eta, mu), ref, rtol=1e-4, err_msg=f"seed={POOL_SEED} K={k}"
        )


@pytest.mark.parametrize(
    "seed, lo, hi, size",
    [(7, -1.0, 4.0, 120), (8, -2.0, 7.0, 40)],
    ids=["a,b in [0.1, 1e4]", "a,b in [1e-2, 1e7]"],
)
@pytest.mark.parametrize("k", [1, 8, 64])
def test_insight_score_within_1e4_of_mpmath(seed, lo, hi, size, k):
    """Relative error < 1e-4 over log-uniform beliefs, corners included (issue 9: the weight's
    1 - phibar in float32 was 4.6e-3 off at a = 1e4, b = 0.1)."""
    a, b = _log_uniform_pool(seed, size, lo, hi)
    mi = np.array([mi_mpmath(float(x), float(y), k) for x, y in zip(a, b, strict=True)])
    a64, b64 = a.astype(float), b.astype(float)
    for eta, mu in [(3.0, 0.3), (10.0, 0.95), (0.0, 0.0), (1.0, 1.0)]:
        ref = weight64(a64, b64, eta, mu) * mi
        got = np.asarray(get_scorer("insight", num_rollouts=k, eta=eta, mu=mu)(None, a, b))
        rel = np.abs(got / ref - 1)
        i = int(np.argmax(rel))
        assert rel[i] < 1e-4, (
            f"seed={seed} K={k} eta={eta} mu={mu}: a={a[i]} b={b[i]} got={got[i]} "
            f"ref={ref[i]} rel={rel[i]:.2e}"
        )


@pytest.mark.parametrize("name", ["insight_weight_only", "variance"])
def test_mean_based_scores_accurate_near_phibar_one(name):
    """phibar (1 - phibar) from the counts: within 1e-5 relative even at phibar = 1 - 1e-5."""
    a, b = _log_uniform_pool(9, 200, -1.0, 4.0)
    a64, b64 = a.astype(float), b.astype(float)
    ref = (
        weight64(a64, b64, 3.0, 0.3) if name == "insight_weight_only" else weight64(a64, b64, 0, 0)
    )
    got = np.asarray(get_scorer(name)(None, a, b))
    rel = np.abs(got / ref - 1)
    i = int(np.argmax(rel))
    assert rel[i] < 1e-5, f"seed=9 {name}: a={a[i]} b={b[i]} rel={rel[i]:.2e}"


def test_deterministic_scorers_match_formulas(pool):
    a, b = pool
    a64, b64 = a.astype(float), b.astype(float)
    n, p = a64 + b64, a64 / (a64 + b64)
    refs = {
        "insight_info_only": mi_float64(a64, b64, 8),
        "insight_weight_only": weight64(a64, b64, 3.0, 0.3),
        "expected_difficulty": -((p - 0.5) ** 2),
        "inverse_evidence": -n,
        "variance": a64 * b64 / n**2,
    }
    for name, ref in refs.items():
        scorer = get_scorer(name)
        assert scorer.deterministic
        np.testing.assert_allclose(
            scorer(None, a, b), ref, rtol=1e-4, atol=1e-7, err_msg=f"seed={POOL_SEED} {name}"
        )
    np.testing.assert_allclose(
        get_scorer("expected_difficulty", target=0.2)(None, a, b), -((p - 0.2) ** 2), atol=1e-7
    )


def test_thompson_scorers_use_one_beta_draw(pool):
    a, b = pool
    key = jax.random.key(7)
    g = np.asarray(jax.random.beta(key, a, b), dtype=np.float64)
    mi = mi_float64(a.astype(float), b.astype(float), 8)
    np.testing.assert_allclose(
        get_scorer("mopps")(key, a, b), -((g - 0.5) ** 2), rtol=1e-5, atol=1e-8
    )
    np.testing.assert_allclose(
        get_scorer("mopps", target=0.3)(key, a, b), -((g - 0.3) ** 2), rtol=1e-5, atol=1e-8
    )
    w = g * (1 - g) * np.exp(-3.0 * (g - 0.3) ** 2)
    np.testing.assert_allclose(get_scorer("insight_sampled")(key, a, b), w * mi, rtol=1e-3)
    for name in ("mopps", "insight_sampled", "random"):
        scorer = get_scorer(name)
        assert not scorer.deterministic
        with pytest.raises(ValueError, match="PRNG key"):
            scorer(None, a, b)


def test_thompson_draws_are_calibrated():
    """Across many draws, mean and variance of g match Beta(a, b) (MoPPS relies on this)."""
    a, b = jnp.full((200_000,), 3.0), jnp.full((200_000,), 5.0)
    s = np.asarray(get_scorer("mopps", target=0.0)(jax.random.key(0), a, b))
    g = np.sqrt(-s)
    assert abs(g.mean() - 3 / 8) < 3e-3
    assert abs(g.var() - 15 / (64 * 9)) < 2e-3


def test_random_scorer_is_uniform():
    u = np.asarray(get_scorer("random")(jax.random.key(1), jnp.ones(100_000), jnp.ones(100_000)))
    assert u.min() >= 0 and u.max() < 1
    hist = np.histogram(u, bins=10, range=(0, 1))[0]
    assert np.all(np.abs(hist - 10_000) < 500)


# What each scorer takes, written out by hand (METHOD.md / the scores.py docstring).
EXPECTED_DEFAULTS = {
    "insight": {"eta": 3.0, "mu": 0.3},
    "insight_info_only": {},
    "insight_weight_only": {"eta": 3.0, "mu": 0.3},
    "insight_sampled": {"eta": 3.0, "mu": 0.3},
    "mopps": {"target": 0.5},
    "expected_difficulty": {"target": 0.5},
    "inverse_evidence": {},
    "variance": {},
    "random": {},
}


def test_scorer_defaults_per_scorer():
    assert set(SCORER_NAMES) == set(EXPECTED_DEFAULTS)
    for name, expected in EXPECTED_DEFAULTS.items():
        assert scorer_defaults(name) == expected, name
        # A config's per-scorer params dict round-trips, and the defaults are what is bound.
        assert get_scorer(name, num_rollouts=4, **expected) == get_scorer(name, num_rollouts=4)
    assert "scorer_defaults" in selection.__all__
    with pytest.raises(ValueError, match="unknown scorer 'insite'"):
        scorer_defaults("insite")


def test_registry_errors_and_value_semantics():
    with pytest.raises(ValueError, match="unknown scorer"):
        get_scorer("insite")
    with pytest.raises(ValueError, match=r"takes parameters \['eta', 'mu'\]; got unknown"):
        get_scorer("insight", temperature=1.0)
    with pytest.raises(ValueError, match=r"takes parameters \['target'\]; got unknown"):
        get_scorer("mopps", eta=3.0)
    with pytest.raises(ValueError, match="num_rollouts"):
        get_scorer("insight", num_rollouts=0)
    assert get_scorer("insight", eta=3) == get_scorer("insight", eta=3.0)
    assert get_scorer("insight") == get_scorer("insight", eta=3.0, mu=0.3)
    assert hash(get_scorer("mopps")) == hash(get_scorer("mopps", target=0.5))
    assert get_scorer("insight", mu=0.1) != get_scorer("insight", mu=0.3)


@pytest.mark.parametrize(
    "name, param, value, allowed",
    [
        ("insight", "eta", float("nan"), r">= 0\.0"),
        ("insight", "eta", float("inf"), r">= 0\.0"),
        ("insight", "eta", -1.0, r">= 0\.0"),
        ("insight", "mu", 5, r"in \[0\.0, 1\.0\]"),
        ("insight", "mu", -0.1, r"in \[0\.0, 1\.0\]"),
        ("insight_weight_only", "mu", float("nan"), r"in \[0\.0, 1\.0\]"),
        ("insight_sampled", "eta", -0.5, r">= 0\.0"),
        ("mopps", "target", 1.5, r"in \[0\.0, 1\.0\]"),
        ("expected_difficulty", "target", float("-inf"), r"in \[0\.0, 1\.0\]"),
    ],
)
def test_out_of_range_parameters_rejected(name, param, value, allowed):
    message = rf"scorer '{name}' parameter {param} must be a finite number {allowed}, got"
    with pytest.raises(ValueError, match=message):
        get_scorer(name, **{param: value})


@pytest.mark.parametrize("value", [True, np.True_, "3.0", None, [3.0], np.array([3.0])])
def test_non_numeric_parameters_rejected(value):
    with pytest.raises(TypeError, match=r"parameter eta must be a finite number >= 0\.0, got"):
        get_scorer("insight", eta=value)


def test_boundary_and_numpy_parameters_accepted():
    assert dict(get_scorer("insight", eta=0, mu=1).params) == {"eta": 0.0, "mu": 1.0}
    s = get_scorer("insight", eta=np.int64(2), mu=np.float32(0.5))
    assert dict(s.params) == {"eta": 2.0, "mu": 0.5}
    assert all(type(v) is float for _, v in s.params)  # hashable, plain floats
    assert dict(get_scorer("mopps", target=0.0).params) == {"target": 0.0}
