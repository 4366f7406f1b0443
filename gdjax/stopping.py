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


class Criteria(NamedTuple):
    """The numbers of the stopping criteria, as arrays (sweepable).

    Disabled criteria hold values that never fire: ``target_loss=-inf``,
    ``grad_tol=-1``, ``max_steps`` = int32 max, ``patience`` = int32 max.
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


def epoch_status(
    criteria: Criteria,
    loss: jax.Array,
    grad_norm: jax.Array,
    bad_epochs: jax.Array,
) -> jax.Array:
    """The status an epoch's history entry triggers (``RUNNING`` if none).

    Earlier criteria in this order win: target loss, gradient tolerance, plateau.
    """
    status = jnp.int32(Status.RUNNING)
    status = jnp.where(bad_epochs >= criteria.patience, Status.NO_IMPROVEMENT, status)
    status = jnp.where(grad_norm <= criteria.grad_tol, Status.GRAD_TOL, status)
    status = jnp.where(loss <= criteria.target_loss, Status.TARGET_LOSS, status)
    return status.astype(jnp.int32)


def plateau_update(
    criteria: Criteria, loss: jax.Array, best: jax.Array, bad_epochs: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """scikit-learn's ``n_iter_no_change`` counter with a relative tolerance."""
    improved = loss < best - criteria.tol.astype(loss.dtype) * jnp.abs(best)
    improved = improved | ~jnp.isfinite(best)
    bad_epochs = jnp.where(improved, 0, bad_epochs + 1).astype(jnp.int32)
    best = jnp.minimum(best, loss)
    return best, bad_epochs


__all__ = ["MESSAGES", "Criteria", "Status", "epoch_status", "make_criteria"]
