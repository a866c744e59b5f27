"""Metric logging: TensorBoard events + JSON lines from process 0, NaN checks, learning curves.

Layout of a workdir written by `MetricWriter`:

    workdir/tb/events.out.tfevents.*   TensorBoard (tensorboardX)
    workdir/metrics.jsonl              one JSON object per write: {"step": int, "<key>": float, ...}

The trainer fetches a step's metrics once, with its other outputs (an RL step's host stages
need the device results anyway: indices to fetch prompts, tokens to verify), so writing them
costs no extra device sync.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import jax
import numpy as np

from insight_jax.workdir import write_text_atomic

Scalar = int | float


# ------------------------------------------------------------------------------- conversion


def to_scalar(value: Any) -> Scalar:
    """A python int/float from a python number, numpy scalar or size-1 (jax) array.

    Integers stay ints (step counters, token counts); everything else becomes a float.
    Converting a jax array blocks until the computation producing it has finished.
    """
    if isinstance(value, bool | np.bool_):
        return int(value)
    if isinstance(value, int | float):
        return value
    arr = np.asarray(jax.device_get(value))
    if arr.size != 1:
        raise ValueError(f"expected a scalar metric, got shape {arr.shape}")
    item = arr.reshape(()).item()
    return int(item) if isinstance(item, bool | int) else float(item)


def to_scalars(metrics: Mapping[str, Any]) -> dict[str, Scalar]:
    """to_scalar on every value, fetching all jax arrays in one device_get."""
    host = jax.device_get(dict(metrics))
    out = {}
    for k in metrics:  # the caller's key order (device_get returns a key-sorted dict)
        v = host[k]
        try:
            out[k] = to_scalar(v)
        except (TypeError, ValueError) as e:
            raise ValueError(f"metric {k!r}: {e}") from e
    return out


def check_finite(metrics: Mapping[str, Any], step: int) -> None:
    """Raise FloatingPointError naming every non-finite (NaN/inf) metric at this step.

    Values may be python numbers, numpy or jax arrays (any shape); non-numeric values are
    ignored. Call it on every process so all hosts stop at the same step instead of the others
    hanging in a collective.
    """
    bad = []
    host = jax.device_get(dict(metrics))
    for k in metrics:
        v = host[k]
        if v is None or isinstance(v, str):
            continue
        try:
            arr = np.asarray(v, dtype=np.float64)
        except (TypeError, ValueError):
            continue
        if not np.all(np.isfinite(arr)):
            bad.append(f"{k}={arr.item() if arr.size == 1 else arr!r}")
    if bad:
        raise FloatingPointError(f"non-finite metrics at step {step}: {', '.join(bad)}")


# ----------------------------------------------------------------------------------- writers


class MetricWriter:
    """Writes scalars to TensorBoard (workdir/tb) and JSON lines (workdir/metrics.jsonl).

    Only one process writes: `enabled` defaults to jax.process_index() == 0; on other processes
    every method is a no-op (and converts nothing, so it never waits on the device). The JSON
    file is opened in append mode, so a resumed run continues the same file; readers merge
    records of the same step (see read_metrics_jsonl).

    Usage:
        with MetricWriter(workdir) as w:
            w.write_scalars(step, {"loss": loss, "lr": 1e-6})
    """

    def __init__(
        self, workdir: str | os.PathLike, *, enabled: bool | None = None, tensorboard: bool = True
    ):
        self.workdir = os.fspath(workdir)
        self.enabled = jax.process_index() == 0 if enabled is None else bool(enabled)
        self.jsonl_path = os.path.join(self.workdir, "metrics.jsonl")
        self._tb = None
        self._jsonl = None
        if not self.enabled:
            return
        os.makedirs(self.workdir, exist_ok=True)
        self._jsonl = open(self.jsonl_path, "a", encoding="utf-8")  # closed in close()
        if tensorboard:
            # Imported lazily: tensorboardX pulls in protobuf, which we only need when writing.
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(logdir=os.path.join(self.workdir, "tb"))

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        """Write one record {"step": step, **scalars}. Jax arrays are converted here (blocking
        on them); non-finite values are written as NaN/Infinity (Python's json reads them)."""
        if not self.enabled:
            return
        if self._jsonl is None:
            raise RuntimeError("MetricWriter is closed")
        step = int(step)
        values = to_scalars(scalars)
        self._jsonl.write(json.dumps({"step": step, **values}) + "\n")
        if self._tb is not None:
            for k, v in values.items():
                self._tb.add_scalar(k, v, step)

    def flush(self) -> None:
        if self._jsonl is not None:
            self._jsonl.flush()
            os.fsync(self._jsonl.fileno())
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        if self._jsonl is not None:
            self.flush()
            self._jsonl.close()
            self._jsonl = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    def __enter__(self) -> MetricWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ----------------------------------------------------------------------------------- reading


def read_metrics_jsonl(path: str | os.PathLike, *, merge_steps: bool = True) -> list[dict]:
    """Records of a metrics.jsonl file.

    A line that is not a JSON record with a "step" (a torn last line from a run killed
    mid-write) is skipped with a warning naming its line number. With merge_steps, records of
    the same step are merged into one (later keys win: a resumed run overwrites the steps it
    re-ran; separate train/eval writes of one step are combined) and sorted by step; otherwise
    the records come back in file order.
    """
    with open(path, "rb") as f:
        lines = f.read().split(b"\n")
    parsed = _parse_lines(lines)
    records = [rec for _, _, rec in parsed if rec is not None]
    bad = [number for number, _, rec in parsed if rec is None]
    if bad:
        warnings.warn(f"{os.fspath(path)}: skipped unreadable line(s) {bad}", stacklevel=2)
    if not merge_steps:
        return records
    merged: dict[int, dict] = {}
    for rec in records:
        merged.setdefault(rec["step"], {}).update(rec)
    return [merged[s] for s in sorted(merged)]


def repair_metrics(path: str | os.PathLike, last_step: int | None) -> int:
    """Make metrics.jsonl match a run restored at `last_step`; returns the number of lines dropped.

    Dropped: unreadable lines (a torn last line from a kill -9 mid-write, with no newline or
    invalid JSON), records with step > last_step (written after the checkpoint being restored;
    the deterministic replay writes them again, so each step then appears once), and, with
    last_step None (the run starts from scratch), every record. The kept lines are written back
    byte for byte through a temporary file and os.replace, so a kill -9 during the repair leaves
    the old file or the repaired one. A missing file is left missing.

    Call it before a MetricWriter opens the file: a writer opened earlier keeps appending to the
    replaced file, whose records are then lost.
    """
    path = os.fspath(path)
    if last_step is not None and (isinstance(last_step, bool) or not isinstance(last_step, int)):
        raise TypeError(f"last_step must be an int step or None, got {last_step!r}")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return 0
    lines = data.split(b"\n")
    complete, tail = lines[:-1], lines[-1]  # tail: text after the last newline, a torn write
    keep, torn, late = [], [], 0
    for number, raw, rec in _parse_lines(complete):
        if rec is None:
            torn.append(number)
        elif last_step is None or rec["step"] > last_step:
            late += 1
        else:
            keep.append(raw)
    if tail.strip():
        torn.append(len(lines))
    if torn:
        warnings.warn(f"{path}: removed unreadable line(s) {torn}", stacklevel=2)
    dropped = late + len(torn)
    if dropped == 0:
        return 0  # already clean: leave the file untouched
    write_text_atomic(path, b"".join(raw + b"\n" for raw in keep).decode("utf-8"))
    return dropped


def _parse_lines(lines: list[bytes]) -> list[tuple[int, bytes, dict | None]]:
    """(1-based line number, raw line, record or None if unreadable) of the non-blank lines."""
    return [(n, raw, _parse_record(raw)) for n, raw in enumerate(lines, start=1) if raw.strip()]


def _parse_record(raw: bytes) -> dict | None:
    """The record of one metrics.jsonl line, its "step" an int; None if it is not one."""
    try:
        rec = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(rec, dict) or "step" not in rec:
        return None
    step = rec["step"]
    if isinstance(step, bool) or not isinstance(step, int | float):
        return None
    if isinstance(step, float) and not (math.isfinite(step) and step.is_integer()):
        return None
    rec["step"] = int(step)
    return rec


def plot_learning_curves(
    source: str | os.PathLike | Sequence[Mapping[str, Any]],
    out_png: str | os.PathLike,
    keys: Iterable[str] | None = None,
    *,
    title: str | None = None,
) -> str:
    """One subplot per key (x = step), saved as a PNG; returns its path.

    source is a metrics.jsonl path or a list of records; keys defaults to every numeric key but
    "step". Records missing a key are skipped for that subplot. Uses matplotlib's Agg canvas on a
    bare Figure (no pyplot), so it leaves a notebook's backend alone.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    records = read_metrics_jsonl(source) if isinstance(source, str | os.PathLike) else list(source)
    if keys is None:
        keys = sorted({k for r in records for k, v in r.items() if k != "step" and _is_number(v)})
    keys = list(keys)
    if not keys:
        raise ValueError("no metric keys to plot")
    ncols = min(3, len(keys))
    nrows = math.ceil(len(keys) / ncols)
    fig = Figure(figsize=(4.5 * ncols, 3.2 * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, key in zip(axes, keys, strict=False):
        pts = [(r["step"], r[key]) for r in records if _is_number(r.get(key))]
        if pts:
            xs, ys = zip(*pts, strict=True)
            ax.plot(xs, ys, marker="." if len(pts) < 50 else None)
        ax.set_title(key)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    for ax in axes[len(keys) :]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    out_png = os.fspath(out_png)
    os.makedirs(os.path.dirname(os.path.abspath(out_png)), exist_ok=True)
    fig.savefig(out_png, dpi=100)
    return out_png


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def progress(total: int, desc: str = "", *, enabled: bool | None = None, **tqdm_kwargs: Any):
    """A tqdm progress bar for local runs; disabled on processes other than 0.

    with progress(num_steps, "train") as bar:
        ...; bar.update(1); bar.set_postfix(loss=...)
    """
    from tqdm.auto import tqdm

    if enabled is None:
        enabled = jax.process_index() == 0
    return tqdm(total=total, desc=desc, disable=not enabled, dynamic_ncols=True, **tqdm_kwargs)
