"""Math task: rewards vs math-verify itself and vs exact arithmetic, the bounded candidate rule,
adversarial completions and golds (always a reward, within the timeout), MathTask records."""

from __future__ import annotations

import random
import time
from fractions import Fraction

import pytest
from math_verify import parse, verify

from insight_jax.tasks import get_task
from insight_jax.tasks.base import MAX_BOX_DEPTH as MAX_DEPTH
from insight_jax.tasks.base import MAX_BOX_TRIES, RecordError
from insight_jax.tasks.math import (
    DEFAULT_INSTRUCTION,
    MAX_BOXED_CHARS,
    MAX_GOLD_CHARS,
    TAIL_CHARS,
    MathTask,
    close_pools,
    extract_candidate,
    get_pool,
    math_reward,
    math_rewards,
)
from insight_jax.tasks.verifier_pool import VerifierPool

TIMEOUT_S = 2.0
SLACK_S = 1.5  # a worker replacement and pipe round trips on a shared 2-core machine
WORKERS = 2


@pytest.fixture(scope="module")
def pool():
    yield get_pool(WORKERS, TIMEOUT_S)
    close_pools()


@pytest.fixture(scope="module")
def task(pool):
    return MathTask(num_workers=WORKERS, timeout_s=TIMEOUT_S)


def _direct(completion: str, gold: str) -> float:
    """math-verify's documented use, in this process: verify(parse(gold), parse(answer))."""
    return 1.0 if verify(parse(f"${gold}$"), parse(completion)) else 0.0


# (gold, completion, equivalent?) labelled by hand.
TYPICAL = [
    (r"\frac{1}{2}", r"So the answer is $\boxed{0.5}$.", True),
    (r"\frac{1}{2}", r"\boxed{\frac{2}{4}}", True),
    (r"\frac{1}{2}", "The answer is 1/2", True),
    (r"\frac{1}{2}", r"\boxed{\dfrac12}", True),
    (r"\frac{1}{2}", r"\boxed{\frac{1}{3}}", False),
    ("0.5", r"\boxed{\frac{1}{2}}", True),
    ("5", "The answer is 5.", True),
    ("5", r"Thus \boxed{5}.", True),
    ("5", r"\boxed{6}", False),
    ("5", "The answer is 6.", False),
    (r"3\sqrt{2}", r"\boxed{\sqrt{18}}", True),
    (r"3\sqrt{2}", r"\boxed{2\sqrt{3}}", False),
    ("(1,2)", r"\boxed{(1, 2)}", True),
    ("(1,2)", r"\boxed{(2,1)}", False),
    (r"\{1,2\}", r"\boxed{\{2,1\}}", True),
    (r"\{1,2\}", r"\boxed{\{1,3\}}", False),
    ("[1,3)", r"\boxed{[1,3)}", True),
    ("[1,3)", r"\boxed{[1,3]}", False),
    (r"(-\infty, 2]", r"\boxed{(-\infty,2]}", True),
    (r"\text{(B)}", r"\boxed{\text{(B)}}", True),
    (r"\text{(B)}", r"\boxed{B}", True),
    (r"\text{(B)}", r"\boxed{C}", False),
    ("x^2+1", r"\boxed{1+x^2}", True),
    ("x^2+1", r"\boxed{x^2-1}", False),
    (r"2\pi", r"\boxed{2 \pi}", True),
    ("10", "", False),
]


def test_typical_pairs_match_hand_labels_and_math_verify(pool):
    golds = [g for g, _, _ in TYPICAL]
    completions = [c for _, c, _ in TYPICAL]
    rewards = math_rewards(completions, golds, pool)
    assert rewards == [1.0 if ok else 0.0 for _, _, ok in TYPICAL]
    assert rewards == [_direct(c, g) for g, c, _ in TYPICAL]


def test_math_reward_is_the_public_single_pair_api(pool):
    # The default shared pool (its own settings), started lazily.
    assert math_reward(r"\boxed{\frac{6}{4}}", r"\frac{3}{2}") == 1.0
    assert math_reward(r"\boxed{2}", r"\frac{3}{2}") == 0.0
    assert math_reward(r"\boxed{7}", 7) == 1.0  # numbers are normalised like from_row's
    assert math_reward(None, "7") == 0.0
    assert math_reward(r"\boxed{7}", None) == 0.0


