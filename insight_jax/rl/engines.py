"""The registry of rollout engines (``rl.rollout_engine``): the interface is
``rollout.RolloutEngine``.

dense       rollout.DenseEngine: every row decodes until the longest is done (the reference).
continuous  continuous.ContinuousEngine: decode slots refilled from a queue of the rollouts,
            attention over filled slots only; same tokens as dense.
"""

from __future__ import annotations

from jax.sharding import Mesh

from insight_jax.rl.continuous import ContinuousEngine
from insight_jax.rl.rollout import DenseEngine, RolloutEngine, SamplingSettings

ROLLOUT_ENGINES = {"dense": DenseEngine, "continuous": ContinuousEngine}


def make_rollout_engine(
    name: str, graphdef, settings: SamplingSettings, mesh: Mesh, rules, *, num_slots: int = 0
) -> RolloutEngine:
    """The registered engine ``name``, built once for a run. ``num_slots``: the continuous
    engine's decode slots (0: one per rollout); the dense engine takes none."""
    if name not in ROLLOUT_ENGINES:
        raise ValueError(f"unknown rollout engine {name!r}; registered: {sorted(ROLLOUT_ENGINES)}")
    if name == "continuous":
        return ContinuousEngine(graphdef, settings, mesh, rules, num_slots=num_slots)
    if num_slots:
        raise ValueError(f"the {name!r} rollout engine has no decode slots (num_slots={num_slots})")
    return ROLLOUT_ENGINES[name](graphdef, settings, mesh, rules)
