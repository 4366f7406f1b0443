r"""Per-example losses from ``optax.losses`` and the batch losses built on them.

The contract, before any code:

* A **per-example loss** is ``per_example(predictions, targets) -> (n,)``: one
  value per example, summed over any trailing output axes. The maths is
  ``optax.losses``'s; this module only fixes shapes (explicitly: a ``(n,)``
  target pairs with ``(n,)`` or ``(n, 1)`` predictions and nothing else) and label
  encodings, so that gdjax runs under ``jax_numpy_rank_promotion="raise"``.
* A **loss** is ``loss(params, batch) -> scalar`` with the data as an argument,
  never closed over. :func:`make_loss` builds one from ``apply(params, x)`` and a
  per-example loss; it also takes per-example ``weights`` so that a padded batch
  can mask its padding exactly.
* :func:`with_example_weights` gives any user loss that is a mean over examples
  (plus a params-only regularizer) the same ``weights`` argument.
* Labels are checked on the host by ``loss.check_data(params, data)`` before
  anything compiles: inside ``jit`` an out-of-range class index is clamped by the
  gather and gives a wrong, finite loss.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.typing import ArrayLike

from gdjax import _validate
from gdjax._typing import ApplyFn, Batch, LossFn, Params, PyTree

PerExampleLoss = Callable[[jax.Array, jax.Array], jax.Array]
"""``per_example(predictions, targets) -> (n,)``."""

# What a per-example loss expects of its labels, read by ``loss.check_data``.
_LABELS_ATTR = "_gdjax_labels"
_CLASS = "class"  # integer class indices in [0, k), k = last axis of the logits
_BINARY = "binary"  # values in {0, 1}


# ----------------------------------------------------------------------------- shapes


def _as_array(value: ArrayLike, name: str) -> jax.Array:
    arr = jnp.asarray(value)
    if arr.ndim == 0:
        raise ValueError(
            f"{name} must have a leading example axis, got a scalar; reshape it "
            "to (n, ...)."
        )
    return arr


def _align(
    predictions: ArrayLike, targets: ArrayLike, loss_name: str
) -> tuple[jax.Array, jax.Array]:
    """Equal shapes, or shapes that differ by one explicit trailing axis of size 1.

    Broadcasting ``(n,)`` against ``(n, 1)`` would give an ``(n, n)`` loss, the
    classic silent bug; here the size-1 axis is added to the targets (or the
    predictions) by hand and any other mismatch is an error.
    """
    p = _as_array(predictions, f"{loss_name} predictions")
    t = _as_array(targets, f"{loss_name} targets")
    if p.shape == t.shape:
        return p, t
    if p.shape == (*t.shape, 1):
        return p, t[..., None]
    if t.shape == (*p.shape, 1):
        return p[..., None], t
    raise ValueError(
        f"{loss_name}: targets must have the shape of predictions {p.shape} (or "
        f"that shape without a trailing axis of size 1), got {t.shape}."
    )


def _per_example_sum(values: jax.Array) -> jax.Array:
    """Sum every axis but the leading example axis: ``(n, ...) -> (n,)``."""
    return jnp.sum(values, axis=tuple(range(1, values.ndim)))


def _paired(
    loss_name: str, fn: Callable, predictions: ArrayLike, targets: ArrayLike
) -> jax.Array:
    """``fn(p, t)`` summed per example: shapes aligned (:func:`_align`),
    floating predictions checked, targets cast to the predictions' dtype."""
    p, t = _align(predictions, targets, loss_name)
    _check_floating(p, loss_name)
    return _per_example_sum(fn(p, t.astype(p.dtype)))


def _hinge_of_labels(scores: jax.Array, labels: jax.Array) -> jax.Array:
    """``optax.losses.hinge_loss`` with labels in {0, 1} turned into signs."""
    return optax.losses.hinge_loss(scores, 2 * labels - 1)


def _check_floating(predictions: jax.Array, loss_name: str) -> None:
    if not jnp.issubdtype(predictions.dtype, jnp.floating):
        raise TypeError(
            f"{loss_name} predictions must have a floating dtype, got "
            f"{predictions.dtype}."
        )


def _labels_kind(per_example: Callable) -> str | None:
    """The label contract of ``per_example``, looking through ``functools.partial``."""
    fn = per_example
    while isinstance(fn, functools.partial):
        fn = fn.func
    return getattr(fn, _LABELS_ATTR, None)


# ----------------------------------------------------------------------------- losses


