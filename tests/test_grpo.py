"""Exact-value tests of the GRPO math against numbers worked out by hand (float64 numpy/math)."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from insight_jax.rl import grpo

SQRT2 = math.sqrt(2.0)


# ----------------------------------------------------------------------------------- advantages


def test_group_advantages_hand_computed():
    # Row 0: mean 1/3, population std sqrt(((2/3)^2 + 2 (1/3)^2) / 3) = sqrt(2)/3,
    #   so A = (2/3) / (sqrt(2)/3) = sqrt(2) and (-1/3) / (sqrt(2)/3) = -1/sqrt(2).
    # Row 1: all equal -> exactly 0.
    rewards = jnp.array([[1.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    adv = grpo.group_advantages(rewards, eps=0.0)
    expected = np.array([[SQRT2, -1 / SQRT2, -1 / SQRT2], [0.0, 0.0, 0.0]])
    np.testing.assert_allclose(np.asarray(adv), expected, rtol=1e-6)
    # With eps the denominator is sqrt(2)/3 + eps.
    adv = grpo.group_advantages(rewards, eps=1e-6)
    den = SQRT2 / 3 + 1e-6
    np.testing.assert_allclose(
        np.asarray(adv)[0], [(2 / 3) / den, (-1 / 3) / den, (-1 / 3) / den], rtol=1e-6
    )
    assert np.all(np.asarray(adv)[1] == 0.0)


def test_group_advantages_dr_grpo_no_std():
    rewards = jnp.array([[1.0, 0.1, 0.0, 0.1]])  # Countdown-style 1 / 0.1 / 0 rewards
    adv = grpo.group_advantages(rewards, normalize_std=False)
    mean = (1.0 + 0.1 + 0.0 + 0.1) / 4
    np.testing.assert_allclose(
        np.asarray(adv)[0], [1 - mean, 0.1 - mean, -mean, 0.1 - mean], atol=1e-7
    )


def test_zero_variance_group_is_exactly_zero():
    # sum([0.1]*3)/3 != 0.1 in floating point; the result must still be exactly 0.
    rewards = jnp.array([[0.1, 0.1, 0.1], [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    for normalize_std in (True, False):
        adv = grpo.group_advantages(rewards, normalize_std=normalize_std)
        assert np.all(np.asarray(adv) == 0.0)


# --------------------------------------------------------------------------------- policy loss


def _logprobs_for_ratios(ratios, old=-1.0):
    ratios = np.asarray(ratios, np.float64)
    old_lp = np.full(ratios.shape, old)
    return jnp.asarray(old_lp + np.log(ratios), jnp.float32), jnp.asarray(old_lp, jnp.float32)


def test_policy_loss_clip_cases_hand_computed():
    # One token per sequence; clip range [0.8, 1.28].
    ratios = [[1.5], [0.5], [0.5], [1.5], [1.1]]
    adv = jnp.array([1.0, 1.0, -1.0, -1.0, 2.0])
    # -min(rho A, clip(rho) A):
    #   A=+1 rho=1.5: -min(1.5, 1.28) = -1.28   (upper clip active)
    #   A=+1 rho=0.5: -min(0.5, 0.8)  = -0.5    (no clip: PPO keeps pushing a lowered good token)
    #   A=-1 rho=0.5: -min(-0.5,-0.8) = 0.8     (lower clip active)
    #   A=-1 rho=1.5: -min(-1.5,-1.28)= 1.5     (no clip on the pessimistic side)
    #   A=+2 rho=1.1: -2.2
    per_token = np.array([-1.28, -0.5, 0.8, 1.5, -2.2])
    lp, old = _logprobs_for_ratios(ratios)
    mask = jnp.ones((5, 1))
    loss, aux = grpo.policy_loss(lp, old, adv, mask, clip_low=0.2, clip_high=0.28)
    np.testing.assert_allclose(float(loss), per_token.mean(), rtol=1e-6)
    np.testing.assert_allclose(float(aux["clip_frac_high"]), 1 / 5, rtol=1e-6)
    np.testing.assert_allclose(float(aux["clip_frac_low"]), 1 / 5, rtol=1e-6)
    r = np.array([1.5, 0.5, 0.5, 1.5, 1.1])
    np.testing.assert_allclose(float(aux["ratio_mean"]), r.mean(), rtol=1e-6)
    np.testing.assert_allclose(float(aux["approx_kl"]), np.mean(r - 1 - np.log(r)), rtol=1e-5)

    # d l_b / d logp_b = -A_b rho_b where unclipped, 0 where the clip is active; / 5 tokens.
    grad = jax.grad(lambda x: grpo.policy_loss(x, old, adv, mask)[0])(lp)
    expected = np.array([0.0, -1.0 * 0.5, 0.0, 1.0 * 1.5, -2.0 * 1.1]) / 5
    np.testing.assert_allclose(np.asarray(grad)[:, 0], expected, rtol=1e-5, atol=1e-8)


def test_gradient_zero_outside_trust_region():
    # A > 0 beyond 1 + clip_high and A < 0 below 1 - clip_low: exactly zero gradient.
    lp, old = _logprobs_for_ratios([[1.3, 2.0, 5.0], [0.79, 0.5, 0.1]])
    adv = jnp.array([3.0, -0.7])
    grad = jax.grad(lambda x: grpo.policy_loss(x, old, adv, jnp.ones((2, 3)))[0])(lp)
    assert np.all(np.asarray(grad) == 0.0)
    # ...and nonzero just inside.
    lp, old = _logprobs_for_ratios([[1.27], [0.81]])
    grad = jax.grad(lambda x: grpo.policy_loss(x, old, adv, jnp.ones((2, 1)))[0])(lp)
    np.testing.assert_allclose(np.asarray(grad)[:, 0], [-3.0 * 1.27 / 2, 0.7 * 0.81 / 2], rtol=1e-5)


def test_token_mean_vs_sequence_mean_on_ragged_mask():
    # ratio 1 everywhere, so per-token loss = -A_b: row 0 -> 1.0 (3 tokens), row 1 -> 3.0 (1 token),
    # row 2 is pure padding (with -inf log-probs that must not leak NaN).
    lp = jnp.array([[-1.0, -2.0, -0.5], [-0.3, -jnp.inf, -jnp.inf], [-jnp.inf] * 3])
    mask = jnp.array([[1, 1, 1], [1, 0, 0], [0, 0, 0]], jnp.float32)
    adv = jnp.array([-1.0, -3.0, 5.0])
    # token mean: (1+1+1+3)/4 = 1.5; sequence mean over non-empty rows: (1 + 3)/2 = 2.0;
    # token_sum_norm: 6 / (3*3).
    for agg, want in [("token_mean", 1.5), ("sequence_mean", 2.0), ("token_sum_norm", 6 / 9)]:
        loss, aux = grpo.policy_loss(lp, lp, adv, mask, aggregation=agg)
        np.testing.assert_allclose(float(loss), want, rtol=1e-6)
        assert np.isfinite(float(aux["approx_kl"]))
        g = jax.grad(lambda x, agg=agg: grpo.policy_loss(x, lp, adv, mask, aggregation=agg)[0])(lp)
        assert np.all(np.isfinite(np.asarray(g)))
        assert np.all(np.asarray(g)[np.asarray(mask) == 0] == 0.0)


def test_aggregations_hand_computed():
    v = jnp.array([[1.0, 2.0, 3.0, 4.0], [10.0, 20.0, 0.0, 0.0]])
    m = jnp.array([[1, 1, 1, 0], [1, 1, 0, 0]])
    np.testing.assert_allclose(float(grpo.token_mean(v, m)), (1 + 2 + 3 + 10 + 20) / 5, rtol=1e-6)
    np.testing.assert_allclose(float(grpo.sequence_mean(v, m)), (2.0 + 15.0) / 2, rtol=1e-6)
    np.testing.assert_allclose(float(grpo.token_sum_norm(v, m)), 36 / 8, rtol=1e-6)
    assert float(grpo.token_mean(v, jnp.zeros_like(m))) == 0.0
    assert float(grpo.sequence_mean(v, jnp.zeros_like(m))) == 0.0
    with pytest.raises(KeyError, match="unknown aggregation"):
        grpo.get_aggregation("nope")


# ---------------------------------------------------------------------------- KL and entropy


def test_kl_estimators_exact():
    lp = jnp.array([[-1.0, -2.0, -7.0]])
    ref = jnp.array([[-1.5, -1.0, 0.0]])
    mask = jnp.array([[1, 1, 0]])
    d = [-0.5, 1.0]  # ref - logp on the valid tokens
    k3 = [math.exp(x) - x - 1 for x in d]  # 0.10653066, 0.71828183
    np.testing.assert_allclose(float(grpo.kl_penalty(lp, ref, mask)), np.mean(k3), rtol=1e-6)
    np.testing.assert_allclose(
        float(grpo.kl_penalty(lp, ref, mask, "k1")), np.mean([-x for x in d]), rtol=1e-6
    )
    np.testing.assert_allclose(
        float(grpo.kl_penalty(lp, ref, mask, "k2")), np.mean([x * x / 2 for x in d]), rtol=1e-6
    )
    # k3 is 0 iff the policies agree; its gradient there is 0 too.
    assert float(grpo.kl_penalty(lp, lp, jnp.ones((1, 3)))) == 0.0
    # d/dlogp of k3 = 1 - exp(ref - logp); token mean over 2 valid tokens.
    g = jax.grad(lambda x: grpo.kl_penalty(x, ref, mask))(lp)
    np.testing.assert_allclose(
        np.asarray(g)[0], [(1 - math.exp(-0.5)) / 2, (1 - math.exp(1.0)) / 2, 0.0], rtol=1e-6
    )


def test_entropy_bonus_aggregated_like_loss():
    ent = jnp.array([[0.5, 1.5, 9.0], [2.0, jnp.nan, jnp.nan]])
    mask = jnp.array([[1, 1, 0], [1, 0, 0]])
    np.testing.assert_allclose(float(grpo.entropy_bonus(ent, mask)), 4.0 / 3, rtol=1e-6)
    np.testing.assert_allclose(
        float(grpo.entropy_bonus(ent, mask, aggregation="sequence_mean")), (1.0 + 2.0) / 2
    )


# ------------------------------------------------------------------------------- the objective


def _batch():
    key = jax.random.key(0)
    k1, k2, k3, k4 = jax.random.split(key, 4)
    b, t = 4, 5
    old = -jax.random.uniform(k1, (b, t), minval=0.1, maxval=3.0)
    lp = old + 0.3 * jax.random.normal(k2, (b, t))
    ref = old + 0.2 * jax.random.normal(k3, (b, t))
    ent = jax.random.uniform(k4, (b, t))
    mask = jnp.array([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]])
    adv = grpo.group_advantages(jnp.array([[1.0, 0.0], [0.1, 1.0]])).reshape(-1)
    return lp, old, adv, mask, ref, ent


def _cfg(**overrides):
    """A GRPOConfig with the paper's settings (METHOD.md), overridden where a test says."""
    base = dict(
        clip_low=0.2,
        clip_high=0.28,
        aggregation="token_mean",
        kl_coef=0.0,
        kl_kind="k3",
        entropy_coef=0.001,
        normalize_std=True,
        num_minibatches=1,
        num_ppo_epochs=1,
    )
    return grpo.GRPOConfig(**(base | overrides))


