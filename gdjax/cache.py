"""JAX's persistent compilation cache, as one switch.

A gdjax run is one XLA program, and compiling it is most of a first call's
time (1-2 s for a small model on a CPU). JAX can keep compiled programs on
disk and load them in the next process instead of compiling again:
:func:`enable_compilation_cache` turns that on for the rest of the process.
JAX decides at a process's first compilation whether the cache is used, so
call it before anything compiles (right after ``import gdjax``). ``gdjax
demo`` turns it on (``--no-cache`` turns it off).

On a CPU, :data:`QUICK_COMPILE` (``compiler_options=gd.QUICK_COMPILE``)
compiles a run's program 32-42% faster, for a run time 5% faster to 8%
slower.

Examples:
  >>> import gdjax as gd
  >>> gd.cache.default_cache_dir().endswith("jax")
  True
"""

from __future__ import annotations

import os
import sys

MIN_COMPILE_S = 0.5
"""Programs that compile faster than this are not worth a file."""


QUICK_COMPILE: dict[str, bool] = {"xla_cpu_use_fusion_emitters": False}
"""XLA options that compile a CPU program faster, for the ``compiler_options``
of :func:`gdjax.fit`, :func:`gdjax.sweep`, :func:`gdjax.fit_stream` and the
other entry points that train.

XLA's CPU backend emits each fusion through its MLIR fusion emitters; with
them off it uses its older direct emitters. Measured on the 2-core CPU, one
process, the benchmark's workloads' run programs (``gd.fit``'s defaults),
compile time and median run time, with / without (bitwise the same results):

=========  ===============  ==============
workload   compile (s)      run (ms)
=========  ===============  ==============
W1         0.142 -> 0.083   51.4 -> 48.7
W2         0.410 -> 0.253   6.79 -> 7.36
W3         0.456 -> 0.312   128.8 -> 134.4
W5         0.406 -> 0.242   7.20 -> 6.82
=========  ===============  ==============

Worth it when a program is compiled for few runs (a notebook's first call,
a test suite); the default keeps XLA's own choice. The option is read by the
CPU backend alone.
"""


def default_cache_dir() -> str:
    """``$XDG_CACHE_HOME`` or ``~/.cache`` (``~/Library/Caches`` on macOS,
    ``%LOCALAPPDATA%`` on Windows), then ``gdjax/jax``."""
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or os.path.expanduser(
            os.path.join("~", "AppData", "Local")
        )
    elif sys.platform == "darwin":
        base = os.path.expanduser(os.path.join("~", "Library", "Caches"))
    else:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser(
            os.path.join("~", ".cache")
        )
    return os.path.join(base, "gdjax", "jax")


def enable_compilation_cache(
    path: str | os.PathLike | None = None, *, min_compile_time_s: float = MIN_COMPILE_S
) -> str:
    """Turn on JAX's persistent compilation cache in ``path`` for this process.

    Args:
      path: the folder (made if missing); default :func:`default_cache_dir`.
      min_compile_time_s: programs that compile faster are not written.

    Returns:
      The folder used.

    Raises:
      OSError: the folder cannot be made.
    """
    import jax

    folder = os.fspath(default_cache_dir() if path is None else path)
    os.makedirs(folder, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", folder)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", min_compile_time_s)
    return folder


__all__ = [
    "MIN_COMPILE_S",
    "QUICK_COMPILE",
    "default_cache_dir",
    "enable_compilation_cache",
]
