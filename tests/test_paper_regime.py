"""The paper-regime study's trainer features: a warm start on problems outside the RL pool and
the held-out sets (warmstart.pool = "disjoint"), and a train-pool sample evaluated beside the
held-out set but kept out of eval_accuracy (eval.train_pool_size)."""

import dataclasses
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from configs import arithmetic_paper_regime, countdown_paper_regime, countdown_tiny
from insight_jax.rl import setup, warmstart
from insight_jax.rl.data import TRAIN_POOL_SET, disjoint_records, warm_start_pool
from insight_jax.rl.evaluate import EvalSet, eval_metrics
from insight_jax.rl.train import _evaluate
from insight_jax.rl.validate import validate_config
from insight_jax.tasks import get_task

ROOT = Path(__file__).resolve().parents[1]
COUNTDOWN = countdown_tiny.get_config().task.kwargs.to_dict()


def _countdown_key(record) -> tuple:
    # The problem as a multiset of numbers and a target, written here, not the task's own key.
    return tuple(sorted(record["nums"])), record["target"]


def test_disjoint_countdown_records_are_new_valid_problems():
    task = get_task("countdown", **COUNTDOWN)
    pool = task.generate(2000, 7, split="train")
    test = task.generate(256, 7, split="test")
    exclude = {task.problem_key(r) for r in pool + test}
    warm = disjoint_records(task, 1000, 7, len(pool), exclude)
    taken = {_countdown_key(r) for r in pool + test}
    assert len(warm) == 1000 and [r["index"] for r in warm] == list(range(1000))
    assert not {_countdown_key(r) for r in warm} & taken
    assert len({_countdown_key(r) for r in warm}) == 1000
    assert all(task.verify(task.reference_completion(r), r) == 1.0 for r in warm)
    # A problem space too small for both pools is an error, not a shorter warm-start pool.
    small = get_task("countdown", num_numbers=(2,), max_number=3, max_target=6, tag="a")  # 14
    with pytest.raises(ValueError, match="could only generate"):
        disjoint_records(small, 8, 7, 10, set())


def test_disjoint_records_drop_repeats_of_a_task_that_repeats_problems():
    task = get_task("arithmetic", levels=(1, 2), ops=("+", "-"), tag="a")  # unique=False
    pool = task.generate(2000, 3, split="train")
    questions = [r["question"] for r in pool]
    assert len(set(questions)) < len(questions)  # the pool repeats questions
    warm = disjoint_records(task, 500, 3, len(pool), {task.problem_key(r) for r in pool})
    assert len(warm) == 500 and not {r["question"] for r in warm} & set(questions)


def _decoded_prompts(comps, batch) -> list[str]:
    """The prompt text of each warm-start row: the unmasked tokens before the completion (the
    columns whose targets the loss covers), without BOS."""
    tok, out = comps.tokenizer, []
    for row, mask, loss in zip(batch["tokens"], batch["mask"], batch["loss_mask"], strict=True):
        completion = np.concatenate([[False], loss])
        ids = [int(t) for t in row[mask & ~completion] if t != tok.bos_id]
        out.append(tok.decode(ids))
    return out


@pytest.mark.parametrize("mode", ["disjoint", "rl"])
def test_warm_start_pool_modes(mode):
    config = countdown_paper_regime.get_config()
    config.warmstart.pool, config.task.rl_pool_size, config.seed = mode, 1500, 5
    if mode == "rl":
        config.warmstart.pool_size = 0
    task = get_task("countdown", **COUNTDOWN)
    pool = task.generate(2000, 5, split="train")
    test = (EvalSet("test", task, tuple(task.generate(256, 5, split="test"))),)
    warm, disjoint = warm_start_pool(config, task, pool, 1500, test)
    keys = {_countdown_key(r) for r in warm}
    rl = {_countdown_key(r) for r in pool[:1500]}
    assert disjoint == (mode == "disjoint") == (not keys & rl)
    if mode == "rl":
        assert warm is pool
    else:  # outside the whole pool, not only its RL part, and outside the test set
        assert len(warm) == 1000
        assert not keys & {_countdown_key(r) for r in pool + list(test[0].records)}


