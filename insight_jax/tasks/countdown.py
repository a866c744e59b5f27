"""Countdown: combine the given numbers with + - * / (each exactly once) to reach the target.

Record (the public Countdown field names, plus our index and a known solution)::

    {"index": 7, "nums": [3, 5, 2], "target": 16, "solution": "(3+5)*2"}

``solution`` is optional (user data such as the public Countdown sets has none; then
:meth:`CountdownTask.reference_completion` finds one with a small exact solver).

Prompt (``prompt_style="compact"``, for tiny character-level policies)::

    "3 5 2=16:"

Reference completion: ``"<answer>(3+5)*2</answer>"``. The paper's tag is kept (17 characters of
overhead) so the paper's reward applies unchanged and real checkpoints use the same format; the
expression itself is rendered with the fewest parentheses.

For real checkpoints the prompts of the peers (TinyZero's ``make_prefix``, reused by MoPPS's
Countdown recipe in verl), word for word, so results compare:

* ``prompt_style="base"``: TinyZero's base-model template, a "User: ... Assistant:" conversation
  in plain text that opens the assistant's answer with "Let me solve this step by step.\n<think>".
  With a chat model, the whole text is one user turn (as MoPPS feeds it to verl).
* ``prompt_style="instruct"``: TinyZero's instruct template: a system turn, the question as the
  user turn (with its leading space), and the assistant's turn opened with "Let me solve this step
  by step.\n<think>". With a chat template it is rendered by the tokenizer's template; without
  one, as the ChatML text TinyZero writes for Qwen instruct models.

Both show the numbers as a Python list (``[3, 5, 2]``), as the peers do.

Reward (the paper's; METHOD.md "Countdown reward"), on the last complete ``<answer>...</answer>``:

* 1.0: the expression uses each given number exactly once (as a multiset) and equals the target
  exactly (rational arithmetic, so ``6/4*4`` is 6);
* 0.1: the content is a well-formed expression but wrong (wrong value, wrong/missing/extra
  numbers, or undefined: division by zero);
* 0.0: no complete answer tag, or content that is not a well-formed expression.

Model text is never passed to ``eval``. :func:`parse_expression` is a recursive-descent parser of
the grammar ::

    expr   := term (("+" | "-") term)*
    term   := factor (("*" | "/") factor)*
    factor := NUMBER | "(" expr ")"
    NUMBER := "0" | [1-9][0-9]*        (ASCII digits, at most MAX_LITERAL_DIGITS)

with spaces/tabs/newlines allowed between tokens. Decisions, each a bound or a format choice:

* No unary minus or plus (``-3+5`` is malformed): Countdown's operations are binary, and any
  positive target reachable with negations is reachable without them.
* No leading zeros (``03``), decimals, ``=``, or Unicode digits: malformed.
* Division by zero is well-formed but wrong (0.1): the text is a valid expression, its value is
  undefined.
* Bounds: the whole completion is searched for the last complete tag (linear time, see
  :func:`~insight_jax.tasks.base.extract_last_tag`); a tag content over 128 characters
  (:data:`~insight_jax.tasks.base.MAX_ANSWER_CHARS`, whitespace included) is malformed (0.0);
  parenthesis depth <= 32, literals <= 6 digits, numerators/denominators <= 2**1024 (an
  intermediate beyond that is undefined -> 0.1; with the other bounds it cannot happen for 128
  characters, the cap is defence in depth).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, ClassVar

from insight_jax.tasks.base import (
    MAX_ANSWER_CHARS,
    MAX_CONSECUTIVE_REJECTIONS,
    ChatPrompt,
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

CORRECT_REWARD = 1.0
FORMAT_REWARD = 0.1

MAX_DEPTH = 32
MAX_LITERAL_DIGITS = 6
MAX_VALUE_BITS = 1024

_DIGITS = frozenset("0123456789")
_SPACE = frozenset(" \t\n\r")
_PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2}
_ATOM = 3  # precedence of a literal or a parenthesised expression

PROMPT_STYLES = ("compact", "base", "instruct")
# TinyZero's Countdown prompts (examples/data_preprocess/countdown.py, make_prefix), verbatim.
_QUESTION = (
    "Using the numbers {nums}, create an equation that equals {target}. You can use basic"
    " arithmetic operations (+, -, *, /) and each number can only be used once. Show your work in"
    " <think> </think> tags. And return the final answer in <answer> </answer> tags, for example"
    " <answer> (1 + 2) / 3 </answer>."
)
_BASE_PREAMBLE = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant"
    " solves it. The assistant first thinks about the reasoning process in the mind and then"
    " provides the user with the answer."
)
_INSTRUCT_SYSTEM = (
    "You are a helpful assistant. You first thinks about the reasoning process in the mind and"
    " then provides the user with the answer."
)
_OPENING = "Let me solve this step by step.\n<think>"


class _Malformed(Exception):
    """Internal: the text is not an expression of the grammar (or exceeds a syntactic bound)."""


def _apply(op: str, a: Fraction | None, b: Fraction | None) -> Fraction | None:
    """Exact ``a op b``; ``None`` means undefined (division by zero, or magnitude over the cap)."""
    if a is None or b is None:
        return None
    if op == "+":
        out = a + b
    elif op == "-":
        out = a - b
    elif op == "*":
        out = a * b
    elif b == 0:
        return None
    else:
        out = a / b
    if out.numerator.bit_length() > MAX_VALUE_BITS or out.denominator.bit_length() > MAX_VALUE_BITS:
        return None
    return out


class _Parser:
    """Recursive descent over one string; records the integer literals it reads."""

    def __init__(self, text: str):
        self.text = text
        self.pos = 0
        self.depth = 0
        self.literals: list[int] = []

    def parse(self) -> Fraction | None:
        value = self._expr()
        if self._peek() != "":
            raise _Malformed
        return value

    def _peek(self) -> str:
        """Skips whitespace; returns the next character, or "" at the end."""
        text, n = self.text, len(self.text)
        while self.pos < n and text[self.pos] in _SPACE:
            self.pos += 1
        return text[self.pos] if self.pos < n else ""

    def _expr(self) -> Fraction | None:
        value = self._term()
        while (op := self._peek()) in ("+", "-"):
            self.pos += 1
            value = _apply(op, value, self._term())
        return value

    def _term(self) -> Fraction | None:
        value = self._factor()
        while (op := self._peek()) in ("*", "/"):
            self.pos += 1
            value = _apply(op, value, self._factor())
        return value

    def _factor(self) -> Fraction | None:
        c = self._peek()
        if c == "(":
            # The depth bound keeps recursion (3 frames per level) far from Python's limit.
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise _Malformed
            self.pos += 1
            value = self._expr()
            if self._peek() != ")":
                raise _Malformed
            self.pos += 1
            self.depth -= 1
            return value
        if c in _DIGITS and c != "":
            start = self.pos
            while self.pos < len(self.text) and self.text[self.pos] in _DIGITS:
                self.pos += 1
                if self.pos - start > MAX_LITERAL_DIGITS:
                    raise _Malformed
            digits = self.text[start : self.pos]
            if len(digits) > 1 and digits[0] == "0":
                raise _Malformed
            literal = int(digits)
            self.literals.append(literal)
            return Fraction(literal)
        raise _Malformed


@dataclass(frozen=True)
class ParsedExpression:
    """A well-formed expression: its exact value (``None`` if undefined) and literals in order."""

    value: Fraction | None
    literals: tuple[int, ...]


def parse_expression(text: str, max_chars: int = MAX_ANSWER_CHARS) -> ParsedExpression | None:
    """Parses and exactly evaluates an arithmetic expression (grammar and bounds: module docstring).

    Returns:
      ``ParsedExpression`` if ``text`` is well-formed (its ``value`` is ``None`` when undefined,
      e.g. ``1/0``), else ``None`` (including texts longer than ``max_chars``). Never raises.
    """
    if not isinstance(text, str) or len(text) > max_chars:
        return None
    parser = _Parser(text)
    try:
        value = parser.parse()
    except _Malformed:
        return None
    return ParsedExpression(value=value, literals=tuple(parser.literals))


def countdown_reward(completion: str, nums: list[int], target: int, tag: str = "answer") -> float:
    """The paper's Countdown reward in {0.0, 0.1, 1.0} (rules: module docstring). Never raises."""
    content = extract_last_tag(completion, tag)
    if content is None:
        return 0.0
    parsed = parse_expression(content)
    if parsed is None:
        return 0.0
    if (
        parsed.value is not None
        and parsed.value == target
        and Counter(parsed.literals) == Counter(nums)
    ):
        return CORRECT_REWARD
    return FORMAT_REWARD


