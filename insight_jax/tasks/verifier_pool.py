"""A bounded pool of verifier worker processes: every item gets a reward, in bounded time.

Why processes: a symbolic verifier (math-verify on sympy) can hang or exhaust memory on
pathological input, often inside one C call that no in-process timeout can interrupt, and
math-verify's own timeouts use ``signal.alarm``, which only works on the main thread of a process
(the trainer calls verifiers from wherever it likes). So items run in worker processes:

* **Fixed functions.** An item names a *kind*, a key of :data:`WORKER_FUNCTIONS`, a table fixed in
  this file that maps each kind to a function of our own code; data never names a function or a
  module. ``pool.map(kind, items)`` returns one float per item, in order.
* **Start-up.** Workers are forked by multiprocessing's ``"forkserver"`` server (never plain
  ``fork``: the parent is a multi-threaded JAX process, and a forked copy of its locks can
  deadlock). The server imports :data:`PRELOAD_MODULES` (math-verify, sympy) once, so a
  replacement worker is a fork of a process that has them: ~10 ms to start instead of ~0.5 s of
  imports. (math-verify still compiles its extraction regexes on a worker's first item, ~0.1 s,
  since preloading only imports; ``benchmarks/verify_speed.py`` measures both.) The server also
  keeps multiprocessing's default preload, ``__main__``: a script's main module is imported once
  in the server instead of once per worker, so it must guard its work with ``if __name__ ==
  "__main__"`` (as every multiprocessing user must). If some other code started the process's
  forkserver first, its preload list applies and workers import math-verify themselves on their
  first item (slower, still correct).
* **One item at a time per worker**, run on the worker's own main thread, so math-verify's
  signal-based timeouts also work inside as a first line (``inner_timeout_s``). The parent keeps
  two items sent to each worker (one running, one waiting in its pipe, so the worker does not
  idle while the parent is descheduled) and waits with :func:`multiprocessing.connection.wait`
  on the workers' pipes and process sentinels until the earliest per-item deadline.
* **Our own per-item timeout.** An item not answered within ``timeout_s`` of its start (its
  dispatch to an idle worker, or the answer to the item before it) gets 0.0; its worker is
  killed (``SIGKILL``) and replaced, the item waiting behind it is sent again, and the other
  items carry on. A worker that dies (crash, segfault, OOM kill, killed from outside) gives the
  item it was running 0.0 and is replaced.
  Any exception inside the worker is 0.0 for that item; so is a result that is not a finite
  number. So one pathological item costs at most ~``timeout_s`` of one worker's time, and a call
  never hangs and never raises because of an item.
* **Bounded memory.** Each worker caps its address space with ``RLIMIT_AS`` at its size at
  start plus ``memory_headroom_bytes`` (2 GiB by default), so a blow-up is a ``MemoryError`` in
  the worker (0.0) instead of the machine's OOM killer picking a victim.
* **Bounded input.** Items are tuples of ``str``/``int``/``float``/``None`` whose strings hold at
  most ``max_item_chars`` characters in all; the caller cuts long inputs down first (the math task
  sends only a bounded candidate answer, see :mod:`insight_jax.tasks.math`). A larger item is a
  ``ValueError`` before any work: it is a bug of the caller, not model output.
* **Clean shutdown.** :meth:`VerifierPool.close` (also the context manager's exit) asks each
  worker to stop, waits briefly, kills what is left and joins every process, so no zombie is
  left; the forkserver reaps its children. Workers are daemonic, exit when the parent's end of
  their pipe closes, and a thread in each checks every second that the parent is alive, so a
  parent killed outright (even mid-item) does not leak them. Calls are serialised
  by a lock; any thread of the parent may call (only the workers use signals).
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import math
import multiprocessing
import multiprocessing.connection
import os
import resource
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

logger = logging.getLogger(__name__)

# kind -> (module, function) of our own code. Workers resolve a kind only through this table; the
# modules are the forkserver's preload list. The probe kinds exercise the pool itself (tests and
# benchmarks/verify_speed.py): an item that sleeps, one that kills its worker, one that allocates.
WORKER_FUNCTIONS: dict[str, tuple[str, str]] = {
    "math": ("insight_jax.tasks.math", "reward_in_worker"),
    "math_gold": ("insight_jax.tasks.math", "gold_check_in_worker"),
    "probe_sleep": (__name__, "probe_sleep"),
    "probe_exit": (__name__, "probe_exit"),
    "probe_allocate": (__name__, "probe_allocate"),
}
# Imported once by the forkserver so that every worker forks with them loaded: the modules of
# WORKER_FUNCTIONS, and math-verify (which they import lazily, so the parent does not pay for
# sympy). Without it a fresh worker spends ~0.5 s importing sympy on its first item.
PRELOAD_MODULES = ("math_verify", *sorted({module for module, _ in WORKER_FUNCTIONS.values()}))

DEFAULT_TIMEOUT_S = 5.0
DEFAULT_MEMORY_HEADROOM_BYTES = 2 << 30
DEFAULT_MAX_ITEM_CHARS = 16_384
# Workers ask to stop on close(); one still running after this long is killed.
_CLOSE_GRACE_S = 1.0
# Workers that die before their start-up message mean the pool cannot run at all (e.g. a memory
# headroom too small for Python); after this many in a row map() raises instead of looping.
_MAX_START_FAILURES = 8
# Items sent ahead to a worker: the one it runs plus one waiting in its pipe, so it starts the
# next as soon as it answers, without waiting for the parent to be scheduled (each item's timeout
# still starts only when the item does).
_QUEUE_DEPTH = 2
# The first message of every worker, sent once it is set up and before it reads any item.
_READY = "ready"
# A new worker's own start-up (fork, and re-running the parent's main module as multiprocessing
# does) is not charged to the item it was sent: that item's timeout starts with the worker's
# ready message, and a worker not ready within STARTUP_S is treated as timed out.
STARTUP_S = 60.0

_SCALARS = (str, int, float, type(None))


def default_num_workers() -> int:
    """``min(os.cpu_count(), 4)``: verification shares the machine with the trainer."""
    return max(1, min(os.cpu_count() or 1, 4))


# --- the worker process --------------------------------------------------------------------------


def probe_sleep(seconds: float) -> float:
    """Probe kind: sleeps ``seconds`` (a stand-in for a hanging verifier), then returns 1.0."""
    time.sleep(seconds)
    return 1.0


def probe_exit(code: int) -> float:
    """Probe kind: the worker exits at once with ``code`` (a stand-in for a crash)."""
    os._exit(code)


def probe_allocate(num_bytes: int) -> float:
    """Probe kind: allocates ``num_bytes`` and returns 1.0 (0.0 via MemoryError over the cap)."""
    block = bytearray(num_bytes)
    return 1.0 if len(block) == num_bytes else 0.0


def _address_space_bytes() -> int:
    """Virtual size of this process (first field of /proc/self/statm, in pages)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def _limit_memory(headroom_bytes: int) -> None:
    """Caps this process's address space at its current size plus ``headroom_bytes``."""
    limit = _address_space_bytes() + headroom_bytes
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def _resolve(kind: str, cache: dict[str, Callable[..., Any]]) -> Callable[..., Any]:
    fn = cache.get(kind)
    if fn is None:
        module, name = WORKER_FUNCTIONS[kind]
        fn = cache[kind] = getattr(importlib.import_module(module), name)
    return fn