def test_objective_combines_terms():
    lp, old, adv, mask, ref, ent = _batch()
    cfg = _cfg(kl_coef=0.05, entropy_coef=0.01, aggregation="sequence_mean")
    loss, aux = grpo.grpo_objective(lp, old, adv, mask, cfg, ref_logprobs=ref, entropy=ent)
    pg, _ = grpo.policy_loss(lp, old, adv, mask, aggregation="sequence_mean")
    kl = grpo.kl_penalty(lp, ref, mask, aggregation="sequence_mean")
    h = grpo.entropy_bonus(ent, mask, aggregation="sequence_mean")
    np.testing.assert_allclose(float(loss), float(pg + 0.05 * kl - 0.01 * h), rtol=1e-6)
    for k in ("policy_loss", "kl", "entropy", "clip_frac_low", "clip_frac_high", "approx_kl"):
        assert k in aux
    with pytest.raises(ValueError, match="ref_logprobs"):
        grpo.grpo_objective(lp, old, adv, mask, cfg, entropy=ent)
    with pytest.raises(ValueError, match="entropy"):
        grpo.grpo_objective(lp, old, adv, mask, cfg, ref_logprobs=ref)
    # The paper's settings: no KL term, so ref_logprobs is not needed.
    loss, aux = grpo.grpo_objective(lp, old, adv, mask, _cfg(), entropy=ent)
    assert "kl" not in aux