def _fraction_latex(value: Fraction, rng: random.Random) -> str:
    """A correct rendering of ``value`` chosen at random (unreduced, \\dfrac, p/q, decimal)."""
    p, q = value.numerator, value.denominator
    if q == 1:
        return rng.choice([str(p), f"{p}.0", f"\\frac{{{2 * p}}}{{2}}"])
    k = rng.randint(1, 4)
    sign = "-" if p < 0 else ""
    forms = [
        f"{sign}\\frac{{{abs(p) * k}}}{{{q * k}}}",
        f"{sign}\\dfrac{{{abs(p)}}}{{{q}}}",
        f"{p}/{q}",
    ]
    q_rest = q
    for f in (2, 5):
        while q_rest % f == 0:
            q_rest //= f
    if q_rest == 1:  # terminating decimal: exact
        forms.append(str(float(value)))
    return rng.choice(forms)


def test_seeded_random_integers_and_fractions(pool):
    rng = random.Random(1234)
    golds, completions, expected = [], [], []
    for _ in range(120):
        value = Fraction(rng.randint(-50, 200), rng.choice([1, 1, 2, 3, 4, 5, 7, 8, 12]))
        p, q = value.numerator, value.denominator
        gold = str(p) if q == 1 else f"{'-' if p < 0 else ''}\\frac{{{abs(p)}}}{{{q}}}"
        right = rng.random() < 0.5
        shown = value if right else value + rng.choice([1, -1, Fraction(1, 2)])
        text = _fraction_latex(shown, rng)
        if rng.random() < 0.5:
            completions.append(f"Working... so \\boxed{{{text}}}.")
        else:  # plain text: LaTeX inside $...$, as math-verify's plain extraction expects
            shown_text = "$" + text + "$" if "\\" in text else text
            completions.append(f"Thus the answer is {shown_text}")
        golds.append(gold)
        expected.append(1.0 if shown == value else 0.0)
    assert math_rewards(completions, golds, pool) == expected


# --- the candidate rule -------------------------------------------------------------------------


def _naive_candidate(text: str) -> tuple[str, str] | None:
    """The documented rule by brute force: openings from the last backwards (at most
    MAX_BOX_TRIES), each scanned char by char for balanced braces, skipping backslash pairs."""
    if not text.strip():
        return None
    openings = sorted(
        {i for cmd in ("\\boxed", "\\fbox") for i in range(len(text)) if text.startswith(cmd, i)},
        reverse=True,
    )
    for start in openings[:MAX_BOX_TRIES]:
        cmd = "\\boxed" if text.startswith("\\boxed", start) else "\\fbox"
        j = start + len(cmd)
        while j < len(text) and j - start - len(cmd) < 8 and text[j] in " \t\r\n":
            j += 1
        if j >= len(text) or text[j] != "{":
            continue
        depth, k, content_start = 1, j + 1, j + 1
        while k < len(text) and k - content_start <= MAX_BOXED_CHARS:
            ch = text[k]
            if ch == "\\":
                k += 2
                continue
            if ch == "{":
                depth += 1
                if depth > MAX_DEPTH:
                    break
            elif ch == "}":
                depth -= 1
                if depth == 0:
                    return "boxed", text[content_start:k]
            k += 1
    return "tail", text[-TAIL_CHARS:]


CANDIDATES = [
    (r"\boxed{1} and then \boxed{2}", ("boxed", "2")),
    (r"\boxed{\boxed{5}}", ("boxed", "5")),
    (r"\boxed{3} but \boxed{4", ("boxed", "3")),  # an unclosed last box is not an answer
    (r"\fbox{7}", ("boxed", "7")),
    (r"\boxed {8}", ("boxed", "8")),
    (r"\boxed{\{1,2\}}", ("boxed", r"\{1,2\}")),  # escaped braces do not count
    (r"\boxed{\frac{1}{2}}", ("boxed", r"\frac{1}{2}")),
    (r"\boxed{a\\}", ("boxed", r"a\\")),
    ("The answer is 5", ("tail", "The answer is 5")),
    ("  \n ", None),
    ("", None),
]


@pytest.mark.parametrize("text, expected", CANDIDATES)
def test_candidate_examples(text, expected):
    assert extract_candidate(text) == expected
    assert _naive_candidate(text) == expected


