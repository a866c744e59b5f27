"""The simulator's prediction for the paper's regime (Countdown, N = 2000, M up to 256; with
--task arithmetic, the arithmetic calibration and sim_paper_regime_arithmetic.{json,png}).

Written before the real runs, so they can be compared against it. The real study trains on
Countdown with K = 8, N = 2000 prompts in the RL pool, 100 steps, Mhat = 16 M candidates
(M >= 128: the whole pool), InSight eta = 3, mu = 0.3, lambda = 1, a Beta(1, 1) prior and a warm
start on problems outside the pool. Here (simulator: insight_jax/sim, real selector code):

  M in {32, 64, 128, 256}   (draws per prompt over the run = 100 M / N = 1.6, 3.2, 6.4, 12.8)
  updates per RL step       study: the real study's max(1, M / 64) = 1, 1, 2, 4 (primary);
                            calib: the calibration runs' 2 at every M
  memorisation              off; on (kappa = 2, r = 2 per visit, as
                            benchmarks/sim_memorisation.py); on_mean (kappa, r x u, below)
  methods                   random, insight, mopps, expected_difficulty, inverse_evidence,
                            ds (DAPO dynamic sampling, 4 rounds, every generated rollout counted)

with the Countdown calibration (benchmarks/results/sim_calibration.json: lr 0.046,
d ~ N(2.44, 2.0^2), one topic, no transfer). The warm start disjoint from the pool means the
memorised logits start at 0, as they do in the simulator. The six (updates, memorisation)
settings are SimParams values, so they run in one compiled call per (M, method) with
SimConfig(memorisation=True) (kappa = 0: bit for bit the simulator without the term); 16 seeds,
all methods of a seed on the same pool (paired).

Batch-size scaling (the modelling choice that decides the M = 256 prediction). The calibration
was fitted at M = 32. The real GRPO loss is a token mean over the batch, so a step averages the
gradient over the M K rollouts: a larger M lowers the noise of the step, it does not multiply
it. The simulator's skill update is already a batch mean,
    Delta s = (lr / M) sum_{i in batch} g_i = lr * mean_i g_i     (model.skill_increment),
with zero-variance groups counted in the mean (they dilute the step, as in a token-mean loss),
and DS trains on its M kept groups, also divided by M. So the loss normalisation needs no
M-dependent lr and no change to insight_jax/sim (printed check: with the calibrated lr, Random's
final accuracy is the same at every M, memorisation off).
What does change with M in the real study is the number of optimizer updates per RL step. The
simulator's lr is per RL step, fitted on runs with rl.num_minibatches = 2 AdamW updates per step
(the base config, M = 32). configs/countdown_paper_regime.py (paper_geometry) uses mini-batches
of 64 prompts, i.e. 1, 1, 2, 4 updates at M = 32, 64, 128, 256. "study" sets
    lr = f x 0.046,   f = updates / 2   (0.5, 0.5, 1, 2),
assuming learning per RL step is linear in the number of updates (each AdamW update moves the
weights by about lr whatever the mini-batch size); "calib" keeps f = 1.
The memorisation step is not a batch mean: m_i += r (1 - w_i) g_i, w_i = 1 / (1 + kappa G_i),
per prompt and per visit, with kappa and r chosen at M = 32. Under a mean loss a prompt's share
of an update is 1 / M, so its own-logit step (and the exposure that erodes its transfer) should
scale with its weight in one RL step's parameter movement relative to the calibration,
    u = f x 32 / M.
Both readings are run, since they bracket the prediction: "on" keeps kappa = r = 2 per visit
(memorisation grows with draws per prompt); "on_mean" sets kappa = 2u, r = 2u, which makes a
prompt's skill contribution and memory, as functions of its summed signal weighted by u, the
calibration's model (the linearised picture of a mean loss: self-kernel and shared kernel both
scale with 1 / M). At M = 32 with f = 1 they coincide.
What the simulator cannot express, and the prediction therefore leaves out:
  * Adam and gradient noise. The simulated step has no gradient noise beyond the rollouts'
    Bernoulli draws, and its size is proportional to the mean signal. Under AdamW a batch with
    less noise moves further along the signal per update (a real M = 256 step may learn more
    than the simulated one, for every method), and Adam's normalisation partly undoes the
    dilution by zero-variance groups (which would shrink the gain of selectors that avoid them);
  * the simulator's known misfits (docs/results.md "Calibration"): near-linear curves with no
    early jump or ceiling, so DS's gain is overstated, and so is the effect of f = 2 at M = 256.

Reports, per (M, updates, memorisation, method), over seeds: final held-out accuracy (mean, 95% t
interval); method minus Random paired by seed (insight_jax.study.stats.paired_diff_ci);
steps-to-target speed-up against Random with target = Random's final seed-mean accuracy, on the
real study's eval grid (every 10 steps), a 10,000-sample bootstrap resampling seeds jointly
(stats.speedup_ci, paired, as insight_jax/study/report.py); rollouts to that target per seed
(stats.resource_to_target, mean over the seeds that reach it) and on the seed-mean curves
(stats.steps_to_target), for ds and random; the share of zero-variance groups; the train-pool
minus held-out gap; the mean evidence a + b of the trained batch before its update (the
trainer's sel_mean_evidence; Beta(1, 1), lambda = 1: 2 + K x earlier rollouts of the prompt)
and the share of the pool rolled out at least once. Writes
benchmarks/results/sim_paper_regime.json and docs/figures/sim_paper_regime.png and prints
markdown tables (the main one per updates reading; selection statistics for "study"). About 5
minutes on 2 CPU cores, nearly all of it compiling the 24 (M, method) programs (the 96 runs of
one take seconds), so fewer seeds would save little.

Usage: python benchmarks/sim_paper_regime.py [--seeds 16] [--steps 100]
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

BATCH_SIZES = (32, 64, 128, 256)
METHODS = ("random", "insight", "mopps", "expected_difficulty", "inverse_evidence", "ds")
SCORER_PARAMS = {"insight": (("eta", 3.0), ("mu", 0.3))}
# --task: the fit of benchmarks/sim_calibration.py (results/sim_calibration.json, <task>_tiny);
# memorisation keeps the constants of benchmarks/sim_memorisation.py (fitted on Countdown).
CALIBRATIONS = {
    "countdown": dict(difficulty_mean=2.4412, difficulty_std=2.0, learning_rate=0.0464),
    "arithmetic": dict(difficulty_mean=2.2127, difficulty_std=3.0, learning_rate=0.0464),
}
CALIBRATED_M = 32  # the batch size of the calibration runs
CALIBRATED_UPDATES = 2  # their optimizer updates per RL step (base config rl.num_minibatches)
UPDATES = ("study", "calib")  # updates per RL step: the study's max(1, M / 64), or 2
# name: (kappa, r, scaled); scaled: both times the prompt's weight factor u (module docstring).
MEMORISATION = {
    "off": (0.0, 2.0, False),
    "on": (2.0, 2.0, False),
    "on_mean": (2.0, 2.0, True),
}
FIXED = dict(
    num_prompts=2000,
    num_rollouts=8,
    num_clusters=1,
    num_heldout=2048,
    transfer=0.0,
    ds_max_rounds=4,  # insight_jax.rl.base_config.DS_ROUNDS
    candidates_per_prompt=16,  # Mhat = 16 M, capped at N (the whole pool)
    eval_every=10,  # the real study's held-out evaluations (docs/results.md "Setup")
    n_boot=10_000,
)
LATE = 0.6  # "last 40%" of the steps, as insight_jax/study/report.py


def _config(method, m, steps):
    from insight_jax.sim import SimConfig

    n = FIXED["num_prompts"]
    return SimConfig(
        method=method,
        num_prompts=n,
        batch_size=m,
        num_rollouts=FIXED["num_rollouts"],
        num_candidates=min(FIXED["candidates_per_prompt"] * m, n),
        num_steps=steps,
        num_clusters=FIXED["num_clusters"],
        num_heldout=FIXED["num_heldout"],
        scorer_params=SCORER_PARAMS.get(method, ()),
        ds_max_rounds=FIXED["ds_max_rounds"],
        record_batches=True,  # for the evidence and the distinct prompts seen
        memorisation=True,
    )


def optimizer_updates(updates, m):
    """Optimizer updates per RL step at batch size m: the real study's (paper_geometry of
    configs/countdown_paper_regime.py: mini-batches of 64 prompts) or the calibration's 2."""
    if updates == "calib":
        return CALIBRATED_UPDATES
    from configs.countdown_paper_regime import get_config, paper_geometry

    return int(paper_geometry(get_config(), m).rl.num_minibatches)