def test_zero_variance_group_gives_zero_gradient():
    # Group 0 all correct, group 1 informative; rows 0, 1 belong to group 0.
    adv = grpo.group_advantages(jnp.array([[1.0, 1.0], [0.0, 1.0]])).reshape(-1)
    lp, old, _, mask, _, _ = _batch()
    cfg = _cfg(entropy_coef=0.0)
    g = jax.grad(lambda x: grpo.grpo_objective(x, old, adv, mask, cfg)[0])(lp)
    g = np.asarray(g)
    assert np.all(g[:2] == 0.0)
    assert np.any(g[2:] != 0.0)


def test_config_validation():
    with pytest.raises(KeyError):
        _cfg(aggregation="bogus")
    with pytest.raises(KeyError):
        _cfg(kl_kind="k9")
    with pytest.raises(ValueError):
        _cfg(clip_low=1.5)
    hash(_cfg())  # static jit argument


def test_objective_jits_once():
    lp, old, adv, mask, _, ent = _batch()
    cfg = _cfg()

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(lp, old, adv, mask, ent):
        return jax.value_and_grad(
            lambda x: grpo.grpo_objective(x, old, adv, mask, cfg, entropy=ent), has_aux=True
        )(lp)

    chex.clear_trace_counter()
    step(lp, old, adv, mask, ent)
    (loss2, _), _ = step(lp + 0.1, old, adv * 2, mask, ent)  # new values, same shapes
    assert np.isfinite(float(loss2))