def squared_error(predictions: ArrayLike, targets: ArrayLike) -> jax.Array:
    r"""Half the squared error of each example.

    .. math::
        \ell_i = \tfrac{1}{2} \lVert \hat y_i - y_i \rVert_2^2

    summed over trailing output axes, from ``optax.losses.l2_loss``. Targets take
    the dtype of the predictions.

    Args:
      predictions: ``(n,)``, ``(n, 1)`` or ``(n, d...)`` floating predictions.
      targets: the same shape as ``predictions``, or ``(n,)`` with ``(n, 1)``
        predictions. Any other shape raises ``ValueError`` (no broadcasting).

    Returns:
      ``(n,)`` losses.

    Examples:
      >>> import jax.numpy as jnp
      >>> from gdjax.losses import squared_error
      >>> squared_error(jnp.array([[1.0], [3.0]]), jnp.array([0.0, 1.0]))
      Array([0.5, 2. ], dtype=float32)
    """
    return _paired("squared_error", optax.losses.l2_loss, predictions, targets)


def huber(
    predictions: ArrayLike, targets: ArrayLike, *, delta: ArrayLike = 1.0
) -> jax.Array:
    r"""The Huber loss of each example: quadratic near zero, linear beyond ``delta``.

    .. math::
        \ell_i = \sum_j \begin{cases}
          \tfrac12 e_{ij}^2 & |e_{ij}| \le \delta \\
          \delta (|e_{ij}| - \tfrac12 \delta) & \text{otherwise}
        \end{cases}, \qquad e_{ij} = \hat y_{ij} - y_{ij},

    from ``optax.losses.huber_loss``. Pass ``functools.partial(huber, delta=...)``
    to :func:`make_loss` for another ``delta``.

    Args:
      predictions: ``(n,)``, ``(n, 1)`` or ``(n, d...)`` floating predictions.
      targets: shaped as in :func:`squared_error`.
      delta: the positive threshold between the quadratic and linear parts.

    Returns:
      ``(n,)`` losses.

    Examples:
      >>> import jax.numpy as jnp
      >>> from gdjax.losses import huber
      >>> huber(jnp.array([0.5, 3.0]), jnp.array([0.0, 0.0]))
      Array([0.125, 2.5  ], dtype=float32)
    """
    if not _validate.is_tracer(delta):
        _validate.check_positive(delta, "delta")
    huber_loss = functools.partial(optax.losses.huber_loss, delta=delta)
    return _paired("huber", huber_loss, predictions, targets)


def softmax_cross_entropy(logits: ArrayLike, labels: ArrayLike) -> jax.Array:
    r"""Cross-entropy of each example's softmax against an integer class label.

    .. math::
        \ell_i = \log \sum_{c=1}^{k} e^{z_{ic}} - z_{i y_i}

    from ``optax.losses.softmax_cross_entropy_with_integer_labels``. Labels must
    lie in ``[0, k)``: inside ``jit`` an out-of-range label is clamped by the
    gather, so :func:`make_loss`'s ``check_data`` checks them on the host first.

    Args:
      logits: ``(n, k)`` floating logits (or ``(n, ..., k)``, summed over the
        middle axes).
      labels: integer labels of shape ``logits.shape[:-1]`` (``(n,)``); a
        trailing axis of size 1 is also accepted.

    Returns:
      ``(n,)`` losses.

    Examples:
      >>> import jax.numpy as jnp
      >>> from gdjax.losses import softmax_cross_entropy
      >>> z = jnp.array([[0.0, 0.0], [2.0, 0.0]])
      >>> softmax_cross_entropy(z, jnp.array([1, 0]))
      Array([0.6931472 , 0.12692809], dtype=float32)
    """
    z = _as_array(logits, "softmax_cross_entropy logits")
    y = jnp.asarray(labels)
    _check_floating(z, "softmax_cross_entropy")
    if not jnp.issubdtype(y.dtype, jnp.integer):
        raise TypeError(
            "softmax_cross_entropy labels must be integer class indices, got dtype "
            f"{y.dtype}; convert them with .astype(jnp.int32)."
        )
    if z.ndim < 2:
        raise ValueError(
            "softmax_cross_entropy logits must have shape (n, k), got "
            f"{z.shape}; for one logit per example use gdjax.losses.logistic."
        )
    if y.shape == (*z.shape[:-1], 1):
        y = y[..., 0]
    if y.shape != z.shape[:-1]:
        raise ValueError(
            f"softmax_cross_entropy labels must have shape {z.shape[:-1]} for "
            f"logits of shape {z.shape}, got {y.shape}."
        )
    return _per_example_sum(
        optax.losses.softmax_cross_entropy_with_integer_labels(z, y)
    )


