"""Stopping criteria as values inside the program, messages outside it.

A run stops at the first criterion that holds; they compose by "or". Inside the
compiled loop each is a pure predicate on the loop state and the numbers that
parameterize it are arrays (so a sweep can vary them without recompiling); the
outcome is a :class:`Status` code, turned into a sentence at the boundary.

Step-level criteria are checked after every step: ``max_steps`` and the
non-finite guard (a NaN or inf loss, gradient, or new parameters rejects the
step, keeps the last finite parameters and optimizer state, and stops).
Epoch-level criteria are checked at the end of each epoch on the epoch's history
entry, where ``loss`` is the mean of the batch losses of the epoch and
``grad_norm`` the mean of their gradient norms (for full-batch descent, the loss
and gradient norm at the epoch's single step):

* ``target_loss``: :math:`L_e \\le L^\\star` (the "satisfactory value");
* ``grad_tol``: :math:`\\|\\nabla L\\|_e \\le \\epsilon` (the convergence test of
  plain descent);
* ``tol`` with ``patience``: no relative improvement
  :math:`L_e < L_{best} - tol\\,|L_{best}|` for ``patience`` epochs in a row
  (scikit-learn's ``n_iter_no_change``);
* ``until``: a user predicate ``until(history, epoch) -> bool``, traced into
  the program (``history`` is the :class:`~gdjax.loop.History` so far and
  ``epoch`` the number of the epoch just run, counting from 1; epoch e's row is
  ``(e - 1) // stride``, which is ``e - 1`` unless ``epochs > history_size``).
"""

from __future__ import annotations

import enum
from typing import NamedTuple

import jax
import jax.numpy as jnp


class Status(enum.IntEnum):
    """Why a run stopped (``RUNNING`` while it has not)."""

    RUNNING = 0
    MAX_EPOCHS = 1
    MAX_STEPS = 2
    TARGET_LOSS = 3
    GRAD_TOL = 4
    NO_IMPROVEMENT = 5
    PREDICATE = 6
    CALLBACK = 7
    STREAM_END = 8
    NONFINITE_LOSS = 9
    NONFINITE_GRAD = 10
    NONFINITE_PARAMS = 11

    @property
    def message(self) -> str:
        return MESSAGES[self]

    @property
    def failed(self) -> bool:
        """True for the non-finite statuses."""
        return self >= Status.NONFINITE_LOSS


MESSAGES = {
    Status.RUNNING: "still running (the epoch budget of this call is not spent)",
    Status.MAX_EPOCHS: "reached the maximum number of epochs",
    Status.MAX_STEPS: "reached the maximum number of steps",
    Status.TARGET_LOSS: "the training loss reached target_loss",
    Status.GRAD_TOL: "the gradient norm fell to grad_tol (converged)",
    Status.NO_IMPROVEMENT: "no relative improvement above tol for patience epochs",
    Status.PREDICATE: "the user predicate `until` returned True",
    Status.CALLBACK: "the callback asked to stop",
    Status.STREAM_END: "the stream ended",
    Status.NONFINITE_LOSS: "the loss became NaN or inf",
    Status.NONFINITE_GRAD: "a gradient became NaN or inf",
    Status.NONFINITE_PARAMS: "an update made the parameters NaN or inf",
}
"""The sentence each :class:`Status` reads as (``Status.message``)."""


class Criteria(NamedTuple):
    """The numbers of the stopping criteria, as arrays (sweepable).

    Disabled criteria hold values that never fire: ``target_loss=-inf``,
    ``grad_tol=-1``, ``max_steps`` = int32 max, ``patience`` = int32 max.

    Attributes:
      max_steps: stop after this many gradient steps (int32).
      target_loss: stop when an epoch's mean loss is at most this.
      grad_tol: stop when an epoch's mean gradient norm is at most this.
      tol: the relative improvement the plateau rule asks for.
      patience: epochs without that improvement before the plateau stop.
    """

    max_steps: jax.Array
    target_loss: jax.Array
    grad_tol: jax.Array
    tol: jax.Array
    patience: jax.Array


_NEVER_INT = 2**31 - 1


