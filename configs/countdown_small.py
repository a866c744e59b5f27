"""Countdown (as configs/countdown_tiny.py) with a 10x larger policy: does selection gain more
when the policy has room to learn?

The tiny Countdown policy (0.32M parameters) plateaus about 20 RL steps in for every selector
(docs/results.md). This config keeps the task, the pool, the warm start's length and the RL
settings, and gives the policy 4 layers of width 256 (3.2M parameters; warm-start learning rate
1e-3). It starts RL at the same held-out pass@1 (15-20%), but it has memorised the pool (train
pass@1 ~40%), and no selector moves held-out pass@1 by more than ~2 points in 100 steps
(docs/results.md, "A 10x larger policy"). Runs take 20-100 s each on one H100 with many at once;
on a 2-core CPU the warm start alone takes about 5 minutes:

  python -m insight_jax.main --config=configs/countdown_small.py --workdir=workdirs/countdown_small

Argument: as configs/arithmetic_tiny.py (a method name and/or `smoke`).
Sweeps over this config: configs/ablations/countdown_small.py.
"""

import ml_collections

from configs import countdown_tiny
from insight_jax.rl.base_config import apply_arg


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = countdown_tiny.get_config()
    c.model.overrides = dict(
        num_layers=4, embed_dim=256, mlp_dim=768, num_heads=8, num_kv_heads=4, head_dim=32
    )
    c.warmstart.learning_rate = 1e-3
    return apply_arg(c, arg)
