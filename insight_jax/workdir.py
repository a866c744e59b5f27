"""A workdir belongs to one run: an exclusive lock and a config fingerprint.

The trainer, before any work:

    lock = WorkdirLock(workdir)          # WorkdirBusy if another live process holds it
    with lock:
        resumed = claim(workdir, config, resume_safe=RESUME_SAFE_KEYS)
        ...

`WorkdirLock` stops two processes from training into one workdir (both would write every
metrics record and race on checkpoints). `claim` stops a rerun with another config from resuming
the old run's checkpoints: `<workdir>/config.json` is the run's fingerprint, and a rerun may
differ from it only in the keys of `resume_safe`.

Pure Python (no jax): importable and testable without a device.
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import json
import math
import numbers
import os
import socket
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

# Keys a rerun may change and still resume the same run. Each changes only how long the run goes
# on or what it writes on the side, never the trajectory of steps already taken:
RESUME_SAFE_KEYS: tuple[str, ...] = (
    # extending a run: steps 0..n-1 are the same either way (under a constant learning rate:
    # train.resume_safe_keys drops it for cosine, and the trainer refuses a total below the
    # steps already done)
    "rl.steps",
    "eval.every",  # evaluation cadence: evaluation reads the policy, it does not change it
    "checkpoint.every",  # checkpoint cadence: a restored step replays deterministically
    "checkpoint.max_to_keep",  # checkpoint retention: how many old steps stay on disk
    "warmstart.cache_dir",  # where a cache shared between runs lives, not what it holds
    "task.pool_dir",  # where content-keyed prompt pools are cached, likewise
)

LOCK_NAME = ".lock"
CONFIG_NAME = "config.json"
# Files and folders a run writes; a workdir holding any of them but no config.json was written by
# a version that did not fingerprint its runs (or its config.json was deleted).
RUN_ARTEFACTS = ("checkpoints", "metrics.jsonl", "summary.json", "tb")


class WorkdirBusy(RuntimeError):
    """Another live process holds the workdir's lock."""


class WorkdirMismatch(ValueError):
    """The workdir holds a run whose config differs from this one in keys unsafe to change."""


# ------------------------------------------------------------------------------------- lock


class WorkdirLock:
    """An exclusive lock on `<workdir>/.lock`, taken on construction, released on exit/release().

    Uses fcntl.flock(LOCK_EX | LOCK_NB) on a file descriptor held open for the lock's life. The
    kernel drops the lock when the holder's descriptor closes, also when the process is killed
    (SIGKILL included), so a lock file left by a dead process is simply taken over: there is no
    stale-pid guessing. The holder writes its pid, host and start time into the file only so
    that `WorkdirBusy` can name it. The file itself is never deleted (deleting a flock'ed file
    lets a late opener lock the unlinked inode while a newcomer locks a new one).

    A second WorkdirLock on the same workdir is refused also within one process (each opens its
    own file description). A forked child shares the parent's descriptor and so its lock;
    descriptors are not inherited across exec (Python opens them non-inheritable).

    Limitation: flock is per machine. Workdirs shared between hosts (NFS, GCS fuse) are not
    protected against a process on another host; on a multi-host job only process 0 should take
    the lock.
    """

    def __init__(self, workdir: str | os.PathLike):
        self.workdir = Path(workdir)
        self.path = self.workdir / LOCK_NAME
        self.workdir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise WorkdirBusy(
                    f"workdir {self.workdir} is in use by {_describe_holder(self.path)} "
                    f"(lock file {self.path}). Wait for that run to end or stop it, "
                    "or use another workdir."
                ) from None
            raise OSError(e.errno, f"cannot lock {self.path}: {e.strerror}") from e
        self._fd: int | None = fd
        _write_holder(fd)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Unlock and close (idempotent). The lock file stays, see the class docstring."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def __enter__(self) -> WorkdirLock:
        if self._fd is None:
            raise RuntimeError(f"the lock on {self.workdir} was released; take a new WorkdirLock")
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _write_holder(fd: int) -> None:
    """Replace the lock file's text with this process's pid, host and start time (UTC)."""
    started = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    info = {"pid": os.getpid(), "host": socket.gethostname(), "started": started}
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)


def _describe_holder(lock_path: Path) -> str:
    """'pid 123 on host h (since ...)' from the lock file (a new holder may not have filled it)."""
    try:
        info = json.loads(lock_path.read_text(encoding="utf-8"))
        pid, host, started = info["pid"], info["host"], info["started"]
    except (OSError, ValueError, KeyError, TypeError):
        return "another process (its pid is not written yet)"
    same = pid == os.getpid() and host == socket.gethostname()
    return f"pid {pid} on host {host} (since {started}){' (this process)' if same else ''}"


# ------------------------------------------------------------------------------------ claim


