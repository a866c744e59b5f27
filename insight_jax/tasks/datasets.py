"""Task pools on disk: array_record files with random access by global index, and JSONL loading.

Storage is a real tensorflow_datasets dataset: :class:`TaskRecords` is a
``tfds.core.GeneratorBasedBuilder`` with ``file_format="array_record"``, and pools are read back
through tfds' ``ArrayRecordDataSource`` (``builder.as_data_source()``). tensorflow_datasets 4.9.10
builds and reads array_record datasets without TensorFlow installed (checked; TensorFlow is not a
dependency). Layout of one pool directory ``path``::

    path/task_records/1.0.0/{dataset_info.json, features.json, metadata.json,
                             task_records-records.array_record-00000-of-00001}

Each example is ``{"index": int64, "record": JSON text}``: records of different tasks have
different fields, so one JSON feature keeps the builder task-agnostic. Shuffling is disabled and
the example key is the record's index, so position ``i`` in the file is global index ``i``.

    source = build_pool(get_task("countdown"), num_items=4096, seed=0, data_dir="/tmp/pools")
    source[17]                   # -> {"index": 17, "nums": [...], "target": ..., ...}
    source.__getitems__([5, 3])  # -> [record 5, record 3]

``data_dir`` may be any path tfds/etils understand (local or ``gs://``). Several processes should
not build the same pool concurrently: build it on one process first, or use host-local dirs
(generation is deterministic, so every host gets identical records).
"""

from __future__ import annotations

import json
import operator
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from insight_jax.tasks.base import Record, RecordError, Task

_SPLIT = "records"  # the one tfds split of a pool (the task split is part of the pool's name)
_VERSION = "1.0.0"

PathLike = str | epath.PathLike


class DataFormatError(ValueError):
    """Malformed user data; the message and attributes name the file, line and field."""

    def __init__(self, message: str, path: str, line: int | None, field: str | None):
        super().__init__(message)
        self.path = path
        self.line = line
        self.field = field


class TaskRecords(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """A pool of task records (any task), one split ``"records"``, in record-index order.

    Args:
      records: the records to write, each with ``"index"`` equal to its position.
      metadata: JSON-serialisable facts about the pool (task, config, seed, ...), saved as
        ``metadata.json`` and returned by :attr:`RecordSource.metadata`.
      **kwargs: ``tfds.core.DatasetBuilder`` arguments (``data_dir``, ...).
    """

    VERSION = tfds.core.Version(_VERSION)
    RELEASE_NOTES = {_VERSION: "JSON records keyed by global index."}  # noqa: RUF012

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> None:
        # This builder has no code-side resources (checksums, README). Returning None also avoids
        # tfds 4.9.10's unconditional `importlib_resources` use there, a package it only declares
        # for Python < 3.9 (tensorflow/datasets#11212): without this, building fails with
        # "No module named 'importlib_resources'" when the builder lives in a package module.
        return None

    def __init__(
        self,
        *,
        records: Iterable[Record] = (),
        metadata: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ):
        self._records = records
        self._pool_metadata = dict(metadata or {})
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="Task records for RL with verifiable rewards (insight_jax.tasks).",
            features=tfds.features.FeaturesDict(
                {"index": tfds.features.Scalar(np.int64), "record": tfds.features.Text()}
            ),
            # Keys are global indices; unshuffled, the file order is the index order.
            disable_shuffling=True,
            metadata=tfds.core.MetadataDict(self._pool_metadata),
        )

    def _split_generators(self, dl_manager: Any) -> dict[str, Any]:
        del dl_manager  # nothing to download
        return {_SPLIT: self._generate_examples()}

    def _generate_examples(self) -> Iterator[tuple[int, dict[str, Any]]]:
        for position, record in enumerate(self._records):
            index = record.get("index") if isinstance(record, Mapping) else None
            if index != position or isinstance(index, bool):
                raise RecordError(
                    f"record at position {position} has index {index!r}; write_records needs"
                    " records with 'index' 0..n-1 in order",
                    "index",
                )
            yield position, {"index": position, "record": json.dumps(record)}


def _dataset_dir(path: PathLike) -> epath.Path:
    """The tfds dataset directory of a pool: ``path`` itself if it holds one, else inside it."""
    path = epath.Path(path)
    if (path / "dataset_info.json").exists():
        return path
    return path / "task_records" / _VERSION


def pool_exists(path: PathLike) -> bool:
    """True iff a complete pool was written at ``path``."""
    return (_dataset_dir(path) / "dataset_info.json").exists()


