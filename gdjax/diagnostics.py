r"""Measuring gradient descent: curvature, gradient noise and step sizes.

Contract. Every measurement here is a pure function of ``(loss, params, batch)``
(plus a key where it draws random probes) that returns arrays:

* it works under ``jax.jit`` and ``jax.vmap`` (a batch of params, keys or
  batches gives one value per member), because iteration counts, probe counts
  and batch sizes are static Python integers and every loop is a
  ``lax.fori_loop`` or a ``vmap``;
* it compiles once per ``(loss, static counts, shapes)``: the inner computation
  is a module-level ``jit`` with ``loss`` as a static argument, so calling it
  again with new params, new data of the same shape or a new key reuses the
  program;
* its arguments are checked on the host before anything compiles
  (``iters <= 0``, ``b_small >= b_big``, empty or non-positive learning rates
  raise ``ValueError`` naming the argument); the checks read only shapes, so
  they also pass under ``jit``/``vmap``.

What it measures:

* curvature: :func:`sharpness` (the signed largest or smallest Hessian
  eigenvalue, Lanczos on Hessian-vector products, :mod:`gdjax.curvature`, with
  a residual and a warm start) and :func:`hessian_trace` (Hutchinson);
* step size: :func:`auto_learning_rate` (:math:`1/L` and the stability bound
  :math:`2/L`), :func:`fit_auto_step` (``gd.fit`` re-estimating :math:`1/L`
  between compiled chunks) and :func:`lr_range_test` (every learning rate of a
  grid trained side by side in one vmapped program);
* gradient noise: :func:`per_example_grads`, :func:`simple_noise_scale` and
  :func:`noise_scale_two_batch` (the critical batch size of McCandlish et al.);
* monitors for ``gd.fit(..., monitors=...)``: :func:`sharpness_monitor` (edge
  of stability, Cohen et al.) and :func:`noise_scale_monitor`.

Hessian-vector products are forward-over-reverse, ``jax.jvp`` of ``jax.grad``,
through ``jax.linearize`` so that the forward pass of the gradient is computed
once per measurement and only its tangent is re-run per product.
(``optax.second_order.hvp`` does the same ``jvp(grad)`` but is deprecated in
optax 0.2.7, to be removed in 0.2.9, and takes ``loss(params, inputs,
targets)``; it is not used.)

References:
  Cohen et al., `Gradient Descent on Neural Networks Typically Occurs at the
  Edge of Stability <https://arxiv.org/abs/2103.00065>`_, 2021.

  McCandlish et al., `An Empirical Model of Large-Batch Training
  <https://arxiv.org/abs/1812.06162>`_, 2018.

  Smith, `Cyclical Learning Rates for Training Neural Networks
  <https://arxiv.org/abs/1506.01186>`_, 2017.

  Hutchinson, `A stochastic estimator of the trace of the influence matrix for
  Laplacian smoothing splines <https://doi.org/10.1080/03610919008812866>`_,
  1990.

  Pearlmutter, `Fast exact multiplication by the Hessian
  <https://doi.org/10.1162/neco.1994.6.1.147>`_, 1994.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from gdjax import _validate as V
from gdjax import batching, curvature, loop, runs, spec, transforms
from gdjax._typing import ArrayLike, Batch, Key, LossFn, Params, PyTree
from gdjax.results import FitResult
from gdjax.spec import Driving, Recording, Stopping
from gdjax.stopping import Status

__all__ = [
    "AutoLearningRate",
    "AutoStepResult",
    "HessianEigen",
    "LRRangeResult",
    "NoiseScale",
    "auto_learning_rate",
    "fit_auto_step",
    "hessian_trace",
    "hvp",
    "lr_range_test",
    "noise_scale_monitor",
    "noise_scale_two_batch",
    "per_example_grads",
    "sharpness",
    "sharpness_monitor",
    "simple_noise_scale",
]


# ------------------------------------------------------------------------------- checks


def _check_loss_fn(loss: Any) -> None:
    if not callable(loss):
        raise TypeError(
            f"loss must be callable as loss(params, batch), got {V.describe(loss)}."
        )


def _check_inputs(loss: LossFn, params: Params, batch: Batch, name: str = "batch"):
    """Shapes, dtypes and the loss's trace; tracer-safe, compiles nothing."""
    _check_loss_fn(loss)
    V.check_params(params)
    n = V.check_data(batch, name, check_finite=False)
    V.check_loss(loss, params, batch)
    return n


def _key_parts(key: Key) -> tuple[tuple[int, ...], str]:
    """A concrete key as hashable parts (for a monitor's equality)."""
    key = V.check_key(key)
    if V.is_tracer(key):
        raise TypeError(
            "a monitor's key must be a concrete key, not a traced one: build the "
            "monitor outside jit/vmap."
        )
    data = np.asarray(jax.random.key_data(key)).ravel()
    return tuple(int(v) for v in data), str(jax.random.key_impl(key))


def _key_from_parts(data: tuple[int, ...], impl: str) -> Key:
    return jax.random.wrap_key_data(np.asarray(data, np.uint32), impl=impl)


def _num_examples(batch: Batch) -> int:
    return int(jax.tree.leaves(batch)[0].shape[0])


# ---------------------------------------------------------------------------- curvature


def hvp(loss: LossFn, params: Params, batch: Batch, vector: Params) -> Params:
    r"""The Hessian-vector product :math:`\nabla^2 L(\theta)\, v`, forward-over-reverse.

    .. math:: H v = \frac{\partial}{\partial \epsilon}
       \nabla_\theta L(\theta + \epsilon v; B)\Big|_{\epsilon = 0}

    computed as ``jax.jvp(jax.grad(loss), (params,), (vector,))``: one forward
    and one backward pass with tangents, never the Hessian itself.

    Args:
      loss: ``loss(params, batch) -> scalar``.
      params: the point :math:`\theta`, any pytree of float arrays.
      batch: the data the loss is evaluated on.
      vector: :math:`v`, a pytree with the structure and shapes of ``params``.

    Returns:
      :math:`H v`, a pytree like ``params``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from gdjax.diagnostics import hvp
      >>> loss = lambda p, a: 0.5 * p @ a @ p  # Hessian: a
      >>> a = jnp.array([[2.0, 1.0], [1.0, 3.0]])
      >>> hvp(loss, jnp.zeros(2), a, jnp.array([1.0, 0.0]))
      Array([2., 1.], dtype=float32)

    References:
      Pearlmutter, `Fast exact multiplication by the Hessian
      <https://doi.org/10.1162/neco.1994.6.1.147>`_, 1994.
    """
    _check_loss_fn(loss)
    V.check_same_structure(params, vector, "params", "vector")
    return jax.jvp(lambda p: jax.grad(loss)(p, batch), (params,), (vector,))[1]


def _flat_hvp(loss: LossFn, params: Params, batch: Batch):
    """(flat params, v -> H v on flat vectors); the forward pass runs once."""
    return curvature.flat_hvp(loss, params, batch)


_WHICH = ("largest", "smallest")


class HessianEigen(NamedTuple):
    r"""What :func:`sharpness` returns with ``full_output=True``.

    Attributes:
      value: the Ritz value :math:`\hat\lambda` (signed).
      vector: its unit eigenvector estimate, a pytree like ``params``: pass it
        back as ``init_vector=`` to warm-start the next measurement.
      residual: :math:`\lVert H y - \hat\lambda y\rVert`: an eigenvalue of
        :math:`H` lies within this distance of ``value`` (Krylov-Weinstein).
      converged: ``residual <= tol * max(|ritz values|)``.
    """

    value: jax.Array
    vector: Params
    residual: jax.Array
    converged: jax.Array


