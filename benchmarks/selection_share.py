"""Share of a training step spent on prompt selection, at the default and at N = 1e6 prompts.

1. Runs the built-in default (configs/arithmetic_tiny.py, InSight, Mhat = 16 M) for --rl-steps
   RL steps through the real loop (train_and_evaluate) and takes the median per-step wall time of
   each phase from its metrics: selection, rollouts, verification, and the learner step (GRPO
   update, belief update and O(M) rescore in one jitted step, so the in-loop belief update is
   not timed on its own; part 2 times it separately).
2. In the same process, times exactly the selection-side calls of one RL step (select_batch from
   the cached scores, the gather of the M selected beliefs, validate_update, apply_update,
   rescore) on pools of N = 1e6 (and the default N), with Mhat = 16 M and with the whole pool.
   The rest of a step (rollouts, update) does not depend on N at fixed M and K, so the N = 1e6
   share is that selection time over (selection + the measured rollout and update times).

Usage: python benchmarks/selection_share.py [--rl-steps 30]
Writes benchmarks/results/selection_share.json and prints a table. Target: under 1% at the default.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from configs import arithmetic_tiny
from insight_jax import selection as sel
from insight_jax.metrics import read_metrics_jsonl
from insight_jax.rl.train import train_and_evaluate
from insight_jax.study.report import TIME_KEYS

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def selection_side_times(n, m, k, num_candidates, scorer, repeats, seed=0):
    """Median seconds of the selection-side calls of one RL step on a pool of n prompts.

    Timed as the loop times them: "select" = select_batch + the gather of the M selected
    beliefs to the host; "belief_update" = validate_update + apply_update + rescore.
    """
    rng = np.random.default_rng(seed)
    # A pool part-way through training: random evidence, so scores are not all tied.
    a = 1.0 + rng.integers(0, 5 * k, n).astype(np.float32)
    b = 1.0 + rng.integers(0, 5 * k, n).astype(np.float32)
    beliefs = sel.init_beliefs(n).replace(alpha=jnp.asarray(a), beta=jnp.asarray(b))
    scores = sel.init_scores(beliefs, scorer)
    key = jax.random.key(seed)

    def step(i, beliefs, scores):
        t0 = time.perf_counter()
        k_i = jax.random.fold_in(key, i)
        idx = np.asarray(sel.select_batch(k_i, beliefs, m, num_candidates, scorer, scores=scores))
        jax.device_get((beliefs.alpha[idx], beliefs.beta[idx]))
        t1 = time.perf_counter()
        s = rng.integers(0, k + 1, m)  # stands in for the verified successes
        t2 = time.perf_counter()
        idx, s = sel.validate_update(n, idx, s, k, 1.0)
        beliefs = sel.apply_update(beliefs, jnp.asarray(idx), jnp.asarray(s), k, 1.0)
        scores = sel.rescore(scores, beliefs, idx, scorer)
        jax.block_until_ready(scores)
        return beliefs, scores, (t1 - t0, time.perf_counter() - t2)

    beliefs, scores, _ = step(0, beliefs, scores)  # compile
    times = []
    for i in range(1, repeats + 1):
        beliefs, scores, t = step(i, beliefs, scores)
        times.append(t)
    select, update = np.median(np.array(times), axis=0)
    return float(select), float(update)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rl-steps", type=int, default=30)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--sizes", default="2000,1000000")
    p.add_argument("--out", default=str(RESULTS / "selection_share.json"))
    args = p.parse_args()

    config = arithmetic_tiny.get_config()
    config.rl.steps = args.rl_steps
    config.eval.every = 10**6  # evaluations are not part of a step
    config.checkpoint.every = 10**6
    config.warmstart.cache_dir = str(ROOT / "workdirs" / "warm_cache")
    with tempfile.TemporaryDirectory() as tmp:
        train_and_evaluate(config, tmp)
        rows = [r for r in read_metrics_jsonl(Path(tmp) / "metrics.jsonl") if "reward_mean" in r]
    rows = rows[1:]  # the first step compiles
    phase = {k: float(np.median([r[k] for r in rows])) for k in TIME_KEYS}
    rest = phase["time_rollout"] + phase["time_verify"] + phase["time_update"]
    m, k = config.rl.batch_size, config.rl.num_rollouts
    scorer = sel.get_scorer("insight", num_rollouts=k, **config.selection.params.insight)

    results = {
        "config": "configs/arithmetic_tiny.py (default)",
        "rl_steps_timed": len(rows),
        "phase_median_s": phase,
        "default_in_loop": {
            "select_share": phase["time_select"] / (phase["time_select"] + rest),
        },
        "microbenchmark": [],
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "jax": jax.__version__,
            "backend": jax.default_backend(),
        },
    }
    for n in (int(x) for x in args.sizes.split(",")):
        for mhat_name, mhat in (("16M", 16 * m), ("whole_pool", n)):
            t_sel, t_upd = selection_side_times(n, m, k, mhat, scorer, args.repeats)
            results["microbenchmark"].append(
                {
                    "N": n,
                    "Mhat": mhat_name,
                    "select_s": t_sel,
                    "belief_update_s": t_upd,
                    "select_share": t_sel / (t_sel + rest),
                    "select_and_belief_share": (t_sel + t_upd) / (t_sel + t_upd + rest),
                }
            )

    print(f"median per RL step over {len(rows)} steps of the default run:")
    for key, v in phase.items():
        print(f"  {key:<20} {1e3 * v:9.2f} ms")
    d = results["default_in_loop"]
    print(f"  selection share {100 * d['select_share']:.3f}%")
    print(
        f"\n{'N':>9} {'Mhat':>10} {'select ms':>10} {'belief upd ms':>14} {'select share':>13}"
        f" {'with update':>12}"
    )
    for r in results["microbenchmark"]:
        print(
            f"{r['N']:>9} {r['Mhat']:>10} {1e3 * r['select_s']:>10.2f}"
            f" {1e3 * r['belief_update_s']:>14.2f} {100 * r['select_share']:>12.3f}%"
            f" {100 * r['select_and_belief_share']:>11.3f}%"
        )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
