"""Task interface, shared answer extraction, record validation and the task registry.

A task makes or reads a pool of records, shows a record to the policy as a prompt and scores a
completion with a verifiable reward::

    task = get_task("countdown")
    records = task.generate(num_items=1024, seed=0, split="train")  # or from a file:
    records = load_records("countdown.parquet[:2000]", task)        # tasks/loaders.py
    prompt = task.prompt(records[i])                 # e.g. "3 5 2=16:"
    target = task.reference_completion(records[i])   # e.g. "<answer>(3+5)*2</answer>"
    reward = task.verify(completion, records[i])     # float, never raises

Records are plain JSON-serialisable dicts. Every record has an int ``"index"``: its stable global
index in the pool (0..num_items-1), which is how the trainer and the selector address prompts.
Tasks of public data (math, multiple choice) only read files; their ``generate`` raises
``NotImplementedError``.

Final answers, two conventions with one bounded extraction each: the paper's
``<answer>...</answer>`` tag (Countdown, arithmetic; the *last complete* tag,
:func:`extract_last_tag`), and ``\\boxed{...}`` (math, multiple choice; :func:`boxed_contents`
over the :func:`answer_region`, the text after the model's thinking).
"""

from __future__ import annotations

import abc
import dataclasses
import hashlib
import json
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, ClassVar

# Longest tag content (the raw text between the tags, whitespace included) that is parsed as an
# answer; a longer one is malformed (rejected, not truncated). It bounds the copy made and the
# parser's work, whatever the completion's length.
MAX_ANSWER_CHARS = 128

Record = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class ChatPrompt:
    """A prompt as chat turns, for a policy whose tokenizer has a chat template.

    ``system`` (optional) and ``user`` are the turns the chat template renders;
    ``assistant_prefix`` opens the assistant's turn after the template's generation prompt (the
    policy continues from it; TinyZero's instruct prompt opens it with "Let me solve this step
    by step.").
    """

    user: str
    system: str | None = None
    assistant_prefix: str = ""


class RecordError(ValueError):
    """A record is missing a field or has a field of the wrong type or value.

    Attributes:
      field: name of the offending field (``None`` when the record itself is not a dict).
    """

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


def extract_last_tag(
    completion: object, tag: str = "answer", max_content_chars: int = MAX_ANSWER_CHARS
) -> str | None:
    """Returns the content of the last complete ``<tag>...</tag>`` in ``completion``, stripped.

    Rule: take the last ``<tag>`` that is followed by a ``</tag>``; the content runs to the first
    ``</tag>`` after it. So in ``"<answer>1<answer>2</answer>"`` the answer is ``"2"`` (the last
    opened tag), in ``"<answer>1</answer><answer>2"`` it is ``"1"`` (an unclosed tag is not an
    answer), and the content never contains a tag. The whole completion is searched, so an answer
    followed by any amount of text (a long reasoning trace, a repeated or unclosed tag) is found.

    Algorithm: ``end = rfind("</tag>")`` is the last closing tag; the last ``<tag>`` before it,
    ``start = rfind("<tag>", 0, end)``, is the last opening tag that has a closing tag after it
    (any later one has none); ``find("</tag>", start)`` is its first closing tag. Three ``str``
    searches: linear time and no memory beyond the returned content, for any input (a non-greedy
    regex such as ``<answer>(.*?)</answer>`` is quadratic on ``"<answer>" * n``).

    Bounds: a raw content (between the tags, before stripping) longer than ``max_content_chars``
    is malformed and returns ``None``; it is never copied.

    Returns:
      The stripped content, or ``None`` if there is no complete tag, the content is too long, or
      ``completion`` is not a ``str``.
    """
    if not isinstance(completion, str):
        return None
    open_tag, close_tag = f"<{tag}>", f"</{tag}>"
    last_close = completion.rfind(close_tag)
    if last_close < 0:
        return None
    start = completion.rfind(open_tag, 0, last_close)
    if start < 0:
        return None
    start += len(open_tag)
    end = completion.find(close_tag, start)
    if end - start > max_content_chars:
        return None
    return completion[start:end].strip()


# ---------------------------------------------------------------- final answers in free text

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
BOX_COMMANDS = ("\\boxed", "\\fbox")
MAX_BOX_DEPTH = 20  # brace nesting inside a box
MAX_BOX_TRIES = 8  # box openings tried from the end (an unclosed last one falls back)
# A backslash pair (skipped: \{ \} \\ are not grouping braces) or a grouping brace.
_BRACE_TOKEN = re.compile(r"\\.|[{}]", re.DOTALL)
_SPACE = " \t\r\n"


def answer_region(completion: str) -> str | None:
    """The part of a completion that holds its final answer.

    The text after the last ``</think>``; ``None`` if a ``<think>`` is opened and never closed
    (the model stopped, or was cut off, while still thinking: nothing there is its answer);
    else the whole completion. DeepScaleR's reward reads only what follows ``</think>`` too.
    """
    close = completion.rfind(THINK_CLOSE)
    if close >= 0:
        return completion[close + len(THINK_CLOSE) :]
    if THINK_OPEN in completion:
        return None
    return completion


