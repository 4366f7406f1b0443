"""Tests of gdjax.models against a NumPy forward pass.

Tolerances: float32 results match a float64 NumPy oracle to rtol 1e-5 (a few
ulps through two or three matmuls of width <= 9); float64 results to 1e-12.
jit vs no-jit is not bitwise in general (FACTS.md), so it is compared to 1e-6.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gdjax import init, models

WIDTHS = [6, 9, 4]


def _np_mlp(params, x, activation):
    h = np.asarray(x, np.float64)
    layers = [
        (np.asarray(p["w"], np.float64), np.asarray(p["b"], np.float64)) for p in params
    ]
    for w, b in layers[:-1]:
        h = activation(h @ w + b)
    w, b = layers[-1]
    return h @ w + b


def _random_layers(rng, widths, dtype=np.float32):
    return [
        {
            "w": jnp.asarray(rng.normal(size=(a, b)), dtype),
            "b": jnp.asarray(rng.normal(size=(b,)), dtype),
        }
        for a, b in zip(widths[:-1], widths[1:], strict=True)
    ]


def test_linear_matches_numpy():
    rng = np.random.RandomState(0)
    (params,) = _random_layers(rng, [6, 4])
    x = rng.normal(size=(5, 6)).astype(np.float32)
    out = models.linear(params, x)
    assert out.shape == (5, 4) and out.dtype == jnp.float32
    expected = x.astype(np.float64) @ np.asarray(params["w"], np.float64) + np.asarray(
        params["b"], np.float64
    )
    np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-5, atol=1e-6)


def test_linear_single_example_and_extra_batch_axes():
    rng = np.random.RandomState(1)
    (params,) = _random_layers(rng, [6, 4])
    x = rng.normal(size=(2, 3, 6)).astype(np.float32)
    batched = np.asarray(models.linear(params, x))
    assert batched.shape == (2, 3, 4)
    single = np.asarray(models.linear(params, x[1, 2]))
    assert single.shape == (4,)
    np.testing.assert_allclose(single, batched[1, 2], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "activation,np_activation",
    [(jax.nn.relu, lambda h: np.maximum(h, 0.0)), (jnp.tanh, np.tanh)],
    ids=["relu", "tanh"],
)
def test_mlp_matches_numpy(activation, np_activation):
    rng = np.random.RandomState(2)
    params = _random_layers(rng, WIDTHS)
    x = rng.normal(size=(7, WIDTHS[0])).astype(np.float32)
    out = models.mlp(params, x, activation)
    assert out.shape == (7, WIDTHS[-1]) and out.dtype == jnp.float32
    expected = _np_mlp(params, x, np_activation)
    np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-5, atol=1e-5)


def test_mlp_default_activation_is_relu_and_last_layer_is_linear():
    rng = np.random.RandomState(3)
    params = _random_layers(rng, WIDTHS)
    x = rng.normal(size=(7, WIDTHS[0])).astype(np.float32)
    out = np.asarray(models.mlp(params, x))
    np.testing.assert_allclose(
        out, _np_mlp(params, x, lambda h: np.maximum(h, 0.0)), rtol=1e-5, atol=1e-5
    )
    # Logits: an activation after the last layer would have zeroed these.
    assert (out < 0).any()


def test_mlp_with_one_layer_is_linear():
    rng = np.random.RandomState(4)
    params = _random_layers(rng, [6, 4])
    x = rng.normal(size=(5, 6)).astype(np.float32)
    assert np.array_equal(
        np.asarray(models.mlp(params, x)), np.asarray(models.linear(params[0], x))
    )


def test_mlp_on_init_params_and_jit_equals_no_jit():
    params = init.mlp(jax.random.key(0), WIDTHS)
    x = np.random.RandomState(5).normal(size=(7, WIDTHS[0])).astype(np.float32)
    eager = np.asarray(models.mlp(params, x))
    jitted = np.asarray(jax.jit(models.mlp)(params, x))
    np.testing.assert_allclose(jitted, eager, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(
        eager, _np_mlp(params, x, lambda h: np.maximum(h, 0.0)), rtol=1e-5, atol=1e-5
    )
    lin = init.dense(jax.random.key(1), 6, 9)
    np.testing.assert_allclose(
        np.asarray(jax.jit(models.linear)(lin, x)),
        np.asarray(models.linear(lin, x)),
        rtol=1e-6,
        atol=1e-6,
    )


def test_vmap_over_examples_equals_batch():
    params = init.mlp(jax.random.key(0), WIDTHS)
    x = np.random.RandomState(6).normal(size=(7, WIDTHS[0])).astype(np.float32)
    batched = np.asarray(models.mlp(params, x))
    mapped = np.asarray(jax.vmap(models.mlp, in_axes=(None, 0))(params, x))
    np.testing.assert_allclose(mapped, batched, rtol=1e-6, atol=1e-6)


def test_linear_gradient_is_closed_form():
    # d/dW sum(x W + b) = x^T 1, d/db = n 1.
    rng = np.random.RandomState(7)
    (params,) = _random_layers(rng, [6, 4])
    x = rng.normal(size=(5, 6)).astype(np.float32)
    grads = jax.grad(lambda p: jnp.sum(models.linear(p, x)))(params)
    np.testing.assert_allclose(
        np.asarray(grads["w"]), np.tile(x.sum(0)[:, None], (1, 4)), rtol=1e-5
    )
    np.testing.assert_allclose(np.asarray(grads["b"]), np.full(4, 5.0))


def test_float64(x64):
    del x64
    rng = np.random.RandomState(8)
    params = _random_layers(rng, WIDTHS, np.float64)
    x = rng.normal(size=(7, WIDTHS[0]))
    out = models.mlp(params, x, jnp.tanh)
    assert out.dtype == jnp.float64
    np.testing.assert_allclose(
        np.asarray(out), _np_mlp(params, x, np.tanh), rtol=1e-12, atol=1e-12
    )


def test_mlp_without_layers_raises():
    with pytest.raises(ValueError, match="params must hold at least one layer"):
        models.mlp([], np.ones((2, 3), np.float32))
