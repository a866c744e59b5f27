"""Checkpointer: sharded round trip, metadata, NaN refusal, retention, atomicity, durability,
checksums (damaged steps are detected, moved aside and the next-newest intact step restored)."""

import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from insight_jax import checkpointing
from insight_jax.checkpointing import Checkpointer, CheckpointError

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def mesh(devices):
    return jax.sharding.Mesh(np.array(devices).reshape(4, 2), ("data", "model"))


def make_state(mesh, scale=1.0):
    """A train-state-like pytree: sharded params/optimizer/beliefs, RNG key data, counters."""

    def put(x, *spec):
        return jax.device_put(x, NamedSharding(mesh, P(*spec)))

    return {
        "params": {
            "w": put(jnp.arange(64.0).reshape(8, 8) * scale, "data", "model"),
            "b": put(jnp.linspace(-1, 1, 8).astype(jnp.bfloat16), "model"),
        },
        "opt": {"mu": put(jnp.full((8, 8), 0.5 * scale), "data", None), "count": jnp.int32(7)},
        "beliefs": {"alpha": put(jnp.arange(16.0) + 1, "data"), "beta": put(jnp.ones(16), "data")},
        "rng": jax.random.key_data(jax.random.key(42)),  # uint32[2]
        "rng_typed": jax.random.key(3),
        "step": jnp.int32(100),
    }


def abstract_of(state):
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state
    )


def assert_trees_equal(got, want):
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        assert g.dtype == w.dtype and g.shape == w.shape
        assert g.sharding == w.sharding, (g.sharding, w.sharding)
        if jnp.issubdtype(w.dtype, jax.dtypes.prng_key):
            g, w = jax.random.key_data(g), jax.random.key_data(w)
        np.testing.assert_array_equal(np.asarray(g), np.asarray(w))


def test_restore_when_empty_returns_none(tmp_path, mesh):
    with Checkpointer(tmp_path / "ckpt") as ckpt:
        assert ckpt.latest_step() is None
        assert ckpt.restore_latest(abstract_of(make_state(mesh))) is None


def test_sharded_round_trip_with_metadata(tmp_path, mesh):
    state = make_state(mesh)
    meta = {"data_position": 1234, "config": {"scorer": "insight", "eta": 3.0}, "seeds": [1, 2]}
    with Checkpointer(tmp_path) as ckpt:
        assert ckpt.save(10, state, meta)
    # A fresh Checkpointer, as after a restart; the abstract state comes from eval_shape.
    abstract = jax.eval_shape(lambda: make_state(mesh))
    abstract = jax.tree.map(
        lambda a, x: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=x.sharding), abstract, state
    )
    with Checkpointer(tmp_path) as ckpt:
        step, restored, restored_meta = ckpt.restore_latest(abstract)
    assert step == 10
    assert restored_meta == meta
    assert_trees_equal(restored, state)
    assert isinstance(restored["params"]["w"].sharding, NamedSharding)
    assert restored["params"]["w"].sharding.spec == P("data", "model")
    assert restored["rng"].dtype == jnp.uint32


def test_restore_into_a_different_sharding(tmp_path, mesh):
    state = make_state(mesh)
    with Checkpointer(tmp_path) as ckpt:
        ckpt.save(1, state)
        abstract = abstract_of(state)
        replicated = NamedSharding(mesh, P())
        abstract["params"]["w"] = jax.ShapeDtypeStruct((8, 8), jnp.float32, sharding=replicated)
        restored, meta = ckpt.restore(1, abstract)
    assert meta == {}
    assert restored["params"]["w"].sharding == replicated
    np.testing.assert_array_equal(restored["params"]["w"], state["params"]["w"])


def test_nan_state_is_refused_and_previous_stays_latest(tmp_path, mesh):
    with Checkpointer(tmp_path) as ckpt:
        assert ckpt.save(1, make_state(mesh), {"pos": 1})
        bad = make_state(mesh, scale=2.0)
        bad["params"]["w"] = bad["params"]["w"].at[3, 4].set(jnp.nan)
        bad["beliefs"]["beta"] = bad["beliefs"]["beta"].at[0].set(jnp.inf)
        with pytest.raises(FloatingPointError, match=r"step 2.*\['params'\]\['w'\]") as e:
            ckpt.save(2, bad, {"pos": 2})
        assert "['beliefs']['beta']" in str(e.value)
        assert "['beliefs']['alpha']" not in str(e.value)
        assert ckpt.latest_step() == 1
        assert not (tmp_path / "2").exists()
        step, restored, meta = ckpt.restore_latest(abstract_of(make_state(mesh)))
    assert (step, meta) == (1, {"pos": 1})
    assert_trees_equal(restored, make_state(mesh))


