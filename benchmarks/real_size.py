"""Real model sizes on this machine: rollout and GRPO-step speed vs floors, and the compiled
memory of the GRPO step at the paper's settings.

Part 1 (``--parts 1``), run for real, random Qwen3-0.6B-shaped weights (param float32, compute
bfloat16, as the trainer keeps them), one process:
  rollout  ``rl.rollout.sample`` (KV cache, on a 1-device mesh): B prompts x K samples, P prompt
           tokens, exactly N new tokens (eos_ids=()), temperature 1, top-p 1.
  learn    the trainer's jitted GRPO step (``rl.steps.make_step_fns(...).learn``, built as
           ``rl/setup.py`` builds it: 1-device mesh, DEFAULT_RULES, AdamW from
           ``grpo.make_optimizer``, the InSight scorer) on that rollout: group advantages, one
           minibatch (all B*K rows) -> one AdamW update, belief update and O(M) rescore.
  Compile time is reported apart from run time (medians of --repeats runs after the first).
  Floors, from rates measured in this run (before and after part 1; the better of the two,
  since other jobs share the cores):
    matmul rate   FLOP/s of jnp.dot [m, k] x [k, n] at the model's (k, n) (q/o, k/v, gate/up,
                  down, lm head), m = tokens of the learn step; time-weighted over the shapes
                  (total FLOPs / total time). Variants: bf16 -> bf16 (what the model's Linear
                  layers call), bf16 -> f32 (preferred_element_type=float32, as the lm head),
                  f32. The machine's bf16 rate is the faster bf16 variant; the decode m (B*K
                  rows) is reported for information.
    bandwidth     bytes/s of a jitted sum over a 1 GiB float32 array (read) and of an in-place
                  x + 1 (read + write, counted as 2x the bytes).
    decode floor  per model call (prefill, then each of the N - 1 decode steps):
                  max(useful FLOPs / bf16 matmul rate, parameter bytes / read bandwidth); the
                  parameters are read as stored (float32 or bfloat16).
    update floor  3 x forward FLOPs (forward + backward) / bf16 matmul rate. The AdamW update's
                  memory traffic (read grad, param, mu, nu; write param, mu, nu: 28 bytes per
                  float32 parameter) / read bandwidth is reported beside it.
  Useful FLOPs use ``TransformerConfig.forward_flops_per_token`` with the causal context of each
  token; prefill runs the lm head on the last prompt token only (``last_only``).

Part 2 (``--parts 2``), compiled only: the same ``learn`` step lowered with ShapeDtypeStruct
inputs at the paper's settings: Qwen3-0.6B (param f32, compute bf16, AdamW with weight decay
0.1, entropy bonus 0.001, lr 1e-6), M = 256 prompts x K = 8 = 2048 sequences, prompt 256 +
1024 response tokens, minibatches of 64 sequences (num_minibatches = 32).
``.compile().memory_analysis()`` gives temp / argument / output / alias bytes per configuration
(logits_chunk x remat x scan_layers), with lower and compile times; a depth sweep shows the
compile time of scanned vs unrolled layers.

Usage (the full run takes about 10 minutes on 2 idle cores; --quick about 1.5):
  python benchmarks/real_size.py
  python benchmarks/real_size.py --quick          # tiny shapes, seconds: checks that it runs
  python benchmarks/real_size.py --parts 2 --chunks 0,128

Writes benchmarks/results/real_size.json and prints tables.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from insight_jax import sharding as shd
from insight_jax.models.transformer import Transformer, TransformerConfig
from insight_jax.rl import rollout as rollout_lib
from insight_jax.rl.grpo import GRPOConfig, make_optimizer
from insight_jax.rl.rollout import Rollout
from insight_jax.rl.state import TrainState
from insight_jax.rl.steps import StepSettings, make_step_fns, train_state_shardings
from insight_jax.selection import get_scorer, init_beliefs, init_scores

RESULTS = Path(__file__).resolve().parent / "results"
GB = 1e9

# The paper's GRPO settings (rl/base_config.py comment: MoPPS / verl for 0.6B-7B models).
PAPER = dict(learning_rate=1e-6, weight_decay=0.1, entropy_coef=0.001, grad_clip=1.0)

# Small shapes for --quick: the same code paths in seconds.
QUICK_MODEL = dict(
    vocab_size=512, num_layers=2, embed_dim=128, num_heads=4, num_kv_heads=2, head_dim=32,
    mlp_dim=256,
)  # fmt: skip


def _parse():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny shapes: check that it runs")
    p.add_argument("--parts", default="1,2")
    p.add_argument("--preset", default="qwen3_0_6b")
    p.add_argument("--layers", type=int, default=None, help="part 1: fewer layers (default all)")
    p.add_argument(
        "--runs",
        default="unrolled:float32,unrolled:bfloat16,scanned:float32",
        help="part 1: layout:param_dtype list (layout unrolled|scanned); float32 runs also "
        "time the learn step",
    )
    p.add_argument("--batch", type=int, default=2, help="part 1: prompts B")
    p.add_argument("--num-samples", type=int, default=2, help="part 1: K")
    p.add_argument("--prompt-len", type=int, default=64)
    p.add_argument("--max-new", type=int, default=32)
    p.add_argument("--repeats", type=int, default=2)
    # Part 2: the paper's step.
    p.add_argument("--m", type=int, default=256, help="part 2: prompts per step")
    p.add_argument("--k", type=int, default=8, help="part 2: rollouts per prompt")
    p.add_argument("--p2-prompt", type=int, default=256)
    p.add_argument("--p2-response", type=int, default=1024)
    p.add_argument("--minibatch", type=int, default=64, help="part 2: sequences per update")
    p.add_argument("--chunks", default="0,512,256")
    p.add_argument("--remats", default="none,full,dots")
    p.add_argument("--depths", default="2,8,28", help="part 2: compile-time sweep over layers")
    p.add_argument("--out", default=str(RESULTS / "real_size.json"))
    args = p.parse_args()
    if args.quick:
        args.batch, args.num_samples, args.prompt_len, args.max_new = 2, 2, 8, 4
        args.m, args.k, args.p2_prompt, args.p2_response, args.minibatch = 8, 2, 16, 32, 4
        args.chunks, args.remats, args.depths, args.repeats = "0,8", "none,full", "1,2", 1
    return args


def _model_config(args, **overrides) -> TransformerConfig:
    base = dict(QUICK_MODEL) if args.quick else {}
    if args.layers is not None and "num_layers" not in overrides:
        base["num_layers"] = args.layers
    return TransformerConfig.preset(args.preset, **{**base, **overrides})


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def _median_runs(fn, repeats: int) -> tuple[float, list[float]]:
    """(median seconds, all) of ``repeats`` calls of fn(i) (each must block)."""
    times = []
    for i in range(repeats):
        _, t = _timed(lambda i=i: fn(i))
        times.append(t)
    return float(np.median(times)), times


# ----------------------------------------------------------------------------------------------
# Machine floors
# ----------------------------------------------------------------------------------------------


def model_matmul_shapes(cfg: TransformerConfig) -> list[tuple[str, int, int, int]]:
    """(name, k, n, count per forward token) of the weight matmuls of one forward pass."""
    e, h, kv, d, f = cfg.embed_dim, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.mlp_dim
    layers = cfg.num_layers
    return [
        ("q_proj", e, h * d, layers),
        ("k_v_proj", e, kv * d, 2 * layers),
        ("o_proj", h * d, e, layers),
        ("gate_up_proj", e, f, 2 * layers),
        ("down_proj", f, e, layers),
        ("lm_head", e, cfg.vocab_size, 1),
    ]


# The matmul variants timed: (input dtype, output dtype). bf16 -> bf16 is what the model's
# Linear layers call (lax.dot_general without preferred_element_type); bf16 -> f32 is the tied
# lm head's einsum (preferred_element_type=float32), which XLA:CPU may run on another kernel.
MATMUL_VARIANTS = {
    "bf16": (jnp.bfloat16, None),
    "bf16_f32acc": (jnp.bfloat16, jnp.float32),
    "f32": (jnp.float32, None),
}


def measure_matmul_rate(cfg: TransformerConfig, m: int, variant: str, repeats: int = 5) -> dict:
    """FLOP/s of [m, k] x [k, n] jnp.dot per model shape, and the time-weighted rate of one
    forward's matmuls: sum(count * 2 m k n) / sum(count * median time)."""
    dtype, out_dtype = MATMUL_VARIANTS[variant]
    per_shape, flops, seconds = {}, 0.0, 0.0
    dot = jax.jit(lambda a, b: jnp.dot(a, b, preferred_element_type=out_dtype))
    for name, k, n, count in model_matmul_shapes(cfg):
        a = jax.random.normal(jax.random.key(0), (m, k), dtype)
        b = jax.random.normal(jax.random.key(1), (k, n), dtype)
        dot(a, b).block_until_ready()  # compile
        med, _ = _median_runs(lambda i, a=a, b=b: dot(a, b).block_until_ready(), repeats)
        per_shape[f"{name}[{m},{k}]x[{k},{n}]"] = 2.0 * m * k * n / med
        flops += count * 2.0 * m * k * n
        seconds += count * med
    return dict(rate=flops / seconds, per_shape=per_shape)


