"""launch/sweep.py: sweep vocabulary, row names and commands, resumable skipping."""

import importlib
import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("sweep", ROOT / "launch" / "sweep.py")
sweep = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sweep)
h = sweep.Hyper()
CANDIDATES = "config.selection.num_candidates"


def test_product_zip_chain():
    rows = h.product([h.sweep("config.seed", [1, 2]), h.sweep("arg", ["a", "b", "c"])])
    assert rows == [{"config.seed": s, "arg": a} for s in (1, 2) for a in "abc"]
    z = h.zip([h.sweep("config.x", [1, 2]), h.sweep("config.y", [3, 4])])
    assert z == [{"config.x": 1, "config.y": 3}, {"config.x": 2, "config.y": 4}]
    assert h.chain([h.fixed("arg", "a"), h.fixed("arg", "b")]) == [{"arg": "a"}, {"arg": "b"}]
    with pytest.raises(ValueError, match="one length"):
        h.zip([h.sweep("config.x", [1, 2]), h.sweep("config.y", [3])])
    with pytest.raises(ValueError, match="set twice"):
        h.product([h.fixed("config.x", 1), h.fixed("config.x", 2)])
    with pytest.raises(ValueError, match="sweep keys"):
        h.sweep("seed", [1])


def test_row_names_use_only_varying_keys():
    rows = h.product([h.sweep("config.seed", [1, 2]), h.fixed("config.eval.every", 10)])
    rows += [
        {
            "arg": "insight",
            "config.seed": 1,
            "config.eval.every": 10,
            "config.selection.params.insight.mu": 0.1,
        }
    ]
    keys = sweep.varying_keys(rows)
    assert keys == ["arg", "config.seed", "config.selection.params.insight.mu"]
    names = [sweep.row_name(r, keys) for r in rows]
    assert names == ["seed=1", "seed=2", "insight,seed=1,selection.params.insight.mu=0.1"]
    assert sweep.row_name({"config.x": [1, 2]}, ["config.x"]) == "x=[1,2]"


@pytest.mark.parametrize("task", ["countdown_tiny", "arithmetic_tiny", "countdown_small"])
def test_declared_sweeps_expand(task):
    config, name, rows = sweep.load_sweep(f"{ROOT}/configs/ablations/{task}.py:main")
    assert config == f"configs/{task}.py" and name == f"{task}/main"
    methods = {r["arg"] for _, r in rows}
    assert methods == {
        "random",
        "insight",
        "mopps",
        "expected_difficulty",
        "inverse_evidence",
        "ds",
    }
    assert len(rows) == 6 * 5  # methods x seeds
    _, _, abl = sweep.load_sweep(f"{ROOT}/configs/ablations/{task}.py:ablations")
    names = [n for n, _ in abl]
    assert len(set(names)) == len(names)
    assert "insight,seed=3,selection.params.insight.mu=0.7" in names
    assert "insight,seed=2,selection.params.insight.eta=10.0" in names
    # Size-relative rows from the base config (M = 32, N = 2000 in every tiny config).
    candidates = {r[CANDIDATES] for _, r in abl if CANDIDATES in r}
    assert candidates == {8 * 32, 2000}
    # The replication runs the main comparison on seeds disjoint from the main sweep's.
    _, _, rep = sweep.load_sweep(f"{ROOT}/configs/ablations/{task}.py:replication")
    rep_seeds = {r["config.seed"] for _, r in rep}
    assert rep_seeds.isdisjoint({r["config.seed"] for _, r in rows}) and len(rep_seeds) == 10
    assert {r["arg"] for _, r in rep} == methods and len(rep) == 3 * 10 + 3 * 5
    with pytest.raises(ValueError, match="unknown sweep"):
        sweep.load_sweep(f"{ROOT}/configs/ablations/{task}.py:nope")


