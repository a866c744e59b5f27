"""A workdir belongs to one run: WorkdirLock (one live process) and claim (config fingerprint)."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from insight_jax import workdir as wd

REPO = Path(__file__).resolve().parents[1]

# A child process that takes the lock, says so, and holds it until killed.
HOLDER = """
import sys, time
from insight_jax.workdir import WorkdirLock
lock = WorkdirLock(sys.argv[1])
print("locked", flush=True)
time.sleep(60)
"""


@pytest.fixture
def holder(tmp_path):
    """A live child process holding the lock on tmp_path / "run"; killed at teardown."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path / "run")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    line = child.stdout.readline()
    if line.strip() != "locked":
        child.kill()
        pytest.fail(f"holder did not take the lock: {line!r} {child.stderr.read()}")
    yield child
    if child.poll() is None:
        child.kill()
    child.wait(10)
    child.stdout.close()
    child.stderr.close()


def test_lock_held_by_live_process_is_refused_then_taken_over_after_sigkill(tmp_path, holder):
    run = tmp_path / "run"
    with pytest.raises(wd.WorkdirBusy, match=rf"pid {holder.pid} on host ") as e:
        wd.WorkdirLock(run)
    assert str(run) in str(e.value) and isinstance(e.value, RuntimeError)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(10)
    assert (run / ".lock").exists()  # the dead holder's lock file stays behind ...
    with wd.WorkdirLock(run) as lock:  # ... and is taken over
        assert lock.held
        assert json.loads((run / ".lock").read_text())["pid"] == os.getpid()


def test_lock_refuses_a_second_lock_in_one_process_and_is_released_on_exit(tmp_path):
    with wd.WorkdirLock(tmp_path / "new" / "run") as lock:
        assert (tmp_path / "new" / "run").is_dir()
        with pytest.raises(wd.WorkdirBusy, match=rf"pid {os.getpid()} .*\(this process\)"):
            wd.WorkdirLock(tmp_path / "new" / "run")
    assert not lock.held
    lock.release()  # idempotent
    with pytest.raises(RuntimeError, match="released"):
        with lock:
            pass
    again = wd.WorkdirLock(tmp_path / "new" / "run")
    assert again.held
    again.release()


CONFIG = {
    "seed": 0,
    "rl": {"steps": 10, "batch_size": 4, "learning_rate": 3e-4},
    "selection": {"scorer": "insight", "params": {"eta": 3.0, "mu": 0.3}},
    "mesh": {"axes": ("data",), "shape": (-1,)},
    "eval": {"every": 5},
    "warmstart": {"cache_dir": ""},
}


def changed(**dotted):
    """CONFIG with dotted keys replaced, e.g. changed(**{"rl.steps": 20})."""
    out = json.loads(json.dumps(CONFIG))
    for key, value in dotted.items():
        *parents, leaf = key.split(".")
        node = out
        for p in parents:
            node = node[p]
        node[leaf] = value
    return out


def claim(path, config):
    return wd.claim(path, config, resume_safe=wd.RESUME_SAFE_KEYS)


def test_claim_new_run_writes_sorted_json(tmp_path):
    assert claim(tmp_path, CONFIG) is False
    text = (tmp_path / "config.json").read_text()
    assert text.startswith('{\n "eval": {\n  "every": 5\n }')  # sorted keys, indent 1
    written = json.loads(text)
    assert written["mesh"] == {"axes": ["data"], "shape": [-1]}
    assert written["selection"]["params"] == {"eta": 3.0, "mu": 0.3}
    assert sorted(os.listdir(tmp_path)) == ["config.json"]  # no temporary file left


def test_claim_identical_config_resumes_without_rewriting(tmp_path):
    claim(tmp_path, CONFIG)
    before = (tmp_path / "config.json").stat()
    # tuples read back as lists, 3 == 3.0: the same config
    assert claim(tmp_path, changed(**{"selection.params.eta": 3})) is True
    assert claim(tmp_path, CONFIG) is True
    after = (tmp_path / "config.json").stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_claim_refuses_another_seed(tmp_path):
    claim(tmp_path, CONFIG)
    old = (tmp_path / "config.json").read_text()
    with pytest.raises(wd.WorkdirMismatch, match=r"seed: 0 -> 1") as e:
        claim(tmp_path, changed(seed=1))
    msg = str(e.value)
    assert isinstance(e.value, ValueError)
    assert str(tmp_path) in msg and "new workdir" in msg and "delete" in msg
    assert (tmp_path / "config.json").read_text() == old