def measure_bandwidth(num_bytes: int = 1 << 30, repeats: int = 5) -> dict:
    """Read bandwidth (jitted sum of a float32 array) and copy bandwidth (x + 1 written in
    place over the donated input, so no fresh pages are faulted in: read + write, 2 * bytes
    moved), bytes/s."""
    x = jnp.ones((num_bytes // 4,), jnp.float32)
    total = jax.jit(jnp.sum)
    bump = jax.jit(lambda x: x + 1.0, donate_argnums=0)
    total(x).block_until_ready()
    read_s, _ = _median_runs(lambda i: total(x).block_until_ready(), repeats)
    holder = [bump(x)]

    def copy(i):
        holder[0] = bump(holder[0]).block_until_ready()

    copy_s, _ = _median_runs(copy, repeats)
    return dict(read=num_bytes / read_s, copy=2 * num_bytes / copy_s, array_bytes=num_bytes)


def body_flops(cfg: TransformerConfig, context: int) -> float:
    """forward_flops_per_token without the lm head (2 E V)."""
    return cfg.forward_flops_per_token(context) - 2.0 * cfg.embed_dim * cfg.vocab_size


def rollout_floor(cfg, b, k, p, n, param_bytes, rate, bandwidth) -> dict:
    """Sum over the N model calls of max(FLOPs / rate, param_bytes / bandwidth).

    Call 0 (prefill): B rows of P tokens (token i sees i + 1 keys), lm head on the last token.
    Call t = 1 .. N - 1 (decode): B K rows, one token seeing P + t keys.
    """
    head = 2.0 * cfg.embed_dim * cfg.vocab_size
    calls = [b * (sum(body_flops(cfg, i + 1) for i in range(p)) + head)]
    calls += [b * k * cfg.forward_flops_per_token(p + t) for t in range(1, n)]
    mem = param_bytes / bandwidth
    return dict(
        useful_flops=sum(calls),
        flop_floor_s=sum(c / rate for c in calls),
        mem_floor_s=mem * len(calls),
        floor_s=sum(max(c / rate, mem) for c in calls),
    )


def forward_flops(cfg, rows: int, length: int) -> float:
    """Training forward of ``token_logprobs``: every token of [rows, length] sequences through
    the body (causal context i + 1), the lm head on length - 1 positions."""
    head = 2.0 * cfg.embed_dim * cfg.vocab_size
    return rows * (sum(body_flops(cfg, i + 1) for i in range(length)) + (length - 1) * head)


# ----------------------------------------------------------------------------------------------
# The learn step, built as rl/setup.py builds it
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LearnStep:
    learn: object  # the jitted learn(state, batch)
    init: object  # model state -> TrainState (jitted, laid out as the learn step expects)
    abstract_state: TrainState  # ShapeDtypeStructs with shardings
    mesh: jax.sharding.Mesh
    graphdef: nnx.GraphDef


def build_learn_step(
    cfg: TransformerConfig, *, m: int, k: int, num_minibatches: int, num_items: int
) -> LearnStep:
    mesh = shd.make_mesh((1,) * len(shd.DEFAULT_MESH_AXES), devices=jax.devices()[:1])
    rules = shd.DEFAULT_RULES
    graphdef, abstract_model, model_sh = shd.abstract_sharded_state(Transformer, cfg, mesh, rules)
    scorer = get_scorer("insight", num_rollouts=k)
    grpo = GRPOConfig(
        clip_low=0.2,
        clip_high=0.28,
        aggregation="token_mean",
        kl_coef=0.0,
        kl_kind="k3",
        entropy_coef=PAPER["entropy_coef"],
        normalize_std=True,
        num_minibatches=num_minibatches,
        num_ppo_epochs=1,
    )
    opt = make_optimizer(
        PAPER["learning_rate"], weight_decay=PAPER["weight_decay"], grad_clip=PAPER["grad_clip"]
    )
    pool_sharding = shd.logical_to_sharding(("pool",), mesh, rules)

    def init(model_state) -> TrainState:
        beliefs = init_beliefs(num_items, sharding=pool_sharding)
        return TrainState(
            model=model_state,
            opt=opt.init(model_state),
            beliefs=beliefs,
            scores=init_scores(beliefs, scorer),
            ref_model=None,
            rng=jax.random.key_data(jax.random.key(0)),
            step=jnp.zeros((), jnp.int32),
        )

    abstract = jax.eval_shape(init, abstract_model)
    state_sh = train_state_shardings(abstract, model_sh, opt, mesh, pool_sharding)
    settings = StepSettings(
        batch_size=m,
        num_candidates=min(16 * m, num_items),
        num_rollouts=k,
        num_items=num_items,
        num_train=num_items,
        warm_batch_size=m,
        dynamic_sampling_rounds=0,
        decay=1.0,
        skip=None,
        success_threshold=1.0,
        temperature=1.0,
        grpo=grpo,
    )
    # One device: the pool is not split, so there is no Shard (setup.py's pool_shard -> None).
    fns = make_step_fns(graphdef, state_sh, mesh, rules, opt, opt, scorer, None, settings)
    abstract_state = jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, state_sh
    )
    return LearnStep(
        learn=fns.learn,
        init=jax.jit(init, out_shardings=state_sh, donate_argnums=0),
        abstract_state=abstract_state,
        mesh=mesh,
        graphdef=graphdef,
    )


def prompt_fields(rewards: np.ndarray) -> dict[str, np.ndarray]:
    """The per-prompt learner inputs (steps.PROMPT_FIELDS) for prompts 0 .. M - 1."""
    m = rewards.shape[0]
    successes = (rewards >= 1.0).sum(axis=1).astype(np.float32)
    idx = np.arange(m, dtype=np.int32)
    return {
        "rewards": rewards.astype(np.float32),
        "successes": successes,
        "indices": idx,
        "seen_indices": idx,
        "seen_successes": successes,
        "seen_valid": np.ones(m, bool),
    }


def abstract_batch(m: int, k: int, p: int, n: int) -> dict:
    """ShapeDtypeStructs of the learner batch (a Rollout of M K rows + per-prompt fields)."""
    rows = m * k
    sds = jax.ShapeDtypeStruct
    ro = Rollout(
        tokens=sds((rows, n), jnp.int32),
        logprobs=sds((rows, n), jnp.float32),
        mask=sds((rows, n), bool),
        lengths=sds((rows,), jnp.int32),
        finished=sds((rows,), bool),
        sequences=sds((rows, p + n), jnp.int32),
        sequence_mask=sds((rows, p + n), bool),
        prompt_len=p,
    )
    fields = jax.tree.map(lambda x: sds(x.shape, x.dtype), prompt_fields(np.zeros((m, k))))
    return {"rollout": ro, **fields}


# ----------------------------------------------------------------------------------------------
# Part 1: rollout and learn step, run
# ----------------------------------------------------------------------------------------------


def random_state(cfg):
    """(graphdef, state) of Transformer(cfg), every parameter drawn from normal(0,
    cfg.init_std) tensor by tensor with NumPy (norm scales too: speed does not depend on the
    values). A jitted init of the whole model would hold every tensor's random bits and
    float32 draws at once (``jitted_init_memory`` measures it) and, with threefry on 2 cores,
    take ~40 s per model."""
    graphdef, abstract = nnx.split(nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0))))
    rng = np.random.default_rng(0)

    def draw(sds):
        x = rng.standard_normal(sds.shape, dtype=np.float32)
        x *= cfg.init_std
        return jnp.asarray(x.astype(sds.dtype))

    (graphdef, state), seconds = _timed(
        lambda: (graphdef, jax.block_until_ready(jax.tree.map(draw, abstract)))
    )
    return graphdef, state, seconds


