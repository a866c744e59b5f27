"""The simulator calibrated against the real tiny runs, and checked on a method it was not fit to.

For each task of the efficiency study (benchmarks/efficiency.py run), this
1. fits the simulator's learning rate and difficulty spread to the real Random runs (seed-mean
   held-out pass@1 curve, initial accuracy and spread; insight_jax/sim/calibrate.py), with the
   real N, M, K;
2. runs every main-study method through the simulator with the fitted parameters (the real
   selector code, 16 seeds) and compares with the real runs: final accuracy and the
   steps-to-Random's-final speed-up, real vs simulated.

Usage: python benchmarks/sim_calibration.py [--root workdirs/study]
Writes benchmarks/results/sim_calibration.json and docs/figures/sim_calibration.png (real and
simulated curves side by side) and prints a table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from configs.ablations.sweeps_common import METHODS  # the study's methods
from insight_jax.sim import calibrate, simulate_seeds
from insight_jax.study import report, stats

ROOT = Path(__file__).resolve().parents[1]
SCORER_PARAMS = {"insight": (("eta", 3.0), ("mu", 0.3))}


def _initial_spread(sweep_dir: Path) -> float:
    vals = [
        json.loads(p.read_text()).get("eval_spread_before_rl")
        for p in sweep_dir.glob("random,seed=*/summary.json")
    ]
    return float(np.mean([v for v in vals if v is not None]))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", default="workdirs/study")
    p.add_argument("--tasks", default="countdown_tiny,arithmetic_tiny")
    p.add_argument("--sim-seeds", type=int, default=16)
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/sim_calibration.json"))
    p.add_argument("--figure", default=str(ROOT / "docs/figures/sim_calibration.png"))
    args = p.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = [t for t in args.tasks.split(",") if (Path(args.root) / t / "main").is_dir()]
    fig, axes = plt.subplots(2, len(tasks), figsize=(6.5 * len(tasks), 8), squeeze=False)
    out = {}
    t0 = time.time()
    for col, task in enumerate(tasks):
        sweep_dir = Path(args.root) / task / "main"
        real = report.load_sweep_dir(sweep_dir)
        config = json.loads(next(sweep_dir.glob("random,seed=*/config.json")).read_text())
        n = config["task"]["rl_pool_size"] or config["task"]["num_train"]
        m, k = config["rl"]["batch_size"], config["rl"]["num_rollouts"]
        rnd = real["random"]
        curve = list(zip(rnd.steps, np.stack(rnd.curves).mean(0), strict=True))
        cal = calibrate(
            curve,
            num_prompts=n,
            batch_size=m,
            num_rollouts=k,
            initial_spread=_initial_spread(sweep_dir),
            spread_samples=config["eval"]["num_samples"],
        )
        steps = np.asarray(rnd.steps, dtype=int)
        sim_seeds = list(range(100, 100 + args.sim_seeds))  # not the fitting seeds
        sim_curves, task_out = {}, {"N": n, "M": m, "K": k, "fit": {}, "methods": {}}
        task_out["fit"] = {
            "learning_rate": cal.learning_rate,
            "difficulty_mean": cal.difficulty_mean,
            "difficulty_std": cal.difficulty_std,
            "mse": cal.mse,
            "sim_initial_spread": cal.sim_initial_spread,
        }
        for method in [x for x in METHODS if x in real]:
            sim_config = dataclasses.replace(
                cal.config,
                method=method,
                num_candidates=min(16 * m, n),
                scorer_params=SCORER_PARAMS.get(method, ()),
                ds_max_rounds=4,
            )
            res = simulate_seeds(sim_config, cal.params, sim_seeds)
            sim_curves[method] = np.asarray(res.accuracy)[:, steps]
        base_real, base_sim = np.stack(real["random"].curves), sim_curves["random"]
        for method, sc in sim_curves.items():
            rc = np.stack(real[method].curves)
            row = {
                "real_final": float(rc[:, -1].mean()),
                "sim_final": float(sc[:, -1].mean()),
                "real_minus_random": float(rc[:, -1].mean() - base_real[:, -1].mean()),
                "sim_minus_random": float(sc[:, -1].mean() - base_sim[:, -1].mean()),
            }
            if method != "random":
                real_sp = stats.speedup_ci(steps, base_real, rc, n_boot=1, rng=0)["speedup"]
                sim_sp = stats.speedup_ci(steps, base_sim, sc, n_boot=1, rng=0)["speedup"]
                row.update(real_speedup=float(real_sp), sim_speedup=float(sim_sp))
            task_out["methods"][method] = row
        out[task] = task_out

        for i, method in enumerate(x for x in ("random", "insight", "mopps") if x in sim_curves):
            color = f"C{i}"
            ax = axes[0, col]
            ax.plot(steps, 100 * np.stack(real[method].curves).mean(0), color=color, label=method)
            ax.plot(steps, 100 * sim_curves[method].mean(0), color=color, ls="--")
        axes[0, col].set_title(f"{task}: real (solid) vs simulated (dashed)")
        axes[0, col].set_xlabel("RL step")
        axes[0, col].set_ylabel("held-out pass@1 (%)")
        axes[0, col].legend(fontsize=7)
        axes[0, col].grid(alpha=0.3)
        names = list(task_out["methods"])
        xs = np.arange(len(names))
        real_d = [100 * task_out["methods"][x]["real_minus_random"] for x in names]
        sim_d = [100 * task_out["methods"][x]["sim_minus_random"] for x in names]
        axes[1, col].bar(xs - 0.2, real_d, 0.4, label="real (5 seeds)")
        axes[1, col].bar(xs + 0.2, sim_d, 0.4, label=f"simulated ({args.sim_seeds} seeds)")
        axes[1, col].set_xticks(xs, names, rotation=30, fontsize=7)
        axes[1, col].axhline(0, color="gray", lw=1)
        axes[1, col].set_ylabel("final pass@1 minus random (pts)")
        axes[1, col].legend(fontsize=7)

    fig.tight_layout()
    Path(args.figure).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.figure, dpi=120)
    Path(args.out).write_text(json.dumps(out, indent=1))
    for task, t in out.items():
        f = t["fit"]
        print(
            f"\n{task}: N={t['N']} M={t['M']} K={t['K']}  fitted lr={f['learning_rate']:.3g} "
            f"difficulty N({f['difficulty_mean']:.2f}, {f['difficulty_std']:.2f}^2), "
            f"curve mse={f['mse']:.2e}"
        )
        print(
            f"{'method':<20} {'real final':>10} {'sim final':>10} {'real-rnd':>9} "
            f"{'sim-rnd':>8} {'real x':>7} {'sim x':>7}"
        )
        for method, r in t["methods"].items():
            print(
                f"{method:<20} {100 * r['real_final']:>10.1f} {100 * r['sim_final']:>10.1f} "
                f"{100 * r['real_minus_random']:>9.1f} {100 * r['sim_minus_random']:>8.1f} "
                f"{r.get('real_speedup', 1.0):>7.2f} {r.get('sim_speedup', 1.0):>7.2f}"
            )
    print(f"\n{time.time() - t0:.0f} s; wrote {args.out} and {args.figure}")


if __name__ == "__main__":
    main()
