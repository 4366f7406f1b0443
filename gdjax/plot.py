"""Pictures of runs and sweeps: loss curves with seed bands, sweep panels, heatmaps.

Contract. :func:`loss_curves` and :func:`heatmap` draw on a matplotlib
``Axes`` and return it, so figures compose; :func:`sweep_curves` lays out
its own panels and returns the ``Figure``. With ``ax=None`` a function draws
on a new ``matplotlib.figure.Figure`` outside pyplot's global state (nothing
to close, no figure piles up in a loop): save it with
``ax.figure.savefig(path)``, or show it in a notebook by evaluating it.

Inputs are what gdjax returns or what its tables hold: a single
:class:`~gdjax.FitResult`, a stacked one (leading axes are members, e.g.
seeds), a sweep result with labelled axes (``result.axes`` such as
``("seed", "learning_rate")`` and ``result.coords``), or a table in the long
format (a pandas DataFrame, as ``result.to_pandas()`` gives, or a dict of
equal-length NumPy columns): one row per member × epoch run, the coordinate
columns first (``seed``, then swept names such as ``learning_rate``), then
``epoch`` (1-based; a row at epoch 0 holds the initial loss and starts the
curve), ``loss``, ``grad_norm`` and any of ``val_loss``, ``metric``, monitors,
``steps``, ``examples`` or other columns to draw against. Results are read
through the same table, built from their public attributes without pandas.
Nothing is computed on the device; arrays are read on the host.

A curve is a statistic over its members (seeds) at each epoch with a band:
by default the median and the 10–90% quantiles, which stay inside the data
and positive for a positive loss; the mean and the range; or the mean ± one
standard deviation, of the logarithm on a log axis. Non-finite values (a
diverged member) are left out; an epoch is drawn while one member has a
value. Losses get a log y axis by default, legends and colour bars sit
outside the data, and ordered values (learning rates, batch sizes) get an
ordered colormap.

matplotlib is optional (``pip install 'gdjax[plot]'``) and imported only when a
function is called. With no display (no ``DISPLAY`` on Linux, as on CI) and no
backend chosen by the user, the non-interactive Agg backend is selected.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

__all__ = [
    "final_values",
    "heatmap",
    "history_epochs",
    "loss_curves",
    "plot_lr_range",
    "plot_sharpness",
    "run_curves",
    "sweep_curves",
]

_X_LABELS = {
    "epoch": "epoch",
    "examples": "examples seen",
    "steps": "gradient evaluations (steps)",
}
_Y_LABELS = {
    "loss": "training loss (mean over the epoch's batches)",
    "val_loss": "validation loss",
    "metric": "metric",
    "grad_norm": "gradient norm (mean over the epoch)",
}


# --------------------------------------------------------------------- matplotlib


def _headless() -> bool:
    if sys.platform.startswith("linux") or "bsd" in sys.platform:
        return not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return False


def _matplotlib():
    """``matplotlib``, or an ImportError that says how to install it.

    With no display and no backend chosen (by ``MPLBACKEND`` or an earlier
    pyplot import), selects Agg, so that a later ``pyplot`` in the same
    process does not try to open a window.
    """
    try:
        import matplotlib
    except ImportError as e:
        raise ImportError(
            "gdjax.plot needs matplotlib: pip install 'gdjax[plot]'."
        ) from e
    if (
        "matplotlib.pyplot" not in sys.modules
        and not os.environ.get("MPLBACKEND")
        and _headless()
    ):
        matplotlib.use("Agg")
    return matplotlib


def _axes(ax):
    if ax is not None:
        return ax
    from matplotlib.figure import Figure

    return Figure(figsize=(6.4, 4.2), layout="constrained").subplots()


# ----------------------------------------------------------------- reading results


def _fit_result(result: Any) -> tuple[Any, tuple[str, ...] | None, dict]:
    """``(stacked FitResult, axis names or None, coords)`` of a fit or sweep result."""
    from gdjax.results import FitResult

    if isinstance(result, FitResult):
        return result, None, {}
    axes = getattr(result, "axes", None)
    coords = dict(getattr(result, "coords", None) or {})
    for name in ("result", "fit", "results", "state"):
        inner = getattr(result, name, None)
        if isinstance(inner, FitResult):
            return inner, tuple(axes) if axes is not None else None, coords
    if hasattr(result, "history") and hasattr(result, "epoch"):
        return result, tuple(axes) if axes is not None else None, coords
    raise TypeError(
        "expected a gdjax FitResult or sweep result (with .history), got "
        f"{type(result).__name__}."
    )


def _series(fit: Any, value: str) -> np.ndarray:
    history = fit.history
    if value in ("loss", "grad_norm", "val_loss", "metric"):
        return np.asarray(getattr(history, value), dtype=float)
    monitors = getattr(history, "monitors", {}) or {}
    if value in monitors:
        return np.asarray(monitors[value], dtype=float)
    known = ["loss", "grad_norm", "val_loss", "metric", *sorted(monitors)]
    raise ValueError(f"value must be one of {known}, got {value!r}.")


def _nan_stats(values: np.ndarray, axis: int = 0):
    """mean, std, min, max and count of the finite entries along ``axis``.

    Written out rather than with ``np.nanmean`` & co. so that an all-NaN slice
    (an epoch no member ran) gives NaN without a RuntimeWarning.
    """
    finite = np.isfinite(values)
    count = finite.sum(axis)
    safe = np.maximum(count, 1)
    zeroed = np.where(finite, values, 0.0)
    mean = zeroed.sum(axis) / safe
    centred = np.where(finite, values - np.expand_dims(mean, axis), 0.0)
    std = np.sqrt((centred**2).sum(axis) / safe)
    lo = np.where(finite, values, np.inf).min(axis)
    hi = np.where(finite, values, -np.inf).max(axis)
    empty = count == 0
    for arr in (mean, std, lo, hi):
        arr[empty] = np.nan
    return mean, std, lo, hi, count


def _steps_per_epoch(fit: Any) -> float:
    epochs = np.asarray(fit.epoch, dtype=float).ravel()
    steps = np.asarray(fit.steps, dtype=float).ravel()
    ran = epochs > 0
    if not ran.any():
        return float("nan")
    return float(np.max(steps[ran] / epochs[ran]))


def _fmt(value: Any) -> str:
    try:
        return f"{float(value):g}"
    except (TypeError, ValueError):
        return str(value)


def history_epochs(result: Any) -> np.ndarray:
    """The number of epochs completed at each history row of a result.

    Row ``r`` is epoch ``r + 1``, unless the run had more epochs than
    ``fit(history_size=...)`` rows; then each row holds the last epoch of a
    window of ``stride`` epochs and row ``r`` is epoch
    ``min((r + 1) * stride, epochs)``. The stride is read back from the rows
    and the epochs run (exact when the longest member used its whole budget).

    Examples:
      >>> import types, numpy as np
      >>> from gdjax import plot
      >>> h = types.SimpleNamespace(loss=np.zeros(4))
      >>> plot.history_epochs(types.SimpleNamespace(history=h, epoch=np.int32(4)))
      array([1, 2, 3, 4])
    """
    fit, _, _ = _fit_result(result)
    rows = np.shape(fit.history.loss)[-1]
    ran = int(np.max(np.asarray(fit.epoch))) if np.size(fit.epoch) else 0
    stride = max(1, -(-ran // rows)) if rows else 1
    if stride == 1:
        return np.arange(1, rows + 1)
    return np.minimum(np.arange(1, rows + 1) * stride, ran)


def run_curves(result: Any, value: str = "loss") -> list[tuple[str, np.ndarray, float]]:
    """Per-epoch values of each curve in a result, seeds stacked on axis 0.

    Returns a list of ``(suffix, values, steps_per_epoch)``: ``values`` has shape
    ``(members, epochs)``; ``suffix`` names the hyperparameters of the curve in a
    sweep (``""`` for a fit). Every axis of a sweep other than ``"seed"`` gives
    one curve per coordinate; every leading axis of a plain stacked FitResult is
    treated as seeds.
    """
    fit, axes, coords = _fit_result(result)
    series = _series(fit, value)
    spe = _steps_per_epoch(fit)
    if series.ndim == 1:
        return [("", series[None], spe)]
    if axes is None or len(axes) != series.ndim - 1:
        return [("", series.reshape(-1, series.shape[-1]), spe)]
    seed_axes = [i for i, a in enumerate(axes) if a == "seed"]
    other = [i for i, a in enumerate(axes) if a != "seed"]
    moved = np.moveaxis(series, seed_axes + other, range(len(axes)))
    n_seed = int(np.prod([series.shape[i] for i in seed_axes], dtype=int))
    other_shape = [series.shape[i] for i in other]
    moved = moved.reshape(n_seed, -1, series.shape[-1])
    fit_steps = np.asarray(fit.steps, dtype=float)
    fit_epoch = np.asarray(fit.epoch, dtype=float)
    curves = []
    for j, index in enumerate(np.ndindex(*other_shape)):
        parts = []
        for axis_pos, k in zip(other, index, strict=True):
            name = axes[axis_pos]
            if other_shape[other.index(axis_pos)] > 1:
                vals = coords.get(name)
                if vals is None:
                    parts.append(f"{name}={k}")
                elif isinstance(vals[k], Mapping):  # a zipped sweep's "setting"
                    parts += [f"{n}={_fmt(v)}" for n, v in vals[k].items()]
                else:
                    parts.append(f"{name}={_fmt(vals[k])}")
        spe_j = spe
        if fit_steps.shape == tuple(series.shape[:-1]):
            steps = np.moveaxis(fit_steps, seed_axes + other, range(len(axes)))
            epochs = np.moveaxis(fit_epoch, seed_axes + other, range(len(axes)))
            steps = steps.reshape(n_seed, -1)[:, j]
            epochs = epochs.reshape(n_seed, -1)[:, j]
            ran = epochs > 0
            if ran.any():
                spe_j = float(np.max(steps[ran] / epochs[ran]))
        curves.append((", ".join(parts), moved[:, j], spe_j))
    return curves


def final_values(result: Any, value: str = "loss") -> np.ndarray:
    """The last finite per-epoch value of every member (NaN if none).

    The shape is the result's member shape (``fit.epoch.shape``), e.g.
    ``(seeds, *hyperparameter sizes)`` for a sweep.
    """
    fit, _, _ = _fit_result(result)
    series = _series(fit, value)
    finite = np.isfinite(series)
    last = series.shape[-1] - 1 - np.argmax(finite[..., ::-1], axis=-1)
    out = np.take_along_axis(series, last[..., None], axis=-1)[..., 0]
    return np.where(finite.any(-1), out, np.nan)


# -------------------------------------------------------------------------- tables

_HISTORY_COLUMNS = ("loss", "grad_norm", "val_loss", "metric")


class _Table(NamedTuple):
    """A long-format table as NumPy columns: one row per member x recorded epoch.

    ``coords`` names the coordinate columns (``"seed"`` first when present),
    in the order they precede ``"epoch"``; every column has the same length.
    """

    columns: dict[str, np.ndarray]
    coords: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.columns["epoch"])


def _is_frame(obj: Any) -> bool:
    return type(obj).__module__.split(".")[0] == "pandas" and hasattr(obj, "columns")


def _is_columns(obj: Any) -> bool:
    """A ``{column: 1-D values}`` mapping (the long format: checked later)."""
    return (
        isinstance(obj, Mapping)
        and bool(obj)
        and all(_column_like(v) for v in obj.values())
    )


def _column_like(value: Any) -> bool:
    """A list, tuple or array, not a result (a NamedTuple) or another object."""
    if hasattr(value, "_fields") or hasattr(value, "history"):
        return False
    if _is_frame(value):
        return False
    return isinstance(value, list | tuple) or (
        hasattr(value, "__array__") and np.ndim(value) == 1
    )


def _is_table(obj: Any) -> bool:
    return _is_frame(obj) or _is_columns(obj) or isinstance(obj, _Table)


def _from_columns(items: Sequence[tuple[str, Any]], where: str) -> _Table:
    columns = {}
    for name, values in items:
        arr = np.asarray(values)
        if arr.ndim != 1:
            raise ValueError(
                f"column {name!r} of {where} must be 1-D, got {arr.shape}."
            )
        if arr.dtype.kind in "fiub":
            arr = arr.astype(float) if arr.dtype.kind == "f" else arr
        columns[str(name)] = arr
    lengths = {len(v) for v in columns.values()}
    if len(lengths) > 1:
        raise ValueError(f"the columns of {where} have different lengths {lengths}.")
    for needed in ("epoch",):
        if needed not in columns:
            raise ValueError(
                f"{where} has no {needed!r} column; the long format is one row per "
                "member x epoch with columns <coordinates>, epoch, loss, grad_norm, "
                f"...; got columns {list(columns)}."
            )
    names = list(columns)
    return _Table(columns, tuple(names[: names.index("epoch")]))


def _result_table(result: Any) -> _Table:
    """The long format of a FitResult or SweepResult, from public attributes.

    Coordinates: ``seed`` then every other axis of a sweep in ``result.axes``
    order (a zipped sweep's ``setting`` becomes one column per swept name); a
    stacked FitResult numbers its members in a ``seed`` column. Rows are the
    epochs each member ran (``epoch <= result.epoch``). Besides the history
    (``loss``, ``grad_norm``, ``val_loss`` and ``metric`` when recorded, one
    column per monitor) there is ``steps``: gradient evaluations at the end of
    the row's epoch. Equivalent to ``result.to_pandas()`` plus ``steps``,
    without needing pandas.
    """
    fit, axes, coords = _fit_result(result)
    loss = np.asarray(fit.history.loss, dtype=float)
    shape, rows = loss.shape[:-1], loss.shape[-1]
    if axes is None or len(axes) != len(shape):
        axes = ("seed",) * bool(shape) + ("_member",) * (len(shape) > 1)
        shape2 = (int(np.prod(shape, dtype=int)),) if shape else ()
        coords = {"seed": tuple(range(shape2[0]))} if shape else {}
    else:
        shape2 = shape
    m = int(np.prod(shape2, dtype=int))
    epochs = history_epochs(fit)
    ran = np.asarray(fit.epoch).reshape(m)
    steps = np.asarray(fit.steps, dtype=float).reshape(m)
    spe = np.where(ran > 0, steps / np.maximum(ran, 1), 0.0)
    keep = epochs[None, :] <= ran[:, None]  # (m, rows)
    member, row = np.nonzero(keep)
    index = np.unravel_index(member, shape2) if shape2 else ()
    cols: list[tuple[str, Any]] = []
    order = [a for a in axes if a == "seed"] + [a for a in axes if a != "seed"]
    for axis in order:
        k = axes.index(axis)
        values = coords.get(axis)
        idx = index[k]
        if values is None:
            cols.append((axis, idx))
        elif axis == "setting":
            names = list(dict.fromkeys(n for s in values for n in s))
            for n in names:
                cols.append((n, np.array([values[i].get(n, np.nan) for i in idx])))
        else:
            cols.append((axis, np.asarray(values)[idx]))
    cols.append(("epoch", epochs[row]))
    series = {name: getattr(fit.history, name) for name in _HISTORY_COLUMNS}
    series.update(getattr(fit.history, "monitors", {}) or {})
    for name, values in series.items():
        arr = np.asarray(values, dtype=float).reshape(m, rows)[member, row]
        if name in ("loss", "grad_norm") or np.isfinite(arr).any():
            cols.append((name, arr))
    cols.append(("steps", epochs[row] * spe[member]))
    return _from_columns(cols, type(result).__name__)


def _to_table(data: Any) -> _Table:
    """A long-format table from a DataFrame, a dict of columns or a result."""
    if isinstance(data, _Table):
        return data
    if _is_frame(data):
        return _from_columns(
            [(c, data[c].to_numpy()) for c in data.columns], "the DataFrame"
        )
    if _is_columns(data):
        return _from_columns(list(data.items()), "the dict of columns")
    return _result_table(data)


def _value_column(table: _Table, value: str) -> np.ndarray:
    if value not in table.columns or value in table.coords or value == "epoch":
        known = [
            c for c in table.columns if c not in table.coords and c not in ("epoch",)
        ]
        raise ValueError(f"value must be one of {known}, got {value!r}.")
    return np.asarray(table.columns[value], dtype=float)


def _x_column(table: _Table, x: str, examples_per_epoch: float | None) -> np.ndarray:
    cols = table.columns
    if x == "examples" and "examples" not in cols:
        if examples_per_epoch is None:
            raise ValueError(
                'x="examples" needs examples_per_epoch (the training set size n).'
            )
        return np.asarray(cols["epoch"], dtype=float) * float(examples_per_epoch)
    if x == "steps" and "steps" not in cols:
        raise ValueError(
            'x="steps" needs a "steps" column (gradient evaluations); a result '
            "object has one, a table must carry it."
        )
    if x not in cols or x in table.coords:
        raise ValueError(
            f"x must be one of {tuple(_X_LABELS)} or a column of the table, got {x!r}."
        )
    return np.asarray(cols[x], dtype=float)


def _codes(values: np.ndarray) -> tuple[list, np.ndarray]:
    """(distinct values in sorted order when orderable, code of each row)."""
    try:
        uniq, inverse = np.unique(values, return_inverse=True)
        return list(uniq.tolist()), inverse.reshape(-1)
    except TypeError:  # mixed or unorderable values: first-seen order
        seen: dict[Any, int] = {}
        codes = np.array([seen.setdefault(_key(v), len(seen)) for v in values])
        firsts = {}
        for v in values:
            firsts.setdefault(_key(v), v)
        return list(firsts.values()), codes


def _key(value: Any) -> Any:
    return repr(value) if isinstance(value, Mapping | list | np.ndarray) else value


def _groups(table: _Table, by: Sequence[str]) -> list[tuple[tuple, np.ndarray]]:
    """``[(values of ``by``, row indices)]`` in sorted order of the values."""
    n = len(table)
    if not by:
        return [((), np.arange(n))]
    levels, codes = zip(*(_codes(table.columns[b]) for b in by), strict=True)
    flat = np.ravel_multi_index(codes, [len(lv) for lv in levels])
    out = []
    for f in np.unique(flat):
        idx = np.unravel_index(f, [len(lv) for lv in levels])
        key = tuple(lv[i] for lv, i in zip(levels, idx, strict=True))
        out.append((key, np.flatnonzero(flat == f)))
    return out


def _member_matrix(
    table: _Table, rows: np.ndarray, values: np.ndarray, xs: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(x per epoch, values as (members, epochs)) for the rows of one curve.

    Members are told apart by every coordinate column (seeds, and any axis
    held fixed); rows of the same member and epoch beyond the first are
    treated as further members. Non-finite values become NaN.
    """
    epochs, e_code = np.unique(table.columns["epoch"][rows], return_inverse=True)
    if table.coords:
        _, m_code = np.unique(
            np.stack([_codes(table.columns[c][rows])[1] for c in table.coords]),
            axis=1,
            return_inverse=True,
        )
        m_code = m_code.reshape(-1)
    else:
        m_code = np.zeros(len(rows), dtype=int)
    # Duplicate (member, epoch) rows: further members.
    pair = m_code * len(epochs) + e_code
    order = np.argsort(pair, kind="stable")
    dup = np.zeros(len(rows), dtype=int)
    same = np.r_[False, pair[order][1:] == pair[order][:-1]]
    run = np.cumsum(~same) - 1
    starts = np.flatnonzero(~same)
    dup[order] = np.arange(len(rows)) - starts[run]
    members = (m_code.max() + 1) * (dup.max() + 1)
    matrix = np.full((members, len(epochs)), np.nan)
    v = values[rows]
    matrix[dup * (m_code.max() + 1) + m_code, e_code] = np.where(
        np.isfinite(v), v, np.nan
    )
    xmat = np.full((members, len(epochs)), np.nan)
    xmat[dup * (m_code.max() + 1) + m_code, e_code] = xs[rows]
    x_of_epoch = np.where(np.isnan(xmat), -np.inf, xmat).max(0)
    return x_of_epoch, matrix


# --------------------------------------------------------------------- statistics

_BANDS = ("quantile", "minmax", "std", None)


def _band(
    matrix: np.ndarray, band: str | None, log: bool, quantiles: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(centre, low, high, count) over the members (rows) of ``matrix``.

    ``"quantile"``: the median and the ``quantiles`` (linear interpolation);
    ``"minmax"``: the mean and the range; ``"std"``: the mean ± one standard
    deviation, taken of the logarithm on a log axis (the geometric mean times
    or divided by the geometric standard deviation), so the band stays
    positive. ``None``: the mean (geometric on a log axis when
    ``band="std"`` would use it), low = high = centre.
    """
    finite = np.isfinite(matrix) & (~log | (matrix > 0))
    count = finite.sum(0)
    safe = np.where(finite, matrix, np.nan)
    if band == "quantile":
        filled = np.sort(np.where(finite, safe, np.inf), axis=0)
        centre = _quantile_sorted(filled, count, 0.5)
        low = _quantile_sorted(filled, count, quantiles[0])
        high = _quantile_sorted(filled, count, quantiles[1])
        return centre, low, high, count
    if band == "std" and log:
        logs = np.where(finite, np.log(np.where(finite, matrix, 1.0)), np.nan)
        mean, std, _, _, _ = _nan_stats(logs)
        return np.exp(mean), np.exp(mean - std), np.exp(mean + std), count
    mean, std, lo, hi, _ = _nan_stats(np.where(finite, safe, np.nan))
    if band == "std":
        return mean, mean - std, mean + std, count
    if band == "minmax":
        return mean, lo, hi, count
    return mean, mean, mean, count


def _quantile_sorted(sorted_: np.ndarray, count: np.ndarray, q: float) -> np.ndarray:
    """The ``q`` quantile (NumPy's linear method) of each column's ``count``
    smallest entries of the column-sorted ``sorted_``; NaN where count is 0."""
    pos = q * np.maximum(count - 1, 0)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, np.maximum(count - 1, 0))
    cols = np.arange(sorted_.shape[1])
    a = sorted_[np.minimum(lo, sorted_.shape[0] - 1), cols]
    b = sorted_[np.minimum(hi, sorted_.shape[0] - 1), cols]
    with np.errstate(invalid="ignore"):  # inf - inf where no member ran
        out = a + (pos - lo) * (b - a)
    return np.where(count > 0, out, np.nan)


def _band_words(band: str | None, log: bool, quantiles: tuple[float, float]) -> str:
    if band == "quantile":
        lo, hi = (f"{100 * q:g}" for q in quantiles)
        return f"median and {lo}–{hi}% band"
    if band == "minmax":
        return "mean and min–max band"
    if band == "std" and log:
        return "geometric mean ×÷ geometric std"
    if band == "std":
        return "mean ± std"
    return "mean"


def _is_loss(value: str) -> bool:
    return "loss" in value


def _auto_yscale(value: str, drawn: list[np.ndarray]) -> str:
    """``"log"`` for a positive loss, or positive values spanning over 10×."""
    allv = np.concatenate(drawn) if drawn else np.zeros(0)
    allv = allv[np.isfinite(allv)]
    if not allv.size or np.any(allv <= 0):
        return "linear"
    if _is_loss(value) or allv.max() > 10 * allv.min():
        return "log"
    return "linear"


# ------------------------------------------------------------------------- curves


class _Curve(NamedTuple):
    label: str
    key: tuple  # values of the coordinates that make this curve
    x: np.ndarray  # (epochs,)
    matrix: np.ndarray  # (members, epochs)


def _curves(
    table: _Table,
    by: Sequence[str],
    value: str,
    x: str,
    examples_per_epoch: float | None,
) -> list[_Curve]:
    values = _value_column(table, value)
    xs = _x_column(table, x, examples_per_epoch)
    out = []
    for key, rows in _groups(table, by):
        x_of_epoch, matrix = _member_matrix(table, rows, values, xs)
        label = ", ".join(f"{b}={_fmt(k)}" for b, k in zip(by, key, strict=True))
        out.append(_Curve(label, key, x_of_epoch, matrix))
    return out


def _varying(table: _Table) -> list[str]:
    """Coordinates other than ``seed`` that take more than one value."""
    return [
        c for c in table.coords if c != "seed" and len(_codes(table.columns[c])[0]) > 1
    ]


def _draw_curve(ax, curve: _Curve, *, band, log, quantiles, color, label, lw=2.0):
    """One centre line and its band; returns the values drawn (for limits)."""
    centre, low, high, count = _band(curve.matrix, band, log, quantiles)
    keep = (count > 0) & np.isfinite(curve.x)
    if not keep.any():
        return None, []
    (line,) = ax.plot(curve.x[keep], centre[keep], label=label, color=color, lw=lw)
    drawn = [centre[keep]]
    if band is not None:
        ax.fill_between(
            curve.x[keep],
            low[keep],
            high[keep],
            color=line.get_color(),
            alpha=0.2,
            linewidth=0,
        )
        drawn += [low[keep], high[keep]]
    return line, drawn


def _plain_log_ticks(axis: Any) -> None:
    """Log-axis tick labels as plain numbers (0.05, 1, 2), not 5×10⁻²."""
    from matplotlib.ticker import LogFormatter

    class Plain(LogFormatter):
        def __call__(self, x: float, pos: Any = None) -> str:
            return f"{x:g}" if super().__call__(x, pos) else ""

    axis.set_major_formatter(Plain(labelOnlyBase=False))
    axis.set_minor_formatter(Plain(labelOnlyBase=False, minor_thresholds=(1, 0.4)))


def _finish_x(ax, x: str, xs: list[np.ndarray], xscale: str | None) -> None:
    if xscale is None:
        xscale = "log" if x == "steps" else "linear"
        allx = np.concatenate(xs) if xs else np.zeros(0)
        if xscale == "log" and np.any(allx[np.isfinite(allx)] <= 0):
            xscale = "symlog"  # an epoch-0 point at x = 0
    if xscale == "symlog":
        ax.set_xscale("symlog", linthresh=1.0)
        ax.set_xlim(left=0.0)  # counts: nothing to show below 0
    else:
        ax.set_xscale(xscale)
    if x == "examples" and ax.get_xscale() == "linear":
        from matplotlib.ticker import MaxNLocator, StrMethodFormatter

        ax.xaxis.set_major_locator(MaxNLocator(nbins=5, steps=[1, 2, 2.5, 5, 10]))
        ax.xaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))


def loss_curves(
    results: Any,
    ax: Any = None,
    *,
    x: str = "epoch",
    band: str | None = "quantile",
    value: str = "loss",
    examples_per_epoch: int | Mapping[str, int] | None = None,
    colors: Mapping[str, Any] | None = None,
    xscale: str | None = None,
    yscale: str | None = None,
    xlabel: str | None = None,
    ylabel: str | None = None,
    legend: bool = True,
    quantiles: tuple[float, float] = (0.1, 0.9),
) -> Any:
    """Loss curves of several runs, each a centre line over seeds with a band.

    At each epoch :math:`e` the curve is a statistic of the values
    :math:`L_{s,e}` of the members (seeds) :math:`s` that ran it: the median
    with the 10–90% quantile band (``band="quantile"``, the default), the mean
    with the range (``"minmax"``), or the mean ± one standard deviation
    (``"std"``), taken of :math:`\\log L` on a log axis so that the band is
    :math:`[\\bar g / \\sigma_g, \\bar g \\sigma_g]` around the geometric mean
    and stays positive. Epoch-0 rows (the initial loss), when a table has them,
    start the curves.

    For a sweep over several hyperparameters prefer :func:`sweep_curves`
    (ordered colours, one panel per value of a second axis).

    Args:
      results: ``{label: data}``, or one ``data`` (curves labelled by their
        coordinates). ``data`` is a ``FitResult`` (single or stacked over
        seeds), a sweep result, or a table in the long format (a pandas
        DataFrame, as ``result.to_pandas()`` gives, or a dict of equal-length
        columns): one row per member × epoch, coordinate columns (``seed``,
        swept names), then ``epoch``, ``loss``, ... Rows that differ only in
        ``seed`` (or other coordinates taking one value) are one curve's
        members; each other coordinate taking several values gives one
        curve per value, labelled ``"label (name=value)"``.
      ax: a matplotlib ``Axes`` (default: the axes of a new ``Figure``).
      x: ``"epoch"``, ``"examples"`` (examples seen: a table's ``examples``
        column or epochs × ``examples_per_epoch``), ``"steps"`` (gradient
        evaluations) or any other column of a table (e.g. seconds).
      band: ``"quantile"``, ``"minmax"``, ``"std"`` or ``None``.
      value: the column to draw: ``"loss"`` (mean training loss of the
        epoch's batches), ``"val_loss"``, ``"metric"``, ``"grad_norm"`` or a
        monitor's name.
      examples_per_epoch: n, the training set size (``x="examples"``), or
        ``{label: n}``.
      colors: ``{label: colour}`` for results that give one curve each;
        others follow matplotlib's colour cycle (or a colormap past 10 curves,
        so no two curves share a colour).
      xscale: default ``"log"`` for ``x="steps"`` (``"symlog"`` when an
        epoch-0 point sits at 0), else ``"linear"``.
      yscale: default ``"log"`` for a positive loss (any ``value`` containing
        "loss") or positive values spanning more than a factor of 10.
      xlabel, ylabel: axis labels (defaults say what ``x`` and ``value`` are).
      legend: draw a legend, outside the axes on the right.
      quantiles: the band's quantiles for ``band="quantile"``.

    Returns:
      The ``Axes``: one line per curve (``ax.get_lines()``) and one filled band
      per curve (``ax.collections``) unless ``band=None``.

    Examples:
      >>> import jax, jax.numpy as jnp, gdjax as gd
      >>> from gdjax import plot
      >>> x = jnp.array([[1.0], [2.0], [3.0]]); y = 2.0 * x[:, 0]
      >>> loss = gd.make_loss(gd.models.linear, gd.losses.squared_error)
      >>> p = {"w": jnp.zeros((1, 1)), "b": jnp.zeros(1)}
      >>> r = gd.fit(loss, p, (x, y), gd.sgd(0.05), key=jax.random.key(0), epochs=5)
      >>> ax = plot.loss_curves({"plain GD": r})
      >>> [line.get_label() for line in ax.get_lines()], ax.get_yscale()
      (['plain GD'], 'log')
      >>> ax.figure.savefig(path)  # doctest: +SKIP
    """
    _matplotlib()
    if band not in _BANDS:
        raise ValueError(f"band must be one of {_BANDS}, got {band!r}.")
    if isinstance(results, Mapping) and not _is_columns(results):
        if not results:
            raise TypeError("results must not be empty.")
        items = list(results.items())
    elif isinstance(results, Sequence | str) or results is None:
        raise TypeError(
            "results must be a dict {label: result or table}, a result or a "
            f"table, got {type(results).__name__}."
        )
    else:
        items = [("", results)]
    per_label: list[tuple[str, list[_Curve]]] = []
    for label, data in items:
        table = _to_table(data)
        n = (
            examples_per_epoch.get(label)
            if isinstance(examples_per_epoch, Mapping)
            else examples_per_epoch
        )
        if x not in _X_LABELS and (x not in table.columns or x in table.coords):
            raise ValueError(
                f"x must be one of {tuple(_X_LABELS)} or a column of the table, "
                f"got {x!r}."
            )
        per_label.append((str(label), _curves(table, _varying(table), value, x, n)))
    ax = _axes(ax)
    matrices = [c.matrix.ravel() for _, cs in per_label for c in cs]
    yscale = yscale or _auto_yscale(value, matrices)
    log = yscale == "log"
    total = sum(len(cs) for _, cs in per_label)
    palette = _palette(total)
    colors = dict(colors or {})
    drawn: list[np.ndarray] = []
    xs: list[np.ndarray] = []
    i = 0
    for label, curves in per_label:
        for curve in curves:
            name = (
                f"{label} ({curve.label})"
                if label and curve.label
                else (label or curve.label or "run")
            )
            color = colors.get(label) if len(curves) == 1 else None
            _, d = _draw_curve(
                ax,
                curve,
                band=band,
                log=log,
                quantiles=quantiles,
                color=color if color is not None else palette[i],
                label=name,
            )
            i += 1
            drawn += d
            xs.append(curve.x)
    ax.set_xlabel(xlabel or _X_LABELS.get(x, x))
    ax.set_ylabel(ylabel or _Y_LABELS.get(value, value))
    ax.set_yscale(yscale)
    if yscale == "log":
        _plain_log_ticks(ax.yaxis)
    _finish_x(ax, x, xs, xscale)
    ax.grid(True, which="major", alpha=0.3)
    if legend and ax.get_lines():
        ax.legend(
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),
            frameon=False,
            fontsize="small",
        )
    return ax


_OKABE_ITO = (
    "#0072B2",
    "#D55E00",
    "#009E73",
    "#CC79A7",
    "#E69F00",
    "#56B4E9",
    "#000000",
    "#F0E442",
)


def _palette(n: int) -> list:
    """``n`` distinct colours: matplotlib's cycle up to 10, then a colormap."""
    import matplotlib

    if n <= 10:
        return [f"C{i}" for i in range(n)]
    cmap = matplotlib.colormaps["tab20" if n <= 20 else "turbo"]
    return [cmap(i / max(n - 1, 1)) if n > 20 else cmap(i) for i in range(n)]


def _ordered(values: list) -> bool:
    """Numbers (an order a colour ramp can show), not names or settings."""
    return bool(values) and all(
        isinstance(v, int | float | np.integer | np.floating)
        and not isinstance(v, bool)
        for v in values
    )


def _default_axes(varying: list[str], table: _Table) -> list[str]:
    """Colour first: learning rate if swept, else the first ordered axis."""
    ordered = [c for c in varying if _ordered(_codes(table.columns[c])[0])]
    first = (
        "learning_rate"
        if "learning_rate" in varying
        else (ordered[0] if ordered else varying[0])
    )
    return [first] + [c for c in varying if c != first]


def sweep_curves(
    data: Any,
    *,
    color: str | None = None,
    panels: str | None = None,
    rows: str | None = None,
    value: str = "loss",
    x: str = "epoch",
    band: str | None = "quantile",
    quantiles: tuple[float, float] = (0.1, 0.9),
    examples_per_epoch: int | None = None,
    cmap: str = "viridis",
    xscale: str | None = None,
    yscale: str | None = None,
    xlabel: str | None = None,
    ylabel: str | None = None,
    title: str | None = None,
    figure: Any = None,
) -> Any:
    """The curves of a sweep: colour for one axis, panels for others, seeds as bands.

    Seeds (and any coordinate taking one value) are the members behind each
    curve, drawn as a centre line and a band (see :func:`loss_curves`; by
    default the median and the 10–90% quantiles, which stay inside the data
    and positive on a log axis). The swept axes map to

    - ``color``: one curve per value. Ordered values (numbers: learning
      rate, batch size) get a sequential colormap with a colour bar that
      lists them; names (a regime) get distinct colours and a legend. Both
      sit outside the panels.
    - ``panels``: small multiples, one panel per value, side by side, with
      shared axes so that panels compare at a glance.
    - ``rows``: a second direction of small multiples.

    Args:
      data: a sweep result, a stacked ``FitResult`` or a long-format table
        (a pandas DataFrame as ``result.to_pandas()`` gives, or a dict of
        equal-length columns; see :func:`loss_curves`).
      color, panels, rows: coordinate names; by default the swept axes
        taking several values, learning rate (else the first numeric axis)
        as colour, the next as panels, the next as rows. An axis with several
        values left unassigned is an error: filter the table first.
      value: as for :func:`loss_curves`, and so are ``x``, ``band``,
        ``quantiles``, ``examples_per_epoch``, ``xscale``, ``yscale`` (log y
        by default for a loss), ``xlabel`` and ``ylabel``.
      cmap: the sequential colormap for an ordered ``color`` axis.
      title: the figure's title (default: what is drawn and over how many
        seeds).
      figure: a matplotlib ``Figure`` to draw on (default: a new one, outside
        pyplot's global state).

    Returns:
      The ``Figure``: ``figure.axes`` holds the panels (row by row), then the
      colour bar's axes when ``color`` is ordered.

    Raises:
      ValueError: an unknown coordinate, the same one twice, or a swept axis
        with several values left unassigned.

    Examples:
      >>> import jax.numpy as jnp, gdjax as gd
      >>> x = jnp.array([[1.0], [2.0], [3.0]]); y = 2.0 * x[:, 0]
      >>> loss = gd.make_loss(gd.models.linear, gd.losses.squared_error)
      >>> p = {"w": jnp.zeros((1, 1)), "b": jnp.zeros(1)}
      >>> sw = gd.sweep(loss, p, (x, y), gd.sgd(0.1, momentum=0.5), seeds=[0, 1],
      ...               hyperparams={"learning_rate": [0.01, 0.03, 0.1],
      ...                            "momentum": [0.0, 0.9]}, epochs=5)
      >>> fig = gd.plot.sweep_curves(sw)
      >>> [ax.get_title() for ax in fig.axes[:2]], fig.axes[2].get_ylabel()
      (['momentum = 0', 'momentum = 0.9'], 'learning_rate (log spacing)')
      >>> [len(ax.get_lines()) for ax in fig.axes[:2]]
      [3, 3]
    """
    _matplotlib()
    if band not in _BANDS:
        raise ValueError(f"band must be one of {_BANDS}, got {band!r}.")
    table = _to_table(data)
    color, panels, rows = _assign_axes(table, color, panels, rows)
    if x not in _X_LABELS and (x not in table.columns or x in table.coords):
        raise ValueError(
            f"x must be one of {tuple(_X_LABELS)} or a column of the table, got {x!r}."
        )
    from matplotlib.figure import Figure

    row_values = _codes(table.columns[rows])[0] if rows else [None]
    col_values = _codes(table.columns[panels])[0] if panels else [None]
    colour_values = _codes(table.columns[color])[0] if color else [None]
    nr, nc = len(row_values), len(col_values)
    ordered = color is not None and _ordered(colour_values)
    key_width = 1.0 if ordered or color is None else 1.8  # colour bar or legend
    fig = figure or Figure(
        figsize=(0.8 + 3.3 * nc + key_width, 0.9 + 2.9 * nr), layout="constrained"
    )
    grid = fig.subplots(nr, nc, sharex=True, sharey=True, squeeze=False)
    by = [c for c in (rows, panels, color) if c]
    curves = _curves(table, by, value, x, examples_per_epoch)
    yscale = yscale or _auto_yscale(value, [c.matrix.ravel() for c in curves])
    log = yscale == "log"
    colours = _colour_map(colour_values, ordered, cmap)
    members = 0
    xs = []
    for curve in curves:
        k = dict(zip(by, curve.key, strict=True))
        r = row_values.index(k[rows]) if rows else 0
        c = col_values.index(k[panels]) if panels else 0
        ci = colour_values.index(k[color]) if color else 0
        line_label = f"{color} = {_fmt(k[color])}" if color else "run"
        _draw_curve(
            grid[r, c],
            curve,
            band=band,
            log=log,
            quantiles=quantiles,
            color=colours[ci],
            label=line_label,
        )
        members = max(members, curve.matrix.shape[0])
        xs.append(curve.x)
    ylab = ylabel or _Y_LABELS.get(value, value)
    _label_panels(
        grid,
        (rows, row_values),
        (panels, col_values),
        xlabel=xlabel or _X_LABELS.get(x, x),
        ylabel=ylab,
    )
    grid[0, 0].set_yscale(yscale)
    if yscale == "log":
        _plain_log_ticks(grid[0, 0].yaxis)
    _finish_x(grid[0, 0], x, xs, xscale)
    if color and ordered:
        _ordered_colorbar(fig, grid, colour_values, colours, color)
    elif color:
        _named_legend(fig, grid)
    words = _band_words(band, log, quantiles)
    import textwrap

    text = title or f"{ylab}: {words} over {members} seed{'s' * (members != 1)}"
    # About 13 characters of a 10-point title per inch of figure.
    width = int(13 * fig.get_size_inches()[0])
    fig.suptitle(textwrap.fill(text, width), fontsize="medium")
    return fig


def _assign_axes(
    table: Any, color: str | None, panels: str | None, rows: str | None
) -> tuple[str | None, str | None, str | None]:
    """``(color, panels, rows)``: the chosen coordinates, checked, and the
    swept axes left over filled in (see :func:`sweep_curves`)."""
    varying = _varying(table)
    chosen = [c for c in (color, panels, rows) if c is not None]
    for name in chosen:
        if name not in table.coords:
            raise ValueError(
                f"{name!r} is not a coordinate of the sweep; coordinates are "
                f"{table.coords}."
            )
    if len(set(chosen)) != len(chosen):
        raise ValueError(f"color, panels and rows must differ, got {chosen}.")
    free = (
        [c for c in _default_axes(varying, table) if c not in chosen] if varying else []
    )
    if color is None and free:
        color = free.pop(0)
    if panels is None and free:
        panels = free.pop(0)
    if rows is None and free:
        rows = free.pop(0)
    if free:
        raise ValueError(
            f"the sweep varies {free} beyond color={color!r}, panels={panels!r}, "
            f"rows={rows!r}; sweep_curves draws three axes: filter the table to "
            f"one value of {free[0]!r} first."
        )
    return color, panels, rows


def _label_panels(
    grid: Any,
    row_axis: tuple[str | None, list],
    col_axis: tuple[str | None, list],
    *,
    xlabel: str,
    ylabel: str,
) -> None:
    """Title each panel by its row and column values; label the outer axes."""
    rows, row_values = row_axis
    panels, col_values = col_axis
    nr, nc = grid.shape
    for r in range(nr):
        for c in range(nc):
            ax = grid[r, c]
            parts = []
            if rows:
                parts.append(f"{rows} = {_fmt(row_values[r])}")
            if panels:
                parts.append(f"{panels} = {_fmt(col_values[c])}")
            ax.set_title(", ".join(parts), fontsize="medium")
            ax.grid(True, which="major", alpha=0.3)
            if r == nr - 1:
                ax.set_xlabel(xlabel)
            if c == 0:
                ax.set_ylabel(ylabel)


def _named_legend(fig: Any, grid: Any) -> None:
    """One legend entry per distinct line label over all panels, outside them."""
    seen = {}
    for ax in grid.ravel():
        for line in ax.get_lines():
            seen.setdefault(line.get_label(), line)
    fig.legend(
        list(seen.values()),
        list(seen),
        loc="outside right upper",
        frameon=False,
        fontsize="small",
    )


def _colour_map(values: list, ordered: bool, cmap: str) -> list:
    import matplotlib

    n = len(values)
    if ordered:
        ramp = matplotlib.colormaps[cmap]
        # Stop short of viridis' pale yellow end, hard to see on white.
        return [ramp(t) for t in np.linspace(0.0, 0.88, n)] if n > 1 else [ramp(0.0)]
    if n <= len(_OKABE_ITO):
        return list(_OKABE_ITO[:n])
    return _palette(n)


def _ordered_colorbar(fig, grid, values: list, colours: list, name: str) -> None:
    """A colour bar with one swatch per swept value, labelled with the values."""
    from matplotlib import cm
    from matplotlib import colors as mcolors

    n = len(values)
    mappable = cm.ScalarMappable(
        norm=mcolors.BoundaryNorm(np.arange(n + 1) - 0.5, n),
        cmap=mcolors.ListedColormap(colours),
    )
    bar = fig.colorbar(
        mappable, ax=list(grid.ravel()), ticks=range(n), aspect=max(10, 6 * n)
    )
    bar.ax.set_yticklabels([_fmt(v) for v in values])
    bar.set_label(name + (" (log spacing)" if _geometric(values) else ""))


# ------------------------------------------------------------------------ heatmap


def _geometric(values: Sequence[float]) -> bool:
    """Positive, increasing, and about evenly spaced in log (1, 3, 10, 30...)."""
    try:
        v = np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        return False
    if v.ndim != 1 or v.size < 3 or np.any(v <= 0):
        return False
    steps = np.diff(np.log(v))
    return bool(np.all(steps > 0.1) and steps.max() < 1.5 * steps.min())


_VALUE_LABELS = {
    "final_loss": "final training loss",
    "final_val_loss": "final validation loss",
    "final_metric": "final metric",
}


def _finals(table: _Table, value: str) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Per member (rows differing in a coordinate): its coordinates and the
    value at its last epoch with a finite value (NaN if none)."""
    values = _value_column(table, value)
    epochs = np.asarray(table.columns["epoch"], dtype=float)
    groups = _groups(table, table.coords)
    finals = np.full(len(groups), np.nan)
    for i, (_, rows) in enumerate(groups):
        ok = rows[np.isfinite(values[rows])]
        if ok.size:
            finals[i] = values[ok[np.argmax(epochs[ok])]]
    coords = {
        c: np.array([key[j] for key, _ in groups], dtype=object)
        for j, c in enumerate(table.coords)
    }
    return coords, finals


def heatmap(
    sweep_result: Any,
    x: str,
    y: str,
    value: str = "final_loss",
    ax: Any = None,
    *,
    cmap: str = "viridis",
    annotate: bool = True,
    colorbar: bool = True,
) -> Any:
    """The final loss (or metric) over two swept hyperparameters, seeds averaged.

    Cell :math:`(i, j)` shows :math:`\\frac{1}{S}\\sum_s v_s(x_j, y_i)`, the mean
    over seeds of each member's last recorded value. Members that diverged (no
    finite value) are left out of the mean; a cell where every seed diverged is
    grey and reads "NaN". Cells are evenly spaced, labelled with the swept
    values in increasing order; a geometric progression (learning rates) gets
    the label "(log scale)", and the colours use a log scale when every value
    is positive and they span more than a factor of 10.

    Args:
      sweep_result: a sweep result with ``.axes`` (e.g. ``("seed",
        "learning_rate", "batch_size")``), ``.coords`` and a stacked history,
        or its long-format table (a pandas DataFrame or a dict of columns, see
        :func:`loss_curves`).
      x, y: the names of the two swept axes shown along x and y.
      value: ``"final_loss"`` (last epoch's mean training loss),
        ``"final_val_loss"``, ``"final_metric"``, or ``"final_<monitor>"``.
      ax: a matplotlib ``Axes`` (default: the axes of a new ``Figure``).
      cmap: a matplotlib colormap name.
      annotate: write each cell's value in it.
      colorbar: add a colour bar labelled with ``value``.

    Returns:
      The ``Axes``, holding one image (``ax.images``).

    Raises:
      ValueError: ``x`` or ``y`` is not an axis, or another axis (not ``"seed"``)
        has more than one value.
    """
    _matplotlib()
    if not _is_table(sweep_result):
        _, axes, _ = _fit_result(sweep_result)
        if axes is None:
            raise TypeError(
                "heatmap needs a sweep result with labelled axes (gdjax.sweep), "
                "got a plain FitResult."
            )
    if x == y:
        raise ValueError(f"x and y must be two different axes, got {x!r} twice.")
    if not value.startswith("final_"):
        raise ValueError(
            "value must be 'final_loss', 'final_val_loss', 'final_metric' or "
            f"'final_<monitor>', got {value!r}."
        )
    table = _to_table(sweep_result)
    for name in (x, y):
        if name not in table.coords:
            raise ValueError(
                f"{name!r} is not an axis of the sweep; axes are {table.coords}."
            )
    coords, finals = _finals(table, value[len("final_") :])
    for name in table.coords:
        size = len(_codes(coords[name])[0])
        if name not in (x, y, "seed") and size > 1:
            raise ValueError(
                f"axis {name!r} has {size} values; a heatmap shows two axes ({x!r}, "
                f"{y!r}) averaged over seeds: select one {name} first."
            )
    xs, xi = _codes(coords[x])
    ys, yi = _codes(coords[y])
    mean = _cell_means(finals, (yi, xi), (len(ys), len(xs)))

    import matplotlib
    from matplotlib import colors as mcolors

    ax = _axes(ax)
    finite = mean[np.isfinite(mean)]
    norm = None
    if finite.size and np.all(finite > 0) and finite.max() > 10 * finite.min():
        norm = mcolors.LogNorm(vmin=finite.min(), vmax=finite.max())
    cm = matplotlib.colormaps[cmap].with_extremes(bad="lightgrey")
    image = ax.imshow(
        np.ma.masked_invalid(mean), cmap=cm, norm=norm, origin="lower", aspect="auto"
    )
    ax.set_xticks(range(len(xs)), [_fmt(v) for v in xs])
    ax.set_yticks(range(len(ys)), [_fmt(v) for v in ys])
    ax.set_xlabel(x + (" (log scale)" if _geometric(xs) else ""))
    ax.set_ylabel(y + (" (log scale)" if _geometric(ys) else ""))
    label = _VALUE_LABELS.get(value, value.replace("_", " "))
    if "seed" in coords and "seed" not in (x, y):
        n_seeds = len(_codes(coords["seed"])[0])
    else:
        n_seeds = 1
    ax.set_title(f"{label}, mean over {n_seeds} seed{'s' * (n_seeds != 1)}")
    if annotate:
        mid = (
            math.sqrt(finite.min() * finite.max())
            if norm is not None
            else (0.5 * (finite.min() + finite.max()) if finite.size else 0.0)
        )
        _annotate_cells(ax, mean, mid)
    if colorbar:
        ax.figure.colorbar(image, ax=ax, label=label)
    return ax


def _cell_means(
    finals: np.ndarray, cells: tuple[np.ndarray, np.ndarray], shape: tuple[int, int]
) -> np.ndarray:
    """The mean of the finite ``finals`` falling in each ``(row, column)`` cell;
    NaN where none is finite."""
    yi, xi = cells
    total = np.zeros(shape)
    count = np.zeros(shape)
    ok = np.isfinite(finals)
    np.add.at(total, (yi[ok], xi[ok]), finals[ok])
    np.add.at(count, (yi[ok], xi[ok]), 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _annotate_cells(ax: Any, mean: np.ndarray, mid: float) -> None:
    """Write each cell's value in it, white on the dark half of the colours."""
    for i in range(mean.shape[0]):
        for j in range(mean.shape[1]):
            v = mean[i, j]
            text = "NaN" if not np.isfinite(v) else f"{v:.3g}"
            dark = np.isfinite(v) and v < mid
            ax.text(
                j,
                i,
                text,
                ha="center",
                va="center",
                fontsize=8,
                color="white" if dark else "black",
            )


# ------------------------------------------------------------------- diagnostics


def _diagnostic(name: str):
    try:
        module = __import__("gdjax._plot_diagnostics", fromlist=[name])
    except ImportError as e:
        if getattr(e, "name", None) == "gdjax._plot_diagnostics":
            raise ImportError(
                f"gdjax.plot.{name} needs gdjax._plot_diagnostics, which this "
                "installation of gdjax does not include."
            ) from e
        raise
    return getattr(module, name)


def plot_lr_range(*args: Any, **kwargs: Any) -> Any:
    """Plot a learning-rate range test (see ``gdjax._plot_diagnostics``)."""
    return _diagnostic("plot_lr_range")(*args, **kwargs)


def plot_sharpness(*args: Any, **kwargs: Any) -> Any:
    """Plot sharpness against training (see ``gdjax._plot_diagnostics``)."""
    return _diagnostic("plot_sharpness")(*args, **kwargs)