def jitted_init_memory(cfg) -> dict:
    """Compiled (not run) memory of one jitted init of the whole model, as rl/setup.py's init
    and benchmarks/rollout_speed.py create random models."""
    init = jax.jit(lambda: nnx.split(Transformer(cfg, rngs=nnx.Rngs(0)))[1])
    compiled, compile_s = _timed(lambda: init.lower().compile())
    ma = compiled.memory_analysis()
    return dict(
        temp_bytes=ma.temp_size_in_bytes, output_bytes=ma.output_size_in_bytes, compile_s=compile_s
    )


def _state_bytes(tree) -> int:
    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))


def bench_rollout(cfg, args, graphdef, state, mesh) -> tuple[dict, Rollout]:
    b, k, p, n = args.batch, args.num_samples, args.prompt_len, args.max_new
    model = nnx.merge(graphdef, state)
    rng = np.random.default_rng(0)
    prompts = rng.integers(4, cfg.vocab_size, (b, p), dtype=np.int32)
    lengths = np.full((b,), p, np.int32)
    settings = dict(max_new_tokens=n, num_samples=k, temperature=1.0, top_p=1.0, eos_ids=())

    def run(i):
        r = rollout_lib.sample(model, prompts, lengths, jax.random.key(i), mesh=mesh, **settings)
        return jax.block_until_ready(r)

    first, first_s = _timed(lambda: run(0))  # compile + run
    med, times = _median_runs(lambda i: run(i + 1), args.repeats)
    row = dict(
        phase="rollout",
        B=b,
        K=k,
        P=p,
        N=n,
        first_call_s=first_s,
        compile_s=first_s - med,
        median_s=med,
        times_s=times,
        tokens_per_s=b * k * n / med,
    )
    return row, first


