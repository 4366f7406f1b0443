r"""Extreme eigenvalues of a Hessian, by Lanczos on Hessian-vector products.

Contract. Everything here is pure maths on flat vectors and linear maps:

* :func:`lanczos_extremes` takes ``matvec: v -> A v`` for a symmetric
  :math:`A` of size :math:`p` and returns the largest *and* smallest
  (signed, algebraic) eigenvalue estimates of :math:`A`, their unit vectors,
  and for each a residual :math:`\lVert A y - \theta y\rVert` with a
  ``converged`` flag. The iteration count is static, every loop is a
  ``lax.fori_loop``, so it runs under ``jit`` and ``vmap``.
* :func:`hessian_extremes` applies it to :math:`\nabla^2_\theta L(\theta; B)`
  through forward-over-reverse products on the flattened parameters
  (:func:`flat_hvp`).
* A start vector can be given (``init_vector``): the warm start of a monitor
  that carries the previous eigenvector from one measurement to the next.

Why Lanczos and not power iteration: power iteration converges to the
eigenvalue of largest *magnitude*, which on an indefinite Hessian (any network
away from a minimum) can be negative, and on a symmetric spectrum depends on
the start vector. Lanczos builds the Krylov space
:math:`\mathcal{K}_k = \operatorname{span}\{v, Av, \dots, A^{k-1}v\}` and
returns the extreme Ritz values of :math:`A` on it, which converge to
:math:`\lambda_{\max}` and :math:`\lambda_{\min}` from inside, both at once,
at least as fast as power iteration on :math:`A - cI` with the best shift.

The residual is a certificate: for a unit Ritz vector :math:`y` with Ritz value
:math:`\theta`, some eigenvalue of :math:`A` lies in
:math:`[\theta - r, \theta + r]`, :math:`r = \lVert A y - \theta y \rVert`
(Krylov-Weinstein), and near convergence the error is about :math:`r^2/\delta`
with :math:`\delta` the gap to the next eigenvalue. It cannot certify that no
eigenvalue lies beyond :math:`\theta` (the start vector could be orthogonal
to its eigenvector; a random start is, with probability zero).

References:
  Lanczos, `An iteration method for the solution of the eigenvalue problem of
  linear differential and integral operators
  <https://doi.org/10.6028/jres.045.026>`_, 1950.

  Golub & Van Loan, *Matrix Computations*, 4th ed., 2013, sections 10.1-10.3
  (full reorthogonalization, the residual of a Ritz pair).

  Ghorbani, Krishnan & Xiao, `An Investigation into Neural Net Optimization via
  Hessian Eigenvalue Density <https://arxiv.org/abs/1901.10159>`_, 2019.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from gdjax._typing import Batch, Key, LossFn, Params

__all__ = [
    "EigenPair",
    "Extremes",
    "flat_hvp",
    "hessian_extremes",
    "lanczos_extremes",
]


class EigenPair(NamedTuple):
    r"""One Ritz pair of a symmetric operator.

    Attributes:
      value: the Ritz value :math:`\theta` (signed).
      vector: the unit Ritz vector :math:`y`, flat ``(p,)``.
      residual: :math:`\lVert A y - \theta y\rVert`; an eigenvalue of
        :math:`A` lies within this distance of ``value``.
      converged: ``residual <= tol * scale``, with ``scale`` the largest
        Ritz value in magnitude (an estimate of :math:`\lVert A\rVert_2`).
    """

    value: jax.Array
    vector: jax.Array
    residual: jax.Array
    converged: jax.Array


class Extremes(NamedTuple):
    """What :func:`lanczos_extremes` returns.

    Attributes:
      largest: the pair of the largest algebraic eigenvalue.
      smallest: the pair of the smallest algebraic eigenvalue.
      ritz_values: ``(k,)`` all Ritz values, ascending.
    """

    largest: EigenPair
    smallest: EigenPair
    ritz_values: jax.Array


def _orthogonalize(basis: jax.Array, w: jax.Array) -> jax.Array:
    """``w`` minus its projection on the rows of ``basis`` (two passes)."""
    for _ in range(2):
        w = w - basis.T @ (basis @ w)
    return w


def lanczos_extremes(
    matvec: Callable[[jax.Array], jax.Array],
    v0: jax.Array,
    *,
    iters: int,
    key: Key,
    tol: float = 1e-3,
) -> Extremes:
    r"""The largest and smallest eigenpairs of a symmetric ``matvec``, by Lanczos.

    With :math:`q_1 = v_0/\lVert v_0\rVert` and :math:`k` = ``min(iters, p)``
    products,

    .. math::
      w_j = A q_j, \quad \alpha_j = q_j^\top w_j, \quad
      r_j = (I - Q_j Q_j^\top) w_j, \quad \beta_j = \lVert r_j\rVert, \quad
      q_{j+1} = r_j / \beta_j,

    with full reorthogonalization against all previous :math:`q` (two
    Gram-Schmidt passes: without it, float32 Lanczos produces ghost copies of
    converged eigenvalues). Then :math:`T_k = \operatorname{tridiag}(\beta,
    \alpha, \beta)` is diagonalized, :math:`T_k s_i = \theta_i s_i`, the
    extreme Ritz vectors are :math:`y = Q_k s`, and their residuals are
    :math:`\lVert A y - \theta y\rVert = \beta_k |s_{i,k}|` (no extra product).

    If :math:`\beta_j` vanishes (the Krylov space is invariant: a start vector
    in a few eigenvectors' span, or :math:`A = 0`), the next :math:`q` is a
    random vector (from ``key``) orthogonalized against the basis, with
    :math:`\beta_j = 0` in :math:`T`, so the other eigenvalues are still found.

    Memory: the basis, :math:`(k+1) \times p`.

    Args:
      matvec: ``v -> A v`` on ``(p,)`` vectors, :math:`A` symmetric.
      v0: ``(p,)`` start vector (need not be normalized; a zero vector is
        replaced by a draw from ``key``).
      iters: :math:`k \ge 1` products (static; clamped to :math:`p`, where the
        Krylov space is the whole space and the result is exact).
      key: PRNG key of the restarts (and of the start if ``v0`` is zero).
      tol: relative residual below which a pair counts as converged.

    Returns:
      :class:`Extremes` ``(largest, smallest, ritz_values)``.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from gdjax.curvature import lanczos_extremes
      >>> a = jnp.diag(jnp.array([1.0, -1.0, 0.2]))
      >>> out = lanczos_extremes(lambda v: a @ v, jnp.ones(3), iters=3,
      ...                        key=jax.random.key(0))
      >>> round(float(out.largest.value), 5), round(float(out.smallest.value), 5)
      (1.0, -1.0)
    """
    (p,) = v0.shape
    k = min(int(iters), p)
    dtype = v0.dtype
    eps = jnp.finfo(dtype).eps

    # The fallback start and the restart direction: a generic vector from a
    # cheap hash of the index (two key-derived phases), not p Gaussian draws,
    # which cost more than a small Hessian-vector product on CPU.
    phase = jax.random.uniform(key, (2,), dtype, 1.0, 2.0)
    idx = jnp.arange(p, dtype=dtype)
    fallback = jnp.sin(idx * phase[0] * 12.9898 + phase[1] * 78.233)
    z_restart = jnp.sin(idx * phase[1] * 39.3468 + phase[0] * 11.135)
    norm0 = jnp.linalg.norm(v0)
    q0 = jnp.where(
        norm0 > 0,
        v0 / jnp.where(norm0 > 0, norm0, 1),
        fallback / jnp.linalg.norm(fallback),
    )
    basis = jnp.zeros((k + 1, p), dtype).at[0].set(q0)
    alpha = jnp.zeros((k,), dtype)
    beta = jnp.zeros((k,), dtype)

    def body(j, carry):
        basis, alpha, beta, scale = carry
        q = basis[j]
        w = matvec(q)
        a = jnp.vdot(q, w)
        scale = jnp.maximum(scale, jnp.linalg.norm(w))
        r = _orthogonalize(basis, w)
        b = jnp.linalg.norm(r)
        # An invariant Krylov space: restart with a random orthogonal direction.
        broke = b <= 4 * eps * scale

        # Shifted copies of one generic vector are independent directions (a
        # draw per step would double the compiled loop).
        def restart():
            z = _orthogonalize(basis, jnp.roll(z_restart, j))
            return z / jnp.maximum(jnp.linalg.norm(z), jnp.finfo(dtype).tiny)

        # lax.cond: the restart's work is skipped unless needed (under vmap
        # both branches run, as a select).
        nxt = jax.lax.cond(broke, restart, lambda: r / jnp.where(broke, 1, b))
        basis = basis.at[j + 1].set(nxt)
        alpha = alpha.at[j].set(a)
        beta = beta.at[j].set(jnp.where(broke, 0, b))
        return basis, alpha, beta, scale

    basis, alpha, beta, _ = jax.lax.fori_loop(
        0, k, body, (basis, alpha, beta, jnp.zeros((), dtype))
    )
    off = beta[: k - 1]
    tri = jnp.diag(alpha) + jnp.diag(off, 1) + jnp.diag(off, -1)
    theta, s = jnp.linalg.eigh(tri)
    spread = jnp.maximum(jnp.abs(theta[0]), jnp.abs(theta[-1]))

    def pair(i):
        y = basis[:k].T @ s[:, i]
        y = y / jnp.linalg.norm(y)
        res = jnp.abs(beta[k - 1] * s[k - 1, i])
        return EigenPair(theta[i], y, res, res <= tol * spread)

    return Extremes(pair(k - 1), pair(0), theta)


def flat_hvp(
    loss: LossFn, params: Params, batch: Batch, *, linearize: bool = True
) -> tuple[jax.Array, Callable[[jax.Array], jax.Array]]:
    """``(flat params, v -> H v)`` on flat vectors, forward-over-reverse.

    With ``linearize=True`` the gradient's forward pass runs once
    (``jax.linearize``) and each product re-runs only its tangent: the choice
    for many products (Lanczos, ``vmap`` over probes). With ``False`` each
    product is a fresh ``jax.jvp`` of the gradient, forward pass included
    (on a busy 2-core CPU the two measured within noise of each other inside
    Lanczos on an MLP 64-256-256-10 with 128 examples).
    """
    flat, unravel = ravel_pytree(params)

    def flat_grad(x):
        return ravel_pytree(jax.grad(loss)(unravel(x), batch))[0]

    if linearize:
        _, product = jax.linearize(flat_grad, flat)
    else:

        def product(v):
            return jax.jvp(flat_grad, (flat,), (v,))[1]

    return flat, product


def hessian_extremes(
    loss: LossFn,
    params: Params,
    batch: Batch,
    *,
    iters: int,
    key: Key,
    init_vector: jax.Array | None = None,
    tol: float = 1e-3,
) -> Extremes:
    r"""The extreme eigenpairs of :math:`\nabla^2_\theta L(\theta; B)`, by Lanczos.

    :func:`lanczos_extremes` on the Hessian-vector product of ``loss`` at
    ``params`` on ``batch`` (forward-over-reverse through ``jax.linearize``:
    see :func:`flat_hvp`), in the flattened parameter space of
    ``jax.flatten_util.ravel_pytree``.

    Args:
      loss: ``loss(params, batch) -> scalar``, twice differentiable.
      params: any pytree of float arrays.
      batch: the data.
      iters: Lanczos steps, each one Hessian-vector product (static).
      key: PRNG key of the start vector (when ``init_vector`` is None) and of
        restarts.
      init_vector: a flat ``(p,)`` start vector (warm start), or None for a
        Gaussian draw from ``key``.
      tol: relative residual of convergence.

    Returns:
      :class:`Extremes`; the vectors are flat, in ``ravel_pytree`` order.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from gdjax.curvature import hessian_extremes
      >>> loss = lambda p, a: 0.5 * p @ a @ p
      >>> a = jnp.diag(jnp.array([2.0, -3.0, 0.5]))
      >>> out = hessian_extremes(loss, jnp.ones(3), a, iters=3,
      ...                        key=jax.random.key(0))
      >>> round(float(out.largest.value), 5), round(float(out.smallest.value), 5)
      (2.0, -3.0)
    """
    flat, product = flat_hvp(loss, params, batch)
    if init_vector is None:
        v0 = jax.random.normal(key, flat.shape, flat.dtype)
    else:
        v0 = jnp.asarray(init_vector, flat.dtype)
    return lanczos_extremes(
        product, v0, iters=iters, key=jax.random.fold_in(key, 1), tol=tol
    )