def _box_content(text: str, command_end: int, max_chars: int) -> str | None:
    """The content of the box whose command ends at ``command_end``, or ``None`` if unusable:
    no ``{`` right after the command (a few spaces allowed), braces that do not balance within
    ``max_chars`` characters of content, or nesting deeper than MAX_BOX_DEPTH."""
    open_at = command_end
    while open_at < len(text) and open_at - command_end < 8 and text[open_at] in _SPACE:
        open_at += 1
    if open_at >= len(text) or text[open_at] != "{":
        return None
    start = open_at + 1
    depth = 1
    for token in _BRACE_TOKEN.finditer(text, start, start + max_chars + 1):
        char = token.group()
        if char == "{":
            depth += 1
            if depth > MAX_BOX_DEPTH:
                return None
        elif char == "}":
            depth -= 1
            if depth == 0:
                return text[start : token.start()]
    return None


def boxed_contents(text: str, max_chars: int) -> Iterator[tuple[int, str]]:
    """``(position, content)`` of the usable ``\\boxed{...}`` / ``\\fbox{...}`` of ``text``, last
    first, among its last MAX_BOX_TRIES box openings.

    Braces are counted by a linear scan of at most ``max_chars`` characters per opening;
    ``\\{``, ``\\}`` and other backslash pairs are skipped, so set braces do not count. So the
    work is a few ``str.rfind`` plus at most ``MAX_BOX_TRIES * max_chars`` characters stepped,
    whatever the text's length.
    """
    end = len(text)
    for _ in range(MAX_BOX_TRIES):
        at, command = max((text.rfind(c, 0, end), c) for c in BOX_COMMANDS)
        if at < 0:
            return
        content = _box_content(text, at + len(command), max_chars)
        if content is not None:
            yield at, content
        end = at


def wrap_answer(content: str, tag: str = "answer") -> str:
    """Formats a final answer the way :func:`extract_last_tag` reads it: ``<tag>content</tag>``."""
    return f"<{tag}>{content}</{tag}>"


def check_field(record: Mapping[str, Any], field: str, kind: type | tuple[type, ...]) -> Any:
    """Returns ``record[field]`` after checking it exists and has type ``kind``.

    ``bool`` is rejected where ``int`` is expected (``True`` is an ``int`` in Python, but never a
    meaningful index, number or level).

    Raises:
      RecordError: naming the field, if it is missing or of the wrong type.
    """
    if field not in record:
        raise RecordError(f"record is missing field {field!r}", field)
    value = record[field]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds:
        ok = False
    else:
        ok = isinstance(value, kinds)
    if not ok:
        names = " or ".join(k.__name__ for k in kinds)
        raise RecordError(
            f"field {field!r} must be {names}, got {type(value).__name__} {value!r:.60}", field
        )
    return value


def stable_hash(text: str) -> int:
    """A 64-bit hash of ``text`` that is the same in every process and Python version.

    Used to split problem spaces into disjoint train/test parts (``hash()`` is salted per process).
    """
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "big")


# Fraction of each task's problem space that belongs to each split (by stable hash of the problem's
# canonical key), so splits are disjoint by construction, for every pair of seeds.
SPLIT_BUCKETS = 1000
SPLIT_RANGES: dict[str, tuple[int, int]] = {"train": (100, 1000), "test": (0, 100)}


# Generators stop (ValueError) after this many draws in a row without a new record: the problem
# space of the split is (nearly) exhausted. Normal acceptance rates are >= ~5% (test split's 10%
# share times the in-range rate), so this never triggers by chance.
MAX_CONSECUTIVE_REJECTIONS = 20_000


def split_of(key: str) -> str:
    """Returns the split (``"train"`` or ``"test"``) owning the problem with canonical ``key``."""
    bucket = stable_hash(key) % SPLIT_BUCKETS
    for name, (lo, hi) in SPLIT_RANGES.items():
        if lo <= bucket < hi:
            return name
    raise AssertionError("SPLIT_RANGES must cover every bucket")


def check_split(split: str) -> None:
    """Raises ``ValueError`` for an unknown split name."""
    if split not in SPLIT_RANGES:
        raise ValueError(f"unknown split {split!r}; expected one of {sorted(SPLIT_RANGES)}")


def split_seed(seed: int, split: str, salt: str) -> int:
    """Derives the RNG seed of one split of one task from the user seed (stable across runs)."""
    return stable_hash(f"{salt}/{split}/{seed}")


