"""Tests for insight_jax.study.stats: compared to scipy and to brute-force loop references."""

import warnings

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
from scipy import stats as st

from insight_jax.study import stats as S

# ----------------------------------------------------------------------------- references


def ref_crossing(steps, curve, target):
    """Plain-loop first crossing with linear interpolation."""
    for i in range(len(steps)):
        if curve[i] >= target:
            if i == 0:
                return float(steps[0])
            x0, x1, y0, y1 = steps[i - 1], steps[i], curve[i - 1], curve[i]
            return float(x0 + (x1 - x0) * (target - y0) / (y1 - y0))
    return float("inf")


def ref_ratio(sb, sm):
    if np.isinf(sb) and np.isinf(sm):
        return float("nan")
    if np.isinf(sb):
        return float("inf")
    if np.isinf(sm):
        return 0.0
    if sb == sm:
        return 1.0
    if sm == 0:
        return float("inf")
    return sb / sm


def family(rng, n_seeds, tau, steps, amp=0.8, jitter=0.08, noise=0.003):
    """acc(t) = A_s (1 - exp(-t / tau_s)) + eval noise; tau_s = tau * exp(jitter * z).

    Halving tau compresses time by exactly 2x in distribution.
    """
    tau_s = tau * np.exp(jitter * rng.standard_normal(n_seeds))
    a_s = amp + 0.02 * rng.standard_normal(n_seeds)
    clean = a_s[:, None] * (1.0 - np.exp(-steps[None, :] / tau_s[:, None]))
    return clean + noise * rng.standard_normal((n_seeds, steps.size))


STEPS = np.linspace(0.0, 150.0, 31)


# ----------------------------------------------------------------------------- mean_ci


