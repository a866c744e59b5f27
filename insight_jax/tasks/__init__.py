"""Verifiable tasks for RLVR: record generation, prompts, reference completions and rewards.

``get_task(name, **kwargs)`` builds a registered task ("countdown", "arithmetic"). The on-disk,
random-access pools live in :mod:`insight_jax.tasks.datasets` (imported lazily, as it loads the
array_record extension): ``build_pool``, ``write_records``, ``open_source``, ``load_jsonl``.
"""

from __future__ import annotations

import importlib
from typing import Any

from insight_jax.tasks.arithmetic import ArithmeticTask, parse_int
from insight_jax.tasks.base import (
    ChatPrompt,
    RecordError,
    Task,
    extract_last_tag,
    get_task,
    list_tasks,
    register_task,
)
from insight_jax.tasks.countdown import CountdownTask, countdown_reward, parse_expression, solve

_LAZY = {
    "build_pool",
    "write_records",
    "open_source",
    "pool_exists",
    "load_jsonl",
    "write_jsonl",
    "pool_from_jsonl",
    "RecordSource",
    "DataFormatError",
}

__all__ = [
    "ArithmeticTask",
    "ChatPrompt",
    "CountdownTask",
    "RecordError",
    "Task",
    "countdown_reward",
    "extract_last_tag",
    "get_task",
    "list_tasks",
    "parse_expression",
    "parse_int",
    "register_task",
    "solve",
    *sorted(_LAZY),
]


def __getattr__(name: str) -> Any:
    # PEP 562: the datasets helpers load array_record, which reward-only users don't need.
    if name in _LAZY:
        return getattr(importlib.import_module("insight_jax.tasks.datasets"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
