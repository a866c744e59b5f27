"""Information quantities against float64/mpmath references and their defining properties."""

import jax
import jax.numpy as jnp
import mpmath as mp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import special as sps
from scipy import stats

from insight_jax.selection import beta_binomial_pmf, beta_entropy, mutual_information

KS = (1, 2, 4, 8, 16, 32, 64)


def _mp_entropy(a, b):
    return (
        mp.log(mp.beta(a, b))
        - (a - 1) * mp.digamma(a)
        - (b - 1) * mp.digamma(b)
        + (a + b - 2) * mp.digamma(a + b)
    )


def mp_mutual_information(a: float, b: float, k: int) -> float:
    """I_K by the textbook definition H(a,b) - sum_s P(s) H(a+s, b+K-s) at 40 digits."""
    with mp.workdps(40):
        a, b = mp.mpf(float(a)), mp.mpf(float(b))
        log_b = mp.log(mp.beta(a, b))
        total = _mp_entropy(a, b)
        for s in range(k + 1):
            p = mp.binomial(k, s) * mp.exp(mp.log(mp.beta(a + s, b + k - s)) - log_b)
            total -= p * _mp_entropy(a + s, b + k - s)
        return float(total)


def _log_uniform(rng, size, lo=-2.0, hi=7.0):
    return (10.0 ** rng.uniform(lo, hi, size)).astype(np.float32)


@pytest.mark.parametrize("k", KS)
def test_mutual_information_matches_mpmath(k):
    seed = 100 + k
    rng = np.random.default_rng(seed)
    a, b = _log_uniform(rng, 24), _log_uniform(rng, 24)
    # The range's corners, where the entropies cancel hardest or the predictive is most skewed.
    a[:4], b[:4] = [1e-2, 1e7, 1e-2, 1e7], [1e-2, 1e7, 1e7, 1e-2]
    got = np.asarray(jax.jit(mutual_information, static_argnums=2)(a, b, k))
    ref = np.array([mp_mutual_information(x, y, k) for x, y in zip(a, b, strict=True)])
    assert np.all(np.isfinite(got))
    rel = np.abs(got - ref) / ref
    worst = int(np.argmax(rel))
    assert rel[worst] < 1e-3, (
        f"seed={seed} K={k} a={a[worst]} b={b[worst]} got={got[worst]} ref={ref[worst]}"
    )


@pytest.mark.parametrize("k", KS)
def test_mutual_information_finite_and_positive_on_grid(k):
    grid = np.logspace(-2, 7, 37).astype(np.float32)
    a, b = np.meshgrid(grid, grid)
    info = np.asarray(mutual_information(a, b, k))
    assert np.all(np.isfinite(info)) and np.all(info > 0)


def test_k1_closed_form_scipy():
    """I_1 = h2(p) + p(psi(a+1) - psi(n+1)) + (1-p)(psi(b+1) - psi(n+1)), h2 binary entropy."""
    seed = 1
    rng = np.random.default_rng(seed)
    a, b = _log_uniform(rng, 200, -1, 3), _log_uniform(rng, 200, -1, 3)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    n, p = a64 + b64, a64 / (a64 + b64)
    ref = (
        -p * np.log(p)
        - (1 - p) * np.log1p(-p)
        + p * (sps.digamma(a64 + 1) - sps.digamma(n + 1))
        + (1 - p) * (sps.digamma(b64 + 1) - sps.digamma(n + 1))
    )
    np.testing.assert_allclose(mutual_information(a, b, 1), ref, rtol=2e-4, err_msg=f"seed={seed}")


def test_beta_entropy_matches_scipy():
    seed = 2
    rng = np.random.default_rng(seed)
    a, b = _log_uniform(rng, 100, -1, 2), _log_uniform(rng, 100, -1, 2)
    ref = stats.beta.entropy(a.astype(np.float64), b.astype(np.float64))
    np.testing.assert_allclose(
        beta_entropy(a, b), ref, rtol=1e-3, atol=1e-4, err_msg=f"seed={seed}"
    )


