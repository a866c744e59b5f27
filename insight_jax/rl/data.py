"""A run's prompts: the training pool and the held-out sets, generated or read from files.

Two sources, chosen by `task.train_path`:
  * "" (the default): the task generates a pool of `task.num_train` records and a disjoint
    held-out split of `task.num_test` (the built-in tasks).
  * a file in a public format (JSON, JSONL, parquet; `task.format`, "auto" by extension),
    optionally sliced as tfds splits are, `countdown.parquet[:2000]`: the pool is the selected
    rows, built once into an array_record store under the workdir, cached by the file's
    content hash. The held-out sets are then `task.eval_paths`, a name -> spec mapping; a spec is
    a path (records of the training task) or a mapping {"path", "task", "kwargs", "format"} for
    a set of another task (MMLU / GPQA as multiple choice under a math-trained policy).

Pools are cached by content (the task's config, or the file's hash, slice and format), so runs
can share them: `task.pool_dir` (default: the workdir's data/). A workdir is one run: the
content hashes of the files it read are kept in its `data/sources.json`, and a rerun in that
workdir whose files have changed is refused.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ml_collections

from insight_jax import workdir as wd
from insight_jax.rl.evaluate import EvalSet
from insight_jax.tasks import get_task
from insight_jax.tasks.base import Task
from insight_jax.tasks.datasets import build_pool, pool_from_file
from insight_jax.tasks.loaders import file_sha256, load_records, parse_path_spec

SET_NAME = re.compile(r"[A-Za-z0-9_]+")  # eval set names become metric keys
SPEC_KEYS = ("path", "task", "kwargs", "format")
SOURCES_FILE = "sources.json"
TRAIN_POOL_SET = "train_pool"  # the name of the eval.train_pool_size sample of the RL pool


@dataclasses.dataclass(frozen=True)
class EvalSpec:
    """Where a held-out set comes from (resolved from a task.eval_paths entry)."""

    name: str
    task_name: str
    task_kwargs: dict[str, Any]
    path: str  # a path spec, "file[start:stop]"
    format: str

    def make_task(self) -> Task:
        return get_task(self.task_name, **self.task_kwargs)


def _plain(x: Any) -> Any:
    return x.to_dict() if isinstance(x, ml_collections.ConfigDict) else x


def eval_specs(c: ml_collections.ConfigDict) -> list[EvalSpec]:
    """The held-out sets of `task.eval_paths`, in the mapping's order.

    Raises:
      ValueError: for a bad set name, a spec that is neither a path nor a mapping of
        SPEC_KEYS, or a malformed path slice (the message names the set).
    """
    specs = []
    for name, value in dict(_plain(c.task.eval_paths)).items():
        if not isinstance(name, str) or not SET_NAME.fullmatch(name):
            raise ValueError(f"eval set name {name!r} must be letters, digits and '_'")
        value = _plain(value)
        if isinstance(value, str):
            value = {"path": value}
        if not isinstance(value, Mapping) or set(value) - set(SPEC_KEYS) or "path" not in value:
            raise ValueError(
                f"eval set {name!r}: a path, or a mapping with 'path' and optionally "
                f"{', '.join(SPEC_KEYS[1:])}; got {value!r:.80}"
            )
        task_name = value.get("task", c.task.name)
        default_kwargs = _plain(c.task.kwargs) if task_name == c.task.name else {}
        kwargs = _plain(value.get("kwargs", default_kwargs))
        path, fmt = value["path"], value.get("format", c.task.format)
        if not isinstance(path, str) or not isinstance(fmt, str) or not isinstance(kwargs, dict):
            raise ValueError(f"eval set {name!r}: path and format are strings, kwargs a mapping")
        try:
            parse_path_spec(path)
        except ValueError as e:
            raise ValueError(f"eval set {name!r}: {e}") from None
        specs.append(EvalSpec(name, task_name, dict(kwargs), path, fmt))
    return specs


WARM_POOLS = ("rl", "disjoint")
WARM_POOL_MAX_ROUNDS = 8  # generation rounds to find warmstart.pool_size problems outside


def disjoint_records(
    task: Task, size: int, seed: int, skip: int, exclude: set[str]
) -> tuple[dict, ...]:
    """`size` generated train-split records whose problem keys are not in `exclude`, re-indexed
    0..size-1: the records after the first `skip` of the task's train stream for `seed` (the
    stream the RL pool is the first records of), minus any whose key is excluded. A task that
    generates distinct problems gives records disjoint from its first `skip` by construction;
    the key filter makes it hold for any task (repeats are dropped).

    Raises:
      ValueError: if the task cannot give `size` such records (its problem space is too small).
    """
    want = skip + size
    for _ in range(WARM_POOL_MAX_ROUNDS):
        stream = task.generate(want, seed, split="train")[skip:]
        kept = [r for r in stream if task.problem_key(r) not in exclude]
        if len(kept) >= size:
            return tuple({**r, "index": i} for i, r in enumerate(kept[:size]))
        want += 2 * (size - len(kept))
    raise ValueError(
        f"found only {len(kept)} of {size} {task.name} problems outside the RL pool and the "
        f"held-out sets after {want} draws; lower warmstart.pool_size or widen the task"
    )


def warm_start_pool(
    c: ml_collections.ConfigDict,
    task: Task,
    pool: Any,
    num_items: int,
    eval_sets: tuple[EvalSet, ...],
) -> tuple[Any, bool]:
    """(the warm start's records, whether they share no problem with the RL pool nor any
    held-out set). `warmstart.pool`:
      * "rl": the whole training pool (the RL pool included; the tiny configs' warm start);
      * "disjoint": `warmstart.pool_size` generated problems of the train split outside the
        RL pool and the held-out sets, so RL starts on prompts the policy was never taught
        (as the paper's policies start on theirs).
    For "disjoint" the flag is measured by comparing problem keys, not assumed from the mode;
    "rl" holds the RL pool itself, so it is False without reading the pool (which may be large).
    """
    if c.warmstart.pool == "rl":
        return pool, False
    taken = {task.problem_key(pool[i]) for i in range(num_items)}
    taken |= {s.task.problem_key(r) for s in eval_sets for r in s.records}
    size = c.warmstart.pool_size or len(pool)
    warm = disjoint_records(task, size, c.seed, len(pool), taken)
    return warm, not any(task.problem_key(r) in taken for r in warm)


def _pin_sources(data_dir: Path, sources: dict[str, str]) -> None:
    """Records the files' hashes at the run's first build; refuses changed files later."""
    file = data_dir / SOURCES_FILE
    if file.is_file():
        pinned = json.loads(file.read_text())
        changed = sorted(k for k in sources if k in pinned and pinned[k] != sources[k])
        if changed or set(pinned) != set(sources):
            what = ", ".join(changed) or "the set of files"
            raise RuntimeError(
                f"the data of this workdir's run changed since it started ({what}; hashes in "
                f"{file}): a workdir is one run, use a new workdir"
            )
        return
    data_dir.mkdir(parents=True, exist_ok=True)
    # Every process of a multi-host run pins at once: each writes its own temporary file.
    wd.write_text_atomic(file, json.dumps(sources, indent=1, sort_keys=True))


def load_data(
    c: ml_collections.ConfigDict, task: Task, workdir: Path
) -> tuple[Any, int, tuple[EvalSet, ...]]:
    """(pool, its size N, held-out sets) of config `c` (validated). Pools are kept in
    `task.pool_dir` (shared by runs: a pool is keyed by its content) or else the workdir's
    data/; the hashes of the files this run read stay in the workdir."""
    data_dir = Path(c.task.pool_dir).expanduser() if c.task.pool_dir else workdir / "data"
    if not c.task.train_path:
        pool = build_pool(task, c.task.num_train, c.seed, data_dir)
        test = task.generate(c.task.num_test, c.seed, split="test")
        return pool, c.task.num_train, (EvalSet("test", task, tuple(test)),)
    pool = pool_from_file(c.task.train_path, task, data_dir, fmt=c.task.format)
    sources = {"train": pool.metadata["sha256"]}
    sets = []
    for spec in eval_specs(c):
        same = spec.task_name == c.task.name and spec.task_kwargs == _plain(c.task.kwargs)
        eval_task = task if same else spec.make_task()
        records = load_records(spec.path, eval_task, fmt=spec.format)
        sets.append(EvalSet(spec.name, eval_task, tuple(records)))
        sources[f"eval/{spec.name}"] = file_sha256(parse_path_spec(spec.path)[0])
    _pin_sources(workdir / "data", sources)
    return pool, len(pool), tuple(sets)
