"""Contenders: the same workload done the way each tool is used today.

Each contender module has ``NAME``, ``LABEL``, ``REQUIRES`` (import names of
optional packages), ``supports(workload) -> bool`` and ``prepare(workload,
**options) -> Prepared``. ``prepare`` does the host-side setup that a user does
once (converting data, building the jitted step); ``Prepared.run()`` then does
the whole workload from the same initial parameters, blocks until it is done and
returns the contender's raw result, and ``Prepared.to_params`` turns that into
NumPy layers ``[{"w": (d_in, d_out), "b": (d_out,)}, ...]`` (with a leading
member axis for W4) for the common evaluator.

=========  ============================================================
name       what
=========  ============================================================
gdjax      ``gd.fit`` (W4: one ``gd.sweep``)
gdjax-seq  W4 only: 256 sequential ``gd.fit`` runs
fused      one hand-written ``jax.jit`` of the whole run (the ceiling)
optax      the optax tutorial loop: Python loops, NumPy shuffle, jitted step
torch      ``torch.optim.SGD`` on CPU, the usual training loop
sklearn    ``SGDRegressor`` / ``SGDClassifier`` (W1, W2, W5)
=========  ============================================================
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from typing import Any, NamedTuple

ORDER = ("gdjax", "gdjax-seq", "fused", "optax", "torch", "sklearn")
_MODULES = {
    "gdjax": "benchmarks.contenders.gdjax_fit",
    "gdjax-seq": "benchmarks.contenders.gdjax_seq",
    "fused": "benchmarks.contenders.fused",
    "optax": "benchmarks.contenders.optax_loop",
    "torch": "benchmarks.contenders.torch_sgd",
    "sklearn": "benchmarks.contenders.sklearn_sgd",
}


class Prepared(NamedTuple):
    """A contender ready to run one workload (see the module docstring)."""

    run: Callable[[], Any]
    to_params: Callable[[Any], Any]
    xla_memory: Callable[[], dict[str, int] | None] | None = None
    same_algorithm: bool = True
    notes: str = ""
    threads: int | None = None


def missing(requires: tuple[str, ...]) -> list[str]:
    """The packages of ``requires`` that cannot be imported here."""
    return [name for name in requires if importlib.util.find_spec(name) is None]


def load(name: str):
    """The contender module ``name`` (see :data:`ORDER`)."""
    if name not in _MODULES:
        raise ValueError(f"unknown contender {name!r}; choose from {ORDER}.")
    return importlib.import_module(_MODULES[name])


__all__ = ["ORDER", "Prepared", "load", "missing"]
