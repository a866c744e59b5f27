"""Ahead-of-time compile check: does a config's training fit a named TPU slice?

On any machine (this CPU included, with libtpu installed: `pip install "jax[tpu]==0.10.2"`),
builds the devices of a TPU topology (jax.experimental.topologies), a mesh over them from the
config's mesh.shape / mesh.axes, the abstract sharded TrainState, and lowers + compiles, with
ShapeDtypeStruct inputs only (no weights, no data, nothing runs), the steps a run executes:

  select       the selection step (DAPO's uniform draw when selection.dynamic_sampling_rounds)
  rollout      K completions of rl.batch_size prompts (the run's rollout engine)
  learn        THE learner step (GRPO epochs, belief update, rescore)
  eval         the held-out sampler on one eval.batch_size batch (when eval.batch_size > 0)
  warm_start   one supervised step (when warmstart.steps > 0)

The step functions and their shardings come from insight_jax.rl.setup.build_steps, the same
function the trainer's setup.build calls, so what is compiled here is what a run compiles.

Per step it prints the compiled per-device memory (arguments, outputs, temporaries, peak) and
the TrainState the step does not take but that stays resident meanwhile (a rollout takes only
the model; the optimizer state and beliefs stay in HBM), against the chip's HBM, and the XLA
cost analysis' FLOPs per device.

  python launch/aot_check.py --config=configs/qwen3_0_6b_countdown.py --topology=v5e:2x4 \\
      --model_preset=qwen3_0_6b
  python launch/aot_check.py --config=configs/countdown_tiny.py:smoke --topology=v5e:2x2 \\
      --config.task.max_prompt_len=16

The model's shape: `--model_preset` (a TransformerConfig preset; the paper configs name
checkpoint folders that need not exist where the check runs), else model.path/config.json
(only that file is read), else the config's preset. The prompt length is task.max_prompt_len
(no data is read; the paper configs set it). The RL pool size N: --num_items, else
task.rl_pool_size, else the rows task.train_path selects (counted if the file is here, else
the length of its [start:stop] slice), else task.num_train of a generated task.

Exit status: 0 every step fits, 1 some step does not fit (the compiler ran out of HBM, or
peak + resident state exceeds it), 2 bad arguments (flags, config, topology, or a config the
topology's mesh cannot split), 3 a compile error that is not a lack of memory.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import sys
from pathlib import Path

if __name__ == "__main__":
    # libtpu would look for a local TPU, and the check needs only its compiler. (configs/ and
    # the package import from anywhere once installed: pip install -e .)
    os.environ.setdefault("JAX_PLATFORMS", "cpu")

# libtpu takes a machine-wide lock (/tmp/libtpu_lockfile) for the chips it drives; a compile
# for a described topology drives none, so checks (and tests) may run side by side.
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")

import jax
import jax.numpy as jnp
import ml_collections
from absl import flags
from jax.experimental import mesh_utils, topologies
from ml_collections import config_flags

from insight_jax import sharding as shd
from insight_jax.models import hf
from insight_jax.models.transformer import PRESETS, TransformerConfig
from insight_jax.rl.policy import NUMERIC_KEYS, policy_from_config
from insight_jax.rl.rollout import Rollout
from insight_jax.rl.setup import Steps, build_steps
from insight_jax.rl.validate import as_rules
from insight_jax.tasks.loaders import count_rows, parse_path_spec

GIB = 1 << 30

# HBM per chip, GiB, from Google Cloud's TPU system-architecture pages
# (cloud.google.com/tpu/docs/v4, /v5e, /v5p, /v6e: "HBM2 capacity 32 GiB" (v4), "16 GiB"
# (v5e), "95 GiB" (v5p), "32 GiB" (v6e Trillium)).
HBM_GIB = {"v4": 32, "v5e": 16, "v5p": 95, "v6e": 32}
# v4's two TensorCores per chip act as one device (megacore), as a v4 slice runs by default.
CHIP_CONFIG = {"v4": "megacore"}

EXIT_FITS, EXIT_DOES_NOT_FIT, EXIT_BAD_ARGS, EXIT_COMPILE_ERROR = 0, 1, 2, 3

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Path to a config file [:args].", lock_config=True)
flags.DEFINE_string("topology", None, "TPU topology, GENERATION:AxB[xC], e.g. v5e:4x4, v4:2x2x1.")
flags.DEFINE_integer("num_slices", 1, "Slices joined over the data-center network (DCN).")
flags.DEFINE_string(
    "model_preset", "", f"Model shape from a preset instead of model.path ({', '.join(PRESETS)})."
)
flags.DEFINE_integer("num_items", 0, "RL pool size N (0: from the config, see the docstring).")
flags.DEFINE_string("json_out", "", "Also write the report as JSON to this file.")


class UsageError(ValueError):
    """A bad flag, config value or topology (exit status 2)."""


# ----------------------------------------------------------------------------------------------
# Topology, mesh, model shape
# ----------------------------------------------------------------------------------------------


def parse_topology(name: str) -> tuple[str, tuple[int, ...]]:
    """ "v5e:4x4" -> ("v5e", (4, 4)); UsageError naming the allowed form otherwise."""
    match = re.fullmatch(r"(v[0-9a-z]+):([1-9][0-9]*(?:x[1-9][0-9]*){1,2})", name or "")
    if not match or match.group(1) not in HBM_GIB:
        raise UsageError(
            f"--topology={name!r}: expected GENERATION:AxB or GENERATION:AxBxC with GENERATION "
            f"one of {', '.join(HBM_GIB)} (e.g. v5e:4x4, v4:2x2x1, v5p:2x2x1)"
        )
    return match.group(1), tuple(int(x) for x in match.group(2).split("x"))


def topology_devices(name: str, num_slices: int) -> list:
    """The devices of `num_slices` slices of topology `name` (compile targets, not runnable)."""
    generation, _ = parse_topology(name)
    if num_slices < 1:
        raise UsageError(f"--num_slices={num_slices}: must be >= 1")
    kwargs = {"chip_config_name": CHIP_CONFIG[generation]} if generation in CHIP_CONFIG else {}
    try:
        topo = topologies.get_topology_desc(name, "tpu", num_slices=num_slices, **kwargs)
    except jax.errors.JaxRuntimeError as e:
        raise UsageError(f"--topology={name!r}: libtpu rejects it: {e}") from None
    return list(topo.devices)


def topology_mesh(config, devices: list, num_slices: int) -> jax.sharding.Mesh:
    """The config's mesh over `devices`. Several slices: the first mesh axis whose size the
    slice count divides is split over the slices (DCN), every other axis stays in a slice."""
    axes = tuple(config.mesh.axes)
    try:
        shape = shd.resolve_mesh_shape(tuple(config.mesh.shape), len(devices))
    except ValueError as e:
        raise UsageError(f"mesh.shape on {len(devices)} TPU devices: {e}") from None
    if num_slices == 1:
        return shd.make_mesh(shape, axes, devices=devices)
    split = next((i for i, s in enumerate(shape) if s % num_slices == 0), None)
    if split is None:
        raise UsageError(
            f"mesh.shape {shape} ({axes}): no axis is divisible by --num_slices={num_slices}"
        )
    dcn = tuple(num_slices if i == split else 1 for i in range(len(shape)))
    ici = tuple(s // d for s, d in zip(shape, dcn, strict=True))
    grid = mesh_utils.create_hybrid_device_mesh(ici, dcn, devices)
    return jax.sharding.Mesh(grid, axes, axis_types=(jax.sharding.AxisType.Auto,) * len(axes))


@dataclasses.dataclass(frozen=True)
class ModelShape:
    config: TransformerConfig
    eos_ids: tuple[int, ...]
    pad_id: int
    source: str


def model_shape(config, preset: str) -> ModelShape:
    """The policy's TransformerConfig and stop / pad ids without weights or tokenizer files.

    Preset or config.json: the ids are those config.json names, else stand-ins (0): they are
    compile-time constants that change no shape of the compiled program."""
    numerics = {k: config.model[k] for k in NUMERIC_KEYS}
    if preset:
        if preset not in PRESETS:
            raise UsageError(f"--model_preset={preset!r}: known presets {', '.join(PRESETS)}")
        return ModelShape(TransformerConfig.preset(preset, **numerics), (0,), 0, preset)
    if config.model.path:
        path = Path(config.model.path).expanduser()
        try:
            hf_config = hf.read_hf_config(path)
            model_config = hf.config_from_hf(hf_config, **numerics)
        except ValueError as e:
            raise UsageError(
                f"model.path={config.model.path!r}: {e}; or give the shape with --model_preset"
            ) from None
        eos = hf_config.get("eos_token_id", 0)
        eos_ids = tuple(eos) if isinstance(eos, list) else (int(eos or 0),)
        pad = hf_config.get("pad_token_id")
        return ModelShape(model_config, eos_ids, eos_ids[0] if pad is None else int(pad), str(path))
    policy = policy_from_config(config)
    tok = policy.tokenizer
    return ModelShape(policy.model_config, tok.eos_ids, tok.pad_id, config.model.preset)


def pool_size(config, num_items: int) -> int:
    """N, the RL pool size (module docstring for the order of the sources)."""
    if num_items:
        return num_items
    t = config.task
    if t.rl_pool_size:
        return t.rl_pool_size
    if not t.train_path:
        return t.num_train
    try:
        path, start, stop = parse_path_spec(t.train_path)
        if Path(path).is_file():
            return count_rows(t.train_path, fmt=t.format)
    except (OSError, ValueError) as e:
        raise UsageError(f"task.train_path={t.train_path!r}: {e}") from None
    if stop is None:
        raise UsageError(
            f"task.train_path={t.train_path!r} is not here and has no [start:stop] slice: "
            "give the pool size with --num_items"
        )
    return stop - start


# ----------------------------------------------------------------------------------------------
# Abstract inputs of each step
# ----------------------------------------------------------------------------------------------


def sds(shape, dtype, sharding) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(tuple(shape), dtype, sharding=sharding)


def prompt_inputs(rows: int, prompt_len: int, mesh, rules):
    """Left-padded prompt tokens [rows, P] and lengths [rows], split over the batch axes."""
    data = shd.data_sharding(mesh, rules)
    return sds((rows, prompt_len), jnp.int32, data), sds((rows,), jnp.int32, data)


def learn_batch(rollout: Rollout, m: int, k: int, seen: int, mesh, rules) -> dict:
    """The learner's batch as rl_step builds it: the rollout of M*K rows split over the batch
    axes; rewards [M, K] and the per-prompt fields (seen_*: one per rolled-out prompt, M, or
    R*M with dynamic sampling) replicated."""
    data, repl = shd.data_sharding(mesh, rules), shd.replicated(mesh)
    ro = jax.tree.map(lambda x: sds(x.shape, x.dtype, data), rollout)
    return {
        "rollout": ro,
        "rewards": sds((m, k), jnp.float32, repl),
        "successes": sds((m,), jnp.float32, repl),
        "indices": sds((m,), jnp.int32, repl),
        "seen_indices": sds((seen,), jnp.int32, repl),
        "seen_successes": sds((seen,), jnp.float32, repl),
        "seen_valid": sds((seen,), jnp.bool_, repl),
    }


def sft_batch(rows: int, length: int, mesh, rules) -> dict:
    """The warm start's batch (warmstart.warm_start_batch): [rows, P + N] tokens and mask,
    [rows, P + N - 1] loss mask, split over the batch axes."""
    data = shd.data_sharding(mesh, rules)
    return {
        "tokens": sds((rows, length), jnp.int32, data),
        "mask": sds((rows, length), jnp.bool_, data),
        "loss_mask": sds((rows, length - 1), jnp.bool_, data),
    }


def device_bytes(tree) -> int:
    """Bytes one device holds of a tree of sharded ShapeDtypeStructs (the largest shard)."""
    total = 0
    for x in jax.tree.leaves(tree):
        shard = x.sharding.shard_shape(x.shape) if x.sharding is not None else x.shape
        total += math.prod(shard) * jnp.dtype(x.dtype).itemsize
    return total


# ----------------------------------------------------------------------------------------------
# Compiling and measuring
# ----------------------------------------------------------------------------------------------


def size(num_bytes: float) -> str:
    """Bytes in binary units: 1536 -> '1.5K', 3 * 2**30 -> '3.00G'."""
    for unit, scale in (("G", GIB), ("M", 1 << 20), ("K", 1 << 10)):
        if num_bytes >= scale:
            return f"{num_bytes / scale:.3g}{unit}" if unit != "G" else f"{num_bytes / scale:.2f}G"
    return f"{num_bytes:.0f}B"


def sequence_flops(cfg: TransformerConfig, length: int) -> float:
    """Forward FLOPs of one causal sequence of `length` tokens, token i attending to i + 1
    keys: sum_i f(i + 1) = length * f((length + 1) / 2), f = forward_flops_per_token, which
    is linear in the context."""
    return length * cfg.forward_flops_per_token((length + 1) / 2)


def model_flops(name: str, cfg: TransformerConfig, c, rows: int, prompt_len: int) -> float:
    """The model's matmul FLOPs of one call of step `name` (all devices), from the shapes.

    rollout / eval: prefill rows/K prompts of P tokens, then rows = prompts * K samples each
      draw all N tokens (the most a call decodes), token t seeing P + t keys:
      prompts * P * f((P + 1) / 2) + rows * N * f(P + (N + 1) / 2).
    learn: forward + backward (3 forwards) of rows sequences of P + N tokens per PPO epoch,
      plus one forward of the reference policy when rl.kl_coef > 0.
    warm_start: 3 forwards of rows sequences of P + N tokens.
    """
    n, length = c.rl.max_new_tokens, prompt_len + c.rl.max_new_tokens
    if name in ("rollout", "eval"):
        k = c.rl.num_rollouts if name == "rollout" else c.eval.num_samples
        prefill = rows // k * prompt_len * cfg.forward_flops_per_token((prompt_len + 1) / 2)
        return prefill + rows * n * cfg.forward_flops_per_token(prompt_len + (n + 1) / 2)
    if name == "learn":
        passes = 3 * c.rl.num_ppo_epochs + (1 if c.rl.kl_coef > 0 else 0)
        return passes * rows * sequence_flops(cfg, length)
    if name == "warm_start":
        return 3 * rows * sequence_flops(cfg, length)
    return 0.0  # selection: no model


@dataclasses.dataclass
class StepReport:
    name: str
    fits: bool
    argument_bytes: int = 0
    output_bytes: int = 0
    alias_bytes: int = 0
    temp_bytes: int = 0
    peak_bytes: int = 0  # arguments + outputs - aliased + temporaries of this program
    resident_bytes: int = 0  # TrainState held in HBM that the step does not take
    total_bytes: int = 0  # peak + resident
    xla_flops: float = 0.0  # XLA cost analysis, per device: a loop body counted ONCE
    model_flops: float = 0.0  # model_flops() / devices: every decode step, minibatch, epoch
    error: str = ""  # the compiler's out-of-memory message

    def row(self, hbm: int) -> str:
        if self.error:
            first = self.error.splitlines()[0]
            return f"{self.name:<11}does not fit (the compiler ran out of HBM): {first}"
        cells = (
            self.argument_bytes, self.output_bytes, self.temp_bytes, self.peak_bytes,
            self.resident_bytes, self.total_bytes,
        )  # fmt: skip
        return (
            f"{self.name:<11}{''.join(f'{size(b):>9}' for b in cells)}"
            f"{self.total_bytes / hbm:>8.1%}{self.xla_flops:>10.2e}{self.model_flops:>10.2e}  "
            f"{'yes' if self.fits else 'NO'}"
        )


HEADER = (
    f"{'step':<11}{'args':>9}{'outputs':>9}{'temps':>9}{'peak':>9}{'+state':>9}{'total':>9}"
    f"{'of HBM':>8}{'XLA FLOP':>10}{'model':>10}  fits"
)

OOM_MARKERS = ("RESOURCE_EXHAUSTED", "Ran out of memory", "out of memory")


def compile_step(
    name: str, fn, args: tuple, resident: int, hbm: int, flops: float = 0.0
) -> StepReport:
    """Lowers and compiles jitted `fn` at abstract `args` and measures the program (`flops`:
    the model FLOPs per device, reported beside XLA's count)."""
    try:
        compiled = fn.lower(*args).compile()
    except jax.errors.JaxRuntimeError as e:
        if any(m in str(e) for m in OOM_MARKERS):
            return StepReport(name, fits=False, model_flops=flops, error=str(e).strip())
        raise
    ma = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost  # one dict per program
    # Arguments and outputs share donated (aliased) buffers: count them once.
    live = ma.argument_size_in_bytes + ma.output_size_in_bytes - ma.alias_size_in_bytes
    peak = live + ma.temp_size_in_bytes
    total = peak + resident
    return StepReport(
        name,
        fits=total <= hbm,
        argument_bytes=ma.argument_size_in_bytes,
        output_bytes=ma.output_size_in_bytes,
        alias_bytes=ma.alias_size_in_bytes,
        temp_bytes=ma.temp_size_in_bytes,
        peak_bytes=peak,
        resident_bytes=resident,
        total_bytes=total,
        xla_flops=float((cost or {}).get("flops", 0.0)),
        model_flops=flops,
    )


def check_divisible(config, mesh, rules) -> int:
    """The batch sizes the topology's mesh must split evenly; returns the batch multiple."""
    multiple = shd.batch_size_multiple(mesh, rules)
    c = config
    sizes = [("rl.batch_size", c.rl.batch_size)]
    if c.warmstart.steps:
        sizes.append(("warmstart.batch_size", c.warmstart.batch_size))
    for key, size in sizes:
        if size % multiple:
            raise UsageError(
                f"{key}={size} is not a multiple of the {multiple} batch shards of mesh "
                f"{dict(mesh.shape)} on this topology"
            )
    rows = c.rl.batch_size * c.rl.num_rollouts
    if rows % c.rl.num_minibatches:
        raise UsageError(
            f"rl.num_minibatches={c.rl.num_minibatches} does not divide the M*K={rows} rollouts"
        )
    return multiple


def run_check(
    config: ml_collections.ConfigDict,
    topology: str,
    *,
    num_slices: int = 1,
    model_preset: str = "",
    num_items: int = 0,
) -> dict:
    """Compiles every step of `config` for `topology`; returns the report (see main)."""
    c = config
    generation, _ = parse_topology(topology)
    hbm = HBM_GIB[generation] * GIB
    prompt_len = c.task.max_prompt_len
    if prompt_len < 1:
        raise UsageError(
            "task.max_prompt_len=0 (measured from the data, which the check does not read): "
            "set it, e.g. --config.task.max_prompt_len=256"
        )
    shape = model_shape(c, model_preset)
    if prompt_len + c.rl.max_new_tokens > shape.config.max_seq_len:
        raise UsageError(
            f"task.max_prompt_len + rl.max_new_tokens = {prompt_len + c.rl.max_new_tokens} "
            f"exceeds the model's {shape.config.max_seq_len} positions"
        )
    n = pool_size(c, num_items)
    devices = topology_devices(topology, num_slices)
    mesh = topology_mesh(c, devices, num_slices)
    rules = as_rules(c.mesh.rules)
    multiple = check_divisible(c, mesh, rules)
    steps: Steps = build_steps(
        c, shape.config, mesh, rules, eos_ids=shape.eos_ids, pad_id=shape.pad_id,
        num_items=n, num_train=n,
    )  # fmt: skip
    state, model = steps.abstract_state, steps.abstract_model
    state_bytes, model_bytes = device_bytes(state), device_bytes(model)
    m, k, rounds = c.rl.batch_size, c.rl.num_rollouts, c.selection.dynamic_sampling_rounds

    fns = steps.fns
    select = fns.draw_uniform if rounds else fns.select
    key = jax.eval_shape(select, state)[1]
    key = key[0] if rounds else key  # dynamic sampling: one key per round
    repl = shd.replicated(mesh)
    key = sds(key.shape, key.dtype, repl)
    # The engine interface (host prompts in, device Rollout out) traced whole: any registered
    # engine compiles the same way.
    generate = jax.jit(steps.rollout_engine.generate)
    tokens, lengths = prompt_inputs(m, prompt_len, mesh, rules)
    rollout = jax.eval_shape(generate, model, tokens, lengths, key)

    info = dict(
        topology=topology,
        num_slices=num_slices,
        device_kind=devices[0].device_kind,
        num_devices=len(devices),
        mesh=dict(mesh.shape),
        hbm_bytes=hbm,
        model=shape.source,
        num_params=shape.config.num_params(),
        prompt_len=prompt_len,
        max_new_tokens=c.rl.max_new_tokens,
        num_items=n,
        state_bytes_per_device=state_bytes,
    )
    if state_bytes > hbm:  # every step holds the whole state: nothing to compile
        note = (
            f"the TrainState alone needs {size(state_bytes)} per device, more than the "
            f"{size(hbm)} of HBM: no step compiled"
        )
        return dict(info, steps=[], skipped=[], fits=False, table=note)
    resident = state_bytes - model_bytes  # a sampler takes only the model
    devs = len(devices)
    flops = lambda name, rows: model_flops(name, shape.config, c, rows, prompt_len) / devs
    batch = learn_batch(rollout, m, k, max(rounds, 1) * m, mesh, rules)
    reports = [
        compile_step("select", select, (state,), 0, hbm),
        compile_step(
            "rollout", generate, (model, tokens, lengths, key), resident, hbm,
            flops("rollout", m * k),
        ),
        compile_step("learn", fns.learn, (state, batch), 0, hbm, flops("learn", m * k)),
    ]  # fmt: skip
    skipped = []
    if c.eval.batch_size:
        rows = c.eval.batch_size + (-c.eval.batch_size) % multiple  # as evaluate pads a batch
        eval_gen = jax.jit(steps.eval_engine.generate)
        args = (model, *prompt_inputs(rows, prompt_len, mesh, rules), key)
        eval_flops = flops("eval", rows * c.eval.num_samples)
        reports.append(compile_step("eval", eval_gen, args, resident, hbm, eval_flops))
    else:
        skipped.append("eval (eval.batch_size=0: every held-out record in one batch)")
    if c.warmstart.steps:
        rows = c.warmstart.batch_size
        batch = sft_batch(rows, prompt_len + c.rl.max_new_tokens, mesh, rules)
        sft_flops = flops("warm_start", rows)
        reports.append(compile_step("warm_start", fns.sft_step, (state, batch), 0, hbm, sft_flops))
    return dict(
        info,
        steps=[dataclasses.asdict(r) for r in reports],
        skipped=skipped,
        fits=all(r.fits for r in reports),
        table=format_table(reports, hbm),
    )


def format_table(reports: list[StepReport], hbm: int) -> str:
    lines = [HEADER, "-" * len(HEADER)]
    lines += [r.row(hbm) for r in reports]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    try:
        FLAGS(argv)
    # config_flags reports an unknown override key as KeyError / AttributeError.
    except (flags.Error, KeyError, AttributeError, ValueError, TypeError) as e:
        print(f"aot_check: {e}", file=sys.stderr)
        return EXIT_BAD_ARGS
    if FLAGS.config is None or not FLAGS.topology:
        print("aot_check: --config and --topology are required", file=sys.stderr)
        return EXIT_BAD_ARGS
    try:
        report = run_check(
            FLAGS.config,
            FLAGS.topology,
            num_slices=FLAGS.num_slices,
            model_preset=FLAGS.model_preset,
            num_items=FLAGS.num_items,
        )
    except UsageError as e:
        print(f"aot_check: {e}", file=sys.stderr)
        return EXIT_BAD_ARGS
    except jax.errors.JaxRuntimeError as e:
        print(f"aot_check: compile error: {e}", file=sys.stderr)
        return EXIT_COMPILE_ERROR
    r = report
    print(
        f"{r['topology']} x{r['num_slices']} ({r['num_devices']} x {r['device_kind']}, "
        f"{r['hbm_bytes'] / GIB:.0f} GiB HBM each), mesh {r['mesh']}; model {r['model']} "
        f"({r['num_params'] / 1e9:.3g}B params), prompts {r['prompt_len']} + "
        f"{r['max_new_tokens']} tokens, pool {r['num_items']}; TrainState "
        f"{r['state_bytes_per_device'] / GIB:.3f} GiB per device"
    )
    print(
        "per device, compiled not run. peak = args + outputs - donated + temps; +state: the "
        "TrainState resident but not an argument; XLA FLOP counts a loop body once, model "
        "FLOP counts every decode step and minibatch"
    )
    print(r["table"])
    for s in r["skipped"]:
        print(f"not checked: {s}")
    print("fits" if r["fits"] else "DOES NOT FIT")
    if FLAGS.json_out:
        Path(FLAGS.json_out).write_text(json.dumps(r, indent=2))
    return EXIT_FITS if r["fits"] else EXIT_DOES_NOT_FIT


if __name__ == "__main__":
    sys.exit(main(sys.argv))
