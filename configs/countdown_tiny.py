"""Countdown with 3 numbers for a tiny char-level policy (the paper's headline task, shrunk).

Numbers 1-12, targets 1-40, compact prompt ("3 5 2=16:"), the paper's reward (1 / 0.1 / 0) with
a short answer tag ("<a>(3+5)*2</a>"). A 600-step supervised warm start on generated solutions
gives 15-21% held-out pass@1 (seeds 1-5; about a third of test problems solved by some but not
all of 4 samples), then GRPO with InSight reaches 28-31% in 100 steps (docs/results.md):

  python -m insight_jax.main --config=configs/countdown_tiny.py --workdir=workdirs/countdown_tiny

Argument: as configs/arithmetic_tiny.py (a method name and/or `smoke`).
Sweeps over this config: configs/ablations/countdown_tiny.py.
"""

import ml_collections

from insight_jax.rl.base_config import apply_arg, get_base_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = get_base_config()
    c.task.name = "countdown"
    c.task.kwargs = dict(
        num_numbers=(3,), min_number=1, max_number=12, min_target=1, max_target=40, tag="a"
    )
    c.warmstart.steps = 600
    c.rl.max_new_tokens = 20  # "<a>(12+11)*10</a>" + EOS
    return apply_arg(c, arg)