def test_command_and_list(capsys):
    cmd = sweep.row_command(
        "configs/x.py", {"arg": "mopps", "config.seed": 2, "config.p": {"a": 1}}, Path("w")
    )
    assert cmd[1:] == [
        "-m",
        "insight_jax.main",
        "--config=configs/x.py:mopps",
        '--config.p={"a": 1}',
        "--config.seed=2",
        "--workdir=w",
    ]
    assert sweep.main([f"{ROOT}/configs/ablations/arithmetic_tiny.py:warm", "--list"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 5 and all("--config.rl.steps=0" in line for line in lines)
    assert (
        sweep.main([f"{ROOT}/configs/ablations/arithmetic_tiny.py:warm", "--list", "--shard=1/2"])
        == 0
    )
    assert len(capsys.readouterr().out.strip().splitlines()) == 2  # rows 1 and 3 of 5


def test_finished_rows_are_skipped(tmp_path, monkeypatch):
    done = tmp_path / "s" / "seed=1"
    done.mkdir(parents=True)
    (done / "summary.json").write_text(json.dumps({"eval_accuracy_after": 0.5}))
    started = []

    class FakePopen:
        def __init__(self, cmd, **kwargs):
            started.append(cmd)
            self.returncode = 0

        def poll(self):
            return 0

    monkeypatch.setattr(sweep.subprocess, "Popen", FakePopen)
    monkeypatch.setattr(sweep.time, "sleep", lambda s: None)
    rows = [("seed=1", {"config.seed": 1}), ("seed=2", {"config.seed": 2})]
    failed = sweep.run_rows("configs/x.py", rows, tmp_path / "s", tmp_path, jobs=2)
    assert len(started) == 1 and started[0][-1] == f"--workdir={tmp_path / 's' / 'seed=2'}"
    assert failed == 1  # the fake run wrote no summary, so it does not count as finished


def test_sweep_files_share_helpers_through_the_package():
    path_before = list(sys.path)
    sys.modules.pop("sweeps_common", None)
    sweep.load_sweep(f"{ROOT}/configs/ablations/countdown_tiny.py:main")
    assert sys.path == path_before
    assert "sweeps_common" not in sys.modules  # only configs.ablations.sweeps_common
    assert "configs.ablations.sweeps_common" in sys.modules


def test_sweep_sizes_come_from_the_base_config(monkeypatch):
    """A base config with M = 4 and RL pool 100 (of 400) gives candidates {8 M, pool}, pool/4."""
    from configs.ablations import sweeps_common

    load = sweeps_common.load_config

    def fake_config(path):
        assert path == "configs/countdown_tiny.py"
        c = load(path)
        c.rl.batch_size, c.task.num_train, c.task.rl_pool_size = 4, 400, 100
        return c

    monkeypatch.setattr(sweeps_common, "load_config", fake_config)
    rows = sweeps_common.hyper(h, "ablations", "configs/countdown_tiny.py")
    candidates = {r[CANDIDATES] for r in rows if CANDIDATES in r}
    assert candidates == {32, 100}
    pool = sweeps_common.hyper(h, "pool", "configs/countdown_tiny.py")
    assert {r["config.task.rl_pool_size"] for r in pool} == {25}


@pytest.mark.parametrize("task", ["countdown_tiny", "arithmetic_tiny", "countdown_small"])
def test_every_declared_row_is_a_valid_config(task, devices):
    """Each row's arg and --config.X keys exist in the locked base config and validate."""
    from configs.ablations import sweeps_common
    from insight_jax.rl.validate import validate_config

    module = importlib.import_module(f"configs.{task}")
    for name in ("warm", "main", "replication", "pool", "ablations"):
        _, _, rows = sweep.load_sweep(f"{ROOT}/configs/ablations/{task}.py:{name}")
        for row_name, row in rows:
            config = module.get_config(row.get("arg"))
            config.lock()
            overrides = {k.removeprefix("config."): v for k, v in row.items() if k != "arg"}
            config.update_from_flattened_dict(overrides)
            try:
                validate_config(config)
            except ValueError as e:
                raise AssertionError(f"{task}:{name} row {row_name}: {e}") from e
    assert sweeps_common.STUDY["config.eval.every"] == 10  # the rows above included it
