"""A cheap simulator of a policy learning under online prompt selection (see model.py, loop.py).

It drives the real selector (insight_jax.selection) with a synthetic learner, so selection
methods can be compared at pool sizes, step counts and seed counts a real policy cannot afford.
"""

from insight_jax.sim.calibrate import Calibration, calibrate
from insight_jax.sim.loop import (
    METHODS,
    SimConfig,
    SimResult,
    resolve_batching,
    run_keys,
    simulate,
    simulate_many,
    simulate_seeds,
    step_keys,
)
from insight_jax.sim.model import (
    MIXES,
    Pool,
    SimParams,
    as_arrays,
    mixture_params,
    normal_params,
)

__all__ = [
    "METHODS",
    "MIXES",
    "Calibration",
    "Pool",
    "SimConfig",
    "SimParams",
    "SimResult",
    "as_arrays",
    "calibrate",
    "mixture_params",
    "normal_params",
    "resolve_batching",
    "run_keys",
    "simulate",
    "simulate_many",
    "simulate_seeds",
    "step_keys",
]
