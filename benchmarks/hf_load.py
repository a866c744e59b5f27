"""Loading a Qwen2.5-0.5B-shaped Hugging Face checkpoint: wall time, throughput, peak host memory.

The parent process writes a random checkpoint (``TransformerConfig.qwen2_5_0_5b``, bf16 on
disk, ~1 GB) with ``insight_jax.models.hf.save_hf_model``, once as one ``model.safetensors`` and
once in shards of at most --max-shard-bytes, into a temporary directory that is deleted at the
end. The random weights are drawn tensor by tensor (``random_model``) and written tensor by
tensor, so the host holds the model once (the parent's peak RSS during creation is reported
beside the model's size).

Every measurement runs in a FRESH subprocess, after its imports and jax's backend are
initialised, so its RSS is clean:
  load_bf16   load_hf_model(path, dtype=bfloat16, param_dtype=bfloat16), then
              block_until_ready on every leaf
  load_f32    the same with param_dtype=float32 (the training default: master weights in f32)
  safetensors safetensors.numpy.load_file of every file (the reference library's loader)
  read        plain read of every file into preallocated numpy buffers (the I/O floor)
The page cache is warm: the parent reads every file once before any timed child, so these
times measure copying / converting from memory, not the disk.

Memory, per child: peak RSS minus the RSS just before loading. The peak is the kernel's VmHWM
after resetting it (``/proc/self/clear_refs``; ru_maxrss if that is not allowed). Loaded arrays
live in host memory on CPU, so the overhead of a loader is peak_delta - loaded_bytes, reported
with its ratio to the largest single tensor (the embedding). A sampling thread also records
the peak anonymous (RssAnon) and file-backed (RssFile: mapped page-cache pages of the
checkpoint) parts separately, at ~1 ms resolution.

Times, memory: medians over --repeats fresh processes (interleaved, so load from other jobs
on the machine hits every method alike). Ratios are against the read / safetensors baselines
measured in the same run.

Usage (the full run takes about 3 minutes on 2 cores):
  python benchmarks/hf_load.py
  python benchmarks/hf_load.py --quick        # a 2-layer, small-vocabulary model: seconds

Writes benchmarks/results/hf_load.json and prints a table.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
GB = 1e9
METHODS = ("read", "safetensors", "load_bf16", "load_f32")
QUICK_MODEL = dict(num_layers=2, vocab_size=4096)


def _parse():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small model: check that it runs")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--max-shard-bytes", type=int, default=300_000_000)
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--tmp", default=None, help="parent of the temporary checkpoint directory")
    p.add_argument("--out", default=str(RESULTS / "hf_load.json"))
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--path", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.quick:
        args.repeats, args.max_shard_bytes = 1, 4_000_000
    unknown = set(args.methods.split(",")) - set(METHODS)
    if unknown:
        p.error(f"--methods: unknown {sorted(unknown)}; allowed {', '.join(METHODS)}")
    return args


# ----------------------------------------------------------------------------------------------
# Process memory (Linux /proc)
# ----------------------------------------------------------------------------------------------


def proc_status() -> dict[str, int]:
    """VmRSS, VmHWM, RssAnon, RssFile of this process, in bytes."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                out[key] = int(value.split()[0]) * 1024  # reported in kB
    return out


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0: write 5 to clear_refs); False if denied."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


