"""Scorer registry: each score against an independent float64 formula."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special as sps

from insight_jax.selection import SCORER_NAMES, get_scorer, insight_score


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


def weight64(p, eta, mu):
    return p * (1 - p) * np.exp(-eta * (p - mu) ** 2)


@pytest.fixture
def pool():
    rng = np.random.default_rng()
    a = (10 ** rng.uniform(0, 2.5, 300)).astype(np.float32)
    b = (10 ** rng.uniform(0, 2.5, 300)).astype(np.float32)
    return a, b


def test_insight_matches_float64(pool):
    a, b = pool
    a64, b64 = a.astype(float), b.astype(float)
    p = a64 / (a64 + b64)
    for k, eta, mu in [(8, 3.0, 0.3), (4, 1.0, 0.7), (16, 0.0, 0.1)]:
        ref = weight64(p, eta, mu) * mi_float64(a64, b64, k)
        got = get_scorer("insight", num_rollouts=k, eta=eta, mu=mu)(None, a, b)
        np.testing.assert_allclose(got, ref, rtol=1e-3)
        np.testing.assert_allclose(insight_score(a, b, k, eta, mu), ref, rtol=1e-3)


def test_deterministic_scorers_match_formulas(pool):
    a, b = pool
    a64, b64 = a.astype(float), b.astype(float)
    n, p = a64 + b64, a64 / (a64 + b64)
    refs = {
        "insight_info_only": mi_float64(a64, b64, 8),
        "insight_weight_only": weight64(p, 3.0, 0.3),
        "expected_difficulty": -((p - 0.5) ** 2),
        "inverse_evidence": -n,
        "variance": p * (1 - p),
    }
    for name, ref in refs.items():
        scorer = get_scorer(name)
        assert scorer.deterministic
        np.testing.assert_allclose(scorer(None, a, b), ref, rtol=1e-3, atol=1e-7, err_msg=name)


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
    np.testing.assert_allclose(
        get_scorer("insight_sampled")(key, a, b), weight64(g, 3.0, 0.3) * mi, rtol=1e-3
    )
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


def test_registry_errors_and_value_semantics():
    assert set(SCORER_NAMES) >= {
        "insight",
        "mopps",
        "expected_difficulty",
        "inverse_evidence",
        "random",
        "insight_info_only",
        "insight_weight_only",
        "insight_sampled",
        "variance",
    }
    with pytest.raises(ValueError, match="unknown scorer"):
        get_scorer("insite")
    with pytest.raises(ValueError, match="unknown"):
        get_scorer("insight", temperature=1.0)
    with pytest.raises(ValueError, match="num_rollouts"):
        get_scorer("insight", num_rollouts=0)
    assert get_scorer("insight", eta=3) == get_scorer("insight", eta=3.0)
    assert hash(get_scorer("mopps")) == hash(get_scorer("mopps"))
    assert get_scorer("insight", mu=0.1) != get_scorer("insight", mu=0.3)