def _run_item(fn: Callable[..., Any], args: tuple[Any, ...]) -> float:
    """``fn(*args)`` as a finite float; 0.0 for anything else, including any exception."""
    try:
        value = float(fn(*args))
    except BaseException:  # MemoryError, RecursionError, math-verify's TimeoutException...
        return 0.0
    return value if math.isfinite(value) else 0.0


def _exit_after(pool_pid: int) -> None:
    """Ends this worker once the pool's process is gone (checked every second): the pipe's EOF
    only shows between items, and an item can run far longer when its parent was killed."""
    while True:
        time.sleep(1.0)
        try:
            os.kill(pool_pid, 0)
        except ProcessLookupError:
            os._exit(1)
        except PermissionError:
            pass  # alive, under another user (cannot happen for our own parent; harmless)


def _worker_main(
    conn: multiprocessing.connection.Connection,
    memory_headroom_bytes: int,
    inner_timeout_s: int,
    pool_pid: int,
) -> None:
    """Worker loop: receive ``(item_id, kind, args)``, reply ``(item_id, reward)``; ``None`` stops.

    Runs on the main thread of the worker process, so signal-based timeouts work in ``fn``.
    """
    threading.Thread(target=_exit_after, args=(pool_pid,), daemon=True).start()
    # Ctrl-C reaches the whole process group; the parent decides what stops, not the worker.
    global _inner_timeout_s
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _limit_memory(memory_headroom_bytes)
    _inner_timeout_s = inner_timeout_s
    conn.send(_READY)
    cache: dict[str, Callable[..., Any]] = {}
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):  # the parent is gone
            return
        if message is None:
            return
        item_id, kind, args = message
        try:
            fn = _resolve(kind, cache)
        except BaseException:  # a broken import must not kill the worker loop
            reward = 0.0
        else:
            reward = _run_item(fn, args)
        try:
            conn.send((item_id, reward))
        except (BrokenPipeError, OSError):
            return


