"""gdjax.plot: the artists drawn say what the results hold."""

from __future__ import annotations

import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gdjax as gd
from gdjax import plot, sweep

matplotlib = pytest.importorskip("matplotlib")
from matplotlib.collections import PolyCollection  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

N = 24
EPOCHS = 6


@pytest.fixture(scope="module")
def problem():
    (x, y), _ = gd.datasets.least_squares(jax.random.key(0), N, 3)
    loss = gd.make_loss(gd.models.linear, gd.losses.squared_error)

    def init(key):
        return gd.init.dense(key, 3, 1)

    return loss, init, (x, y)


@pytest.fixture(scope="module")
def single(problem):
    loss, init, data = problem
    return gd.fit(
        loss,
        init(jax.random.key(0)),
        data,
        gd.sgd(0.05),
        key=jax.random.key(1),
        epochs=EPOCHS,
    )


@pytest.fixture(scope="module")
def seeds_sweep(problem):
    loss, init, data = problem
    return sweep.sweep(
        loss,
        init,
        data,
        gd.sgd(0.05),
        seeds=[0, 1, 2],
        epochs=EPOCHS,
        regime=gd.minibatch(8),
    )


@pytest.fixture(scope="module")
def grid_sweep(problem):
    loss, init, data = problem
    return sweep.sweep(
        loss,
        init,
        data,
        gd.sgd(0.05),
        seeds=[0, 1],
        hyperparams={"learning_rate": [0.001, 0.01, 0.1]},
        outer={"batch_size": [4, 8]},
        epochs=EPOCHS,
        regime=gd.minibatch(8),
    )


def _axes():
    return Figure().subplots()


def _band_y(collection: PolyCollection) -> np.ndarray:
    return np.concatenate([p.vertices[:, 1] for p in collection.get_paths()])


def test_loss_curves_one_line_and_band_per_result(single, seeds_sweep):
    ax = plot.loss_curves({"full batch": single, "mini-batch": seeds_sweep}, _axes())
    lines = ax.get_lines()
    assert [ln.get_label() for ln in lines] == ["full batch", "mini-batch"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "full batch",
        "mini-batch",
    ]
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 2
    # The mini-batch line is the mean over the three seeds, epoch by epoch.
    loss = np.asarray(seeds_sweep.result.history.loss)
    np.testing.assert_allclose(lines[1].get_ydata(), loss.mean(0), rtol=1e-6)
    np.testing.assert_array_equal(lines[1].get_xdata(), np.arange(1, EPOCHS + 1))
    # min-max band: its outline runs through each epoch's min and max over seeds.
    y = _band_y(bands[1])
    assert np.isclose(y.min(), loss.min()) and np.isclose(y.max(), loss.max())
    assert ax.get_xlabel() == "epoch"


def test_loss_curves_std_band_and_no_band(seeds_sweep):
    loss = np.asarray(seeds_sweep.result.history.loss)
    ax = plot.loss_curves({"m": seeds_sweep}, _axes(), band="std")
    (band,) = ax.collections
    y = _band_y(band)
    lo, hi = loss.mean(0) - loss.std(0), loss.mean(0) + loss.std(0)
    assert np.isclose(y.min(), lo.min(), rtol=1e-6)
    assert np.isclose(y.max(), hi.max(), rtol=1e-6)
    ax = plot.loss_curves({"m": seeds_sweep}, _axes(), band=None)
    assert len(ax.get_lines()) == 1 and not ax.collections


def test_loss_curves_x_in_examples_and_steps(seeds_sweep):
    ax = plot.loss_curves(
        {"m": seeds_sweep}, _axes(), x="examples", examples_per_epoch=N
    )
    np.testing.assert_array_equal(
        ax.get_lines()[0].get_xdata(), N * np.arange(1, EPOCHS + 1)
    )
    assert ax.get_xlabel() == "examples seen"
    ax = plot.loss_curves({"m": seeds_sweep}, _axes(), x="steps")
    # mini-batch 8 of 24 examples: 3 steps per epoch.
    np.testing.assert_array_equal(
        ax.get_lines()[0].get_xdata(), 3 * np.arange(1, EPOCHS + 1)
    )
    assert ax.get_xscale() == "log"
    assert "steps" in ax.get_xlabel()


