"""Rollout throughput of the engines on ragged reasoning-length responses, against floors.

Engines (same draws, one process, random weights):
  dense       rl/rollout.py: every row decodes until the longest is done, attention over the
              whole cache.
  continuous  rl/continuous.py: --slots decode slots refilled from the queue of the call's
              rollouts, attention over filled slots only.
  naive       (--naive) a full forward over [prompt | completion] per token (the reference).

Lengths the benchmark controls. The policy is a random Qwen3-shaped model whose EOS logit is
raised at completion position t so that P(EOS at t | no EOS before) is the hazard of a target
length distribution (``StopHazard``): a row stops where the sampled stream says, through the
engines' own EOS handling, and its length is distributed as the target:
  mix   lognormal (--median, --sigma), capped at N = --max-new;
  full  never stops: every row runs to N (the dense engine's best case).
Both engines draw the same tokens (tested in tests/test_continuous.py), so their rows have the
same lengths; useful tokens = tokens up to and including each row's EOS.

Floors (this machine's best for the useful work): flop_floor_s = useful FLOPs (prefill of each
prompt once + each useful token's forward at its context, ``forward_flops_per_token``) / the
float32 matmul rate timed on a large jnp.dot; mem_floor_s = (the longest row's decode steps,
which every engine needs one after another, x bytes of weights + the cache every useful token
reads) / read bandwidth.
efficiency = max(floors) / measured time.

Usage (CPU; --quick runs in a few minutes, the defaults in about 15 minutes on 2 cores):
  python benchmarks/rollout_speed.py
  python benchmarks/rollout_speed.py --quick
  python benchmarks/rollout_speed.py --configs qwen3_0_6b --batch 2 --num-samples 4 --max-new 256

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
from insight_jax.rl import continuous, rollout

RESULTS = Path(__file__).resolve().parent / "results"
EOS_ID = 2

# "qwen3_small": the Qwen3 block (qk-norm, GQA, tied embeddings) at 4 layers, width 512 and a
# 32k vocabulary; "qwen3_0_6b": the real shape.
MODELS = {
    "qwen3_small": dict(
        preset="qwen3_0_6b",
        vocab_size=32_000,
        num_layers=4,
        embed_dim=512,
        num_heads=8,
        num_kv_heads=4,
        head_dim=64,
        mlp_dim=1536,
    ),
    "qwen3_0_6b": dict(preset="qwen3_0_6b"),
}
# Sized for a 2-core CPU, where the dense engine at M = 32 x K = 8 and N = 2048 would take about
# 3 s per decode step (every row attends over the whole 2,176-slot cache): hours per call.
DEFAULTS = {
    "qwen3_small": dict(batch=8, num_samples=8, prompt_len=128, max_new=512, median=120.0),
    "qwen3_0_6b": dict(batch=1, num_samples=4, prompt_len=64, max_new=128, median=40.0),
}
QUICK = dict(batch=4, num_samples=4, prompt_len=32, max_new=128, median=40.0)


class StopHazard(Transformer):
    """A Transformer whose EOS probability at completion position t is the hazard
    h(t) = P(L = t + 1) / P(L > t) of a length distribution L on {1..N}: logit_eos is set to
    logsumexp(other logits) + log h - log(1 - h), so softmax gives EOS mass h (before any
    temperature: the benchmark samples at T = 1). t = RoPE position of the next token - P
    (every prompt is P real tokens). The hidden state carries t as an extra channel from
    ``hidden`` to ``unembed``, so both engines see it without any change to them."""

    def __init__(self, config, log_hazard, prompt_len, *, rngs):
        super().__init__(config, rngs=rngs)
        self.log_hazard = nnx.Variable(jnp.asarray(log_hazard, jnp.float32))  # [N + 1]
        self.prompt_len = prompt_len

    def hidden(self, tokens, positions=None, *, cache=None, attention_mask=None, last_only=False):
        x, new_cache = super().hidden(
            tokens, positions, cache=cache, attention_mask=attention_mask, last_only=last_only
        )
        # Position of the token these states predict: the cache's real-token count per row.
        # float32: bf16 would round positions above 256.
        t = (new_cache.lengths - self.prompt_len).astype(jnp.float32)
        t = jnp.broadcast_to(t[:, None, None], (*x.shape[:2], 1))
        return jnp.concatenate([x.astype(jnp.float32), t], axis=-1), new_cache

    def unembed(self, x):
        logits = super().unembed(x[..., :-1].astype(self.config.dtype))
        t = jnp.clip(x[..., -1].astype(jnp.int32), 0, self.log_hazard.shape[0] - 1)
        log_h = self.log_hazard[...][t]
        others = logits.at[..., EOS_ID].set(-jnp.inf)
        lse = jax.nn.logsumexp(others, axis=-1)
        eos = lse + log_h - jnp.log1p(-jnp.minimum(jnp.exp(log_h), 1 - 1e-6))
        return logits.at[..., EOS_ID].set(eos)


def lognormal_log_hazard(n: int, median: float, sigma: float) -> np.ndarray:
    """log h(t), t = 0..N: the hazard of L = ceil(lognormal(log median, sigma)) on {1..N}
    (mass above N kept at N: the row is truncated). -inf (never stop) for "full"."""
    from scipy import stats

    edges = np.arange(n + 1, dtype=np.float64)  # P(L <= l) = F(l), L = ceil(X)
    cdf = stats.lognorm.cdf(edges, s=sigma, scale=median)
    pmf = np.diff(cdf)
    pmf[-1] += 1.0 - cdf[-1]
    survive = 1.0 - np.concatenate([[0.0], np.cumsum(pmf)[:-1]])  # P(L > t), t = 0..N-1
    with np.errstate(divide="ignore", invalid="ignore"):
        h = np.where(survive > 0, pmf / survive, 1.0)
    return np.log(np.clip(np.concatenate([h, [1.0]]), 1e-30, 1.0))


def measure_matmul_flops(n: int = 2048, repeats: int = 5) -> float:
    """Achieved float32 FLOP/s of an [n, n] x [n, n] jnp.dot (2 n^3 FLOPs), median."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    dot = jax.jit(jnp.dot)
    dot(a, a).block_until_ready()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        dot(a, a).block_until_ready()
        times.append(time.perf_counter() - t0)
    return 2.0 * n**3 / float(np.median(times))


