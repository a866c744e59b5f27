"""Rollout throughput: the KV-cache sampler vs the naive (full-recompute) sampler vs floors.

For each model config (random weights), in one process:
  sample        rl/rollout.py KV-cache sampler (prefill + lax.while_loop decode), jitted
  naive_sample  the same draws, recomputing the full forward over [prompt | completion] per token
Both draw B * K completions of exactly N tokens (no EOS) from P-token prompts, temperature 1,
top-p 0.95. Reported per sampler: compile time, median wall time of --repeats runs (after
the compile), generated tokens/s = B * K * N / time.

Floors (what this machine could do at best):
  flop_floor_s  useful FLOPs / measured float32 matmul rate. Useful FLOPs = prefill of B*K*P
                tokens + N - 1 decode steps, each token costing
                ``TransformerConfig.forward_flops_per_token(context)`` (matmuls + attention to
                the real context). The matmul rate is timed on a large jnp.dot.
  mem_floor_s   bytes that must be read / measured memory bandwidth: every decode step reads
                all weights once (small batches are bandwidth-bound), prefill reads them once.
  efficiency    max(floors) / measured time of the cached sampler.

Usage (CPU defaults finish in a few minutes on 2 cores):
  python benchmarks/rollout_speed.py
  python benchmarks/rollout_speed.py --configs tiny --batch 16 --max-new 128
  python benchmarks/rollout_speed.py --configs qwen3_0_6b --skip-naive

Writes benchmarks/results/rollout_speed.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from insight_jax.models.transformer import Transformer, TransformerConfig
from insight_jax.rl import rollout

RESULTS = Path(__file__).resolve().parent / "results"

# Per-config defaults sized for a 2-core CPU; flags override them for every config.
DEFAULT_SIZES = {
    "tiny": dict(batch=8, num_samples=4, prompt_len=32, max_new=64),
    "qwen2_5_0_5b": dict(batch=1, num_samples=2, prompt_len=16, max_new=8),
    "qwen3_0_6b": dict(batch=1, num_samples=2, prompt_len=16, max_new=8),
}


def _parse():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", default="tiny,qwen2_5_0_5b", help="comma list of presets")
    p.add_argument("--batch", type=int, default=None, help="prompts per call (B)")
    p.add_argument("--num-samples", type=int, default=None, help="completions per prompt (K)")
    p.add_argument("--prompt-len", type=int, default=None, help="prompt tokens (P)")
    p.add_argument("--max-new", type=int, default=None, help="generated tokens (N)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--dtype", default="float32", help="compute dtype (params stay float32)")
    p.add_argument("--matmul-size", type=int, default=2048)
    p.add_argument("--skip-naive", action="store_true")
    p.add_argument("--out", default=str(RESULTS / "rollout_speed.json"))
    return p.parse_args()


def _median_time(fn, repeats: int) -> tuple[float, float, list[float]]:
    """(compile + first run seconds, median seconds, all times); fn(i) must block."""
    t0 = time.perf_counter()
    fn(0)
    first = time.perf_counter() - t0
    times = []
    for i in range(repeats):
        t0 = time.perf_counter()
        fn(i + 1)
        times.append(time.perf_counter() - t0)
    return first, float(np.median(times)), times


def measure_matmul_flops(n: int, repeats: int = 5) -> float:
    """Achieved float32 FLOP/s of an [n, n] x [n, n] jnp.dot (2 n^3 FLOPs)."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    dot = jax.jit(jnp.dot)
    _, med, _ = _median_time(lambda i: dot(a, b).block_until_ready(), repeats)
    return 2.0 * n**3 / med


