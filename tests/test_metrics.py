"""MetricWriter (JSON lines + TensorBoard), NaN checks, reading and plotting."""

import io
import json
import os

import jax.numpy as jnp
import numpy as np
import pytest

from insight_jax import metrics


def test_writer_writes_jsonl_and_tensorboard(tmp_path):
    with metrics.MetricWriter(tmp_path, enabled=True) as w:
        w.write_scalars(0, {"loss": jnp.float32(1.5), "lr": 1e-6, "tokens": jnp.int32(7)})
        w.write_scalars(1, {"loss": jnp.array([0.25]), "acc": np.float64(0.5)})
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x) for x in lines] == [
        {"step": 0, "loss": 1.5, "lr": 1e-6, "tokens": 7},
        {"step": 1, "loss": 0.25, "acc": 0.5},
    ]
    rec = json.loads(lines[0])
    assert isinstance(rec["loss"], float) and isinstance(rec["tokens"], int)
    events = os.listdir(tmp_path / "tb")
    assert any(e.startswith("events.out.tfevents") for e in events)
    assert all(os.path.getsize(tmp_path / "tb" / e) > 0 for e in events)


def test_writer_appends_on_resume_and_rejects_vectors(tmp_path):
    with metrics.MetricWriter(tmp_path, enabled=True, tensorboard=False) as w:
        w.write_scalars(5, {"loss": 1.0})
        with pytest.raises(ValueError, match="'vec'"):
            w.write_scalars(6, {"vec": jnp.ones(3)})
    with metrics.MetricWriter(tmp_path, enabled=True, tensorboard=False) as w:
        w.write_scalars(6, {"loss": 0.5})
    assert [r["step"] for r in metrics.read_metrics_jsonl(tmp_path / "metrics.jsonl")] == [5, 6]


def test_disabled_writer_writes_nothing(tmp_path):
    w = metrics.MetricWriter(tmp_path / "w", enabled=False)
    w.write_scalars(0, {"loss": jnp.float32(1.0)})
    w.flush()
    w.close()
    assert not (tmp_path / "w").exists()
    assert metrics.MetricWriter(tmp_path / "p0", tensorboard=False).enabled  # process 0 here


def test_check_finite_names_keys_and_step():
    metrics.check_finite({"loss": jnp.float32(1.0), "name": "x", "n": 3}, step=4)
    with pytest.raises(FloatingPointError, match=r"step 12.*loss=nan.*grad_norm=inf") as e:
        metrics.check_finite(
            {"loss": jnp.float32(jnp.nan), "ok": 1.0, "grad_norm": float("inf")}, step=12
        )
    assert "ok" not in str(e.value)
    with pytest.raises(FloatingPointError, match="vec"):
        metrics.check_finite({"vec": jnp.array([1.0, -jnp.inf])}, step=0)