def test_the_trainer_warm_starts_on_its_pool_and_evaluates_a_train_pool_sample(tmp_path, devices):
    config = countdown_paper_regime.get_config("smoke")
    comps = setup.build(config, tmp_path)
    assert comps.warm_start_disjoint and len(comps.warm_pool) == config.task.num_train
    # Every warm-start row's prompt is a warm-pool problem, none an RL or a test prompt.
    rows = warmstart.warm_start_batch(comps, np.arange(len(comps.warm_pool)))
    seen = _decoded_prompts(comps, rows)
    assert seen == [comps.prompt(r) for r in comps.warm_pool]
    rl_prompts = {comps.prompt(comps.pool[i]) for i in range(comps.num_items)}
    assert not set(seen) & (rl_prompts | {comps.prompt(r) for r in comps.eval_sets[0].records})

    assert [s.name for s in comps.eval_sets] == ["test", "train_pool"]
    sample = comps.eval_sets[1].records
    assert [r["index"] for r in sample] == list(range(config.eval.train_pool_size))
    state = comps.init()
    m = _evaluate(comps, state)
    n = config.eval.num_samples
    assert m["eval_accuracy"] == m[f"eval_test_avg@{n}"]
    assert m[f"eval_train_pool_avg@{n}"] == m[f"eval_{TRAIN_POOL_SET}_avg@{n}"]
    # The sample leaves the held-out set's numbers as they would be without it.
    alone = _evaluate(dataclasses.replace(comps, eval_sets=comps.eval_sets[:1]), state)
    assert {k: v for k, v in m.items() if "train_pool" not in k} == alone


def test_eval_metrics_average_the_held_out_sets_only():
    rng = np.random.default_rng(0)
    results = {
        name: {"accuracy": a, "reward": r, "spread": s, "pass@1": a, "pass@2": a}
        for name, (a, r, s) in zip("abc", rng.uniform(size=(3, 3)), strict=True)
    }
    m = eval_metrics(results, 2, held_out=["a", "c"])
    mean_ac = (results["a"]["accuracy"] + results["c"]["accuracy"]) / 2
    assert m["eval_accuracy"] == pytest.approx(mean_ac)
    assert m["eval_spread"] == pytest.approx((results["a"]["spread"] + results["c"]["spread"]) / 2)
    assert m["eval_b_avg@2"] == results["b"]["accuracy"]
    assert eval_metrics(results, 2)["eval_reward"] == pytest.approx(
        np.mean([r["reward"] for r in results.values()])
    )


def test_skipping_keeps_predicted_zero_variance_prompts_out_of_the_batch(tmp_path, devices):
    """With selection.skip_threshold, the trainer's selection leaves out prompts whose beliefs
    predict an all-fail or all-succeed group (explore 0); without it, uniform draws take them."""
    config = countdown_paper_regime.get_config("random,smoke")
    config.selection.skip_threshold = 0.5
    comps = setup.build(config, tmp_path / "skip")
    state = comps.init()
    n, k = comps.num_items, config.rl.num_rollouts
    # Even prompts: 0 successes in 30 trials, so P(S = 0) = prod (31 + j) / (32 + j) > 0.5.
    alpha = np.ones(state.beliefs.alpha.shape, np.float32)
    beta = alpha.copy()
    beta[:n:2] = 31.0
    assert np.prod([(31 + j) / (32 + j) for j in range(k)]) > 0.5  # the predictive, by hand
    beliefs = state.beliefs.replace(
        alpha=jax.device_put(alpha, state.beliefs.alpha.sharding),
        beta=jax.device_put(beta, state.beliefs.beta.sharding),
    )
    picked = []
    for step in range(4):
        idx, _ = comps.fns.select(state.replace(beliefs=beliefs, step=state.step + step))
        picked += np.asarray(idx).tolist()
    assert all(i % 2 == 1 for i in picked)
    config.selection.skip_threshold = 0.0
    plain = setup.build(config, tmp_path / "plain")
    idx, _ = plain.fns.select(plain.init().replace(beliefs=beliefs))
    assert any(i % 2 == 0 for i in np.asarray(idx).tolist())


