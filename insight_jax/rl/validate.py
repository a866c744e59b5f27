"""Every config value checked in one place, before any work: `validate_config(config)`.

Runs in milliseconds (no pool is generated and no model is built; the task is constructed, and
the mesh, which is cheap), so a bad value fails before the warm start instead of minutes in. A
problem raises `ConfigError` (a ValueError) naming the key, its value and what is allowed.

Three kinds of rules:
  * ranges of single keys (integers are ints, not 2.5 or True; reals are finite numbers);
  * names looked up in their registries (task, scorer, aggregation, KL estimator, success rule,
    lr schedule, rollout engine), and values the registered object must accept (task kwargs,
    model overrides, scorer parameters, mesh shape and rules);
  * cross-key rules: the RL batch fits the RL pool, the candidate set holds a batch, batches
    split over the mesh's batch shards and into minibatches, dynamic sampling only with uniform
    draws and enough distinct prompts, a success threshold the task's rewards can reach.
"""

from __future__ import annotations

import math
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from insight_jax import sharding as shd
from insight_jax.models.transformer import PRESETS, REMAT_POLICIES, TransformerConfig
from insight_jax.rl.data import TRAIN_POOL_SET, WARM_POOLS, eval_specs
from insight_jax.rl.engines import ROLLOUT_ENGINES
from insight_jax.rl.grpo import AGGREGATIONS, KL_ESTIMATORS
from insight_jax.rl.policy import CHAT_TEMPLATE_MODES, NUMERIC_KEYS, policy_from_config
from insight_jax.selection import MAX_ROLLOUTS, SCORER_NAMES, get_scorer
from insight_jax.selection.beliefs import SuccessRule
from insight_jax.tasks import get_task, list_tasks
from insight_jax.tasks.loaders import FORMATS, count_rows, parse_path_spec

LR_SCHEDULES = ("constant", "cosine")  # rl.lr_schedule: constant, or cosine decay to 0
SUCCESS_RULES: tuple[str, ...] = typing.get_args(SuccessRule)
PRIORS = ("fixed", "warm_start")  # selection.prior


class ConfigError(ValueError):
    """A config value that is not allowed: `key` (dotted), its `value`, and what is `allowed`."""

    def __init__(self, key: str, value: Any, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"config {key}={value!r} is not allowed: {allowed}")


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


MISSING = _Missing()


def _get(config: Any, key: str) -> Any:
    """config[a][b]... of the dotted `key`; a missing key is a ConfigError."""
    node = config
    for part in key.split("."):
        try:
            node = node[part]
        except (KeyError, TypeError, AttributeError):
            raise ConfigError(
                key, MISSING, "the key is required (insight_jax/rl/base_config.py)"
            ) from None
    return node


def _is_int(v: Any) -> bool:
    return isinstance(v, int | np.integer) and not isinstance(v, bool | np.bool_)


def _is_real(v: Any) -> bool:
    return (
        isinstance(v, int | float | np.integer | np.floating)
        and not isinstance(v, bool | np.bool_)
        and math.isfinite(float(v))
    )


def _interval(lo: float | None, hi: float | None, lo_open: bool, hi_open: bool) -> str:
    if lo is not None and hi is not None:
        return f"in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
    if lo is not None:
        return f"{'>' if lo_open else '>='} {lo}"
    if hi is not None:
        return f"{'<' if hi_open else '<='} {hi}"
    return "any value"


def _in_range(v: float, lo, hi, lo_open: bool, hi_open: bool) -> bool:
    above = lo is None or (v > lo if lo_open else v >= lo)
    below = hi is None or (v < hi if hi_open else v <= hi)
    return above and below


def _int(config, key: str, lo: int | None = None, hi: int | None = None) -> int:
    """An integer (not a bool, not 2.5) in [lo, hi]."""
    v = _get(config, key)
    if not _is_int(v) or not _in_range(v, lo, hi, False, False):
        raise ConfigError(key, v, f"must be an integer {_interval(lo, hi, False, False)}")
    return int(v)


