"""The config skeleton shared by the built-in experiments (configs/*.py), the one source of
defaults.

A config file sets its task and the few numbers that differ (big_vision keeps such shared pieces
in its package's configs/common.py); everything else, with a comment per field, is here, so the
built-in experiments cannot drift apart by accident. Every value is checked, before any work, by
insight_jax.rl.validate.validate_config.

Config-file arguments (`--config=configs/<file>.py:<arg>`) are comma-separated `key=value` parts
parsed by `parse_arg`; the tiny configs take `method` (a name in METHODS) and `smoke` (bool), with
the short forms `:mopps` (method=mopps) and `:smoke` (smoke=true).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import ml_collections

from insight_jax.selection import SCORER_NAMES, scorer_defaults
from insight_jax.sharding import DEFAULT_RULES

# Selection methods: every registered scorer, and "ds" (DAPO dynamic sampling: scorer "random"
# plus dynamic_sampling_rounds > 0). The one list: sweeps and configs derive theirs from it.
METHODS: tuple[str, ...] = (*SCORER_NAMES, "ds")
DEFAULT_METHOD = "insight"
DS_ROUNDS = 4  # dynamic-sampling rounds of method "ds"


def scorer_params() -> ml_collections.ConfigDict:
    """selection.params: one entry per registered scorer holding its parameters at their defaults
    (an empty ConfigDict for a scorer without parameters), so `--config.selection.scorer=X` works
    for every X and `--config.selection.params.insight.mu=0.1` overrides one of them. The trainer
    binds `params[scorer]`."""
    return ml_collections.ConfigDict(
        {name: ml_collections.ConfigDict(scorer_defaults(name)) for name in SCORER_NAMES}
    )


def get_base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0

    c.task = ml_collections.ConfigDict()
    c.task.name = ""  # tasks registry name (set by the config file)
    c.task.kwargs = {}  # task constructor arguments
    # Records from a local file in a public format (JSON / JSONL / parquet), a row slice as in
    # tfds ("countdown.parquet[:2000]"); "": the task generates them (num_train / num_test).
    c.task.train_path = ""
    # With train_path, the held-out sets: name -> a path spec (records of this task), or a
    # mapping {"path", "task", "kwargs", "format"} for a set of another task. Metric keys use the
    # names; add sets in a config file (a locked config takes no new keys from the command line).
    c.task.eval_paths = {}
    c.task.format = "auto"  # "json", "jsonl", "parquet", or "auto" (by file extension)
    # Where prompt pools are built and cached ("": the workdir's data/). Pools are keyed by
    # content, so the runs of a sweep can share one directory and build each pool once.
    c.task.pool_dir = ""
    c.task.num_train = 2000  # generated pool size N (0 with train_path: its selected rows)
    c.task.num_test = 256  # generated held-out problems, a disjoint split (0 with eval_paths)
    c.task.max_prompt_len = 0  # 0: longest prompt in the pool (+ BOS)
    # RL selects among the first rl_pool_size prompts (0: the whole pool); the warm start always
    # uses the whole pool, so RL pools of different sizes start from one warm-started policy.
    c.task.rl_pool_size = 0

    c.model = ml_collections.ConfigDict()
    # A Hugging Face model folder (config.json, *.safetensors, tokenizer.json): train that
    # checkpoint with its tokenizer ("": the preset below, random weights, character tokenizer;
    # with a path, preset and overrides are not used).
    c.model.path = ""
    c.model.preset = "tiny"  # TransformerConfig preset
    c.model.overrides = dict(num_layers=2, embed_dim=128, mlp_dim=256)  # preset shape changes
    # Chat template of the tokenizer around each prompt: "auto" (when it has one), "on", "off".
    c.model.chat_template = "auto"
    c.model.template_vars = {}  # extra template variables, e.g. {"enable_thinking": False}
    # Numerics and memory, for presets and checkpoints alike: compute dtype (float32 logits and
    # log-probs always), parameter storage dtype (float32 master weights under bfloat16
    # compute), scan over stacked layers (compile time flat in depth), per-layer remat policy
    # ("none", "full", "dots"), log-probs over chunks of this many positions (0: whole sequence).
    c.model.dtype = "float32"
    c.model.param_dtype = "float32"
    c.model.scan_layers = False
    c.model.remat = "none"
    c.model.logits_chunk = 0

    c.mesh = ml_collections.ConfigDict()
    c.mesh.shape = (-1,)  # -1: all devices
    c.mesh.axes = ("data",)
    # Logical-axis rules, (logical name, mesh axis | tuple of axes | None) pairs; the first rule
    # of a name wins and targets missing from the mesh are ignored (insight_jax/sharding.py).
    c.mesh.rules = DEFAULT_RULES

    c.warmstart = ml_collections.ConfigDict()
    c.warmstart.steps = 400  # supervised steps on reference answers (0: none)
    c.warmstart.batch_size = 64
    c.warmstart.learning_rate = 3e-3
    # The warm start's prompts: "rl", the training pool (RL then starts on prompts the policy
    # was taught); "disjoint", pool_size generated problems outside the RL pool and the held-out
    # sets (0: as many as task.num_train), so the policy never saw its RL prompts before RL, as
    # the paper's policies. "disjoint" needs a generated pool (task.train_path "").
    c.warmstart.pool = "rl"
    c.warmstart.pool_size = 0
    # Directory for a shared cache of warm-started policies ("": off). The warm start is a pure
    # function of seed, task, model, mesh and these settings, so runs that differ only in RL or
    # selection settings (a sweep) reuse one warm start instead of each repeating it.
    c.warmstart.cache_dir = ""

    c.rl = ml_collections.ConfigDict()
    c.rl.steps = 100  # GRPO steps (0: warm start only)
    c.rl.batch_size = 32  # M prompts per step
    c.rl.num_rollouts = 8  # K rollouts per prompt
    c.rl.max_new_tokens = 12
    c.rl.temperature = 1.0  # rollout sampling temperature (> 0: RL needs samples)
    c.rl.top_p = 1.0
    c.rl.learning_rate = 3e-4
    c.rl.lr_schedule = "constant"  # "constant", or "cosine" (to 0 at the end of RL)
    c.rl.warmup_steps = 0  # linear warmup 0 -> learning_rate over the first RL steps
    # The paper uses weight decay 0.1 and an entropy bonus 0.001 (MoPPS / verl settings for
    # 0.6B-7B models at lr 1e-6). The tiny policy runs without both: its learning rates and warm
    # start were chosen with them off, and every number of the study (docs/results.md) was
    # measured at 0.0 / 0.0, so turning them on would be a new, untuned setting.
    c.rl.weight_decay = 0.0
    c.rl.entropy_coef = 0.0
    c.rl.grad_clip = 1.0  # global-norm clip (0: off)
    c.rl.clip_low = 0.2  # ratio lower bound 1 - clip_low
    c.rl.clip_high = 0.28  # ratio upper bound 1 + clip_high (DAPO clip-higher)
    c.rl.aggregation = "token_mean"  # loss aggregation, a name in grpo.AGGREGATIONS
    # KL to a frozen reference policy (the warm-started one), estimator k1 / k2 / k3 (Schulman);
    # 0: off, and no reference log-probs are computed.
    c.rl.kl_coef = 0.0
    c.rl.kl_kind = "k3"
    # Advantages divided by the group's reward std (GRPO); False = Dr.GRPO (centred only; pair it
    # with aggregation "token_sum_norm").
    c.rl.normalize_std = True
    # Rollout implementation (rl/engines.py): "continuous" refills finished rows' decode slots
    # with waiting rollouts and attends over filled cache slots only; "dense" steps every row
    # until the longest ends (the reference; same tokens up to float rounding).
    c.rl.rollout_engine = "dense"
    # Decode slots of the continuous engine per rollout call (0: one per rollout, B * K); fewer
    # slots than rollouts queue the rest, so the loop runs ~ total tokens / slots steps.
    c.rl.rollout_slots = 0
    c.rl.num_minibatches = 2  # optimizer steps per PPO epoch ((M K) % this == 0)
    c.rl.num_ppo_epochs = 1

    c.selection = ml_collections.ConfigDict()
    c.selection.scorer = DEFAULT_METHOD  # any name in insight_jax.selection.SCORER_NAMES
    c.selection.params = scorer_params()  # per scorer: params[scorer] is bound
    c.selection.num_candidates = 16 * 32  # Mhat = 16 M (>= N: the whole pool)
    c.selection.decay = 1.0  # lambda, forgetting factor
    c.selection.alpha0 = 1.0
    c.selection.beta0 = 1.0
    # "fixed": every prompt starts RL at Beta(alpha0, beta0). "warm_start": at the start of RL
    # every prompt is set to the prior of mean p and the same strength alpha0 + beta0, where p
    # is the policy's pass@1 on the train-pool sample then (eval.train_pool_size > 0), so unseen
    # prompts look about as hard as the RL pool is, not 50:50 (p is measured at
    # eval.temperature / top_p, the beliefs count rollouts at rl.temperature).
    c.selection.prior = "fixed"
    c.selection.success_rule = "threshold"  # or "fractional" (clip(r, 0, 1) summed)
    c.selection.success_threshold = 1.0  # reward >= this counts as a success ("threshold")
    # DAPO dynamic sampling: draw uniform batches of M and roll them out, keep the groups with
    # mixed rewards, repeat until M are kept or after this many rounds (0: off). Every generated
    # rollout is counted (metric "rollouts"). Requires scorer "random".
    c.selection.dynamic_sampling_rounds = 0
    # Band-pass dynamic sampling (verl #2791): (lo, hi) keeps the groups whose success rate
    # S/K lies in [lo, hi] instead of those with mixed rewards; () keeps DAPO's rule.
    c.selection.dynamic_sampling_band = ()
    # Predicted-zero-variance skipping (GRESO-like, from the beliefs): a prompt whose predictive
    # P(all K fail) + P(all K succeed) exceeds skip_threshold ranks below every other prompt,
    # unless a coin of probability skip_explore keeps it this step (0: off).
    c.selection.skip_threshold = 0.0
    c.selection.skip_explore = 0.0

    c.eval = ml_collections.ConfigDict()
    c.eval.every = 25  # RL steps between held-out evaluations
    # n samples per problem: avg@n (pass@1 as the mean over them) and the unbiased pass@k
    c.eval.num_samples = 4
    c.eval.batch_size = 0  # problems per sampling call (0: a whole set at once)
    c.eval.temperature = 0.6  # 0: greedy
    c.eval.top_p = 0.95
    # Also evaluate the first train_pool_size prompts of the RL pool (set "train_pool"; never
    # in the eval_accuracy average), to compare train-pool and held-out pass@1 (0: off).
    c.eval.train_pool_size = 0

    c.checkpoint = ml_collections.ConfigDict()
    c.checkpoint.every = 25  # steps between checkpoints (and one at the end)
    c.checkpoint.max_to_keep = 2  # newest checkpoints kept (0: all)
    return c


def set_method(c: ml_collections.ConfigDict, method: str) -> ml_collections.ConfigDict:
    """Points the config at one selection method of METHODS: a scorer, or "ds" (dynamic
    sampling: uniform draws, DS_ROUNDS rounds)."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; allowed: {', '.join(METHODS)}")
    ds = method == "ds"
    c.selection.scorer = "random" if ds else method
    c.selection.dynamic_sampling_rounds = DS_ROUNDS if ds else 0
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