@pytest.mark.parametrize("level", [0.9, 0.95, 0.99])
@pytest.mark.parametrize("shape_tail", [(), (7,)])
def test_mean_ci_matches_scipy_t_interval(level, shape_tail):
    rng = np.random.default_rng(123)
    for _ in range(10):
        n = int(rng.integers(2, 13))
        x = rng.normal(rng.normal(), rng.uniform(0.1, 3.0), size=(n, *shape_tail))
        mean, lo, hi = S.mean_ci(x, level)
        ref_lo, ref_hi = st.t.interval(level, df=n - 1, loc=x.mean(axis=0), scale=st.sem(x, axis=0))
        assert np.shape(mean) == shape_tail == np.shape(lo) == np.shape(hi)
        np.testing.assert_allclose(mean, x.mean(axis=0), rtol=1e-12)
        np.testing.assert_allclose(lo, ref_lo, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(hi, ref_hi, rtol=1e-10, atol=1e-12)


def test_mean_ci_single_seed_gives_nan_bounds_without_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m, lo, hi = S.mean_ci([0.7])
        m2, lo2, hi2 = S.mean_ci([[0.1, 0.2, 0.3]])
    assert m == 0.7 and np.isnan(lo) and np.isnan(hi)
    np.testing.assert_array_equal(m2, [0.1, 0.2, 0.3])
    assert np.all(np.isnan(lo2)) and np.all(np.isnan(hi2))


def test_mean_ci_constant_data_has_zero_width():
    m, lo, hi = S.mean_ci(np.full((5, 3), 0.25))
    np.testing.assert_array_equal(m, 0.25)
    np.testing.assert_array_equal(lo, 0.25)
    np.testing.assert_array_equal(hi, 0.25)


# ----------------------------------------------------------------------------- steps_to_target


def test_steps_to_target_hand_made():
    steps = [0, 10, 20, 30]
    curve = [0.1, 0.3, 0.5, 0.7]
    assert S.steps_to_target(steps, curve, 0.4) == pytest.approx(15.0, abs=1e-12)
    assert S.steps_to_target(steps, curve, 0.45) == pytest.approx(17.5, abs=1e-12)
    assert S.steps_to_target(steps, curve, 0.5) == pytest.approx(20.0, abs=1e-12)  # exact hit
    assert S.steps_to_target(steps, curve, 0.7) == pytest.approx(30.0, abs=1e-12)
    assert S.steps_to_target(steps, curve, 0.71) == np.inf  # never reached
    # Non-uniform spacing: bracket (50, 0.2)-(200, 0.8), target 0.6 -> 50 + 150 * 2/3 = 150.
    assert S.steps_to_target([5, 50, 200], [0.0, 0.2, 0.8], 0.6) == pytest.approx(150.0)


def test_steps_to_target_starts_above_target_returns_first_step():
    assert S.steps_to_target([5, 10, 15], [0.6, 0.4, 0.9], 0.5) == 5.0
    assert S.steps_to_target([5, 10, 15], [0.5, 0.4, 0.9], 0.5) == 5.0  # equality counts


def test_steps_to_target_uses_first_crossing():
    # Crosses between 0 and 10, dips below, crosses again: first crossing at 8.
    assert S.steps_to_target([0, 10, 20, 30], [0.1, 0.6, 0.2, 0.8], 0.5) == pytest.approx(8.0)


def test_steps_to_target_matches_loop_reference_on_random_curves():
    rng = np.random.default_rng(7)
    for _ in range(200):
        e = int(rng.integers(1, 12))
        steps = np.cumsum(rng.uniform(0.5, 20.0, size=e))
        curve = rng.uniform(0, 1, size=e)
        target = float(rng.uniform(0, 1.1))
        got = S.steps_to_target(steps, curve, target)
        assert got == pytest.approx(ref_crossing(steps, curve, target), rel=1e-12, abs=1e-12)


@pytest.mark.parametrize(
    ("steps", "curve", "target", "match"),
    [
        ([0, 10, 10], [0.1, 0.2, 0.3], 0.2, "strictly increasing"),
        ([0, 20, 10], [0.1, 0.2, 0.3], 0.2, "strictly increasing"),
        ([[0, 10]], [0.1, 0.2], 0.2, "1-D"),
        ([], [], 0.2, "empty"),
        ([0, np.nan], [0.1, 0.2], 0.2, "finite"),
        ([0, 10], [0.1, 0.2, 0.3], 0.2, "eval points"),
        ([0, 10], [[0.1, 0.2]], 0.2, "1-D"),
        ([0, 10], [0.1, np.nan], 0.2, "finite"),
        ([0, 10], [0.1, 0.2], np.nan, "target"),
    ],
)
def test_steps_to_target_validation(steps, curve, target, match):
    with pytest.raises(ValueError, match=match):
        S.steps_to_target(steps, curve, target)


# ----------------------------------------------------------------------------- speedup_ci


def ref_speedup(steps, base, meth, target, n_boot, level, seed, frac=1.0):
    """Brute force, same draw order as documented: idx_base then idx_method."""
    rng = np.random.default_rng(seed)
    idx_b = rng.integers(0, base.shape[0], size=(n_boot, base.shape[0]))
    idx_m = rng.integers(0, meth.shape[0], size=(n_boot, meth.shape[0]))
    ratios, never_m = [], []
    for k in range(n_boot):
        bm = base[idx_b[k]].mean(axis=0)
        mm = meth[idx_m[k]].mean(axis=0)
        t = frac * bm[-1] if target is None else target
        sb, sm = ref_crossing(steps, bm, t), ref_crossing(steps, mm, t)
        ratios.append(ref_ratio(sb, sm))
        never_m.append(np.isinf(sm))
    r = np.array(ratios)
    r = r[~np.isnan(r)]
    lo, hi = np.quantile(r, [(1 - level) / 2, (1 + level) / 2])
    return lo, hi, float(np.mean(never_m))


def test_speedup_two_x_time_compression():
    rng = np.random.default_rng(2024)
    base = family(rng, 8, tau=100.0, steps=STEPS)
    meth = family(rng, 8, tau=50.0, steps=STEPS)
    res = S.speedup_ci(STEPS, base, meth, n_boot=4000, rng=0)
    assert res["speedup"] == pytest.approx(2.0, abs=0.15)
    assert res["lo"] < 2.0 < res["hi"]
    assert res["lo"] > 1.0  # excludes 1
    assert res["target"] == pytest.approx(base[:, -1].mean(), rel=1e-12)
    assert res["steps_base"] == pytest.approx(ref_crossing(STEPS, base.mean(0), res["target"]))
    assert res["steps_method"] == pytest.approx(ref_crossing(STEPS, meth.mean(0), res["target"]))
    assert res["speedup"] == pytest.approx(res["steps_base"] / res["steps_method"])
    assert res["frac_method_never"] == 0.0 and res["frac_base_never"] == 0.0
    # The reverse comparison is a slow-down by 2.
    rev = S.speedup_ci(STEPS, meth, base, target=res["target"], n_boot=2000, rng=1)
    assert rev["speedup"] == pytest.approx(1.0 / res["speedup"], rel=1e-12)
    assert rev["hi"] < 1.0


def test_speedup_explicit_target_two_x():
    rng = np.random.default_rng(99)
    base = family(rng, 10, tau=100.0, steps=STEPS)
    meth = family(rng, 10, tau=50.0, steps=STEPS)
    res = S.speedup_ci(STEPS, base, meth, target=0.5, n_boot=3000, rng=5)
    assert res["target"] == 0.5
    assert res["speedup"] == pytest.approx(2.0, abs=0.15)
    assert 1.0 < res["lo"] < 2.0 < res["hi"]


@pytest.mark.parametrize(("target", "frac"), [(None, 1.0), (None, 0.9), (0.45, 1.0)])
def test_speedup_matches_brute_force_reference(target, frac):
    rng = np.random.default_rng(31)
    base = family(rng, 6, tau=100.0, steps=STEPS, noise=0.01)
    meth = family(rng, 5, tau=70.0, steps=STEPS, noise=0.01)
    res = S.speedup_ci(
        STEPS, base, meth, target=target, n_boot=1500, level=0.9, rng=11, target_frac=frac
    )
    lo, hi, fm = ref_speedup(STEPS, base, meth, target, 1500, 0.9, 11, frac)
    if target is None:
        assert res["target"] == pytest.approx(frac * base[:, -1].mean(), rel=1e-12)
    assert res["lo"] == pytest.approx(lo, rel=1e-9)
    assert res["hi"] == pytest.approx(hi, rel=1e-9)
    assert res["frac_method_never"] == fm


def test_speedup_default_target_is_resampled():
    """Default target is recomputed per replicate: it differs from fixing the point target."""
    rng = np.random.default_rng(31)
    base = family(rng, 6, tau=100.0, steps=STEPS, jitter=0.3, noise=0.01)
    meth = family(rng, 6, tau=70.0, steps=STEPS, jitter=0.3, noise=0.01)
    res = S.speedup_ci(STEPS, base, meth, n_boot=1500, rng=3)
    fixed = S.speedup_ci(STEPS, base, meth, target=res["target"], n_boot=1500, rng=3)
    assert res["speedup"] == fixed["speedup"]
    assert (res["lo"], res["hi"]) != (fixed["lo"], fixed["hi"])
    lo, hi, _ = ref_speedup(STEPS, base, meth, None, 1500, 0.95, 3)
    assert (res["lo"], res["hi"]) == (pytest.approx(lo, rel=1e-9), pytest.approx(hi, rel=1e-9))


@pytest.mark.parametrize("data_seed", [0, 1, 5])
def test_speedup_identical_distributions_contains_one(data_seed):
    rng = np.random.default_rng(data_seed)
    base = family(rng, 8, tau=80.0, steps=STEPS)
    meth = family(rng, 8, tau=80.0, steps=STEPS)
    res = S.speedup_ci(STEPS, base, meth, n_boot=4000, rng=0)
    assert res["lo"] < 1.0 < res["hi"]
    res = S.speedup_ci(STEPS, base, meth, n_boot=4000, rng=0, target_frac=0.95)
    assert res["lo"] < 1.0 < res["hi"]
    assert res["speedup"] == pytest.approx(1.0, abs=0.1)
    assert res["frac_method_never"] < 0.05


def test_speedup_default_target_degenerates_for_equal_methods():
    """Documented caveat: with target = baseline final mean, an equal method often ends
    below it, so it 'never reaches' (ratio 0); target_frac < 1 avoids this."""
    rng = np.random.default_rng(5)
    base = family(rng, 8, tau=80.0, steps=STEPS)
    meth = family(rng, 8, tau=80.0, steps=STEPS)
    assert meth[:, -1].mean() < base[:, -1].mean()
    res = S.speedup_ci(STEPS, base, meth, n_boot=2000, rng=0)
    assert res["speedup"] == 0.0 and res["steps_method"] == np.inf
    assert res["lo"] == 0.0 and res["frac_method_never"] > 0.3


def test_speedup_identical_distributions_coverage():
    """Over many independent data sets, the interval contains the true ratio 1 most times."""
    rng = np.random.default_rng(77)
    hits = 0
    n_rep = 40
    for r in range(n_rep):
        base = family(rng, 8, tau=80.0, steps=STEPS)
        meth = family(rng, 8, tau=80.0, steps=STEPS)
        res = S.speedup_ci(STEPS, base, meth, n_boot=1000, rng=r, target_frac=0.95)
        hits += res["lo"] <= 1.0 <= res["hi"]
    assert hits / n_rep >= 0.8


def test_speedup_reproducible_from_seed():
    rng = np.random.default_rng(8)
    base = family(rng, 5, tau=100.0, steps=STEPS, noise=0.02)
    meth = family(rng, 5, tau=60.0, steps=STEPS, noise=0.02)
    a = S.speedup_ci(STEPS, base, meth, n_boot=800, rng=42)
    b = S.speedup_ci(STEPS, base, meth, n_boot=800, rng=42)
    c = S.speedup_ci(STEPS, base, meth, n_boot=800, rng=np.random.default_rng(42))
    d = S.speedup_ci(STEPS, base, meth, n_boot=800, rng=43)
    assert a == b == c
    assert (a["lo"], a["hi"]) != (d["lo"], d["hi"])


def test_speedup_never_reaching_conventions():
    steps = np.array([0.0, 10.0, 20.0, 30.0])
    base = np.array([[0.1, 0.3, 0.5, 0.7], [0.1, 0.3, 0.5, 0.7]])
    flat = np.array([[0.1, 0.1, 0.1, 0.1], [0.1, 0.1, 0.1, 0.1]])
    res = S.speedup_ci(steps, base, flat, n_boot=50, rng=0)
    assert res["speedup"] == 0.0 and res["steps_method"] == np.inf
    assert res["frac_method_never"] == 1.0 and res["lo"] == res["hi"] == 0.0
    res = S.speedup_ci(steps, flat, base, target=0.4, n_boot=50, rng=0)
    assert res["speedup"] == np.inf and res["steps_base"] == np.inf
    assert res["frac_base_never"] == 1.0 and res["hi"] == np.inf
    res = S.speedup_ci(steps, flat, flat, target=0.4, n_boot=50, rng=0)
    assert np.isnan(res["speedup"]) and res["frac_undefined"] == 1.0
    # Both start above target at step 0: ratio 1, not 0/0.
    res = S.speedup_ci(steps, base, base, target=0.05, n_boot=50, rng=0)
    assert res["speedup"] == 1.0 and res["lo"] == res["hi"] == 1.0


def test_speedup_partial_never_gives_infinite_safe_interval():
    """Some replicates with method never reaching (ratio 0) mix with finite ones."""
    steps = np.array([0.0, 10.0, 20.0, 30.0])
    base = np.array([[0.1, 0.3, 0.5, 0.7], [0.1, 0.3, 0.5, 0.7], [0.1, 0.3, 0.5, 0.7]])
    meth = np.array([[0.1, 0.6, 0.8, 0.9], [0.1, 0.2, 0.3, 0.3], [0.1, 0.2, 0.3, 0.3]])
    res = S.speedup_ci(steps, base, meth, n_boot=2000, rng=0)
    assert 0.0 < res["frac_method_never"] < 1.0
    assert res["lo"] == 0.0 and np.isfinite(res["hi"]) and res["hi"] > 1.0
    lo, hi, fm = ref_speedup(steps, base, meth, None, 2000, 0.95, 0)
    assert (res["lo"], res["frac_method_never"]) == (lo, fm)
    assert res["hi"] == pytest.approx(hi, rel=1e-9)


def test_speedup_single_seed_has_nan_interval():
    rng = np.random.default_rng(0)
    base = family(rng, 1, tau=100.0, steps=STEPS)
    meth = family(rng, 4, tau=50.0, steps=STEPS)
    res = S.speedup_ci(STEPS, base, meth, n_boot=100, rng=0)
    assert np.isfinite(res["speedup"]) and np.isnan(res["lo"]) and np.isnan(res["hi"])


def test_speedup_validation():
    base = np.tile([0.1, 0.2, 0.3, 0.4], (3, 1))
    steps = [0, 1, 2, 3]
    with pytest.raises(ValueError, match="eval points"):
        S.speedup_ci(steps, base, base[:, :3])
    with pytest.raises(ValueError, match="2-D"):
        S.speedup_ci(steps, base[0], base)
    with pytest.raises(ValueError, match="strictly increasing"):
        S.speedup_ci([0, 1, 1, 3], base, base)
    with pytest.raises(ValueError, match="finite"):
        S.speedup_ci(steps, base, np.where(base > 0.35, np.nan, base))
    with pytest.raises(ValueError, match="n_boot"):
        S.speedup_ci(steps, base, base, n_boot=0)
    with pytest.raises(ValueError, match="level"):
        S.speedup_ci(steps, base, base, level=1.0)
    with pytest.raises(ValueError, match="target"):
        S.speedup_ci(steps, base, base, target=np.inf)
    with pytest.raises(TypeError, match="rng"):
        S.speedup_ci(steps, base, base, rng=None)
    with pytest.raises(ValueError, match="at least one seed"):
        S.speedup_ci(steps, base, np.zeros((0, 4)))
    with pytest.raises(ValueError, match="target_frac"):
        S.speedup_ci(steps, base, base, target_frac=0.0)
    with pytest.raises(ValueError, match="target_frac"):
        S.speedup_ci(steps, base, base, target=0.3, target_frac=0.9)


def test_speedup_in_cost_is_step_speedup_over_cost_ratio():
    """Closed form: a method that needs 2x fewer steps but spends 2.75x the rollouts per step
    needs 2 / 2.75 as many rollouts, replicate by replicate, so the interval scales too."""
    rng = np.random.default_rng(7)
    base = family(rng, 8, tau=100.0, steps=STEPS)
    meth = family(rng, 8, tau=50.0, steps=STEPS)
    per_step = 2048.0
    cost_b = np.tile(STEPS * per_step, (8, 1))
    cost_m = np.tile(STEPS * per_step * 2.75, (8, 1))
    steps_sp = S.speedup_ci(STEPS, base, meth, n_boot=2000, rng=4, paired=True)
    cost_sp = S.speedup_ci(
        STEPS, base, meth, n_boot=2000, rng=4, paired=True, base_cost=cost_b, method_cost=cost_m
    )
    for k in ("speedup", "lo", "hi"):
        assert cost_sp[k] == pytest.approx(steps_sp[k] / 2.75, rel=1e-12)
    assert cost_sp["steps_base"] == pytest.approx(steps_sp["steps_base"] * per_step, rel=1e-12)
    assert cost_sp["hi"] < 1.0 < steps_sp["lo"]  # fewer steps, more rollouts


def test_speedup_in_cost_matches_crossing_on_the_cost_axis():
    """Per-seed costs that differ (dynamic sampling): the reference finds, in every replicate,
    where the mean curve drawn against the mean cost crosses the target."""
    rng = np.random.default_rng(12)
    base = family(rng, 6, tau=100.0, steps=STEPS, noise=0.01)
    meth = family(rng, 6, tau=60.0, steps=STEPS, noise=0.01)
    inc = np.diff(STEPS)
    cost_b = np.concatenate([np.zeros((6, 1)), np.cumsum(inc * rng.uniform(1, 2, (6, 30)), 1)], 1)
    cost_m = np.concatenate([np.zeros((6, 1)), np.cumsum(inc * rng.uniform(2, 4, (6, 30)), 1)], 1)
    n_boot, level, seed = 1200, 0.9, 3
    res = S.speedup_ci(
        STEPS, base, meth, n_boot=n_boot, level=level, rng=seed, paired=True,
        base_cost=cost_b, method_cost=cost_m,
    )  # fmt: skip
    t0 = base[:, -1].mean()
    cb = ref_crossing(cost_b.mean(0), base.mean(0), t0)
    cm = ref_crossing(cost_m.mean(0), meth.mean(0), t0)
    assert res["speedup"] == pytest.approx(cb / cm, rel=1e-12)
    idx = np.random.default_rng(seed).integers(0, 6, size=(n_boot, 6))  # paired: one draw
    ratios = []
    for k in range(n_boot):
        bm, mm = base[idx[k]].mean(0), meth[idx[k]].mean(0)
        t = bm[-1]
        ratios.append(
            ref_ratio(
                ref_crossing(cost_b[idx[k]].mean(0), bm, t),
                ref_crossing(cost_m[idx[k]].mean(0), mm, t),
            )
        )
    r = np.array(ratios)
    lo, hi = np.quantile(r[~np.isnan(r)], [(1 - level) / 2, (1 + level) / 2])
    assert (res["lo"], res["hi"]) == (pytest.approx(lo, rel=1e-9), pytest.approx(hi, rel=1e-9))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"base_cost": np.ones((3, 31))}, "both or neither"),
        ({"base_cost": np.ones((3, 30)), "method_cost": np.ones((3, 31))}, "shape"),
        ({"base_cost": np.ones((3, 31)), "method_cost": np.tile(STEPS[::-1], (3, 1))}, "non-dec"),
        ({"base_cost": np.full((3, 31), np.nan), "method_cost": np.ones((3, 31))}, "finite"),
    ],
)
def test_speedup_cost_validation(kwargs, match):
    rng = np.random.default_rng(0)
    base, meth = family(rng, 3, 100.0, STEPS), family(rng, 3, 50.0, STEPS)
    with pytest.raises(ValueError, match=match):
        S.speedup_ci(STEPS, base, meth, n_boot=10, **kwargs)