# Set in each worker from its pool's inner_timeout_s; the default applies in-process.
_inner_timeout_s = max(1, int(DEFAULT_TIMEOUT_S) // 2)


def inner_timeout_s() -> int:
    """The whole seconds worker functions give math-verify's signal-based timeouts (>= 1)."""
    return _inner_timeout_s


# --- the parent side -----------------------------------------------------------------------------


@dataclasses.dataclass
class _Worker:
    process: multiprocessing.process.BaseProcess
    conn: multiprocessing.connection.Connection
    # Indices (into the current map's items) sent and not yet answered, in order; the first is
    # running, the others wait in the pipe so the worker never idles between items.
    queue: deque[int] = dataclasses.field(default_factory=deque)
    deadline: float = math.inf  # of the first item: timeout_s after it started
    ready: bool = False  # its start-up message has arrived


@dataclasses.dataclass
class PoolStats:
    """Counters since the pool started (for logs and benchmarks)."""

    items: int = 0
    timeouts: int = 0
    deaths: int = 0
    replacements: int = 0


class VerifierPool:
    """A fixed-size pool of verifier worker processes (design and guarantees: module docstring).

    Args:
      num_workers: worker processes (default :func:`default_num_workers`).
      timeout_s: per-item wall-clock budget, from when the item starts (its worker is ready and
        has answered the item before it); a later answer is 0.0 and the worker is killed and
        replaced.
      memory_headroom_bytes: address space a worker may take beyond its size at start
        (``RLIMIT_AS``); beyond it allocations fail with ``MemoryError`` (item 0.0).
      max_item_chars: most characters an item's strings may hold in all.
      inner_timeout_s: whole seconds for timeouts inside the worker (math-verify's
        ``signal.alarm``); default ``max(1, int(timeout_s) // 2)`` so they usually fire first and
        the worker survives a slow item.

    Use as a context manager or call :meth:`close`::

        with VerifierPool(num_workers=2, timeout_s=5.0) as pool:
            rewards = pool.map("math", [(gold, "boxed", content), ...])
    """

    def __init__(
        self,
        num_workers: int | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        memory_headroom_bytes: int = DEFAULT_MEMORY_HEADROOM_BYTES,
        max_item_chars: int = DEFAULT_MAX_ITEM_CHARS,
        inner_timeout_s: int | None = None,
    ):
        num_workers = default_num_workers() if num_workers is None else num_workers
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 1:
            raise ValueError(f"num_workers must be an int >= 1, got {num_workers!r}")
        if not isinstance(timeout_s, (int, float)) or not 0 < timeout_s < math.inf:
            raise ValueError(f"timeout_s must be a finite number > 0, got {timeout_s!r}")
        if not isinstance(memory_headroom_bytes, int) or memory_headroom_bytes < 64 << 20:
            raise ValueError(
                f"memory_headroom_bytes must be an int >= 64 MiB, got {memory_headroom_bytes!r}"
            )
        if not isinstance(max_item_chars, int) or max_item_chars < 1:
            raise ValueError(f"max_item_chars must be an int >= 1, got {max_item_chars!r}")
        if inner_timeout_s is None:
            inner_timeout_s = max(1, int(timeout_s) // 2)
        if not isinstance(inner_timeout_s, int) or inner_timeout_s < 1:
            raise ValueError(f"inner_timeout_s must be an int >= 1, got {inner_timeout_s!r}")
        self.num_workers = num_workers
        self.timeout_s = float(timeout_s)
        self.memory_headroom_bytes = memory_headroom_bytes
        self.max_item_chars = max_item_chars
        self.inner_timeout_s = inner_timeout_s
        self.stats = PoolStats()
        self._start_failures = 0
        self._lock = threading.Lock()
        self._closed = False
        self._ctx = multiprocessing.get_context("forkserver")
        # Keep the default "__main__" (imported once by the server, not by every worker) and add
        # the verifier modules. Only takes effect if the forkserver is not running yet.
        self._ctx.set_forkserver_preload(["__main__", *PRELOAD_MODULES])
        self._workers: list[_Worker] = []
        try:
            self._workers = [self._start_worker() for _ in range(num_workers)]
        except BaseException:
            self.close()
            raise

    # -- lifecycle --

    def _start_worker(self) -> _Worker:
        parent_conn, child_conn = self._ctx.Pipe(duplex=True)
        process = self._ctx.Process(
            target=_worker_main,
            args=(child_conn, self.memory_headroom_bytes, self.inner_timeout_s, os.getpid()),
            name="insight-verifier",
            daemon=True,
        )
        process.start()
        child_conn.close()  # the worker holds its end; ours closing lets EOF reach us on death
        return _Worker(process=process, conn=parent_conn)

    @staticmethod
    def _stop(worker: _Worker, kill: bool) -> None:
        if kill:
            worker.process.kill()
        worker.process.join(timeout=_CLOSE_GRACE_S if not kill else None)
        if worker.process.is_alive():
            worker.process.kill()
            worker.process.join()
        worker.conn.close()
        worker.process.close()

    def _replace(self, slot: int) -> None:
        """Kills the worker in ``slot`` (if alive) and starts a fresh one there."""
        self._stop(self._workers[slot], kill=True)
        self.stats.replacements += 1
        self._workers[slot] = self._start_worker()

    def close(self) -> None:
        """Stops every worker (asks, waits up to 1 s, then kills) and joins them. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for worker in self._workers:
                try:
                    worker.conn.send(None)
                except OSError:
                    pass
            for worker in self._workers:
                self._stop(worker, kill=False)
            self._workers = []

    def __enter__(self) -> VerifierPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def pids(self) -> list[int]:
        """Process ids of the current workers (for tests and monitoring)."""
        return [w.process.pid for w in self._workers]

    # -- work --

    def _check_items(self, kind: str, items: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        if kind not in WORKER_FUNCTIONS:
            raise ValueError(f"unknown verifier kind {kind!r}; known: {sorted(WORKER_FUNCTIONS)}")
        checked = []
        for i, item in enumerate(items):
            if not isinstance(item, tuple) or not all(isinstance(x, _SCALARS) for x in item):
                raise ValueError(
                    f"item {i} must be a tuple of str/int/float/None, got {type(item).__name__}"
                    f" {item!r:.80}"
                )
            chars = sum(len(x) for x in item if isinstance(x, str))
            if chars > self.max_item_chars:
                raise ValueError(
                    f"item {i} holds {chars} characters, over max_item_chars="
                    f"{self.max_item_chars}; cut inputs down before sending them"
                )
            checked.append(item)
        return checked

    def map(self, kind: str, items: Sequence[tuple[Any, ...]]) -> list[float]:
        """``[fn(*item) for item in items]`` in the workers, ``fn`` = ``WORKER_FUNCTIONS[kind]``.

        Each result is a finite float; an item that raises, times out, or whose worker dies gets
        0.0 (see the module docstring). Items run in parallel, one per worker at a time.

        Raises:
          ValueError: for an unknown ``kind`` or a malformed / too large item (before any work).
          RuntimeError: if the pool is closed, or fresh workers keep dying before answering
            anything (the pool cannot run at all, e.g. too little memory headroom).
        """
        items = self._check_items(kind, items)
        with self._lock:
            if self._closed:
                raise RuntimeError("VerifierPool is closed")
            return self._map_locked(kind, items)

    def _map_locked(self, kind: str, items: list[tuple[Any, ...]]) -> list[float]:
        results = [0.0] * len(items)
        pending = deque(range(len(items)))
        self._start_failures = 0
        self.stats.items += len(items)
        while True:
            # Breadth first: every worker gets a running item before any gets a waiting one.
            for depth in range(1, _QUEUE_DEPTH + 1):
                for slot in range(len(self._workers)):
                    if pending and len(self._workers[slot].queue) < depth:
                        self._dispatch(slot, kind, items, pending)
            running = [(s, w) for s, w in enumerate(self._workers) if w.queue]
            if not running:
                if pending:
                    continue  # every send failed; the replacements take them next round
                return results
            handles: dict[Any, int] = {}
            for slot, worker in running:
                handles[worker.conn] = handles[worker.process.sentinel] = slot
            deadline = min(w.deadline for _, w in running)
            ready = multiprocessing.connection.wait(
                list(handles), timeout=max(0.0, deadline - time.monotonic())
            )
            for slot in sorted({handles[h] for h in ready}):
                self._collect(slot, results, pending)
            now = time.monotonic()
            for slot, worker in enumerate(self._workers):
                if worker.queue and worker.deadline <= now:
                    logger.warning(
                        "verifier item %d (kind %r) timed out after %.1f s; worker replaced",
                        worker.queue[0],
                        kind,
                        self.timeout_s,
                    )
                    self.stats.timeouts += 1
                    worker.queue.popleft()  # keeps the 0.0 it was initialised with
                    pending.extendleft(reversed(worker.queue))  # never started: retried
                    worker.queue.clear()
                    self._replace(slot)

    def _dispatch(
        self, slot: int, kind: str, items: list[tuple[Any, ...]], pending: deque[int]
    ) -> None:
        """Sends the next pending item to the worker in ``slot`` (retried later if it is dead)."""
        worker = self._workers[slot]
        index = pending.popleft()
        try:
            worker.conn.send((index, kind, items[index]))
        except OSError:  # the worker is dead: this item never ran, so it is retried
            pending.appendleft(index)
            self._after_death(slot, pending, ran_first=False)
            return
        if not worker.queue:  # it starts now if the worker is up, else once it is
            budget = self.timeout_s if worker.ready else self.timeout_s + STARTUP_S
            worker.deadline = time.monotonic() + budget
        worker.queue.append(index)

    def _collect(self, slot: int, results: list[float], pending: deque[int]) -> None:
        """Reads what the worker in ``slot`` sent; handles its death."""
        worker = self._workers[slot]
        try:
            while worker.conn.poll():
                message = worker.conn.recv()
                if message == _READY:
                    worker.ready = True
                    self._start_failures = 0
                    if worker.queue:  # its first item starts now, not when it was sent
                        worker.deadline = time.monotonic() + self.timeout_s
                elif worker.queue and message[0] == worker.queue[0]:
                    results[worker.queue.popleft()] = message[1]
                    # The next queued item starts as this answer arrives.
                    now = time.monotonic()
                    worker.deadline = now + self.timeout_s if worker.queue else math.inf
        except (EOFError, OSError):
            pass  # the pipe closed: the worker is dead (its sentinel may lag behind)
        else:
            if worker.process.is_alive():
                return
        # Died: the item it was running gets 0.0 (it may be what killed the worker), unless the
        # worker died before its start-up message and so never ran anything.
        if worker.queue:
            self.stats.deaths += 1
        self._after_death(slot, pending, ran_first=worker.ready)

    def _after_death(self, slot: int, pending: deque[int], ran_first: bool) -> None:
        """Replaces a dead worker; its unstarted items go back to ``pending``.

        Raises if fresh workers keep dying before they start.
        """
        worker = self._workers[slot]
        if ran_first and worker.queue:
            worker.queue.popleft()  # keeps its 0.0
        pending.extendleft(reversed(worker.queue))
        worker.queue.clear()
        self._replace(slot)
        if worker.ready:
            return
        self._start_failures += 1
        if self._start_failures > _MAX_START_FAILURES:
            raise RuntimeError(
                f"{self._start_failures} verifier workers in a row died before starting; the"
                " pool cannot run (check memory_headroom_bytes and the workers' stderr)"
            )
