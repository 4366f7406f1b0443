"""Tests of gdjax.datasets: the shipped digits file and the synthetic regression.

Oracles: the digits are checked against an independent parse of the shipped CSV
(and against scikit-learn's own copy and split when scikit-learn is installed);
least_squares is checked against NumPy's least-squares solution, whose error
with n = 2048 rows, d = 3 and noise 0.1 has a standard deviation of about
0.1 / sqrt(2048) = 0.0022 per coefficient (tolerance 0.015, about 7 of those).
"""

from __future__ import annotations

import gzip
import importlib.resources
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gdjax import datasets

N = 1797


@pytest.fixture(scope="module")
def table() -> np.ndarray:
    path = importlib.resources.files("gdjax.datasets").joinpath("digits.csv.gz")
    with path.open("rb") as raw, gzip.open(raw, "rt") as text:
        return np.array([[int(v) for v in line.split(",")] for line in text])


def _rows(x, y) -> set[tuple[int, ...]]:
    pixels = np.rint(np.asarray(x, np.float64) * 16).astype(np.int64)
    return {(*p, int(label)) for p, label in zip(pixels, np.asarray(y), strict=True)}


# ------------------------------------------------------------------------------- digits


def test_digits_shapes_dtypes_ranges():
    (x, y), (xt, yt) = datasets.digits()
    n_test = math.ceil(0.25 * N)
    assert x.shape == (N - n_test, 64) and y.shape == (N - n_test,)
    assert xt.shape == (n_test, 64) and yt.shape == (n_test,)
    assert x.dtype == xt.dtype == jnp.float32
    assert y.dtype == yt.dtype == jnp.int32
    for a in (x, xt):
        a = np.asarray(a)
        assert a.min() == 0.0 and a.max() == 1.0
        assert np.array_equal(a * 16, np.rint(a * 16))  # counts / 16, exactly
    for labels in (y, yt):
        assert set(np.asarray(labels).tolist()) == set(range(10))


def test_digits_split_is_a_partition_of_the_file(table):
    assert table.shape == (N, 65)
    file_rows = {tuple(r) for r in table.tolist()}
    assert len(file_rows) == N  # no duplicate rows, so sets can identify rows
    (x, y), (xt, yt) = datasets.digits(test_fraction=0.3, seed=4)
    train, test = _rows(x, y), _rows(xt, yt)
    assert len(train) == x.shape[0] and len(test) == xt.shape[0]
    assert not train & test
    assert train | test == file_rows
    assert x.shape[0] + xt.shape[0] == N


def test_digits_split_order_is_the_numpy_permutation(table):
    (x, y), (xt, yt) = datasets.digits(test_fraction=0.1, seed=3)
    order = np.random.RandomState(3).permutation(N)
    n_test = math.ceil(0.1 * N)
    np.testing.assert_array_equal(np.asarray(yt), table[order[:n_test], 64])
    np.testing.assert_array_equal(np.asarray(y), table[order[n_test:], 64])
    np.testing.assert_array_equal(
        np.asarray(x) * 16, table[order[n_test:], :64].astype(np.float32)
    )


def test_digits_matches_scikit_learn():
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    model_selection = pytest.importorskip("sklearn.model_selection")
    bunch = sklearn_datasets.load_digits()
    for fraction, seed in [(0.25, 0), (0.1, 7)]:
        x_tr, x_te, y_tr, y_te = model_selection.train_test_split(
            bunch.data / 16.0, bunch.target, test_size=fraction, random_state=seed
        )
        (x, y), (xt, yt) = datasets.digits(test_fraction=fraction, seed=seed)
        np.testing.assert_array_equal(np.asarray(x), x_tr)
        np.testing.assert_array_equal(np.asarray(xt), x_te)
        np.testing.assert_array_equal(np.asarray(y), y_tr)
        np.testing.assert_array_equal(np.asarray(yt), y_te)