# ----------------------------------------------------------------------------- resource_to_target


def test_resource_to_target_per_seed():
    rng = np.random.default_rng(3)
    n, e = 6, 12
    resource = np.cumsum(rng.uniform(50, 150, size=(n, e)), axis=1)
    curves = np.sort(rng.uniform(0, 1, size=(n, e)), axis=1)
    curves[1] = np.minimum(curves[1], 0.3)  # seed 1 never reaches
    target = 0.6
    res = S.resource_to_target(resource, curves, target)
    ref = np.array([ref_crossing(resource[k], curves[k], target) for k in range(n)])
    np.testing.assert_allclose(res["values"], ref, rtol=1e-12)
    assert res["values"][1] == np.inf
    finite = ref[np.isfinite(ref)]
    assert res["n_reached"] == finite.size == n - 1 and res["n_seeds"] == n
    lo, hi = st.t.interval(0.95, df=finite.size - 1, loc=finite.mean(), scale=st.sem(finite))
    assert res["mean"] == pytest.approx(finite.mean())
    assert (res["lo"], res["hi"]) == (pytest.approx(lo), pytest.approx(hi))


def test_resource_to_target_shared_axis_and_hand_values():
    resource = [0, 100, 300]
    curves = [[0.0, 0.5, 1.0], [0.0, 0.25, 0.75]]
    res = S.resource_to_target(resource, curves, 0.5)
    np.testing.assert_allclose(res["values"], [100.0, 200.0])
    res = S.resource_to_target(resource, curves, 2.0)
    assert res["n_reached"] == 0 and np.isnan(res["mean"]) and np.isnan(res["lo"])
    res = S.resource_to_target(resource, curves, 0.9)
    assert res["n_reached"] == 1 and res["mean"] == pytest.approx(260.0)
    assert np.isnan(res["lo"]) and np.isnan(res["hi"])