def _both(loss, params, batch, key, init_vector, iters, tol):
    """(largest, smallest) as HessianEigen; one program serves either end."""
    _, unravel = ravel_pytree(params)
    if init_vector is not None:
        init_vector = ravel_pytree(init_vector)[0]
    out = curvature.hessian_extremes(
        loss, params, batch, iters=iters, key=key, init_vector=init_vector, tol=tol
    )
    return tuple(
        HessianEigen(pair.value, unravel(pair.vector), pair.residual, pair.converged)
        for pair in (out.largest, out.smallest)
    )


_both_jit = jax.jit(_both, static_argnames=("loss", "iters", "tol"))


def _eigen(loss, params, batch, key, init_vector, iters, which, tol):
    both = _both_jit(loss, params, batch, key, init_vector, iters, tol)
    return both[_WHICH.index(which)]


def _check_which(which: Any) -> str:
    if which not in _WHICH:
        raise ValueError(f"which must be one of {_WHICH}, got {which!r}.")
    return which


def _check_tol(tol: Any) -> float:
    if isinstance(tol, bool) or not isinstance(tol, int | float) or not (0 < tol < 1):
        raise ValueError(f"tol must be a float in (0, 1), got {tol!r}.")
    return float(tol)


def sharpness(
    loss: LossFn,
    params: Params,
    batch: Batch,
    *,
    key: Key | None = None,
    iters: int = 20,
    which: str = "largest",
    init_vector: Params | None = None,
    tol: float = 1e-3,
    full_output: bool = False,
) -> jax.Array | HessianEigen:
    r"""The sharpness :math:`\lambda_{\max}(\nabla^2 L)` (signed), by Lanczos.

    :math:`K` = ``iters`` steps of Lanczos with full reorthogonalization
    (:func:`gdjax.curvature.lanczos_extremes`) on Hessian-vector products
    (:func:`hvp`; ``jax.linearize`` so the gradient's forward pass is done
    once) in the flattened parameters, from a start vector :math:`v_0`
    (a Gaussian draw from ``key``, or ``init_vector``):

    .. math::
      \mathcal{K}_K = \operatorname{span}\{v_0, H v_0, \dots, H^{K-1} v_0\},
      \qquad \hat\lambda_{\max} = \max_{v \in \mathcal{K}_K}
      \frac{v^\top H v}{v^\top v}

    (and :math:`\hat\lambda_{\min}` the min, with ``which="smallest"``). This
    is the largest *algebraic* eigenvalue: on an indefinite Hessian (any
    network away from a minimum) it is not the eigenvalue of largest
    magnitude, which plain power iteration would return. :math:`K` products
    in all; the estimate increases monotonically in :math:`K` towards
    :math:`\lambda_{\max}` and is exact once :math:`K` reaches the number of
    distinct eigenvalues (or the dimension).

    ``full_output=True`` returns :class:`HessianEigen` with the eigenvector
    (a pytree like ``params``), the residual
    :math:`\lVert Hy - \hat\lambda y\rVert` (an eigenvalue lies within it)
    and a ``converged`` flag (residual :math:`\le` ``tol`` times the largest
    Ritz value in magnitude). Passing the previous vector back as
    ``init_vector`` warm-starts the next measurement: along a training run
    the top eigenvector moves slowly, so a few products suffice (measured on
    a 64-32-10 MLP, cross-entropy, every 10 steps of GD at 0.5: 8 warm steps
    within 0.1% of a cold 40-step estimate, 3 warm steps 1-6% low; in
    ``examples/edge_of_stability.py``, 3 warm steps every 20 steps end within
    1%). The warm estimate is a Ritz value, so it errs low, and a short warm
    start can stay on an eigenvector that is no longer the top one after
    eigenvalues cross (at a small init, say): compare with a cold estimate
    now and then.

    Args:
      loss: ``loss(params, batch) -> scalar``, twice differentiable.
      params: any pytree of float arrays.
      batch: the data (a batch, or the whole training set for the full-batch
        sharpness that governs gradient descent's stability).
      key: PRNG key of the start vector (and of restarts if the Krylov space
        is invariant); optional when ``init_vector`` is given.
      iters: :math:`K \ge 1` Lanczos steps (static: one program per value).
      which: ``"largest"`` (:math:`\lambda_{\max}`) or ``"smallest"``
        (:math:`\lambda_{\min}`).
      init_vector: a start vector like ``params`` (warm start), or None.
      tol: relative residual for ``converged`` (static).
      full_output: return :class:`HessianEigen` instead of the value.

    Returns:
      :math:`\hat\lambda`, a scalar in the dtype of the flattened params, or
      :class:`HessianEigen`.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from gdjax.diagnostics import sharpness
      >>> loss = lambda p, a: 0.5 * p @ a @ p
      >>> a = jnp.diag(jnp.array([1.0, -1.0, 0.2]))  # indefinite, symmetric
      >>> [round(float(sharpness(loss, jnp.ones(3), a, key=jax.random.key(s))), 4)
      ...  for s in range(4)]
      [1.0, 1.0, 1.0, 1.0]
      >>> out = sharpness(loss, jnp.ones(3), a, key=jax.random.key(0),
      ...                 which="smallest", full_output=True)
      >>> round(float(out.value), 4), bool(out.converged)
      (-1.0, True)

    References:
      Lanczos, `An iteration method for the solution of the eigenvalue problem
      of linear differential and integral operators
      <https://doi.org/10.6028/jres.045.026>`_, 1950.

      Cohen et al., `Gradient Descent on Neural Networks Typically Occurs at
      the Edge of Stability <https://arxiv.org/abs/2103.00065>`_, 2021.
    """
    iters = V.check_int(iters, "iters")
    which = _check_which(which)
    tol = _check_tol(tol)
    _check_inputs(loss, params, batch)
    if key is None:
        if init_vector is None:
            raise TypeError("sharpness needs key= (or a start vector init_vector=).")
        key = jax.random.key(0)
    key = V.check_key(key)
    if init_vector is not None:
        V.check_same_structure(params, init_vector, "params", "init_vector")
    out = _eigen(loss, params, batch, key, init_vector, iters, which, tol)
    return out if full_output else out.value


def _hessian_trace(loss, params, batch, key, samples):
    flat, product = _flat_hvp(loss, params, batch)
    probes = jax.random.rademacher(key, (samples,) + flat.shape, flat.dtype)
    quads = jax.vmap(lambda z: jnp.vdot(z, product(z)))(probes)
    return jnp.mean(quads)


_hessian_trace_jit = jax.jit(_hessian_trace, static_argnames=("loss", "samples"))


def hessian_trace(
    loss: LossFn, params: Params, batch: Batch, *, key: Key, samples: int = 64
) -> jax.Array:
    r"""Hutchinson's estimate of :math:`\operatorname{tr} \nabla^2 L`.

    .. math::
      \widehat{\operatorname{tr} H} = \frac{1}{m} \sum_{j=1}^{m} z_j^\top H z_j,
      \qquad z_j \in \{-1, +1\}^p \text{ i.i.d. Rademacher},

    unbiased, with variance

    .. math::
      \operatorname{Var} = \frac{2}{m}\Big(\lVert H \rVert_F^2
        - \sum_i H_{ii}^2\Big) = \frac{2}{m} \sum_{i \ne j} H_{ij}^2

    (exact for a diagonal :math:`H`). The :math:`m` products are ``vmap``\ ped
    over the probes (memory: :math:`m` parameter-sized vectors at once).

    Args:
      loss: ``loss(params, batch) -> scalar``.
      params: any pytree of float arrays.
      batch: the data.
      key: PRNG key of the probes.
      samples: :math:`m \ge 1` probes (static).

    Returns:
      The estimate, a scalar.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from gdjax.diagnostics import hessian_trace
      >>> loss = lambda p, a: 0.5 * p @ a @ p
      >>> a = jnp.diag(jnp.array([1.0, 2.0, 5.0]))  # diagonal: exact
      >>> float(hessian_trace(loss, jnp.ones(3), a, key=jax.random.key(0)))
      8.0

    References:
      Hutchinson, `A stochastic estimator of the trace of the influence matrix
      for Laplacian smoothing splines <https://doi.org/10.1080/03610919008812866>`_,
      1990.
    """
    samples = V.check_int(samples, "samples")
    _check_inputs(loss, params, batch)
    key = V.check_key(key)
    return _hessian_trace_jit(loss, params, batch, key, samples)


