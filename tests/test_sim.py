"""The selection simulator: exact model pieces, reproducibility, real-selector wiring, DS
bookkeeping, calibration recovery and the optional memorisation term. Small shapes so the whole
file runs in about a minute on two idle CPU cores."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from insight_jax.selection import get_scorer, init_beliefs, select_batch, update_beliefs
from insight_jax.sim import (
    SimConfig,
    SimParams,
    calibrate,
    mixture_params,
    model,
    normal_params,
    simulate,
    simulate_many,
    simulate_seeds,
    step_keys,
)
from insight_jax.sim.calibrate import (
    difficulty_mean_for_accuracy,
    expected_accuracy,
    expected_spread,
)

# One small config shared by most tests (params are traced, so it compiles once per entry point).
# Mhat = 64 <= N / 4: the candidate draw takes its lax.cond path, so "auto" batching is "map".
BASE = SimConfig(
    method="insight",
    num_prompts=256,
    batch_size=8,
    num_rollouts=4,
    num_candidates=64,
    num_steps=12,
    num_clusters=3,
    num_heldout=128,
    record_batches=True,
)
# All params below are 3-component mixtures, so they share one compiled function per config.
PARAMS = mixture_params("balanced", learning_rate=0.2)
# Every prompt certain to succeed (d = -200) or fail (d = +200): p is exactly 1 or 0.
DETERMINISTIC = SimParams(
    learning_rate=1.0,
    mix_weights=(0.5, 0.0, 0.5),
    mix_locs=(-200.0, 0.0, 200.0),
    mix_scales=(0.0, 0.0, 0.0),
)


def _np(tree):
    return jax.tree.map(np.asarray, tree)


def test_group_signal_and_skill_increment_exact():
    s = jnp.array([0.0, 1.0, 2.0, 4.0])
    np.testing.assert_allclose(model.group_signal(s, 4, "var"), [0, 3 / 16, 1 / 4, 0])
    np.testing.assert_allclose(model.group_signal(s, 4, "std"), [0, 3**0.5 / 4, 0.5, 0])
    g = jnp.array([1.0, 2.0, 4.0])
    cluster = jnp.array([0, 0, 2])
    # (lr / M) [(1 - tau) per_topic + tau total]: per_topic = (3, 0, 4), total = 7.
    inc = model.skill_increment(g, cluster, 3, 3, 0.6, 0.25)
    np.testing.assert_allclose(inc, 0.2 * (0.75 * np.array([3, 0, 4]) + 0.25 * 7), rtol=1e-6)


def test_drift_is_identity_at_zero_elapsed_and_stationary():
    key = jax.random.key(0)
    x = 1.5 * jax.random.normal(jax.random.key(1), (20000,))
    same = model.drift_offsets(key, x, jnp.zeros((20000,), jnp.int32), 1.5, 0.1)
    np.testing.assert_allclose(same, x)
    moved = model.drift_offsets(key, x, jnp.full((20000,), 7, jnp.int32), 1.5, 0.1)
    assert np.std(np.asarray(moved)) == pytest.approx(1.5, rel=0.03)  # stationary std kept
    corr = np.corrcoef(np.asarray(x), np.asarray(moved))[0, 1]
    assert corr == pytest.approx(np.exp(-0.7), abs=0.02)  # e^{-theta dt}


def test_determinism_from_seed():
    a = _np(simulate(BASE, PARAMS, 3))
    b = _np(simulate(BASE, PARAMS, 3))
    c = _np(simulate(BASE, PARAMS, 4))
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a.accuracy, c.accuracy)
    assert a.accuracy[-1] > a.accuracy[0]  # it learns


@pytest.mark.parametrize("batching", ["vmap", "map"])
def test_batched_seeds_equal_python_loop(batching):
    seeds = [0, 5, 9]
    batched = _np(simulate_seeds(BASE, PARAMS, seeds, batching=batching))
    for i, s in enumerate(seeds):
        single = _np(simulate(BASE, PARAMS, s))
        for x, y in zip(jax.tree.leaves(batched), jax.tree.leaves(single), strict=True):
            np.testing.assert_allclose(x[i], y, rtol=1e-6, atol=1e-7)


def test_simulate_many_pairs_params_and_seeds():
    slow = mixture_params("balanced", learning_rate=0.0)
    hard = mixture_params("mostly_hard", learning_rate=0.2)
    # 3 x 1 runs: the same batch size as the "map" test above, so the compile is reused.
    out = _np(simulate_many(BASE, [PARAMS, slow, hard], [2]))
    assert out.accuracy.shape == (3, 1, BASE.num_steps + 1)
    for i, p in enumerate([PARAMS, slow, hard]):
        np.testing.assert_allclose(
            out.accuracy[i, 0], np.asarray(simulate(BASE, p, 2).accuracy), rtol=1e-6
        )


def test_zero_variance_groups_change_nothing():
    out = _np(simulate(BASE, DETERMINISTIC, 0))
    np.testing.assert_array_equal(out.skill, 0.0)
    np.testing.assert_array_equal(out.signal, 0.0)
    np.testing.assert_array_equal(out.zero_var_frac, 1.0)
    np.testing.assert_array_equal(out.accuracy, out.accuracy[0])
    # Control: the same learning rate on a learnable pool moves the skill.
    learnable = mixture_params("balanced", learning_rate=1.0)
    assert np.all(np.asarray(simulate(BASE, learnable, 0).skill) > 0)


def test_no_learning_gives_a_flat_curve():
    flat = _np(simulate(BASE, mixture_params("balanced", learning_rate=0.0), 1))
    np.testing.assert_array_equal(flat.accuracy, flat.accuracy[0])
    assert flat.signal.sum() > 0  # there was signal; it just was not applied
    rising = _np(simulate(BASE, PARAMS, 1))
    assert rising.accuracy[-1] > rising.accuracy[0] + 0.01


def _replay(cfg, params, seed, out, decay):
    """Re-select every recorded step with the public select_batch and update_beliefs."""
    scorer = get_scorer(cfg.method, num_rollouts=cfg.num_rollouts)
    beliefs = init_beliefs(cfg.num_prompts)
    for t in range(cfg.num_steps):
        key = step_keys(seed, t)[0]
        idx = select_batch(key, beliefs, cfg.batch_size, cfg.num_candidates, scorer)
        np.testing.assert_array_equal(np.asarray(idx), out.indices[t])
        beliefs = update_beliefs(beliefs, idx, out.successes[t], cfg.num_rollouts, decay=decay)
    assert len(np.unique(out.indices)) > cfg.batch_size  # it did not keep picking one batch


def test_selection_is_the_real_select_batch_cached_candidates():
    """InSight on Mhat candidates reading cached scores (init_scores / rescore)."""
    params = mixture_params("balanced", learning_rate=0.2, decay=0.9, drift_std=0.5)
    _replay(BASE, params, 7, _np(simulate(BASE, params, 7)), decay=0.9)


@pytest.mark.parametrize("method, num_candidates", [("insight", 256), ("random", 64)])
def test_selection_is_the_real_select_batch(method, num_candidates):
    """Whole-pool InSight, and a stochastic (keyed) scorer on candidates."""
    cfg = dataclasses.replace(BASE, method=method, num_candidates=num_candidates, num_steps=6)
    params = mixture_params("balanced", learning_rate=0.3, decay=0.9, drift_std=0.5)
    _replay(cfg, params, 3, _np(simulate(cfg, params, 3)), decay=0.9)


def test_ds_keep_on_a_constructed_mask():
    informative = jnp.array([1, 0, 1, 0, 0, 1, 0, 0, 1, 1, 1, 1], bool)  # R = 3, M = 4
    keep, rounds = model.ds_keep(informative, 4)
    assert int(rounds) == 3  # 2 informative after round 1, 3 after round 2, 7 after round 3
    np.testing.assert_array_equal(np.flatnonzero(np.asarray(keep)), [0, 2, 5, 8])
    keep, rounds = model.ds_keep(jnp.ones((12,), bool), 4)
    assert int(rounds) == 1 and np.flatnonzero(np.asarray(keep)).tolist() == [0, 1, 2, 3]
    keep, rounds = model.ds_keep(jnp.zeros((12,), bool), 4)
    assert int(rounds) == 3 and not np.any(np.asarray(keep))


def test_ds_counts_extra_rollouts():
    m, k, r = 8, 4, 5
    cfg = SimConfig(
        method="ds",
        num_prompts=256,
        batch_size=m,
        num_rollouts=k,
        num_steps=10,
        num_clusters=3,
        num_heldout=16,
        ds_max_rounds=r,
        record_batches=True,
    )
    # All groups zero-variance: every step burns all R rounds and learns nothing.
    out = _np(simulate(cfg, DETERMINISTIC, 0))
    np.testing.assert_array_equal(out.rollouts, r * m * k)
    np.testing.assert_array_equal(out.zero_var_frac, 1.0)
    np.testing.assert_array_equal(out.skill, 0.0)
    # Mixed pool: check rollouts against a plain-Python DAPO loop over the recorded groups.
    mixed = mixture_params((0.4, 0.2, 0.4), learning_rate=0.0)
    out = _np(simulate(cfg, mixed, 1))
    assert len(set(out.rollouts.tolist())) > 1  # the case exercises different round counts
    for t in range(cfg.num_steps):
        s = out.successes[t]
        informative = (s > 0) & (s < k)
        found, rounds = 0, 0
        while rounds < r and found < m:
            found += informative[rounds * m : (rounds + 1) * m].sum()
            rounds += 1
        assert out.rollouts[t] == rounds * m * k
        assert out.zero_var_frac[t] == pytest.approx(1 - informative[: rounds * m].mean())
        assert len(np.unique(out.indices[t])) == r * m  # distinct draws across rounds


def test_difficulty_mean_matches_accuracy():
    for acc, std in [(0.3, 0.5), (0.5, 2.0), (0.8, 3.0)]:
        m = difficulty_mean_for_accuracy(acc, std)
        assert expected_accuracy(m, std) == pytest.approx(acc, abs=1e-9)
        d = m + std * np.random.default_rng(0).standard_normal(400_000)
        p = 1 / (1 + np.exp(d))
        assert np.mean(p) == pytest.approx(acc, abs=3e-3)
        assert np.mean(1 - p**4 - (1 - p) ** 4) == pytest.approx(
            expected_spread(m, std, 4), abs=3e-3
        )


def test_calibration_recovers_known_params():
    n, m, k = 400, 16, 8
    lr_true, std_true = 0.1, 2.0
    mean = difficulty_mean_for_accuracy(0.4, std_true)
    truth = SimConfig(
        method="random",
        num_prompts=n,
        batch_size=m,
        num_rollouts=k,
        num_candidates=256,
        num_steps=60,
        num_clusters=1,
        num_heldout=1024,
    )
    params = normal_params(mean, std_true, learning_rate=lr_true, transfer=0.0)
    # The "real" curve: 2 seeds the fit does not use. 25 copies of the params give the same batch
    # shape as the 5 x 5 grid below, so the compiled simulation is shared.
    real = np.asarray(simulate_many(truth, [params] * 25, [100, 101]).accuracy[0]).mean(0)
    curve = [(t, float(real[t])) for t in (0, 15, 30, 45, 60)]
    fit = calibrate(
        curve,
        num_prompts=n,
        batch_size=m,
        num_rollouts=k,
        num_candidates=256,
        initial_spread=expected_spread(mean, std_true, 4),
        lr_grid=(0.025, 0.05, 0.1, 0.2, 0.4),
        std_grid=(1.0, 1.5, 2.0, 2.5, 3.0),
        seeds=(0, 1),
        num_heldout=1024,
    )
    assert fit.learning_rate == lr_true and fit.difficulty_std == std_true
    assert fit.loss_grid.shape == (5, 5)
    np.testing.assert_allclose(fit.sim_accuracy, real[fit.steps], atol=0.03)
    assert fit.sim_curve.shape == (61,)


# --- memorisation (model.py: m_i, G_i, w_i = 1 / (1 + kappa G_i)) --------------------------------

# simulate(BASE, PARAMS, 3) as computed by the simulator before memorisation was added (git
# ce2feba), float32 values written out exactly. Re-record only for a deliberate change of the
# model or of jax's RNG / XLA's CPU arithmetic.
GOLDEN_ACCURACY = [
    0.5042080283164978, 0.5056109428405762, 0.5080264806747437, 0.5080264806747437,
    0.5109923481941223, 0.513278603553772, 0.5169258117675781, 0.5183159112930298,
    0.5204814672470093, 0.522873044013977, 0.5237672924995422, 0.5258402824401855,
    0.5266375541687012,
]  # fmt: skip
GOLDEN_SKILL = [0.21946711838245392, 0.23570507764816284, 0.21779242157936096]
GOLDEN_LAST_BATCH = [52, 252, 80, 90, 247, 240, 74, 203]
# Configs that revisit prompts within their 12 steps (96 groups from 64 prompts; DS draws 40 of
# 256 per step), so that kappa > 0 changes the run and the comparison below can fail.
REVISIT_CFG = dataclasses.replace(BASE, num_prompts=64, num_candidates=64)
DS_CFG = dataclasses.replace(BASE, method="ds", ds_max_rounds=5)
DRIFTING = mixture_params("balanced", learning_rate=0.2, decay=0.9, drift_std=0.5, drift_rate=0.05)


def test_default_path_matches_the_recorded_pre_memorisation_run():
    """A tolerance check, not bit equality: another XLA version or CPU may fuse or contract
    (FMA) the float32 arithmetic differently, which moves these values by a few ulps per step.
    rtol = 1e-5 leaves ~100x float32 rounding (eps 6e-8) for 12 steps of sums over 128 held-out
    prompts, and is ~20x below the smallest model change tried: learning_rate 0.2 -> 0.199 moves
    the accuracy by 1.1e-4 (2e-4 relative) and the skill by 1.2e-3; another scorer
    (expected_difficulty) by 2.4e-3 and 3e-2. The batch indices stay exact: rounding cannot
    reorder them (perturbing every insight score by up to 1% leaves all 12 batches unchanged),
    so a changed batch is a changed selector."""
    out = _np(simulate(BASE, PARAMS, 3))
    np.testing.assert_allclose(out.accuracy, GOLDEN_ACCURACY, rtol=1e-5, atol=0)
    np.testing.assert_allclose(out.skill, GOLDEN_SKILL, rtol=1e-5, atol=0)
    np.testing.assert_array_equal(out.indices[-1], GOLDEN_LAST_BATCH)
    assert out.train_accuracy is None  # the memorisation state and output are absent


@pytest.mark.parametrize("cfg", [REVISIT_CFG, DS_CFG], ids=["insight", "ds"])
def test_memorisation_with_kappa_zero_is_bit_identical(cfg):
    """memorisation=True, memorise = 0 (any memory_rate) vs the program without the term."""
    off = _np(simulate(cfg, DRIFTING, 5))
    on_cfg = dataclasses.replace(cfg, memorisation=True)
    on = _np(simulate(on_cfg, dataclasses.replace(DRIFTING, memory_rate=3.0), 5))
    for field in ("accuracy", "rollouts", "zero_var_frac", "signal", "skill", "indices"):
        x, y = getattr(off, field), getattr(on, field)
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(x.view(np.uint8), y.view(np.uint8), err_msg=field)
    np.testing.assert_array_equal(off.successes, on.successes)
    assert on.train_accuracy.shape == (cfg.num_steps + 1,)
    # Control: the comparison can fail. kappa > 0 changes the run from the first revisit on.
    moved = _np(simulate(on_cfg, dataclasses.replace(DRIFTING, memorise=1.0), 5))
    assert not np.array_equal(moved.accuracy, off.accuracy)
    assert not np.array_equal(moved.train_accuracy, on.train_accuracy)


def test_memorise_without_the_flag_is_refused():
    with pytest.raises(ValueError, match="memorisation=True"):
        simulate(BASE, dataclasses.replace(PARAMS, memorise=0.5), 0)
    with pytest.raises(ValueError, match="memorisation=True"):
        simulate_many(BASE, [PARAMS, dataclasses.replace(PARAMS, memorise=0.5)], [0])


def test_memory_step_closed_form_float64():
    rng = np.random.default_rng(0)
    m = rng.normal(size=64)
    big_g = rng.exponential(1.0, 64) * (rng.random(64) < 0.7)  # some prompts never trained
    g = rng.random(64) * 0.5 * (rng.random(64) < 0.8)  # some zero-variance groups
    kappa, r = 1.7, 2.5
    w, m1, g1 = _np(model.memory_step(*map(jnp.float32, (m, big_g, g)), kappa, r))
    w_ref = 1.0 / (1.0 + kappa * big_g)
    np.testing.assert_allclose(w, w_ref, rtol=1e-6)
    np.testing.assert_allclose(m1, m + r * (1.0 - w_ref) * g, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(g1, big_g + g, rtol=1e-6)
    np.testing.assert_array_equal(m1[g == 0], np.float32(m)[g == 0])  # no signal: no memory
    np.testing.assert_array_equal(w[big_g == 0], 1.0)  # a fresh prompt transfers fully
    # kappa = 0: w = 1 and m unchanged, exactly.
    w0, m0, _ = _np(model.memory_step(*map(jnp.float32, (m, big_g, g)), 0.0, r))
    np.testing.assert_array_equal(w0, 1.0)
    np.testing.assert_array_equal(m0, np.float32(m))
    # Train-pool accuracy: mean sigmoid(s_c - d - x + m).
    skill = np.array([0.3, -0.2])
    pool = model.Pool(
        jnp.float32(rng.normal(size=64)),
        jnp.int32(rng.integers(0, 2, 64)),
        jnp.float32(rng.normal(size=64)),
        jnp.zeros((64,), jnp.int32),
    )
    ref = np.mean(1.0 / (1.0 + np.exp(-(skill[pool.cluster] - pool.difficulty - pool.offset + m1))))
    got = float(model.train_accuracy(jnp.float32(skill), pool, jnp.float32(m1)))
    assert got == pytest.approx(ref, rel=1e-5)


def test_one_run_step_of_memory_and_skill_matches_the_formula():
    """Replays a recorded 2-step run in float64: step 0 trains fresh prompts (w = 1, no memory);
    at step 1 the revisited ones (the whole pool of M prompts) have w = 1 / (1 + kappa g_0)."""
    m, k, kappa, r, lr = 8, 8, 1.5, 2.0, 0.3
    cfg = SimConfig(
        method="random",
        num_prompts=m,  # every step trains the same M prompts
        batch_size=m,
        num_rollouts=k,
        num_candidates=m,
        num_steps=2,
        num_clusters=1,
        num_heldout=16,
        record_batches=True,
        memorisation=True,
    )
    params = normal_params(0.0, 1.0, learning_rate=lr, memorise=kappa, memory_rate=r)
    out = _np(simulate(cfg, params, 0))
    g = np.zeros((2, m))
    for t in range(2):
        s = out.successes[t].astype(np.float64)
        g[t, out.indices[t]] = np.sqrt(s / k * (1 - s / k))
    assert np.sum(g[0] > 0) >= 4 and np.sum(g[1] > 0) >= 4  # the case exercises w < 1
    w1 = 1.0 / (1.0 + kappa * g[0])
    skill = lr / m * (g[0].sum() + (w1 * g[1]).sum())  # one topic: tau plays no role
    np.testing.assert_allclose(out.skill, [skill], rtol=1e-5)
    np.testing.assert_allclose(out.signal, g.sum(1) / m, rtol=1e-5)
    memory = r * (1.0 - w1) * g[1]  # zero after step 0 (G = 0), then r (1 - w) g
    pool = model.make_pool(jax.random.fold_in(jax.random.key(0), 0), m, 1, model.as_arrays(params))
    d = np.asarray(pool.difficulty, np.float64)
    ref = np.mean(1.0 / (1.0 + np.exp(-(skill - d + memory))))
    assert out.train_accuracy[-1] == pytest.approx(ref, rel=1e-5)


# A pool of 64 prompts, 8 per step for 40 steps: each prompt is trained on 5 times on average.
SMALL_POOL = SimConfig(
    method="random",
    num_prompts=64,
    batch_size=8,
    num_rollouts=8,
    num_candidates=64,
    num_steps=40,
    num_clusters=1,
    num_heldout=256,
    memorisation=True,
)


def test_memorisation_on_a_revisited_pool():
    """With kappa = 2, r = 2: train-pool accuracy pulls away from held-out accuracy, and
    InSight's held-out gain over Random (large without memorisation: it concentrates on
    informative prompts) shrinks, because its revisits transfer less. 16 seeds, paired."""
    off = normal_params(2.0, 2.0, learning_rate=0.2, transfer=0.0)
    on = dataclasses.replace(off, memorise=2.0, memory_rate=2.0)
    seeds = np.arange(16)
    rnd = _np(simulate_many(SMALL_POOL, [off, on], seeds))
    ins = _np(simulate_many(dataclasses.replace(SMALL_POOL, method="insight"), [off, on], seeds))
    for res in (rnd, ins):
        gap = (res.train_accuracy - res.accuracy)[:, :, -1].mean(1)  # [off, on]
        assert abs(gap[0]) < 0.03  # no memorisation: pool and held-out differ by sampling only
        assert gap[1] > 0.12  # memorisation: the trained pool is far ahead
        np.testing.assert_array_equal(res.accuracy[0, :, 0], res.accuracy[1, :, 0])  # same start
        # Memorisation costs held-out accuracy for both selectors (revisits transfer less).
        assert res.accuracy[1, :, -1].mean() < res.accuracy[0, :, -1].mean() - 0.05
    diff = ins.accuracy[:, :, -1] - rnd.accuracy[:, :, -1]  # [off, on] x seeds, paired
    assert diff[0].mean() > 0.04  # without memorisation InSight wins clearly (+8 points)
    assert diff[1].mean() < diff[0].mean() - 0.04  # with it, most of the gain is gone
    assert (diff[0] > diff[1]).mean() >= 0.8  # on nearly every seed
    # InSight still finds more informative groups: the cost is transfer, not signal.
    assert ins.zero_var_frac[1].mean() < rnd.zero_var_frac[1].mean()