def test_resource_to_target_validation():
    with pytest.raises(ValueError, match="shape of curves"):
        S.resource_to_target(np.ones((2, 3)), np.ones((3, 3)), 0.5)
    with pytest.raises(ValueError, match=r"resource\[1\].*strictly increasing"):
        S.resource_to_target([[0, 1, 2], [0, 2, 1]], np.ones((2, 3)), 0.5)
    with pytest.raises(ValueError, match="2-D"):
        S.resource_to_target([0, 1, 2], [0.1, 0.2, 0.3], 0.5)


# ----------------------------------------------------------------------------- bootstrap_diff_ci


@pytest.mark.parametrize(("na", "nb", "level"), [(5, 5, 0.95), (4, 9, 0.9), (12, 3, 0.99)])
def test_bootstrap_diff_ci_matches_brute_force_and_welch(na, nb, level):
    rng = np.random.default_rng(na * 100 + nb)
    a = rng.normal(0.62, 0.02, size=na)
    b = rng.normal(0.58, 0.04, size=nb)
    res = S.bootstrap_diff_ci(a, b, n_boot=2000, level=level, rng=17)

    ref_rng = np.random.default_rng(17)
    idx_a = ref_rng.integers(0, na, size=(2000, na))
    idx_b = ref_rng.integers(0, nb, size=(2000, nb))
    reps = [np.mean(a[idx_a[k]]) - np.mean(b[idx_b[k]]) for k in range(2000)]
    lo, hi = np.percentile(reps, [50 * (1 - level), 50 * (1 + level)])
    assert res["diff"] == pytest.approx(a.mean() - b.mean(), rel=1e-12)
    assert res["lo"] == pytest.approx(lo, rel=1e-10, abs=1e-14)
    assert res["hi"] == pytest.approx(hi, rel=1e-10, abs=1e-14)

    welch = st.ttest_ind(a, b, equal_var=False)
    assert res["p_value"] == pytest.approx(welch.pvalue, rel=1e-12)
    assert res["t_stat"] == pytest.approx(welch.statistic, rel=1e-12)
    # Independent Welch formula, as documented.
    va, vb = a.var(ddof=1) / na, b.var(ddof=1) / nb
    t = (a.mean() - b.mean()) / np.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (na - 1) + vb**2 / (nb - 1))
    assert res["p_value"] == pytest.approx(2 * st.t.sf(abs(t), df), rel=1e-9)