def test_digits_deterministic_and_seeded():
    (a, ya), _ = datasets.digits(seed=1)
    (b, yb), _ = datasets.digits(seed=1)
    (c, yc), _ = datasets.digits(seed=2)
    assert np.array_equal(np.asarray(a), np.asarray(b))
    assert np.array_equal(np.asarray(ya), np.asarray(yb))
    assert not np.array_equal(np.asarray(ya), np.asarray(yc))


def test_digits_test_fraction_zero_keeps_every_row(table):
    (x, y), test = datasets.digits(test_fraction=0)
    assert test is None
    assert x.shape == (N, 64)
    assert _rows(x, y) == {tuple(r) for r in table.tolist()}


def test_digits_file_is_parsed_once_and_cache_is_read_only():
    datasets.digits()
    before = datasets._digits_numpy.cache_info()
    datasets.digits(seed=5)
    after = datasets._digits_numpy.cache_info()
    assert after.misses == before.misses and after.hits == before.hits + 1
    pixels, labels = datasets._digits_numpy()
    with pytest.raises(ValueError, match="read-only"):
        pixels[0, 0] = 99
    with pytest.raises(ValueError, match="read-only"):
        labels[0] = 99


def test_digits_bfloat16():
    (x, _), (xt, _) = datasets.digits(dtype=jnp.bfloat16)
    assert x.dtype == xt.dtype == jnp.bfloat16
    (x32, _), _ = datasets.digits()
    # k / 16 for k in 0..16 is exact in bfloat16.
    assert np.array_equal(np.asarray(x, np.float32), np.asarray(x32))


def test_digits_float64(x64):
    del x64
    (x, y), _ = datasets.digits(dtype=jnp.float64)
    assert x.dtype == jnp.float64 and y.dtype == jnp.int32


@pytest.mark.parametrize(
    "kwargs,error,pattern",
    [
        ({"test_fraction": 1.0}, ValueError, r"test_fraction must be in \[0, 1\)"),
        ({"test_fraction": -0.1}, ValueError, r"test_fraction must be in \[0, 1\)"),
        ({"test_fraction": float("nan")}, ValueError, r"test_fraction must be finite"),
        ({"test_fraction": 0.9999}, ValueError, r"test_fraction=0.9999 leaves no"),
        ({"test_fraction": "0.2"}, TypeError, r"test_fraction must be"),
        ({"test_fraction": True}, TypeError, r"test_fraction must be"),
        ({"test_fraction": [0.1, 0.2]}, TypeError, r"test_fraction must be a single"),
        ({"seed": -1}, ValueError, r"seed must be an integer >= 0, got -1"),
        ({"seed": 2**32}, ValueError, r"seed must be an integer in \[0, 2\*\*32\)"),
        ({"seed": 1.5}, TypeError, r"seed must be an integer"),
        ({"dtype": jnp.int32}, TypeError, r"dtype must be a floating dtype"),
        ({"dtype": jnp.float64}, ValueError, r"dtype=float64 needs 64-bit mode"),
    ],
)
def test_digits_bad_arguments(compiles, kwargs, error, pattern):
    with compiles() as c, pytest.raises(error, match=pattern):
        datasets.digits(**kwargs)
    assert c.count == 0


def test_digits_source_and_licence_file():
    for needle in ["Alpaydin", "Kaynak", "1998", "CC BY 4.0", "scikit-learn", "UCI"]:
        assert needle in datasets.DIGITS_SOURCE
    text = (
        importlib.resources.files("gdjax.datasets")
        .joinpath("LICENSE-digits.txt")
        .read_text()
    )
    for needle in ["Alpaydin", "Kaynak", "CC BY 4.0", "scikit-learn", "10.24432"]:
        assert needle in text


# ------------------------------------------------------------------------ least squares


