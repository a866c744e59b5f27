"""insight_jax/study/report.py on hand-built run directories, and the study end to end (smoke)."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from insight_jax.study import report

ROOT = Path(__file__).resolve().parents[1]
WARM = 7  # warm-start steps: RL step s is logged as step WARM + s


def _write_run(workdir: Path, curve, rollouts_per_step, eval_every=10, times=None, zero_var=False):
    """A finished run's files as train_and_evaluate writes them (evals at RL steps 0, 10, ...)."""
    workdir.mkdir(parents=True)
    rows = [{"step": s + 1, "sft_loss": 1.0} for s in range(WARM)]
    n_steps = eval_every * (len(curve) - 1)
    for s in range(n_steps):
        t = times or {}
        rows.append(
            {
                "step": WARM + s + 1,  # the state after the step
                "reward_mean": 0.5,
                "rollouts": float(rollouts_per_step[s]),
                "time_select": t.get("time_select", 0.001),
                "time_rollout": t.get("time_rollout", 0.1),
                "time_update": t.get("time_update", 0.2),
                "time_verify": t.get("time_verify", 0.002),
                **({"zero_var_frac": float(s >= 60)} if zero_var else {}),
            }
        )
    for i, acc in enumerate(curve):
        rows.append({"step": WARM + eval_every * i, "eval_accuracy": float(acc)})
    (workdir / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    summary = {"steps_warm_start": WARM, "eval_accuracy_after": float(curve[-1])}
    (workdir / "summary.json").write_text(json.dumps(summary))


def test_load_and_summarize(tmp_path):
    rng = np.random.default_rng(0)
    t = np.arange(0, 110, 10.0)
    truth = {"random": 100.0, "fast": 50.0}  # time constants: "fast" learns 2x faster
    for name, tau in truth.items():
        for seed in (3, 1, 2, 4, 5, 6):
            curve = 0.2 + 0.4 * (1 - np.exp(-t / tau)) + rng.normal(0, 0.003, t.shape)
            per_step = np.full(100, 256.0)
            if name == "fast":
                per_step[::2] = 512.0  # e.g. dynamic sampling's extra rounds
            _write_run(tmp_path / f"{name},seed={seed}", curve, per_step, zero_var=name == "fast")
    _write_run(tmp_path / "unfinished,seed=1", [0.1, 0.2], np.ones(10))
    (tmp_path / "unfinished,seed=1" / "summary.json").write_text("{}")
    (tmp_path / "not-a-row").mkdir()

    variants = report.load_sweep_dir(tmp_path)
    assert sorted(variants) == ["fast", "random"]
    v = variants["fast"]
    assert v.seeds == [1, 2, 3, 4, 5, 6]
    np.testing.assert_array_equal(v.steps, t)
    # Rollouts generated before the eval at RL step 10: 5 steps of 512 and 5 of 256.
    assert v.rollouts[0][1] == 5 * 512 + 5 * 256
    assert v.rollouts[0][0] == 0

    out = report.summarize(variants, baseline="random", n_boot=2000)
    fast = out["variants"]["fast"]
    finals = np.stack(v.curves)[:, -1]
    assert fast["final_accuracy"]["mean"] == pytest.approx(finals.mean())
    sp = fast["speedup"]
    assert sp["lo"] < 2.0 < sp["hi"] and sp["lo"] > 1.0
    assert out["variants"]["random"].get("speedup") is None
    # Rollouts to target: the same crossing, in rollouts (768 per 2 steps for "fast").
    rt = fast["rollouts_to_target"]
    assert rt["n_reached"] == 6 and rt["mean"] == pytest.approx(sp["steps_method"] * 384, rel=0.1)
    # The speed-up in rollouts: at every eval "fast" has spent 384 per step against 256.
    rs = fast["rollouts_speedup"]
    assert rs["speedup"] == pytest.approx(sp["speedup"] * 256 / 384, rel=1e-9)
    assert rs["steps_method"] == pytest.approx(sp["steps_method"] * 384, rel=1e-9)
    table = report.markdown_table(out, ["random", "fast"])
    assert table.count("\n") == 3 and "| fast |" in table
    # zero_var_frac is 1 from RL step 60 on: 40% of all steps, all of the last 40%.
    assert "| fast | 1.0 | 100 | 2.0 | 200 | 0.33% | 40% / 100% | - |" in report.time_table(
        out, ["fast"]
    )
    assert "| random | 1.0 | 100 | 2.0 | 200 | 0.33% | - | - |" in report.time_table(out)


def test_variant_with_fewer_seeds_is_paired_on_its_seeds(tmp_path):
    offsets = {1: 0.0, 2: 0.1, 3: 0.2, 4: 0.3}  # per-seed warm-start level, shared by methods
    for seed, off in offsets.items():
        _write_run(tmp_path / f"random,seed={seed}", [off, off + 0.10], np.ones(10))
        if seed in (2, 4):
            _write_run(
                tmp_path / f"better,seed={seed}", [off, off + 0.12 + seed / 1000], np.ones(10)
            )
    out = report.summarize(report.load_sweep_dir(tmp_path), n_boot=200)
    vs = out["variants"]["better"]["final_vs_baseline"]
    assert vs["paired"] and vs["diff"] == pytest.approx(0.023)  # mean of 0.022 and 0.024
    assert vs["lo"] > 0.0  # the shared offsets cancel; unpaired they would swamp 0.023
    _write_run(tmp_path / "other,seed=9", [0.0, 0.1], np.ones(10))
    _write_run(tmp_path / "other,seed=8", [0.0, 0.13], np.ones(10))
    out = report.summarize(report.load_sweep_dir(tmp_path), n_boot=200)
    assert not out["variants"]["other"]["final_vs_baseline"]["paired"]


def test_main_and_replication_dirs_merge_by_seed(tmp_path):
    for sweep, seeds in (("main", (1, 2)), ("replication", (6, 7, 8))):
        for seed in seeds:
            _write_run(tmp_path / sweep / f"random,seed={seed}", [0.1, 0.1 + seed / 100], [1] * 10)
    merged = report.load_sweep_dir(tmp_path / "main", tmp_path / "replication")
    assert merged["random"].seeds == [1, 2, 6, 7, 8]
    np.testing.assert_allclose(
        [c[-1] for c in merged["random"].curves], [0.11, 0.12, 0.16, 0.17, 0.18]
    )
    _write_run(tmp_path / "replication" / "random,seed=2", [0.1, 0.2], [1] * 10)
    with pytest.raises(ValueError, match="more than one sweep dir"):
        report.load_sweep_dir(tmp_path / "main", tmp_path / "replication")


def test_row_names_and_mismatched_steps(tmp_path):
    assert report.parse_row_name("insight,seed=3,selection.params.mu=0.1") == (
        "insight,selection.params.mu=0.1",
        3,
    )
    with pytest.raises(ValueError, match="seed"):
        report.parse_row_name("insight")
    _write_run(tmp_path / "a,seed=1", [0.1, 0.2, 0.3], np.ones(20))
    _write_run(tmp_path / "a,seed=2", [0.1, 0.2], np.ones(10))
    with pytest.raises(ValueError, match="eval steps"):
        report.load_sweep_dir(tmp_path)
    with pytest.raises(ValueError, match="baseline"):
        report.summarize({}, baseline="random")


SMOKE_SWEEP = """
CONFIG = "configs/arithmetic_tiny.py"


def get_hyper(h, name="main"):
    return h.product([
        h.sweep("config.seed", [1, 2]),
        h.sweep("arg", ["random,smoke", "insight,smoke"]),
        h.fixed("config.warmstart.cache_dir", {cache!r}),
    ])
"""


def test_study_smoke_end_to_end(tmp_path):
    """The study's own commands on the smoke config: sweep (resumable) -> report -> figures."""
    sweep_file = tmp_path / "smoke_task.py"
    sweep_file.write_text(SMOKE_SWEEP.format(cache=str(tmp_path / "warm_cache")))
    run = [sys.executable, str(ROOT / "launch/sweep.py"), f"{sweep_file}:main"]
    args = [f"--root={tmp_path / 'study'}", "--jobs=2"]
    out = subprocess.run(run + args, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    again = subprocess.run(run + args, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert "4 of 4 rows already finished" in again.stdout
    assert len(list((tmp_path / "warm_cache").iterdir())) == 2  # one warm start per seed
    # A replication sweep on fresh seeds (here: copies of seed 1's runs, renamed to seed 11).
    sweep_dir = tmp_path / "study" / "smoke_task"
    for method in ("random,smoke", "insight,smoke"):
        shutil.copytree(
            sweep_dir / "main" / f"{method},seed=1",
            sweep_dir / "replication" / f"{method},seed=11",
            ignore=shutil.ignore_patterns("checkpoints"),
        )
    rep = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks/efficiency.py"),
            "report",
            "--tasks=smoke_task",
            f"--root={tmp_path / 'study'}",
            f"--out={tmp_path / 'eff.json'}",
            f"--figures={tmp_path / 'fig'}",
            "--baseline=random,smoke",
            "--n-boot=200",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert rep.returncode == 0, rep.stdout + rep.stderr
    res = json.loads((tmp_path / "eff.json").read_text())
    variants = res["tasks"]["smoke_task"]["main"]["variants"]
    assert set(variants) == {"random,smoke", "insight,smoke"}
    assert variants["insight,smoke"]["seeds"] == [1, 2]
    assert "speedup" in variants["insight,smoke"]
    assert res["tasks"]["smoke_task"]["replication"]["variants"]["insight,smoke"]["seeds"] == [11]
    assert res["tasks"]["smoke_task"]["all_seeds"]["variants"]["insight,smoke"]["seeds"] == [
        1,
        2,
        11,
    ]
    assert (tmp_path / "fig" / "eff_curves.png").stat().st_size > 10_000
    assert "| insight,smoke |" in (tmp_path / "eff.md").read_text()
