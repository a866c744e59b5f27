"""Collects a sweep's runs into curves and statistics: tables, JSON and figures.

A sweep directory (launch/sweep.py) holds one workdir per row, named by the row's varying keys:
``<method>[,key=value...],seed=<s>``, e.g. ``insight,seed=3`` or
``insight,seed=1,selection.params.insight.mu=0.1``. A *variant* is a row name without its seed; the
seeds of a variant are its replicates. From each finished workdir (summary.json has
``eval_accuracy_after``) we read metrics.jsonl:

* held-out pass@1 at the eval steps, indexed by RL step (0 = end of the warm start);
* rollouts generated before each eval step (per seed: dynamic sampling draws a varying number);
* per-step wall time split into selection / rollout / update / belief update.

`summarize` turns variants into the study's numbers (stats.py holds the formulas): final
accuracy mean and 95% t-interval; its difference from the baseline; the steps-to-target
speed-up over the baseline with a seed-bootstrap interval (target = the baseline's final mean
accuracy, re-estimated in each bootstrap sample); the same ratio in rollouts (each side's
crossing step turned into the rollouts its seeds had spent by then); per-seed rollouts to the
same target; the median time split per step. Runs of one seed share the warm-started policy
and the test set across methods, so when the baseline has every seed of a variant the
comparison is paired, against the baseline's runs of those seeds (per-seed differences:
t-interval and paired t-test; the bootstrap resamples seeds jointly; the speed-up target is
those runs' final mean); otherwise it is unpaired (bootstrap interval and Welch test).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from insight_jax.metrics import read_metrics_jsonl
from insight_jax.study import stats

# Phases of an RL step (insight_jax/rl/rl_step.py); the belief update is part of time_update.
TIME_KEYS = ("time_select", "time_rollout", "time_verify", "time_update")


@dataclass
class Variant:
    """The seeds of one sweep row (method + settings): curves[seed, eval] on steps[eval]."""

    name: str
    seeds: list[int] = field(default_factory=list)
    steps: np.ndarray | None = None  # RL steps of the evals (0 = before RL)
    curves: list[np.ndarray] = field(default_factory=list)  # held-out pass@1
    rollouts: list[np.ndarray] = field(default_factory=list)  # generated before each eval
    times: list[dict[str, float]] = field(default_factory=list)  # median seconds per step

    @property
    def method(self) -> str:
        return self.name.split(",")[0]


def parse_row_name(name: str) -> tuple[str, int]:
    """(variant, seed) of a row name: the `seed=<s>` part removed."""
    parts = name.split(",")
    seeds = [p for p in parts if p.startswith("seed=")]
    if len(seeds) != 1:
        raise ValueError(f"row name {name!r} has no single seed=<s> part")
    return ",".join(p for p in parts if not p.startswith("seed=")), int(seeds[0][5:])


def read_run(workdir: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, float]] | None:
    """(eval RL steps, pass@1, rollouts before each eval, median time split) of a finished run."""
    summary_path = workdir / "summary.json"
    if not summary_path.exists():
        return None
    summary = json.loads(summary_path.read_text())
    if "eval_accuracy_after" not in summary:
        return None
    warm = summary["steps_warm_start"]
    rows = read_metrics_jsonl(workdir / "metrics.jsonl")
    evals = [(r["step"] - warm, r["eval_accuracy"]) for r in rows if "eval_accuracy" in r]
    train = [r for r in rows if "reward_mean" in r]
    # A train record at step t is the step that made state t: RL step t - warm - 1 (0-based).
    rl_steps = np.array([r["step"] - warm - 1 for r in train])
    spent = np.array([r.get("rollouts", 0.0) for r in train])
    steps = np.array([s for s, _ in evals], dtype=float)
    acc = np.array([a for _, a in evals], dtype=float)
    rollouts = np.array([spent[rl_steps < s].sum() for s in steps])
    # Medians skip the first step (compilation) when there are more.
    timed = train[1:] if len(train) > 1 else train
    times = {k: float(np.median([r[k] for r in timed])) for k in TIME_KEYS if timed}
    # What selection aims at: groups with mixed rewards (the rest give GRPO no gradient).
    late = rl_steps >= 0.6 * (rl_steps.max() + 1) if len(rl_steps) else rl_steps
    for key in ("zero_var_frac", "sel_mean_evidence"):
        vals = np.array([r[key] for r in train if key in r])
        if len(vals) == len(train) > 0:
            times[f"{key}_mean"] = float(np.mean(vals))
            times[f"{key}_last40"] = float(np.mean(vals[late]))
    return steps, acc, rollouts, times


def load_sweep_dir(*sweep_dirs: str | Path) -> dict[str, Variant]:
    """Finished runs of one or more sweep directories (e.g. "main" and its "replication" on
    fresh seeds), grouped into variants, seeds in ascending order."""
    variants: dict[str, Variant] = {}
    workdirs = sorted(w for d in sweep_dirs for w in Path(d).iterdir())
    for workdir in workdirs:
        if not workdir.is_dir():
            continue
        try:
            name, seed = parse_row_name(workdir.name)
        except ValueError:
            continue
        run = read_run(workdir)
        if run is None:
            continue
        steps, acc, rollouts, times = run
        v = variants.setdefault(name, Variant(name))
        if seed in v.seeds:
            raise ValueError(f"{workdir}: seed {seed} of {name} is in more than one sweep dir")
        if v.steps is None:
            v.steps = steps
        elif not np.array_equal(v.steps, steps):
            raise ValueError(f"{workdir}: eval steps {steps} differ from {v.steps} of its variant")
        v.seeds.append(seed)
        v.curves.append(acc)
        v.rollouts.append(rollouts)
        v.times.append(times)
    for v in variants.values():
        order = np.argsort(v.seeds)
        v.seeds = [v.seeds[i] for i in order]
        v.curves = [v.curves[i] for i in order]
        v.rollouts = [v.rollouts[i] for i in order]
        v.times = [v.times[i] for i in order]
    return variants


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def summarize(
    variants: dict[str, Variant], baseline: str = "random", n_boot: int = 10000, seed: int = 0
) -> dict[str, Any]:
    """The study's numbers per variant, against `baseline` (module docstring)."""
    if baseline not in variants:
        raise ValueError(f"baseline {baseline!r} not among the variants {sorted(variants)}")
    base = variants[baseline]
    base_curves = np.stack(base.curves)
    base_final = base_curves[:, -1]
    out: dict[str, Any] = {"baseline": baseline, "steps": base.steps.tolist(), "variants": {}}
    for name, v in variants.items():
        curves = np.stack(v.curves)
        final = curves[:, -1]
        mean, lo, hi = stats.mean_ci(final)
        mean_curve, lo_curve, hi_curve = stats.mean_ci(curves)
        row: dict[str, Any] = {
            "method": v.method,
            "seeds": v.seeds,
            "final_accuracy": {"mean": float(mean), "lo": _finite(lo), "hi": _finite(hi)},
            "start_accuracy": float(curves[:, 0].mean()),
            "curve": {
                "mean": mean_curve.tolist(),
                "lo": [_finite(x) for x in lo_curve],
                "hi": [_finite(x) for x in hi_curve],
            },
            "time_per_step_s": {
                k: float(np.mean([t[k] for t in v.times])) for k in TIME_KEYS if v.times[0]
            },
            "selection_stats": {
                k: float(np.mean([t[k] for t in v.times]))
                for k in v.times[0]
                if k.startswith(("zero_var_frac", "sel_mean_evidence"))
            },
            "rollouts_total": float(np.mean([r[-1] for r in v.rollouts])),
        }
        if name != baseline and np.array_equal(v.steps, base.steps):
            # Same seed = same warm start and test set: compare seed by seed, against the
            # baseline's runs of this variant's seeds (a variant may have fewer seeds).
            paired = set(v.seeds) <= set(base.seeds)
            ref = base_curves[[base.seeds.index(x) for x in v.seeds]] if paired else base_curves
            if paired:
                diff = stats.paired_diff_ci(final, ref[:, -1])
                d_mean, d_lo, d_hi = stats.mean_ci(curves - ref)
                row["curve_vs_baseline"] = {
                    "mean": d_mean.tolist(),
                    "lo": [_finite(x) for x in d_lo],
                    "hi": [_finite(x) for x in d_hi],
                }
            else:
                diff = stats.bootstrap_diff_ci(final, base_final, n_boot=n_boot, rng=seed)
            row["final_vs_baseline"] = {
                k: _finite(float(diff[k])) for k in ("diff", "lo", "hi", "p_value")
            }
            row["final_vs_baseline"]["paired"] = paired
            sp = stats.speedup_ci(v.steps, ref, curves, n_boot=n_boot, rng=seed, paired=paired)
            row["speedup"] = {
                k: _finite(sp[k])
                for k in ("speedup", "lo", "hi", "target", "steps_base", "steps_method")
            }
            row["speedup"]["frac_never"] = float(sp["frac_method_never"])
            # The same ratio in rollouts: dynamic sampling spends more of them per step.
            base_rollouts = np.stack(base.rollouts)
            if paired:
                base_rollouts = base_rollouts[[base.seeds.index(x) for x in v.seeds]]
            rs = stats.speedup_ci(
                v.steps, ref, curves, n_boot=n_boot, rng=seed, paired=paired,
                base_cost=base_rollouts, method_cost=np.stack(v.rollouts),
            )  # fmt: skip
            row["rollouts_speedup"] = {
                k: _finite(rs[k]) for k in ("speedup", "lo", "hi", "steps_base", "steps_method")
            }
        target = float(base_final.mean())
        res = stats.resource_to_target(np.stack(v.rollouts), curves, target)
        row["rollouts_to_target"] = {
            "mean": _finite(res["mean"]),
            "lo": _finite(res["lo"]),
            "hi": _finite(res["hi"]),
            "n_reached": int(res["n_reached"]),
            "n_seeds": int(res["n_seeds"]),
        }
        out["variants"][name] = row
    return out


