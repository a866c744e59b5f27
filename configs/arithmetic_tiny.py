"""The built-in default: a tiny char-level policy on generated multi-digit arithmetic.

A short supervised warm start on reference answers gives a policy that solves part of the task
(easy levels often, hard levels rarely), then GRPO with InSight selection trains it further.
Runs in a few minutes on a laptop CPU:

  python -m insight_jax.main --config=configs/arithmetic_tiny.py --workdir=workdirs/arithmetic_tiny

Argument (after a colon): comma-separated `key=value` parts, `method` (a scorer name or `ds`,
DAPO dynamic sampling; default insight) and `smoke` (true: the seconds-long variant the tests
run), with the short forms `:mopps` and `:smoke`, e.g. `--config=configs/arithmetic_tiny.py:mopps`,
`:smoke,ds` or `:method=mopps,smoke=true`. Any other part is an error. A scorer's parameters are
under selection.params.<scorer> (e.g. `--config.selection.params.insight.mu=0.1`).
Shared fields and their meaning: insight_jax/rl/base_config.py.
Sweeps over this config: configs/ablations/arithmetic_tiny.py.
"""

import ml_collections

from insight_jax.rl.base_config import apply_arg, get_base_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = get_base_config()
    c.task.name = "arithmetic"
    c.task.kwargs = dict(levels=(1, 2), ops=("+", "-"), tag="a")  # short answer tag
    c.rl.max_new_tokens = 12
    return apply_arg(c, arg)