def write_records(
    path: PathLike,
    records: Iterable[Record],
    metadata: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> epath.Path:
    """Writes ``records`` (index 0..n-1 in order, JSON-serialisable) as an array_record pool.

    Records are streamed, so ``records`` may be a generator (pools of millions). Returns the
    dataset directory.

    Raises:
      FileExistsError: if a pool exists at ``path`` and ``overwrite`` is False.
      RecordError: if a record's ``"index"`` is not its position.
      ValueError: if there are no records (tfds refuses empty splits).
    """
    path = epath.Path(path)
    if pool_exists(path):
        if not overwrite:
            raise FileExistsError(f"a pool already exists at {path}; pass overwrite=True")
        _dataset_dir(path).rmtree()
    builder = TaskRecords(
        records=records, metadata=metadata, data_dir=path, file_format="array_record"
    )
    builder.download_and_prepare()
    return epath.Path(builder.data_dir)


class RecordSource:
    """Random access to a pool: ``len(source)``, ``source[i]``, ``source.__getitems__(indices)``.

    Follows the random-access data source protocol of grain/tfds (``__len__``, ``__getitem__``,
    ``__getitems__``). Opens the files lazily, and pickles as its path only (for data-loader
    worker processes).
    """

    def __init__(self, path: PathLike):
        self._dir = _dataset_dir(path)
        if not (self._dir / "dataset_info.json").exists():
            raise FileNotFoundError(f"no pool at {path} (expected {self._dir}/dataset_info.json)")
        self._source: Any = None
        self._metadata: dict[str, Any] | None = None

    def _open(self) -> Any:
        if self._source is None:
            builder = tfds.builder_from_directory(self._dir)
            self._source = builder.as_data_source(split=_SPLIT)
            self._metadata = dict(builder.info.metadata or {})
        return self._source

    @property
    def path(self) -> epath.Path:
        return self._dir

    @property
    def metadata(self) -> dict[str, Any]:
        """The ``metadata`` passed to :func:`write_records` (task, config, seed, ...)."""
        self._open()
        return dict(self._metadata or {})

    def __len__(self) -> int:
        return len(self._open())

    def _check(self, index: Any) -> int:
        i = operator.index(index)  # accepts numpy integers, rejects floats and slices
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"index {index} out of range for a pool of {n} records")
        return i

    def __getitem__(self, index: int) -> Record:
        return json.loads(self._open()[self._check(index)]["record"])

    def __getitems__(self, indices: Sequence[int] | np.ndarray) -> list[Record]:
        """Records at ``indices`` (any order, repeats allowed), in that order."""
        checked = [self._check(i) for i in np.asarray(indices, dtype=np.int64).reshape(-1).tolist()]
        if not checked:
            return []
        return [json.loads(ex["record"]) for ex in self._open().__getitems__(checked)]

    def __iter__(self) -> Iterator[Record]:
        for i in range(len(self)):
            yield self[i]

    def __getstate__(self) -> dict[str, Any]:
        return {"_dir": self._dir, "_source": None, "_metadata": None}

    def __repr__(self) -> str:
        return f"RecordSource({str(self._dir)!r})"


def open_source(path: PathLike) -> RecordSource:
    """Opens the pool written at ``path`` by :func:`write_records` (or its dataset directory)."""
    return RecordSource(path)


def pool_dir(task: Task, num_items: int, seed: int, data_dir: PathLike, split: str) -> epath.Path:
    """Where :func:`build_pool` keeps a pool: one directory per task config, split, size, seed."""
    return epath.Path(data_dir) / f"{task.name}-{split}-n{num_items}-s{seed}-{task.fingerprint()}"


def build_pool(
    task: Task, num_items: int, seed: int, data_dir: PathLike, split: str = "train"
) -> RecordSource:
    """Generates the pool (unless already on disk) and opens it for random access by index.

    Raises:
      ValueError: if the pool on disk does not match the request (e.g. a partial copy).
    """
    path = pool_dir(task, num_items, seed, data_dir, split)
    metadata = {
        "task": task.name,
        "config": task.config(),
        "num_items": num_items,
        "seed": seed,
        "split": split,
    }
    if not pool_exists(path):
        write_records(path, task.generate(num_items, seed, split), metadata)
    source = open_source(path)
    if len(source) != num_items or source.metadata != json.loads(json.dumps(metadata)):
        raise ValueError(
            f"pool at {path} does not match the request: {len(source)} records, metadata"
            f" {source.metadata} != {metadata}; delete the directory to rebuild it"
        )
    return source


def load_jsonl(path: PathLike, task: Task) -> list[Record]:
    """Reads user records (one JSON object per line; blank lines skipped) and validates them.

    A record without ``"index"`` gets its position (0-based, counting non-blank lines); a record
    with one must have its position (the index is the pool's global index).

    Raises:
      DataFormatError: naming the file, the 1-based line, the record number and the field, for
        invalid JSON, a non-object line, a missing field or a field of the wrong type/value.
    """
    path_str = str(path)
    records: list[Record] = []
    with epath.Path(path).open("r", encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path_str}:{line_no} (record {len(records)})"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataFormatError(
                    f"{where}: invalid JSON: {e.msg} at column {e.colno}", path_str, line_no, None
                ) from None
            if isinstance(obj, dict):
                obj.setdefault("index", len(records))
                if obj["index"] != len(records) or isinstance(obj["index"], bool):
                    raise DataFormatError(
                        f"{where}: field 'index' is {obj['index']!r} but must be the record's"
                        f" position {len(records)} (or be omitted)",
                        path_str,
                        line_no,
                        "index",
                    )
            try:
                task.validate_record(obj)
            except RecordError as e:
                field = f"field {e.field!r}: " if e.field else ""
                raise DataFormatError(f"{where}: {field}{e}", path_str, line_no, e.field) from None
            records.append(obj)
    return records


def write_jsonl(path: PathLike, records: Iterable[Record]) -> None:
    """Writes records one JSON object per line (the format :func:`load_jsonl` reads)."""
    with epath.Path(path).open("w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")


def pool_from_jsonl(jsonl_path: PathLike, task: Task, data_dir: PathLike) -> RecordSource:
    """Validates a user JSONL file, converts it to a pool under ``data_dir`` once, and opens it."""
    path = epath.Path(data_dir) / f"{task.name}-{epath.Path(jsonl_path).stem}"
    if not pool_exists(path):
        write_records(
            path, load_jsonl(jsonl_path, task), {"task": task.name, "source": str(jsonl_path)}
        )
    return open_source(path)
