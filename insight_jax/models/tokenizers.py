"""Tokenizers: a protocol, a character tokenizer for tiny models, and batch padding helpers.

Hugging Face tokenizers (a model folder's tokenizer.json, with its chat template) load through
``load_hf_tokenizer`` (``insight_jax.models.hf_tokenizer``). ``format_prompt`` turns a task's
prompt text into what the model is fed: the text itself, or a chat-templated user turn.

Batch convention: prompts are LEFT-padded (``encode_batch(..., side="left")``, the default),
so every prompt ends in the last column and the sampler appends completions at one shared
column for the whole batch. Right padding is available for training-style batches; the model
handles either through its attention mask.
"""

from __future__ import annotations

import math
import string
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

import numpy as np

from insight_jax.tasks.base import ChatPrompt

if TYPE_CHECKING:
    from insight_jax.models.hf_tokenizer import HFTokenizer


@runtime_checkable
class Tokenizer(Protocol):
    """What the sampler, tasks and trainer need from a tokenizer (HF tokenizers fit too)."""

    @property
    def vocab_size(self) -> int: ...

    @property
    def pad_id(self) -> int: ...

    @property
    def bos_id(self) -> int | None: ...

    @property
    def eos_id(self) -> int:
        """The primary end id: the one appended to a finished training completion."""
        ...

    @property
    def eos_ids(self) -> tuple[int, ...]:
        """Every id that ends a completion (``eos_id`` among them); sampling stops at any."""
        ...

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``, without special tokens."""
        ...

    def encode_many(self, texts: Sequence[str]) -> list[list[int]]:
        """``encode`` of each text, in one call (HF tokenizers batch it in parallel)."""
        ...

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids``; special tokens are dropped."""
        ...


class CharTokenizer:
    """One id per printable ASCII character (``string.printable``, 100 chars), plus specials.

    ids: 0 = <pad>, 1 = <bos>, 2 = <eos>, 3 = <unk>, then 4 + string.printable.index(c).
    Any other character (non-ASCII, other control chars) encodes to ``unk_id`` = 3, which
    decodes to U+FFFD. vocab_size = 104 (divisible by 8, so it shards evenly).
    """

    SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")
    UNK_TEXT = "\ufffd"

    def __init__(self):
        self._chars = string.printable
        self._offset = len(self.SPECIALS)
        self._to_id = {c: i + self._offset for i, c in enumerate(self._chars)}

    @property
    def vocab_size(self) -> int:
        return self._offset + len(self._chars)

    @property
    def pad_id(self) -> int:
        return 0

    @property
    def bos_id(self) -> int:
        return 1

    @property
    def eos_id(self) -> int:
        return 2

    @property
    def eos_ids(self) -> tuple[int, ...]:
        return (2,)

    @property
    def unk_id(self) -> int:
        return 3

    def encode(self, text: str) -> list[int]:
        return [self._to_id.get(c, self.unk_id) for c in text]

    def encode_many(self, texts: Sequence[str]) -> list[list[int]]:
        return [self.encode(t) for t in texts]

    def decode(self, ids: Sequence[int]) -> str:
        out = []
        for i in ids:
            i = int(i)
            if i == self.unk_id:
                out.append(self.UNK_TEXT)
            elif self._offset <= i < self.vocab_size:
                out.append(self._chars[i - self._offset])
            # pad/bos/eos (and out-of-range ids from a larger model vocab) are dropped
        return "".join(out)