def logistic(logits: ArrayLike, labels: ArrayLike) -> jax.Array:
    r"""Binary cross-entropy of each example's sigmoid against a label in {0, 1}.

    .. math::
        \ell_i = -y_i \log \sigma(z_i) - (1 - y_i) \log(1 - \sigma(z_i))

    from ``optax.losses.sigmoid_binary_cross_entropy`` (computed with
    ``log_sigmoid``, stable for large ``|z|``).

    Args:
      logits: ``(n,)`` or ``(n, 1)`` floating logits (``(n, d)`` for ``d``
        independent binary labels, summed).
      labels: labels in {0, 1} shaped as in :func:`squared_error`.

    Returns:
      ``(n,)`` losses.

    Examples:
      >>> import jax.numpy as jnp
      >>> from gdjax.losses import logistic
      >>> logistic(jnp.array([[0.0], [0.0]]), jnp.array([0, 1]))
      Array([0.6931472, 0.6931472], dtype=float32)
    """
    return _paired(
        "logistic", optax.losses.sigmoid_binary_cross_entropy, logits, labels
    )


def hinge(scores: ArrayLike, labels: ArrayLike) -> jax.Array:
    r"""The hinge loss of each example, with labels in {0, 1} mapped to -1 and +1.

    .. math::
        \ell_i = \max(0,\ 1 - s_i (2 y_i - 1))

    from ``optax.losses.hinge_loss``.

    Args:
      scores: ``(n,)`` or ``(n, 1)`` floating decision values.
      labels: labels in {0, 1} shaped as in :func:`squared_error`.

    Returns:
      ``(n,)`` losses.

    Examples:
      >>> import jax.numpy as jnp
      >>> from gdjax.losses import hinge
      >>> hinge(jnp.array([0.5, 2.0, 0.5]), jnp.array([1, 1, 0]))
      Array([0.5, 0. , 1.5], dtype=float32)
    """
    return _paired("hinge", _hinge_of_labels, scores, labels)


setattr(softmax_cross_entropy, _LABELS_ATTR, _CLASS)
setattr(logistic, _LABELS_ATTR, _BINARY)
setattr(hinge, _LABELS_ATTR, _BINARY)


# ----------------------------------------------------------------------------- batches


def _unpack(batch: Batch, name: str = "batch") -> tuple[Any, Any]:
    """``(x, y)`` or ``{"x": x, "y": y}`` -> ``(x, y)``, with where each came from."""
    if isinstance(batch, Mapping):
        missing = [k for k in ("x", "y") if k not in batch]
        if missing:
            raise ValueError(
                f"{name} must be (x, y) or a dict with keys 'x' and 'y', got a dict "
                f"with keys {sorted(map(str, batch))} (missing {missing})."
            )
        return batch["x"], batch["y"]
    if isinstance(batch, (tuple, list)) and len(batch) == 2:
        return batch[0], batch[1]
    raise TypeError(
        f"{name} must be (x, y) or a dict with keys 'x' and 'y', got "
        f"{_validate.describe(batch)}."
    )


def _label_where(batch: Batch, name: str) -> str:
    return f"{name}['y']" if isinstance(batch, Mapping) else f"{name}[1]"


def _weighted_mean(
    values: jax.Array, weights: ArrayLike | None, name: str = "weights"
) -> jax.Array:
    r""":math:`\sum_i w_i v_i / \sum_i w_i`, or the plain mean when ``weights`` is None.

    ``jnp.where`` rather than ``w * v`` so that a zero weight removes its example
    from the value even when that example's value is inf or NaN (``0 * inf`` is
    NaN). The gradient is only clean for finite padding: pad with real rows.
    """
    if weights is None:
        return jnp.mean(values)
    w = jnp.asarray(weights)
    if w.shape != values.shape:
        raise ValueError(
            f"{name} must have shape {values.shape} (one weight per example), got "
            f"{w.shape}."
        )
    w = w.astype(values.dtype)
    total = jnp.sum(jnp.where(w != 0, w * values, jnp.zeros_like(values)))
    return total / jnp.sum(w)


