"""Rewards of sampled completions and held-out evaluation: avg@n and unbiased pass@k per set.

An evaluation samples n completions per problem (``eval.num_samples``; the paper's n = 16 at
T = 0.6, top-p 0.95) and reports, per held-out set:

* ``avg@n``: pass@1 as the mean over the n samples of 1[reward >= threshold] (the paper's metric);
* ``pass@k`` for k = 1, 2, 4, ... <= n and k = n: the unbiased estimator :func:`pass_at_k`;
* ``reward``: the mean reward, and ``spread``: the share of problems with mixed outcomes.

The macro average over the sets (each set counts once, as the paper's "Avg" column) is the
run's ``eval_accuracy``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import NamedSharding

from insight_jax.models.tokenizers import Tokenizer, decode_batch, encode_batch
from insight_jax.rl.host_data import gather_rows, local_rows, local_values, to_global
from insight_jax.rl.rollout import Rollout, RolloutEngine
from insight_jax.tasks.base import Task


@dataclasses.dataclass(frozen=True)
class EvalSet:
    """A set evaluated during training: its name (metric keys use it), the task that prompts and
    verifies its records, and the records. `held_out` False marks a sample of the training pool
    (`eval.train_pool_size`): measured like the others, never part of the macro averages."""

    name: str
    task: Task
    records: tuple[dict, ...]
    held_out: bool = True


def pass_at_k(n: int, correct: np.ndarray | int, k: int) -> np.ndarray:
    """Unbiased pass@k of problems with `correct` successes among `n` samples each.

        pass@k = 1 - C(n - c, k) / C(n, k)

    (the probability that k samples drawn without replacement from the n contain a success;
    Chen et al. 2021, "Evaluating Large Language Models Trained on Code"). Computed as
    1 - prod_{i = n-c+1}^{n} (1 - k / i), which avoids the huge binomials; it is 1 when
    n - c < k (every k-subset holds a success). pass@1 = c / n, the mean over the samples.

    Raises:
      ValueError: unless 1 <= k <= n and 0 <= c <= n.
    """
    c = np.asarray(correct, dtype=np.int64)
    if not 1 <= k <= n or np.any(c < 0) or np.any(c > n):
        raise ValueError(f"pass@k needs 1 <= k <= n and 0 <= c <= n; got n={n}, k={k}")
    factors = 1.0 - k / np.arange(1, n + 1, dtype=np.float64)  # 1 - k/i, i = 1..n
    # suffix[j] = prod_{i > j} (1 - k/i): the factor of i = k is 0, so every product reaching
    # below i = k (n - c < k) is exactly 0 and the negative factors of i < k never matter.
    suffix = np.concatenate([np.cumprod(factors[::-1])[::-1], [1.0]])
    return 1.0 - suffix[n - c]


def pass_ks(n: int) -> list[int]:
    """The k reported for n samples: powers of two below n, and n."""
    ks, k = [], 1
    while k < n:
        ks.append(k)
        k *= 2
    return [*ks, n]


def encode_prompts(
    tokenizer: Tokenizer, texts: Sequence[str], prompt_len: int
) -> tuple[np.ndarray, np.ndarray]:
    """Left-padded prompt tokens [B, prompt_len] (BOS first, if the tokenizer has one) and
    their lengths."""
    return encode_batch(tokenizer, texts, max_len=prompt_len)


def rollout_rewards(
    tokenizer: Tokenizer,
    task: Task,
    records: Mapping[int, dict],
    rollout: Rollout,
    k: int,
    num_prompts: int,
) -> np.ndarray:
    """Rewards [B, K] of a rollout of K samples for each of B = num_prompts prompts (row b*K + j
    is prompt b), on every process.

    Each process decodes and verifies only the rows its devices hold (the task's verify_batch:
    bounded parsers, or worker processes; never evaluating text), for which `records` holds
    the prompt's record (prompt row -> record: this process's rows suffice); the rewards, M*K
    floats, are then gathered.
    """
    rows, tokens = local_values(rollout.tokens)
    _, mask = local_values(rollout.mask)
    completions = decode_batch(tokenizer, tokens, mask)
    targets = [records[int(r) // k] for r in rows]
    local = np.asarray(task.verify_batch(completions, targets), np.float32)
    return gather_rows(rows, local, num_prompts * k).reshape(num_prompts, k)


def generate_for(
    engine: RolloutEngine,
    model_state: Any,
    tokenizer: Tokenizer,
    records: Callable[[int], dict],
    num_prompts: int,
    prompt: Callable[[dict], str],
    prompt_len: int,
    sharding: NamedSharding,
    key: jax.Array,
) -> tuple[Rollout, dict[int, dict]]:
    """Rolls out the prompts of a batch of `num_prompts` records (`records(b)` is row b's):
    this process fetches, renders and encodes only the rows its devices hold (`sharding` of
    the batch), and the engine gets global arrays. Returns the rollout and {row: record} of
    this process's rows (what :func:`rollout_rewards` needs)."""
    rows = local_rows(sharding, num_prompts)
    mine = {int(r): records(int(r)) for r in rows}
    tokens, lengths = encode_prompts(tokenizer, [prompt(mine[int(r)]) for r in rows], prompt_len)
    tokens = to_global(tokens, rows, sharding, num_prompts)
    lengths = to_global(lengths, rows, sharding, num_prompts)
    return engine.generate(model_state, tokens, lengths, key), mine


def evaluate(
    engine: RolloutEngine,
    model_state: Any,
    tokenizer: Tokenizer,
    task: Task,
    records: Sequence[dict],
    key: jax.Array,
    *,
    prompt_len: int,
    sharding: NamedSharding,
    prompt: Callable[[dict], str] | None = None,
    batch_multiple: int = 1,
    batch_size: int = 0,
    success_threshold: float = 1.0,
) -> dict[str, Any]:
    """Samples the engine's n = num_samples completions per record and scores them.

    Returns avg@n (key "accuracy": the mean over problems and samples of 1[reward >=
    success_threshold]), pass@k for k in pass_ks(n), the mean reward, the spread (share of
    problems solved by some but not all samples) and the per-problem success counts.

    `prompt(record)` is the text the policy sees (default: the task's prompt; the trainer
    passes its chat-templated one). Records go through the engine `batch_size` at a time (0:
    all at once); every batch is padded (repeating its last record) to the same size, a
    multiple of `batch_multiple`, so one compiled sampler serves them all and each splits
    evenly over the mesh (`sharding`: the batch's; each process handles its own rows, see
    :func:`generate_for`). Padded rows are dropped before averaging. Batch b samples with
    fold_in(key, b).
    """
    records = list(records)
    if not records:
        raise ValueError("evaluate needs at least one record")
    size = batch_size or len(records)
    size += (-size) % batch_multiple
    prompt = task.prompt if prompt is None else prompt
    n = engine.settings.num_samples
    parts = []
    for b, start in enumerate(range(0, len(records), size)):
        chunk = records[start : start + size]
        rollout, mine = generate_for(
            engine,
            model_state,
            tokenizer,
            lambda i, chunk=chunk: chunk[min(i, len(chunk) - 1)],  # padded with the last
            size,
            prompt,
            prompt_len,
            sharding,
            jax.random.fold_in(key, b),
        )
        rewards = rollout_rewards(tokenizer, task, mine, rollout, n, size)
        parts.append(rewards[: len(chunk)])
    rewards = np.concatenate(parts)
    solved = rewards >= success_threshold
    successes = solved.sum(axis=1)
    result: dict[str, Any] = {
        "accuracy": float(solved.mean()),
        "reward": float(rewards.mean()),
        "spread": float(np.mean((successes > 0) & (successes < n))),
        "successes": successes,
    }
    for k in pass_ks(n):
        result[f"pass@{k}"] = float(pass_at_k(n, successes, k).mean())
    return result


def evaluate_sets(
    engine: RolloutEngine,
    model_state: Any,
    tokenizer: Tokenizer,
    eval_sets: Sequence[EvalSet],
    key: jax.Array,
    *,
    prompt: Callable[[Task, dict], str],
    **kwargs: Any,
) -> dict[str, dict[str, Any]]:
    """:func:`evaluate` on each set (set i samples with fold_in(key, i)); `prompt(task, record)`
    renders a record of the set's task. Returns {set name: its result}."""
    return {
        s.name: evaluate(
            engine,
            model_state,
            tokenizer,
            s.task,
            s.records,
            jax.random.fold_in(key, i),
            prompt=lambda r, task=s.task: prompt(task, r),
            **kwargs,
        )
        for i, s in enumerate(eval_sets)
    }


def eval_metrics(
    results: dict[str, dict[str, Any]], n: int, held_out: Sequence[str] | None = None
) -> dict[str, float]:
    """Flat metrics of :func:`evaluate_sets`' results: per set `eval_<set>_avg@n`,
    `eval_<set>_pass@k`, `eval_<set>_reward`; and the macro averages over the `held_out` sets
    (default: all) `eval_accuracy` (of avg@n), `eval_reward` and `eval_spread`."""
    metrics: dict[str, float] = {}
    for name, r in results.items():
        metrics[f"eval_{name}_avg@{n}"] = r["accuracy"]
        metrics[f"eval_{name}_reward"] = r["reward"]
        for k in pass_ks(n):
            metrics[f"eval_{name}_pass@{k}"] = r[f"pass@{k}"]
    averaged = [results[name] for name in (results if held_out is None else held_out)]
    for key, field in (("eval_accuracy", "accuracy"), ("eval_reward", "reward")):
        metrics[key] = float(np.mean([r[field] for r in averaged]))
    metrics["eval_spread"] = float(np.mean([r["spread"] for r in averaged]))
    return metrics


def eval_tables(rows: Sequence[dict], set_names: Sequence[str], n: int) -> str:
    """Markdown: one table per held-out set, a row per evaluated step (from metrics rows)."""
    ks = pass_ks(n)
    lines: list[str] = []
    for name in set_names:
        prefix = f"eval_{name}_"
        evals = [r for r in rows if f"{prefix}avg@{n}" in r]
        lines += [f"## {name}", ""]
        lines.append(
            "| step | " + " | ".join([f"avg@{n}", *(f"pass@{k}" for k in ks)]) + " | reward |"
        )
        lines.append("|" + "---|" * (len(ks) + 3))
        for r in evals:
            cells = [r[f"{prefix}avg@{n}"], *(r[f"{prefix}pass@{k}"] for k in ks)]
            cells.append(r[f"{prefix}reward"])
            lines.append(
                f"| {r['step']} | "
                + " | ".join(f"{100 * v:.2f}" for v in cells[:-1])
                + f" | {cells[-1]:.4f} |"
            )
        lines.append("")
    return "\n".join(lines)
