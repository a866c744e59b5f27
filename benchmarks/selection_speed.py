"""Selection cost per training step: InSight scoring and whole-pool top-k, vs baselines.

Rows, per pool size N (K rollouts, M prompts per step), measured in one process per device count:
  full_rescore        exact I_K-based InSight score of the whole pool (init_scores)
  naive_rescore       the same score from jax.scipy betaln/digamma over K+1 terms (reference
                      formulation; skipped above --naive-max-n)
  step_mhat16         one incremental step with Mhat = 16 M: select from the cached scores,
                      update M beliefs, rescore those M
  step_whole_pool     the same with Mhat = N (top-M over the whole pool)
  top_k_only          jax.lax.top_k(M) over N float32 alone: the floor of a whole-pool selection
  numpy_scipy_step    a straightforward float64 NumPy/SciPy implementation of the same step:
                      full rescore with scipy.special each step, np.argpartition, update
                      (skipped above --numpy-max-n)

Times are medians of --repeats runs after a warm-up (compilation excluded). Ratios are taken
within one process. Usage:

  python benchmarks/selection_speed.py                      # 1 and 8 devices, N = 1e4..1e7
  python benchmarks/selection_speed.py --devices 1 --sizes 10000,100000

Writes benchmarks/results/selection_speed.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def _parse():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--devices", default="1,8", help="comma list of fake CPU device counts")
    p.add_argument("--sizes", default="10000,100000,1000000,10000000")
    p.add_argument("--num-rollouts", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--naive-max-n", type=int, default=10_000_000)
    p.add_argument("--numpy-max-n", type=int, default=1_000_000)
    p.add_argument("--out", default=str(RESULTS / "selection_speed.json"))
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args()


def _median_time(fn, repeats):
    import numpy as np

    fn()  # warm-up / compile
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def _numpy_scipy_step(alpha, beta, k, m, rng):
    """What a user would write: float64 scipy, full rescore, argpartition, conjugate update."""
    import numpy as np
    from scipy import special

    def entropy(a, b):
        return (
            special.betaln(a, b)
            - (a - 1) * special.digamma(a)
            - (b - 1) * special.digamma(b)
            + (a + b - 2) * special.digamma(a + b)
        )

    n = alpha + beta
    info = entropy(alpha, beta)
    log_b = special.betaln(alpha, beta)
    for s in range(k + 1):
        p = np.exp(
            special.gammaln(k + 1)
            - special.gammaln(s + 1)
            - special.gammaln(k - s + 1)
            + special.betaln(alpha + s, beta + k - s)
            - log_b
        )
        info -= p * entropy(alpha + s, beta + k - s)
    phibar = alpha / n
    score = phibar * (1 - phibar) * np.exp(-3.0 * (phibar - 0.3) ** 2) * info
    idx = np.argpartition(-score, m)[:m]
    s = rng.integers(0, k + 1, m)
    alpha[idx] += s
    beta[idx] += k - s
    return idx


def _naive_jax_score(alpha, beta, k):
    import jax.numpy as jnp
    from jax.scipy import special

    from insight_jax.selection import beta_entropy, insight_weight

    log_b = special.betaln(alpha, beta)
    info = beta_entropy(alpha, beta)
    for s in range(k + 1):
        logc = special.gammaln(k + 1.0) - special.gammaln(s + 1.0) - special.gammaln(k - s + 1.0)
        p = jnp.exp(logc + special.betaln(alpha + s, beta + k - s) - log_b)
        info = info - p * beta_entropy(alpha + s, beta + k - s)
    return insight_weight(alpha / (alpha + beta)) * info


def _bench_pool(n, args, sharding, scorer):
    """All rows for one pool size N."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from insight_jax.selection import apply_update, init_beliefs, init_scores, rescore, select_batch

    k, m, ndev = args.num_rollouts, args.batch_size, jax.device_count()
    rng = np.random.default_rng(0)
    beliefs = init_beliefs(n, sharding=sharding)
    # Realistic, spread-out beliefs: a few passes of random outcomes over the pool.
    a = np.ones(beliefs.alpha.shape, np.float32) + rng.integers(0, 4 * k, beliefs.alpha.shape)
    b = np.ones(beliefs.beta.shape, np.float32) + rng.integers(0, 4 * k, beliefs.beta.shape)
    put = (lambda x: jax.device_put(x, sharding)) if sharding else jnp.asarray
    beliefs = beliefs.replace(alpha=put(a), beta=put(b))
    row = {"devices": ndev, "N": n, "K": k, "M": m}

    row["full_rescore"] = _median_time(
        lambda: init_scores(beliefs, scorer).block_until_ready(), args.repeats
    )
    if n <= args.naive_max_n:
        naive = jax.jit(_naive_jax_score, static_argnums=2)
        reps = args.repeats if n <= 1_000_000 else 1
        row["naive_rescore"] = _median_time(
            lambda: naive(beliefs.alpha, beliefs.beta, k).block_until_ready(), reps
        )
    scores = init_scores(beliefs, scorer)
    step_key = [jax.random.key(0)]

    def step(num_candidates):
        nonlocal beliefs, scores
        step_key[0], key = jax.random.split(step_key[0])
        idx = select_batch(key, beliefs, m, num_candidates, scorer, scores=scores)
        succ = jnp.asarray(rng.integers(0, k + 1, m), jnp.float32)
        beliefs = apply_update(beliefs, idx, succ, k)
        scores = rescore(scores, beliefs, idx, scorer)
        scores.block_until_ready()

    row["step_mhat16"] = _median_time(lambda: step(16 * m), args.repeats * 2)
    row["step_whole_pool"] = _median_time(lambda: step(n), args.repeats * 2)
    topk = jax.jit(lambda x: jax.lax.top_k(x, m)[1])
    flat = jnp.asarray(np.asarray(scores)[:n])  # unsharded N floats, one device
    row["top_k_only"] = _median_time(lambda: topk(flat).block_until_ready(), args.repeats)
    if ndev == 1 and n <= args.numpy_max_n:
        a64, b64 = a[:n].astype(np.float64), b[:n].astype(np.float64)
        row["numpy_scipy_step"] = _median_time(
            lambda: _numpy_scipy_step(a64, b64, k, m, rng), max(1, args.repeats // 2)
        )
    return row


def run_child(args):
    import jax
    from jax.sharding import AxisType, NamedSharding
    from jax.sharding import PartitionSpec as P

    from insight_jax.selection import get_scorer

    ndev = jax.device_count()
    sharding = None
    if ndev > 1:
        mesh = jax.make_mesh((ndev,), ("data",), axis_types=(AxisType.Auto,))
        sharding = NamedSharding(mesh, P("data"))
    scorer = get_scorer("insight", num_rollouts=args.num_rollouts)
    rows = []
    for n in [int(float(x)) for x in args.sizes.split(",")]:
        row = _bench_pool(n, args, sharding, scorer)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def _fmt(x):
    return "-" if x is None else (f"{x * 1e3:9.2f}" if x < 100 else f"{x:9.1f}s")


def print_table(rows):
    cols = [
        "full_rescore",
        "naive_rescore",
        "step_mhat16",
        "step_whole_pool",
        "top_k_only",
        "numpy_scipy_step",
    ]
    print(f"\nTimes in ms (median). K={rows[0]['K']}, M={rows[0]['M']}")
    print(
        f"{'dev':>3} {'N':>9} "
        + " ".join(f"{c[:15]:>15}" for c in cols)
        + f" {'pool/topk':>9} {'numpy/step':>10}"
    )
    for r in rows:
        ratio = r["step_whole_pool"] / r["top_k_only"]
        speed = r.get("numpy_scipy_step", float("nan")) / r["step_whole_pool"]
        print(
            f"{r['devices']:>3} {r['N']:>9} "
            + " ".join(f"{_fmt(r.get(c)):>15}" for c in cols)
            + f" {ratio:9.2f} {speed:10.0f}"
        )


def main():
    args = _parse()
    if args.child:
        run_child(args)  # rows are printed as JSON lines for the parent
        return
    rows = []
    for ndev in [int(d) for d in args.devices.split(",")]:
        root = str(Path(__file__).resolve().parents[1])
        env = dict(
            os.environ,
            JAX_PLATFORMS="cpu",
            PYTHONPATH=root,
            XLA_FLAGS=f"--xla_force_host_platform_device_count={ndev}",
        )
        cmd = [sys.executable, __file__, "--child", *sys.argv[1:]]
        out = subprocess.run(cmd, env=env, check=False, capture_output=True, text=True, cwd=root)
        if out.returncode:
            raise RuntimeError(f"benchmark child ({ndev} devices) failed:\n{out.stderr[-3000:]}")
        rows += [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    meta = {
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "argv": sys.argv[1:],
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    print_table(rows)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
