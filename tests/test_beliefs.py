"""Belief initialisation, the conjugate update with forgetting, and its input validation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

from insight_jax.selection import (
    Beliefs,
    apply_update,
    init_beliefs,
    successes_from_rewards,
    update_beliefs,
)


def _mesh_sharding():
    mesh = jax.make_mesh((8,), ("data",), axis_types=(AxisType.Auto,))
    return NamedSharding(mesh, P("data"))


def reference_update(alpha, beta, idx, s, k, lam, a0, b0):
    alpha, beta = alpha.astype(np.float64).copy(), beta.astype(np.float64).copy()
    alpha[idx] = lam * alpha[idx] + (1 - lam) * a0 + s
    beta[idx] = lam * beta[idx] + (1 - lam) * b0 + (k - s)
    return alpha, beta


def test_init_prior_and_padding(devices):
    b = init_beliefs(1003, 2.0, 3.0)
    assert b.alpha.dtype == np.float32 and b.alpha.shape == (1003,)
    np.testing.assert_array_equal(b.alpha, 2.0)
    np.testing.assert_array_equal(b.beta, 3.0)
    np.testing.assert_allclose(b.mean, 0.4)
    sb = init_beliefs(1003, 2.0, 3.0, sharding=_mesh_sharding())
    assert sb.num_items == 1003 and sb.alpha.shape == (1008,)  # padded to 8 shards
    assert sb.alpha.sharding.spec == P("data")
    assert {s.data.shape for s in sb.alpha.addressable_shards} == {(126,)}


@pytest.mark.parametrize(
    "bad, error",
    [
        (dict(num_items=0), ValueError),
        (dict(num_items=2.5), TypeError),
        (dict(num_items=10.0), TypeError),
        (dict(num_items=True), TypeError),
        (dict(num_items=float("nan")), TypeError),
        (dict(alpha0=0.0), ValueError),
        (dict(alpha0=True), TypeError),
        (dict(beta0=float("nan")), ValueError),
        (dict(beta0=-1), ValueError),
    ],
)
def test_init_rejects_bad_arguments(bad, error):
    kwargs = dict(num_items=10, alpha0=1.0, beta0=1.0) | bad
    ((name, value),) = bad.items()
    with pytest.raises(error, match=rf"{name} must be .*, got {value!r}"):
        init_beliefs(**kwargs)


def test_init_accepts_numpy_integers():
    b = init_beliefs(np.int64(5), np.float32(2.0), 3)
    assert b.num_items == 5 and type(b.num_items) is int
    np.testing.assert_array_equal(b.alpha, [2.0] * 5)


@pytest.mark.parametrize("sharded", [False, True])
def test_update_matches_reference(sharded, devices):
    seed = 11
    rng = np.random.default_rng(seed)
    n, k, a0, b0 = 777, 8, 1.0, 2.0
    b = init_beliefs(n, a0, b0, sharding=_mesh_sharding() if sharded else None)
    alpha, beta = np.asarray(b.alpha)[:n], np.asarray(b.beta)[:n]
    for lam in (1.0, 0.9, 0.5):
        idx = rng.choice(n, 100, replace=False)
        s = rng.integers(0, k + 1, 100).astype(np.float32)
        b = update_beliefs(b, idx, s, k, decay=lam)
        alpha, beta = reference_update(alpha, beta, idx, s, k, lam, a0, b0)
        msg = f"seed={seed} decay={lam}"
        np.testing.assert_allclose(np.asarray(b.alpha)[:n], alpha, rtol=1e-6, err_msg=msg)
        np.testing.assert_allclose(np.asarray(b.beta)[:n], beta, rtol=1e-6, err_msg=msg)
    if sharded:
        assert b.alpha.sharding.spec == P("data")
        np.testing.assert_array_equal(np.asarray(b.alpha)[n:], a0)  # padding untouched


def test_fractional_successes_update():
    b = update_beliefs(init_beliefs(4), [1, 3], [2.5, 0.0], 4)
    np.testing.assert_allclose(b.alpha, [1.0, 3.5, 1.0, 1.0])
    np.testing.assert_allclose(b.beta, [1.0, 2.5, 1.0, 5.0])


@pytest.mark.parametrize(
    "indices, successes, k, decay, message",
    [
        ([0, 10], [1, 1], 4, 1.0, r"indices\[1\] = 10 is out of range: allowed \[0, 10\)"),
        ([-1, 2], [1, 1], 4, 1.0, r"indices\[0\] = -1 is out of range: allowed \[0, 10\)"),
        ([[0, 1]], [[1, 1]], 4, 1.0, "indices must be 1-D"),
        ([1, 1], [1, 2], 4, 1.0, "duplicate"),
        ([0, 1], [5, 1], 4, 1.0, r"\[0, K=4\]"),
        ([0, 1], [-1, 1], 4, 1.0, r"\[0, K=4\]"),
        ([0, 1], [float("nan"), 1], 4, 1.0, "NaN"),
        ([0, 1], [1, 1], 4, 0.0, "decay"),
        ([0, 1], [1, 1], 4, 1.5, "decay"),
        ([0, 1], [1, 1, 1], 4, 1.0, "shape"),
        ([0.5, 1], [1, 1], 4, 1.0, "integers"),
        ([0, 1], [1, 1], 0, 1.0, "num_rollouts must be an integer >= 1, got 0"),
        ([0, 1], [1, 1], 4.0, 1.0, r"num_rollouts must be an integer >= 1, got 4\.0"),
        ([0, 1], [1, 1], True, 1.0, "num_rollouts must be an integer >= 1, got True"),
        ([0, 1], [1, 1], 4, True, r"decay \(lambda\) must be a number in \(0, 1\], got True"),
        ([0, 1], [1, 1], 4, float("nan"), r"decay \(lambda\) must be in \(0, 1\], got nan"),
    ],
)
def test_update_validation_raises_before_any_change(indices, successes, k, decay, message):
    b = update_beliefs(init_beliefs(10), [3], [2], 4)
    before = (np.asarray(b.alpha).copy(), np.asarray(b.beta).copy())
    with pytest.raises((ValueError, TypeError), match=message):
        update_beliefs(b, indices, successes, k, decay)
    # Nothing was donated or changed: the old state is intact and usable.
    np.testing.assert_array_equal(b.alpha, before[0])
    np.testing.assert_array_equal(b.beta, before[1])


def test_successes_from_rewards_rules():
    r = np.array([[1.0, 0.1, 0.0, 1.0], [0.1, 0.1, 0.0, 0.0]])
    np.testing.assert_array_equal(successes_from_rewards(r), [2, 0])
    np.testing.assert_array_equal(successes_from_rewards(r, threshold=0.1), [3, 2])
    np.testing.assert_allclose(successes_from_rewards(r, "fractional"), [2.1, 0.2], rtol=1e-6)
    with pytest.raises(ValueError, match="rule"):
        successes_from_rewards(r, "median")
    with pytest.raises(ValueError, match="NaN"):
        successes_from_rewards(np.array([[np.nan, 1.0]]))


@pytest.mark.parametrize("seed", [0, 1])
def test_apply_update_with_a_validity_mask(seed):
    """Rows marked invalid (padding) are dropped; valid rows follow the closed form."""
    rng = np.random.default_rng(seed)
    n, k, decay = 50, 8, 0.7
    alpha = rng.uniform(0.5, 20, n).astype(np.float32)
    beta = rng.uniform(0.5, 20, n).astype(np.float32)
    idx = rng.choice(n, 12, replace=False).astype(np.int32)
    s = rng.integers(0, k + 1, 12).astype(np.float32)
    valid = np.arange(12) < 7  # the last 5 rows are padding
    idx[~valid] = idx[0]  # padding may repeat any index: it must not touch it
    b = Beliefs(jnp.asarray(alpha), jnp.asarray(beta), 1.0, 2.0, n)
    out = apply_update(b, jnp.asarray(idx), jnp.asarray(s), k, decay, valid=jnp.asarray(valid))
    want_a, want_b = alpha.astype(np.float64), beta.astype(np.float64)
    for i, si in zip(idx[valid], s[valid], strict=True):
        want_a[i] = decay * alpha[i] + (1 - decay) * 1.0 + si
        want_b[i] = decay * beta[i] + (1 - decay) * 2.0 + (k - si)
    np.testing.assert_allclose(out.alpha, want_a, rtol=1e-6, err_msg=f"seed {seed}")
    np.testing.assert_allclose(out.beta, want_b, rtol=1e-6, err_msg=f"seed {seed}")
