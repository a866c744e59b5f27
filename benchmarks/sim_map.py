"""Where each selector wins: a one-factor-at-a-time map of the selection simulator.

Runs the simulator (insight_jax/sim: a synthetic learner driven by the real selector code) for
the methods random, insight, mopps, expected_difficulty, inverse_evidence and DAPO dynamic
sampling ("ds"), over slices around one base setting:

  base     N = 1e4 prompts, balanced difficulty mix, K = 8, lambda = 1, no drift
           (M = 32, Mhat = 16 M = 512, 8 topics, transfer 0.5, lr 0.05, 400 steps)
  N        1e3, 1e5, 1e6
  mix      mostly_easy, mostly_hard        (shares of too-easy / learnable / too-hard prompts)
  K        4, 16
  lambda   0.9, 0.5                        (no drift)
  drift    lambda 1.0, 0.9, 0.5 with per-prompt OU drift (std 1 logit, rate 0.02 / step)

Per cell and method, over >= 8 seeds (all methods of a seed share the pool: paired):
  final held-out accuracy, mean +- 95% CI (t); the paired difference to random, +- 95% CI;
  steps-to-target speedup: target = random's final mean accuracy, t(method) = first (linearly
  interpolated) step at which the method's seed-mean curve reaches it, speedup =
  t(random) / t(method), with a paired bootstrap 95% interval over seeds (a resample that never
  reaches the target counts as speedup 0); the same in rollouts (differs for ds only); and the
  share of zero-variance groups among rolled-out groups.

Writes benchmarks/results/sim_map.json (settings, machine, per-cell results, mean curves) and
sim_map.png, and prints a table and the elapsed time. Usage:

  python benchmarks/sim_map.py            # the map (about 6 minutes on 2 CPU cores)
  python benchmarks/sim_map.py --quick    # N = 1e3, 3 cells, 4 seeds, 150 steps (< 1 minute)
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

RESULTS = Path(__file__).resolve().parent / "results"

METHODS = ("random", "insight", "mopps", "expected_difficulty", "inverse_evidence", "ds")
BELIEF_FREE = ("random", "ds")  # selection ignores the beliefs, so lambda cannot matter
BASE = dict(num_prompts=10_000, mix="balanced", num_rollouts=8, decay=1.0, drift=False)
DRIFT = dict(drift_std=1.0, drift_rate=0.02)
# Fixed simulator settings (the same in every cell).
FIXED = dict(
    batch_size=32,
    num_candidates=512,
    num_clusters=8,
    num_heldout=2048,
    ds_max_rounds=8,
    learning_rate=0.05,
    transfer=0.5,
)


def _cell(name, slice_, **changes):
    return dict(name=name, slice=slice_, **{**BASE, **changes})


def make_cells(quick: bool) -> list[dict]:
    """The base cell and its one-factor-at-a-time neighbours."""
    if quick:
        base = dict(num_prompts=1_000)
        return [
            _cell("base(N=1e3)", "base", **base),
            _cell("mix=mostly_hard", "mix", mix="mostly_hard", **base),
            _cell("drift,lambda=0.5", "drift", decay=0.5, drift=True, **base),
        ]
    cells = [_cell("base", "base")]
    cells += [_cell(f"N=1e{int(np.log10(n))}", "N", num_prompts=n) for n in (1000, 100_000)]
    cells += [_cell("N=1e6", "N", num_prompts=1_000_000)]
    cells += [_cell(f"mix={m}", "mix", mix=m) for m in ("mostly_easy", "mostly_hard")]
    cells += [_cell(f"K={k}", "K", num_rollouts=k) for k in (4, 16)]
    cells += [_cell(f"lambda={d}", "lambda", decay=d) for d in (0.9, 0.5)]
    cells += [_cell(f"drift,lambda={d}", "drift", decay=d, drift=True) for d in (1.0, 0.9, 0.5)]
    return cells


def _sim_config(cell, method, steps):
    from insight_jax.sim import SimConfig

    return SimConfig(
        method=method,
        num_prompts=cell["num_prompts"],
        batch_size=FIXED["batch_size"],
        num_rollouts=cell["num_rollouts"],
        num_candidates=FIXED["num_candidates"],
        num_steps=steps,
        num_clusters=FIXED["num_clusters"],
        num_heldout=FIXED["num_heldout"],
        ds_max_rounds=FIXED["ds_max_rounds"],
    )


def _sim_params(cell):
    from insight_jax.sim import mixture_params

    drift = DRIFT if cell["drift"] else {}
    return mixture_params(
        cell["mix"],
        learning_rate=FIXED["learning_rate"],
        transfer=FIXED["transfer"],
        decay=cell["decay"],
        **drift,
    )


def run_all(cells, methods, seeds, steps, batching="auto"):
    """{(cell name, method): dict of numpy arrays [seeds, ...]}. Cells sharing a static config
    (N, K) run in one compiled call per method. Methods that never read the beliefs (random,
    ds) give identical runs for cells that differ only in lambda, so those run once."""
    import jax

    from insight_jax.sim import resolve_batching, simulate_many

    groups: dict[tuple, list[dict]] = {}
    for cell in cells:
        groups.setdefault((cell["num_prompts"], cell["num_rollouts"]), []).append(cell)
    out, timings = {}, []
    for (n, k), group in groups.items():
        for method in methods:
            config = _sim_config(group[0], method, steps)
            belief_free = method in BELIEF_FREE
            keys = [(c["mix"], c["drift"], 1.0 if belief_free else c["decay"]) for c in group]
            unique = list(dict.fromkeys(keys))
            params = [
                _sim_params(dict(group[0], mix=mix, drift=drift, decay=decay))
                for mix, drift, decay in unique
            ]
            t0 = time.perf_counter()
            res = simulate_many(config, params, seeds, batching)
            res = jax.tree.map(np.asarray, jax.block_until_ready(res))
            dt = time.perf_counter() - t0
            timings.append(
                dict(
                    N=n,
                    K=k,
                    method=method,
                    runs=len(unique) * len(seeds),
                    batching=resolve_batching(config, batching),
                    seconds=round(dt, 2),
                )
            )
            print(f"  N={n:>7} K={k:>2} {method:<19} {len(unique)} cells {dt:6.1f}s", flush=True)
            for cell, key in zip(group, keys, strict=True):
                i = unique.index(key)
                out[cell["name"], method] = dict(
                    accuracy=res.accuracy[i],
                    rollouts=res.rollouts[i],
                    zero_var_frac=res.zero_var_frac[i],
                )
    return out, timings


def _t_quantile(n):
    from scipy import stats

    return float(stats.t.ppf(0.975, n - 1)) if n > 1 else float("nan")


def mean_ci(x):
    """(mean, half-width of the 95% t interval)."""
    x = np.asarray(x, np.float64)
    return float(x.mean()), float(_t_quantile(x.size) * x.std(ddof=1) / np.sqrt(x.size))


def crossing(curve, target):
    """First (linearly interpolated) index at which `curve` >= target; NaN if never."""
    above = np.flatnonzero(curve >= target)
    if above.size == 0:
        return float("nan")
    t = int(above[0])
    if t == 0:
        return 0.0
    lo, hi = curve[t - 1], curve[t]
    return t - 1 + float((target - lo) / (hi - lo))


def _cum_rollouts(rollouts_mean, t):
    """Rollouts spent by (fractional) step t: interpolated cumulative sum."""
    cum = np.concatenate([[0.0], np.cumsum(rollouts_mean)])
    return float(np.interp(t, np.arange(cum.size), cum)) if np.isfinite(t) else float("nan")


def _speedups(acc_ref, acc, roll_ref, roll):
    """(step speedup, rollout speedup) of seed-mean curves vs the reference's final accuracy."""
    ref, cur = acc_ref.mean(0), acc.mean(0)
    target = ref[-1]
    t_ref, t = crossing(ref, target), crossing(cur, target)
    r_ref = _cum_rollouts(roll_ref.mean(0), t_ref)
    r = _cum_rollouts(roll.mean(0), t)
    step = t_ref / t if t > 0 else float("nan")
    return step, (r_ref / r if r > 0 else float("nan"))


