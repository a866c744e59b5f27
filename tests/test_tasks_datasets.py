"""Task pools on disk (array_record, random access by index, no code from data), from files."""

from __future__ import annotations

import hashlib
import json
import pathlib
import pickle
import random
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from array_record.python.array_record_module import ArrayRecordReader, ArrayRecordWriter

from insight_jax.tasks import ArithmeticTask, CountdownTask, datasets
from insight_jax.tasks.base import RecordError
from insight_jax.tasks.datasets import (
    DataFormatError,
    build_pool,
    open_source,
    pool_exists,
    pool_from_file,
    write_records,
)
from insight_jax.tasks.loaders import load_records


@pytest.fixture(scope="module")
def countdown_records():
    return CountdownTask().generate(300, seed=3)


def test_round_trip_random_access(tmp_path, countdown_records):
    records = countdown_records
    write_records(tmp_path / "pool", records, metadata={"note": "x"})
    source = open_source(tmp_path / "pool")
    assert len(source) == len(records)
    order = list(range(len(records)))
    random.Random(0).shuffle(order)
    for i in order:
        assert source[i] == records[i]
    assert source.__getitems__(order) == [records[i] for i in order]
    repeats = np.array([5, 5, 0, 299, 17])
    assert source.__getitems__(repeats) == [records[int(i)] for i in repeats]
    assert source.__getitems__([]) == []
    assert source[np.int32(7)] == records[7]
    assert source[-1] == records[-1]
    assert list(source) == records
    assert source.metadata == {"note": "x"}
    with pytest.raises(IndexError):
        source[len(records)]
    with pytest.raises(IndexError):
        source.__getitems__([0, -len(records) - 1])
    with pytest.raises(TypeError):
        source[1.0]


def test_round_trip_arithmetic_and_file_layout(tmp_path):
    records = ArithmeticTask().generate(50, seed=0)
    pool = write_records(tmp_path / "pool", records, metadata={"seed": 0})
    assert pool == tmp_path / "pool" and open_source(pool)[49] == records[49]
    assert sorted(p.name for p in pool.iterdir()) == [
        "pool.json",
        "records.array_record-00000-of-00001",
    ]
    # The documented on-disk format, read with array_record and json alone: record i at
    # position i as UTF-8 JSON, and a plain JSON header.
    reader = ArrayRecordReader(str(pool / "records.array_record-00000-of-00001"))
    assert [json.loads(b) for b in reader.read(list(range(reader.num_records())))] == records
    reader.close()
    assert json.loads((pool / "pool.json").read_text()) == {
        "format": "insight_jax.task_pool",
        "version": 1,
        "num_records": 50,
        "metadata": {"seed": 0},
    }


def test_source_pickles_as_its_path(tmp_path, countdown_records):
    write_records(tmp_path, countdown_records)
    source = open_source(tmp_path)
    assert source[3] == countdown_records[3]  # opened
    clone = pickle.loads(pickle.dumps(source))
    assert clone[4] == countdown_records[4] and len(clone) == len(countdown_records)


def test_write_records_checks_indices_and_existing_pools(tmp_path, countdown_records):
    shuffled = [countdown_records[1], countdown_records[0]]
    with pytest.raises(RecordError, match="index"):
        write_records(tmp_path / "bad", shuffled)
    write_records(tmp_path / "ok", countdown_records[:5])
    with pytest.raises(FileExistsError):
        write_records(tmp_path / "ok", countdown_records[:5])
    write_records(tmp_path / "ok", countdown_records[:7], overwrite=True)
    assert list(open_source(tmp_path / "ok")) == countdown_records[:7]
    with pytest.raises(FileNotFoundError):
        open_source(tmp_path / "missing")


def test_failed_writes_leave_no_pool_and_no_temporary_files(tmp_path, countdown_records):
    def records_then_bad():
        yield from countdown_records[:3]
        yield {"index": 7}

    with pytest.raises(RecordError, match="position 3"):
        write_records(tmp_path / "bad", records_then_bad())
    with pytest.raises(ValueError, match="at least one record"):
        write_records(tmp_path / "empty", [])
    for name in ("bad", "empty"):
        assert not pool_exists(tmp_path / name) and list((tmp_path / name).iterdir()) == []
    # A failed overwrite does not leave the old pool looking complete.
    write_records(tmp_path / "old", countdown_records[:4])
    with pytest.raises(RecordError):
        write_records(tmp_path / "old", [{"index": 1}], overwrite=True)
    assert not pool_exists(tmp_path / "old")
    assert [p.name for p in (tmp_path / "old").iterdir()] == ["records.array_record-00000-of-00001"]


