"""Arithmetic task: generation by level, reference answers, the binary reward."""

from __future__ import annotations

import json
import random
import re
import statistics
import time
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from insight_jax.tasks import get_task
from insight_jax.tasks.arithmetic import ArithmeticTask, parse_int
from insight_jax.tasks.base import RecordError

MAX_SECONDS_PER_CALL = 0.05


@pytest.fixture(scope="module")
def task() -> ArithmeticTask:
    return ArithmeticTask()


@pytest.fixture(scope="module")
def train(task):
    return task.generate(4000, seed=0)


def _solve(question: str) -> int:
    """Independent check of a question's answer (no eval)."""
    for op in "+-*":
        if op in question:
            a, b = question.split(op)
            a, b = int(a), int(b)
            return {"+": a + b, "-": a - b, "*": a * b}[op]
    raise AssertionError(question)


def test_records_and_answers(task, train):
    assert [r["index"] for r in train] == list(range(len(train)))
    for r in train:
        task.validate_record(r)
        assert json.loads(json.dumps(r)) == r
        assert int(r["answer"]) == _solve(r["question"]) >= 0
        a, b = (int(x) for x in r["question"].replace("*", "+").replace("-", "+").split("+"))
        assert len(str(a)) == len(str(b)) == r["level"]


def test_prompt_and_reference(task, train):
    record = {"index": 0, "question": "37+45", "answer": "82", "level": 2}
    assert task.prompt(record) == "37+45="
    assert task.reference_completion(record) == "<answer>82</answer>"
    for r in train:
        ref = task.reference_completion(r)
        assert task.verify(ref, r) == 1.0
        assert len(ref) <= 25


def test_generation_is_deterministic_and_splits_disjoint(task, train):
    assert task.generate(4000, seed=0) == train
    assert get_task("arithmetic").generate(100, seed=1) != train[:100]
    train_questions = {r["question"] for r in train}
    for seed in (0, 1):
        test = task.generate(300, seed=seed, split="test")
        assert not train_questions & {r["question"] for r in test}


def test_levels_produce_a_spread(train):
    by_level = {lv: [r for r in train if r["level"] == lv] for lv in (1, 2, 3, 4)}
    # Uniform level weights: each level has about a quarter of the pool.
    for records in by_level.values():
        assert abs(len(records) / len(train) - 0.25) < 0.04
    # Harder levels have longer answers and more digits to get right.
    mean_len = [statistics.mean(len(r["answer"]) for r in by_level[lv]) for lv in (1, 2, 3, 4)]
    assert mean_len == sorted(mean_len) and mean_len[3] - mean_len[0] > 3
    # A noisy "policy" that gets each answer digit right with probability 0.8 solves level 1
    # often and level 4 rarely: the spread of success rates the selector feeds on.
    rng = random.Random(0)
    rates = [
        statistics.mean(all(rng.random() < 0.8 for _ in r["answer"]) for r in by_level[lv])
        for lv in (1, 2, 3, 4)
    ]
    assert rates == sorted(rates, reverse=True) and rates[0] > 0.65 and rates[3] < 0.45


def test_level_weights_and_ops_are_honoured():
    task = ArithmeticTask(levels=(1, 3), ops="*", level_weights=(3, 1))
    counts = Counter(r["level"] for r in task.generate(2000, seed=0))
    assert 2.5 < counts[1] / counts[3] < 3.6
    assert all("*" in r["question"] for r in task.generate(50, seed=0))
    with pytest.raises(ValueError):
        ArithmeticTask(levels=(0,))
    with pytest.raises(ValueError):
        ArithmeticTask(ops=("/",))


def test_unique_pools():
    task = ArithmeticTask(levels=(2,), unique=True)
    records = task.generate(500, seed=0)
    assert len({r["question"] for r in records}) == 500
    with pytest.raises(ValueError, match="distinct"):
        ArithmeticTask(levels=(1,), unique=True).generate(1000, seed=0)


R = {"index": 0, "question": "37+45", "answer": "82", "level": 2}


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        ("<answer>82</answer>", 1.0),
        ("<answer> 82 </answer>", 1.0),
        ("<answer>+82</answer>", 1.0),
        ("37+45 is 82 so <answer>82</answer>", 1.0),
        ("<answer>81</answer> no, <answer>82</answer>", 1.0),
        ("<answer>82</answer> no, <answer>81</answer>", 0.0),
        ("<answer>83</answer>", 0.0),
        ("<answer>-82</answer>", 0.0),
        ("<answer>82.0</answer>", 0.0),
        ("<answer>8 2</answer>", 0.0),
        ("<answer>80+2</answer>", 0.0),
        ("<answer>８２</answer>", 0.0),  # fullwidth digits are not ASCII integers
        ("<answer>٨٢</answer>", 0.0),
        ("<answer></answer>", 0.0),
        ("82", 0.0),
        ("<answer>82", 0.0),
        ("", 0.0),
    ],
)
def test_reward_hand_cases(task, completion, expected):
    assert task.verify(completion, R) == expected


