"""Information quantities of a Beta belief: entropy, Beta-Binomial predictive (and its
zero-variance mass P(S=0) + P(S=K)), and the exact multi-rollout mutual information I_K(alpha,
beta).

Notation: a belief phi ~ Beta(a, b) with evidence n = a + b; K rollouts give S ~ BetaBinomial(K, a,
b) successes. The quantity the selector needs is

    I_K(a, b) = H(a, b) - sum_s P(S=s) H(a+s, b+K-s)            (METHOD.md)

with H the differential entropy of a Beta. Written this way it is a difference of two entropies
that agree to ~K/(2n): in float32 it is useless for n >> K, and evaluated with betaln/digamma it
costs K+1 special-function calls per prompt. `mutual_information` uses an exact rearrangement
instead (derivation below) that costs 2(K-1) log1p, one log1p and three cheap digamma-type
evaluations, has no catastrophic cancellation, and fuses into one elementwise XLA loop.

Derivation. Using I(S; phi) = H(S) - E_phi[H(S | phi)] with discrete entropies, the binomial
coefficients cancel and, with psi(x+1) = psi(x) + 1/x,

    I_K = (K/n) [h(a) + h(b) - h(n)] - E[f(S)],
    h(x) = x (psi(x+1) - ln x)                       (-> 1/2 - 1/(12x) for large x; -> 0 as x -> 0)
    f(s) = sum_{j<s} log1p(j/a) + sum_{j<K-s} log1p(j/b) - sum_{j<K} log1p(j/n).

I_K is symmetric, so we work with a >= b (swap). Then the predictive is built from the s = K end,
where it cannot overflow:

    P(S=s) = C(K,s) v_s / Z,  v_K = 1,  v_{s-1} = v_s (b+K-s) / (a+s-1),  Z = sum_s C(K,s) v_s,

and 0 < v_s <= 1 for a >= b (each numerator factor is paired with a larger denominator factor),
so Z <= 2^K: K <= MAX_ROLLOUTS keeps everything finite in float32. E[f(S)] is anchored at s = K:

    E[f(S)] = f(K) + sum_{j=1}^{K-1} [log1p(j/b) F(K-1-j) - log1p(j/a) F(j)],   F = CDF of S,
    f(K)    = log prod_{j<K} (1 + j b / (a (n+j)))   (product accumulated as q = prod - 1),

so when b << a (P(S=K) ~ 1) the dominant term f(K) is computed without subtracting two
nearly-equal logs. Rounding: every remaining sum has terms of at most O(K) times the result's
size, which keeps float32 within ~1e-4 relative of a float64 reference for a, b in [1e-2, 1e7]
and K <= 64 (tests/test_information.py checks 1e-3 against mpmath).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax.scipy import special

# Z <= 2^K must stay finite in float32 (max ~3.4e38 = 2^128); leave a margin for the C(K, s).
MAX_ROLLOUTS = 120


def _check_num_rollouts(num_rollouts: int) -> int:
    if isinstance(num_rollouts, bool) or not isinstance(num_rollouts, int | jnp.integer):
        raise TypeError(f"num_rollouts must be a Python int (static), got {num_rollouts!r}")
    k = int(num_rollouts)
    if not 1 <= k <= MAX_ROLLOUTS:
        raise ValueError(f"num_rollouts must be in [1, {MAX_ROLLOUTS}], got {k}")
    return k


def _as_float(x: jax.Array) -> jax.Array:
    x = jnp.asarray(x)
    return x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(jnp.float32)


def beta_entropy(alpha: jax.Array, beta: jax.Array) -> jax.Array:
    """Differential entropy of Beta(a, b), in nats.

    H(a, b) = ln B(a, b) - (a-1) psi(a) - (b-1) psi(b) + (a+b-2) psi(a+b).

    Direct special-function form: accurate where H itself is O(1); for the information score use
    `mutual_information`, which never forms differences of entropies.
    """
    a, b = _as_float(alpha), _as_float(beta)
    n = a + b
    return (
        special.betaln(a, b)
        - (a - 1) * special.digamma(a)
        - (b - 1) * special.digamma(b)
        + (n - 2) * special.digamma(n)
    )


def _scaled_predictive(a_big: jax.Array, b_small: jax.Array, k: int) -> list[jax.Array]:
    """Unnormalised predictive weights w_s = C(K,s) v_s, s = 0..K, for a_big >= b_small.

    P(S=s) = w_s / sum(w). v_s = B(a+s, b+K-s) / B(a+K, b) lies in (0, 1] when a >= b.
    """
    v = [None] * (k + 1)
    v[k] = jnp.ones_like(a_big)
    for s in range(k, 0, -1):
        v[s - 1] = v[s] * ((b_small + (k - s)) / (a_big + (s - 1)))
    return [float(math.comb(k, s)) * v[s] for s in range(k + 1)]


def beta_binomial_pmf(alpha: jax.Array, beta: jax.Array, num_rollouts: int) -> jax.Array:
    """Predictive distribution of S successes in K rollouts: shape alpha.shape + (K+1,).

    P(S=s) = C(K,s) B(a+s, b+K-s) / B(a,b),  s = 0..K  (Beta-Binomial).

    Computed with the overflow-free product recurrence from the likelier end (module docstring);
    no special functions.
    """
    k = _check_num_rollouts(num_rollouts)
    a, b = jnp.broadcast_arrays(_as_float(alpha), _as_float(beta))
    swap = b > a
    a_big, b_small = jnp.maximum(a, b), jnp.minimum(a, b)
    w = jnp.stack(_scaled_predictive(a_big, b_small, k), axis=-1)
    p = w / jnp.sum(w, axis=-1, keepdims=True)
    # With a and b swapped, S and K - S swap roles: reverse the support.
    return jnp.where(swap[..., None], p[..., ::-1], p)


def zero_variance_probability(alpha: jax.Array, beta: jax.Array, num_rollouts: int) -> jax.Array:
    """Predictive probability that K rollouts all fail or all succeed (a zero-variance group).

    P(S=0) + P(S=K),  S ~ BetaBinomial(K, a, b),  with
        P(S=0) = prod_{j=0}^{K-1} (b + j) / (a + b + j),
        P(S=K) = prod_{j=0}^{K-1} (a + j) / (a + b + j).

    Such a group gives every rollout the same reward, hence zero GRPO advantage: rolling it out
    teaches the policy nothing. The product form is exact; every factor lies in (0, 1], so
    nothing overflows and each factor carries a few ulps of rounding, so float32 stays within
    O(K) ulps relative even at large evidence, where lgamma differences would cancel.
    The exact value is at most 1 (exactly 1 for K = 1); rounding past it is clipped.

    Args:
      alpha, beta: positive arrays (broadcastable), any float dtype.
      num_rollouts: K, a static Python int in [1, MAX_ROLLOUTS].

    Returns: P(S=0) + P(S=K) with the broadcast shape of alpha and beta.
    """
    k = _check_num_rollouts(num_rollouts)
    a, b = jnp.broadcast_arrays(_as_float(alpha), _as_float(beta))
    n = a + b
    p_fail, p_succeed = jnp.ones_like(a), jnp.ones_like(a)
    for j in range(k):
        p_fail = p_fail * ((b + j) / (n + j))
        p_succeed = p_succeed * ((a + j) / (n + j))
    return jnp.minimum(p_fail + p_succeed, 1.0)


def _h(x: jax.Array) -> jax.Array:
    """h(x) = x (psi(x+1) - ln x), accurate to float32 rounding for every x > 0.

    For x >= 8 the asymptotic series of digamma gives
        h(x) = 1/2 - 1/(12x) + 1/(120x^3) - 1/(252x^5) + 1/(240x^7)   (error < 1e-10);
    below 8 shift up with psi(x+1) = psi(x+8) - sum_{i=1}^{7} 1/(x+i), so
        psi(x+1) - ln x = [psi(y) - ln y] + log1p(8/x) - sum_{i=1}^{7} 1/(x+i),   y = x + 8.
    Both branches avoid forming psi and ln separately (their difference is ~1/(2x)).
    """
    # Series branch, evaluated at max(x, 8) so the unused lane stays finite.
    xl = jnp.maximum(x, 8.0)
    r = 1.0 / xl
    r2 = r * r
    h_big = 0.5 - r * (1.0 / 12 - r2 * (1.0 / 120 - r2 * (1.0 / 252 - r2 * (1.0 / 240))))
    # Shifted branch, evaluated at min(x, 8).
    xs = jnp.minimum(x, 8.0)
    y = xs + 8.0
    ry = 1.0 / y
    ry2 = ry * ry
    psi_minus_log_y = -ry * (
        0.5 + ry * (1.0 / 12 - ry2 * (1.0 / 120 - ry2 * (1.0 / 252 - ry2 * (1.0 / 240))))
    )
    harmonic = sum(1.0 / (xs + i) for i in range(1, 8))
    h_small = xs * (psi_minus_log_y + jnp.log1p(8.0 / xs) - harmonic)
    return jnp.where(x >= 8.0, h_big, h_small)


def mutual_information(alpha: jax.Array, beta: jax.Array, num_rollouts: int) -> jax.Array:
    """Exact mutual information (nats) between K rollout outcomes and phi ~ Beta(alpha, beta).

    I_K(a, b) = H(a, b) - sum_{s=0}^{K} P(S=s) H(a+s, b+K-s)
              = (K/n) [h(a) + h(b) - h(n)] - E[f(S)]      (exact; see the module docstring)

    Properties: I_K >= 0, symmetric in (a, b), increasing in K, decreasing in n at a fixed mean
    once min(a, b) >= 1 (every belief grown from the Beta(1, 1) prior; with a or b well below 1
    and K > 1 it can first rise: mean 0.005, K = 16 gives 0.109 at n = 2, 0.130 at n = 10),
    I_1 = [h(a) + h(b) - h(n)] / n, and I_K ~ 0.5 ln(1 + K/(n+1)) for large n.

    Args:
      alpha, beta: positive arrays (broadcastable), any float dtype; float32 is accurate to ~1e-4
        relative for alpha, beta in [1e-2, 1e7] and K <= 64.
      num_rollouts: K, a static Python int in [1, MAX_ROLLOUTS].

    Returns: I_K with the broadcast shape of alpha and beta.
    """
    k = _check_num_rollouts(num_rollouts)
    a, b = jnp.broadcast_arrays(_as_float(alpha), _as_float(beta))
    a, b = jnp.maximum(a, b), jnp.minimum(a, b)  # I_K is symmetric; a >= b from here on.
    n = a + b

    lead = (k / n) * (_h(a) + _h(b) - _h(n))

    # f(K) = log prod_{j<K} (1 + j b / (a (n + j))), accumulated as q = prod - 1 (no cancellation).
    q = jnp.zeros_like(a)
    for j in range(1, k):
        q = q + (1.0 + q) * (j * b / (a * (n + j)))
    f_k = jnp.log1p(q)

    # E[f(S) - f(K)] = (1/Z) sum_j [log1p(j/b) W(K-1-j) - log1p(j/a) W(j)], W = unnormalised CDF.
    w = _scaled_predictive(a, b, k)
    cdf = [w[0]]
    for s in range(1, k + 1):
        cdf.append(cdf[-1] + w[s])
    z = cdf[k]
    tail = jnp.zeros_like(a)
    for j in range(1, k):
        tail = tail + jnp.log1p(j / b) * cdf[k - 1 - j] - jnp.log1p(j / a) * cdf[j]

    info = lead - (f_k + tail / z)
    # The exact value is >= 0; rounding can leave a few ulps below zero when I_K ~ 0.
    return jnp.maximum(info, 0.0)
