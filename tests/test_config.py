"""Configs: the installed configs package, config-file arguments, per-scorer parameters, and
validate_config rejecting every bad value (naming the key) before any work."""

import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import ml_collections
import pytest
from absl import flags
from ml_collections import config_flags

from configs import (
    arithmetic_paper_regime,
    arithmetic_tiny,
    countdown_paper_regime,
    countdown_small,
    countdown_tiny,
)
from insight_jax.rl.base_config import METHODS, Choice, parse_arg
from insight_jax.rl.validate import ConfigError, validate_config
from insight_jax.selection import MAX_ROLLOUTS, SCORER_NAMES, get_scorer
from insight_jax.sharding import DEFAULT_RULES

ROOT = Path(__file__).resolve().parents[1]
CONFIG_MODULES = {"arithmetic_tiny": arithmetic_tiny, "countdown_tiny": countdown_tiny}
CONFIG_MODULES["countdown_small"] = countdown_small
CONFIG_MODULES["countdown_paper_regime"] = countdown_paper_regime
CONFIG_MODULES["arithmetic_paper_regime"] = arithmetic_paper_regime


def _smoke():
    return arithmetic_tiny.get_config("smoke")


def _with(config: ml_collections.ConfigDict, **changes) -> ml_collections.ConfigDict:
    """A copy with dotted keys (`a__b` for a.b) replaced, bypassing ConfigDict's type checks so
    that wrong types (2.5 for an int, True) can be tested; the value _DELETE removes the key."""
    d = config.to_dict()
    for dotted, value in changes.items():
        *path, last = dotted.split("__")
        node = d
        for part in path:
            node = node[part]
        if value is _DELETE:
            del node[last]
        else:
            node[last] = value
    return ml_collections.ConfigDict(d)


_DELETE = object()


# The paper's configs and their shared settings (tests/test_paper_configs.py).
PAPER_CONFIGS = {
    "paper_common",
    "qwen3_0_6b_countdown",
    "qwen3_0_6b_deepscaler",
    "qwen3_4b_deepscaler",
    "r1_distill_qwen_7b_deepscaler",
    "qwen3_0_6b_webinstruct",
}


def test_shipped_configs_list_is_complete():
    files = {p.stem for p in (ROOT / "configs").glob("*.py") if p.stem != "__init__"}
    assert files == set(CONFIG_MODULES) | PAPER_CONFIGS, "add new config files to the lists"


# ------------------------------------------------------------------------------- the package


