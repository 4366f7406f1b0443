"""Problems with known answers, shared by the tests."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def least_squares_problem(n=64, d=4, seed=0, dtype=np.float32, noise=0.1):
    """(x, y), the lstsq solution, and the curvature range (mu, L) of
    f(w) = 1/(2n) ||x w - y||^2 (no bias)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(dtype)
    w = rng.normal(size=(d,)).astype(dtype)
    y = (x @ w + noise * rng.normal(size=(n,))).astype(dtype)
    w_star = np.linalg.lstsq(x.astype(np.float64), y.astype(np.float64), rcond=None)[0]
    eig = np.linalg.eigvalsh(x.astype(np.float64).T @ x.astype(np.float64) / n)
    return (jnp.asarray(x), jnp.asarray(y)), w_star, float(eig[0]), float(eig[-1])


def ls_loss(params, batch):
    """1/(2|B|) sum ||x w - y||^2: a plain user loss (no weights support)."""
    x, y = batch
    r = x @ params["w"] - y
    return 0.5 * jnp.mean(r * r)


def ls_value(w, x, y):
    r = np.asarray(x, np.float64) @ np.asarray(w, np.float64) - np.asarray(
        y, np.float64
    )
    return 0.5 * float(np.mean(r * r))


def zeros_params(d, dtype=jnp.float32):
    return {"w": jnp.zeros((d,), dtype)}


def key(seed=0):
    return jax.random.key(seed)


def assert_lines_inside_limits(axes) -> None:
    """No line's finite data lies outside its axes' limits (axhline and axvline,
    drawn in axes coordinates, are skipped)."""
    for ax in axes:
        (x0, x1), (y0, y1) = sorted(ax.get_xlim()), sorted(ax.get_ylim())
        for line in ax.get_lines():
            if line.get_transform() != ax.transData:
                continue
            x = np.asarray(line.get_xdata(), float)
            y = np.asarray(line.get_ydata(), float)
            keep = np.isfinite(x) & np.isfinite(y)
            x, y = x[keep], y[keep]
            assert x.size == 0 or (x0 <= x.min() and x.max() <= x1), line
            assert y.size == 0 or (y0 <= y.min() and y.max() <= y1), line


def check_every_step(monkeypatch) -> None:
    """Make ``gd.fit`` check every step: no fast path, in the program or on
    the host (``runs.single_program`` as prepared, ``FAST_STEP`` below any
    step). The reference the fast paths must equal bit for bit."""
    from gdjax import runs

    monkeypatch.setattr(runs, "FAST_STEP", -1)
    monkeypatch.setattr(runs, "single_program", lambda program: program)


def assert_trees_equal(a, b) -> None:
    """Every leaf of ``a`` bitwise equal to ``b``'s (NaN equal to NaN)."""
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(u, v)
