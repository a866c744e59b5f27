"""The whole training state of a run as one typed pytree, created sharded, checkpointed whole."""

from __future__ import annotations

from typing import Any

import jax
from flax import nnx, struct

from insight_jax.selection import Beliefs


@struct.dataclass
class TrainState:
    """Everything that changes during a run; a checkpoint of it resumes the run exactly.

    model:     nnx.State of the policy's parameters (laid out by the mesh's logical rules).
    opt:       optax state of the current phase's optimizer (warm start, then RL).
    beliefs:   Beta beliefs over the RL pool (sharded like data, padded to the shard count).
    scores:    cached selection scores of a deterministic scorer (zeros for stochastic ones).
    ref_model: the frozen reference policy of the KL term, or None when rl.kl_coef == 0
               (nothing is kept or computed for it). It is set to the policy at the start of
               RL; before that (the warm start) it holds a copy of the initial policy, so the
               state keeps one structure for every checkpoint (a second copy of the
               parameters in memory and on disk, only when the KL term is on).
    rng:       uint32 key data of the run's base key (jax.random.key_data of key(seed)).
    step:      int32, the number of steps done; step s uses fold_in(key, s), so a run
               restored at step s replays s, s+1, ... exactly. It is also the data position:
               pools are indexed, never iterated.
    """

    model: nnx.State
    opt: Any
    beliefs: Beliefs
    scores: jax.Array
    ref_model: nnx.State | None
    rng: jax.Array
    step: jax.Array

    def key(self) -> jax.Array:
        """The key of the current step: fold_in(key(seed), step)."""
        return jax.random.fold_in(jax.random.wrap_key_data(self.rng), self.step)