def _real(
    config,
    key: str,
    lo: float | None = None,
    hi: float | None = None,
    *,
    lo_open: bool = False,
    hi_open: bool = False,
) -> float:
    """A finite real number (not a bool) in the interval lo..hi, ends open or closed."""
    v = _get(config, key)
    if not _is_real(v) or not _in_range(float(v), lo, hi, lo_open, hi_open):
        raise ConfigError(key, v, f"must be a finite number {_interval(lo, hi, lo_open, hi_open)}")
    return float(v)


def _bool(config, key: str) -> bool:
    v = _get(config, key)
    if not isinstance(v, bool | np.bool_):
        raise ConfigError(key, v, "must be a bool (True or False)")
    return bool(v)


def _str(config, key: str) -> str:
    v = _get(config, key)
    if not isinstance(v, str):
        raise ConfigError(key, v, "must be a string")
    return v


def _band(config, key: str) -> tuple[float, ...]:
    """() or two finite numbers (lo, hi) with 0 <= lo <= hi <= 1."""
    v = _get(config, key)
    ok = isinstance(v, tuple | list) and (
        len(v) == 0 or (len(v) == 2 and all(_is_real(x) for x in v) and 0.0 <= v[0] <= v[1] <= 1.0)
    )
    if not ok:
        raise ConfigError(key, v, "must be () or (lo, hi) with 0 <= lo <= hi <= 1")
    return tuple(float(x) for x in v)


def _choice(config, key: str, allowed: Sequence[str]) -> str:
    v = _get(config, key)
    if not isinstance(v, str) or v not in allowed:
        raise ConfigError(key, v, f"must be one of {', '.join(sorted(allowed))}")
    return v


def _mapping(config, key: str) -> dict[str, Any]:
    v = _get(config, key)
    d = v.to_dict() if hasattr(v, "to_dict") else v
    if not isinstance(d, Mapping):
        raise ConfigError(key, v, "must be a mapping (dict or ConfigDict)")
    return dict(d)


# ---------------------------------------------------------------------------------- pieces


def as_rules(value: Any) -> shd.LogicalRules:
    """mesh.rules as LogicalRules: (logical name, target) pairs, a target being a mesh axis name,
    a sequence of them, or None. Lists (from config.json) become tuples. ValueError otherwise."""
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise ValueError("must be a sequence of (logical axis, mesh axes) pairs")
    rules = []
    for rule in value:
        if isinstance(rule, str) or not isinstance(rule, Sequence) or len(rule) != 2:
            raise ValueError(f"rule {rule!r} is not a (logical axis, mesh axes) pair")
        name, target = rule
        if isinstance(target, Sequence) and not isinstance(target, str):
            target = tuple(target)
        ok_target = (
            target is None
            or isinstance(target, str)
            or (isinstance(target, tuple) and all(isinstance(a, str) for a in target))
        )
        if not isinstance(name, str) or not ok_target:
            raise ValueError(
                f"rule {rule!r}: the name must be a string and the target a mesh axis, a tuple "
                "of mesh axes or None"
            )
        rules.append((name, target))
    return tuple(rules)


