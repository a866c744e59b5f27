"""InSight online data selection: Beta beliefs, information scores, whole-pool top-k."""

from insight_jax.selection.beliefs import (
    Beliefs,
    apply_update,
    init_beliefs,
    successes_from_rewards,
    update_beliefs,
    validate_update,
)
from insight_jax.selection.information import (
    MAX_ROLLOUTS,
    beta_binomial_pmf,
    beta_entropy,
    mutual_information,
    zero_variance_probability,
)
from insight_jax.selection.scores import (
    SCORER_NAMES,
    Scorer,
    get_scorer,
    insight_score,
    insight_weight,
    scorer_defaults,
)
from insight_jax.selection.select import (
    Shard,
    Skip,
    draw_candidates,
    init_scores,
    pool_shard,
    rescore,
    select_batch,
    take,
    top_k_indices,
)

__all__ = [
    "MAX_ROLLOUTS",
    "SCORER_NAMES",
    "Beliefs",
    "Scorer",
    "Shard",
    "Skip",
    "apply_update",
    "beta_binomial_pmf",
    "beta_entropy",
    "draw_candidates",
    "get_scorer",
    "init_beliefs",
    "init_scores",
    "insight_score",
    "insight_weight",
    "mutual_information",
    "pool_shard",
    "rescore",
    "scorer_defaults",
    "select_batch",
    "successes_from_rewards",
    "take",
    "top_k_indices",
    "update_beliefs",
    "validate_update",
    "zero_variance_probability",
]