def test_candidate_bounds():
    long_box = "\\boxed{" + "1" * (MAX_BOXED_CHARS + 1) + "}"
    assert extract_candidate(long_box) == ("tail", long_box[-TAIL_CHARS:])
    assert extract_candidate("\\boxed{" + "1" * MAX_BOXED_CHARS + "}")[1] == "1" * MAX_BOXED_CHARS
    deep = "\\boxed{" + "{" * MAX_DEPTH + "}" * MAX_DEPTH + "}"
    assert extract_candidate(deep)[0] == "tail"
    ok = "\\boxed{" + "{" * (MAX_DEPTH - 1) + "}" * (MAX_DEPTH - 1) + "}"
    assert extract_candidate(ok)[0] == "boxed"
    # Only the last MAX_BOX_TRIES openings are tried.
    tries = "\\boxed{9}" + "\\boxed{" * MAX_BOX_TRIES
    assert extract_candidate(tries)[0] == "tail"
    assert extract_candidate("\\boxed{9}" + "\\boxed{" * (MAX_BOX_TRIES - 1)) == ("boxed", "9")
    assert extract_candidate(123) is None


def test_candidate_matches_the_naive_rule_on_seeded_random_texts():
    rng = random.Random(7)
    alphabet = ["\\boxed", "\\fbox", "{", "}", "\\{", "\\}", "\\\\", " ", "1", "x", "\\frac"]
    for _ in range(400):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        assert extract_candidate(text) == _naive_candidate(text), text


def test_candidate_is_fast_on_megabyte_texts():
    texts = [
        "x" * 5_000_000,
        "\\boxed{" * 500_000,
        "{" * 3_000_000,
        "\\boxed{" + "{" * 3_000_000,
        "\\fbox{1}" + "\\boxed" * 300_000,
    ]
    for text in texts:
        t0 = time.perf_counter()
        extract_candidate(text)
        assert time.perf_counter() - t0 < 0.5


# --- adversarial inputs -------------------------------------------------------------------------

ADVERSARIAL = {
    "huge_latex": "\\frac{1}{2}+" * 100_000 + "\\boxed{" + "x^{2}+" * 150 + "1}",
    "frac_1000_deep": "\\boxed{" + "\\frac{1}{" * 1000 + "2" + "}" * 1000 + "}",
    "frac_15_deep": "\\boxed{" + "\\frac{1}{" * 15 + "2" + "}" * 15 + "}",
    "million_digits": "\\boxed{" + "9" * 1_000_000 + "}",
    "power_tower": "\\boxed{9^{9^{9^{9}}}}",
    "plain_power_tower": "The answer is 9**9**9**9",
    "huge_factorial": "\\boxed{(10^{10})!}",
    "boxed_in_boxed": "\\boxed{\\boxed{\\boxed{5}}}",
    "fullwidth_digit": "\\boxed{５}",
    "arabic_digit": "\\boxed{٥}",
    "megabyte_then_answer": "a" * 1_000_000 + " The answer is 5",
    "nul_bytes": "\\boxed{5\x00}\x00\x00",
    "lone_surrogate": "\\boxed{5\ud800}",
    "lone_surrogate_tail": "\ud800 The answer is 5 \udfff",
    "empty": "",
    "unclosed_megabyte": "\\boxed{" + "{" * 1_000_000,
}


def test_adversarial_completions_end_with_a_reward_in_time(pool):
    for name, text in ADVERSARIAL.items():
        t0 = time.monotonic()
        reward = math_rewards([text], ["5"], pool)[0]
        elapsed = time.monotonic() - t0
        assert reward in (0.0, 1.0), name
        assert elapsed < TIMEOUT_S + SLACK_S, (name, elapsed)
    # The pool still scores normally afterwards.
    assert math_rewards([r"\boxed{5}", r"\boxed{4}"], ["5", "5"], pool) == [1.0, 0.0]


def test_adversarial_batch_keeps_the_good_items(pool):
    bad = list(ADVERSARIAL.values())
    good = [r"\boxed{5}", "The answer is 5.", r"\boxed{4}"]
    completions = [x for pair in zip(bad, good * len(bad), strict=False) for x in pair]
    rewards = math_rewards(completions, ["5"] * len(completions), pool)
    assert rewards[1::2] == [[1.0, 1.0, 0.0][i % 3] for i in range(len(bad))]


PATHOLOGICAL_GOLDS = [
    "9^{9^{9^{9}}}",
    "(10^{10})!",
    "\\frac{1}{" * 60 + "2" + "}" * 60,
    "\ud800",
    "\x00",
    "}{",
    "9" * (MAX_GOLD_CHARS + 1),
]


