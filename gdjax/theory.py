r"""What theory predicts for gradient descent on quadratics and least squares.

Contract. On the quadratic

.. math:: f(w) = f^\star + \tfrac12 (w - w^\star)^\top H (w - w^\star),
   \qquad \mu = \lambda_{\min}(H) > 0, \quad L = \lambda_{\max}(H),

(least squares :math:`f(w) = \frac{1}{2n}\lVert Xw - y\rVert^2` is one, with
:math:`H = X^\top X / n`, see :func:`least_squares_spectrum`) gradient
descent's error obeys :math:`w_{t+1} - w^\star = (I - \eta H)(w_t - w^\star)`,
so every statement here is exact, not asymptotic, unless it says otherwise:

* :func:`gd_rate`: :math:`\lVert w_t - w^\star\rVert \le \rho^t
  \lVert w_0 - w^\star\rVert` and :math:`f(w_t) - f^\star \le \rho^{2t}
  (f(w_0) - f^\star)` with :math:`\rho = \max_i |1 - \eta\lambda_i|`;
* :func:`optimal_lr`: the :math:`\eta` minimizing :math:`\rho`;
* :func:`heavy_ball_optimal` / :func:`heavy_ball_rate`: Polyak's momentum;
* :func:`sgd_noise_floor`: where constant-step SGD stalls with label noise;
* :func:`compare_rate`: a recorded loss curve against a predicted rate.

Every function is written with ``jax.numpy``: it runs under ``jit`` and
``vmap`` (e.g. over a grid of learning rates). Concrete arguments are checked
on the host first (``mu > 0``, ``L >= mu``, ``lr > 0``).

References:
  Polyak, `Some methods of speeding up the convergence of iteration methods
  <https://doi.org/10.1016/0041-5553(64)90137-5>`_, 1964.

  Polyak, *Introduction to Optimization*, Optimization Software, 1987
  (chapters 1.4 and 3.2).

  Bach & Moulines, `Non-strongly-convex smooth stochastic approximation with
  convergence rate O(1/n) <https://arxiv.org/abs/1306.2119>`_, 2013.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gdjax import _validate as V
from gdjax._typing import ArrayLike

__all__ = [
    "HeavyBallStep",
    "OptimalStep",
    "RateComparison",
    "compare_rate",
    "gd_rate",
    "heavy_ball_optimal",
    "heavy_ball_rate",
    "least_squares_spectrum",
    "optimal_lr",
    "sgd_noise_floor",
]


def _positive(value: Any, name: str) -> None:
    if not V.is_tracer(value):
        V.check_positive(value, name)


def _check_mu_l(mu: Any, L: Any) -> None:
    _positive(mu, "mu")
    _positive(L, "L")
    if not V.is_tracer((mu, L)) and np.any(np.asarray(L) < np.asarray(mu)):
        raise ValueError(f"L must be >= mu, got mu={mu}, L={L}.")


def _check_eigenvalues(eigenvalues: Any) -> None:
    if not V.is_tracer(eigenvalues):
        arr = np.asarray(eigenvalues)
        if arr.ndim != 1 or arr.size == 0:
            raise ValueError(
                f"eigenvalues must be a non-empty 1-d array, got shape {arr.shape}."
            )
        V.check_nonnegative(arr, "eigenvalues")


def _float(x: ArrayLike) -> jax.Array:
    x = jnp.asarray(x)
    return x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(float)


def _array(x: ArrayLike) -> Any:
    """Lists to arrays on the host (no XLA program), so each jit sees one leaf."""
    return x if isinstance(x, (jax.Array, np.ndarray)) else np.asarray(x)


def gd_rate(eigenvalues: ArrayLike, lr: ArrayLike) -> jax.Array:
    r"""The contraction factor of gradient descent on a quadratic.

    .. math:: \rho(\eta) = \max_i |1 - \eta \lambda_i|,

    so that :math:`\lVert w_t - w^\star\rVert \le \rho^t \lVert w_0 -
    w^\star\rVert` and :math:`f(w_t) - f^\star \le \rho^{2t}(f(w_0) - f^\star)`
    for every :math:`t` (equality when :math:`w_0 - w^\star` lies along the
    extreme eigenvector). Descent converges iff :math:`\rho < 1`, i.e.
    :math:`0 < \eta < 2/L`.

    Args:
      eigenvalues: ``(d,)`` eigenvalues :math:`\lambda_i \ge 0` of the Hessian.
      lr: the step size :math:`\eta > 0`.

    Returns:
      :math:`\rho`, a scalar.

    Examples:
      >>> from gdjax.theory import gd_rate
      >>> float(gd_rate([1.0, 4.0], 0.4))  # max(|1 - 0.4|, |1 - 1.6|)
      0.6...
    """
    _check_eigenvalues(eigenvalues)
    _positive(lr, "lr")
    return _gd_rate(_array(eigenvalues), lr)


class OptimalStep(NamedTuple):
    r"""Gradient descent's best constant step on a quadratic.

    Attributes:
      learning_rate: :math:`\eta^\star = 2/(\mu + L)`.
      rate: :math:`\rho^\star = (\kappa - 1)/(\kappa + 1)`, :math:`\kappa = L/\mu`.
    """

    learning_rate: jax.Array
    rate: jax.Array


def optimal_lr(mu: ArrayLike, L: ArrayLike) -> OptimalStep:
    r"""The step size minimizing :func:`gd_rate` over a spectrum in :math:`[\mu, L]`.

    :math:`\rho(\eta) = \max(|1 - \eta\mu|, |1 - \eta L|)` is smallest where
    the two are equal, :math:`1 - \eta\mu = \eta L - 1`:

    .. math::
      \eta^\star = \frac{2}{\mu + L}, \qquad
      \rho^\star = \frac{L - \mu}{L + \mu} = \frac{\kappa - 1}{\kappa + 1}.

    Args:
      mu: smallest eigenvalue :math:`\mu > 0`.
      L: largest eigenvalue :math:`L \ge \mu`.

    Returns:
      :class:`OptimalStep` ``(learning_rate, rate)``.

    Examples:
      >>> from gdjax.theory import optimal_lr
      >>> step = optimal_lr(1.0, 9.0)
      >>> float(step.learning_rate), float(step.rate)
      (0.2, 0.8)

    References:
      Polyak, *Introduction to Optimization*, 1987, chapter 1.4.
    """
    _check_mu_l(mu, L)
    return _optimal_lr(mu, L)


class HeavyBallStep(NamedTuple):
    r"""Polyak's heavy ball tuned for a quadratic.

    Attributes:
      learning_rate: :math:`\eta = 4/(\sqrt L + \sqrt\mu)^2`.
      momentum: :math:`\beta = \big((\sqrt\kappa - 1)/(\sqrt\kappa + 1)\big)^2`.
      rate: :math:`\sqrt\beta = (\sqrt\kappa - 1)/(\sqrt\kappa + 1)`.
    """

    learning_rate: jax.Array
    momentum: jax.Array
    rate: jax.Array


def heavy_ball_optimal(mu: ArrayLike, L: ArrayLike) -> HeavyBallStep:
    r"""Polyak's optimal heavy-ball parameters for a spectrum in :math:`[\mu, L]`.

    Heavy ball, :math:`w_{t+1} = w_t - \eta\nabla f(w_t) + \beta(w_t -
    w_{t-1})` (``gd.sgd(eta, momentum=beta)``), acts on each eigendirection
    through the companion matrix with characteristic polynomial
    :math:`z^2 - (1 + \beta - \eta\lambda) z + \beta`. With

    .. math::
      \eta = \frac{4}{(\sqrt L + \sqrt\mu)^2}, \qquad
      \beta = \Big(\frac{\sqrt\kappa - 1}{\sqrt\kappa + 1}\Big)^2,

    both roots have modulus :math:`\sqrt\beta` for every
    :math:`\lambda \in [\mu, L]`, so the error decays like
    :math:`\rho^t = \big((\sqrt\kappa - 1)/(\sqrt\kappa + 1)\big)^t`
    (asymptotically: at the ends of the spectrum the roots coincide and a
    factor linear in :math:`t` appears).

    Args:
      mu: smallest eigenvalue :math:`\mu > 0`.
      L: largest eigenvalue :math:`L \ge \mu`.

    Returns:
      :class:`HeavyBallStep` ``(learning_rate, momentum, rate)``.

    Examples:
      >>> from gdjax.theory import heavy_ball_optimal
      >>> hb = heavy_ball_optimal(1.0, 9.0)  # sqrt(kappa) = 3
      >>> float(hb.learning_rate), float(hb.momentum), float(hb.rate)
      (0.25, 0.25, 0.5)

    References:
      Polyak, `Some methods of speeding up the convergence of iteration
      methods <https://doi.org/10.1016/0041-5553(64)90137-5>`_, 1964.
    """
    _check_mu_l(mu, L)
    return _heavy_ball_optimal(mu, L)


def heavy_ball_rate(
    eigenvalues: ArrayLike, lr: ArrayLike, momentum: ArrayLike
) -> jax.Array:
    r"""The asymptotic contraction factor of heavy ball on a quadratic.

    .. math::
      \rho = \max_i \max\{|z| : z^2 - (1 + \beta - \eta\lambda_i) z + \beta = 0\},

    the spectral radius of the iteration on :math:`(w_t - w^\star, w_{t-1} -
    w^\star)`: :math:`\lVert w_t - w^\star\rVert = O(t \rho^t)`. With
    :math:`\beta = 0` it is :func:`gd_rate`.

    Args:
      eigenvalues: ``(d,)`` Hessian eigenvalues.
      lr: :math:`\eta > 0`.
      momentum: :math:`\beta \in [0, 1)`.

    Returns:
      :math:`\rho`, a scalar.

    Examples:
      >>> from gdjax.theory import heavy_ball_rate
      >>> round(float(heavy_ball_rate([1.0, 4.0, 9.0], 0.25, 0.25)), 4)
      0.5
    """
    _check_eigenvalues(eigenvalues)
    _positive(lr, "lr")
    if not V.is_tracer(momentum):
        V.check_real(momentum, "momentum", low=0.0, high=1.0, high_inclusive=False)
    return _heavy_ball_rate(_array(eigenvalues), lr, momentum)


def sgd_noise_floor(
    eigenvalues: ArrayLike,
    lr: ArrayLike,
    noise_variance: ArrayLike,
    *,
    approximate: bool = False,
) -> jax.Array:
    r"""The stationary excess loss of constant-step, one-sample SGD on least squares.

    Model. :math:`x \sim \mathcal N(0, H)`, :math:`y = x^\top w^\star +
    \varepsilon` with :math:`\varepsilon \sim \mathcal N(0, \sigma^2)`
    independent of :math:`x`; :math:`f(w) = \frac12\mathbb E(x^\top w -
    y)^2 = \frac{\sigma^2}{2} + \frac12 \delta^\top H \delta`,
    :math:`\delta = w - w^\star`. SGD draws a fresh :math:`(x_t, y_t)` each
    step (streaming; not passes over a finite set):

    .. math::
      \delta_{t+1} = (I - \eta x_t x_t^\top)\delta_t + \eta x_t \varepsilon_t .

    Derivation. With :math:`C_t = \mathbb E\,\delta_t\delta_t^\top` and the
    Gaussian fourth moment :math:`\mathbb E[x x^\top C x x^\top] = 2HCH +
    \operatorname{tr}(HC) H`,

    .. math::
      C_{t+1} = C_t - \eta(HC_t + C_tH) + \eta^2\big(2HC_tH
        + \operatorname{tr}(HC_t)H + \sigma^2 H\big).

    At a fixed point, in the eigenbasis of :math:`H`, the off-diagonal
    entries vanish and :math:`C_{ii} = \eta(s + \sigma^2) / (2(1 -
    \eta\lambda_i))` with :math:`s = \operatorname{tr}(HC) = \sum_i
    \lambda_i C_{ii}`. Solving for :math:`s` gives the excess loss
    :math:`\mathbb E f - f^\star = s/2`:

    .. math::
      \mathbb E f(w_\infty) - f^\star = \frac{\sigma^2}{2}\,\frac{a}{1 - a},
      \qquad a = \sum_i \frac{\eta\lambda_i}{2(1 - \eta\lambda_i)} ,

    valid when :math:`\eta\lambda_i < 1` for all :math:`i` and :math:`a < 1`
    (otherwise the second moments diverge: NaN is returned). For small
    :math:`\eta` (``approximate=True``),
    :math:`a \approx \eta\operatorname{tr}(H)/2` and

    .. math:: \mathbb E f - f^\star \approx \frac{\eta\sigma^2\operatorname{tr}H}{4}.

    The floor is an average over the stationary distribution; a single run
    fluctuates around it. For non-Gaussian :math:`x` the fourth moment, and
    so the exact constant, change; the small-step form does not.

    Args:
      eigenvalues: ``(d,)`` eigenvalues of :math:`H = \mathbb E x x^\top`.
      lr: :math:`\eta > 0`.
      noise_variance: :math:`\sigma^2 \ge 0`.
      approximate: return the small-step form.

    Returns:
      The excess loss :math:`\mathbb E f(w_\infty) - f^\star`, a scalar.

    Examples:
      >>> from gdjax.theory import sgd_noise_floor
      >>> round(float(sgd_noise_floor([1.0, 1.0], 0.5, 1.0)), 4)  # a = 1/2 + 1/2
      nan
      >>> round(float(sgd_noise_floor([1.0], 0.5, 1.0)), 4)  # a = 1/2
      0.5
      >>> round(float(sgd_noise_floor([1.0], 0.01, 1.0, approximate=True)), 4)
      0.0025

    References:
      Bach & Moulines, `Non-strongly-convex smooth stochastic approximation
      with convergence rate O(1/n) <https://arxiv.org/abs/1306.2119>`_, 2013.
    """
    _check_eigenvalues(eigenvalues)
    _positive(lr, "lr")
    if not V.is_tracer(noise_variance):
        V.check_nonnegative(noise_variance, "noise_variance")
    return _sgd_noise_floor(
        _array(eigenvalues), lr, noise_variance, approximate=bool(approximate)
    )


def least_squares_spectrum(x: ArrayLike) -> jax.Array:
    r"""The Hessian eigenvalues of least squares, ascending.

    .. math:: f(w) = \frac{1}{2n}\lVert Xw - y\rVert^2, \qquad
       \nabla^2 f = \frac{X^\top X}{n},

    whatever :math:`y`. ``(mu, L) = spectrum[0], spectrum[-1]`` feed
    :func:`optimal_lr` and :func:`heavy_ball_optimal`. (For a model with a
    bias, append a column of ones to :math:`X`.)

    Args:
      x: ``(n, d)`` design matrix.

    Returns:
      ``(d,)`` eigenvalues of :math:`X^\top X / n`, ascending
      (``jnp.linalg.eigvalsh``).

    Examples:
      >>> import jax.numpy as jnp
      >>> from gdjax.theory import least_squares_spectrum
      >>> least_squares_spectrum(jnp.array([[2.0, 0.0], [0.0, 1.0]]))
      Array([0.5, 2. ], dtype=float32)
    """
    if not V.is_tracer(x):
        shape = np.shape(x)
        if len(shape) != 2 or shape[0] == 0:
            raise ValueError(f"x must be an (n, d) matrix with n >= 1, got {shape}.")
    return _least_squares_spectrum(_array(x))


class RateComparison(NamedTuple):
    r"""What :func:`compare_rate` returns.

    Attributes:
      ratio: ``(T,)`` :math:`(g_t/g_0)/\rho^{2t}`; at most 1 wherever the run
        meets the bound (0 where :math:`g_t = 0`; NaN where the history is NaN
        or :math:`g_t < 0`, i.e. ``f_star`` is too large or rounding).
      max_ratio: the largest finite ratio.
    """

    ratio: jax.Array
    max_ratio: jax.Array


def compare_rate(
    history_loss: ArrayLike, f_star: ArrayLike, rho: ArrayLike
) -> RateComparison:
    r"""A loss curve against the predicted linear rate, epoch by epoch.

    With gaps :math:`g_t = f_t - f^\star` from a history (``history.loss`` of
    full-batch ``gd.fit``: :math:`f_t` is the loss at the parameters entering
    step :math:`t`, so :math:`f_0` is the initial loss),

    .. math:: r_t = \frac{g_t / g_0}{\rho^{2t}},

    computed in log space (no underflow of :math:`\rho^{2t}`). Gradient
    descent on a quadratic with :math:`\rho` = :func:`gd_rate` has
    :math:`r_t \le 1` for every :math:`t`; ``max_ratio <= 1 + tol`` is the
    test "meets the bound each epoch". Float rounding floors :math:`g_t`
    near :math:`\epsilon f^\star`: compare over epochs where the gap is well
    above it.

    Args:
      history_loss: ``(T,)`` loss per epoch (NaN entries ignored).
      f_star: the minimum :math:`f^\star`.
      rho: the per-step contraction factor of the error.

    Returns:
      :class:`RateComparison` ``(ratio, max_ratio)``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from gdjax.theory import compare_rate
      >>> loss = 1.0 + 0.5 ** (2 * jnp.arange(5.0))  # gaps fall by 1/4
      >>> compare_rate(loss, 1.0, 0.5).max_ratio
      Array(1., dtype=float32)
    """
    if not V.is_tracer(history_loss):
        shape = np.shape(history_loss)
        if len(shape) != 1 or shape[0] == 0:
            raise ValueError(
                f"history_loss must be a non-empty 1-d array, got shape {shape}."
            )
        if not V.is_tracer(f_star):
            gap0 = float(np.asarray(history_loss)[0]) - float(f_star)
            if not gap0 > 0:
                raise ValueError(
                    "history_loss[0] must be above f_star (a positive initial gap), "
                    f"got a gap of {gap0!r}."
                )
    _positive(rho, "rho")
    return _compare_rate(_array(history_loss), f_star, rho)


# The formulas run as small jitted programs: one compilation per shape and
# dtype (rather than one per eager jnp operation), inlined under an outer jit.


@jax.jit
def _gd_rate(eigenvalues, lr):
    lam = _float(eigenvalues)
    return jnp.max(jnp.abs(1 - jnp.asarray(lr, lam.dtype) * lam))


@jax.jit
def _optimal_lr(mu, L):
    mu, L = _float(mu), _float(L)
    return OptimalStep(2 / (mu + L), (L - mu) / (L + mu))


@jax.jit
def _heavy_ball_optimal(mu, L):
    mu, L = _float(mu), _float(L)
    sq_mu, sq_l = jnp.sqrt(mu), jnp.sqrt(L)
    rate = (sq_l - sq_mu) / (sq_l + sq_mu)
    return HeavyBallStep(4 / (sq_l + sq_mu) ** 2, rate**2, rate)


@jax.jit
def _heavy_ball_rate(eigenvalues, lr, momentum):
    lam = _float(eigenvalues)
    lr = jnp.asarray(lr, lam.dtype)
    beta = jnp.asarray(momentum, lam.dtype)
    a = 1 + beta - lr * lam
    disc = a * a - 4 * beta
    root = jnp.sqrt(jnp.maximum(disc, 0))
    real = jnp.maximum(jnp.abs(a + root), jnp.abs(a - root)) / 2
    return jnp.max(jnp.where(disc < 0, jnp.sqrt(beta), real))


@functools.partial(jax.jit, static_argnames="approximate")
def _sgd_noise_floor(eigenvalues, lr, noise_variance, approximate):
    lam = _float(eigenvalues)
    lr = jnp.asarray(lr, lam.dtype)
    sigma2 = jnp.asarray(noise_variance, lam.dtype)
    if approximate:
        return lr * sigma2 * jnp.sum(lam) / 4
    step = lr * lam
    a = jnp.sum(step / (2 * (1 - step)))
    ok = jnp.all(step < 1) & (a < 1)
    return jnp.where(ok, sigma2 / 2 * a / jnp.where(ok, 1 - a, 1), jnp.nan)


@jax.jit
def _least_squares_spectrum(x):
    x = _float(x)
    return jnp.linalg.eigvalsh(x.T @ x / x.shape[0])


@jax.jit
def _compare_rate(history_loss, f_star, rho):
    loss = _float(history_loss)
    dtype = loss.dtype
    gap = loss - jnp.asarray(f_star, dtype)
    t = jnp.arange(loss.shape[0], dtype=dtype)
    log_ratio = jnp.log(gap / gap[0]) - 2 * t * jnp.log(jnp.asarray(rho, dtype))
    ratio = jnp.where(gap > 0, jnp.exp(log_ratio), jnp.where(gap == 0, 0.0, jnp.nan))
    ratio = jnp.where(jnp.isnan(loss), jnp.nan, ratio).astype(dtype)
    return RateComparison(ratio, jnp.nanmax(ratio))
