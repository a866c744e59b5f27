r"""Math word problems with a final answer, scored by math-verify in a bounded process pool.

Records (DeepScaleR-Preview, MATH500, AIME, AMC, Minerva, OlympiadBench style)::

    {"index": 7, "problem": "What is $1+1$?", "answer": "2", "solution": "..."}

``problem`` and ``answer`` are non-empty strings (``answer`` at most :data:`MAX_GOLD_CHARS`
characters after stripping); ``solution`` is optional. :meth:`MathTask.from_row` reads rows of
the public files: the problem from ``problem`` or ``question``, an ``answer`` given as a string or
a number (``5`` -> ``"5"``, ``5.0`` -> ``"5"``, ``0.25`` -> ``"0.25"``); other columns are dropped.
There is no generator: records come from data files.

Prompt: the problem followed by the instruction, by default DeepScaleR's
``" Let's think step by step and output the final answer within \boxed{}."``.
Reference completion (for supervised warm starts): ``"The final answer is \boxed{ANSWER}."``.

Reward (:func:`math_reward`): 1.0 if math-verify finds the completion's final answer equivalent
to the gold answer, else 0.0.

* Gold: parsed as ``\boxed{ANSWER}`` with math-verify's default extraction (LaTeX, then plain
  expressions), so ``\frac{1}{2}``, ``0.5``, ``3\sqrt{2}``, ``(1,2)``, ``\{1,2\}``, ``[1,3)``,
  ``\text{(B)}`` all parse as LaTeX; a gold that gives nothing is parsed again as plain text.
  A gold that still gives nothing can never be matched: every completion for it gets 0.0, and
  the parent remembers it (one check per gold). A gold whose check times out or kills its
  worker is checked again on the next batch (logged), never given up for a machine's hiccup.
* Completion: the parent cuts the candidate answer out of the completion (any length) before
  anything is sent to a worker (:func:`extract_candidate`). Only the answer region counts
  (:func:`~insight_jax.tasks.base.answer_region`): the text after the last ``</think>``, and
  nothing if a ``<think>`` is never closed (cut off while thinking). In it:

  1. the content of the **last** usable ``\boxed{...}`` or ``\fbox{...}``
     (:func:`~insight_jax.tasks.base.boxed_contents`: braces balanced within
     :data:`MAX_BOXED_CHARS` characters, backslash pairs such as ``\{`` skipped, the last 8
     openings tried from the end, so an unclosed final ``\boxed{`` falls back to the box before
     it), parsed by the worker as ``\boxed{CONTENT}``;
  2. failing that, with ``plain_answers`` (on for :func:`math_reward`, off for
     :class:`MathTask` unless asked), the last :data:`TAIL_CHARS` characters, for math-verify's
     own plain-answer extraction (``"The answer is 5."``, ``$x=3$``, a final expression).

  So the parent's work is a few ``str.rfind`` (C speed) plus a bounded number of characters
  stepped in Python, and a worker never sees more than ``MAX_GOLD_CHARS + TAIL_CHARS``
  characters.
* Comparison: math-verify's ``verify(gold, answer)`` (gold first: the function is not symmetric),
  with its defaults (6-digit float rounding, strict variables); its signal-based timeouts run on
  the worker's main thread as a first line, the pool's per-item timeout is the guarantee.
  Identical (gold, candidate) pairs of one batch are verified once, and a boxed candidate whose
  stripped text is the gold's own is 1.0 without a round trip (equivalence is reflexive).

Why a process pool (:mod:`insight_jax.tasks.verifier_pool`): sympy can hang or blow up memory on
pathological answers (a power tower, thousand-deep fractions), often inside one C call that no
in-process timeout interrupts, and math-verify's timeouts need the main thread. Workers are
forked from a warm forkserver, capped in memory, killed and replaced on timeout or death; a bad
answer costs at most ~``timeout_s`` and 0.0, never the trainer. Each worker keeps an LRU cache of
parsed golds (:data:`GOLD_CACHE_SIZE`), since the K rollouts of a prompt share one gold.
"""

from __future__ import annotations

import atexit
import functools
import logging
import math
import numbers
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from insight_jax.tasks.base import (
    Record,
    RecordError,
    Task,
    answer_region,
    boxed_contents,
    register_task,
)
from insight_jax.tasks.verifier_pool import DEFAULT_TIMEOUT_S, VerifierPool, inner_timeout_s

