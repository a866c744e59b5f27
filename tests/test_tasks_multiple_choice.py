r"""Multiple choice: the public row layouts, the prompt, and the bounded letter rule of verify.

The letter rule is checked against a regex restatement of the documented rule (a different
formulation: regexes over the whole text, no bounds on the scans), on random soups of the rule's
own pieces, and on adversarial megabyte inputs for speed.
"""

from __future__ import annotations

import re
import string
import time
from collections import Counter

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from insight_jax.tasks import get_task
from insight_jax.tasks.base import RecordError
from insight_jax.tasks.multiple_choice import (
    DEFAULT_INSTRUCTION,
    MultipleChoiceTask,
    choice_letter,
)

MAX_SECONDS_PER_CALL = 0.5
MB = 1_000_000


@pytest.fixture(scope="module")
def task():
    return MultipleChoiceTask()


def _record(answer=1, n=4):
    return {
        "index": 0,
        "question": "Q?",
        "choices": [f"choice {k}" for k in range(n)],
        "answer": answer,
    }


R = _record(answer=1)  # the correct letter is B of A..D


def test_registered_with_max_reward():
    task = get_task("multiple_choice", instruction="Pick one.")
    assert isinstance(task, MultipleChoiceTask) and task.instruction == "Pick one."
    assert task.max_reward == 1.0
    assert task.fingerprint() == MultipleChoiceTask().fingerprint()  # prompts only
    with pytest.raises(NotImplementedError, match="data files"):
        task.generate(4, seed=0)
    with pytest.raises(ValueError, match="instruction"):
        MultipleChoiceTask(instruction=None)


# --- row layouts ------------------------------------------------------------------------------


def test_mmlu_rows(task):
    row = {"question": " 2+2? ", "subject": "math", "choices": ["3", "4 ", "5", "6"], "answer": 1}
    expected = {"question": "2+2?", "subject": "math", "choices": ["3", "4", "5", "6"]}
    assert task.from_row(row, 7) == {**expected, "answer": 1, "index": 7}
    assert task.from_row({**row, "answer": "D"}, 0)["answer"] == 3
    assert task.from_row({**row, "answer": " A"}, 0)["answer"] == 0
    # MMLU-Pro names them options (10 here), the answer a letter.
    pro = {"question": "q", "options": [str(k) for k in range(10)], "answer": "J"}
    assert task.from_row(pro, 0)["choices"] == [str(k) for k in range(10)]
    assert task.from_row(pro, 0)["answer"] == 9


def test_letter_column_rows(task):
    row = {"question": "q", "A": "a", "B": "b", "C": "c", "D": "d", "answer": "C", "id": 5}
    record = task.from_row(row, 2)
    assert record == {"question": "q", "choices": ["a", "b", "c", "d"], "answer": 2, "id": 5,
                      "index": 2}  # fmt: skip
    three = {"question": "q", "A": "a", "B": "b", "C": "c", "E": "not a choice", "answer": 1}
    assert task.from_row(three, 0)["choices"] == ["a", "b", "c"]


def _gpqa_row(question, correct="right", wrong=("w1", "w2", "w3")):
    row = {"Question": question, "Correct Answer": correct, "Subdomain": "x"}
    row.update({f"Incorrect Answer {k + 1}": w for k, w in enumerate(wrong)})
    return row


def test_gpqa_rows_are_shuffled_stably_by_question(task):
    row = _gpqa_row("What is it?\n", correct="\n Neon ", wrong=("N", "O", "C"))
    record = task.from_row(row, 3)
    assert sorted(record["choices"]) == ["C", "N", "Neon", "O"]
    assert record["choices"][record["answer"]] == "Neon"
    assert record["question"] == "What is it?" and record["Subdomain"] == "x"
    assert task.from_row(dict(reversed(row.items())), 3) == record  # field order does not matter
    # The order depends on the question only: the same positions for other answer texts.
    other = task.from_row(_gpqa_row("What is it?", "a", ("b", "c", "d")), 0)
    positions = {"Neon": "a", "N": "b", "O": "c", "C": "d"}
    assert other["choices"] == [positions[c] for c in record["choices"]]
    assert other["answer"] == record["answer"]


