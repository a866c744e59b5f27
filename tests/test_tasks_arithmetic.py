"""Arithmetic task: generation by level, reference answers, the binary reward, answer_match."""

from __future__ import annotations

import json
import random
import statistics
import time
from collections import Counter
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from insight_jax.tasks import get_task
from insight_jax.tasks.arithmetic import ArithmeticTask, answer_match, parse_int, parse_number
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
    assert parse_number("1,234.50") == Fraction(246_9, 2)
    assert parse_number("-6 / 8") == Fraction(-3, 4)
    assert parse_number(".5") == Fraction(1, 2)
    for bad in ["1/0", "", ".", "+", "1,23", "12,3456", "1.2.3", "inf", "nan", "1e3", "½", None]:
        assert parse_number(bad) is None, bad


@pytest.mark.parametrize(
    ("prediction", "gold", "expected"),
    [
        ("0.5", "1/2", True),
        ("1,234", "1234", True),
        ("12.00", "12", True),
        ("-3/4", "-0.75", True),
        ("12", "13", False),
        ("twelve", "12", False),
        ("\\pi", " \\pi ", True),
        ("1/0", "1/0", True),  # not numbers: compared as text
        ("", "0", False),
        (None, "1", False),
    ],
)
def test_answer_match(prediction, gold, expected):
    assert answer_match(prediction, gold) is expected


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


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.text(max_size=300))
def test_fuzz_arbitrary_text(task, text):
    for completion in (text, f"<answer>{text}</answer>"):
        assert _timed(task.verify, completion, R) in (0.0, 1.0)
    assert isinstance(_timed(answer_match, text, "82"), bool)
    assert isinstance(_timed(answer_match, text, text), bool)


@pytest.mark.parametrize(
    "completion",
    [
        "<answer>" + "9" * 100_000 + "</answer>",
        "<answer>" + "1" * 60 + "</answer>",
        "<answer>" * 100_000,
        "<answer>" * 50_000 + "82" + "</answer>" * 50_000,
        "\x00" * 1_000_000,
        "<answer>" + "-" * 5000 + "82</answer>",
        "x" * 5_000_000 + "<answer>82</answer>",
    ],
)
def test_adversarial_inputs(task, completion):
    assert _timed(task.verify, completion, R) in (0.0, 1.0)
    assert isinstance(_timed(answer_match, completion[-10_000:], "1/2"), bool)
