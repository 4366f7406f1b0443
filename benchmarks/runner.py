"""``python -m benchmarks``: run the workloads, write JSON and markdown, check targets.

Protocol, per workload:

1. Each contender does its host-side setup (``prepare``), then its first run
   (in full mode with JAX's caches cleared, ``jax.clear_caches()``, as in a
   fresh process): that run pays tracing, compilation and any lazy
   initialization, and the compilations it triggers are logged.
2. In full mode one untimed warm-up run of every contender (its caches were
   cleared by the contenders after it); then ``repeats`` steady runs of each,
   interleaved (contender order rotates each round) so that load from other
   processes on the machine hits all of them alike. The first round also
   samples resident memory. Later compilations are counted (they should be 0).
3. ``compile_s`` = first run - median steady run; ``steady_s`` = the median;
   speed-up = contender median / gdjax median; the floor comes from
   :mod:`benchmarks.floor`.
4. The final parameters of the last run go through one evaluator
   (:func:`benchmarks.workloads.evaluate`): final training loss and accuracy.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import math
import shlex
import statistics
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import jax

from benchmarks import contenders as C
from benchmarks import floor as F
from benchmarks import harness as H
from benchmarks import report as R
from benchmarks import workloads as W

SCHEMA = "gdjax-benchmarks/1"
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "latest.json"


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="gdjax against the optax loop, a hand-fused JAX program, "
        "PyTorch and scikit-learn, as ratios measured in one run.",
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="small budgets (< 3 min)")
    mode.add_argument(
        "--smoke",
        action="store_true",
        help="a few steps per workload, shared data order, for the test suite",
    )
    p.add_argument("--only", help="workloads to run, e.g. W1,W3 (default: all)")
    p.add_argument(
        "--contenders",
        help=f"contenders to run (default: all installed of {','.join(C.ORDER)})",
    )
    p.add_argument(
        "--out",
        default=str(DEFAULT_OUT),
        help="JSON path (the markdown goes next to it, .md) or a directory "
        "(latest.json and latest.md in it)",
    )
    p.add_argument("--repeats", type=int, help="steady runs per contender")
    p.add_argument(
        "--torch-threads",
        type=int,
        help="torch.set_num_threads for the torch contender (default: torch's "
        "default, the number of cores, with a 1-thread diagnostic)",
    )
    p.add_argument(
        "--no-diagnostics",
        action="store_true",
        help="skip the gdjax variants (guard=False, shuffle=False)",
    )
    floor = p.add_mutually_exclusive_group()
    floor.add_argument(
        "--no-floor", action="store_true", help="skip the floor estimate"
    )
    floor.add_argument(
        "--floor", action="store_true", help="estimate the floor in --smoke too"
    )
    p.add_argument(
        "--shared-order",
        action="store_true",
        help="host contenders use gdjax's data order (default in --smoke)",
    )
    return p.parse_args(argv)


def _paths(out: str) -> tuple[Path, Path]:
    path = Path(out)
    if path.suffix.lower() == ".json":
        return path, path.with_suffix(".md")
    return path / "latest.json", path / "latest.md"


def _clean(value: Any) -> Any:
    """JSON-safe: NaN/inf become None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


# ------------------------------------------------------------------------ one workload


class _Slot:
    """One contender (or diagnostic variant) being measured on a workload."""

    def __init__(self, key: str, name: str, module, options: dict[str, Any]):
        self.key, self.name, self.module, self.options = key, name, module, options
        self.prepared: C.Prepared | None = None
        self.entry: dict[str, Any] = {"label": module.LABEL, "contender": name}
        self.times: list[float] = []
        self.result: Any = None
        self.recompiles = 0


