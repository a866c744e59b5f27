"""Training-efficiency study: selection methods compared with seeds and confidence intervals.

Two steps, both resumable:

  python benchmarks/efficiency.py run    [--tasks countdown_tiny,arithmetic_tiny]
                                         [--sweeps warm,main,ablations] [--root workdirs/study]
                                         [--jobs 2]
  python benchmarks/efficiency.py report [--root workdirs/study]

`run` expands the sweeps declared in configs/ablations/<task>.py with launch/sweep.py ("warm"
fills the shared warm-start cache, "main" runs every method x seed, "replication" the main
comparison on fresh seeds, "pool" Random and InSight on N/4 prompts, "ablations" the knobs x
seed) and skips finished rows, so rerunning it after an interruption finishes the study.
`report` reads every finished run under the root and writes (names follow --out's stem):

  benchmarks/results/efficiency.json   all numbers (per task and variant; stats in
                                       insight_jax/study/report.py and stats.py)
  benchmarks/results/efficiency.md     the tables (final pass@1, speed-up, rollouts, time split)
  docs/figures/efficiency_curves.png   learning curves with 95% bands, one panel per task (all
                                       seeds: main and replication, where there is one)
  docs/figures/efficiency_ablations.png final pass@1 of each ablation with its 95% interval

and prints the tables. The baseline of every comparison is Random; the target of steps-to-target
is Random's final mean accuracy.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

MAIN_ORDER = ["random", "insight", "mopps", "expected_difficulty", "inverse_evidence", "ds"]


def cmd_run(args) -> int:
    failed = 0
    for sweep in args.sweeps.split(","):
        for task in args.tasks.split(","):
            spec = f"configs/ablations/{task}.py:{sweep}"
            print(f"== {spec}", flush=True)
            failed += subprocess.call(
                [
                    sys.executable,
                    str(ROOT / "launch" / "sweep.py"),
                    spec,
                    f"--root={args.root}",
                    f"--jobs={args.jobs}",
                ],
                cwd=ROOT,
            )
    return 1 if failed else 0


def _machine() -> dict:
    import jax

    return {
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "jax": jax.__version__,
        "backend": jax.default_backend(),
    }


def cmd_report(args) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from insight_jax.study import report

    root = Path(args.root)
    tasks = [t for t in args.tasks.split(",") if (root / t / "main").is_dir()]
    if not tasks:
        raise SystemExit(f"no finished main sweep under {root}/<task>/main")
    results = {"report_machine": _machine(), "runs_on": args.runs_on, "root": str(root)}
    results["tasks"] = {}
    md = []
    fig, axes = plt.subplots(2, len(tasks), figsize=(6.5 * len(tasks), 9), squeeze=False)
    abl_fig, abl_axes = plt.subplots(1, len(tasks), figsize=(6.5 * len(tasks), 4.5), squeeze=False)
    for ax, diff_ax, abl_ax, task in zip(axes[0], axes[1], abl_axes[0], tasks, strict=True):
        main = report.load_sweep_dir(root / task / "main")
        summary = report.summarize(main, baseline=args.baseline, n_boot=args.n_boot)
        task_out = {"main": summary}
        order = [m for m in MAIN_ORDER if m in main] + sorted(set(main) - set(MAIN_ORDER))
        md += [f"## {task}: methods", "", report.markdown_table(summary, order), ""]
        md += [f"### {task}: median wall time per RL step", "", report.time_table(summary, order)]
        md.append("")
        curves, curves_summary, seeds_note = main, summary, ""
        rep_dir = root / task / "replication"  # the same comparison on fresh seeds
        rep = report.load_sweep_dir(rep_dir) if rep_dir.is_dir() else {}
        if args.baseline in rep:
            task_out["replication"] = report.summarize(rep, args.baseline, args.n_boot)
            md += [f"## {task}: replication on fresh seeds", ""]
            md += [report.markdown_table(task_out["replication"], order), ""]
            curves = report.load_sweep_dir(root / task / "main", rep_dir)
            curves_summary = report.summarize(curves, args.baseline, args.n_boot)
            task_out["all_seeds"] = curves_summary
            md += [f"## {task}: main and replication seeds together", ""]
            md += [report.markdown_table(curves_summary, order), ""]
            seeds_note = ", main + replication seeds"
        report.plot_curves(
            ax, curves, order, f"{task}: held-out pass@1, mean and 95% band{seeds_note}"
        )
        report.plot_curves_vs_baseline(
            diff_ax, curves_summary, order, f"{task}: difference from {args.baseline}, same seeds"
        )

        pool_dir = root / task / "pool"  # Random vs InSight on a quarter of the pool
        if pool_dir.is_dir():
            pool = report.load_sweep_dir(pool_dir)
            if "random" in pool and len(pool) > 1:
                pool_summary = report.summarize(pool, baseline="random", n_boot=args.n_boot)
                task_out["pool"] = pool_summary
                md += [f"## {task}: RL pool of N/4 prompts (task.rl_pool_size)", ""]
                md += [report.markdown_table(pool_summary, ["random", "insight"]), ""]
                md += [report.time_table(pool_summary, ["random", "insight"]), ""]

        abl_dir = root / task / "ablations"
        if abl_dir.is_dir():
            abl = report.load_sweep_dir(abl_dir)
            # Compare ablations against the main sweep's Random and InSight (same seeds).
            merged = {**abl, **{k: main[k] for k in ("random", "insight") if k in main}}
            if abl and "random" in merged:
                abl_summary = report.summarize(merged, baseline="random", n_boot=args.n_boot)
                task_out["ablations"] = abl_summary
                abl_order = ["insight", *sorted(abl)]
                md += [
                    f"## {task}: ablations (InSight defaults: eta=3, mu=0.3, Mhat=16M, lambda=1)"
                ]
                md += ["", report.markdown_table(abl_summary, abl_order), ""]
                # Paired difference from Random (same seeds), with its 95% t-interval.
                names = [n for n in abl_order if n in abl_summary["variants"]]
                rows = [abl_summary["variants"][n].get("final_vs_baseline", {}) for n in names]
                means = [100 * (r.get("diff") or 0.0) for r in rows]
                errs = [
                    [100 * (r["diff"] - r["lo"]) if r.get("lo") is not None else 0 for r in rows],
                    [100 * (r["hi"] - r["diff"]) if r.get("hi") is not None else 0 for r in rows],
                ]
                abl_ax.barh(range(len(names)), means, xerr=errs, color="tab:blue", alpha=0.7)
                abl_ax.axvline(0.0, color="gray", ls="--", label="random")
                labels = [
                    f"{n.replace('insight,', '').replace('selection.', '')} "
                    f"({len(abl_summary['variants'][n]['seeds'])})"
                    for n in names
                ]
                abl_ax.set_yticks(range(len(names)), labels)
                abl_ax.tick_params(axis="y", labelsize=7)
                abl_ax.set_xlabel("final pass@1 minus random, same seeds (pts), 95% CI")
                abl_ax.set_title(f"{task}: ablations")
                abl_ax.legend(fontsize=7)
        results["tasks"][task] = task_out

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    out.with_suffix(".md").write_text("\n".join(md) + "\n")
    figures = Path(args.figures)
    figures.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(figures / f"{out.stem}_curves.png", dpi=120)
    abl_fig.tight_layout()
    abl_fig.savefig(figures / f"{out.stem}_ablations.png", dpi=120)
    print("\n".join(md))
    print(f"wrote {out}, {out.with_suffix('.md')} and figures in {figures}")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("command", choices=["run", "report"])
    p.add_argument("--tasks", default="countdown_tiny,arithmetic_tiny")
    p.add_argument("--sweeps", default="warm,main,ablations")
    p.add_argument("--root", default="workdirs/study")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--n-boot", type=int, default=10000)
    p.add_argument("--baseline", default="random", help="variant the others are compared to")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "efficiency.json"))
    p.add_argument("--figures", default=str(ROOT / "docs" / "figures"))
    p.add_argument(
        "--runs-on",
        default="this machine (see report_machine)",
        help="where the runs ran, when not here (stored in the JSON)",
    )
    args = p.parse_args(argv)
    return cmd_run(args) if args.command == "run" else cmd_report(args)


if __name__ == "__main__":
    sys.exit(main())
