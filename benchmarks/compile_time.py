"""Compile time of a single run's program: as prepared, and as ``fit`` compiles it.

``gd.runs.prepare`` builds the program a sweep would run (the fast path's
checked replay inside it for tiny steps, every step checked for larger ones).
A single ``fit`` without ``max_steps`` compiles ``gd.runs.single_program`` of
it instead: the fast path at any step size, the replay left to the host. For
each workload (its ``quick`` budget, the benchmark's data and parameters),
both are lowered once and compiled ``--repeats`` times from cold caches
(``jax.clear_caches()``), alternating; the figure is the fastest compile of
each (lowering excluded). With ``--quick`` also the single program with
``compiler_options=gd.QUICK_COMPILE``.

    python benchmarks/compile_time.py [--workloads W2,W3,W5] [--repeats 3] [--quick]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: the benchmarks package
    sys.path.append(str(ROOT))

import gdjax as gd  # noqa: E402
from benchmarks.workloads import build  # noqa: E402


def compile_times(name: str, repeats: int, quick: bool) -> dict[str, float]:
    """``{variant: fastest compile in seconds}`` for one single-run workload."""
    w = build(name, "quick")
    stopping, recording, driving = gd.spec.from_options()
    run = gd.runs.prepare(
        w.gd_loss(), w.params, (w.x, w.y),
        gd.sgd(w.learning_rate, momentum=w.momentum or None),
        key=jax.random.key(w.seed), epochs=w.epochs, regime=w.regime(),
        stopping=stopping, recording=recording, driving=driving,
    )
    args = (run.state, run.inputs, np.int32(w.epochs))
    single = gd.runs.single_program(run.program)
    variants = {"prepared": (run.program, None), "single": (single, None)}
    if quick:
        variants["single, QUICK_COMPILE"] = (single, dict(gd.QUICK_COMPILE))
    best = dict.fromkeys(variants, float("inf"))
    for _ in range(repeats):
        for label, (program, options) in variants.items():
            jax.clear_caches()
            lowered = gd.loop.advance.lower(program, *args)
            t0 = time.perf_counter()
            lowered.compile(compiler_options=options)
            best[label] = min(best[label], time.perf_counter() - t0)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", default="W2,W3,W5")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    for name in args.workloads.split(","):
        if build(name, "quick").is_sweep:
            raise SystemExit(f"{name} is a sweep: this times single runs")
        best = compile_times(name, args.repeats, args.quick)
        shown = ", ".join(f"{k} {v:.3f} s" for k, v in best.items())
        print(f"{name}: {shown}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
