r"""Many runs as one program: seeds x hyperparameters, vmapped and sharded.

Contract. A sweep trains one *member* per (seed, hyperparameter setting). The
member with seed :math:`s` and setting :math:`h` is, to float tolerance (and
exactly in its discrete outputs: stop epoch, steps, status), the single run

.. code-block:: python

    init_key, run_key = seed_keys(s)  # from gdjax.sweep
    gd.fit(loss, init(init_key), data, transform, key=run_key,
           hyperparams=h_transform, **h_criteria, **fit_kwargs)

where ``h_transform`` are the transform's injected hyperparameters of ``h``
(``learning_rate``, ``momentum``...; see :func:`gdjax.get_hyperparams`) and
``h_criteria`` its stopping criteria (``tol``, ``target_loss``, ``grad_tol``,
``max_steps``, ``patience``). With :math:`M` members the whole sweep is

.. math:: \big(\theta^{(m)}_T\big)_{m=1}^{M} =
   \mathrm{vmap}_m\ \mathrm{run}\big(\theta^{(m)}_0, s^{(m)}, h^{(m)};\ D\big)

compiled once: ``jit(vmap(run_epochs))`` over a flat member axis, with the data
:math:`D` an unbatched argument (``in_axes=None``: one copy, never one per
member). A swept number is an array in the member's optimizer state
(``optax.inject_hyperparams``) or in its :class:`~gdjax.stopping.Criteria`, so
new values reuse the compiled program.

Programs. A sweep compiles two XLA programs: a small one that derives a
seed's keys and draws its initial parameters (called once per seed, compiled
once per initializer), and the run itself. The members' optimizer states
are built by ``vmap(transform.init)`` op by op (a few tiny programs, cached
by shape) and :func:`~gdjax.set_hyperparams` writes the swept numbers into
them on the host. Keeping random initialization out of the run keeps the
run's compile short and lets it be reused: the run program depends only on
the loss, the transform's ``update``, the regime, the criteria switched on
and the shapes, not on the numbers swept or on which ``gd.sgd(...)``
instance was passed.

Early stopping. Every member carries its own status; under ``vmap`` the
epoch loop runs until the last member stops, and a stopped member is frozen.
Each member reports its own ``epoch``, ``steps`` and ``stop_epoch``;
:attr:`SweepResult.executed_epochs` is what the batch ran.

Shapes that change. An ``outer`` axis (batch size, batching regime, or a
keyword of ``init`` such as a width) changes the program; it is a Python loop
over its values, one compilation per shape, with the results in the same
format and the outer axes first.

Devices. With several devices (or ``devices=`` given) the member axis is
sharded over a one-dimensional mesh ``("members",)`` with ``NamedSharding``;
the data is replicated (one copy per device, not per member). The member
count is padded to a multiple of the device count with copies of member 0,
and the padding is dropped from the result; with more devices than members
only as many devices as members are used.
"""

from __future__ import annotations

import functools
import inspect
import itertools
import math
import numbers
import sys
import types
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import numpy as np
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from gdjax import _validate as V
from gdjax import batching, loop, transforms
from gdjax._typing import Batch, Key, LossFn, Params, PyTree
from gdjax.loop import FitResult, History
from gdjax.stopping import Status

CRITERIA = ("max_steps", "target_loss", "grad_tol", "tol", "patience")
"""Stopping criteria that can be swept (per-member arrays in the program)."""

_INT_CRITERIA = ("max_steps", "patience")

_FIT_KWARGS = (
    "max_steps",
    "target_loss",
    "grad_tol",
    "tol",
    "patience",
    "until",
    "val_data",
    "metric",
    "monitors",
    "monitor_every",
    "guard",
    "check_finite",
    "callback",
    "history_size",
)

_MEMBER_AXIS = "members"
_SEED_LIMIT = 2**32


# ------------------------------------------------------------------------------- keys


def seed_keys(seed: int) -> tuple[Key, Key]:
    r"""The two keys of a sweep member: one for its initial parameters, one for its run.

    .. math:: (k_{\mathrm{init}}, k_{\mathrm{run}}) =
       \mathrm{split}(\mathrm{key}(s))

    The member of :func:`sweep` with seed ``s`` equals
    ``fit(loss, init(init_key), data, transform, key=run_key, ...)``.

    Args:
      seed: a non-negative integer below ``2**32`` (or a traced one, inside
        ``jit``; the sweep calls this in a small jitted program per seed).

    Returns:
      ``(init_key, run_key)``, two typed PRNG keys.

    Examples:
      >>> import jax
      >>> from gdjax.sweep import seed_keys
      >>> init_key, run_key = seed_keys(3)
      >>> bool((jax.random.key_data(init_key) != jax.random.key_data(run_key)).any())
      True
    """
    keys = jax.random.split(jax.random.key(seed))
    return keys[0], keys[1]


# ----------------------------------------------------------------------------- result


