"""The spread of the headline ratios over several result files.

    python -m benchmarks.spread benchmarks/results/full-run*.json

Prints a markdown table: one row per workload x contender, one column per file
(its gdjax speed-up over that contender; for ``fused``, gdjax time / fused time),
then the min-max range. Timings on a shared machine move from run to run; the
ratios, measured within one run, move less.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _ratio(entry: dict, name: str) -> float | None:
    sp = entry.get("speedup")
    if sp is None:
        return None
    return 1.0 / sp if name == "fused" else sp


def table(paths: list[str]) -> str:
    runs = [(Path(p).stem, json.loads(Path(p).read_text())) for p in paths]
    rows: dict[tuple[str, str], list[float | None]] = {}
    for i, (_, r) in enumerate(runs):
        for wl, block in r["workloads"].items():
            for name, e in block["results"].items():
                if name == "gdjax":
                    continue
                rows.setdefault((wl, name), [None] * len(runs))[i] = _ratio(e, name)
            compile_s = block["results"].get("gdjax", {}).get("compile_s")
            if compile_s is not None:
                key = (wl, "gdjax compile_s")
                rows.setdefault(key, [None] * len(runs))[i] = compile_s
    head = ["workload", "ratio"] + [stem for stem, _ in runs] + ["range"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (wl, name), values in sorted(rows.items()):
        what = (
            "gdjax / fused time"
            if name == "fused"
            else (name if name.startswith("gdjax ") else f"speed-up vs {name}")
        )
        got = [v for v in values if v is not None]
        cells = ["–" if v is None else f"{v:.3g}" for v in values]
        rng = f"{min(got):.3g}–{max(got):.3g}" if got else "–"
        out.append("| " + " | ".join([wl, what, *cells, rng]) + " |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    paths = sys.argv[1:] if argv is None else argv
    if not paths:
        raise SystemExit("usage: python -m benchmarks.spread RESULT.json ...")
    print(table(paths))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
