"""Built-in datasets: shipped with the package or generated from a key.

Contract: nothing here touches the network or needs scikit-learn. A dataset is a
pair ``(x, y)`` of ``jax.Array``\\ s sharing a leading example axis, so it can be
passed straight to a loss ``loss(params, (x, y))``. Splits and draws are
deterministic: the same ``seed`` (or key) gives the same arrays, bit for bit.
Arguments are checked on the host before any array is made.

* :func:`digits` -- the 8x8 handwritten digits (1,797 images, 10 classes), read
  from ``digits.csv.gz`` next to this file (see :data:`DIGITS_SOURCE` and
  ``LICENSE-digits.txt``).
* :func:`least_squares` -- a synthetic linear regression problem with a known
  true weight vector.
"""

from __future__ import annotations

import functools
import gzip
import importlib.resources
import math
import numbers

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import DTypeLike

from gdjax._typing import Key
from gdjax._validate import (
    check_float_dtype,
    check_int,
    check_key,
    check_nonnegative,
    check_real,
    describe,
)

__all__ = ["DIGITS_SOURCE", "digits", "least_squares"]

DIGITS_SOURCE = (
    "Optical Recognition of Handwritten Digits (test set of 1,797 8x8 images), "
    "UCI Machine Learning Repository, E. Alpaydin and C. Kaynak, 1998, "
    "https://doi.org/10.24432/C50P49 "
    "(https://archive.ics.uci.edu/dataset/80/"
    "optical+recognition+of+handwritten+digits), "
    "licensed under Creative Commons "
    "Attribution 4.0 International (CC BY 4.0, "
    "https://creativecommons.org/licenses/by/4.0/). gdjax ships an unmodified "
    "copy of the file bundled with scikit-learn (sklearn/datasets/data/"
    "digits.csv.gz, https://scikit-learn.org/stable/datasets/toy_dataset.html); "
    "see gdjax/datasets/digits.rst and gdjax/datasets/LICENSE-digits.txt."
)
"""Where the digits data comes from and under which licence it is shipped."""

_N_DIGITS = 1797
_N_PIXELS = 64


def _check_scalar(value: object, name: str) -> None:
    if isinstance(value, (bool, np.bool_)) or (
        not isinstance(value, numbers.Real) and np.ndim(value) != 0
    ):
        raise TypeError(f"{name} must be a single number, got {describe(value)}.")


@functools.lru_cache(maxsize=1)
def _digits_numpy() -> tuple[np.ndarray, np.ndarray]:
    """The parsed file: pixels uint8 (1797, 64) in 0..16, labels int32 (1797,).

    Cached, so the file is read once per process; the arrays are read-only so
    that no caller can change what the next one gets.
    """
    resource = importlib.resources.files(__name__).joinpath("digits.csv.gz")
    with resource.open("rb") as raw, gzip.open(raw, "rt") as text:
        table = np.loadtxt(text, delimiter=",", dtype=np.int64)
    if table.shape != (_N_DIGITS, _N_PIXELS + 1):  # pragma: no cover - corrupt file
        raise RuntimeError(
            f"digits.csv.gz must hold {_N_DIGITS} rows of {_N_PIXELS + 1} values, "
            f"got shape {table.shape}; reinstall gdjax."
        )
    pixels = table[:, :_N_PIXELS].astype(np.uint8)
    labels = table[:, _N_PIXELS].astype(np.int32)
    pixels.flags.writeable = False
    labels.flags.writeable = False
    return pixels, labels