def test_bootstrap_diff_ci_reproducible_and_sensible():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0.7, 0.01, 8), rng.normal(0.6, 0.01, 8)
    r1 = S.bootstrap_diff_ci(a, b, rng=5)
    r2 = S.bootstrap_diff_ci(a, b, rng=np.random.default_rng(5))
    assert r1 == r2
    assert 0.0 < r1["lo"] < r1["diff"] < r1["hi"] and r1["p_value"] < 1e-6
    same = S.bootstrap_diff_ci(a, a, rng=5)
    assert same["lo"] < 0.0 < same["hi"] and same["p_value"] == pytest.approx(1.0)


def test_bootstrap_diff_ci_small_and_invalid():
    res = S.bootstrap_diff_ci([0.5], [0.4, 0.45], n_boot=100, rng=0)
    assert np.isnan(res["p_value"]) and np.isnan(res["t_stat"])
    assert res["diff"] == pytest.approx(0.075)
    with pytest.raises(ValueError, match="non-empty 1-D"):
        S.bootstrap_diff_ci([], [0.4])
    with pytest.raises(ValueError, match="non-empty 1-D"):
        S.bootstrap_diff_ci([[0.5, 0.4]], [0.4])
    with pytest.raises(ValueError, match="finite"):
        S.bootstrap_diff_ci([0.5, np.nan], [0.4])
    with pytest.raises(ValueError, match="n_boot"):
        S.bootstrap_diff_ci([0.5, 0.6], [0.4, 0.3], n_boot=2.5)
    with pytest.raises(TypeError, match="rng"):
        S.bootstrap_diff_ci([0.5, 0.6], [0.4, 0.3], rng=1.5)