def bench_learn(cfg, args, graphdef, state, ro: Rollout) -> dict:
    """The learn step on rollout ``ro``; takes over (donates) ``state``."""
    b, k = args.batch, args.num_samples
    step = build_learn_step(cfg, m=b, k=k, num_minibatches=1, num_items=max(64, 16 * b))
    train_state = step.init(state)
    rewards = np.zeros((b, k), np.float32)
    rewards[:, 0] = 1.0  # every group mixed: non-zero advantages, a real gradient
    batch = {"rollout": ro} | jax.device_put(prompt_fields(rewards), shd.replicated(step.mesh))
    lowered, lower_s = _timed(lambda: step.learn.lower(train_state, batch))
    compiled, compile_s = _timed(lowered.compile)
    holder = {"state": train_state}

    def run(i):
        # The state is donated: thread each call's output into the next.
        new, metrics = compiled(holder["state"], batch)
        holder["state"], holder["metrics"] = jax.block_until_ready(new), jax.device_get(metrics)

    med, times = _median_runs(run, args.repeats)  # compiled ahead: every run is timed
    metrics = holder["metrics"]
    rows, length = ro.sequences.shape
    return dict(
        phase="learn",
        rows=rows,
        length=length,
        num_minibatches=1,
        lower_s=lower_s,
        compile_s=compile_s,
        median_s=med,
        times_s=times,
        loss=float(metrics["loss"]),
        grad_norm=float(metrics["grad_norm"]),
    )


