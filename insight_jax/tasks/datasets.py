"""Task pools on disk: one array_record file with random access by global index.

A pool directory ``path`` holds two files, both written and read by this module only::

    path/pool.json                               {"format": "insight_jax.task_pool", "version": 1,
                                                  "num_records": n, "metadata": {...}}
    path/records.array_record-00000-of-00001     record i at position i, as UTF-8 JSON

The record codec is fixed: each array_record entry is ``json.dumps(record)`` in UTF-8, and
``pool.json`` is plain JSON. Nothing read from a pool folder names code: no class, module or
codec is looked up from file contents, so a crafted folder can at worst fail to open (with a
:class:`DataFormatError`), never make the project import or run anything. (Pools used to be
tensorflow_datasets folders, whose ``features.json`` names feature classes that tfds imports on
open; such folders are refused with an error saying to rebuild them.)

    source = build_pool(get_task("countdown"), num_items=4096, seed=0, data_dir="/tmp/pools")
    source[17]                   # -> {"index": 17, "nums": [...], "target": ..., ...}
    source.__getitems__([5, 3])  # -> [record 5, record 3]
    source = pool_from_file("countdown.parquet[:2000]", get_task("countdown"), "/tmp/pools")

Pools are local directories (array_record's reader opens files by path). A pool is complete once
``pool.json`` exists: it is written last, and both files are written under unique temporary names
and renamed into place, so an interrupted or concurrent build never leaves a pool that opens with
wrong records (generation is deterministic, so concurrent builders write identical files).
"""

from __future__ import annotations

import hashlib
import json
import operator
import os
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
from array_record.python.array_record_module import ArrayRecordReader, ArrayRecordWriter
from etils import epath

from insight_jax.tasks.base import Record, RecordError, Task
from insight_jax.tasks.loaders import (
    DataFormatError,
    file_sha256,
    iter_records,
    parse_path_spec,
    resolve_format,
    resolve_spec,
)

POOL_FILE = "pool.json"
RECORDS_FILE = "records.array_record-00000-of-00001"
POOL_FORMAT = "insight_jax.task_pool"
POOL_VERSION = 1
# Files that mark a folder written by the old tensorflow_datasets-based format.
_LEGACY_FILES = ("dataset_info.json", "features.json", "task_records")

PathLike = str | os.PathLike


def _temporary(path: epath.Path) -> epath.Path:
    """A unique sibling name for writing ``path`` before renaming it into place."""
    return path.parent / f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex}"


def _encode(record: Any, position: int) -> bytes:
    """The fixed record codec: UTF-8 JSON of a record whose ``"index"`` is its position."""
    index = record.get("index") if isinstance(record, Mapping) else None
    if index != position or isinstance(index, bool):
        raise RecordError(
            f"record at position {position} has index {index!r}; write_records needs"
            " records with 'index' 0..n-1 in order",
            "index",
        )
    return json.dumps(record).encode("utf-8")


def _decode(data: bytes, position: int, path: epath.Path) -> Record:
    """Inverse of :func:`_encode`; checks the record is an object with its position as index."""
    try:
        record = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataFormatError(
            f"{path}: record {position} is not UTF-8 JSON ({e})", str(path), position, None
        ) from None
    if not isinstance(record, dict) or record.get("index") != position:
        raise DataFormatError(
            f"{path}: record {position} must be a JSON object with 'index' {position}, got"
            f" {record!r:.80}",
            str(path),
            position,
            "index",
        )
    return record


def pool_exists(path: PathLike) -> bool:
    """True iff a complete pool was written at ``path`` (its ``pool.json`` exists)."""
    return (epath.Path(path) / POOL_FILE).exists()