# ----------------------------------------------------------------------------- band_plot


def test_band_plot_draws_mean_and_t_band():
    rng = np.random.default_rng(4)
    curves = family(rng, 5, tau=60.0, steps=STEPS, noise=0.02)
    fig, ax = plt.subplots()
    try:
        line, band = S.band_plot(ax, STEPS, curves, label="insight", color="tab:red")
        lo, hi = st.t.interval(0.95, df=4, loc=curves.mean(axis=0), scale=st.sem(curves, axis=0))
        np.testing.assert_allclose(line.get_xdata(), STEPS)
        np.testing.assert_allclose(line.get_ydata(), curves.mean(axis=0))
        assert line.get_label() == "insight"
        verts = band.get_paths()[0].vertices
        assert verts[:, 1].min() == pytest.approx(lo.min())
        assert verts[:, 1].max() == pytest.approx(hi.max())
        assert np.allclose(band.get_facecolor()[0][:3], matplotlib.colors.to_rgb("tab:red"))
        # Default colour: band follows the line's cycle colour.
        line2, band2 = S.band_plot(ax, STEPS, curves + 0.1, label="uniform")
        rgb2 = matplotlib.colors.to_rgb(line2.get_color())
        assert np.allclose(band2.get_facecolor()[0][:3], rgb2)
    finally:
        plt.close(fig)