def test_gpqa_correct_letters_are_spread_evenly(task):
    # 800 questions: each letter's count is Binomial(800, 1/4), mean 200, sd 12.2.
    rng = np.random.default_rng(0)
    counts = Counter()
    orders = set()
    for k in range(800):
        question = f"question {k} {rng.integers(1 << 30)}"
        record = task.from_row(_gpqa_row(question), k)
        counts[record["answer"]] += 1
        orders.add(tuple(record["choices"]))
    assert sorted(counts) == [0, 1, 2, 3]
    assert all(150 <= c <= 250 for c in counts.values()), counts
    assert len(orders) == 24  # every permutation of 4 occurs


def test_gpqa_with_fewer_wrong_answers(task):
    record = task.from_row(_gpqa_row("q", wrong=("w1",)), 0)
    assert sorted(record["choices"]) == ["right", "w1"]


@pytest.mark.parametrize(
    ("row", "field"),
    [
        ({"choices": ["a", "b"], "answer": 0}, "question"),
        ({"question": 3, "choices": ["a", "b"], "answer": 0}, "question"),
        ({"question": "q", "choices": "a b", "answer": 0}, "choices"),
        ({"question": "q", "choices": ["a", 2], "answer": 0}, "choices"),
        ({"question": "q", "choices": ["a"], "answer": 0}, "choices"),
        ({"question": "q", "choices": ["a"] * 27, "answer": 0}, "choices"),
        ({"question": "q", "options": ["a"], "answer": 0}, "options"),
        ({"question": "q", "choices": ["a", "b"]}, "answer"),
        ({"question": "q", "choices": ["a", "b"], "answer": 2}, "answer"),
        ({"question": "q", "choices": ["a", "b"], "answer": -1}, "answer"),
        ({"question": "q", "choices": ["a", "b"], "answer": "C"}, "answer"),
        ({"question": "q", "choices": ["a", "b"], "answer": "b"}, "answer"),
        ({"question": "q", "choices": ["a", "b"], "answer": "AB"}, "answer"),
        ({"question": "q", "choices": ["a", "b"], "answer": True}, "answer"),
        ({"question": "q", "choices": ["a", "b"], "answer": 1.0}, "answer"),
        ({"question": "q", "A": "a", "answer": "A"}, "B"),
        ({"question": "q", "A": "a", "B": None, "answer": "A"}, "B"),
        ({"question": "q", "A": "a", "B": "b", "answer": "C"}, "answer"),
        ({"Question": "q", "Correct Answer": "a"}, "Incorrect Answer 1"),
        ({"Question": "q", "Correct Answer": 1, "Incorrect Answer 1": "b"}, "Correct Answer"),
        ({"Correct Answer": "a", "Incorrect Answer 1": "b"}, "Question"),
        ({"question": "q", "answer": 0}, "choices"),
    ],
)
def test_bad_rows_name_the_field(task, row, field):
    with pytest.raises(RecordError) as info:
        task.from_row(row, 0)
    assert info.value.field == field
    assert repr(field) in str(info.value) or field in str(info.value)


def test_non_mapping_rows_and_bad_records(task):
    with pytest.raises(RecordError, match="JSON object"):
        task.from_row(["q", "a"], 0)
    for record, field in [
        ({**R, "answer": 4}, "answer"),
        ({**R, "choices": ["a"]}, "choices"),
        ({**R, "choices": ["a", 1]}, "choices"),
        ({**R, "question": None}, "question"),
    ]:
        with pytest.raises(RecordError) as info:
            task.validate_record(record)
        assert info.value.field == field


# --- prompt and reference ---------------------------------------------------------------------


def test_prompt_letters_the_choices(task):
    record = _record(answer=2, n=3)
    assert task.prompt(record) == (
        f"Q?\n\nA. choice 0\nB. choice 1\nC. choice 2\n\n{DEFAULT_INSTRUCTION}"
    )
    assert "\\boxed{}" in DEFAULT_INSTRUCTION
    assert (
        MultipleChoiceTask(instruction="").prompt(record)
        == "Q?\n\nA. choice 0\nB. choice 1\nC. choice 2"
    )
    assert task.chat_prompt(record).user == task.prompt(record)