def _task(config):
    """The task (constructed: cheap, no records generated), its name and kwargs checked."""
    name = _choice(config, "task.name", list_tasks())
    kwargs = _mapping(config, "task.kwargs")
    try:
        return get_task(name, **kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError("task.kwargs", kwargs, f"task {name!r} rejects them: {e}") from None


def _rows(key: str, spec: str, fmt: str, task_name: str) -> int:
    """The number of records a path spec selects (cheap: file metadata or a line count)."""
    path, _, _ = parse_path_spec(spec)
    if not Path(path).is_file():
        raise ConfigError(key, spec, f"no file {path}")
    try:
        n = count_rows(spec, fmt=fmt)
    except (OSError, ValueError) as e:
        raise ConfigError(
            key, spec, f"not a readable {fmt} file of task {task_name}: {e}"
        ) from None
    if n < 1:
        raise ConfigError(key, spec, "selects no rows")
    return n


def _data(config, task) -> tuple[int, list]:
    """Where the records come from (generated, or files and their held-out sets); returns the
    pool size N and the held-out sets' tasks. Files are opened only to count their rows;
    records are checked when the run builds its pool (setup.build), before any step."""
    fmt = _choice(config, "task.format", FORMATS)
    _str(config, "task.pool_dir")
    train_path = _str(config, "task.train_path")
    num_train = _int(config, "task.num_train", 0)
    num_test = _int(config, "task.num_test", 0)
    try:
        specs = eval_specs(config)
    except ValueError as e:
        raise ConfigError("task.eval_paths", _get(config, "task.eval_paths"), str(e)) from None
    if not train_path:
        if specs:
            raise ConfigError(
                "task.eval_paths", [s.name for s in specs], "held-out files need task.train_path"
            )
        try:
            task.generate(1, 0, "train")
        except (NotImplementedError, ValueError) as e:
            raise ConfigError(
                "task.train_path", "", f"task {task.name!r} generates no records ({e}): set a file"
            ) from None
        if num_train < 1 or num_test < 1:
            key, value = ("task.num_train", num_train) if num_train < 1 else ("task.num_test", 0)
            raise ConfigError(key, value, "must be >= 1 for a generated task")
        return num_train, [task]
    for key, value in (("task.num_train", num_train), ("task.num_test", num_test)):
        if value:
            raise ConfigError(
                key,
                value,
                "must be 0 with task.train_path: the files' rows are the records "
                "(select rows with a slice, path[start:stop])",
            )
    if not specs:
        raise ConfigError("task.eval_paths", {}, "held-out sets are required with task.train_path")
    n = _rows("task.train_path", train_path, fmt, task.name)
    eval_tasks = []
    for spec in specs:
        key = f"task.eval_paths.{spec.name}"
        if spec.format not in FORMATS:
            raise ConfigError(key, spec.format, f"format must be one of {', '.join(FORMATS)}")
        if spec.task_name not in list_tasks():
            raise ConfigError(key, spec.task_name, f"registered tasks: {', '.join(list_tasks())}")
        try:
            eval_tasks.append(spec.make_task())
        except (TypeError, ValueError) as e:
            raise ConfigError(key, spec.task_kwargs, f"task {spec.task_name!r}: {e}") from None
        _rows(key, spec.path, spec.format, spec.task_name)
        if _overlap(train_path, spec.path):
            raise ConfigError(
                key,
                spec.path,
                f"shares rows with task.train_path={train_path!r}: held-out rows "
                "must not be trained on",
            )
    return n, eval_tasks


def _overlap(a: str, b: str) -> bool:
    """Whether two path specs select common rows of one file."""
    (path_a, start_a, stop_a), (path_b, start_b, stop_b) = parse_path_spec(a), parse_path_spec(b)
    if not Path(path_a).resolve() == Path(path_b).resolve():
        return False
    end_a = math.inf if stop_a is None else stop_a
    end_b = math.inf if stop_b is None else stop_b
    return max(start_a, start_b) < min(end_a, end_b)


def _model(config) -> None:
    """The model's source and numerics make a valid TransformerConfig (no weights read): a
    preset with its overrides, or a Hugging Face folder whose config.json and tokenizer load."""
    _choice(config, "model.chat_template", CHAT_TEMPLATE_MODES)
    template_vars = _mapping(config, "model.template_vars")
    for key in ("dtype", "param_dtype"):
        _choice(config, f"model.{key}", ("float32", "bfloat16", "float16"))
    scan = _bool(config, "model.scan_layers")
    remat = _choice(config, "model.remat", tuple(REMAT_POLICIES))
    if remat != "none" and not scan:
        # Measured (benchmarks/real_size.py, XLA on CPU): with the layers unrolled, every
        # layer's recompute is scheduled before the backward pass and the remat saves nothing.
        raise ConfigError("model.remat", remat, "needs model.scan_layers=True")
    _int(config, "model.logits_chunk", 0)
    path = _get(config, "model.path")
    if not isinstance(path, str):
        raise ConfigError("model.path", path, "a folder path (str), or '' for a preset")
    if not path:
        preset = _choice(config, "model.preset", ("tiny", *PRESETS))
        overrides = _mapping(config, "model.overrides")
        numeric = sorted(set(overrides) & set(NUMERIC_KEYS))
        if numeric:
            raise ConfigError(
                "model.overrides", overrides, f"set {numeric} as model.<key>, not as overrides"
            )
        if template_vars:
            raise ConfigError(
                "model.template_vars", template_vars, "chat templates need a model.path"
            )
        try:
            TransformerConfig.preset(preset, **overrides)
        except (TypeError, ValueError, ZeroDivisionError) as e:
            raise ConfigError(
                "model.overrides", overrides, f"not a valid {preset!r} model config: {e}"
            ) from None
        return
    folder = Path(path).expanduser()
    for name in ("config.json", "tokenizer.json"):
        if not (folder / name).is_file():
            raise ConfigError("model.path", path, f"a Hugging Face model folder with {name}")
    try:
        policy = policy_from_config(config)
    except (TypeError, ValueError, OSError) as e:
        raise ConfigError("model.path", path, str(e)) from None
    if template_vars and not policy.chat:
        raise ConfigError(
            "model.template_vars", template_vars, "given, but prompts are not chat-templated"
        )


def _batch_multiple(config) -> int:
    """Product of the mesh axes the "batch" logical axis maps to (global batches divide by it)."""
    shape, axes = _get(config, "mesh.shape"), _get(config, "mesh.axes")
    try:
        mesh = shd.make_mesh(tuple(shape), tuple(axes))
    except (TypeError, ValueError) as e:
        raise ConfigError("mesh.shape", shape, f"with mesh.axes={axes!r}: {e}") from None
    rules_value = _get(config, "mesh.rules")
    try:
        rules = as_rules(rules_value)
        # Every logical axis the trainer and model use (those of DEFAULT_RULES) needs a rule.
        for name in dict(shd.DEFAULT_RULES):
            shd.logical_to_spec((name,), mesh, rules)
        return shd.batch_size_multiple(mesh, rules)
    except ValueError as e:
        raise ConfigError("mesh.rules", rules_value, str(e)) from None


def _scorer_params(config, num_rollouts: int) -> None:
    """selection.params: one entry per registered scorer (the selected one required), each of
    finite numbers that get_scorer accepts."""
    scorer = _choice(config, "selection.scorer", SCORER_NAMES)
    params = _mapping(config, "selection.params")
    if scorer not in params:
        raise ConfigError(
            f"selection.params.{scorer}", MISSING, "the selected scorer's parameters are required"
        )
    for name, entry in params.items():
        key = f"selection.params.{name}"
        if name not in SCORER_NAMES:
            raise ConfigError(key, entry, f"not a registered scorer: {', '.join(SCORER_NAMES)}")
        if not isinstance(entry, Mapping):
            raise ConfigError(key, entry, "must be a mapping of parameter names to numbers")
        for p, v in entry.items():
            if not _is_real(v):
                raise ConfigError(f"{key}.{p}", v, "must be a finite number")
        try:
            get_scorer(name, num_rollouts=num_rollouts, **entry)
        except (TypeError, ValueError) as e:
            raise ConfigError(key, dict(entry), str(e)) from None


# ---------------------------------------------------------------------------------- the check


def validate_config(config: Any) -> None:
    """Raises ConfigError for the first value of `config` that is not allowed; returns None.

    `config` is an ml_collections.ConfigDict (or nested mappings) laid out as
    insight_jax/rl/base_config.py.
    """
    _int(config, "seed", 0)

    # task
    task = _task(config)
    num_train, eval_tasks = _data(config, task)
    _int(config, "task.max_prompt_len", 0)
    rl_pool_size = _int(config, "task.rl_pool_size", 0, num_train)
    pool = rl_pool_size or num_train

    _model(config)
    multiple = _batch_multiple(config)

    # warm start
    warm_steps = _int(config, "warmstart.steps", 0)
    warm_batch = _int(config, "warmstart.batch_size", 1)
    _real(config, "warmstart.learning_rate", 0.0, lo_open=True)
    _str(config, "warmstart.cache_dir")
    warm_mode = _choice(config, "warmstart.pool", WARM_POOLS)
    warm_size = _int(config, "warmstart.pool_size", 0)

    # RL
    _int(config, "rl.steps", 0)
    m = _int(config, "rl.batch_size", 1)
    k = _int(config, "rl.num_rollouts", 1, MAX_ROLLOUTS)
    _int(config, "rl.max_new_tokens", 1)
    _real(config, "rl.temperature", 0.0, lo_open=True)
    _real(config, "rl.top_p", 0.0, 1.0, lo_open=True)
    _real(config, "rl.learning_rate", 0.0, lo_open=True)
    _choice(config, "rl.lr_schedule", LR_SCHEDULES)
    _int(config, "rl.warmup_steps", 0)
    _real(config, "rl.weight_decay", 0.0)
    _real(config, "rl.entropy_coef", 0.0)
    _real(config, "rl.grad_clip", 0.0)
    _real(config, "rl.clip_low", 0.0, 1.0, hi_open=True)
    _real(config, "rl.clip_high", 0.0)
    _choice(config, "rl.aggregation", tuple(AGGREGATIONS))
    _real(config, "rl.kl_coef", 0.0)
    _choice(config, "rl.kl_kind", tuple(KL_ESTIMATORS))
    _bool(config, "rl.normalize_std")
    engine = _choice(config, "rl.rollout_engine", tuple(ROLLOUT_ENGINES))
    if _int(config, "rl.rollout_slots", 0) and engine != "continuous":
        raise ConfigError(
            "rl.rollout_slots",
            config.rl.rollout_slots,
            f'0: decode slots are a setting of the "continuous" rollout engine, not of '
            f'{engine!r} (set rl.rollout_engine="continuous" or rl.rollout_slots=0)',
        )
    minibatches = _int(config, "rl.num_minibatches", 1)
    _int(config, "rl.num_ppo_epochs", 1)

    # selection
    _scorer_params(config, k)
    scorer = _get(config, "selection.scorer")
    candidates = _int(config, "selection.num_candidates", 1)
    decay = _real(config, "selection.decay", 0.0, 1.0, lo_open=True)
    _real(config, "selection.alpha0", 0.0, lo_open=True)
    _real(config, "selection.beta0", 0.0, lo_open=True)
    prior = _choice(config, "selection.prior", PRIORS)
    rule = _choice(config, "selection.success_rule", SUCCESS_RULES)
    threshold = _real(config, "selection.success_threshold")
    rounds = _int(config, "selection.dynamic_sampling_rounds", 0)
    band = _band(config, "selection.dynamic_sampling_band")
    skip = _real(config, "selection.skip_threshold", 0.0, 1.0, hi_open=True)
    explore = _real(config, "selection.skip_explore", 0.0, 1.0)

    # evaluation, checkpoints
    _int(config, "eval.every", 1)
    _int(config, "eval.num_samples", 1)
    _int(config, "eval.batch_size", 0)
    _real(config, "eval.temperature", 0.0)
    _real(config, "eval.top_p", 0.0, 1.0, lo_open=True)
    train_sample = _int(config, "eval.train_pool_size", 0, pool)
    _int(config, "checkpoint.every", 1)
    keep = _int(config, "checkpoint.max_to_keep", 0)
    if keep == 1:
        # orbax deletes the older step before our checksum manifest of the new one is written:
        # a kill -9 in between would leave no verifiable step to resume from.
        raise ConfigError(
            "checkpoint.max_to_keep",
            keep,
            "must be 0 (keep all) or >= 2 (a kill -9 mid-save "
            "must leave an older intact step to resume from)",
        )

    # cross-key rules
    if m > pool:
        raise ConfigError("rl.batch_size", m, f"must be <= the RL pool size {pool}")
    if candidates < m:
        raise ConfigError("selection.num_candidates", candidates, f"must be >= rl.batch_size={m}")
    if (m * k) % minibatches:
        raise ConfigError(
            "rl.num_minibatches",
            minibatches,
            f"must divide the M*K={m}*{k}={m * k} rollouts of a step",
        )
    for key, size in (("rl.batch_size", m), ("warmstart.batch_size", warm_batch)):
        if size % multiple:
            raise ConfigError(
                key, size, f"must be a multiple of the mesh's batch shards ({multiple})"
            )
    if warm_mode == "rl" and warm_size:
        raise ConfigError(
            "warmstart.pool_size", warm_size, 'must be 0 with warmstart.pool="rl" (the whole pool)'
        )
    if warm_mode == "disjoint" and _get(config, "task.train_path"):
        raise ConfigError(
            "warmstart.pool",
            warm_mode,
            'must be "rl" with task.train_path (problems outside a file are not generated)',
        )
    warm_pool = warm_size or num_train
    if warm_steps and warm_batch > warm_pool:
        raise ConfigError(
            "warmstart.batch_size",
            warm_batch,
            f"must be <= the warm start's pool ({warm_pool}; a batch draws distinct prompts)",
        )
    if train_sample and TRAIN_POOL_SET in [spec.name for spec in eval_specs(config)]:
        raise ConfigError(
            "eval.train_pool_size",
            train_sample,
            f"must be 0 while task.eval_paths names a set {TRAIN_POOL_SET!r} (the sample's name)",
        )
    if skip and rounds:
        raise ConfigError(
            "selection.skip_threshold",
            skip,
            "must be 0 with dynamic sampling (its draws are uniform, nothing is skipped)",
        )
    if prior == "warm_start" and not train_sample:
        raise ConfigError(
            "selection.prior",
            prior,
            "needs eval.train_pool_size > 0 (the fitted mean is the pass@1 on that sample)",
        )
    if prior == "warm_start" and rule != "threshold":
        raise ConfigError(
            "selection.prior",
            prior,
            'needs selection.success_rule "threshold" (the fitted mean is a pass@1)',
        )
    if prior == "warm_start" and decay != 1.0:
        raise ConfigError(
            "selection.prior",
            prior,
            "needs selection.decay = 1 (forgetting pulls beliefs back to alpha0, beta0)",
        )
    if band and not rounds:
        raise ConfigError(
            "selection.dynamic_sampling_band",
            band,
            "must be () without dynamic sampling (selection.dynamic_sampling_rounds is 0)",
        )
    if band and rule == "threshold" and not any(band[0] <= s / k <= band[1] for s in range(k + 1)):
        raise ConfigError(
            "selection.dynamic_sampling_band",
            band,
            f"holds no success rate S/K of K={k} rollouts: no group could pass it",
        )
    if explore and not skip:
        raise ConfigError(
            "selection.skip_explore",
            explore,
            "must be 0 while selection.skip_threshold is 0 (nothing is skipped to explore)",
        )
    if rounds and scorer != "random":
        raise ConfigError(
            "selection.dynamic_sampling_rounds",
            rounds,
            f"must be 0 with scorer {scorer!r}: dynamic sampling draws uniformly (scorer random)",
        )
    if rounds * m > pool:
        raise ConfigError(
            "selection.dynamic_sampling_rounds",
            rounds,
            f"rounds*M={rounds * m} distinct prompts per step must fit the RL pool ({pool})",
        )
    # The threshold defines train accuracy and held-out pass@1 under both rules (and the
    # success count under "threshold"), so it must be reachable whatever the rule.
    del rule
    for t in (task, *eval_tasks):  # it also decides the held-out sets' avg@n
        if not 0.0 < threshold <= t.max_reward:
            raise ConfigError(
                "selection.success_threshold",
                threshold,
                f"must be in (0, {t.max_reward}] (the largest reward of task "
                f"{t.name!r}): a higher one counts no rollout as a success, <= 0 counts all",
            )