class PeakSampler(threading.Thread):
    """Polls RssAnon / RssFile every ~1 ms and keeps their maxima (the kernel keeps only the
    peak of their sum, VmHWM)."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peak = proc_status()
        self._stop_event = threading.Event()

    def run(self):
        while not self._stop_event.wait(0.001):
            now = proc_status()
            for key in ("RssAnon", "RssFile"):
                self.peak[key] = max(self.peak[key], now[key])

    def stop(self) -> dict[str, int]:
        self._stop_event.set()
        self.join()
        return self.peak


# ----------------------------------------------------------------------------------------------
# Child: one measurement
# ----------------------------------------------------------------------------------------------


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def _files(path: str) -> list[str]:
    return sorted(os.path.join(path, f) for f in os.listdir(path) if f.endswith(".safetensors"))


def child(method: str, path: str) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np
    import safetensors.numpy
    from flax import nnx

    from insight_jax.models.hf import load_hf_model
    from insight_jax.models.transformer import Transformer
    from insight_jax.sharding import DEFAULT_MESH_AXES, abstract_sharded_state, make_mesh

    jnp.zeros(8).block_until_ready()  # backend and allocator initialised before the baseline
    files = _files(path)
    gc.collect()
    before = proc_status()
    hwm_reset = reset_peak_rss()
    sampler = PeakSampler()
    sampler.start()
    t0 = time.perf_counter()
    if method in ("load_bf16", "load_f32"):
        param_dtype = jnp.bfloat16 if method == "load_bf16" else jnp.float32
        model = load_hf_model(path, dtype=jnp.bfloat16, param_dtype=param_dtype)
        leaves = jax.block_until_ready(jax.tree.leaves(nnx.state(model)))
    elif method == "safetensors":
        leaves = [a for f in files for a in safetensors.numpy.load_file(f).values()]
    else:
        leaves = []
        for f in files:
            buf = np.empty(os.path.getsize(f), np.uint8)
            with open(f, "rb", buffering=0) as fh:
                if fh.readinto(memoryview(buf)) != buf.size:
                    raise RuntimeError(f"{f}: short read")
            leaves.append(buf)
    seconds = time.perf_counter() - t0
    sampled = sampler.stop()
    after = proc_status()
    peak = after["VmHWM"] if hwm_reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak = peak if hwm_reset else peak * 1024  # ru_maxrss is in kB on Linux
    abstract_s = None
    if method.startswith("load"):
        # Where the time goes: the abstract model the loader starts from (an nnx.eval_shape
        # trace of the whole init), built again after the measurement.
        mesh = make_mesh((1,) * len(DEFAULT_MESH_AXES), devices=jax.devices()[:1])
        _, abstract_s = _timed(lambda: abstract_sharded_state(Transformer, model.config, mesh))
    loaded = [x.size * x.dtype.itemsize for x in leaves]
    return dict(
        method=method,
        seconds=seconds,
        rss_before=before["VmRSS"],
        peak_rss=peak,
        peak_source="VmHWM after clear_refs" if hwm_reset else "ru_maxrss",
        peak_delta=peak - before["VmRSS"],
        peak_anon_delta=sampled["RssAnon"] - before["RssAnon"],
        peak_file_delta=sampled["RssFile"] - before["RssFile"],
        rss_after_delta=after["VmRSS"] - before["VmRSS"],
        loaded_bytes=sum(loaded),
        largest_loaded_tensor=max(loaded),
        num_arrays=len(loaded),
        abstract_state_s=abstract_s,
    )


# ----------------------------------------------------------------------------------------------
# Parent: checkpoint, children, table
# ----------------------------------------------------------------------------------------------


def random_model(cfg):
    """A Transformer(cfg) whose every parameter is drawn from normal(0, cfg.init_std) (norm
    scales and biases too: the values do not matter for loading), one tensor at a time with
    NumPy: the host holds the model once plus one tensor's float32 draw. (One jitted init of
    the whole model would need several times the model's bytes in XLA temp buffers: the random
    bits and float32 values of every tensor at once.)"""
    import jax
    import jax.numpy as jnp
    import ml_dtypes
    import numpy as np
    from flax import nnx

    from insight_jax.models.transformer import Transformer

    graphdef, abstract = nnx.split(nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0))))
    rng = np.random.default_rng(0)

    def draw(sds):
        x = rng.standard_normal(sds.shape, dtype=np.float32)
        x *= cfg.init_std
        return jnp.asarray(x.astype(ml_dtypes.bfloat16))

    return nnx.merge(graphdef, jax.tree.map(draw, abstract))


def write_checkpoints(root: str, quick: bool, max_shard_bytes: int) -> dict:
    """A random bf16 model saved whole and sharded; returns sizes and timings."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from insight_jax.models.hf import save_hf_model
    from insight_jax.models.transformer import TransformerConfig

    cfg = TransformerConfig.qwen2_5_0_5b(
        dtype=jnp.bfloat16, param_dtype=jnp.bfloat16, **(QUICK_MODEL if quick else {})
    )
    gc.collect()
    rss0 = proc_status()["VmRSS"]
    hwm_reset = reset_peak_rss()
    t0 = time.perf_counter()
    model = random_model(cfg)
    init_s = time.perf_counter() - t0
    state = nnx.state(model)
    model_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state))
    largest = max(x.size * x.dtype.itemsize for x in jax.tree.leaves(state))
    out = dict(
        config=dict(
            preset="qwen2_5_0_5b",
            overrides=QUICK_MODEL if quick else {},
            num_params=cfg.num_params(),
            num_layers=cfg.num_layers,
            vocab_size=cfg.vocab_size,
        ),
        init_s=init_s,
        model_bytes=model_bytes,
        largest_tensor_bytes=largest,
        layouts={},
    )
    for layout, shard in (("single", None), ("sharded", max_shard_bytes)):
        path = os.path.join(root, layout)
        t0 = time.perf_counter()
        save_hf_model(model, path, max_shard_bytes=shard, dtype=jnp.bfloat16)
        files = _files(path)
        out["layouts"][layout] = dict(
            path=path,
            save_s=time.perf_counter() - t0,
            files=len(files),
            checkpoint_bytes=sum(os.path.getsize(f) for f in files),
            max_shard_bytes=shard,
        )
    peak = proc_status()["VmHWM"] if hwm_reset else None
    out["creation_peak_rss_delta"] = None if peak is None else peak - rss0
    del model, state
    gc.collect()
    return out


