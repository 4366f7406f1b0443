"""Small apply functions ``apply(params, x) -> predictions`` for tests and examples.

Contract: each function is pure and traceable (it does no host-side checking, so
it can run inside ``jit``, ``grad``, ``vmap`` and ``lax.scan``), reads its
parameters in the layout that :mod:`gdjax.init` builds, and returns raw outputs
(regression values or logits): losses and link functions live in
:mod:`gdjax.losses`. ``x`` is one example of shape ``(d_in,)`` or a batch of
shape ``(..., d_in)``; biases are broadcast explicitly, so the functions work
under ``jax_numpy_rank_promotion="raise"``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

__all__ = ["linear", "mlp"]


def _affine(params: dict[str, ArrayLike], x: ArrayLike) -> jax.Array:
    y = jnp.matmul(x, params["w"])
    # Explicit broadcast: implicit rank promotion of b is refused in strict mode.
    return y + jnp.broadcast_to(params["b"], y.shape)


def linear(params: dict[str, ArrayLike], x: ArrayLike) -> jax.Array:
    r"""An affine map, the model of linear and logistic regression.

    .. math::
      f(x) = x W + b, \qquad W \in \mathbb{R}^{d_\text{in} \times d_\text{out}},
      \ b \in \mathbb{R}^{d_\text{out}},

    applied to each row of a batch.

    Args:
      params: ``{"w": (d_in, d_out), "b": (d_out,)}``, as made by
        :func:`gdjax.init.dense`.
      x: inputs of shape ``(..., d_in)``.

    Returns:
      Outputs of shape ``(..., d_out)``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from gdjax import models
      >>> params = {"w": jnp.array([[1.0], [2.0]]), "b": jnp.array([0.5])}
      >>> models.linear(params, jnp.array([[1.0, 1.0], [0.0, 3.0]]))
      Array([[3.5],
             [6.5]], dtype=float32)
    """
    return _affine(params, x)


def mlp(
    params: Sequence[dict[str, ArrayLike]],
    x: ArrayLike,
    activation: Callable[[jax.Array], jax.Array] = jax.nn.relu,
) -> jax.Array:
    r"""A multilayer perceptron: affine layers with an activation between them.

    For layers :math:`(W_1, b_1), \dots, (W_L, b_L)` and activation
    :math:`\sigma`,

    .. math::
      h_0 = x, \qquad h_\ell = \sigma(h_{\ell-1} W_\ell + b_\ell)
      \ (\ell < L), \qquad f(x) = h_{L-1} W_L + b_L.

    No activation follows the last layer: the outputs are logits (or regression
    values). With one layer this is :func:`linear`.

    Args:
      params: a list of ``{"w": (d_in, d_out), "b": (d_out,)}`` layers, as made by
        :func:`gdjax.init.mlp`.
      x: inputs of shape ``(..., d_0)``.
      activation: elementwise nonlinearity applied after every layer but the
        last; ``jax.nn.relu`` by default.

    Returns:
      Outputs of shape ``(..., d_L)``.

    Examples:
      >>> import jax
      >>> import jax.numpy as jnp
      >>> from gdjax import init, models
      >>> params = init.mlp(jax.random.key(0), [4, 8, 3])
      >>> models.mlp(params, jnp.ones((5, 4))).shape
      (5, 3)
      >>> hidden = {"w": jnp.array([[1.0, -1.0]]), "b": jnp.zeros(2)}
      >>> out = {"w": jnp.ones((2, 1)), "b": jnp.zeros(1)}
      >>> models.mlp([hidden, out], jnp.array([[2.0]]))  # relu([2, -2]) = [2, 0]
      Array([[2.]], dtype=float32)
    """
    if len(params) == 0:
        raise ValueError("params must hold at least one layer, got an empty list.")
    h = x
    for layer in params[:-1]:
        h = activation(_affine(layer, h))
    return _affine(params[-1], h)
