"""Checkpointer: sharded round trip, metadata, NaN refusal, retention, atomicity, durability."""

import os
import shutil
import signal
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from insight_jax import checkpointing
from insight_jax.checkpointing import Checkpointer

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
    with Checkpointer(tmp_path) as ckpt:
        step, state, meta = ckpt.restore_latest(abstract)
    assert (step, meta, int(state["step"])) == (3, {"pos": 99}, 3)
    np.testing.assert_array_equal(state["w"], np.arange(4.0))