def test_the_arithmetic_regime_warm_starts_on_1000_problems_outside_its_pool_and_test_set():
    """At the config's full sizes (N = 2000, 256 test problems): the task's train split holds
    enough problems for a disjoint warm-start pool of 1000."""
    config = arithmetic_paper_regime.get_config()
    config.seed = 16
    task = get_task(config.task.name, **config.task.kwargs)
    pool = task.generate(config.task.num_train, 16, split="train")
    test = (EvalSet("test", task, tuple(task.generate(config.task.num_test, 16, split="test"))),)
    warm, disjoint = warm_start_pool(config, task, pool, len(pool), test)
    # Arithmetic's problem is its question text; the task repeats problems (level 1 has ~150),
    # so the warm-start pool may too, as the RL pool does.
    questions = {r["question"] for r in warm}
    assert disjoint and len(warm) == config.warmstart.pool_size == 1000
    assert not questions & {r["question"] for r in pool + list(test[0].records)}
    assert config.rl.batch_size == 256 and config.selection.num_candidates == 4096


STUDIES = [("countdown_paper_regime", countdown_paper_regime, s) for s in
           ["warm", "main", "draws", "beyond", "smoke"]]  # fmt: skip
STUDIES += [("arithmetic_paper_regime", arithmetic_paper_regime, s) for s in
            ["warm", "main", "draws", "random_again"]]  # fmt: skip


@pytest.mark.parametrize(("stem", "module", "name"), STUDIES)
def test_every_row_of_the_study_is_a_valid_config(stem, module, name):
    spec = importlib.util.spec_from_file_location("sweep", ROOT / "launch" / "sweep.py")
    sweep = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sweep)
    config, _, rows = sweep.load_sweep(f"{ROOT}/configs/ablations/{stem}.py:{name}")
    assert config == f"configs/{stem}.py"
    for _, row in rows:
        c = module.get_config(row.get("arg", ""))
        for key, value in row.items():  # what --config.<key>=<value> sets
            if key != "arg":
                *path, leaf = key.removeprefix("config.").split(".")
                node = c
                for part in path:
                    node = node[part]
                node[leaf] = value
        validate_config(c)