def setting_params(updates, memorisation, m, calib):
    """Simulator parameters of one setting at batch size m (module docstring):
    f = updates per step / 2                 (lr = f x the calibrated lr)
    u = f x 32 / m                           (a prompt's weight in one step vs calibration)
    kappa, r as given ("on"), times u ("on_mean"), kappa = 0 ("off")."""
    f = optimizer_updates(updates, m) / CALIBRATED_UPDATES
    kappa, rate, scaled = MEMORISATION[memorisation]
    u = f * CALIBRATED_M / m if scaled else 1.0
    return dict(learning_rate=calib["learning_rate"] * f, memorise=kappa * u, memory_rate=rate * u)


def _settings():
    return [(up, mem) for up in UPDATES for mem in MEMORISATION]


def _params(m, calib):
    from insight_jax.sim import normal_params

    return [
        normal_params(
            calib["difficulty_mean"],
            calib["difficulty_std"],
            transfer=FIXED["transfer"],
            **setting_params(up, mem, m, calib),
        )
        for up, mem in _settings()
    ]


def batch_exposure(method, m, indices, successes, rollouts):
    """Evidence of the trained batch and the pool's coverage, from the recorded batches.

    indices, successes: [S, T, G] rolled-out prompts and their success counts; rollouts: [S, T].
    A prompt's evidence before step t is a + b = 2 + K v (Beta(1, 1), lambda = 1), v its rollouts
    before t: the groups rolled out in steps < t (for ds, every group of the rounds used, as the
    trainer's belief update sees them). The trained batch is the M selected prompts, or for ds
    the kept groups (model.ds_keep). Returns (evidence [S, T], share of the pool seen [S]).
    """
    import jax

    from insight_jax.sim.model import ds_keep

    k, n = FIXED["num_rollouts"], FIXED["num_prompts"]
    s, t, g = indices.shape
    if method == "ds":
        informative = (successes > 0) & (successes < k)
        keep, _ = jax.vmap(ds_keep, in_axes=(0, None))(informative.reshape(s * t, g), m)
        trained = np.asarray(keep).reshape(s, t, g)
        rounds = rollouts // (m * k)
        seen = np.arange(g)[None, None, :] < (rounds * m)[..., None]
    else:
        trained = seen = np.ones((s, t, g), bool)
    visits = np.zeros((s, n), np.int64)
    rows = np.arange(s)[:, None]
    evidence = np.empty((s, t))
    for step in range(t):
        idx = indices[:, step]
        v = visits[rows, idx]
        w = trained[:, step]
        evidence[:, step] = 2.0 + k * (v * w).sum(1) / w.sum(1)
        visits[rows, idx] += seen[:, step]  # a step's indices are distinct
    return evidence, (visits > 0).mean(1)


