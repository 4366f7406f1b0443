"""Tests for gdjax.losses against NumPy formulas."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gdjax import losses

RNG = np.random.default_rng(0)


def linear(params, x):
    return x @ params["w"] + params["b"]


def _np_logsumexp(z):
    m = z.max(axis=-1, keepdims=True)
    return (m + np.log(np.exp(z - m).sum(axis=-1, keepdims=True)))[..., 0]


# ----------------------------------------------------------------- per-example losses


@pytest.mark.parametrize(
    "pred_shape, target_shape",
    [((5,), (5,)), ((5, 1), (5,)), ((5,), (5, 1)), ((5, 3), (5, 3))],
)
def test_squared_error_matches_numpy(pred_shape, target_shape):
    p = RNG.normal(size=pred_shape).astype(np.float32)
    t = RNG.normal(size=target_shape).astype(np.float32)
    diff = p.reshape(5, -1) - t.reshape(5, -1)
    expected = 0.5 * (diff**2).sum(axis=1)
    got = losses.squared_error(p, t)
    assert got.shape == (5,)
    np.testing.assert_allclose(got, expected, rtol=1e-6)


@pytest.mark.parametrize(
    "pred_shape, target_shape", [((5,), (4,)), ((5, 2), (5,)), ((5, 1), (1, 5))]
)
def test_squared_error_refuses_broadcasting(pred_shape, target_shape):
    with pytest.raises(ValueError, match="squared_error: targets must have the shape"):
        losses.squared_error(jnp.zeros(pred_shape), jnp.zeros(target_shape))


def test_squared_error_refuses_scalar_and_int_predictions():
    with pytest.raises(ValueError, match="leading example axis"):
        losses.squared_error(jnp.float32(1.0), jnp.float32(0.0))
    with pytest.raises(TypeError, match="floating dtype"):
        losses.squared_error(jnp.arange(3), jnp.arange(3))


@pytest.mark.parametrize("delta", [0.5, 1.0, 2.0])
def test_huber_matches_numpy(delta):
    p = (3 * RNG.normal(size=(8, 2))).astype(np.float32)
    t = RNG.normal(size=(8, 2)).astype(np.float32)
    e = np.abs(p - t)
    elem = np.where(e <= delta, 0.5 * e**2, delta * (e - 0.5 * delta))
    expected = elem.sum(axis=1)
    assert np.any(e > delta) and np.any(e <= delta)  # both branches exercised
    got = losses.huber(p, t, delta=delta)
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    partial = functools.partial(losses.huber, delta=delta)
    np.testing.assert_allclose(partial(p, t), expected, rtol=1e-6)


@pytest.mark.parametrize("delta", [0.0, -1.0, float("nan")])
def test_huber_refuses_bad_delta(delta):
    with pytest.raises(ValueError, match="delta"):
        losses.huber(jnp.zeros(3), jnp.zeros(3), delta=delta)


def test_softmax_cross_entropy_matches_numpy():
    z = RNG.normal(size=(6, 4)).astype(np.float32)
    y = np.array([0, 3, 1, 2, 3, 0])
    expected = _np_logsumexp(z) - z[np.arange(6), y]
    ce = jax.jit(losses.softmax_cross_entropy)
    np.testing.assert_allclose(ce(z, y), expected, rtol=1e-6)
    # (n, 1) labels are accepted explicitly.
    np.testing.assert_allclose(ce(z, y[:, None]), expected, rtol=1e-6)


def test_softmax_cross_entropy_checks_labels_and_logits():
    with pytest.raises(TypeError, match="integer class indices"):
        losses.softmax_cross_entropy(jnp.zeros((3, 2)), jnp.zeros(3))
    with pytest.raises(ValueError, match=r"must have shape \(3,\)"):
        losses.softmax_cross_entropy(jnp.zeros((3, 2)), jnp.zeros(4, jnp.int32))
    with pytest.raises(ValueError, match="logistic"):
        losses.softmax_cross_entropy(jnp.zeros(3), jnp.zeros(3, jnp.int32))


@pytest.mark.parametrize("shape", [(7,), (7, 1)])
def test_logistic_matches_numpy(shape):
    z = (4 * RNG.normal(size=shape)).astype(np.float32)
    y = RNG.integers(0, 2, size=7)
    zf = z.reshape(7)
    expected = np.log1p(np.exp(-np.abs(zf))) + np.maximum(zf, 0) - y * zf
    got = jax.jit(losses.logistic)(z, y)
    assert got.shape == (7,)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape", [(7,), (7, 1)])
def test_hinge_matches_numpy(shape):
    s = RNG.normal(size=shape).astype(np.float32)
    y = np.array([0, 1, 1, 0, 1, 0, 0])
    expected = np.maximum(0.0, 1.0 - s.reshape(7) * (2 * y - 1))
    got = losses.hinge(s, y)
    assert got.shape == (7,)
    np.testing.assert_allclose(got, expected, rtol=1e-6)


# --------------------------------------------------------------------------- make_loss


def _problem(n=10, d=3, dtype=np.float32):
    x = RNG.normal(size=(n, d)).astype(dtype)
    y = RNG.normal(size=(n,)).astype(dtype)
    params = {
        "w": jnp.asarray(RNG.normal(size=(d,)), dtype),
        "b": jnp.asarray(0.3, dtype),
    }
    return params, x, y


def test_make_loss_mean_matches_numpy_and_batch_forms():
    params, x, y = _problem()
    loss = losses.make_loss(linear, losses.squared_error)
    r = x @ np.asarray(params["w"]) + float(params["b"]) - y
    expected = np.mean(0.5 * r**2)
    np.testing.assert_allclose(loss(params, (x, y)), expected, rtol=1e-6)
    np.testing.assert_allclose(loss(params, [x, y]), expected, rtol=1e-6)
    np.testing.assert_allclose(loss(params, {"x": x, "y": y}), expected, rtol=1e-6)
    assert loss.accepts_weights is True
    assert loss.apply is linear and loss.per_example is losses.squared_error


def test_make_loss_weighted_mean_matches_numpy():
    params, x, y = _problem()
    w = RNG.uniform(0.1, 3.0, size=10).astype(np.float32)
    loss = losses.make_loss(linear, losses.squared_error)
    r = x @ np.asarray(params["w"]) + float(params["b"]) - y
    expected = np.sum(w * 0.5 * r**2) / np.sum(w)
    np.testing.assert_allclose(loss(params, (x, y), w), expected, rtol=1e-6)
    assert abs(expected - np.mean(0.5 * r**2)) > 1e-3  # weights matter here


def test_zero_weights_remove_padding_exactly():
    params, x, y = _problem(n=7)
    loss = losses.make_loss(linear, losses.squared_error, l2=0.1)
    # Padding with far-away rows: if it leaked in, the loss would change a lot.
    xp = np.concatenate([x, np.full((3, 3), 50.0, np.float32)])
    yp = np.concatenate([y, np.full((3,), -50.0, np.float32)])
    w = np.concatenate([np.ones(7), np.zeros(3)]).astype(np.float32)
    vg = jax.jit(jax.value_and_grad(loss))
    want_v, want_g = vg(params, (x, y))
    got_v, got_g = vg(params, (xp, yp), w)
    np.testing.assert_allclose(got_v, want_v, rtol=1e-6)
    for k in params:
        np.testing.assert_allclose(got_g[k], want_g[k], rtol=1e-5, atol=1e-6)
    # The value ignores even non-finite padding.
    xn = xp.copy()
    xn[7:] = np.nan
    np.testing.assert_allclose(vg(params, (xn, yp), w)[0], want_v, rtol=1e-6)


def test_weights_shape_is_checked():
    params, x, y = _problem(n=5)
    loss = losses.make_loss(linear, losses.squared_error)
    with pytest.raises(ValueError, match=r"weights must have shape \(5,\)"):
        loss(params, (x, y), jnp.ones((5, 1)))


def test_l2_term_is_half_lambda_sum_of_squares():
    params, x, y = _problem()
    params = {"inner": params, "extra": [jnp.array([3.0, -2.0])]}

    def apply(p, x):
        return linear(p["inner"], x)

    base = losses.make_loss(apply, losses.squared_error)
    reg = losses.make_loss(apply, losses.squared_error, l2=0.3)
    leaves = [np.asarray(v, np.float64) for v in jax.tree.leaves(params)]
    expected = 0.15 * sum(float(np.sum(v**2)) for v in leaves)
    got = float(jax.jit(reg)(params, (x, y))) - float(jax.jit(base)(params, (x, y)))
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    assert expected > 1.0


def test_losses_are_values_and_l2_is_an_argument_of_the_run(compiles):
    """Equal arguments give equal, hashable losses (one compiled run); l2 is a
    leaf passed into the run, so a new value reuses the program and is applied."""
    import gdjax as gd

    a = losses.make_loss(linear, losses.squared_error, l2=0.1)
    assert a == losses.make_loss(linear, losses.squared_error, l2=0.1)
    assert hash(a) == hash(losses.make_loss(linear, losses.squared_error, l2=0.1))
    assert a != losses.make_loss(linear, losses.squared_error, l2=0.2)
    assert losses.accuracy(linear) == losses.accuracy(linear)

    def user(p, b):
        return jnp.mean((linear(p, b[0]) - b[1]) ** 2)

    assert losses.with_example_weights(user) == losses.with_example_weights(user)

    params, x, y = _problem(n=16)
    kw = dict(key=jax.random.key(0), epochs=5)
    gd.fit(a, params, (x, y), gd.sgd(0.1), **kw)
    with compiles() as c:
        same = gd.fit(
            losses.make_loss(linear, losses.squared_error, l2=0.1),
            params, (x, y), gd.sgd(0.1), **kw,
        )
        other = gd.fit(
            losses.make_loss(linear, losses.squared_error, l2=0.2),
            params, (x, y), gd.sgd(0.1), **kw,
        )
    assert c.count == 0
    oracle = gd.fit(  # l2 = 0.2 as a constant of a plain function: its own program
        lambda p, b: losses.make_loss(linear, losses.squared_error)(p, b)
        + 0.1 * sum(jnp.sum(v**2) for v in jax.tree.leaves(p)),
        params, (x, y), gd.sgd(0.1), **kw,
    )
    np.testing.assert_allclose(other.params["w"], oracle.params["w"], rtol=1e-5)
    assert not np.allclose(other.params["w"], same.params["w"], rtol=1e-4)


@pytest.mark.parametrize("l2", [-0.1, float("nan"), float("inf")])
def test_l2_must_be_nonnegative_and_finite(l2):
    with pytest.raises(ValueError, match="l2"):
        losses.make_loss(linear, losses.squared_error, l2=l2)


def test_l2_must_be_a_scalar_and_callables_checked():
    with pytest.raises(ValueError, match="l2 must be a scalar"):
        losses.make_loss(linear, losses.squared_error, l2=np.array([0.1, 0.2]))
    with pytest.raises(TypeError, match="apply must be callable"):
        losses.make_loss(3, losses.squared_error)
    with pytest.raises(TypeError, match="per_example must be callable"):
        losses.make_loss(linear, "mse")


def test_bad_batch_and_bad_per_example_shape_raise():
    params, x, y = _problem(n=4)
    loss = losses.make_loss(linear, losses.squared_error)
    with pytest.raises(TypeError, match="batch must be"):
        loss(params, (x, y, y))
    with pytest.raises(ValueError, match="missing"):
        loss(params, {"x": x, "target": y})
    bad = losses.make_loss(linear, lambda p, t: jnp.sum((p - t) ** 2))
    with pytest.raises(ValueError, match=r"one loss per example, shape \(4,\)"):
        bad(params, (x, y))


# ---------------------------------------------------------------------- check_data


def _classifier(k=3, d=2):
    params = {"w": jnp.asarray(RNG.normal(size=(d, k)), jnp.float32)}
    return params, (lambda p, x: x @ p["w"])


def test_check_data_out_of_range_class_label(compiles):
    params, apply = _classifier(k=3)
    loss = losses.make_loss(apply, losses.softmax_cross_entropy)
    x = np.ones((5, 2), np.float32)
    good = np.array([0, 1, 2, 0, 1])
    bad = np.array([0, 1, 2, 3, 1])
    neg = np.array([0, -1, 2, 0, 1])
    with compiles() as c:
        loss.check_data(params, (x, good))
        with pytest.raises(ValueError, match=r"data\[1\].*\[0, 3\).*got 3 at index 3"):
            loss.check_data(params, (x, bad))
        with pytest.raises(ValueError, match=r"got -1 at index 1"):
            loss.check_data(params, {"x": x, "y": neg})
    assert c.count == 0


def test_check_data_names_dict_labels(compiles):
    params, apply = _classifier(k=2)
    loss = losses.make_loss(apply, losses.softmax_cross_entropy)
    with compiles() as c:
        with pytest.raises(ValueError, match=r"data\['y'\].*got 2 at index 0"):
            loss.check_data(
                params, {"x": np.ones((2, 2), np.float32), "y": np.array([2, 0])}
            )
    assert c.count == 0


def test_check_data_non_integer_class_labels(compiles):
    params, apply = _classifier()
    loss = losses.make_loss(apply, losses.softmax_cross_entropy)
    x = np.ones((3, 2), np.float32)
    with compiles() as c:
        with pytest.raises(TypeError, match=r"data\[1\] must be integer.*float32"):
            loss.check_data(params, (x, np.array([0.0, 1.0, 2.0], np.float32)))
    assert c.count == 0


@pytest.mark.parametrize("per_example", [losses.logistic, losses.hinge])
def test_check_data_binary_labels(per_example, compiles):
    params = {"w": jnp.ones((2, 1), jnp.float32)}
    loss = losses.make_loss(lambda p, x: x @ p["w"], per_example)
    x = np.ones((4, 2), np.float32)
    with compiles() as c:
        loss.check_data(params, (x, np.array([0, 1, 1, 0])))
        loss.check_data(params, (x, np.array([[0.0], [1.0], [1.0], [0.0]])))
        with pytest.raises(ValueError, match=r"in \{0, 1\}, got -1 at index 2"):
            loss.check_data(params, (x, np.array([0, 1, -1, 0])))
        with pytest.raises(ValueError, match=r"got 0.5 at index 1"):
            loss.check_data(params, (x, np.array([[0.0], [0.5], [1.0], [0.0]])))
    assert c.count == 0


def test_check_data_sees_through_partial_and_shapes(compiles):
    params, apply = _classifier(k=3)
    ce = functools.partial(losses.softmax_cross_entropy)
    loss = losses.make_loss(apply, ce)
    x = np.ones((3, 2), np.float32)
    with compiles() as c:
        with pytest.raises(ValueError, match="got 5 at index 2"):
            loss.check_data(params, (x, np.array([0, 1, 5])))
        with pytest.raises(ValueError, match="same number of examples"):
            loss.check_data(params, (x, np.array([0, 1])))
        reg = losses.make_loss(apply, losses.squared_error)
        with pytest.raises(ValueError, match="squared_error: targets"):
            reg.check_data(params, (x, np.zeros(3, np.float32)))
    assert c.count == 0


# ---------------------------------------------------------------- with_example_weights


def _user_mse_l2(lam):
    def loss(params, batch):
        x, y = batch
        r = x @ params["w"] + params["b"] - y
        penalty = sum(jnp.sum(v**2) for v in jax.tree.leaves(params))
        return 0.5 * jnp.mean(r**2) + lam / 2 * penalty

    return loss


def _check_with_example_weights(dtype, rtol):
    params, x, y = _problem(n=9, dtype=dtype)
    w = np.concatenate([RNG.uniform(0.5, 2.0, 6), np.zeros(3)]).astype(dtype)
    user_loss = _user_mse_l2(0.2)
    user = losses.with_example_weights(user_loss)
    ref = losses.make_loss(linear, losses.squared_error, l2=0.2)

    @jax.jit  # one program: op-by-op dispatch would compile every op
    def run(params, x, y, w):
        got = jax.value_and_grad(user)(params, (x, y), w)
        want = jax.value_and_grad(ref)(params, (x, y), w)
        return got, want, user(params, (x, y)), user_loss(params, (x, y))

    (got, g_got), (want, g_want), unweighted, plain = run(params, x, y, w)
    assert got.dtype == dtype
    np.testing.assert_allclose(got, want, rtol=rtol)
    for k in params:
        np.testing.assert_allclose(g_got[k], g_want[k], rtol=10 * rtol, atol=rtol)
    # Without weights it is the user's loss itself.
    np.testing.assert_array_equal(unweighted, plain)


def test_with_example_weights_matches_make_loss_float32():
    _check_with_example_weights(np.float32, 1e-6)


def test_with_example_weights_matches_make_loss_float64(x64):
    _check_with_example_weights(np.float64, 1e-12)


def test_with_example_weights_passes_through_weighted_losses():
    params, x, y = _problem(n=5)
    loss = losses.make_loss(linear, losses.squared_error)
    wrapped = losses.with_example_weights(loss)
    w = np.array([1.0, 2.0, 0.0, 1.0, 3.0], np.float32)
    assert wrapped.accepts_weights
    np.testing.assert_array_equal(wrapped(params, (x, y), w), loss(params, (x, y), w))
    with pytest.raises(TypeError, match="loss must be callable"):
        losses.with_example_weights(None)


# ---------------------------------------------------------------------------- accuracy


def test_accuracy_multiclass_weighted():
    z = RNG.normal(size=(8, 4)).astype(np.float32)
    y = RNG.integers(0, 4, size=8)
    w = RNG.uniform(0, 1, size=8).astype(np.float32)
    acc = jax.jit(losses.accuracy(lambda p, x: x))
    correct = (z.argmax(1) == y).astype(np.float64)
    np.testing.assert_allclose(acc(None, (z, y)), correct.mean(), rtol=1e-6)
    np.testing.assert_allclose(
        acc(None, (z, y), w), (w * correct).sum() / w.sum(), rtol=1e-6
    )


@pytest.mark.parametrize("shape", [(6,), (6, 1)])
def test_accuracy_binary(shape):
    z = np.array([2.0, -1.0, 0.5, -0.2, 3.0, -4.0], np.float32).reshape(shape)
    y = np.array([1, 1, 0, 0, 1, 1])
    acc = losses.accuracy(lambda p, x: x)
    # correct: T, F, F, T, T, F
    np.testing.assert_allclose(acc(None, (z, y)), 0.5, rtol=1e-6)
    w = np.array([1, 0, 0, 1, 1, 0], np.float32)
    np.testing.assert_allclose(acc(None, {"x": z, "y": y}, w), 1.0, rtol=1e-6)
