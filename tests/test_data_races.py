"""Data files that several processes write at once: the processes of one multi-host run all
build the run's data in the same workdir, and runs may share `task.pool_dir`."""

import json
import multiprocessing

import pytest

from insight_jax.rl.data import _pin_sources
from insight_jax.tasks import CountdownTask, build_pool

ROUNDS, PROCESSES = 200, 4


class _RacedCountdown(CountdownTask):
    """A Countdown task during whose generate() another writer completes the same pool."""

    def __init__(self, data_dir):
        super().__init__()
        self.data_dir, self.raced = data_dir, False

    def generate(self, num_items, seed, split="train"):
        records = super().generate(num_items, seed, split)
        if not self.raced:
            self.raced = True
            build_pool(CountdownTask(), num_items, seed, self.data_dir, split)
        return records


def test_build_pool_keeps_a_pool_another_writer_completed_meanwhile(tmp_path):
    task = _RacedCountdown(tmp_path)
    source = build_pool(task, 30, seed=3, data_dir=tmp_path)
    assert task.raced and [source[i] for i in range(30)] == CountdownTask().generate(30, seed=3)


def test_build_pool_still_fails_on_a_file_where_the_pool_goes(tmp_path):
    task = CountdownTask()
    build_pool(task, 5, seed=3, data_dir=tmp_path / "probe")  # learn the pool's folder name
    (name,) = [p.name for p in (tmp_path / "probe").iterdir()]
    (tmp_path / name).write_text("not a pool")
    with pytest.raises(FileExistsError):
        build_pool(task, 5, seed=3, data_dir=tmp_path)


def _pin_in_step(root, barrier, errors):
    barrier.wait()  # every process has started (imports are slow on a busy machine)
    for i in range(ROUNDS):
        try:
            barrier.wait(timeout=60)  # every process pins the same fresh folder at once
            _pin_sources(root / str(i), {"train": "ab" * 32})
        except Exception as e:
            errors.put(f"round {i}: {e!r}")
            barrier.abort()  # the others stop too
            return


def test_processes_pinning_a_workdirs_sources_at_once_all_succeed(tmp_path):
    ctx = multiprocessing.get_context("spawn")  # no fork of a process running JAX threads
    barrier, errors = ctx.Barrier(PROCESSES), ctx.Queue()
    procs = [
        ctx.Process(target=_pin_in_step, args=(tmp_path, barrier, errors)) for _ in range(PROCESSES)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    for p in procs:
        if p.is_alive():
            p.kill()
    failures = [errors.get(timeout=5) for _ in range(errors.qsize())]
    assert not failures and [p.exitcode for p in procs] == [0] * PROCESSES, failures
    for i in range(ROUNDS):
        assert json.loads((tmp_path / str(i) / "sources.json").read_text()) == {"train": "ab" * 32}
        assert [p.name for p in (tmp_path / str(i)).iterdir()] == ["sources.json"]