# ---------------------------------------------------------------------------------------------
# Generation and solving. Expressions are carried as (value, text, precedence) so that the text
# can be rendered with the fewest parentheses as it is built.

_Node = tuple[Fraction, str, int]


def _combine(op: str, left: _Node, right: _Node) -> _Node | None:
    """``left op right`` with minimal parentheses; ``None`` if undefined."""
    value = _apply(op, left[0], right[0])
    if value is None:
        return None
    prec = _PRECEDENCE[op]
    left_text = f"({left[1]})" if left[2] < prec else left[1]
    # a-(b-c) and a/(b*c) need parentheses on the right; a+(b-c) and a*(b/c) do not (exactly).
    right_paren = right[2] < prec or (right[2] == prec and op in ("-", "/"))
    right_text = f"({right[1]})" if right_paren else right[1]
    return value, f"{left_text}{op}{right_text}", prec


def _random_expression(rng: random.Random, leaves: list[int]) -> _Node | None:
    """A random binary expression tree over ``leaves`` in the given order; ``None`` if undefined."""
    if len(leaves) == 1:
        return Fraction(leaves[0]), str(leaves[0]), _ATOM
    split = rng.randint(1, len(leaves) - 1)
    left = _random_expression(rng, leaves[:split])
    right = _random_expression(rng, leaves[split:])
    if left is None or right is None:
        return None
    return _combine(rng.choice("+-*/"), left, right)


