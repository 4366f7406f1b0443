"""gdjax.plot: the artists drawn say what the results hold."""

from __future__ import annotations

import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_lines_inside_limits

import gdjax as gd
from gdjax import plot

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
    return gd.sweep(
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
    return gd.sweep(
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
    ax = plot.loss_curves(
        {"full batch": single, "mini-batch": seeds_sweep}, _axes(), band="minmax"
    )
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
    ax = plot.loss_curves({"m": seeds_sweep}, _axes(), band="std", yscale="linear")
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
    ax = plot.loss_curves({"sgd": grid_sweep}, _axes(), band="minmax")
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
    state = stacked.state
    stacked = gd.FitResult(state._replace(history=state.history._replace(loss=loss2)))
    ax = plot.loss_curves({"r": stacked}, _axes(), band="minmax")  # no warnings
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
    with pytest.raises(TypeError, match="a dict"):
        plot.loss_curves([single], _axes())
    with pytest.raises(TypeError, match="must not be empty"):
        plot.loss_curves({}, _axes())


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
    final = grid_sweep.final_loss  # (batch_size, seed, learning_rate)
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
    state = grid_sweep.result.state
    broken = type(grid_sweep)(
        gd.FitResult(state._replace(history=state.history._replace(loss=loss))),
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
        history=gd.History(np.array([[1, 2, 0], [0, 0, 0]]), values, values, values,
                           values, {}),
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
    res = gd.sweep(
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


# ------------------------------------------------- what every picture must satisfy


def _data_axes(fig):
    return [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]


def assert_readable(fig):
    """Everything drawn lies inside the figure; legends and colour bars cover no
    data; tick labels do not overlap one another."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    box = fig.get_tightbbox(renderer)  # inches, over every artist drawn
    width, height = fig.get_size_inches()
    tol = 0.02
    assert box.x0 >= -tol and box.y0 >= -tol, box
    assert box.x1 <= width + tol and box.y1 <= height + tol, (box, width, height)
    data = [ax.get_window_extent(renderer) for ax in _data_axes(fig)]
    legends = list(fig.legends) + [
        ax.get_legend() for ax in fig.axes if ax.get_legend() is not None
    ]
    covers = [leg.get_window_extent(renderer) for leg in legends]
    covers += [
        ax.get_window_extent(renderer)
        for ax in fig.axes
        if ax.get_label() == "<colorbar>"
    ]
    for cover in covers:
        for area in data:
            assert not cover.overlaps(area), (cover, area)
    assert_lines_inside_limits(_data_axes(fig))
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            labels = _shown_ticklabels(ax, axis, renderer)
            boxes = [t.get_window_extent(renderer) for t in labels]
            for a, b in zip(boxes, boxes[1:], strict=False):
                assert not a.overlaps(b), [t.get_text() for t in labels]


def _shown_ticklabels(ax, axis, renderer):
    """The tick labels drawn: text at a tick inside the axes' view."""
    frame = ax.get_window_extent(renderer)
    shown = []
    for t in axis.get_ticklabels():
        if not t.get_text():
            continue
        box = t.get_window_extent(renderer)
        mid = (box.x0 + box.x1) / 2 if axis is ax.xaxis else (box.y0 + box.y1) / 2
        lo, hi = (frame.x0, frame.x1) if axis is ax.xaxis else (frame.y0, frame.y1)
        if lo - 1 <= mid <= hi + 1:
            shown.append(t)
    return shown


def _band_bounds(collection):
    """(x, low, high) of a fill_between band: its outline at each x."""
    vertices = np.concatenate([p.vertices for p in collection.get_paths()])
    xs = np.unique(vertices[:, 0])
    low = np.array([vertices[vertices[:, 0] == x, 1].min() for x in xs])
    high = np.array([vertices[vertices[:, 0] == x, 1].max() for x in xs])
    return xs, low, high


def _long_table(sw):
    """The long format written out by hand from a sweep's history (the oracle)."""
    cols = {"seed": [], "batch_size": [], "learning_rate": [], "epoch": [], "loss": []}
    loss = np.asarray(sw.result.history.loss)
    for index in np.ndindex(*sw.shape):
        coord = sw.setting(*index)
        for e in range(loss.shape[-1]):
            for name in ("seed", "batch_size", "learning_rate"):
                cols[name].append(coord[name])
            cols["epoch"].append(e + 1)
            cols["loss"].append(loss[index][e])
    return {k: np.asarray(v) for k, v in cols.items()}


# -------------------------------------------------------------- bands and scales


def test_default_band_is_median_and_quantiles(seeds_sweep):
    ax = plot.loss_curves({"m": seeds_sweep})
    loss = np.asarray(seeds_sweep.result.history.loss)
    (line,) = ax.get_lines()
    np.testing.assert_allclose(line.get_ydata(), np.median(loss, 0), rtol=1e-6)
    xs, low, high = _band_bounds(ax.collections[0])
    np.testing.assert_array_equal(xs, np.arange(1, EPOCHS + 1))
    q10, q90 = np.quantile(loss, [0.1, 0.9], axis=0)
    np.testing.assert_allclose(low, q10, rtol=1e-6)
    np.testing.assert_allclose(high, q90, rtol=1e-6)
    assert ax.get_yscale() == "log"  # a loss: log y by default
    assert_readable(ax.figure)


def test_std_band_on_a_log_axis_is_taken_in_log_space():
    # Two members, a factor of 100 apart: mean - std on a linear scale is 0.
    table = {
        "seed": np.array([0, 0, 1, 1]),
        "epoch": np.array([1, 2, 1, 2]),
        "loss": np.array([1.0, 0.1, 100.0, 10.0]),
    }
    ax = plot.loss_curves(table, _axes(), band="std")
    assert ax.get_yscale() == "log"
    _, low, high = _band_bounds(ax.collections[0])
    logs = np.log10([[1.0, 0.1], [100.0, 10.0]])
    np.testing.assert_allclose(
        np.log10(ax.get_lines()[0].get_ydata()), logs.mean(0), atol=1e-12
    )
    np.testing.assert_allclose(np.log10(low), logs.mean(0) - logs.std(0))
    np.testing.assert_allclose(np.log10(high), logs.mean(0) + logs.std(0))
    assert np.all(low > 0)


def test_linear_y_for_a_metric_and_distinct_colours_past_ten_curves():
    k = np.repeat(np.arange(12), 2)
    table = {
        "k": k,
        "epoch": np.tile([1, 2], 12),
        "metric": 0.5 + 0.01 * np.arange(24),
    }
    ax = plot.loss_curves(table, value="metric")
    assert ax.get_yscale() == "linear"
    colours = {
        tuple(np.round(matplotlib.colors.to_rgba(ln.get_color()), 4))
        for ln in ax.get_lines()
    }
    assert len(ax.get_lines()) == 12 and len(colours) == 12
    assert ax.get_legend() is not None
    assert_readable(ax.figure)


def test_epoch_zero_starts_the_curve_and_steps_use_symlog():
    table = {
        "seed": np.zeros(4, int),
        "epoch": np.arange(4),
        "loss": np.array([2.0, 1.0, 0.5, 0.25]),
        "steps": np.arange(4) * 10,
        "seconds": np.array([0.0, 0.1, 0.2, 0.3]),
    }
    ax = plot.loss_curves({"r": table}, _axes(), x="steps")
    assert ax.get_lines()[0].get_xdata()[0] == 0
    assert ax.get_xscale() == "symlog" and ax.get_xlim()[0] == 0
    ax = plot.loss_curves({"r": table}, _axes(), x="seconds")
    np.testing.assert_array_equal(ax.get_lines()[0].get_xdata(), table["seconds"])
    assert ax.get_xlabel() == "seconds"
    with pytest.raises(ValueError, match="x must be one of"):
        plot.loss_curves({"r": table}, _axes(), x="seed")


# ------------------------------------------------------------- long-format tables


def test_a_long_table_draws_what_the_result_draws(grid_sweep):
    by_result = plot.loss_curves({"sgd": grid_sweep}, _axes())
    table = _long_table(grid_sweep)
    by_table = plot.loss_curves({"sgd": table}, _axes())
    for a, b in zip(by_result.get_lines(), by_table.get_lines(), strict=True):
        assert a.get_label() == b.get_label()
        np.testing.assert_allclose(a.get_ydata(), b.get_ydata(), rtol=1e-6)
    pd = pytest.importorskip("pandas")
    by_frame = plot.loss_curves({"sgd": pd.DataFrame(table)}, _axes())
    assert [ln.get_label() for ln in by_frame.get_lines()] == [
        ln.get_label() for ln in by_result.get_lines()
    ]
    cells = plot.heatmap(pd.DataFrame(table), x="learning_rate", y="batch_size")
    want = plot.heatmap(grid_sweep, x="learning_rate", y="batch_size")
    np.testing.assert_allclose(
        cells.images[0].get_array(), want.images[0].get_array(), rtol=1e-6
    )


def test_results_need_no_pandas(monkeypatch, grid_sweep):
    monkeypatch.setitem(sys.modules, "pandas", None)
    fig = plot.sweep_curves(grid_sweep)
    assert len(_data_axes(fig)) == 2


def test_rows_are_only_epochs_run(single):
    # History rows past a member's stop are not epochs it ran, NaN or not.
    short = gd.FitResult(single.state._replace(epoch=np.int32(3)))
    ax = plot.loss_curves({"r": short}, _axes())
    np.testing.assert_array_equal(ax.get_lines()[0].get_xdata(), [1, 2, 3])


def test_a_table_needs_an_epoch_column():
    with pytest.raises(ValueError, match="no 'epoch' column"):
        plot.sweep_curves({"seed": [0], "loss": [1.0]})


# -------------------------------------------------------------- sweep_curves


@pytest.fixture(scope="module")
def big_sweep(problem):
    """8 seeds x 5 learning rates x 3 momenta, as in issue 22 (a tiny problem)."""
    loss, init, data = problem
    return gd.sweep(
        loss,
        init,
        data,
        gd.sgd(0.05, momentum=0.5),
        seeds=list(range(8)),
        hyperparams={
            "learning_rate": [0.003, 0.01, 0.03, 0.1, 0.3],
            "momentum": [0.0, 0.5, 0.9],
        },
        epochs=4,
        regime=gd.minibatch(8),
    )


def test_sweep_curves_8x5x3_in_one_call(big_sweep):
    fig = plot.sweep_curves(big_sweep)
    panels = _data_axes(fig)
    (bar,) = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert [ax.get_title() for ax in panels] == [
        "momentum = 0",
        "momentum = 0.5",
        "momentum = 0.9",
    ]
    assert [len(ax.get_lines()) for ax in panels] == [5, 5, 5]
    assert [len(ax.collections) for ax in panels] == [5, 5, 5]  # one band each
    assert all(ax.get_yscale() == "log" for ax in panels)
    assert [ax.get_xlabel() for ax in panels] == ["epoch"] * 3
    assert panels[0].get_ylabel().startswith("training loss")
    assert bar.get_ylabel() == "learning_rate (log spacing)"
    assert [t.get_text() for t in bar.get_yticklabels()] == [
        "0.003",
        "0.01",
        "0.03",
        "0.1",
        "0.3",
    ]
    assert not fig.legends and all(ax.get_legend() is None for ax in panels)
    assert "over 8 seeds" in fig.get_suptitle()
    # Colours run along the colormap in the order of the learning rates.
    cmap = matplotlib.colormaps["viridis"]
    want = [cmap(t) for t in np.linspace(0, 0.88, 5)]
    got = [matplotlib.colors.to_rgba(ln.get_color()) for ln in panels[2].get_lines()]
    np.testing.assert_allclose(got, want)
    # Each line is the median over the 8 seeds of its member's history.
    loss = np.asarray(big_sweep.result.history.loss)  # (seed, lr, momentum, epoch)
    for i, line in enumerate(panels[2].get_lines()):
        np.testing.assert_allclose(
            line.get_ydata(), np.median(loss[:, i, 2], 0), rtol=1e-6
        )
    assert_readable(fig)


def test_sweep_curves_choose_axes_and_name_a_categorical_colour(big_sweep):
    fig = plot.sweep_curves(big_sweep, color="momentum", panels="learning_rate")
    panels = _data_axes(fig)
    assert len(panels) == 5 and all(len(ax.get_lines()) == 3 for ax in panels)
    fig = plot.sweep_curves(big_sweep, panels="learning_rate", rows="momentum")
    assert len(_data_axes(fig)) == 15
    assert _data_axes(fig)[5].get_title() == "momentum = 0.5, learning_rate = 0.003"
    assert_readable(fig)
    table = {
        "regime": np.array(["full", "full", "sgd", "sgd"]),
        "seed": np.zeros(4, int),
        "epoch": np.array([1, 2, 1, 2]),
        "loss": np.array([1.0, 0.5, 1.0, 0.2]),
    }
    fig = plot.sweep_curves(table)
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == [
        "regime = full",
        "regime = sgd",
    ]
    assert not [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert_readable(fig)


def test_sweep_curves_refuse_what_they_cannot_show(grid_sweep, big_sweep):
    with pytest.raises(ValueError, match="not a coordinate"):
        plot.sweep_curves(grid_sweep, color="momentum")
    with pytest.raises(ValueError, match="must differ"):
        plot.sweep_curves(grid_sweep, color="batch_size", panels="batch_size")
    four = {c: np.array([0, 1]) for c in "abcd"}
    four.update(epoch=np.array([1, 1]), loss=np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="filter the table to one value of 'd'"):
        plot.sweep_curves(four)
    with pytest.raises(ValueError, match="band must be one of"):
        plot.sweep_curves(grid_sweep, band="iqr")


def test_heatmap_is_readable(big_sweep):
    ax = plot.heatmap(big_sweep, x="learning_rate", y="momentum")
    assert ax.get_xlabel() == "learning_rate (log scale)"
    assert ax.get_ylabel() == "momentum" and len(ax.texts) == 15
    assert_readable(ax.figure)


# ------------------------------------------------------------------- diagnostics


def test_lr_range_figure():
    loss = lambda p, a: 0.5 * p @ a @ p  # noqa: E731
    res = gd.diagnostics.lr_range_test(
        loss,
        jnp.ones(2),
        jnp.eye(2),
        key=jax.random.key(0),
        lrs=np.logspace(-2, 0.5, 6),
        steps=5,
    )
    ax = plot.plot_lr_range(res)
    assert ax.get_xscale() == "log"
    assert ax.get_xlabel() == "learning rate"
    assert ax.get_ylabel() == "loss after the budget"
    np.testing.assert_allclose(ax.get_lines()[0].get_xdata(), res.lrs)
    assert ax.get_legend() is not None
    assert_readable(ax.figure)


def test_sharpness_figure_counts_epochs_from_one():
    ax = plot.plot_sharpness(np.array([10.0, np.nan, 30.0]), 0.05)
    line = ax.get_lines()[0]
    np.testing.assert_array_equal(line.get_xdata(), [1, 3])  # rows 0, 2
    np.testing.assert_allclose(line.get_ydata(), [0.5, 1.5])
    assert ax.get_xlabel() == "epoch" and ax.get_ylabel()
    assert_readable(ax.figure)