def digits(
    *,
    test_fraction: float = 0.25,
    seed: int = 0,
    dtype: DTypeLike = jnp.float32,
) -> tuple[tuple[jax.Array, jax.Array], tuple[jax.Array, jax.Array] | None]:
    r"""The 8x8 handwritten digits, split into a training and a test set.

    Each image is 64 pixel counts :math:`c_{ij} \in \{0, \dots, 16\}`, scaled to
    :math:`x_{ij} = c_{ij} / 16 \in [0, 1]`; each label is the digit
    :math:`y \in \{0, \dots, 9\}`. With :math:`n = 1797` rows and
    :math:`\pi` = ``np.random.RandomState(seed).permutation(n)``, the test set is
    rows :math:`\pi_{1..m}` and the training set rows :math:`\pi_{m+1..n}`, in
    that order, with :math:`m = \lceil \texttt{test\_fraction} \cdot n \rceil`:
    the same split as ``sklearn.model_selection.train_test_split(x, y,
    test_size=test_fraction, random_state=seed)``. The split is not stratified.

    The file is parsed once per process and cached.

    Args:
      test_fraction: fraction of rows held out, in ``[0, 1)``; with ``0`` every
        row (shuffled) is in the training set and the test set is ``None``.
      seed: seed of the NumPy permutation, an integer in ``[0, 2**32)``.
      dtype: floating dtype of ``x`` (labels are always int32).

    Returns:
      ``(train, test)``, each ``(x, y)`` with ``x`` of shape ``(n_split, 64)`` and
      dtype ``dtype`` and ``y`` of shape ``(n_split,)`` and dtype int32; ``test``
      is ``None`` when ``test_fraction == 0``.

    Examples:
      >>> from gdjax import datasets
      >>> (x, y), (x_test, y_test) = datasets.digits()
      >>> x.shape, y.shape, x_test.shape, y_test.shape
      ((1347, 64), (1347,), (450, 64), (450,))
      >>> x.dtype, y.dtype, float(x.min()), float(x.max())
      (dtype('float32'), dtype('int32'), 0.0, 1.0)

    References:
      Alpaydin & Kaynak, `Optical Recognition of Handwritten Digits
      <https://doi.org/10.24432/C50P49>`_, UCI Machine Learning Repository, 1998.
    """
    _check_scalar(test_fraction, "test_fraction")
    check_real(test_fraction, "test_fraction", low=0.0, high=1.0, high_inclusive=False)
    seed = check_int(seed, "seed", minimum=0)
    if seed >= 2**32:
        raise ValueError(f"seed must be an integer in [0, 2**32), got {seed}.")
    dt = check_float_dtype(dtype)
    pixels, labels = _digits_numpy()
    n = pixels.shape[0]
    n_test = math.ceil(float(test_fraction) * n)
    if n_test >= n:
        raise ValueError(
            f"test_fraction={test_fraction} leaves no training examples: it holds "
            f"out {n_test} of the {n} rows."
        )
    order = np.random.RandomState(seed).permutation(n)

    def take(rows: np.ndarray) -> tuple[jax.Array, jax.Array]:
        x = pixels[rows].astype(np.float64) / 16.0  # exact in every float dtype
        return jnp.asarray(x, dtype=dt), jnp.asarray(labels[rows])

    train = take(order[n_test:])
    test = take(order[:n_test]) if n_test > 0 else None
    return train, test


def least_squares(
    key: Key,
    n: int = 256,
    d: int = 8,
    *,
    noise: float = 0.1,
    dtype: DTypeLike = jnp.float32,
) -> tuple[tuple[jax.Array, jax.Array], jax.Array]:
    r"""A synthetic linear regression problem with a known answer.

    .. math::
      X_{ij} \sim \mathcal{N}(0, 1), \quad w^\star_j \sim \mathcal{N}(0, 1), \quad
      y = X w^\star + \sigma \varepsilon, \quad \varepsilon_i \sim \mathcal{N}(0, 1),

    all independent. With ``k_w, k_data = jax.random.split(key)``,
    :math:`w^\star` is drawn from ``k_w`` alone (so it depends only on ``key``
    and ``d``: problems of different sizes ``n`` share it) and
    :math:`[X \mid \varepsilon]` is one ``(n, d + 1)`` draw from ``k_data``.
    The least-squares solution :math:`\hat w = (X^\top X)^{-1} X^\top y`
    approaches :math:`w^\star` as :math:`n` grows; with ``noise=0`` it equals it.

    Args:
      key: a PRNG key.
      n: number of examples, at least 1.
      d: number of features, at least 1.
      noise: the noise scale :math:`\sigma \ge 0`.
      dtype: floating dtype of every array.

    Returns:
      ``((x, y), w_true)`` with ``x`` of shape ``(n, d)``, ``y`` of shape ``(n,)``
      and ``w_true`` of shape ``(d,)``.

    Examples:
      >>> import jax
      >>> from gdjax import datasets
      >>> (x, y), w_true = datasets.least_squares(jax.random.key(0), 64, 3)
      >>> x.shape, y.shape, w_true.shape
      ((64, 3), (64,), (3,))
      >>> (x, y), w_true = datasets.least_squares(jax.random.key(0), 64, 3, noise=0)
      >>> bool(jax.numpy.allclose(y, x @ w_true))
      True
    """
    n = check_int(n, "n")
    d = check_int(d, "d")
    _check_scalar(noise, "noise")
    check_nonnegative(noise, "noise")
    dt = check_float_dtype(dtype)
    key = check_key(key)
    return _least_squares(key, jnp.asarray(noise, dt), n=n, d=d)


@functools.partial(jax.jit, static_argnames=("n", "d"))
def _least_squares(
    key: Key, noise: jax.Array, *, n: int, d: int
) -> tuple[tuple[jax.Array, jax.Array], jax.Array]:
    # One program per (n, d, dtype) with noise traced, and two draws rather than
    # three: each draw adds about 0.4 s of CPU compile time.
    dt = noise.dtype
    k_w, k_data = jax.random.split(key)
    w_true = jax.random.normal(k_w, (d,), dt)
    z = jax.random.normal(k_data, (n, d + 1), dt)
    x, eps = z[:, :d], z[:, d]
    y = x @ w_true + noise * eps
    return (x, y), w_true