def make_criteria(
    *,
    max_steps=None,
    target_loss=None,
    grad_tol=None,
    tol=None,
    patience=None,
    dtype=None,
) -> Criteria:
    """Criteria with ``None`` meaning "off"; numbers kept as host arrays.

    The thresholds are held in ``dtype``, the run's loss dtype (float32 if
    None): compared with a float64 loss, a threshold rounded to float32 moves
    the stop by an epoch.
    """
    import numpy as np

    fdtype = np.float32 if dtype is None else np.dtype(dtype)

    def f(value, off):
        return np.asarray(off if value is None else value, dtype=fdtype)

    def i(value):
        return np.asarray(_NEVER_INT if value is None else value, dtype=np.int32)

    return Criteria(
        max_steps=i(max_steps),
        target_loss=f(target_loss, -np.inf),
        grad_tol=f(grad_tol, -1.0),
        tol=f(tol, 0.0),
        patience=i(patience if tol is not None else None),
    )


def target_reached(loss: jax.Array, target_loss: jax.typing.ArrayLike) -> jax.Array:
    """``loss <= target_loss``: the "satisfactory value" rule (``target_loss``).

    Examples:
      >>> import jax.numpy as jnp, gdjax as gd
      >>> bool(gd.stopping.target_reached(jnp.float32(0.04), 0.05))
      True
    """
    return loss <= jnp.asarray(target_loss, jnp.result_type(loss))


def grad_converged(grad_norm: jax.Array, grad_tol: jax.typing.ArrayLike) -> jax.Array:
    """``grad_norm <= grad_tol``: the convergence test of descent (``grad_tol``).

    Examples:
      >>> import jax.numpy as jnp, gdjax as gd
      >>> bool(gd.stopping.grad_converged(jnp.float32(1e-3), 1e-4))
      False
    """
    return grad_norm <= jnp.asarray(grad_tol, jnp.result_type(grad_norm))


def plateaued(bad_epochs: jax.Array, patience: jax.typing.ArrayLike) -> jax.Array:
    """``bad_epochs >= patience``: ``patience`` epochs in a row without improvement.

    ``bad_epochs`` is the counter :func:`plateau_update` keeps.
    """
    return bad_epochs >= patience


def plateau_init(dtype=jnp.float32) -> tuple[jax.Array, jax.Array]:
    """``(best, bad_epochs)`` before the first epoch: ``(inf, 0)``, the plateau
    counter's start (``best`` in the loss dtype, ``bad_epochs`` int32)."""
    return jnp.full((), jnp.inf, dtype), jnp.zeros((), jnp.int32)


def epoch_status(
    criteria: Criteria,
    loss: jax.Array,
    grad_norm: jax.Array,
    bad_epochs: jax.Array,
) -> jax.Array:
    """The status an epoch's history entry triggers (``RUNNING`` if none).

    Earlier criteria in this order win: target loss, gradient tolerance, plateau.
    ``fit`` calls it after every epoch on the epoch's mean loss and gradient norm
    and the counter :func:`plateau_update` has just updated. Build ``criteria``
    as ``fit`` does, from a :class:`gdjax.Stopping` value:
    ``gd.Stopping(target_loss=0.1, tol=1e-3).criteria(jnp.float32)``.

    Examples:
      >>> import jax.numpy as jnp, gdjax as gd
      >>> c = gd.Stopping(target_loss=0.1, grad_tol=1e-3).criteria(jnp.float32)
      >>> gd.Status(int(gd.stopping.epoch_status(
      ...     c, jnp.float32(0.5), jnp.float32(1e-4), jnp.int32(0)))).name
      'GRAD_TOL'
    """
    status = jnp.int32(Status.RUNNING)
    status = jnp.where(
        plateaued(bad_epochs, criteria.patience), Status.NO_IMPROVEMENT, status
    )
    status = jnp.where(
        grad_converged(grad_norm, criteria.grad_tol), Status.GRAD_TOL, status
    )
    status = jnp.where(
        target_reached(loss, criteria.target_loss), Status.TARGET_LOSS, status
    )
    return status.astype(jnp.int32)