def _freeze(value: Any) -> Any:
    """A hashable, readable form of a coordinate value."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.item() if value.ndim == 0 else tuple(value.tolist())
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


def _last_finite(values: np.ndarray) -> np.ndarray:
    """The last finite entry along the last axis (NaN where none is)."""
    values = np.asarray(values)
    finite = np.isfinite(values)
    last = values.shape[-1] - 1 - np.argmax(finite[..., ::-1], axis=-1)
    picked = np.take_along_axis(values, last[..., None], axis=-1)[..., 0]
    return np.where(finite.any(axis=-1), picked, np.nan)


def _same(value: Any, wanted: Any) -> bool:
    """Coordinate equality; numbers match to float32 precision (0.1 finds a
    learning rate given as ``np.float32(0.1)``)."""
    if isinstance(value, numbers.Real) and isinstance(wanted, numbers.Real):
        return bool(np.isclose(value, wanted, rtol=1e-6, atol=0.0))
    try:
        return bool(value == wanted)
    except (TypeError, ValueError):
        return False


def _take(tree: Any, index: tuple) -> Any:
    """``tree[index]`` on every leaf; a leaf that is an object array of pytrees
    (an outer axis that changed shapes) is indexed, then its pytree."""

    def pick(a):
        if isinstance(a, np.ndarray) and a.dtype == object:
            return _take(a[index[: a.ndim]], index[a.ndim :])
        return a[index]

    return jax.tree.map(pick, tree)


@jax.tree_util.register_pytree_node_class
class SweepResult:
    """The members of a sweep, on labelled axes.

    A pytree whose one child is :attr:`result`; ``axes`` and the coordinates
    are static metadata. Leaves are NumPy arrays on the host.

    Attributes:
      result: a :class:`~gdjax.FitResult` whose every leaf has the leading
        axes :attr:`shape` (``("seed", *hyperparameter names)``, or
        ``("seed", "setting")`` for a zipped sweep, after any outer axes).
        When an outer axis changes the parameters' shapes (an ``init``
        keyword such as a width), ``result.params`` and ``result.opt_state``
        cannot be stacked: each is then a NumPy object array over the outer
        axes whose elements are that point's stacked pytrees
        (:meth:`member` hides the difference).
      axes: the axis names.
      coords: ``{axis: values}``; for a zipped sweep ``coords["setting"]`` is
        a tuple of ``{name: value}`` dicts.
    """

    __slots__ = ("_coords", "axes", "result")

    def __init__(self, result: FitResult, axes: tuple[str, ...], coords: tuple):
        self.result = result
        self.axes = tuple(axes)
        self._coords = coords

    # pytree
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

    def _index(self, index: tuple, coords: Mapping[str, Any]) -> tuple:
        if index and coords:
            raise TypeError("give member() either positional indices or coordinates.")
        if index:
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
        out = []
        named = self.coords
        unknown = set(coords) - set(self.axes) - set(self._setting_names())
        if unknown:
            raise ValueError(
                f"unknown coordinate(s) {sorted(unknown)}; axes are {self.axes}."
            )
        for axis, values in named.items():
            if axis in coords:
                if axis == "setting":
                    i = V.check_int(coords[axis], "setting", minimum=0)
                    if i >= len(values):
                        raise IndexError(f"setting {i} is out of [0, {len(values)}).")
                    out.append(i)
                    continue
                matches = [j for j, v in enumerate(values) if _same(v, coords[axis])]
                if not matches:
                    raise ValueError(f"{axis}={coords[axis]!r} is not in {values}.")
                out.append(matches[0])
            elif axis == "setting":
                want = {k: v for k, v in coords.items() if k not in self.axes}
                matches = [
                    j
                    for j, v in enumerate(values)
                    if all(k in v and _same(v[k], w) for k, w in want.items())
                ]
                if len(matches) != 1 or not want:
                    raise ValueError(
                        f"the coordinates {want} match {len(matches)} settings; "
                        "give setting=<index> or values that pick exactly one."
                    )
                out.append(matches[0])
            elif len(values) == 1:
                out.append(0)
            else:
                raise ValueError(f"member() needs a coordinate for axis {axis!r}.")
        return tuple(out)

    def _setting_names(self) -> list[str]:
        named = self.coords
        return sorted({k for s in named.get("setting", ()) for k in s})

    def member(self, *index: int, **coords: Any) -> FitResult:
        """One member's :class:`~gdjax.FitResult`.

        Args:
          *index: one integer per axis, in :attr:`axes` order, or
          **coords: coordinate values, e.g. ``member(seed=3, learning_rate=0.1)``
            (for a zipped sweep ``setting=<index>`` or the swept values).

        Returns:
          A :class:`~gdjax.FitResult` of that member alone.
        """
        return _take(self.result, self._index(index, coords))

    def setting(self, *index: int) -> dict[str, Any]:
        """The coordinate values of a member (``{"seed": 0, "learning_rate": ...}``)."""
        idx = self._index(index, {})
        out: dict[str, Any] = {}
        for (axis, values), i in zip(self.coords.items(), idx, strict=True):
            if axis == "setting":
                out.update(values[i])
            else:
                out[axis] = values[i]
        return out

    def reasons(self) -> np.ndarray:
        """Each member's :class:`~gdjax.Status` name, an array of :attr:`shape`."""
        status = np.asarray(self.result.status)
        names = np.array([s.name for s in Status], dtype=object)
        return names[status]

    def failed(self) -> np.ndarray:
        """True where a member stopped on NaN or inf."""
        return np.asarray(self.result.status) >= Status.NONFINITE_LOSS

    def final_loss(self) -> np.ndarray:
        """Each member's last recorded epoch loss, an array of :attr:`shape`."""
        return _last_finite(self.result.history.loss)

    def final_val_loss(self) -> np.ndarray:
        """Each member's last recorded validation loss (NaN without val_data)."""
        return _last_finite(self.result.history.val_loss)

    def _by(self, by: str) -> np.ndarray:
        if by == "loss":
            return self.final_loss()
        if by == "val_loss":
            values = self.final_val_loss()
            if np.all(np.isnan(values)):
                raise ValueError(
                    "by='val_loss' needs a sweep run with val_data; none was recorded."
                )
            return values
        raise ValueError(f"by must be 'loss' or 'val_loss', got {by!r}.")

    def _settings(self) -> list[tuple[tuple, dict[str, Any]]]:
        """(index over the non-seed axes, coordinate dict) for every setting."""
        k = self.seed_axis
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
        return np.moveaxis(values, self.seed_axis, -1)

    def summary(self) -> list[dict[str, Any]]:
        r"""Per setting, statistics over seeds of the final losses.

        For each setting (every combination of the non-seed axes) the mean,
        standard deviation (:math:`\frac{1}{S}\sum (x - \bar x)^2`, NumPy's
        default), minimum and maximum over the seeds of each member's final
        training loss (and validation loss, if recorded). Members that
        failed (NaN/inf) are left out of the statistics and counted in
        ``"failed"``; a setting whose every member failed shows NaN.

        Returns:
          A list of dicts, one per setting in axis order, e.g.
          ``{"learning_rate": 0.1, "loss_mean": ..., "loss_std": ...,
          "loss_min": ..., "loss_max": ..., "failed": 0, "seeds": 8}``.
        """
        failed = self._over_seeds(self.failed())
        columns = {"loss": self._over_seeds(self.final_loss())}
        val = self._over_seeds(self.final_val_loss())
        if not np.all(np.isnan(val)):
            columns["val_loss"] = val
        rows = []
        for idx, coord in self._settings():
            row = dict(coord)
            bad = failed[idx]
            for name, values in columns.items():
                v = values[idx]
                v = v[~bad & np.isfinite(v)]
                if v.size:
                    row.update(
                        {
                            f"{name}_mean": float(np.mean(v)),
                            f"{name}_std": float(np.std(v)),
                            f"{name}_min": float(np.min(v)),
                            f"{name}_max": float(np.max(v)),
                        }
                    )
                else:
                    row.update({f"{name}_{s}": math.nan for s in _STATS})
            row["failed"] = int(np.sum(bad))
            row["seeds"] = int(bad.size)
            rows.append(row)
        return rows

    def best(self, by: str = "loss") -> tuple[dict[str, Any], float]:
        """The setting with the lowest mean final loss over seeds, and that mean.

        A setting in which any member failed (NaN/inf) is never the best.

        Args:
          by: ``"loss"`` (final training loss) or ``"val_loss"``.

        Returns:
          ``(setting, value)``: the coordinates of the best setting (without
          the seed) and its mean over seeds.
        """
        values = self._over_seeds(self._by(by))
        failed = self._over_seeds(self.failed())
        best, best_value = None, math.inf
        for idx, coord in self._settings():
            v = values[idx]
            if failed[idx].any() or not np.all(np.isfinite(v)):
                continue
            mean = float(np.mean(v))
            if mean < best_value:
                best, best_value = coord, mean
        if best is None:
            raise ValueError(f"no setting has a finite {by} for every seed.")
        return best, best_value


