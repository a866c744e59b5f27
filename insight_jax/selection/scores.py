"""Acquisition scores over Beta beliefs, registered by name so a config can swap them.

Every scorer maps (key, alpha, beta) -> a float32 score per prompt; HIGHER scores are selected
first. Deterministic scorers ignore the key, which lets the trainer cache their scores and
rescore only the prompts whose beliefs changed (select.py). Notation: phibar = a/(a+b),
n = a+b, g ~ Beta(a, b) a Thompson draw, I_K the exact mutual information (information.py),

    w(p) = p (1 - p) exp(-eta (p - mu)^2)       (InSight's weight; reconstructed, METHOD.md)

Registered scorers (formula = score):
  insight              w(phibar) * I_K(a, b)                      the method
  insight_info_only    I_K(a, b)                                  ablation: no weight
  insight_weight_only  w(phibar)                                  ablation: no information
  insight_sampled      w(g) * I_K(a, b)                           ablation: weight at a draw
  mopps                -(g - target)^2                            MoPPS (Thompson, target 0.5)
  expected_difficulty  -(phibar - target)^2                       closest mean to 50%
  inverse_evidence     -n                                         least-seen first
  variance             phibar (1 - phibar)                        outcome variance (LILO-style)
  random               u ~ U(0, 1)                                uniform selection

Parameters (`scorer_defaults(name)` lists a scorer's, with defaults): eta >= 0, mu and target in
[0, 1], all finite; `get_scorer` rejects anything else. The weight is computed from (a, b) as
(a/n)(b/n) exp(...), never from 1 - phibar, which cancels in float32 when phibar is near 1.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from insight_jax.selection.information import _check_num_rollouts, mutual_information


def _mean_and_complement(alpha: jax.Array, beta: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(phibar, 1 - phibar) = (a/n, b/n), n = a + b, each to float32 rounding.

    Forming 1 - phibar by subtraction cancels when phibar is near 1: at a = 1e4, b = 0.1 it
    keeps only ~2 significant digits (relative error ~ ulp(1) / (1 - phibar) ~ 6e-3). b/n is
    one rounded division, accurate for any a, b > 0.
    """
    n = alpha + beta
    return alpha / n, beta / n


def _weight(p: jax.Array, q: jax.Array, eta: float, mu: float) -> jax.Array:
    """w = p q exp(-eta (p - mu)^2) with q = 1 - p supplied by the caller (accurately)."""
    return p * q * jnp.exp(-eta * jnp.square(p - mu))


def insight_weight(phibar: jax.Array, eta: float = 3.0, mu: float = 0.3) -> jax.Array:
    """w(p) = p (1 - p) exp(-eta (p - mu)^2): favours mid-difficulty, peaked towards mu.

    Reconstructed from METHOD.md (eta = 3, mu = 0.3 in the paper); both are configurable.
    Given only phibar, 1 - phibar is formed by subtraction, which loses relative accuracy as
    phibar -> 1; the scorers compute the weight from (alpha, beta) instead (`_belief_weight`).
    """
    return _weight(phibar, 1.0 - phibar, eta, mu)


def _belief_weight(alpha: jax.Array, beta: jax.Array, eta: float, mu: float) -> jax.Array:
    """w(phibar) of the belief Beta(a, b) with phibar = a/n, 1 - phibar = b/n (no cancellation)."""
    p, q = _mean_and_complement(alpha, beta)
    return _weight(p, q, eta, mu)


def insight_score(
    alpha: jax.Array, beta: jax.Array, num_rollouts: int, eta: float = 3.0, mu: float = 0.3
) -> jax.Array:
    """InSight's acquisition score A = w(phibar) * I_K(alpha, beta), phibar = alpha/(alpha+beta).

    Float32 accuracy: within ~2e-5 relative of a float64 reference for alpha, beta in
    [0.1, 1e4] and K <= 64 (tests/test_scores.py checks 1e-4): the mutual information's error,
    as w, computed from (alpha, beta), adds only a few ulps.
    """
    return _belief_weight(alpha, beta, eta, mu) * mutual_information(alpha, beta, num_rollouts)


def _thompson(key: jax.Array, alpha: jax.Array, beta: jax.Array) -> jax.Array:
    return jax.random.beta(key, alpha, beta, dtype=jnp.float32)


def _insight(key, alpha, beta, *, num_rollouts, eta=3.0, mu=0.3):
    return insight_score(alpha, beta, num_rollouts, eta, mu)


def _insight_info_only(key, alpha, beta, *, num_rollouts):
    return mutual_information(alpha, beta, num_rollouts)


def _insight_weight_only(key, alpha, beta, *, num_rollouts, eta=3.0, mu=0.3):
    return _belief_weight(alpha, beta, eta, mu)


def _insight_sampled(key, alpha, beta, *, num_rollouts, eta=3.0, mu=0.3):
    # g is a float32 draw, so 1 - g is only as fine as the draw's own resolution near 1.
    g = _thompson(key, alpha, beta)
    return insight_weight(g, eta, mu) * mutual_information(alpha, beta, num_rollouts)


