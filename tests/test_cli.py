"""The ``gdjax`` command: the demo's table, results file and picture; bad input."""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from helpers import assert_lines_inside_limits

from gdjax import __version__, cli

SEEDS, EPOCHS, BATCH = 2, 2, 32
N_TRAIN, N_TEST = 1347, 450
STEPS_PER_EPOCH = {
    "full batch": 1,
    "mini-batch": math.ceil(N_TRAIN / BATCH),
    "stochastic": N_TRAIN,
}
ROW = re.compile(
    r"^(?P<name>full batch|mini-batch|stochastic)\s+(?P<batch>\d+)\s+(?P<lr>[\d.e+-]+)"
    r"\s+(?P<loss>[\d.]+) ± (?P<loss_std>[\d.]+)"
    r"\s+(?P<acc>[\d.]+)% ± (?P<acc_std>[\d.]+)%"
    r"\s+(?P<epochs>\d+)\s+(?P<steps>[\d,]+)\s+(?P<wall>[\d.]+)\s+(?P<compile>[\d.]+)"
    r"\s+(?P<rate>[\d,]+)$"
)
ARGS = [
    "--seeds",
    str(SEEDS),
    "--epochs",
    str(EPOCHS),
    "--batch-size",
    str(BATCH),
    "--no-cache",  # JAX decides on the cache at a process's first compile
]