def test_nonfinite_leaves_ignores_ints_and_keys():
    tree = {"i": jnp.int32(3), "k": jax.random.key(0), "f": 1.0, "h": np.array([np.nan])}
    assert checkpointing.nonfinite_leaves(tree) == ["['h']"]
    assert checkpointing.nonfinite_leaves({"x": jnp.ones(3, jnp.bfloat16)}) == []


def test_max_to_keep_and_interval(tmp_path, mesh):
    state = make_state(mesh)
    with Checkpointer(tmp_path / "a", max_to_keep=2) as ckpt:
        for step in range(1, 5):
            assert ckpt.save(step, state)
        assert ckpt.all_steps() == [3, 4]
    assert sorted(p for p in os.listdir(tmp_path / "a") if p.isdigit()) == ["3", "4"]

    with Checkpointer(tmp_path / "all", max_to_keep=0) as ckpt:  # 0: keep every step
        for step in range(1, 5):
            assert ckpt.save(step, state)
        assert ckpt.all_steps() == [1, 2, 3, 4]

    with Checkpointer(tmp_path / "b", save_interval_steps=2) as ckpt:
        assert not ckpt.save(1, state)
        assert ckpt.save(2, state)
        assert not ckpt.save(3, state)
        assert ckpt.save(3, state, force=True)
        assert ckpt.all_steps() == [2, 3]
        with pytest.raises(TypeError, match="JSON"):
            ckpt.save(4, state, {"bad": object()})


def test_incomplete_checkpoints_are_ignored(tmp_path, mesh):
    state = make_state(mesh)
    with Checkpointer(tmp_path) as ckpt:
        ckpt.save(1, state, {"pos": 1})
    # A killed save leaves orbax's tmp dir; an interrupted copy leaves a step dir without the
    # commit marker. Both have higher step numbers than the good checkpoint.
    shutil.copytree(tmp_path / "1", tmp_path / "5")
    os.remove(tmp_path / "5" / checkpointing.COMMIT_MARKER)
    tmp_dir = tmp_path / "7.orbax-checkpoint-tmp-1700000000"
    shutil.copytree(tmp_path / "1", tmp_dir)
    os.remove(tmp_dir / checkpointing.COMMIT_MARKER)

    with Checkpointer(tmp_path) as ckpt:
        assert ckpt.latest_step() == 1
        step, _, meta = ckpt.restore_latest(abstract_of(state))
        assert (step, meta) == (1, {"pos": 1})
        # The stray "5" must not block saving the steps after the restored one.
        assert ckpt.save(2, state, {"pos": 2})
        assert ckpt.latest_step() == 2
    assert (tmp_path / ("5" + checkpointing.INCOMPLETE_SUFFIX)).exists()  # kept for inspection
    assert not tmp_dir.exists()  # orbax cleans up its own tmp dirs


