"""Task pools from data files: the one-time build, the cached reopen, random access of M records.

One N-row file in the public Countdown format (target: int64, nums: list<int64> of 3 or 4
numbers, from a seeded numpy RNG), as parquet and as JSONL. Rows:
  write_s               writing the file itself (context; pyarrow / json.dumps per row)
  build_s, rows_per_s   pool_from_file's one-time conversion into an array_record pool (hash,
                        rows -> CountdownTask.from_row records, write, hash again)
  reopen_ms             pool_from_file again on the unchanged file: a cache hit (hash the file,
                        read the parquet footer / count the JSONL lines, open the pool)
  hash_ms               of which: the SHA-256 of the file
  open_source_ms        opening the pool folder alone (pool.json + the lazy reader)
Random access (the pool is the same whatever the file's format; measured on the parquet pool):
  getitems_ms           pool.__getitems__ of M random indices, median over --repeats draws
  take_in_memory_ms     baseline: table.take(indices).to_pylist() on the arrow table held in memory
  read_take_ms          baseline: pq.read_table(file).take(indices).to_pylist(), from the file
and the same per record in microseconds. Each draw has fresh indices (uniform over the pool); the
records of the pool and of the baseline are checked equal.

Usage:

  python benchmarks/data_pool.py            # N = 1e6
  python benchmarks/data_pool.py --quick    # N = 2e4

Writes benchmarks/results/data_pool.json (--out) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from insight_jax.tasks import CountdownTask
from insight_jax.tasks.datasets import open_source, pool_from_file
from insight_jax.tasks.loaders import file_sha256

RESULTS = Path(__file__).resolve().parent / "results"


def _parse():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--quick", action="store_true", help="N = 20000 (overrides --rows)")
    p.add_argument("--batch-size", type=int, default=256, help="M, records per random access")
    p.add_argument("--repeats", type=int, default=21)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-jsonl", action="store_true", help="parquet only")
    p.add_argument("--workdir", default=None, help="keep the files here (default: a temp dir)")
    p.add_argument("--out", default=str(RESULTS / "data_pool.json"))
    return p.parse_args()


def countdown_table(n: int, seed: int) -> pa.Table:
    """n Countdown rows: 3 or 4 numbers in 1..99 and a target in 1..999, built in numpy."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(3, 5, n)
    offsets = np.zeros(n + 1, np.int32)
    np.cumsum(counts, out=offsets[1:])
    nums = pa.ListArray.from_arrays(pa.array(offsets), pa.array(rng.integers(1, 100, offsets[-1])))
    target = pa.array(rng.integers(1, 1000, n), pa.int64())
    return pa.table({"target": target, "nums": nums})


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def _median_time(fn, draws):
    times = []
    for indices in draws:
        t0 = time.perf_counter()
        fn(indices)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def _write_jsonl(table: pa.Table, path: Path) -> None:
    with path.open("w", encoding="utf-8") as f:
        for batch in table.to_batches(max_chunksize=65536):
            f.writelines(json.dumps(row) + "\n" for row in batch.to_pylist())