def _mopps(key, alpha, beta, *, num_rollouts, target=0.5):
    return -jnp.square(_thompson(key, alpha, beta) - target)


def _expected_difficulty(key, alpha, beta, *, num_rollouts, target=0.5):
    return -jnp.square(alpha / (alpha + beta) - target)


def _inverse_evidence(key, alpha, beta, *, num_rollouts):
    return -(alpha + beta)


def _variance(key, alpha, beta, *, num_rollouts):
    p, q = _mean_and_complement(alpha, beta)
    return p * q


def _random(key, alpha, beta, *, num_rollouts):
    return jax.random.uniform(key, jnp.shape(alpha), jnp.float32)


# name -> (function, deterministic)
_REGISTRY: dict[str, tuple[Callable[..., jax.Array], bool]] = {
    "insight": (_insight, True),
    "insight_info_only": (_insight_info_only, True),
    "insight_weight_only": (_insight_weight_only, True),
    "insight_sampled": (_insight_sampled, False),
    "mopps": (_mopps, False),
    "expected_difficulty": (_expected_difficulty, True),
    "inverse_evidence": (_inverse_evidence, True),
    "variance": (_variance, True),
    "random": (_random, False),
}

SCORER_NAMES = tuple(_REGISTRY)

# Allowed closed interval [low, high] of every scorer parameter (all must also be finite).
#   eta: the weight's sharpness; 0 turns the Gaussian factor off, negative would favour extremes.
#   mu, target: a success rate.
_PARAM_RANGES: dict[str, tuple[float, float]] = {
    "eta": (0.0, math.inf),
    "mu": (0.0, 1.0),
    "target": (0.0, 1.0),
}


def _registered(name: str) -> tuple[Callable[..., jax.Array], bool]:
    if name not in _REGISTRY:
        raise ValueError(f"unknown scorer {name!r}; registered: {', '.join(SCORER_NAMES)}")
    return _REGISTRY[name]


def scorer_defaults(name: str) -> dict[str, float]:
    """The parameters scorer `name` takes and their defaults, e.g. {"eta": 3.0, "mu": 0.3} for
    "insight", {} for "random". Read from the registered function's signature (its keyword
    arguments with a default), so it cannot drift from what `get_scorer` accepts."""
    fn = _registered(name)[0]
    return {
        p.name: float(p.default)
        for p in inspect.signature(fn).parameters.values()
        if p.default is not p.empty
    }


def _check_param(scorer: str, name: str, value) -> float:
    """`value` as a float if it is a finite real number (not a bool) in the parameter's range."""
    low, high = _PARAM_RANGES[name]
    allowed = (
        f"a finite number in [{low}, {high}]" if high < math.inf else f"a finite number >= {low}"
    )
    arr = np.asarray(value) if not isinstance(value, bool | np.bool_) else None
    if arr is None or arr.ndim != 0 or arr.dtype.kind not in "iuf":
        raise TypeError(f"scorer {scorer!r} parameter {name} must be {allowed}, got {value!r}")
    v = float(arr)
    if not (math.isfinite(v) and low <= v <= high):
        raise ValueError(f"scorer {scorer!r} parameter {name} must be {allowed}, got {v!r}")
    return v


@dataclasses.dataclass(frozen=True)
class Scorer:
    """A registered score with its parameters bound. Hashable by value, so two equal Scorers
    share one compiled selection function (pass it as a static jit argument)."""

    name: str
    num_rollouts: int
    params: tuple[tuple[str, float], ...] = ()

    @property
    def deterministic(self) -> bool:
        """True if the score ignores the key (its scores can be cached and updated in place)."""
        return _registered(self.name)[1]

    def __call__(self, key: jax.Array | None, alpha: jax.Array, beta: jax.Array) -> jax.Array:
        fn, deterministic = _registered(self.name)
        if key is None and not deterministic:
            raise ValueError(f"scorer {self.name!r} is stochastic and needs a PRNG key")
        scores = fn(key, alpha, beta, num_rollouts=self.num_rollouts, **dict(self.params))
        return scores.astype(jnp.float32)


def get_scorer(name: str, *, num_rollouts: int = 8, **params: float) -> Scorer:
    """The registered scorer `name` with `params` bound over its defaults (`scorer_defaults`;
    e.g. eta, mu for InSight; target for MoPPS and Expected-Difficulty).

    Raises ValueError for an unknown name or parameter, a NaN / inf / out-of-range value
    (eta >= 0; mu, target in [0, 1]) and num_rollouts outside [1, MAX_ROLLOUTS]; TypeError for a
    parameter that is not a real number (bools included) or a non-integer num_rollouts.
    Every parameter is bound explicitly, so get_scorer("insight") == get_scorer("insight",
    eta=3.0, mu=0.3): equal scorers compute the same thing and share one compilation.
    """
    defaults = scorer_defaults(name)
    _check_num_rollouts(num_rollouts)
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        raise ValueError(
            f"scorer {name!r} takes parameters {sorted(defaults) or '(none)'}; "
            f"got unknown {unknown}"
        )
    bound = defaults | {k: _check_param(name, k, v) for k, v in params.items()}
    return Scorer(name, int(num_rollouts), tuple(sorted(bound.items())))