def test_claim_refuses_another_scorer_and_lists_every_difference(tmp_path):
    claim(tmp_path, CONFIG)
    new = changed(**{"selection.scorer": "mopps", "rl.steps": 20, "rl.batch_size": 8})
    del new["selection"]["params"]["eta"]
    new["rl"]["kl_coef"] = 0.1
    with pytest.raises(wd.WorkdirMismatch) as e:
        claim(tmp_path, new)
    msg = str(e.value)
    assert 'selection.scorer: "insight" -> "mopps"' in msg
    assert "rl.batch_size: 4 -> 8" in msg
    assert "selection.params.eta: 3.0 -> (absent)" in msg
    assert "rl.kl_coef: (absent) -> 0.1" in msg
    assert "4 key(s)" in msg and "also changed, which is allowed: rl.steps" in msg


def test_claim_accepts_resume_safe_changes_and_rewrites_config(tmp_path):
    claim(tmp_path, CONFIG)
    new = changed(**{"rl.steps": 20, "eval.every": 2, "warmstart.cache_dir": "/tmp/c"})
    assert claim(tmp_path, new) is True
    written = json.loads((tmp_path / "config.json").read_text())
    assert written["rl"]["steps"] == 20 and written["eval"]["every"] == 2
    assert written["warmstart"]["cache_dir"] == "/tmp/c"
    # the rewritten file is the new fingerprint: going back to 10 steps is again a safe change
    assert claim(tmp_path, CONFIG) is True
    with pytest.raises(wd.WorkdirMismatch, match=r"rl\.steps: 10 -> 20"):
        wd.claim(tmp_path, new, resume_safe=())  # nothing declared safe


def test_claim_resumes_a_run_older_than_a_key_at_that_keys_default(tmp_path):
    claim(tmp_path, CONFIG)  # written before "selection.band" existed
    added = {"selection.band": (), "selection.prior": "fixed"}
    newer = changed(**{"selection.band": [], "selection.prior": "fixed"})
    assert wd.claim(tmp_path, newer, added_at=added) is True
    written = json.loads((tmp_path / "config.json").read_text())
    assert written["selection"]["band"] == [] and written["selection"]["prior"] == "fixed"
    # Not at its default, or without added_at, the new key is a difference.
    (tmp_path / "config.json").unlink()
    claim(tmp_path, CONFIG)
    with pytest.raises(wd.WorkdirMismatch, match=r"selection.band: \(absent\) -> \[0.2, 0.8\]"):
        wd.claim(tmp_path, changed(**{"selection.band": (0.2, 0.8)}), added_at=added)
    with pytest.raises(wd.WorkdirMismatch, match=r"selection.prior: \(absent\) -> \"fixed\""):
        wd.claim(tmp_path, changed(**{"selection.prior": "fixed"}))
    # A key the old run had is compared as always, whatever its default.
    with pytest.raises(wd.WorkdirMismatch, match=r"rl.batch_size: 4 -> 8"):
        wd.claim(tmp_path, changed(**{"rl.batch_size": 8}), added_at={"rl.batch_size": 8})


def test_claim_compares_nested_keys_and_types(tmp_path):
    claim(tmp_path, CONFIG)
    with pytest.raises(wd.WorkdirMismatch, match=r"selection.params.mu: 0.3 -> 0.5"):
        claim(tmp_path, changed(**{"selection.params.mu": 0.5}))
    with pytest.raises(wd.WorkdirMismatch, match=r'mesh.axes: \["data"\] -> \["data", "model"\]'):
        claim(tmp_path, changed(**{"mesh.axes": ("data", "model")}))
    with pytest.raises(wd.WorkdirMismatch, match=r"seed: 0 -> false"):
        claim(tmp_path, changed(seed=False))  # a bool is not the int 0


def test_claim_refuses_old_workdir_without_config_json(tmp_path):
    (tmp_path / "checkpoints" / "10").mkdir(parents=True)
    (tmp_path / ".lock").write_text("")
    with pytest.raises(wd.WorkdirMismatch, match=r"holds checkpoints but no config.json"):
        claim(tmp_path, CONFIG)
    assert not (tmp_path / "config.json").exists()
    (tmp_path / "config.json").write_text('{"seed": 0, "rl": {"st')  # torn by hand
    with pytest.raises(wd.WorkdirMismatch, match="cannot read"):
        claim(tmp_path, CONFIG)


def test_claim_rejects_values_json_cannot_hold(tmp_path):
    with pytest.raises(TypeError, match=r"config key rl\.fn: builtin_function_or_method"):
        claim(tmp_path, changed(**{"rl.fn": print}))
    assert not (tmp_path / "config.json").exists()


def test_resume_safe_keys_name_real_config_keys():
    """A resume-safe key that no config has would silently allow nothing: every one must be a
    key of the shipped configs."""
    from configs import arithmetic_tiny

    flat = wd.flatten(arithmetic_tiny.get_config().to_dict())
    assert set(wd.RESUME_SAFE_KEYS) <= set(flat), set(wd.RESUME_SAFE_KEYS) - set(flat)
    assert "seed" not in wd.RESUME_SAFE_KEYS and "selection.scorer" not in wd.RESUME_SAFE_KEYS