@pytest.mark.parametrize("k", (1, 3, 8, 64))
def test_beta_binomial_pmf_matches_scipy(k):
    seed = 3 + k
    rng = np.random.default_rng(seed)
    a, b = _log_uniform(rng, 50, -2, 5), _log_uniform(rng, 50, -2, 5)
    got = np.asarray(beta_binomial_pmf(a, b, k))
    s = np.arange(k + 1)
    ref = stats.betabinom.pmf(s[None, :], k, a[:, None].astype(float), b[:, None].astype(float))
    assert got.shape == (50, k + 1)
    np.testing.assert_allclose(got.sum(-1), 1.0, rtol=1e-5, err_msg=f"seed={seed}")
    np.testing.assert_allclose(got, ref, rtol=1e-3, atol=1e-7, err_msg=f"seed={seed}")


def test_num_rollouts_validation():
    with pytest.raises(ValueError, match="num_rollouts"):
        mutual_information(1.0, 1.0, 0)
    with pytest.raises(ValueError, match="num_rollouts"):
        mutual_information(1.0, 1.0, 1000)
    with pytest.raises(TypeError, match="static"):
        mutual_information(1.0, 1.0, 2.5)


positive = st.floats(1e-2, 1e7, allow_nan=False)
mi = jax.jit(mutual_information, static_argnums=2)
ks = st.sampled_from(KS)


@settings(max_examples=200, deadline=None)
@given(positive, positive, ks)
def test_nonnegative_and_symmetric(a, b, k):
    ab = float(mi(a, b, k))
    ba = float(mi(b, a, k))
    assert ab >= 0.0
    assert ab == ba


@settings(max_examples=200, deadline=None)
@given(positive, positive, st.sampled_from(KS[:-1]))
def test_increasing_in_k(a, b, k):
    small = float(mi(a, b, k))
    big = float(mi(a, b, k + 1))
    assert big > small * (1 - 1e-5)
    # Strictly, once the increase is well above float32 rounding.
    if min(a, b) < 1e4:
        assert big > small


@settings(max_examples=200, deadline=None)
@given(st.floats(0.01, 0.99), st.floats(0.0, 5.0), st.floats(0.2, 2.0), ks)
def test_decreasing_in_evidence_at_fixed_mean(mean, log_n, log_ratio, k):
    """For beliefs reachable from the uniform prior (a, b >= 1). Below that the U-shaped Beta is
    not monotone: the mpmath reference itself rises from n = 0.1 to n = 0.3 at mean 0.5, K = 4."""
    n_small = 10.0**log_n / min(mean, 1 - mean)
    n_big = n_small * 10.0**log_ratio
    small = float(mi(mean * n_small, (1 - mean) * n_small, k))
    big = float(mi(mean * n_big, (1 - mean) * n_big, k))
    assert big < small


@settings(max_examples=200, deadline=None)
@given(st.floats(0.02, 0.98), st.floats(3.0, 7.0), ks)
def test_large_evidence_asymptotics(mean, log_n, k):
    """I_K ~ 0.5 ln(1 + K/(n+1)); the relative gap shrinks like 1/min(a, b)."""
    n = 10.0**log_n
    a, b = mean * n, (1 - mean) * n
    info = float(mi(a, b, k))
    approx = 0.5 * np.log1p(k / (n + 1))
    assert abs(info / approx - 1) < 1.0 / min(a, b) + 2e-4
    if k == 1:  # and I_1 ~ 1 / (2 (n + 1)) (METHOD.md)
        assert abs(info * 2 * (n + 1) - 1) < 1.0 / min(a, b) + 2e-4


def test_float32_inputs_stay_float32_and_compile_once():
    # A fresh function object: jit caches are shared per function, across jit wrappers.
    f = jax.jit(lambda a, b, k: mutual_information(a, b, k), static_argnums=2)
    x = jnp.linspace(0.1, 100.0, 64, dtype=jnp.float32)
    assert f(x, x[::-1], 8).dtype == jnp.float32
    f(x + 1, x, 8)
    assert f._cache_size() == 1