def test_read_metrics_truncated_last_line_and_merge(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(
        '{"step": 1, "loss": 2.0}\n'
        '{"step": 2, "loss": 1.0}\n'
        '{"step": 2, "eval_acc": 0.5}\n'
        '{"step": 1, "loss": 1.5}\n'  # a resumed run re-ran step 1
        '{"step": 3, "lo'  # killed mid-write
    )
    with pytest.warns(UserWarning, match=r"skipped unreadable line\(s\) \[5\]"):
        assert metrics.read_metrics_jsonl(path) == [
            {"step": 1, "loss": 1.5},
            {"step": 2, "loss": 1.0, "eval_acc": 0.5},
        ]
    with pytest.warns(UserWarning, match=r"\[5\]"):
        assert len(metrics.read_metrics_jsonl(path, merge_steps=False)) == 4


LINES = [
    '{"step": 0, "loss": 3.0}',
    '{"step": 1, "loss": 2.0}',
    '{"step": 2, "loss": 1.0}',
    '{"step": 2, "eval_acc": 0.25}',
    '{"step": 3, "loss": 0.5}',
]


def write_lines(path, lines, tail=""):
    path.write_text("".join(x + "\n" for x in lines) + tail)


def test_repair_metrics_removes_torn_last_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    write_lines(path, LINES, tail='{"step": 4, "lo')  # kill -9 mid-write: no newline
    with pytest.warns(UserWarning, match=r"removed unreadable line\(s\) \[6\]"):
        assert metrics.repair_metrics(path, last_step=10) == 1
    assert path.read_text() == "".join(x + "\n" for x in LINES)
    # a torn line that did get its newline (invalid JSON, or an invalid utf-8 byte) goes too
    path.write_bytes(b'{"step": 0}\n{"step": 1, "x": \n{"step": 2, "s": "\xc3"}\n{"step": 3}\n')
    with pytest.warns(UserWarning, match=r"\[2, 3\]"):
        assert metrics.repair_metrics(path, last_step=10) == 2
    assert path.read_text() == '{"step": 0}\n{"step": 3}\n'


def test_repair_metrics_drops_records_after_the_restored_step(tmp_path):
    path = tmp_path / "metrics.jsonl"
    write_lines(path, LINES)
    assert metrics.repair_metrics(path, last_step=1) == 3  # step 2 (train + eval) and step 3
    assert path.read_text() == LINES[0] + "\n" + LINES[1] + "\n"
    assert metrics.repair_metrics(path, last_step=-1) == 2


def test_repair_metrics_from_scratch_truncates(tmp_path):
    path = tmp_path / "metrics.jsonl"
    write_lines(path, LINES, tail='{"st')
    with pytest.warns(UserWarning):
        assert metrics.repair_metrics(path, last_step=None) == 6
    assert path.exists() and path.read_text() == ""


def test_repair_metrics_empty_missing_or_clean_file_is_left_alone(tmp_path):
    missing = tmp_path / "missing.jsonl"
    assert metrics.repair_metrics(missing, last_step=None) == 0
    assert metrics.repair_metrics(missing, last_step=3) == 0
    assert not missing.exists()
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert metrics.repair_metrics(empty, last_step=None) == 0
    assert empty.read_text() == ""
    clean = tmp_path / "clean.jsonl"
    write_lines(clean, LINES)
    inode = clean.stat().st_ino
    assert metrics.repair_metrics(clean, last_step=3) == 0
    assert clean.stat().st_ino == inode and clean.read_text() == "".join(x + "\n" for x in LINES)
    with pytest.raises(TypeError, match="last_step"):
        metrics.repair_metrics(clean, last_step=2.0)


def test_repair_then_append_writes_each_step_once(tmp_path):
    """A run checkpointed at step 2 wrote steps 0..4 and was killed mid-write; the resumed run
    restores step 2, repairs, and replays 3..5: each step is in the file exactly once."""
    path = tmp_path / "metrics.jsonl"
    with metrics.MetricWriter(tmp_path, enabled=True, tensorboard=False) as w:
        for step in range(5):
            w.write_scalars(step, {"loss": float(step)})
    with open(path, "a") as f:
        f.write('{"step": 5, "lo')
    with pytest.warns(UserWarning):
        assert metrics.repair_metrics(path, last_step=2) == 3
    with metrics.MetricWriter(tmp_path, enabled=True, tensorboard=False) as w:
        for step in range(3, 6):
            w.write_scalars(step, {"loss": 10.0 + step})
    records = metrics.read_metrics_jsonl(path, merge_steps=False)
    assert [r["step"] for r in records] == [0, 1, 2, 3, 4, 5]
    assert [r["loss"] for r in records] == [0.0, 1.0, 2.0, 13.0, 14.0, 15.0]


def test_plot_learning_curves(tmp_path):
    with metrics.MetricWriter(tmp_path, enabled=True, tensorboard=False) as w:
        for s in range(5):
            w.write_scalars(s, {"loss": 1.0 / (s + 1), "acc": s / 5})
        w.write_scalars(5, {"eval_pass1": 0.3})
    out = metrics.plot_learning_curves(tmp_path / "metrics.jsonl", tmp_path / "plots" / "c.png")
    with open(out, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    records = metrics.read_metrics_jsonl(tmp_path / "metrics.jsonl")
    out2 = metrics.plot_learning_curves(records, tmp_path / "d.png", keys=["loss"], title="t")
    assert os.path.getsize(out2) > 1000
    with pytest.raises(ValueError):
        metrics.plot_learning_curves([], tmp_path / "e.png")


def test_progress_bar():
    buf = io.StringIO()
    with metrics.progress(3, "steps", enabled=True, file=buf) as bar:
        for _ in range(3):
            bar.update(1)
    assert bar.n == 3 and "steps" in buf.getvalue()
    with metrics.progress(3, "quiet", enabled=False, file=buf) as bar:
        bar.update(1)
    assert "quiet" not in buf.getvalue()