DEFAULT_INSTRUCTION = " Let's think step by step and output the final answer within \\boxed{}."

# Bounds of what is cut out of a completion (see the module docstring).
MAX_BOXED_CHARS = 1000
TAIL_CHARS = 1500
# Longest gold answer (after strip); real ones are under a few hundred characters.
MAX_GOLD_CHARS = 1000
# Parsed golds each worker keeps; golds the parent remembers as unparseable.
GOLD_CACHE_SIZE = 4096
GOLD_UNPARSEABLE = 0.5  # a gold check's answer for a gold math-verify finds nothing in
GOLD_CHECKS = 2  # checks per batch of a gold whose check times out or kills its worker


def extract_candidate(completion: object, plain_answers: bool = True) -> tuple[str, str] | None:
    r"""The bounded answer candidate of a completion (rules and bounds: module docstring).

    Returns:
      ``("boxed", content)`` for the last usable ``\boxed{...}`` / ``\fbox{...}`` of the answer
      region (after the last ``</think>``), else, with ``plain_answers``, ``("tail", its last
      TAIL_CHARS characters)``; ``None`` if ``completion`` is not a ``str``, is blank, never
      closes its ``<think>``, or has no box and ``plain_answers`` is off.
    """
    if not isinstance(completion, str):
        return None
    region = answer_region(completion)
    if region is None or not region.strip():
        return None
    for _, content in boxed_contents(region, MAX_BOXED_CHARS):
        return "boxed", content
    return ("tail", region[-TAIL_CHARS:]) if plain_answers else None


def normalise_gold(answer: object) -> str | None:
    """A gold answer as a stripped string; numbers as their shortest exact text.

    ``5`` and ``5.0`` -> ``"5"``, ``0.25`` -> ``"0.25"`` (``repr``: the shortest text that reads
    back as the same float). ``None`` for a bool, a non-finite float, another type, or a blank
    string.
    """
    if isinstance(answer, bool):
        return None
    if isinstance(answer, str):
        text = answer.strip()
    elif isinstance(answer, numbers.Integral):
        text = str(int(answer))
    elif isinstance(answer, numbers.Real):
        value = float(answer)
        if not math.isfinite(value):
            return None
        text = str(int(value)) if value.is_integer() else repr(value)
    else:
        return None
    return text or None


# --- worker side (run by the verifier pool's workers through its fixed function table) ----------


@functools.lru_cache(maxsize=GOLD_CACHE_SIZE)
def _parsed_gold(gold: str) -> list[Any]:
    from math_verify import parse

    timeout = inner_timeout_s()
    parsed = parse("\\boxed{" + gold + "}", parsing_timeout=timeout)
    return parsed or parse(gold, parsing_timeout=timeout)


def gold_check_in_worker(gold: str) -> float:
    """1.0 if math-verify extracts anything from ``gold`` (it can be matched), else
    GOLD_UNPARSEABLE (0.0 is the pool's value for an item that timed out or killed its worker)."""
    return 1.0 if _parsed_gold(gold) else GOLD_UNPARSEABLE


def reward_in_worker(gold: str, kind: str, candidate: str) -> float:
    """math-verify's verdict on one candidate (``kind`` from :func:`extract_candidate`)."""
    from math_verify import parse, verify

    gold_parsed = _parsed_gold(gold)
    if not gold_parsed:
        return 0.0
    timeout = inner_timeout_s()
    text = "\\boxed{" + candidate + "}" if kind == "boxed" else candidate
    answer = parse(text, parsing_timeout=timeout)
    if not answer:
        return 0.0
    return 1.0 if verify(gold_parsed, answer, timeout_seconds=timeout) else 0.0


logger = logging.getLogger(__name__)

# math-verify logs every timeout with the offending text at WARNING; in a worker that is noise
# (the reward already says 0.0) and a lone surrogate in it breaks the log handler.
logging.getLogger("math_verify").setLevel(logging.ERROR)


# --- parent side ---------------------------------------------------------------------------------

_pools: dict[tuple[int | None, float], VerifierPool] = {}
_pools_lock = threading.Lock()
# Golds math-verify finds nothing in: never sent again.
_bad_golds: OrderedDict[str, None] = OrderedDict()
_good_golds: OrderedDict[str, None] = OrderedDict()
_golds_lock = threading.Lock()