# ------------------------------------------------------------------ losses as values
#
# A loss, a weighted loss and a metric are frozen dataclasses: two built from the
# same arguments are equal and hash alike, so a rebuilt ``make_loss(...)`` reuses
# the compiled run. ``Loss`` is also a pytree whose one leaf is ``l2``: the run
# passes that leaf into the program as an argument, so a new ``l2`` does not
# recompile either (only switching the penalty on or off does).


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=["l2"],
    meta_fields=["apply", "per_example", "penalized"],
)
@dataclasses.dataclass(frozen=True)
class Loss:
    r"""``loss(params, batch, weights=None)``: what :func:`make_loss` returns.

    .. math::
        L(\theta; B, w) = \frac{\sum_{i \in B} w_i\,
          \ell\big(f_\theta(x_i), y_i\big)}{\sum_{i \in B} w_i}
          + \frac{\lambda}{2} \lVert \theta \rVert_2^2

    Attributes:
      apply: ``apply(params, x) -> predictions``.
      per_example: ``per_example(predictions, y) -> (n,)``.
      l2: the penalty :math:`\lambda` (a pytree leaf: traced in a run).
      penalized: whether the penalty term is built at all (``l2 != 0``).
    """

    apply: ApplyFn
    per_example: PerExampleLoss
    l2: Any = 0.0
    penalized: bool = True

    accepts_weights = True
    """Declares that the loss takes per-example ``weights`` (masked padding)."""

    def __call__(
        self, params: Params, batch: Batch, weights: ArrayLike | None = None
    ) -> jax.Array:
        x, y = _unpack(batch)
        per = jnp.asarray(self.per_example(self.apply(params, x), y))
        x_leaves = jax.tree.leaves(x)
        n = x_leaves[0].shape[0] if x_leaves else None
        if per.ndim != 1 or (n is not None and per.shape[0] != n):
            raise ValueError(
                f"per_example must return one loss per example, shape ({n},), got "
                f"{per.shape}."
            )
        value = _weighted_mean(per, weights)
        if not self.penalized:
            return value
        penalty = optax.tree.norm(params, squared=True)
        return value + jnp.asarray(self.l2, value.dtype) / 2 * penalty.astype(
            value.dtype
        )

    def check_data(self, params: Params, data: Batch) -> None:
        """Check ``data``'s labels against ``per_example`` on the host (no compile).

        Raises ``TypeError`` for non-integer class labels and ``ValueError`` naming
        the first offending label value and its index.
        """
        _check_labels(self.apply, self.per_example, params, data)
        # Shapes, dtypes and the loss itself, traced abstractly: compiles nothing
        # (once per signature).
        _validate.memo(
            ("loss-on-data", self, _validate.signature(params, data)),
            lambda: jax.eval_shape(self, params, data),
        )


@dataclasses.dataclass(frozen=True)
class WeightedLoss:
    """A mean-over-examples user loss given ``weights``: see
    :func:`with_example_weights`.

    Attributes:
      loss: the user's ``loss(params, batch) -> scalar``.
    """

    loss: LossFn

    accepts_weights = True

    def __call__(
        self, params: Params, batch: Batch, weights: ArrayLike | None = None
    ) -> jax.Array:
        if weights is None:
            return self.loss(params, batch)

        def one(example: PyTree) -> jax.Array:
            return self.loss(params, jax.tree.map(lambda a: a[None], example))

        per = jax.vmap(one)(batch)
        return _weighted_mean(per, weights)


@dataclasses.dataclass(frozen=True)
class Accuracy:
    r"""``metric(params, batch, weights=None)``: what :func:`accuracy` returns.

    Attributes:
      apply: ``apply(params, x) -> logits``.
    """

    apply: ApplyFn

    accepts_weights = True

    def __call__(
        self, params: Params, batch: Batch, weights: ArrayLike | None = None
    ) -> jax.Array:
        x, y = _unpack(batch)
        z = jnp.asarray(self.apply(params, x))
        y = jnp.asarray(y)
        dtype = (
            z.dtype if jnp.issubdtype(z.dtype, jnp.floating) else jnp.result_type(float)
        )
        if z.ndim >= 2 and z.shape[-1] > 1:
            if y.shape == (*z.shape[:-1], 1):
                y = y[..., 0]
            if y.shape != z.shape[:-1]:
                raise ValueError(
                    f"accuracy labels must have shape {z.shape[:-1]} for logits "
                    f"of shape {z.shape}, got {y.shape}."
                )
            correct = jnp.argmax(z, axis=-1) == y
        else:
            z, y = _align(z, y, "accuracy")
            correct = (z > 0) == (y > 0)
        per = jnp.mean(correct.astype(dtype), axis=tuple(range(1, correct.ndim)))
        return _weighted_mean(per, weights)


