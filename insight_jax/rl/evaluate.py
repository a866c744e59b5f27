"""Rewards of sampled completions and held-out evaluation (pass@1 as the mean over k samples)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from insight_jax.models.tokenizers import Tokenizer, decode_batch, encode_batch
from insight_jax.rl.rollout import Rollout, RolloutEngine
from insight_jax.tasks.base import Task


def encode_prompts(
    tokenizer: Tokenizer, texts: Sequence[str], prompt_len: int
) -> tuple[np.ndarray, np.ndarray]:
    """Left-padded prompt tokens [B, prompt_len] (BOS first, if the tokenizer has one) and
    their lengths."""
    return encode_batch(tokenizer, texts, max_len=prompt_len)


def rollout_rewards(
    tokenizer: Tokenizer, task: Task, records: Sequence[dict], rollout: Rollout, k: int
) -> tuple[np.ndarray, list[str]]:
    """Rewards [B, K] of a rollout of K samples per record (row b*K + j is record b), and the
    decoded completions. Verification runs on the host, in pure Python, never evaluating text."""
    tokens, mask = jax.device_get((rollout.tokens, rollout.mask))
    completions = decode_batch(tokenizer, tokens, mask)
    rewards = np.array(
        [task.verify(c, records[i // k]) for i, c in enumerate(completions)], np.float32
    )
    return rewards.reshape(len(records), k), completions


def evaluate(
    engine: RolloutEngine,
    model_state: Any,
    tokenizer: Tokenizer,
    task: Task,
    records: Sequence[dict],
    key: jax.Array,
    *,
    prompt_len: int,
    prompt: Callable[[dict], str] | None = None,
    batch_multiple: int = 1,
    success_threshold: float = 1.0,
) -> dict[str, Any]:
    """pass@1 on held-out records: the mean over the engine's num_samples samples per problem
    of 1[reward >= success_threshold], plus the mean reward and the per-problem success counts.

    `prompt(record)` is the text the policy sees (default: the task's prompt; the trainer
    passes its chat-templated one). The batch is padded (by repeating the last record) to a
    multiple of `batch_multiple` so it splits evenly over the mesh; padded rows are dropped
    before averaging.
    """
    records = list(records)
    pad = (-len(records)) % batch_multiple
    padded = records + [records[-1]] * pad
    prompt = task.prompt if prompt is None else prompt
    tokens, lengths = encode_prompts(tokenizer, [prompt(r) for r in padded], prompt_len)
    rollout = engine.generate(model_state, tokens, lengths, key)
    k = engine.settings.num_samples
    rewards, _ = rollout_rewards(tokenizer, task, padded, rollout, k)
    rewards = rewards[: len(records)]
    solved = rewards >= success_threshold
    return {
        "accuracy": float(solved.mean()),
        "reward": float(rewards.mean()),
        "successes": solved.sum(axis=1),
    }