def test_build_pool_generates_once(tmp_path, monkeypatch):
    task = CountdownTask()
    source = build_pool(task, 40, seed=1, data_dir=tmp_path)
    assert [source[i] for i in range(40)] == task.generate(40, seed=1)
    assert source.metadata["task"] == "countdown" and source.metadata["seed"] == 1

    def fail(*args, **kwargs):
        raise AssertionError("the pool should have been reused")

    monkeypatch.setattr(task, "generate", fail)
    assert build_pool(task, 40, seed=1, data_dir=tmp_path)[39] == source[39]
    monkeypatch.undo()
    # A different seed, split or task config is a different pool.
    other = build_pool(task, 40, seed=2, data_dir=tmp_path)
    test = build_pool(task, 40, seed=1, data_dir=tmp_path, split="test")
    narrow = build_pool(CountdownTask(num_numbers=3), 40, seed=1, data_dir=tmp_path)
    assert len({s.path for s in (source, other, test, narrow)}) == 4
    assert other[0] != source[0] and all(len(narrow[i]["nums"]) == 3 for i in range(40))


# --- pools from data files -------------------------------------------------------------------


def _write_lines(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _write_parquet(path, rows, row_group_size=4):
    """A parquet file with the public Countdown schema (target: int64, nums: list<int64>)."""
    table = pa.table(
        {
            "target": pa.array([r["target"] for r in rows], pa.int64()),
            "nums": pa.array([r["nums"] for r in rows], pa.list_(pa.int64())),
        }
    )
    pq.write_table(table, path, row_group_size=row_group_size)
    return path


def test_pool_from_jsonl_public_countdown_format(tmp_path):
    task = CountdownTask()
    path = _write_lines(
        tmp_path / "countdown.jsonl",
        ['{"target": 98, "nums": [44, 19, 35]}', "", '{"target": 24, "nums": [3, 3, 8, 8]}'],
    )
    source = pool_from_file(path, task, tmp_path / "pools")
    expected = [
        {"target": 98, "nums": [44, 19, 35], "index": 0, "source_row": 0},
        {"target": 24, "nums": [3, 3, 8, 8], "index": 1, "source_row": 1},
    ]
    assert list(source) == expected == load_records(path, task)
    assert source.__getitems__([1, 0]) == [expected[1], expected[0]]
    for r in source:
        assert task.verify(task.reference_completion(r), r) == 1.0
    meta = source.metadata
    assert meta["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert (meta["source"], meta["format"], meta["rows"]) == (str(path), "jsonl", 2)
    assert (meta["start"], meta["stop"], meta["task"]) == (0, 2, "countdown")


def test_pool_of_a_parquet_slice_equals_load_records(tmp_path):
    task = CountdownTask()
    rows = [r for r in task.generate(30, seed=5) if r.pop("solution")]
    path = _write_parquet(tmp_path / "countdown.parquet", rows, row_group_size=7)
    source = pool_from_file(f"{path}[9:23]", task, tmp_path / "pools")
    assert list(source) == load_records(f"{path}[9:23]", task)
    assert list(source) == [
        {**row, "index": i, "source_row": 9 + i} for i, row in enumerate(rows[9:23])
    ]
    assert source.metadata["rows"] == 14 and len(source) == 14


def test_a_bad_row_leaves_no_pool(tmp_path):
    path = _write_lines(
        tmp_path / "broken.jsonl", ['{"nums": [1, 2], "target": 3}', '{"nums": [1, 2]}']
    )
    with pytest.raises(DataFormatError, match=r"broken\.jsonl:2 \(row 1\): field 'target'"):
        pool_from_file(path, CountdownTask(), tmp_path / "pools")
    # Records are streamed, so the pool's folder may exist, but it holds no pool and no file.
    for folder in (tmp_path / "pools").iterdir():
        assert not pool_exists(folder) and list(folder.iterdir()) == []
    # A bad spec fails before any work.
    with pytest.raises(ValueError, match="past the end"):
        pool_from_file(f"{path}[0:5]", CountdownTask(), tmp_path / "other")
    assert not (tmp_path / "other").exists()


def test_a_file_changed_during_the_build_leaves_no_pool(tmp_path, monkeypatch):
    path = _write_lines(tmp_path / "data.jsonl", ['{"nums": [1, 2], "target": 3}'] * 3)
    task = CountdownTask()
    real = datasets.iter_records

    def edit_after_reading(*args, **kwargs):
        yield from real(*args, **kwargs)
        _write_lines(path, ['{"nums": [4, 5], "target": 9}'] * 3)

    monkeypatch.setattr(datasets, "iter_records", edit_after_reading)
    with pytest.raises(DataFormatError, match="changed while its pool was being built"):
        pool_from_file(path, task, tmp_path / "pools")
    assert not any(pool_exists(p) for p in (tmp_path / "pools").iterdir())
    monkeypatch.undo()
    assert [r["nums"] for r in pool_from_file(path, task, tmp_path / "pools")] == [[4, 5]] * 3


# --- nothing in a pool folder runs code -------------------------------------------------------


def _evil_module(tmp_path, monkeypatch, name):
    """A module on sys.path that writes a marker file when imported; returns the marker path."""
    marker = tmp_path / f"{name}.ran"
    code = f"import pathlib\npathlib.Path({str(marker)!r}).write_text('imported')\n"
    (tmp_path / "evil_code").mkdir(exist_ok=True)
    (tmp_path / "evil_code" / f"{name}.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path / "evil_code"))
    monkeypatch.delitem(sys.modules, name, raising=False)
    return marker


def _features_json(class_path):
    # What tensorflow_datasets reads to rebuild a dataset's features: it imports the module of
    # every "pythonClassName" it does not know.
    return json.dumps({"pythonClassName": class_path, "featuresDict": {"features": {}}})


def test_crafted_features_json_in_a_pool_is_never_imported(
    tmp_path, monkeypatch, countdown_records
):
    marker = _evil_module(tmp_path, monkeypatch, "evil_pool_features")
    pool = write_records(tmp_path / "pool", countdown_records[:5])
    # Plant a crafted features.json next to every metadata file the pool has.
    for folder in {p.parent for p in pathlib.Path(pool).rglob("*.json")}:
        (folder / "features.json").write_text(_features_json("evil_pool_features.Feature"))
    error = None
    try:
        source = open_source(tmp_path / "pool")
        got = [source[i] for i in range(5)]
    except Exception as e:  # the old tfds reader imports the module, then fails
        error = e
    assert not marker.exists(), f"opening the pool ran code from features.json ({error!r})"
    assert error is None and got == countdown_records[:5]


def test_old_tfds_pool_folder_is_refused_without_importing(tmp_path, monkeypatch):
    marker = _evil_module(tmp_path, monkeypatch, "evil_legacy_features")
    folder = tmp_path / "legacy" / "task_records" / "1.0.0"
    folder.mkdir(parents=True)
    (folder / "features.json").write_text(_features_json("evil_legacy_features.Feature"))
    (folder / "dataset_info.json").write_text(json.dumps({"name": "task_records"}))
    for path in (tmp_path / "legacy", folder):
        with pytest.raises(FileNotFoundError, match="tensorflow_datasets layout"):
            open_source(path)
        assert not pool_exists(path)
    assert not marker.exists()


# --- damaged pools fail with clear errors -----------------------------------------------------


def _hand_written_pool(path, blobs, header):
    """A pool folder written with array_record and json only (not with the code under test)."""
    path.mkdir(parents=True)
    writer = ArrayRecordWriter(str(path / "records.array_record-00000-of-00001"), "group_size:1")
    for blob in blobs:
        writer.write(blob)
    writer.close()
    (path / "pool.json").write_text(header if isinstance(header, str) else json.dumps(header))
    return path


def _header(num_records, **overrides):
    header = {"format": "insight_jax.task_pool", "version": 1, "num_records": num_records}
    return {**header, "metadata": {}, **overrides}


def test_a_hand_written_pool_opens(tmp_path):
    blobs = [json.dumps({"index": i, "x": "é" * i}).encode() for i in range(3)]
    source = open_source(_hand_written_pool(tmp_path / "p", blobs, _header(3, metadata={"a": 1})))
    assert list(source) == [{"index": i, "x": "é" * i} for i in range(3)]
    assert source.metadata == {"a": 1}


@pytest.mark.parametrize(
    ("header", "field"),
    [
        ("{not json", None),
        ("[1, 2]", None),
        (_header(2, format="tfds"), "format"),
        (_header(2, version=2), "version"),
        (_header("2"), "num_records"),
        (_header(0), "num_records"),
        (_header(True), "num_records"),
        (_header(2, metadata=[1]), "metadata"),
    ],
)
def test_bad_pool_headers_are_rejected(tmp_path, header, field):
    blobs = [b'{"index": 0}', b'{"index": 1}']
    path = _hand_written_pool(tmp_path / "p", blobs, header)
    with pytest.raises(DataFormatError, match=r"pool\.json") as info:
        open_source(path)
    assert info.value.field == field


@pytest.mark.parametrize(
    ("blobs", "num_records", "message"),
    [
        ([b'{"index": 0}', b'{"index": 1}'], 3, "2 records, pool.json says 3"),
        ([b'{"index": 0}', b'{"index": 0}'], 2, "record 1 must be a JSON object with 'index' 1"),
        ([b'{"index": 0}', b"[1]"], 2, "record 1 must be a JSON object"),
        ([b'{"index": 0}', b"\xff\xfe"], 2, "record 1 is not UTF-8 JSON"),
        ([b'{"index": 0}', b'{"index": 1'], 2, "record 1 is not UTF-8 JSON"),
    ],
)
def test_bad_records_are_rejected_on_read(tmp_path, blobs, num_records, message):
    source = open_source(_hand_written_pool(tmp_path / "p", blobs, _header(num_records)))
    with pytest.raises(DataFormatError, match=message):
        list(source)


def test_truncated_or_missing_record_file_is_reported(tmp_path, countdown_records):
    pool = write_records(tmp_path / "pool", countdown_records)
    shard = pool / "records.array_record-00000-of-00001"
    data = shard.read_bytes()
    for size in (0, 100, len(data) // 2, len(data) - 1):
        shard.write_bytes(data[:size])
        with pytest.raises(DataFormatError, match="damaged pool"):
            open_source(pool)[0]
    shard.unlink()
    with pytest.raises(DataFormatError, match="record file is missing"):
        open_source(pool)[0]


# --- the file cache is keyed by content ------------------------------------------------------


def test_file_cache_is_keyed_by_content_not_file_name(tmp_path, monkeypatch):
    task = CountdownTask()
    pools = tmp_path / "pools"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = _write_lines(tmp_path / "a" / "data.jsonl", ['{"nums": [1, 2], "target": 3}'])
    second = _write_lines(tmp_path / "b" / "data.jsonl", ['{"nums": [4, 5], "target": 9}'])
    one = {"nums": [1, 2], "target": 3, "index": 0, "source_row": 0}
    assert list(pool_from_file(first, task, pools)) == [one]
    # Another file of the same name gets its own records.
    assert pool_from_file(second, task, pools)[0]["nums"] == [4, 5]
    # So does the same file after an edit.
    _write_lines(first, ['{"nums": [6, 7], "target": 13}', '{"nums": [2, 2], "target": 4}'])
    assert [r["nums"] for r in pool_from_file(first, task, pools)] == [[6, 7], [2, 2]]
    # Another task config reads rows differently: another pool, even for the same bytes.
    narrow = pool_from_file(first, CountdownTask(num_numbers=2), pools)
    assert narrow.path != pool_from_file(first, task, pools).path
    # Another slice is another pool; "[:]" is the plain path; "[0:2]" (the whole file with an
    # explicit end) is keyed as written: another pool of the same records.
    sliced = pool_from_file(f"{first}[1:]", task, pools)
    assert [r["nums"] for r in sliced] == [[2, 2]] and sliced[0]["source_row"] == 1
    plain = pool_from_file(first, task, pools)
    assert pool_from_file(f"{first}[:]", task, pools).path == plain.path
    explicit = pool_from_file(f"{first}[0:2]", task, pools)
    assert explicit.path != plain.path and list(explicit) == list(plain)
    assert len(list(pools.iterdir())) == 6

    # Unchanged bytes reuse the cached pool without converting again, also from a copy.
    def fail(*args, **kwargs):
        raise AssertionError("the cached pool should have been reused")

    monkeypatch.setattr(datasets, "write_records", fail)
    monkeypatch.setattr(datasets, "resolve_spec", fail)  # a cache hit counts no rows either
    assert pool_from_file(second, task, pools)[0]["nums"] == [4, 5]
    (tmp_path / "c").mkdir()
    copy = tmp_path / "c" / "renamed.jsonl"
    copy.write_bytes(second.read_bytes())
    assert pool_from_file(copy, task, pools).path == pool_from_file(second, task, pools).path
    # "auto" is keyed as the format it picks.
    as_jsonl = pool_from_file(tmp_path / "c" / "renamed.jsonl", task, pools, fmt="jsonl")
    assert as_jsonl.path == pool_from_file(copy, task, pools).path


def test_parquet_cache_edit_and_copy(tmp_path):
    task = CountdownTask()
    rows = [{"target": t, "nums": [t, 1]} for t in range(1, 11)]
    path = _write_parquet(tmp_path / "cd.parquet", rows)
    pool = pool_from_file(f"{path}[2:6]", task, tmp_path / "pools")
    copy = tmp_path / "copy.parquet"
    copy.write_bytes(path.read_bytes())
    assert pool_from_file(f"{copy}[2:6]", task, tmp_path / "pools").path == pool.path
    _write_parquet(path, [{**r, "target": r["target"] + 1} for r in rows])
    edited = pool_from_file(f"{path}[2:6]", task, tmp_path / "pools")
    assert edited.path != pool.path
    assert [r["target"] for r in edited] == [4, 5, 6, 7]
    assert [r["target"] for r in pool] == [3, 4, 5, 6]