def add_floors(row: dict, cfg: TransformerConfig, rates: dict, bandwidth: float) -> dict:
    """The row's floors (module docstring) at the given rates, and the fraction achieved."""
    if row["phase"] == "rollout":
        b, k, p, n = row["B"], row["K"], row["P"], row["N"]
        floor = rollout_floor(cfg, b, k, p, n, row["param_bytes"], rates["bf16"], bandwidth)
        return dict(
            row,
            **floor,
            floor_tokens_per_s=b * k * n / floor["floor_s"],
            fraction_of_floor=floor["floor_s"] / row["median_s"],
        )
    fwd = forward_flops(cfg, row["rows"], row["length"])
    flop_floor = 3.0 * fwd / rates["bf16"]
    adam_floor = 28.0 * cfg.num_params() / bandwidth
    return dict(
        row,
        forward_flops=fwd,
        update_floor_s=flop_floor,
        adam_traffic_floor_s=adam_floor,
        fraction_of_floor=flop_floor / row["median_s"],
        fraction_of_floor_with_adam=(flop_floor + adam_floor) / row["median_s"],
    )


def part1_configs(args) -> list[tuple[str, TransformerConfig]]:
    out = []
    for run in args.runs.split(","):
        layout, _, pd = run.partition(":")
        if layout not in ("unrolled", "scanned") or pd not in ("float32", "bfloat16"):
            raise ValueError(
                f"--runs entry {run!r}: expected layout:param_dtype with layout unrolled|scanned "
                "and param_dtype float32|bfloat16"
            )
        scan = layout == "scanned"
        out.append(
            (layout, _model_config(args, dtype="bfloat16", param_dtype=pd, scan_layers=scan))
        )
    return out


