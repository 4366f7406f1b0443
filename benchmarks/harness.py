"""Measuring one call: wall time, compilations, resident memory.

* :func:`timed` runs a callable once and returns ``(seconds, result)``.
* :class:`CompileLog` records every XLA backend compilation (function name and
  seconds) while it is active, from JAX's monitoring events.
* :class:`RssPeak` samples the process's resident set size in a background
  thread (every ``interval`` seconds) and reports the peak above the size at
  entry: the extra memory one run needs. It reads ``psutil`` when installed and
  ``/proc/self/statm`` otherwise; RSS includes everything (Python, NumPy, torch,
  XLA buffers), and memory freed by an allocator but kept for reuse shows as 0.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

import jax

_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
_active: list[CompileLog] = []


def _on_event(event: str, duration: float, **kwargs: Any) -> None:
    if event == _COMPILE_EVENT and _active:
        name = str(kwargs.get("fun_name", "?"))
        for log in _active:
            log.events.append((name, float(duration)))


jax.monitoring.register_event_duration_secs_listener(_on_event)


class CompileLog:
    """``with CompileLog() as log: ...``; then ``log.events`` = [(name, seconds)]."""

    def __init__(self) -> None:
        self.events: list[tuple[str, float]] = []

    def __enter__(self) -> CompileLog:
        _active.append(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        _active.remove(self)

    @property
    def count(self) -> int:
        return len(self.events)

    @property
    def seconds(self) -> float:
        return sum(d for _, d in self.events)


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """``(wall seconds, fn())``; ``fn`` must block until its work is done."""
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


try:  # optional: psutil (the "bench" extra); /proc otherwise
    import psutil as _psutil
except ImportError:  # pragma: no cover - depends on the environment
    _psutil = None

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes() -> int | None:
    """Resident set size of this process in bytes (None if unknown)."""
    if _psutil is not None:
        return int(_psutil.Process().memory_info().rss)
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except OSError:  # pragma: no cover - not Linux
        return None


class RssPeak:
    """Peak RSS above the RSS at entry, sampled in a thread (``.delta`` bytes)."""

    def __init__(self, interval: float = 0.002) -> None:
        self.interval = interval
        self.delta: int | None = None
        self._stop = threading.Event()
        self._peak = 0
        self._start: int | None = None

    def _sample(self) -> None:
        while not self._stop.is_set():
            now = rss_bytes() or 0
            self._peak = max(self._peak, now)
            self._stop.wait(self.interval)

    def __enter__(self) -> RssPeak:
        self._start = rss_bytes()
        self._peak = self._start or 0
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        end = rss_bytes() or 0
        self._peak = max(self._peak, end)
        if self._start is not None:
            self.delta = max(0, self._peak - self._start)


def source() -> str:
    """Which RSS reader is in use."""
    return "psutil" if _psutil is not None else "/proc/self/statm"


__all__ = ["CompileLog", "RssPeak", "rss_bytes", "source", "timed"]
