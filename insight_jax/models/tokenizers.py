"""Tokenizers: a protocol, a character tokenizer for tiny models, and batch padding helpers.

Batch convention: prompts are LEFT-padded (``encode_batch(..., side="left")``, the default),
so every prompt ends in the last column and the sampler appends completions at one shared
column for the whole batch. Right padding is available for training-style batches; the model
handles either through its attention mask.
"""

from __future__ import annotations

import math
import string
from collections.abc import Sequence
from typing import Literal, Protocol, runtime_checkable

import numpy as np


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
    def eos_id(self) -> int: ...

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``, without special tokens."""
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
    def unk_id(self) -> int:
        return 3

    def encode(self, text: str) -> list[int]:
        return [self._to_id.get(c, self.unk_id) for c in text]

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
    """
    rows = []
    for text in texts:
        ids = tokenizer.encode(text)
        if add_bos and tokenizer.bos_id is not None:
            ids = [tokenizer.bos_id, *ids]
        rows.append(ids)
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