# ---------------------------------------------------------------------------- step size


class AutoLearningRate(NamedTuple):
    """What :func:`auto_learning_rate` returns.

    Attributes:
      learning_rate: :math:`\\eta = \\text{safety}/L`.
      bound: :math:`2/L`, the largest stable step of gradient descent on a
        quadratic with top curvature :math:`L`.
    """

    learning_rate: jax.Array
    bound: jax.Array


def _check_safety(safety: Any) -> Any:
    if not V.is_tracer(safety):
        V.check_real(
            safety,
            "safety",
            low=0.0,
            high=2.0,
            low_inclusive=False,
            high_inclusive=False,
        )
        if np.ndim(safety) != 0:
            raise ValueError(f"safety must be a scalar, got shape {np.shape(safety)}.")
    return safety


def auto_learning_rate(
    loss: LossFn,
    params: Params,
    data: Batch,
    *,
    key: Key,
    safety: ArrayLike = 1.0,
    iters: int = 20,
    tol: float = 1e-3,
) -> AutoLearningRate:
    r"""The step size :math:`1/L` of full-batch descent, from the measured sharpness.

    For an :math:`L`-smooth objective (:math:`\lambda_{\max}(\nabla^2 f) \le
    L`), gradient descent with :math:`\eta = 1/L` decreases :math:`f` by at
    least :math:`\lVert\nabla f\rVert^2/(2L)` per step, and on a quadratic it
    converges iff :math:`\eta < 2/L`. Here :math:`L` is the local sharpness
    :func:`sharpness` (Lanczos, signed :math:`\lambda_{\max}`) at ``params``
    on ``data``:

    .. math:: \eta = \frac{\text{safety}}{\hat\lambda_{\max}}, \qquad
       \text{bound} = \frac{2}{\hat\lambda_{\max}}.

    On a non-quadratic loss :math:`L` moves with the parameters; see
    :func:`fit_auto_step`.

    Where :math:`\hat\lambda_{\max} \le 0` (the loss is locally concave: no
    step size :math:`1/L` exists) or the Lanczos estimate has not converged
    (residual above ``tol`` relative; raise ``iters``), it raises
    ``ValueError``; under ``jit``/``vmap``, where it cannot raise, both values
    are NaN instead.

    Args:
      loss: ``loss(params, batch) -> scalar``.
      params: the point at which the curvature is measured.
      data: the full training set (the curvature of the full-batch objective).
      key: PRNG key of the Lanczos start vector.
      safety: factor in :math:`(0, 2)`; 1 gives :math:`1/L`.
      iters: Lanczos steps (Hessian-vector products).
      tol: relative residual the estimate must reach.

    Returns:
      :class:`AutoLearningRate` ``(learning_rate, bound)``.

    Raises:
      ValueError: the curvature is not positive, not finite or not converged.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from gdjax.diagnostics import auto_learning_rate
      >>> loss = lambda p, a: 0.5 * p @ a @ p
      >>> a = jnp.diag(jnp.array([1.0, 2.0, 4.0]))
      >>> eta, bound = auto_learning_rate(loss, jnp.ones(3), a, key=jax.random.key(0))
      >>> round(float(eta), 4), round(float(bound), 4)
      (0.25, 0.5)
      >>> auto_learning_rate(loss, jnp.ones(3), -a, key=jax.random.key(0))
      Traceback (most recent call last):
      ...
      ValueError: the largest Hessian eigenvalue at params is -1, not positive: ...
    """
    _check_safety(safety)
    out = sharpness(loss, params, data, key=key, iters=iters, tol=tol, full_output=True)
    lam = out.value
    ok = out.converged & (lam > 0) & jnp.isfinite(lam)
    if not V.is_tracer(lam) and not V.is_tracer(safety):
        value = float(lam)
        if not (np.isfinite(value) and value > 0):
            raise ValueError(
                f"the largest Hessian eigenvalue at params is {value:.6g}, not "
                "positive: the loss is locally concave (or flat) there and no step "
                "size 1/L exists. Start where the loss is locally convex, or pick "
                "a learning rate with lr_range_test."
            )
        if not bool(out.converged):
            raise ValueError(
                f"the sharpness estimate {value:.6g} has not converged after "
                f"{iters} Lanczos steps (residual {float(out.residual):.3g}, "
                f"above tol={tol} relative): raise iters= (or tol=)."
            )
    safety = jnp.asarray(safety, lam.dtype)
    nan = jnp.asarray(jnp.nan, lam.dtype)
    return AutoLearningRate(
        jnp.where(ok, safety / lam, nan), jnp.where(ok, 2 / lam, nan)
    )


class AutoStepResult(NamedTuple):
    """What :func:`fit_auto_step` returns.

    Attributes:
      result: the run's :class:`~gdjax.FitResult`.
      chunk_start: ``(c,)`` int array, the epoch at which each chunk started.
      sharpness: ``(c,)`` the sharpness measured before each chunk.
      learning_rate: ``(c,)`` the learning rate used in each chunk.
    """

    result: FitResult
    chunk_start: np.ndarray
    sharpness: np.ndarray
    learning_rate: np.ndarray


