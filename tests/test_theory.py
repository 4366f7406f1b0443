"""gdjax.theory: predicted rates against gd.fit runs, and the formulas themselves."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import least_squares_problem, ls_loss, ls_value

import gdjax as gd
from gdjax import theory

KEY = jax.random.key(0)


def _design(n, eigenvalues, seed=0):
    """x (n, d) with X^T X / n having exactly ``eigenvalues``, and y."""
    rng = np.random.default_rng(seed)
    d = len(eigenvalues)
    u, _ = np.linalg.qr(rng.normal(size=(n, d)))
    v, _ = np.linalg.qr(rng.normal(size=(d, d)))
    x = np.sqrt(n) * (u * np.sqrt(eigenvalues)) @ v.T
    y = x @ rng.normal(size=d) + 0.3 * rng.normal(size=n)
    w_star = np.linalg.lstsq(x, y, rcond=None)[0]
    return (jnp.asarray(x), jnp.asarray(y)), w_star


def _run(data, lr, epochs, momentum=0.0, monitors=None):
    d = data[0].shape[1]
    return gd.fit(
        ls_loss,
        {"w": jnp.zeros(d)},
        data,
        gd.sgd(lr, momentum=momentum),
        key=KEY,
        epochs=epochs,
        monitors=monitors,
    )


def test_full_batch_descent_meets_the_rate_each_epoch(x64):
    # Gaussian least squares (spectrum from the data), then a design with
    # condition number 25 where the rate is slow enough to watch for 40 epochs.
    problems = [
        (*least_squares_problem(n=64, d=4, dtype=np.float64)[:2], False),
        (*_design(96, [0.2, 0.7, 1.5, 3.0, 5.0], seed=2), True),
    ]
    for data, w_star, tight in problems:
        eigs = theory.least_squares_spectrum(data[0])
        mu, L = float(eigs[0]), float(eigs[-1])
        f_star = ls_value(w_star, *data)
        opt = float(theory.optimal_lr(mu, L).learning_rate)
        for lr in [0.5 / L, 1 / L, opt, 1.9 / L]:
            rho = theory.gd_rate(eigs, lr)
            r = _run(data, lr, epochs=40)  # one program: lr is an array
            # Epochs while the predicted gap stays above 1e-9 of the initial one.
            t = int(min(40, np.log(1e-9) / (2 * np.log(float(rho)))))
            # (The whole history goes in, one shape, one program; past t the
            # gap is rounding and its ratio means nothing.)
            check = theory.compare_rate(r.history.loss, f_star, rho)
            assert check.ratio.shape == (40,)
            assert np.max(np.asarray(check.ratio)[:t]) <= 1 + 1e-8, lr
            if tight:  # the slowest mode dominates within the 40 epochs
                # The bound is tight: a rate 5% better than predicted is broken.
                faster = theory.compare_rate(r.history.loss, f_star, 0.95 * rho)
                assert np.max(np.asarray(faster.ratio)[:t]) > 1, lr


def test_optimal_lr_beats_nearby_values(x64):
    # kappa = 4, so that 1.2 x optimal is still below 2/L (it needs mu > L/5).
    eigs = [1.0, 1.5, 2.5, 4.0]
    data, w_star = _design(128, eigs)
    step = theory.optimal_lr(1.0, 4.0)
    np.testing.assert_allclose([step.learning_rate, step.rate], [0.4, 0.6])
    np.testing.assert_allclose(
        theory.gd_rate(eigs, step.learning_rate), step.rate, rtol=1e-12
    )
    f_star = ls_value(w_star, *data)
    gaps = {}
    for s in (0.8, 1.0, 1.2):
        r = _run(data, s * float(step.learning_rate), 20)
        gaps[s] = ls_value(r.params["w"], *data) - f_star
    assert gaps[1.0] < 0.1 * min(gaps[0.8], gaps[1.2]), gaps


def test_heavy_ball_optimal_rate_is_observed(x64):
    eigs = [1.0, 2.0, 5.0, 12.0, 25.0]
    data, w_star = _design(64, eigs, seed=1)
    hb = theory.heavy_ball_optimal(1.0, 25.0)
    np.testing.assert_allclose(
        [hb.learning_rate, hb.momentum, hb.rate],
        [4 / 36, (4 / 6) ** 2, 4 / 6],
        rtol=1e-12,
    )
    np.testing.assert_allclose(
        theory.heavy_ball_rate(eigs, hb.learning_rate, hb.momentum), hb.rate, rtol=1e-7
    )
    dist = {"dist": lambda p, _: jnp.linalg.norm(p["w"] - w_star)}
    r = _run(data, float(hb.learning_rate), 81, float(hb.momentum), dist)
    e = np.asarray(r.history.monitors["dist"])
    observed = (e[80] / e[40]) ** (1 / 40)
    # Repeated roots at mu and L add a factor t: (80/40)^(1/40) = 1.018.
    assert 0.98 * float(hb.rate) < observed < 1.04 * float(hb.rate)
    gd_opt = theory.optimal_lr(1.0, 25.0)
    plain = _run(data, float(gd_opt.learning_rate), 81, monitors=dist)
    assert e[80] < 1e-3 * float(plain.history.monitors["dist"][80])


def test_heavy_ball_rate_without_momentum_is_gd_rate():
    eigs = jnp.array([0.3, 1.0, 4.0])
    for lr in (0.1, 0.3, 0.45):
        np.testing.assert_allclose(
            theory.heavy_ball_rate(eigs, lr, 0.0), theory.gd_rate(eigs, lr), rtol=1e-6
        )


@functools.partial(jax.jit, static_argnames=("steps", "chains"))
def _streaming_sgd(key, h, lr, sigma, steps, chains):
    """Time-averaged excess loss 1/2 d^T H d over the last half, per chain.

    One-sample SGD on fresh draws x ~ N(0, diag h), y = x.w* + sigma eps, run
    for ``chains`` independent chains side by side (errors d = w - w*, d_0 = 0).
    """
    d = h.shape[0]
    z = jax.random.normal(key, (steps, chains, d + 1), h.dtype)

    def step(delta, z_t):
        x, eps = jnp.sqrt(h)[None, :] * z_t[:, :d], sigma * z_t[:, d]
        resid = jnp.sum(x * delta, axis=1) - eps
        delta = delta - lr * x * resid[:, None]
        return delta, 0.5 * jnp.sum(delta * delta * h[None, :], axis=1)

    _, excess = jax.lax.scan(step, jnp.zeros((chains, d), h.dtype), z)
    return jnp.mean(excess[steps // 2 :], axis=0)


def test_sgd_noise_floor_matches_streaming_sgd(x64):
    h = jnp.array([1.0, 0.5, 0.25, 0.1])
    lr, sigma = 0.2, 1.0
    exact = float(theory.sgd_noise_floor(h, lr, sigma**2))
    approx = float(theory.sgd_noise_floor(h, lr, sigma**2, approximate=True))
    np.testing.assert_allclose(approx, lr * sigma**2 * 1.85 / 4)
    per_chain = np.asarray(
        _streaming_sgd(jax.random.key(11), h, lr, sigma, steps=2000, chains=256)
    )
    mean, se = per_chain.mean(), per_chain.std() / np.sqrt(256)
    assert abs(mean - exact) < 4 * se
    assert abs(mean - approx) > 10 * se  # the small-step form is off at this step
    # Beyond the stability of the second moments there is no floor.
    assert np.isnan(float(theory.sgd_noise_floor(h, 1.2, 1.0)))


def test_theory_functions_vmap_and_jit():
    mus = jnp.array([0.1, 0.5, 1.0])
    ls = jnp.array([1.0, 2.0, 10.0])
    steps = jax.jit(jax.vmap(theory.optimal_lr))(mus, ls)
    np.testing.assert_allclose(steps.learning_rate, 2 / (mus + ls), rtol=1e-6)
    hb = jax.vmap(theory.heavy_ball_optimal)(mus, ls)
    assert hb.momentum.shape == (3,)
    lrs = jnp.array([0.1, 0.2, 0.3])
    rates = jax.vmap(theory.gd_rate, in_axes=(None, 0))(jnp.array([1.0, 3.0]), lrs)
    np.testing.assert_allclose(rates, [0.9, 0.8, 0.7], rtol=1e-6)
    floors = jax.vmap(theory.sgd_noise_floor, in_axes=(None, 0, None))(
        jnp.array([1.0]), lrs, 1.0
    )
    assert floors.shape == (3,)


def test_compare_rate_flags_a_slow_run():
    loss = 1.0 + 0.9 ** (2 * jnp.arange(10.0))
    assert float(theory.compare_rate(loss, 1.0, 0.9).max_ratio) == pytest.approx(1.0)
    assert float(theory.compare_rate(loss, 1.0, 0.8).max_ratio) > 2
    nan_tail = loss.at[5:].set(jnp.nan)
    out = theory.compare_rate(nan_tail, 1.0, 0.9)
    assert np.isnan(out.ratio[5:]).all() and np.isfinite(float(out.max_ratio))


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: theory.optimal_lr(0.0, 1.0), "mu"),
        (lambda: theory.optimal_lr(2.0, 1.0), "L must be >= mu"),
        (lambda: theory.heavy_ball_optimal(-1.0, 1.0), "mu"),
        (lambda: theory.gd_rate([1.0, 2.0], 0.0), "lr"),
        (lambda: theory.gd_rate([], 0.1), "eigenvalues"),
        (lambda: theory.heavy_ball_rate([1.0], 0.1, 1.0), "momentum"),
        (lambda: theory.sgd_noise_floor([1.0], 0.1, -1.0), "noise_variance"),
        (lambda: theory.compare_rate(np.array([1.0, 0.5]), 1.0, 0.5), "gap"),
        (lambda: theory.least_squares_spectrum(np.ones(3)), "matrix"),
    ],
)
def test_bad_inputs_raise_before_compiling(call, match, compiles):
    with compiles() as c, pytest.raises(ValueError, match=match):
        call()
    assert c.count == 0
