"""Checkpoints of the whole training state with orbax's CheckpointManager.

A checkpoint holds two items (flax examples/gemma/train.py and maxtext's data-iterator
checkpointing):

    <directory>/<step>/state/      the state pytree (policy params, optimizer state, beliefs,
                                   PRNG key data, step counter, ...) via StandardSave
    <directory>/<step>/metadata/   a JSON dict (data position, config summary, ...) via JsonSave

Guarantees this wrapper adds to orbax:
- No NaN overwrites good state: `save` raises FloatingPointError (and writes nothing) if a
  floating leaf of the state is NaN/inf, so the newest checkpoint is always a healthy one.
- Durable on return: saving is synchronous (orbax async checkpointing off, and we wait for the
  finaliser), so a kill -9 right after `save` returns cannot lose that step.
- Atomic: orbax writes `<step>.orbax-checkpoint-tmp-*` and renames it (POSIX) or writes a
  `commit_success.txt` marker last (GCS); a killed save leaves a tmp dir, which is never listed as
  a step. In both modes a finished step contains `commit_success.txt`; on start-up a step
  directory without it (e.g. an interrupted copy) is renamed to `<step>.incomplete` and ignored,
  because orbax would otherwise count it as the latest step and refuse to save earlier steps.
- Restores with the caller's shardings: pass an abstract state whose leaves are
  jax.ShapeDtypeStruct with `.sharding` (jax.eval_shape + shardings), and sharded state comes
  back sharded, never materialised on one device.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

PyTree = Any

STATE = "state"
METADATA = "metadata"
# Written by orbax as the last file of every finished step, in both atomicity modes.
COMMIT_MARKER = "commit_success.txt"
INCOMPLETE_SUFFIX = ".incomplete"

log = logging.getLogger(__name__)


def _is_float_dtype(dtype: Any) -> bool:
    # jnp.issubdtype knows bfloat16 / float8; typed PRNG key dtypes are not inexact.
    if dtype is None:
        return False
    try:
        return bool(jnp.issubdtype(dtype, jnp.inexact))
    except TypeError:
        return False


@jax.jit
def _all_finite(leaves: list[jax.Array]) -> jax.Array:
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


def nonfinite_leaves(tree: PyTree) -> list[str]:
    """Key paths of the floating leaves of `tree` that contain a NaN or inf.

    Device arrays are reduced on device, one jitted reduction per set of devices (a jit call
    cannot mix arrays committed to different devices), and fetched in one host sync; the
    reductions of global multi-host arrays are replicated scalars, so every process gets the same
    answer. Per-leaf paths are only computed when something is wrong.
    """
    groups: dict[frozenset, list[tuple[Any, jax.Array]]] = {}
    host = []
    for path, x in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if isinstance(x, float):
            host.append((path, x))
        elif _is_float_dtype(getattr(x, "dtype", None)):
            if isinstance(x, jax.Array):
                groups.setdefault(frozenset(x.sharding.device_set), []).append((path, x))
            else:
                host.append((path, x))
    bad = [p for p, x in host if not np.all(np.isfinite(np.asarray(x)))]
    oks = jax.device_get([_all_finite([x for _, x in g]) for g in groups.values()])
    for ok, group in zip(oks, groups.values(), strict=True):
        if not ok:
            bad += [p for p, x in group if not bool(jnp.all(jnp.isfinite(x)))]
    return [jax.tree_util.keystr(p) for p in bad]


class Checkpointer:
    """Saves and restores (state pytree, JSON metadata) pairs under one directory.

        ckpt = Checkpointer(workdir + "/checkpoints", max_to_keep=3, save_interval_steps=100)
        restored = ckpt.restore_latest(abstract_state)
        if restored is not None:
            step, state, meta = restored
        ...
        ckpt.save(step, state, {"data_position": pos})   # True if it saved
        ckpt.close()

    Call save/restore on every process (orbax coordinates multi-host writes).
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        *,
        max_to_keep: int | None = 3,
        save_interval_steps: int = 1,
    ):
        self.directory = epath.Path(directory)
        if jax.process_index() == 0:
            _quarantine_incomplete_steps(self.directory)
        if jax.process_count() > 1:
            ocp.multihost.sync_global_processes("insight_jax_checkpointer_init")
        preservation = (
            ocp.checkpoint_managers.LatestN(max_to_keep)
            if max_to_keep
            else ocp.checkpoint_managers.PreserveAll()
        )
        # Explicit policy: orbax's default also saves the very first step offered (its
        # InitialSavePolicy), which would make save_interval_steps lie about the first save.
        policies = ocp.checkpoint_managers
        save_policy = policies.AnySavePolicy(
            [
                policies.FixedIntervalPolicy(save_interval_steps),
                policies.PreemptionCheckpointingPolicy(),  # a TPU preemption notice
            ]
        )
        options = ocp.CheckpointManagerOptions(
            save_decision_policy=save_policy,
            preservation_policy=preservation,
            enable_async_checkpointing=False,
            cleanup_tmp_directories=True,  # leftovers of killed saves
            create=True,
        )
        self._manager = ocp.CheckpointManager(
            self.directory, item_names=(STATE, METADATA), options=options
        )

    def should_save(self, step: int) -> bool:
        """Whether save(step) would write (interval reached and step newer than the latest)."""
        return self._manager.should_save(step)

    def save(
        self,
        step: int,
        state: PyTree,
        metadata: Mapping[str, Any] | None = None,
        *,
        force: bool = False,
    ) -> bool:
        """Save `state` and JSON `metadata` as `step`; return True if a checkpoint was written.

        Returns False without touching (or waiting on) the state when the step is not due
        (step % save_interval_steps != 0 and no preemption notice, or step <= the latest step)
        unless force=True. Raises FloatingPointError, writing nothing, if a
        floating leaf is non-finite; TypeError if metadata is not JSON-serialisable. Returns
        once the checkpoint is on disk.
        """
        step = int(step)
        if not force and not self._manager.should_save(step):
            return False
        metadata = dict(metadata or {})
        try:
            json.dumps(metadata)
        except (TypeError, ValueError) as e:
            raise TypeError(f"checkpoint metadata must be JSON-serialisable: {e}") from e
        bad = nonfinite_leaves(state)
        if bad:
            raise FloatingPointError(
                f"refusing to checkpoint step {step}: non-finite values in {', '.join(bad)} "
                f"(latest good checkpoint stays step {self.latest_step()})"
            )
        saved = self._manager.save(
            step,
            args=ocp.args.Composite(
                **{STATE: ocp.args.StandardSave(state), METADATA: ocp.args.JsonSave(metadata)}
            ),
            force=force,
        )
        self._manager.wait_until_finished()
        return bool(saved)

    def all_steps(self) -> list[int]:
        """Finished checkpoint steps, ascending."""
        return sorted(
            s for s in self._manager.all_steps() if (self._step_dir(s) / COMMIT_MARKER).exists()
        )

    def latest_step(self) -> int | None:
        steps = self.all_steps()
        return steps[-1] if steps else None

    def restore(self, step: int, abstract_state: PyTree) -> tuple[PyTree, dict]:
        """(state, metadata) of `step`, state laid out like `abstract_state`.

        abstract_state: a pytree of jax.ShapeDtypeStruct (with .sharding for sharded restore),
        or concrete arrays whose shape/dtype/sharding are used; same tree structure as saved.
        """
        abstract_state = jax.tree.map(_as_abstract, abstract_state)
        restored = self._manager.restore(
            step,
            args=ocp.args.Composite(
                **{
                    STATE: ocp.args.StandardRestore(abstract_state),
                    METADATA: ocp.args.JsonRestore(),
                }
            ),
        )
        return restored[STATE], dict(restored[METADATA] or {})

    def restore_latest(self, abstract_state: PyTree) -> tuple[int, PyTree, dict] | None:
        """(step, state, metadata) of the latest finished checkpoint, or None if there is none."""
        step = self.latest_step()
        if step is None:
            return None
        state, metadata = self.restore(step, abstract_state)
        return step, state, metadata

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _step_dir(self, step: int) -> epath.Path:
        return self.directory / str(step)


def _as_abstract(x: Any) -> Any:
    if isinstance(x, jax.Array):
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
    return x


def _quarantine_incomplete_steps(directory: epath.Path) -> None:
    """Rename step dirs lacking the commit marker to `<step>.incomplete[-<time>]` (kept, not
    deleted, for inspection). Tmp dirs of killed saves are orbax's to clean up."""
    if not directory.exists():
        return
    for path in directory.iterdir():
        if not (path.is_dir() and path.name.isdigit()) or (path / COMMIT_MARKER).exists():
            continue
        target = directory / (path.name + INCOMPLETE_SUFFIX)
        if target.exists():
            target = directory / f"{path.name}{INCOMPLETE_SUFFIX}-{time.time_ns()}"
        log.warning("checkpoint %s has no %s; moving it to %s", path, COMMIT_MARKER, target)
        path.rename(target)