def fit_auto_step(
    loss: LossFn,
    params: Params,
    data: Batch,
    transform: optax.GradientTransformation | None = None,
    *,
    key: Key,
    epochs: int,
    regime: batching.Regime | None = None,
    val_data: Batch | None = None,
    hyperparams: Mapping[str, Any] | None = None,
    reestimate_every: int = 10,
    safety: float = 1.0,
    iters: int = 20,
    stopping: Stopping | None = None,
    recording: Recording | None = None,
    driving: Driving | None = None,
    **options: Any,
) -> AutoStepResult:
    r"""``gd.fit`` with the step :math:`\eta = \text{safety}/L` re-measured as it goes.

    .. math::
      \eta_c = \frac{\text{safety}}{\hat\lambda_{\max}(\theta_{ck})}, \qquad
      \theta_{t+1} = \theta_t + u_t(\nabla L_{B_t}(\theta_t); \eta_c),
      \quad ck \le t < (c+1)k .

    The run is ``gd.fit``'s compiled program called in chunks of ``k``
    epochs (``resume`` semantics: the same program, a larger epoch limit);
    between chunks the host measures :func:`sharpness` on ``data`` (one more
    compiled program) and writes the new :math:`\eta` into the optimizer
    state with :func:`gdjax.set_hyperparams`. Neither program is recompiled
    when :math:`\eta` changes, nor for another ``reestimate_every``.
    If a measurement (Lanczos, :func:`sharpness`) is not positive, finite
    and converged, the previous :math:`\eta` is kept (at the start: an error).

    Args:
      loss: ``loss(params, batch) -> scalar``.
      params: initial parameters.
      data: the training set; the sharpness is that of the full-batch loss.
      transform: a transform with an injected ``learning_rate``
        (default ``gd.sgd(1.0)``, whose rate is overwritten).
      key: PRNG key; split into the run's key and the probes' keys.
      epochs: epoch budget.
      reestimate_every: :math:`k \ge 1`, epochs per chunk.
      safety: factor in :math:`(0, 2)`.
      iters: Lanczos steps per measurement.
      regime, val_data, hyperparams: as for ``gd.fit``.
      stopping, recording, driving: the run options of ``gd.fit``, also as
        flat keywords (``monitors``, ``grad_tol``, ``callback``, ``progress``,
        ...); not ``chunk_epochs`` (use ``reestimate_every``) or ``donate``.

    Returns:
      :class:`AutoStepResult` ``(result, chunk_start, sharpness,
      learning_rate)``.

    Raises:
      ValueError: the curvature at ``params`` is not positive and finite (no
        step size :math:`1/L` exists), or a bad argument.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from gdjax.diagnostics import fit_auto_step
      >>> loss = lambda p, a: 0.5 * p @ a @ p
      >>> a = jnp.diag(jnp.array([1.0, 2.0, 4.0]))
      >>> out = fit_auto_step(loss, jnp.ones(3), a, key=jax.random.key(0),
      ...                     epochs=20, reestimate_every=10)
      >>> out.learning_rate.round(4).tolist(), out.result.params.round(4).tolist()
      ([0.25, 0.25], [0.0032, 0.0, 0.0])
    """
    epochs = V.check_int(epochs, "epochs")
    k = V.check_int(reestimate_every, "reestimate_every")
    iters = V.check_int(iters, "iters")
    _check_safety(safety)
    stopping, recording, driving = spec.from_options(
        stopping, recording, driving, **options
    )
    hyper = _auto_step_hyperparams(driving, hyperparams)
    key = V.check_key(key)
    k_run, k_probe = jax.random.split(key)
    transform = transforms.sgd(1.0) if transform is None else transform
    _check_inputs(loss, params, data, "data")

    starts: list[int] = []
    lams: list[float] = []
    etas: list[float] = []
    measure = functools.partial(
        _measure_step,
        loss,
        data=data,
        key=k_probe,
        iters=iters,
        safety=safety,
        lams=lams,
        etas=etas,
    )

    eta0 = measure(params, 0)
    starts.append(0)
    hyper["learning_rate"] = eta0
    run = runs.prepare(
        loss,
        params,
        data,
        transform,
        key=k_run,
        epochs=epochs,
        regime=regime,
        val_data=val_data,
        hyperparams=hyper,
        stopping=stopping,
        recording=recording,
        driving=driving,
    )

    single = runs.advance_for(dataclasses.replace(driving, donate=False))

    def advance(program, state, inputs, epoch_limit):
        epoch = int(np.min(np.asarray(state.epoch)))
        if epoch > 0:
            eta = measure(state.params, len(starts))
            starts.append(epoch)
            state = state._replace(
                opt_state=transforms.set_hyperparams(state.opt_state, learning_rate=eta)
            )
        return single(program, state, inputs, epoch_limit)

    state = runs.drive(
        run, advance=advance, driving=dataclasses.replace(driving, chunk_epochs=k)
    )
    result = runs.finish(state, driving)
    return AutoStepResult(
        result,
        np.asarray(starts, np.int32),
        np.asarray(lams),
        np.asarray(etas),
    )


def _auto_step_hyperparams(
    driving: Driving, hyperparams: Mapping[str, Any] | None
) -> dict[str, Any]:
    """A copy of ``hyperparams`` for :func:`fit_auto_step`, after checking that
    neither it nor ``driving`` holds an option that the procedure sets itself."""
    if driving.chunk_epochs is not None:
        raise TypeError(
            "fit_auto_step does not take chunk_epochs: use reestimate_every."
        )
    if driving.donate:
        raise TypeError(
            "fit_auto_step does not take donate: the chunks share their state with "
            "the host."
        )
    hyper = dict(hyperparams or {})
    if "learning_rate" in hyper:
        raise ValueError(
            "fit_auto_step sets hyperparams['learning_rate'] itself; leave it out."
        )
    return hyper


def _measure_step(
    loss: LossFn,
    p: Params,
    chunk: int,
    *,
    data: Batch,
    key: Key,
    iters: int,
    safety: float,
    lams: list[float],
    etas: list[float],
) -> float:
    """Measure the sharpness at ``p`` for chunk ``chunk``, append it to ``lams``
    and the step ``safety / sharpness`` (or the previous one) to ``etas``."""
    out = _eigen(
        loss,
        p,
        data,
        jax.random.fold_in(key, chunk),
        None,
        iters,
        "largest",
        1e-3,
    )
    lam = float(out.value)
    lams.append(lam)
    if np.isfinite(lam) and lam > 0 and bool(out.converged):
        etas.append(float(safety) / lam)
    elif etas:
        etas.append(etas[-1])
    else:
        raise ValueError(
            f"the sharpness of loss at params is {lam!r}, not positive and "
            f"finite, or not converged after iters={iters} Lanczos steps: no "
            "step size 1/L exists there. Start where the loss is locally "
            "convex, raise iters, or pick a learning rate with lr_range_test."
        )
    return etas[-1]


# ----------------------------------------------------------------------------- monitors


@dataclasses.dataclass(frozen=True)
class _SharpnessMonitor:
    """``(params, data) -> sharpness``; equal settings compare (and hash) equal,
    so ``gd.fit`` reuses its compiled program for a rebuilt monitor."""

    loss: Callable
    iters: int
    key_data: tuple[int, ...]
    key_impl: str
    which: str = "largest"

    def __call__(self, params: Params, data: Batch) -> jax.Array:
        key = _key_from_parts(self.key_data, self.key_impl)
        return _eigen(
            self.loss, params, data, key, None, self.iters, self.which, 1e-3
        ).value


def sharpness_monitor(
    loss: LossFn, *, key: Key, iters: int = 10, which: str = "largest"
) -> Callable[[Params, Batch], jax.Array]:
    r"""A ``gd.fit`` monitor recording the full-batch sharpness :math:`\lambda_{\max}`.

    ``gd.fit(..., monitors={"sharpness": sharpness_monitor(loss, key=k)},
    monitor_every=m)`` records :func:`sharpness` (Lanczos, ``iters`` steps,
    signed) of the loss on the whole training set every ``m`` epochs in
    ``history.monitors["sharpness"]``. For gradient descent with step
    :math:`\eta`, plot :math:`\eta\lambda_{\max}` against 2: full-batch
    descent on neural networks first sharpens until :math:`\lambda_{\max}
    \approx 2/\eta` and then hovers there, the *edge of stability* (Cohen et
    al.; reproduced in ``examples/edge_of_stability.py``). The same start
    vector (from ``key``) is used at every evaluation: a monitor is a function
    of ``(params, data)`` and cannot carry the previous eigenvector between
    evaluations.

    Cost: ``iters`` Hessian-vector products (each about three gradients) on
    the full data per evaluation. To record the sharpness every epoch cheaply,
    warm-start instead: carry ``sharpness(..., init_vector=v,
    full_output=True).vector`` from one measurement to the next in your own
    loop (a few products per measurement: see :func:`sharpness` for their
    measured accuracy, and ``examples/edge_of_stability.py``). Under ``vmap``
    (sweeps) the loop's ``lax.cond`` becomes a select, so the monitor is then
    paid every epoch whatever ``monitor_every``.

    Args:
      loss: the training loss ``loss(params, batch) -> scalar``.
      key: PRNG key of the Lanczos start vector (concrete).
      iters: Lanczos steps per evaluation.
      which: ``"largest"`` or ``"smallest"`` eigenvalue.

    Returns:
      ``monitor(params, data) -> scalar``, hashable by value.

    Examples:
      >>> import jax, jax.numpy as jnp, gdjax as gd
      >>> from gdjax.diagnostics import sharpness_monitor
      >>> loss = lambda p, a: 0.5 * p @ a @ p
      >>> a = jnp.diag(jnp.array([1.0, 2.0, 4.0]))
      >>> mon = sharpness_monitor(loss, key=jax.random.key(0))
      >>> r = gd.fit(loss, jnp.ones(3), a, gd.sgd(0.1), key=jax.random.key(1),
      ...            epochs=4, monitors={"sharpness": mon}, monitor_every=2)
      >>> r.history.monitors["sharpness"].round(3)
      Array([ 4., nan,  4., nan], dtype=float32)

    References:
      Cohen et al., `Gradient Descent on Neural Networks Typically Occurs at
      the Edge of Stability <https://arxiv.org/abs/2103.00065>`_, 2021.
    """
    _check_loss_fn(loss)
    iters = V.check_int(iters, "iters")
    which = _check_which(which)
    data, impl = _key_parts(key)
    return _SharpnessMonitor(loss, iters, data, impl, which)


