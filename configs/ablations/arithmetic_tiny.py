"""Sweeps over configs/arithmetic_tiny.py: "warm", "main" (methods x seeds), "ablations".

    python launch/sweep.py configs/ablations/arithmetic_tiny.py:warm --root=workdirs/study --jobs=2
    python launch/sweep.py configs/ablations/arithmetic_tiny.py:main --root=workdirs/study --jobs=2

Rows and the tuning protocol: configs/ablations/sweeps_common.py.
"""

from configs.ablations import sweeps_common

CONFIG = "configs/arithmetic_tiny.py"


def get_hyper(h, name="main"):
    return sweeps_common.hyper(h, name, CONFIG)
