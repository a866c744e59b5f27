"""Does memorisation make InSight lose to Random on a small, revisited pool? (simulator)

The pool experiment (docs/results.md) restricted RL to N = 500 prompts: InSight concentrated on
informative prompts (fewer zero-variance groups) yet ended ~3 points below Random on held-out
pass@1, and a larger policy that had memorised its pool scored 39% on it against 17% held out.
This runs Random and InSight through the simulator (insight_jax/sim) with its memorisation term
off and on (model.py: w_i = 1 / (1 + kappa G_i), m_i += r (1 - w_i) g_i), at N = 500 and 2000.

Settings: the Countdown calibration of benchmarks/sim_calibration.py (results/sim_calibration.json:
lr 0.046, d ~ N(2.44, 2.0^2), one topic), M = 32, K = 8, Mhat = min(16 M, N), InSight with the
real runs' eta = 3, mu = 0.3, lambda = 1, 100 steps, 16 seeds (vmapped). Memorisation "on" is
kappa = 2, r = 2 (chosen by eye from a small grid; not fitted). Both settings run in one
compiled call per (N, method) with SimConfig(memorisation=True): with kappa = 0 that is bit for
bit the simulator without the term (tests/test_sim.py), plus the train-pool accuracy.

Reports, per (N, memorisation, method): final held-out accuracy and train-pool accuracy (mean,
95% t interval over seeds), the share of zero-variance groups; per (N, memorisation): InSight
minus Random final held-out accuracy, paired by seed (same pool), mean and 95% t interval.
Writes benchmarks/results/sim_memorisation.json and docs/figures/sim_memorisation.png and
prints a table. Usage: python benchmarks/sim_memorisation.py [--seeds 16] [--steps 100]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

METHODS = ("random", "insight")
POOLS = (500, 2000)
SCORER_PARAMS = {"insight": (("eta", 3.0), ("mu", 0.3))}
# Countdown fit of benchmarks/sim_calibration.py (results/sim_calibration.json, countdown_tiny).
CALIBRATED = dict(difficulty_mean=2.4412, difficulty_std=2.0, learning_rate=0.0464)
MEMORISATION = {
    "off": dict(memorise=0.0, memory_rate=2.0),
    "on": dict(memorise=2.0, memory_rate=2.0),
}
FIXED = dict(batch_size=32, num_rollouts=8, num_clusters=1, num_heldout=2048, transfer=0.0)


def _config(method, n, steps):
    from insight_jax.sim import SimConfig

    return SimConfig(
        method=method,
        num_prompts=n,
        batch_size=FIXED["batch_size"],
        num_rollouts=FIXED["num_rollouts"],
        num_candidates=min(16 * FIXED["batch_size"], n),
        num_steps=steps,
        num_clusters=FIXED["num_clusters"],
        num_heldout=FIXED["num_heldout"],
        scorer_params=SCORER_PARAMS.get(method, ()),
        memorisation=True,
    )


def _params():
    from insight_jax.sim import normal_params

    return [
        normal_params(
            CALIBRATED["difficulty_mean"],
            CALIBRATED["difficulty_std"],
            learning_rate=CALIBRATED["learning_rate"],
            transfer=FIXED["transfer"],
            **MEMORISATION[name],
        )
        for name in MEMORISATION
    ]


def run_all(seeds, steps):
    """{(N, memorisation, method): dict of numpy arrays [seeds, ...]}, and timings."""
    import jax

    from insight_jax.sim import resolve_batching, simulate_many

    params, runs, timings = _params(), {}, []
    for n in POOLS:
        for method in METHODS:
            config = _config(method, n, steps)
            t0 = time.perf_counter()
            res = jax.tree.map(
                np.asarray, jax.block_until_ready(simulate_many(config, params, seeds))
            )
            dt = time.perf_counter() - t0
            batching = resolve_batching(config)
            timings.append(dict(N=n, method=method, batching=batching, seconds=round(dt, 2)))
            print(f"  N={n:>5} {method:<8} {len(params)}x{len(seeds)} runs ({batching}) {dt:6.1f}s")
            for i, mem in enumerate(MEMORISATION):
                runs[n, mem, method] = dict(
                    accuracy=res.accuracy[i],
                    train_accuracy=res.train_accuracy[i],
                    zero_var_frac=res.zero_var_frac[i],
                )
    return runs, timings


def mean_ci(x):
    """(mean, half-width of the 95% t interval) over seeds (insight_jax.study.stats.mean_ci)."""
    from insight_jax.study import stats

    mean, _, hi = stats.mean_ci(np.asarray(x, np.float64))
    return float(mean), float(hi - mean)


def summarize(runs):
    rows, diffs = [], []
    for n in POOLS:
        for mem in MEMORISATION:
            for method in METHODS:
                r = runs[n, mem, method]
                held, held_ci = mean_ci(r["accuracy"][:, -1])
                train, train_ci = mean_ci(r["train_accuracy"][:, -1])
                rows.append(
                    dict(
                        N=n,
                        memorisation=mem,
                        method=method,
                        heldout=held,
                        heldout_ci95=held_ci,
                        train=train,
                        train_ci95=train_ci,
                        gap=train - held,
                        heldout_gain=float((r["accuracy"][:, -1] - r["accuracy"][:, 0]).mean()),
                        zero_var_frac=float(r["zero_var_frac"].mean()),
                        zero_var_frac_last40=float(r["zero_var_frac"][:, -40:].mean()),
                    )
                )
            ins, rnd = runs[n, mem, "insight"], runs[n, mem, "random"]
            d, d_ci = mean_ci(ins["accuracy"][:, -1] - rnd["accuracy"][:, -1])
            dt, dt_ci = mean_ci(ins["train_accuracy"][:, -1] - rnd["train_accuracy"][:, -1])
            diffs.append(
                dict(
                    N=n,
                    memorisation=mem,
                    insight_minus_random_heldout=d,
                    ci95=[d - d_ci, d + d_ci],
                    insight_minus_random_train=dt,
                    train_ci95=[dt - dt_ci, dt + dt_ci],
                )
            )
    return rows, diffs


def print_table(rows, diffs):
    print(
        f"\n{'N':>5} {'memo':<4} {'method':<8} {'held-out %':>14} {'train pool %':>14} "
        f"{'gap':>6} {'zero-var':>8}"
    )
    for r in rows:
        print(
            f"{r['N']:>5} {r['memorisation']:<4} {r['method']:<8} "
            f"{100 * r['heldout']:6.1f} +- {100 * r['heldout_ci95']:4.1f} "
            f"{100 * r['train']:6.1f} +- {100 * r['train_ci95']:4.1f} "
            f"{100 * r['gap']:+6.1f} {r['zero_var_frac']:8.2f}"
        )
    print(f"\n{'N':>5} {'memo':<4} {'InSight - Random, held-out (pts, 95% CI)':>42} {'train':>22}")
    for d in diffs:
        lo, hi = d["ci95"]
        tlo, thi = d["train_ci95"]
        print(
            f"{d['N']:>5} {d['memorisation']:<4} "
            f"{100 * d['insight_minus_random_heldout']:+19.2f} [{100 * lo:+.2f}, {100 * hi:+.2f}] "
            f"{100 * d['insight_minus_random_train']:+9.2f} [{100 * tlo:+.2f}, {100 * thi:+.2f}]"
        )


def plot(runs, path):
    """Per N: held-out (solid) and train-pool (dashed) curves with memorisation off and on, and
    the paired InSight - Random held-out difference over steps (95% t band)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy import stats

    fig, axes = plt.subplots(len(POOLS), 3, figsize=(15, 4.2 * len(POOLS)), squeeze=False)
    colors = {"random": "C0", "insight": "C1"}
    for row, n in enumerate(POOLS):
        for col, mem in enumerate(MEMORISATION):
            ax = axes[row, col]
            for method in METHODS:
                r = runs[n, mem, method]
                ax.plot(
                    100 * r["accuracy"].mean(0), color=colors[method], label=f"{method} held-out"
                )
                ax.plot(
                    100 * r["train_accuracy"].mean(0),
                    color=colors[method],
                    ls="--",
                    label=f"{method} train pool",
                )
            ax.set(
                title=f"N = {n}, memorisation {mem}",
                xlabel="step",
                ylabel="pass@1 (%)",
            )
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        ax = axes[row, 2]
        for j, mem in enumerate(MEMORISATION):
            d = 100 * (runs[n, mem, "insight"]["accuracy"] - runs[n, mem, "random"]["accuracy"])
            mean = d.mean(0)
            half = stats.t.ppf(0.975, d.shape[0] - 1) * d.std(0, ddof=1) / np.sqrt(d.shape[0])
            ax.plot(mean, color=f"C{2 + j}", label=f"memorisation {mem}")
            ax.fill_between(
                np.arange(mean.size), mean - half, mean + half, color=f"C{2 + j}", alpha=0.2
            )
        ax.axhline(0, color="gray", lw=0.8)
        ax.set(title=f"N = {n}: InSight - Random, held-out", xlabel="step", ylabel="points")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=16)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/sim_memorisation.json"))
    p.add_argument("--figure", default=str(ROOT / "docs/figures/sim_memorisation.png"))
    args = p.parse_args()
    t_start = time.perf_counter()
    import jax

    seeds = np.arange(args.seeds)
    print(
        f"{len(POOLS)} pools x {len(METHODS)} methods x 2 settings x {args.seeds} seeds x "
        f"{args.steps} steps"
    )
    runs, timings = run_all(seeds, args.steps)
    rows, diffs = summarize(runs)
    print_table(rows, diffs)
    plot(runs, Path(args.figure))
    elapsed = time.perf_counter() - t_start
    meta = dict(
        jax=jax.__version__,
        backend=jax.default_backend(),
        machine=platform.platform(),
        python=platform.python_version(),
        cpus=os.cpu_count(),
        date=time.strftime("%Y-%m-%d %H:%M:%S"),
        argv=sys.argv[1:],
        elapsed_s=round(elapsed, 1),
    )
    settings = dict(
        pools=POOLS,
        methods=METHODS,
        scorer_params={k: dict(v) for k, v in SCORER_PARAMS.items()},
        calibrated=CALIBRATED,
        memorisation=MEMORISATION,
        fixed=FIXED,
        steps=args.steps,
        seeds=seeds.tolist(),
        sim_config_example=dataclasses.asdict(_config("insight", POOLS[0], args.steps)),
    )
    stride = max(1, args.steps // 100)
    curves = {
        f"N={n}|{mem}|{method}": dict(
            steps=list(range(0, args.steps + 1, stride)),
            heldout=np.round(r["accuracy"].mean(0)[::stride], 4).tolist(),
            train=np.round(r["train_accuracy"].mean(0)[::stride], 4).tolist(),
        )
        for (n, mem, method), r in runs.items()
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            dict(
                meta=meta,
                settings=settings,
                timings=timings,
                rows=rows,
                insight_minus_random=diffs,
                mean_curves=curves,
            ),
            indent=1,
        )
    )
    print(f"\nwrote {out} and {args.figure}")
    print(f"elapsed {elapsed:.1f}s")


if __name__ == "__main__":
    main()