def _by_name(events: list[tuple[str, float]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, seconds in events:
        out[name] = out.get(name, 0.0) + seconds
    return out


def _first_run(slot: _Slot, w: W.Workload, cold: bool) -> None:
    if cold:
        jax.clear_caches()
    gc.collect()
    slot.prepared = slot.module.prepare(w, **slot.options)
    with H.CompileLog() as log:
        first, slot.result = H.timed(slot.prepared.run)
    slot.entry.update(
        first_s=first,
        compiles_first=log.count,
        compile_backend_s=log.seconds,
        compile_names=sorted({name for name, _ in log.events}),
        compile_by_name=_by_name(log.events),
    )
    if log.events:
        longest = max(log.events, key=lambda e: e[1])[0]
        slot.entry["run_program"] = longest
        slot.entry["run_program_compiles"] = sum(
            1 for name, _ in log.events if name == longest
        )


def _steady_run(slot: _Slot, sample_memory: bool) -> None:
    assert slot.prepared is not None
    with H.CompileLog() as log:
        if sample_memory:
            with H.RssPeak() as rss:
                t, slot.result = H.timed(slot.prepared.run)
            slot.entry["rss_delta_bytes"] = rss.delta
        else:
            t, slot.result = H.timed(slot.prepared.run)
    slot.recompiles += log.count
    slot.times.append(t)


def _finish(slot: _Slot, w: W.Workload, fl: dict | None) -> None:
    p = slot.prepared
    assert p is not None
    e = slot.entry
    steady = statistics.median(slot.times)
    steps = w.steps * w.members
    e.update(
        steady_s=steady,
        times_s=slot.times,
        min_s=min(slot.times),
        max_s=max(slot.times),
        compile_s=max(0.0, e["first_s"] - steady),
        steps=steps,
        steps_per_s=steps / steady,
        us_per_step=steady / steps * 1e6,
        recompiles_steady=slot.recompiles,
        same_algorithm=p.same_algorithm,
        notes=p.notes,
        threads=p.threads,
        floor_ratio=None if fl is None else steady / fl["seconds"],
    )
    params = p.to_params(slot.result)
    loss, acc = (W.evaluate_members if w.is_sweep else W.evaluate)(w, params)
    e.update(final_loss=loss, accuracy=acc)
    if p.xla_memory is not None:
        try:
            e["xla_bytes"] = p.xla_memory()
        except Exception as err:  # noqa: BLE001 - an optional figure
            e["xla_bytes"] = None
            e["xla_bytes_error"] = repr(err)
    slot.result = None


def _slots(
    w: W.Workload, names: list[str], diagnostics: bool, torch_threads: int | None
):
    slots, skipped = [], {}
    for name in names:
        module = C.load(name)
        if not module.supports(w):
            continue
        lacking = C.missing(module.REQUIRES)
        if lacking:
            skipped[name] = f"{', '.join(lacking)} not installed"
            continue
        options = (
            {"threads": torch_threads} if name == "torch" and torch_threads else {}
        )
        slots.append(_Slot(name, name, module, options))
    if (
        diagnostics
        and torch_threads is None
        and "torch" in names
        and not C.missing(("torch",))
    ):
        torch_mod = C.load("torch")
        if torch_mod.supports(w):
            slots.append(_Slot("torch[threads=1]", "torch", torch_mod, {"threads": 1}))
    if diagnostics and "gdjax" in names:
        gdjax_mod = C.load("gdjax")
        if not w.is_sweep:
            slots.append(
                _Slot("gdjax[guard=False]", "gdjax", gdjax_mod, {"guard": False})
            )
        lean = {"guard": False, "step_stats": False}
        slots.append(
            _Slot("gdjax[guard=False,step_stats=False]", "gdjax", gdjax_mod, lean)
        )
        if w.name == "W2":
            slots.append(
                _Slot("gdjax[shuffle=False]", "gdjax", gdjax_mod, {"shuffle": False})
            )
            if "fused" in names:
                slots.append(
                    _Slot(
                        "fused[shuffle=False]",
                        "fused",
                        C.load("fused"),
                        {"shuffle": False},
                    )
                )
    return slots, skipped


def run_workload(
    w: W.Workload,
    names: list[str],
    *,
    repeats: int,
    diagnostics: bool,
    floor: bool,
    cold: bool = True,
    torch_threads: int | None = None,
    log=print,
) -> dict[str, Any]:
    """Measure every contender on ``w``; the workload's block of the JSON.

    ``cold`` (full mode) clears JAX's caches before each contender's first
    run, so that its compile time is that of a fresh process, and adds a
    warm-up round; --quick and --smoke compile each program once (small
    eager-op programs compiled by an earlier workload are then not counted
    again).
    """
    block: dict[str, Any] = {"spec": w.describe(), "results": {}, "diagnostics": {}}
    slots, skipped = _slots(w, names, diagnostics, torch_threads)
    for name, why in skipped.items():
        block["results"][name] = {"skipped": why}
        log(f"  {w.name} {name}: skipped ({why})")
    live = []
    for slot in slots:
        try:
            _first_run(slot, w, cold)
            live.append(slot)
            log(
                f"  {w.name} {slot.key}: first run {slot.entry['first_s']:.2f} s, "
                f"{slot.entry['compiles_first']} compilation(s)"
            )
        except Exception as err:  # noqa: BLE001 - report and go on
            slot.entry["error"] = "".join(traceback.format_exception_only(err)).strip()
            slot.entry["skipped"] = f"error: {slot.entry['error']}"
            log(f"  {w.name} {slot.key}: ERROR {slot.entry['error']}")
    # Later first runs cleared the caches of earlier contenders: one untimed
    # warm-up round recompiles them, so that every timed run is steady.
    for slot in live if cold else []:
        slot.prepared.run()
    for r in range(repeats):
        k = r % max(len(live), 1)
        for slot in live[k:] + live[:k]:
            _steady_run(slot, sample_memory=(r == 0))
    fl = None
    if floor:
        fl = F.floor(w, budget=0.05 if w.mode != "smoke" else 0.002)
        block["floor"] = fl
    for slot in live:
        _finish(slot, w, fl)
    base = next((s for s in live if s.key == "gdjax"), None)
    for slot in slots:
        e = slot.entry
        if base is not None and e.get("steady_s") is not None:
            e["speedup"] = e["steady_s"] / base.entry["steady_s"]
        target = block["results"] if "[" not in slot.key else block["diagnostics"]
        target[slot.key] = e
    share = {}
    for name in ("gdjax", "fused"):
        on = block["results"].get(name, {}).get("steady_s")
        off = block["diagnostics"].get(f"{name}[shuffle=False]", {}).get("steady_s")
        if on and off:
            share[name] = 1.0 - off / on
    if share:
        block["shuffle_share"] = share
    return block


# ----------------------------------------------------------------------------- main


def _console(wl: str, block: dict[str, Any], log=print) -> None:
    fl = block.get("floor")
    if fl:
        log(f"  {wl} floor: {fl['seconds'] * 1e3:.3g} ms")
    for group in ("results", "diagnostics"):
        for name, e in block.get(group, {}).items():
            if e.get("steady_s") is None:
                continue
            sp = e.get("speedup")
            fr = e.get("floor_ratio")
            log(
                f"  {wl} {name:22s} steady {e['steady_s'] * 1e3:9.2f} ms  "
                f"compile {e['compile_s']:6.2f} s  "
                f"speed-up {'' if sp is None else f'{sp:6.2f}x'}  "
                f"floor x{'' if fr is None else f'{fr:.3g}'}  "
                f"loss {e['final_loss']:.5g}"
            )


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    mode = "smoke" if args.smoke else ("quick" if args.quick else "full")
    only = W.WORKLOADS if not args.only else tuple(args.only.upper().split(","))
    for wl in only:
        if wl not in W.WORKLOADS:
            raise SystemExit(
                f"--only: unknown workload {wl!r}; choose from {W.WORKLOADS}"
            )
    names = list(C.ORDER) if not args.contenders else args.contenders.split(",")
    for name in names:
        if name not in C.ORDER:
            raise SystemExit(f"--contenders: unknown {name!r}; choose from {C.ORDER}")
    if "gdjax" not in names:
        names.insert(0, "gdjax")  # the baseline of every ratio
    repeats = args.repeats or W.REPEATS[mode]
    diagnostics = not args.no_diagnostics and mode != "smoke"
    shared = args.shared_order or mode == "smoke"
    with_floor = args.floor or (not args.no_floor and mode != "smoke")
    json_path, md_path = _paths(args.out)
    command = "python -m benchmarks " + " ".join(
        shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv)
    )

    t0 = time.perf_counter()
    print(f"gdjax benchmarks, mode={mode}, workloads={','.join(only)}", flush=True)
    results: dict[str, Any] = {
        "schema": SCHEMA,
        "mode": mode,
        "command": command.strip(),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"
        ),
        "machine": R.machine(),
        "rss_source": H.source(),
        "repeats": repeats,
        "shared_order": shared,
        "torch_threads": args.torch_threads,
        "workloads": {},
    }
    if with_floor:
        results["peak"] = F.machine_peak(budget=0.2 if mode != "smoke" else 0.02)
    for wl in only:
        w = W.build(wl, mode, shared_order=shared)
        print(f"{wl}: {w.title}", flush=True)
        block = run_workload(
            w,
            names,
            repeats=repeats,
            diagnostics=diagnostics,
            floor=with_floor,
            cold=mode == "full",
            torch_threads=args.torch_threads,
        )
        results["workloads"][wl] = block
        _console(wl, block)
    results["targets"] = R.check_targets(results)
    results["wall_s"] = time.perf_counter() - t0
    results["machine"]["load_average_end"] = R.machine()["load_average"]
    results = _clean(results)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(results, indent=1) + "\n")
    md_path.write_text(R.markdown(results))
    print()
    for line in R.target_lines(results["targets"]):
        print(line)
    print(f"\nwrote {json_path} and {md_path} in {results['wall_s']:.0f} s")
    return 0


__all__ = ["main", "run_workload"]
