"""launch/aot_check.py: compiling a config's steps for a TPU topology on this CPU (libtpu's
compiler, from jax[tpu] in requirements-test.txt; nothing runs on a TPU)."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("libtpu", reason="the TPU compiler comes with jax[tpu]")

from insight_jax.models.transformer import TransformerConfig

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "launch" / "aot_check.py"
SMOKE = [f"--config={ROOT / 'configs' / 'countdown_tiny.py'}:smoke", "--topology=v5e:2x2"]
PROMPT = "--config.task.max_prompt_len=16"  # the check reads no data: the length is given


def _module():
    spec = importlib.util.spec_from_file_location("aot_check", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["aot_check"] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


aot = _module()


def _run(*args, json_out=None):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # not the fake CPU mesh
    cmd = [sys.executable, str(SCRIPT), *args]
    if json_out is not None:
        cmd.append(f"--json_out={json_out}")
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


@pytest.fixture(scope="module")
def smoke_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("aot") / "report.json"
    proc = _run(*SMOKE, PROMPT, json_out=out)
    return proc, json.loads(out.read_text()) if out.is_file() else None


def test_smoke_config_fits_a_small_slice(smoke_report):
    proc, report = smoke_report
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("step"))
    columns = "step args outputs temps peak +state total of HBM XLA FLOP model fits"
    assert lines[header].split() == columns.split()
    rows = {line.split()[0]: line.split() for line in lines[header + 2 :] if line[:1].isalpha()}
    # The smoke config warm-starts and has eval.batch_size 0 (every held-out record at once).
    assert {"select", "rollout", "learn", "warm_start"} <= set(rows)
    assert all(rows[s][-1] == "yes" for s in ("select", "rollout", "learn", "warm_start"))
    assert lines[-1] == "fits"
    assert report["num_devices"] == 4 and report["device_kind"] == "TPU v5 lite"
    assert report["mesh"] == {"data": 4} and report["hbm_bytes"] == 16 << 30


def test_smoke_report_numbers_match_the_shapes(smoke_report):
    """The state held per device, against the parameter count: the smoke mesh is data-parallel
    (parameters replicated), float32 parameters and Adam's two moments: 12 bytes a parameter,
    plus beliefs and scores (3 float32 per pool slot, split over 4 devices) and counters."""
    _, report = smoke_report
    params = report["num_params"]
    pool_per_device = 3 * 4 * -(-report["num_items"] // 4)
    state = report["state_bytes_per_device"]
    assert 12 * params + pool_per_device <= state <= 12 * params + pool_per_device + 256
    steps = {s["name"]: s for s in report["steps"]}
    # The learner and the warm start take the whole state (donated: outputs alias it).
    for name in ("learn", "warm_start"):
        assert steps[name]["argument_bytes"] >= state
        assert steps[name]["alias_bytes"] >= 12 * params
    # A sampler takes only the model (4 bytes a parameter); the rest of the state stays.
    assert steps["rollout"]["argument_bytes"] >= 4 * params
    assert steps["rollout"]["resident_bytes"] == state - 4 * params
    for s in steps.values():
        assert s["total_bytes"] == s["peak_bytes"] + s["resident_bytes"]
        assert s["peak_bytes"] == (
            s["argument_bytes"] + s["output_bytes"] - s["alias_bytes"] + s["temp_bytes"]
        )
        assert s["xla_flops"] > 0


def test_a_state_larger_than_hbm_does_not_fit():
    """A 2-layer model 16384 wide (~3.3e9 parameters, 12 bytes each, replicated) cannot fit a
    16 GiB v5e chip: exit 1, before any compile."""
    proc = _run(
        *SMOKE,
        PROMPT,
        "--config.model.overrides.embed_dim=16384",
        "--config.model.overrides.mlp_dim=65536",
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "the TrainState alone needs" in proc.stdout
    assert proc.stdout.splitlines()[-1] == "DOES NOT FIT"


def test_compiler_out_of_memory_is_a_step_that_does_not_fit():
    """A program whose temporaries exceed HBM: libtpu's compiler refuses it, the step is
    reported as not fitting (with the compiler's message), not as a crash."""
    devices = aot.topology_devices("v5e:2x2", 1)
    mesh = jax.sharding.Mesh(np.array(devices), ("data",))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    # 2^36 float32 = 256 GiB, 64 GiB a device, and a temporary as large: over 16 GiB.
    x = jax.ShapeDtypeStruct((1 << 20, 1 << 16), jnp.float32, sharding=sharding)
    report = aot.compile_step("big", jax.jit(lambda a: jnp.sin(a) * 2 + a), (x,), 0, 16 << 30)
    assert not report.fits
    assert "memory" in report.error.lower() or "RESOURCE_EXHAUSTED" in report.error
    small = jax.ShapeDtypeStruct((1024, 1024), jnp.float32, sharding=sharding)
    ok = aot.compile_step("small", jax.jit(lambda a: a @ a.T), (small,), 0, 16 << 30)
    assert ok.fits
    # A [1024, 1024] x [1024, 1024] matmul: 2 * 1024^3 FLOPs over 4 devices.
    assert ok.xla_flops == pytest.approx(2 * 1024**3 / 4, rel=0.01)
    # Arguments and outputs: one [256, 1024] float32 shard each.
    assert ok.argument_bytes == 256 * 1024 * 4


@pytest.mark.parametrize(
    "topology, message",
    [
        ("v5e:3x3", "libtpu rejects it"),  # not a whole number of hosts
        ("v9x:2x2", "GENERATION one of v4, v5e, v5p, v6e"),
        ("v5e-16", "expected GENERATION:AxB"),
    ],
)
def test_bad_topology_exits_2_with_a_clear_message(topology, message):
    proc = _run(SMOKE[0], f"--topology={topology}", PROMPT)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert message in proc.stderr and topology in proc.stderr


def test_other_bad_arguments_exit_2():
    missing_len = _run(*SMOKE)  # max_prompt_len 0: measured from data the check does not read
    assert missing_len.returncode == 2 and "task.max_prompt_len" in missing_len.stderr
    bad_key = _run(*SMOKE, PROMPT, "--config.rl.no_such_key=1")
    assert bad_key.returncode == 2 and "no_such_key" in bad_key.stderr
    indivisible = _run(*SMOKE, PROMPT, "--config.rl.batch_size=6")
    assert indivisible.returncode == 2 and "rl.batch_size=6" in indivisible.stderr


def test_sequence_flops_is_the_sum_over_positions():
    """L * f((L + 1) / 2) against the explicit sum of f(i + 1), f linear in the context."""
    cfg = TransformerConfig.qwen3_0_6b()
    for length in (1, 7, 300):
        explicit = sum(cfg.forward_flops_per_token(i + 1) for i in range(length))
        assert aot.sequence_flops(cfg, length) == pytest.approx(explicit, rel=1e-12)


def test_pool_size_sources(tmp_path):
    import ml_collections

    def config(**task):
        base = dict(rl_pool_size=0, train_path="", num_train=64, format="auto")
        return ml_collections.ConfigDict({"task": {**base, **task}})

    assert aot.pool_size(config(), 0) == 64  # generated
    assert aot.pool_size(config(), 500) == 500  # the flag first
    assert aot.pool_size(config(rl_pool_size=40), 0) == 40
    assert aot.pool_size(config(train_path=str(tmp_path / "x.parquet[100:2100]")), 0) == 2000
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"i": i}) + "\n" for i in range(7)))
    assert aot.pool_size(config(train_path=f"{rows}[2:]"), 0) == 5  # counted: the file is here
    with pytest.raises(aot.UsageError, match="--num_items"):
        aot.pool_size(config(train_path=str(tmp_path / "absent.json")), 0)