def encode_batch(
    tokenizer: Tokenizer,
    texts: Sequence[str],
    *,
    max_len: int | None = None,
    side: Literal["left", "right"] = "left",
    add_bos: bool = True,
    truncate: Literal["error", "left", "right"] = "error",
    pad_to_multiple: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Encode and pad a batch: (tokens [B, L] int32, lengths [B] int32).

    L = ``max_len`` if given (a fixed L means one compiled sampler per L), else the longest
    sequence rounded up to ``pad_to_multiple``. Padding uses ``tokenizer.pad_id`` on ``side``;
    the real tokens of row b are tokens[b, L - lengths[b]:] (left) or tokens[b, :lengths[b]]
    (right). A sequence longer than L raises (truncate="error") or loses tokens from that end.

    Texts are encoded in one ``encode_many`` call (HF tokenizers batch in parallel).
    ``add_bos`` prepends ``bos_id`` (nothing when it is None) unless the encoded text already
    starts with it: a chat template that writes the bos itself (Llama 3) must not
    get a second one.
    """
    encoded = tokenizer.encode_many(texts)
    bos = tokenizer.bos_id if add_bos else None
    rows = [ids if bos is None or ids[:1] == [bos] else [bos, *ids] for ids in encoded]
    longest = max((len(r) for r in rows), default=0)
    length = (
        max_len if max_len is not None else math.ceil(longest / pad_to_multiple) * pad_to_multiple
    )
    tokens = np.full((len(rows), length), tokenizer.pad_id, np.int32)
    lengths = np.zeros((len(rows),), np.int32)
    for b, ids in enumerate(rows):
        if len(ids) > length:
            if truncate == "error":
                raise ValueError(
                    f"text {b} has {len(ids)} tokens > max_len={length}; raise max_len or pass "
                    "truncate='left'/'right'"
                )
            ids = ids[len(ids) - length :] if truncate == "left" else ids[:length]
        n = len(ids)
        lengths[b] = n
        if n:
            if side == "left":
                tokens[b, length - n :] = ids
            else:
                tokens[b, :n] = ids
    return tokens, lengths


def padding_mask(lengths: np.ndarray, length: int, side: Literal["left", "right"] = "left"):
    """Boolean [B, L] mask of real tokens for ``encode_batch`` output (numpy or jax arrays)."""
    cols = np.arange(length)[None, :]
    lengths = lengths[:, None]
    return cols >= length - lengths if side == "left" else cols < lengths


def decode_batch(
    tokenizer: Tokenizer, tokens: np.ndarray, mask: np.ndarray | None = None
) -> list[str]:
    """Decode each row of [B, L] ids, keeping only positions where ``mask`` is True."""
    tokens = np.asarray(tokens)
    mask = np.ones(tokens.shape, bool) if mask is None else np.asarray(mask, bool)
    return [tokenizer.decode(row[m].tolist()) for row, m in zip(tokens, mask, strict=True)]


def format_prompt(
    tokenizer: Tokenizer, prompt: str | ChatPrompt, *, chat: bool, **template_vars: Any
) -> str:
    """The text fed to the model for a task's prompt.

    chat=True: the tokenizer's chat template rendered for the prompt's turns (a ``str`` is one
    user turn; a :class:`~insight_jax.tasks.base.ChatPrompt` adds its system turn) with the
    assistant's turn opened (``add_generation_prompt=True``) and the prompt's
    ``assistant_prefix`` after it; ``template_vars`` become template variables
    (``enable_thinking=False``...). chat=False: ``prompt``, a ``str``, unchanged.
    """
    if not chat:
        if template_vars:
            raise ValueError(
                f"template variables {sorted(template_vars)} given with chat=False; they only "
                "apply to chat-templated prompts"
            )
        if not isinstance(prompt, str):
            raise TypeError("chat=False takes the task's plain-text prompt (a str)")
        return prompt
    if getattr(tokenizer, "chat_template", None) is None:
        raise ValueError(
            f"chat=True needs a tokenizer with a chat template; this {type(tokenizer).__name__} "
            "has none (use chat=False for plain-text prompts)"
        )
    turns = ChatPrompt(user=prompt) if isinstance(prompt, str) else prompt
    messages = [{"role": "user", "content": turns.user}]
    if turns.system is not None:
        messages.insert(0, {"role": "system", "content": turns.system})
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, **template_vars)
    return text + turns.assistant_prefix


def load_hf_tokenizer(path: str | Path) -> HFTokenizer:
    """The tokenizer of a Hugging Face model folder (see ``insight_jax.models.hf_tokenizer``)."""
    # imported here so that the character tokenizer needs neither `tokenizers` nor `jinja2`
    from insight_jax.models.hf_tokenizer import load_hf_tokenizer as load

    return load(path)
