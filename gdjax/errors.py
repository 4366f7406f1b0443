"""Exceptions raised at gdjax's public boundary.

Inside a compiled run, failure is a status code carried in the loop state; it
becomes one of these exceptions only at the boundary, and only when asked
(``fit(..., raise_on_nonfinite=True)``).
"""

from __future__ import annotations

from typing import Any


class GdjaxError(Exception):
    """Base class of every error gdjax raises on its own account."""


class GdjaxTypeError(GdjaxError, TypeError):
    """An argument of the wrong kind, refused at the boundary (before compiling).

    A ``TypeError`` too, so ``except TypeError`` keeps working.
    """


class GdjaxValueError(GdjaxError, ValueError):
    """An argument of the right kind with a bad value, refused before compiling.

    A ``ValueError`` too, so ``except ValueError`` keeps working.
    """


class GdjaxWarning(UserWarning):
    """Base class of every warning gdjax issues."""


class ZeroGradientWarning(GdjaxWarning):
    """The gradient is exactly zero in every parameter at the start of a run:
    plain gradient descent would never move (dead units, a start at a
    stationary point, a loss flat where it starts)."""


class IgnoredBatchWarning(GdjaxWarning):
    """The loss never reads its batch (it gives the same value for any two
    batches): typically it closes over the whole data set, so mini-batching,
    shuffling and ``val_data`` have no effect."""


class NonFiniteError(GdjaxError, FloatingPointError):
    """A run met NaN or inf. ``.result`` holds the last finite state."""

    def __init__(self, message: str, result: Any):
        super().__init__(message)
        self.result = result


class CheckpointError(GdjaxError):
    """A checkpoint is missing, corrupt or does not match the run."""
