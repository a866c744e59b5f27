"""Statistics for a multi-seed comparison of prompt-selection methods.

Data model: each method is trained with several independent seeds and evaluated on a held-out
set at a common grid of eval steps, giving learning curves ``curves[seed, eval]`` of accuracy
against ``steps[eval]``. Everything here is pure NumPy in float64; resampling takes an explicit
``rng`` (a ``np.random.Generator`` or an int seed), so every interval is reproducible.

Functions
---------
mean_ci            Student-t interval of the mean over seeds (axis 0).
steps_to_target    first step at which one curve reaches a target (linear interpolation).
speedup_ci         steps-to-target (or rollouts-to-target) speed-up over a baseline, seed
                   bootstrap.
resource_to_target per-seed resource (e.g. cumulative rollouts) needed to reach a target.
bootstrap_diff_ci  difference of mean final accuracies: percentile bootstrap + Welch t-test.
paired_diff_ci     mean of per-seed differences (same seeds): t-interval + paired t-test.
draw_concentration how unevenly a run spread its draws over the pool's prompts.
band_plot          matplotlib helper: seed-mean curve with a shaded t-band.

Percentile intervals use NumPy's default ("linear") quantile definition: for sorted samples
``x_(0) <= ... <= x_(B-1)`` and probability q, ``h = (B-1) q``, ``i = floor(h)``,
``Q(q) = x_(i) + (h - i) (x_(i+1) - x_(i))``, extended so that infinite samples are handled
without ``inf - inf``: equal neighbours give that value and a finite/inf pair with
``h > i`` gives inf.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import stats as _st

RngLike = np.random.Generator | int | np.integer

__all__ = [
    "band_plot",
    "bootstrap_diff_ci",
    "draw_concentration",
    "mean_ci",
    "paired_diff_ci",
    "resource_to_target",
    "speedup_ci",
    "steps_to_target",
]


# ----------------------------------------------------------------------------- validation


def _check_level(level: float) -> float:
    level = float(level)
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    return level


def _check_n_boot(n_boot: int) -> int:
    if isinstance(n_boot, bool) or not isinstance(n_boot, int | np.integer) or n_boot < 1:
        raise ValueError(f"n_boot must be a positive int, got {n_boot!r}")
    return int(n_boot)


def _rng(rng: RngLike) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, bool) or not isinstance(rng, int | np.integer):
        raise TypeError(
            f"rng must be a np.random.Generator or an int seed, got {type(rng).__name__}"
        )
    return np.random.default_rng(int(rng))


def _check_steps(steps: Any, name: str = "steps") -> np.ndarray:
    s = np.asarray(steps, dtype=np.float64)
    if s.ndim != 1:
        raise ValueError(f"{name} must be 1-D [evals], got shape {s.shape}")
    if s.size == 0:
        raise ValueError(f"{name} must not be empty")
    if not np.all(np.isfinite(s)):
        raise ValueError(f"{name} must be finite")
    if s.size > 1 and not np.all(np.diff(s) > 0):
        raise ValueError(f"{name} must be strictly increasing")
    return s


def _check_curves(curves: Any, n_evals: int, name: str) -> np.ndarray:
    c = np.asarray(curves, dtype=np.float64)
    if c.ndim != 2:
        raise ValueError(f"{name} must be 2-D [seeds, evals], got shape {c.shape}")
    if c.shape[0] < 1:
        raise ValueError(f"{name} must have at least one seed")
    if c.shape[1] != n_evals:
        raise ValueError(f"{name} has {c.shape[1]} eval points but steps has {n_evals}")
    if not np.all(np.isfinite(c)):
        raise ValueError(f"{name} must be finite (no NaN/inf accuracies)")
    return c


def _check_cost(cost: Any, shape: tuple[int, ...], name: str) -> np.ndarray:
    c = np.asarray(cost, dtype=np.float64)
    if c.shape != shape:
        raise ValueError(f"{name} must have the shape of its curves {shape}, got {c.shape}")
    if not np.all(np.isfinite(c)) or np.any(np.diff(c, axis=1) < 0):
        raise ValueError(f"{name} must be finite and non-decreasing along evals")
    return c


def _check_target(target: Any) -> float:
    t = float(target)
    if not np.isfinite(t):
        raise ValueError(f"target must be finite, got {t}")
    return t


# ----------------------------------------------------------------------------- helpers


def _quantile(sorted_x: np.ndarray, q: float) -> float:
    """Linear-interpolation quantile of an ascending, NaN-free array; safe with +-inf."""
    n = sorted_x.size
    if n == 0:
        return float("nan")
    h = (n - 1) * q
    i = int(np.floor(h))
    frac = h - i
    a = float(sorted_x[i])
    if frac == 0.0 or i + 1 >= n:
        return a
    b = float(sorted_x[i + 1])
    if a == b:
        return a
    return a + frac * (b - a)


def _percentile_interval(samples: np.ndarray, level: float) -> tuple[float, float]:
    """Equal-tailed percentile interval of the non-NaN samples."""
    x = np.sort(samples[~np.isnan(samples)])
    alpha = 1.0 - level
    return _quantile(x, alpha / 2.0), _quantile(x, 1.0 - alpha / 2.0)


def _crossings(steps: np.ndarray, curves: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Vectorised `steps_to_target` for curves [N, E] and targets [N] (no validation)."""
    reached = curves >= targets[:, None]
    ever = reached.any(axis=1)
    i = np.argmax(reached, axis=1)  # first index reaching (0 if never: masked below)
    rows = np.arange(curves.shape[0])
    i0 = np.maximum(i - 1, 0)
    c0, c1 = curves[rows, i0], curves[rows, i]
    s0, s1 = steps[i0], steps[i]
    interior = i > 0
    # For interior crossings c0 < target <= c1, so c1 - c0 > 0.
    denom = np.where(interior, c1 - c0, 1.0)
    interp = s0 + (targets - c0) / denom * (s1 - s0)
    out = np.where(interior, interp, steps[0])
    return np.where(ever, out, np.inf)


