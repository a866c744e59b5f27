"""How the selectors rank one synthetic pool differently (a picture and a table).

A pool of prompts with latent success rates phi ~ Beta(0.6, 0.6) (many near 0 or 1, some in
between) has been rolled out an uneven number of times (1 to 12 K rollouts each), so beliefs
differ both in mean and in evidence. Each selector then picks M prompts from the whole pool.
The table shows what each one favours (mean phibar, mean evidence, how many picks are
"settled": n > 40), and the PNG plots the pool in (phibar, evidence) with each selector's picks.

    python -m insight_jax.selection.demo --out=/tmp/selection_demo
"""

from __future__ import annotations

import argparse
from pathlib import Path

import jax
import numpy as np

from insight_jax.selection import get_scorer, init_beliefs, select_batch, update_beliefs

METHODS = ("insight", "mopps", "expected_difficulty", "inverse_evidence", "random")


def synthetic_pool(num_items: int, num_rollouts: int, seed: int):
    """Beliefs after 1 to 12K Bernoulli(phi) rollouts per prompt; returns (beliefs, phi)."""
    rng = np.random.default_rng(seed)
    phi = rng.beta(0.6, 0.6, num_items)
    seen = rng.integers(1, 12 * num_rollouts + 1, num_items)  # rollouts observed so far
    successes = rng.binomial(seen, phi)
    beliefs = init_beliefs(num_items)
    # One aggregated update per prompt (with lambda = 1 the update is additive).
    beliefs = beliefs.replace(
        alpha=beliefs.alpha + successes.astype(np.float32),
        beta=beliefs.beta + (seen - successes).astype(np.float32),
    )
    return beliefs, phi


def compare(num_items=4000, batch_size=128, num_rollouts=8, seed=0):
    beliefs, phi = synthetic_pool(num_items, num_rollouts, seed)
    # A final small real update, to show the public API end to end.
    beliefs = update_beliefs(beliefs, [0, 1], [num_rollouts, 0], num_rollouts)
    phibar = np.asarray(beliefs.mean)
    evidence = np.asarray(beliefs.evidence)
    picks, rows = {}, []
    for name in METHODS:
        scorer = get_scorer(name, num_rollouts=num_rollouts)
        idx = np.asarray(select_batch(jax.random.key(seed), beliefs, batch_size, num_items, scorer))
        picks[name] = idx
        # Expected fraction of informative groups (not all-equal) under the true phi.
        informative = 1 - phi[idx] ** num_rollouts - (1 - phi[idx]) ** num_rollouts
        rows.append(
            dict(
                method=name,
                mean_phibar=float(phibar[idx].mean()),
                mean_evidence=float(evidence[idx].mean()),
                settled_frac=float(np.mean(evidence[idx] > 40)),
                informative_groups=float(informative.mean()),
            )
        )
    overlap = {
        (a, b): len(np.intersect1d(picks[a], picks[b])) / batch_size
        for i, a in enumerate(METHODS)
        for b in METHODS[i + 1 :]
    }
    return beliefs, picks, rows, overlap


def plot(beliefs, picks, path: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    phibar = np.asarray(beliefs.mean)
    evidence = np.asarray(beliefs.evidence)
    fig, axes = plt.subplots(1, len(picks), figsize=(4 * len(picks), 3.6), sharey=True)
    for ax, (name, idx) in zip(axes, picks.items(), strict=True):
        ax.scatter(phibar, evidence, s=3, c="0.8", label="pool")
        ax.scatter(phibar[idx], evidence[idx], s=8, c="C3", label="picked")
        ax.set_title(name)
        ax.set_xlabel("posterior mean phibar")
        ax.set_yscale("log")
    axes[0].set_ylabel("evidence n = alpha + beta")
    axes[0].legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description="Compare selectors on a synthetic pool.")
    p.add_argument("--out", default="selection_demo")
    p.add_argument("--num-items", type=int, default=4000)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    beliefs, picks, rows, overlap = compare(args.num_items, args.batch_size, seed=args.seed)
    print(f"{'method':<22}{'mean phibar':>12}{'mean n':>9}{'n>40':>7}{'E[informative]':>16}")
    for r in rows:
        print(
            f"{r['method']:<22}{r['mean_phibar']:>12.3f}{r['mean_evidence']:>9.1f}"
            f"{r['settled_frac']:>7.2f}{r['informative_groups']:>16.3f}"
        )
    print("\noverlap of picks:")
    for (a, b), v in overlap.items():
        print(f"  {a:>20} & {b:<20} {v:.2f}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    plot(beliefs, picks, out / "selection_demo.png")
    print(f"\nwrote {out / 'selection_demo.png'}")


if __name__ == "__main__":
    main()
