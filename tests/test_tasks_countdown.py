"""Countdown task: generation, reference solutions, the paper's reward, and parser safety."""

from __future__ import annotations

import json
import time
from fractions import Fraction
from functools import cache

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from insight_jax.tasks import get_task
from insight_jax.tasks.base import RecordError
from insight_jax.tasks.countdown import CountdownTask, parse_expression, problem_key, solve

REWARDS = {0.0, 0.1, 1.0}
MAX_SECONDS_PER_CALL = 0.05


@pytest.fixture(scope="module")
def task() -> CountdownTask:
    return CountdownTask()


@pytest.fixture(scope="module")
def train(task):
    return task.generate(600, seed=0, split="train")


@pytest.fixture(scope="module")
def test_split(task):
    return task.generate(200, seed=0, split="test")


# --- an independent brute-force solver (sets of reachable values, no shared code) -------------


@cache
def _reachable(nums: tuple[int, ...]) -> frozenset[Fraction]:
    """All exact values of expressions using every number of ``nums`` exactly once."""
    if len(nums) == 1:
        return frozenset({Fraction(nums[0])})
    values: set[Fraction] = set()
    n = len(nums)
    for mask in range(1, 2**n - 1):
        left = tuple(nums[i] for i in range(n) if mask >> i & 1)
        right = tuple(nums[i] for i in range(n) if not mask >> i & 1)
        for a in _reachable(left):
            for b in _reachable(right):
                values.update((a + b, a - b, a * b))
                if b != 0:
                    values.add(a / b)
    return frozenset(values)


def _brute_force_reachable(nums: list[int], target: int) -> bool:
    return Fraction(target) in _reachable(tuple(sorted(nums)))


# --- generation --------------------------------------------------------------------------------


def test_records_have_the_documented_shape(task, train):
    assert [r["index"] for r in train] == list(range(len(train)))
    for r in train:
        task.validate_record(r)
        assert len(r["nums"]) in (3, 4)
        assert all(1 <= n <= 20 for n in r["nums"])
        assert 1 <= r["target"] <= 100
        assert json.loads(json.dumps(r)) == r


def test_generation_is_deterministic(task, train):
    assert task.generate(600, seed=0, split="train") == train
    assert task.generate(50, seed=1) != train[:50]
    assert get_task("countdown").generate(20, seed=0) == train[:20]


def test_splits_are_disjoint_and_pools_unique(task, train, test_split):
    train_keys = {problem_key(r["nums"], r["target"]) for r in train}
    assert len(train_keys) == len(train)
    other_seeds = task.generate(200, seed=5, split="test")
    for r in test_split + other_seeds:
        assert problem_key(r["nums"], r["target"]) not in train_keys
    with pytest.raises(ValueError, match="unknown split"):
        task.generate(3, seed=0, split="validation")


def test_every_target_is_reachable_by_brute_force(train, test_split):
    for r in train[:300] + test_split[:100]:
        assert _brute_force_reachable(r["nums"], r["target"]), r


def test_reference_completions_score_one(task, train, test_split):
    lengths = []
    for r in train + test_split:
        ref = task.reference_completion(r)
        assert ref.startswith("<answer>") and ref.endswith("</answer>")
        assert task.verify(ref, r) == 1.0
        lengths.append(len(ref))
    # Tag overhead is 17 chars; minimal parentheses keep the expression short.
    assert max(lengths) <= 40 and sum(lengths) / len(lengths) <= 28


def test_prompt_is_compact(task):
    record = {"index": 0, "nums": [3, 5, 2], "target": 16}
    assert task.prompt(record) == "3 5 2=16:"
    instruct = CountdownTask(prompt_style="instruct").prompt(record)
    assert "[3, 5, 2]" in instruct and "16" in instruct and "<answer>" in instruct