def _ratio(s_base: np.ndarray, s_method: np.ndarray) -> np.ndarray:
    """Speed-up s_base / s_method with the never-reaching conventions of `speedup_ci`."""
    s_base = np.asarray(s_base, dtype=np.float64)
    s_method = np.asarray(s_method, dtype=np.float64)
    b_inf, m_inf = np.isinf(s_base), np.isinf(s_method)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = s_base / s_method
    r = np.where(s_base == s_method, 1.0, r)  # covers 0 / 0 (both reach at steps[0] = 0)
    r = np.where((s_method == 0) & (s_base > 0), np.inf, r)
    r = np.where(m_inf, 0.0, r)
    r = np.where(b_inf, np.inf, r)
    r = np.where(b_inf & m_inf, np.nan, r)
    return r


# ----------------------------------------------------------------------------- public API


def mean_ci(x: Any, level: float = 0.95) -> tuple[Any, Any, Any]:
    """Mean over seeds (axis 0) with a Student-t confidence interval.

    For n seeds with sample mean m and sample standard deviation s (ddof = 1)::

        half = t_{(1 + level) / 2, n - 1} * s / sqrt(n),    (lo, hi) = (m - half, m + half)

    Works on ``[seeds]`` or ``[seeds, ...]`` arrays; the results have shape ``x.shape[1:]``
    (NumPy scalars for 1-D input). With n = 1 the mean is returned and both bounds are NaN
    (no spread can be estimated); this is not an error. NaNs in x propagate.

    Returns:
        (mean, lo, hi)
    """
    level = _check_level(level)
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 0:
        raise ValueError("x must have a seed axis (axis 0), got a scalar")
    n = a.shape[0]
    if n == 0:
        raise ValueError("x must have at least one seed along axis 0")
    mean = a.mean(axis=0)
    if n == 1:
        half = np.full_like(mean, np.nan)
    else:
        sem = a.std(axis=0, ddof=1) / np.sqrt(n)
        half = _st.t.ppf(0.5 + level / 2.0, df=n - 1) * sem
    lo, hi = mean - half, mean + half
    return mean[()], lo[()], hi[()]