def part1(args, configs) -> list[tuple[TransformerConfig, dict]]:
    """(config, measured row) per phase; floors are added later."""
    rows = []
    mesh = shd.make_mesh((1,) * len(shd.DEFAULT_MESH_AXES), devices=jax.devices()[:1])
    for layout, cfg in configs:
        graphdef, state, init_s = random_state(cfg)
        common = dict(
            layout=layout,
            num_layers=cfg.num_layers,
            param_dtype=str(cfg.param_dtype),
            param_bytes=_state_bytes(state),
            init_s=init_s,
        )
        row, ro = bench_rollout(cfg, args, graphdef, state, mesh)
        rows.append((cfg, {**common, **row}))
        print(_fmt_part1(rows[-1][1]), flush=True)
        if cfg.param_dtype == jnp.float32:  # the trainer's layout: f32 master weights
            rows.append((cfg, {**common, **bench_learn(cfg, args, graphdef, state, ro)}))
            print(_fmt_part1(rows[-1][1]), flush=True)
        del state, ro
    return rows


def measure_floors(args, cfg) -> dict:
    m_learn = args.batch * args.num_samples * (args.prompt_len + args.max_new)
    m_decode = args.batch * args.num_samples
    out = dict(m_learn=m_learn, m_decode=m_decode)
    for variant in MATMUL_VARIANTS:
        out[f"matmul_{variant}"] = measure_matmul_rate(cfg, m_learn, variant)
    for variant in ("bf16", "bf16_f32acc"):
        out[f"matmul_{variant}_decode"] = measure_matmul_rate(cfg, m_decode, variant)
    out["bandwidth"] = measure_bandwidth(1 << 24 if args.quick else 1 << 30)
    return out


def _fmt_floors(f: dict) -> str:
    g = lambda key: f"{f[key]['rate'] / GB:.0f}"
    return (
        f"matmul GFLOP/s (model shapes, time-weighted) at m={f['m_learn']}: bf16 "
        f"{g('matmul_bf16')}, bf16->f32 {g('matmul_bf16_f32acc')}, f32 {g('matmul_f32')}; at "
        f"m={f['m_decode']}: bf16 {g('matmul_bf16_decode')}, bf16->f32 "
        f"{g('matmul_bf16_f32acc_decode')}; read {f['bandwidth']['read'] / GB:.1f} GB/s, copy "
        f"{f['bandwidth']['copy'] / GB:.1f} GB/s"
    )


def _fmt_part1(r: dict) -> str:
    if r["phase"] == "rollout":
        shape = f"{r['B']}x{r['K']} P{r['P']} N{r['N']}"
        rate = f"{r['tokens_per_s']:.1f} tok/s"
        if "floor_s" in r:
            rate += f" (floor {r['floor_tokens_per_s']:.1f})"
    else:
        shape = f"{r['rows']} x {r['length']} tok"
        rate = ""
        if "update_floor_s" in r:
            rate = f"floor {r['update_floor_s']:.2f}s (+adam {r['adam_traffic_floor_s']:.2f}s)"
    frac = f"{r['fraction_of_floor']:>7.1%}" if "fraction_of_floor" in r else ""
    return (
        f"{r['phase']:<8}{r['layout']:<10}{r['num_layers']:>4}  {r['param_dtype']:<9}"
        f"{shape:<16}{r['compile_s']:>9.1f}{r['median_s']:>9.2f}  {rate:<36}{frac}"
    )


# ----------------------------------------------------------------------------------------------
# Part 2: compiled memory at the paper's settings
# ----------------------------------------------------------------------------------------------


