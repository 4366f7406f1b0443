r"""Value, gradient and gradient norm of a loss, compiled once per loss.

The contract, before any code:

* :func:`value_and_grad` ``(loss)`` returns ``fn(params, batch, *args) ->
  GradResult``: the loss value, its gradient with respect to ``params`` (a
  pytree of the same structure, from ``jax.value_and_grad``), the gradient's
  global L2 norm (``optax.tree.norm``) and the auxiliary output when
  ``has_aux=True``.
* The same ``(loss, has_aux)`` gives the same function, and so the same compiled
  program: a second call of ``value_and_grad(loss)`` does not recompile.
* The first call for each structure and shape of ``(params, batch, *args)``
  checks on the host, compiling nothing, that ``params`` are floating-point
  arrays and that ``loss`` traces to a float scalar that depends on them; later
  calls with the same structure cost one dictionary lookup before the compiled
  call.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import numpy as np
import optax

from gdjax import _validate
from gdjax._typing import Batch, Params


class GradResult(NamedTuple):
    """What :func:`value_and_grad` returns.

    Attributes:
      value: the scalar loss, in the loss's dtype.
      grads: the gradient, a pytree with the structure and dtypes of ``params``.
      grad_norm: the global L2 norm of ``grads`` over all leaves, a scalar.
      aux: the loss's auxiliary output with ``has_aux=True``, else None.
    """

    value: jax.Array
    grads: Params
    grad_norm: jax.Array
    aux: Any = None


def _build(loss: Callable[..., Any], has_aux: bool) -> Callable[..., GradResult]:
    grad_fn = jax.value_and_grad(loss, has_aux=has_aux)

    def compute(params: Params, batch: Batch, *args: Any) -> GradResult:
        if has_aux:
            (value, aux), grads = grad_fn(params, batch, *args)
        else:
            (value, grads), aux = grad_fn(params, batch, *args), None
        return GradResult(value, grads, optax.tree.norm(grads), aux)

    compiled = jax.jit(compute)

    def check(params: Params, batch: Batch, args: tuple) -> bool:
        _validate.check_params(params)
        _validate.check_loss(
            lambda p, b: loss(p, b, *args), params, batch, has_aux=has_aux
        )
        return True

    def fn(params: Params, batch: Batch, *args: Any) -> GradResult:
        # Traced checks once per signature (the memo all of gdjax shares).
        _validate.memo(
            ("value_and_grad", loss, has_aux, _validate.signature(params, batch, args)),
            lambda: check(params, batch, args),
        )
        return compiled(params, batch, *args)

    name = getattr(loss, "__name__", type(loss).__name__)
    fn.__name__ = fn.__qualname__ = f"value_and_grad({name})"
    fn.__doc__ = (
        f"``{name}``'s value, gradient and gradient norm as a GradResult "
        "(gdjax.gradients.value_and_grad)."
    )
    fn.loss = loss
    fn.has_aux = has_aux
    fn.compiled = compiled
    return fn


@functools.lru_cache(maxsize=128)
def _cached(loss: Callable[..., Any], has_aux: bool) -> Callable[..., GradResult]:
    return _build(loss, has_aux)


def value_and_grad(
    loss: Callable[..., Any], *, has_aux: bool = False
) -> Callable[..., GradResult]:
    r"""A compiled function giving a loss's value, gradient and gradient norm.

    .. math::
        g = \nabla_\theta L(\theta; B), \qquad
        \lVert g \rVert_2 = \Big(\sum_{\text{leaves } \ell} \sum_j
          g_{\ell j}^2\Big)^{1/2}

    computed by ``jax.value_and_grad`` and ``optax.tree.norm`` in one ``jax.jit``
    program. Functions are cached per ``(loss, has_aux)`` (the last 128 hashable
    losses), so asking again for the same ``loss`` returns the same function and
    reuses its compiled program; pass the same function object, not a fresh
    ``lambda`` each time.

    The first call for each structure and shape of the inputs checks, without
    compiling, that every leaf of ``params`` is a floating-point array and that
    ``loss`` returns a float scalar (``(scalar, aux)`` with ``has_aux``) that
    depends on ``params``, raising ``TypeError`` / ``ValueError`` that name what
    is wrong. The function also works inside ``jit``, ``vmap`` and ``scan``.

    Args:
      loss: ``loss(params, batch, *args) -> scalar``, or ``-> (scalar, aux)``
        with ``has_aux=True``.
      has_aux: whether ``loss`` returns ``(value, aux)``.

    Returns:
      ``fn(params, batch, *args) -> GradResult(value, grads, grad_norm, aux)``;
      extra ``args`` (weights, a key) are passed to ``loss`` as traced arrays.

    Examples:
      >>> import jax.numpy as jnp
      >>> from gdjax.gradients import value_and_grad
      >>> def loss(params, batch):
      ...     x, y = batch
      ...     return 0.5 * jnp.mean((x @ params["w"] - y) ** 2)
      >>> vg = value_and_grad(loss)
      >>> r = vg({"w": jnp.array([1.0, 0.0])}, (jnp.eye(2), jnp.array([0.0, 1.0])))
      >>> float(r.value), r.grads["w"], round(float(r.grad_norm), 4)
      (0.5, Array([ 0.5, -0.5], dtype=float32), 0.7071)
      >>> value_and_grad(loss) is vg
      True
    """
    if not callable(loss):
        raise TypeError(
            "loss must be callable as loss(params, batch), got "
            f"{_validate.describe(loss)}."
        )
    if not isinstance(has_aux, (bool, np.bool_)):
        raise TypeError(f"has_aux must be True or False, got {has_aux!r}.")
    has_aux = bool(has_aux)
    try:
        hash(loss)
    except TypeError:
        return _build(loss, has_aux)
    return _cached(loss, has_aux)


__all__ = ["GradResult", "value_and_grad"]