@pytest.mark.parametrize("n", [2, 4, 10, 26])
def test_reference_completions_score_one_and_others_zero(task, n):
    for answer in range(n):
        record = _record(answer=answer, n=n)
        reference = task.reference_completion(record)
        assert reference.endswith(f"\\boxed{{{string.ascii_uppercase[answer]}}}")
        assert task.verify(reference, record) == 1.0
        wrong = string.ascii_uppercase[(answer + 1) % n]
        assert task.verify(f"\\boxed{{{wrong}}}", record) == 0.0


# --- the letter rule --------------------------------------------------------------------------

# (completion, reward for R: correct letter B of four).
_CASES = [
    ("\\boxed{B}", 1.0),
    ("\\boxed{ B }", 1.0),
    ("\\boxed{(B)}", 1.0),
    ("\\boxed{B.}", 1.0),
    ("\\boxed{B) choice 1}", 1.0),
    ("\\boxed{B. choice 1}", 1.0),
    ("\\boxed{B: choice 1}", 1.0),
    ("\\boxed{(B) choice 1}", 1.0),
    ("\\boxed{\\text{B}}", 1.0),
    ("\\boxed{\\textbf{(B)}}", 1.0),
    ("\\boxed{\\mathrm{B}}", 1.0),
    ("\\boxed{{B}}", 1.0),
    ("\\boxed{A} no, wait: \\boxed{B}", 1.0),  # the last box
    ("\\boxed{B} no, wait: \\boxed{A}", 0.0),
    ("\\boxed{\\boxed{B}}", 1.0),  # the last opening is the inner box
    ("\\boxed{A \\boxed{B}}", 1.0),
    ("\\boxed{B} \\boxed{", 1.0),  # an unclosed last box: the one before it
    ("\\boxed{B", 0.0),
    ("\\boxed{}", 0.0),
    ("\\boxed{b}", 0.0),  # lower case
    ("\\boxed{E}", 0.0),  # not a choice of four
    ("\\boxed{BC}", 0.0),
    ("\\boxed{B and C}", 0.0),
    ("\\boxed{B, C}", 0.0),
    ("\\boxed{choice 1}", 0.0),  # the text of the choice is not its letter
    ("\\boxed{2}", 0.0),
    ("\\boxed{Ｂ}", 0.0),  # full-width
    ("\\boxed{Β}", 0.0),  # Greek capital beta
    ("\\boxed{B\x00}", 0.0),
    ("\\boxed{\x00B}", 0.0),
    ("\\boxed{B}" + "The answer is (A).", 0.0),  # the later of box and phrase decides
    ("The answer is (A). Finally: \\boxed{B}", 1.0),
    ("The energy is \\boxed{42 eV}, so the answer is (B).", 1.0),  # a box without a letter
    ("\\fbox{B}", 1.0),
    ("<think>\\boxed{A}</think>\nAnswer: B", 1.0),  # only what follows the thinking counts
    ("<think>\\boxed{B}</think>\nI am not sure.", 0.0),
    ("<think>so it is \\boxed{B}", 0.0),  # never stopped thinking
    ("The answer is (B).", 1.0),
    ("The answer is B", 1.0),
    ("the answer is: B, since ...", 1.0),
    ("The final answer is $\\text{B}$.", 1.0),
    ("**Answer: B**", 1.0),
    ("Answer:B", 1.0),
    ("ANSWER: (B)", 1.0),
    ("Answer: A. Hmm. The answer is B.", 1.0),  # the last phrase
    ("The answer is B. Answer: A", 0.0),
    ("Answer: Banana", 0.0),  # a word, not a letter
    ("Answer: B2", 0.0),
    ("Answer: b", 0.0),
    ("The answer is " + " " * 20 + "B", 0.0),  # too far from the phrase
    ("answer is Ｂ", 0.0),
    ("answer is \x00B", 0.0),
    ("(B)", 0.0),  # no box, no phrase: no answer
    ("B", 0.0),
    ("", 0.0),
]


@pytest.mark.parametrize(("completion", "expected"), _CASES, ids=range(len(_CASES)))
def test_letter_rule_cases(task, completion, expected):
    assert task.verify(completion, R) == expected