def compile_memory(args, *, layers: int, scan: bool, remat: str, chunk: int) -> dict:
    cfg = _model_config(
        args,
        num_layers=layers,
        dtype="bfloat16",
        param_dtype="float32",
        scan_layers=scan,
        remat=remat,
        logits_chunk=chunk,
    )
    rows = args.m * args.k
    step = build_learn_step(
        cfg, m=args.m, k=args.k, num_minibatches=rows // args.minibatch, num_items=4 * args.m
    )
    batch = abstract_batch(args.m, args.k, args.p2_prompt, args.p2_response)
    lowered, lower_s = _timed(lambda: step.learn.lower(step.abstract_state, batch))
    compiled, compile_s = _timed(lowered.compile)
    ma = compiled.memory_analysis()
    out = dict(
        num_layers=layers,
        scan_layers=scan,
        remat=remat,
        logits_chunk=chunk,
        lower_s=lower_s,
        compile_s=compile_s,
        temp_bytes=ma.temp_size_in_bytes,
        argument_bytes=ma.argument_size_in_bytes,
        output_bytes=ma.output_size_in_bytes,
        alias_bytes=ma.alias_size_in_bytes,
        generated_code_bytes=ma.generated_code_size_in_bytes,
    )
    # Arguments and outputs share the donated (aliased) state: count it once.
    out["total_bytes"] = out["argument_bytes"] + out["output_bytes"] - out["alias_bytes"]
    out["total_bytes"] += out["temp_bytes"]
    return out


def part2(args) -> dict:
    full_cfg = _model_config(args, dtype="bfloat16")
    layers = full_cfg.num_layers
    length = args.p2_prompt + args.p2_response
    v, mb = full_cfg.vocab_size, args.minibatch
    sizes = dict(
        full_logits_f32_bytes=mb * length * v * 4,  # [mb, P + N, V] (the brief's ~50 GB)
        full_logits_used_f32_bytes=mb * (length - 1) * v * 4,  # token_logprobs: L - 1 positions
        attention_scores_f32_bytes_per_layer=mb * full_cfg.num_heads * length * length * 4,
        layer_input_bf16_bytes=mb * length * full_cfg.embed_dim * 2,
    )
    rows = []
    grid = [(c, r) for c in map(int, args.chunks.split(",")) for r in args.remats.split(",")]
    for chunk, remat in grid:
        rows.append(compile_memory(args, layers=layers, scan=True, remat=remat, chunk=chunk))
        print(_fmt_part2(rows[-1], sizes), flush=True)
    depth_chunk = max(map(int, args.chunks.split(",")))
    depth_rows = []
    for depth in map(int, args.depths.split(",")):
        for scan in (False, True):
            if scan and depth == layers:  # already in the grid
                depth_rows.append(
                    next(
                        r for r in rows if r["remat"] == "full" and r["logits_chunk"] == depth_chunk
                    )
                )
                continue
            depth_rows.append(
                compile_memory(args, layers=depth, scan=scan, remat="full", chunk=depth_chunk)
            )
            print(_fmt_part2(depth_rows[-1], sizes), flush=True)
    return dict(sizes=sizes, grid=rows, depth_sweep=depth_rows)


def part2_conclusion(p2: dict) -> str:
    """One sentence on chunking vs the full logits, from the full-depth grid."""
    full = p2["sizes"]["full_logits_f32_bytes"]
    chunked = [r for r in p2["grid"] if r["logits_chunk"] > 0]
    unchunked = [r for r in p2["grid"] if r["logits_chunk"] == 0]
    if not chunked or not unchunked:
        return "no chunked / unchunked pair in the grid"
    best = min(chunked, key=lambda r: r["temp_bytes"])
    best0 = min(unchunked, key=lambda r: r["temp_bytes"])
    verdict = "below" if best["temp_bytes"] < full else "NOT below"
    return (
        f"smallest temp with chunking: {best['temp_bytes'] / GB:.1f} GB (logits_chunk "
        f"{best['logits_chunk']}, remat {best['remat']}, scanned), {verdict} the "
        f"{full / GB:.1f} GB of the full float32 logits; without chunking at least "
        f"{best0['temp_bytes'] / GB:.1f} GB (remat {best0['remat']})"
    )


def _fmt_part2(r: dict, sizes: dict) -> str:
    below = "yes" if r["temp_bytes"] < sizes["full_logits_f32_bytes"] else "no"
    return (
        f"{r['num_layers']:>4} {'scan' if r['scan_layers'] else 'loop':<7}{r['remat']:<6}"
        f"{r['logits_chunk']:>6}{r['lower_s']:>8.1f}{r['compile_s']:>10.1f}"
        f"{r['temp_bytes'] / GB:>10.4g}{r['argument_bytes'] / GB:>9.4g}"
        f"{r['output_bytes'] / GB:>9.4g}{r['alias_bytes'] / GB:>9.4g}"
        f"{r['total_bytes'] / GB:>10.4g}   {below}"
    )