def summarize(runs, cells, methods, rng_seed=0, num_boot=500):
    rows = []
    rng = np.random.default_rng(rng_seed)
    for cell in cells:
        ref = runs[cell["name"], "random"]
        num_seeds = ref["accuracy"].shape[0]
        boot = rng.integers(0, num_seeds, (num_boot, num_seeds))
        for method in methods:
            r = runs[cell["name"], method]
            final = r["accuracy"][:, -1]
            mean, ci = mean_ci(final)
            dmean, dci = mean_ci(final - ref["accuracy"][:, -1])
            step, roll = _speedups(ref["accuracy"], r["accuracy"], ref["rollouts"], r["rollouts"])
            bs = np.array(
                [
                    _speedups(
                        ref["accuracy"][b], r["accuracy"][b], ref["rollouts"][b], r["rollouts"][b]
                    )[0]
                    for b in boot
                ]
            )
            bs = np.nan_to_num(bs, nan=0.0)  # never reached in that resample: as slow as it gets
            rows.append(
                dict(
                    cell=cell["name"],
                    slice=cell["slice"],
                    method=method,
                    final_acc=mean,
                    final_acc_ci95=ci,
                    delta_vs_random=dmean,
                    delta_ci95=dci,
                    speedup_steps=None if np.isnan(step) else step,
                    speedup_steps_ci95=[float(q) for q in np.percentile(bs, [2.5, 97.5])],
                    speedup_rollouts=None if np.isnan(roll) else roll,
                    zero_var_frac=float(r["zero_var_frac"].mean()),
                    rollouts_per_step=float(r["rollouts"].mean()),
                    initial_acc=float(r["accuracy"][:, 0].mean()),
                )
            )
    return rows