def get_pool(num_workers: int | None = None, timeout_s: float = DEFAULT_TIMEOUT_S) -> VerifierPool:
    """The shared verifier pool with these settings, started on first use, closed at exit."""
    key = (num_workers, float(timeout_s))
    with _pools_lock:
        pool = _pools.get(key)
        if pool is None:
            if not _pools:
                atexit.register(close_pools)
            pool = _pools[key] = VerifierPool(num_workers=num_workers, timeout_s=timeout_s)
        return pool


def close_pools() -> None:
    """Closes every shared pool (registered with ``atexit``; safe to call more than once)."""
    with _pools_lock:
        pools = list(_pools.values())
        _pools.clear()
    for pool in pools:
        pool.close()


def _remember(cache: OrderedDict[str, None], gold: str) -> None:
    cache[gold] = None
    cache.move_to_end(gold)
    if len(cache) > GOLD_CACHE_SIZE:
        cache.popitem(last=False)


def _check_golds(pool: VerifierPool, golds: Sequence[str]) -> set[str]:
    """The usable golds among ``golds``: each new one is checked by the pool. A gold whose
    check times out or kills its worker (which may be the machine's doing: load, the OOM
    killer) is checked once more, then left unusable for this batch only."""
    new = sorted({g for g in golds if g not in _good_golds and g not in _bad_golds})
    for _ in range(GOLD_CHECKS):
        if not new:
            break
        failed = []
        for gold, ok in zip(new, pool.map("math_gold", [(g,) for g in new]), strict=True):
            if ok == 1.0:
                _remember(_good_golds, gold)
            elif ok == GOLD_UNPARSEABLE:
                _remember(_bad_golds, gold)
            else:
                failed.append(gold)
        new = failed
    for gold in new:  # unusable for this batch only; checked again with the next one
        logger.warning("gold answer %.80r could not be checked (timeout or worker death)", gold)
    return {g for g in golds if g in _good_golds}


def math_rewards(
    completions: Sequence[object],
    golds: Sequence[object],
    pool: VerifierPool | None = None,
    *,
    plain_answers: bool = True,
) -> list[float]:
    """:func:`math_reward` of each pair, verified in parallel in ``pool`` (default: shared)."""
    if len(completions) != len(golds):
        raise ValueError(f"{len(completions)} completions but {len(golds)} golds")
    pool = get_pool() if pool is None else pool
    gold_texts = [normalise_gold(g) for g in golds]
    gold_texts = [g if g is not None and len(g) <= MAX_GOLD_CHARS else None for g in gold_texts]
    with _golds_lock:
        usable = _check_golds(pool, [g for g in gold_texts if g is not None])
    rewards = [0.0] * len(completions)
    # Identical (gold, candidate) pairs are verified once: the K rollouts of a prompt often box
    # the same answer, and the verdict is a function of the pair alone.
    where: dict[tuple[str, str, str], list[int]] = {}
    for i, (completion, gold) in enumerate(zip(completions, gold_texts, strict=True)):
        if gold not in usable:
            continue
        candidate = extract_candidate(completion, plain_answers)
        if candidate is None:
            continue
        if candidate[0] == "boxed" and candidate[1].strip() == gold:
            rewards[i] = 1.0  # the gold's own text: equivalent without asking (no round trip)
            continue
        where.setdefault((gold, *candidate), []).append(i)
    jobs = list(where)
    for job, reward in zip(jobs, pool.map("math", jobs), strict=True):
        for i in where[job]:
            rewards[i] = reward
    return rewards


def math_reward(completion: str, gold: str | float, *, plain_answers: bool = True) -> float:
    """1.0 if ``completion``'s final answer is equivalent to ``gold``, else 0.0 (module docstring).

    ``plain_answers``: a completion without a box is scored on its last words ("The answer is
    5."); off, only a boxed answer counts. Uses the shared verifier pool. Never raises on model
    output: a non-``str`` or blank input, an over-long gold, an unparseable answer, a timeout or
    a crashed worker all give 0.0.
    """
    return math_rewards([completion], [gold], plain_answers=plain_answers)[0]