def test_paired_speedup_cancels_seed_offsets():
    """Seed offsets shared by both methods: the paired interval is narrower and still covers 2."""
    rng = np.random.default_rng(11)
    steps = np.arange(0, 210, 10.0)
    offsets = rng.normal(0, 0.08, 6)[:, None]  # each seed's warm start, shared by both methods
    base = offsets + 0.5 * (1 - np.exp(-steps / 80.0)) + rng.normal(0, 0.002, (6, steps.size))
    meth = offsets + 0.5 * (1 - np.exp(-steps / 40.0)) + rng.normal(0, 0.002, (6, steps.size))
    paired = S.speedup_ci(steps, base, meth, n_boot=3000, rng=1, paired=True)
    unpaired = S.speedup_ci(steps, base, meth, n_boot=3000, rng=1)
    assert paired["lo"] < 2.0 < paired["hi"] and paired["lo"] > 1.0
    assert paired["hi"] - paired["lo"] < 0.5 * (unpaired["hi"] - unpaired["lo"])
    with pytest.raises(ValueError, match="paired"):
        S.speedup_ci(steps, base, meth[:5], paired=True)


def test_paired_diff_ci_matches_scipy():
    rng = np.random.default_rng(5)
    a = rng.normal(0.3, 0.05, 7)
    b = a - rng.normal(0.02, 0.01, 7)
    out = S.paired_diff_ci(a, b)
    d = a - b
    lo, hi = st.t.interval(0.95, 6, loc=d.mean(), scale=st.sem(d))
    assert out["diff"] == pytest.approx(d.mean())
    assert (out["lo"], out["hi"]) == pytest.approx((lo, hi))
    assert out["p_value"] == pytest.approx(st.ttest_rel(a, b).pvalue)
    two = S.paired_diff_ci(np.stack([a, a]).T, np.stack([b, b]).T)
    assert two["diff"] == pytest.approx([d.mean(), d.mean()])
    assert np.isnan(S.paired_diff_ci(a[:1], b[:1])["lo"])
    with pytest.raises(ValueError, match="paired"):
        S.paired_diff_ci(a, b[:3])