def run(args, folder: Path) -> dict:
    n, m = args.rows, args.batch_size
    task = CountdownTask()
    table = countdown_table(n, args.seed)
    files = {"parquet": folder / "countdown.parquet"}
    _, write_parquet = _timed(lambda: pq.write_table(table, files["parquet"]))
    writes = {"parquet": write_parquet}
    if not args.no_jsonl:
        files["jsonl"] = folder / "countdown.jsonl"
        _, writes["jsonl"] = _timed(lambda: _write_jsonl(table, files["jsonl"]))

    rows, pools = [], {}
    for fmt, path in files.items():
        data_dir = folder / f"pools-{fmt}"
        pool, build = _timed(lambda p=path, d=data_dir: pool_from_file(p, task, d))
        reopened, reopen = _timed(lambda p=path, d=data_dir: pool_from_file(p, task, d))
        assert reopened.path == pool.path and len(reopened) == n
        _, hash_s = _timed(lambda p=path: file_sha256(p))
        _, open_s = _timed(lambda p=pool.path: open_source(p))
        pools[fmt] = pool
        rows.append(
            {
                "format": fmt,
                "N": n,
                "file_mb": path.stat().st_size / 1e6,
                "pool_mb": sum(f.stat().st_size for f in Path(pool.path).iterdir()) / 1e6,
                "write_s": writes[fmt],
                "build_s": build,
                "rows_per_s": n / build,
                "reopen_ms": reopen * 1e3,
                "hash_ms": hash_s * 1e3,
                "open_source_ms": open_s * 1e3,
            }
        )

    pool = pools["parquet"]
    rng = np.random.default_rng(args.seed + 1)
    draws = [rng.integers(0, n, m) for _ in range(args.repeats)]
    # Same records from the pool and from arrow (the loader adds index = row, source_row = row).
    check = draws[0]
    expected = [
        {**row, "index": int(i), "source_row": int(i)}
        for row, i in zip(table.take(check).to_pylist(), check, strict=True)
    ]
    assert pool.__getitems__(check) == expected
    pool.__getitems__(draws[0])  # warm: the reader is open
    getitems = _median_time(pool.__getitems__, draws)
    take = _median_time(lambda idx: table.take(idx).to_pylist(), draws)
    path = files["parquet"]
    read_draws = draws[: max(3, args.repeats // 4)]  # each reads the whole file
    read_take = _median_time(lambda idx: pq.read_table(path).take(idx).to_pylist(), read_draws)
    access = {
        "N": n,
        "M": m,
        "repeats": args.repeats,
        "getitems_ms": getitems * 1e3,
        "getitems_us_per_record": getitems / m * 1e6,
        "take_in_memory_ms": take * 1e3,
        "take_in_memory_us_per_record": take / m * 1e6,
        "read_take_ms": read_take * 1e3,
        "read_take_us_per_record": read_take / m * 1e6,
        "read_take_repeats": len(read_draws),
    }
    return {"builds": rows, "random_access": access}


def print_table(result):
    print(f"\nPool builds from an N-row Countdown file (N = {result['builds'][0]['N']})")
    print(
        f"{'format':>8} {'file MB':>8} {'pool MB':>8} {'write s':>8} {'build s':>8}"
        f" {'rows/s':>9} {'reopen ms':>9} {'hash ms':>8} {'open ms':>8}"
    )
    for r in result["builds"]:
        print(
            f"{r['format']:>8} {r['file_mb']:8.1f} {r['pool_mb']:8.1f} {r['write_s']:8.2f}"
            f" {r['build_s']:8.2f} {r['rows_per_s']:9.0f} {r['reopen_ms']:9.1f}"
            f" {r['hash_ms']:8.1f} {r['open_source_ms']:8.2f}"
        )
    a = result["random_access"]
    print(f"\nRandom access of M = {a['M']} records (median of {a['repeats']} draws)")
    print(f"{'':>28} {'ms':>8} {'us/record':>10}")
    for label, key in [
        ("pool.__getitems__", "getitems"),
        ("arrow take, table in memory", "take_in_memory"),
        ("parquet read + take", "read_take"),
    ]:
        print(f"{label:>28} {a[key + '_ms']:8.2f} {a[key + '_us_per_record']:10.1f}")


def main():
    args = _parse()
    if args.quick:
        args.rows = 20_000
    if args.workdir:
        folder = Path(args.workdir)
        folder.mkdir(parents=True, exist_ok=True)
        result = run(args, folder)
    else:
        with tempfile.TemporaryDirectory(prefix="data_pool_") as tmp:
            result = run(args, Path(tmp))
    meta = {
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "argv": sys.argv[1:],
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "pyarrow": pa.__version__,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"meta": meta, **result}, indent=1))
    print_table(result)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
