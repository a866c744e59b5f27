"""Held-out evaluation: the unbiased pass@k estimator, batching over sets, metrics and tables."""

import itertools
import math
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from insight_jax.models.tokenizers import CharTokenizer
from insight_jax.rl.evaluate import (
    EvalSet,
    eval_metrics,
    eval_tables,
    evaluate,
    evaluate_sets,
    pass_at_k,
    pass_ks,
)
from insight_jax.tasks.base import Task

# The batch's sharding: one device (the engine below runs no model).
BATCH = NamedSharding(Mesh(np.array(jax.devices()[:1]), ("data",)), PartitionSpec("data"))


def test_pass_at_k_equals_the_binomial_closed_form():
    rng = np.random.default_rng(0)
    for _ in range(300):
        n = int(rng.integers(1, 200))
        k = int(rng.integers(1, n + 1))
        c = rng.integers(0, n + 1, size=5)
        expected = [1 - math.comb(n - int(ci), k) / math.comb(n, k) for ci in c]
        np.testing.assert_allclose(pass_at_k(n, c, k), expected, rtol=1e-10, atol=1e-12)


def test_pass_at_k_is_the_subset_probability():
    # Brute force over every k-subset of n samples of which the first c are correct.
    for n in range(1, 8):
        for c in range(n + 1):
            for k in range(1, n + 1):
                subsets = list(itertools.combinations(range(n), k))
                hit = sum(any(i < c for i in s) for s in subsets) / len(subsets)
                assert pass_at_k(n, c, k) == pytest.approx(hit, abs=1e-12)


def test_pass_at_one_is_the_mean_and_bad_arguments_raise():
    c = np.array([0, 3, 16, 7])
    np.testing.assert_allclose(pass_at_k(16, c, 1), c / 16)
    assert pass_ks(16) == [1, 2, 4, 8, 16] and pass_ks(12) == [1, 2, 4, 8, 12] and pass_ks(1) == [1]
    for n, c, k in [(4, 1, 5), (4, 5, 1), (4, -1, 1), (4, 1, 0)]:
        with pytest.raises(ValueError):
            pass_at_k(n, c, k)


class EchoTask(Task):
    """Prompt "#<index>;"; sample j of a record is correct iff it echoes the record's own prompt
    followed by j, and j < the record's "solved" (so a record has min(solved, K) successes)."""

    name = "echo"
    max_reward = 1.0

    def generate(self, num_items, seed, split="train"):
        raise NotImplementedError

    def prompt(self, record):
        return f"#{record['index']};"

    def reference_completion(self, record):
        return self.prompt(record)

    def verify(self, completion, record):
        head, j = completion[:-1], completion[-1:]
        return float(
            head.endswith(self.prompt(record)) and j.isdigit() and int(j) < record["solved"]
        )


class EchoEngine:
    """A rollout engine without a model: sample j of a prompt echoes the prompt followed by the
    digit j. It checks that row b*K + j is scored against record b, and counts the batches."""

    def __init__(self, num_samples, tokenizer):
        self.settings = types.SimpleNamespace(num_samples=num_samples)
        self.tok = tokenizer
        self.batches = []

    def generate(self, model_state, tokens, lengths, key):
        tokens = np.asarray(tokens)
        self.batches.append(tokens.shape[0])
        k = self.settings.num_samples
        digits = np.array([self.tok.encode(str(j))[0] for j in range(k)], tokens.dtype)
        rows = np.repeat(tokens, k, axis=0)
        rows = np.concatenate([rows, np.tile(digits, tokens.shape[0])[:, None]], axis=1)
        return types.SimpleNamespace(
            tokens=jnp.asarray(rows), mask=jnp.asarray(rows != self.tok.pad_id)
        )


def test_evaluate_batches_every_record_once_and_drops_padding():
    tok, k = CharTokenizer(), 3
    records = [{"index": i, "solved": i % (k + 1)} for i in range(10)]  # 0..3 successes
    successes = np.array([min(r["solved"], k) for r in records])
    for batch_size, multiple, calls in [(0, 1, [10]), (4, 1, [4, 4, 4]), (3, 2, [4, 4, 4])]:
        engine = EchoEngine(k, tok)
        result = evaluate(
            engine,
            None,
            tok,
            EchoTask(),
            records,
            np.zeros(2, np.uint32),
            prompt_len=8,
            sharding=BATCH,
            batch_size=batch_size,
            batch_multiple=multiple,
        )
        assert engine.batches == calls
        np.testing.assert_array_equal(result["successes"], successes)
        assert result["accuracy"] == pytest.approx(successes.sum() / (k * len(records)))
        assert result["spread"] == pytest.approx(np.mean((successes > 0) & (successes < k)))
        expected = [1 - math.comb(k - c, 2) / math.comb(k, 2) for c in successes]
        assert result["pass@2"] == pytest.approx(np.mean(expected))


def test_eval_metrics_macro_average_and_tables():
    tok = CharTokenizer()
    sets = [
        EvalSet("a", EchoTask(), tuple({"index": i, "solved": 2} for i in range(4))),
        EvalSet("b", EchoTask(), tuple({"index": i, "solved": 2 * (i == 0)} for i in range(2))),
    ]
    results = evaluate_sets(
        EchoEngine(2, tok),
        None,
        tok,
        sets,
        np.zeros(2, np.uint32),
        prompt=lambda task, r: task.prompt(r),
        prompt_len=8,
        sharding=BATCH,
    )
    m = eval_metrics(results, 2)
    assert m["eval_a_avg@2"] == 1.0 and m["eval_b_avg@2"] == 0.5
    assert m["eval_accuracy"] == pytest.approx(0.75)  # each set counts once, not per problem
    assert m["eval_b_pass@2"] == 0.5 and m["eval_b_reward"] == 0.5
    table = eval_tables([{"step": 7, **m}], ["a", "b"], 2)
    assert "## a" in table and "## b" in table
    assert "| 7 | 100.00 | 100.00 | 100.00 | 1.0000 |" in table
    assert "| 7 | 50.00 | 50.00 | 50.00 | 0.5000 |" in table