def test_least_squares_shapes_determinism():
    (x, y), w = datasets.least_squares(jax.random.key(0), 64, 3)
    assert x.shape == (64, 3) and y.shape == (64,) and w.shape == (3,)
    assert x.dtype == y.dtype == w.dtype == jnp.float32
    (x2, y2), w2 = datasets.least_squares(jax.random.PRNGKey(0), 64, 3)
    for a, b in [(x, x2), (y, y2), (w, w2)]:
        assert np.array_equal(np.asarray(a), np.asarray(b))
    (x3, _), w3 = datasets.least_squares(jax.random.key(1), 64, 3)
    assert not np.any(np.asarray(x3) == np.asarray(x))
    assert not np.any(np.asarray(w3) == np.asarray(w))


def test_least_squares_w_true_does_not_depend_on_n():
    _, w_small = datasets.least_squares(jax.random.key(3), 64, 3)
    _, w_big = datasets.least_squares(jax.random.key(3), 2048, 3)
    assert np.array_equal(np.asarray(w_small), np.asarray(w_big))


def test_least_squares_without_noise_is_exactly_linear():
    (x, y), w = datasets.least_squares(jax.random.key(0), 64, 3, noise=0)
    expected = np.asarray(x, np.float64) @ np.asarray(w, np.float64)
    np.testing.assert_allclose(np.asarray(y), expected, rtol=1e-5, atol=1e-5)


def test_least_squares_solution_recovers_w_true():
    n, d, noise = 2048, 3, 0.1
    (x, y), w = datasets.least_squares(jax.random.key(3), n, d, noise=noise)
    x, y, w = (np.asarray(a, np.float64) for a in (x, y, w))
    w_hat = np.linalg.lstsq(x, y, rcond=None)[0]
    np.testing.assert_allclose(w_hat, w, atol=0.015)
    # Residuals of the true model are the noise: standard deviation 0.1, with a
    # relative standard error 1 / sqrt(2n) = 1.6%; allow 8%.
    assert np.std(y - x @ w) == pytest.approx(noise, rel=0.08)
    # The features are standard normal.
    assert abs(x.mean()) < 0.05 and x.var() == pytest.approx(1.0, rel=0.05)


def test_least_squares_float64(x64):
    del x64
    (x, y), w = datasets.least_squares(jax.random.key(0), 64, 3, dtype=jnp.float64)
    assert x.dtype == y.dtype == w.dtype == jnp.float64


def test_least_squares_bfloat16():
    (x, y), w = datasets.least_squares(jax.random.key(0), 64, 3, dtype=jnp.bfloat16)
    assert x.dtype == y.dtype == w.dtype == jnp.bfloat16


@pytest.mark.parametrize(
    "args,kwargs,error,pattern",
    [
        ((0,), {"n": 0}, ValueError, r"n must be an integer >= 1, got 0"),
        ((0,), {"d": -2}, ValueError, r"d must be an integer >= 1, got -2"),
        ((0,), {"n": 10.0}, TypeError, r"n must be an integer"),
        ((0,), {"noise": -0.1}, ValueError, r"noise must be in \[0, inf\)"),
        ((0,), {"noise": float("inf")}, ValueError, r"noise must be finite"),
        ((0,), {"noise": np.ones(3)}, TypeError, r"noise must be a single number"),
        ((0,), {"dtype": jnp.int32}, TypeError, r"dtype must be a floating dtype"),
        ((0,), {"dtype": jnp.float64}, ValueError, r"dtype=float64 needs 64-bit"),
        ((), {}, TypeError, r"key must be a PRNG key.*int 0"),
        ((3,), {}, ValueError, r"key must be a single PRNG key"),
    ],
)
def test_least_squares_bad_arguments(compiles, args, kwargs, error, pattern):
    good = jax.random.key(0)
    key = {(): 0, (0,): good, (3,): jax.random.split(good, 3)}[args]
    with compiles() as c, pytest.raises(error, match=pattern):
        datasets.least_squares(key, **({"n": 37, "d": 11} | kwargs))
    assert c.count == 0