def _check_labels(apply, per_example, params: Params, data: Batch) -> None:
    x, y = _unpack(data, "data")
    # Finiteness is the caller's choice (fit(check_finite=...)): shapes only.
    _validate.check_data(data, "data", check_finite=False)
    where = _label_where(data, "data")
    kind = _labels_kind(per_example)
    if kind is None:
        return
    labels = np.asarray(y)
    if kind == _CLASS:
        if not np.issubdtype(labels.dtype, np.integer):
            raise TypeError(
                f"data labels {where} must be integer class indices for "
                f"softmax_cross_entropy, got dtype {labels.dtype}; convert "
                "them with .astype(np.int32)."
            )
        out = _validate.memo(
            ("apply", apply, _validate.signature(params, x)),
            lambda: jax.eval_shape(apply, params, x),
        )
        k = out.shape[-1] if out.ndim >= 2 else None
        if k is None:
            raise ValueError(
                "softmax_cross_entropy needs apply to return (n, k) logits, "
                f"got shape {out.shape}."
            )
        bad = (labels < 0) | (labels >= k)
        allowed = f"integers in [0, {k}) (k = apply's last output axis)"
    else:
        bad = ~((labels == 0) | (labels == 1))
        allowed = "in {0, 1}"
    if np.any(bad):
        idx = tuple(int(i) for i in np.unravel_index(int(np.argmax(bad)), labels.shape))
        # (n,) or (n, 1) labels: the example index; otherwise the position.
        index = idx[0] if labels.size == labels.shape[0] else idx
        raise ValueError(
            f"data labels {where} must be {allowed}, got "
            f"{labels[idx].item()!r} at index {index}."
        )


def make_loss(
    apply: ApplyFn, per_example: PerExampleLoss, *, l2: ArrayLike = 0.0
) -> Loss:
    r"""A batch loss from a model and a per-example loss, with optional L2 penalty.

    .. math::
        L(\theta; B, w) = \frac{\sum_{i \in B} w_i\,
          \ell\big(f_\theta(x_i), y_i\big)}{\sum_{i \in B} w_i}
          + \frac{\lambda}{2} \lVert \theta \rVert_2^2

    with :math:`w_i = 1` (a plain mean) when ``weights`` is None. A zero weight
    removes its example exactly, which is how a padded last batch masks its
    padding. The penalty is ``optax.tree.norm(params, squared=True)`` over every
    leaf of ``params``.

    The returned function carries ``accepts_weights = True``, ``apply``,
    ``per_example``, ``l2`` and ``check_data(params, data)``: a host-side check,
    compiling nothing, that the labels in ``data`` fit ``per_example`` (integer
    labels in ``[0, k)`` for :func:`softmax_cross_entropy`, where ``k`` is the last
    axis of ``apply``'s output from ``jax.eval_shape``; labels in {0, 1} for
    :func:`logistic` and :func:`hinge`) and that the loss traces on ``data``.

    Args:
      apply: ``apply(params, x) -> predictions`` with a leading example axis.
      per_example: ``per_example(predictions, y) -> (n,)``, e.g.
        :func:`squared_error` or ``functools.partial(huber, delta=0.5)``.
      l2: the L2 penalty :math:`\lambda \ge 0` (finite scalar).

    Returns:
      ``loss(params, batch, weights=None) -> scalar`` where ``batch`` is
      ``(x, y)`` or ``{"x": x, "y": y}`` and ``weights`` is ``(n,)`` and
      non-negative.

    Raises:
      TypeError: ``apply`` or ``per_example`` is not callable.
      ValueError: ``l2`` is negative, not finite or not a scalar.

    Examples:
      >>> import jax.numpy as jnp
      >>> from gdjax.losses import make_loss, squared_error
      >>> loss = make_loss(lambda p, x: x @ p["w"], squared_error, l2=0.5)
      >>> params = {"w": jnp.array([1.0, 2.0])}
      >>> x, y = jnp.eye(2), jnp.array([1.0, 0.0])
      >>> float(loss(params, (x, y)))  # mean(0, 2) + 0.25 * 5
      2.25
      >>> float(loss(params, (x, y), weights=jnp.array([1.0, 0.0])))
      1.25
    """
    if not callable(apply):
        raise TypeError(
            f"apply must be callable as apply(params, x), got "
            f"{_validate.describe(apply)}."
        )
    if not callable(per_example):
        raise TypeError(
            "per_example must be callable as per_example(predictions, targets), "
            f"got {_validate.describe(per_example)}."
        )
    traced = _validate.is_tracer(l2)
    if not traced:
        _validate.check_nonnegative(l2, "l2")
    if np.ndim(l2) != 0:
        raise ValueError(
            f"l2 must be a scalar, got shape {np.shape(l2)}; sweep it with vmap."
        )
    penalized = traced or np.any(np.asarray(l2) != 0)
    return Loss(apply, per_example, l2, bool(penalized))


