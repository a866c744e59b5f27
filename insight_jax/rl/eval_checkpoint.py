"""Evaluate a saved policy (a run's workdir or a Hugging Face folder) on held-out files:
`evaluate_checkpoint`, behind `python -m insight_jax.evaluate` (insight_jax/evaluate.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax

from insight_jax import sharding as shd
from insight_jax.models.tokenizers import encode_batch
from insight_jax.models.transformer import Transformer
from insight_jax.rl.base_config import get_base_config
from insight_jax.rl.engines import make_rollout_engine
from insight_jax.rl.evaluate import EvalSet, evaluate_sets, pass_ks
from insight_jax.rl.policy import Policy, initial_model_state, policy_from_config
from insight_jax.rl.rollout import SamplingSettings
from insight_jax.rl.train import restore_run
from insight_jax.rl.validate import as_rules
from insight_jax.tasks import get_task
from insight_jax.tasks.loaders import load_records
from insight_jax.workdir import CONFIG_NAME


def _is_workdir(path: Path) -> bool:
    return (path / CONFIG_NAME).is_file() and (path / "checkpoints").is_dir()


def evaluate_checkpoint(
    checkpoint: str | Path,
    eval_paths: dict[str, str],
    *,
    task: str | None = None,
    task_kwargs: dict[str, Any] | None = None,
    dtype: str | None = None,
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
    `eval_paths` as records of `task` (default: the run's, or "math") built with `task_kwargs`
    (default: the run's for its own task, else none); `dtype` is the compute dtype of a Hugging
    Face folder (a workdir keeps its run's numerics). Returns ({set: avg@n, pass@k, reward,
    num_problems}, info about the run)."""
    path = Path(checkpoint).expanduser().resolve()
    if _is_workdir(path):
        comps, step, state = restore_run(path, step)
        c, policy, mesh, rules = comps.config, comps.policy, comps.mesh, comps.rules
        graphdef, model_state = comps.graphdef, state.model
        if dtype is not None:
            raise ValueError("--dtype applies to a Hugging Face folder; a run keeps its numerics")
        task_name = task or c.task.name
        if task_kwargs is None:
            task_kwargs = c.task.kwargs.to_dict() if task_name == c.task.name else {}
        max_new_tokens = max_new_tokens or c.rl.max_new_tokens
    elif (path / "config.json").is_file():
        if step is not None:
            raise ValueError("--step applies to a workdir, not a Hugging Face folder")
        if max_new_tokens is None:
            raise ValueError("--max_new_tokens is required for a Hugging Face folder")
        c = get_base_config()
        c.model.path = str(path)
        c.model.dtype = dtype or c.model.dtype
        policy = policy_from_config(c)
        mesh = shd.make_mesh(tuple(c.mesh.shape), tuple(c.mesh.axes))
        rules = as_rules(c.mesh.rules)
        graphdef, _, _ = shd.abstract_sharded_state(Transformer, policy.model_config, mesh, rules)
        model_state = initial_model_state(policy, mesh, rules)
        task_name, task_kwargs = task or "math", task_kwargs or {}
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
        num_slots=c.rl.rollout_slots,
        batch_size=batch_size,
        seed=seed,
        threshold=c.selection.success_threshold,
    )
    info = {
        "task_kwargs": task_kwargs,
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
    num_slots,
    batch_size,
    seed,
    threshold,
) -> dict[str, dict[str, Any]]:
    engine = make_rollout_engine(
        rollout_engine, graphdef, settings, mesh, rules, num_slots=num_slots
    )
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
        sharding=shd.data_sharding(mesh, rules),
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
