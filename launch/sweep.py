"""Expands a sweep declared next to a config and runs (or prints) its rows; resumable.

A sweep file (configs/ablations/<config>.py) names its base config and declares rows with
`get_hyper(h, name)`, big_vision-style; shared pieces are imported from the installed configs
package (`from configs.ablations import sweeps_common`; launch/setup_env.sh installs it)::

    CONFIG = "configs/countdown_tiny.py"

    def get_hyper(h, name="main"):
        return h.product([h.sweep("config.seed", [1, 2, 3]), h.sweep("arg", ["random", "insight"])])

A row is a dict: "arg" is the config-file argument (e.g. a method name, "insight" or "ds"),
every "config.X" key is a --config.X override (e.g. "config.selection.params.insight.mu").
Each row becomes one command

    python -m insight_jax.main --config=<CONFIG>:<arg> --config.X=V ... \\
        --workdir=<root>/<sweep file>/<name>/<row>

Usage (from the repository root):

    python launch/sweep.py configs/ablations/countdown_tiny.py:main --list
    python launch/sweep.py configs/ablations/countdown_tiny.py:main --root=workdirs/study --jobs=2
    python launch/sweep.py ...:main --shard=0/4 ...   # rows i with i % 4 == 0 (spread over hosts)

Resumable: a row whose workdir holds a finished summary is skipped, and an interrupted row
resumes from its own checkpoints (train_and_evaluate), so rerunning the same command after any
interruption finishes the sweep. Runs share a persistent JAX compilation cache under the root.
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

Row = dict[str, Any]


class Hyper:
    """The sweep vocabulary: sweep (one key over values), product, zip and fixed."""

    @staticmethod
    def sweep(key: str, values) -> list[Row]:
        if key != "arg" and not key.startswith("config."):
            raise ValueError(f"sweep keys are 'arg' or 'config.<field>', got {key!r}")
        return [{key: v} for v in values]

    @staticmethod
    def fixed(key: str, value) -> list[Row]:
        return Hyper.sweep(key, [value])

    @staticmethod
    def product(sweeps: list[list[Row]]) -> list[Row]:
        rows = []
        for combo in itertools.product(*sweeps):
            row: Row = {}
            for part in combo:
                clash = set(row) & set(part)
                if clash:
                    raise ValueError(f"keys set twice in a product: {sorted(clash)}")
                row.update(part)
            rows.append(row)
        return rows

    @staticmethod
    def zip(sweeps: list[list[Row]]) -> list[Row]:
        if len({len(s) for s in sweeps}) > 1:
            raise ValueError(f"zip needs sweeps of one length, got {[len(s) for s in sweeps]}")
        return [
            {k: v for part in parts for k, v in part.items()} for parts in zip(*sweeps, strict=True)
        ]

    @staticmethod
    def chain(sweeps: list[list[Row]]) -> list[Row]:
        return [row for s in sweeps for row in s]


def load_sweep(spec: str) -> tuple[str, str, list[tuple[str, Row]]]:
    """(base config path, sweep name, [(row name, row)]) of `path/to/sweep.py[:name]`."""
    path, _, name = spec.partition(":")
    name = name or "main"
    module_spec = importlib.util.spec_from_file_location(Path(path).stem + "_sweep", path)
    if module_spec is None or not Path(path).is_file():
        raise FileNotFoundError(f"no sweep file at {path}")
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)  # shared helpers come from the configs package
    rows = module.get_hyper(Hyper(), name)
    if not rows:
        raise ValueError(f"sweep {spec} declares no rows")
    keys = varying_keys(rows)
    names = [row_name(r, keys) for r in rows]
    if len(set(names)) != len(names):
        raise ValueError(f"sweep {spec} declares duplicate rows")
    return module.CONFIG, f"{Path(path).stem}/{name}", list(zip(names, rows, strict=True))


def _value(v) -> str:
    return json.dumps(v) if isinstance(v, dict | list | tuple) else str(v)


def varying_keys(rows: list[Row]) -> list[str]:
    """Keys whose value differs between rows (they name the rows; fixed keys would be noise)."""
    keys = sorted({k for r in rows for k in r}, key=lambda k: (k != "arg", k))
    return [k for k in keys if len({_value(r.get(k)) for r in rows}) > 1]


def row_name(row: Row, keys: list[str]) -> str:
    """A filesystem-safe, readable name from the varying keys: e.g. `insight,seed=1`."""
    parts = [
        str(row[k]) if k == "arg" else f"{k.removeprefix('config.')}={_value(row[k])}"
        for k in keys
        if k in row  # a key some rows leave at the config's default
    ]
    return (",".join(parts) or "default").replace("/", "_").replace(" ", "")


def row_command(config: str, row: Row, workdir: Path) -> list[str]:
    arg = f":{row['arg']}" if "arg" in row else ""
    overrides = [f"--{k}={_value(v)}" for k, v in sorted(row.items()) if k != "arg"]
    return [
        sys.executable,
        "-m",
        "insight_jax.main",
        f"--config={config}{arg}",
        *overrides,
        f"--workdir={workdir}",
    ]


def is_finished(workdir: Path) -> bool:
    summary = workdir / "summary.json"
    return summary.exists() and "eval_accuracy_after" in json.loads(summary.read_text())


def _env(root: Path) -> dict[str, str]:
    return dict(
        os.environ,
        JAX_COMPILATION_CACHE_DIR=str((root / "jax_cache").resolve()),
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
        JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
    )


def run_rows(
    config: str,
    rows: list[tuple[str, Row]],
    sweep_dir: Path,
    root: Path,
    jobs: int,
    on_done: Callable[[Path], None] | None = None,
) -> int:
    """Runs unfinished rows, `jobs` at a time; returns the number of failed rows.
    `on_done(workdir)` is called as each row finishes well (e.g. to keep its results elsewhere)."""
    todo = [(r, sweep_dir / n) for n, r in rows if not is_finished(sweep_dir / n)]
    print(f"{len(rows) - len(todo)} of {len(rows)} rows already finished", flush=True)
    env, running, failed, t0 = _env(root), [], 0, time.time()
    while todo or running:
        while todo and len(running) < jobs:
            row, workdir = todo.pop(0)
            workdir.mkdir(parents=True, exist_ok=True)
            log = open(workdir / "run.log", "a")  # closed when the run ends
            proc = subprocess.Popen(
                row_command(config, row, workdir), stdout=log, stderr=subprocess.STDOUT, env=env
            )
            running.append((proc, log, workdir))
            print(f"[{time.time() - t0:7.0f}s] start {workdir.name}", flush=True)
        time.sleep(1.0)
        for item in list(running):
            proc, log, workdir = item
            if proc.poll() is None:
                continue
            running.remove(item)
            log.close()
            ok = proc.returncode == 0 and is_finished(workdir)
            failed += not ok
            if ok and on_done is not None:
                on_done(workdir)
            status = "done" if ok else f"FAILED (exit {proc.returncode}; see {workdir}/run.log)"
            print(f"[{time.time() - t0:7.0f}s] {status} {workdir.name}", flush=True)
    return failed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("sweep", help="path/to/sweep.py[:name] (name defaults to 'main')")
    p.add_argument(
        "--root", default="workdirs/sweeps", help="workdirs go to ROOT/<sweep file>/<name>/<row>"
    )
    p.add_argument("--jobs", type=int, default=1, help="rows run at once")
    p.add_argument("--shard", default="0/1", help="i/n: run rows with index %% n == i")
    p.add_argument("--list", action="store_true", help="print the commands, run nothing")
    args = p.parse_args(argv)
    config, name, rows = load_sweep(args.sweep)
    i, n = (int(x) for x in args.shard.split("/"))
    if not 0 <= i < n:
        raise SystemExit(f"--shard must be i/n with 0 <= i < n, got {args.shard}")
    rows = rows[i::n]
    root = Path(args.root)
    sweep_dir = root / name
    if args.list:
        for n, r in rows:
            print(" ".join(row_command(config, r, sweep_dir / n)))
        return 0
    return 1 if run_rows(config, rows, sweep_dir, root, max(1, args.jobs)) else 0


if __name__ == "__main__":
    sys.exit(main())
