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
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable

import jax
import jax.numpy as jnp

from insight_jax.selection.information import _check_num_rollouts, mutual_information


def insight_weight(phibar: jax.Array, eta: float = 3.0, mu: float = 0.3) -> jax.Array:
    """w(p) = p (1 - p) exp(-eta (p - mu)^2): favours mid-difficulty, peaked towards mu.

    Reconstructed from METHOD.md (eta = 3, mu = 0.3 in the paper); both are configurable.
    """
    return phibar * (1.0 - phibar) * jnp.exp(-eta * jnp.square(phibar - mu))


def insight_score(
    alpha: jax.Array, beta: jax.Array, num_rollouts: int, eta: float = 3.0, mu: float = 0.3
) -> jax.Array:
    """InSight's acquisition score A = w(phibar) * I_K(alpha, beta), phibar = alpha/(alpha+beta)."""
    phibar = alpha / (alpha + beta)
    return insight_weight(phibar, eta, mu) * mutual_information(alpha, beta, num_rollouts)


def _thompson(key: jax.Array, alpha: jax.Array, beta: jax.Array) -> jax.Array:
    return jax.random.beta(key, alpha, beta, dtype=jnp.float32)


def _insight(key, alpha, beta, *, num_rollouts, eta=3.0, mu=0.3):
    return insight_score(alpha, beta, num_rollouts, eta, mu)


def _insight_info_only(key, alpha, beta, *, num_rollouts):
    return mutual_information(alpha, beta, num_rollouts)


def _insight_weight_only(key, alpha, beta, *, num_rollouts, eta=3.0, mu=0.3):
    return insight_weight(alpha / (alpha + beta), eta, mu)


def _insight_sampled(key, alpha, beta, *, num_rollouts, eta=3.0, mu=0.3):
    g = _thompson(key, alpha, beta)
    return insight_weight(g, eta, mu) * mutual_information(alpha, beta, num_rollouts)


def _mopps(key, alpha, beta, *, num_rollouts, target=0.5):
    return -jnp.square(_thompson(key, alpha, beta) - target)


def _expected_difficulty(key, alpha, beta, *, num_rollouts, target=0.5):
    return -jnp.square(alpha / (alpha + beta) - target)


def _inverse_evidence(key, alpha, beta, *, num_rollouts):
    return -(alpha + beta)


def _variance(key, alpha, beta, *, num_rollouts):
    phibar = alpha / (alpha + beta)
    return phibar * (1.0 - phibar)


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
        return _REGISTRY[self.name][1]

    def __call__(self, key: jax.Array | None, alpha: jax.Array, beta: jax.Array) -> jax.Array:
        fn, deterministic = _REGISTRY[self.name]
        if key is None and not deterministic:
            raise ValueError(f"scorer {self.name!r} is stochastic and needs a PRNG key")
        scores = fn(key, alpha, beta, num_rollouts=self.num_rollouts, **dict(self.params))
        return scores.astype(jnp.float32)


def get_scorer(name: str, *, num_rollouts: int = 8, **params: float) -> Scorer:
    """The registered scorer `name` with `params` bound (e.g. eta, mu for InSight; target for
    MoPPS and Expected-Difficulty). Unknown names and parameters are errors."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown scorer {name!r}; registered: {', '.join(SCORER_NAMES)}")
    _check_num_rollouts(num_rollouts)
    fn = _REGISTRY[name][0]
    allowed = [
        p.name for p in inspect.signature(fn).parameters.values() if p.default is not p.empty
    ]
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ValueError(
            f"scorer {name!r} takes parameters {allowed or '(none)'}; got unknown {unknown}"
        )
    bound = tuple(sorted((k, float(v)) for k, v in params.items()))
    return Scorer(name, int(num_rollouts), bound)