def test_pathological_golds_give_zero_in_time_and_are_checked_once(pool):
    for gold in PATHOLOGICAL_GOLDS:
        t0 = time.monotonic()
        assert math_rewards([r"\boxed{5}", "The answer is 5"], [gold, gold], pool) == [0.0, 0.0]
        assert time.monotonic() - t0 < TIMEOUT_S + SLACK_S, repr(gold[:20])
        items = pool.stats.items
        t0 = time.monotonic()
        assert math_rewards([r"\boxed{5}"], [gold], pool) == [0.0]
        # Only the completion may be sent again, never the gold check.
        assert pool.stats.items - items <= 1


def test_a_hanging_item_is_killed_and_the_rest_are_scored():
    # Inner (signal) timeouts off in practice: only the pool's own timeout can stop the item.
    with VerifierPool(num_workers=2, timeout_s=2.0, inner_timeout_s=60) as hang_pool:
        completions = [r"\boxed{9^{9^{9^{9}}}}", r"\boxed{5}", r"\boxed{4}", "so 5"]
        completions += [r"\boxed{8^{8^{8^{8}}}}", r"\boxed{5}", r"\boxed{4}", "thus 5"]
        t0 = time.monotonic()
        rewards = math_rewards(completions, ["5"] * len(completions), hang_pool)
        elapsed = time.monotonic() - t0
        assert rewards == [0.0, 1.0, 0.0, 1.0] * 2
        assert hang_pool.stats.timeouts == 2
        assert elapsed < 2 * 2.0 + SLACK_S


# --- the task -----------------------------------------------------------------------------------


def test_registered():
    assert isinstance(get_task("math"), MathTask)
    assert MathTask.max_reward == 1.0
    assert MathTask().config() == {}


def test_from_row_normalises(task):
    assert task.from_row({"problem": "P?", "answer": " 5 "}, 3) == {
        "index": 3,
        "problem": "P?",
        "answer": "5",
    }
    assert task.from_row({"question": "Q?", "answer": 5}, 0)["answer"] == "5"
    assert task.from_row({"question": "Q?", "answer": 5.0}, 0)["answer"] == "5"
    assert task.from_row({"question": "Q?", "answer": 0.25}, 0)["answer"] == "0.25"
    assert task.from_row({"question": "Q?", "answer": -3}, 0)["answer"] == "-3"
    row = {"problem": "P", "answer": "\\frac{1}{2}", "solution": "s", "level": 3}
    assert task.from_row(row, 1) == {
        "index": 1,
        "problem": "P",
        "answer": "\\frac{1}{2}",
        "solution": "s",
    }
    assert "solution" not in task.from_row({"problem": "P", "answer": "1", "solution": None}, 0)


@pytest.mark.parametrize(
    "row, field",
    [
        ({"answer": "1"}, "problem"),
        ({"problem": "", "answer": "1"}, "problem"),
        ({"problem": 3, "answer": "1"}, "problem"),
        ({"question": "  ", "answer": "1"}, "question"),
        ({"problem": "P"}, "answer"),
        ({"problem": "P", "answer": ""}, "answer"),
        ({"problem": "P", "answer": "   "}, "answer"),
        ({"problem": "P", "answer": None}, "answer"),
        ({"problem": "P", "answer": True}, "answer"),
        ({"problem": "P", "answer": float("nan")}, "answer"),
        ({"problem": "P", "answer": [1]}, "answer"),
        ({"problem": "P", "answer": "1" * (MAX_GOLD_CHARS + 1)}, "answer"),
        ({"problem": "P", "answer": "1", "solution": 3}, "solution"),
    ],
)
def test_from_row_errors_name_the_field(task, row, field):
    with pytest.raises(RecordError) as info:
        task.from_row(row, 0)
    assert info.value.field == field
    assert repr(field) in str(info.value)


def test_from_row_rejects_non_mappings(task):
    with pytest.raises(RecordError, match="JSON object"):
        task.from_row(["P", "1"], 0)


def test_prompt_and_instruction(task):
    record = {"index": 0, "problem": "What is $1+1$?", "answer": "2"}
    expected = (
        "What is $1+1$? Let's think step by step and output the final answer within \\boxed{}."
    )
    assert task.prompt(record) == expected
    assert DEFAULT_INSTRUCTION == expected[len("What is $1+1$?") :]
    assert MathTask(instruction=" Answer:").prompt(record) == "What is $1+1$? Answer:"
    assert task.chat_prompt(record).user == expected
    with pytest.raises(NotImplementedError, match="generator"):
        task.generate(10, seed=0)


