"""Sweeps over configs/arithmetic_paper_regime.py (M = 256, N = 2000, disjoint warm start), the
second built-in task in the paper's regime, with the rows, seeds and fixed settings of
configs/ablations/countdown_paper_regime.py:
  * "warm": one warm start per seed (16-25), shared by the rows below;
  * "main": the same rows as Countdown's, in tiers that put the headline pair first: Random
    and InSight x 10 seeds; MoPPS x 10; DS x 10; Expected-Difficulty and Inverse-Evidence x 5
    (seed-major inside each tier, so a sweep cut short holds complete paired seeds);
  * "draws": Countdown's sweep over draws per prompt (Random and InSight x seeds 16-20 at
    M = 32, 64, 128 with N = 2000; M = 256 is "main");
  * "random_again": Random once more on the seeds whose later rows (DS 24-25, Expected-
    Difficulty and Inverse-Evidence 16-20) ran in a session whose machine did not reproduce the
    warm starts of the first rows (XLA compiles for the processor it finds), from those later
    warm starts, so that every method has a Random run of its own warm start to pair with;
  * "smoke": the seconds-long shape of "main".
Arithmetic's reward is binary, so the Countdown-only "beyond" rows (a success rule matching a
partial reward) have no counterpart here.

    python benchmarks/efficiency_paper_regime.py run --task arithmetic
"""

from configs.ablations import countdown_paper_regime as countdown

CONFIG = "configs/arithmetic_paper_regime.py"
AGAIN = [16, 17, 18, 19, 20, 24, 25]


def get_hyper(h, name="main"):
    if name == "main":
        return h.chain(
            [
                countdown.rows(h, countdown.SEEDS, ["random", "insight"]),
                countdown.rows(h, countdown.SEEDS, ["mopps"]),
                countdown.rows(h, countdown.SEEDS, ["ds"]),
                countdown.rows(h, countdown.FEW, ["expected_difficulty", "inverse_evidence"]),
            ]
        )
    if name == "random_again":
        return countdown.rows(h, AGAIN, ["random"])
    if name in ("warm", "draws", "smoke"):
        return countdown.get_hyper(h, name)
    raise ValueError(f"unknown sweep {name!r}: warm, main, draws, random_again or smoke")
