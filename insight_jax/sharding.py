"""Meshes, logical-axis rules and creating state already sharded.

Parallelism is data: a mesh shape (e.g. ``{"data": -1, "fsdp": 1, "tensor": 1}``) and rules
mapping the logical axis names carried by every parameter (see models/transformer.py) to mesh
axes. A rule maps a logical name to one mesh axis, a tuple of mesh axes (the dimension is split
over their product), or None (replicated). Rule targets missing from the mesh are ignored, so one
rule set serves meshes with and without, say, an "fsdp" axis. Within one array a mesh axis is
used at most once: a later dimension that maps to an already used axis is replicated.

State is never materialised on one host: ``eval_shape`` -> shardings from the metadata ->
``jax.jit(init, out_shardings=...)`` (flax lm1b ``setup_initial_state``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MeshAxes = str | tuple[str, ...] | None
LogicalRules = tuple[tuple[str, MeshAxes], ...]

DEFAULT_MESH_AXES: tuple[str, ...] = ("data", "fsdp", "tensor")

# data: pure data parallel (params replicated); fsdp: params and batch both split (ZeRO-3
# style); tensor: Megatron-style split of heads / mlp / vocab.
DEFAULT_RULES: LogicalRules = (
    ("batch", ("data", "fsdp")),
    ("pool", ("data", "fsdp")),  # per-prompt arrays of the selection pool (beliefs, scores)
    ("length", None),
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("q_heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
    ("norm", None),
    ("layers", None),  # the stacked-layer axis of scan_layers models
)


# ----------------------------------------------------------------------------------------------
# Meshes
# ----------------------------------------------------------------------------------------------


def resolve_mesh_shape(shape: Sequence[int], num_devices: int) -> tuple[int, ...]:
    """Replace one -1 in ``shape`` by num_devices / prod(other sizes); check the product.

    >>> resolve_mesh_shape((2, -1, 1), 8)
    (2, 4, 1)
    """
    shape = tuple(int(s) for s in shape)
    if shape.count(-1) > 1:
        raise ValueError(f"mesh shape {shape}: at most one axis may be -1")
    if any(s == 0 or s < -1 for s in shape):
        raise ValueError(f"mesh shape {shape}: sizes must be positive (or one -1)")
    known = math.prod(s for s in shape if s != -1)
    if -1 in shape:
        if num_devices % known:
            raise ValueError(
                f"mesh shape {shape}: {num_devices} devices are not divisible by the product "
                f"{known} of the fixed axes, so -1 cannot be filled"
            )
        shape = tuple(num_devices // known if s == -1 else s for s in shape)
    if math.prod(shape) != num_devices:
        raise ValueError(
            f"mesh shape {shape} has {math.prod(shape)} devices but {num_devices} are available"
        )
    return shape


def make_mesh(
    mesh_shape: Mapping[str, int] | Sequence[int],
    axis_names: Sequence[str] | None = None,
    *,
    devices: Sequence[jax.Device] | None = None,
) -> Mesh:
    """A device mesh with Auto axis types (classic jit in/out shardings).

    mesh_shape: {axis: size} (ordered; the axis names are its keys) or a tuple of sizes with
    ``axis_names``. One size may be -1: filled from the device count.
    """
    if isinstance(mesh_shape, Mapping):
        if axis_names is not None and tuple(axis_names) != tuple(mesh_shape):
            raise ValueError(f"axis_names {axis_names} disagree with {list(mesh_shape)}")
        axis_names, sizes = tuple(mesh_shape), tuple(mesh_shape.values())
    else:
        sizes = tuple(mesh_shape)
        axis_names = DEFAULT_MESH_AXES if axis_names is None else tuple(axis_names)
        if len(axis_names) != len(sizes):
            raise ValueError(f"mesh shape {sizes} and axis names {axis_names} differ in length")
    devices = jax.devices() if devices is None else list(devices)
    shape = resolve_mesh_shape(sizes, len(devices))
    return jax.make_mesh(
        shape,
        axis_names,
        axis_types=(jax.sharding.AxisType.Auto,) * len(shape),
        devices=devices,
    )


# ----------------------------------------------------------------------------------------------
# Logical axes -> shardings
# ----------------------------------------------------------------------------------------------


def _rule_lookup(rules: LogicalRules) -> dict[str, MeshAxes]:
    table: dict[str, MeshAxes] = {}
    for name, target in rules:
        table.setdefault(name, target)  # first rule wins, as in flax's logical rules
    return table


def logical_to_spec(
    logical_axes: Sequence[str | None],
    mesh: Mesh,
    rules: LogicalRules = DEFAULT_RULES,
    *,
    shape: Sequence[int] | None = None,
    strict: bool = True,
) -> PartitionSpec:
    """PartitionSpec of an array whose dimensions have these logical names.

    A None name is replicated; a name without a rule is an error (add ``(name, None)`` to
    replicate), so a typo cannot silently replicate a large tensor. With ``shape``: a dimension
    not divisible by its mesh axes' product raises (strict) or is replicated (not strict;
    for activations such as a 2-row batch on a 4-way data axis).
    """
    table = _rule_lookup(rules)
    used: set[str] = set()
    spec: list[MeshAxes] = []
    for dim, name in enumerate(logical_axes):
        if name is None:
            spec.append(None)
            continue
        if name not in table:
            raise ValueError(
                f"logical axis {name!r} has no sharding rule (rules cover {sorted(table)}); "
                f"add ({name!r}, None) to replicate it"
            )
        target = table[name]
        targets = () if target is None else (target,) if isinstance(target, str) else target
        axes = tuple(a for a in targets if a in mesh.shape and a not in used)
        size = math.prod(mesh.shape[a] for a in axes)
        if shape is not None and axes and shape[dim] % size:
            if strict:
                raise ValueError(
                    f"dimension {dim} ({name!r}) of shape {tuple(shape)} has size {shape[dim]}, "
                    f"not divisible by mesh axes {axes} of total size {size}; change the mesh "
                    f"or map {name!r} elsewhere in the rules"
                )
            axes = ()
        used.update(axes)
        spec.append(None if not axes else axes[0] if len(axes) == 1 else axes)
    return PartitionSpec(*spec)


def logical_to_sharding(
    logical_axes: Sequence[str | None],
    mesh: Mesh,
    rules: LogicalRules = DEFAULT_RULES,
    *,
    shape: Sequence[int] | None = None,
    strict: bool = True,
) -> NamedSharding:
    """NamedSharding for logical axis names; see ``logical_to_spec``."""
    return NamedSharding(
        mesh, logical_to_spec(logical_axes, mesh, rules, shape=shape, strict=strict)
    )


def logical_axes_of(variable: nnx.Variable) -> tuple[str | None, ...]:
    """Logical axis names stored on a Variable (``out_sharding`` metadata); () if none."""
    axes = variable.get_metadata().get("out_sharding")
    return tuple(axes) if axes else ()


def state_shardings(state: Any, mesh: Mesh, rules: LogicalRules = DEFAULT_RULES) -> Any:
    """NamedSharding per leaf of an nnx State (concrete or abstract), from its logical axes.

    Returns the same tree (Variables holding NamedShardings), usable as jit in/out_shardings.
    Leaves without logical metadata (e.g. counters) are replicated. Shapes are checked
    strictly: a parameter that cannot be split as the rules say is an error, naming its path.
    """

    def one(path, var):
        axes = logical_axes_of(var)
        if not axes:
            return var.replace(NamedSharding(mesh, PartitionSpec()))
        try:
            spec = logical_to_spec(axes, mesh, rules, shape=var.shape)
        except ValueError as e:
            raise ValueError(f"{jax.tree_util.keystr(path)}: {e}") from None
        return var.replace(NamedSharding(mesh, spec))

    return jax.tree_util.tree_map_with_path(
        one, state, is_leaf=lambda x: isinstance(x, nnx.Variable)
    )


def batch_axes(mesh: Mesh, rules: LogicalRules = DEFAULT_RULES) -> tuple[str, ...]:
    """Mesh axes the "batch" logical axis maps to, restricted to this mesh."""
    spec = logical_to_spec(("batch",), mesh, rules)[0]
    return () if spec is None else (spec,) if isinstance(spec, str) else tuple(spec)


def data_sharding(mesh: Mesh, rules: LogicalRules = DEFAULT_RULES) -> NamedSharding:
    """Sharding of [batch, ...] arrays: leading dim over the batch mesh axes, rest replicated."""
    axes = batch_axes(mesh, rules)
    return NamedSharding(mesh, PartitionSpec(axes if axes else None))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_size_multiple(mesh: Mesh, rules: LogicalRules = DEFAULT_RULES) -> int:
    """Global batch sizes must be multiples of this (product of the batch mesh axes)."""
    return math.prod(mesh.shape[a] for a in batch_axes(mesh, rules))


# ----------------------------------------------------------------------------------------------
# Creating sharded models
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ShardedModel:
    """An NNX model split for pjit-style step functions.

    graphdef: static structure (hashable; a static jit argument or closed over).
    state:    nnx.State of jax.Arrays, each already laid out as ``shardings`` says.
    shardings: the same tree with NamedShardings: pass as in_shardings/out_shardings.
    """

    graphdef: nnx.GraphDef
    state: nnx.State
    shardings: nnx.State
    mesh: Mesh

    def merge(self) -> nnx.Module:
        """The module view (shares the sharded arrays; no copy)."""
        return nnx.merge(self.graphdef, self.state)


def abstract_sharded_state(
    model_factory: Callable[..., nnx.Module],
    config: Any,
    mesh: Mesh,
    rules: LogicalRules = DEFAULT_RULES,
) -> tuple[nnx.GraphDef, nnx.State, nnx.State]:
    """(graphdef, abstract state of ShapeDtypeStructs with .sharding, shardings), no FLOPs or
    memory: what an AOT compile check (``jit(...).lower(abstract).compile()``) needs."""
    abstract = nnx.eval_shape(lambda: model_factory(config, rngs=nnx.Rngs(0)))
    graphdef, abs_state = nnx.split(abstract)
    shardings = state_shardings(abs_state, mesh, rules)
    abs_state = jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abs_state, shardings
    )
    return graphdef, abs_state, shardings


def create_sharded_model(
    model_factory: Callable[..., nnx.Module],
    config: Any,
    mesh: Mesh,
    rules: LogicalRules = DEFAULT_RULES,
    seed: int = 0,
) -> ShardedModel:
    """Build ``model_factory(config, rngs=nnx.Rngs(seed))`` with every array born sharded.

    eval_shape gives shapes and logical axes; the rules give NamedShardings; one jitted init with
    those out_shardings makes each device compute only its own shards.
    """
    graphdef, _, shardings = abstract_sharded_state(model_factory, config, mesh, rules)

    def init() -> nnx.State:
        return nnx.split(model_factory(config, rngs=nnx.Rngs(seed)))[1]

    state = jax.jit(init, out_shardings=shardings)()
    return ShardedModel(graphdef=graphdef, state=state, shardings=shardings, mesh=mesh)
