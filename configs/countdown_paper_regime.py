"""Countdown (the task and policy of configs/countdown_tiny.py) in the paper's regime: its batch
geometry and a warm start that never saw the RL prompts.

The tiny study (docs/results.md) drew M = 32 prompts per step from N = 2000: 1.6 draws per
prompt in 100 steps, so beliefs had little evidence, and its warm start trained on the RL pool
itself. Here, as in the paper (../shared/METHOD.md):
  * M = 256 prompts x K = 8 rollouts per step, 100 steps, N = 2000: 12.8 draws per prompt;
    Mhat = 16 M (>= N: the whole pool is scored); PPO mini-batches of 64 prompts (4 per step);
  * the warm start trains on 1000 generated problems outside the RL pool and the test set
    (`warmstart.pool = "disjoint"`; countdown_tiny's problem space holds 3165 train-split
    problems, so 2000 RL + 1000 warm-start ones fit), so RL starts on unseen prompts;
  * the first 256 RL prompts are evaluated with the test set (`eval.train_pool_size`), so
    train-pool and held-out pass@1 can be compared before and after RL.
Everything else (model, learning rates, warm-start length, reward) is countdown_tiny's, chosen
for it on seed 0 and not re-tuned here. About 8 minutes per run on 2 CPU cores:

  python -m insight_jax.main --config=configs/countdown_paper_regime.py:insight \\
      --workdir=workdirs/countdown_paper_regime

Argument: as configs/arithmetic_tiny.py (a method name and/or `smoke`).
Sweeps over this config: configs/ablations/countdown_paper_regime.py.
"""

import ml_collections

from configs import countdown_tiny
from insight_jax.rl.base_config import DEFAULT_METHOD, METHODS, Choice, apply_arg, parse_arg

BATCH_SIZE = 256  # M, the paper's
MINIBATCH_PROMPTS = 64  # prompts per PPO mini-batch, the paper's


def paper_geometry(c: ml_collections.ConfigDict, batch_size: int) -> ml_collections.ConfigDict:
    """M = batch_size prompts per step, Mhat = 16 M, mini-batches of <= 64 prompts."""
    c.rl.batch_size = batch_size
    c.rl.num_minibatches = max(1, batch_size // MINIBATCH_PROMPTS)
    c.selection.num_candidates = 16 * batch_size
    return c


def in_paper_regime(c: ml_collections.ConfigDict, arg: str | None) -> ml_collections.ConfigDict:
    """A tiny config `c` in the paper's regime: its geometry, a disjoint warm start of 1000
    problems, the first 256 RL prompts evaluated; then the argument (method, smoke)."""
    paper_geometry(c, BATCH_SIZE)
    c.warmstart.pool = "disjoint"
    c.warmstart.pool_size = 1000
    c.eval.every = 10
    c.eval.train_pool_size = 256
    c = apply_arg(c, arg)
    if parse_arg(arg, method=Choice(DEFAULT_METHOD, METHODS), smoke=False).smoke:
        # the shrink's pool and batch, with this config's warm start and train-pool eval on
        c.warmstart.pool_size = 0
        c.eval.train_pool_size = 8
    return c


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    return in_paper_regime(countdown_tiny.get_config(), arg)
