"""VerifierPool: results in order, per-item timeout -> 0.0 and a replaced worker, deaths, memory
cap, bad items rejected before any work, use from a non-main thread, clean shutdown."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from insight_jax.tasks.verifier_pool import VerifierPool, default_num_workers

TIMEOUT_S = 1.0
# Scheduling slack on a shared 2-core machine (a replacement fork, pipe round trips).
SLACK_S = 1.0


@pytest.fixture(scope="module")
def pool():
    with VerifierPool(num_workers=2, timeout_s=TIMEOUT_S) as p:
        yield p


def _gone(pid: int) -> bool:
    """True once no process (not even a zombie) has this pid."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _wait_gone(pid: int, within_s: float = 5.0) -> bool:
    end = time.monotonic() + within_s
    while time.monotonic() < end:
        if _gone(pid):
            return True
        time.sleep(0.01)
    return False


def test_results_come_back_in_order(pool):
    # probe_allocate(n) returns 1.0 iff it got n bytes; mixing sizes checks the order (all 1.0)
    # and that each item runs on its own (the exception probe below returns 0.0 in between).
    items = [(0.0,)] * 40
    assert pool.map("probe_sleep", items) == [1.0] * 40
    assert pool.map("probe_sleep", []) == []
    mixed = [(1000,), ("not a size",), (10,)]  # bytearray("not a size") raises TypeError
    assert pool.map("probe_allocate", mixed) == [1.0, 0.0, 1.0]


def test_an_exception_is_zero_and_keeps_the_worker(pool):
    before = pool.pids
    # Wrong arity: TypeError inside the worker.
    assert pool.map("probe_sleep", [(), (0.0, 1.0), (0.0,)]) == [0.0, 0.0, 1.0]
    assert pool.pids == before


def test_timeout_kills_and_replaces_only_the_slow_worker(pool):
    before = pool.stats.timeouts
    items = [(0.0,)] * 5 + [(60.0,)] + [(0.0,)] * 5
    t0 = time.monotonic()
    rewards = pool.map("probe_sleep", items)
    elapsed = time.monotonic() - t0
    assert rewards == [1.0] * 5 + [0.0] + [1.0] * 5
    assert elapsed < TIMEOUT_S + SLACK_S
    assert pool.stats.timeouts == before + 1
    # The pool works as before with the replacement.
    assert pool.map("probe_sleep", [(0.0,)] * 6) == [1.0] * 6


def test_killed_worker_pid_is_gone_and_replaced(pool):
    pids = pool.pids
    pool.map("probe_sleep", [(0.0,), (60.0,)])  # one of the two workers times out
    replaced = [pid for pid in pids if pid not in pool.pids]
    assert len(replaced) == 1
    assert _wait_gone(replaced[0])  # killed and reaped, not a zombie
    assert len(pool.pids) == 2


def test_worker_crash_is_zero_and_replaced(pool):
    deaths, pids = pool.stats.deaths, pool.pids
    assert pool.map("probe_exit", [(3,), (4,)]) == [0.0, 0.0]
    assert pool.stats.deaths == deaths + 2
    assert not set(pids) & set(pool.pids)
    assert pool.map("probe_sleep", [(0.0,)] * 6) == [1.0] * 6


def test_worker_killed_from_outside_while_idle(pool):
    victim = pool.pids[0]
    os.kill(victim, signal.SIGKILL)
    assert _wait_gone(victim)  # dead (and reaped by the forkserver) before the next call
    # Its item is retried on a replacement: the dead worker never received it.
    assert pool.map("probe_sleep", [(0.0,)] * 8) == [1.0] * 8
    assert victim not in pool.pids


def test_worker_killed_from_outside_while_busy(pool):
    out: list[list[float]] = []
    thread = threading.Thread(target=lambda: out.append(pool.map("probe_sleep", [(0.8,), (0.8,)])))
    pids = pool.pids
    t0 = time.monotonic()
    thread.start()
    time.sleep(0.3)  # both items are running now
    os.kill(pids[1], signal.SIGKILL)
    thread.join(10)
    elapsed = time.monotonic() - t0
    assert out == [[1.0, 0.0]]
    # The death is noticed at once (process sentinel), not at the 1 s deadline.
    assert elapsed < 0.8 + SLACK_S
    assert pids[1] not in pool.pids


