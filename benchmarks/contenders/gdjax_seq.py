"""W4's baseline: the 256 members as 256 sequential ``gd.fit`` calls.

Each member draws its initial parameters and its data order from
``gd.seed_keys(seed)`` exactly as the sweep does, so the two do the same
work; the compiled run program is reused after the first call (``gd.sgd``
keeps the learning rate as an array), so this is the cost of per-run dispatch
and validation plus one member's compute at a time.
"""

from __future__ import annotations

from benchmarks.contenders import Prepared
from benchmarks.workloads import Workload

NAME = "gdjax-seq"
LABEL = "gdjax, sequential gd.fit per member"
REQUIRES: tuple[str, ...] = ()


def supports(w: Workload) -> bool:
    return w.is_sweep


def prepare(w: Workload, **options) -> Prepared:
    from benchmarks.contenders import w4_sweep

    return w4_sweep.prepare_sequential(w, **options)