def claim(
    workdir: str | os.PathLike,
    config: Mapping[str, Any],
    resume_safe: Iterable[str] = (),
    added_at: Mapping[str, Any] | None = None,
) -> bool:
    """Make `<workdir>/config.json` this run's fingerprint; True when resuming the run it holds.

    - No config.json: write it (atomically, JSON, sorted keys) and return False, a new run; but a
      workdir that already holds run output (checkpoints/, metrics.jsonl, ...) without one is
      refused, since nothing says which config wrote it.
    - config.json exists: compare the flattened configs (dotted keys such as "rl.steps"; tuples
      and lists alike, 1 == 1.0, but True != 1). Equal: return True. Differing only in keys of
      resume_safe (exact dotted keys): rewrite config.json with the new config, return True.
      A key the old config lacks whose new value equals added_at[key] (flattened defaults of
      keys a newer version added, at which they keep the old behaviour) is no difference
      either: a run started before the key existed resumes on the newer code.
      Otherwise raise WorkdirMismatch listing every differing key, old -> new.

    Call it while holding the WorkdirLock, so two processes cannot both write config.json.
    """
    workdir = Path(workdir)
    if not isinstance(config, Mapping) and hasattr(config, "to_dict"):
        config = config.to_dict()  # an ml_collections.ConfigDict
    if not isinstance(config, Mapping):
        raise TypeError(f"config must be a mapping, got {type(config).__name__}")
    new = _to_json(config, "")
    safe = _check_keys(resume_safe)
    path = workdir / CONFIG_NAME
    text = json.dumps(new, sort_keys=True, indent=1) + "\n"
    if not path.exists():
        found = [name for name in RUN_ARTEFACTS if _nonempty(workdir / name)]
        if found:
            raise WorkdirMismatch(
                f"workdir {workdir} holds {', '.join(found)} but no {CONFIG_NAME} (written by an "
                "older version, or config.json was deleted), so it cannot be checked that they "
                f"belong to this config. {_how_to_proceed(workdir)}"
            )
        workdir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, text)
        return False
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise WorkdirMismatch(f"cannot read {path}: {e}. {_how_to_proceed(workdir)}") from e
    if not isinstance(old, dict):
        raise WorkdirMismatch(
            f"{path} holds a {type(old).__name__}, not a config. {_how_to_proceed(workdir)}"
        )
    diffs = config_diff(old, new)
    added = dict(added_at or {})
    unsafe = {
        k: (a, b)
        for k, (a, b) in diffs.items()
        if k not in safe and not (a is MISSING and k in added and same_value(b, added[k]))
    }
    if unsafe:
        lines = [f"  {k}: {_show(a)} -> {_show(b)}" for k, (a, b) in unsafe.items()]
        also = sorted(set(diffs) - set(unsafe))
        raise WorkdirMismatch(
            f"workdir {workdir} belongs to another run: this config differs from its "
            f"{CONFIG_NAME} in {len(unsafe)} key(s) that must not change on resume:\n"
            + "\n".join(lines)
            + (f"\n(also changed, which is allowed: {', '.join(also)})" if also else "")
            + f"\nKeys that may change on resume: {', '.join(sorted(safe)) or 'none'}.\n"
            + _how_to_proceed(workdir)
        )
    if diffs:
        write_text_atomic(path, text)
    return True


def config_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """{dotted key: (old value, new value)} for every leaf that differs, sorted by key.

    A key present on one side only has the value MISSING on the other.
    """
    a, b = flatten(old), flatten(new)
    out = {}
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k, MISSING), b.get(k, MISSING)
        if va is MISSING or vb is MISSING or not same_value(va, vb):
            out[k] = (va, vb)
    return out


class _Missing:
    def __repr__(self) -> str:
        return "(absent)"


MISSING = _Missing()


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as {"a.b.c": leaf}. An empty mapping is a leaf ({}), lists are leaves."""
    out: dict[str, Any] = {}
    for k, v in config.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def same_value(a: Any, b: Any) -> bool:
    """Config-value equality: ints and floats of equal value are equal (NaN equals NaN), bools
    equal only bools, tuples and lists compare element-wise, mappings key by key."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, numbers.Real) and isinstance(b, numbers.Real):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(same_value(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def _to_json(value: Any, key: str) -> Any:
    """value with tuples as lists and numpy-like numbers as python ones; TypeError naming the key
    for anything JSON cannot hold (the fingerprint must survive a write and a read unchanged)."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"config key {key + '.' if key else ''}{k!r}: keys must be strings")
            out[k] = _to_json(v, f"{key}.{k}" if key else k)
        return out
    if isinstance(value, list | tuple):
        return [_to_json(v, f"{key}[{i}]") for i, v in enumerate(value)]
    raise TypeError(
        f"config key {key}: {type(value).__name__} {value!r} cannot be written to {CONFIG_NAME} "
        "(allowed: None, bool, int, float, str, and lists/tuples/mappings of them)"
    )


def _check_keys(keys: Iterable[str]) -> frozenset[str]:
    keys = (keys,) if isinstance(keys, str) else tuple(keys)
    bad = [k for k in keys if not isinstance(k, str) or not k]
    if bad:
        raise TypeError(f"resume_safe must hold dotted config keys (non-empty str), got {bad!r}")
    return frozenset(keys)


def _nonempty(path: Path) -> bool:
    if path.is_dir():
        return any(path.iterdir())
    return path.is_file() and path.stat().st_size > 0


def _show(value: Any) -> str:
    return repr(value) if value is MISSING else json.dumps(value)


def _how_to_proceed(workdir: Path) -> str:
    return (
        f"Use a new workdir for this config, or delete {workdir} to start over "
        "(its checkpoints and metrics are then lost)."
    )


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write text so that a kill -9 leaves the old file or the new one, never a torn one:
    a temporary file in the same folder, fsync'ed, then os.replace (atomic on POSIX)."""
    path = Path(path)
    # Unique per writer: processes of a multi-host run on one shared folder may share a pid.
    tmp = path.with_name(
        f".{path.name}.tmp-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex}"
    )
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