def test_negative_answers_from_user_data(task):
    record = {"index": 0, "question": "3-10", "answer": "-7"}
    task.validate_record(record)
    assert task.verify("<answer>-7</answer>", record) == 1.0
    assert task.verify("<answer>7</answer>", record) == 0.0


def test_parse_helpers():
    assert parse_int(" -12 ") == -12 and parse_int("1" * 64) == int("1" * 64)
    for bad in [None, 12, "", "1" * 65, "1.0", "1,000", "--1", "0x1", "1e3", "²"]:
        assert parse_int(bad) is None, bad


def test_validate_record_names_the_field(task):
    cases = [
        ({"question": "1+1", "answer": "2"}, "index"),
        ({"index": 0, "answer": "2"}, "question"),
        ({"index": 0, "question": "1+1"}, "answer"),
        ({"index": 0, "question": "1+1", "answer": 2}, "answer"),
        ({"index": 0, "question": "1+1", "answer": "two"}, "answer"),
        ({"index": 0, "question": "1+1", "answer": "2", "level": "1"}, "level"),
    ]
    for record, field in cases:
        with pytest.raises(RecordError, match=field) as info:
            task.validate_record(record)
        assert info.value.field == field


def _timed(fn, *args):
    """Best of up to 3 timings (a GC pause is not the input's fault), and the result."""
    times = []
    for _ in range(3):
        start = time.perf_counter()
        out = fn(*args)
        times.append(time.perf_counter() - start)
        if times[-1] < MAX_SECONDS_PER_CALL:
            break
    assert min(times) < MAX_SECONDS_PER_CALL, (times, str(args)[:80])
    return out


def _reference_reward(completion: str) -> float:
    """Independent reward for R (answer 82): brute-force last complete tag, then a regex."""
    found = None
    for i in range(len(completion)):
        if completion.startswith("<answer>", i):
            j = completion.find("</answer>", i + 8)
            if j >= 0:
                found = completion[i + 8 : j]
    if found is None or len(found) > 128:  # MAX_ANSWER_CHARS, on the raw content
        return 0.0
    number = re.fullmatch(r"\s*(\+?0*82)\s*", found)
    return 1.0 if number and len(number.group(1)) <= 64 else 0.0  # MAX_NUMBER_CHARS


@settings(
    max_examples=2000, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
@given(text=st.text(max_size=300))
def test_fuzz_arbitrary_text(task, text):
    for completion in (text, f"<answer>{text}</answer>", f"<answer>{text}82</answer>"):
        assert _timed(task.verify, completion, R) == _reference_reward(completion), completion


_PIECES = st.sampled_from(["<answer>", "</answer>", "82", "8", "+", "0", " ", "\n", "x", "<"])


@settings(max_examples=1000, deadline=None, derandomize=True)
@given(parts=st.lists(_PIECES, max_size=60))
def test_fuzz_tag_soup(task, parts):
    completion = "".join(parts)
    assert task.verify(completion, R) == _reference_reward(completion), completion


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        ("<answer>" + "9" * 100_000 + "</answer>", 0.0),
        ("<answer>" + "1" * 60 + "</answer>", 0.0),
        ("<answer>" * 100_000, 0.0),
        ("<answer>" * 50_000 + "82" + "</answer>" * 50_000, 1.0),
        ("\x00" * 1_000_000, 0.0),
        ("<answer>" + "-" * 5000 + "82</answer>", 0.0),
        ("<answer>" + " " * 5000 + "82</answer>", 0.0),  # content over 128 characters
        ("x" * 5_000_000 + "<answer>82</answer>", 1.0),
        # A correct answer followed by megabytes of garbage still scores.
        ("<answer>82</answer>" + "x" * 5_000_000, 1.0),
        ("<answer>82</answer>" + "<answer>" * 200_000, 1.0),
        ("<answer>82</answer>" + "</answer>" * 200_000, 1.0),
        ("<answer>82</answer>" + "<answer>81</answer>" + "y" * 1_000_000, 0.0),
    ],
)
def test_adversarial_inputs(task, completion, expected):
    assert _timed(task.verify, completion, R) == expected
