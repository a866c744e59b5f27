"""The config skeleton shared by the tiny built-in experiments (configs/*_tiny.py).

A config file sets its task and the few numbers that differ (big_vision keeps such shared pieces
in its package's configs/common.py); everything else, with a comment per field, is here, so the
built-in experiments cannot drift apart by accident.
"""

from __future__ import annotations

import ml_collections

# Scorers that take InSight's parameters (eta, mu); the others take none.
_INSIGHT_PARAMS = ("insight", "insight_weight_only", "insight_sampled")


def get_base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0

    c.task = ml_collections.ConfigDict()
    c.task.name = ""  # tasks registry name (set by the config file)
    c.task.kwargs = {}  # task constructor arguments
    c.task.num_train = 2000  # prompt pool size N
    c.task.num_test = 256  # held-out problems (disjoint split)
    c.task.max_prompt_len = 0  # 0: longest prompt in the pool (+ BOS)
    # RL selects among the first rl_pool_size prompts (0: the whole pool); the warm start always
    # uses the whole pool, so RL pools of different sizes start from one warm-started policy.
    c.task.rl_pool_size = 0

    c.model = ml_collections.ConfigDict()
    c.model.preset = "tiny"  # TransformerConfig preset
    c.model.overrides = dict(num_layers=2, embed_dim=128, mlp_dim=256)

    c.mesh = ml_collections.ConfigDict()
    c.mesh.shape = (-1,)  # -1: all devices
    c.mesh.axes = ("data",)

    c.warmstart = ml_collections.ConfigDict()
    c.warmstart.steps = 400  # supervised steps on reference answers (0: none)
    c.warmstart.batch_size = 64
    c.warmstart.learning_rate = 3e-3
    # Directory for a shared cache of warm-started policies ("": off). The warm start is a pure
    # function of seed, task, model, mesh and these settings, so runs that differ only in RL or
    # selection settings (a sweep) reuse one warm start instead of each repeating it.
    c.warmstart.cache_dir = ""

    c.rl = ml_collections.ConfigDict()
    c.rl.steps = 100  # GRPO steps
    c.rl.batch_size = 32  # M prompts per step
    c.rl.num_rollouts = 8  # K rollouts per prompt
    c.rl.max_new_tokens = 12
    c.rl.temperature = 1.0
    c.rl.top_p = 1.0
    c.rl.learning_rate = 3e-4
    c.rl.weight_decay = 0.0
    c.rl.grad_clip = 1.0
    c.rl.clip_low = 0.2
    c.rl.clip_high = 0.28
    c.rl.aggregation = "token_mean"
    c.rl.entropy_coef = 0.0
    c.rl.num_minibatches = 2
    c.rl.num_ppo_epochs = 1

    c.selection = ml_collections.ConfigDict()
    c.selection.scorer = "insight"  # any name in insight_jax.selection.SCORER_NAMES
    c.selection.params = dict(eta=3.0, mu=0.3)  # scorer parameters
    c.selection.num_candidates = 16 * 32  # Mhat = 16 M (>= N: the whole pool)
    c.selection.decay = 1.0  # lambda, forgetting factor
    c.selection.alpha0 = 1.0
    c.selection.beta0 = 1.0
    c.selection.success_rule = "threshold"
    c.selection.success_threshold = 1.0
    # DAPO dynamic sampling: draw uniform batches of M and roll them out, keep the groups with
    # mixed rewards, repeat until M are kept or after this many rounds (0: off). Every generated
    # rollout is counted (metric "rollouts"). Requires scorer "random".
    c.selection.dynamic_sampling_rounds = 0

    c.eval = ml_collections.ConfigDict()
    c.eval.every = 25  # RL steps between held-out evaluations
    c.eval.num_samples = 4  # pass@1 = mean over this many samples per problem
    c.eval.temperature = 0.6
    c.eval.top_p = 0.95

    c.checkpoint = ml_collections.ConfigDict()
    c.checkpoint.every = 25
    c.checkpoint.max_to_keep = 2
    return c


def set_method(c: ml_collections.ConfigDict, method: str) -> ml_collections.ConfigDict:
    """Points the config at one selection method: a scorer name, or "ds" (dynamic sampling)."""
    if method == "ds":
        c.selection.scorer, c.selection.params = "random", {}
        c.selection.dynamic_sampling_rounds = 4
        return c
    c.selection.scorer = method
    if method not in _INSIGHT_PARAMS:
        c.selection.params = {}
    return c


def shrink_for_smoke(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The seconds-long variant the tests run (a `runlocal`-style shrink)."""
    c.task.num_train, c.task.num_test = 64, 16
    c.model.overrides = dict(
        num_layers=1, embed_dim=32, mlp_dim=64, num_heads=2, num_kv_heads=1, head_dim=16
    )
    c.warmstart.steps, c.warmstart.batch_size = 4, 8
    c.rl.steps, c.rl.batch_size, c.rl.num_rollouts = 6, 8, 4
    c.selection.num_candidates = 32
    c.eval.every, c.eval.num_samples = 3, 2
    c.checkpoint.every = 2
    return c


def apply_arg(c: ml_collections.ConfigDict, arg: str | None) -> ml_collections.ConfigDict:
    """Config-file argument: comma-separated `smoke` and/or a method (scorer name or `ds`)."""
    for part in (arg or "").split(","):
        if part == "smoke":
            shrink_for_smoke(c)
        elif part:
            set_method(c, part)
    return c