def solve(nums: list[int], target: int, max_nodes: int = 200_000) -> str | None:
    """Finds an expression using each of ``nums`` once that equals ``target``, or ``None``.

    Exhaustive search over pairwise combinations with exact fractions, memoising unsolvable
    multisets; gives up (``None``) after ``max_nodes`` combinations so that large user-supplied
    instances cannot hang. Instant for 3-4 numbers.
    """
    goal = Fraction(target)
    dead: set[tuple[Fraction, ...]] = set()
    budget = [max_nodes]

    def search(nodes: list[_Node]) -> str | None:
        if len(nodes) == 1:
            return nodes[0][1] if nodes[0][0] == goal else None
        key = tuple(sorted(n[0] for n in nodes))
        if key in dead:
            return None
        for i in range(len(nodes)):
            for j in range(len(nodes)):
                if i == j:
                    continue
                rest = [n for k, n in enumerate(nodes) if k not in (i, j)]
                for op in "+-*/":
                    if op in "+*" and i > j:  # commutative: one order suffices
                        continue
                    budget[0] -= 1
                    if budget[0] < 0:
                        return None
                    node = _combine(op, nodes[i], nodes[j])
                    if node is not None and (found := search([*rest, node])) is not None:
                        return found
        dead.add(key)
        return None

    return search([(Fraction(n), str(n), _ATOM) for n in nums])


def problem_key(nums: list[int], target: int) -> str:
    """Canonical id of a problem (number order does not matter); decides its split."""
    return f"{','.join(map(str, sorted(nums)))}={target}"


