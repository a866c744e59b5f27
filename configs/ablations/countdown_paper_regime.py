"""Sweeps over configs/countdown_paper_regime.py (M = 256, N = 2000, disjoint warm start):

    python launch/sweep.py configs/ablations/countdown_paper_regime.py:warm --root=workdirs/paper
    python launch/sweep.py configs/ablations/countdown_paper_regime.py:main --root=workdirs/paper
    (and :draws, :beyond)

or all of them through `benchmarks/efficiency_paper_regime.py run`. Seeds 16-25 are fresh: no
result of any study had been seen on them, and nothing (config, method, knob) was chosen on
them; seed 0 was the pilot that checked the config runs. Every method runs at the paper's
defaults (the same zero tuning budget). Rows are seed-major inside each tier, so a sweep cut
short (a session that ends) holds complete paired seeds of the methods before it:
  * "main": tier 1 Random, InSight, MoPPS x 10 seeds; tier 2 DS x 10 seeds; tier 3
    Expected-Difficulty and Inverse-Evidence x 5 seeds;
  * "draws": Random and InSight at M in {32, 64, 128} (1.6, 3.2, 6.4 draws per prompt; M = 256
    is "main"), Mhat = 16 M, 5 seeds;
  * "beyond": selectors aiming at DS's gain at Random's rollouts, 5 seeds: InSight and Random
    with predicted-zero-variance skipping (skip a prompt whose Beta-Binomial predictive
    P(S = 0) + P(S = K) > 1/2, i.e. more likely uninformative than not; explore 5%), and
    InSight with the success rule "fractional" (Countdown's 0.1 for a well-formed answer
    counts 0.1 of a success, as it trains GRPO); and InSight with a prior fitted at the start
    of RL to the policy's pass@1 on its RL pool (selection.prior "warm_start": the train-pool
    sample's, Beta(1, 1)'s strength), so unseen prompts stop outranking all others; and DS
    with a band-pass filter (BAND: keep groups with 0.2 <= S/K <= 0.8, the example of verl
    #2791) instead of any mixed group; thresholds chosen a priori, not tuned.
"""

from configs import countdown_paper_regime

CONFIG = "configs/countdown_paper_regime.py"
SEEDS = list(range(16, 26))
FEW = SEEDS[:5]
FIXED = {"config.warmstart.cache_dir": "workdirs/warm_cache", "config.checkpoint.every": 25}
# configs/countdown_paper_regime.py:smoke as overrides, so row names stay "<method>,seed=<s>"
SMOKE = {
    "config.task.num_train": 64,
    "config.task.num_test": 16,
    # countdown_tiny's override keys, at the smoke shrink's sizes (its head shape is the preset's)
    "config.model.overrides.num_layers": 1,
    "config.model.overrides.embed_dim": 32,
    "config.model.overrides.mlp_dim": 64,
    "config.warmstart.steps": 4,
    "config.warmstart.batch_size": 8,
    "config.warmstart.pool_size": 0,
    "config.rl.steps": 4,
    "config.rl.batch_size": 8,
    "config.rl.num_rollouts": 4,
    "config.selection.num_candidates": 32,
    "config.eval.every": 2,
    "config.eval.num_samples": 2,
    "config.eval.train_pool_size": 8,
    "config.checkpoint.every": 2,
}
BAND = (0.2, 0.8)
SKIP = {"config.selection.skip_threshold": 0.5, "config.selection.skip_explore": 0.05}


def _geometry(h, m: int):
    c = countdown_paper_regime.paper_geometry(countdown_paper_regime.get_config(), m)
    return [
        h.fixed("config.rl.batch_size", m),
        h.fixed("config.rl.num_minibatches", c.rl.num_minibatches),
        h.fixed("config.selection.num_candidates", c.selection.num_candidates),
    ]


def rows(h, seeds, methods, *extra):
    fixed = [h.fixed(k, v) for k, v in FIXED.items()]
    return h.product([h.sweep("config.seed", seeds), h.sweep("arg", methods), *extra, *fixed])


def get_hyper(h, name="main"):
    if name == "warm":  # the warm starts only (one per seed), shared by every sweep below
        return rows(h, SEEDS, ["random"], h.fixed("config.rl.steps", 0))
    if name == "main":
        return h.chain(
            [
                rows(h, SEEDS, ["random", "insight", "mopps"]),
                rows(h, SEEDS, ["ds"]),
                rows(h, FEW, ["expected_difficulty", "inverse_evidence"]),
            ]
        )
    if name == "draws":
        geometries = [_geometry(h, m) for m in (32, 64, 128)]
        return h.chain([rows(h, FEW, ["random", "insight"], *g) for g in geometries])
    if name == "beyond":
        skip = [h.fixed(k, v) for k, v in SKIP.items()]
        return h.chain(
            [
                rows(h, FEW, ["insight", "random"], *skip),
                rows(h, FEW, ["insight"], h.fixed("config.selection.success_rule", "fractional")),
                rows(h, FEW, ["insight"], h.fixed("config.selection.prior", "warm_start")),
                rows(h, FEW, ["ds"], h.fixed("config.selection.dynamic_sampling_band", BAND)),
            ]
        )
    if name == "smoke":  # the seconds-long shape of "main" that CI runs end to end
        fixed = [h.fixed(k, v) for k, v in SMOKE.items()]  # no shared cache: 4 warm-start steps
        return h.product(
            [h.sweep("config.seed", [1, 2]), h.sweep("arg", ["random", "insight"]), *fixed]
        )
    raise ValueError(f"unknown sweep {name!r}: warm, main, draws, beyond or smoke")