def run_all(seeds, steps, calib):
    """{(M, updates, memorisation, method): dict of numpy arrays [seeds, ...]}, and timings."""
    import jax

    from insight_jax.sim import resolve_batching, simulate_many

    runs, timings = {}, []
    for m in BATCH_SIZES:
        params = _params(m, calib)
        for method in METHODS:
            config = _config(method, m, steps)
            t0 = time.perf_counter()
            res = jax.tree.map(
                np.asarray, jax.block_until_ready(simulate_many(config, params, seeds))
            )
            dt = time.perf_counter() - t0
            batching = resolve_batching(config)
            timings.append(dict(M=m, method=method, batching=batching, seconds=round(dt, 2)))
            print(f"  M={m:>4} {method:<20} {len(params)}x{len(seeds)} ({batching}) {dt:6.1f}s")
            for i, (up, mem) in enumerate(_settings()):
                evidence, seen = batch_exposure(
                    method, m, res.indices[i], res.successes[i], res.rollouts[i]
                )
                runs[m, up, mem, method] = dict(
                    accuracy=res.accuracy[i],
                    train_accuracy=res.train_accuracy[i],
                    zero_var_frac=res.zero_var_frac[i],
                    rollouts=res.rollouts[i],
                    evidence=evidence,
                    seen=seen,
                )
    return runs, timings


def _ci(mean, lo, hi, scale=1.0):
    return dict(mean=scale * float(mean), lo=scale * float(lo), hi=scale * float(hi))


def _finite(x):
    x = float(x)
    return x if np.isfinite(x) else None


def _eval_grid(steps):
    return np.arange(0, steps + 1, FIXED["eval_every"])