def _study():
    """benchmarks/efficiency_paper_regime.py as a module (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location(
        "efficiency_paper_regime", ROOT / "benchmarks" / "efficiency_paper_regime.py"
    )
    study = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(study)
    return study


def test_a_later_session_reruns_only_unrecorded_rows_and_the_warm_starts_they_need():
    study = _study()

    def rows(names, seeds):
        return [(f"{m},seed={s}", {"arg": m, "config.seed": s}) for s in seeds for m in names]

    sweeps = {
        "warm": rows(["random"], [1, 2, 3, 4]),
        "main": rows(["random", "insight"], [1, 2, 3]),
    }
    done = {("main", "random,seed=1"), ("main", "insight,seed=1"), ("main", "random,seed=2")}
    done |= {("warm", f"random,seed={s}") for s in (1, 2, 3)}  # seed 4's warm row never ran
    todo = study.rows_to_run(sweeps, lambda sweep, row: (sweep, row) in done)
    assert [n for n, _ in todo["main"]] == ["insight,seed=2", "random,seed=3", "insight,seed=3"]
    # seeds 2 and 3 still have rows to run: their warm starts again; seed 4 has no record yet
    assert [n for n, _ in todo["warm"]] == ["random,seed=2", "random,seed=3", "random,seed=4"]
    everything = {(s, n) for s, named in sweeps.items() for n, _ in named}
    assert study.rows_to_run(sweeps, lambda sweep, row: (sweep, row) in everything) == {
        "warm": [],
        "main": [],
    }


def test_rows_pair_only_on_seeds_whose_warm_start_reproduced(tmp_path):
    """A warm start run again on another machine can differ from its record: the seeds whose
    before-RL evaluations differ are named by `run` and not counted as paired by the report."""
    study = _study()
    rng = np.random.default_rng(14)
    before = {seed: rng.integers(0, 4096, size=2) / 4096 for seed in (16, 17, 18)}

    def write(sweep_dir: Path, row: str, test: float, pool: float) -> dict:
        summary = {"eval_test_before_rl": test, "eval_train_pool_before_rl": pool}
        summary["eval_accuracy_after"] = float(rng.uniform())
        (sweep_dir / row).mkdir(parents=True)
        (sweep_dir / row / "summary.json").write_text(json.dumps(summary))
        return summary

    records, fresh = tmp_path / "records", tmp_path / "fresh"
    random = {s: write(records, f"random,seed={s}", *before[s]) for s in before}
    for s in before:
        write(records / "warm", f"random,seed={s}", *before[s])
    moved = before[17] + [1 / 4096, 0]  # one more success among 4096 held-out completions
    write(fresh, "random,seed=16", *before[16])
    write(fresh, "random,seed=17", *moved)
    assert study.changed_warm_starts(fresh, records / "warm") == [17]
    ds = {16: write(records, "ds,seed=16", *before[16]), 17: write(records, "ds,seed=17", *moved)}
    ds[18] = write(records, "ds,seed=18", *before[18])
    assert study.same_warm_start(ds, random) == [16, 18]
    assert study.same_warm_start({19: ds[18]}, random) == []  # no baseline run of that seed
    # Random run again from the new warm start of seed 17: each seed pairs with its own Random.
    again = {17: write(tmp_path / "again", "seed=17", *moved)}
    sources = {"main": random, "random_again": again}
    assert study.pair_on_warm_start(ds, sources) == {16: "main", 17: "random_again", 18: "main"}
    assert study.pair_on_warm_start({17: ds[17]}, {"main": random}) == {}


def test_the_study_smoke_runs_and_reports(tmp_path):
    """benchmarks/efficiency_paper_regime.py on the sweep file's smoke rows: run, a record per
    finished row that reads as its workdir does, no rerun of a recorded row (its workdir gone),
    report from the records with the JSON's required keys, figure."""
    from insight_jax.study.report import read_run

    study = _study()
    script = [sys.executable, str(ROOT / "benchmarks/efficiency_paper_regime.py")]
    root, records = tmp_path / "study", tmp_path / "records"
    run = [*script, "run", "--sweeps=smoke", f"--root={root}", f"--records={records}", "--jobs=2"]
    out = subprocess.run(run, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    workdirs = sorted((root / "countdown_paper_regime" / "smoke").iterdir())
    assert len(workdirs) == 4
    for workdir in workdirs:
        record = records / "countdown_paper_regime" / "smoke" / workdir.name
        assert sorted(p.name for p in record.iterdir()) == [
            "config.json",
            "final_beliefs.npz",
            "metrics.jsonl",
            "summary.json",
        ]
        ours, theirs = read_run(workdir), read_run(record)
        for a, b in zip(ours[:3], theirs[:3], strict=True):
            np.testing.assert_array_equal(a, b)
        assert ours[3] == theirs[3] and len(ours[3]) >= 6  # time split and selection statistics
        for name in ("config.json", "summary.json", "final_beliefs.npz"):
            assert (record / name).read_bytes() == (workdir / name).read_bytes()
        # The draws read back from the beliefs are the rollouts the trainer counted, K a group.
        draws = study.draws_per_prompt(record)
        summary = json.loads((record / "summary.json").read_text())
        k = json.loads((record / "config.json").read_text())["rl"]["num_rollouts"]
        assert draws.min() >= 0 and draws.sum() * k == summary["rollouts"]
    shutil.rmtree(root)  # a later session: the workdirs are gone, the records are committed
    again = subprocess.run(run, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "4 of 4 rows recorded" in again.stdout
    assert "] start " not in again.stdout  # no row was run
    report = [*script, "report", f"--records={records}", "--main-sweep=smoke", "--n-boot=200"]
    report += [f"--out={tmp_path / 'paper.json'}", f"--figures={tmp_path / 'fig'}"]
    rep = subprocess.run(report, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert rep.returncode == 0, rep.stdout[-3000:] + rep.stderr[-3000:]
    res = json.loads((tmp_path / "paper.json").read_text())
    assert res["draws_per_prompt"] == 12.8 and res["warm_start_disjoint"] is True
    assert set(res["methods"]) == {"random", "insight"}
    insight = res["methods"]["insight"]
    assert insight["seeds"] == [1, 2]
    assert set(insight["final_pass1"]) == {"mean", "ci"} and len(insight["final_pass1"]["ci"]) == 2
    assert set(insight["speedup"]) == {"point", "ci"}
    # One machine: every row of a seed ran its own 4-step warm start, and they agree.
    assert insight["seeds_on_random_warm_start"] == [1, 2]
    # Random and InSight spend M K rollouts a step, so the two speed-ups are one ratio.
    rs, sp = insight["rollouts_speedup"], insight["speedup"]
    assert rs["point"] == pytest.approx(sp["point"], rel=1e-9)
    assert rs["ci"] == pytest.approx(sp["ci"], rel=1e-9)
    assert set(insight["train_pool_gap"]) == {"before_rl", "after"}
    assert set(insight["time_per_step_s"]) == {
        "time_select",
        "time_rollout",
        "time_verify",
        "time_update",
    }
    assert "| insight |" in (tmp_path / "paper.md").read_text().split("## Time per RL step")[1]
    assert res["cost"]["runs"] == 4
    assert res["complete"] is False and res["seeds_missing"]["insight"] == 8
    assert (tmp_path / "fig" / "paper.png").stat().st_size > 10_000
    assert "| insight | 2 |" in (tmp_path / "paper.md").read_text()
    spread = res["draw_concentration"]
    assert set(spread) == {"smoke: random", "smoke: insight"}
    assert spread["smoke: insight"]["seeds"] == [1, 2]
    assert 0 < spread["smoke: insight"]["effective_share"] <= 1
    # A draws sweep cut short (one paired seed at M = 32) is left out of the draws table
    # until it has two, rather than breaking the report.
    draws = records / "countdown_paper_regime" / "draws"
    for method in ("random", "insight"):
        shutil.copytree(
            records / "countdown_paper_regime" / "smoke" / f"{method},seed=1",
            draws / f"{method},rl.batch_size=32,seed=1",
        )
    rep = subprocess.run(report, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert rep.returncode == 0, rep.stdout[-3000:] + rep.stderr[-3000:]
    assert set(json.loads((tmp_path / "paper.json").read_text())["draws"]) == {"256"}


def test_table_labels_of_the_sweeps_variants():
    short = _study()._short
    assert short("random") == "random"
    assert short("random,rl.batch_size=128,rl.num_minibatches=2,selection.num_candidates=2048") == (
        "M = 128 random"
    )
    assert (
        short("ds,selection.dynamic_sampling_band=[0.2,0.8]")
        == "ds,dynamic_sampling_band=[0.2,0.8]"
    )
    assert short("insight,selection.skip_explore=0.05,selection.skip_threshold=0.5") == (
        "insight,skip_explore=0.05,skip_threshold=0.5"
    )
