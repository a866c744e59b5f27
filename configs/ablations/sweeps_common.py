"""Sweeps shared by the tiny configs' ablation files (configs/ablations/<config>.py).

Seeds: 0 was used while building the configs (learning rate, warm-start length); the comparison
runs seeds 1-5, which no choice was made on. No method is tuned per task: every scorer runs with
the paper's defaults (eta = 3, mu = 0.3, Mhat = 16 M, lambda = 1), so each gets the same (zero)
tuning budget; the ablation sweeps below then show how much tuning could move each knob.
A difference seen on seeds 1-5 is checked on fresh seeds by the "replication" sweep.
"""

import importlib
from pathlib import Path

import ml_collections

from insight_jax.rl.base_config import METHODS as ALL_METHODS
from insight_jax.selection import scorer_defaults

SEEDS = [1, 2, 3, 4, 5]
# "replication": fresh seeds for a comparison seen on SEEDS (10 for the headline methods).
REPLICATION_SEEDS = list(range(6, 16))
# The study's methods and InSight's ablation scorers: names from base_config.METHODS (checked
# below), chosen for the study, the headline methods first (see "main").
METHODS = ["random", "insight", "mopps", "expected_difficulty", "inverse_evidence", "ds"]
ABLATION_SCORERS = ["insight_info_only", "insight_weight_only", "insight_sampled"]
_UNKNOWN = sorted(set(METHODS + ABLATION_SCORERS) - set(ALL_METHODS))
if _UNKNOWN:
    raise ValueError(f"sweep methods {_UNKNOWN} are not in base_config.METHODS {ALL_METHODS}")
MUS = [0.1, 0.3, 0.7]
ETAS = [0.0, 1.0, 3.0, 10.0]
INSIGHT = "config.selection.params.insight"  # the sweep key prefix of InSight's parameters
ETA, MU = scorer_defaults("insight")["eta"], scorer_defaults("insight")["mu"]  # the defaults
DECAYS = [1.0, 0.9, 0.5]
# Held-out pass@1 every 10 RL steps (for steps-to-target), one shared warm-start cache.
STUDY = {
    "config.eval.every": 10,
    "config.checkpoint.every": 50,
    "config.warmstart.cache_dir": "workdirs/warm_cache",
}


def load_config(path: str) -> ml_collections.ConfigDict:
    """The default config of a config file given by its path in the package (configs/<name>.py),
    imported by its package name (configs.<name>), as the sweep's base."""
    parts = Path(path).with_suffix("").parts
    if parts[0] != "configs" or Path(path).suffix != ".py":
        raise ValueError(f"a sweep's CONFIG is configs/<name>.py, got {path!r}")
    return importlib.import_module(".".join(parts)).get_config()


def hyper(h, name: str, config_path: str):
    """Rows of sweep `name` (warm, main, replication, pool, ablations) over the config at
    `config_path`, whose M (rl.batch_size) and RL pool size N set the size-relative rows."""
    base = load_config(config_path)
    batch_size = base.rl.batch_size
    pool_size = base.task.rl_pool_size or base.task.num_train
    fixed = [h.fixed(k, v) for k, v in STUDY.items()]
    seeds = h.sweep("config.seed", SEEDS)
    if name == "warm":  # the warm starts only, so the sweeps that follow share them
        return h.product([seeds, h.fixed("config.rl.steps", 0), *fixed])
    if name == "main":
        # Random, InSight and MoPPS for every seed first: a sweep cut short (a lease that ends)
        # still holds the headline comparison, paired over all seeds.
        first, rest = METHODS[:3], METHODS[3:]
        return h.chain([h.product([seeds, h.sweep("arg", ms), *fixed]) for ms in (first, rest)])
    if name == "replication":  # the main comparison again, on seeds no result was seen on
        first, rest = METHODS[:3], METHODS[3:]
        return h.chain(
            [
                h.product(
                    [h.sweep("config.seed", REPLICATION_SEEDS), h.sweep("arg", first), *fixed]
                ),
                h.product(
                    [h.sweep("config.seed", REPLICATION_SEEDS[:5]), h.sweep("arg", rest), *fixed]
                ),
            ]
        )
    if name == "pool":  # a pool InSight can cover in a few steps (diagnosis of "main")
        pool = h.fixed("config.task.rl_pool_size", pool_size // 4)
        return h.product([seeds, h.sweep("arg", ["random", "insight"]), pool, *fixed])
    if name == "ablations":
        insight = h.fixed("arg", "insight")
        rows = h.chain(
            [
                h.sweep("arg", ABLATION_SCORERS),
                h.product([insight, h.sweep(f"{INSIGHT}.mu", [m for m in MUS if m != MU])]),
                h.product([insight, h.sweep(f"{INSIGHT}.eta", [e for e in ETAS if e != ETA])]),
                h.product(
                    [
                        insight,
                        h.sweep("config.selection.num_candidates", [8 * batch_size, pool_size]),
                    ]
                ),
                h.product(
                    [insight, h.sweep("config.selection.decay", [d for d in DECAYS if d != 1.0])]
                ),
            ]
        )
        return h.product([seeds, rows, *fixed])
    raise ValueError(f"unknown sweep {name!r}: warm, main, replication, pool or ablations")
