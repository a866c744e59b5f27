"""Meshes, logical rules and state created already sharded (fake 8-device CPU mesh)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from insight_jax import sharding as shd
from insight_jax.models.transformer import Transformer, TransformerConfig

CFG = TransformerConfig.tiny(104)


def test_resolve_mesh_shape_wildcard():
    assert shd.resolve_mesh_shape((2, -1, 1), 8) == (2, 4, 1)
    assert shd.resolve_mesh_shape((-1,), 8) == (8,)
    assert shd.resolve_mesh_shape((2, 2, 2), 8) == (2, 2, 2)


@pytest.mark.parametrize(
    "shape,match",
    [
        ((-1, -1), "at most one"),
        ((3, -1), "not divisible"),
        ((2, 2), "4 devices but 8"),
        ((0, -1), "positive"),
    ],
)
def test_resolve_mesh_shape_errors(shape, match):
    with pytest.raises(ValueError, match=match):
        shd.resolve_mesh_shape(shape, 8)


def test_make_mesh(devices):
    mesh = shd.make_mesh({"data": -1, "fsdp": 2, "tensor": 1})
    assert dict(mesh.shape) == {"data": 4, "fsdp": 2, "tensor": 1}
    assert all(t == jax.sharding.AxisType.Auto for t in mesh.axis_types)
    mesh = shd.make_mesh((2, 4), ("data", "tensor"))
    assert dict(mesh.shape) == {"data": 2, "tensor": 4}
    assert dict(shd.make_mesh((1, -1, 1)).shape) == {"data": 1, "fsdp": 8, "tensor": 1}
    with pytest.raises(ValueError, match="differ in length"):
        shd.make_mesh((2, 4))


def test_logical_to_spec(devices):
    mesh = shd.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    assert shd.logical_to_spec(("vocab", "embed"), mesh) == P("tensor", "fsdp")
    assert shd.logical_to_spec(("batch", "length"), mesh) == P(("data", "fsdp"), None)
    assert shd.logical_to_spec(("norm", None), mesh) == P(None, None)
    # Rule targets absent from the mesh are ignored: one rule set for many meshes.
    dp = shd.make_mesh({"data": 8})
    assert shd.logical_to_spec(("batch", "embed"), dp) == P("data", None)
    # A mesh axis is used once per array; later dimensions fall back to replication.
    rules = (("a", "tensor"), ("b", "tensor"))
    assert shd.logical_to_spec(("a", "b"), mesh, rules) == P("tensor", None)
    with pytest.raises(ValueError, match="no sharding rule"):
        shd.logical_to_spec(("embd",), mesh)
    with pytest.raises(ValueError, match="not divisible"):
        shd.logical_to_spec(("kv_heads",), mesh, shape=(3,))
    assert shd.logical_to_spec(("batch",), mesh, shape=(2,), strict=False) == P(None)
    assert shd.data_sharding(mesh).spec == P(("data", "fsdp"))
    assert shd.replicated(mesh).spec == P()
    assert shd.batch_size_multiple(mesh) == 4


def test_create_sharded_model_state_born_sharded(devices):
    mesh = shd.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    sm = shd.create_sharded_model(Transformer, CFG, mesh, seed=0)
    leaves = jax.tree_util.tree_leaves_with_path(
        sm.state, is_leaf=lambda x: isinstance(x, nnx.Variable)
    )
    assert len(leaves) == len(jax.tree.leaves(sm.state)) > 0
    for path, var in leaves:
        axes = var.get_metadata()["out_sharding"]
        want = shd.logical_to_sharding(axes, mesh, shd.DEFAULT_RULES)
        got = var[...].sharding
        assert got.is_equivalent_to(want, var[...].ndim), (jax.tree_util.keystr(path), got)
    emb = sm.state["embed_tokens"]["embedding"][...]
    assert emb.sharding.spec == P("tensor", "fsdp")
    assert emb.addressable_shards[0].data.shape == (104 // 2, 128 // 2)  # really split
    # The shardings tree matches the state and is usable as jit in/out_shardings.
    assert jax.tree.structure(sm.shardings) == jax.tree.structure(sm.state)
    # Same values as an unsharded model with the same seed (1-ulp jit vs eager rounding).
    ref = nnx.state(Transformer(CFG, rngs=nnx.Rngs(0)))
    for a, b in zip(jax.tree.leaves(sm.state), jax.tree.leaves(ref), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-8)
    # The merged module runs under jit with the sharded params.
    logits = nnx.jit(lambda m, t: m(t)[0])(sm.merge(), jnp.zeros((4, 6), jnp.int32))
    assert logits.shape == (4, 6, 104)


def test_impossible_param_sharding_is_a_clear_error(devices):
    mesh = shd.make_mesh({"tensor": 8})  # tiny has 2 kv heads
    with pytest.raises(ValueError, match=r"k_proj.*kv_heads.*not divisible"):
        shd.create_sharded_model(Transformer, CFG, mesh)
    # Remedy from the message: map kv_heads to None (replicate them).
    rules = (("kv_heads", None), ("q_heads", None), ("vocab", None), *shd.DEFAULT_RULES)
    sm = shd.create_sharded_model(Transformer, CFG, mesh, rules)
    k = sm.state["layers"][0]["self_attn"]["k_proj"]["kernel"][...]
    assert k.sharding.spec == P(None, None, None)
    assert sm.state["layers"][0]["mlp"]["gate_proj"]["kernel"][...].sharding.spec == P(
        None, "tensor"
    )


def test_abstract_sharded_state_of_a_real_size_model(devices):
    """Qwen3-0.6B shapes on a 2x4 mesh without allocating anything (AOT-check building block)."""
    mesh = shd.make_mesh({"fsdp": 2, "tensor": 4})
    _, abstract, shardings = shd.abstract_sharded_state(
        Transformer, TransformerConfig.qwen3_0_6b(), mesh
    )
    q = abstract["layers"][3]["self_attn"]["q_proj"]["kernel"]
    assert q.shape == (1024, 16, 128) and q.sharding.spec == P("fsdp", "tensor", None)
    assert isinstance(q.get_value(), jax.ShapeDtypeStruct)
    assert jax.tree.structure(shardings) == jax.tree.structure(abstract)
