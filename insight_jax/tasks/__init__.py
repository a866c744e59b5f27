"""Verifiable tasks for RLVR: record generation, prompts, reference completions and rewards.

``get_task(name, **kwargs)`` builds a registered task: "countdown" and "arithmetic" (generated,
or read from files), "math" (math-verify rewards in worker processes) and "multiple_choice"
(records from files). Loaders for the public file formats are in
:mod:`insight_jax.tasks.loaders`. The on-disk,
random-access pools live in :mod:`insight_jax.tasks.datasets` (imported lazily, as it loads the
array_record extension): ``build_pool``, ``pool_from_file``, ``write_records``, ``open_source``.
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
from insight_jax.tasks.math import MathTask, math_reward
from insight_jax.tasks.multiple_choice import MultipleChoiceTask

_LAZY = {
    "build_pool",
    "write_records",
    "open_source",
    "pool_exists",
    "pool_from_file",
    "RecordSource",
    "DataFormatError",
}

__all__ = [
    "ArithmeticTask",
    "ChatPrompt",
    "CountdownTask",
    "MathTask",
    "MultipleChoiceTask",
    "RecordError",
    "Task",
    "countdown_reward",
    "extract_last_tag",
    "get_task",
    "list_tasks",
    "math_reward",
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
