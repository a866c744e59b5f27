"""Records from public data files: formats, tfds-style slices, counts, errors, no code from data.

Files are written here in the real formats (pyarrow for parquet, json for JSON/JSONL); expected
records come from plain Python slicing of the rows written, never from the loader.
"""

from __future__ import annotations

import json
import pathlib
import pickle
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from insight_jax.tasks import CountdownTask, loaders
from insight_jax.tasks.base import Record, RecordError, Task
from insight_jax.tasks.loaders import (
    DataFormatError,
    count_rows,
    iter_records,
    load_records,
    parse_path_spec,
    resolve_format,
    resolve_spec,
)
from insight_jax.tasks.multiple_choice import MultipleChoiceTask


class _MathTask(Task):
    """A minimal math-answer task: records {"problem", "answer"}; eval files may say
    ``question`` for ``problem`` (as some public sets do)."""

    name = "test_math"
    max_reward = 1.0
    fields: ClassVar[Mapping[str, type]] = {"problem": str, "answer": str}

    def generate(self, num_items, seed, split="train"):
        raise NotImplementedError

    def prompt(self, record):
        return record["problem"]

    def reference_completion(self, record):
        return record["answer"]

    def verify(self, completion, record):
        return float(completion == record["answer"])

    def from_row(self, row: Any, index: int) -> Record:
        if isinstance(row, Mapping) and "question" in row and "problem" not in row:
            row = {("problem" if k == "question" else k): v for k, v in row.items()}
        return super().from_row(row, index)