_STATS = ("mean", "std", "min", "max")


# ---------------------------------------------------------------------------- checking


def _check_seeds(seeds: Any) -> np.ndarray:
    if isinstance(seeds, numbers.Integral) or not isinstance(
        seeds, (Sequence, np.ndarray, range)
    ):
        raise TypeError(
            "seeds must be a sequence of integers (a list, range or 1-D array), got "
            f"{V.describe(seeds)}; for n seeds pass range(n)."
        )
    arr = np.asarray(list(seeds) if not isinstance(seeds, np.ndarray) else seeds)
    if arr.ndim != 1:
        raise ValueError(f"seeds must be one-dimensional, got shape {arr.shape}.")
    if arr.size == 0:
        raise ValueError("seeds is empty: the sweep has no members.")
    for s in arr.tolist():
        if isinstance(s, bool) or not isinstance(s, numbers.Integral):
            raise TypeError(f"seeds must be integers, got {V.describe(s)}.")
        if not 0 <= s < _SEED_LIMIT:
            raise ValueError(f"seeds must be integers in [0, 2**32), got {s}.")
    values, counts = np.unique(arr, return_counts=True)
    if np.any(counts > 1):
        dup = values[counts > 1].tolist()
        raise ValueError(
            f"seeds must be distinct, got {dup} more than once (a repeated seed "
            "is a repeated member)."
        )
    return arr.astype(np.uint32)