@register_task("countdown")
class CountdownTask(Task):
    """Countdown with generated, always reachable targets.

    Args:
      num_numbers: the allowed counts of given numbers; each record draws one uniformly.
      min_number, max_number: given numbers are drawn uniformly from this range (inclusive).
      min_target, max_target: targets are integers in this range (inclusive).
      prompt_style: "compact" (``"3 5 2=16:"``, for character-level policies), or TinyZero's
        "base" or "instruct" template (module docstring).
      tag: the answer tag name (the paper's is "answer"; the TinyZero templates ask for it, so
        they need tag "answer").
      unique: no two records of one pool are the same problem (same number multiset and target).

    Splits: a problem belongs to "train" or "test" by a stable hash of its canonical key (10% test),
    so the splits are disjoint by construction, whatever the seeds.
    """

    name = "countdown"
    max_reward = CORRECT_REWARD
    fields: ClassVar[Mapping[str, type]] = {"nums": list, "target": int}
    optional_fields: ClassVar[Mapping[str, type]] = {"solution": str}

    def __init__(
        self,
        num_numbers: tuple[int, ...] | list[int] | int = (3, 4),
        min_number: int = 1,
        max_number: int = 20,
        min_target: int = 1,
        max_target: int = 100,
        prompt_style: str = "compact",
        tag: str = "answer",
        unique: bool = True,
    ):
        counts = (num_numbers,) if isinstance(num_numbers, int) else tuple(num_numbers)
        if not counts or any(c < 2 or c > 6 for c in counts):
            raise ValueError(f"num_numbers must be counts in 2..6, got {num_numbers!r}")
        if not 0 <= min_number <= max_number or not min_target <= max_target:
            raise ValueError("need 0 <= min_number <= max_number and min_target <= max_target")
        if prompt_style not in PROMPT_STYLES:
            raise ValueError(f"prompt_style must be one of {PROMPT_STYLES}, got {prompt_style!r}")
        if prompt_style != "compact" and tag != "answer":
            raise ValueError(
                f"prompt_style {prompt_style!r} asks for <answer> tags; got tag {tag!r}"
            )
        self.num_numbers = counts
        self.min_number, self.max_number = min_number, max_number
        self.min_target, self.max_target = min_target, max_target
        self.prompt_style = prompt_style
        self.tag = tag
        self.unique = unique

    def config(self) -> dict[str, Any]:
        # Prompt style and tag do not change the records, so they do not key the pool.
        return {
            "num_numbers": list(self.num_numbers),
            "min_number": self.min_number,
            "max_number": self.max_number,
            "min_target": self.min_target,
            "max_target": self.max_target,
            "unique": self.unique,
        }

    def _sample(self, rng: random.Random) -> tuple[list[int], int, str] | None:
        """One random problem with its solution, or ``None`` if the draw is rejected."""
        count = rng.choice(self.num_numbers)
        nums = [rng.randint(self.min_number, self.max_number) for _ in range(count)]
        node = _random_expression(rng, nums)
        if node is None:
            return None
        value, text, _ = node
        if value.denominator != 1 or not self.min_target <= value <= self.max_target:
            return None
        rng.shuffle(nums)  # the prompt order must not give away the solution's order
        return nums, int(value), text

    def generate(self, num_items: int, seed: int, split: str = "train") -> list[Record]:
        """``num_items`` reachable problems of ``split``, a deterministic function of the args.

        Raises:
          ValueError: for an unknown split, or if the configured problem space is too small to
            give ``num_items`` distinct problems of this split (with ``unique=True``).
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
                    f"could only generate {len(records)} of {num_items} distinct {split} problems;"
                    " widen the number/target ranges or pass unique=False"
                )
            sample = self._sample(rng)
            if sample is None:
                continue
            nums, target, solution = sample
            key = problem_key(nums, target)
            if split_of(key) != split or (self.unique and key in seen):
                continue
            misses = 0
            seen.add(key)
            records.append(
                {"index": len(records), "nums": nums, "target": target, "solution": solution}
            )
        return records

    def problem_key(self, record: Record) -> str:
        return problem_key(record["nums"], record["target"])

    def prompt(self, record: Record) -> str:
        nums, target = record["nums"], record["target"]
        if self.prompt_style == "compact":
            return f"{' '.join(map(str, nums))}={target}:"
        question = _QUESTION.format(nums=list(nums), target=target)
        if self.prompt_style == "base":
            return f"{_BASE_PREAMBLE}\nUser: {question}\nAssistant: {_OPENING}"
        return (  # TinyZero's instruct text for Qwen models without a chat template at hand
            f"<|im_start|>system\n{_INSTRUCT_SYSTEM}<|im_end|>\n<|im_start|>user\n {question}"
            f"<|im_end|>\n<|im_start|>assistant\n{_OPENING}"
        )

    def chat_prompt(self, record: Record) -> ChatPrompt:
        if self.prompt_style != "instruct":
            return super().chat_prompt(record)
        question = _QUESTION.format(nums=list(record["nums"]), target=record["target"])
        return ChatPrompt(user=f" {question}", system=_INSTRUCT_SYSTEM, assistant_prefix=_OPENING)

    def reference_completion(self, record: Record) -> str:
        """``<answer>EXPR</answer>`` with the record's solution, or a solver's if it has none.

        A ``solution`` field that does not actually score 1.0 is ignored (re-solved), so a bad
        user-supplied solution never becomes a supervised target.

        Raises:
          ValueError: if there is no correct solution in the record and the solver finds none.
        """
        nums, target = record["nums"], record["target"]
        solution = record.get("solution")
        if not (
            isinstance(solution, str)
            and countdown_reward(wrap_answer(solution), nums, target) == CORRECT_REWARD
        ):
            solution = solve(nums, target)
        if solution is None:
            raise ValueError(f"no solution found for nums={nums} target={target}")
        return wrap_answer(solution, self.tag)

    def verify(self, completion: str, record: Record) -> float:
        return countdown_reward(completion, record["nums"], record["target"], self.tag)

    def validate_record(self, record: Any) -> None:
        super().validate_record(record)
        nums = record["nums"]
        if not nums or not all(isinstance(n, int) and not isinstance(n, bool) for n in nums):
            raise RecordError(
                f"field 'nums' must be a non-empty list of ints, got {nums!r}", "nums"
            )
        if any(n < 0 for n in nums):
            raise RecordError(f"field 'nums' must hold non-negative ints, got {nums!r}", "nums")