def print_table(rows, steps):
    print(
        f"\n{'cell':<18} {'method':<19} {'final acc':>15} {'d vs random':>15} "
        f"{'speedup (steps)':>23} {'x rollouts':>10} {'zero-var':>8}"
    )
    for r in rows:
        lo, hi = r["speedup_steps_ci95"]
        sp = "never" if r["speedup_steps"] is None else f"{r['speedup_steps']:.2f}"
        ro = "never" if r["speedup_rollouts"] is None else f"{r['speedup_rollouts']:.2f}"
        print(
            f"{r['cell']:<18} {r['method']:<19} "
            f"{r['final_acc']:.3f} +- {r['final_acc_ci95']:.3f} "
            f"{r['delta_vs_random']:+.3f} +- {r['delta_ci95']:.3f} "
            f"{sp:>7} [{lo:4.2f}, {hi:4.2f}]    {ro:>10} {r['zero_var_frac']:8.2f}"
        )


def print_headline(rows, methods):
    """Step speedup vs random, one row per cell (never = did not reach random's final acc)."""
    cells = list(dict.fromkeys(r["cell"] for r in rows))
    short = {m: m[:10] for m in methods}
    print("\nSpeedup in steps to reach random's final accuracy (ds: in rollouts in brackets)")
    print(f"{'cell':<18}" + "".join(f"{short[m]:>13}" for m in methods if m != "random"))
    by = {(r["cell"], r["method"]): r for r in rows}
    for c in cells:
        line = f"{c:<18}"
        for m in methods:
            if m == "random":
                continue
            r = by[c, m]
            s = "never" if r["speedup_steps"] is None else f"{r['speedup_steps']:.2f}"
            if m == "ds" and r["speedup_rollouts"] is not None:
                s += f" [{r['speedup_rollouts']:.2f}]"
            line += f"{s:>13}"
        print(line)