def test_reference_without_solution_uses_solver(task):
    for nums, target in [([44, 19, 35], 98), ([25, 4, 3, 7], 96), ([3, 3, 8, 8], 24)]:
        record = {"index": 0, "nums": nums, "target": target}  # public format: no solution
        assert task.verify(task.reference_completion(record), record) == 1.0
    bad = {"index": 0, "nums": [3, 5, 2], "target": 16, "solution": "3+5+2"}  # wrong: re-solved
    assert task.verify(task.reference_completion(bad), bad) == 1.0
    with pytest.raises(ValueError, match="no solution"):
        task.reference_completion({"index": 0, "nums": [1, 1, 1], "target": 97})


def test_solver_agrees_with_brute_force():
    for nums, target in [([1, 1, 1], 97), ([3, 3, 8, 8], 24), ([1, 5, 5, 5], 24), ([2, 7], 14)]:
        found = solve(nums, target)
        assert (found is not None) == _brute_force_reachable(nums, target)
        if found is not None:
            parsed = parse_expression(found)
            assert parsed.value == target and sorted(parsed.literals) == sorted(nums)


def test_small_space_with_unique_raises():
    tiny = CountdownTask(num_numbers=2, max_number=2, max_target=4)
    with pytest.raises(ValueError, match="distinct"):
        tiny.generate(50, seed=0)
    repeats = CountdownTask(num_numbers=2, max_number=2, max_target=4, unique=False)
    assert len(repeats.generate(50, seed=0)) == 50


# --- the reward ----------------------------------------------------------------------------


R = {"index": 0, "nums": [3, 5, 2], "target": 16}


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        ("<answer>(3+5)*2</answer>", 1.0),
        ("<answer> ( 3 + 5 ) * 2 </answer>", 1.0),
        ("<answer>2*(5+3)</answer>", 1.0),
        ("<answer>((3+5))*2</answer>", 1.0),
        ("thinking... 3+5=8, 8*2=16 <answer>(3+5)*2</answer> done", 1.0),
        # well-formed but wrong -> 0.1
        ("<answer>3+5*2</answer>", 0.1),  # wrong value (13)
        ("<answer>(3+5)*2*1</answer>", 0.1),  # extra number
        ("<answer>(3+5)*3</answer>", 0.1),  # wrong number, wrong value
        ("<answer>8*2</answer>", 0.1),  # right value, numbers not used
        ("<answer>(5+5)*2-3-1</answer>", 0.1),  # a number used twice
        ("<answer>16</answer>", 0.1),
        ("<answer>3/(5-5)*2</answer>", 0.1),  # division by zero: undefined, well-formed
        # not well-formed -> 0.0
        ("(3+5)*2", 0.0),  # no tag
        ("<answer>(3+5)*2", 0.0),  # unclosed
        ("(3+5)*2</answer>", 0.0),  # no opening tag
        ("<answer></answer>", 0.0),
        ("<answer>(3+5*2</answer>", 0.0),
        ("<answer>3+5)*2</answer>", 0.0),
        ("<answer>(3+5)*2=16</answer>", 0.0),  # '=' is not in the grammar
        ("<answer>-3+5*2+3</answer>", 0.0),  # unary minus is not allowed
        ("<answer>03+5*2</answer>", 0.0),  # leading zero
        ("<answer>3.0+5</answer>", 0.0),  # decimals
        ("<answer>(3+5)x2</answer>", 0.0),
        ("<answer>(３+5)*2</answer>", 0.0),  # fullwidth digit
        ("<answer>1234567</answer>", 0.0),  # literal over 6 digits
        ("<ANSWER>(3+5)*2</ANSWER>", 0.0),
    ],
)
def test_hand_cases(task, completion, expected):
    assert task.verify(completion, R) == expected


def test_last_complete_tag_counts(task):
    assert task.verify("<answer>3+5+2</answer> wait <answer>(3+5)*2</answer>", R) == 1.0
    assert task.verify("<answer>(3+5)*2</answer> wait <answer>3+5+2</answer>", R) == 0.1
    assert task.verify("<answer>(3+5)*2</answer> wait <answer>oops</answer>", R) == 0.0
    # An unclosed trailing tag is not an answer; the last complete one is.
    assert task.verify("<answer>(3+5)*2</answer> <answer>3+5+2", R) == 1.0
    # Nested tags: the content after the last opening tag before the last closing tag.
    assert task.verify("<answer>1<answer>(3+5)*2</answer></answer>", R) == 1.0