_SPLIT_PROBE = """
import sys
import jax, jax.numpy as jnp
from flax import nnx
from jax.experimental import topologies
from jax.sharding import NamedSharding, PartitionSpec
from insight_jax import sharding as shd
from insight_jax.models.transformer import Transformer, TransformerConfig, token_logprobs

cfg = TransformerConfig.preset(
    "tiny", vocab_size=32768, num_layers=1, embed_dim=64, mlp_dim=128, logits_chunk=32
)
devices = topologies.get_topology_desc("v5e:2x2", "tpu").devices
mesh = shd.make_mesh((1, 4), ("data", "fsdp"), devices=devices)
rows = NamedSharding(mesh, PartitionSpec(("data", "fsdp")))
# Parameters laid out as in the trainer: the embedding dimension on the fsdp axis.
graphdef, params, _ = shd.abstract_sharded_state(Transformer, cfg, mesh, shd.DEFAULT_RULES)
tokens = jax.ShapeDtypeStruct((64, 128), jnp.int32, sharding=rows)
mask = jax.ShapeDtypeStruct((64, 128), jnp.bool_, sharding=rows)

def temps(shard_rows):
    def loss(p, t, m):
        return token_logprobs(nnx.merge(graphdef, p), t, m, shard_rows=shard_rows).sum()
    compiled = jax.jit(jax.grad(loss)).lower(params, tokens, mask).compile()
    return compiled.memory_analysis().temp_size_in_bytes

print(temps(lambda x: jax.lax.with_sharding_constraint(x, rows)), temps(None))
"""


def test_chunked_logprobs_stay_split_over_the_batch():
    """The learner's log-probs in chunks, compiled for a 4-chip slice: with shard_rows (what
    the trainer passes) each chip computes only its rows' logits. Without it libtpu's
    sharding propagation does not reach into the chunk loop and every chip computes the logits
    of the whole batch (the Qwen3-0.6B learner step asked for 155 GB per v5e chip; 15 GB with)."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env.update(JAX_PLATFORMS="cpu", ALLOW_MULTIPLE_LIBTPU_LOAD="1")
    proc = subprocess.run(
        [sys.executable, "-c", _SPLIT_PROBE], capture_output=True, text=True, env=env,
        cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    split, whole = map(int, proc.stdout.split()[-2:])
    one_chunk = 64 * 32 * 32768 * 4  # a chunk's float32 logits for the whole batch: 256 MiB
    assert whole > one_chunk > 2 * split, (split, whole)
