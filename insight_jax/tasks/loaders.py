"""Records from local data files in public formats (JSONL, JSON, parquet), sliced as tfds splits.

    count_rows("countdown.parquet[2000:2512]")          # -> 512, from the parquet footer
    records = load_records("countdown.parquet[2000:2512]", get_task("countdown"))
    records[0]  # {"target": ..., "nums": [...], "index": 0, "source_row": 2000}

Path specs: a path, optionally followed by a row slice ``[start:stop]`` (0-based, ``stop``
exclusive; either bound may be left out), as tfds writes splits: ``"train.parquet[:2000]"``,
``"train.parquet[2000:]"``. A plain path selects every row. A slice must lie within the file and
select at least one row: a slice past the end is an error, not a shorter selection.

Formats (``fmt``; ``"auto"`` picks by extension, see :data:`EXTENSIONS`):

* ``"jsonl"``: one JSON object per line; blank lines are skipped (they are not rows).
* ``"json"``: one JSON array of objects (the whole file is parsed at once: the stdlib has no
  streaming JSON parser, and the public JSON sets are small).
* ``"parquet"``: read in record batches of the selected row groups only, so no Python list of all
  rows is ever built; columns must have JSON types (integers, floats, booleans, strings, nulls,
  and lists / structs / dictionaries of them), which become plain Python values.

Records: row ``r`` of the file (0-based, counting rows, not lines) at position ``i`` of the
selection becomes ``task.from_row(row, i)`` plus ``"source_row": r``. ``i`` is the record's
``"index"``, its stable global index in the pool. A row's own ``"index"`` or ``"source_row"``
field (a file written from an earlier pool, a public set that numbers its rows) is dropped before
``from_row``: it says where the row was in some other collection, and the record's place in this
one is ``index`` / ``source_row``.

Nothing read runs code: JSON is parsed by :mod:`json`; parquet by pyarrow, with parquet's
extension logical types off (``arrow_extensions_enabled=False``) and its pandas metadata unused. A
column whose stored arrow schema names an extension type (pyarrow restores only types already
registered in the process, never classes named by the file) is refused. Nothing is unpickled.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from insight_jax.tasks.base import Record, RecordError, Task

# The accepted values of ``fmt``.
FORMATS = ("auto", "json", "jsonl", "parquet")
# How ``fmt="auto"`` reads a file, by its (case-insensitive) extension.
EXTENSIONS = {".json": "json", ".jsonl": "jsonl", ".parquet": "parquet"}
# Fields of a row that the loader sets itself (see the module docstring).
RESERVED_FIELDS = ("index", "source_row")

# Rows per parquet record batch: one batch's Python values at a time, a few MB.
_PARQUET_BATCH_ROWS = 8192
_HASH_BLOCK = 1 << 20
# "path[start:stop]": the last bracket pair, at the end of the spec.
_SPEC = re.compile(r"(.*)\[([^\[\]]*)\]", re.DOTALL)

PathLike = str | os.PathLike


class DataFormatError(ValueError):
    """Malformed user data or pool files; the message and attributes name the file, line, field.

    Attributes:
      path: the file.
      line: the 1-based line of a JSONL file or of a JSON syntax error, or a record's position
        in a pool (else None).
      field: the offending field (None when the row itself, or the file, is malformed).
      row: the 0-based row of a data file (else None).
    """

    def __init__(
        self, message: str, path: str, line: int | None, field: str | None, row: int | None = None
    ):
        super().__init__(message)
        self.path = path
        self.line = line
        self.field = field
        self.row = row


@dataclasses.dataclass(frozen=True)
class RowSelection:
    """Rows ``start:stop`` of the file ``path`` in format ``format``, checked against the file."""

    path: str
    format: str
    start: int
    stop: int

    def __len__(self) -> int:
        return self.stop - self.start


def parse_path_spec(spec: PathLike) -> tuple[str, int, int | None]:
    """Splits ``"file[start:stop]"`` into ``(file, start, stop)``; ``stop`` None = to the end.

    A spec without a trailing ``[...]`` is a plain path: ``(spec, 0, None)``.

    Raises:
      ValueError: naming the spec, for an empty path or a malformed slice: not of the form
        ``[start:stop]``, a bound that is not a non-negative integer, or ``start > stop``.
    """
    spec = os.fspath(spec)
    if not isinstance(spec, str):
        raise ValueError(f"path spec {spec!r} must be a str path")
    match = _SPEC.fullmatch(spec)
    if match is None:
        path, start, stop = spec, 0, None
    else:
        path, body = match.groups()
        parts = body.split(":")
        if len(parts) != 2:
            raise ValueError(
                f"path spec {spec!r}: a row slice is [start:stop] (either bound may be left"
                f" out), got [{body}]"
            )
        bounds: list[int | None] = []
        for part in (p.strip() for p in parts):
            if not part:
                bounds.append(None)
            elif part.isascii() and part.isdigit():
                bounds.append(int(part))
            elif part.startswith("-"):
                raise ValueError(
                    f"path spec {spec!r}: row numbers count from the start of the file, so they"
                    f" cannot be negative; got {part}"
                )
            else:
                raise ValueError(
                    f"path spec {spec!r}: slice bounds are non-negative integers, got {part!r}"
                )
        start, stop = bounds[0] or 0, bounds[1]
        if stop is not None and start > stop:
            raise ValueError(f"path spec {spec!r}: start {start} > stop {stop}")
    if not path:
        raise ValueError(f"path spec {spec!r} names no file")
    return path, start, stop


def resolve_format(path: str, fmt: str = "auto") -> str:
    """The format that reads ``path``: ``fmt``, or by extension if ``fmt`` is ``"auto"``.

    Raises:
      ValueError: for an unknown ``fmt``, or an extension ``"auto"`` does not know.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown data format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if fmt != "auto":
        return fmt
    ext = os.path.splitext(path)[1].lower()
    if ext not in EXTENSIONS:
        known = ", ".join(f"{e} ({f})" for e, f in EXTENSIONS.items())
        raise ValueError(
            f"{path}: cannot tell the data format from the extension {ext!r}; format 'auto'"
            f" knows {known}; pass the format (one of {', '.join(FORMATS[1:])})"
        )
    return EXTENSIONS[ext]