def _cum_rollouts(rollouts, grid):
    """Rollouts generated before each eval step (insight_jax/study/report.py): [S, E]."""
    cum = np.concatenate([np.zeros((rollouts.shape[0], 1)), np.cumsum(rollouts, 1)], axis=1)
    return cum[:, grid]


def summarize(runs, steps, calib):
    """Per (M, updates, memorisation, method): the statistics of the module docstring
    (accuracies in points)."""
    from insight_jax.study import stats

    grid = _eval_grid(steps)
    late = np.arange(steps) >= LATE * steps
    rows = []
    for m in BATCH_SIZES:
        for up, mem in _settings():
            base = runs[m, up, mem, "random"]
            base_curves = base["accuracy"][:, grid]
            target = float(base_curves[:, -1].mean())
            base_roll = _cum_rollouts(base["rollouts"], grid)
            base_roll_mean = stats.steps_to_target(base_roll.mean(0), base_curves.mean(0), target)
            for method in METHODS:
                r = runs[m, up, mem, method]
                curves = r["accuracy"][:, grid]
                final = curves[:, -1]
                row = dict(
                    M=m,
                    draws_per_prompt=steps * m / FIXED["num_prompts"],
                    updates=up,
                    optimizer_updates=optimizer_updates(up, m),
                    memorisation=mem,
                    method=method,
                    params=setting_params(up, mem, m, calib),
                    final=_ci(*stats.mean_ci(final), scale=100),
                    zero_var_frac=float(r["zero_var_frac"].mean()),
                    zero_var_frac_last40=float(r["zero_var_frac"][:, late].mean()),
                    gap=_ci(*stats.mean_ci(r["train_accuracy"][:, -1] - final), scale=100),
                    evidence=float(r["evidence"].mean()),
                    evidence_last40=float(r["evidence"][:, late].mean()),
                    pool_seen=float(r["seen"].mean()),
                    rollouts_per_step=float(r["rollouts"].mean()),
                )
                if method != "random":
                    d = stats.paired_diff_ci(final, base_curves[:, -1])
                    row["vs_random"] = dict(
                        **_ci(d["diff"], d["lo"], d["hi"], scale=100), p_value=float(d["p_value"])
                    )
                    sp = stats.speedup_ci(
                        grid, base_curves, curves, n_boot=FIXED["n_boot"], rng=0, paired=True
                    )
                    row["speedup"] = dict(
                        speedup=_finite(sp["speedup"]),
                        lo=_finite(sp["lo"]),
                        hi=_finite(sp["hi"]),
                        target=100 * sp["target"],
                        steps_base=_finite(sp["steps_base"]),
                        steps_method=_finite(sp["steps_method"]),
                        frac_never=sp["frac_method_never"],
                    )
                if method in ("random", "ds"):
                    roll = _cum_rollouts(r["rollouts"], grid)
                    res = stats.resource_to_target(roll, curves, target)
                    on_mean = stats.steps_to_target(roll.mean(0), curves.mean(0), target)
                    row["rollouts_to_target"] = dict(
                        mean=_finite(res["mean"]),
                        lo=_finite(res["lo"]),
                        hi=_finite(res["hi"]),
                        n_reached=res["n_reached"],
                        n_seeds=res["n_seeds"],
                        on_mean_curve=_finite(on_mean),
                        # Random's rollouts to target / this method's, both on seed-mean curves
                        # (> 1: fewer rollouts than Random).
                        speedup_on_mean_curve=_finite(base_roll_mean / on_mean),
                    )
                rows.append(row)
    return rows


def _fmt(d, key="mean", digits=1, sign=True):
    if d is None or d.get(key) is None:
        return "never"
    f = f"{{:{'+' if sign else ''}.{digits}f}}"
    lo = "0" if d.get("lo") is None else f.format(d["lo"])
    hi = "inf" if d.get("hi") is None else f.format(d["hi"])
    return f"{f.format(d[key])} [{lo}, {hi}]"