def test_checkpoint_survives_kill_right_after_save(tmp_path):
    # The child saves and immediately SIGKILLs itself: nothing can flush after save() returns.
    child = textwrap.dedent(
        f"""
        import os, signal
        import jax.numpy as jnp
        from insight_jax.checkpointing import Checkpointer
        ckpt = Checkpointer({str(tmp_path)!r})
        ckpt.save(3, {{"w": jnp.arange(4.0), "step": jnp.int32(3)}}, {{"pos": 99}})
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    env = {**os.environ, "PYTHONPATH": REPO_ROOT, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
    proc = subprocess.run([sys.executable, "-c", child], env=env, capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    one_device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    abstract = {
        "w": jax.ShapeDtypeStruct((4,), jnp.float32, sharding=one_device),
        "step": jax.ShapeDtypeStruct((), jnp.int32, sharding=one_device),
    }
    assert checkpointing.checksum_problems(tmp_path / "3") == []  # the manifest is durable too
    with Checkpointer(tmp_path) as ckpt:
        step, state, meta = ckpt.restore_latest(abstract)
    assert (step, meta, int(state["step"])) == (3, {"pos": 99}, 3)
    np.testing.assert_array_equal(state["w"], np.arange(4.0))


# ---------------------------------------------------------------------------------------------
# Checksums: fault injection on the newest step.


def big_state(mesh, seed):
    """(state, numpy reference of it). The 128x128 float32 embedding (64 KiB, sharded) is big
    enough that OCDBT writes it to a data file of its own (small arrays are inlined in its
    b-tree, which has its own CRC); orbax's data files carry no checksum, so a flipped byte
    there restores silently without ours."""
    rng = np.random.default_rng(seed)
    ref = {
        "emb": rng.standard_normal((128, 128)).astype(np.float32),
        "bias": rng.standard_normal(8).astype(np.float32),
        "step": np.int32(seed),
    }
    state = {
        "emb": jax.device_put(ref["emb"], NamedSharding(mesh, P("data", "model"))),
        "bias": jnp.asarray(ref["bias"]),
        "step": jnp.int32(seed),
    }
    return state, ref


def assert_restored(restored, ref, seed):
    assert set(restored) == set(ref)
    for k, want in ref.items():
        np.testing.assert_array_equal(np.asarray(restored[k]), want, err_msg=f"{k}, seed {seed}")
    assert restored["emb"].sharding.spec == P("data", "model")


def save_steps(directory, mesh, steps):
    with Checkpointer(directory) as ckpt:
        for step in steps:
            assert ckpt.save(step, big_state(mesh, step)[0], {"pos": step})


def data_file(step_dir):
    """The largest file under state/: an OCDBT data file holding (part of) the embedding.

    OCDBT may spread the 64 KiB embedding over several data files when its shard writes run
    concurrently (seen under a loaded CPU), so only "clearly a data file" is asserted."""
    files = [os.path.join(r, f) for r, _, fs in os.walk(step_dir / "state") for f in fs]
    path = max(files, key=os.path.getsize)
    assert os.path.getsize(path) > 8 * 1024, (path, os.path.getsize(path))
    return path


def truncate(path):
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


def flip_bytes(step_dir):
    path = data_file(step_dir)
    with open(path, "r+b") as f:
        data = bytearray(f.read())
        mid = len(data) // 2
        data[mid : mid + 64] = bytes(b ^ 0xFF for b in data[mid : mid + 64])
        f.seek(0)
        f.write(data)


DAMAGES = {
    # name: (damage(step_dir), a words the report must contain)
    "flip_64_data_bytes": (flip_bytes, "another sha256"),
    "truncate_data_file": (lambda d: truncate(data_file(d)), "bytes"),
    "tear_metadata_json": (lambda d: truncate(d / "metadata" / "metadata"), "metadata/metadata"),
    "delete_state_dir": (lambda d: shutil.rmtree(d / "state"), "state/_METADATA is missing"),
    "delete_manifest": (lambda d: os.remove(d / "checksums.json"), "no checksums.json"),
    "tear_manifest": (lambda d: truncate(d / "checksums.json"), "checksums.json is unreadable"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_damaged_newest_step_is_moved_aside_and_previous_restored(tmp_path, mesh, damage, caplog):
    save_steps(tmp_path, mesh, [1, 2])
    damage_fn, reported = DAMAGES[damage]
    damage_fn(tmp_path / "2")
    state1, ref1 = big_state(mesh, 1)
    with caplog.at_level(logging.WARNING, logger=checkpointing.__name__):
        with Checkpointer(tmp_path) as ckpt:
            step, restored, meta = ckpt.restore_latest(abstract_of(state1))
            assert (step, meta) == (1, {"pos": 1}), damage
            assert_restored(restored, ref1, seed=1)
            assert [d.step for d in ckpt.damaged] == [2]
            assert reported in ckpt.damaged[0].message, ckpt.damaged[0].message
            assert ckpt.damaged[0].moved_to == str(tmp_path / "2.damaged")
            assert ckpt.all_steps() == [1]
            # The trainer replays from step 1 and saves step 2 again.
            state2, ref2 = big_state(mesh, 2)
            assert ckpt.save(2, state2, {"pos": 2})
    assert any("step 2" in r.getMessage() and reported in r.getMessage() for r in caplog.records)
    assert (tmp_path / "2.damaged").is_dir() and (tmp_path / "2").is_dir()
    with Checkpointer(tmp_path) as ckpt:
        step, restored, meta = ckpt.restore_latest(abstract_of(state2))
        assert ckpt.damaged == []
    assert (step, meta) == (2, {"pos": 2})
    assert_restored(restored, ref2, seed=2)


def test_manifest_lists_every_file_with_size_and_sha256(tmp_path, mesh):
    save_steps(tmp_path, mesh, [1])
    step_dir = tmp_path / "1"
    manifest = json.loads((step_dir / "checksums.json").read_text())
    want = {}
    for root, _, files in os.walk(step_dir):
        for name in files:
            path = os.path.join(root, name)
            rel = os.path.relpath(path, step_dir).replace(os.sep, "/")
            if rel != "checksums.json":
                with open(path, "rb") as f:
                    want[rel] = {
                        "size": os.path.getsize(path),
                        "sha256": hashlib.sha256(f.read()).hexdigest(),
                    }
    assert manifest["files"] == want
    assert {"commit_success.txt", "metadata/metadata", "state/_METADATA"} <= set(want)
    assert checkpointing.checksum_problems(step_dir) == []


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # orbax
def test_step_whose_restore_raises_is_moved_aside(tmp_path, mesh):
    # A step saved broken (its manifest matches the broken files): orbax's restore raises.
    save_steps(tmp_path, mesh, [1, 2])
    truncate(tmp_path / "2" / "state" / "_METADATA")
    checkpointing.write_manifest(tmp_path / "2")
    state1, ref1 = big_state(mesh, 1)
    with Checkpointer(tmp_path) as ckpt:
        step, restored, _ = ckpt.restore_latest(abstract_of(state1))
        assert step == 1
        assert [d.step for d in ckpt.damaged] == [2]
        assert "restore failed" in ckpt.damaged[0].message
    assert_restored(restored, ref1, seed=1)


def test_every_step_damaged_is_a_clear_error_and_moves_nothing(tmp_path, mesh):
    save_steps(tmp_path, mesh, [1, 2])
    flip_bytes(tmp_path / "2")
    shutil.rmtree(tmp_path / "1" / "state")
    abstract = abstract_of(big_state(mesh, 1)[0])
    for _ in range(2):  # the same error on every rerun, until the user acts
        with Checkpointer(tmp_path) as ckpt:
            with pytest.raises(CheckpointError) as e:
                ckpt.restore_latest(abstract)
        msg = str(e.value)
        assert str(tmp_path) in msg and "start fresh" in msg, msg
        assert "step 2: state/" in msg and "another sha256" in msg, msg
        assert "step 1: " in msg and "is missing" in msg, msg
        assert isinstance(e.value, RuntimeError)
        assert (tmp_path / "1").is_dir() and (tmp_path / "2").is_dir()
        assert not any(p.endswith(".damaged") for p in os.listdir(tmp_path))


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # orbax
def test_wrong_abstract_state_moves_nothing(tmp_path, mesh):
    # Intact steps that the caller's abstract state does not fit are not damaged.
    save_steps(tmp_path, mesh, [1, 2])
    abstract = abstract_of(big_state(mesh, 1)[0])
    abstract["emb"] = jax.ShapeDtypeStruct((4, 4), jnp.float32, sharding=abstract["emb"].sharding)
    with Checkpointer(tmp_path) as ckpt:
        with pytest.raises(CheckpointError, match="restore failed") as e:
            ckpt.restore_latest(abstract)
        assert "check that abstract_state matches" in str(e.value), str(e.value)
        assert e.value.__cause__ is not None
        assert ckpt.all_steps() == [1, 2]
    assert sorted(p for p in os.listdir(tmp_path) if p[0].isdigit()) == ["1", "2"]


def test_restore_of_a_damaged_step_raises(tmp_path, mesh):
    save_steps(tmp_path, mesh, [1])
    truncate(data_file(tmp_path / "1"))
    with Checkpointer(tmp_path) as ckpt:
        with pytest.raises(CheckpointError, match=r"step 1 .* is damaged: state/.*bytes"):
            ckpt.restore(1, abstract_of(big_state(mesh, 1)[0]))
    assert (tmp_path / "1").is_dir()


def test_kill_before_the_manifest_resumes_from_the_previous_step(tmp_path):
    # Killed after orbax committed step 2 but before its manifest: step 2 is not trusted.
    child = textwrap.dedent(
        f"""
        import os, signal
        import jax.numpy as jnp
        from insight_jax import checkpointing
        ckpt = checkpointing.Checkpointer({str(tmp_path)!r})
        ckpt.save(1, {{"w": jnp.arange(4.0)}}, {{"pos": 1}})
        checkpointing.write_manifest = lambda d: os.kill(os.getpid(), signal.SIGKILL)
        ckpt.save(2, {{"w": jnp.arange(4.0) * 2}}, {{"pos": 2}})
        """
    )
    env = {**os.environ, "PYTHONPATH": REPO_ROOT, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
    proc = subprocess.run([sys.executable, "-c", child], env=env, capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    assert (tmp_path / "2" / checkpointing.COMMIT_MARKER).exists()
    one_device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    abstract = {"w": jax.ShapeDtypeStruct((4,), jnp.float32, sharding=one_device)}
    with Checkpointer(tmp_path) as ckpt:
        step, state, meta = ckpt.restore_latest(abstract)
        assert (step, meta) == (1, {"pos": 1})
        assert [d.step for d in ckpt.damaged] == [2]
        assert "no checksums.json" in ckpt.damaged[0].message
        assert ckpt.save(2, {"w": jnp.arange(4.0) * 2}, {"pos": 2})
    np.testing.assert_array_equal(state["w"], np.arange(4.0))
    with Checkpointer(tmp_path) as ckpt:
        step, state, meta = ckpt.restore_latest(abstract)
    assert (step, meta) == (2, {"pos": 2})
    np.testing.assert_array_equal(state["w"], np.arange(4.0) * 2)


@pytest.mark.parametrize("seed", [0, 1])
def test_kill_at_a_random_moment_of_saving_resumes_exactly(tmp_path, seed):
    # The child saves steps 1, 2, ... (values = step) until the parent SIGKILLs it at a random
    # moment, most likely inside a save. Whatever it hit, the restore is an exact saved step.
    ckpt_dir, ready = tmp_path / "ckpt", tmp_path / "ready"
    child = textwrap.dedent(
        f"""
        import itertools, pathlib
        import jax.numpy as jnp
        from insight_jax.checkpointing import Checkpointer
        ckpt = Checkpointer({str(ckpt_dir)!r}, max_to_keep=2)
        for step in itertools.count(1):
            ckpt.save(step, {{"w": jnp.full((512, 512), float(step))}}, {{"pos": step}})
            pathlib.Path({str(ready)!r}).touch()
        """
    )
    env = {**os.environ, "PYTHONPATH": REPO_ROOT, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
    delay = np.random.default_rng(seed).uniform(0.0, 0.5)
    proc = subprocess.Popen([sys.executable, "-c", child], env=env, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert ready.exists(), f"child made no first save: {proc.stderr.read()[-2000:]!r}"
        time.sleep(delay)
        assert proc.poll() is None, "the child stopped saving before the kill"
    finally:
        proc.kill()
        proc.communicate(timeout=60)
    one_device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    abstract = {"w": jax.ShapeDtypeStruct((512, 512), jnp.float32, sharding=one_device)}
    with Checkpointer(ckpt_dir, max_to_keep=2) as ckpt:
        step, state, meta = ckpt.restore_latest(abstract)
        msg = f"seed {seed}, delay {delay:.3f}s, restored step {step}, damaged {ckpt.damaged}"
        assert step >= 1 and meta == {"pos": step}, msg
        np.testing.assert_array_equal(np.asarray(state["w"]), np.full((512, 512), step), msg)
        assert all(d.step > step for d in ckpt.damaged), msg
        assert ckpt.save(step + 1, {"w": jnp.full((512, 512), step + 1.0)}, {"pos": step + 1})
