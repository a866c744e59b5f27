r"""Multiple choice (MMLU, GPQA, ...): answer with the letter of the correct choice.

Record (choices lettered A, B, ... in order; ``answer`` is the 0-based index of the correct one)::

    {"index": 0, "question": "2 + 2 = ?", "choices": ["3", "4", "5", "22"], "answer": 1}

Records come from data files only (:mod:`insight_jax.tasks.loaders`); there is no generator.
:meth:`MultipleChoiceTask.from_row` reads the public layouts:

* MMLU: ``question``, ``choices`` (a list; ``options`` as in MMLU-Pro is read the same way), and
  ``answer`` as a 0-based int or a letter ``"A"``, ``"B"``, ...
* GPQA (the columns of its CSV, converted to JSONL or parquet): ``Question``, ``Correct
  Answer``, ``Incorrect Answer 1``, ``Incorrect Answer 2``, ... The choices are shuffled by a
  stable hash of the question (the file lists the correct answer first), so a row always gets
  the same order and the correct letter is spread evenly over rows.
* letter columns: ``question``, ``A``, ``B``, ... and ``answer`` as a letter (or int).

Leading and trailing whitespace of the question and choices is removed (the GPQA CSV has stray
newlines); the row's other fields are kept. Between 2 and 26 choices.

Prompt: the question, the choices one per line as ``"A. text"``, and the instruction (constructor
argument), by default to give the letter within ``\boxed{}``. Reference completion:
``"\boxed{B}"``.

Reward (:func:`choice_letter`): 1.0 if the completion's answer letter is the correct one, else
0.0. The answer letter, on bounded work whatever the completion's length, is read from the
answer region (:func:`~insight_jax.tasks.base.answer_region`: after the last ``</think>``; no
answer if a ``<think>`` is never closed), as the later of:

1. the last box holding a letter: among the last usable ``\boxed{...}`` / ``\fbox{...}``
   (:func:`~insight_jax.tasks.base.boxed_contents`, content within :data:`MAX_BOXED_CHARS`
   characters), the last whose content, stripped and unwrapped from ``\text{}``,
   ``\textbf{}``, ``\mathrm{}``, ``\mathbf{}`` or plain braces, is a letter ``L`` or ``(L)``
   alone, or followed by ``.``, ``)`` or ``:`` and any text (``B. Paris``, ``B) Paris``), or
   ``(L)`` followed by whitespace and any text (a box of another kind, ``\boxed{42 eV}``, is
   skipped);
2. the last of the phrases ``answer is`` / ``Answer:`` (also capitalised / upper-case): after it,
   spaces, ``*``, ``$`` and ``:`` are skipped (markdown bold, math mode), then an optional
   ``\text{`` / ``\textbf{`` / ``\mathrm{`` / ``\mathbf{``; then ``L`` or ``(L)``, not followed
   by a letter or digit (``The answer is (C).``, ``**Answer: C**``; not ``Answer: Cats``).

Neither: no answer.
``L`` is an upper-case ASCII letter among the record's choices (``E`` of four choices, ``b`` or a
full-width ``Ｂ`` are no answer). Only ``rfind`` over the whole text and reads of a bounded
number of characters after the found positions: linear time, constant memory.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from typing import Any, ClassVar

from insight_jax.tasks.base import (
    MAX_ANSWER_CHARS,
    Record,
    RecordError,
    Task,
    answer_region,
    boxed_contents,
    check_field,
    register_task,
    stable_hash,
)

CORRECT_REWARD = 1.0
LETTERS = string.ascii_uppercase
MIN_CHOICES, MAX_CHOICES = 2, len(LETTERS)
# Longest \boxed{} content read; a longer one is no answer (never copied).
MAX_BOXED_CHARS = MAX_ANSWER_CHARS
# Characters after an "answer is" phrase that may be skipped before the letter.
MAX_SKIPPED_CHARS = 16
DEFAULT_INSTRUCTION = r"Answer with the letter of the correct choice within \boxed{}."

_WRAPPERS = ("\\text{", "\\textbf{", "\\mathrm{", "\\mathbf{")
_PHRASES = ("answer is", "Answer is", "ANSWER IS", "answer:", "Answer:", "ANSWER:")
_SKIPPED = frozenset(" \t\r\n*$:")
_AFTER_LETTER = frozenset(".):")
_GPQA_CORRECT = "Correct Answer"
_GPQA_INCORRECT = "Incorrect Answer {}"


def _boxed_letter(content: str, letters: str) -> str | None:
    """Rule 1 of the module docstring on a box's content."""
    text = content.strip()
    unwrapped = True
    while unwrapped:  # at most len(text) rounds: each removes characters
        unwrapped = False
        for opening in (*_WRAPPERS, "{"):
            if text.startswith(opening) and text.endswith("}"):
                text = text[len(opening) : -1].strip()
                unwrapped = True
                break
    if len(text) >= 3 and text[0] == "(" and text[2] == ")" and text[1] in letters:
        rest, letter = text[3:], text[1]
        if not rest or rest[0] in _AFTER_LETTER or rest[0].isspace():
            return letter
        return None
    if text[:1] and text[0] in letters:
        rest = text[1:]
        if not rest or rest[0] in _AFTER_LETTER:
            return text[0]
    return None