def test_loss_curves_one_curve_per_swept_value(grid_sweep):
    ax = plot.loss_curves({"sgd": grid_sweep}, _axes())
    labels = [ln.get_label() for ln in ax.get_lines()]
    assert len(labels) == 6
    assert "sgd (batch_size=4, learning_rate=0.001)" in labels
    assert "sgd (batch_size=8, learning_rate=0.1)" in labels
    # Each curve is the mean over its own two seeds.
    member = grid_sweep.result.history.loss[1, :, 2]  # batch 8, seeds, lr 0.1
    line = ax.get_lines()[labels.index("sgd (batch_size=8, learning_rate=0.1)")]
    np.testing.assert_allclose(line.get_ydata(), np.mean(member, 0), rtol=1e-6)


def test_loss_curves_skip_epochs_no_member_ran(single):
    loss = np.asarray(single.history.loss).copy()
    stacked = jax.tree.map(lambda a: np.stack([a, a]), single)
    loss2 = np.stack([loss, loss])
    loss2[0, 3:] = np.nan  # member 0 stopped after 3 epochs
    loss2[1, 4:] = np.nan  # member 1 after 4
    stacked = stacked._replace(history=stacked.history._replace(loss=loss2))
    ax = plot.loss_curves({"r": stacked}, _axes())  # no all-NaN warnings
    line = ax.get_lines()[0]
    np.testing.assert_array_equal(line.get_xdata(), [1, 2, 3, 4])
    np.testing.assert_allclose(line.get_ydata(), loss[:4], rtol=1e-6)


def test_loss_curves_monitor_and_bad_arguments(single, problem):
    loss, init, data = problem
    r = gd.fit(
        loss,
        init(jax.random.key(0)),
        data,
        gd.sgd(0.05),
        key=jax.random.key(1),
        epochs=3,
        monitors={"full": loss},
    )
    ax = plot.loss_curves({"r": r}, _axes(), value="full", ylabel="whole-set loss")
    np.testing.assert_allclose(
        ax.get_lines()[0].get_ydata(), r.history.monitors["full"], rtol=1e-6
    )
    assert ax.get_ylabel() == "whole-set loss"
    with pytest.raises(ValueError, match="value must be one of"):
        plot.loss_curves({"r": r}, _axes(), value="nope")
    with pytest.raises(ValueError, match="examples_per_epoch"):
        plot.loss_curves({"r": single}, _axes(), x="examples")
    with pytest.raises(ValueError, match="x must be one of"):
        plot.loss_curves({"r": single}, _axes(), x="time")
    with pytest.raises(ValueError, match="band must be one of"):
        plot.loss_curves({"r": single}, _axes(), band="iqr")
    with pytest.raises(TypeError, match="non-empty dict"):
        plot.loss_curves([single], _axes())


def test_loss_curves_new_figure_when_no_axes(single):
    ax = plot.loss_curves({"r": single})
    assert isinstance(ax.figure, Figure) and len(ax.get_lines()) == 1
    if "matplotlib.pyplot" in sys.modules:  # nothing registered with pyplot
        assert sys.modules["matplotlib.pyplot"].get_fignums() == []


def test_heatmap_cells_are_seed_means_of_final_losses(grid_sweep):
    ax = plot.heatmap(grid_sweep, x="learning_rate", y="batch_size", ax=_axes())
    (image,) = ax.images
    cells = np.ma.filled(image.get_array(), np.nan)
    assert cells.shape == (2, 3)  # batch sizes x learning rates
    final = grid_sweep.final_loss()  # (batch_size, seed, learning_rate)
    np.testing.assert_allclose(cells, final.mean(axis=1), rtol=1e-6)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0.001", "0.01", "0.1"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["4", "8"]
    assert ax.get_xlabel() == "learning_rate (log scale)"
    assert ax.get_ylabel() == "batch_size"
    assert len(ax.texts) == 6  # one value per cell
    assert ax.texts[0].get_text() == f"{cells[0, 0]:.3g}"
    assert ax.get_title() == "final training loss, mean over 2 seeds"