def _countdown_rows(n, seed=0):
    """Countdown rows (public field names) from a seeded numpy RNG."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        count = int(rng.integers(3, 5))
        rows.append(
            {"target": int(rng.integers(1, 100)), "nums": rng.integers(1, 50, count).tolist()}
        )
    return rows


def _write_parquet(path, rows, row_group_size=5):
    table = pa.table(
        {
            "target": pa.array([r["target"] for r in rows], pa.int64()),
            "nums": pa.array([r["nums"] for r in rows], pa.list_(pa.int64())),
        }
    )
    pq.write_table(table, path, row_group_size=row_group_size)
    return path


def _write_jsonl(path, rows, blank_every=0):
    lines = []
    for i, row in enumerate(rows):
        if blank_every and i % blank_every == 0:
            lines.append("   ")  # blank lines are not rows
        lines.append(json.dumps(row))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _write_json(path, rows):
    path.write_text(json.dumps(rows, indent=1), encoding="utf-8")
    return path


ROWS = _countdown_rows(23, seed=1)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("files")
    return {
        "parquet": _write_parquet(folder / "countdown.parquet", ROWS),
        "jsonl": _write_jsonl(folder / "countdown.jsonl", ROWS, blank_every=4),
        "json": _write_json(folder / "countdown.json", ROWS),
    }


# --- path specs -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("data.parquet", ("data.parquet", 0, None)),
        ("data.parquet[2000:2512]", ("data.parquet", 2000, 2512)),
        ("data.parquet[:2000]", ("data.parquet", 0, 2000)),
        ("data.parquet[2000:]", ("data.parquet", 2000, None)),
        ("data.parquet[:]", ("data.parquet", 0, None)),
        ("data.parquet[ 3 : 7 ]", ("data.parquet", 3, 7)),
        ("data.parquet[5:5]", ("data.parquet", 5, 5)),
        ("dir[1]/data.jsonl", ("dir[1]/data.jsonl", 0, None)),  # brackets inside a path
        ("dir/a[b].jsonl[1:2]", ("dir/a[b].jsonl", 1, 2)),
        (pathlib.Path("x/y.json"), ("x/y.json", 0, None)),
    ],
)
def test_parse_path_spec(spec, expected):
    assert parse_path_spec(spec) == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("data.parquet[-5:]", "negative"),
        ("data.parquet[:-1]", "negative"),
        ("data.parquet[5:2]", "start 5 > stop 2"),
        ("data.parquet[a:b]", "non-negative integers"),
        ("data.parquet[1.5:3]", "non-negative integers"),
        ("data.parquet[:10%]", "non-negative integers"),
        ("data.parquet[٣:5]", "non-negative integers"),  # a non-ASCII digit
        ("data.parquet[3]", r"\[start:stop\]"),
        ("data.parquet[1:2:3]", r"\[start:stop\]"),
        ("[:10]", "names no file"),
        ("", "names no file"),
    ],
)
def test_malformed_specs_name_the_spec(spec, message):
    with pytest.raises(ValueError, match=message) as info:
        parse_path_spec(spec)
    assert repr(spec) in str(info.value)


def test_formats_by_extension():
    assert [resolve_format(p) for p in ("a.json", "a.JSONL", "b/c.parquet")] == [
        "json",
        "jsonl",
        "parquet",
    ]
    assert resolve_format("a.txt", "jsonl") == "jsonl"
    for path in ("a.csv", "a", "a.jsonl.gz"):
        with pytest.raises(ValueError, match=r"\.json \(json\), \.jsonl \(jsonl\)") as info:
            resolve_format(path)
        assert path in str(info.value)
    with pytest.raises(ValueError, match="auto, json, jsonl, parquet"):
        resolve_format("a.json", "csv")


# --- rows, slices and counts in every format ---------------------------------------------------

SLICES = [
    ("", 0, 23),
    ("[:]", 0, 23),
    ("[:7]", 0, 7),
    ("[5:]", 5, 23),
    ("[4:17]", 4, 17),  # across parquet row groups of 5
    ("[10:15]", 10, 15),  # exactly one row group
    ("[0:23]", 0, 23),
    ("[22:23]", 22, 23),
    ("[22:]", 22, 23),
]


@pytest.mark.parametrize("fmt", ["parquet", "jsonl", "json"])
@pytest.mark.parametrize(("suffix", "start", "stop"), SLICES)
def test_records_of_a_slice_are_the_rows(files, fmt, suffix, start, stop):
    spec = f"{files[fmt]}{suffix}"
    expected = [
        {**row, "index": i, "source_row": start + i} for i, row in enumerate(ROWS[start:stop])
    ]
    assert count_rows(spec) == stop - start == len(resolve_spec(spec))
    task = CountdownTask()
    records = load_records(spec, task)
    assert records == expected
    assert list(iter_records(spec, task, fmt=fmt)) == expected
    # Plain Python values, as the pool's JSON codec needs.
    assert all(type(r["target"]) is int and all(type(n) is int for n in r["nums"]) for r in records)


def test_parquet_batches_smaller_than_row_groups(files, monkeypatch):
    monkeypatch.setattr(loaders, "_PARQUET_BATCH_ROWS", 2)
    for start, stop in [(0, 23), (3, 20), (7, 8), (9, 11)]:
        got = load_records(f"{files['parquet']}[{start}:{stop}]", CountdownTask())
        assert [r["target"] for r in got] == [r["target"] for r in ROWS[start:stop]]
        assert [r["source_row"] for r in got] == list(range(start, stop))


def test_format_given_explicitly(tmp_path):
    path = _write_jsonl(tmp_path / "rows.txt", ROWS[:3])
    with pytest.raises(ValueError, match=r"extension '\.txt'"):
        count_rows(path)
    assert count_rows(path, fmt="jsonl") == 3
    assert load_records(f"{path}[1:]", CountdownTask(), fmt="jsonl")[0]["nums"] == ROWS[1]["nums"]


def test_parquet_values_become_plain_python(tmp_path):
    table = pa.table(
        {
            "problem": pa.array(["a", "b"]).dictionary_encode(),
            "answer": pa.array(["1", "2"], pa.large_string()),
            "level": pa.array([1, 5], pa.int32()),
            "score": pa.array([0.5, None], pa.float32()),
            "ok": pa.array([True, False]),
            "tags": pa.array([["x"], []], pa.list_(pa.string())),
            "meta": pa.array([{"k": 1, "v": [2.0]}, {"k": 3, "v": []}]),
        }
    )
    pq.write_table(table, tmp_path / "m.parquet")
    records = load_records(tmp_path / "m.parquet", _MathTask())
    assert records == [
        {
            "problem": "a",
            "answer": "1",
            "level": 1,
            "score": 0.5,
            "ok": True,
            "tags": ["x"],
            "meta": {"k": 1, "v": [2.0]},
            "index": 0,
            "source_row": 0,
        },
        {
            "problem": "b",
            "answer": "2",
            "level": 5,
            "score": None,
            "ok": False,
            "tags": [],
            "meta": {"k": 3, "v": []},
            "index": 1,
            "source_row": 1,
        },
    ]
    assert type(records[0]["level"]) is int and type(records[0]["score"]) is float
    json.dumps(records)  # the pool codec


# --- public layouts -------------------------------------------------------------------------


def test_deepscaler_style_json_and_jsonl(tmp_path):
    rows = [
        {"problem": "What is $1+1$?", "answer": "2", "solution": ""},
        {"problem": "Find $x$ if $2x=6$.", "answer": "3", "solution": ""},
        {"problem": "Compute $\\frac{1}{2}+\\frac{1}{2}$.", "answer": "1", "solution": ""},
    ]
    for path in (
        _write_json(tmp_path / "ds.json", rows),
        _write_jsonl(tmp_path / "ds.jsonl", rows),
    ):
        records = load_records(f"{path}[1:]", _MathTask())
        assert records == [
            {**rows[1], "index": 0, "source_row": 1},
            {**rows[2], "index": 1, "source_row": 2},
        ]


def test_math500_style_jsonl_keeps_extra_fields(tmp_path):
    rows = [
        {
            "problem": f"Problem {i}",
            "solution": f"Solution {i}",
            "answer": str(i),
            "subject": "Algebra",
            "level": 1 + i % 5,
            "unique_id": f"test/algebra/{i}.json",
        }
        for i in range(6)
    ]
    path = _write_jsonl(tmp_path / "math500.jsonl", rows)
    assert load_records(path, _MathTask()) == [
        {**row, "index": i, "source_row": i} for i, row in enumerate(rows)
    ]


def test_eval_file_with_question_instead_of_problem(tmp_path):
    rows = [{"question": "1+2?", "answer": "3"}, {"question": "2+2?", "answer": "4"}]
    path = _write_jsonl(tmp_path / "eval.jsonl", rows)
    assert load_records(path, _MathTask()) == [
        {"problem": "1+2?", "answer": "3", "index": 0, "source_row": 0},
        {"problem": "2+2?", "answer": "4", "index": 1, "source_row": 1},
    ]


def test_mmlu_parquet_and_gpqa_jsonl_as_multiple_choice(tmp_path):
    table = pa.table(
        {
            "question": ["2+2?", "Capital of France?"],
            "subject": ["math", "geo"],
            "choices": pa.array([["3", "4", "5", "6"], ["Rome", "Paris"]], pa.list_(pa.string())),
            "answer": pa.array([1, 1], pa.int64()),
        }
    )
    pq.write_table(table, tmp_path / "mmlu.parquet")
    task = MultipleChoiceTask()
    records = load_records(tmp_path / "mmlu.parquet", task)
    assert records[1] == {
        "question": "Capital of France?",
        "subject": "geo",
        "choices": ["Rome", "Paris"],
        "answer": 1,
        "index": 1,
        "source_row": 1,
    }
    gpqa = {
        "Question": "Which is a noble gas?",
        "Correct Answer": "Neon",
        "Incorrect Answer 1": "Nitrogen",
        "Incorrect Answer 2": "Oxygen",
        "Incorrect Answer 3": "Carbon",
    }
    (record,) = load_records(_write_jsonl(tmp_path / "gpqa.jsonl", [gpqa]), task)
    assert record["choices"][record["answer"]] == "Neon"
    assert task.verify(task.reference_completion(record), record) == 1.0


def test_a_rows_own_index_is_not_the_pools(tmp_path):
    # A file written from an earlier pool (or a set that numbers its rows) carries "index" and
    # "source_row" of another collection; the loader's own replace them.
    rows = [{**row, "index": 100 + i, "source_row": "elsewhere"} for i, row in enumerate(ROWS[:4])]
    path = _write_jsonl(tmp_path / "dump.jsonl", rows)
    records = load_records(f"{path}[1:]", CountdownTask())
    assert [(r["index"], r["source_row"]) for r in records] == [(0, 1), (1, 2), (2, 3)]
    assert [r["nums"] for r in records] == [r["nums"] for r in ROWS[1:4]]


# --- errors name the file, the row, the line and the field ------------------------------------


@pytest.mark.parametrize(
    ("lines", "line", "row", "field", "message"),
    [
        (['{"nums": [1, 2], "target": 3}', '{"nums": [1, 2], "target": 3'], 2, 1, None, "JSON"),
        (['{"nums": [1, 2], "target": 3}', "", '{"nums": [1, 2]}'], 3, 1, "target", "missing"),
        (['{"nums": "1 2", "target": 3}'], 1, 0, "nums", "list"),
        (['{"nums": [1, 2.5], "target": 3}'], 1, 0, "nums", "ints"),
        (['{"nums": [1, 2], "target": "3"}'], 1, 0, "target", "int"),
        (["", "", "[1, 2, 3]"], 3, 0, None, "JSON object"),
        (['{"nums": [1, 2], "target": 3}', '"text"'], 2, 1, None, "JSON object"),
    ],
)
def test_jsonl_errors(tmp_path, lines, line, row, field, message):
    path = tmp_path / "user_data.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match=message) as info:
        load_records(path, CountdownTask())
    error = info.value
    assert (error.path, error.line, error.row, error.field) == (str(path), line, row, field)
    assert f"user_data.jsonl:{line} (row {row})" in str(error)
    if field is not None:
        assert f"field {field!r}" in str(error)


def test_jsonl_not_utf8(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"nums": [1, 2], "target": 3}\n{"nums": [1, 2], "target": "\xff"}\n')
    with pytest.raises(DataFormatError, match=r"bad\.jsonl:2 \(row 1\): not UTF-8"):
        load_records(path, CountdownTask())


def test_a_byte_order_mark_opens_a_file(tmp_path):
    text = "\n".join(json.dumps(r) for r in ROWS[:2])
    (tmp_path / "bom.jsonl").write_bytes(b"\xef\xbb\xbf" + text.encode())
    (tmp_path / "bom.json").write_bytes(b"\xef\xbb\xbf" + json.dumps(ROWS[:2]).encode())
    for name in ("bom.jsonl", "bom.json"):
        got = load_records(tmp_path / name, CountdownTask())
        assert [r["nums"] for r in got] == [r["nums"] for r in ROWS[:2]]


def test_rows_outside_the_slice_are_not_parsed(tmp_path):
    path = tmp_path / "tail.jsonl"
    path.write_text(
        "\n".join([json.dumps(r) for r in ROWS[:5]] + ["{broken"]) + "\n", encoding="utf-8"
    )
    assert len(load_records(f"{path}[:5]", CountdownTask())) == 5
    with pytest.raises(DataFormatError, match=r"tail\.jsonl:6 \(row 5\)"):
        load_records(path, CountdownTask())


def test_errors_are_raised_while_streaming(tmp_path):
    path = _write_jsonl(tmp_path / "s.jsonl", [*ROWS[:2], {"nums": [1]}])
    records = iter_records(path, CountdownTask())
    assert next(records)["source_row"] == 0 and next(records)["source_row"] == 1
    with pytest.raises(DataFormatError, match=r"s\.jsonl:3 \(row 2\): field 'target'"):
        next(records)


@pytest.mark.parametrize(
    ("text", "line", "row", "field", "message"),
    [
        (
            '[{"nums": [1, 2], "target": 3},\n {"nums": [1, 2],\n "target": }]',
            3,
            None,
            None,
            "JSON",
        ),
        ('{"nums": [1, 2], "target": 3}', None, None, None, "one JSON array"),
        ('[{"nums": [1, 2], "target": 3}, 7]', None, 1, None, "JSON object"),
        ('[{"nums": [1, 2], "target": 3}, {"nums": [1]}]', None, 1, "target", "missing"),
    ],
)
def test_json_errors(tmp_path, text, line, row, field, message):
    path = tmp_path / "user.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DataFormatError, match=message) as info:
        load_records(path, CountdownTask())
    error = info.value
    assert (error.path, error.line, error.row, error.field) == (str(path), line, row, field)
    where = f"user.json:{line}" if line else f"user.json (row {row})" if row else "user.json"
    assert where in str(error)


def test_parquet_errors(tmp_path):
    bad_target = tmp_path / "bad_target.parquet"
    pq.write_table(pa.table({"target": ["12", "x"], "nums": [[1, 2], [3, 4]]}), bad_target)
    with pytest.raises(DataFormatError, match=r"bad_target\.parquet \(row 0\): field 'target'"):
        load_records(bad_target, CountdownTask())
    missing = tmp_path / "missing.parquet"
    pq.write_table(pa.table({"nums": [[1, 2]] * 8}), missing, row_group_size=3)
    with pytest.raises(DataFormatError, match=r"\(row 6\): field 'target'") as info:
        load_records(f"{missing}[6:]", CountdownTask())
    assert (info.value.row, info.value.field, info.value.line) == (6, "target", None)
    # Columns without a JSON value are refused before any row is read, naming the column.
    for name, column in [
        ("when", pa.array([1, 2], pa.timestamp("s"))),
        ("blob", pa.array([b"x", b"y"])),
        ("price", pa.array([1, 2], pa.decimal128(5, 2))),
        ("raw", pa.array(['{"a": 1}', "2"], pa.json_())),  # an extension type
    ]:
        path = tmp_path / f"{name}.parquet"
        pq.write_table(pa.table({"target": [1, 2], "nums": [[1], [2]], name: column}), path)
        for call in (lambda p=path: count_rows(p), lambda p=path: load_records(p, CountdownTask())):
            with pytest.raises(DataFormatError, match=f"column {name!r} has type") as info:
                call()
            assert info.value.field == name
    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(b"not a parquet file at all")
    with pytest.raises(DataFormatError, match=r"garbage\.parquet: not a readable parquet file"):
        count_rows(garbage)
    with pytest.raises(FileNotFoundError):
        count_rows(tmp_path / "absent.parquet")


def test_mc_errors_name_the_rows_field(tmp_path):
    rows = [
        {
            "Question": "q",
            "Correct Answer": "a",
            "Incorrect Answer 1": "b",
            "Incorrect Answer 2": 7,
        }
    ]
    path = _write_jsonl(tmp_path / "gpqa.jsonl", rows)
    with pytest.raises(DataFormatError, match="field 'Incorrect Answer 2'") as info:
        load_records(path, MultipleChoiceTask())
    assert info.value.field == "Incorrect Answer 2"


# --- nothing usable is an error, never an empty pool -------------------------------------------


def test_empty_files_and_selections_are_errors(tmp_path, files):
    empty = {
        "e.jsonl": "",
        "blank.jsonl": "\n   \n\t\n",
        "e.json": "[]",
    }
    for name, text in empty.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    pq.write_table(
        pa.table({"target": pa.array([], pa.int64()), "nums": pa.array([], pa.list_(pa.int64()))}),
        tmp_path / "e.parquet",
    )
    for name in [*empty, "e.parquet"]:
        for call in (count_rows, lambda p: load_records(p, CountdownTask())):
            with pytest.raises(DataFormatError, match="has no rows") as info:
                call(tmp_path / name)
            assert info.value.path == str(tmp_path / name)
    for path in files.values():
        for suffix, message in [
            ("[3:3]", "selects no rows"),
            ("[0:24]", "past the end of the file"),
            ("[20:30]", "past the end of the file"),
            ("[23:]", "starts at row 23, the file has 23"),
            ("[100:]", "starts at row 100"),
        ]:
            for call in (count_rows, lambda s: load_records(s, CountdownTask())):
                with pytest.raises(ValueError, match=message) as info:
                    call(f"{path}{suffix}")
                assert f"{path}{suffix}" in str(info.value)


# --- nothing in a data file runs code ---------------------------------------------------------


class _Marker:
    """Unpickling it writes the marker file: the proof that a loader unpickled data."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (pathlib.Path.write_text, (pathlib.Path(self.path), "unpickled"))