def _phrase_letter(text: str, start: int, letters: str) -> str | None:
    """Rule 2 of the module docstring on the text from ``start`` (just after the phrase)."""
    i, limit = start, min(len(text), start + MAX_SKIPPED_CHARS)
    while i < limit and text[i] in _SKIPPED:
        i += 1
    for opening in _WRAPPERS:
        if text.startswith(opening, i):
            i += len(opening)
            break
    if text[i : i + 1] == "(" and text[i + 2 : i + 3] == ")":
        letter, end = text[i + 1], i + 3  # "(L)"
    else:
        letter, end = text[i : i + 1], i + 1
    if not letter or letter not in letters:
        return None
    after = text[end : end + 1]
    return None if after and after.isalnum() else letter


def choice_letter(completion: object, num_choices: int) -> str | None:
    """The answer letter of ``completion`` among the first ``num_choices`` letters, or ``None``.

    Rules and bounds: module docstring. ``None`` for a non-``str`` completion.
    """
    if not isinstance(completion, str):
        return None
    region = answer_region(completion)
    if region is None:
        return None
    letters = LETTERS[:num_choices]
    box_at, box_letter = -1, None
    for at, content in boxed_contents(region, MAX_BOXED_CHARS):
        letter = _boxed_letter(content, letters)
        if letter is not None:
            box_at, box_letter = at, letter
            break
    at, phrase = max((region.rfind(p), p) for p in _PHRASES)
    if at > box_at:
        letter = _phrase_letter(region, at + len(phrase), letters)
        if letter is not None:
            return letter
    return box_letter


def _text(row: Mapping[str, Any], field: str) -> str:
    return check_field(row, field, str).strip()


def _answer_index(value: Any, num_choices: int) -> int:
    """A 0-based index from an int index or a letter; ``RecordError`` for field "answer"."""
    letters = LETTERS[:num_choices]
    if isinstance(value, int) and not isinstance(value, bool):
        if 0 <= value < num_choices:
            return value
    elif isinstance(value, str) and len(value.strip()) == 1 and value.strip() in letters:
        return letters.index(value.strip())
    raise RecordError(
        f"field 'answer' must be an index 0..{num_choices - 1} or a letter {letters[0]}.."
        f"{letters[-1]}, got {value!r:.60}",
        "answer",
    )


def _gpqa(row: Mapping[str, Any]) -> tuple[str, list[str], int, set[str]]:
    question = _text(row, "Question")
    options = [_text(row, _GPQA_CORRECT)]
    used = {"Question", _GPQA_CORRECT}
    while _GPQA_INCORRECT.format(len(options)) in row and len(options) < MAX_CHOICES:
        field = _GPQA_INCORRECT.format(len(options))
        options.append(_text(row, field))
        used.add(field)
    if len(options) < MIN_CHOICES:
        raise RecordError(
            f"a GPQA row needs field {_GPQA_INCORRECT.format(1)!r}", _GPQA_INCORRECT.format(1)
        )
    # A stable pseudo-random order: options sorted by a hash of (question, original position).
    order = sorted(range(len(options)), key=lambda k: stable_hash(f"{question}\x00{k}"))
    return question, [options[k] for k in order], order.index(0), used