# ------------------------------------------------------------------------- config-file arguments


@dataclasses.dataclass(frozen=True)
class Choice:
    """A string argument restricted to `allowed`; a bare part equal to one of them sets it."""

    default: str
    allowed: tuple[str, ...]


_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")


def _parse_value(key: str, text: str, default: Any, part: str) -> Any:
    """`text` as the type of `default` (a Choice: one of its allowed strings)."""
    if isinstance(default, Choice):
        if text not in default.allowed:
            raise ValueError(
                f"config argument part {part!r}: {key} must be one of {', '.join(default.allowed)}"
            )
        return text
    if isinstance(default, bool):
        if text.lower() not in (*_TRUE, *_FALSE):
            raise ValueError(
                f"config argument part {part!r}: {key} is a bool; use one of "
                f"{', '.join(_TRUE + _FALSE)}"
            )
        return text.lower() in _TRUE
    kind = "an integer" if isinstance(default, int) else f"a {type(default).__name__}"
    try:
        return type(default)(text)
    except ValueError:
        raise ValueError(f"config argument part {part!r}: {key} must be {kind}") from None


def parse_arg(arg: str | None, **spec: Any) -> ml_collections.ConfigDict:
    """Parses a config-file argument of comma-separated `key=value` parts (big_vision-style).

    `spec` gives each allowed key its default, whose type (bool, int, float, str, or a Choice)
    says how its value parses. Short forms: a bare bool key means key=True (`smoke`), a bare
    value of a Choice key means key=value (`mopps` for method=mopps). Unknown keys, values of the
    wrong type, a bare part that is neither, and a key set twice are ValueErrors naming the part
    and what is allowed. Returns a ConfigDict with every key of `spec`.

    >>> a = parse_arg("smoke,mopps", method=Choice("insight", ("insight", "mopps")), smoke=False)
    >>> a.method, a.smoke
    ('mopps', True)
    """
    values = {k: v.default if isinstance(v, Choice) else v for k, v in spec.items()}
    seen: set[str] = set()
    for part in (arg or "").split(","):
        part = part.strip()
        if not part:
            continue
        key, eq, text = part.partition("=")
        key = key.strip()
        if eq:
            if key not in spec:
                raise ValueError(
                    f"config argument part {part!r}: unknown key {key!r}; allowed keys: "
                    f"{', '.join(spec)}"
                )
            value = _parse_value(key, text.strip(), spec[key], part)
        elif isinstance(spec.get(key), bool):
            value = True
        else:
            owners = [k for k, v in spec.items() if isinstance(v, Choice) and part in v.allowed]
            if len(owners) != 1:
                allowed = [f"{k}=<value>" for k in spec]
                allowed += [k for k, v in spec.items() if isinstance(v, bool)]
                allowed += [
                    f"a {k} ({'|'.join(v.allowed)})"
                    for k, v in spec.items()
                    if isinstance(v, Choice)
                ]
                raise ValueError(
                    f"config argument part {part!r} is not allowed; allowed parts: "
                    f"{', '.join(allowed)}"
                )
            key, value = owners[0], part
        if key in seen:
            raise ValueError(f"config argument {arg!r} sets {key} twice")
        seen.add(key)
        values[key] = value
    return ml_collections.ConfigDict(values)


def apply_arg(c: ml_collections.ConfigDict, arg: str | None) -> ml_collections.ConfigDict:
    """Applies a tiny config's argument: `method` (a name in METHODS; default insight) and
    `smoke` (bool; the seconds-long shrink), e.g. `mopps`, `smoke,ds`, `method=mopps,smoke=true`.
    """
    a = parse_arg(arg, method=Choice(DEFAULT_METHOD, METHODS), smoke=False)
    set_method(c, a.method)
    if a.smoke:
        shrink_for_smoke(c)
    return c