def test_a_pickled_extension_type_in_parquet_metadata_is_never_loaded(tmp_path):
    marker = tmp_path / "ran"
    payload = pickle.dumps(_Marker(str(marker)))
    # A column claiming the (pickle-based) Python extension type of old pyarrow versions.
    field = pa.field(
        "target",
        pa.binary(),
        metadata={
            "ARROW:extension:name": "arrow.py_extension_type",
            "ARROW:extension:metadata": payload,
        },
    )
    schema = pa.schema(
        [field, pa.field("nums", pa.list_(pa.int64()))],
        metadata={b"pandas": json.dumps({"columns": [], "attributes": payload.hex()}).encode()},
    )
    table = pa.table({"target": [b"1"], "nums": [[1, 2]]}, schema=schema)
    pq.write_table(table, tmp_path / "evil.parquet")
    with pytest.raises(DataFormatError, match="column 'target'"):
        load_records(tmp_path / "evil.parquet", CountdownTask())
    assert not marker.exists()
    pickle.loads(payload)  # the payload is live: unpickling it is what would have run code
    assert marker.read_text() == "unpickled"


def test_records_are_validated_by_the_task(tmp_path):
    class Strict(CountdownTask):
        def from_row(self, row, index):
            if row.get("target", 0) > 50:
                raise RecordError("target too large", "target")
            return super().from_row(row, index)

    rows = [{"target": 10, "nums": [5, 5]}, {"target": 60, "nums": [30, 30]}]
    path = _write_parquet(tmp_path / "s.parquet", rows)
    assert len(load_records(f"{path}[:1]", Strict())) == 1
    with pytest.raises(DataFormatError, match=r"s\.parquet \(row 1\): field 'target': target"):
        load_records(path, Strict())