def run_main(argv):
    """``cli.main(argv)`` -> (exit status, stdout, stderr), SystemExit included."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main(argv)
        except SystemExit as e:
            code = e.code
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    figures = []
    real = cli._figure

    def keep(*args, **kwargs):
        figures.append(real(*args, **kwargs))
        return figures[-1]

    cli._figure = keep
    try:
        code, stdout, stderr = run_main(["demo", *ARGS, "--out", str(out)])
    finally:
        cli._figure = real
    assert code == 0, stderr
    return out, stdout, stderr, figures[0]


def test_demo_prints_a_row_per_regime(demo):
    _, stdout, stderr, _ = demo
    rows = {}
    for line in stdout.splitlines():
        m = ROW.match(line)
        if m:
            rows[m["name"]] = m
    assert list(rows) == ["full batch", "mini-batch", "stochastic"]
    for name, m in rows.items():
        assert int(m["epochs"]) == EPOCHS
        assert int(m["steps"].replace(",", "")) == EPOCHS * STEPS_PER_EPOCH[name]
        assert 0 < float(m["loss"]) < 2.5  # below the 10-class chance level ln 10
        assert 0 <= float(m["acc"]) <= 100
        assert float(m["wall"]) >= float(m["compile"]) >= 0
        assert int(m["rate"].replace(",", "")) > 0
    assert int(rows["full batch"]["batch"]) == N_TRAIN
    assert int(rows["mini-batch"]["batch"]) == BATCH
    assert int(rows["stochastic"]["batch"]) == 1
    # The plain-line progress (stderr is not a terminal here): one per regime.
    progress = [ln for ln in stderr.splitlines() if ln.startswith("[")]
    assert len(progress) == 3 and all(ln.endswith(" s") for ln in progress)
    assert "wrote" in stdout and "demo.png" in stdout and "demo.json" in stdout


def test_demo_results_file(demo):
    out, _, _, _ = demo
    record = json.loads((out / "demo.json").read_text())
    assert record["schema"] == "gdjax-demo/1"
    assert record["gdjax_version"] == __version__
    assert record["seeds"] == list(range(SEEDS)) and record["epochs"] == EPOCHS
    assert record["dataset"]["n_train"] == N_TRAIN
    assert record["dataset"]["n_test"] == N_TEST
    assert record["model"]["widths"] == [64, 32, 10]
    assert record["model"]["n_params"] == 65 * 32 + 33 * 10
    assert record["picture"] == "demo.png"
    assert [r["name"] for r in record["regimes"]] == list(STEPS_PER_EPOCH)
    for r in record["regimes"]:
        steps = STEPS_PER_EPOCH[r["name"]]
        assert r["steps_per_epoch"] == steps
        assert r["gradient_evaluations"] == [EPOCHS * steps] * SEEDS
        assert r["examples_seen"] == [EPOCHS * N_TRAIN] * SEEDS
        assert r["diverged"] == 0
        final = r["final_train_loss"]
        assert len(final["per_seed"]) == SEEDS
        assert all(math.isfinite(v) and v > 0 for v in final["per_seed"])
        assert math.isclose(final["mean"], sum(final["per_seed"]) / SEEDS)
        assert 0 <= r["final_test_accuracy"]["mean"] <= 1
        curves = r["curves"]
        assert curves["epoch"] == list(range(1, EPOCHS + 1))
        assert curves["examples_seen"] == [N_TRAIN * e for e in curves["epoch"]]
        assert curves["gradient_evaluations"] == [steps * e for e in curves["epoch"]]
        seconds = curves["seconds"]
        assert len(seconds) == EPOCHS and seconds == sorted(seconds)
        assert 0 <= seconds[0] and seconds[-1] <= r["wall_time_s"]
        for key in ("train_loss", "batch_loss", "test_loss", "test_accuracy"):
            curve = curves[key]
            assert len(curve["mean"]) == EPOCHS
            assert len(curve["per_seed"]) == SEEDS
            assert all(len(s) == EPOCHS for s in curve["per_seed"])
            assert all(math.isfinite(v) for s in curve["per_seed"] for v in s)
            bounds = zip(curve["min"], curve["mean"], curve["max"], strict=True)
            assert all(lo <= m + 1e-12 and m <= hi + 1e-12 for lo, m, hi in bounds)
        # The table's final loss is the last point of the curve.
        assert final["per_seed"] == [s[-1] for s in curves["train_loss"]["per_seed"]]


def test_demo_picture_is_a_png(demo):
    out, _, _, _ = demo
    mpimg = pytest.importorskip("matplotlib.image")
    data = (out / "demo.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    image = mpimg.imread(out / "demo.png")
    assert image.ndim == 3 and image.shape[2] in (3, 4)
    assert image.shape[0] >= 300 and image.shape[1] >= 600
    assert image.std() > 0.05  # not a blank canvas
    # Only the two outputs: no temporary files left behind, readable by others.
    assert sorted(os.listdir(out)) == ["demo.json", "demo.png"]
    assert (out / "demo.png").stat().st_mode & 0o044


def test_demo_quiet_and_without_matplotlib(demo, tmp_path, monkeypatch):
    # Same shapes as the fixture's run, so nothing new compiles.
    for name in ("matplotlib", "matplotlib.figure"):
        monkeypatch.setitem(sys.modules, name, None)
    code, stdout, stderr = run_main(["demo", *ARGS, "--out", str(tmp_path), "--quiet"])
    assert code == 0
    assert stdout.splitlines() == [str(tmp_path / "demo.json")]
    assert "skipped the picture" in stderr and "gdjax[plot]" in stderr
    assert not (tmp_path / "demo.png").exists()
    assert "picture" not in json.loads((tmp_path / "demo.json").read_text())


def _one_line_error(code, stderr, *words):
    assert code == 2
    assert stderr.count("\n") == 1 and stderr.endswith("\n"), stderr
    assert "error:" in stderr and "Traceback" not in stderr
    for word in words:
        assert word in stderr


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--dataset", "mnist"], ["--dataset", "mnist"]),
        (["--seeds", "0"], ["--seeds", "positive integer"]),
        (["--lr", "-1"], ["--lr", "-1"]),
        (["--lr-full", "nan"], ["--lr-full", "nan"]),
        (["--epochs", "two"], ["--epochs"]),
        (["--batch-size", "5000"], ["--batch-size", "1347"]),
    ],
)
def test_bad_input_is_one_line_and_keeps_results(tmp_path, argv, words):
    (tmp_path / "demo.json").write_text("earlier results")
    code, stdout, stderr = run_main(["demo", *argv, "--out", str(tmp_path)])
    _one_line_error(code, stderr, *words)
    assert stdout == ""
    assert (tmp_path / "demo.json").read_text() == "earlier results"
    assert os.listdir(tmp_path) == ["demo.json"]


def test_unwritable_out_is_one_line_error(tmp_path):
    blocker = tmp_path / "results"
    blocker.write_text("a file, not a folder")
    for out in (blocker, blocker / "sub"):
        code, _, stderr = run_main(["demo", *ARGS, "--out", str(out)])
        _one_line_error(code, stderr, "--out")
    assert blocker.read_text() == "a file, not a folder"


def test_failed_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "demo.json"
    target.write_text("old")

    def explode(f):
        f.write("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        cli._write_atomic(str(target), explode)
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["demo.json"]


def test_version_and_no_command():
    code, stdout, _ = run_main(["--version"])
    assert code == 0 and stdout.strip() == f"gdjax {__version__}"
    code, stdout, _ = run_main([])
    assert code == 0 and "demo" in stdout


@pytest.mark.slow
def test_help_in_a_subprocess():
    done = subprocess.run(
        [sys.executable, "-m", "gdjax", "demo", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    for option in (
        "--dataset",
        "--seeds",
        "--epochs",
        "--lr",
        "--lr-full",
        "--batch-size",
        "--out",
        "--quiet",
        "--no-cache",
    ):
        assert option in done.stdout
    assert "gdjax-out" in done.stdout  # defaults are shown


def _fake_race(name, failed):
    loss = np.array([[1.0, 0.5], [2.0, np.nan]])  # seed 1 diverged in epoch 2
    acc = np.array([[0.5, 0.75], [0.1, np.nan]])
    return cli._Race(
        name=name,
        describe=name,
        batch_size=1,
        learning_rate=5.0,
        candidates=(2.5, 5.0),
        selection=[{"learning_rate": 2.5, "loss_mean": float("nan"), "failed": 2}],
        steps_per_epoch=3,
        epochs=np.array([1, 2]),
        train_loss=loss,
        batch_loss=loss,
        test_loss=loss,
        test_accuracy=acc,
        final_train_loss=np.array([0.5, 2.0]),  # each seed's last finite value
        final_test_loss=np.array([0.5, 2.0]),
        final_test_accuracy=np.array([0.75, 0.1]),
        epochs_run=np.array([2, 2]),
        steps=np.array([6, 4]),
        failed=np.array([False, failed]),
        reasons=["reached the maximum number of epochs", "the loss became NaN or inf"],
        seconds=np.array([0.0, 0.5, 1.0]),
        members=4,
        total_steps=10,
        wall_s=2.0,
        compile_s=1.0,
    )


def test_table_and_record_with_a_diverged_seed():
    races = [_fake_race("stochastic", True)]
    table = cli._table(races, seeds=2, n_test=N_TEST)
    row = next(ROW.match(ln) for ln in table.splitlines() if ROW.match(ln))
    assert float(row["loss"]) == 1.25 and float(row["loss_std"]) == 0.75
    assert float(row["acc"]) == 42.5  # 75% and 10%
    assert row["steps"] == "6" and row["rate"] == "10"  # 10 steps in 1 s
    assert "stochastic: 1 of 2 seeds diverged (the loss became NaN or inf)" in table
    assert "among stochastic 2.5, 5" in table
    record = cli._regime_record(races[0], 100)
    text = json.dumps(record, allow_nan=False)  # strict JSON: NaN became null
    back = json.loads(text)
    assert back["curves"]["train_loss"]["per_seed"][1] == [2.0, None]
    assert back["curves"]["train_loss"]["mean"] == [1.5, 0.5]  # finite entries
    assert back["selection"][0]["loss_mean"] is None
    assert back["curves"]["seconds"] == [0.5, 1.0]
    assert record["diverged"] == 1


# ------------------------------------------------------------------ the picture


def _data_axes(fig):
    return [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]


def assert_readable(fig):
    """Everything drawn lies inside the figure, the legend covers no data and
    tick labels do not overlap (as tests/test_plot.py checks gd.plot's)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    box = fig.get_tightbbox(renderer)
    width, height = fig.get_size_inches()
    assert box.x0 >= -0.02 and box.y0 >= -0.02, box
    assert box.x1 <= width + 0.02 and box.y1 <= height + 0.02, box
    for legend in fig.legends:
        for ax in _data_axes(fig):
            assert not legend.get_window_extent(renderer).overlaps(
                ax.get_window_extent(renderer)
            )
    assert_lines_inside_limits(_data_axes(fig))
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            frame = ax.get_window_extent(renderer)
            lo, hi = (frame.x0, frame.x1) if axis is ax.xaxis else (frame.y0, frame.y1)
            boxes = []
            for t in axis.get_ticklabels():
                box = t.get_window_extent(renderer)
                mid = (
                    (box.x0 + box.x1) / 2
                    if axis is ax.xaxis
                    else box.y0 / 2 + box.y1 / 2
                )
                if t.get_text() and lo - 1 <= mid <= hi + 1:  # drawn: in the view
                    boxes.append(box)
            for a, b in zip(boxes, boxes[1:], strict=False):
                assert not a.overlaps(b)


def test_demo_picture_content(demo):
    out, _, _, fig = demo
    record = json.loads((out / "demo.json").read_text())
    by_examples, by_steps, by_time = _data_axes(fig)
    assert by_examples.get_xlabel() == "examples seen"
    assert by_steps.get_xlabel() == "gradient evaluations (steps)"
    assert by_time.get_xlabel().startswith("wall-clock seconds")
    for ax in (by_examples, by_steps, by_time):
        assert ax.get_ylabel().startswith("training loss")  # every panel, right too
        assert len(ax.get_lines()) == 3  # one per regime
        assert ax.get_yscale() == "log"
    assert by_steps.get_xscale() == "symlog"
    # Every curve starts at epoch 0, at the median initial loss over seeds.
    start = np.median(record["initial_train_loss"]["per_seed"])
    for ax in (by_examples, by_steps, by_time):
        for line in ax.get_lines():
            assert line.get_xdata()[0] == 0
            assert math.isclose(line.get_ydata()[0], start, rel_tol=1e-6)
    # The end of each curve: the median over seeds of the final training loss.
    for line, r in zip(by_examples.get_lines(), record["regimes"], strict=True):
        final = np.median(r["final_train_loss"]["per_seed"])
        assert math.isclose(line.get_ydata()[-1], final, rel_tol=1e-6)
        assert line.get_xdata()[-1] == EPOCHS * N_TRAIN
        assert f"lr={r['learning_rate']:g}" in line.get_label()
    assert "vmapped sweep" in fig.get_suptitle()
    (legend,) = fig.legends
    assert len(legend.get_texts()) == 3
    assert_readable(fig)


def test_demo_initial_loss_is_the_first_full_batch_step(demo):
    # Full-batch descent evaluates its first step at the initial parameters:
    # epoch 1's batch loss is the loss the demo draws at epoch 0.
    out, _, _, _ = demo
    record = json.loads((out / "demo.json").read_text())
    full = record["regimes"][0]
    assert full["name"] == "full batch"
    first = [s[0] for s in full["curves"]["batch_loss"]["per_seed"]]
    np.testing.assert_allclose(
        record["initial_train_loss"]["per_seed"], first, rtol=1e-5
    )


def test_demo_keeps_the_best_candidate_rate(demo):
    out, stdout, _, _ = demo
    record = json.loads((out / "demo.json").read_text())
    assert record["compilation_cache"] is None  # --no-cache
    for r in record["regimes"]:
        assert r["learning_rate_candidates"] == list(cli.DEFAULT_RATES[r["name"]])
        assert r["members"] == SEEDS * len(r["learning_rate_candidates"])
        rows = r["selection"]
        assert [row["learning_rate"] for row in rows] == r["learning_rate_candidates"]
        ok = [row for row in rows if row["failed"] == 0]
        best = min(ok, key=lambda row: row["loss_mean"])
        assert r["learning_rate"] == best["learning_rate"]
    assert "lowest final training loss" in stdout


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="XDG cache path")
@pytest.mark.slow
def test_compilation_cache_and_a_given_rate_in_a_subprocess(tmp_path):
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"))
    argv = [sys.executable, "-m", "gdjax", "demo", "--seeds", "1", "--epochs", "1"]
    argv += ["--hidden", "0", "--lr", "0.1", "--no-plot", "--quiet"]
    argv += ["--out", str(tmp_path)]
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    folder = tmp_path / "cache" / "gdjax" / "jax"
    record = json.loads((tmp_path / "demo.json").read_text())
    assert record["compilation_cache"] == str(folder)
    entries = os.listdir(folder)
    assert sum("run_members" in e for e in entries) == 3  # one program per regime
    for r in record["regimes"]:  # a rate given on the command line is not swept
        assert r["learning_rate"] == 0.1
        assert r["learning_rate_candidates"] == [0.1] and r["members"] == 1
