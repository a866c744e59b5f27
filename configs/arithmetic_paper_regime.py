"""Arithmetic (the task and policy of configs/arithmetic_tiny.py) in the paper's regime, as
configs/countdown_paper_regime.py puts Countdown there: M = 256 x K = 8 per step from N = 2000,
100 steps (12.8 draws per prompt), Mhat = 16 M, mini-batches of 64 prompts, and a warm start on
1000 generated problems outside the RL pool and the test set (the train split of levels 1-2
with + and - holds ~10^4 problems). Everything else is arithmetic_tiny's, not re-tuned here.

  python -m insight_jax.main --config=configs/arithmetic_paper_regime.py:insight \\
      --workdir=workdirs/arithmetic_paper_regime

Argument: as configs/arithmetic_tiny.py (a method name and/or `smoke`).
Sweeps over this config: configs/ablations/arithmetic_paper_regime.py.
"""

import ml_collections

from configs import arithmetic_tiny
from configs.countdown_paper_regime import in_paper_regime


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    return in_paper_regime(arithmetic_tiny.get_config(), arg)