def plot(rows, runs, cells, methods, path):
    """Learning curves of the base cell, then one panel per slice: step speedup vs random
    (log scale; a gap means the method never reached random's final accuracy)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import ScalarFormatter

    present = {c["slice"] for c in cells}
    slices = [s for s in ("N", "mix", "K", "lambda", "drift") if s in present]
    colors = {m: f"C{i}" for i, m in enumerate(methods)}
    nrows = -(-(1 + len(slices)) // 3)
    fig, axes = plt.subplots(nrows, 3, figsize=(15, 4.3 * nrows), squeeze=False)
    axes = axes.ravel()
    base = cells[0]
    ax = axes[0]
    for m in methods:
        acc = runs[base["name"], m]["accuracy"]
        mean = acc.mean(0)
        half = _t_quantile(acc.shape[0]) * acc.std(0, ddof=1) / np.sqrt(acc.shape[0])
        ax.plot(mean, color=colors[m], label=m)
        ax.fill_between(np.arange(mean.size), mean - half, mean + half, color=colors[m], alpha=0.2)
    ax.set(title=f"{base['name']}: held-out accuracy (95% CI)", xlabel="step", ylabel="accuracy")
    ax.legend(fontsize=8)
    by = {(r["cell"], r["method"]): r for r in rows}
    others = [m for m in methods if m != "random"]
    for ax, sl in zip(axes[1:], slices, strict=False):
        members = [base] + [c for c in cells if c["slice"] == sl and c is not base]
        x = np.arange(len(members))
        for j, m in enumerate(others):
            ys = [by[c["name"], m]["speedup_steps"] for c in members]
            ys = [np.nan if y is None else y for y in ys]
            dx = 0.04 * (j - (len(others) - 1) / 2)  # small offsets so markers do not overlap
            ax.plot(x + dx, ys, "o-", color=colors[m], label=m)
        ax.axhline(1.0, color="gray", lw=0.8)
        ax.set_xticks(x, [c["name"] for c in members], rotation=20, fontsize=8)
        ax.set(title=f"slice: {sl}", ylabel="step speedup vs random")
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(ScalarFormatter())
        ax.yaxis.set_minor_formatter(ScalarFormatter())
    if slices:
        axes[1].legend(fontsize=8)
    for ax in axes[1 + len(slices) :]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _parse():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="N = 1e3, 3 cells, 4 seeds, 150 steps")
    p.add_argument("--steps", type=int, default=None, help="steps per run (default 400)")
    p.add_argument("--seeds", type=int, default=None, help="seeds per cell (default 8)")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--out", default=None, help="JSON path (PNG next to it)")
    return p.parse_args()


def main():
    args = _parse()
    t_start = time.perf_counter()
    import jax

    from insight_jax.sim import MIXES

    steps = args.steps or (150 if args.quick else 400)
    num_seeds = args.seeds or (4 if args.quick else 8)
    methods = tuple(args.methods.split(","))
    if methods[0] != "random":
        raise SystemExit("--methods must start with random (the reference)")
    out = Path(args.out or RESULTS / ("sim_map_quick.json" if args.quick else "sim_map.json"))
    cells = make_cells(args.quick)
    seeds = np.arange(num_seeds)
    print(f"{len(cells)} cells x {len(methods)} methods x {num_seeds} seeds x {steps} steps")
    # --quick is compile-bound; a sequential lax.map program compiles faster than a vmapped one.
    runs, timings = run_all(cells, methods, seeds, steps, "map" if args.quick else "auto")
    rows = summarize(runs, cells, methods)
    print_table(rows, steps)
    print_headline(rows, methods)
    png = out.with_suffix(".png")
    out.parent.mkdir(parents=True, exist_ok=True)
    plot(rows, runs, cells, methods, png)
    elapsed = time.perf_counter() - t_start
    meta = dict(
        jax=jax.__version__,
        backend=jax.default_backend(),
        devices=jax.device_count(),
        machine=platform.platform(),
        python=platform.python_version(),
        cpus=os.cpu_count(),
        date=time.strftime("%Y-%m-%d %H:%M:%S"),
        argv=sys.argv[1:],
        elapsed_s=round(elapsed, 1),
    )
    settings = dict(
        base=BASE,
        fixed=FIXED,
        drift=DRIFT,
        steps=steps,
        seeds=seeds.tolist(),
        methods=methods,
        cells=cells,
        mixes=MIXES,
        sim_config_example=dataclasses.asdict(_sim_config(cells[0], "insight", steps)),
    )
    stride = max(1, steps // 100)
    curves = {
        f"{c}|{m}": dict(
            steps=list(range(0, steps + 1, stride)),
            accuracy=np.round(r["accuracy"].mean(0)[::stride], 4).tolist(),
        )
        for (c, m), r in runs.items()
    }
    out.write_text(
        json.dumps(
            dict(meta=meta, settings=settings, timings=timings, rows=rows, mean_curves=curves),
            indent=1,
        )
    )
    print(f"\nwrote {out} and {png}")
    print(f"elapsed {elapsed:.1f}s")


if __name__ == "__main__":
    main()