def _write_shard(path: epath.Path, records: Iterable[Record]) -> int:
    """Streams ``records`` into the array_record file ``path``; returns how many were written.

    Written under a temporary name and renamed, so ``path`` only ever holds a complete file.
    """
    tmp = _temporary(path)
    count = 0
    try:
        # group_size:1: every record is its own chunk, so a random read decodes one record.
        writer = ArrayRecordWriter(os.fspath(tmp), "group_size:1")
        try:
            for position, record in enumerate(records):
                writer.write(_encode(record, position))
                count += 1
        finally:
            writer.close()  # raises if the file could not be written
        if count == 0:
            raise ValueError("write_records needs at least one record, got none")
        tmp.replace(path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return count


def write_records(
    path: PathLike,
    records: Iterable[Record],
    metadata: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> epath.Path:
    """Writes ``records`` (index 0..n-1 in order, JSON-serialisable) as a pool at ``path``.

    Records are streamed, so ``records`` may be a generator (pools of millions). ``metadata``
    (JSON-serialisable facts about the pool: task, config, seed, ...) is saved in ``pool.json``
    and returned by :attr:`RecordSource.metadata`. Returns the pool directory.

    Raises:
      FileExistsError: if a pool exists at ``path`` and ``overwrite`` is False.
      RecordError: if a record's ``"index"`` is not its position (nothing is left on disk).
      ValueError: if there are no records.
    """
    path = epath.Path(path)
    if pool_exists(path):
        if not overwrite:
            raise FileExistsError(f"a pool already exists at {path}; pass overwrite=True")
        (path / POOL_FILE).unlink()  # first, so a failed overwrite leaves no complete-looking pool
    header = {
        "format": POOL_FORMAT,
        "version": POOL_VERSION,
        "num_records": None,
        "metadata": dict(metadata or {}),
    }
    json.dumps(header)  # a metadata that is not JSON-serialisable fails before any work
    path.mkdir(parents=True, exist_ok=True)
    header["num_records"] = _write_shard(path / RECORDS_FILE, records)
    tmp = _temporary(path / POOL_FILE)
    tmp.write_text(json.dumps(header, indent=1, sort_keys=True), encoding="utf-8")
    tmp.replace(path / POOL_FILE)
    return path


def _read_header(path: epath.Path) -> dict[str, Any]:
    """Reads and checks ``pool.json``: a JSON object of the expected format, version and fields.

    Raises:
      FileNotFoundError: if ``path`` holds no pool (the message says if it is an old tfds pool).
      DataFormatError: if ``pool.json`` is not a valid header.
    """
    file = path / POOL_FILE
    if not file.exists():
        if any((path / name).exists() for name in _LEGACY_FILES):
            raise FileNotFoundError(
                f"{path} holds a pool in the old tensorflow_datasets layout, which is no longer"
                " read (its features.json names classes to import); delete it to rebuild it"
            )
        raise FileNotFoundError(f"no pool at {path} (expected {file})")
    try:
        header = json.loads(file.read_bytes())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataFormatError(f"{file}: not UTF-8 JSON ({e})", str(file), None, None) from None
    if not isinstance(header, dict):
        raise DataFormatError(f"{file}: must be a JSON object", str(file), None, None)
    expected = {"format": POOL_FORMAT, "version": POOL_VERSION}
    for field, value in expected.items():
        if header.get(field) != value:
            raise DataFormatError(
                f"{file}: field {field!r} must be {value!r}, got {header.get(field)!r:.60}",
                str(file),
                None,
                field,
            )
    num = header.get("num_records")
    if isinstance(num, bool) or not isinstance(num, int) or num < 1:
        raise DataFormatError(
            f"{file}: field 'num_records' must be an int >= 1, got {num!r:.60}",
            str(file),
            None,
            "num_records",
        )
    if not isinstance(header.get("metadata"), dict):
        raise DataFormatError(
            f"{file}: field 'metadata' must be a JSON object", str(file), None, "metadata"
        )
    return header


class RecordSource:
    """Random access to a pool: ``len(source)``, ``source[i]``, ``source.__getitems__(indices)``.

    Follows the random-access data source protocol of grain/tfds (``__len__``, ``__getitem__``,
    ``__getitems__``). Checks ``pool.json`` when built, opens the record file lazily, and pickles
    as its path only (for data-loader worker processes).

    Raises:
      FileNotFoundError: if ``path`` holds no pool.
      DataFormatError: if the pool's files are malformed (checked on open and on every read).
    """

    def __init__(self, path: PathLike):
        self._dir = epath.Path(path)
        header = _read_header(self._dir)
        self._num_records: int = header["num_records"]
        self._metadata: dict[str, Any] = header["metadata"]
        self._reader: ArrayRecordReader | None = None

    def _damaged(self, problem: str) -> DataFormatError:
        file = self._dir / RECORDS_FILE
        return DataFormatError(
            f"{file}: damaged pool ({problem}); delete {self._dir} to rebuild it",
            str(file),
            None,
            None,
        )

    def _open(self) -> ArrayRecordReader:
        if self._reader is None:
            file = self._dir / RECORDS_FILE
            if not file.exists():
                raise self._damaged("the record file is missing")
            # array_record reports unreadable files (bad framing or checksum) as RuntimeError,
            # from the constructor, ok()/num_records() or close().
            try:
                # No readahead: reads are random, one record each.
                reader = ArrayRecordReader(os.fspath(file), "readahead_buffer_size:0")
                found = reader.num_records() if reader.ok() else None
                if found != self._num_records:
                    reader.close()
            except RuntimeError as e:
                raise self._damaged(f"unreadable: {e}") from None
            if found != self._num_records:
                raise self._damaged(
                    f"{found if found is not None else 'unreadable'} records, {POOL_FILE} says"
                    f" {self._num_records}"
                )
            self._reader = reader
        return self._reader

    @property
    def path(self) -> epath.Path:
        return self._dir

    @property
    def metadata(self) -> dict[str, Any]:
        """The ``metadata`` passed to :func:`write_records` (task, config, seed, ...)."""
        return json.loads(json.dumps(self._metadata))  # a deep copy

    def __len__(self) -> int:
        return self._num_records

    def _check(self, index: Any) -> int:
        i = operator.index(index)  # accepts numpy integers, rejects floats and slices
        n = self._num_records
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"index {index} out of range for a pool of {n} records")
        return i

    def _read(self, positions: list[int]) -> list[Record]:
        reader = self._open()
        try:
            blobs = reader.read(positions)
        except RuntimeError as e:  # a chunk fails riegeli's checksum or framing
            raise self._damaged(f"unreadable: {e}") from None
        file = self._dir / RECORDS_FILE
        return [_decode(data, i, file) for data, i in zip(blobs, positions, strict=True)]

    def __getitem__(self, index: int) -> Record:
        return self._read([self._check(index)])[0]

    def __getitems__(self, indices: Sequence[int] | np.ndarray) -> list[Record]:
        """Records at ``indices`` (any order, repeats allowed), in that order."""
        checked = [self._check(i) for i in np.asarray(indices, dtype=np.int64).reshape(-1).tolist()]
        if not checked:
            return []
        return self._read(checked)

    def __iter__(self) -> Iterator[Record]:
        for i in range(len(self)):
            yield self[i]

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_reader"] = None
        return state

    def __repr__(self) -> str:
        return f"RecordSource({str(self._dir)!r})"


def open_source(path: PathLike) -> RecordSource:
    """Opens the pool written at ``path`` by :func:`write_records`."""
    return RecordSource(path)


def pool_dir(task: Task, num_items: int, seed: int, data_dir: PathLike, split: str) -> epath.Path:
    """Where :func:`build_pool` keeps a pool: one directory per task config, split, size, seed."""
    return epath.Path(data_dir) / f"{task.name}-{split}-n{num_items}-s{seed}-{task.fingerprint()}"


def _write_unless_raced(path: epath.Path, records: Iterable[Record], metadata: dict) -> None:
    """write_records, except that a pool completed meanwhile by another writer is kept.

    Pools are keyed by their content, so a writer that finished first (another process of a
    multi-host run, or a run sharing ``task.pool_dir``) wrote the same records; the caller's
    checks of length and metadata still apply to what is on disk."""
    try:
        write_records(path, records, metadata)
    except FileExistsError:
        if not pool_exists(path):  # not the race: e.g. a file where the pool's folder goes
            raise


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
        _write_unless_raced(path, task.generate(num_items, seed, split), metadata)
    source = open_source(path)
    if len(source) != num_items or source.metadata != json.loads(json.dumps(metadata)):
        raise ValueError(
            f"pool at {path} does not match the request: {len(source)} records, metadata"
            f" {source.metadata} != {metadata}; delete the directory to rebuild it"
        )
    return source


def _file_pool_dir(
    sha256: str, start: int, stop: int | None, fmt: str, task: Task, data_dir: PathLike
) -> epath.Path:
    """Where :func:`pool_from_file` caches rows ``start:stop`` (``stop`` as the spec gives it,
    None = to the end) in format ``fmt`` of a file with digest ``sha256``.

    Keyed by the digest, the slice, the format and the task's fingerprint (name + config, which
    decide how rows become records), not by the file's name: a copy of the file elsewhere or
    under another name maps to the same pool (``pool.json`` names the source). An open end is
    part of the key as such (the digest fixes where the file ends), so a cache hit needs no row
    count.
    """
    key = {
        "sha256": sha256,
        "start": start,
        "stop": stop,
        "format": fmt,
        "task": task.fingerprint(),
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode("utf-8")).hexdigest()[:20]
    return epath.Path(data_dir) / f"{task.name}-file-{digest}"


def _then_check_unchanged(records: Iterable[Record], path: str, sha256: str) -> Iterator[Record]:
    """``records``, then a check that the file still has digest ``sha256``: a failure raises
    inside :func:`write_records`, before the pool is complete, so no pool pairs records with a
    key they did not come from."""
    yield from records
    if file_sha256(path) != sha256:
        raise DataFormatError(
            f"{path} changed while its pool was being built; build it again", path, None, None
        )


def pool_from_file(
    spec: PathLike, task: Task, data_dir: PathLike, fmt: str = "auto"
) -> RecordSource:
    """Converts the rows a path spec selects into a pool under ``data_dir`` once, and opens it.

    ``spec``, ``fmt`` and the records are as :func:`~insight_jax.tasks.loaders.load_records`
    (``"train.parquet[:2000]"``: rows 0..1999 as records 0..1999). The pool is cached by the
    SHA-256 of the file's bytes, the slice as written, the format and the task's fingerprint,
    so an edited file or another task config gets its own pool and a copy of the file reuses it
    (``"f.jsonl"`` and ``"f.jsonl[:]"`` share one; ``"f.jsonl[0:n]"`` is another, equal,
    pool). Records are streamed into the pool (millions of rows need no list of them).
    ``pool.json``'s metadata names the ``source`` (the file that built it), its ``sha256``, the
    ``format``, ``start``, ``stop`` and ``rows``.

    A cache hit reads the file once (to hash it; no row count). A build reads it three times:
    the hash (the cache key), the rows (after counting them, to check the slice), and the hash
    again at the end, before the pool is complete, so a file changed meanwhile fails the build
    rather than leaving records under another file's key (hashing runs at disk speed, far
    faster than making records).

    Raises:
      ValueError, OSError, DataFormatError: as :func:`~insight_jax.tasks.loaders.resolve_spec`
        (a malformed spec or format before the file is read), before anything is written;
        :class:`DataFormatError` for a bad row (naming file, row, line and field), which leaves
        no pool.
    """
    file, start, stop = parse_path_spec(spec)
    fmt = resolve_format(file, fmt)
    sha256 = file_sha256(file)
    path = _file_pool_dir(sha256, start, stop, fmt, task, data_dir)
    if not pool_exists(path):
        selection = resolve_spec(spec, fmt)
        metadata = {
            "task": task.name,
            "config": task.config(),
            "source": os.path.abspath(file),
            "sha256": sha256,
            "format": fmt,
            "start": selection.start,
            "stop": selection.stop,
            "rows": len(selection),
        }
        records = iter_records(selection, task)
        _write_unless_raced(path, _then_check_unchanged(records, file, sha256), metadata)
    source = open_source(path)
    meta = source.metadata
    if (
        meta.get("sha256") != sha256
        or meta.get("start") != start
        or stop not in (None, meta.get("stop"))
        or len(source) != meta.get("rows")
    ):
        raise ValueError(
            f"pool at {path} does not match {spec!r} (file sha256 {sha256}): it holds"
            f" {len(source)} records, metadata {meta}; delete the directory to rebuild it"
        )
    return source
