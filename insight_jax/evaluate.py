"""Evaluate a policy on held-out sets: avg@n and unbiased pass@k per set.

  python -m insight_jax.evaluate --checkpoint=PATH --eval_paths=NAME=SPEC[,NAME=SPEC...] \\
      [--task=math] [--num_samples=16] [--temperature=0.6] [--top_p=0.95] \\
      [--max_new_tokens=N] [--batch_size=B] [--out=DIR] [--step=S] [--seed=0]

PATH is a run's workdir (its newest intact checkpoint, or --step; tokenizer, prompts, mesh and
response length from the run's config) or a Hugging Face model folder (its weights, tokenizer
and chat template). A SPEC is a file in a public format with an optional row slice,
`countdown.parquet[2000:2512]`; its records are read as --task (default: the run's task, or
"math" for a Hugging Face folder). The defaults are the paper's evaluation: 16 samples at
T = 0.6, top-p 0.95.

Prints a table per set and writes DIR/eval_results.json and DIR/eval_tables.md (DIR defaults to
WORKDIR/evaluations/step_S for a workdir; required for a Hugging Face folder).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
from absl import app, flags, logging

from insight_jax import sharding as shd
from insight_jax.models.tokenizers import encode_batch
from insight_jax.models.transformer import Transformer
from insight_jax.rl.base_config import get_base_config
from insight_jax.rl.evaluate import EvalSet, eval_tables, evaluate_sets, pass_ks
from insight_jax.rl.policy import Policy, initial_model_state, policy_from_config
from insight_jax.rl.rollout import SamplingSettings, make_rollout_engine
from insight_jax.rl.train import restore_run
from insight_jax.rl.validate import as_rules
from insight_jax.tasks import get_task
from insight_jax.tasks.loaders import load_records
from insight_jax.workdir import CONFIG_NAME, write_text_atomic


def parse_eval_paths(text: str) -> dict[str, str]:
    """`name=spec,name=spec` -> {name: spec} (names as in task.eval_paths)."""
    sets: dict[str, str] = {}
    for part in text.split(","):
        name, eq, spec = part.strip().partition("=")
        if not eq or not name.strip() or not spec.strip():
            raise ValueError(f"--eval_paths part {part!r} is not NAME=PATH")
        if name.strip() in sets:
            raise ValueError(f"--eval_paths names {name.strip()!r} twice")
        sets[name.strip()] = spec.strip()
    return sets


def _is_workdir(path: Path) -> bool:
    return (path / CONFIG_NAME).is_file() and (path / "checkpoints").is_dir()


def evaluate_checkpoint(
    checkpoint: str | Path,
    eval_paths: dict[str, str],
    *,
    task: str | None = None,
    num_samples: int = 16,
    temperature: float = 0.6,
    top_p: float = 0.95,
    max_new_tokens: int | None = None,
    batch_size: int = 0,
    step: int | None = None,
    seed: int = 0,
    fmt: str = "auto",
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Evaluates the policy at `checkpoint` (a workdir or a Hugging Face folder) on each set of
    `eval_paths`; returns ({set: avg@n, pass@k, reward, num_problems}, info about the run)."""
    path = Path(checkpoint).expanduser().resolve()
    if _is_workdir(path):
        comps, step, state = restore_run(path, step)
        c, policy, mesh, rules = comps.config, comps.policy, comps.mesh, comps.rules
        graphdef, model_state = comps.graphdef, state.model
        task_name, task_kwargs = task or c.task.name, {}
        if task_name == c.task.name:
            task_kwargs = c.task.kwargs.to_dict()
        max_new_tokens = max_new_tokens or c.rl.max_new_tokens
    elif (path / "config.json").is_file():
        if step is not None:
            raise ValueError("--step applies to a workdir, not a Hugging Face folder")
        if max_new_tokens is None:
            raise ValueError("--max_new_tokens is required for a Hugging Face folder")
        c = get_base_config()
        c.model.path = str(path)
        policy = policy_from_config(c)
        mesh = shd.make_mesh(tuple(c.mesh.shape), tuple(c.mesh.axes))
        rules = as_rules(c.mesh.rules)
        graphdef, _, _ = shd.abstract_sharded_state(Transformer, policy.model_config, mesh, rules)
        model_state = initial_model_state(policy, mesh, rules)
        task_name, task_kwargs = task or "math", {}
    else:
        raise FileNotFoundError(f"{path} is neither a run's workdir nor a Hugging Face folder")
    eval_task = get_task(task_name, **task_kwargs)
    sets = [
        EvalSet(name, eval_task, tuple(load_records(spec, eval_task, fmt=fmt)))
        for name, spec in eval_paths.items()
    ]
    results = _run(
        policy,
        graphdef,
        model_state,
        mesh,
        rules,
        sets,
        SamplingSettings(
            max_new_tokens=max_new_tokens,
            num_samples=num_samples,
            temperature=temperature,
            top_p=top_p,
            eos_ids=policy.tokenizer.eos_ids,
            pad_id=policy.tokenizer.pad_id,
        ),
        rollout_engine=c.rl.rollout_engine,
        batch_size=batch_size,
        seed=seed,
        threshold=c.selection.success_threshold,
    )
    info = {
        "checkpoint": str(path),
        "step": step,
        "task": task_name,
        "num_samples": num_samples,
        "temperature": temperature,
        "top_p": top_p,
        "max_new_tokens": max_new_tokens,
    }
    return results, info