# ------------------------------------------------------------------------ minibatches, optimizer


def test_minibatch_indices():
    idx = grpo.minibatch_indices(jax.random.key(3), 12, 4)
    assert idx.shape == (4, 3) and idx.dtype == jnp.int32
    assert sorted(np.asarray(idx).ravel().tolist()) == list(range(12))
    other = grpo.minibatch_indices(jax.random.key(4), 12, 4)
    assert not np.array_equal(np.asarray(idx), np.asarray(other))
    with pytest.raises(ValueError, match="divisible"):
        grpo.minibatch_indices(jax.random.key(3), 10, 4)
    jitted = jax.jit(grpo.minibatch_indices, static_argnums=(1, 2))
    np.testing.assert_array_equal(jitted(jax.random.key(3), 12, 4), idx)


def test_optimizer_clip_then_adamw_hand_computed():
    lr, b1, b2, eps = 0.1, 0.9, 0.999, 1e-8
    opt = grpo.make_optimizer(lr, weight_decay=0.0, b1=b1, b2=b2, grad_clip=1.0)
    params = jnp.array([2.0])
    state = opt.init(params)
    m = v = 0.0
    p = 2.0
    for t, g in enumerate([10.0, 0.5], start=1):
        updates, state = opt.update(jnp.array([g]), state, params)
        params = params + updates
        g = g * min(1.0, 1.0 / abs(g))  # clip_by_global_norm(1.0) first
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        p = p - lr * (m / (1 - b1**t)) / (math.sqrt(v / (1 - b2**t)) + eps)
        np.testing.assert_allclose(float(params[0]), p, rtol=1e-6)


def test_optimizer_weight_decay_and_schedule():
    # Zero gradient: Adam's step is 0, only decoupled decay -lr * wd * p remains.
    opt = grpo.make_optimizer(0.01, weight_decay=0.1, grad_clip=1.0)
    params = {"w": jnp.array([3.0, -1.0])}
    updates, _ = opt.update({"w": jnp.zeros(2)}, opt.init(params), params)
    np.testing.assert_allclose(np.asarray(updates["w"]), [-0.01 * 0.1 * 3.0, 0.01 * 0.1], rtol=1e-6)

    sched = grpo.make_lr_schedule(1.0, warmup_steps=4)
    np.testing.assert_allclose([float(sched(s)) for s in (0, 2, 4, 100)], [0.0, 0.5, 1.0, 1.0])
    sched = grpo.make_lr_schedule(1.0, warmup_steps=2, total_steps=10)
    assert float(sched(0)) == 0.0 and float(sched(2)) == pytest.approx(1.0)
    assert float(sched(10)) == pytest.approx(0.0, abs=1e-7)
    assert float(grpo.make_lr_schedule(0.3)(1000)) == pytest.approx(0.3)
