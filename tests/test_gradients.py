"""Tests for gdjax.gradients: analytic least-squares gradients and compile caching."""

from __future__ import annotations

from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gdjax import losses
from gdjax.gradients import GradResult, value_and_grad

RNG = np.random.default_rng(1)


def _data(n=12, d=3, dtype=np.float32):
    x = RNG.normal(size=(n, d)).astype(dtype)
    y = RNG.normal(size=(n,)).astype(dtype)
    w = RNG.normal(size=(d,)).astype(dtype)
    return x, y, w


def _ls_grad(x, y, w, b=0.0, weights=None):
    """Analytic gradient of sum_i c_i (x_i w + b - y_i)^2 / 2 with sum c_i = 1."""
    x, y, w = (np.asarray(a, np.float64) for a in (x, y, w))
    r = x @ w + b - y
    c = np.full(len(y), 1.0 / len(y)) if weights is None else weights / weights.sum()
    return x.T @ (c * r), np.sum(c * r)


def mse(params, batch):
    x, y = batch
    return 0.5 * jnp.mean((x @ params["w"] - y) ** 2)


def test_least_squares_gradient_and_norm():
    x, y, w = _data()
    r = value_and_grad(mse)({"w": jnp.asarray(w)}, (x, y))
    assert isinstance(r, GradResult) and r.aux is None
    gw, _ = _ls_grad(x, y, w)
    np.testing.assert_allclose(r.grads["w"], gw, rtol=1e-5, atol=1e-6)
    res = x.astype(np.float64) @ w - y
    np.testing.assert_allclose(r.value, 0.5 * np.mean(res**2), rtol=1e-6)
    np.testing.assert_allclose(r.grad_norm, np.sqrt(np.sum(gw**2)), rtol=1e-5)
    assert r.grad_norm.dtype == np.float32 and r.grad_norm.shape == ()


