"""The built-in default: a tiny char-level policy on generated multi-digit arithmetic.

A short supervised warm start on reference answers gives a policy that solves part of the task
(easy levels often, hard levels rarely), then GRPO with InSight selection trains it further.
Runs in a few minutes on a laptop CPU:

  python -m insight_jax.main --config=configs/arithmetic_tiny.py --workdir=workdirs/arithmetic_tiny

Argument (after a colon, comma-separated): a method, i.e. a scorer name or `ds` (DAPO dynamic
sampling), e.g. `--config=configs/arithmetic_tiny.py:mopps`, and/or `smoke` for the
seconds-long variant the tests run. Shared fields and their meaning: insight_jax/rl/base_config.py.
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