_PIECES = [
    "\\boxed{", "{", "}", "\\text{", "(", ")", "A", "B", "C", "D", "E", "b", "x", " ", "  ", ".",
    ":", "*", "$", "\n", "answer is", "Answer:", "ANSWER IS", "the ", "\x00", "Ｂ", "1",
    "<think>", "</think>", "\\fbox ", "\\{",
]  # fmt: skip
_soup = st.lists(st.sampled_from(_PIECES), max_size=40).map("".join)
_short = st.lists(st.sampled_from(_PIECES), max_size=6).map("".join)
_pick = st.sampled_from
# A letter in the rule's forms, or near misses: wrappers, parentheses, what follows.
_answer_like = st.tuples(
    st.lists(_pick(["\\text{", "\\textbf{", "\\mathbf{", "{", "\\fbox{"]), max_size=2),
    _pick(["", "(", " "]),
    _pick(["A", "B", "C", "D", "E", "b", "Ｂ"]),
    _pick(["", ")", ".", ":", " ", "x", "1", "_", ","]),
    _pick(["", " x", "x", " ", ")", "\x00"]),
).map(lambda t: "".join(t[0]) + "".join(t[1:]) + "}" * len(t[0]))
_skips = st.lists(_pick([" ", "\n", "*", "$", ":", "\t"]), max_size=20).map("".join)
# Free soups, and soups around a box or after a phrase, so that every branch of the rule
# (wrappers, "(L)", "L.", skipped characters ...) is reached often.
_SOUPS = st.one_of(
    _soup,
    st.tuples(_soup, _short, _soup).map(lambda t: f"{t[0]}\\boxed{{{t[1]}}}{t[2]}"),
    st.tuples(_soup, _answer_like, _short).map(lambda t: f"{t[0]}\\boxed{{{t[1]}}}{t[2]}"),
    st.tuples(_soup, _pick(["answer is", "Answer:"]), _short).map("".join),
    st.tuples(_soup, _pick(["answer is", "ANSWER:"]), _skips, _answer_like).map("".join),
)
_LETTER = r"[A-D]"
_WRAPPED = re.compile(r"(?:\\text|\\textbf|\\mathrm|\\mathbf)?\{(.*)\}", re.DOTALL)


def _reference_letter(text: str) -> str | None:
    """The documented rule restated with regexes (letters A..D): the answer region, every box
    opening's content found by one balanced-brace scan, and the later of the last lettered box
    and the last phrase."""
    if "</think>" in text:
        text = text[text.rfind("</think>") + len("</think>") :]
    elif "<think>" in text:
        return None
    openings = list(re.finditer(r"\\(?:boxed|fbox)", text))[-8:]
    box_at, box_letter = -1, None
    for opening in reversed(openings):
        m = re.compile(r"[ \t\r\n]{0,8}\{").match(text, opening.end())
        if m is None:
            continue
        start, depth, end = m.end(), 1, None
        for token in re.finditer(r"\\.|[{}]", text[start:], re.DOTALL):
            depth += {"{": 1, "}": -1}.get(token.group(), 0)
            if depth > 20:
                break
            if depth == 0:
                end = start + token.start()
                break
        if end is None or end - start > 128:
            continue
        content = text[start:end].strip()
        while (w := _WRAPPED.fullmatch(content)) is not None:
            content = w.group(1).strip()
        w = re.match(rf"\(({_LETTER})\)(?:$|[.):\s])", content) or re.match(
            rf"({_LETTER})(?:$|[.):])", content
        )
        if w:
            box_at, box_letter = opening.start(), w.group(1)
            break
    phrases = ["answer is", "Answer is", "ANSWER IS", "answer:", "Answer:", "ANSWER:"]
    found = [(m.start(), m.end()) for p in phrases for m in re.finditer(re.escape(p), text)]
    if found and max(found)[0] > box_at:
        end = max(found)[1]
        m = re.match(
            rf"[ \t\r\n*$:]{{0,16}}(?:\\text\{{|\\textbf\{{|\\mathrm\{{|\\mathbf\{{)?"
            rf"(?:\(({_LETTER})\)|({_LETTER}))(?![^\W_])",
            text[end:],
        )
        if m:
            return m.group(1) or m.group(2)
    return box_letter