def warm_page_cache(path: str) -> None:
    """Read every checkpoint file once, so timed children read from the page cache."""
    for f in _files(path):
        with open(f, "rb", buffering=0) as fh:
            while fh.read(64 << 20):
                pass


def run_child(method: str, path: str) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", method, "--path", path]
    env = dict(os.environ, JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _median(xs):
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else 0.5 * (xs[n // 2 - 1] + xs[n // 2])


def summarise(runs: list[dict], checkpoint_bytes: int, largest_disk: int) -> dict:
    keys = ("seconds", "peak_delta", "peak_anon_delta", "peak_file_delta", "rss_after_delta")
    row = {k: _median([r[k] for r in runs]) for k in keys}
    row["seconds_all"] = [r["seconds"] for r in runs]
    abstract = [r["abstract_state_s"] for r in runs if r["abstract_state_s"] is not None]
    row["abstract_state_s"] = _median(abstract) if abstract else None
    first = runs[0]
    for k in ("loaded_bytes", "largest_loaded_tensor", "num_arrays", "peak_source"):
        row[k] = first[k]
    loaded = row["loaded_bytes"]
    row["gb_per_s"] = checkpoint_bytes / row["seconds"] / GB
    row["overhead_bytes"] = row["peak_delta"] - loaded
    row["overhead_anon_bytes"] = row["peak_anon_delta"] - loaded
    row["overhead_over_largest_tensor"] = row["overhead_bytes"] / row["largest_loaded_tensor"]
    row["peak_delta_over_checkpoint"] = row["peak_delta"] / checkpoint_bytes
    row["peak_delta_over_loaded"] = row["peak_delta"] / loaded
    row["largest_tensor_on_disk"] = largest_disk
    return row


def _table(results: dict) -> str:
    head = (
        f"{'layout':<9}{'method':<13}{'time s':>8}{'GB/s':>7}{'x read':>8}{'x st':>7}"
        f"{'loaded GB':>10}{'peak d GB':>10}{'anon d':>8}{'file d':>8}{'overhead':>10}"
        f"{'/largest':>9}{'/disk':>7}{'abstr s':>8}"
    )
    lines = [head, "-" * len(head)]
    for layout, info in results["layouts"].items():
        rows = info["methods"]
        for method, r in rows.items():
            x_read = r["seconds"] / rows["read"]["seconds"] if "read" in rows else float("nan")
            x_st = (
                r["seconds"] / rows["safetensors"]["seconds"]
                if "safetensors" in rows
                else float("nan")
            )
            lines.append(
                f"{layout:<9}{method:<13}{r['seconds']:>8.2f}{r['gb_per_s']:>7.2f}"
                f"{x_read:>8.1f}{x_st:>7.1f}{r['loaded_bytes'] / GB:>10.3f}"
                f"{r['peak_delta'] / GB:>10.3f}{r['peak_anon_delta'] / GB:>8.3f}"
                f"{r['peak_file_delta'] / GB:>8.3f}{r['overhead_bytes'] / GB:>10.3f}"
                f"{r['overhead_over_largest_tensor']:>9.2f}{r['peak_delta_over_checkpoint']:>7.2f}"
                + (f"{r['abstract_state_s']:>8.2f}" if r["abstract_state_s"] is not None else "")
            )
    return "\n".join(lines)


def main():
    args = _parse()
    if args.child:
        print(json.dumps(child(args.child, args.path)))
        return
    t_start = time.perf_counter()
    methods = args.methods.split(",")
    root = tempfile.mkdtemp(prefix="hf_load_", dir=args.tmp)
    try:
        info = write_checkpoints(root, args.quick, args.max_shard_bytes)
        largest_disk = info["largest_tensor_bytes"]  # bf16 on disk, as in the model written
        print(
            f"random {info['config']['preset']} ({info['config']['num_params'] / 1e6:.0f}M "
            f"params, bf16): init {info['init_s']:.1f}s, model {info['model_bytes'] / GB:.3f} GB,"
            f" parent peak RSS during creation +{(info['creation_peak_rss_delta'] or 0) / GB:.3f}"
            " GB; "
            + ", ".join(
                f"{k}: {v['files']} file(s) {v['checkpoint_bytes'] / GB:.3f} GB saved in "
                f"{v['save_s']:.1f}s"
                for k, v in info["layouts"].items()
            ),
            flush=True,
        )
        runs: dict[str, dict[str, list]] = {k: {m: [] for m in methods} for k in info["layouts"]}
        for v in info["layouts"].values():
            warm_page_cache(v["path"])
        for rep in range(args.repeats):
            for layout, v in info["layouts"].items():
                for method in methods:
                    r = run_child(method, v["path"])
                    runs[layout][method].append(r)
                    print(
                        f"  [{rep + 1}/{args.repeats}] {layout:<8}{method:<12}"
                        f"{r['seconds']:7.2f}s  peak +{r['peak_delta'] / GB:.3f} GB",
                        flush=True,
                    )
        for layout, v in info["layouts"].items():
            v["methods"] = {
                m: summarise(runs[layout][m], v["checkpoint_bytes"], largest_disk) for m in methods
            }
            v["runs"] = runs[layout]
            del v["path"]
    finally:
        shutil.rmtree(root, ignore_errors=True)
    wall = time.perf_counter() - t_start
    print("page cache warm (every file read once before timing); medians of "
          f"{args.repeats} fresh processes; 'x read' / 'x st': time over the plain read / "
          "safetensors.numpy time of the same layout; overhead = peak delta - loaded bytes; "
          "/largest: overhead over the largest loaded tensor; /disk: peak delta over the "
          "checkpoint size; abstr s: the loader's abstract model (nnx.eval_shape of the "
          "init), timed again after the load")  # fmt: skip
    print(_table(info))
    print(f"total wall time {wall:.0f} s")
    meta = dict(
        platform=platform.platform(),
        python=platform.python_version(),
        argv=sys.argv[1:],
        quick=args.quick,
        repeats=args.repeats,
        page_cache="warm: every file read once before timing",
        wall_s=wall,
        loadavg_end=os.getloadavg(),
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(dict(meta=meta, **info), indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
