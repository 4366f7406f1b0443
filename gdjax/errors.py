"""Exceptions raised at gdjax's public boundary.

Inside a compiled run, failure is a status code carried in the loop state; it
becomes one of these exceptions only at the boundary, and only when asked
(``fit(..., raise_on_nonfinite=True)``).
"""

from __future__ import annotations

from typing import Any


class GdjaxError(Exception):
    """Base class of every error gdjax raises on its own account."""


class GdjaxWarning(UserWarning):
    """Base class of every warning gdjax issues."""


class NonFiniteError(GdjaxError, FloatingPointError):
    """A run met NaN or inf. ``.result`` holds the last finite state."""

    def __init__(self, message: str, result: Any):
        super().__init__(message)
        self.result = result


class CheckpointError(GdjaxError):
    """A checkpoint is missing, corrupt or does not match the run."""
