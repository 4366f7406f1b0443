"""Pictures of runs and sweeps: loss curves with seed bands, sweep heatmaps.

Contract. Every function draws on a matplotlib ``Axes`` and returns it, so
figures compose. With ``ax=None`` it draws on the axes of a new
``matplotlib.figure.Figure`` outside pyplot's global state (nothing to close,
no figure piles up in a loop): save it with ``ax.figure.savefig(path)``, or
show it in a notebook by evaluating ``ax.figure``. Inputs are what gdjax
returns: a single :class:`~gdjax.FitResult`, a stacked one (leading axes are
runs, e.g. seeds from ``jax.vmap``) or a sweep result with labelled axes
(``result.axes`` such as ``("seed", "learning_rate")`` and ``result.coords``).
Nothing is computed on the device; arrays are read on the host.

matplotlib is optional (``pip install 'gdjax[plot]'``) and imported only when a
function is called. With no display (no ``DISPLAY`` on Linux, as on CI) and no
backend chosen by the user, the non-interactive Agg backend is selected.

A curve is the mean over seeds at each epoch with a band around it: the range
(``band="minmax"``) or the mean ± one standard deviation (``band="std"``).
Entries after a member's last epoch are NaN in its history and are left out of
the statistics; an epoch is drawn while at least one member ran it.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "final_values",
    "heatmap",
    "history_epochs",
    "loss_curves",
    "plot_lr_range",
    "plot_sharpness",
    "run_curves",
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
_BANDS = ("minmax", "std", None)


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
    from gdjax.loop import FitResult

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


# ------------------------------------------------------------------------- curves


def loss_curves(
    results: Mapping[str, Any],
    ax: Any = None,
    *,
    x: str = "epoch",
    band: str | None = "minmax",
    value: str = "loss",
    examples_per_epoch: int | Mapping[str, int] | None = None,
    colors: Mapping[str, Any] | None = None,
    xscale: str | None = None,
    yscale: str | None = None,
    ylabel: str | None = None,
    legend: bool = True,
) -> Any:
    """Loss curves of several runs, each a mean over seeds with a band.

    Curve ``c`` of label ``r`` is :math:`\\bar L_e = \\frac{1}{S}\\sum_s L_{s,e}`
    at each epoch :math:`e = 1, \\dots, E` over the :math:`S` seeds (members)
    that ran it, with the band :math:`[\\min_s L_{s,e}, \\max_s L_{s,e}]`
    (``"minmax"``) or :math:`\\bar L_e \\pm \\sigma_e` (``"std"``).

    Args:
      results: ``{label: result}``; a result is a ``FitResult`` (single or
        stacked over seeds) or a sweep result. A sweep with more than one value
        of a hyperparameter gives one curve per value, labelled
        ``"label (name=value)"``.
      ax: a matplotlib ``Axes`` (default: the axes of a new ``Figure``).
      x: ``"epoch"`` (epochs completed), ``"examples"`` (examples seen:
        epochs × ``examples_per_epoch``) or ``"steps"`` (gradient evaluations:
        epochs × the run's steps per epoch).
      band: ``"minmax"``, ``"std"`` or ``None`` (no band).
      value: which history to draw: ``"loss"`` (the mean training loss of the
        epoch's batches), ``"val_loss"``, ``"metric"``, ``"grad_norm"`` or the
        name of a monitor.
      examples_per_epoch: n, the training set size (for ``x="examples"``), or
        ``{label: n}``.
      colors: ``{label: colour}``; others follow matplotlib's colour cycle.
      xscale: ``"log"`` or ``"linear"``; default ``"log"`` for ``x="steps"``
        (step counts differ by orders of magnitude between regimes), else
        ``"linear"``.
      yscale: ``"log"`` or ``"linear"``; default ``"log"`` when every value
        drawn is positive and they span more than a factor of 10.
      ylabel: the y-axis label (a default says what ``value`` is).
      legend: draw a legend.

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
      >>> [line.get_label() for line in ax.get_lines()]
      ['plain GD']
      >>> ax.figure.savefig(path)  # doctest: +SKIP
    """
    _matplotlib()
    if x not in _X_LABELS:
        raise ValueError(f"x must be one of {tuple(_X_LABELS)}, got {x!r}.")
    if band not in _BANDS:
        raise ValueError(f"band must be one of {_BANDS}, got {band!r}.")
    if not isinstance(results, Mapping) or not results:
        raise TypeError(
            "results must be a non-empty dict {label: FitResult or sweep result}, "
            f"got {type(results).__name__}."
        )
    if x == "examples" and examples_per_epoch is None:
        raise ValueError(
            'x="examples" needs examples_per_epoch (the training set size n).'
        )
    ax = _axes(ax)
    colors = dict(colors or {})
    drawn: list[np.ndarray] = []
    for label, result in results.items():
        curves = run_curves(result, value)
        epochs = history_epochs(result).astype(float)
        for suffix, values, spe in curves:
            mean, std, lo, hi, count = _nan_stats(values, axis=0)
            if x == "epoch":
                xs = epochs
            elif x == "examples":
                n = (
                    examples_per_epoch[label]
                    if isinstance(examples_per_epoch, Mapping)
                    else examples_per_epoch
                )
                xs = epochs * float(n)
            else:
                xs = epochs * spe
            keep = count > 0
            if not keep.any():
                continue
            name = f"{label} ({suffix})" if suffix else str(label)
            color = colors.get(label) if len(curves) == 1 else None
            (line,) = ax.plot(xs[keep], mean[keep], label=name, color=color, lw=2)
            if band is not None:
                low, high = (lo, hi) if band == "minmax" else (mean - std, mean + std)
                ax.fill_between(
                    xs[keep],
                    low[keep],
                    high[keep],
                    color=line.get_color(),
                    alpha=0.2,
                    linewidth=0,
                )
                drawn += [low[keep], high[keep]]
            drawn.append(mean[keep])
    ax.set_xlabel(_X_LABELS[x])
    ax.set_ylabel(ylabel or _Y_LABELS.get(value, value))
    if yscale is None and drawn:
        allv = np.concatenate(drawn)
        allv = allv[np.isfinite(allv)]
        positive = allv.size and np.all(allv > 0)
        yscale = "log" if positive and allv.max() > 10 * allv.min() else "linear"
    if yscale:
        ax.set_yscale(yscale)
    ax.set_xscale(xscale or ("log" if x == "steps" else "linear"))
    if x == "examples" and ax.get_xscale() == "linear":
        from matplotlib.ticker import StrMethodFormatter

        ax.xaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
    ax.grid(True, which="major", alpha=0.3)
    if legend and ax.get_lines():
        ax.legend(frameon=False)
    return ax


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


def _sweep_axis_values(axes, coords, name, shape) -> list:
    if name not in axes:
        raise ValueError(f"{name!r} is not an axis of the sweep; axes are {axes}.")
    size = shape[axes.index(name)]
    vals = coords.get(name)
    return list(np.asarray(vals).tolist()) if vals is not None else list(range(size))


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
    values; a geometric progression (learning rates) gets the label
    "(log scale)", and the colours use a log scale when every value is positive
    and they span more than a factor of 10.

    Args:
      sweep_result: a sweep result with ``.axes`` (e.g. ``("seed",
        "learning_rate", "batch_size")``), ``.coords`` and a stacked history.
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
    fit, axes, coords = _fit_result(sweep_result)
    if axes is None:
        raise TypeError(
            "heatmap needs a sweep result with labelled axes (gdjax.sweep), got a "
            "plain FitResult."
        )
    if x == y:
        raise ValueError(f"x and y must be two different axes, got {x!r} twice.")
    if not value.startswith("final_"):
        raise ValueError(
            "value must be 'final_loss', 'final_val_loss', 'final_metric' or "
            f"'final_<monitor>', got {value!r}."
        )
    finals = final_values(fit, value[len("final_") :])
    shape = finals.shape
    if len(axes) != finals.ndim:
        raise ValueError(
            f"the sweep's axes {axes} do not match its member shape {shape}."
        )
    xs = _sweep_axis_values(axes, coords, x, shape)
    ys = _sweep_axis_values(axes, coords, y, shape)
    for name, size in zip(axes, shape, strict=True):
        if name not in (x, y, "seed") and size > 1:
            raise ValueError(
                f"axis {name!r} has {size} values; a heatmap shows two axes ({x!r}, "
                f"{y!r}) averaged over seeds: select one {name} first."
            )
    order = [axes.index(y), axes.index(x)]
    rest = [i for i in range(len(axes)) if i not in order]
    grid = np.moveaxis(finals, rest + order, range(len(axes)))
    grid = grid.reshape(-1, len(ys), len(xs))
    mean, _, _, _, _ = _nan_stats(grid, axis=0)

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
    n_seeds = grid.shape[0]
    ax.set_title(f"{label}, mean over {n_seeds} seed{'s' * (n_seeds != 1)}")
    if annotate:
        mid = (
            math.sqrt(finite.min() * finite.max())
            if norm is not None
            else (0.5 * (finite.min() + finite.max()) if finite.size else 0.0)
        )
        for i in range(len(ys)):
            for j in range(len(xs)):
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
    if colorbar:
        ax.figure.colorbar(image, ax=ax, label=label)
    return ax


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
