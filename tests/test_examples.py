"""Every script in examples/ runs and prints what it promises.

Each runs as a subprocess, as a user would run it, with ``--out`` in a
temporary folder and ``GDJAX_EXAMPLE_QUICK=1`` (the examples that honour it
train for fewer epochs). The scripts are started together on a small pool of
workers the first time a test asks for one, so that compilations overlap on a
multi-core machine; each test then checks its own script.
"""

from __future__ import annotations

import concurrent.futures
import os
import pathlib
import subprocess
import sys

import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"
SCRIPTS = sorted(p.name for p in EXAMPLES.glob("*.py"))
WORKERS = max(2, min(4, os.cpu_count() or 1))

# script -> (a line it must print, the figure it must write or None). Scripts
# not listed (added by others) must exit 0 and print something.
EXPECTED = {
    "linear_regression.py": (
        "OK: gradient descent matches the closed-form least-squares solution",
        None,
    ),
    "logistic_regression_digits.py": ("test accuracy:", None),
    "three_regimes.py": ("training loss (cross-entropy", "three_regimes.png"),
    "sweep_lr_batch.py": ("best: batch_size=", "sweep_lr_batch.png"),
    "optax_chain.py": ("optax.adam(cosine)", None),
    "edge_of_stability.py": ("η·λmax/2: start", "eos.png"),
    "critical_batch_size.py": ("B_crit = E_min/S_min", "critical_batch.png"),
    "own_loop.py": (
        "own loop == gd.fit bitwise (params, opt_state, history.loss): True",
        None,
    ),
    "flax_equinox_params.py": ("same pytree structure after training: True", None),
    "dropout_mlp.py": ("sweep of 4 seeds: test accuracy", None),
    "batchnorm_mlp.py": ("sweep of 4 seeds: test accuracy", None),
    "diagnostics_sharpness.py": ("eta*lambda_max: start", "diagnostics_sharpness.png"),
    "diagnostics_noise_scale.py": (
        "final params, two-batch",
        "diagnostics_noise_scale.png",
    ),
    "diagnostics_lr_range.py": ("steepest descent at", "diagnostics_lr_range.png"),
    "diagnostics_theory.py": (
        "optimal GD step beats 0.8x and 1.2x: True",
        "diagnostics_theory.png",
    ),
}


def _run(script: str, out: pathlib.Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, GDJAX_EXAMPLE_QUICK="1", MPLBACKEND="Agg")
    return subprocess.run(
        [sys.executable, str(EXAMPLES / script), "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        cwd=out,
        timeout=300,
    )


@pytest.fixture(scope="module")
def runs(request, tmp_path_factory):
    """Start every selected example at once (bounded pool); futures by name."""
    selected = [
        item.callspec.params["script"]
        for item in request.session.items
        if getattr(item, "originalname", None) == "test_example_runs"
    ]
    pool = concurrent.futures.ThreadPoolExecutor(WORKERS)
    futures = {}
    for script in dict.fromkeys(selected):
        out = tmp_path_factory.mktemp(script.removesuffix(".py"))
        futures[script] = (out, pool.submit(_run, script, out))
    yield futures
    pool.shutdown(wait=True, cancel_futures=True)


def test_our_examples_are_all_there():
    assert set(EXPECTED) <= set(SCRIPTS)


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS)
def test_example_runs(script, runs):
    out, future = runs[script]
    done = future.result()
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    assert done.stdout.strip(), "the example printed nothing"
    if script in EXPECTED:
        line, figure = EXPECTED[script]
        assert line in done.stdout, done.stdout
        if figure is not None:
            png = out / figure
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