def test_heatmap_marks_diverged_cells(grid_sweep):
    loss = np.asarray(grid_sweep.result.history.loss).copy()
    loss[:, :, 2] = np.nan  # every seed at lr 0.1 diverged
    broken = type(grid_sweep)(
        grid_sweep.result._replace(
            history=grid_sweep.result.history._replace(loss=loss)
        ),
        grid_sweep.axes,
        grid_sweep._coords,
    )
    ax = plot.heatmap(broken, x="learning_rate", y="batch_size", ax=_axes())
    cells = ax.images[0].get_array()
    assert cells.mask[:, 2].all() and not cells.mask[:, :2].any()
    assert [t.get_text() for t in ax.texts].count("NaN") == 2


def test_heatmap_refuses_what_it_cannot_show(grid_sweep, seeds_sweep, single):
    with pytest.raises(ValueError, match="not an axis"):
        plot.heatmap(grid_sweep, x="learning_rate", y="momentum", ax=_axes())
    with pytest.raises(ValueError, match="two different axes"):
        plot.heatmap(grid_sweep, x="batch_size", y="batch_size", ax=_axes())
    with pytest.raises(ValueError, match="select one batch_size"):
        plot.heatmap(grid_sweep, x="learning_rate", y="seed", ax=_axes())
    with pytest.raises(TypeError, match="labelled axes"):
        plot.heatmap(single, x="a", y="b", ax=_axes())


def test_missing_matplotlib_says_how_to_install(monkeypatch, single):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r"pip install 'gdjax\[plot\]'"):
        plot.loss_curves({"r": single})


def test_diagnostic_plots_are_forwarded(monkeypatch):
    fake = types.ModuleType("gdjax._plot_diagnostics")
    fake.plot_lr_range = lambda *a, **k: ("lr_range", a, k)
    fake.plot_sharpness = lambda *a, **k: ("sharpness", a, k)
    monkeypatch.setitem(sys.modules, "gdjax._plot_diagnostics", fake)
    assert plot.plot_lr_range(1, ax=2) == ("lr_range", (1,), {"ax": 2})
    assert plot.plot_sharpness(3) == ("sharpness", (3,), {})
    monkeypatch.setitem(sys.modules, "gdjax._plot_diagnostics", None)
    with pytest.raises(ImportError, match="_plot_diagnostics"):
        plot.plot_lr_range()


def test_final_values_last_finite_entry():
    values = jnp.array([[1.0, 2.0, jnp.nan], [jnp.nan, jnp.nan, jnp.nan]])
    fake = types.SimpleNamespace(
        history=gd.History(values, values, values, values, {}),
        epoch=np.array([2, 0]),
    )
    got = plot.final_values(fake)
    assert got[0] == 2.0 and np.isnan(got[1])


def test_history_epochs_follow_the_history_stride(problem):
    loss, init, data = problem
    r = gd.fit(
        loss,
        init(jax.random.key(0)),
        data,
        gd.sgd(0.05),
        key=jax.random.key(1),
        epochs=25,
        history_size=3,  # rows hold epochs 9, 18 and 25
    )
    np.testing.assert_array_equal(plot.history_epochs(r), [9, 18, 25])
    ax = plot.loss_curves({"r": r}, _axes())
    np.testing.assert_array_equal(ax.get_lines()[0].get_xdata(), [9, 18, 25])


def test_diagnostic_plots_reach_the_real_module():
    real = pytest.importorskip("gdjax._plot_diagnostics")
    with pytest.raises(TypeError):  # the real function, called without its result
        plot.plot_lr_range()
    assert callable(real.plot_sharpness)


def test_loss_curves_label_a_zipped_sweep_by_its_values(problem):
    loss, init, data = problem
    res = sweep.sweep(
        loss,
        init,
        data,
        gd.sgd(0.05, momentum=0.5),  # nonzero, so momentum is in the state
        seeds=[0, 1],
        hyperparams={"learning_rate": [0.01, 0.1], "momentum": [0.0, 0.9]},
        grid=False,
        epochs=EPOCHS,
    )
    ax = plot.loss_curves({"sgd": res}, _axes())
    assert [ln.get_label() for ln in ax.get_lines()] == [
        "sgd (learning_rate=0.01, momentum=0)",
        "sgd (learning_rate=0.1, momentum=0.9)",
    ]