def markdown_table(rows, updates):
    """Rows M x memorisation of one updates reading: Random's final %, each method minus Random
    (pts) and its speed-up, both with 95% intervals; DS's rollout speed-up."""
    by = {(r["M"], r["updates"], r["memorisation"], r["method"]): r for r in rows}
    others = METHODS[1:]
    head = (
        "| M | draws/prompt | updates/step | memo | random % | "
        + " | ".join(f"{x}: pts; speed-up" for x in others)
        + " | ds rollouts speed-up |"
    )
    lines = [head, "|" + "---|" * (6 + len(others))]
    for m in BATCH_SIZES:
        for mem in MEMORISATION:
            rnd = by[m, updates, mem, "random"]
            cells = [
                f"{_fmt(by[m, updates, mem, x]['vs_random'], digits=1)}; "
                f"{_fmt(by[m, updates, mem, x]['speedup'], 'speedup', digits=2, sign=False)}"
                for x in others
            ]
            rt = by[m, updates, mem, "ds"]["rollouts_to_target"]["speedup_on_mean_curve"]
            lines.append(
                f"| {m} | {rnd['draws_per_prompt']:.1f} | {rnd['optimizer_updates']} | {mem} | "
                f"{_fmt(rnd['final'], sign=False)} | "
                + " | ".join(cells)
                + f" | {'never' if rt is None else f'{rt:.2f}'} |"
            )
    return "\n".join(lines)