# ----------------------------------------------------------------------------- draw_concentration


def test_draw_concentration_against_scipy_and_closed_forms():
    from scipy import stats as st

    rng = np.random.default_rng(5)
    for _ in range(20):
        n = int(rng.integers(5, 400))
        d = rng.poisson(rng.uniform(0.5, 20), n) * rng.integers(0, 2, n)
        d[0] += 1  # not all zero
        c = S.draw_concentration(d)
        assert c["effective_share"] == pytest.approx(np.exp(st.entropy(d)) / n, rel=1e-12)
        k = int(np.ceil(n / 10))
        assert c["top_decile_share"] == pytest.approx(np.sort(d)[-k:].sum() / d.sum(), rel=1e-12)
        assert c["never"] == np.count_nonzero(d == 0) / n
        assert c["median"] == np.median(d)
    even = S.draw_concentration(np.full(2000, 13))
    assert even["median"] == 13.0 and even["never"] == 0.0
    assert even["top_decile_share"] == pytest.approx(0.1, rel=1e-12)
    assert even["effective_share"] == pytest.approx(1.0, rel=1e-12)
    one = S.draw_concentration(np.eye(1, 2000, 7)[0] * 100)
    assert one["top_decile_share"] == 1.0 and one["never"] == 1999 / 2000
    assert one["effective_share"] == pytest.approx(1 / 2000, rel=1e-12)


@pytest.mark.parametrize("bad", [[], [[1, 2]], [0, 0], [1, -1], [1, np.nan]])
def test_draw_concentration_validation(bad):
    with pytest.raises(ValueError, match="draws"):
        S.draw_concentration(bad)