def _run(
    policy: Policy,
    graphdef,
    model_state,
    mesh,
    rules,
    sets,
    settings,
    *,
    rollout_engine,
    batch_size,
    seed,
    threshold,
) -> dict[str, dict[str, Any]]:
    engine = make_rollout_engine(rollout_engine, graphdef, settings, mesh, rules)
    prompt_len = max(  # the longest prompt, BOS included
        int(encode_batch(policy.tokenizer, [policy.prompt(s.task, r) for r in s.records])[1].max())
        for s in sets
    )
    raw = evaluate_sets(
        engine,
        model_state,
        policy.tokenizer,
        sets,
        jax.random.key(seed),
        prompt=policy.prompt,
        prompt_len=prompt_len,
        batch_multiple=shd.batch_size_multiple(mesh, rules),
        batch_size=batch_size,
        success_threshold=threshold,
    )
    n = settings.num_samples
    return {
        name: {
            f"avg@{n}": r["accuracy"],
            **{f"pass@{k}": r[f"pass@{k}"] for k in pass_ks(n)},
            "reward": r["reward"],
            "num_problems": len(s.records),
        }
        for s, (name, r) in zip(sets, raw.items(), strict=True)
    }


FLAGS = flags.FLAGS
flags.DEFINE_string("checkpoint", None, "A run's workdir or a Hugging Face model folder.")
flags.DEFINE_string("eval_paths", None, "NAME=PATH[slice],... held-out files.")
flags.DEFINE_string("task", None, "Task of the eval records (default: the run's, or math).")
flags.DEFINE_integer("num_samples", 16, "Samples per problem (n of avg@n).")
flags.DEFINE_float("temperature", 0.6, "Sampling temperature (0: greedy).")
flags.DEFINE_float("top_p", 0.95, "Nucleus sampling threshold.")
flags.DEFINE_integer("max_new_tokens", None, "Response length (default: the run's).")
flags.DEFINE_integer("batch_size", 0, "Problems per sampling call (0: a whole set).")
flags.DEFINE_integer("step", None, "Checkpoint step of a workdir (default: the newest).")
flags.DEFINE_integer("seed", 0, "Sampling seed.")
flags.DEFINE_string("format", "auto", "File format: auto, json, jsonl, parquet.")
flags.DEFINE_string("out", None, "Folder for eval_results.json and eval_tables.md.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)
    results, info = evaluate_checkpoint(
        FLAGS.checkpoint,
        parse_eval_paths(FLAGS.eval_paths),
        task=FLAGS.task,
        num_samples=FLAGS.num_samples,
        temperature=FLAGS.temperature,
        top_p=FLAGS.top_p,
        max_new_tokens=FLAGS.max_new_tokens,
        batch_size=FLAGS.batch_size,
        step=FLAGS.step,
        seed=FLAGS.seed,
        fmt=FLAGS.format,
    )
    n = FLAGS.num_samples
    rows = [{"step": info["step"] or 0, **_flat(results)}]
    tables = eval_tables(rows, list(results), n)
    print(tables)
    out = FLAGS.out
    if out is None:
        if info["step"] is None:
            raise app.UsageError("--out is required for a Hugging Face folder")
        out = Path(info["checkpoint"]) / "evaluations" / f"step_{info['step']}"
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "eval_results.json", json.dumps({**info, "sets": results}, indent=1))
    write_text_atomic(out / "eval_tables.md", tables)
    print(f"wrote {out / 'eval_results.json'} and {out / 'eval_tables.md'}")


def _flat(results: dict[str, dict[str, Any]]) -> dict[str, float]:
    """The per-set results as eval_<set>_<metric> keys (the trainer's metric names)."""
    return {f"eval_{s}_{k}": v for s, r in results.items() for k, v in r.items()}


if __name__ == "__main__":
    flags.mark_flags_as_required(["checkpoint", "eval_paths"])
    app.run(main)
