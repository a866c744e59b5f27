"""Evaluate a policy on held-out sets: avg@n and unbiased pass@k per set.

  python -m insight_jax.evaluate --checkpoint=PATH --eval_paths=NAME=SPEC[,NAME=SPEC...] \\
      [--task=math] [--num_samples=16] [--temperature=0.6] [--top_p=0.95] \\
      [--task_kwargs=JSON] [--max_new_tokens=N] [--batch_size=B] [--out=DIR] [--step=S] \\
      [--seed=0] [--dtype=bfloat16]

PATH is a run's workdir (its newest intact checkpoint, or --step; tokenizer, prompts, mesh and
response length from the run's config) or a Hugging Face model folder (its weights, tokenizer
and chat template). A SPEC is a file in a public format with an optional row slice,
`countdown.parquet[2000:2512]`; its records are read as --task (default: the run's task, or
"math" for a Hugging Face folder) with --task_kwargs (default: the run's for its own task, else
none: Countdown on a real model wants '{"prompt_style": "base"}'). The defaults are the paper's
evaluation: 16 samples at T = 0.6, top-p 0.95. A Hugging Face folder is evaluated in float32
(--dtype=bfloat16 for large models) on a mesh of every device on one data axis.

Prints a table per set and writes DIR/eval_results.json and DIR/eval_tables.md (DIR defaults to
WORKDIR/evaluations/step_S for a workdir; required for a Hugging Face folder).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from absl import app, flags, logging

from insight_jax.workdir import write_text_atomic


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


FLAGS = flags.FLAGS
flags.DEFINE_string("checkpoint", None, "A run's workdir or a Hugging Face model folder.")
flags.DEFINE_string("eval_paths", None, "NAME=PATH[slice],... held-out files.")
flags.DEFINE_string("task", None, "Task of the eval records (default: the run's, or math).")
flags.DEFINE_string(
    "task_kwargs",
    None,
    'Task arguments as JSON, e.g. \'{"prompt_style": "base"}\' (default: '
    "the run's, for its task; else none).",
)
flags.DEFINE_enum(
    "dtype", None, ["float32", "bfloat16", "float16"], "Compute dtype of a Hugging Face folder."
)
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
    # Imported here, not at the top: multiprocessing runs this module again in every verifier
    # worker it starts (insight_jax/tasks/verifier_pool.py), which must not import jax.
    checkpoint = Path(FLAGS.checkpoint)
    is_workdir = (checkpoint / "checkpoints").is_dir()
    if FLAGS.out is None and not is_workdir:  # before any work, not after hours of sampling
        raise app.UsageError("--out is required for a Hugging Face folder")
    task_kwargs = json.loads(FLAGS.task_kwargs) if FLAGS.task_kwargs else None
    if task_kwargs is not None and not isinstance(task_kwargs, dict):
        raise app.UsageError("--task_kwargs must be a JSON object")
    sets = parse_eval_paths(FLAGS.eval_paths)
    from insight_jax.rl.eval_checkpoint import evaluate_checkpoint
    from insight_jax.rl.evaluate import eval_tables

    results, info = evaluate_checkpoint(
        checkpoint,
        sets,
        task=FLAGS.task,
        task_kwargs=task_kwargs,
        dtype=FLAGS.dtype,
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
    out = FLAGS.out or Path(info["checkpoint"]) / "evaluations" / f"step_{info['step']}"
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
