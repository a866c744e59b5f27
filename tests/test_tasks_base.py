"""Shared task pieces: the last-complete-tag rule on long and adversarial texts, max_reward."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from insight_jax.tasks import get_task, list_tasks
from insight_jax.tasks.base import MAX_ANSWER_CHARS, Task, extract_last_tag, register_task

# A safety net only (linear scans of a few MB take milliseconds); the values are the real check.
MAX_SECONDS = 1.0


def _naive_last_tag(text: str, tag: str = "answer", limit: int = MAX_ANSWER_CHARS) -> str | None:
    """Reference of the documented rule by brute force: of every ``<tag>`` that has a ``</tag>``
    after it, the last one; its content runs to the first ``</tag>`` after it. Quadratic."""
    open_tag, close_tag = f"<{tag}>", f"</{tag}>"
    found = None
    for i in range(len(text)):
        if text.startswith(open_tag, i):
            start = i + len(open_tag)
            for j in range(start, len(text)):
                if text.startswith(close_tag, j):
                    found = (start, j)
                    break
    if found is None:
        return None
    start, end = found
    return None if end - start > limit else text[start:end].strip()


A, C = "<answer>", "</answer>"
MB = 1_000_000

_LONG_CASES = [
    # Unclosed openings, lone closings, and the answer before or after them.
    pytest.param(A * (MB // 8), "answer", None, id="opens"),
    pytest.param(C * (MB // 9), "answer", None, id="closes"),
    pytest.param("<answer>7</answer>" + A * (MB // 8), "answer", "7", id="answer-then-opens"),
    pytest.param("<answer>7</answer>" + C * (MB // 9), "answer", "7", id="answer-then-closes"),
    pytest.param(A * (MB // 16) + "7" + C * (MB // 18), "answer", "7", id="nested"),
    # The answer of a long reasoning trace is found wherever it is.
    pytest.param("x" * MB + "<answer>7</answer>" + "y" * MB, "answer", "7", id="middle"),
    pytest.param("<answer>7</answer>" + "y" * (5 * MB), "answer", "7", id="start"),
    pytest.param("😀" * MB + "<answer>7</answer>" + "é" * MB, "answer", "7", id="unicode"),
    # Interleaved pairs: the last complete tag is empty.
    pytest.param((A + C) * (MB // 17), "answer", "", id="pairs"),
    pytest.param("<answer>7</answer>" + (C + A) * (MB // 17), "answer", "", id="close-open"),
    pytest.param(("<answer><answer>7</answer>" + "z" * 9) * (MB // 35), "answer", "7", id="groups"),
    # Over-long contents are malformed, also when an earlier tag was fine.
    pytest.param(A + "9" * MB + C, "answer", None, id="huge-content"),
    pytest.param("<answer>7</answer>" + A + "x" * 200 + C, "answer", None, id="last-too-long"),
    pytest.param(A + " " * 200 + "7" + C, "answer", None, id="padded-over-bound"),
    pytest.param(A + " " * 60 + "7" + " " * 60 + C, "answer", "7", id="padded-within-bound"),
    # A one-letter tag: many "<a>" / "</a>".
    pytest.param("<a>" * (MB // 3), "a", None, id="a-opens"),
    pytest.param("</a>" * (MB // 4), "a", None, id="a-closes"),
    pytest.param("<a>1</a>" + "<a>" * (MB // 3), "a", "1", id="a-answer-then-opens"),
    pytest.param("<a>" * (MB // 6) + "2" + "</a>" * (MB // 8), "a", "2", id="a-nested"),
]


@pytest.mark.parametrize(("text", "tag", "expected"), _LONG_CASES)
def test_last_complete_tag_in_megabytes_of_garbage(text, tag, expected):
    start = time.perf_counter()
    got = extract_last_tag(text, tag)
    seconds = time.perf_counter() - start
    assert got == expected
    assert seconds < MAX_SECONDS, f"{seconds:.2f} s on {len(text)} characters"


_PIECES = ["<answer>", "</answer>", "<answer", "answer>", "</", "<", ">", "a", " ", "7", "\n"]


@pytest.mark.parametrize("seed", range(5))
def test_matches_brute_force_reference_on_random_tag_soup(seed):
    rng = np.random.default_rng(seed)
    for trial in range(400):
        pieces = rng.choice(_PIECES, size=int(rng.integers(0, 40)))
        text = "".join(pieces)
        limit = int(rng.integers(0, 20))
        assert extract_last_tag(text, max_content_chars=limit) == _naive_last_tag(
            text, limit=limit
        ), f"seed={seed} trial={trial} text={text!r} limit={limit}"


def test_hand_cases_of_the_rule():
    assert extract_last_tag("<answer>1<answer>2</answer>") == "2"
    assert extract_last_tag("<answer>1</answer><answer>2") == "1"
    assert extract_last_tag("<answer>1</answer> and <answer>2</answer>") == "2"
    assert extract_last_tag("<answer>1<answer>2</answer></answer>") == "2"
    assert extract_last_tag("</answer><answer>") is None
    assert extract_last_tag("<answer>\n 12 \t</answer>") == "12"
    assert extract_last_tag("x" * MAX_ANSWER_CHARS) is None
    assert extract_last_tag(A + "x" * MAX_ANSWER_CHARS + C) == "x" * MAX_ANSWER_CHARS
    assert extract_last_tag(A + "x" * (MAX_ANSWER_CHARS + 1) + C) is None
    for not_text in (None, 7, b"<answer>1</answer>", ["<answer>1</answer>"]):
        assert extract_last_tag(not_text) is None


# --- max_reward -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["countdown", "arithmetic"])
def test_builtin_tasks_declare_their_largest_reward(name):
    assert name in list_tasks()
    task = get_task(name)
    assert task.max_reward == 1.0
    for record in task.generate(50, seed=0):
        assert task.verify(task.reference_completion(record), record) == 1.0


class _Sketch(Task):
    """A task with the abstract methods filled in, to test registration."""

    name = "sketch"

    def generate(self, num_items, seed, split="train"):
        return [{"index": i} for i in range(num_items)]

    def prompt(self, record):
        return ""

    def reference_completion(self, record):
        return ""

    def verify(self, completion, record):
        return 0.0


@pytest.mark.parametrize("bad", [None, 0.0, -1.0, math.nan, math.inf, True, "1.0"])
def test_register_task_requires_a_finite_positive_max_reward(bad):
    attrs = {} if bad is None else {"max_reward": bad}
    cls = type("Bad", (_Sketch,), attrs)
    with pytest.raises(ValueError, match="max_reward"):
        register_task(f"test-bad-max-reward-{bad!r}")(cls)
    assert f"test-bad-max-reward-{bad!r}" not in list_tasks()
