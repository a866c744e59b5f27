"""Math verification speed: the verifier pool vs serial in-process math-verify, and failure costs.

Rows (medians of --repeats; each repeat draws fresh seeded items, so no cache is warm across
repeats):
  serial_per_s     verifications/s of the same work done serially in this process: candidate
                   extraction + insight_jax.tasks.math.reward_in_worker (math-verify with its
                   signal timeouts, on the main thread) - the baseline
  pool_per_s       verifications/s of math_rewards through a VerifierPool (--workers), gold checks
                   included (every repeat has new golds, as a step of new prompts does)
  ratio            pool_per_s / serial_per_s
  agree            fraction of items where both give the same reward (should be 1.0)
  sent_per_item    items the pool actually ran per completion (gold checks included; identical
                   pairs are sent once and a boxed copy of the gold's text is not sent)
  timeout_cost_s   one-worker pool with timeout T: time from sending a hanging item to its 0.0,
                   minus T (detection + kill + replacement start)
  replace_start_s  time for a killed worker's item to come back 0.0 (death noticed, worker
                   replaced), then first_item_s: the replacement's first math item (process
                   start + math-verify's first-call regex compilation) vs warm_item_s

Items: a step-like batch of --items completions, K=8 per gold; golds are integers, fractions,
surds and polynomials; completions have ~300-900 characters of reasoning text and end in a
\\boxed{} answer (70%) or a plain "The answer is ..." (30%), right or wrong (50%), in varied but
equivalent forms. Usage:

  python benchmarks/verify_speed.py            # 2048 items, 5 repeats
  python benchmarks/verify_speed.py --quick    # 256 items, 1 repeat

Writes benchmarks/results/verify_speed.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
from fractions import Fraction
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"

K = 8
WORDS = "we compute the sum then factor and simplify so that each term cancels giving".split()


def _parse():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--items", type=int, default=2048)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--timeout-s", type=float, default=1.0, help="pool timeout for the cost rows")
    p.add_argument("--quick", action="store_true", help="256 items, 1 repeat")
    p.add_argument("--out", default=str(RESULTS / "verify_speed.json"))
    return p.parse_args()


def _gold(rng: random.Random) -> tuple[str, list[str], list[str]]:
    """A gold answer, equivalent renderings of it, and wrong answers."""
    kind = rng.choice(["int", "int", "frac", "surd", "poly"])
    if kind == "int":
        n = rng.randint(-999, 99999)
        return str(n), [str(n), f"{n}.0", f"\\frac{{{2 * n}}}{{2}}"], [str(n + 1), str(-n - 1)]
    if kind == "frac":
        value = Fraction(rng.randint(1, 500), rng.choice([3, 4, 6, 7, 8, 9, 11]))
        p, q = value.numerator, value.denominator
        if q == 1:
            return str(p), [str(p)], [str(p + 1)]
        right = [f"\\frac{{{p}}}{{{q}}}", f"\\dfrac{{{2 * p}}}{{{2 * q}}}", f"{p}/{q}"]
        return f"\\frac{{{p}}}{{{q}}}", right, [f"\\frac{{{p + 1}}}{{{q}}}", f"{q}/{p}"]
    if kind == "surd":
        a, b = rng.randint(2, 9), rng.choice([2, 3, 5, 6, 7])
        return (
            f"{a}\\sqrt{{{b}}}",
            [f"{a}\\sqrt{{{b}}}", f"\\sqrt{{{a * a * b}}}"],
            [
                f"{a + 1}\\sqrt{{{b}}}",
                f"\\sqrt{{{a * b}}}",
            ],
        )
    a, b = rng.randint(1, 9), rng.randint(1, 9)
    return (
        f"x^2+{a}x+{b}",
        [f"x^2+{a}x+{b}", f"{b}+{a}x+x^2"],
        [f"x^2+{a + 1}x+{b}", f"x^2-{a}x+{b}"],
    )


def make_items(n: int, seed: int) -> tuple[list[str], list[str], list[float]]:
    """``n`` (completion, gold) pairs, K per gold, and whether each shown answer is right."""
    rng = random.Random(seed)
    completions, golds, truth = [], [], []
    while len(completions) < n:
        gold, right, wrong = _gold(rng)
        for _ in range(K):
            ok = rng.random() < 0.5
            answer = rng.choice(right if ok else wrong)
            reasoning = " ".join(rng.choice(WORDS) for _ in range(rng.randint(50, 150)))
            if rng.random() < 0.7:
                completion = f"{reasoning}. Therefore the answer is $\\boxed{{{answer}}}$."
            else:
                shown = f"${answer}$" if "\\" in answer or "x" in answer else answer
                completion = f"{reasoning}. The answer is {shown}"
            completions.append(completion)
            golds.append(gold)
            truth.append(1.0 if ok else 0.0)
    return completions[:n], golds[:n], truth[:n]


def serial(completions: list[str], golds: list[str]) -> list[float]:
    from insight_jax.tasks.math import extract_candidate, reward_in_worker

    rewards = []
    for completion, gold in zip(completions, golds, strict=True):
        candidate = extract_candidate(completion)
        rewards.append(0.0 if candidate is None else reward_in_worker(gold, *candidate))
    return rewards


def failure_costs(timeout_s: float) -> dict[str, float]:
    from insight_jax.tasks.math import math_rewards
    from insight_jax.tasks.verifier_pool import VerifierPool

    rows: dict[str, list[float]] = {"timeout_cost_s": [], "replace_start_s": []}
    rows |= {"first_item_s": [], "warm_item_s": []}
    with VerifierPool(num_workers=1, timeout_s=timeout_s) as pool:
        math_rewards([r"\boxed{1}"], ["1"], pool)  # warm the worker
        for i in range(5):
            t0 = time.perf_counter()
            pool.map("probe_sleep", [(60.0,)])
            rows["timeout_cost_s"].append(time.perf_counter() - t0 - timeout_s)
            t0 = time.perf_counter()
            pool.map("probe_exit", [(1,)])
            rows["replace_start_s"].append(time.perf_counter() - t0)
            # Golds already checked; only the completion item goes to the fresh worker.
            t0 = time.perf_counter()
            math_rewards([f"\\boxed{{{i + 2}}}"], ["1"], pool)
            rows["first_item_s"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            math_rewards([f"\\boxed{{{i + 3}}}"], ["1"], pool)
            rows["warm_item_s"].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in rows.items()}


def main():
    args = _parse()
    if args.quick:
        args.items, args.repeats = 256, 1
    from insight_jax.tasks.math import math_rewards
    from insight_jax.tasks.verifier_pool import VerifierPool

    serial([r"\boxed{1}"], ["1"])  # math-verify's one-time regex compilation, outside the timing
    serial_rates, pool_rates, agree, correct, sent = [], [], [], [], []
    with VerifierPool(num_workers=args.workers, timeout_s=5.0) as pool:
        math_rewards([r"\boxed{1}"], ["1"], pool)  # the workers' first-call compilation
        for repeat in range(args.repeats):
            completions, golds, truth = make_items(args.items, seed=1000 + repeat)
            # Alternate which runs first: the machine's load from other work drifts.
            for which in ("serial", "pool") if repeat % 2 == 0 else ("pool", "serial"):
                t0, sent0 = time.perf_counter(), pool.stats.items
                if which == "serial":
                    base = serial(completions, golds)
                    serial_rates.append(len(completions) / (time.perf_counter() - t0))
                else:
                    pooled = math_rewards(completions, golds, pool)
                    pool_rates.append(len(completions) / (time.perf_counter() - t0))
                    sent.append((pool.stats.items - sent0) / len(completions))
            agree.append(sum(a == b for a, b in zip(base, pooled, strict=True)) / len(base))
            correct.append(sum(a == b for a, b in zip(truth, pooled, strict=True)) / len(base))
            print(
                f"repeat {repeat}: serial {serial_rates[-1]:.0f}/s, pool {pool_rates[-1]:.0f}/s",
                flush=True,
            )
        stats = pool.stats
    row = {
        "items": args.items,
        "workers": args.workers,
        "serial_per_s": statistics.median(serial_rates),
        "pool_per_s": statistics.median(pool_rates),
        "agree": min(agree),
        "matches_truth": min(correct),
        "sent_per_item": statistics.median(sent),
        "pool_timeouts": stats.timeouts,
        "timeout_s": args.timeout_s,
        **failure_costs(args.timeout_s),
    }
    row["ratio"] = row["pool_per_s"] / row["serial_per_s"]
    meta = {
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "load_avg_1m": os.getloadavg()[0],
        "argv": sys.argv[1:],
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"meta": meta, "rows": [row]}, indent=1))
    load = meta["load_avg_1m"]
    print(f"\n{args.items} items, K={K}, {args.workers} workers (machine load {load:.1f})")
    print(f"{'serial /s':>10} {'pool /s':>10} {'ratio':>6} {'agree':>6} {'truth':>6}")
    print(
        f"{row['serial_per_s']:10.0f} {row['pool_per_s']:10.0f} {row['ratio']:6.2f}"
        f" {row['agree']:6.3f} {row['matches_truth']:6.3f}"
    )
    print(
        f"timeout cost beyond T={args.timeout_s:g} s: {row['timeout_cost_s'] * 1e3:.1f} ms;"
        f" dead worker -> 0.0 and replaced: {row['replace_start_s'] * 1e3:.1f} ms;"
        f" replacement's first math item {row['first_item_s'] * 1e3:.1f} ms"
        f" (warm {row['warm_item_s'] * 1e3:.2f} ms)"
    )
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
