r"""What runs return: :class:`FitResult` and :class:`SweepResult`, and their tables.

A :class:`FitResult` wraps the compiled run's :class:`~gdjax.loop.RunState`
and shows what a user reads: ``params``, ``opt_state``, ``history`` (the epochs
actually run), ``epoch`` (epochs run, counting from 1), ``steps``, ``status``,
``reason``. The run's internals (best loss, plateau counter, first bad leaf)
stay in ``result.state``, which is what ``resume=`` and checkpoints use.

A :class:`SweepResult` holds the members of a sweep on labelled axes
(``("seed", "learning_rate", ...)``). Both give their history as a
*long-format table*: one row per (member,) epoch actually run, one column per
coordinate, then ``epoch``, ``loss``, ``grad_norm`` and, when recorded,
``val_loss``, ``metric`` and one column per monitor. :meth:`FitResult.to_dict`
/ :meth:`SweepResult.to_dict` give it as NumPy columns, ``to_pandas()`` as a
``pandas.DataFrame`` (``gdjax[pandas]``), :meth:`SweepResult.to_xarray` as an
``xarray.Dataset`` of the padded histories.

Epochs count from 1 everywhere: history row ``i`` of a run without striding
is epoch ``i + 1``, ``result.epoch`` is the number of epochs run, and a
message "stopped in epoch 3" means the third.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import numbers
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from gdjax import _validate as V
from gdjax.loop import History, RunState
from gdjax.stopping import Status

SERIES = ("loss", "grad_norm", "val_loss", "metric")
"""The per-epoch series every history holds (monitors come after)."""


def _rows_written(epoch: np.ndarray) -> int:
    """How many leading history rows some member has written."""
    written = np.asarray(epoch) > 0
    if not written.any():
        return 0
    return int(np.max(np.sum(written, axis=-1)))


def _trim(history: History, rows: int) -> History:
    return jax.tree.map(lambda a: a[..., :rows], history)


def gather(tree: Any) -> Any:
    """Every leaf as a NumPy array holding its global value, on every process.

    How results reach the host: the members of a sweep split over the devices
    of several processes (``jax.distributed``) come back whole on each.

    A leaf that this process holds whole (one process, or replicated) is read
    locally; the leaves split over processes are all-gathered in one
    ``multihost_utils.process_allgather`` (a collective: every process must
    call this).
    """
    from jax.experimental import multihost_utils

    leaves, treedef = jax.tree.flatten(tree)
    split = [
        i
        for i, leaf in enumerate(leaves)
        if isinstance(leaf, jax.Array)
        and not (leaf.is_fully_addressable or leaf.is_fully_replicated)
    ]
    out = [
        np.asarray(leaf) if i not in split else None for i, leaf in enumerate(leaves)
    ]
    if split:
        whole = multihost_utils.process_allgather(
            [leaves[i] for i in split], tiled=True
        )
        for i, value in zip(split, whole, strict=True):
            out[i] = np.asarray(value)
    return jax.tree.unflatten(treedef, out)


def describe_stop(state: RunState) -> str:
    """A sentence saying why (and where) a single run stopped."""
    status = Status(int(state.status))
    epoch, steps = int(state.epoch), int(state.steps)
    if status == Status.RUNNING:
        return f"{status.message} after epoch {epoch}"
    if not status.failed:
        return f"{status.message} (epoch {epoch}, after {steps} steps)"
    kept = f"those after step {steps}" if steps else "the initial ones"
    text = (
        f"{status.message} at step {steps + 1} (epoch {epoch}); params and "
        f"opt_state are {kept}, the last finite ones"
    )
    leaf = int(state.bad_leaf)
    if leaf >= 0:
        paths = jax.tree_util.tree_leaves_with_path(state.params)
        text += f"; first bad leaf: params{jax.tree_util.keystr(paths[leaf][0])}"
    return text


def _columns(history: History, mask: np.ndarray) -> dict[str, np.ndarray]:
    """Long-format series columns: the rows of ``history`` where ``mask``."""
    out = {"epoch": np.asarray(history.epoch)[mask].astype(np.int64)}
    for name in SERIES:
        values = np.asarray(getattr(history, name))
        if name in ("loss", "grad_norm") or not np.all(np.isnan(values)):
            out[name] = values[mask]
    for name, values in sorted(history.monitors.items()):
        out[name] = np.asarray(values)[mask]
    return out


@jax.tree_util.register_pytree_node_class
@dataclasses.dataclass(frozen=True)
class FitResult:
    """The result of :func:`gdjax.fit` (and of one member of a sweep).

    A pytree whose one child is :attr:`state`; ``jax.tree.map``, ``device_get``
    and orbax see the whole run state.

    Attributes:
      state: the compiled run's :class:`~gdjax.loop.RunState` (internals
        included), what ``fit(..., resume=result)`` continues.
    """

    state: RunState

    def tree_flatten(self):
        return (self.state,), None

    @classmethod
    def tree_unflatten(cls, aux, children):
        del aux
        return cls(*children)

    # ------------------------------------------------------------------ fields
    @property
    def params(self) -> Any:
        """Final parameters (the last finite ones if the run hit NaN/inf)."""
        return self.state.params

    @property
    def opt_state(self) -> Any:
        """Final optimizer state (likewise)."""
        return self.state.opt_state

    @property
    def loss_state(self) -> Any:
        """The state of a stateful loss (:func:`gdjax.stateful`), ``()`` otherwise
        (the last finite one if the run hit NaN/inf)."""
        return self.state.loss_state

    @property
    def history(self) -> History:
        """The per-epoch :class:`~gdjax.History` of the epochs actually run.

        For a stacked result (a sweep's ``result``) members that stopped early
        are NaN past their stop (``epoch`` 0 there).
        """
        return _trim(self.state.history, _rows_written(self.state.history.epoch))

    @property
    def epoch(self) -> Any:
        """Epochs run, a stopped partial epoch included (counting from 1)."""
        return self.state.epoch

    @property
    def steps(self) -> Any:
        """Gradient steps applied."""
        return self.state.steps

    @property
    def status(self) -> Any:
        """A :class:`~gdjax.Status` code (int32)."""
        return self.state.status

    @property
    def stopped_by(self) -> Status:
        """The :class:`~gdjax.Status` of a single run."""
        return Status(int(self.state.status))

    @property
    def failed(self) -> bool:
        """True if the run stopped on NaN or inf."""
        return self.stopped_by.failed

    @property
    def final_loss(self) -> float:
        """The last finite recorded epoch loss (NaN if none)."""
        loss = np.asarray(self.history.loss)
        finite = np.flatnonzero(np.isfinite(loss))
        return float(loss[finite[-1]]) if finite.size else math.nan

    @property
    def reason(self) -> str:
        """Why the run stopped, in a sentence (step and epoch counted from 1)."""
        return describe_stop(self.state)

    def __repr__(self) -> str:
        if np.ndim(self.state.status) == 0:
            return (
                f"FitResult(epoch={int(self.epoch)}, steps={int(self.steps)}, "
                f"status={self.stopped_by.name}, final_loss={self.final_loss:.6g})"
            )
        return f"FitResult(stacked, members={np.shape(self.state.status)})"

    # ------------------------------------------------------------------ tables
    def to_dict(self) -> dict[str, np.ndarray]:
        """The history as long-format columns: ``epoch``, ``loss``, ...

        One entry per epoch actually run (per recorded row, with
        ``history_size``); ``val_loss`` and ``metric`` only when recorded.

        Examples:
          >>> import jax, jax.numpy as jnp, gdjax as gd
          >>> loss = gd.make_loss(gd.models.linear, gd.losses.squared_error)
          >>> x = jnp.arange(4.0)[:, None]; y = x[:, 0]
          >>> r = gd.fit(loss, {"w": jnp.zeros((1, 1)), "b": jnp.zeros(1)},
          ...            (x, y), gd.sgd(0.1), key=jax.random.key(0), epochs=3)
          >>> sorted(r.to_dict()), r.to_dict()["epoch"].tolist()
          (['epoch', 'grad_norm', 'loss'], [1, 2, 3])
        """
        history = jax.device_get(self.history)
        mask = np.asarray(history.epoch) > 0
        return _columns(history, mask)

    def to_pandas(self):
        """:meth:`to_dict` as a ``pandas.DataFrame`` (needs pandas)."""
        return _pandas().DataFrame(self.to_dict())


def _pandas():
    try:
        import pandas
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "to_pandas() needs pandas: pip install 'gdjax[pandas]'."
        ) from e
    return pandas


# ------------------------------------------------------------------------ sweeps


def same_coordinate(value: Any, wanted: Any) -> bool:
    """Coordinate equality; numbers match to float32 precision (0.1 finds a
    learning rate given as ``np.float32(0.1)``)."""
    if isinstance(value, numbers.Real) and isinstance(wanted, numbers.Real):
        return bool(np.isclose(value, wanted, rtol=1e-6, atol=0.0))
    try:
        return bool(value == wanted)
    except (TypeError, ValueError):
        return False


def take(tree: Any, index: tuple) -> Any:
    """``tree[index]`` on every leaf; a leaf that is an object array of pytrees
    (an outer axis that changed shapes) is indexed, then its pytree."""

    def pick(a):
        if isinstance(a, np.ndarray) and a.dtype == object:
            return take(a[index[: a.ndim]], index[a.ndim :])
        return a[index]

    return jax.tree.map(pick, tree)


@jax.tree_util.register_pytree_node_class
class SweepResult:
    """The members of a sweep, on labelled axes.

    A pytree whose one child is :attr:`result`; ``axes`` and the coordinates
    are static metadata. Leaves are NumPy arrays on the host.

    Attributes:
      result: a :class:`FitResult` whose every leaf has the leading axes
        :attr:`shape` (``("seed", *hyperparameter names)``, or
        ``("seed", "setting")`` for a zipped sweep, after any outer axes).
        When an outer axis changes the parameters' shapes (an ``init``
        keyword such as a width), ``params`` and ``opt_state`` are NumPy
        object arrays over the outer axes whose elements are that point's
        stacked pytrees (:meth:`member` hides the difference).
      axes: the axis names.
      coords: ``{axis: values}``; for a zipped sweep ``coords["setting"]`` is
        a tuple of ``{name: value}`` dicts.
    """

    __slots__ = ("_coords", "axes", "result")

    def __init__(self, result: FitResult, axes: tuple[str, ...], coords: tuple):
        self.result = result
        self.axes = tuple(axes)
        self._coords = coords

    def tree_flatten(self):
        return (self.result,), (self.axes, self._coords)

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(children[0], *aux)

    def __repr__(self) -> str:
        dims = ", ".join(f"{a}={n}" for a, n in zip(self.axes, self.shape, strict=True))
        return f"SweepResult({dims})"

    @property
    def coords(self) -> dict[str, tuple]:
        out = {}
        for axis, values in self._coords:
            if axis == "setting":
                values = tuple(dict(v) for v in values)
            out[axis] = values
        return out

    @property
    def shape(self) -> tuple[int, ...]:
        """The length of every axis."""
        return tuple(len(values) for _, values in self._coords)

    @property
    def seed_axis(self) -> int:
        return self.axes.index("seed")

    @property
    def executed_epochs(self) -> int:
        """Epochs the vmapped loop ran: those of the member that stopped last."""
        return int(np.max(self.result.epoch))

    # --------------------------------------------------------------- selection
    def _index_of(self, index: tuple) -> tuple:
        if len(index) != len(self.axes):
            raise TypeError(
                f"member() takes one index per axis {self.axes}, got {len(index)}."
            )
        out = []
        for i, n, axis in zip(index, self.shape, self.axes, strict=True):
            i = V.check_int(i, f"index along {axis!r}", minimum=-n)
            if i >= n:
                raise IndexError(f"index {i} along {axis!r} is out of [0, {n}).")
            out.append(i % n)
        return tuple(out)

    def _positions(self, coords: Mapping[str, Any]) -> dict[str, int]:
        """Axis -> position for the coordinates given (each must match one)."""
        unknown = set(coords) - set(self.axes) - set(self._setting_names())
        if unknown:
            raise ValueError(
                f"unknown coordinate(s) {sorted(unknown)}; axes are {self.axes}."
            )
        out = {}
        for axis, values in self.coords.items():
            if axis in coords and axis == "setting":
                i = V.check_int(coords[axis], "setting", minimum=0)
                if i >= len(values):
                    raise IndexError(f"setting {i} is out of [0, {len(values)}).")
                out[axis] = i
            elif axis in coords:
                hits = [
                    j for j, v in enumerate(values) if same_coordinate(v, coords[axis])
                ]
                if not hits:
                    raise ValueError(f"{axis}={coords[axis]!r} is not in {values}.")
                out[axis] = hits[0]
            elif axis == "setting":
                want = {k: v for k, v in coords.items() if k not in self.axes}
                if not want:
                    continue
                hits = [
                    j
                    for j, v in enumerate(values)
                    if all(k in v and same_coordinate(v[k], w) for k, w in want.items())
                ]
                if len(hits) != 1:
                    raise ValueError(
                        f"the coordinates {want} match {len(hits)} settings; "
                        "give setting=<index> or values that pick exactly one."
                    )
                out[axis] = hits[0]
        return out

    def _setting_names(self) -> list[str]:
        return sorted({k for s in self.coords.get("setting", ()) for k in s})

    def member(self, *index: int, **coords: Any) -> FitResult:
        """One member's :class:`FitResult`.

        Args:
          *index: one integer per axis, in :attr:`axes` order, or
          **coords: coordinate values, e.g. ``member(seed=3, learning_rate=0.1)``
            (for a zipped sweep ``setting=<index>`` or the swept values). An
            axis of length 1 may be left out.

        Returns:
          A :class:`FitResult` of that member alone, its history trimmed to the
          epochs it ran.
        """
        if index and coords:
            raise TypeError("give member() either positional indices or coordinates.")
        if index:
            return take(self.result, self._index_of(index))
        pos = self._positions(coords)
        for axis, n in zip(self.axes, self.shape, strict=True):
            if axis not in pos:
                if n != 1:
                    raise ValueError(f"member() needs a coordinate for axis {axis!r}.")
                pos[axis] = 0
        return take(self.result, tuple(pos[a] for a in self.axes))

    def sel(self, **coords: Any) -> SweepResult | FitResult:
        """The members at the given coordinates, as xarray's ``sel`` does.

        Fixing every axis gives that member's :class:`FitResult`; fixing some
        gives a :class:`SweepResult` over the others.

        Examples:
          >>> # sw.sel(learning_rate=0.1)            -> SweepResult over seeds
          >>> # sw.sel(learning_rate=0.1, seed=3)    -> FitResult
        """
        pos = self._positions(coords)
        if len(pos) == len(self.axes):
            return take(self.result, tuple(pos[a] for a in self.axes))
        index = tuple(pos.get(a, slice(None)) for a in self.axes)
        kept = tuple((a, v) for a, v in self._coords if a not in pos)
        return SweepResult(take(self.result, index), tuple(a for a, _ in kept), kept)

    def setting(self, *index: int) -> dict[str, Any]:
        """The coordinate values of a member (``{"seed": 0, "learning_rate": ...}``)."""
        idx = self._index_of(index)
        out: dict[str, Any] = {}
        for (axis, values), i in zip(self.coords.items(), idx, strict=True):
            if axis == "setting":
                out.update(values[i])
            else:
                out[axis] = values[i]
        return out

    # ---------------------------------------------------------------- numbers
    def reasons(self) -> np.ndarray:
        """Each member's :class:`~gdjax.Status` name, an array of :attr:`shape`."""
        names = np.array([s.name for s in Status], dtype=object)
        return names[np.asarray(self.result.status)]

    def failed(self) -> np.ndarray:
        """True where a member stopped on NaN or inf."""
        return np.asarray(self.result.status) >= Status.NONFINITE_LOSS

    def final(self, series: str = "loss") -> np.ndarray:
        """Each member's last recorded value of ``series``, an array of :attr:`shape`.

        Args:
          series: ``"loss"``, ``"grad_norm"``, ``"val_loss"``, ``"metric"`` or a
            monitor's name.
        """
        values = np.asarray(self._series(series))
        epoch = np.asarray(self.result.state.history.epoch)
        written = epoch > 0
        last = np.maximum(np.sum(written, axis=-1) - 1, 0)
        picked = np.take_along_axis(values, last[..., None], axis=-1)[..., 0]
        return np.where(written.any(axis=-1), picked, np.nan)

    @property
    def final_loss(self) -> np.ndarray:
        """Each member's last recorded epoch loss (as :meth:`final`)."""
        return self.final("loss")

    @property
    def final_val_loss(self) -> np.ndarray:
        """Each member's last recorded validation loss (NaN without val_data)."""
        return self.final("val_loss")

    def _series(self, name: str) -> np.ndarray:
        history = self.result.state.history
        if name in SERIES:
            return np.asarray(getattr(history, name))
        if name in history.monitors:
            return np.asarray(history.monitors[name])
        raise ValueError(
            f"unknown series {name!r}; recorded: "
            f"{list(SERIES) + sorted(history.monitors)}."
        )

    def _recorded(self) -> list[str]:
        history = self.result.state.history
        names = ["loss"]
        for name in ("val_loss", "metric"):
            if not np.all(np.isnan(np.asarray(getattr(history, name)))):
                names.append(name)
        return names + sorted(history.monitors)

    def _settings(self) -> list[tuple[tuple, dict[str, Any]]]:
        """(index over the non-seed axes, coordinate dict) for every setting."""
        # A selection that fixed the seed (sel(seed=s)) has no seed axis.
        k = self.axes.index("seed") if "seed" in self.axes else None
        other = [a for a in range(len(self.axes)) if a != k]
        named = list(self.coords.items())
        out = []
        for idx in itertools.product(*(range(self.shape[a]) for a in other)):
            coord: dict[str, Any] = {}
            for a, i in zip(other, idx, strict=True):
                axis, values = named[a]
                if axis == "setting":
                    coord.update(values[i])
                else:
                    coord[axis] = values[i]
            out.append((idx, coord))
        return out

    def _over_seeds(self, values: np.ndarray) -> np.ndarray:
        """``values`` with the seed axis moved last: (*settings, seeds)."""
        if "seed" not in self.axes:  # sel(seed=s): one seed
            return np.asarray(values)[..., None]
        return np.moveaxis(values, self.seed_axis, -1)

    def summary(self) -> list[dict[str, Any]]:
        r"""Per setting, statistics over seeds of every recorded final value.

        For each setting (every combination of the non-seed axes) the mean,
        standard deviation (:math:`\frac{1}{S}\sum (x - \bar x)^2`, NumPy's
        default), minimum and maximum over the seeds of each member's final
        training loss, and of its validation loss, metric and monitors when
        recorded. Members that failed (NaN/inf) are left out of the statistics
        and counted in ``"failed"``; a setting whose every member failed shows
        NaN.

        Returns:
          A list of dicts, one per setting in axis order, e.g.
          ``{"learning_rate": 0.1, "loss_mean": ..., "loss_std": ...,
          "loss_min": ..., "loss_max": ..., "metric_mean": ..., "failed": 0,
          "seeds": 8}``.
        """
        failed = self._over_seeds(self.failed())
        columns = {n: self._over_seeds(self.final(n)) for n in self._recorded()}
        rows = []
        for idx, coord in self._settings():
            row = dict(coord)
            bad = failed[idx]
            for name, values in columns.items():
                v = values[idx]
                v = v[~bad & np.isfinite(v)]
                stats = (np.mean, np.std, np.min, np.max)
                for stat, fn in zip(("mean", "std", "min", "max"), stats, strict=True):
                    row[f"{name}_{stat}"] = float(fn(v)) if v.size else math.nan
            row["failed"] = int(np.sum(bad))
            row["seeds"] = int(bad.size)
            rows.append(row)
        return rows

    def best(self, by: str = "loss", mode: str = "min") -> tuple[dict[str, Any], float]:
        """The setting with the best mean over seeds of a final value.

        A setting in which any member failed (NaN/inf) is never the best.

        Args:
          by: any recorded series: ``"loss"``, ``"val_loss"``, ``"metric"``,
            ``"grad_norm"`` or a monitor's name.
          mode: ``"min"`` (losses) or ``"max"`` (accuracies).

        Returns:
          ``(setting, value)``: the coordinates of the best setting (without
          the seed) and its mean over seeds.
        """
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}.")
        values = self._over_seeds(self.final(by))
        if np.all(np.isnan(values)):
            raise ValueError(f"by={by!r}: the sweep recorded no value of {by}.")
        failed = self._over_seeds(self.failed())
        sign = 1.0 if mode == "min" else -1.0
        best, best_value = None, math.inf
        for idx, coord in self._settings():
            v = values[idx]
            if failed[idx].any() or not np.all(np.isfinite(v)):
                continue
            mean = float(np.mean(v))
            if sign * mean < best_value:
                best, best_value = coord, sign * mean
        if best is None:
            raise ValueError(f"no setting has a finite {by} for every seed.")
        return best, sign * best_value

    # ----------------------------------------------------------------- tables
    def _member_coords(self) -> list[dict[str, Any]]:
        return [self.setting(*idx) for idx in np.ndindex(*self.shape)]

    def to_dict(self) -> dict[str, np.ndarray]:
        """The long-format table as NumPy columns.

        One row per member and epoch actually run; columns: every coordinate
        (``seed``, each swept name), then ``epoch``, ``loss``, ``grad_norm`` and
        the recorded ``val_loss``, ``metric`` and monitors.
        """
        history = self.result.state.history
        parts: list[dict[str, Any]] = []
        for idx, coord in zip(
            np.ndindex(*self.shape), self._member_coords(), strict=True
        ):
            member = jax.tree.map(lambda a, idx=idx: np.asarray(a)[idx], history)
            mask = np.asarray(member.epoch) > 0
            cols = _columns(member, mask)
            rows = int(mask.sum())
            part = {k: np.full(rows, v, dtype=object) for k, v in coord.items()}
            part.update(cols)
            parts.append(part)
        names = list(parts[0]) if parts else []
        out = {}
        for name in names:
            col = np.concatenate([p[name] for p in parts])
            if col.dtype == object:
                try:
                    col = np.asarray(col.tolist())
                except (TypeError, ValueError):  # pragma: no cover - mixed types
                    pass
            out[name] = col
        return out

    def to_pandas(self):
        """:meth:`to_dict` as a ``pandas.DataFrame`` (needs pandas)."""
        return _pandas().DataFrame(self.to_dict())

    def to_xarray(self):
        """The padded histories as an ``xarray.Dataset`` (needs xarray).

        Dimensions: the sweep's axes, then ``row`` (history rows; NaN past a
        member's stop). A zipped sweep's ``setting`` axis is indexed by number.
        """
        try:
            import xarray
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ImportError("to_xarray() needs xarray: pip install xarray.") from e
        history = self.result.state.history
        dims = (*self.axes, "row")
        data = {"epoch": (dims, np.asarray(history.epoch))}
        for name in self._recorded() + ["grad_norm"]:
            data[name] = (dims, self._series(name))
        coords = {
            a: (list(range(len(v))) if a == "setting" else list(v))
            for a, v in self.coords.items()
        }
        return xarray.Dataset(data, coords=coords)


__all__ = [
    "gather",
    "SERIES",
    "FitResult",
    "SweepResult",
    "describe_stop",
    "same_coordinate",
    "take",
]