def with_example_weights(loss: LossFn) -> Callable[..., jax.Array]:
    r"""Give a mean-over-examples loss a per-example ``weights`` argument.

    For a user loss of the form

    .. math::
        L(\theta; B) = \frac{1}{|B|} \sum_{i \in B} \ell_i(\theta) + R(\theta),

    evaluating it on the one-example batch :math:`\{i\}` gives
    :math:`\ell_i(\theta) + R(\theta)`, so the weighted mean of those values is

    .. math::
        \frac{\sum_i w_i (\ell_i + R)}{\sum_i w_i}
          = \frac{\sum_i w_i \ell_i}{\sum_i w_i} + R(\theta):

    exactly the weighted data term plus the regularizer, once, whatever the
    weights. The wrapper computes it by ``jax.vmap`` of ``loss`` over one-example
    batches ``batch_i[None]``. This is what the training loop uses for a user
    loss when a padded last batch must be masked: padding gets weight 0 and
    drops out exactly. The regularizer is evaluated once per example (XLA
    may or may not hoist it). The identity fails for a loss that couples
    examples (batch norm, a sum rather than a mean, contrastive losses).

    If ``loss`` already has ``accepts_weights`` (as :func:`make_loss`'s do), the
    wrapper just passes ``weights`` on.

    Args:
      loss: ``loss(params, batch) -> scalar``, a mean of per-example terms plus
        any params-only term; every leaf of ``batch`` has a leading example axis.

    Returns:
      ``weighted(params, batch, weights=None) -> scalar``; ``weights`` is ``(n,)``
      and non-negative, and None calls ``loss(params, batch)`` unchanged.

    Examples:
      >>> import jax.numpy as jnp
      >>> from gdjax.losses import with_example_weights
      >>> def mse(p, batch):
      ...     x, y = batch
      ...     return jnp.mean((x * p - y) ** 2) + p**2
      >>> weighted = with_example_weights(mse)
      >>> x, y = jnp.array([1.0, 2.0, 99.0]), jnp.array([0.0, 0.0, 0.0])
      >>> float(weighted(1.0, (x, y), jnp.array([1.0, 1.0, 0.0])))  # 2.5 + 1
      3.5
    """
    if not callable(loss):
        raise TypeError(
            f"loss must be callable as loss(params, batch), got "
            f"{_validate.describe(loss)}."
        )
    if getattr(loss, "accepts_weights", False):
        return loss
    return WeightedLoss(loss)


def accuracy(apply: ApplyFn) -> Accuracy:
    r"""The (weighted) fraction of examples classified correctly.

    .. math::
        \mathrm{acc} = \frac{\sum_i w_i\, [\hat c_i = y_i]}{\sum_i w_i}

    where :math:`\hat c_i = \arg\max_c z_{ic}` for ``(n, k)`` logits with
    ``k > 1``, and :math:`\hat c_i = [z_i > 0]` against labels in {0, 1} for
    ``(n,)`` or ``(n, 1)`` logits.

    Args:
      apply: ``apply(params, x) -> logits``.

    Returns:
      ``metric(params, batch, weights=None) -> scalar`` in [0, 1], weighted like
      :func:`make_loss`'s loss.

    Examples:
      >>> import jax.numpy as jnp
      >>> from gdjax.losses import accuracy
      >>> acc = accuracy(lambda p, x: x * p)
      >>> float(acc(1.0, (jnp.array([2.0, -1.0, 3.0]), jnp.array([1, 1, 0]))))
      0.333...
    """
    if not callable(apply):
        raise TypeError(
            f"apply must be callable as apply(params, x), got "
            f"{_validate.describe(apply)}."
        )

    return Accuracy(apply)


__all__ = [
    "Accuracy",
    "Loss",
    "WeightedLoss",
    "accuracy",
    "hinge",
    "huber",
    "logistic",
    "make_loss",
    "softmax_cross_entropy",
    "squared_error",
    "with_example_weights",
]