def plateau_update(
    criteria: Criteria, loss: jax.Array, best: jax.Array, bad_epochs: jax.Array
) -> tuple[jax.Array, jax.Array]:
    r"""scikit-learn's ``n_iter_no_change`` counter with a relative tolerance.

    An epoch improves if :math:`L_e < L_{best} - tol\,|L_{best}|` (or if no
    best exists yet); ``bad_epochs`` counts the epochs in a row that did not,
    and ``best`` is the lowest loss so far. Start from :func:`plateau_init`.

    Returns:
      ``(best, bad_epochs)`` after the epoch.

    Examples:
      >>> import jax.numpy as jnp, gdjax as gd
      >>> c = gd.Stopping(tol=0.1, patience=2).criteria(jnp.float32)
      >>> best, bad = gd.stopping.plateau_init()
      >>> for loss in [1.0, 0.95, 0.93]:
      ...     best, bad = gd.stopping.plateau_update(c, jnp.float32(loss), best, bad)
      >>> round(float(best), 4), int(bad), bool(gd.stopping.plateaued(bad, c.patience))
      (0.93, 2, True)
    """
    improved = loss < best - criteria.tol.astype(loss.dtype) * jnp.abs(best)
    improved = improved | ~jnp.isfinite(best)
    bad_epochs = jnp.where(improved, 0, bad_epochs + 1).astype(jnp.int32)
    best = jnp.minimum(best, loss)
    return best, bad_epochs


class Verdicts(NamedTuple):
    """The epoch criteria applied to a whole history (:func:`history_status`).

    Attributes:
      status: per epoch, the status its row triggers (int32, ``RUNNING`` if none).
      best: per epoch, the best loss so far.
      bad_epochs: per epoch, the plateau counter.
      epoch: the first epoch (counting from 1) whose status is not
        ``RUNNING``; 0 if none.
      stopped_by: that epoch's status (``RUNNING`` if none).
    """

    status: jax.Array
    best: jax.Array
    bad_epochs: jax.Array
    epoch: jax.Array
    stopped_by: jax.Array


def history_status(
    criteria: Criteria, loss: jax.Array, grad_norm: jax.Array
) -> Verdicts:
    """Where ``fit``'s epoch criteria would stop a run with this history.

    Replays :func:`plateau_update` and :func:`epoch_status` over the rows (a
    ``lax.scan``: jittable, vmappable), as ``fit`` does after each epoch. Use it
    on ``result.history.loss`` / ``.grad_norm`` of a run without criteria to see
    where a criterion would have stopped it, or on the per-epoch means of a
    loop of your own. (``max_steps``, ``until``, NaN stops and the epoch budget
    are not epoch-row rules and are not replayed.)

    Args:
      criteria: the thresholds, e.g. ``gd.Stopping(tol=1e-3).criteria(dtype)``.
      loss: ``(epochs,)`` mean training loss of each epoch.
      grad_norm: ``(epochs,)`` mean gradient norm of each epoch.

    Returns:
      :class:`Verdicts`: per-epoch statuses and counters, the first stopping
      epoch and its status.

    Examples:
      >>> import jax.numpy as jnp, gdjax as gd
      >>> c = gd.Stopping(target_loss=0.25).criteria(jnp.float32)
      >>> v = gd.stopping.history_status(c, jnp.array([1.0, 0.5, 0.2, 0.1]),
      ...                                jnp.ones(4))
      >>> int(v.epoch), gd.Status(int(v.stopped_by)).name
      (3, 'TARGET_LOSS')
    """
    loss = jnp.asarray(loss)
    grad_norm = jnp.asarray(grad_norm)

    def row(carry, xs):
        best, bad = carry
        e_loss, e_gn = xs
        best, bad = plateau_update(criteria, e_loss, best, bad)
        return (best, bad), (epoch_status(criteria, e_loss, e_gn, bad), best, bad)

    _, (status, best, bad) = jax.lax.scan(
        row, plateau_init(loss.dtype), (loss, grad_norm)
    )
    stopped = status != Status.RUNNING
    first = jnp.argmax(stopped)
    anywhere = jnp.any(stopped)
    epoch = jnp.where(anywhere, first + 1, 0).astype(jnp.int32)
    stopped_by = jnp.where(anywhere, status[first], Status.RUNNING).astype(jnp.int32)
    return Verdicts(status, best, bad, epoch, stopped_by)


__all__ = [
    "MESSAGES",
    "Criteria",
    "Status",
    "Verdicts",
    "epoch_status",
    "grad_converged",
    "history_status",
    "make_criteria",
    "plateau_init",
    "plateau_update",
    "plateaued",
    "target_reached",
]