# ----------------------------------------------------------------------- gradient noise


class NoiseScale(NamedTuple):
    r"""A gradient noise measurement.

    Attributes:
      b_simple: :math:`\mathcal{B}_\text{simple} = \operatorname{tr}\Sigma /
        \lVert G\rVert^2`, an estimate of the critical batch size.
      trace_cov: the estimate of :math:`\operatorname{tr}\Sigma`, the trace of
        the per-example gradient covariance.
      grad_norm_sq: the estimate of :math:`\lVert G\rVert^2`, the squared norm
        of the true (expected) gradient.
    """

    b_simple: jax.Array
    trace_cov: jax.Array
    grad_norm_sq: jax.Array


def _per_example_grads(loss, params, batch):
    def one(example):
        return jax.grad(loss)(params, jax.tree.map(lambda a: a[None], example))

    return jax.vmap(one)(batch)


_per_example_grads_jit = jax.jit(_per_example_grads, static_argnames=("loss",))


def per_example_grads(loss: LossFn, params: Params, batch: Batch) -> Params:
    r"""Each example's gradient, :math:`g_i = \nabla_\theta L(\theta; \{i\})`.

    ``jax.vmap`` of ``jax.grad(loss)`` over one-example batches
    ``batch_i[None]``. For a loss that is a mean of per-example terms plus a
    params-only regularizer :math:`R`, :math:`\frac1n\sum_i g_i` is the
    batch gradient (each :math:`g_i` carries :math:`\nabla R` once).

    Args:
      loss: ``loss(params, batch) -> scalar``, a mean over examples.
      params: any pytree of float arrays.
      batch: a pytree of arrays with a leading example axis of length n.

    Returns:
      A pytree like ``params`` with a leading axis of length n.

    Examples:
      >>> import jax.numpy as jnp
      >>> from gdjax.diagnostics import per_example_grads
      >>> loss = lambda w, b: 0.5 * jnp.mean((b[0] * w - b[1]) ** 2)
      >>> x, y = jnp.array([1.0, 2.0]), jnp.zeros(2)
      >>> per_example_grads(loss, jnp.ones(()), (x, y))  # x_i^2 w
      Array([1., 4.], dtype=float32)
    """
    _check_inputs(loss, params, batch)
    return _per_example_grads_jit(loss, params, batch)


def _simple_noise_scale(loss, params, batch):
    grads = _per_example_grads(loss, params, batch)
    flat = jax.vmap(lambda g: ravel_pytree(g)[0])(grads)
    n = flat.shape[0]
    mean = jnp.mean(flat, axis=0)
    centred = flat - mean[None, :]
    trace = jnp.sum(centred * centred) / (n - 1)
    grad_sq = jnp.vdot(mean, mean) - trace / n
    return NoiseScale(trace / grad_sq, trace, grad_sq)


_simple_noise_scale_jit = jax.jit(_simple_noise_scale, static_argnames=("loss",))


def simple_noise_scale(loss: LossFn, params: Params, batch: Batch) -> NoiseScale:
    r"""The simple gradient noise scale from per-example gradients.

    With per-example gradients :math:`g_1, \dots, g_n` (:func:`per_example_grads`)
    and their mean :math:`\bar g`, the unbiased estimates

    .. math::
      \widehat{\operatorname{tr}\Sigma} = \frac{1}{n-1} \sum_{i=1}^n
        \lVert g_i - \bar g \rVert^2, \qquad
      \widehat{\lVert G \rVert^2} = \lVert \bar g \rVert^2
        - \frac{\widehat{\operatorname{tr}\Sigma}}{n}

    (since :math:`\mathbb{E}\lVert\bar g\rVert^2 = \lVert G\rVert^2 +
    \operatorname{tr}\Sigma / n`), and
    :math:`\mathcal{B}_\text{simple} = \widehat{\operatorname{tr}\Sigma} /
    \widehat{\lVert G \rVert^2}`. McCandlish et al. find the critical batch
    size (beyond which a larger batch stops buying proportionally fewer
    steps) :math:`\mathcal{B}_\text{crit} \approx \mathcal{B}_\text{simple}`.
    The ratio of the two unbiased estimates is not itself unbiased, and near
    a minimum (:math:`\lVert G\rVert^2 \to 0`) it is large and noisy; the
    estimate of :math:`\lVert G\rVert^2` can then be negative.

    Memory: the n flattened gradients are held at once.

    Args:
      loss: ``loss(params, batch) -> scalar``, a mean over examples.
      params: any pytree of float arrays.
      batch: the examples, n >= 2 (typically a large batch or the full data).

    Returns:
      :class:`NoiseScale` ``(b_simple, trace_cov, grad_norm_sq)``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from gdjax.diagnostics import simple_noise_scale
      >>> loss = lambda w, b: 0.5 * jnp.mean((b[0] * w - b[1]) ** 2)
      >>> x = jnp.array([1.0, 2.0, 3.0, 4.0]); y = jnp.zeros(4)
      >>> ns = simple_noise_scale(loss, jnp.array(1.0), (x, y))  # g_i = x_i^2
      >>> float(ns.trace_cov), float(ns.grad_norm_sq)  # 129 / 3, 7.5^2 - 43 / 4
      (43.0, 45.5)

    References:
      McCandlish et al., `An Empirical Model of Large-Batch Training
      <https://arxiv.org/abs/1812.06162>`_, 2018.
    """
    n = _check_inputs(loss, params, batch)
    if n < 2:
        raise ValueError(
            f"batch must hold at least 2 examples to estimate a covariance, got {n}."
        )
    return _simple_noise_scale_jit(loss, params, batch)


def _noise_scale_two_batch(loss, params, data, key, b_small, b_big, repeats):
    n = _num_examples(data)
    grad = jax.grad(loss)

    def sq_norm(k, b):
        # A uniform b-subset (without replacement): the b largest of n uniform
        # draws; top_k avoids the full sorts of jax.random.permutation.
        idx = jax.lax.top_k(jax.random.uniform(k, (n,)), b)[1]
        g = grad(params, jax.tree.map(lambda a: a[idx], data))
        return optax.tree.norm(g, squared=True)

    keys = jax.random.split(key, (repeats, 2))
    small = jnp.mean(jax.vmap(lambda k: sq_norm(k, b_small))(keys[:, 0]))
    big = jnp.mean(jax.vmap(lambda k: sq_norm(k, b_big))(keys[:, 1]))
    grad_sq = (b_big * big - b_small * small) / (b_big - b_small)
    trace = (small - big) / (1.0 / b_small - 1.0 / b_big)
    return NoiseScale(trace / grad_sq, trace, grad_sq)


