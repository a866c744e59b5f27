"""Sweeps over configs/countdown_small.py (the 3.2M-parameter Countdown policy), for one GPU:

    python launch/sweep.py configs/ablations/countdown_small.py:warm --root=workdirs/study --jobs=5
    python launch/sweep.py configs/ablations/countdown_small.py:main --root=workdirs/study --jobs=4

Rows and the tuning protocol: configs/ablations/sweeps_common.py.
"""

from configs.ablations import sweeps_common

CONFIG = "configs/countdown_small.py"


def get_hyper(h, name="main"):
    return sweeps_common.hyper(h, name, CONFIG)