def test_least_squares_gradient_float64(x64):
    x, y, w = _data(dtype=np.float64)
    r = value_and_grad(mse)({"w": jnp.asarray(w)}, (x, y))
    gw, _ = _ls_grad(x, y, w)
    assert r.grads["w"].dtype == np.float64 and r.grad_norm.dtype == np.float64
    np.testing.assert_allclose(r.grads["w"], gw, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(r.grad_norm, np.linalg.norm(gw), rtol=1e-12)


class Linear(NamedTuple):
    kernel: jax.Array
    bias: jax.Array


def test_nested_dict_pytree_with_make_loss_and_weights():
    """A flax-like {'params': {'Dense_0': {...}}} tree, with per-example weights."""
    x, y, w = _data()
    params = {
        "params": {
            "Dense_0": {"kernel": jnp.asarray(w[:, None]), "bias": jnp.array([0.4])}
        }
    }

    def apply(p, x):
        layer = p["params"]["Dense_0"]
        return x @ layer["kernel"] + layer["bias"][None, :]  # as flax reshapes it

    loss = losses.make_loss(apply, losses.squared_error)
    weights = RNG.uniform(0.0, 2.0, size=len(y)).astype(np.float32)
    weights[:3] = 0.0
    r = value_and_grad(loss)(params, (x, y), weights)
    chex.assert_trees_all_equal_structs(r.grads, params)
    gw, gb = _ls_grad(x, y, w, 0.4, weights.astype(np.float64))
    layer = r.grads["params"]["Dense_0"]
    np.testing.assert_allclose(layer["kernel"][:, 0], gw, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(layer["bias"][0], gb, rtol=1e-5, atol=1e-6)
    expected_norm = np.sqrt(np.sum(gw**2) + gb**2)
    np.testing.assert_allclose(r.grad_norm, expected_norm, rtol=1e-5)


def test_namedtuple_pytree_and_global_norm_over_all_leaves():
    x, y, w = _data()
    params = Linear(jnp.asarray(w), jnp.asarray(-0.2, jnp.float32))

    def loss(p, batch):
        x, y = batch
        return 0.5 * jnp.mean((x @ p.kernel + p.bias - y) ** 2)

    r = value_and_grad(loss)(params, (x, y))
    assert isinstance(r.grads, Linear)
    gw, gb = _ls_grad(x, y, w, -0.2)
    np.testing.assert_allclose(r.grads.kernel, gw, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(r.grads.bias, gb, rtol=1e-5, atol=1e-6)
    leaves = [np.asarray(g, np.float64) for g in jax.tree.leaves(r.grads)]
    np.testing.assert_allclose(
        r.grad_norm, np.sqrt(sum(np.sum(g**2) for g in leaves)), rtol=1e-6
    )
    assert abs(gb) > 1e-3  # the bias leaf contributes to the norm


def test_has_aux_returns_aux():
    x, y, w = _data()

    def loss(p, batch):
        x, y = batch
        r = x @ p["w"] - y
        return 0.5 * jnp.mean(r**2), {"residual": r}

    r = value_and_grad(loss, has_aux=True)({"w": jnp.asarray(w)}, (x, y))
    np.testing.assert_allclose(r.aux["residual"], x @ w - y, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(r.grads["w"], _ls_grad(x, y, w)[0], rtol=1e-5, atol=1e-6)


def test_jit_vs_no_jit():
    x, y, w = _data()
    vg = value_and_grad(mse)
    params = {"w": jnp.asarray(w)}
    jitted = vg(params, (x, y))
    with jax.disable_jit():
        eager = vg(params, (x, y))
    chex.assert_trees_all_close(jitted, eager, rtol=1e-6, atol=1e-6)


def test_usable_inside_jit_and_scan():
    x, y, w = _data()
    vg = value_and_grad(mse)

    @jax.jit
    def descend(params):
        def step(p, _):
            r = vg(p, (x, y))
            return jax.tree.map(lambda a, g: a - 0.1 * g, p, r.grads), r.value

        return jax.lax.scan(step, params, length=3)

    params = {"w": jnp.asarray(w)}
    final, values = descend(params)
    p = params
    for _ in range(3):
        p = jax.tree.map(lambda a, g: a - 0.1 * g, p, vg(p, (x, y)).grads)
    np.testing.assert_allclose(final["w"], p["w"], rtol=1e-5, atol=1e-6)
    assert values[2] < values[0]


def test_same_loss_same_function_no_recompile(compiles):
    x, y, w = _data()
    params = {"w": jnp.asarray(w)}

    def loss(p, batch):  # a fresh function: nothing cached for it yet
        return mse(p, batch)

    with compiles() as first:
        value_and_grad(loss)(params, (x, y))
    assert first.count >= 1
    assert value_and_grad(loss) is value_and_grad(loss)
    assert value_and_grad(loss, has_aux=False) is not value_and_grad(
        lambda p, b: (loss(p, b), None), has_aux=True
    )
    with compiles() as again:
        r = value_and_grad(loss)(params, (x, y))
        r2 = value_and_grad(loss)(params, (x + 1.0, y))
    assert again.count == 0
    assert float(r2.value) != float(r.value)


def test_non_scalar_loss_raises_before_compiling(compiles):
    x, y, w = _data()
    params = {"w": jnp.asarray(w)}
    with compiles() as c:
        with pytest.raises(TypeError, match=r"must return a scalar, got shape \(12,\)"):
            value_and_grad(lambda p, b: b[0] @ p["w"] - b[1])(params, (x, y))
        with pytest.raises(TypeError, match="has_aux=True"):
            value_and_grad(lambda p, b: (mse(p, b), 1.0))(params, (x, y))
        with pytest.raises(TypeError, match=r"must return \(value, aux\)"):
            value_and_grad(mse, has_aux=True)(params, (x, y))
    assert c.count == 0


def test_bad_params_and_loss_raise_before_compiling(compiles):
    x, y, w = _data()
    int_params = {"w": jnp.asarray(np.arange(3))}
    with compiles() as c:
        with pytest.raises(TypeError, match=r"params\['w'\] must have a floating"):
            value_and_grad(mse)(int_params, (x, y))
        with pytest.raises(ValueError, match="does not depend on params"):
            value_and_grad(lambda p, b: jnp.mean(b[1]))({"w": jnp.asarray(w)}, (x, y))
        with pytest.raises(TypeError, match="loss must be callable"):
            value_and_grad("mse")
        with pytest.raises(TypeError, match="has_aux must be True or False"):
            value_and_grad(mse, has_aux="yes")
    assert c.count == 0


def test_validation_reruns_for_new_shapes():
    x, y, w = _data()
    vg = value_and_grad(mse)
    vg({"w": jnp.asarray(w)}, (x, y))
    with pytest.raises(TypeError, match="floating"):
        vg({"w": jnp.asarray(w).astype(jnp.int32)}, (x, y))
