"""Task pools on disk (tfds array_record, random access by index) and the JSONL loader."""

from __future__ import annotations

import pickle
import random

import numpy as np
import pytest

from insight_jax.tasks import ArithmeticTask, CountdownTask
from insight_jax.tasks.base import RecordError
from insight_jax.tasks.datasets import (
    DataFormatError,
    build_pool,
    load_jsonl,
    open_source,
    pool_exists,
    pool_from_jsonl,
    write_jsonl,
    write_records,
)


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


def test_round_trip_arithmetic_and_dataset_dir(tmp_path):
    records = ArithmeticTask().generate(50, seed=0)
    dataset_dir = write_records(tmp_path, records)
    # Either the pool root or the tfds dataset directory opens the pool.
    assert open_source(dataset_dir)[49] == open_source(tmp_path)[49] == records[49]
    assert any(p.name.endswith("array_record-00000-of-00001") for p in dataset_dir.iterdir())


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
    assert len(open_source(tmp_path / "ok")) == 7
    with pytest.raises(FileNotFoundError):
        open_source(tmp_path / "missing")


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


# --- JSONL ---------------------------------------------------------------------------------


def _write_lines(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_load_jsonl_public_countdown_format(tmp_path):
    task = CountdownTask()
    path = _write_lines(
        tmp_path / "countdown.jsonl",
        ['{"target": 98, "nums": [44, 19, 35]}', "", '{"target": 24, "nums": [3, 3, 8, 8]}'],
    )
    records = load_jsonl(path, task)
    assert records == [
        {"target": 98, "nums": [44, 19, 35], "index": 0},
        {"target": 24, "nums": [3, 3, 8, 8], "index": 1},
    ]
    for r in records:
        assert task.verify(task.reference_completion(r), r) == 1.0
    source = pool_from_jsonl(path, task, tmp_path / "pools")
    assert source.__getitems__([1, 0]) == [records[1], records[0]]


def test_jsonl_round_trip(tmp_path):
    task = ArithmeticTask()
    records = task.generate(20, seed=0)
    write_jsonl(tmp_path / "a.jsonl", records)
    assert load_jsonl(tmp_path / "a.jsonl", task) == records


GOOD = '{"nums": [1, 2], "target": 3}'


@pytest.mark.parametrize(
    ("lines", "bad_line", "field", "message"),
    [
        (
            ['{"nums": [1, 2], "target": 3}', '{"nums": [1, 2], "target": 3'],
            2,
            None,
            "invalid JSON",
        ),
        (['{"nums": [1, 2], "target": 3}', "", '{"nums": [1, 2]}'], 3, "target", "missing"),
        (['{"nums": "1 2", "target": 3}'], 1, "nums", "list"),
        (['{"nums": [1, 2.5], "target": 3}'], 1, "nums", "ints"),
        (['{"nums": [1, 2], "target": "3"}'], 1, "target", "int"),
        (['{"nums": [1, 2], "target": 3, "index": 4}'], 1, "index", "position"),
        (["[1, 2, 3]"], 1, None, "JSON object"),
    ],
)
def test_jsonl_errors_name_file_line_and_field(tmp_path, lines, bad_line, field, message):
    path = _write_lines(tmp_path / "user_data.jsonl", lines)
    with pytest.raises(DataFormatError, match=message) as info:
        load_jsonl(path, CountdownTask())
    error = info.value
    assert error.path == str(path) and error.line == bad_line and error.field == field
    text = str(error)
    assert f"user_data.jsonl:{bad_line}" in text
    if field is not None:
        assert repr(field) in text


def test_jsonl_errors_for_arithmetic_records(tmp_path):
    path = _write_lines(
        tmp_path / "math.jsonl",
        ['{"question": "1+1", "answer": "2"}', '{"question": "2+2", "answer": "four"}'],
    )
    with pytest.raises(DataFormatError, match=r"math\.jsonl:2 \(record 1\): field 'answer'"):
        load_jsonl(path, ArithmeticTask())
    assert not pool_exists(tmp_path / "pools")


def test_jsonl_loaded_pool_rejects_bad_file_before_writing(tmp_path):
    path = _write_lines(tmp_path / "broken.jsonl", ['{"nums": [1, 2], "target": 3}', "{oops"])
    with pytest.raises(DataFormatError):
        pool_from_jsonl(path, CountdownTask(), tmp_path / "pools")
    assert not (tmp_path / "pools").exists() or not any((tmp_path / "pools").iterdir())