def steps_to_target(steps: Any, curve: Any, target: float) -> float:
    """First step at which ``curve`` reaches ``target`` (accuracy >= target).

    Let i be the first eval index with ``curve[i] >= target``.

    * i = 0: returns ``steps[0]`` (the curve starts at or above the target);
    * i > 0: linear interpolation between the bracketing evals (i-1, i), where
      ``curve[i-1] < target <= curve[i]``::

          steps[i-1] + (target - curve[i-1]) / (curve[i] - curve[i-1]) * (steps[i] - steps[i-1])

    * never reached: ``np.inf``.

    Only the *first* crossing counts; a later dip below the target is ignored.

    Raises:
        ValueError: steps not 1-D / empty / non-finite / not strictly increasing; curve not
            1-D, of a different length, or non-finite; target not finite.
    """
    s = _check_steps(steps)
    c = np.asarray(curve, dtype=np.float64)
    if c.ndim != 1:
        raise ValueError(f"curve must be 1-D [evals], got shape {c.shape}")
    _check_curves(c[None, :], s.size, "curve")
    t = _check_target(target)
    return float(_crossings(s, c[None, :], np.array([t]))[0])


def speedup_ci(
    steps: Any,
    base_curves: Any,
    method_curves: Any,
    target: float | None = None,
    n_boot: int = 10_000,
    level: float = 0.95,
    rng: RngLike = 0,
    target_frac: float = 1.0,
    paired: bool = False,
    base_cost: Any = None,
    method_cost: Any = None,
) -> dict[str, Any]:
    """Speed-up of a method over a baseline in steps (or in a cost such as rollouts) needed
    to reach a target accuracy.

    Args:
        steps: [evals] common eval steps, strictly increasing.
        base_curves: [n_base, evals] baseline accuracy curves, one row per seed.
        method_curves: [n_method, evals] method accuracy curves, one row per seed.
        target: accuracy to reach. Default (None): the baseline's final mean accuracy times
            target_frac, ``target_frac * mean_seeds(base_curves[:, -1])``.
        n_boot: number of bootstrap resamples.
        level: confidence level of the percentile interval.
        rng: np.random.Generator or int seed.
        target_frac: only with the default target (ValueError if combined with an explicit
            one): the target is this fraction of the baseline's final mean accuracy, and is
            still re-estimated in every bootstrap replicate.
        paired: row i of both arrays comes from the same seed (same warm start, same test set),
            so the bootstrap resamples seeds jointly: ``idx_method = idx_base``. Seed-level
            variation shared by both methods then cancels. Needs n_base == n_method.
        base_cost, method_cost: optional, both or neither: [n, evals] cost spent by each seed
            up to each eval (e.g. cumulative rollouts; under dynamic sampling it differs per
            seed), non-decreasing along evals. The ratio is then one of costs to target (see
            below) instead of steps.

    Caveat of the default target (target_frac = 1): it sits at the very end of the baseline
    curve, so a method that is *equal* to the baseline in distribution ends below it about
    half the time and then "never reaches" it (ratio 0). The point estimate can then be 0
    and the lower bound is often 0 (check ``frac_method_never``). When the curves are
    still noisy or near a plateau at the end, a target slightly below the final accuracy
    (e.g. target_frac = 0.95) gives a much more informative ratio.

    Point estimate, with seed-mean curves ``B = mean_seeds(base_curves)`` and
    ``M = mean_seeds(method_curves)``::

        speedup = steps_to_target(steps, B, target) / steps_to_target(steps, M, target)

    With costs, each side's crossing step x is turned into the cost its seeds spent by then,
    the seed-mean cost curve linearly interpolated at x: ``C(x) = interp(x, steps,
    mean_seeds(cost))``, and ``speedup = C_base(x_base) / C_method(x_method)``. The curves are
    piecewise linear in the steps and so is C, so this is the crossing of the mean accuracy
    curve drawn against the mean cost. In a bootstrap replicate the costs are resampled with
    their seeds' curves.

    Ratio conventions (r = s_base / s_method):

    * method never reaches, baseline does: r = 0 (no speed-up at all);
    * baseline never reaches, method does: r = inf;
    * neither reaches: r = NaN (undefined; such bootstrap samples are dropped from the
      interval and counted in ``frac_undefined``);
    * s_base == s_method: r = 1 (this covers 0/0 when steps[0] = 0 and both start above
      target); s_method = 0 < s_base: r = inf.

    With the default target (target_frac <= 1, accuracies >= 0) the baseline mean curve
    always reaches it, at the latest at its last eval, so only the method can fail to reach.

    Bootstrap: for each of ``n_boot`` replicates, resample seeds with replacement
    independently within each method, drawn as ``idx_base = rng.integers(0, n_base,
    (n_boot, n_base))`` then ``idx_method = rng.integers(0, n_method, (n_boot, n_method))``;
    recompute both mean curves, the target (when default: target_frac times the final value
    of the resampled baseline mean, so the target's own uncertainty enters the interval)
    and the ratio. The interval is the equal-tailed percentile interval of the replicate
    ratios (module docstring). With fewer than 2 seeds in either group no resampling is
    done and lo = hi = NaN.

    Returns:
        dict with ``speedup``, ``lo``, ``hi``, ``target``, ``steps_base``, ``steps_method``
        (point estimates; costs to target when costs are given), ``frac_method_never`` and
        ``frac_base_never`` (fraction of bootstrap replicates where that mean curve never
        reached its target),
        ``frac_undefined`` (neither reached), ``n_boot``, ``level``.
    """
    s = _check_steps(steps)
    base = _check_curves(base_curves, s.size, "base_curves")
    meth = _check_curves(method_curves, s.size, "method_curves")
    n_boot = _check_n_boot(n_boot)
    level = _check_level(level)
    gen = _rng(rng)
    fixed_target = None if target is None else _check_target(target)
    frac = float(target_frac)
    if not (np.isfinite(frac) and frac > 0):
        raise ValueError(f"target_frac must be finite and > 0, got {target_frac}")
    if fixed_target is not None and frac != 1.0:
        raise ValueError("target_frac applies only to the default target; pass one or the other")

    if (base_cost is None) != (method_cost is None):
        raise ValueError("base_cost and method_cost go together: pass both or neither")
    costs = None
    if base_cost is not None:
        costs = (
            _check_cost(base_cost, base.shape, "base_cost"),
            _check_cost(method_cost, meth.shape, "method_cost"),
        )

    def to_cost(x: np.ndarray, cost_rows: np.ndarray) -> np.ndarray:
        """Crossing steps x [c] -> seed-mean cost at x (inf stays inf); rows [c, E]."""
        out = np.full(x.shape, np.inf)
        for k in np.flatnonzero(np.isfinite(x)):
            out[k] = np.interp(x[k], s, cost_rows[k])
        return out

    b_mean, m_mean = base.mean(axis=0), meth.mean(axis=0)
    t0 = frac * float(b_mean[-1]) if fixed_target is None else fixed_target
    sb = float(_crossings(s, b_mean[None, :], np.array([t0]))[0])
    sm = float(_crossings(s, m_mean[None, :], np.array([t0]))[0])
    if costs is not None:
        sb = float(to_cost(np.array([sb]), costs[0].mean(axis=0, keepdims=True))[0])
        sm = float(to_cost(np.array([sm]), costs[1].mean(axis=0, keepdims=True))[0])
    out: dict[str, Any] = {
        "speedup": float(_ratio(sb, sm)),
        "lo": float("nan"),
        "hi": float("nan"),
        "target": t0,
        "steps_base": sb,
        "steps_method": sm,
        "frac_method_never": float("nan"),
        "frac_base_never": float("nan"),
        "frac_undefined": float("nan"),
        "n_boot": n_boot,
        "level": level,
    }
    n_b, n_m = base.shape[0], meth.shape[0]
    if paired and n_b != n_m:
        raise ValueError(f"paired needs one row per seed in both arrays, got {n_b} and {n_m}")
    if n_b < 2 or n_m < 2:
        return out

    idx_b = gen.integers(0, n_b, size=(n_boot, n_b))
    idx_m = idx_b if paired else gen.integers(0, n_m, size=(n_boot, n_m))
    ratios = np.empty(n_boot)
    never_b = np.empty(n_boot, dtype=bool)
    never_m = np.empty(n_boot, dtype=bool)
    chunk = max(1, 4_000_000 // (max(n_b, n_m) * s.size))  # bound the [chunk, n, E] gather
    for start in range(0, n_boot, chunk):
        sl = slice(start, min(start + chunk, n_boot))
        bb = base[idx_b[sl]].mean(axis=1)  # [c, E]
        mm = meth[idx_m[sl]].mean(axis=1)
        tt = frac * bb[:, -1] if fixed_target is None else np.full(bb.shape[0], fixed_target)
        xb, xm = _crossings(s, bb, tt), _crossings(s, mm, tt)
        if costs is not None:
            xb = to_cost(xb, costs[0][idx_b[sl]].mean(axis=1))
            xm = to_cost(xm, costs[1][idx_m[sl]].mean(axis=1))
        ratios[sl] = _ratio(xb, xm)
        never_b[sl], never_m[sl] = np.isinf(xb), np.isinf(xm)
    out["lo"], out["hi"] = _percentile_interval(ratios, level)
    out["frac_method_never"] = float(never_m.mean())
    out["frac_base_never"] = float(never_b.mean())
    out["frac_undefined"] = float(np.isnan(ratios).mean())
    return out


def resource_to_target(
    resource: Any, curves: Any, target: float, level: float = 0.95
) -> dict[str, Any]:
    """Per-seed resource (e.g. cumulative rollouts) needed to reach ``target``.

    Like `steps_to_target`, but each seed has its own x axis: ``resource[s, e]`` is the
    resource spent by seed s at eval e (it differs per seed under dynamic sampling).
    ``resource`` may also be 1-D [evals], shared by all seeds. Each row must be strictly
    increasing.

    ``values[s] = steps_to_target(resource[s], curves[s], target)`` (inf if seed s never
    reaches). The summary is `mean_ci` over the *finite* values only, so it is conditional
    on reaching the target; always report it together with ``n_reached / n_seeds``.

    Returns:
        dict with ``values`` [seeds], ``mean``, ``lo``, ``hi`` (NaN if no seed reaches;
        lo = hi = NaN if exactly one does), ``n_reached``, ``n_seeds``.
    """
    c = np.asarray(curves, dtype=np.float64)
    if c.ndim != 2:
        raise ValueError(f"curves must be 2-D [seeds, evals], got shape {c.shape}")
    r = np.asarray(resource, dtype=np.float64)
    if r.ndim == 1:
        r = np.broadcast_to(r, c.shape)
    if r.shape != c.shape:
        raise ValueError(
            f"resource must be [evals] or have the shape of curves {c.shape}, got {r.shape}"
        )
    _check_curves(c, c.shape[1], "curves")
    t = _check_target(target)
    level = _check_level(level)
    values = np.empty(c.shape[0])
    for k in range(c.shape[0]):
        rk = _check_steps(r[k], name=f"resource[{k}]")
        values[k] = _crossings(rk, c[k][None, :], np.array([t]))[0]
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        mean = lo = hi = float("nan")
    else:
        mean, lo, hi = (float(v) for v in mean_ci(finite, level))
    return {
        "values": values,
        "mean": mean,
        "lo": lo,
        "hi": hi,
        "n_reached": int(finite.size),
        "n_seeds": int(c.shape[0]),
    }


def bootstrap_diff_ci(
    a: Any,
    b: Any,
    n_boot: int = 10_000,
    level: float = 0.95,
    rng: RngLike = 0,
) -> dict[str, Any]:
    """Difference of means ``mean(a) - mean(b)`` of two independent seed samples.

    Typically a and b are the final held-out accuracies of two methods, one value per seed.

    Bootstrap: ``idx_a = rng.integers(0, n_a, (n_boot, n_a))`` then
    ``idx_b = rng.integers(0, n_b, (n_boot, n_b))``; replicate k is
    ``mean(a[idx_a[k]]) - mean(b[idx_b[k]])``; [lo, hi] is the equal-tailed percentile
    interval of the replicates at ``level``.

    Welch t-test (``scipy.stats.ttest_ind(a, b, equal_var=False)``)::

        t = (mean(a) - mean(b)) / sqrt(s_a^2 / n_a + s_b^2 / n_b),
        df = (s_a^2/n_a + s_b^2/n_b)^2 / ((s_a^2/n_a)^2/(n_a-1) + (s_b^2/n_b)^2/(n_b-1)),

    two-sided p-value. t and p are NaN if either group has fewer than 2 seeds (the bootstrap
    still runs; with one seed that group contributes no spread).

    Returns:
        dict with ``diff``, ``lo``, ``hi``, ``t_stat``, ``p_value``, ``n_a``, ``n_b``,
        ``n_boot``, ``level``.
    """
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    for name, v in (("a", x), ("b", y)):
        if v.ndim != 1 or v.size < 1:
            raise ValueError(f"{name} must be a non-empty 1-D array [seeds], got shape {v.shape}")
        if not np.all(np.isfinite(v)):
            raise ValueError(f"{name} must be finite")
    n_boot = _check_n_boot(n_boot)
    level = _check_level(level)
    gen = _rng(rng)

    idx_a = gen.integers(0, x.size, size=(n_boot, x.size))
    idx_b = gen.integers(0, y.size, size=(n_boot, y.size))
    reps = x[idx_a].mean(axis=1) - y[idx_b].mean(axis=1)
    lo, hi = _percentile_interval(reps, level)
    if x.size >= 2 and y.size >= 2:
        res = _st.ttest_ind(x, y, equal_var=False)
        t_stat, p = float(res.statistic), float(res.pvalue)
    else:
        t_stat = p = float("nan")
    return {
        "diff": float(x.mean() - y.mean()),
        "lo": lo,
        "hi": hi,
        "t_stat": t_stat,
        "p_value": p,
        "n_a": int(x.size),
        "n_b": int(y.size),
        "n_boot": n_boot,
        "level": level,
    }


def paired_diff_ci(a: Any, b: Any, level: float = 0.95) -> dict[str, Any]:
    """Mean of per-seed differences d_i = a_i - b_i (row i of both from the same seed).

    ``diff = mean(d)``, interval ``diff +- t_{(1+level)/2, n-1} sd(d) / sqrt(n)`` and the paired
    t-test (scipy.stats.ttest_rel) p-value. Works on [seeds] or [seeds, evals] arrays (axis 0).
    With one seed the bounds and p-value are NaN.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim == 0 or a.shape[0] == 0:
        raise ValueError(f"paired arrays need one equal, non-empty shape, got {a.shape}, {b.shape}")
    diff, lo, hi = mean_ci(a - b, level)
    if a.shape[0] > 1 and np.any(a != b):
        p_value = _st.ttest_rel(a, b, axis=0).pvalue
    else:
        p_value = np.full(np.shape(diff), np.nan) if np.ndim(diff) else float("nan")
    return {"diff": diff, "lo": lo, "hi": hi, "p_value": p_value, "n": int(a.shape[0])}


def draw_concentration(draws: Any) -> dict[str, float]:
    """How unevenly one run spread its draws over a pool: ``draws[i] >= 0`` is how often prompt i
    was drawn (selected for a group of rollouts), N = draws.size, D = sum(draws) > 0.

    * ``median``: the median of draws (a typical prompt's draws);
    * ``top_decile_share``: the share of D that went to the ceil(N / 10) most drawn prompts
      (uniform draws: 0.1; all on one prompt: 1);
    * ``effective_share``: exp(H) / N with H = -sum_i p_i log p_i, p_i = draws[i] / D and
      0 log 0 = 0: the fraction of the pool that, drawn evenly, has the same entropy (uniform:
      1; all on one prompt: 1 / N);
    * ``never``: the share of prompts with draws[i] = 0.
    """
    d = np.asarray(draws, dtype=np.float64)
    if d.ndim != 1 or d.size == 0:
        raise ValueError(f"draws must be a non-empty 1-D array, got shape {d.shape}")
    if not np.all(np.isfinite(d)) or np.any(d < 0) or d.sum() <= 0:
        raise ValueError("draws must be finite, >= 0 and not all 0")
    p = d / d.sum()
    nz = p[p > 0]
    top = np.sort(d)[::-1][: -(-d.size // 10)]
    return {
        "median": float(np.median(d)),
        "top_decile_share": float(top.sum() / d.sum()),
        "effective_share": float(np.exp(-np.sum(nz * np.log(nz))) / d.size),
        "never": float(np.mean(d == 0)),
    }


def band_plot(
    ax: Any,
    steps: Any,
    curves: Any,
    label: str | None,
    color: Any = None,
    level: float = 0.95,
    alpha: float = 0.2,
) -> Any:
    """Draw the seed-mean learning curve with a shaded Student-t band (see `mean_ci`).

    Args:
        ax: a matplotlib Axes.
        steps: [evals] x values.
        curves: [seeds, evals]; with one seed only the line is drawn (the band is NaN).
        label: legend label of the line.
        color: line/band colour; None uses the Axes' colour cycle.
        level: band confidence level (default 95%).
        alpha: band opacity.

    Returns:
        (line, band): the Line2D of the mean and the fill_between collection.
    """
    s = _check_steps(steps)
    c = _check_curves(curves, s.size, "curves")
    mean, lo, hi = mean_ci(c, level)
    (line,) = ax.plot(s, mean, label=label, color=color)
    band = ax.fill_between(s, lo, hi, color=line.get_color(), alpha=alpha, linewidth=0)
    return line, band