def test_configs_import_from_anywhere(tmp_path):
    """`pip install -e .` (launch/setup_env.sh) makes configs a package of this checkout."""
    code = (
        "import configs.countdown_small as s, configs.ablations.sweeps_common as c;"
        "print(s.__file__); print(c.__file__)"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    files = [Path(line) for line in out.stdout.split()]
    assert files == [
        ROOT / "configs" / "countdown_small.py",
        ROOT / "configs" / "ablations" / "sweeps_common.py",
    ]


def test_no_sys_path_edits():
    # calls of insert / append / extend, item or slice assignment, = and += (not ==)
    edit = re.compile(r"sys\.path\s*(\.(insert|append|extend)\s*\(|\[[^\]]*\]\s*=(?!=)|\+?=(?!=))")
    offenders = [
        str(p.relative_to(ROOT))
        for d in ("configs", "launch", "benchmarks", "insight_jax", "tests")
        for p in sorted((ROOT / d).rglob("*.py"))
        if edit.search(p.read_text())
    ]
    assert offenders == [], f"sys.path edited in {offenders}"


# ------------------------------------------------------------------------ config arguments


def test_parse_arg_key_values_and_short_forms():
    spec = dict(method=Choice("insight", ("insight", "mopps", "ds")), smoke=False, n=1, x=0.5)
    assert parse_arg(None, **spec).to_dict() == dict(method="insight", smoke=False, n=1, x=0.5)
    assert parse_arg("", **spec).to_dict() == dict(method="insight", smoke=False, n=1, x=0.5)
    a = parse_arg("mopps,smoke", **spec)
    assert (a.method, a.smoke) == ("mopps", True)
    a = parse_arg("method=ds, smoke=TRUE, n=7, x=0.25", **spec)
    assert (a.method, a.smoke, a.n, a.x) == ("ds", True, 7, 0.25)
    assert parse_arg("smoke=0", **spec).smoke is False


@pytest.mark.parametrize(
    "arg, needle",
    [
        ("bogus", r"'bogus' is not allowed.*method=<value>, smoke=<value>, smoke, a method"),
        ("speed=3", r"'speed=3'.*unknown key 'speed'.*allowed keys: method, smoke"),
        ("method=nope", r"'method=nope'.*method must be one of .*insight.*mopps"),
        ("smoke=maybe", r"'smoke=maybe'.*smoke is a bool"),
        ("mopps,insight", r"sets method twice"),
        ("smoke,smoke=false", r"sets smoke twice"),
        ("n=2.5", r"'n=2.5'.*n must be an integer"),
    ],
)
def test_parse_arg_errors_name_the_part(arg, needle):
    spec = dict(method=Choice("insight", ("insight", "mopps")), smoke=False)
    if arg.startswith("n="):
        spec = dict(n=1)
    with pytest.raises(ValueError, match=needle):
        parse_arg(arg, **spec)


def test_config_args_of_the_tiny_configs():
    full, smoke = arithmetic_tiny.get_config(), _smoke()
    assert (full.task.num_train, smoke.task.num_train) == (2000, 64)
    c = arithmetic_tiny.get_config("mopps")
    assert (c.selection.scorer, c.selection.dynamic_sampling_rounds, c.task.num_train) == (
        "mopps",
        0,
        2000,
    )
    c = arithmetic_tiny.get_config("smoke,ds")
    assert (c.selection.scorer, c.selection.dynamic_sampling_rounds, c.task.num_train) == (
        "random",
        4,
        64,
    )
    assert smoke.selection.scorer == "insight"
    assert arithmetic_tiny.get_config("method=mopps,smoke=true") == arithmetic_tiny.get_config(
        "mopps,smoke"
    )
    assert arithmetic_tiny.get_config("smoke=false") == full
    for bad in ("bogus", "smoke,bogus", "method=nope", "seed=3"):
        with pytest.raises(ValueError, match=r"allowed|one of"):
            arithmetic_tiny.get_config(bad)
    # Every method of METHODS is accepted by every config.
    assert set(METHODS) == {*SCORER_NAMES, "ds"}
    for module in CONFIG_MODULES.values():
        for method in METHODS:
            c = module.get_config(f"{method},smoke")
            assert c.selection.scorer == ("random" if method == "ds" else method)


# ------------------------------------------------------------------- per-scorer parameters


def test_scorer_params_hold_every_scorer_at_its_defaults():
    params = _smoke().selection.params
    assert set(params) == set(SCORER_NAMES)
    # The paper's defaults (METHOD.md): eta = 3, mu = 0.3; MoPPS' target success rate 0.5.
    assert params.insight.to_dict() == {"eta": 3.0, "mu": 0.3}
    assert params.mopps.to_dict() == {"target": 0.5}
    assert params.random.to_dict() == {} and params.inverse_evidence.to_dict() == {}


def _load(argv: list[str]) -> ml_collections.ConfigDict:
    """The config main.py gets for these flags (a locked config file flag)."""
    fv, full = flags.FlagValues(), ["prog", *argv]
    config_flags.DEFINE_config_file(
        "config", None, "config", flag_values=fv, lock_config=True, sys_argv=full
    )
    fv(full)
    return fv.config


@pytest.mark.parametrize("scorer", SCORER_NAMES)
def test_scorer_override_works_for_every_scorer(scorer):
    c = _load(
        [f"--config={ROOT}/configs/arithmetic_tiny.py:smoke", f"--config.selection.scorer={scorer}"]
    )
    s = get_scorer(
        c.selection.scorer, num_rollouts=c.rl.num_rollouts, **c.selection.params[c.selection.scorer]
    )
    assert s.name == scorer and s.num_rollouts == 4
    validate_config(c)


def test_scorer_parameter_overrides():
    c = _load(
        [
            f"--config={ROOT}/configs/countdown_tiny.py:smoke",
            "--config.selection.params.insight.mu=0.1",
            "--config.selection.params.mopps.target=0.25",
        ]
    )
    assert c.selection.params.insight.mu == 0.1 and c.selection.params.mopps.target == 0.25
    s = get_scorer("insight", num_rollouts=4, **c.selection.params.insight)
    assert dict(s.params) == {"eta": 3.0, "mu": 0.1}
    with pytest.raises((AttributeError, KeyError, flags.Error), match="muu"):  # locked config
        _load(
            [
                f"--config={ROOT}/configs/countdown_tiny.py",
                "--config.selection.params.insight.muu=1",
            ]
        )


def test_new_trainer_keys_and_tiny_values():
    for module in CONFIG_MODULES.values():
        rl = module.get_config().rl
        assert (rl.kl_coef, rl.kl_kind, rl.lr_schedule, rl.warmup_steps) == (
            0.0,
            "k3",
            "constant",
            0,
        )
        assert (rl.normalize_std, rl.rollout_engine) == (True, "dense")
        assert (rl.entropy_coef, rl.weight_decay) == (0.0, 0.0)  # the study's settings
        assert tuple(module.get_config().mesh.rules) == DEFAULT_RULES


# ---------------------------------------------------------------------------------- validate


@pytest.mark.parametrize("name", sorted(CONFIG_MODULES))
@pytest.mark.parametrize("smoke", [False, True])
def test_shipped_configs_validate(name, smoke, devices):
    for method in METHODS:
        validate_config(CONFIG_MODULES[name].get_config(method + (",smoke" if smoke else "")))


NAN = float("nan")
# (change as _with kwargs, key the error must name). Base: arithmetic_tiny smoke, M=8, K=4,
# N=64, Mhat=32, 2 minibatches, on the 8-device test mesh (batch shards 8).
BAD = [
    (dict(rl__batch_size=0), "rl.batch_size"),
    (dict(rl__batch_size=2.5), "rl.batch_size"),
    (dict(rl__batch_size=True), "rl.batch_size"),
    (dict(rl__batch_size=12), "rl.batch_size"),  # not a multiple of the 8 batch shards
    (dict(task__rl_pool_size=4), "rl.batch_size"),  # M = 8 > RL pool 4
    (dict(selection__num_candidates=4), "selection.num_candidates"),
    (dict(selection__decay=1.5), "selection.decay"),
    (dict(selection__decay=0.0), "selection.decay"),
    (dict(rl__temperature=0.0), "rl.temperature"),
    (dict(rl__top_p=0.0), "rl.top_p"),
    (dict(rl__top_p=1.5), "rl.top_p"),
    (dict(eval__top_p=0.0), "eval.top_p"),
    (dict(eval__temperature=-0.1), "eval.temperature"),
    (dict(eval__num_samples=0), "eval.num_samples"),
    (dict(eval__every=0), "eval.every"),
    (dict(checkpoint__every=0), "checkpoint.every"),
    (dict(checkpoint__max_to_keep=-1), "checkpoint.max_to_keep"),
    (dict(checkpoint__max_to_keep=1), "checkpoint.max_to_keep"),
    # train accuracy and pass@1 count rewards >= threshold under either rule
    (
        dict(selection__success_rule="fractional", selection__success_threshold=5.0),
        "selection.success_threshold",
    ),
    (dict(rl__steps=-5), "rl.steps"),
    (dict(warmstart__steps=-3), "warmstart.steps"),
    (dict(selection__success_threshold=2.0), "selection.success_threshold"),
    (dict(selection__success_threshold=0.0), "selection.success_threshold"),
    (dict(selection__success_threshold=NAN), "selection.success_threshold"),
    (dict(selection__success_rule="majority"), "selection.success_rule"),
    (dict(mesh__shape=(3,)), "mesh.shape"),  # 8 devices
    (dict(mesh__shape=(-1,), mesh__axes=("data", "fsdp")), "mesh.shape"),
    (dict(mesh__rules=(("length", None),)), "mesh.rules"),  # no rule for "batch"
    (dict(mesh__rules="data"), "mesh.rules"),
    (dict(mesh__rules=tuple(r for r in DEFAULT_RULES if r[0] != "pool")), "mesh.rules"),
    (dict(selection__scorer="nope"), "selection.scorer"),
    (dict(selection__params__insight__eta=NAN), "selection.params.insight.eta"),
    (dict(selection__params__insight__eta=True), "selection.params.insight.eta"),
    (dict(selection__params__insight__mu=5.0), "selection.params.insight"),
    (dict(selection__params__insight__eta=-1.0), "selection.params.insight"),
    (dict(selection__params__mopps={"eta": 3.0}), "selection.params.mopps"),
    (dict(selection__params__insight=_DELETE), "selection.params.insight"),
    (dict(selection__params__bogus={}), "selection.params.bogus"),
    (dict(selection__alpha0=0.0), "selection.alpha0"),
    (dict(selection__beta0=-1.0), "selection.beta0"),
    (dict(selection__dynamic_sampling_rounds=-1), "selection.dynamic_sampling_rounds"),
    (dict(selection__dynamic_sampling_rounds=2), "selection.dynamic_sampling_rounds"),  # insight
    (
        dict(selection__scorer="random", selection__dynamic_sampling_rounds=9),  # 72 > 64
        "selection.dynamic_sampling_rounds",
    ),
    (dict(seed=-1), "seed"),
    (dict(seed=1.5), "seed"),
    (dict(task__name="nope"), "task.name"),
    (dict(task__kwargs={"bogus": 1}), "task.kwargs"),
    (dict(task__num_train=0), "task.num_train"),
    (dict(task__num_test=0), "task.num_test"),
    (dict(task__rl_pool_size=65), "task.rl_pool_size"),
    (dict(task__rl_pool_size=-1), "task.rl_pool_size"),
    (dict(model__preset="nope"), "model.preset"),
    (dict(model__overrides={"head_dim": 15}), "model.overrides"),  # RoPE needs an even one
    (dict(model__overrides={"bogus": 1}), "model.overrides"),
    (dict(warmstart__batch_size=0), "warmstart.batch_size"),
    (dict(warmstart__batch_size=4), "warmstart.batch_size"),  # not a multiple of 8
    (dict(warmstart__batch_size=72), "warmstart.batch_size"),  # > N = 64 distinct prompts
    (dict(warmstart__learning_rate=-1e-3), "warmstart.learning_rate"),
    (dict(warmstart__pool="heldout"), "warmstart.pool"),
    (dict(warmstart__pool_size=100), "warmstart.pool_size"),  # a size of the disjoint pool only
    (dict(warmstart__pool_size=-1), "warmstart.pool_size"),
    (dict(warmstart__pool="disjoint", warmstart__pool_size=4), "warmstart.batch_size"),  # > 4
    (dict(eval__train_pool_size=65), "eval.train_pool_size"),  # > the RL pool
    (dict(eval__train_pool_size=-1), "eval.train_pool_size"),
    (dict(selection__skip_threshold=1.0), "selection.skip_threshold"),  # skips nothing
    (dict(selection__skip_threshold=-0.1), "selection.skip_threshold"),
    (dict(selection__skip_explore=0.1), "selection.skip_explore"),  # nothing skipped
    (dict(selection__skip_threshold=0.5, selection__skip_explore=1.5), "selection.skip_explore"),
    (
        dict(
            selection__scorer="random",
            selection__dynamic_sampling_rounds=2,
            selection__skip_threshold=0.5,
        ),
        "selection.skip_threshold",
    ),
    (dict(selection__dynamic_sampling_band=(0.2, 0.8)), "selection.dynamic_sampling_band"),  # no DS
    (
        dict(
            selection__scorer="random",
            selection__dynamic_sampling_rounds=2,
            selection__dynamic_sampling_band=(0.8, 0.2),
        ),  # lo > hi
        "selection.dynamic_sampling_band",
    ),
    (
        dict(
            selection__scorer="random",
            selection__dynamic_sampling_rounds=2,
            selection__dynamic_sampling_band=(0.2,),
        ),  # one end
        "selection.dynamic_sampling_band",
    ),
    (
        dict(
            selection__scorer="random",
            selection__dynamic_sampling_rounds=2,
            selection__dynamic_sampling_band=(-0.1, 0.5),
        ),  # below 0
        "selection.dynamic_sampling_band",
    ),
    (
        dict(
            selection__scorer="random",
            selection__dynamic_sampling_rounds=2,
            selection__dynamic_sampling_band=(0.3, 0.35),
        ),  # no S/K of K=4
        "selection.dynamic_sampling_band",
    ),
    (
        dict(
            selection__scorer="random",
            selection__dynamic_sampling_rounds=2,
            selection__dynamic_sampling_band=(0.2, NAN),
        ),  # not finite
        "selection.dynamic_sampling_band",
    ),
    (
        dict(
            selection__scorer="random",
            selection__dynamic_sampling_rounds=2,
            selection__dynamic_sampling_band="wide",
        ),  # not a pair
        "selection.dynamic_sampling_band",
    ),
    (dict(selection__prior="learned"), "selection.prior"),
    (dict(selection__prior="warm_start"), "selection.prior"),  # no train-pool sample to fit on
    (
        dict(selection__prior="warm_start", eval__train_pool_size=8, selection__decay=0.9),
        "selection.prior",
    ),
    (
        dict(
            selection__prior="warm_start",
            eval__train_pool_size=8,
            selection__success_rule="fractional",
        ),
        "selection.prior",
    ),
    (dict(rl__num_rollouts=0), "rl.num_rollouts"),
    (dict(rl__num_rollouts=MAX_ROLLOUTS + 1), "rl.num_rollouts"),
    (dict(rl__max_new_tokens=0), "rl.max_new_tokens"),
    (dict(rl__learning_rate=0.0), "rl.learning_rate"),
    (dict(rl__learning_rate=math.inf), "rl.learning_rate"),
    (dict(rl__weight_decay=-0.1), "rl.weight_decay"),
    (dict(rl__grad_clip=-1.0), "rl.grad_clip"),
    (dict(rl__clip_low=1.0), "rl.clip_low"),
    (dict(rl__clip_high=-0.1), "rl.clip_high"),
    (dict(rl__entropy_coef=-0.001), "rl.entropy_coef"),
    (dict(rl__kl_coef=-0.1), "rl.kl_coef"),
    (dict(rl__kl_kind="k4"), "rl.kl_kind"),
    (dict(rl__lr_schedule="linear"), "rl.lr_schedule"),
    (dict(rl__warmup_steps=-1), "rl.warmup_steps"),
    (dict(rl__normalize_std="yes"), "rl.normalize_std"),
    (dict(rl__rollout_engine="paged"), "rl.rollout_engine"),
    (dict(rl__aggregation="sum"), "rl.aggregation"),
    (dict(rl__num_minibatches=0), "rl.num_minibatches"),
    (dict(rl__num_minibatches=3), "rl.num_minibatches"),  # M*K = 32 rows
    (dict(rl__num_ppo_epochs=0), "rl.num_ppo_epochs"),
    (dict(rl__kl_coef=_DELETE), "rl.kl_coef"),
]


@pytest.mark.parametrize("changes, key", BAD, ids=[f"{k}-{i}" for i, (_, k) in enumerate(BAD)])
def test_bad_values_raise_config_error_naming_the_key(changes, key, devices):
    config = _with(_smoke(), **changes)
    t0 = time.perf_counter()
    with pytest.raises(ConfigError) as err:
        validate_config(config)
    assert time.perf_counter() - t0 < 1.0
    assert err.value.key == key, str(err.value)
    assert isinstance(err.value, ValueError) and f"config {key}=" in str(err.value)


def test_base_of_the_bad_values_is_valid(devices):
    validate_config(_with(_smoke()))  # so each BAD case fails by its own change
    as_lists = [[n, list(t) if isinstance(t, tuple) else t] for n, t in DEFAULT_RULES]
    validate_config(_with(_smoke(), mesh__rules=as_lists))  # rules read back from config.json
    validate_config(_with(_smoke(), rl__steps=0, warmstart__steps=0))  # warm-only / no warm
    validate_config(
        _with(_smoke(), selection__success_rule="fractional", selection__success_threshold=0.5)
    )
    validate_config(_with(_smoke(), eval__temperature=0.0, rl__grad_clip=0.0))  # greedy, no clip
    validate_config(
        _with(
            _smoke(),
            mesh__shape=(2, 4),
            mesh__axes=("data", "tensor"),
            rl__batch_size=2,
            warmstart__batch_size=2,
            selection__num_candidates=2,
            rl__num_minibatches=1,
        )
    )


def test_countdown_threshold_is_its_max_reward(devices):
    c = countdown_tiny.get_config("smoke")
    validate_config(_with(c, selection__success_threshold=1.0))
    validate_config(_with(c, selection__success_threshold=0.1))  # the format reward counts
    with pytest.raises(ConfigError, match=r"success_threshold=1\.01"):
        validate_config(_with(c, selection__success_threshold=1.01))


# The lead wires validate_config into train_and_evaluate (issue 9): this test passes only then.
def test_train_and_evaluate_validates_before_any_work(tmp_path, devices):
    from insight_jax.rl.train import train_and_evaluate

    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match=r"rl\.batch_size"):
        train_and_evaluate(_with(_smoke(), rl__batch_size=0), tmp_path)
    assert time.perf_counter() - t0 < 10.0
    assert not (tmp_path / "checkpoints").exists()