def stats_table(rows, updates):
    """Selection statistics of one updates reading, one row per (M, memorisation, method)."""
    lines = [
        "| M | memo | method | zero-var (all / last 40%) | train - held-out (pts) "
        "| evidence a+b (all / last 40%) | pool seen | rollouts to target (seeds) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["updates"] != updates:
            continue
        rt = r.get("rollouts_to_target")
        rt_s = "-"
        if rt is not None:
            mean = "never" if rt["mean"] is None else f"{rt['mean']:.0f}"
            rt_s = f"{mean} ({rt['n_reached']}/{rt['n_seeds']})"
        lines.append(
            f"| {r['M']} | {r['memorisation']} | {r['method']} | "
            f"{r['zero_var_frac']:.2f} / {r['zero_var_frac_last40']:.2f} | "
            f"{_fmt(r['gap'])} | {r['evidence']:.1f} / {r['evidence_last40']:.1f} | "
            f"{r['pool_seen']:.2f} | {rt_s} |"
        )
    return "\n".join(lines)


def plot(rows, path, task):
    """Per memorisation setting: method - Random final held-out accuracy (top) and the
    steps-to-target speed-up (bottom) against draws per prompt, 95% intervals as bars, with the
    study's updates per step (solid); the three main methods also with the calibration's 2
    (dashed, no bars). A method whose mean curve never reaches Random's final accuracy
    (speed-up 0) is a triangle at 0."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullLocator

    by = {(r["M"], r["updates"], r["memorisation"], r["method"]): r for r in rows}
    cols = len(MEMORISATION)
    fig, axes = plt.subplots(2, cols, figsize=(5.4 * cols, 9), sharex=True, squeeze=False)
    styles = {
        "insight": dict(color="C1", lw=2),
        "mopps": dict(color="C2", lw=2),
        "ds": dict(color="C3", lw=2),
        "expected_difficulty": dict(color="C4", lw=1, ls=":"),
        "inverse_evidence": dict(color="C5", lw=1, ls=":"),
    }
    draws = sorted({r["draws_per_prompt"] for r in rows})
    lines = [(up, method) for up in UPDATES for method in styles]
    lines = [(up, x) for up, x in lines if up == "study" or x in ("insight", "mopps", "ds")]
    for col, mem in enumerate(MEMORISATION):
        for j, (up, method) in enumerate(lines):
            rs = [by[m, up, mem, method] for m in BATCH_SIZES]
            x = np.array([r["draws_per_prompt"] for r in rs]) * (1 + 0.03 * (j % 5 - 2))
            style = dict(styles[method], label=method)
            if up != "study":
                style.update(ls="--", lw=1, alpha=0.6, label=f"{method}, 2 updates/step")
            for row, (key, center) in enumerate((("vs_random", "mean"), ("speedup", "speedup"))):
                vals = [r[key] for r in rs]
                y = np.array([np.nan if v[center] is None else v[center] for v in vals])
                never = y == 0
                y[never] = np.nan
                ax = axes[row, col]
                if up == "study":
                    lo = np.array([np.nan if v["lo"] is None else v["lo"] for v in vals])
                    hi = np.array([np.nan if v["hi"] is None else v["hi"] for v in vals])
                    ax.errorbar(x, y, yerr=[y - lo, hi - y], marker="o", capsize=3, **style)
                else:
                    ax.plot(x, y, marker=".", **style)
                ax.plot(x[never], np.zeros(never.sum()), "v", color=style["color"])
        top, bottom = axes[0, col], axes[1, col]
        top.axhline(0, color="gray", lw=0.8)
        bottom.axhline(1, color="gray", lw=0.8)
        top.set(title=f"memorisation {mem}: method - Random, final held-out", ylabel="points")
        bottom.set(
            title=f"memorisation {mem}: speed-up to Random's final",
            ylabel="steps-to-target speed-up vs Random",
            xlabel="draws per prompt = 100 M / N",
            xscale="log",
            ylim=(-0.08, None),
        )
        bottom.xaxis.set_minor_locator(NullLocator())
        ticks = [
            f"{d:g}\nM = {m}\n{optimizer_updates('study', m)} upd./step"
            for d, m in zip(draws, BATCH_SIZES, strict=True)
        ]
        bottom.set_xticks(draws, ticks)
        for ax in (top, bottom):
            ax.grid(alpha=0.3)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    order = sorted(range(len(labels)), key=lambda i: ("updates" in labels[i], i))
    fig.legend(
        [handles[i] for i in order],
        [labels[i] for i in order],
        loc="lower center",
        ncol=len(order),
        frameon=False,
        fontsize=8,
    )
    fig.suptitle(
        f"Simulator prediction, {task} calibration, N = 2000, K = 8, 100 steps, 16 seeds; solid:"
        " the study's optimizer updates per step (mini-batches of 64 prompts)\n95% CI: paired t"
        " for points, paired bootstrap for speed-up; triangle at 0: never reaches Random's final"
    )
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=16)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--task", choices=sorted(CALIBRATIONS), default="countdown")
    p.add_argument("--out", help="default: benchmarks/results/sim_paper_regime[_<task>].json")
    p.add_argument("--figure", help="default: docs/figures/sim_paper_regime[_<task>].png")
    args = p.parse_args()
    stem = "sim_paper_regime" + ("" if args.task == "countdown" else f"_{args.task}")
    args.out = args.out or str(ROOT / f"benchmarks/results/{stem}.json")
    args.figure = args.figure or str(ROOT / f"docs/figures/{stem}.png")
    if args.steps % FIXED["eval_every"]:
        p.error(f"--steps must be a multiple of the eval interval {FIXED['eval_every']}")
    t_start = time.perf_counter()
    import jax

    seeds = np.arange(args.seeds)
    print(
        f"{len(BATCH_SIZES)} batch sizes x {len(METHODS)} methods x {len(_settings())} settings"
        f" x {args.seeds} seeds x {args.steps} steps"
    )
    calib = CALIBRATIONS[args.task]
    runs, timings = run_all(seeds, args.steps, calib)
    rows = summarize(runs, args.steps, calib)
    tables = {up: markdown_table(rows, up) for up in UPDATES}
    for up in UPDATES:
        print(
            f"\nOptimizer updates per step: {up}. Method - Random, final held-out pass@1 (pts,"
            " 95% CI paired by seed); steps-to-target speed-up vs Random (95% paired bootstrap;"
            " target = Random's final mean):\n"
        )
        print(tables[up])
    print(f"\nSelection statistics ({UPDATES[0]} updates per step):\n")
    print(stats_table(rows, UPDATES[0]))
    random_by_m = {
        r["M"]: r["final"]["mean"]
        for r in rows
        if (r["updates"], r["memorisation"], r["method"]) == ("calib", "off", "random")
    }
    print(
        "\nCheck of the batch-mean update: Random's final held-out % by M (memorisation off, 2"
        " updates per step, i.e. the calibrated lr): "
        + ", ".join(f"M={m}: {v:.2f}" for m, v in random_by_m.items())
    )
    plot(rows, Path(args.figure), args.task.capitalize())
    elapsed = time.perf_counter() - t_start
    meta = dict(
        jax=jax.__version__,
        backend=jax.default_backend(),
        machine=platform.platform(),
        processor=platform.processor(),
        python=platform.python_version(),
        cpus=os.cpu_count(),
        date=time.strftime("%Y-%m-%d %H:%M:%S"),
        argv=sys.argv[1:],
        elapsed_s=round(elapsed, 1),
    )
    settings = dict(
        batch_sizes=BATCH_SIZES,
        methods=METHODS,
        scorer_params={k: dict(v) for k, v in SCORER_PARAMS.items()},
        task=args.task,
        calibrated=calib,
        calibrated_batch_size=CALIBRATED_M,
        calibrated_updates_per_step=CALIBRATED_UPDATES,
        updates_per_step={up: {m: optimizer_updates(up, m) for m in BATCH_SIZES} for up in UPDATES},
        memorisation={
            name: dict(kappa=kappa, r=rate, scaled=scaled)
            for name, (kappa, rate, scaled) in MEMORISATION.items()
        },
        sim_params={
            f"{up}|{mem}": {m: setting_params(up, mem, m, calib) for m in BATCH_SIZES}
            for up, mem in _settings()
        },
        fixed=FIXED,
        steps=args.steps,
        eval_steps=_eval_grid(args.steps).tolist(),
        seeds=seeds.tolist(),
        sim_config_example=dataclasses.asdict(_config("insight", 256, args.steps)),
    )
    assumptions = dict(
        batch_size_scaling=(
            "The simulator's skill step is a batch mean, lr/M * sum_i g_i (model.skill_increment),"
            " matching a token-mean GRPO loss: zero-variance groups count in the mean, DS divides"
            " its M kept groups by M. So a larger M lowers the noise of a step, not its size, and"
            " no M-dependent rescaling of lr is needed for the loss normalisation (check: Random's"
            " final accuracy is the same at every M with the calibrated lr)."
        ),
        random_final_by_M_calib_updates_memorisation_off=random_by_m,
        optimizer_updates_per_step=(
            "lr is per RL step, fitted on runs with 2 optimizer updates per step"
            " (rl.num_minibatches = 2 at M = 32). The study (configs/countdown_paper_regime.py,"
            " paper_geometry) uses mini-batches of 64 prompts: max(1, M / 64) = 1, 1, 2, 4 updates"
            " at M = 32, 64, 128, 256. 'study' (primary) scales lr by updates / 2 (0.5, 0.5, 1,"
            " 2), assuming learning per RL step is linear in the number of AdamW updates; 'calib'"
            " keeps the calibrated lr (2 updates per step at every M)."
        ),
        memorisation=(
            "kappa = 2, r = 2 chosen by eye at M = 32 (benchmarks/sim_memorisation.py), not"
            " fitted. The memory step r (1 - w) g is per prompt, not divided by M. 'on' keeps"
            " kappa and r per visit at every M and updates reading. 'on_mean' scales both by"
            " u = (updates / 2) x 32 / M, a prompt's weight in one RL step's parameter movement"
            " relative to the calibration: under a mean loss a prompt's share of an update is"
            " 1 / M, so its own-logit step and its exposure scale as u, and a prompt's (skill"
            " contribution, memory) as a function of its summed weighted signal is the"
            " calibration's model. They bracket the prediction; the real Random's train-pool gap"
            " and per-step curve at M = 256 tell which holds."
        ),
        not_modelled=(
            "AdamW's normalisation and gradient noise: the simulated step has no noise beyond the"
            " rollouts and scales with the mean signal, so less noise at large M buys nothing and"
            " zero-variance dilution is not undone by Adam. No early jump or ceiling in the"
            " learning curve (DS's gain overstated, and a doubled lr at M = 256 is not capped;"
            " docs/results.md 'Calibration'). Held-out accuracy is the exact expectation over"
            " 2048 problems (no eval noise); the real study's avg@16 on its test set adds noise."
        ),
        warm_start="disjoint from the RL pool: memorised logits start at 0 (the simulator's start)",
        candidates="Mhat = min(16 M, N): 512, 1024, then the whole pool at M = 128 and 256",
    )
    grid = _eval_grid(args.steps)
    curves = {
        f"M={m}|{up}|{mem}|{method}": dict(
            heldout=np.round(100 * r["accuracy"][:, grid].mean(0), 2).tolist(),
            train=np.round(100 * r["train_accuracy"][:, grid].mean(0), 2).tolist(),
        )
        for (m, up, mem, method), r in runs.items()
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            dict(
                meta=meta,
                settings=settings,
                assumptions=assumptions,
                timings=timings,
                rows=rows,
                mean_curves_at_eval_steps=curves,
                markdown_tables=tables,
            ),
            indent=1,
        )
    )
    print(f"\nwrote {out} and {args.figure}")
    print(f"elapsed {elapsed:.1f}s")


if __name__ == "__main__":
    main()