_two_batch_jit = jax.jit(
    _noise_scale_two_batch, static_argnames=("loss", "b_small", "b_big", "repeats")
)


def _check_two_batch(b_small: Any, b_big: Any, repeats: Any, n: int | None):
    b_small = V.check_int(b_small, "b_small")
    b_big = V.check_int(b_big, "b_big")
    repeats = V.check_int(repeats, "repeats")
    if b_small >= b_big:
        raise ValueError(
            f"b_small must be smaller than b_big, got b_small={b_small}, b_big={b_big}."
        )
    if n is not None and b_big > n:
        raise ValueError(
            f"b_big must be in [2, {n}] for data with n={n} examples, got {b_big}; "
            "inside jit a larger batch would silently repeat examples."
        )
    return b_small, b_big, repeats


def noise_scale_two_batch(
    loss: LossFn,
    params: Params,
    data: Batch,
    *,
    key: Key,
    b_small: int,
    b_big: int,
    repeats: int = 16,
) -> NoiseScale:
    r"""The gradient noise scale from gradient norms at two batch sizes.

    A batch of :math:`B` examples drawn without replacement from the n of
    ``data`` has :math:`\mathbb{E}\lVert G_B\rVert^2 = \lVert G\rVert^2 +
    \operatorname{tr}\Sigma / B`, where :math:`\lVert G\rVert^2` and
    :math:`\operatorname{tr}\Sigma` are exactly the unbiased estimates of
    :func:`simple_noise_scale` on ``data``. Averaging
    :math:`\lVert G_{B_s}\rVert^2` and :math:`\lVert G_{B_b}\rVert^2` over
    ``repeats`` independent draws of each size and solving the two equations
    gives McCandlish et al.'s (Appendix A) unbiased estimators

    .. math::
      \widehat{\lVert G\rVert^2} = \frac{B_b \lVert G_{B_b}\rVert^2
        - B_s \lVert G_{B_s}\rVert^2}{B_b - B_s}, \qquad
      \widehat{\operatorname{tr}\Sigma} = \frac{\lVert G_{B_s}\rVert^2
        - \lVert G_{B_b}\rVert^2}{1/B_s - 1/B_b},

    and :math:`\mathcal{B}_\text{simple} \approx \mathcal{B}_\text{crit}` as
    their ratio (ratio of averages, as the paper recommends). It needs only
    batch gradients (no per-example ones), so it scales to large models; in
    data-parallel training the per-device and all-reduced gradients are the
    two sizes for free.

    Args:
      loss: ``loss(params, batch) -> scalar``, a mean over examples.
      params: any pytree of float arrays.
      data: the examples to draw batches from (n of them).
      key: PRNG key of the draws.
      b_small: the small batch size :math:`B_s \ge 1`.
      b_big: the big batch size, :math:`B_s < B_b \le n`.
      repeats: independent draws of each size (static).

    Returns:
      :class:`NoiseScale` ``(b_simple, trace_cov, grad_norm_sq)``.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from gdjax.diagnostics import noise_scale_two_batch
      >>> loss = lambda w, b: 0.5 * jnp.mean((b[0] * w - b[1]) ** 2)
      >>> x = jnp.array([1.0, 2.0, 3.0, 4.0]); y = jnp.zeros(4)
      >>> ns = noise_scale_two_batch(loss, jnp.array(1.0), (x, y),
      ...                            key=jax.random.key(0), b_small=1, b_big=4)
      >>> ns.trace_cov.shape
      ()

    References:
      McCandlish et al., `An Empirical Model of Large-Batch Training
      <https://arxiv.org/abs/1812.06162>`_, 2018.
    """
    b_small, b_big, repeats = _check_two_batch(b_small, b_big, repeats, None)
    n = _check_inputs(loss, params, data, "data")
    _check_two_batch(b_small, b_big, repeats, n)
    key = V.check_key(key)
    return _two_batch_jit(loss, params, data, key, b_small, b_big, repeats)


@dataclasses.dataclass(frozen=True)
class _NoiseScaleMonitor:
    """``(params, data) -> B_simple``; hashable by value (see _SharpnessMonitor)."""

    loss: Callable
    quantity: str
    b_small: int | None
    b_big: int | None
    repeats: int
    key_data: tuple[int, ...] | None
    key_impl: str | None

    def __call__(self, params: Params, data: Batch) -> jax.Array:
        if self.b_small is None:
            out = _simple_noise_scale_jit(self.loss, params, data)
        else:
            n = _num_examples(data)
            _check_two_batch(self.b_small, self.b_big, self.repeats, n)
            key = _key_from_parts(self.key_data, self.key_impl)
            out = _two_batch_jit(
                self.loss, params, data, key, self.b_small, self.b_big, self.repeats
            )
        return getattr(out, self.quantity)


def noise_scale_monitor(
    loss: LossFn,
    *,
    quantity: str = "b_simple",
    b_small: int | None = None,
    b_big: int | None = None,
    repeats: int = 16,
    key: Key | None = None,
) -> Callable[[Params, Batch], jax.Array]:
    r"""A ``gd.fit`` monitor recording the noise scale :math:`B_\text{simple}`.

    Without batch sizes it is :func:`simple_noise_scale` on the whole training
    set (per-example gradients: n parameter-sized vectors in memory); with
    ``b_small`` and ``b_big`` (and ``key``) it is :func:`noise_scale_two_batch`
    (batch gradients only). Compare the recorded values with the batch size
    in use: training well below :math:`\mathcal{B}_\text{crit}` is
    step-efficient, well above it is compute-wasteful.

    The ratio is noisy from one evaluation to the next (and its denominator
    can be estimated below 0 once the true gradient is smaller than the noise
    can resolve). McCandlish et al. smooth numerator and denominator
    separately: record ``quantity="trace_cov"`` and
    ``quantity="grad_norm_sq"`` as two monitors, average each over epochs,
    then divide.

    Args:
      loss: the training loss.
      quantity: which :class:`NoiseScale` field to record: ``"b_simple"``,
        ``"trace_cov"`` or ``"grad_norm_sq"``.
      b_small, b_big: the two batch sizes, or both ``None``.
      repeats: draws of each size (two-batch only).
      key: PRNG key of the draws (two-batch only; concrete).

    Returns:
      ``monitor(params, data) -> scalar``, hashable by value.

    Examples:
      >>> import jax, jax.numpy as jnp, gdjax as gd
      >>> from gdjax.diagnostics import noise_scale_monitor
      >>> loss = lambda w, b: 0.5 * jnp.mean((b[0] * w - b[1]) ** 2)
      >>> x = jnp.array([1.0, 2.0, 3.0, 4.0]); y = jnp.zeros(4)
      >>> float(noise_scale_monitor(loss)(jnp.array(1.0), (x, y)))  # 43 / 45.5
      0.945...

    References:
      McCandlish et al., `An Empirical Model of Large-Batch Training
      <https://arxiv.org/abs/1812.06162>`_, 2018.
    """
    _check_loss_fn(loss)
    if quantity not in NoiseScale._fields:
        raise ValueError(
            f"quantity must be one of {NoiseScale._fields}, got {quantity!r}."
        )
    if b_small is None and b_big is None:
        return _NoiseScaleMonitor(loss, quantity, None, None, 1, None, None)
    if b_small is None or b_big is None:
        raise ValueError(
            "give both b_small and b_big (two-batch estimator) or neither "
            f"(per-example estimator), got b_small={b_small}, b_big={b_big}."
        )
    b_small, b_big, repeats = _check_two_batch(b_small, b_big, repeats, None)
    if key is None:
        raise TypeError("the two-batch estimator draws batches: pass key=.")
    data, impl = _key_parts(key)
    return _NoiseScaleMonitor(loss, quantity, b_small, b_big, repeats, data, impl)


