"""Shared pytest configuration: strict rank promotion and a compile counter."""

from __future__ import annotations

import contextlib

import jax
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")

_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
_counts = {"n": 0}


def _listener(event: str, duration: float, **kwargs) -> None:
    del duration, kwargs
    if event == _COMPILE_EVENT:
        _counts["n"] += 1


jax.monitoring.register_event_duration_secs_listener(_listener)


class CompileCounter:
    """Counts XLA backend compilations inside a ``with`` block (``.count``)."""

    def __init__(self) -> None:
        self.count = 0

    @contextlib.contextmanager
    def __call__(self):
        start = _counts["n"]
        try:
            yield self
        finally:
            self.count = _counts["n"] - start


@pytest.fixture
def compiles() -> CompileCounter:
    """``with compiles() as c: ...; assert c.count == 0``."""
    return CompileCounter()


@pytest.fixture
def x64():
    """Run a test with 64-bit mode on."""
    with jax.enable_x64(True):
        yield