def _fmt_ci(d: dict | None, key: str, scale: float = 1.0, digits: int = 1) -> str:
    """`center [lo, hi]` of d[key], d["lo"], d["hi"] (bounds left out when undefined)."""
    if not d or d.get(key) is None:
        return "n/a"
    f = f"{{:.{digits}f}}"
    body = f.format(d[key] * scale)
    if d.get("lo") is None or d.get("hi") is None:
        return body
    return f"{body} [{f.format(d['lo'] * scale)}, {f.format(d['hi'] * scale)}]"


def markdown_table(summary: dict[str, Any], order: list[str] | None = None) -> str:
    """One row per variant: final pass@1, its gain over the baseline, speed-ups, rollouts.

    The speed-up in rollouts is a column only when the summary has it (JSON written before it
    existed does not)."""
    variants = summary["variants"]
    names = [n for n in (order or sorted(variants)) if n in variants]
    in_rollouts = any("rollouts_speedup" in variants[n] for n in names)
    lines = [
        "| method | final pass@1 % (95% CI) | vs "
        + summary["baseline"]
        + " (pts, 95% CI; p; paired by seed) | steps-to-target speed-up (95% CI) "
        + ("| rollouts-to-target speed-up (95% CI) " if in_rollouts else "")
        + "| rollouts to target (seeds reaching) | seeds |",
        "|---|---|---|---|---|" + ("---|" if in_rollouts else "") + "---|",
    ]
    for n in names:
        r = variants[n]
        vs = r.get("final_vs_baseline")
        vs_s = "-"
        if vs and vs["p_value"] is not None:
            vs_s = f"{_fmt_ci(vs, 'diff', 100)}; p={vs['p_value']:.2f}" + (
                "" if vs["paired"] else " (unpaired)"
            )
        sp = r.get("speedup")
        speedups = [_fmt_ci(sp, "speedup", 1, 2) if sp else "1 (baseline)"]
        if in_rollouts:
            rs = r.get("rollouts_speedup")
            speedups.append(_fmt_ci(rs, "speedup", 1, 2) if rs else "1 (baseline)")
        rt = r["rollouts_to_target"]
        rt_s = f"{rt['mean']:.0f} ({rt['n_reached']}/{rt['n_seeds']})" if rt["mean"] else "-"
        rt_s = rt_s if rt["n_reached"] else f"never (0/{rt['n_seeds']})"
        lines.append(
            f"| {n} | {_fmt_ci(r['final_accuracy'], 'mean', 100)} | {vs_s} | "
            + " | ".join(speedups)
            + f" | {rt_s} | {len(r['seeds'])} |"
        )
    return "\n".join(lines)


