"""Graded multi-digit arithmetic: the small stand-in for math reasoning with verifiable answers.

Record::

    {"index": 3, "question": "37+45", "answer": "82", "level": 2}

``level`` is the number of digits of both operands (1 -> 0..9, 2 -> 10..99, ...); the operation is
drawn from ``ops`` (+, -, *). One pool mixes levels (``levels``, ``level_weights``), so a policy
solves low levels often and high levels (and multiplications) rarely: the spread of success rates
that online data selection exploits. Subtraction puts the larger operand first, so every answer is
a non-negative integer.

Prompt: ``"37+45="``. Reference completion: ``"<answer>82</answer>"``: the same answer tag as
Countdown (and the paper), so one extraction rule serves every task and real checkpoints.

Reward: 1.0 iff the last complete ``<answer>...</answer>`` anywhere in the completion holds an
integer (optional sign, ASCII digits, surrounding whitespace allowed) equal to the answer, else
0.0. No partial credit: a binary reward is what the Beta-Bernoulli beliefs of the selector model.
Parsing is bounded (a tag content over :data:`~insight_jax.tasks.base.MAX_ANSWER_CHARS`
characters scores 0.0, a number over :data:`MAX_NUMBER_CHARS` too) and never uses ``eval``.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping
from typing import Any, ClassVar

from insight_jax.tasks.base import (
    MAX_CONSECUTIVE_REJECTIONS,
    Record,
    RecordError,
    Task,
    check_split,
    extract_last_tag,
    register_task,
    split_of,
    split_seed,
    wrap_answer,
)

# Longest numeric answer parsed; longer text is not a number we accept (bounds int() work).
MAX_NUMBER_CHARS = 64
MAX_LEVEL = 9

_INT = re.compile(r"[+-]?[0-9]+")


def parse_int(text: object) -> int | None:
    """Parses ``"[+-]digits"`` (surrounding whitespace allowed); ``None`` otherwise. Never raises.

    Texts longer than :data:`MAX_NUMBER_CHARS` (after stripping) and non-``str`` inputs give
    ``None``.
    """
    if not isinstance(text, str):
        return None
    text = text.strip()
    if len(text) > MAX_NUMBER_CHARS or not _INT.fullmatch(text):
        return None
    return int(text)


def arithmetic_reward(completion: str, answer: str, tag: str = "answer") -> float:
    """1.0 iff the last complete answer tag holds the integer ``answer``, else 0.0. Never raises."""
    predicted = parse_int(extract_last_tag(completion, tag))
    gold = parse_int(answer)
    return 1.0 if predicted is not None and predicted == gold else 0.0


def _operand(rng: random.Random, digits: int) -> int:
    """A uniformly random integer with exactly ``digits`` digits (0..9 for one digit)."""
    low = 0 if digits == 1 else 10 ** (digits - 1)
    return rng.randint(low, 10**digits - 1)


@register_task("arithmetic")
class ArithmeticTask(Task):
    """Mixed-difficulty ``a op b`` questions.

    Args:
      levels: operand digit counts in the pool (1..MAX_LEVEL).
      ops: operations to draw from, a subset of ``("+", "-", "*")``.
      level_weights: relative frequency of each level in the pool (default uniform).
      tag: the answer tag name.
      unique: no repeated question within a pool. Off by default: level 1 has only ~250 distinct
        questions, so pools of thousands would run out; repeats are harmless for training.

    Splits: a question belongs to "train" or "test" by a stable hash of its text (10% test), so
    the splits are disjoint by construction, whatever the seeds.
    """

    name = "arithmetic"
    max_reward = 1.0  # arithmetic_reward is 1.0 or 0.0
    fields: ClassVar[Mapping[str, type]] = {"question": str, "answer": str}
    # Generated records always have a level; user data may not.
    optional_fields: ClassVar[Mapping[str, type]] = {"level": int}

    def __init__(
        self,
        levels: tuple[int, ...] | list[int] = (1, 2, 3, 4),
        ops: tuple[str, ...] | list[str] | str = ("+", "-", "*"),
        level_weights: tuple[float, ...] | list[float] | None = None,
        tag: str = "answer",
        unique: bool = False,
    ):
        self.levels = tuple(levels)
        self.ops = tuple(ops)
        if not self.levels or any(not 1 <= lv <= MAX_LEVEL for lv in self.levels):
            raise ValueError(f"levels must be digit counts in 1..{MAX_LEVEL}, got {levels!r}")
        if not self.ops or any(op not in ("+", "-", "*") for op in self.ops):
            raise ValueError(f"ops must be a non-empty subset of + - *, got {ops!r}")
        weights = tuple(level_weights) if level_weights is not None else (1.0,) * len(self.levels)
        if len(weights) != len(self.levels) or any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ValueError("level_weights must be non-negative, one per level, not all zero")
        self.level_weights = weights
        self.tag = tag
        self.unique = unique

    def config(self) -> dict[str, Any]:
        return {
            "levels": list(self.levels),
            "ops": list(self.ops),
            "level_weights": list(self.level_weights),
            "unique": self.unique,
        }

    def generate(self, num_items: int, seed: int, split: str = "train") -> list[Record]:
        """``num_items`` questions of ``split``, a deterministic function of the args.

        Raises:
          ValueError: for an unknown split, or (``unique=True``) if the levels hold too few
            distinct questions.
        """
        check_split(split)
        rng = random.Random(split_seed(seed, split, self.name))
        records: list[Record] = []
        seen: set[str] = set()
        misses = 0  # draws since the last accepted one
        while len(records) < num_items:
            misses += 1
            if misses > MAX_CONSECUTIVE_REJECTIONS:
                raise ValueError(
                    f"could only generate {len(records)} of {num_items} distinct {split}"
                    " questions; add higher levels or pass unique=False"
                )
            (level,) = rng.choices(self.levels, weights=self.level_weights)
            op = rng.choice(self.ops)
            a, b = _operand(rng, level), _operand(rng, level)
            if op == "-" and a < b:
                a, b = b, a
            question = f"{a}{op}{b}"
            if split_of(question) != split or (self.unique and question in seen):
                continue
            misses = 0
            seen.add(question)
            answer = a + b if op == "+" else a - b if op == "-" else a * b
            records.append(
                {"index": len(records), "question": question, "answer": str(answer), "level": level}
            )
        return records

    def prompt(self, record: Record) -> str:
        return f"{record['question']}="

    def reference_completion(self, record: Record) -> str:
        return wrap_answer(record["answer"], self.tag)

    def verify(self, completion: str, record: Record) -> float:
        return arithmetic_reward(completion, record["answer"], self.tag)

    def validate_record(self, record: Any) -> None:
        super().validate_record(record)
        if parse_int(record["answer"]) is None:
            raise RecordError(
                f"field 'answer' must be an integer string, got {record['answer']!r:.60}", "answer"
            )
