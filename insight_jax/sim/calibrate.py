"""Fit the simulator's learning rate and difficulty spread to a real learning curve.

Given a real run's held-out accuracy curve (pairs (rl_step, accuracy), averaged over seeds), its
pool size N, batch M, rollouts K and selector, `calibrate` does a small grid search:

  * difficulties are normal, d ~ N(m, s^2), with one topic by default;
  * for each spread s on `std_grid` the mean m is set so that the simulator's expected initial
    accuracy equals the real one,
        E_d[sigmoid(-d)] = acc_0,   d ~ N(m, s^2)     (Gauss-Hermite quadrature + bisection);
  * for each learning rate on `lr_grid` the simulator runs with the real M, K, N, selector and
    `seeds`, and the loss is the mean squared error between the seed-mean simulated curve and
    the real curve at the real curve's steps,
        L(lr, s) = mean_j (acc_sim(t_j) - acc_real(t_j))^2
                   + w (spread_sim(0) - spread_real(0))^2,
    where the second term is used only if the real initial held-out spread is given: the share
    of held-out problems with mixed outcomes in k eval samples, E_d[1 - p^k - (1 - p)^k] (the
    trainer's `eval_spread`), which pins the spread s where the curve alone cannot.

All grid points share the same seeds (common random numbers), so the loss surface is smooth in
the parameters. The whole grid is one compiled call (`simulate_many`). The curve is data: nothing
here knows which config produced it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from insight_jax.sim import model
from insight_jax.sim.loop import SimConfig, simulate_many

DEFAULT_LR_GRID = tuple(float(x) for x in np.geomspace(0.01, 1.0, 13))
DEFAULT_STD_GRID = (0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0)

_NODES, _WEIGHTS = np.polynomial.hermite_e.hermegauss(80)  # probabilists' Hermite: N(0, 1)
_WEIGHTS = _WEIGHTS / _WEIGHTS.sum()


def _success_at_nodes(mean: float, std: float) -> np.ndarray:
    """p = sigmoid(-d) at the quadrature nodes of d ~ N(mean, std^2) (skill 0)."""
    return 1.0 / (1.0 + np.exp(mean + std * _NODES))


def expected_accuracy(mean: float, std: float) -> float:
    """E[sigmoid(-d)], d ~ N(mean, std^2): held-out accuracy at skill 0."""
    return float(_WEIGHTS @ _success_at_nodes(mean, std))


def expected_spread(mean: float, std: float, num_samples: int) -> float:
    """E[1 - p^k - (1 - p)^k], p = sigmoid(-d), d ~ N(mean, std^2): share of mixed outcomes."""
    p = _success_at_nodes(mean, std)
    return float(_WEIGHTS @ (1.0 - p**num_samples - (1.0 - p) ** num_samples))


def difficulty_mean_for_accuracy(accuracy: float, std: float) -> float:
    """The mean m with E[sigmoid(-d)] = accuracy for d ~ N(m, std^2) (bisection; the
    expectation is strictly decreasing in m)."""
    if not 0.0 < accuracy < 1.0:
        raise ValueError(f"initial accuracy must be in (0, 1), got {accuracy}")
    lo, hi = -50.0, 50.0
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if expected_accuracy(mid, std) > accuracy:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


@dataclasses.dataclass(frozen=True)
class Calibration:
    """Result of `calibrate`: the best grid point and what it simulates."""

    learning_rate: float
    difficulty_std: float
    difficulty_mean: float
    params: model.SimParams  # fitted SimParams (normal difficulties)
    config: SimConfig  # the simulator config that reproduces the real run's shapes
    steps: np.ndarray  # [J] real steps
    real_accuracy: np.ndarray  # [J]
    sim_accuracy: np.ndarray  # [J] seed-mean simulated accuracy at those steps
    sim_curve: np.ndarray  # [T + 1] seed-mean simulated accuracy at every step
    mse: float  # curve term of the loss at the best point
    loss: float  # full loss at the best point
    lr_grid: np.ndarray
    std_grid: np.ndarray
    loss_grid: np.ndarray  # [len(std_grid), len(lr_grid)]
    sim_initial_spread: float  # expected initial held-out spread of the fitted pool


def _as_curve(curve) -> tuple[np.ndarray, np.ndarray]:
    arr = np.asarray(curve, np.float64)
    if arr.ndim != 2 or arr.shape[1] != 2 or arr.shape[0] < 2:
        raise ValueError("curve must be a sequence of at least two (rl_step, accuracy) pairs")
    steps, acc = arr[:, 0], arr[:, 1]
    if np.any(steps < 0) or np.any(steps != np.round(steps)):
        raise ValueError("curve steps must be non-negative integers")
    if not np.all(np.isfinite(acc)) or np.any((acc < 0) | (acc > 1)):
        raise ValueError("curve accuracies must lie in [0, 1]")
    order = np.argsort(steps, kind="stable")
    return steps[order].astype(np.int64), acc[order]


def calibrate(
    curve: Sequence[tuple[float, float]],
    *,
    num_prompts: int,
    batch_size: int,
    num_rollouts: int,
    initial_accuracy: float | None = None,
    initial_spread: float | None = None,
    spread_samples: int = 4,
    spread_weight: float = 1.0,
    method: str = "random",
    num_candidates: int | None = None,
    scorer_params: tuple[tuple[str, float], ...] = (),
    decay: float = 1.0,
    num_clusters: int = 1,
    transfer: float = 0.0,
    signal: model.Signal = "std",
    lr_grid: Sequence[float] = DEFAULT_LR_GRID,
    std_grid: Sequence[float] = DEFAULT_STD_GRID,
    seeds: Sequence[int] = (0, 1, 2, 3),
    num_heldout: int = 2048,
) -> Calibration:
    """Grid-search (learning_rate, difficulty std) so the simulator reproduces `curve`.

    Args:
      curve: (rl_step, held-out accuracy) pairs, averaged over the real run's seeds; step 0 is
        the start of RL.
      num_prompts, batch_size, num_rollouts: the real run's N, M, K.
      initial_accuracy: accuracy before RL; defaults to the curve's value at step 0.
      initial_spread: optional real share of held-out problems with mixed outcomes in
        `spread_samples` eval samples before RL (the trainer's eval_spread_before_rl).
      method, num_candidates, scorer_params, decay: the real run's selector (Mhat defaults to
        16 M, capped at N).
      num_clusters, transfer, signal: the simulator's fixed structural choices.
      lr_grid, std_grid, seeds: the search grid and the simulator seeds per grid point.

    Returns: a Calibration with the best point, its simulated curve and the loss grid.
    """
    steps, acc = _as_curve(curve)
    if initial_accuracy is None:
        if steps[0] != 0:
            raise ValueError("pass initial_accuracy or include step 0 in the curve")
        initial_accuracy = float(acc[0])
    if num_candidates is None:
        num_candidates = 16 * batch_size
    config = SimConfig(
        method=method,
        num_prompts=int(num_prompts),
        batch_size=int(batch_size),
        num_rollouts=int(num_rollouts),
        num_candidates=int(min(num_candidates, num_prompts)),
        num_steps=max(1, int(steps[-1])),
        num_clusters=int(num_clusters),
        num_heldout=int(num_heldout),
        scorer_params=tuple(scorer_params),
        signal=signal,
    )
    lr_grid = np.asarray(lr_grid, np.float64)
    std_grid = np.asarray(std_grid, np.float64)
    means = np.array([difficulty_mean_for_accuracy(initial_accuracy, s) for s in std_grid])
    grid = [
        model.normal_params(m, s, learning_rate=lr, transfer=transfer, decay=decay)
        for m, s in zip(means, std_grid, strict=True)
        for lr in lr_grid
    ]
    result = simulate_many(config, grid, seeds)
    curves = np.asarray(result.accuracy, np.float64).mean(axis=1)  # [P, T + 1]
    curves = curves.reshape(len(std_grid), len(lr_grid), -1)
    mse = np.mean((curves[..., steps] - acc) ** 2, axis=-1)
    loss = mse.copy()
    if initial_spread is not None:
        spreads = np.array(
            [expected_spread(m, s, spread_samples) for m, s in zip(means, std_grid, strict=True)]
        )
        loss = loss + spread_weight * (spreads - initial_spread)[:, None] ** 2
    i, j = np.unravel_index(np.argmin(loss), loss.shape)
    return Calibration(
        learning_rate=float(lr_grid[j]),
        difficulty_std=float(std_grid[i]),
        difficulty_mean=float(means[i]),
        params=grid[i * len(lr_grid) + j],
        config=config,
        steps=steps,
        real_accuracy=acc,
        sim_accuracy=curves[i, j, steps],
        sim_curve=curves[i, j],
        mse=float(mse[i, j]),
        loss=float(loss[i, j]),
        lr_grid=lr_grid,
        std_grid=std_grid,
        loss_grid=loss,
        sim_initial_spread=expected_spread(means[i], std_grid[i], spread_samples),
    )