def measure_bandwidth(num_bytes: int = 1 << 28, repeats: int = 5) -> float:
    """Achieved read bandwidth (bytes/s) of a jitted sum over a float32 array."""
    x = jnp.ones((num_bytes // 4,), jnp.float32)
    total = jax.jit(jnp.sum)
    _, med, _ = _median_time(lambda i: total(x).block_until_ready(), repeats)
    return num_bytes / med


def useful_flops(cfg: TransformerConfig, rows: int, p: int, n: int) -> float:
    """Prefill of P tokens per row (token i sees i + 1 keys) + N - 1 decode steps."""
    prefill = sum(cfg.forward_flops_per_token(i + 1) for i in range(p))
    decode = sum(cfg.forward_flops_per_token(p + t + 1) for t in range(n - 1))
    return rows * (prefill + decode)


def bench_config(name: str, args, flops_rate: float, bandwidth: float) -> list[dict]:
    sizes = {**DEFAULT_SIZES.get(name, DEFAULT_SIZES["qwen2_5_0_5b"])}
    for key in sizes:
        if getattr(args, key) is not None:
            sizes[key] = getattr(args, key)
    b, k, p, n = sizes["batch"], sizes["num_samples"], sizes["prompt_len"], sizes["max_new"]
    overrides = {"vocab_size": 104} if name == "tiny" else {}  # CharTokenizer vocabulary
    cfg = TransformerConfig.preset(name, dtype=args.dtype, **overrides)

    # Random weights, created by one jitted init (no eager op-by-op init of 0.5B params).
    init = jax.jit(lambda: nnx.split(Transformer(cfg, rngs=nnx.Rngs(0))))
    t0 = time.perf_counter()
    graphdef, state = init()
    jax.block_until_ready(state)
    init_s = time.perf_counter() - t0
    model = nnx.merge(graphdef, state)
    param_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state))

    rng = np.random.default_rng(0)
    prompts = rng.integers(4, cfg.vocab_size, (b, p), dtype=np.int32)
    lengths = np.full((b,), p, np.int32)
    settings = dict(max_new_tokens=n, num_samples=k, temperature=1.0, top_p=0.95, eos_ids=())

    flops = useful_flops(cfg, b * k, p, n)
    flop_floor = flops / flops_rate
    mem_floor = param_bytes * n / bandwidth  # prefill + N - 1 decode steps read all weights
    generated = b * k * n
    rows = []
    samplers = [("sample", rollout.sample)]
    if not args.skip_naive:
        samplers.append(("naive_sample", rollout.naive_sample))
    for label, fn in samplers:

        def run(i, fn=fn):
            r = fn(model, prompts, lengths, jax.random.key(i), **settings)
            r.tokens.block_until_ready()

        first, med, times = _median_time(run, args.repeats)
        rows.append(
            dict(
                config=name,
                sampler=label,
                num_params=cfg.num_params(),
                dtype=str(cfg.dtype),
                batch=b,
                num_samples=k,
                prompt_len=p,
                max_new=n,
                init_s=init_s,
                compile_s=first - med,
                median_s=med,
                times_s=times,
                tokens_per_s=generated / med,
                useful_gflops=flops / 1e9,
                flop_floor_s=flop_floor,
                mem_floor_s=mem_floor,
                floor_tokens_per_s=generated / max(flop_floor, mem_floor),
                efficiency=max(flop_floor, mem_floor) / med,
            )
        )
    if len(rows) == 2:
        rows[0]["speedup_vs_naive"] = rows[1]["median_s"] / rows[0]["median_s"]
    return rows


def main():
    args = _parse()
    flops_rate = measure_matmul_flops(args.matmul_size)
    bandwidth = measure_bandwidth()
    print(
        f"device: {jax.devices()[0].device_kind} x{jax.device_count()}  "
        f"matmul f32: {flops_rate / 1e9:.1f} GFLOP/s  read bandwidth: {bandwidth / 1e9:.1f} GB/s"
    )
    rows = []
    for name in args.configs.split(","):
        rows.extend(bench_config(name.strip(), args, flops_rate, bandwidth))

    header = (
        f"{'config':<14}{'sampler':<14}{'BxK':>6}{'P':>5}{'N':>5}{'compile s':>10}"
        f"{'median s':>10}{'tok/s':>10}{'floor tok/s':>12}{'eff':>7}{'speedup':>9}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        speed = f"{r['speedup_vs_naive']:.1f}x" if "speedup_vs_naive" in r else ""
        print(
            f"{r['config']:<14}{r['sampler']:<14}{r['batch'] * r['num_samples']:>6}"
            f"{r['prompt_len']:>5}{r['max_new']:>5}{r['compile_s']:>10.1f}{r['median_s']:>10.3f}"
            f"{r['tokens_per_s']:>10.1f}{r['floor_tokens_per_s']:>12.1f}"
            f"{r['efficiency']:>7.1%}{speed:>9}"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = dict(
        device=jax.devices()[0].device_kind,
        device_count=jax.device_count(),
        platform=platform.platform(),
        jax_version=jax.__version__,
        matmul_flops_per_s=flops_rate,
        read_bandwidth_bytes_per_s=bandwidth,
        argv=sys.argv[1:],
    )
    out.write_text(json.dumps(dict(meta=meta, rows=rows), indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
