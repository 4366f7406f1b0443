"""Figures for :mod:`gdjax.diagnostics` (matplotlib, imported only when called).

Contract: each function draws on ``ax`` (when ``None``, the axes of a new
``matplotlib.figure.Figure``, outside pyplot's global state: save it with
``ax.figure.savefig``) and returns the axes; nothing is shown or saved.
matplotlib is an optional dependency (``pip install 'gdjax[plot]'``):
importing this module does not need it, calling a function does.
:mod:`gdjax.plot` re-exports these.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["plot_lr_range", "plot_sharpness"]


def _axes(ax: Any):
    """``ax``, or the axes of a new ``matplotlib.figure.Figure`` (no pyplot state)."""
    try:
        from matplotlib.figure import Figure
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "gdjax's plots need matplotlib: pip install 'gdjax[plot]'."
        ) from e
    if ax is None:
        ax = Figure(figsize=(7.5, 4), layout="constrained").subplots()
    return ax


def plot_lr_range(result: Any, ax: Any = None):
    """Final loss against learning rate (log x) with both suggestions marked.

    Args:
      result: a :class:`gdjax.diagnostics.LRRangeResult`.
      ax: matplotlib axes, or ``None`` for a new figure.

    Returns:
      The axes.

    Examples:
      >>> import jax, jax.numpy as jnp, numpy as np
      >>> from gdjax.diagnostics import lr_range_test
      >>> from gdjax._plot_diagnostics import plot_lr_range
      >>> loss = lambda p, a: 0.5 * p @ a @ p
      >>> res = lr_range_test(loss, jnp.ones(2), jnp.eye(2), key=jax.random.key(0),
      ...                     lrs=np.logspace(-2, 0.5, 6), steps=5)
      >>> ax = plot_lr_range(res)
      >>> ax.get_xscale()
      'log'
    """
    ax = _axes(ax)
    lrs = np.asarray(result.lrs)
    losses = np.asarray(result.losses, float)
    stable = np.asarray(result.stable, bool)
    shown = np.where(np.isfinite(losses), losses, np.nan)
    ax.plot(lrs, shown, "o", color="0.6", ms=4, label="final loss")
    smoothed = np.where(stable, np.asarray(result.smoothed, float), np.nan)
    ax.plot(lrs, smoothed, "-", color="C0", label="smoothed (stable rates)")
    ax.axhline(result.initial_loss, color="0.4", ls=":", lw=1, label="initial loss")
    for value, color, name in (
        (result.suggestion_steepest, "C2", "steepest"),
        (result.suggestion_max_stable, "C3", "max stable"),
    ):
        if np.isfinite(value):
            ax.axvline(value, color=color, ls="--", lw=1, label=f"{name}: {value:.3g}")
    bad = ~np.isfinite(losses)
    if bad.any():
        top = np.nanmax(shown) if np.isfinite(shown).any() else result.initial_loss
        ax.plot(lrs[bad], np.full(bad.sum(), top), "x", color="C3", label="diverged")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("loss after the budget")
    ax.set_title("learning-rate range test")
    _legend_outside(ax)
    return ax


def plot_sharpness(history: Any, lr: float, ax: Any = None, *, name: str = "sharpness"):
    r"""Sharpness times learning rate, :math:`\eta\lambda_{\max}`, against the epoch.

    The dashed line at 2 is gradient descent's stability threshold on a
    quadratic; at the edge of stability (Cohen et al., 2021) the curve rises
    to it and hovers there.

    Args:
      history: a :class:`gdjax.History` with ``monitors[name]`` (from
        :func:`gdjax.diagnostics.sharpness_monitor`) or an array of
        per-epoch sharpness values (NaN where not measured).
      lr: the learning rate :math:`\eta` of the run.
      ax: matplotlib axes, or ``None`` for a new figure.
      name: the monitor's name in ``history.monitors``.

    Returns:
      The axes.

    Examples:
      >>> import numpy as np
      >>> from gdjax._plot_diagnostics import plot_sharpness
      >>> ax = plot_sharpness(np.array([10.0, np.nan, 30.0, np.nan, 40.0]), 0.05)
      >>> ax.get_lines()[0].get_ydata().tolist()
      [0.5, 1.5, 2.0]
    """
    ax = _axes(ax)
    values = history.monitors[name] if hasattr(history, "monitors") else history
    values = np.asarray(values, float)
    rows = np.flatnonzero(np.isfinite(values))
    ax.plot(
        rows + 1,  # history row r holds epoch r + 1
        float(lr) * values[rows],
        "-",
        color="C0",
        label=r"$\eta\,\lambda_{\max}$",
    )
    ax.axhline(2.0, color="C3", ls="--", lw=1, label=r"$2$ (stability of GD)")
    ax.set_xlabel("epoch")
    ax.set_ylabel(r"$\eta\,\lambda_{\max}$")
    ax.set_title("sharpness (edge of stability)")
    _legend_outside(ax)
    return ax


def _legend_outside(ax: Any) -> None:
    """The legend to the right of the axes, where it covers no data."""
    ax.legend(
        loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False, fontsize="small"
    )
