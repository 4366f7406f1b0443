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
import types

import numpy as np
import pytest

from gdjax import __version__, cli, plot

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
ARGS = ["--seeds", str(SEEDS), "--epochs", str(EPOCHS), "--batch-size", str(BATCH)]


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
    code, stdout, stderr = run_main(["demo", *ARGS, "--out", str(out)])
    assert code == 0, stderr
    return out, stdout, stderr


def test_demo_prints_a_row_per_regime(demo):
    _, stdout, stderr = demo
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
    out, _, _ = demo
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
    out, _, _ = demo
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
    def no_matplotlib():
        raise ImportError("gdjax.plot needs matplotlib: pip install 'gdjax[plot]'.")

    monkeypatch.setattr(plot, "_matplotlib", no_matplotlib)
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
        steps_per_epoch=3,
        train_loss=loss,
        batch_loss=loss,
        test_loss=loss,
        test_accuracy=acc,
        epochs_run=np.array([2, 2]),
        steps=np.array([6, 4]),
        failed=np.array([False, failed]),
        reasons=["reached the maximum number of epochs", "the loss became NaN or inf"],
        wall_s=2.0,
        compile_s=1.0,
        result=None,
    )


def test_table_and_record_with_a_diverged_seed():
    races = [_fake_race("stochastic", True)]
    table = cli._table(races, seeds=2, n_test=N_TEST)
    row = next(ROW.match(ln) for ln in table.splitlines() if ROW.match(ln))
    # Each seed's last finite value: 0.5 and 2.0.
    assert float(row["loss"]) == 1.25 and float(row["loss_std"]) == 0.75
    assert float(row["acc"]) == 42.5  # last finite values: 75% and 10%
    assert row["steps"] == "6" and row["rate"] == "10"
    assert "stochastic: 1 of 2 seeds diverged (the loss became NaN or inf)" in table
    record = cli._regime_record(races[0]._replace(result=_stacked_history()), 100)
    text = json.dumps(record, allow_nan=False)  # strict JSON: NaN became null
    assert json.loads(text)["curves"]["train_loss"]["per_seed"][1] == [2.0, None]
    assert record["diverged"] == 1


def _stacked_history():
    return types.SimpleNamespace(
        history=types.SimpleNamespace(loss=np.zeros((2, 2))), epoch=np.array([2, 2])
    )