@settings(
    max_examples=3000, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
@given(text=_SOUPS)
def test_letter_rule_matches_the_regex_reference(text):
    assert choice_letter(text, 4) == _reference_letter(text)


@settings(
    max_examples=1000, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
@given(prefix=st.text(max_size=200), suffix=st.text(max_size=200), k=st.integers(0, 3))
def test_a_boxed_letter_after_any_text_is_found(prefix, suffix, k):
    letter = "ABCD"[k]
    # The suffix holds no box, answer phrase or think tag (the later answer decides; an
    # unclosed <think> hides it); the prefix may hold anything but an unclosed <think>.
    for hidden in ("\\boxed", "\\fbox", "<think>", "</think>", "answer", "Answer", "ANSWER"):
        suffix = suffix.replace(hidden, "")
    prefix += "</think>" if "<think>" in prefix else ""
    assert choice_letter(f"{prefix}\\boxed{{{letter}}}{suffix}", 4) == letter


def _timed_verify(task, completion, record):
    """The reward, after checking its type and that the call is fast (best of 3 if slow)."""
    times = []
    for _ in range(3):
        start = time.perf_counter()
        reward = task.verify(completion, record)
        times.append(time.perf_counter() - start)
        assert isinstance(reward, float) and reward in (0.0, 1.0)
        if times[-1] < MAX_SECONDS_PER_CALL:
            break
    assert min(times) < MAX_SECONDS_PER_CALL, (times, completion[:80])
    return reward


@settings(
    max_examples=1000, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
@given(text=st.text(max_size=300))
def test_fuzz_arbitrary_text(task, text):
    _timed_verify(task, text, R)
    _timed_verify(task, f"\\boxed{{{text}}}", R)
    _timed_verify(task, f"The answer is {text}", R)


_ADVERSARIAL = [
    ("x" * (5 * MB), 0.0),
    ("x" * (5 * MB) + "\\boxed{B}", 1.0),
    ("\\boxed{B}" + "x" * (5 * MB), 1.0),
    ("\\boxed{B}" + "}" * MB, 1.0),
    ("\\boxed{" * (MB // 7), 0.0),
    ("\\boxed{" * (MB // 7) + "B" + "}" * (MB // 7), 1.0),  # deeply nested: the innermost box
    ("\\boxed{B}" + "\\boxed{" * (MB // 7), 0.0),  # the last box is unclosed
    ("\\boxed{" + "{" * MB + "B" + "}" * MB, 0.0),  # the content is far over the bound
    ("\\boxed{" + "B" * MB + "}", 0.0),
    ("\\boxed{" + " " * 200 + "B}", 0.0),  # over the bound, even if whitespace
    ("\\boxed{" + "\\text{" * 10 + "B" + "}" * 11, 1.0),  # 71 characters, unwrapped 10 times
    ("\\boxed{" + "\\text{" * 20 + "B" + "}" * 21, 0.0),  # 141 characters: over the bound
    ("(A) (B) (C) (D) " * (MB // 16), 0.0),  # many letters, no box, no phrase
    ("\\boxed{A}" * (MB // 9) + "\\boxed{B}", 1.0),
    ("\\boxed{B}" * (MB // 9) + "\\boxed{A}", 0.0),
    ("The answer is A. " * (MB // 17) + "The answer is B.", 1.0),
    ("Answer: " * (MB // 8), 0.0),
    ("answer is" * (MB // 9) + " B", 1.0),
    ("\x00" * MB, 0.0),
    ("\\boxed{\x00" + "\x00" * MB + "}", 0.0),
    ("\x00" * MB + "\\boxed{B}" + "\x00" * MB, 1.0),
    ("Ｂ" * MB, 0.0),
    ("\\boxed{Ｂ}" + "Ｂ" * MB, 0.0),
    ("😀" * MB + "\\boxed{B}" + "é" * MB, 1.0),
    ("\\boxed{" + "😀" * 100 + "B}", 0.0),
]


@pytest.mark.parametrize(("completion", "expected"), _ADVERSARIAL, ids=range(len(_ADVERSARIAL)))
def test_adversarial_inputs(task, completion, expected):
    assert _timed_verify(task, completion, R) == expected


@pytest.mark.parametrize("completion", [None, 123, b"\\boxed{B}", ["\\boxed{B}"]])
def test_non_string_completions_score_zero(task, completion):
    assert task.verify(completion, R) == 0.0
    assert choice_letter(completion, 4) is None