def test_division_is_exact(task):
    def record(nums, target):
        return {"index": 0, "nums": nums, "target": target}

    assert task.verify("<answer>6/4*4</answer>", record([6, 4, 4], 6)) == 1.0
    assert task.verify("<answer>(1+1/3)*3</answer>", record([1, 1, 3, 3], 4)) == 1.0
    assert task.verify("<answer>7/2</answer>", record([7, 2], 3)) == 0.1  # 3.5, not rounded


def test_depth_and_length_bounds(task):
    one = {"index": 0, "nums": [1], "target": 1}
    assert task.verify("<answer>" + "(" * 32 + "1" + ")" * 32 + "</answer>", one) == 1.0
    assert task.verify("<answer>" + "(" * 33 + "1" + ")" * 33 + "</answer>", one) == 0.0
    long_ok = "+".join(["1"] * 64)  # 127 chars
    ones_64 = {"index": 0, "nums": [1] * 64, "target": 64}
    ones_65 = {"index": 0, "nums": [1] * 65, "target": 65}
    assert task.verify(f"<answer>{long_ok}</answer>", ones_64) == 1.0
    assert task.verify(f"<answer>{long_ok}+1</answer>", ones_65) == 0.0  # content over 128 chars
    assert task.verify(f"<answer> {long_ok} </answer>", ones_64) == 0.0  # 129 with the spaces
    # The whole completion is searched: an answer anywhere in a long completion is found.
    assert task.verify("x" * 1_000_000 + "<answer>(3+5)*2</answer>", R) == 1.0
    assert task.verify("<answer>(3+5)*2</answer>" + "x" * 1_000_000, R) == 1.0
    assert task.verify("x" * 5000 + "<answer>(3+5)*2</answer>" + "y" * 5000, R) == 1.0


def test_parse_expression_values_and_literals():
    parsed = parse_expression("6/4*4 - (1 - 2)")
    assert parsed.value == 7 and parsed.literals == (6, 4, 4, 1, 2)
    assert parse_expression("1/0").value is None
    assert parse_expression("999999*999999*999999").value == 999999**3
    for bad in ["", "()", "1+", "+1", "1 2", "(1))", "1//2", "1**2", "0x10", "1e3", "\x001"]:
        assert parse_expression(bad) is None, bad


def test_validate_record_names_the_field(task):
    good = {"index": 0, "nums": [1, 2], "target": 3}
    task.validate_record(good)
    cases = [
        ({"nums": [1, 2], "target": 3}, "index"),
        ({"index": 0, "target": 3}, "nums"),
        ({"index": 0, "nums": [1, 2]}, "target"),
        ({"index": 0, "nums": "1 2", "target": 3}, "nums"),
        ({"index": 0, "nums": [1, "2"], "target": 3}, "nums"),
        ({"index": 0, "nums": [], "target": 3}, "nums"),
        ({"index": 0, "nums": [1, 2], "target": "3"}, "target"),
        ({"index": 0, "nums": [1, 2], "target": True}, "target"),
        ({"index": -1, "nums": [1, 2], "target": 3}, "index"),
        ({"index": 0, "nums": [1, 2], "target": 3, "solution": 3}, "solution"),
    ]
    for record, field in cases:
        with pytest.raises(RecordError, match=field) as info:
            task.validate_record(record)
        assert info.value.field == field


# --- fuzzing: any string gets a reward in {0, 0.1, 1}, fast ----------------------------------


def _timed_verify(task, completion, record):
    """Checks the reward's type and range, and that the call is fast.

    A slow call is re-timed (best of 3): a GC pause or a busy CPU is not the input's fault, while
    an input that is really slow to verify stays slow.
    """
    times = []
    for _ in range(3):
        start = time.perf_counter()
        reward = task.verify(completion, record)
        times.append(time.perf_counter() - start)
        assert isinstance(reward, float) and reward in REWARDS
        if times[-1] < MAX_SECONDS_PER_CALL:
            break
    assert min(times) < MAX_SECONDS_PER_CALL, (times, completion[:80])
    return reward


