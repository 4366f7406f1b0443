"""gdjax.curvature: Lanczos extremes against dense eigendecompositions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gdjax import curvature as C


def _mixed_symmetric(n, seed):
    """A random symmetric matrix with eigenvalues of both signs (GOE-like)."""
    a = np.random.default_rng(seed).normal(size=(n, n))
    return (a + a.T) / np.sqrt(2 * n)


def _extremes(a, key, iters, v0=None):
    a = jnp.asarray(a)
    if v0 is None:
        v0 = jax.random.normal(key, (a.shape[0],), a.dtype)
    return C.lanczos_extremes(lambda v: a @ v, v0, iters=iters, key=key)


_extremes_jit = jax.jit(_extremes, static_argnames=("iters",))


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_signed_extremes_of_mixed_sign_matrices_match_eigvalsh(seed, x64):
    # n = 300 > iters = 80: the Krylov space is a small part of the space, so
    # this checks convergence, not an exact factorization.
    a = _mixed_symmetric(300, seed)
    eig = np.linalg.eigvalsh(a)
    assert eig[0] < 0 < eig[-1]
    out = _extremes_jit(a, jax.random.key(seed), 80)
    np.testing.assert_allclose(float(out.largest.value), eig[-1], rtol=1e-5)
    np.testing.assert_allclose(float(out.smallest.value), eig[0], rtol=1e-5)
    assert bool(out.largest.converged) and bool(out.smallest.converged)


def test_float32_extremes_and_exact_when_iters_reach_the_dimension():
    a = _mixed_symmetric(40, 5).astype(np.float32)
    eig = np.linalg.eigvalsh(a.astype(np.float64))
    for seed in range(3):
        out = _extremes_jit(a, jax.random.key(seed), 60)  # clamped to 40
        assert out.ritz_values.shape == (40,)
        np.testing.assert_allclose(out.ritz_values, eig, atol=2e-5)
        np.testing.assert_allclose(float(out.largest.value), eig[-1], rtol=1e-5)
        np.testing.assert_allclose(float(out.smallest.value), eig[0], rtol=1e-5)


def test_residual_is_the_true_residual_and_bounds_the_error(x64):
    a = _mixed_symmetric(300, 7)
    eig = np.linalg.eigvalsh(a)
    for iters in (10, 80):
        out = _extremes_jit(a, jax.random.key(0), iters)
        for pair in (out.largest, out.smallest):
            y, theta = np.asarray(pair.vector), float(pair.value)
            np.testing.assert_allclose(np.linalg.norm(y), 1.0, rtol=1e-12)
            true = np.linalg.norm(a @ y - theta * y)
            np.testing.assert_allclose(float(pair.residual), true, rtol=1e-5)
            # Krylov-Weinstein: an eigenvalue lies within the residual.
            assert np.min(np.abs(eig - theta)) <= true * (1 + 1e-9)
        # Too few steps for a 300-dimensional spectrum: not converged, and said
        # so; enough steps: converged.
        assert bool(out.largest.converged) == (iters == 80)


def test_symmetric_spectrum_does_not_depend_on_the_key():
    # Power iteration returned -0.218, 0.537, -0.854, -0.062 here (issue 16).
    a = np.diag([1.0, -1.0, 0.2]).astype(np.float32)
    for seed in range(8):
        out = _extremes_jit(a, jax.random.key(seed), 20)
        np.testing.assert_allclose(float(out.largest.value), 1.0, rtol=1e-6)
        np.testing.assert_allclose(float(out.smallest.value), -1.0, rtol=1e-6)


def test_invariant_start_restarts_and_zero_operator_is_finite():
    # Start on an eigenvector of diag(3, -2, 1, 5): the Krylov space is invariant
    # after one step; the random restart still finds both ends.
    a = np.diag([3.0, -2.0, 1.0, 5.0]).astype(np.float32)
    out = _extremes_jit(a, jax.random.key(0), 4, jnp.array([1.0, 0, 0, 0]))
    assert float(out.largest.value) == pytest.approx(5.0, rel=1e-6)
    assert float(out.smallest.value) == pytest.approx(-2.0, rel=1e-6)
    zero = _extremes_jit(np.zeros((5, 5), np.float32), jax.random.key(0), 5)
    assert float(zero.largest.value) == 0.0 and bool(zero.largest.converged)
    assert np.isfinite(np.asarray(zero.largest.vector)).all()
    # A zero start vector is replaced by a draw from the key.
    out = _extremes_jit(a, jax.random.key(1), 4, jnp.zeros(4))
    assert float(out.largest.value) == pytest.approx(5.0, rel=1e-6)


def test_warm_start_tracks_a_moving_matrix_like_a_cold_start(x64):
    # A_t = A + t E moves slowly; 3 Lanczos steps from the previous vector stay
    # on the top eigenvalue that 80 cold steps (and eigvalsh) give.
    a = _mixed_symmetric(300, 11) + np.diag(np.r_[3.0, np.zeros(299)])
    e = _mixed_symmetric(300, 12)
    v = _extremes_jit(a, jax.random.key(0), 80).largest.vector
    for t in np.linspace(0.0, 0.5, 11):
        at = a + t * e
        warm = _extremes_jit(at, jax.random.key(0), 3, v)
        v = warm.largest.vector
        cold = _extremes_jit(at, jax.random.key(1), 80)
        top = np.linalg.eigvalsh(at)[-1]
        np.testing.assert_allclose(float(cold.largest.value), top, rtol=1e-10)
        np.testing.assert_allclose(float(warm.largest.value), top, rtol=1e-5)


def test_under_vmap_each_member_is_its_own_run():
    mats = np.stack([_mixed_symmetric(40, s) for s in range(3)]).astype(np.float32)
    keys = jax.random.split(jax.random.key(0), 3)
    batched = jax.jit(jax.vmap(lambda a, k: _extremes(a, k, 60)))(mats, keys)
    for i in range(3):
        single = _extremes_jit(mats[i], keys[i], 60)
        np.testing.assert_allclose(
            batched.largest.value[i], single.largest.value, rtol=1e-5
        )
        np.testing.assert_allclose(
            batched.smallest.value[i], np.linalg.eigvalsh(mats[i])[0], rtol=1e-5
        )