def file_sha256(path: PathLike) -> str:
    """The SHA-256 hex digest of a file's bytes, read in 1 MiB blocks (never all in memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_HASH_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


# --- the formats: rows of a file ----------------------------------------------------------------


def _json_line(raw: bytes, path: str, line: int, row: int) -> Any:
    try:
        # A byte-order mark may open the file (editors on Windows write one); it is no row data.
        return json.loads(raw.decode("utf-8-sig" if line == 1 else "utf-8"))
    except UnicodeDecodeError as e:
        message = f"{path}:{line} (row {row}): not UTF-8 ({e.reason} at byte {e.start})"
    except json.JSONDecodeError as e:
        message = f"{path}:{line} (row {row}): invalid JSON: {e.msg} at column {e.colno}"
    raise DataFormatError(message, path, line, None, row)


def _jsonl_count(path: str) -> int:
    with open(path, "rb") as f:
        return sum(1 for raw in f if raw.strip())


def _jsonl_rows(sel: RowSelection) -> Iterator[tuple[int, int | None, Any]]:
    row = 0
    with open(sel.path, "rb") as f:
        for line, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            if row >= sel.stop:
                return
            if row >= sel.start:  # rows before the slice are skipped unparsed
                yield row, line, _json_line(raw, sel.path, line, row)
            row += 1
    if row < sel.stop:
        raise DataFormatError(
            f"{sel.path}: ended after {row} rows, the selection needs {sel.stop} (was the file"
            " changed?)",
            sel.path,
            None,
            None,
        )


def _json_array(path: str) -> list[Any]:
    with open(path, "rb") as f:
        data = f.read()
    try:
        rows = json.loads(data)  # bytes: UTF-8 (or UTF-16/32 with a BOM), as RFC 8259 allows
    except UnicodeDecodeError as e:
        raise DataFormatError(f"{path}: not UTF-8 ({e.reason})", path, None, None) from None
    except json.JSONDecodeError as e:
        raise DataFormatError(
            f"{path}:{e.lineno}: invalid JSON: {e.msg} at column {e.colno}", path, e.lineno, None
        ) from None
    if not isinstance(rows, list):
        raise DataFormatError(
            f"{path}: format 'json' is one JSON array of row objects, got a"
            f" {type(rows).__name__} (one object per line is format 'jsonl')",
            path,
            None,
            None,
        )
    return rows


def _json_rows(sel: RowSelection) -> Iterator[tuple[int, int | None, Any]]:
    rows = _json_array(sel.path)
    if len(rows) < sel.stop:
        raise DataFormatError(
            f"{sel.path}: has {len(rows)} rows, the selection needs {sel.stop} (was the file"
            " changed?)",
            sel.path,
            None,
            None,
        )
    for row in range(sel.start, sel.stop):
        yield row, None, rows[row]


_SCALAR_TYPES = (
    pa.types.is_integer,
    pa.types.is_floating,
    pa.types.is_boolean,
    pa.types.is_string,
    pa.types.is_large_string,
    pa.types.is_string_view,
    pa.types.is_null,
)
_LIST_TYPES = (
    pa.types.is_list,
    pa.types.is_large_list,
    pa.types.is_fixed_size_list,
    pa.types.is_list_view,
    pa.types.is_large_list_view,
)


def _json_type(t: pa.DataType) -> bool:
    """Whether arrow values of type ``t`` become JSON values (None, bool, int, float, str,
    list, dict) in ``to_pylist``; extension types never do (their Python form is their own)."""
    if isinstance(t, pa.BaseExtensionType):
        return False
    if any(check(t) for check in _SCALAR_TYPES):
        return True
    if any(check(t) for check in _LIST_TYPES) or pa.types.is_dictionary(t):
        return _json_type(t.value_type)
    if pa.types.is_struct(t):
        return all(_json_type(t.field(i).type) for i in range(t.num_fields))
    return False


def _parquet_file(path: str) -> pq.ParquetFile:
    """Opens a parquet file and checks its columns have JSON types and distinct names."""
    try:
        # Parquet logical types (JSON, UUID) are read as their storage types. (A stored arrow
        # schema may still name a registered extension type; those columns are refused below.)
        file = pq.ParquetFile(path, arrow_extensions_enabled=False)
        schema = file.schema_arrow
    except pa.ArrowException as e:
        raise DataFormatError(
            f"{path}: not a readable parquet file ({e})", path, None, None
        ) from None
    names = schema.names
    for field in schema:
        if names.count(field.name) > 1:
            raise DataFormatError(
                f"{path}: column {field.name!r} appears {names.count(field.name)} times",
                path,
                None,
                field.name,
            )
        if not _json_type(field.type):
            raise DataFormatError(
                f"{path}: column {field.name!r} has type {field.type}, which has no JSON value;"
                " columns must be integers, floats, booleans, strings or nulls, or lists,"
                " structs or dictionaries of them",
                path,
                None,
                field.name,
            )
    return file


def _parquet_rows(sel: RowSelection) -> Iterator[tuple[int, int | None, Any]]:
    file = _parquet_file(sel.path)
    if file.metadata.num_rows < sel.stop:
        raise DataFormatError(
            f"{sel.path}: has {file.metadata.num_rows} rows, the selection needs {sel.stop} (was"
            " the file changed?)",
            sel.path,
            None,
            None,
        )
    # Only the row groups that overlap the slice are read.
    groups, first, offset = [], None, 0
    for g in range(file.num_row_groups):
        size = file.metadata.row_group(g).num_rows
        if offset < sel.stop and offset + size > sel.start:
            groups.append(g)
            first = offset if first is None else first
        offset += size
    row = first
    try:
        batches = file.iter_batches(batch_size=_PARQUET_BATCH_ROWS, row_groups=groups)
        for batch in batches:
            lo, hi = max(sel.start - row, 0), min(sel.stop - row, batch.num_rows)
            if lo < hi:
                for k, value in enumerate(batch.slice(lo, hi - lo).to_pylist()):
                    yield row + lo + k, None, value
            row += batch.num_rows
            if row >= sel.stop:
                return
    except pa.ArrowException as e:
        raise DataFormatError(
            f"{sel.path}: unreadable parquet data ({e})", sel.path, None, None
        ) from None


def _file_rows(path: str, fmt: str) -> int:
    """How many rows the whole file has."""
    if fmt == "parquet":
        return _parquet_file(path).metadata.num_rows
    if fmt == "jsonl":
        return _jsonl_count(path)
    return len(_json_array(path))


_ROWS = {"jsonl": _jsonl_rows, "json": _json_rows, "parquet": _parquet_rows}


# --- selections and records -----------------------------------------------------------------


def resolve_spec(spec: PathLike, fmt: str = "auto") -> RowSelection:
    """The rows a path spec selects, checked against the file (cheap: see :func:`count_rows`).

    Raises:
      ValueError: for a malformed spec or format, or a slice past the end of the file or
        selecting no rows.
      DataFormatError: for a file with no rows or that cannot be read in its format.
      OSError: if the file cannot be opened.
    """
    path, start, stop = parse_path_spec(spec)
    fmt = resolve_format(path, fmt)
    total = _file_rows(path, fmt)
    if total == 0:
        raise DataFormatError(f"{path}: has no rows (format {fmt!r})", path, None, None)
    if stop is None:
        if start >= total:
            raise ValueError(f"path spec {spec!r}: starts at row {start}, the file has {total}")
        stop = total
    if stop > total:
        raise ValueError(
            f"path spec {spec!r}: rows {start}:{stop} run past the end of the file ({total} rows)"
        )
    if start == stop:
        raise ValueError(f"path spec {spec!r} selects no rows")
    return RowSelection(path, fmt, start, stop)


def count_rows(spec: PathLike, fmt: str = "auto") -> int:
    """The number of rows ``spec`` selects, without making records.

    Cheap: parquet's footer; a scan for blank lines of a JSONL file; a JSON file is parsed.

    Raises:
      As :func:`resolve_spec`.
    """
    return len(resolve_spec(spec, fmt))


def _records(sel: RowSelection, task: Task) -> Iterator[Record]:
    for position, (row_number, line, row) in enumerate(_ROWS[sel.format](sel)):
        at = sel.path if line is None else f"{sel.path}:{line}"
        where = f"{at} (row {row_number})"
        if not isinstance(row, dict):
            raise DataFormatError(
                f"{where}: a row must be a JSON object, got {type(row).__name__} {row!r:.60}",
                sel.path,
                line,
                None,
                row_number,
            )
        row = {k: v for k, v in row.items() if k not in RESERVED_FIELDS}
        try:
            record = task.from_row(row, position)
        except RecordError as e:
            field = f"field {e.field!r}: " if e.field else ""
            raise DataFormatError(
                f"{where}: {field}{e}", sel.path, line, e.field, row_number
            ) from None
        record["source_row"] = row_number
        yield record


def iter_records(spec: PathLike | RowSelection, task: Task, fmt: str = "auto") -> Iterator[Record]:
    """Streams the records of the rows ``spec`` selects (rules: module docstring).

    The spec is checked against the file now (as :func:`resolve_spec`); the rows are read as the
    iterator advances. ``spec`` may be a :class:`RowSelection` already resolved (then ``fmt`` is
    not used).

    Raises:
      As :func:`resolve_spec`, now; while iterating, :class:`DataFormatError` naming the file, the
      row (``row``; and ``line`` for JSONL) and the field (``field``) for invalid JSON, a row that
      is not an object, or a field that ``task.from_row`` rejects.
    """
    selection = spec if isinstance(spec, RowSelection) else resolve_spec(spec, fmt)
    return _records(selection, task)


def load_records(spec: PathLike | RowSelection, task: Task, fmt: str = "auto") -> list[Record]:
    """The records of the rows ``spec`` selects, as a list (at least one; errors: as
    :func:`iter_records`)."""
    return list(iter_records(spec, task, fmt))
