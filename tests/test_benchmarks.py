"""The benchmark runner end to end, at a tiny budget: ``python -m benchmarks --smoke``.

Runs every workload for every installed contender (torch and scikit-learn are
skipped, and reported as such, when missing: CI installs only ``.[dev]``) in a
subprocess, so that the suite's strict JAX settings and warning filters do not
apply to the contenders' own code. Checks the JSON schema, the markdown, that
contenders doing the same algorithm agree on the final loss (the smoke mode
feeds them gdjax's data order, so they do the same work step for step), and the
target lines. Asserts no time.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WORKLOADS = ("W1", "W2", "W3", "W4", "W5")
RESULT_FIELDS = {
    "label": str,
    "contender": str,
    "first_s": float,
    "compile_s": float,
    "steady_s": float,
    "times_s": list,
    "steps": int,
    "steps_per_s": float,
    "compiles_first": int,
    "recompiles_steady": int,
    "same_algorithm": bool,
    "final_loss": float,
}


def _installed(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    env = dict(os.environ)
    # Compile faster (the smoke budgets are tiny, so run time does not matter).
    env["XLA_FLAGS"] = (
        env.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0"
    ).strip()
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT), env.get("PYTHONPATH")) if p
    )
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--smoke", "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    results = json.loads((out / "latest.json").read_text())
    return results, (out / "latest.md").read_text(), proc.stdout


def test_schema(smoke):
    results, _, _ = smoke
    assert results["schema"] == "gdjax-benchmarks/1"
    assert results["mode"] == "smoke"
    assert results["shared_order"] is True
    machine = results["machine"]
    for key in ("cpu", "cores", "backend", "versions"):
        assert machine[key]
    assert machine["versions"]["jax"]
    assert set(results["workloads"]) == set(WORKLOADS)
    for wl, block in results["workloads"].items():
        spec = block["spec"]
        assert spec["last_batch"] == "drop" and spec["dtype"] == "float32"
        assert spec["steps_per_run"] >= 1 and spec["members"] >= 1
        for name, entry in block["results"].items():
            if "skipped" in entry:
                continue
            for field, kind in RESULT_FIELDS.items():
                assert isinstance(entry[field], kind), (wl, name, field, entry)
            assert len(entry["times_s"]) == results["repeats"]
            assert entry["steps"] == spec["steps_per_run"] * spec["members"]
            assert entry["recompiles_steady"] == 0, (wl, name)
            assert entry["speedup"] > 0
    assert isinstance(results["targets"], list) and results["targets"]
    for target in results["targets"]:
        assert set(target) == {"id", "text", "value", "passed"}
        assert target["passed"] in (True, False, None)


def test_every_installed_contender_ran(smoke):
    results, _, _ = smoke
    expected = {
        "W1": {"gdjax", "fused", "optax", "torch", "sklearn"},
        "W2": {"gdjax", "fused", "optax", "torch", "sklearn"},
        "W3": {"gdjax", "fused", "optax", "torch"},
        "W4": {"gdjax", "gdjax-seq", "fused"},
        "W5": {"gdjax", "fused", "optax", "torch", "sklearn"},
    }
    optional = {"torch": "torch", "sklearn": "sklearn"}
    for wl, names in expected.items():
        got = results["workloads"][wl]["results"]
        assert set(got) == names, (wl, sorted(got))
        for name in names:
            if name in optional and not _installed(optional[name]):
                assert "not installed" in got[name]["skipped"]
            else:
                assert "skipped" not in got[name], (wl, name, got[name])


def test_contenders_do_the_same_work(smoke):
    results, _, _ = smoke
    for wl, block in results["workloads"].items():
        ran = {k: e for k, e in block["results"].items() if "skipped" not in e}
        base = ran["gdjax"]
        assert math.isfinite(base["final_loss"])
        for name, entry in ran.items():
            assert math.isfinite(entry["final_loss"]), (wl, name)
            if not entry["same_algorithm"]:
                continue  # sklearn on W1/W2: per-example SGD, another objective
            assert entry["final_loss"] == pytest.approx(base["final_loss"], rel=2e-4), (
                wl,
                name,
            )
            if base["accuracy"] is not None:
                assert entry["accuracy"] == pytest.approx(base["accuracy"], abs=2e-3)


def test_markdown_and_console(smoke):
    results, md, stdout = smoke
    for wl in WORKLOADS:
        assert f"## {wl}:" in md
    assert "## Targets" in md and "| contender |" in md
    assert results["machine"]["cpu"] in md
    for line in ("PASS", "FAIL", "SKIP"):
        if any(
            (t["passed"] is None and line == "SKIP")
            or (t["passed"] is True and line == "PASS")
            or (t["passed"] is False and line == "FAIL")
            for t in results["targets"]
        ):
            assert line in stdout


def test_floor_arithmetic():
    sys.path.insert(0, str(ROOT))
    from benchmarks import floor, workloads

    w3 = workloads.build("W3", "smoke")
    # 64-256-256-10 at B=128: 3 forward, 3 weight-gradient, 2 input-gradient.
    assert len(floor.products(w3)) == 8
    matmul = 2 * 128 * (64 * 256 + 256 * 256 + 256 * 10) * 3 - 2 * 128 * 64 * 256
    assert floor.step_flops(w3) == matmul + floor.elementwise_flops(w3)
    w1 = workloads.build("W1", "smoke")
    assert floor.products(w1) == [(8192, 256, 1), (256, 8192, 1)]


def test_cli_rejects_unknown_names():
    sys.path.insert(0, str(ROOT))
    from benchmarks.runner import main

    with pytest.raises(SystemExit, match="unknown workload"):
        main(["--only", "W9"])
    with pytest.raises(SystemExit, match="unknown 'keras'"):
        main(["--contenders", "gdjax,keras"])


def test_compile_time_lowers_public_programs():
    """benchmarks/compile_time.py compiles the prepared and the single-run
    program through public names (gd.runs.prepare, gd.runs.single_program,
    gd.loop.advance): a renamed one fails here, not in a reader's shell. The
    single program is the one without the replay; it refuses a sweep."""
    sys.path.insert(0, str(ROOT))
    from benchmarks import compile_time

    best = compile_time.compile_times("W5", 1, quick=True)
    assert set(best) == {"prepared", "single", "single, QUICK_COMPILE"}
    assert all(0 < t < math.inf for t in best.values())
    with pytest.raises(SystemExit, match="is a sweep"):
        compile_time.main(["--workloads", "W4", "--repeats", "1"])


def test_gdjax_memory_figures_come_from_public_names(smoke):
    # gdjax_fit and w4_sweep lower gd.fit's and gd.sweep's own programs
    # (gd.runs.prepare / gd.members.* / gd.loop.advance*): a renamed or removed
    # name shows up here as an error instead of a silent missing figure.
    results, _, _ = smoke
    for wl, block in results["workloads"].items():
        entry = block["results"]["gdjax"]
        assert "xla_bytes_error" not in entry, (wl, entry["xla_bytes_error"])
        assert entry["xla_bytes"]["argument"] > 0, wl