def time_table(summary: dict[str, Any], order: list[str] | None = None) -> str:
    """Median wall time per RL step by phase, and the selection statistics of each variant."""
    variants = summary["variants"]
    names = [n for n in (order or sorted(variants)) if n in variants]
    lines = [
        "| method | select ms | rollout ms | verify ms | update ms | select share "
        "| zero-variance groups (all / last 40%) | mean evidence of the batch (last 40%) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for n in names:
        t = variants[n]["time_per_step_s"]
        if not t:
            continue
        total = sum(t.values())
        sel = variants[n].get("selection_stats", {})
        zv = (
            f"{100 * sel['zero_var_frac_mean']:.0f}% / {100 * sel['zero_var_frac_last40']:.0f}%"
            if "zero_var_frac_mean" in sel
            else "-"
        )
        ev = f"{sel['sel_mean_evidence_last40']:.1f}" if "sel_mean_evidence_last40" in sel else "-"
        lines.append(
            f"| {n} | {1e3 * t['time_select']:.1f} | {1e3 * t['time_rollout']:.0f} "
            f"| {1e3 * t['time_verify']:.1f} | {1e3 * t['time_update']:.0f} "
            f"| {100 * t['time_select'] / total:.2f}% | {zv} | {ev} |"
        )
    return "\n".join(lines)


def plot_curves_vs_baseline(ax, summary: dict[str, Any], names: list[str], title: str) -> None:
    """Per-seed difference from the baseline (paired variants), mean and 95% t-band."""
    steps = np.asarray(summary["steps"])
    colors = {}
    for i, n in enumerate(names):
        colors[n] = f"C{i}"
        row = summary["variants"].get(n, {})
        c = row.get("curve_vs_baseline")
        if c is None:
            continue
        mean = 100 * np.asarray(c["mean"])
        lo = 100 * np.asarray([np.nan if x is None else x for x in c["lo"]])
        hi = 100 * np.asarray([np.nan if x is None else x for x in c["hi"]])
        ax.plot(steps, mean, color=colors[n], label=n)
        ax.fill_between(steps, lo, hi, color=colors[n], alpha=0.15)
    ax.axhline(0.0, color="gray", lw=1)
    ax.set_xlabel("RL step")
    ax.set_ylabel(f"pass@1 minus {summary['baseline']}, same seed (pts)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:  # no paired variant: nothing to label
        ax.legend(fontsize=7)


def plot_curves(ax, variants: dict[str, Variant], names: list[str], title: str) -> None:
    """Seed-mean held-out pass@1 with 95% t-bands, one line per variant."""
    for n in names:
        if n not in variants:
            continue
        v = variants[n]
        stats.band_plot(ax, v.steps, 100 * np.stack(v.curves), f"{n} ({len(v.seeds)})")
    ax.set_xlabel("RL step")
    ax.set_ylabel("held-out pass@1 (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
