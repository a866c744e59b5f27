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
  A save killed after orbax's commit but before our manifest leaves a step without one, which
  `restore_latest` moves aside like a damaged one: the run replays that step.
- Checks itself: after orbax has finished a step, process 0 writes `<step>/checksums.json` (size
  and sha256 of every file of the step, written atomically, last). `restore_latest` verifies the
  newest step against it first; a step that fails (a flipped bit, a truncated or deleted file, a
  torn or missing manifest) or whose restore raises is logged, moved aside to
  `<step>.damaged[-<time>]` (kept, not deleted) and the next-newest step is tried. The caller then
  replays from the older step, as after a kill -9. Hashing reads every file once: free for MB
  checkpoints, about a second per GB and per core for GB ones (files hashed in parallel threads).
- Restores with the caller's shardings: pass an abstract state whose leaves are
  jax.ShapeDtypeStruct with `.sharding` (jax.eval_shape + shardings), and sharded state comes
  back sharded, never materialised on one device.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import json
import logging
import os
import time
from collections.abc import Iterator, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from insight_jax.rl.host_data import every_process_says, process_0_says

PyTree = Any

STATE = "state"
METADATA = "metadata"
# Written by orbax as the last file of every finished step, in both atomicity modes.
COMMIT_MARKER = "commit_success.txt"
INCOMPLETE_SUFFIX = ".incomplete"
DAMAGED_SUFFIX = ".damaged"
# Written by us after orbax's commit marker: relative path -> size and sha256 of every file.
MANIFEST = "checksums.json"
MANIFEST_FORMAT = 1
_HASH_CHUNK = 1 << 20

log = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    """No checkpoint of a directory that has some could be restored intact."""