PART2_HEADER = (
    f"{'L':>4} {'layers':<7}{'remat':<6}{'chunk':>6}{'lower s':>8}{'compile s':>10}"
    f"{'temp GB':>10}{'arg GB':>9}{'out GB':>9}{'alias GB':>9}{'total GB':>10}   temp<logits"
)
PART1_HEADER = (
    f"{'phase':<8}{'layout':<10}{'L':>4}  {'params':<9}{'shape':<16}{'compile s':>9}"
    f"{'median s':>9}  {'rate':<36}{'of floor':>7}"
)


def main():
    args = _parse()
    t_start = time.perf_counter()
    parts = {int(x) for x in args.parts.split(",")}
    meta = dict(
        device=jax.devices()[0].device_kind,
        device_count=jax.device_count(),
        platform=platform.platform(),
        jax_version=jax.__version__,
        argv=sys.argv[1:],
        quick=args.quick,
        preset=args.preset,
        paper_settings=PAPER,
        # Other jobs share the 2 cores: the load average says how much.
        loadavg_start=os.getloadavg(),
    )
    out = dict(meta=meta)
    if 1 in parts:
        cfg = _model_config(args, dtype="bfloat16")
        init_mem = jitted_init_memory(cfg)
        print(
            f"one jitted init of the whole model (param f32), compiled only: temp "
            f"{init_mem['temp_bytes'] / GB:.2f} GB for {init_mem['output_bytes'] / GB:.2f} GB of "
            "parameters",
            flush=True,
        )
        t0 = time.perf_counter()
        floors_before = measure_floors(args, cfg)
        print(f"device: {meta['device']}  before: {_fmt_floors(floors_before)}", flush=True)
        print(PART1_HEADER)
        print("-" * len(PART1_HEADER))
        measured = part1(args, part1_configs(args))
        floors_after = measure_floors(args, cfg)
        print(f"after: {_fmt_floors(floors_after)}")
        # Other jobs share the cores: the better of the two measurements is the floor.
        # The machine's bf16 rate: the faster bf16 kernel (accumulating in f32 or not).
        both = (floors_before, floors_after)
        rates = {
            "bf16": max(f[f"matmul_{v}"]["rate"] for f in both for v in ("bf16", "bf16_f32acc")),
            "f32": max(f["matmul_f32"]["rate"] for f in both),
        }
        read_bw = max(f["bandwidth"]["read"] for f in (floors_before, floors_after))
        rows = [add_floors(r, c, rates, read_bw) for c, r in measured]
        print(
            f"\nfloors from the better of before / after: bf16 {rates['bf16'] / GB:.0f} GFLOP/s, "
            f"read {read_bw / GB:.1f} GB/s"
        )
        print(PART1_HEADER)
        print("-" * len(PART1_HEADER))
        for r in rows:
            print(_fmt_part1(r))
        out["part1"] = dict(
            floors_before=floors_before,
            floors_after=floors_after,
            floor_rates=dict(matmul=rates, read_bandwidth=read_bw),
            jitted_init=init_mem,
            rows=rows,
            wall_s=time.perf_counter() - t0,
        )
    if 2 in parts:
        print(
            f"\npart 2: compiled learn step, M={args.m} x K={args.k} = {args.m * args.k} "
            f"sequences of {args.p2_prompt}+{args.p2_response} tokens, minibatches of "
            f"{args.minibatch} ({args.m * args.k // args.minibatch} updates), param f32 / "
            "compute bf16; not run"
        )
        print(PART2_HEADER)
        print("-" * len(PART2_HEADER))
        t0 = time.perf_counter()
        out["part2"] = part2(args)
        out["part2"]["wall_s"] = time.perf_counter() - t0
        sizes = out["part2"]["sizes"]
        print(
            f"full logits [{args.minibatch}, {args.p2_prompt + args.p2_response}, V] f32: "
            f"{sizes['full_logits_f32_bytes'] / GB:.1f} GB; attention scores of one layer "
            f"[{args.minibatch}, H, L, L] f32: "
            f"{sizes['attention_scores_f32_bytes_per_layer'] / GB:.1f} GB"
        )
        out["part2"]["conclusion"] = conclusion = part2_conclusion(out["part2"])
        print(conclusion)
    meta["wall_s"] = time.perf_counter() - t_start
    meta["loadavg_end"] = os.getloadavg()
    print(
        f"total wall time {meta['wall_s']:.0f} s (load average at start "
        f"{meta['loadavg_start'][0]:.1f}, at end {meta['loadavg_end'][0]:.1f})"
    )
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