# ---------------------------------------------------------------------- LR range test


class LRRangeResult(NamedTuple):
    """What :func:`lr_range_test` returns (NumPy arrays, learning rates ascending).

    Attributes:
      lrs: ``(m,)`` the learning rates, sorted ascending.
      losses: ``(m,)`` loss on the full data after training with each rate
        (``inf`` for a run that hit NaN/inf).
      suggestion_steepest: the rate where the smoothed loss falls fastest
        against :math:`\\log\\eta` (among stable rates); NaN if none is stable.
      suggestion_max_stable: the largest stable rate; NaN if none is.
      smoothed: ``(m,)`` the smoothed losses (stable rates smoothed among
        themselves; others as in ``losses``).
      initial_loss: the loss at the initial params.
      stable: ``(m,)`` bool: a real decrease (``min_decrease``), and below the
        first unstable rate.
      history: ``(m, epochs)`` the per-epoch training loss of each rate.
      unstable: ``(m,)`` bool: non-finite, ended above ``initial_loss``, or
        (with the curvature check) :math:`\\eta\\hat\\lambda_{\\max} \\ge`
        ``stability_threshold`` at the end.
      first_unstable: the smallest unstable rate (``inf`` if none).
      sharpness: ``(m,)`` :math:`\\hat\\lambda_{\\max}` of the full-data loss
        at each member's final params (NaN without the curvature check).
    """

    lrs: np.ndarray
    losses: np.ndarray
    suggestion_steepest: float
    suggestion_max_stable: float
    smoothed: np.ndarray
    initial_loss: float
    stable: np.ndarray
    history: np.ndarray
    unstable: np.ndarray | None = None
    first_unstable: float = float("inf")
    sharpness: np.ndarray | None = None


@functools.partial(jax.jit, static_argnums=(0, 3))
def _member_sharpness(loss, params, data, iters):
    key = jax.random.key(0)
    return jax.vmap(
        lambda p: _eigen(loss, p, data, key, None, iters, "largest", 1e-3).value
    )(params)


@functools.partial(jax.jit, static_argnums=0)
def _member_losses(loss, params, data):
    return jax.vmap(lambda p: loss(p, data))(params)


def _check_lrs(lrs: Any) -> np.ndarray:
    if V.is_tracer(lrs):
        raise TypeError("lrs must be concrete (a NumPy array), not traced.")
    arr = np.asarray(lrs, dtype=float)
    if arr.ndim != 1:
        raise ValueError(
            f"lrs must be a 1-d array of learning rates, got shape {arr.shape}."
        )
    if arr.size == 0:
        raise ValueError(
            "lrs must hold at least one learning rate, got an empty array."
        )
    V.check_positive(arr, "lrs")
    arr = np.sort(arr)
    if np.any(np.diff(arr) == 0):
        raise ValueError("lrs must not repeat a learning rate.")
    return arr


def _range_transform(
    transform: Any, lr0: float, params: Params
) -> optax.GradientTransformation:
    """A transform whose state holds ``learning_rate`` as an array."""
    if transform is None:
        return transforms.sgd(lr0)
    if hasattr(transform, "init") and hasattr(transform, "update"):
        built = transform
    elif callable(transform):
        built = transform(lr0)
        if not (hasattr(built, "init") and hasattr(built, "update")):
            raise TypeError(
                "transform must be an optax GradientTransformation or a factory "
                f"learning_rate -> transform (gd.sgd, optax.adam), got "
                f"{V.describe(transform)} returning {V.describe(built)}."
            )
        if "learning_rate" not in _hyperparam_names(built, params):
            built = optax.inject_hyperparams(transform)(learning_rate=lr0)
    else:
        raise TypeError(
            "transform must be an optax GradientTransformation or a factory "
            f"learning_rate -> transform, got {V.describe(transform)}."
        )
    if "learning_rate" not in _hyperparam_names(built, params):
        raise ValueError(
            "transform must hold learning_rate as an injected hyperparameter "
            "(gd.sgd(...) or optax.inject_hyperparams(optax.adam)(learning_rate=...)),"
            " or pass a factory such as gd.sgd or optax.adam."
        )
    return built


def _hyperparam_names(transform: optax.GradientTransformation, params) -> set[str]:
    state = jax.eval_shape(transform.init, params)
    try:
        return set(transforms.get_hyperparams(state))
    except ValueError:
        return set()