_EXPRESSION_CHARS = st.sampled_from([*"0123456789+-*/() ", "<answer>", "</answer>"])


@settings(
    max_examples=2000, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
@given(text=st.text(max_size=300))
def test_fuzz_arbitrary_text(task, text):
    _timed_verify(task, text, R)
    _timed_verify(task, f"<answer>{text}</answer>", R)


@settings(
    max_examples=2000, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
@given(parts=st.lists(_EXPRESSION_CHARS, max_size=80))
def test_fuzz_expression_alphabet(task, parts):
    text = "".join(parts)
    _timed_verify(task, text, R)
    _timed_verify(task, f"<answer>{text}</answer>", R)


# (completion, the exact reward for R = 3 5 2 -> 16). Contents over 128 characters are malformed.
_ADVERSARIAL = [
    ("(" * 10_000, 0.0),
    ("<answer>" + "(" * 10_000 + "</answer>", 0.0),
    ("<answer>" + "(" * 100 + "1" + ")" * 100 + "</answer>", 0.0),  # 201 characters
    ("<answer>" + "9" * 10_000 + "</answer>", 0.0),
    ("<answer>" + "9" * 120 + "</answer>", 0.0),  # a literal over 6 digits
    ("<answer>" + "1*" * 5000 + "1</answer>", 0.0),
    ("<answer>" + "999999*" * 18 + "9</answer>", 0.1),  # 127 characters, well-formed, wrong
    ("<answer>" + "1/" * 63 + "1</answer>", 0.1),
    ("<answer>" + "999999/" * 18 + "7</answer>", 0.1),
    ("<answer>" * 100_000, 0.0),
    ("</answer>" * 100_000, 0.0),
    ("<answer>" * 50_000 + "1" + "</answer>" * 50_000, 0.1),
    ("<answer><answer>3</answer>(3+5)*2</answer>", 0.1),  # the last opened tag holds "3"
    ("<answer>\x00(3+5)*2</answer>", 0.0),
    ("<answer>(3+5)*2\x00</answer>", 0.0),
    ("\x00" * 100_000, 0.0),
    ("<answer>٣+٥*٢</answer>", 0.0),
    ("<answer>" + "😀" * 1000 + "</answer>", 0.0),
    ("<answer>" + " " * 5000 + "</answer>", 0.0),
    ("<answer>" + "((1+1)*" * 20 + "1" + ")" * 20 + "</answer>", 0.0),  # 161 characters
    ("x" * 5_000_000, 0.0),
    # A correct answer followed by megabytes of garbage still scores.
    ("<answer>(3+5)*2</answer>" + "<answer>" * 200_000, 1.0),
    ("<answer>(3+5)*2</answer>" + "</answer>" * 200_000, 1.0),
    ("<answer>(3+5)*2</answer>" + "x" * 5_000_000, 1.0),
    ("x" * 2_000_000 + "<answer>(3+5)*2</answer>" + "<answer>1" * 200_000, 1.0),
    ("<answer>(3+5)*2</answer>" + "</answer><answer>" * 100_000, 0.0),  # last is empty
    ("<answer>(3+5)*2</answer>" + ("<answer>1+</answer>" + "z" * 50) * 20_000, 0.0),
    ("<answer>(3+5)*2</answer>" + ("<answer>16</answer>" + "z" * 50) * 20_000, 0.1),
]


@pytest.mark.parametrize(("completion", "expected"), _ADVERSARIAL, ids=range(len(_ADVERSARIAL)))
def test_adversarial_inputs(task, completion, expected):
    assert _timed_verify(task, completion, R) == expected


@pytest.mark.parametrize("completion", [None, 123, b"<answer>(3+5)*2</answer>", ["x"]])
def test_non_string_completions_score_zero(task, completion):
    assert task.verify(completion, R) == 0.0


# A structured property: random expression trees, printed with full parentheses, parse to the
# value computed directly from the tree.
_trees = st.recursive(
    st.integers(0, 999_999),
    lambda children: st.tuples(st.sampled_from("+-*/"), children, children),
    max_leaves=12,
)


def _tree_value(tree):
    if isinstance(tree, int):
        return Fraction(tree)
    op, a, b = tree
    a, b = _tree_value(a), _tree_value(b)
    if a is None or b is None or (op == "/" and b == 0):
        return None
    return {"+": a + b, "-": a - b, "*": a * b, "/": a / b if b else None}[op]


def _tree_text(tree):
    if isinstance(tree, int):
        return str(tree)
    op, a, b = tree
    return f"({_tree_text(a)}{op}{_tree_text(b)})"


def _tree_leaves(tree):
    return [tree] if isinstance(tree, int) else _tree_leaves(tree[1]) + _tree_leaves(tree[2])


@settings(max_examples=500, deadline=None, derandomize=True)
@given(tree=_trees)
def test_parser_matches_tree_evaluation(tree):
    text = _tree_text(tree)
    parsed = parse_expression(text)
    if len(text) > 128:
        assert parsed is None
        return
    assert parsed is not None
    assert parsed.value == _tree_value(tree)
    assert list(parsed.literals) == _tree_leaves(tree)


# TinyZero's Countdown prompts (examples/data_preprocess/countdown.py, make_prefix), transcribed
# from its source for nums [44, 19, 35] and target 98.
TINYZERO_BASE = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant solves"
    " it. The assistant first thinks about the reasoning process in the mind and then provides the"
    " user with the answer.\nUser: Using the numbers [44, 19, 35], create an equation that equals"
    " 98. You can use basic arithmetic operations (+, -, *, /) and each number can only be used"
    " once. Show your work in <think> </think> tags. And return the final answer in <answer>"
    " </answer> tags, for example <answer> (1 + 2) / 3 </answer>.\nAssistant: Let me solve this"
    " step by step.\n<think>"
)
TINYZERO_QWEN_INSTRUCT = (
    "<|im_start|>system\nYou are a helpful assistant. You first thinks about the reasoning process"
    " in the mind and then provides the user with the answer.<|im_end|>\n<|im_start|>user\n Using"
    " the numbers [44, 19, 35], create an equation that equals 98. You can use basic arithmetic"
    " operations (+, -, *, /) and each number can only be used once. Show your work in <think>"
    " </think> tags. And return the final answer in <answer> </answer> tags, for example <answer>"
    " (1 + 2) / 3 </answer>.<|im_end|>\n<|im_start|>assistant\nLet me solve this step by step.\n"
    "<think>"
)


def test_tinyzero_prompts_word_for_word(tmp_path):
    from insight_jax.models.tiny_hf import write_tiny_hf
    from insight_jax.models.tokenizers import format_prompt, load_hf_tokenizer

    record = {"index": 0, "nums": [44, 19, 35], "target": 98}
    assert CountdownTask(prompt_style="base").prompt(record) == TINYZERO_BASE
    instruct = CountdownTask(prompt_style="instruct")
    assert instruct.prompt(record) == TINYZERO_QWEN_INSTRUCT
    # Through a ChatML chat template (as Qwen's), the chat turns render to TinyZero's text.
    tok = load_hf_tokenizer(write_tiny_hf(tmp_path / "m", ["a b c"], vocab_size=300))
    assert format_prompt(tok, instruct.chat_prompt(record), chat=True) == TINYZERO_QWEN_INSTRUCT
    # The base prompt is one user turn for a chat model (as MoPPS's verl recipe feeds it).
    base_chat = format_prompt(
        tok, CountdownTask(prompt_style="base").chat_prompt(record), chat=True
    )
    assert base_chat == f"<|im_start|>user\n{TINYZERO_BASE}<|im_end|>\n<|im_start|>assistant\n"
    with pytest.raises(ValueError, match="answer"):
        CountdownTask(prompt_style="base", tag="a")
    with pytest.raises(ValueError, match="prompt_style"):
        CountdownTask(prompt_style="chat")
