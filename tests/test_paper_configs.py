"""The paper's configs: its settings (METHOD.md), their smoke variants, and a run end to end from
a tiny Hugging Face checkpoint on tiny files in the public formats, evaluated per held-out set
in the trainer and by `python -m insight_jax.evaluate`."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from configs import (
    qwen3_0_6b_countdown,
    qwen3_0_6b_deepscaler,
    qwen3_0_6b_webinstruct,
    qwen3_4b_deepscaler,
    r1_distill_qwen_7b_deepscaler,
)
from insight_jax.rl.validate import ConfigError, validate_config

ROOT = Path(__file__).resolve().parents[1]
MATH = (qwen3_0_6b_deepscaler, qwen3_4b_deepscaler, r1_distill_qwen_7b_deepscaler)
ALL = (qwen3_0_6b_countdown, *MATH, qwen3_0_6b_webinstruct)
MODELS = {
    qwen3_0_6b_countdown: "Qwen3-0.6B",
    qwen3_0_6b_deepscaler: "Qwen3-0.6B",
    qwen3_4b_deepscaler: "Qwen3-4B",
    r1_distill_qwen_7b_deepscaler: "DeepSeek-R1-Distill-Qwen-7B",
    qwen3_0_6b_webinstruct: "Qwen3-0.6B",
}


@pytest.mark.parametrize("module", ALL, ids=lambda m: m.__name__.split(".")[-1])
def test_paper_settings(module):
    c = module.get_config("data_dir=/data")
    # METHOD.md, "Paper's training/eval settings".
    assert (c.rl.steps, c.rl.batch_size, c.rl.num_rollouts) == (100, 256, 8)
    assert (c.rl.temperature, c.rl.top_p) == (1.0, 1.0)
    assert (c.rl.learning_rate, c.rl.weight_decay, c.rl.grad_clip) == (1e-6, 0.1, 1.0)
    assert (c.rl.clip_low, c.rl.clip_high, c.rl.entropy_coef, c.rl.kl_coef) == (
        0.2,
        0.28,
        0.001,
        0.0,
    )
    assert c.rl.aggregation == "token_mean" and c.rl.num_ppo_epochs == 1
    minibatch = 64 if module is qwen3_0_6b_countdown else 128  # prompts per PPO mini-batch
    assert c.rl.num_minibatches * minibatch == 256
    assert c.selection.scorer == "insight" and c.selection.num_candidates == 16 * 256
    assert c.selection.decay == 1.0 and (c.selection.alpha0, c.selection.beta0) == (1.0, 1.0)
    assert c.selection.params.insight.to_dict() == {"eta": 3.0, "mu": 0.3}
    assert (c.eval.num_samples, c.eval.temperature, c.eval.top_p) == (16, 0.6, 0.95)
    assert c.warmstart.steps == 0
    assert c.model.path == f"models/{MODELS[module]}"
    assert c.model.dtype == "bfloat16" and c.model.param_dtype == "float32"
    if module is qwen3_0_6b_countdown:
        # Countdown-Tasks-3to4, rows 0-1999 train and 2000-2511 test (MoPPS's split).
        assert c.task.train_path == "/data/countdown/train-00000-of-00001.parquet[:2000]"
        assert c.task.eval_paths.to_dict() == {
            "countdown": "/data/countdown/train-00000-of-00001.parquet[2000:2512]"
        }
        assert (c.task.max_prompt_len, c.rl.max_new_tokens) == (256, 1024)
    elif module is qwen3_0_6b_webinstruct:
        assert c.task.name == "math" and c.task.train_path == "/data/webinstruct/train.parquet"
        assert {k: v["task"] for k, v in c.task.eval_paths.items()} == {
            "mmlu": "multiple_choice",
            "gpqa": "multiple_choice",
        }
    else:
        assert c.task.name == "math"
        assert c.task.train_path == "/data/deepscaler/train/deepscaler.json"
        assert set(c.task.eval_paths) == {"aime24", "amc23", "math500", "minerva", "olympiad"}
        assert (c.task.max_prompt_len, c.rl.max_new_tokens) == (1024, 8192)
    assert module.get_config("mopps,data_dir=/data").selection.scorer == "mopps"


def test_full_config_without_files_is_a_config_error(tmp_path):
    c = qwen3_0_6b_deepscaler.get_config(f"data_dir={tmp_path}")
    with pytest.raises(ConfigError, match=r"model\.path|task\.train_path"):
        validate_config(c)


@pytest.fixture(scope="module")
def smoke_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("smoke")


@pytest.mark.parametrize("module", ALL, ids=lambda m: m.__name__.split(".")[-1])
def test_smoke_configs_validate(module, smoke_dir, devices):
    c = module.get_config(f"smoke,smoke_dir={smoke_dir}")
    validate_config(c)
    assert Path(c.model.path, "config.json").is_file()


def test_train_then_evaluate_end_to_end(smoke_dir, tmp_path, devices):
    """A tiny HF checkpoint trains on a tiny DeepScaleR-format file; the trainer and the
    standalone evaluator report avg@k on a tiny MATH500-format file and a tiny Countdown
    parquet."""
    from insight_jax.rl import train

    c = qwen3_0_6b_deepscaler.get_config(f"smoke,smoke_dir={smoke_dir}")
    data = Path(c.task.train_path).parents[2]
    cd = str(data / "countdown/train-00000-of-00001.parquet[32:40]")
    c.task.eval_paths = {
        "math500": str(data / "math500/test.jsonl"),
        "countdown": {"path": cd, "task": "countdown", "kwargs": {"prompt_style": "base"}},
    }
    workdir = tmp_path / "run"
    summary = train.train_and_evaluate(c, workdir, log=lambda m: None)
    n = c.eval.num_samples
    assert set(summary["eval"]) == {"math500", "countdown"}
    for result in summary["eval"].values():
        assert set(result) == {f"avg@{n}", "pass@1", "pass@2", f"pass@{n}", "reward"}
        assert 0.0 <= result["pass@1"] <= result[f"pass@{n}"] <= 1.0
        assert result["pass@1"] == pytest.approx(result[f"avg@{n}"])
    tables = (workdir / "eval_tables.md").read_text()
    assert "## math500" in tables and "## countdown" in tables
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    final = [r for r in rows if "eval_accuracy" in r][-1]
    assert final["eval_accuracy"] == pytest.approx(
        (final[f"eval_math500_avg@{n}"] + final[f"eval_countdown_avg@{n}"]) / 2
    )
    assert json.loads((workdir / "data/sources.json").read_text()).keys() == {
        "train",
        "eval/math500",
        "eval/countdown",
    }

    # Standalone, on the workdir (its task: math) and on the Hugging Face folder.
    def evaluate(*flags):
        return subprocess.run(
            [sys.executable, "-m", "insight_jax.evaluate", "--num_samples=2", *flags],
            capture_output=True,
            text=True,
            env={**os.environ, "HF_HUB_OFFLINE": "1", "XLA_FLAGS": ""},
            cwd=ROOT,
            timeout=600,
        )

    out = evaluate(f"--checkpoint={workdir}", f"--eval_paths=m500={data}/math500/test.jsonl")
    assert out.returncode == 0, out.stderr[-3000:]
    saved = json.loads((workdir / "evaluations/step_3/eval_results.json").read_text())
    assert saved["step"] == 3 and saved["sets"]["m500"]["num_problems"] == 8
    out = evaluate(
        f"--checkpoint={c.model.path}",
        "--task=countdown",
        '--task_kwargs={"prompt_style": "base"}',
        "--max_new_tokens=8",
        f"--eval_paths=cd={cd}",
        f"--out={tmp_path / 'hf_eval'}",
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "## cd" in out.stdout
    saved = json.loads((tmp_path / "hf_eval/eval_results.json").read_text())
    assert saved["sets"]["cd"]["num_problems"] == 8 and saved["task"] == "countdown"
    assert saved["task_kwargs"] == {"prompt_style": "base"}
    # Without --out, a Hugging Face folder is refused before anything is loaded or sampled.
    out = evaluate(f"--checkpoint={c.model.path}", f"--eval_paths=cd={cd}")
    assert out.returncode != 0 and "--out is required" in out.stderr


def test_data_keys_are_validated_before_any_work(smoke_dir, tmp_path, devices):
    base = qwen3_0_6b_deepscaler.get_config(f"smoke,smoke_dir={smoke_dir}")
    data = Path(base.task.train_path).parents[2]
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    math500 = str(data / "math500/test.jsonl")
    cases = [
        (dict(num_train=5), "task.num_train"),
        (dict(num_test=5), "task.num_test"),
        (dict(eval_paths={}), "task.eval_paths"),
        (dict(eval_paths={"bad name": math500}), "task.eval_paths"),
        (dict(eval_paths={"m": {"path": math500, "colour": 1}}), "task.eval_paths"),
        (dict(eval_paths={"m": math500 + "[5:2]"}), "task.eval_paths"),
        (dict(eval_paths={"m": {"path": math500, "task": "nope"}}), "task.eval_paths.m"),
        (dict(eval_paths={"m": str(tmp_path / "missing.jsonl")}), "task.eval_paths.m"),
        (dict(eval_paths={"m": str(empty)}), "task.eval_paths.m"),
        (dict(train_path=str(tmp_path / "missing.json")), "task.train_path"),
        (dict(train_path=str(data / "math500/test.jsonl[8:]")), "task.train_path"),
        (dict(format="csv"), "task.format"),
        (dict(eval_paths={"m": f"{base.task.train_path}[40:]"}), "task.eval_paths.m"),  # overlap
        (dict(train_path="", num_train=8, num_test=8), "task.eval_paths"),  # files need a pool
        (dict(train_path="", eval_paths={}, num_train=8, num_test=8), "task.train_path"),
    ]
    for changes, key in cases:
        c = qwen3_0_6b_deepscaler.get_config(f"smoke,smoke_dir={smoke_dir}")
        with c.unlocked():
            for k, v in changes.items():
                c.task[k] = v
        with pytest.raises(ConfigError) as e:
            validate_config(c)
        assert e.value.key == key, (changes, e.value)
    # A disjoint warm start generates problems, which a file-backed pool cannot; the train-pool
    # sample's name must not shadow a held-out set's.
    for changes, key in [
        (dict(warmstart__pool="disjoint"), "warmstart.pool"),
        (
            dict(eval__train_pool_size=4, task__eval_paths={"train_pool": math500}),
            "eval.train_pool_size",
        ),
    ]:
        c = qwen3_0_6b_deepscaler.get_config(f"smoke,smoke_dir={smoke_dir}")
        with c.unlocked():
            for k, v in changes.items():
                block, field = k.split("__")
                c[block][field] = v
        with pytest.raises(ConfigError) as e:
            validate_config(c)
        assert e.value.key == key, (changes, e.value)


def test_a_changed_data_file_is_refused_on_resume(smoke_dir, tmp_path, devices):
    import shutil

    from insight_jax.rl import train

    c = qwen3_0_6b_countdown.get_config(f"smoke,smoke_dir={smoke_dir}")
    data = tmp_path / "data"
    shutil.copytree(Path(c.task.train_path.split("[")[0]).parent, data)
    parquet = data / "train-00000-of-00001.parquet"
    c.task.train_path = f"{parquet}[:32]"
    c.task.eval_paths = {"countdown": f"{parquet}[32:40]"}
    c.rl.steps = 1
    train.train_and_evaluate(c, tmp_path / "run", log=lambda m: None)
    import pyarrow.parquet as pq

    table = pq.read_table(parquet)
    pq.write_table(table.slice(0, 47), parquet)  # one row fewer: other bytes, same selection
    with pytest.raises(RuntimeError, match="changed since it started"):
        train.train_and_evaluate(c, tmp_path / "run", log=lambda m: None)


def test_a_prompt_longer_than_max_prompt_len_is_refused_at_build(smoke_dir, tmp_path, devices):
    from insight_jax.rl import setup

    c = qwen3_0_6b_countdown.get_config(f"smoke,smoke_dir={smoke_dir}")
    c.task.max_prompt_len = 40  # TinyZero's prompt is longer, in any tokenizer
    with pytest.raises(ConfigError, match=r"record \d+ of train has a prompt of") as e:
        setup.build(c, tmp_path)
    assert e.value.key == "task.max_prompt_len"


def test_runs_share_a_pool_dir(smoke_dir, tmp_path, devices):
    from insight_jax.rl import setup

    c = qwen3_0_6b_countdown.get_config(f"smoke,smoke_dir={smoke_dir}")
    c.task.pool_dir = str(tmp_path / "pools")
    first = setup.build(c, tmp_path / "a")
    (pool_dir,) = (tmp_path / "pools").iterdir()  # one pool, keyed by the file's content
    built = (pool_dir / "pool.json").stat().st_mtime_ns
    second = setup.build(c, tmp_path / "b")
    assert list((tmp_path / "pools").iterdir()) == [pool_dir]
    assert (pool_dir / "pool.json").stat().st_mtime_ns == built  # reused, not rebuilt
    assert first.pool[5] == second.pool[5]
    for run in ("a", "b"):  # each run pins the files it read in its own workdir
        assert (tmp_path / run / "data" / "sources.json").is_file()