def measure_bandwidth(num_bytes: int = 1 << 28, repeats: int = 5) -> float:
    """Achieved read bandwidth (bytes/s) of a jitted sum over a float32 array, median."""
    x = jnp.ones((num_bytes // 4,), jnp.float32)
    total = jax.jit(jnp.sum)
    total(x).block_until_ready()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        total(x).block_until_ready()
        times.append(time.perf_counter() - t0)
    return num_bytes / float(np.median(times))


def useful_flops(cfg: TransformerConfig, num_prompts: int, p: int, lengths: np.ndarray) -> float:
    """Prefill of each prompt once (token i sees i + 1 keys) + every useful token's forward
    (token t of a row is predicted at context P + t, the first from the prefill)."""
    prefill = num_prompts * sum(cfg.forward_flops_per_token(i + 1) for i in range(p))
    per_ctx = np.array([cfg.forward_flops_per_token(p + t) for t in range(int(lengths.max()))])
    decode = sum(per_ctx[1:length].sum() for length in lengths)  # the first token is prefill's
    return prefill + float(decode)


def kv_read_bytes(cfg: TransformerConfig, p: int, lengths: np.ndarray) -> float:
    """Cache bytes every useful token must read: token t of a row attends to P + t keys and
    values in every layer (prefill excluded)."""
    per_slot = cfg.num_layers * 2 * cfg.num_kv_heads * cfg.head_dim * jnp.dtype(cfg.dtype).itemsize
    return float(sum(per_slot * (p * (n - 1) + (n - 1) * n / 2) for n in lengths))


def _engines(args, rows: int) -> list[tuple[str, dict]]:
    out = [("dense", {})]
    counts = sorted({min(int(s), rows) or rows for s in args.slots.split(",")})
    out += [(f"continuous/{slots}", dict(num_slots=slots)) for slots in counts]
    if args.naive:
        out.append(("naive", {}))
    return out


def _sampler(label: str):
    if label == "dense":
        return rollout.sample
    if label == "naive":
        return rollout.naive_sample
    return continuous.continuous_sample


def bench(name: str, args, flops_rate: float, bandwidth: float) -> list[dict]:
    sizes = dict(QUICK if args.quick else DEFAULTS[name])
    for k in sizes:
        if getattr(args, k) is not None:
            sizes[k] = getattr(args, k)
    b, k, p, n = sizes["batch"], sizes["num_samples"], sizes["prompt_len"], sizes["max_new"]
    median = sizes["median"]
    spec = dict(MODELS[name])
    cfg = TransformerConfig.preset(spec.pop("preset"), dtype=args.dtype, **spec)
    prompts = np.random.default_rng(0).integers(4, cfg.vocab_size, (b, p), dtype=np.int32)
    lengths = np.full((b,), p, np.int32)
    out = []
    for mode in args.modes.split(","):
        if mode == "mix":
            log_h = lognormal_log_hazard(n, median, args.sigma)
        elif mode == "full":
            log_h = np.full((n + 1,), -np.inf)
        else:
            raise ValueError(f"unknown mode {mode!r} (mix, full)")
        init = jax.jit(lambda log_h=log_h: nnx.split(StopHazard(cfg, log_h, p, rngs=nnx.Rngs(0))))
        graphdef, state = init()
        model = nnx.merge(graphdef, state)
        weight_bytes = sum(
            x.size * x.dtype.itemsize for x in jax.tree.leaves(nnx.state(model, nnx.Param))
        )
        settings = dict(
            max_new_tokens=n, num_samples=k, temperature=1.0, top_p=1.0, eos_ids=(EOS_ID,)
        )
        reference = None
        for label, extra in _engines(args, b * k):
            print(f"  {name} {mode} {label} ...", flush=True)
            fn = _sampler(label)
            call = lambda i, fn=fn, extra=extra, model=model, settings=settings: fn(
                model, prompts, lengths, jax.random.key(i), **settings, **extra
            )
            t0 = time.perf_counter()
            r = call(0)
            r.tokens.block_until_ready()
            first = time.perf_counter() - t0
            times, lens = [], []
            for i in range(args.repeats):
                t0 = time.perf_counter()
                r = call(i + 1)
                r.tokens.block_until_ready()
                times.append(time.perf_counter() - t0)
                lens.append(np.asarray(r.lengths))
            if reference is None:
                reference = lens
            same = all(np.array_equal(a, c) for a, c in zip(lens, reference, strict=True))
            med = float(np.median(times))
            useful = [int(x.sum()) for x in lens]
            flops = float(np.median([useful_flops(cfg, b, p, x) for x in lens]))
            kv_bytes = float(np.median([kv_read_bytes(cfg, p, x) for x in lens]))
            mem_floor = (max(int(x.max()) for x in lens) * weight_bytes + kv_bytes) / bandwidth
            floor = max(flops / flops_rate, mem_floor)
            out.append(
                dict(
                    model=name,
                    mode=mode,
                    engine=label,
                    num_params=cfg.num_params(),
                    dtype=str(cfg.dtype),
                    batch=b,
                    num_samples=k,
                    prompt_len=p,
                    max_new=n,
                    first_call_s=first,
                    median_s=med,
                    times_s=times,
                    useful_tokens=float(np.median(useful)),
                    length_median=float(np.median(np.concatenate(lens))),
                    length_max=int(max(x.max() for x in lens)),
                    same_lengths_as_dense=same,
                    useful_tokens_per_s=float(np.median(useful)) / med,
                    flop_floor_s=flops / flops_rate,
                    mem_floor_s=mem_floor,
                    efficiency=floor / med,
                )
            )
        base = out[-len(_engines(args, b * k))]
        for row in out[-len(_engines(args, b * k)) :]:
            row["speedup_vs_dense"] = base["median_s"] / row["median_s"]
    return out


def _parse():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", default="qwen3_small", help=f"comma list of {sorted(MODELS)}")
    p.add_argument("--modes", default="mix,full", help="comma list of mix, full")
    p.add_argument("--slots", default="16,0", help="continuous engine slot counts (0: one per row)")
    p.add_argument("--batch", type=int, default=None, help="prompts per call (M)")
    p.add_argument("--num-samples", type=int, default=None, help="rollouts per prompt (K)")
    p.add_argument("--prompt-len", type=int, default=None, help="prompt tokens (P)")
    p.add_argument("--max-new", type=int, default=None, help="response cap (N)")
    p.add_argument("--median", type=float, default=None, help="median response length (mix)")
    p.add_argument("--sigma", type=float, default=0.9, help="lognormal sigma (mix)")
    p.add_argument("--repeats", type=int, default=1, help="timed calls after the first")
    p.add_argument("--dtype", default="float32", help="compute dtype (params stay float32)")
    p.add_argument("--naive", action="store_true", help="also time the full-recompute sampler")
    p.add_argument("--quick", action="store_true", help=f"small sizes for every model: {QUICK}")
    p.add_argument("--out", default=str(RESULTS / "rollout_speed.json"))
    return p.parse_args()


def main():
    args = _parse()
    flops_rate, bandwidth = measure_matmul_flops(), measure_bandwidth()
    print(
        f"device: {jax.devices()[0].device_kind} x{jax.device_count()}  "
        f"matmul f32: {flops_rate / 1e9:.1f} GFLOP/s  read bandwidth: {bandwidth / 1e9:.1f} GB/s"
    )
    rows = []
    for name in args.configs.split(","):
        rows.extend(bench(name.strip(), args, flops_rate, bandwidth))
    header = (
        f"{'model':<12}{'mode':<6}{'engine':<16}{'MxK':>6}{'P':>5}{'N':>6}{'len med/max':>12}"
        f"{'median s':>10}{'useful tok/s':>13}{'floor':>7}{'vs dense':>9}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        lens = f"{r['length_median']:.0f}/{r['length_max']}"
        print(
            f"{r['model']:<12}{r['mode']:<6}{r['engine']:<16}{r['batch'] * r['num_samples']:>6}"
            f"{r['prompt_len']:>5}{r['max_new']:>6}{lens:>12}{r['median_s']:>10.2f}"
            f"{r['useful_tokens_per_s']:>13.1f}{r['efficiency']:>7.1%}"
            f"{r['speedup_vs_dense']:>8.2f}x"
        )
        if not r["same_lengths_as_dense"]:
            print("  ^ lengths differ from the dense engine's")
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
        eos_id=EOS_ID,
        temperature=1.0,
        top_p=1.0,
    )
    out.write_text(json.dumps(dict(meta=meta, rows=rows), indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
