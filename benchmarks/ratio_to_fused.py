"""gdjax's steady time over the hand-fused program's, side by side in one process.

For each workload: ``gd.fit`` (W4: ``gd.sweep``) as the benchmark's gdjax
contender runs it, and the hand-fused program (:mod:`benchmarks.contenders.fused`),
compiled once, then timed alternately ``--repeats`` times; the figure is the
ratio of the medians. ``--lean`` times ``guard=False, step_stats=False`` too.
Run it in several processes, or against another checkout of gdjax (its root
first on ``PYTHONPATH``), to see the spread or an A/B:

    python benchmarks/ratio_to_fused.py --workloads W2,W5 [--mode full] \
        [--repeats 15] [--lean]
    PYTHONPATH=/path/to/other/checkout python benchmarks/ratio_to_fused.py ...
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: the benchmarks package
    sys.path.append(str(ROOT))

from benchmarks.contenders import fused, gdjax_fit  # noqa: E402
from benchmarks.workloads import build  # noqa: E402


def ratios(name: str, mode: str, repeats: int, lean: bool) -> dict[str, float]:
    """``{contender: median time / fused median time}`` for one workload."""
    w = build(name, mode)
    runs = {"gdjax": gdjax_fit.prepare(w).run, "fused": fused.prepare(w).run}
    if lean:
        runs["lean"] = gdjax_fit.prepare(w, guard=False, step_stats=False).run
    for run in runs.values():  # compile, and a first run
        run()
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(repeats):
        for k, run in runs.items():
            t0 = time.perf_counter()
            run()
            times[k].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {k: v / med["fused"] for k, v in med.items() if k != "fused"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", default="W1,W2,W3,W4,W5")
    parser.add_argument("--mode", default="full", choices=("smoke", "quick", "full"))
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--lean", action="store_true")
    args = parser.parse_args(argv)
    import gdjax

    print(f"gdjax from {Path(gdjax.__file__).parent}, {args.mode} mode")
    for name in args.workloads.split(","):
        got = ratios(name, args.mode, args.repeats, args.lean)
        print(name, " ".join(f"{k}/fused={v:.3f}" for k, v in got.items()), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