class Task(abc.ABC):
    """A verifiable task: generates records, renders prompts, checks completions.

    Subclasses set ``name``, ``max_reward``, ``fields`` and ``optional_fields`` (field name ->
    type, checked by :meth:`validate_record`) and implement the abstract methods.

    ``max_reward`` is the largest reward :meth:`verify` can return (the reward of a correct
    completion; 1.0 for the built-in tasks). The config validator rejects a
    ``selection.success_threshold`` above it: no rollout could ever count as a success, so every
    belief would only learn failures. :func:`register_task` checks it is set, finite and > 0.
    """

    name: ClassVar[str]
    max_reward: float
    # Required fields besides "index" and their types; extra fields are allowed.
    fields: ClassVar[Mapping[str, type | tuple[type, ...]]] = {}
    # Fields that may be absent, but are type-checked when present.
    optional_fields: ClassVar[Mapping[str, type | tuple[type, ...]]] = {}

    @abc.abstractmethod
    def generate(self, num_items: int, seed: int, split: str = "train") -> list[Record]:
        """Returns ``num_items`` records with ``"index"`` 0..num_items-1, deterministic in seed."""

    @abc.abstractmethod
    def prompt(self, record: Record) -> str:
        """The text shown to the policy."""

    @abc.abstractmethod
    def reference_completion(self, record: Record) -> str:
        """A short correct completion in the exact expected format (gets reward 1.0)."""

    @abc.abstractmethod
    def verify(self, completion: str, record: Record) -> float:
        """Reward of ``completion`` for ``record``; never raises, bounded time for any input."""

    def chat_prompt(self, record: Record) -> ChatPrompt:
        """The prompt as chat turns, for chat-templated policies: by default :meth:`prompt` as
        one user turn (how verl-based peers present a task's prompt to a chat model)."""
        return ChatPrompt(user=self.prompt(record))

    def verify_batch(self, completions: Sequence[str], records: Sequence[Record]) -> list[float]:
        """Rewards of ``completions[i]`` for ``records[i]``, same rules as :meth:`verify`.

        Tasks whose verifier runs in worker processes override this to verify in parallel.
        """
        return [self.verify(c, r) for c, r in zip(completions, records, strict=True)]

    def from_row(self, row: Any, index: int) -> Record:
        """The record at global ``index`` made from one row of a public data file.

        The default keeps the row's fields (those of the public format of this task) and sets
        ``index``; a task whose public files name or type fields differently (``question`` for
        ``problem``, an answer given as a number) overrides this to normalise them. The result
        is validated.

        Raises:
          RecordError: naming the field that is missing or malformed.
        """
        if not isinstance(row, Mapping):
            raise RecordError(f"a row must be a JSON object / table row, got {type(row).__name__}")
        record = {**row, "index": index}
        self.validate_record(record)
        return record

    def problem_key(self, record: Record) -> str:
        """A canonical id of the record's problem: two records with one key pose the same
        problem (so a warm start that must not see the RL pool excludes by key). The default
        is the prompt text; tasks whose prompts can present one problem in several ways
        (Countdown's number order) override it."""
        return self.prompt(record)

    def config(self) -> dict[str, Any]:
        """The generation parameters (JSON-serialisable); pools are keyed by them."""
        return {}

    def fingerprint(self) -> str:
        """A short stable id of ``name`` + :meth:`config`, used to name cached pools."""
        payload = json.dumps({"name": self.name, **self.config()}, sort_keys=True)
        return f"{stable_hash(payload):016x}"[:10]

    def validate_record(self, record: Any) -> None:
        """Checks that ``record`` has every required field with the right type.

        Raises:
          RecordError: naming the missing/bad field.
        """
        if not isinstance(record, Mapping):
            raise RecordError(f"record must be a JSON object, got {type(record).__name__}")
        index = check_field(record, "index", int)
        if index < 0:
            raise RecordError(f"field 'index' must be >= 0, got {index}", "index")
        for field, kind in self.fields.items():
            check_field(record, field, kind)
        for field, kind in self.optional_fields.items():
            if field in record:
                check_field(record, field, kind)


_REGISTRY: dict[str, Callable[..., Task]] = {}


def register_task(name: str) -> Callable[[type[Task]], type[Task]]:
    """Class decorator adding a task to the registry under ``name``."""

    def decorator(cls: type[Task]) -> type[Task]:
        if name in _REGISTRY:
            raise ValueError(f"task {name!r} is already registered")
        max_reward = getattr(cls, "max_reward", None)
        if (
            isinstance(max_reward, bool)
            or not isinstance(max_reward, (int, float))
            or not math.isfinite(max_reward)
            or max_reward <= 0
        ):
            raise ValueError(
                f"task {name!r} ({cls.__name__}) must set max_reward, the largest reward verify()"
                f" can return, to a finite number > 0; got {max_reward!r}"
            )
        _REGISTRY[name] = cls
        return cls

    return decorator


def get_task(name: str, **kwargs: Any) -> Task:
    """Builds the registered task ``name`` with constructor ``kwargs`` (e.g. from a config)."""
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; registered: {sorted(_REGISTRY)}") from None
    return factory(**kwargs)


def list_tasks() -> list[str]:
    """Names of the registered tasks."""
    return sorted(_REGISTRY)
