"""Host data in a multi-controller run: every process holds only its devices' rows of a batch.

On a pod every host runs the same program. A batch-sharded array [B, ...] has, on each process,
the rows its devices hold (`local_rows`); a host builds a global array from just those rows
(`to_global`), reads back the rows it holds of a result (`local_values`), and the few small
per-prompt arrays every host needs whole (rewards of a step: M*K floats) are all-gathered
(`gather_rows`). With one process, every row is local and these are plain copies.

Nothing here gathers a large array: prompts are fetched and encoded, and completions decoded
and verified, by the host that holds them.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding


def local_rows(sharding: NamedSharding, num_rows: int) -> np.ndarray:
    """Sorted indices of the rows of a [num_rows, ...] array with `sharding` (rows split on
    dimension 0) that this process's devices hold (each once, however often replicated)."""
    rows: set[int] = set()
    for index in sharding.addressable_devices_indices_map((num_rows,)).values():
        start, stop, _ = index[0].indices(num_rows)
        rows.update(range(start, stop))
    return np.array(sorted(rows), np.int64)


def to_global(local: np.ndarray, rows: np.ndarray, sharding: NamedSharding, num_rows: int):
    """The global [num_rows, ...] array with `sharding` whose rows `rows` (this process's
    `local_rows`) are `local`; each device's block is read from this process's rows."""
    position = {int(r): i for i, r in enumerate(rows)}
    shape = (num_rows, *local.shape[1:])

    def block(index: tuple[slice, ...]) -> np.ndarray:
        start, stop, _ = index[0].indices(num_rows)
        first = position[start]
        return local[first : first + (stop - start)][(slice(None), *index[1:])]

    return _assemble(shape, sharding, block)


def _assemble(shape: tuple[int, ...], sharding: NamedSharding, block) -> jax.Array:
    """A global array from `block(index)` for each of this process's devices, each placed
    with an explicit device_put (so transfer guards see only explicit transfers)."""
    indices = sharding.addressable_devices_indices_map(shape)
    arrays = [jax.device_put(block(index), device) for device, index in indices.items()]
    return jax.make_array_from_single_device_arrays(shape, sharding, arrays)


def replicated(value: Any, sharding: NamedSharding) -> Any:
    """`value` (a pytree of host arrays equal on every process) as global arrays with a
    replicated `sharding` (jax.device_put needs every device addressable)."""
    return jax.tree.map(
        lambda x: _assemble(np.shape(x), sharding, lambda i: np.asarray(x)[i]), value
    )


def local_values(array: jax.Array) -> tuple[np.ndarray, np.ndarray]:
    """(rows, values): the rows of a row-sharded global array that this process holds, sorted,
    each once, and their values."""
    blocks: dict[int, np.ndarray] = {}
    for shard in array.addressable_shards:
        start = shard.index[0].indices(array.shape[0])[0] if shard.index else 0
        blocks.setdefault(start, np.asarray(shard.data))
    starts = sorted(blocks)
    rows = np.concatenate([np.arange(s, s + len(blocks[s])) for s in starts])
    return rows, np.concatenate([blocks[s] for s in starts])


def gather_rows(rows: np.ndarray, values: np.ndarray, num_rows: int) -> np.ndarray:
    """The whole [num_rows, ...] array on every process, from each process's (rows, values)
    (every row held by some process; equal row counts per process, as a batch split evenly over
    the mesh gives)."""
    if jax.process_count() == 1:
        out = np.empty((num_rows, *values.shape[1:]), values.dtype)
        out[rows] = values
        return out
    all_rows = np.asarray(multihost_utils.process_allgather(rows)).reshape(-1)
    all_values = np.asarray(multihost_utils.process_allgather(values))
    all_values = all_values.reshape(-1, *values.shape[1:])
    out = np.empty((num_rows, *values.shape[1:]), values.dtype)
    out[all_rows] = all_values
    return out


def process_0_says(flag: bool) -> bool:
    """Process 0's `flag` on every process (one process: `flag`), for decisions about shared
    files that the processes of one run must take together."""
    if jax.process_count() == 1:
        return flag
    return bool(multihost_utils.broadcast_one_to_all(np.int32(flag)))


def every_process_says(flag: bool) -> bool:
    """True on every process when `flag` is true on all of them (one process: `flag`): a
    decision that needs every host's part, such as a restore each host did for its shards."""
    if jax.process_count() == 1:
        return flag
    return bool(np.all(multihost_utils.process_allgather(np.int32(flag))))