def _listed(row: Mapping[str, Any]) -> tuple[str, list[str], int, set[str]]:
    field = "choices" if "choices" in row else "options"
    choices = check_field(row, field, list)
    if not all(isinstance(c, str) for c in choices):
        raise RecordError(f"field {field!r} must be a list of strings, got {choices!r:.80}", field)
    if not MIN_CHOICES <= len(choices) <= MAX_CHOICES:
        raise RecordError(
            f"field {field!r} must hold {MIN_CHOICES}..{MAX_CHOICES} choices, got {len(choices)}",
            field,
        )
    answer = _answer_index(check_field(row, "answer", (int, str)), len(choices))
    return _text(row, "question"), [c.strip() for c in choices], answer, {field, "answer"}


def _lettered(row: Mapping[str, Any]) -> tuple[str, list[str], int, set[str]]:
    columns = []
    for letter in LETTERS:
        if letter not in row:
            break
        columns.append(letter)
    choices = [_text(row, c) for c in columns]
    if len(choices) < MIN_CHOICES:
        raise RecordError("a row with letter columns needs at least 'A' and 'B'", "B")
    answer = _answer_index(check_field(row, "answer", (int, str)), len(choices))
    return _text(row, "question"), choices, answer, {"question", "answer", *columns}


@register_task("multiple_choice")
class MultipleChoiceTask(Task):
    r"""Multiple-choice questions from data files, answered with a letter in ``\boxed{}``.

    Args:
      instruction: the text after the choices (empty: none).
    """

    name = "multiple_choice"
    max_reward = CORRECT_REWARD
    fields: ClassVar[Mapping[str, type]] = {"question": str, "choices": list, "answer": int}

    def __init__(self, instruction: str = DEFAULT_INSTRUCTION):
        if not isinstance(instruction, str):
            raise ValueError(f"instruction must be a str, got {type(instruction).__name__}")
        self.instruction = instruction

    # The instruction changes prompts, not records: config() stays {} so pools are shared.

    def generate(self, num_items: int, seed: int, split: str = "train") -> list[Record]:
        raise NotImplementedError(
            "multiple_choice records come from data files (task.train_path; loaders.load_records)"
        )

    def from_row(self, row: Any, index: int) -> Record:
        """A record from an MMLU, GPQA or letter-column row (module docstring).

        Raises:
          RecordError: naming the row's field that is missing or malformed.
        """
        if not isinstance(row, Mapping):
            raise RecordError(f"a row must be a JSON object / table row, got {type(row).__name__}")
        if _GPQA_CORRECT in row:
            question, choices, answer, used = _gpqa(row)
        elif "choices" in row or "options" in row:
            question, choices, answer, used = _listed(row)
        elif "A" in row:
            question, choices, answer, used = _lettered(row)
        else:
            raise RecordError(
                "the row has no choices: expected field 'choices' (MMLU), 'Correct Answer' and"
                " 'Incorrect Answer 1', ... (GPQA), or letter columns 'A', 'B', ...",
                "choices",
            )
        record = {k: v for k, v in row.items() if k not in used}
        record.update(index=index, question=question, choices=choices, answer=answer)
        self.validate_record(record)
        return record

    def prompt(self, record: Record) -> str:
        lines = [record["question"], ""]
        lines += [f"{LETTERS[i]}. {c}" for i, c in enumerate(record["choices"])]
        if self.instruction:
            lines += ["", self.instruction]
        return "\n".join(lines)

    def reference_completion(self, record: Record) -> str:
        return f"\\boxed{{{LETTERS[record['answer']]}}}"

    def verify(self, completion: str, record: Record) -> float:
        letter = choice_letter(completion, len(record["choices"]))
        return CORRECT_REWARD if letter == LETTERS[record["answer"]] else 0.0

    def validate_record(self, record: Any) -> None:
        super().validate_record(record)
        choices = record["choices"]
        if not MIN_CHOICES <= len(choices) <= MAX_CHOICES:
            raise RecordError(
                f"field 'choices' must hold {MIN_CHOICES}..{MAX_CHOICES} choices, got"
                f" {len(choices)}",
                "choices",
            )
        if not all(isinstance(c, str) for c in choices):
            raise RecordError(f"field 'choices' must be strings, got {choices!r:.80}", "choices")
        if not 0 <= record["answer"] < len(choices):
            raise RecordError(
                f"field 'answer' must be an index 0..{len(choices) - 1}, got {record['answer']}",
                "answer",
            )