def test_memory_cap_turns_a_blow_up_into_zero():
    with VerifierPool(num_workers=1, timeout_s=10.0, memory_headroom_bytes=256 << 20) as small:
        pid = small.pids[0]
        assert small.map("probe_allocate", [(16 << 20,), (4 << 30,), (16 << 20,)]) == [
            1.0,
            0.0,
            1.0,
        ]
        assert small.pids == [pid]  # a MemoryError, not a death
        assert small.stats.deaths == 0


def test_bad_calls_fail_before_any_work(pool):
    items = pool.stats.items
    with pytest.raises(ValueError, match=r"unknown verifier kind 'os\.system'"):
        pool.map("os.system", [("echo",)])
    with pytest.raises(ValueError, match="item 1 must be a tuple"):
        pool.map("probe_sleep", [(0.0,), [0.0]])
    with pytest.raises(ValueError, match="item 0 must be a tuple"):
        pool.map("probe_sleep", [(object(),)])
    with pytest.raises(ValueError, match="max_item_chars"):
        pool.map("math", [("5", "boxed", "1" * 20_000)])
    assert pool.stats.items == items


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_workers": 0}, "num_workers"),
        ({"num_workers": True}, "num_workers"),
        ({"timeout_s": 0}, "timeout_s"),
        ({"timeout_s": float("inf")}, "timeout_s"),
        ({"memory_headroom_bytes": 1000}, "memory_headroom_bytes"),
        ({"max_item_chars": 0}, "max_item_chars"),
        ({"inner_timeout_s": 0.5}, "inner_timeout_s"),
    ],
)
def test_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        VerifierPool(**kwargs)


def test_default_workers():
    assert default_num_workers() == max(1, min(os.cpu_count() or 1, 4))


def test_map_from_other_threads(pool):
    results: dict[int, list[float]] = {}

    def work(i: int) -> None:
        results[i] = pool.map("probe_allocate", [(i,), ("x",), (i + 1,)])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == {i: [1.0, 0.0, 1.0] for i in range(4)}


def test_close_stops_every_worker_and_is_idempotent():
    p = VerifierPool(num_workers=2, timeout_s=5.0)
    assert p.map("probe_sleep", [(0.0,)] * 4) == [1.0] * 4
    pids = p.pids
    p.close()
    p.close()
    assert all(_wait_gone(pid) for pid in pids)
    with pytest.raises(RuntimeError, match="closed"):
        p.map("probe_sleep", [(0.0,)])


def test_a_slow_starting_worker_does_not_time_out_its_first_item(tmp_path):
    """multiprocessing re-runs the parent's main module in each new worker (for
    `python -m insight_jax.main`: the trainer's imports); that start-up must not count against
    the first item's timeout."""
    import subprocess
    import sys
    import textwrap

    (tmp_path / "slow_main.py").write_text(
        textwrap.dedent(
            """
            import time
            time.sleep(1.5)  # a heavy main module, run again by every new worker
            from insight_jax.tasks.verifier_pool import VerifierPool
            if __name__ == "__main__":
                with VerifierPool(num_workers=1, timeout_s=1.0) as pool:
                    print(pool.map("probe_sleep", [(0.0,)] * 3))
            """
        )
    )
    out = subprocess.run(
        [sys.executable, "-m", "slow_main"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[1.0, 1.0, 1.0]"


def test_workers_exit_when_the_parent_is_killed_mid_item(tmp_path):
    """kill -9 of the trainer while a worker is inside a long item: the worker and the
    forkserver end within seconds, not when the item would have ended (or never, for a hung C
    call)."""
    import subprocess
    import sys
    import textwrap

    pids = tmp_path / "pids"
    (tmp_path / "parent.py").write_text(
        textwrap.dedent(
            f"""
            import os, signal, threading, time
            from insight_jax.tasks.verifier_pool import VerifierPool
            if __name__ == "__main__":
                pool = VerifierPool(num_workers=1, timeout_s=120.0)
                worker = pool.pids[0]
                with open("/proc/%d/stat" % worker) as f:
                    forkserver = int(f.read().rsplit(")", 1)[1].split()[1])
                open({str(pids)!r}, "w").write(f"{{worker}} {{forkserver}}")
                threading.Thread(
                    target=pool.map, args=("probe_sleep", [(60.0,)]), daemon=True
                ).start()
                time.sleep(1.0)
                os.kill(os.getpid(), signal.SIGKILL)
            """
        )
    )
    out = subprocess.run(
        [sys.executable, str(tmp_path / "parent.py")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=60,
    )
    assert out.returncode == -signal.SIGKILL
    worker, forkserver = map(int, pids.read_text().split())
    assert _wait_gone(worker, within_s=10.0)
    assert _wait_gone(forkserver, within_s=10.0)