GOLD_FORMS = [
    "5",
    "-3",
    "0.25",
    r"\frac{1}{2}",
    r"-\frac{7}{3}",
    r"3\sqrt{2}",
    "(1,2)",
    r"\{1,2,3\}",
    "[1,3)",
    r"(-\infty, 0)",
    r"\text{(B)}",
    "x^2+2x+1",
    r"2\pi",
    r"\sqrt{3}/2",
    r"10^{\circ}",
    r"\dfrac{\sqrt{5}}{5}",
]


def test_reference_completion_scores_one_and_verify_batch_equals_verify(task):
    rng = random.Random(5)
    golds = GOLD_FORMS + [str(rng.randint(-(10**6), 10**6)) for _ in range(20)]
    records = [task.from_row({"problem": "P", "answer": g}, i) for i, g in enumerate(golds)]
    references = [task.reference_completion(r) for r in records]
    assert all(
        ref.endswith(f"\\boxed{{{r['answer']}}}.")
        for ref, r in zip(references, records, strict=True)
    )
    assert task.verify_batch(references, records) == [1.0] * len(records)
    # Mixed right / wrong / empty completions: the batch equals item-by-item verify.
    completions = [
        rng.choice([ref, r"\boxed{0}", "", "The answer is 5", ref.replace("boxed", "fbox")])
        for ref in references
    ]
    assert task.verify_batch(completions, records) == [
        task.verify(c, r) for c, r in zip(completions, records, strict=True)
    ]
    with pytest.raises(ValueError, match="completions"):
        task.verify_batch(completions[:2], records[:3])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"instruction": 3}, "instruction"),
        ({"timeout_s": 0}, "timeout_s"),
        ({"timeout_s": "5"}, "timeout_s"),
        ({"num_workers": 0}, "num_workers"),
    ],
)
def test_bad_task_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MathTask(**kwargs)


# (completion, gold, reward of MathTask (box required), reward of math_reward (plain allowed)),
# labelled by hand: what a thinking model writes, cut off or finished.
THINKING = [
    ("We need 2+2. Hmm, 2+2 = 4? Let me double check that", "4", 0.0, 1.0),  # cut off
    (r"<think>the possible values are 1, 2, 3, 4, 5", "5", 0.0, 0.0),  # never stopped thinking
    (r"<think>maybe \boxed{5}", "5", 0.0, 0.0),  # a box inside an unclosed think
    (r"<think>first guess \boxed{3}</think> So the answer is $\boxed{4}$.", "4", 1.0, 1.0),
    (r"<think>first guess \boxed{3}</think> So the answer is $\boxed{4}$.", "3", 0.0, 0.0),
    (r"<think>it is 7</think> The answer is 7.", "7", 0.0, 1.0),
    (r"The answer is \boxed{\dfrac{3}{4}}", "0.75", 1.0, 1.0),
]


def test_thinking_and_truncated_completions(pool, task):
    completions = [c for c, *_ in THINKING]
    golds = [g for _, g, *_ in THINKING]
    records = [{"index": i, "problem": "p", "answer": g} for i, g in enumerate(golds)]
    assert task.verify_batch(completions, records) == [boxed for *_, boxed, _ in THINKING]
    assert math_rewards(completions, golds, pool) == [plain for *_, plain in THINKING]
    plain_task = MathTask(num_workers=WORKERS, timeout_s=TIMEOUT_S, plain_answers=True)
    assert plain_task.verify_batch(completions, records) == [p for *_, p in THINKING]


def test_a_gold_check_that_dies_is_not_given_up(pool):
    """A gold whose check dies (here: the first check of the batch fails as if its worker had
    been killed from outside) is checked again, and its completions are scored."""

    class FlakyPool:
        def __init__(self):
            self.failed = False

        def map(self, kind, items):
            if kind == "math_gold" and not self.failed:
                self.failed = True
                return [0.0] * len(items)  # the pool's value for a timed-out / killed item
            return pool.map(kind, items)

    gold = "\\frac{7}{13}"  # not checked before in this process
    assert math_rewards([f"\\boxed{{{gold}}} ", "\\boxed{7/13}"], [gold] * 2, FlakyPool()) == [
        1.0,
        1.0,
    ]