@register_task("math")
class MathTask(Task):
    r"""Final-answer math problems from data files (format, prompt, reward: module docstring).

    Args:
      instruction: appended to the problem to make the prompt.
      timeout_s: per-completion verification budget (the pool's per-item timeout).
      num_workers: verifier processes (default: ``min(cpu_count, 4)``).
      plain_answers: also score a completion without a box on its last words. Off by default:
        the prompt asks for a box, DeepScaleR's reward requires one, and without one a
        completion cut off mid-reasoning ("... so 2+2 = 4? Let me check") would count as an
        answer.

    Tasks with the same ``timeout_s`` and ``num_workers`` share one pool. :meth:`config` is
    empty: no argument changes what a record is or how it is validated, so cached pools of
    records do not depend on them.
    """

    name = "math"
    max_reward = 1.0
    fields: ClassVar[Mapping[str, type]] = {"problem": str, "answer": str}
    optional_fields: ClassVar[Mapping[str, type]] = {"solution": str}

    def __init__(
        self,
        instruction: str = DEFAULT_INSTRUCTION,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        num_workers: int | None = None,
        plain_answers: bool = False,
    ):
        if not isinstance(instruction, str):
            raise ValueError(f"instruction must be a str, got {type(instruction).__name__}")
        if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)):
            raise ValueError(f"timeout_s must be a number, got {timeout_s!r}")
        if not 0 < timeout_s < math.inf:
            raise ValueError(f"timeout_s must be finite and > 0, got {timeout_s!r}")
        if num_workers is not None and (
            isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 1
        ):
            raise ValueError(f"num_workers must be None or an int >= 1, got {num_workers!r}")
        self.instruction = instruction
        self.timeout_s = float(timeout_s)
        self.num_workers = num_workers
        self.plain_answers = bool(plain_answers)

    def generate(self, num_items: int, seed: int, split: str = "train") -> list[Record]:
        raise NotImplementedError(
            "the math task has no generator; load its records from a data file (rows with"
            " 'problem' or 'question' and 'answer')"
        )

    def prompt(self, record: Record) -> str:
        return record["problem"] + self.instruction

    def reference_completion(self, record: Record) -> str:
        return f"The final answer is \\boxed{{{record['answer']}}}."

    def _pool(self) -> VerifierPool:
        return get_pool(self.num_workers, self.timeout_s)

    def verify(self, completion: str, record: Record) -> float:
        return self.verify_batch([completion], [record])[0]

    def verify_batch(self, completions: Sequence[str], records: Sequence[Record]) -> list[float]:
        """All rewards in one parallel pass through the pool (the trainer's M*K per step)."""
        if len(completions) != len(records):
            raise ValueError(f"{len(completions)} completions but {len(records)} records")
        golds = [r["answer"] for r in records]
        return math_rewards(completions, golds, self._pool(), plain_answers=self.plain_answers)

    def from_row(self, row: Any, index: int) -> Record:
        """A record from a public row: ``problem`` or ``question``; ``answer`` str or number.

        Raises:
          RecordError: naming the field that is missing, empty or of the wrong type.
        """
        if not isinstance(row, Mapping):
            raise RecordError(f"a row must be a JSON object / table row, got {type(row).__name__}")
        problem_field = "problem" if "problem" in row else "question"
        if problem_field not in row:
            raise RecordError("row has neither field 'problem' nor 'question'", "problem")
        problem = row[problem_field]
        if not isinstance(problem, str) or not problem.strip():
            raise RecordError(
                f"field {problem_field!r} must be a non-empty str, got {problem!r:.60}",
                problem_field,
            )
        if "answer" not in row:
            raise RecordError("row is missing field 'answer'", "answer")
        answer = normalise_gold(row["answer"])
        if answer is None:
            raise RecordError(
                "field 'answer' must be a non-empty str or a finite number, got"
                f" {type(row['answer']).__name__} {row['answer']!r:.60}",
                "answer",
            )
        record: Record = {"index": index, "problem": problem, "answer": answer}
        solution = row.get("solution")
        if solution is not None:
            if not isinstance(solution, str):
                raise RecordError(
                    f"field 'solution' must be a str, got {type(solution).__name__}", "solution"
                )
            record["solution"] = solution
        self.validate_record(record)
        return record

    def validate_record(self, record: Any) -> None:
        super().validate_record(record)
        if not record["problem"].strip():
            raise RecordError("field 'problem' must not be empty", "problem")
        answer = record["answer"].strip()
        if not answer:
            raise RecordError("field 'answer' must not be empty", "answer")
        if len(answer) > MAX_GOLD_CHARS:
            raise RecordError(
                f"field 'answer' has {len(answer)} characters, over the {MAX_GOLD_CHARS} a gold"
                " answer may have",
                "answer",
            )
