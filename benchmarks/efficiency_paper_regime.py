"""The efficiency study in the paper's regime (configs/countdown_paper_regime.py, and with
--task arithmetic configs/arithmetic_paper_regime.py): M = 256 prompts x K = 8 per step from
N = 2000 for 100 steps (12.8 draws per prompt), a warm start on problems outside the RL pool and
the test set, fresh seeds 16-25.

Two steps, both resumable (finished rows are skipped, an interrupted row resumes):

  python benchmarks/efficiency_paper_regime.py run [--task countdown] [--jobs 1]
                                                   [--sweeps warm,main,draws,beyond]
                                                   [--root workdirs/paper]
  python benchmarks/efficiency_paper_regime.py report [--task countdown]

`run` expands the sweeps of configs/ablations/<task>_paper_regime.py with launch/sweep.py and
runs their rows in workdirs under --root. As each row finishes, its record (config.json,
summary.json, final_beliefs.npz and the metrics.jsonl keys the report reads, `RECORD_KEYS`;
tens of kB, no checkpoint) is written under
--records (benchmarks/results/paper_regime_runs/<sweep file>/<sweep>/<row>, committed), and a row
with a record is not run again: the study accumulates across machines and sessions whose
workdirs are gone. `collect` writes the records of the finished runs under --root (e.g. a sweep
started with launch/sweep.py directly). Runs on the CPU are deterministic on one machine, so a
record is what rerunning its row there would give; another machine may not reproduce a warm
start (XLA compiles for the processor it finds), which breaks the pairing of the rows run there
with the rows recorded before: `run` warns, the report counts per method the seeds on Random's
warm start, and pairs the rest with a "random_again" sweep (Random from the new warm starts)
where one is recorded. `report` reads the records and writes

  benchmarks/results/efficiency_paper_regime.json  top level: draws_per_prompt,
      warm_start_disjoint (true when every run's warm-start problems share none with its RL
      pool or test set, as measured by the trainer), per method: seeds, final_pass1 (mean, ci),
      speedup (point, ci), the paired difference from Random, rollouts to target, and the
      train-pool minus held-out pass@1 gap before and after RL (mean, ci over seeds); the
      draws-per-prompt sweep (InSight against Random at each M); the "beyond" selectors;
      draw_concentration (how each variant spread its draws over the pool, from the records
      that keep final beliefs: stats.draw_concentration); paired_on_warm_start (the methods
      with seeds off Random's warm start against Random of their own warm starts); the study's
      cost (runs, CPU hours of the RL steps, wall hours).
  benchmarks/results/efficiency_paper_regime.md    the tables
  docs/figures/efficiency_paper_regime.png         curves with 95% bands, paired differences,
                                                    InSight minus Random per draws/prompt, and
                                                    each run's final pass@1 against its batches'
                                                    mean evidence
  docs/figures/efficiency_paper_regime_cost.png    (with beyond rows) each method's final
                                                    pass@1 minus Random's against the rollouts
                                                    it spent
(with --task arithmetic: efficiency_paper_regime_arithmetic.{json,md,png}, records under
paper_regime_runs/arithmetic_paper_regime/, no beyond sweep; without a draws sweep the
figure's third panel shows the final differences paired on the warm start).

The statistics are insight_jax/study (the same definitions as docs/results.md): final pass@1 with
a 95% t-interval, paired per-seed differences, steps-to-target speed-up against Random's final
mean with a 10,000-sample seed bootstrap, rollouts to the same target.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np

from insight_jax.study.report import TIME_KEYS

ROOT = Path(__file__).resolve().parents[1]
# --task: its sweep file (whose stem names the records' folder: <root>/<stem>/<sweep>/<row>),
# the results' stem (the JSON, table and figures) and the sweeps `run` and `collect` expand when
# --sweeps is not given (arithmetic's has no beyond rows).
TASKS = {
    "countdown": (
        "configs/ablations/countdown_paper_regime.py",
        "efficiency_paper_regime",
        "warm,main,draws,beyond",
    ),
    "arithmetic": (
        "configs/ablations/arithmetic_paper_regime.py",
        "efficiency_paper_regime_arithmetic",
        "warm,main,draws",
    ),
}
ORDER = ["random", "insight", "mopps", "ds", "expected_difficulty", "inverse_evidence"]
RL_STEPS, POOL = 100, 2000
REQUIRED_SEEDS = {"random": 10, "insight": 10, "mopps": 10, "ds": 10}
REQUIRED_SEEDS |= {"expected_difficulty": 5, "inverse_evidence": 5}
RECORDS = ROOT / "benchmarks" / "results" / "paper_regime_runs"
BELIEFS = "final_beliefs.npz"  # the trainer's alpha, beta per prompt after the last step
# What a record keeps of each metrics.jsonl step: what insight_jax/study/report.read_run reads
# (eval steps and pass@1, rollouts, the time split, the selection statistics) and what explains
# a curve (rewards, the selected prompts' beliefs and success rate, response length, dynamic
# sampling's filter share, a fitted prior).
RECORD_KEYS = (
    "step",
    "eval_accuracy",
    "reward_mean",
    "train_accuracy",
    "rollouts",
    *TIME_KEYS,
    "zero_var_frac",
    "sel_mean_evidence",
    "sel_mean_phibar",
    "sel_success_rate",
    "completion_len",
    "ds_pass_frac",
    "prior_mean",
)


def _sweep_module():
    spec = importlib.util.spec_from_file_location("sweep", ROOT / "launch" / "sweep.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_record(workdir: Path, record: Path) -> None:
    """A finished run's record: its config.json, summary.json and final_beliefs.npz as written,
    its metrics.jsonl steps (merged as the report reads them) cut to RECORD_KEYS; written beside
    and renamed, so a record exists whole or not at all."""
    from insight_jax.metrics import read_metrics_jsonl

    tmp = record.with_name(f".{record.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name in ("config.json", "summary.json"):  # the run's whole config: rerunnable from it
        shutil.copyfile(workdir / name, tmp / name)
    if (workdir / BELIEFS).is_file():  # 16 kB at N = 2000: where the run spent its draws
        shutil.copyfile(workdir / BELIEFS, tmp / BELIEFS)
    lines = []
    for rec in read_metrics_jsonl(workdir / "metrics.jsonl"):
        kept = {k: rec[k] for k in RECORD_KEYS if k in rec}
        if len(kept) > 1:
            lines.append(json.dumps(kept, separators=(",", ":")))
    (tmp / "metrics.jsonl").write_text("".join(f"{line}\n" for line in lines))
    shutil.rmtree(record, ignore_errors=True)
    tmp.rename(record)


def collect(sweep_dir: Path, records: Path) -> int:
    """Writes the records of the finished runs of a sweep directory that have none yet."""
    sweep = _sweep_module()
    written = 0
    for workdir in sorted(sweep_dir.iterdir()) if sweep_dir.is_dir() else []:
        if sweep.is_finished(workdir) and not sweep.is_finished(records / workdir.name):
            write_record(workdir, records / workdir.name)
            written += 1
    return written


def rows_to_run(rows: dict[str, list[tuple[str, dict]]], recorded) -> dict[str, list]:
    """{sweep: rows to run} given every sweep's rows and `recorded(sweep, row name)`: the rows
    without a record, and the "warm" rows of every seed that those rows need. A warm row fills
    the warm-start cache, which is gone with its session's workdirs; rerunning it keeps rows of
    one seed that start at once from each warm starting (on another machine it may not
    reproduce its record: cmd_run says so, and the report counts the seeds that pair)."""
    todo = {
        name: [(n, r) for n, r in named if not recorded(name, n)] for name, named in rows.items()
    }
    needed = {r["config.seed"] for name, named in todo.items() if name != "warm" for _, r in named}
    if "warm" in rows:
        todo["warm"] = [
            (n, r) for n, r in rows["warm"] if r["config.seed"] in needed or not recorded("warm", n)
        ]
    return todo


def cmd_run(args) -> int:
    sweep = _sweep_module()
    root, records = Path(args.root), Path(args.records)
    loaded = {
        name: sweep.load_sweep(f"{ROOT / args.sweep_file}:{name}")
        for name in args.sweeps.split(",")
    }
    for _, sweep_name, _ in loaded.values():
        collect(root / sweep_name, records / sweep_name)  # finished under --root, no record yet

    def recorded(name: str, row: str) -> bool:
        return sweep.is_finished(records / loaded[name][1] / row)

    todo = rows_to_run({name: rows for name, (_, _, rows) in loaded.items()}, recorded)
    failed = 0
    for name, (config, sweep_name, rows) in loaded.items():
        done = records / sweep_name
        n_done = sum(recorded(name, n) for n, _ in rows)
        print(f"== {args.sweep_file}:{name}: {n_done} of {len(rows)} rows recorded, "
              f"{len(todo[name])} to run")  # fmt: skip
        failed += sweep.run_rows(
            str(ROOT / config),
            todo[name],
            root / sweep_name,
            root,
            args.jobs,
            on_done=lambda workdir, done=done: collect(workdir.parent, done),
        )
        changed = changed_warm_starts(root / sweep_name, done) if name == "warm" else []
        if changed:
            print(
                f"WARNING: the warm starts of seeds {changed} did not reproduce their records "
                "on this machine: rows run now on those seeds start elsewhere than the rows "
                "recorded before (the report counts, per method, the seeds on Random's warm "
                "start)"
            )
    return 1 if failed else 0


def cmd_collect(args) -> int:
    task = Path(args.sweep_file).stem
    root, records = Path(args.root) / task, Path(args.records) / task
    sweeps = [d.name for d in sorted(root.iterdir()) if d.is_dir()] if root.is_dir() else []
    for name in sweeps:
        print(f"{name}: {collect(root / name, records / name)} new records")
    return 0


def _ci(d: dict, scale: float = 1.0) -> list[float | None]:
    lo, hi = d.get("lo"), d.get("hi")
    return [None if lo is None else scale * lo, None if hi is None else scale * hi]


def _run_summaries(sweep_dir: Path) -> dict[str, dict[int, dict]]:
    """{variant: {seed: summary.json}} of the finished runs of a sweep directory."""
    from insight_jax.study.report import parse_row_name

    out: dict[str, dict[int, dict]] = {}
    for workdir in sorted(sweep_dir.iterdir()) if sweep_dir.is_dir() else []:
        path = workdir / "summary.json"
        if not path.is_file():
            continue
        summary = json.loads(path.read_text())
        if "eval_accuracy_after" in summary:
            name, seed = parse_row_name(workdir.name)
            out.setdefault(name, {})[seed] = summary
    return out


def _gap(runs: dict[int, dict], tag: str) -> dict[str, Any] | None:
    """Train-pool minus held-out pass@1 at `tag` (before_rl / after), mean and 95% t-interval."""
    from insight_jax.study import stats

    gaps = [
        s[f"eval_train_pool_{tag}"] - s[f"eval_test_{tag}"]
        for s in runs.values()
        if f"eval_train_pool_{tag}" in s
    ]
    if not gaps:
        return None
    mean, lo, hi = stats.mean_ci(np.asarray(gaps))
    pools = [s[f"eval_train_pool_{tag}"] for s in runs.values() if f"eval_train_pool_{tag}" in s]
    tests = [s[f"eval_test_{tag}"] for s in runs.values() if f"eval_test_{tag}" in s]
    return {
        "train_pool": float(np.mean(pools)),
        "held_out": float(np.mean(tests)),
        "gap": float(mean),
        "ci": [float(lo), float(hi)] if len(gaps) > 1 else [None, None],
    }


def warm_start_key(summary: dict) -> tuple:
    """What identifies a run's warm start in its summary: its held-out and RL-pool pass@1
    before RL (thousands of sampled completions, so two different warm starts practically
    never agree on both)."""
    return summary.get("eval_test_before_rl"), summary.get("eval_train_pool_before_rl")


def same_warm_start(runs: dict[int, dict], baseline: dict[int, dict]) -> list[int]:
    """The seeds whose run began from the warm start of the baseline's run of that seed.

    Rows of a seed pair through the warm-start cache, which is gone with a session's workdirs;
    a warm start run again on another machine can differ (XLA compiles for the processor it
    finds, and 400 steps of SFT carry a last-bit difference into the weights). A seed that does
    not share it still gives one independent difference per seed (the paired t-interval stays
    valid), without the variance the pairing removes."""
    return sorted(
        seed
        for seed, s in runs.items()
        if seed in baseline and warm_start_key(s) == warm_start_key(baseline[seed])
    )


def changed_warm_starts(workdirs: Path, records: Path) -> list[int]:
    """Seeds whose warm row, run again under `workdirs`, did not reproduce its record."""
    fresh, recorded = _run_summaries(workdirs), _run_summaries(records)
    fresh_runs = {seed: s for runs in fresh.values() for seed, s in runs.items()}
    recorded_runs = {seed: s for runs in recorded.values() for seed, s in runs.items()}
    shared = set(same_warm_start(fresh_runs, recorded_runs))
    return sorted(seed for seed in fresh_runs if seed in recorded_runs and seed not in shared)


def _pick_seeds(name: str, parts: list[tuple[Any, list[int]]]):
    """A Variant of `name` made of the listed seeds of each part (seeds ascending)."""
    from insight_jax.study.report import Variant

    picked = sorted((seed, v, v.seeds.index(seed)) for v, seeds in parts for seed in seeds)
    out = Variant(name, steps=parts[0][0].steps)
    for seed, v, i in picked:
        out.seeds.append(seed)
        out.curves.append(v.curves[i])
        out.rollouts.append(v.rollouts[i])
        out.times.append(v.times[i])
    return out


def pair_on_warm_start(method_runs: dict[int, dict], sources: dict[str, dict[int, dict]]):
    """{seed: source} for each seed of a method: the first source (e.g. "main", then
    "random_again") whose Random run of that seed began from the method's warm start; seeds
    that none shares are left out."""
    out = {}
    for seed in sorted(method_runs):
        for source, random_runs in sources.items():
            if seed in same_warm_start({seed: method_runs[seed]}, random_runs):
                out[seed] = source
                break
    return out


def draws_per_prompt(record: Path) -> np.ndarray | None:
    """How often each prompt of a recorded run was rolled out (as a group of K), from its final
    beliefs: every rolled-out group adds K to alpha + beta (dynamic sampling's filtered groups
    too), so draws_i = (alpha_i + beta_i - alpha0 - beta0) / K. None when the record has no
    beliefs or its beliefs forget (selection.decay < 1: the sum no longer counts draws)."""
    if not (record / BELIEFS).is_file():
        return None
    config = json.loads((record / "config.json").read_text())
    sel, k = config["selection"], config["rl"]["num_rollouts"]
    if sel["decay"] != 1.0:
        return None
    with np.load(record / BELIEFS) as b:
        evidence = b["alpha"].astype(np.float64) + b["beta"] - sel["alpha0"] - sel["beta0"]
    return np.rint(evidence / k)  # float32 sums: within 1e-3 of an integer multiple of K


def _concentration(sweep_dir: Path) -> dict[str, dict[str, Any]]:
    """{variant: stats.draw_concentration of its recorded runs' draws, mean over the seeds
    whose records hold beliefs, with those seeds}."""
    from insight_jax.study import stats
    from insight_jax.study.report import parse_row_name

    per: dict[str, dict[int, dict]] = {}
    for record in sorted(sweep_dir.iterdir()) if sweep_dir.is_dir() else []:
        d = draws_per_prompt(record) if (record / "summary.json").is_file() else None
        if d is not None:
            name, seed = parse_row_name(record.name)
            per.setdefault(name, {})[seed] = stats.draw_concentration(d)
    return {
        name: {
            "seeds": sorted(by_seed),
            **{k: float(np.mean([c[k] for c in by_seed.values()])) for k in by_seed[min(by_seed)]},
        }
        for name, by_seed in per.items()
    }


def _concentration_table(rows: dict[str, dict]) -> list[str]:
    lines = ["## How each run spread its draws over the pool (mean over recorded seeds)", ""]
    lines += ["| sweep: variant | seeds | median draws of a prompt | share of draws on the "
              "most-drawn 10% | effective share of the pool | never drawn |",
              "|---|---|---|---|---|---|"]  # fmt: skip
    for name, c in rows.items():
        lines.append(
            f"| {name} | {len(c['seeds'])} | {c['median']:.1f} | {100 * c['top_decile_share']:.0f}%"
            f" | {100 * c['effective_share']:.0f}% | {100 * c['never']:.1f}% |"
        )
    return [*lines, ""]


def _method_row(row: dict, runs: dict[int, dict], baseline: dict[int, dict]) -> dict[str, Any]:
    out = {
        "seeds": row["seeds"],
        "final_pass1": {"mean": row["final_accuracy"]["mean"], "ci": _ci(row["final_accuracy"])},
        "start_pass1": row["start_accuracy"],
        "rollouts_total": row["rollouts_total"],
        "rollouts_to_target": row["rollouts_to_target"],
        "zero_variance_share": row["selection_stats"].get("zero_var_frac_mean"),
        # alpha + beta of the batch's prompts before the update (2 = unseen), last 40% of steps
        "batch_evidence_last40": row["selection_stats"].get("sel_mean_evidence_last40"),
        # median seconds per RL step by phase, the mean over seeds (runs shared the machine)
        "time_per_step_s": row["time_per_step_s"],
        "train_pool_gap": {"before_rl": _gap(runs, "before_rl"), "after": _gap(runs, "after")},
    }
    if "speedup" in row:
        out["speedup"] = {"point": row["speedup"]["speedup"], "ci": _ci(row["speedup"])}
        out["vs_random"] = row["final_vs_baseline"]
        rs = row["rollouts_speedup"]  # the same target, in rollouts spent (DS spends more)
        out["rollouts_speedup"] = {"point": rs["speedup"], "ci": _ci(rs)}
        out["seeds_on_random_warm_start"] = same_warm_start(runs, baseline)
    return out


def _markdown(methods: dict[str, dict], title: str) -> list[str]:
    def pct(x):
        return "-" if x is None else f"{100 * x:.1f}"

    lines = [f"## {title}", ""]
    lines.append(
        "| method | seeds | final pass@1 % (95% CI) | vs random (pts, 95% CI; p) | "
        "speed-up in steps (95% CI) | speed-up in rollouts (95% CI) | rollouts to target "
        "(seeds reaching) | train-pool gap before / after RL (pts) | seeds on Random's warm "
        "start |"
    )
    lines.append("|---|---|---|---|---|---|---|---|---|")
    for name, m in methods.items():
        f = m["final_pass1"]
        vs = m.get("vs_random")
        vs_text = (
            f"{100 * vs['diff']:+.1f} [{pct(vs['lo'])}, {pct(vs['hi'])}]; p={vs['p_value']:.2g}"
            if vs and vs.get("diff") is not None and vs.get("p_value") is not None
            else "-"
        )
        sp_text, rs_text = (
            "1 (baseline)" if m.get(k) is None else
            f"{_fmt(m[k]['point'])} [{_fmt(m[k]['ci'][0])}, {_fmt(m[k]['ci'][1])}]"
            for k in ("speedup", "rollouts_speedup")
        )  # fmt: skip
        r = m["rollouts_to_target"]
        r_text = "-" if r["mean"] is None else f"{r['mean']:.0f} ({r['n_reached']}/{r['n_seeds']})"
        gaps = [m["train_pool_gap"][t] for t in ("before_rl", "after")]
        g_text = " / ".join("-" if g is None else f"{100 * g['gap']:+.1f}" for g in gaps)
        shared = m.get("seeds_on_random_warm_start")
        w_text = "-" if shared is None else f"{len(shared)} of {len(m['seeds'])}"
        lines.append(
            f"| {_short(name)} | {len(m['seeds'])} | {pct(f['mean'])} [{pct(f['ci'][0])}, "
            f"{pct(f['ci'][1])}] | {vs_text} | {sp_text} | {rs_text} | {r_text} | {g_text} | "
            f"{w_text} |"
        )
    return [*lines, ""]


def _paired_on_warm_start(root: Path, variants, runs, methods, n_boot: int):
    """The main rows whose seeds started elsewhere than the main Random (warm starts a later
    machine made) against Random run again from those warm starts ("random_again"), paired
    seed by seed: ({method: {random_seeds_from, random, <method>}}, markdown lines). Methods
    that pair with the same Random runs share a table."""
    from insight_jax.study import report

    again_dir = root / "random_again"
    again = list(report.load_sweep_dir(again_dir).values()) if again_dir.is_dir() else []
    if not again:
        return {}, []
    random_of = {
        "main": (variants["random"], runs["random"]),
        "random_again": (again[0], next(iter(_run_summaries(again_dir).values()))),
    }
    groups: dict[tuple, list[str]] = {}
    for m, row in methods.items():
        if m != "random" and len(row["seeds_on_random_warm_start"]) < len(row["seeds"]):
            pairs = pair_on_warm_start(runs[m], {k: r for k, (_, r) in random_of.items()})
            if pairs:
                groups.setdefault(tuple(pairs.items()), []).append(m)
    out, md = {}, []
    for pairs, names in groups.items():
        sources = {k: [s for s, src in pairs if src == k] for k in random_of}
        base = _pick_seeds("random", [(random_of[k][0], s) for k, s in sources.items() if s])
        base_runs = {s: random_of[src][1][s] for s, src in pairs}
        seeds = [s for s, _ in pairs]
        group = {"random": base, **{m: _pick_seeds(m, [(variants[m], seeds)]) for m in names}}
        g = report.summarize(group, baseline="random", n_boot=n_boot)
        rows = {"random": _method_row(g["variants"]["random"], base_runs, base_runs)}
        for m in names:
            rows[m] = _method_row(g["variants"][m], {s: runs[m][s] for s in seeds}, base_runs)
            out[m] = {"random_seeds_from": sources, "random": rows["random"], m: rows[m]}
            out[m]["curve_vs_random"] = g["variants"][m]["curve_vs_baseline"]
            out[m]["random_final_by_seed"] = {
                seed: float(c[-1]) for seed, c in zip(base.seeds, base.curves, strict=True)
            }
        title = "; ".join(f"{k}: {s}" for k, s in sources.items())
        md += _markdown(rows, f"{', '.join(names)} against Random from the same warm starts "
                              f"(Random's seeds: {title})")  # fmt: skip
    return out, md


def _plot_spread(ax, variants: dict, order: list[str], rewarm: dict) -> None:
    """Final held-out pass@1 minus Random's on the same seed (for the methods in `rewarm`, the
    Random of the same warm start) against the mean evidence of the run's batches in its last
    40% of steps: one small point per run, a large one per method."""
    random = variants["random"]
    main = {s: float(c[-1]) for s, c in zip(random.seeds, random.curves, strict=True)}
    for i, name in enumerate(order):
        v = variants[name]
        base = rewarm[name]["random_final_by_seed"] if name in rewarm else main
        pairs = [
            (t["sel_mean_evidence_last40"], 100 * (c[-1] - base[s]))
            for s, c, t in zip(v.seeds, v.curves, v.times, strict=True)
            if s in base and "sel_mean_evidence_last40" in t
        ]
        if not pairs:
            continue
        x, y = np.array(pairs).T
        color = f"C{i}"
        ax.scatter(x, y, s=12, alpha=0.4, color=color)
        ax.scatter([x.mean()], [y.mean()], s=90, color=color, edgecolor="k", label=name)
    ax.axhline(0.0, color="gray", ls="--")
    ax.set_xlabel("mean evidence alpha + beta of the batch, last 40% of steps")
    ax.set_ylabel("final pass@1 minus random, same seed (pts)")
    ax.set_title("final pass@1 against how often the batch was drawn before")
    ax.legend(fontsize=8)


def _plot_cost(ax, methods: dict[str, dict], beyond: dict[str, dict], title: str = "") -> None:
    """Each method's final held-out pass@1 minus Random's (by seed, 95% CI), one row per method
    with the rollouts it spent in units of Random's: the beyond rows' goal is a gain at <= 1x."""
    base = methods["random"]["rollouts_total"]
    rows = [(n, m, "main") for n, m in methods.items()]
    rows += [(n, m, "beyond") for n, m in beyond.items() if n not in methods]
    rows = [(n, m, t) for n, m, t in rows if m.get("vs_random", {}).get("diff") is not None]
    for y, (_, m, sweep) in enumerate(rows):
        d, lo, hi = (100 * m["vs_random"][k] for k in ("diff", "lo", "hi"))
        cost = m["rollouts_total"] / base
        color = "C3" if cost > 1.0 + 1e-9 else "C0"
        marker = "o" if sweep == "main" else "s"
        ax.errorbar([d], [y], xerr=[[d - lo], [hi - d]], marker=marker, capsize=3, color=color)
    labels = [
        f"{_short(n)} ({len(m['seeds'])} seeds, {m['rollouts_total'] / base:.1f}x rollouts)"
        for n, m, _ in rows
    ]
    ax.set_yticks(range(len(rows)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.axvline(0.0, color="gray", ls="--")
    ax.set_xlabel("final pass@1 minus random, same seeds (pts), 95% CI")
    ax.set_title(
        title
        or "circles: main sweep; squares: beyond rows; red: more rollouts than Random\n"
        "(the beyond rows' goal: right of 0, in blue)",
        fontsize=10,
    )


def _fmt(x: float | None) -> str:
    return "never" if x is None else f"{x:.2f}"


def _short(variant: str) -> str:
    """A variant's name for a table: "M = 128 insight" for a draws row (its other settings
    follow from M), the settings without their config section otherwise."""
    if "rl.batch_size=" in variant:
        return f"M = {_batch_size(variant)} {variant.split(',')[0]}"
    return re.sub(r"(^|,)[a-z_]+\.(?=[a-z_]+=)", r"\1", variant)


def _batch_size(variant: str) -> int:
    for part in variant.split(","):
        if part.startswith("rl.batch_size="):
            return int(part.split("=")[1])
    return 256


def cmd_report(args) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import jax
    import matplotlib.pyplot as plt

    from insight_jax.study import report

    root = Path(args.records) / Path(args.sweep_file).stem
    main_dir = root / args.main_sweep
    variants = report.load_sweep_dir(main_dir) if main_dir.is_dir() else {}
    if "random" not in variants or len(variants) < 2:
        raise SystemExit(f"no finished Random and other method under {main_dir}")
    runs = _run_summaries(main_dir)
    summary = report.summarize(variants, baseline="random", n_boot=args.n_boot)
    order = [m for m in ORDER if m in variants]
    methods = {m: _method_row(summary["variants"][m], runs[m], runs["random"]) for m in order}
    title = f"{args.task.capitalize()}, M = 256, K = 8, N = 2000, disjoint warm start"
    md = _markdown(methods, title)
    md += ["## Time per RL step (median per run, mean over seeds; runs shared the machine)", ""]
    md += [report.time_table(summary, order), ""]

    rewarm, lines = _paired_on_warm_start(root, variants, runs, methods, args.n_boot)
    md += lines

    # Draws per prompt: InSight against Random at each M (M = 256 from the main sweep).
    draws: dict[str, Any] = {}
    draws_variants = report.load_sweep_dir(root / "draws") if (root / "draws").is_dir() else {}
    by_m: dict[int, dict] = {256: {k: variants[k] for k in ("random", "insight") if k in variants}}
    runs_by_m: dict[int, dict] = {256: runs}
    draws_runs = _run_summaries(root / "draws")
    for name, v in draws_variants.items():
        by_m.setdefault(_batch_size(name), {})[v.method] = v
        runs_by_m.setdefault(_batch_size(name), {})[v.method] = draws_runs[name]
    for m_size in sorted(by_m):
        group = by_m[m_size]
        # An M enters the table once it has two paired seeds (an interval needs two).
        paired = set(group["insight"].seeds) & set(group["random"].seeds) if len(group) > 1 else ()
        if len(paired) >= 2 and set(group["insight"].seeds) <= set(group["random"].seeds):
            s = report.summarize(group, baseline="random", n_boot=args.n_boot)
            ins = s["variants"]["insight"]
            draws[str(m_size)] = {
                "draws_per_prompt": m_size * RL_STEPS / POOL,
                "seeds": ins["seeds"],
                "random_final_pass1": s["variants"]["random"]["final_accuracy"]["mean"],
                "insight_final_pass1": ins["final_accuracy"]["mean"],
                "insight_vs_random": ins["final_vs_baseline"],
                "insight_speedup": {"point": ins["speedup"]["speedup"], "ci": _ci(ins["speedup"])},
                "seeds_on_random_warm_start": same_warm_start(
                    runs_by_m[m_size]["insight"], runs_by_m[m_size]["random"]
                ),
            }
    if len(draws) > 1:  # a sweep over M (one M alone is the main table)
        md += ["## InSight against Random by draws per prompt (M at N = 2000)", ""]
        md += ["| M | draws / prompt | seeds | Random % | InSight % | diff (pts, 95% CI) | "
               "speed-up (95% CI) | seeds on Random's warm start |",
               "|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for m_size, d in draws.items():
            vs, sp = d["insight_vs_random"], d["insight_speedup"]
            md.append(
                f"| {m_size} | {d['draws_per_prompt']:.1f} | {len(d['seeds'])} | "
                f"{100 * d['random_final_pass1']:.1f} | {100 * d['insight_final_pass1']:.1f} | "
                f"{100 * vs['diff']:+.1f} [{100 * vs['lo']:+.1f}, {100 * vs['hi']:+.1f}] | "
                f"{_fmt(sp['point'])} [{_fmt(sp['ci'][0])}, {_fmt(sp['ci'][1])}] | "
                f"{len(d['seeds_on_random_warm_start'])} of {len(d['seeds'])} |"
            )
        md.append("")

    # Beyond the paper: selectors against the main sweep's Random on the same seeds.
    beyond: dict[str, Any] = {}
    beyond_dir = root / "beyond"
    extra = report.load_sweep_dir(beyond_dir) if beyond_dir.is_dir() else {}
    if extra:
        merged = {**{k: variants[k] for k in ("random", "ds") if k in variants}, **extra}
        b_summary = report.summarize(merged, baseline="random", n_boot=args.n_boot)
        b_runs = {
            **{k: runs[k] for k in ("random", "ds") if k in runs},
            **_run_summaries(beyond_dir),
        }
        beyond = {
            n: _method_row(b_summary["variants"][n], b_runs[n], runs["random"]) for n in merged
        }
        md += _markdown(beyond, "Beyond the paper: selectors against Random (same seeds)")

    # Where the draws went (records that keep their final beliefs; older ones do not).
    spread = {
        f"{sweep}: {_short(name)}": c
        for sweep in (args.main_sweep, "draws", "beyond")
        for name, c in _concentration(root / sweep).items()
    }
    if spread:
        md += _concentration_table(spread)

    sweeps_run = [runs, *(_run_summaries(root / d) for d in ("draws", "beyond", "random_again"))]
    all_runs = [s for r in sweeps_run for seeds in r.values() for s in seeds.values()]
    flags = {s.get("warm_start_disjoint") for s in all_runs}
    missing = {
        m: max(0, need - len(methods[m]["seeds"]) if m in methods else need)
        for m, need in REQUIRED_SEEDS.items()
    }
    results = {
        # The issue's minimum: 10 paired seeds of the headline methods, 5 of the other two;
        # until then the numbers are interim (missing: seeds still to run per method).
        "complete": not any(missing.values()),
        "seeds_missing": missing,
        "draws_per_prompt": 256 * RL_STEPS / POOL,
        "warm_start_disjoint": flags == {True},
        "settings": {
            "task": args.task,
            "config": f"configs/{Path(args.sweep_file).stem}.py",
            "sweeps": args.sweep_file,
            "M": 256,
            "K": 8,
            "N": POOL,
            "rl_steps": RL_STEPS,
            "Mhat": "16 M (whole pool)",
            "baseline": "random",
            "n_boot": args.n_boot,
        },
        "methods": methods,
        "draws": draws,
        "beyond": beyond,
        "draw_concentration": spread,
        # Rows that started from other warm starts than the main Random's, against Random run
        # again from those warm starts: {method: {random_seeds_from, random, <method>}}.
        "paired_on_warm_start": rewarm,
        "cost": {
            "runs": len(all_runs),
            "rl_step_hours": sum(s.get("time_rl_steps_s", 0.0) for s in all_runs) / 3600,
            "wall_hours": sum(s.get("wall_time_this_session_s", 0.0) for s in all_runs) / 3600,
            "runs_on": args.runs_on,
        },
        "report_machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "jax": jax.__version__,
        },
        "curves": {m: summary["variants"][m]["curve"] for m in order},
        "steps": summary["steps"],
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    out.with_suffix(".md").write_text("\n".join(md) + "\n")

    fig, grid = plt.subplots(2, 2, figsize=(14, 10))
    axes = grid.ravel()
    report.plot_curves(axes[0], variants, order, "held-out pass@1, mean and 95% band")
    # Methods that started elsewhere than the main Random: against the Random of their own
    # warm starts (the tables' paired_on_warm_start), in both panels that compare with Random.
    paired = {m: rewarm[m][m] if m in rewarm else row for m, row in methods.items()}
    vs_curves = {m: {"curve_vs_baseline": r["curve_vs_random"]} for m, r in rewarm.items()}
    report.plot_curves_vs_baseline(
        axes[1],
        {**summary, "variants": {**summary["variants"], **vs_curves}},
        order,
        "difference from random of the same warm start"
        if rewarm
        else "difference from random, same seeds",
    )
    _plot_spread(axes[3], variants, order, rewarm)
    if len(draws) > 1:  # a sweep over M (one M alone is the main table)
        xs = [d["draws_per_prompt"] for d in draws.values()]
        ys = [100 * d["insight_vs_random"]["diff"] for d in draws.values()]
        lo = [
            100 * (d["insight_vs_random"]["diff"] - d["insight_vs_random"]["lo"])
            for d in draws.values()
        ]
        hi = [
            100 * (d["insight_vs_random"]["hi"] - d["insight_vs_random"]["diff"])
            for d in draws.values()
        ]
        axes[2].errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=4, label="insight - random")
        axes[2].axhline(0.0, color="gray", ls="--")
        axes[2].set_xscale("log", base=2)
        axes[2].set_xticks(xs, [f"{x:g}\n(M = {m})" for x, m in zip(xs, draws, strict=True)])
        axes[2].minorticks_off()
        axes[2].set_xlabel("draws per prompt (M x 100 steps / N)")
        axes[2].set_ylabel("final pass@1 difference (pts), 95% CI")
        axes[2].set_title("InSight minus Random by draws per prompt")
        axes[2].legend()
    else:
        _plot_cost(axes[2], paired, {}, "final pass@1 minus Random's, paired on the warm start;"
                                        "\nred: more rollouts than Random")  # fmt: skip
    fig.tight_layout()
    figure = Path(args.figures) / f"{out.stem}.png"
    figure.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(figure, dpi=120)
    written = [out, out.with_suffix(".md"), figure]
    if beyond:
        fig, ax = plt.subplots(figsize=(11, 5))
        _plot_cost(ax, methods, beyond)
        fig.tight_layout()
        written.append(figure.with_name(f"{out.stem}_cost.png"))
        fig.savefig(written[-1], dpi=120)
    print("\n".join(md))
    print("wrote " + ", ".join(map(str, written)))
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("command", choices=["run", "collect", "report"])
    p.add_argument("--task", choices=sorted(TASKS), default="countdown")
    p.add_argument("--sweeps", help="comma-separated; default: the task's in TASKS")
    p.add_argument("--root", default="workdirs/paper", help="the runs' workdirs (run, collect)")
    p.add_argument("--records", default=str(RECORDS), help="the runs' records (all commands)")
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--main-sweep", default="main", help="the sweep reported as the main one")
    p.add_argument("--n-boot", type=int, default=10000)
    p.add_argument("--out", help="default: benchmarks/results/<the task's results stem>.json")
    p.add_argument("--figures", default=str(ROOT / "docs" / "figures"))
    p.add_argument("--runs-on", default="this machine (see report_machine)")
    args = p.parse_args(argv)
    args.sweep_file, stem, default_sweeps = TASKS[args.task]
    args.sweeps = args.sweeps or default_sweeps
    args.out = args.out or str(ROOT / "benchmarks" / "results" / f"{stem}.json")
    return {"run": cmd_run, "collect": cmd_collect, "report": cmd_report}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