def _smooth(losses: np.ndarray, stable: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average over the stable entries (others left as they are)."""
    out = losses.astype(float).copy()
    idx = np.flatnonzero(stable)
    vals = losses[idx]
    h = window // 2
    for j, i in enumerate(idx):
        out[i] = np.mean(vals[max(0, j - h) : j + h + 1])
    return out


def _batched(tree: PyTree, m: int) -> PyTree:
    """``m`` stacked copies of every leaf, on the host (no XLA program)."""

    def stack(a):
        if jnp.issubdtype(getattr(a, "dtype", np.float32), jax.dtypes.extended):
            return jnp.broadcast_to(a, (m,) + a.shape)  # e.g. a PRNG key in a state
        return np.broadcast_to(np.asarray(a), (m,) + np.shape(a)).copy()

    return jax.tree.map(stack, tree)


def lr_range_test(
    loss: LossFn,
    params: Params,
    data: Batch,
    transform: Any = None,
    *,
    key: Key,
    lrs: ArrayLike | None = None,
    epochs: int | None = None,
    steps: int | None = None,
    regime: batching.Regime | None = None,
    smooth: int = 3,
    min_decrease: float = 0.01,
    stability_threshold: float | None | str = "auto",
    sharpness_iters: int = 20,
) -> LRRangeResult:
    r"""A learning-rate range test: every rate of a grid trained at once, one program.

    For each :math:`\eta_j` in ``lrs`` the same run as ``gd.fit`` (same
    params, data order and regime) is trained for a short budget; the
    members are one ``jit(vmap(run_epochs))`` over the optimizer state, whose
    ``learning_rate`` is an array (``set_hyperparams``), with the data shared
    (``in_axes=None``). A member that hits NaN/inf stops on its own (the
    loop's guard) while the others go on. Then, with :math:`\ell_j` the loss
    on the full data at the end, :math:`\ell_0` at the start, and
    :math:`\hat\lambda_j` the sharpness (:func:`sharpness`, Lanczos) of the
    full-data loss at member :math:`j`'s final params:

    * unstable: :math:`\ell_j` not finite, or :math:`\ell_j > \ell_0`, or
      (curvature check, threshold :math:`c`) :math:`\eta_j \hat\lambda_j \ge c`;
    * stable: a real decrease, :math:`\ell_j \le \ell_0 - \delta|\ell_0|`
      (:math:`\delta` = ``min_decrease``), and :math:`\eta_j` below the
      first (smallest) unstable rate: a rate past one that blew up is never
      called stable, however its own short run happened to end;
    * ``suggestion_max_stable`` :math:`= \max\{\eta_j : \text{stable}\}`;
    * ``suggestion_steepest`` :math:`= \arg\min_{\eta_j\ \text{stable}}
      \frac{d \tilde\ell}{d \log \eta}`, where :math:`\tilde\ell` is a
      centred moving average (``smooth`` points) over the stable rates and the
      derivative is ``np.gradient`` against :math:`\log\eta`.

    Why the curvature check: the final loss alone cannot see every unstable
    rate. On a quadratic with :math:`\eta > 2/L`, only the component along
    the top eigenvector grows, by :math:`|1 - \eta L|` per step; a short
    budget (or a start with little weight on that direction) ends with a
    lower loss anyway. Gradient descent is linearly stable at :math:`\theta`
    iff :math:`\eta\lambda_{\max}(\theta) < 2`, so with plain ``gd.sgd``
    (the default, ``stability_threshold="auto"`` gives :math:`c = 2`) every
    stable rate on a quadratic is below :math:`2/L` for any budget. For
    heavy ball with momentum :math:`\beta` pass :math:`c = 2(1+\beta)`; for
    adaptive methods (no such threshold) ``"auto"`` turns the check off, and
    ``None`` always does. A long budget on a network can end at the edge of
    stability (:math:`\eta\lambda_{\max} \approx 2`, Cohen et al.), which
    the check then calls unstable: the suggestion errs towards the rates
    that are stable where they end.

    This is Smith's test (2017), which sweeps the rate within one run, done
    as independent short runs side by side: no rate sees another's
    parameters, and the grid costs one compiled program (a new grid of the
    same length reuses it).

    Args:
      loss: ``loss(params, batch) -> scalar``.
      params: initial parameters, shared by every member.
      data: the training set.
      transform: a factory ``learning_rate -> transform`` (``gd.sgd``,
        default; ``optax.adam``, wrapped in ``optax.inject_hyperparams`` if it
        does not inject its rate) or a transform built once with an injected
        ``learning_rate`` (``gd.sgd(0.1, momentum=0.9)``).
      key: the run's PRNG key (data order), shared by every member.
      lrs: ``(m,)`` positive learning rates (default
        ``np.logspace(-4, 1, 26)``); sorted ascending in the result.
      epochs: epoch budget of each member.
      steps: step budget instead (``max_steps``; the epochs needed are
        derived from the regime). Give ``epochs`` or ``steps``.
      regime: batching regime (default full batch).
      smooth: odd window of the moving average, 1 for none.
      min_decrease: :math:`\delta \in [0, 1)`, the relative decrease of the
        loss a stable rate must reach.
      stability_threshold: :math:`c` of the curvature check, ``"auto"`` (2
        for plain ``gd.sgd``, the default transform or factory; off
        otherwise) or None (off).
      sharpness_iters: Lanczos steps of the curvature check.

    Returns:
      :class:`LRRangeResult`.

    Examples:
      >>> import jax, jax.numpy as jnp, numpy as np
      >>> from gdjax.diagnostics import lr_range_test
      >>> loss = lambda p, a: 0.5 * p @ a @ p
      >>> a = jnp.diag(jnp.array([1.0, 2.0, 4.0]))  # stable iff lr < 2/4
      >>> res = lr_range_test(loss, jnp.ones(3), a, key=jax.random.key(0),
      ...                     lrs=np.logspace(-2, 0, 9), steps=20)
      >>> round(res.suggestion_max_stable, 3), bool(res.suggestion_steepest < 0.5)
      (0.316, True)
      >>> res.first_unstable  # 0.562 > 2/4, caught by the curvature check
      0.562...

    References:
      Smith, `Cyclical Learning Rates for Training Neural Networks
      <https://arxiv.org/abs/1506.01186>`_, 2017.
    """
    lrs = _check_lrs(np.logspace(-4, 1, 26) if lrs is None else lrs)
    smooth, threshold = _check_range_options(
        smooth, epochs, steps, min_decrease, stability_threshold, transform
    )
    sharpness_iters = V.check_int(sharpness_iters, "sharpness_iters")
    n = _check_inputs(loss, params, data, "data")
    regime = batching.full_batch() if regime is None else regime
    max_steps = None
    if steps is not None:
        max_steps = V.check_int(steps, "steps")
        epochs = math.ceil(max_steps / max(batching.plan(regime, n).steps, 1))
    epochs = V.check_int(epochs, "epochs")
    tx = _range_transform(transform, float(lrs[0]), params)
    run = runs.prepare(
        loss,
        params,
        data,
        tx,
        key=key,
        epochs=epochs,
        regime=regime,
        stopping=Stopping(max_steps=max_steps),
        recording=Recording(),
        driving=Driving(),
    )
    m = lrs.size
    state = _batched(run.state, m)
    state = state._replace(
        opt_state=transforms.set_hyperparams(state.opt_state, learning_rate=lrs)
    )
    inputs = run.inputs._replace(
        key=_batched(run.inputs.key, m), criteria=_batched(run.inputs.criteria, m)
    )
    state = loop.advance_members(run.program, state, inputs, np.int32(epochs))
    start = np.asarray(_member_losses(loss, _batched(params, m), run.inputs.data))
    end = np.asarray(_member_losses(loss, state.params, run.inputs.data))
    failed = np.asarray(state.status) >= Status.NONFINITE_LOSS
    losses = np.where(failed | ~np.isfinite(end), np.inf, end).astype(float)
    initial = float(start[0])
    finite = np.isfinite(losses)
    lam = np.full(m, np.nan)
    unstable = ~finite | (losses > initial)
    if threshold is not None:
        lam = np.asarray(
            _member_sharpness(loss, state.params, run.inputs.data, sharpness_iters),
            float,
        )
        # A NaN sharpness (non-finite params) is unstable too.
        unstable |= ~(lrs * lam < threshold)
    first_unstable = float(lrs[np.argmax(unstable)]) if unstable.any() else np.inf
    decreased = finite & (losses <= initial - min_decrease * abs(initial))
    stable = decreased & ~unstable & (lrs < first_unstable)
    smoothed = _smooth(losses, stable, smooth)
    steepest, max_stable = _range_suggestions(lrs, stable, smoothed)
    return LRRangeResult(
        lrs=lrs,
        losses=losses,
        suggestion_steepest=steepest,
        suggestion_max_stable=max_stable,
        smoothed=smoothed,
        initial_loss=initial,
        stable=stable,
        history=np.asarray(state.history.loss),
        unstable=unstable,
        first_unstable=first_unstable,
        sharpness=lam,
    )


def _check_range_options(
    smooth: int,
    epochs: int | None,
    steps: int | None,
    min_decrease: float,
    stability_threshold: float | str | None,
    transform: Any,
) -> tuple[int, float | None]:
    """:func:`lr_range_test`'s checked ``smooth`` and its stability threshold
    (``None``: no curvature check), after checking the budget and
    ``min_decrease``."""
    smooth = V.check_int(smooth, "smooth")
    if smooth % 2 == 0:
        raise ValueError(f"smooth must be an odd integer, got {smooth}.")
    if epochs is None and steps is None:
        raise ValueError("give a budget: epochs= or steps=.")
    if epochs is not None and steps is not None:
        raise ValueError(
            f"give epochs or steps, not both (got epochs={epochs}, steps={steps})."
        )
    if isinstance(min_decrease, bool) or not (
        isinstance(min_decrease, int | float) and 0 <= min_decrease < 1
    ):
        raise ValueError(f"min_decrease must be in [0, 1), got {min_decrease!r}.")
    if stability_threshold == "auto":
        threshold = 2.0 if transform is None or transform is transforms.sgd else None
    elif stability_threshold is None:
        threshold = None
    else:
        V.check_positive(stability_threshold, "stability_threshold")
        threshold = float(stability_threshold)
    return smooth, threshold


def _range_suggestions(
    lrs: np.ndarray, stable: np.ndarray, smoothed: np.ndarray
) -> tuple[float, float]:
    """``(steepest, max_stable)``: the stable rate where the smoothed loss falls
    fastest per log-rate, and the largest stable rate (NaN when none is)."""
    idx = np.flatnonzero(stable)
    if idx.size == 0:
        return float("nan"), float("nan")
    max_stable = float(lrs[idx[-1]])
    if idx.size == 1:
        return max_stable, max_stable
    slope = np.gradient(smoothed[idx], np.log(lrs[idx]))
    return float(lrs[idx[int(np.argmin(slope))]]), max_stable