@dataclasses.dataclass(frozen=True)
class DamagedStep:
    """A checkpoint step that failed its checks and was moved aside by `restore_latest`."""

    step: int
    moved_to: str
    problems: tuple[str, ...]

    @property
    def message(self) -> str:
        return (
            f"checkpoint step {self.step} is damaged ({'; '.join(self.problems)}); "
            f"moved it to {self.moved_to}"
        )


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
        # LatestN(None) keeps every step (this orbax has no public PreserveAll).
        preservation = ocp.checkpoint_managers.LatestN(max_to_keep or None)
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
        # Steps the last restore_latest moved aside, newest first.
        self.damaged: list[DamagedStep] = []

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
        once the checkpoint and its checksum manifest are on disk. Multi-host: orbax's own
        barrier ends its save, then process 0 alone hashes the step (a shared filesystem) and
        writes the manifest, and every process waits for it before returning.
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
        if not saved:
            return False
        if jax.process_index() == 0:
            write_manifest(self._step_dir(step))
        if jax.process_count() > 1:
            ocp.multihost.sync_global_processes(f"insight_jax_checkpoint_manifest_{step}")
        return True

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
        Raises CheckpointError (moving nothing) if the step fails its checksums.
        """
        problems = self._problems(step)
        if problems:
            raise CheckpointError(
                f"checkpoint step {step} in {self.directory} is damaged: {'; '.join(problems)}"
            )
        return self._restore_unchecked(step, abstract_state)

    def restore_latest(self, abstract_state: PyTree) -> tuple[int, PyTree, dict] | None:
        """(step, state, metadata) of the newest intact checkpoint, or None if there is none.

        Steps are tried newest first. One that fails its checksums, or whose restore raises, is
        logged and skipped; once an older step restored, the skipped ones are moved aside to
        `<step>.damaged[-<time>]` (listed in `self.damaged`, whose `.message` the caller can
        print) so that the replayed steps can be saved again under their numbers. If every step
        fails, nothing is moved (a restore error may be the caller's abstract state) and
        CheckpointError names the directory, the steps and their problems.
        """
        self.damaged = []
        failed: list[tuple[int, list[str]]] = []
        last_error = None
        for step in reversed(self.all_steps()):
            problems = self._problems(step)
            if not problems:
                try:
                    state, metadata = self._restore_unchecked(step, abstract_state)
                except Exception as e:  # reported; raised as the cause if no step restores
                    last_error = e
                    problems = [f"restore failed: {type(e).__name__}: {e}"]
                if every_process_says(not problems):
                    self._move_aside(failed)
                    return step, state, metadata
                problems = problems or ["restore failed on another process"]
            log.warning("checkpoint step %d in %s: %s", step, self.directory, "; ".join(problems))
            failed.append((step, problems))
        if not failed:
            return None
        listing = "\n".join(f"  step {s}: {'; '.join(p)}" for s, p in failed)
        hint = (
            "Every step passed its checksums, so check that abstract_state matches the saved "
            "state. "
            if all(p[0].startswith("restore failed") for _, p in failed)
            else ""
        )
        raise CheckpointError(
            f"no intact checkpoint in {self.directory}; every step failed:\n{listing}\n{hint}"
            f"To start fresh, move or delete {self.directory} (or use another workdir); to keep "
            "the run, put a good copy of one of these steps back."
        ) from last_error

    def _restore_unchecked(self, step: int, abstract_state: PyTree) -> tuple[PyTree, dict]:
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

    def _problems(self, step: int) -> list[str]:
        """checksum_problems of `step`, checked by process 0 and agreed by all processes."""
        problems = checksum_problems(self._step_dir(step)) if jax.process_index() == 0 else []
        if process_0_says(not problems):
            return []
        return problems or ["failed its checksums (see the log of process 0)"]

    def _move_aside(self, failed: list[tuple[int, list[str]]]) -> None:
        """Renames the failed steps to `<step>.damaged[-<time>]` and makes orbax forget them."""
        if not failed:
            return
        if jax.process_index() == 0:
            for step, problems in failed:
                target = _move_aside(self._step_dir(step), DAMAGED_SUFFIX)
                self.damaged.append(DamagedStep(step, str(target), tuple(problems)))
                log.warning("%s", self.damaged[-1].message)
        if jax.process_count() > 1:
            ocp.multihost.sync_global_processes("insight_jax_checkpoint_moved_aside")
            if jax.process_index() != 0:
                self.damaged = [DamagedStep(s, "(moved by process 0)", tuple(p)) for s, p in failed]
        self._manager.reload()  # orbax caches its step list

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _step_dir(self, step: int) -> epath.Path:
        return self.directory / str(step)


def committed_steps(directory: str | os.PathLike) -> list[int]:
    """Steps under `directory` whose save finished (commit marker), ascending; reads the
    listing only (no orbax manager, nothing moved), so a caller can look before it commits."""
    directory = epath.Path(directory)
    if not directory.exists():
        return []
    return sorted(
        int(p.name)
        for p in directory.iterdir()
        if p.name.isdigit() and (p / COMMIT_MARKER).exists()
    )


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
        target = _move_aside(path, INCOMPLETE_SUFFIX)
        log.warning("checkpoint %s has no %s; moved it to %s", path, COMMIT_MARKER, target)


def _move_aside(path: epath.Path, suffix: str) -> epath.Path:
    """Renames `path` to `<path><suffix>`, or `<path><suffix>-<time_ns>` if that exists."""
    target = path.parent / (path.name + suffix)
    if target.exists():
        target = path.parent / f"{path.name}{suffix}-{time.time_ns()}"
    path.rename(target)
    return target


def _files_under(directory: epath.Path, prefix: str = "") -> Iterator[tuple[str, epath.Path]]:
    """(relative posix path, path) of every file below `directory`, except the manifest."""
    for path in sorted(directory.iterdir()):
        rel = prefix + path.name
        if path.is_dir():
            yield from _files_under(path, rel + "/")
        elif not rel.startswith(MANIFEST):  # the manifest and its tmp file
            yield rel, path


def _sha256(path: epath.Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _hash_all(paths: list[epath.Path]) -> list[str]:
    # hashlib releases the GIL on large buffers, so threads hash files in parallel.
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(8, len(paths) or 1)) as pool:
        return list(pool.map(_sha256, paths))


def manifest_of(step_dir: epath.Path) -> dict[str, Any]:
    """{"format", "files": {relative path: {"size", "sha256"}}} of every file of `step_dir`."""
    files = list(_files_under(step_dir))
    digests = _hash_all([p for _, p in files])
    return {
        "format": MANIFEST_FORMAT,
        "files": {
            rel: {"size": path.stat().length, "sha256": digest}
            for (rel, path), digest in zip(files, digests, strict=True)
        },
    }


def write_manifest(step_dir: str | os.PathLike) -> None:
    """Writes `<step_dir>/checksums.json` atomically (a tmp file renamed over it)."""
    step_dir = epath.Path(step_dir)
    text = json.dumps(manifest_of(step_dir), indent=1, sort_keys=True)
    tmp = step_dir / f"{MANIFEST}.tmp-{time.time_ns()}"
    tmp.write_text(text)
    tmp.replace(step_dir / MANIFEST)


def checksum_problems(step_dir: str | os.PathLike) -> list[str]:
    """What is wrong with `step_dir` against its manifest; [] if every listed file is intact.

    A missing or unreadable manifest, a listed file missing, of another size or another
    sha256 is a problem. Files not listed (none are written after the manifest) are ignored.
    """
    step_dir = epath.Path(step_dir)
    manifest_path = step_dir / MANIFEST
    if not manifest_path.exists():
        return [f"no {MANIFEST} (a save killed before writing it, or the file was deleted)"]
    try:
        manifest = json.loads(manifest_path.read_text())
        files = manifest["files"]
        if manifest["format"] != MANIFEST_FORMAT or not isinstance(files, dict):
            raise ValueError(f"format {manifest['format']!r}, expected {MANIFEST_FORMAT}")
        expected = {rel: (int(e["size"]), str(e["sha256"])) for rel, e in files.items()}
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
        return [f"{MANIFEST} is unreadable ({type(e).__name__}: {e})"]
    problems, to_hash = [], []
    for rel, (size, _) in expected.items():
        path = step_dir / rel
        if not path.is_file():
            problems.append(f"{rel} is missing")
        elif (actual := path.stat().length) != size:
            problems.append(f"{rel} has {actual} bytes, {size} were saved")
        else:
            to_hash.append(rel)
    digests = _hash_all([step_dir / rel for rel in to_hash])
    problems += [
        f"{rel} has another sha256 than saved"
        for rel, digest in zip(to_hash, digests, strict=True)
        if digest != expected[rel][1]
    ]
    return problems