def _check_sequence(values: Any, name: str) -> np.ndarray:
    if isinstance(values, (str, bytes, Mapping)) or np.ndim(values) != 1:
        raise TypeError(
            f"{name} must be a sequence of numbers (a list or 1-D array), got "
            f"{V.describe(values)}; for a single value write [value]."
        )
    arr = np.asarray(values)
    if arr.size == 0:
        raise ValueError(f"{name} is empty: the sweep has no members.")
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.number):
        raise TypeError(f"{name} must hold numbers, got {V.describe(values)}.")
    return arr


def _check_mapping(value: Any, name: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TypeError(
            f"{name} must be a dict of name -> values, got {V.describe(value)}."
        )
    for key in value:
        if not isinstance(key, str):
            raise TypeError(f"{name} keys must be strings, got {key!r}.")
    return dict(value)


class _Axes(NamedTuple):
    """The hyperparameter axes of one sweep (host-side)."""

    names: tuple[str, ...]  # swept names
    axes: tuple[str, ...]  # axis names after "seed"
    coords: tuple  # ((axis, values), ...) after "seed"
    flat: dict[str, np.ndarray]  # name -> (H,) values, settings in C order
    count: int  # H


def _sweep_axes(hyperparams: dict[str, Any], grid: bool) -> _Axes:
    if not isinstance(grid, (bool, np.bool_)):
        raise TypeError(f"grid must be True or False, got {V.describe(grid)}.")
    lists = {
        name: _check_sequence(values, f"hyperparams[{name!r}]")
        for name, values in hyperparams.items()
    }
    names = tuple(lists)
    if not names:
        return _Axes((), (), (), {}, 1)
    if grid:
        mesh = np.meshgrid(*(np.arange(len(v)) for v in lists.values()), indexing="ij")
        flat = {n: lists[n][m.ravel()] for n, m in zip(names, mesh, strict=True)}
        coords = tuple((n, tuple(_freeze(v) for v in lists[n])) for n in names)
        return _Axes(
            names, names, coords, flat, int(np.prod([len(v) for v in lists.values()]))
        )
    lengths = {n: len(v) for n, v in lists.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(
            "grid=False zips the hyperparameter lists, so they must have equal "
            f"lengths, got {lengths}; use grid=True for their product."
        )
    k = next(iter(lengths.values()))
    settings = tuple(tuple((n, _freeze(lists[n][i])) for n in names) for i in range(k))
    return _Axes(names, ("setting",), (("setting", settings),), lists, k)


def _check_values(name: str, values: np.ndarray) -> None:
    where = f"hyperparams[{name!r}]"
    if name in _INT_CRITERIA:
        for v in values.tolist():
            V.check_int(v, where, minimum=1)
        return
    if name in ("tol", "grad_tol"):
        V.check_nonnegative(values, where)
    elif name in ("learning_rate", "momentum", "weight_decay"):
        transforms.check_hyperparams({name: values})
    else:
        V.check_real(values, where)


def _injected(opt_state: PyTree) -> tuple[dict[str, Any], set[str]]:
    """The transform's injected hyperparameters (abstract) and the scheduled ones."""
    settable, scheduled = transforms.hyperparam_names(opt_state)
    values = transforms.get_hyperparams(opt_state) if settable else {}
    return {n: values[n] for n in settable}, set(scheduled)


def _key_spec() -> jax.ShapeDtypeStruct:
    return jax.eval_shape(jax.random.key, 0)


def _abstract_params(init: Any) -> Params:
    if callable(init):
        try:
            return jax.eval_shape(init, _key_spec())
        except Exception as e:  # noqa: BLE001 - reworded, JAX's message chained
            raise TypeError(
                "init must be callable as init(key) -> params (or be a params "
                f"pytree shared by every member); calling it on a key failed: {e}"
            ) from e
    return init


def _check_devices(devices: Any) -> list | None:
    if devices is None:
        found = jax.devices()
        return found if len(found) > 1 else None
    available = jax.devices()
    if isinstance(devices, numbers.Integral) and not isinstance(devices, bool):
        k = V.check_int(devices, "devices", minimum=1)
        if k > len(available):
            raise ValueError(
                f"devices={k} but only {len(available)} device(s) are available."
            )
        return available[:k]
    if (
        isinstance(devices, Sequence)
        and devices
        and all(isinstance(d, jax.Device) for d in devices)
    ):
        return list(devices)
    raise TypeError(
        "devices must be a device count or a non-empty sequence of jax devices, got "
        f"{V.describe(devices)}."
    )


# ----------------------------------------------------------------------------- programs


class _ByValue:
    """A callable as a ``jit`` static argument, equal to another by value.

    ``functools.partial(gd.init.mlp, widths=[64, 16, 10])`` built twice gives
    two objects that ``jit`` would treat as different programs; comparing a
    partial by its function and (frozen) arguments lets every sweep with the
    same initializer reuse one compiled program.
    """

    __slots__ = ("fn", "key")

    def __init__(self, fn: Callable | None):
        self.fn = fn
        self.key = _callable_key(fn)

    def __hash__(self) -> int:
        return hash(self.key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _ByValue) and self.key == other.key


class _Identity:
    __slots__ = ("obj",)

    def __init__(self, obj: Any):
        self.obj = obj

    def __hash__(self) -> int:
        return id(self.obj)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Identity) and other.obj is self.obj


def _frozen(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, tuple(_frozen(v) for v in value))
    if isinstance(value, dict):
        return ("dict", tuple(sorted((k, _frozen(v)) for k, v in value.items())))
    if isinstance(value, functools.partial):
        return _callable_key(value)
    if isinstance(value, (str, bytes, bool, int, float, complex, type(None))):
        return (type(value).__name__, value)
    if isinstance(value, np.dtype) or (
        isinstance(value, type) and issubclass(value, np.generic)
    ):
        return ("dtype", np.dtype(value).str)
    return _Identity(value)


def _callable_key(fn: Any) -> Any:
    if isinstance(fn, functools.partial):
        return (
            "partial",
            _callable_key(fn.func),
            _frozen(fn.args),
            _frozen(fn.keywords),
        )
    return _Identity(fn)


def _seed_init(init, seed):
    """One seed's run key (as raw key data) and initial parameters.

    One small program per initializer, whatever the number of seeds: it is
    called once per seed. (``vmap`` over seeds would be one call, but XLA
    compiles a key-batched threefry several times more slowly than the
    unbatched one, and this program is compiled again for every seed count.)
    """
    init_key, run_key = seed_keys(seed)
    params = None if init.fn is None else init.fn(init_key)
    return jax.random.key_data(run_key), params


_init_seed = jax.jit(_seed_init, static_argnums=0)


def _run_members(static, state, data, val_data, keys, criteria, epoch_limit):
    """``vmap`` of :func:`gdjax.loop.run_epochs` over members; data shared."""
    run = functools.partial(loop.run_epochs, static)
    return jax.vmap(run, in_axes=(0, None, None, 0, 0, None))(
        state, data, val_data, keys, criteria, epoch_limit
    )


_advance_members = jax.jit(_run_members, static_argnums=0, donate_argnums=1)


class _Plan(NamedTuple):
    """One compiled sweep, validated and ready (host-side)."""

    prepared: loop.Prepared  # member 0's, with abstract params/opt_state
    init: _ByValue
    shared: Params | None
    transform_init: Callable
    seeds: np.ndarray  # (S,) uint32
    member_seed: np.ndarray  # (M_pad,) position in seeds of each member's seed
    hyperparams: dict[str, np.ndarray]  # injected, (M_pad,)
    criteria: Any  # Criteria of (M_pad,) arrays
    members: int  # M
    mesh: jax.sharding.Mesh | None


def _broadcast(tree: Any, m: int) -> Any:
    return jax.tree.map(
        lambda a: np.broadcast_to(np.asarray(a), (m, *np.shape(a))), tree
    )


def _plan(
    loss: LossFn,
    init: Any,
    data: Batch,
    transform: optax.GradientTransformation,
    *,
    seeds: np.ndarray,
    axes: _Axes,
    epochs: int,
    regime: batching.Regime | None,
    devices: list | None,
    fit_kwargs: dict[str, Any],
) -> _Plan:
    if not (hasattr(transform, "init") and hasattr(transform, "update")):
        raise TypeError(
            "transform must be an optax GradientTransformation (gd.sgd(...), "
            f"optax.chain(...)), got {V.describe(transform)}."
        )
    abstract = _abstract_params(init)
    V.check_params(abstract, "params" if not callable(init) else "init(key)")
    injected, scheduled = _injected(jax.eval_shape(transform.init, abstract))
    available = sorted(set(injected) - scheduled) + list(CRITERIA)
    for name in axes.names:
        if name in scheduled:
            raise ValueError(
                f"hyperparams[{name!r}] is driven by a schedule in the transform; "
                f"sweeping it would have no effect. Sweepable: {available}."
            )
        if name not in available:
            hint = (
                ""
                if injected
                else " (the transform holds no injected hyperparameters: build it "
                "with gd.sgd or optax.inject_hyperparams to sweep them)"
            )
            raise ValueError(
                f"unknown hyperparameter {name!r}; sweepable names are "
                f"{available}{hint}."
            )
        if name in fit_kwargs:
            raise ValueError(
                f"{name!r} is both swept (hyperparams) and fixed (keyword argument); "
                "give it once."
            )
        _check_values(name, axes.flat[name])
    swept_criteria = [n for n in axes.names if n in CRITERIA]
    if (
        "patience" in swept_criteria
        and "tol" not in axes.names
        and (fit_kwargs.get("tol") is None)
    ):
        raise ValueError(
            "hyperparams['patience'] is swept but tol is off; patience counts "
            "epochs without relative improvement above tol, so pass tol=... too."
        )

    first = {n: axes.flat[n][0].item() for n in swept_criteria}
    kwargs = {k: v for k, v in fit_kwargs.items() if k != "callback"}
    kwargs.update(first)
    abstract_tx = optax.GradientTransformationExtraArgs(
        lambda p: jax.eval_shape(transform.init, p), transform.update
    )
    prepared = loop.prepare(
        loss,
        abstract,
        data,
        abstract_tx,
        key=np.zeros(2, np.uint32),
        epochs=epochs,
        regime=regime,
        **kwargs,
    )

    n_settings = axes.count
    m = len(seeds) * n_settings
    if devices is None:
        mesh, m_pad = None, m
    else:
        d = min(len(devices), m)
        mesh = jax.make_mesh(
            (d,),
            (_MEMBER_AXIS,),
            axis_types=(jax.sharding.AxisType.Auto,),
            devices=devices[:d],
        )
        m_pad = -(-m // d) * d
    # Member m = (seed m // H, setting m % H); padding repeats member 0.
    pick = np.concatenate([np.arange(m), np.zeros(m_pad - m, np.int64)])
    setting = pick % n_settings
    hyper = {
        n: np.asarray(axes.flat[n][setting], dtype=injected[n].dtype)
        for n in axes.names
        if n not in CRITERIA
    }
    criteria = _broadcast(prepared.criteria, m_pad)
    criteria = criteria._replace(
        **{
            n: np.asarray(axes.flat[n][setting], dtype=getattr(criteria, n).dtype)
            for n in swept_criteria
        }
    )
    return _Plan(
        prepared=prepared,
        init=_ByValue(init if callable(init) else None),
        shared=None if callable(init) else init,
        transform_init=transform.init,
        seeds=seeds,
        member_seed=(pick // n_settings).astype(np.int32),
        hyperparams=hyper,
        criteria=criteria,
        members=m,
        mesh=mesh,
    )


def _member_inputs(plan: _Plan):
    """The stacked initial state, keys, criteria, data of a plan (on device)."""
    from gdjax.transforms import set_hyperparams

    prepared = plan.prepared
    m_pad = len(plan.member_seed)
    shard = rep = None
    if plan.mesh is not None:
        shard = NamedSharding(plan.mesh, P(_MEMBER_AXIS))
        rep = NamedSharding(plan.mesh, P())
    per_seed = jax.device_get([_init_seed(plan.init, s) for s in plan.seeds])
    pick = plan.member_seed
    key_data = np.stack([k for k, _ in per_seed])[pick]
    if plan.init.fn is None:
        params = _broadcast(plan.shared, m_pad)
    else:
        params = jax.tree.map(lambda *xs: np.stack(xs)[pick], *[p for _, p in per_seed])
    put = functools.partial(jax.device_put, device=shard)
    params = put(params)
    keys = jax.random.wrap_key_data(put(key_data))
    # Eagerly, op by op: a transform's init is a few zeros_like whose tiny
    # programs are cached by shape, whereas a jit keyed on transform.init
    # would recompile for every gd.sgd(...) instance.
    opt_state = jax.vmap(plan.transform_init)(params)
    if plan.hyperparams:
        opt_state = set_hyperparams(opt_state, **plan.hyperparams)
    # A copy: the run donates its state, and an optimizer state may hold the
    # very arrays it was given (params) or share one array between leaves.
    opt_state = jax.device_put(opt_state, shard, may_alias=False)
    state = prepared.state
    rest = _broadcast(state._replace(params=None, opt_state=None), m_pad)
    state = rest._replace(params=params, opt_state=opt_state)
    state = state._replace(**{f: put(getattr(state, f)) for f in FitResult._fields[2:]})
    criteria = put(plan.criteria)
    data = jax.device_put(prepared.data, rep)
    val_data = (
        None if prepared.val_data is None else jax.device_put(prepared.val_data, rep)
    )
    return prepared._replace(
        state=state, data=data, val_data=val_data, key=keys, criteria=criteria
    )


def _execute(plan: _Plan, *, chunk_epochs, callback, progress) -> FitResult:
    prepared = _member_inputs(plan)
    state = loop.drive(
        prepared,
        advance=_advance_members,
        chunk_epochs=chunk_epochs,
        callback=callback,
        progress=progress,
    )
    host = jax.device_get(state)
    return jax.tree.map(lambda a: np.asarray(a)[: plan.members], host)


def _reshape(result: FitResult, shape: tuple[int, ...]) -> FitResult:
    return jax.tree.map(lambda a: a.reshape(shape + a.shape[1:]), result)


# ------------------------------------------------------------------------------- outer


def _outer_points(
    outer: dict[str, Any], init: Any, regime: batching.Regime | None, axes: _Axes
) -> tuple[tuple, list[tuple[dict[str, Any], Any, Any]]]:
    """The outer coordinates and, per point, (values, init, regime)."""
    if not outer:
        return (), [({}, init, regime)]
    lists = {}
    for name, values in outer.items():
        if name == "seed" or name in axes.names:
            raise ValueError(
                f"outer[{name!r}] is also swept inside (seed or hyperparams); "
                "give it once."
            )
        if isinstance(values, (str, bytes, Mapping)) or not isinstance(
            values, (Sequence, np.ndarray, range)
        ):
            raise TypeError(
                f"outer[{name!r}] must be a sequence of values, got "
                f"{V.describe(values)}."
            )
        values = list(values)
        if not values:
            raise ValueError(f"outer[{name!r}] is empty: the sweep has no members.")
        lists[name] = values
    if "batch_size" in lists and "regime" in lists:
        raise ValueError("outer may vary batch_size or regime, not both.")
    init_names = [n for n in lists if n not in ("batch_size", "regime")]
    if init_names:
        if not callable(init):
            raise ValueError(
                f"outer axes {init_names} are passed to init as keywords, so init "
                "must be a callable init(key, **kw)."
            )
        try:
            sig = inspect.signature(init)
        except (TypeError, ValueError):  # pragma: no cover - builtins
            sig = None
        if sig is not None and not any(
            p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values()
        ):
            known = [
                p.name
                for p in sig.parameters.values()
                if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
            ][1:]
            for n in init_names:
                if n not in known:
                    raise ValueError(
                        f"unknown outer axis {n!r}: it is not batch_size, regime or "
                        f"a keyword of init (which takes {known})."
                    )
    base = batching.full_batch() if regime is None else regime
    points = []
    for combo in itertools.product(*lists.values()):
        values = dict(zip(lists, combo, strict=True))
        point_init, point_regime = init, regime
        if init_names:
            point_init = functools.partial(init, **{n: values[n] for n in init_names})
        if "batch_size" in values:
            if base.kind == "stochastic":
                raise ValueError(
                    "outer batch_size needs regime=None, gd.full_batch() or "
                    f"gd.minibatch(...), got {base.describe()}."
                )
            b = values["batch_size"]
            if base.kind == "minibatch":
                point_regime = batching.minibatch(
                    b,
                    shuffle=base.shuffle,
                    last_batch=base.last_batch,
                    permutation=base.permutation,
                )
            else:
                point_regime = batching.minibatch(b)
        if "regime" in values:
            point_regime = values["regime"]
        points.append((values, point_init, point_regime))
    coords = tuple((n, tuple(_freeze(v) for v in vs)) for n, vs in lists.items())
    return coords, points


def _stack(parts: list[Any], shape: tuple[int, ...]) -> Any:
    """Stack per-point pytrees over outer axes, or an object array if shapes differ."""
    structs = {jax.tree.structure(p) for p in parts}
    if len(structs) == 1:
        shapes = {tuple(np.shape(x) for x in jax.tree.leaves(p)) for p in parts}
        if len(shapes) == 1:
            stacked = jax.tree.map(lambda *xs: np.stack(xs), *parts)
            return jax.tree.map(lambda a: a.reshape(shape + a.shape[1:]), stacked)
    out = np.empty(len(parts), dtype=object)
    for i, p in enumerate(parts):
        out[i] = p
    return out.reshape(shape)


def _combine(results: list[FitResult], shape: tuple[int, ...]) -> FitResult:
    fields = {}
    for field in FitResult._fields:
        fields[field] = _stack([getattr(r, field) for r in results], shape)
    history = fields["history"]
    if not isinstance(history, History):  # pragma: no cover - same epochs everywhere
        raise AssertionError("histories of an outer sweep must stack")
    return FitResult(**fields)


# --------------------------------------------------------------------------------- API


def sweep(
    loss: LossFn,
    init: Callable[[Key], Params] | Params,
    data: Batch,
    transform: optax.GradientTransformation,
    *,
    seeds: Sequence[int],
    hyperparams: Mapping[str, Sequence[float]] | None = None,
    grid: bool = True,
    epochs: int,
    regime: batching.Regime | None = None,
    outer: Mapping[str, Sequence[Any]] | None = None,
    devices: int | Sequence[jax.Device] | None = None,
    chunk_epochs: int | None = None,
    progress: bool = False,
    **fit_kwargs: Any,
) -> SweepResult:
    r"""Train every (seed, hyperparameter setting) at once, as one compiled program.

    For seeds :math:`s_1..s_S` and settings :math:`h_1..h_H` (the product of
    the ``hyperparams`` lists, or their zip) it runs the :math:`M = S H`
    members

    .. math:: \theta^{(s,h)}_{t+1} = \theta^{(s,h)}_t +
       u\big(\nabla L_{B^{(s)}_t}(\theta^{(s,h)}_t);\ h\big),
       \qquad \theta^{(s,h)}_0 = \mathrm{init}(k^{(s)}_{\mathrm{init}})

    in one ``jit(vmap(run_epochs))`` (see the module docstring for the
    contract with :func:`gdjax.fit` and :func:`seed_keys`).

    Args:
      loss: ``loss(params, batch) -> scalar``, as for :func:`gdjax.fit`.
      init: ``init(key) -> params`` (each seed draws its own, from
        ``seed_keys(seed)[0]``) or a params pytree shared by every member.
      data: the training data, a pytree of arrays with a leading example axis;
        shared by all members (one copy on each device).
      transform: an optax ``GradientTransformation``; to sweep its numbers,
        build it with :func:`gdjax.sgd` or ``optax.inject_hyperparams``.
      seeds: distinct integers in ``[0, 2**32)``.
      hyperparams: ``{name: values}``: names of the transform's injected
        hyperparameters (:func:`gdjax.get_hyperparams`) or the numeric
        stopping criteria ``tol``, ``target_loss``, ``grad_tol``,
        ``max_steps``, ``patience``; values a list or 1-D array of numbers.
      grid: ``True`` sweeps the product of the lists (one axis per name);
        ``False`` zips equal-length lists (one ``"setting"`` axis).
      epochs: the epoch budget of every member.
      regime: the batching regime (:func:`gdjax.full_batch` by default).
      outer: ``{name: values}`` that change shapes, run as a Python loop
        (one compilation each): ``"batch_size"``, ``"regime"``, or a keyword
        of ``init`` (e.g. a width, with ``init(key, width=...)``).
      devices: a device count or list of devices to shard the members over;
        ``None`` shards over all devices when there are several.
      chunk_epochs: run in compiled chunks of epochs (same program reused),
        e.g. to see progress; the result is that of one call.
      progress: show a progress bar (the slowest member's epoch).
      **fit_kwargs: fixed arguments of :func:`gdjax.fit`: ``max_steps``,
        ``target_loss``, ``grad_tol``, ``tol``, ``patience``, ``until``,
        ``val_data``, ``metric``, ``monitors``, ``monitor_every``, ``guard``,
        ``check_finite``, ``history_size``, ``callback`` (which sees the
        stacked state, padding members included).

    Returns:
      A :class:`SweepResult` with axes ``(*outer, "seed", *hyperparams)`` (or
      ``(*outer, "seed", "setting")`` with ``grid=False``).

    Raises:
      TypeError, ValueError: before anything compiles, for an empty sweep,
        duplicate seeds, unequal zipped lists, an unknown or out-of-range
        hyperparameter, and everything :func:`gdjax.fit` refuses.

    Examples:
      >>> import jax.numpy as jnp, gdjax as gd
      >>> from gdjax.sweep import sweep
      >>> x = jnp.array([[1.0], [2.0], [3.0]]); y = 2.0 * x[:, 0]
      >>> loss = gd.make_loss(gd.models.linear, gd.losses.squared_error)
      >>> params = {"w": jnp.zeros((1, 1)), "b": jnp.zeros(1)}
      >>> res = sweep(loss, params, (x, y), gd.sgd(0.1), seeds=[0, 1],
      ...             hyperparams={"learning_rate": [0.01, 0.1]},
      ...             epochs=200, target_loss=1e-3)
      >>> res.axes, res.shape
      (('seed', 'learning_rate'), (2, 2))
      >>> res.reasons()[0].tolist(), res.result.stop_epoch[0].tolist()
      (['MAX_EPOCHS', 'TARGET_LOSS'], [199, 152])
      >>> res.best()[0]
      {'learning_rate': 0.1}
    """
    unknown = sorted(set(fit_kwargs) - set(_FIT_KWARGS))
    if unknown:
        raise TypeError(
            f"sweep() got unexpected keyword argument(s) {unknown}; it takes the "
            f"fit arguments {list(_FIT_KWARGS)} (resume/donate/raise_on_nonfinite "
            "do not apply to a sweep, and keys come from seeds)."
        )
    seed_values = _check_seeds(seeds)
    axes = _sweep_axes(_check_mapping(hyperparams, "hyperparams"), grid)
    outer_coords, points = _outer_points(
        _check_mapping(outer, "outer"), init, regime, axes
    )
    device_list = _check_devices(devices)
    callback = fit_kwargs.get("callback")
    plans = [
        _plan(
            loss,
            point_init,
            data,
            transform,
            seeds=seed_values,
            axes=axes,
            epochs=epochs,
            regime=point_regime,
            devices=device_list,
            fit_kwargs=fit_kwargs,
        )
        for _, point_init, point_regime in points
    ]
    inner_shape = (len(seed_values), *(len(v) for _, v in axes.coords))
    results = [
        _reshape(
            _execute(
                p, chunk_epochs=chunk_epochs, callback=callback, progress=progress
            ),
            inner_shape,
        )
        for p in plans
    ]
    seed_coord = (("seed", tuple(int(s) for s in seed_values)),)
    coords = outer_coords + seed_coord + axes.coords
    outer_shape = tuple(len(v) for _, v in outer_coords)
    result = results[0] if not outer_coords else _combine(results, outer_shape)
    return SweepResult(result, tuple(a for a, _ in coords), coords)


__all__ = ["CRITERIA", "SweepResult", "seed_keys", "sweep"]


class _CallableModule(types.ModuleType):
    """Lets ``gd.sweep(...)`` call :func:`sweep` while ``gd.sweep.SweepResult``,
    ``gd.sweep.seed_keys`` and ``from gdjax.sweep import ...`` keep working."""

    def __call__(self, *args: Any, **kwargs: Any) -> SweepResult:
        return sweep(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
