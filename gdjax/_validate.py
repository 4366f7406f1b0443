"""Checks at gdjax's public boundary, run on the host before anything compiles.

Inside ``jit`` an out-of-range gather clamps, a NaN learning rate is accepted and
empty data gives an exactly zero gradient: nothing in the compiled program can
tell the user. So every public entry point checks its arguments here first and
raises an error that names the argument (or the pytree key path), what was
expected and what came. Nothing here compiles: shapes come from
``jax.eval_shape`` / ``jax.make_jaxpr``, values from ``numpy`` on the host.
"""

from __future__ import annotations

import contextlib
import inspect
import numbers
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np

from gdjax._typing import PyTree
from gdjax.errors import (
    GdjaxError,
    GdjaxTypeError,
    GdjaxValueError,
    IgnoredBatchWarning,
    ZeroGradientWarning,
)

INT32_MAX = 2**31 - 1
"""The largest count a run's int32 counters (epochs, steps) can hold."""


def path_str(path: tuple) -> str:
    """``(DictKey('w'), SequenceKey(0))`` -> ``"['w'][0]"`` (``"<root>"`` if empty)."""
    return jax.tree_util.keystr(path) or "<root>"


def describe(value: Any) -> str:
    """A short description of ``value`` for an error message."""
    if isinstance(value, (jax.Array, np.ndarray)):
        return f"an array of shape {tuple(value.shape)} and dtype {value.dtype}"
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


def _dtype_name(x: Any) -> str:
    # str(), not np.dtype(): typed PRNG keys have a dtype NumPy cannot hold.
    return str(x.dtype if hasattr(x, "dtype") else np.asarray(x).dtype)


def shapes(tree: PyTree) -> str:
    """``"['w']: float32[4], ['b']: float32[]"``: a pytree's leaves for a message."""
    return ", ".join(
        f"{path_str(p)}: {_dtype_name(a)}{list(np.shape(a))}"
        for p, a in jax.tree_util.tree_leaves_with_path(tree)
    )


# ----------------------------------------------------------------------------- keys


def check_key(key: Any, name: str = "key", *, wrap: bool = True) -> jax.Array:
    """A single PRNG key: typed (``jax.random.key``) or raw uint32[2] (``PRNGKey``).

    A raw key is wrapped into a typed one (a small eager program the first
    time), unless ``wrap=False``: then it is only checked.
    """
    if isinstance(key, (jax.Array, np.ndarray)):
        if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
            if key.shape != ():
                raise GdjaxValueError(
                    f"{name} must be a single PRNG key, got a batch of keys of shape "
                    f"{key.shape}; pass one key (sweeps split their own)."
                )
            return key
        if key.dtype == np.uint32 and key.shape == (2,):
            return jax.random.wrap_key_data(jnp.asarray(key)) if wrap else key
    raise GdjaxTypeError(
        f"{name} must be a PRNG key from jax.random.key(seed), got {describe(key)}."
    )


# ----------------------------------------------------------------------------- memo

_MAX_MEMO = 256
_MEMO: dict = {}


def signature(*trees: Any) -> tuple:
    """A hashable description of pytrees: structure, shapes, dtypes, weak types.

    Two calls with equal signatures trace identically (what ``jax.jit``'s cache
    assumes too), so an abstract check that passed for one passes for the other.
    """
    out = []
    for tree in trees:
        leaves, treedef = jax.tree_util.tree_flatten(tree)
        out.append(treedef)
        out.append(
            tuple(
                (
                    tuple(getattr(x, "shape", np.shape(x))),
                    str(getattr(x, "dtype", type(x).__name__)),
                    bool(getattr(x, "weak_type", False)),
                )
                for x in leaves
            )
        )
    return tuple(out)


def memo(key: tuple, compute: Callable[[], Any]) -> Any:
    """``compute()`` once per ``key`` (bounded; an unhashable key is not memoized).

    For host-side checks that depend only on functions and signatures: each
    costs a tracing pass (about a millisecond), and a ``fit`` call made several,
    as much as a short compiled run. A check that raises is not remembered.
    """
    try:
        return _MEMO[key]
    except KeyError:
        pass
    except TypeError:  # an unhashable callable in the key
        return compute()
    value = compute()
    if len(_MEMO) >= _MAX_MEMO:
        _MEMO.clear()
    _MEMO[key] = value
    return value


# ----------------------------------------------------------------------------- numbers


def _host(value: Any, name: str) -> np.ndarray:
    if isinstance(value, (bool, np.bool_)):
        raise GdjaxTypeError(f"{name} must be a number, got {describe(value)}.")
    try:
        arr = np.asarray(value)
    except Exception as e:  # noqa: BLE001 - reworded below
        raise GdjaxTypeError(f"{name} must be a number, got {describe(value)}.") from e
    if not (np.issubdtype(arr.dtype, np.number)):
        raise GdjaxTypeError(f"{name} must be a number, got {describe(value)}.")
    return arr


def check_real(
    value: Any,
    name: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
) -> Any:
    """A finite real number (or array of them, as in a sweep) inside a range."""
    arr = _host(value, name)
    if not np.all(np.isfinite(arr)):
        raise GdjaxValueError(f"{name} must be finite, got {_show(arr)}.")
    lo_bad = None if low is None else (arr < low if low_inclusive else arr <= low)
    hi_bad = None if high is None else (arr > high if high_inclusive else arr >= high)
    if (lo_bad is not None and np.any(lo_bad)) or (
        hi_bad is not None and np.any(hi_bad)
    ):
        lb = "-inf" if low is None else f"{low:g}"
        hb = "inf" if high is None else f"{high:g}"
        interval = (
            ("[" if low_inclusive and low is not None else "(")
            + f"{lb}, {hb}"
            + ("]" if high_inclusive and high is not None else ")")
        )
        bad = np.zeros(arr.shape, bool)
        for mask in (lo_bad, hi_bad):
            if mask is not None:
                bad |= mask
        raise GdjaxValueError(f"{name} must be in {interval}, got {_show(arr, bad)}.")
    return value


def check_positive(value: Any, name: str) -> Any:
    """A finite number > 0 (or an array of them)."""
    return check_real(value, name, low=0.0, low_inclusive=False)


def check_nonnegative(value: Any, name: str) -> Any:
    """A finite number >= 0 (or an array of them)."""
    return check_real(value, name, low=0.0)


def check_int(value: Any, name: str, *, minimum: int = 1) -> int:
    """A Python/NumPy integer >= minimum (a float like 2.0 is refused)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise GdjaxTypeError(f"{name} must be an integer, got {describe(value)}.")
    if value < minimum:
        raise GdjaxValueError(f"{name} must be an integer >= {minimum}, got {value}.")
    return int(value)


def _show(arr: np.ndarray, bad: np.ndarray | None = None) -> str:
    """``arr`` for a message: a scalar, or the first offending element of an array."""
    if arr.ndim == 0:
        return repr(arr.item())
    if bad is None:
        bad = ~np.isfinite(arr)
    return f"an array containing {arr[bad].flat[0].item()!r}"


# ----------------------------------------------------------------------------- params


def check_float_dtype(dtype: Any, name: str = "dtype") -> np.dtype:
    """A floating dtype that this JAX configuration can hold."""
    try:
        dt = np.dtype(dtype)
    except TypeError as e:
        raise GdjaxTypeError(f"{name} must be a floating dtype, got {dtype!r}.") from e
    if not jnp.issubdtype(dt, jnp.floating):
        raise GdjaxTypeError(
            f"{name} must be a floating dtype (float32, float64, bfloat16, ...), "
            f"got {dt}."
        )
    if dt == np.float64 and not jax.config.read("jax_enable_x64"):
        raise GdjaxValueError(
            f"{name}=float64 needs 64-bit mode: call "
            "jax.config.update('jax_enable_x64', True) or use "
            "`with jax.enable_x64(True):`; without it JAX silently gives float32."
        )
    return dt


def check_params(
    params: PyTree, name: str = "params", *, finite: bool = False
) -> PyTree:
    """A pytree with at least one leaf, every leaf a non-empty floating array.

    With ``finite``, concrete leaves must hold no NaN or inf (a NaN in the
    initial parameters gives a run that fails at its first step).
    """
    check_no_none(params, name)
    leaves = jax.tree_util.tree_leaves_with_path(params)
    if not leaves:
        raise GdjaxValueError(
            f"{name} must be a pytree with at least one array leaf, got "
            f"{describe(params)} with no leaves."
        )
    for path, leaf in leaves:
        where = f"{name}{jax.tree_util.keystr(path)}"
        if not hasattr(leaf, "dtype") or not hasattr(leaf, "shape"):
            raise GdjaxTypeError(
                f"{where} must be an array, got {describe(leaf)}; wrap Python numbers "
                "with jnp.asarray(x, jnp.float32)."
            )
        if not jnp.issubdtype(leaf.dtype, jnp.floating):
            raise GdjaxTypeError(
                f"{where} must have a floating dtype to be differentiated, got "
                f"{leaf.dtype}; cast it with .astype(jnp.float32)."
            )
        if leaf.dtype == np.float64 and not jax.config.jax_enable_x64:
            raise GdjaxValueError(
                f"{where} is float64 but 64-bit mode is off, so JAX would silently "
                "train it in float32: call jax.config.update('jax_enable_x64', True) "
                "or use `with jax.enable_x64(True):`, or cast it with "
                ".astype(np.float32)."
            )
        if 0 in tuple(leaf.shape):
            raise GdjaxValueError(
                f"{where} must have at least one element, got shape "
                f"{tuple(leaf.shape)}; an empty parameter cannot be trained "
                "(check the sizes that built it)."
            )
        if finite and isinstance(leaf, (np.ndarray, jax.Array)) and not is_tracer(leaf):
            host = np.asarray(leaf)
            if not np.all(np.isfinite(host)):
                first = int(np.argmax(~np.isfinite(host).ravel()))
                raise GdjaxValueError(
                    f"{where} must be finite, got NaN or inf (first at flat index "
                    f"{first}); initialize it again, or pass check_finite=False."
                )
    return params


def check_same_structure(
    reference: PyTree,
    other: PyTree,
    ref_name: str,
    other_name: str,
    *,
    dtypes: bool = False,
) -> None:
    """``other`` has exactly the tree structure and leaf shapes of ``reference``
    (and leaf dtypes, with ``dtypes=True``).

    ``optax.apply_updates`` broadcasts a (3, 1) update onto (3, 3) params
    silently; this refuses it, naming the first differing key path.
    """
    ref = dict(jax.tree_util.tree_leaves_with_path(reference))
    oth = dict(jax.tree_util.tree_leaves_with_path(other))
    ref_struct = jax.tree_util.tree_structure(reference)
    oth_struct = jax.tree_util.tree_structure(other)
    if ref_struct != oth_struct:
        missing = [path_str(p) for p in ref if p not in oth]
        extra = [path_str(p) for p in oth if p not in ref]
        detail = []
        if missing:
            detail.append(f"missing {', '.join(missing[:3])}")
        if extra:
            detail.append(f"unexpected {', '.join(extra[:3])}")
        if not detail:
            detail.append(f"{ref_struct} vs {oth_struct}")
        raise GdjaxValueError(
            f"{other_name} must have the tree structure of {ref_name}: "
            + "; ".join(detail)
            + "."
        )
    for path, leaf in ref.items():
        o = oth[path]
        if tuple(np.shape(o)) != tuple(np.shape(leaf)):
            raise GdjaxValueError(
                f"{other_name}{jax.tree_util.keystr(path)} must have shape "
                f"{tuple(np.shape(leaf))} like {ref_name}, got {tuple(np.shape(o))}."
            )
        want, got = _dtype_name(leaf), _dtype_name(o)
        if dtypes and want != got:
            raise GdjaxValueError(
                f"{other_name}{jax.tree_util.keystr(path)} must have dtype {want} "
                f"like {ref_name}, got {got}."
            )


# ----------------------------------------------------------------------------- data


def check_data(data: PyTree, name: str = "data", *, check_finite: bool = True) -> int:
    """Arrays with a shared, non-empty leading example axis; returns n."""
    check_no_none(data, name)
    leaves = jax.tree_util.tree_leaves_with_path(data)
    if not leaves:
        raise GdjaxValueError(
            f"{name} must hold at least one array, got {describe(data)}."
        )
    n = None
    first = None
    for path, leaf in leaves:
        where = f"{name}{jax.tree_util.keystr(path)}"
        if not hasattr(leaf, "shape") or not hasattr(leaf, "dtype"):
            raise GdjaxTypeError(
                f"{where} must be an array with a leading example axis, got "
                f"{describe(leaf)}."
            )
        if not (jnp.issubdtype(leaf.dtype, jnp.number) or leaf.dtype == np.bool_):
            raise GdjaxTypeError(f"{where} must be numeric, got dtype {leaf.dtype}.")
        if leaf.ndim == 0:
            raise GdjaxValueError(
                f"{where} must have a leading example axis, got a scalar; "
                "reshape it to (n, ...)."
            )
        if n is None:
            n, first = leaf.shape[0], where
        elif leaf.shape[0] != n:
            raise GdjaxValueError(
                f"every leaf of {name} must have the same number of examples: "
                f"{first} has {n}, {where} has {leaf.shape[0]}."
            )
        if leaf.shape[0]:
            check_representable(leaf, where)
        if check_finite and jnp.issubdtype(leaf.dtype, jnp.inexact):
            host = np.asarray(leaf)
            if not np.all(np.isfinite(host)):
                bad = int(
                    np.argmax(~np.isfinite(host).reshape(host.shape[0], -1).all(1))
                )
                raise GdjaxValueError(
                    f"{where} contains NaN or inf (first at example {bad}); clean it "
                    "or pass check_finite=False."
                )
    if n == 0:
        raise GdjaxValueError(
            f"{name} is empty: its leading example axis has length 0."
        )
    return int(n)


# ----------------------------------------------------------------------------- losses


def _used_vars(jaxpr) -> set:
    used = set()
    for eqn in jaxpr.eqns:
        for v in eqn.invars:
            if not isinstance(v, jax.extend.core.Literal):
                used.add(v)
    for v in jaxpr.outvars:
        if not isinstance(v, jax.extend.core.Literal):
            used.add(v)
    return used


class LossTrace(NamedTuple):
    """What tracing a loss once tells (see :func:`trace_loss`)."""

    aux: Any  # the abstract aux output (None without has_aux)
    dtype: np.dtype  # the loss value's dtype: the run's dtype
    reads_batch: bool  # False: the same value for any two batches


def _trace_error(name: str, params: PyTree, batch: PyTree, e: Exception):
    if isinstance(e, jax.errors.ConcretizationTypeError):
        return GdjaxTypeError(
            f"{name} uses Python control flow (if/while/bool/int) on a traced value, "
            "which cannot be compiled; use jnp.where or jax.lax.cond instead. "
            f"JAX said: {str(e).splitlines()[0]}"
        )
    kind = GdjaxValueError if isinstance(e, ValueError) else GdjaxTypeError
    first = (str(e).splitlines() or [""])[0]
    return kind(
        f"{name}(params, batch) fails to trace on params {shapes(params)} and "
        f"batch {shapes(batch)}: {type(e).__name__}: {first}"
    )


def _check_out(name: str, out_shape: Any, has_aux: bool, aux_hint: str) -> tuple:
    aux = None
    if has_aux:
        if not (isinstance(out_shape, (tuple, list)) and len(out_shape) == 2):
            raise GdjaxTypeError(
                f"{name} was declared has_aux=True, so it must return (value, aux), "
                f"got {describe(out_shape)}."
            )
        out_shape, aux = out_shape
    elif isinstance(out_shape, (tuple, list)):
        raise GdjaxTypeError(
            f"{name} must return a scalar, got a {type(out_shape).__name__} of "
            f"{len(out_shape)} items; if it returns (value, aux), {aux_hint}."
        )
    if not hasattr(out_shape, "shape") or out_shape.shape != ():
        shape = getattr(out_shape, "shape", None)
        raise GdjaxTypeError(
            f"{name} must return a scalar, got shape {shape}; reduce it with "
            "jnp.mean or jnp.sum."
        )
    if not jnp.issubdtype(out_shape.dtype, jnp.floating):
        raise GdjaxTypeError(
            f"{name} must return a floating-point scalar, got dtype {out_shape.dtype}."
        )
    return out_shape, aux


_ZERO_PRESERVING = {"broadcast_in_dim", "convert_element_type", "reshape", "copy"}


def _structurally_zero(jaxpr) -> list[bool]:
    """Per output of ``jaxpr``: is it a literal zero (or a broadcast/cast of one)?"""
    literal = jax.extend.core.Literal

    def is_zero(x: Any, zero: set) -> bool:
        if isinstance(x, literal):
            return bool(np.all(np.asarray(x.val) == 0))
        return x in zero

    zero: set = set()
    for eqn in jaxpr.eqns:
        if eqn.primitive.name in _ZERO_PRESERVING and eqn.invars:
            if is_zero(eqn.invars[0], zero):
                zero.update(eqn.outvars)
    return [is_zero(v, zero) for v in jaxpr.outvars]


def trace_loss(
    loss: Callable,
    params: PyTree,
    batch: PyTree,
    *,
    has_aux: bool = False,
    name: str = "loss",
    aux_hint: str = "pass has_aux=True",
) -> LossTrace:
    """Trace ``loss(params, batch)`` abstractly and check what a run needs of it.

    It must trace (JAX's errors reworded), return a float scalar, depend on
    ``params``, and have a gradient that is not identically zero (a loss that
    reads params only through ``round``, ``argmax``, comparisons or integer
    casts cannot be descended). ``jax.make_jaxpr`` compiles nothing.
    """
    if not callable(loss):
        raise GdjaxTypeError(
            f"{name} must be callable as loss(params, batch), got {describe(loss)}."
        )
    try:
        closed, out_shape = jax.make_jaxpr(loss, return_shape=True)(params, batch)
    except Exception as e:  # noqa: BLE001 - reworded, JAX's error chained
        raise _trace_error(name, params, batch, e) from e
    value, aux = _check_out(name, out_shape, has_aux, aux_hint)
    n_params = len(jax.tree_util.tree_leaves(params))
    used = _used_vars(closed.jaxpr)
    if not (set(closed.jaxpr.invars[:n_params]) & used):
        raise GdjaxValueError(
            f"{name} does not depend on params: its gradient would be identically "
            "zero. Check that it reads params rather than a closed-over copy."
        )
    reads_batch = bool(set(closed.jaxpr.invars[n_params:]) & used)

    def value_of(p, b):
        out = loss(p, b)
        return out[0] if has_aux else out

    try:
        grads = jax.make_jaxpr(jax.grad(value_of))(params, batch)
    except Exception as e:  # noqa: BLE001 - reworded, JAX's error chained
        first = (str(e).splitlines() or [""])[0]
        raise GdjaxTypeError(
            f"{name} cannot be differentiated with respect to params (reverse "
            f"mode): {type(e).__name__}: {first}"
        ) from e
    if all(_structurally_zero(grads.jaxpr)):
        raise GdjaxValueError(
            f"{name}'s gradient with respect to params is identically zero: it "
            "reads params only through operations whose derivative is zero "
            "(round, floor, sign, argmax, comparisons, integer casts), so gradient "
            "descent cannot move them. Use a differentiable surrogate."
        )
    return LossTrace(aux, np.dtype(value.dtype), reads_batch)


def check_loss(loss: Callable, params: PyTree, batch: PyTree, **options: Any) -> Any:
    """The loss traces to a float scalar that depends on ``params``.

    Uses ``jax.make_jaxpr`` (which compiles nothing) and rewords JAX's errors.
    ``options`` (``has_aux``, ``name``, ``aux_hint``) are those of
    :func:`trace_loss`. Returns the abstract aux output (``None`` without
    ``has_aux``).
    """
    return trace_loss(loss, params, batch, **options).aux


def warn_ignored_batch(trace: LossTrace, name: str = "loss") -> None:
    """Warn when a loss never reads its batch (closes over the data instead)."""
    if not trace.reads_batch:
        warnings.warn(
            f"{name} never reads its batch argument: it gives the same value for "
            "any two batches, so batching, shuffling and val_data have no effect. "
            "Does it close over the whole data set? Write loss(params, batch) "
            "using batch.",
            IgnoredBatchWarning,
            stacklevel=3,
        )


def warn_zero_gradient(all_zero: bool, name: str = "loss") -> None:
    """Warn when the gradient at the start is exactly zero in every parameter."""
    if all_zero:
        warnings.warn(
            f"the gradient of {name} was exactly zero in every parameter "
            "throughout the first epoch: gradient descent did not move (a start "
            "at a stationary point, dead ReLUs, all-zero initialization of a "
            "network). Initialize the params randomly.",
            ZeroGradientWarning,
            stacklevel=3,
        )


# ----------------------------------------------------------------------------- errors


@contextlib.contextmanager
def boundary():
    """Re-raise a helper's plain ``TypeError``/``ValueError`` as gdjax's own.

    For checks that live with their idea (a regime's plan, a loss's labels):
    the message is theirs, the class becomes :class:`~gdjax.errors.GdjaxError`
    (still a ``TypeError``/``ValueError``).
    """
    try:
        yield
    except GdjaxError:
        raise
    except TypeError as e:
        raise GdjaxTypeError(str(e)) from e
    except ValueError as e:
        raise GdjaxValueError(str(e)) from e


# ----------------------------------------------------------------------------- tracers


def is_tracer(tree: Any) -> bool:
    """True when any leaf of ``tree`` is a JAX tracer (inside jit, vmap or grad).

    The one tracer test of gdjax: a traced value cannot be read on the host, so
    host-side checks pass it through (or, at an entry point that compiles its
    own program, refuse it with :func:`check_not_traced`).
    """
    return any(isinstance(x, jax.core.Tracer) for x in jax.tree_util.tree_leaves(tree))


def check_not_traced(api: str, **trees: Any) -> None:
    """Refuse traced arguments: ``api`` compiles its own program, on the host."""
    for name, tree in trees.items():
        for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
            if isinstance(leaf, jax.core.Tracer):
                raise GdjaxTypeError(
                    f"{api} must be called outside jax.jit, jax.vmap and jax.grad, "
                    f"but {name}{jax.tree_util.keystr(path)} is a traced value; "
                    f"call {api} from Python (it compiles its own program), or "
                    "use gd.sweep to run many members at once."
                )


# ----------------------------------------------------------------------------- options


def check_flag(value: Any, name: str) -> bool:
    """``True`` or ``False`` (a string such as ``"off"`` is refused, not truthy)."""
    if not isinstance(value, (bool, np.bool_)):
        raise GdjaxTypeError(f"{name} must be True or False, got {describe(value)}.")
    return bool(value)


def check_callable(value: Any, name: str, call: str, nargs: int) -> None:
    """``None`` or a callable that accepts ``nargs`` positional arguments.

    ``call`` is how gdjax will call it, for the message (``"callback(result)"``).
    Builtins without a signature are accepted as they are.
    """
    if value is None:
        return
    if not callable(value):
        raise GdjaxTypeError(
            f"{name} must be callable as {call}, got {describe(value)}."
        )
    try:
        sig = inspect.signature(value)
    except (TypeError, ValueError):  # builtins, some C callables
        return
    try:
        sig.bind(*([None] * nargs))
    except TypeError as e:
        raise GdjaxTypeError(
            f"{name} must be callable as {call} ({nargs} positional argument"
            f"{'s' if nargs != 1 else ''}), got {describe(value)} with signature "
            f"{sig}: {e}."
        ) from None


def check_count(value: Any, name: str, *, minimum: int = 1) -> int:
    """An integer >= ``minimum`` that a run's int32 counters can hold."""
    value = check_int(value, name, minimum=minimum)
    if value > INT32_MAX:
        raise GdjaxValueError(
            f"{name} must be at most 2**31 - 1 (the run counts in int32), got {value}."
        )
    return value


def check_scalar(value: Any, name: str, **bounds: Any) -> float:
    """A finite real 0-d number (in ``bounds`` as for :func:`check_real`)."""
    arr = _host(value, name)
    if np.iscomplexobj(arr):
        raise GdjaxTypeError(f"{name} must be a real number, got {describe(value)}.")
    if arr.ndim != 0:
        raise GdjaxTypeError(
            f"{name} must be a single number, got {describe(value)} of shape "
            f"{arr.shape}."
        )
    check_real(arr, name, **bounds)
    return float(arr)


def check_in_dtype(value: float, name: str, dtype: Any) -> None:
    """``value`` stays finite in the run's ``dtype`` (float32 overflows at 3.4e38)."""
    with np.errstate(over="ignore"):
        cast = np.asarray(value).astype(np.dtype(dtype))
    if not np.all(np.isfinite(cast)):
        raise GdjaxValueError(
            f"{name} must be finite in the run's dtype {np.dtype(dtype)}, got "
            f"{value!r}, which overflows to {cast.flat[0].item()!r} there."
        )


# ----------------------------------------------------------------------------- ranges

RANGES: dict[str, dict[str, Any]] = {
    "learning_rate": dict(low=0.0, low_inclusive=False),
    "momentum": dict(low=0.0, high=1.0, high_inclusive=False),
    "weight_decay": dict(low=0.0),
}
"""The one table of hyperparameter ranges (gd.sgd's names), shared by ``fit``,
``sweep``, ``set_hyperparams`` and the transforms; other names must be finite."""


def _interval(low: float, high: float | None, low_inc: bool, high_inc: bool) -> str:
    hi = "inf" if high is None else f"{high:g}"
    lo = "-inf" if low is None else f"{low:g}"
    return (
        ("[" if low_inc and low is not None else "(")
        + f"{lo}, {hi}"
        + ("]" if high_inc and high is not None else ")")
    )


def _outside(host: np.ndarray, bounds: dict[str, Any]) -> np.ndarray:
    low, high = bounds.get("low"), bounds.get("high")
    bad = ~np.isfinite(host)
    if low is not None:
        bad |= host < low if bounds.get("low_inclusive", True) else host <= low
    if high is not None:
        bad |= host > high if bounds.get("high_inclusive", True) else host >= high
    return bad


def check_range(
    value: Any, name: str, *, key: str | None = None, dtype: Any = None, what: str = ""
) -> None:
    """A hyperparameter value (or array of them) inside :data:`RANGES`, on the host.

    With ``dtype`` (the dtype the run stores it in) the value is checked again
    after the cast: a learning rate of 1e-50 is 0 in float32, a momentum of
    1 - 1e-9 is exactly 1.0 there. A traced value passes unchecked.
    """
    if is_tracer(value):
        return
    arr = _host(value, name)
    if np.iscomplexobj(arr):
        raise GdjaxTypeError(f"{name} must be a real number, got {describe(value)}.")
    key = name.rsplit("[", 1)[-1].strip("]'\"") if key is None else key
    bounds = RANGES.get(key, {"low": None})
    interval = _interval(
        bounds.get("low"),
        bounds.get("high"),
        bounds.get("low_inclusive", True),
        bounds.get("high_inclusive", True),
    )
    host = arr.astype(np.float64)
    bad = _outside(host, bounds)
    if bad.any():
        shown = (
            repr(host.item())
            if host.ndim == 0
            else f"an array containing {host[bad].flat[0].item()!r}"
        )
        raise GdjaxValueError(
            f"{name}{what} must be a finite number in {interval}, got {shown}."
        )
    if dtype is None:
        return
    dt = np.dtype(dtype)
    with np.errstate(over="ignore", under="ignore"):
        cast = arr.astype(dt).astype(np.float64)
    bad = _outside(cast, bounds)
    if bad.any():
        given = str(arr[bad].flat[0])  # in its own dtype: 1e-08, not 9.99e-09
        became = cast[bad].flat[0].item()
        how = (
            "overflows to"
            if not np.isfinite(became)
            else "underflows to"
            if became == 0.0
            else "rounds to"
        )
        raise GdjaxValueError(
            f"{name}{what} must be in {interval} in the run's dtype {dt}, got "
            f"{given}, which {how} {became!r} in {dt}."
        )


def check_hyperparams(
    values: Any,
    *,
    where: str = "hyperparams",
    dtypes: Any = None,
    scalar: bool = False,
) -> dict[str, Any]:
    """Numbers for injected hyperparameters: ranges in the run's dtypes.

    Args:
      values: ``{name: number or array}``.
      where: the argument's name, for messages (``hyperparams[name]``).
      dtypes: ``{name: dtype}`` the run stores each in (None: unchecked).
      scalar: each value must be 0-d (one run, not a sweep).

    Returns:
      ``values`` as a dict.
    """
    if not isinstance(values, Mapping):
        raise GdjaxTypeError(
            f"{where} must be a dict {{name: value}}, got {describe(values)}."
        )
    for name, value in values.items():
        if not isinstance(name, str):
            raise GdjaxTypeError(f"{where} keys must be strings, got {name!r}.")
        here = f"{where}[{name!r}]"
        if is_tracer(value):
            continue
        arr = _host(value, here)
        if scalar and arr.ndim != 0:
            raise GdjaxValueError(
                f"{here} must be a single number for one run, got shape "
                f"{arr.shape}; to train several values at once use "
                "gd.sweep(..., hyperparams={name: [values]})."
            )
        dtype = None if dtypes is None else dtypes.get(name)
        check_range(value, here, dtype=dtype)
    return dict(values)


def check_distinct(values: Any, name: str, why: str, dtype: Any = None) -> None:
    """No repeated value, compared in the ``dtype`` the run will hold them in."""
    arr = np.asarray(values)
    with np.errstate(over="ignore", under="ignore"):
        cast = arr if dtype is None else arr.astype(np.dtype(dtype))
    uniq, index, counts = np.unique(cast, return_index=True, return_counts=True)
    if np.all(counts == 1):
        return
    dup = uniq[counts > 1][0]
    given = arr[cast == dup].tolist()
    if len(set(given)) > 1:
        raise GdjaxValueError(
            f"{name} must be distinct in the run's dtype {np.dtype(dtype)}, got "
            f"{given} which are all {dup.item()!r} there ({why})."
        )
    raise GdjaxValueError(
        f"{name} must be distinct, got {[dup.item()]} more than once ({why})."
    )


# ----------------------------------------------------------------------------- devices


def check_devices(devices: Any, name: str = "devices") -> list | None:
    """A device count or a non-empty sequence of devices, as a list (None stays)."""
    if devices is None:
        return None
    available = jax.devices()
    if isinstance(devices, numbers.Integral) and not isinstance(devices, bool):
        k = check_int(devices, name, minimum=1)
        if k > len(available):
            raise GdjaxValueError(
                f"{name}={k} but only {len(available)} device(s) are available."
            )
        return available[:k]
    if (
        isinstance(devices, Sequence)
        and not isinstance(devices, str)
        and devices
        and all(isinstance(d, jax.Device) for d in devices)
    ):
        return list(devices)
    raise GdjaxTypeError(
        f"{name} must be a device count or a non-empty sequence of jax devices, "
        f"got {describe(devices)}."
    )


# ----------------------------------------------------------------------------- tables


def as_arrays(tree: Any, name: str = "data") -> Any:
    """pandas (and polars) Series/DataFrames as NumPy arrays; other leaves as given.

    A DataFrame is a pytree leaf to JAX, and ``device_put`` of one fails in JAX's
    words; its values are what a user means. An iterator of batches is refused
    here (JAX would take it for a leaf).
    """
    if hasattr(tree, "__next__") or inspect.isgenerator(tree):
        raise GdjaxTypeError(
            f"{name} must be a pytree of arrays with a leading example axis, got "
            f"{describe(tree)}; for a stream of batches use gd.fit_stream."
        )

    def convert(leaf: Any) -> Any:
        if hasattr(leaf, "to_numpy") and not isinstance(leaf, (np.ndarray, jax.Array)):
            return np.asarray(leaf.to_numpy())
        return leaf

    return jax.tree.map(convert, tree)


def check_no_none(tree: Any, name: str) -> None:
    """JAX drops ``None`` from a pytree silently; in params or data it is a mistake.

    Except as a field of a module (a ``GetAttrKey`` in its path): that is
    ``eqx.partition``'s placeholder for what is not trained, put back by
    ``eqx.combine``.
    """
    leaves = jax.tree_util.tree_leaves_with_path(tree, is_leaf=lambda x: x is None)
    for path, leaf in leaves:
        field = bool(path) and isinstance(path[-1], jax.tree_util.GetAttrKey)
        if leaf is None and not field:
            raise GdjaxTypeError(
                f"{name}{jax.tree_util.keystr(path)} must be an array, got None "
                "(JAX would drop it silently); remove the entry or give it a value."
            )


def _run_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype an array of ``dtype`` has once JAX holds it (x64 off: 32 bits)."""
    return np.dtype(jax.dtypes.canonicalize_dtype(dtype))


def check_representable(leaf: Any, where: str) -> None:
    """A 64-bit leaf's values survive the cast JAX makes when x64 is off."""
    dt = np.dtype(leaf.dtype)
    run = _run_dtype(dt)
    if run == dt or isinstance(leaf, jax.Array):
        return
    host = np.asarray(leaf)
    if np.issubdtype(dt, np.floating):
        with np.errstate(over="ignore"):
            bad = np.isfinite(host) & ~np.isfinite(host.astype(run))
    elif np.issubdtype(dt, np.integer):
        info = np.iinfo(run)
        bad = (host < info.min) | (host > info.max)
    else:
        return
    if bad.any():
        first = int(np.argmax(bad.reshape(host.shape[0], -1).any(1)))
        raise GdjaxValueError(
            f"{where} is {dt} but 64-bit mode is off, so the run holds it as {run}, "
            f"where example {first} does not fit (value {host[bad].flat[0].item()!r}); "
            "rescale it, or enable 64-bit mode with jax.config.update("
            "'jax_enable_x64', True)."
        )


# ------------------------------------------------------------------------ init values


def abstract_values(fn: Callable, *args: Any) -> Any:
    """``fn(*args)``'s output, with the leaves that are constants read (no compile).

    ``jax.make_jaxpr`` traces ``fn``; an output that does not depend on the
    arguments (an optimizer state's hyperparameters, a counter) is a literal or
    a constant of the jaxpr and comes back as a NumPy value, in its dtype;
    every other leaf comes back as a ``jax.ShapeDtypeStruct``.
    """
    closed, shape = jax.make_jaxpr(fn, return_shape=True)(*args)
    known = {
        v: np.asarray(c)
        for v, c in zip(closed.jaxpr.constvars, closed.consts, strict=True)
        if not is_tracer(c)
    }

    def value(var: Any) -> np.ndarray | None:
        if isinstance(var, jax.extend.core.Literal):
            return np.asarray(var.val)
        return known.get(var)

    # Follow copies and casts of constants (a host-built state is device_put).
    for eqn in closed.jaxpr.eqns:
        name = eqn.primitive.name
        if name in ("device_put", "copy", "copy_p", "convert_element_type"):
            ins = [value(v) for v in eqn.invars]
            if all(x is not None for x in ins) and len(ins) == len(eqn.outvars):
                for x, out in zip(ins, eqn.outvars, strict=True):
                    known[out] = x.astype(out.aval.dtype)
    leaves, treedef = jax.tree_util.tree_flatten(shape)
    out = []
    for var, leaf in zip(closed.jaxpr.outvars, leaves, strict=True):
        got = value(var)
        out.append(leaf if got is None else np.asarray(got, dtype=leaf.dtype))
    return jax.tree_util.tree_unflatten(treedef, out)


def check_scalar_fn(fn: Callable, args: tuple, name: str, call: str) -> bool:
    """``fn(*args)`` traces (abstractly) to a real or boolean scalar."""
    try:
        out = jax.eval_shape(fn, *args)
    except Exception as e:  # noqa: BLE001 - reworded, JAX's error chained
        kind = GdjaxValueError if isinstance(e, ValueError) else GdjaxTypeError
        first = (str(e).splitlines() or [""])[0]
        raise kind(f"{call} fails to trace: {type(e).__name__}: {first}") from e
    shape = getattr(out, "shape", None)
    dtype = getattr(out, "dtype", None)
    if (
        shape != ()
        or not (jnp.issubdtype(dtype, jnp.number) or jnp.issubdtype(dtype, jnp.bool_))
        or jnp.issubdtype(dtype, jnp.complexfloating)
    ):
        got = describe(out) if shape is None else f"shape {shape} and dtype {dtype}"
        raise GdjaxTypeError(
            f"{name} must return a real or boolean scalar from {call}, got {got}; "
            "reduce it (jnp.mean, jnp.all) to one number."
        )
    return True


def clear_memo() -> None:
    """Forget every memoized check (tests start from a cold state with it)."""
    _MEMO.clear()


# ------------------------------------------------------------------- host evaluation

_HOST_OPS: dict[str, Callable[..., Any]] = {
    "add": np.add,
    "sub": np.subtract,
    "mul": np.multiply,
    "div": lambda a, b: (
        np.trunc(np.divide(a, b)).astype(np.result_type(a, b))
        if np.issubdtype(np.result_type(a, b), np.integer)
        else np.divide(a, b)
    ),
    "rem": np.fmod,
    "neg": np.negative,
    "max": np.maximum,
    "min": np.minimum,
    "pow": np.power,
    "exp": np.exp,
    "exp2": np.exp2,
    "log": np.log,
    "log1p": np.log1p,
    "expm1": np.expm1,
    "sin": np.sin,
    "cos": np.cos,
    "tanh": np.tanh,
    "sqrt": np.sqrt,
    "rsqrt": lambda a: 1 / np.sqrt(a),
    "abs": np.abs,
    "sign": np.sign,
    "floor": np.floor,
    "ceil": np.ceil,
    "logistic": lambda a: 1 / (1 + np.exp(-a)),
    "lt": np.less,
    "le": np.less_equal,
    "gt": np.greater,
    "ge": np.greater_equal,
    "eq": np.equal,
    "ne": np.not_equal,
    "and": np.logical_and,
    "or": np.logical_or,
    "not": np.logical_not,
    "square": np.square,
    "stop_gradient": lambda a: a,
    "copy": lambda a: a,
    "copy_p": lambda a: a,
}


def _host_eqn(eqn: Any, ins: list) -> list | None:
    name, params = eqn.primitive.name, eqn.params
    if name in ("pjit", "jit", "closed_call", "core_call"):
        inner = params.get("jaxpr") or params.get("call_jaxpr")
        return _host_jaxpr(
            getattr(inner, "jaxpr", inner), getattr(inner, "consts", []), ins
        )
    if name == "integer_pow":
        out = np.power(ins[0], params["y"])
    elif name == "round":
        out = np.round(ins[0])
    elif name == "select_n":
        out = np.choose(np.asarray(ins[0]).astype(np.int64), ins[1:])
    elif name == "clamp":
        out = np.clip(ins[1], ins[0], ins[2])
    elif name in ("broadcast_in_dim", "reshape"):
        shape = params.get("shape") or params.get("new_sizes")
        out = (
            np.broadcast_to(ins[0], shape)
            if name == "broadcast_in_dim"
            else (np.reshape(ins[0], shape))
        )
    elif name == "squeeze":
        out = np.squeeze(ins[0], axis=tuple(params["dimensions"]))
    elif name in ("convert_element_type", "device_put"):
        out = ins[0]
    elif name in _HOST_OPS:
        out = _HOST_OPS[name](*ins)
    else:
        return None
    return [np.asarray(out).astype(eqn.outvars[0].aval.dtype)]


def _host_jaxpr(jaxpr: Any, consts: Any, args: list) -> list | None:
    env: dict = dict(zip(jaxpr.constvars, [np.asarray(c) for c in consts], strict=True))
    env.update(zip(jaxpr.invars, args, strict=True))

    def read(v: Any) -> Any:
        if isinstance(v, jax.extend.core.Literal):
            return np.asarray(v.val)
        return env[v]

    for eqn in jaxpr.eqns:
        with np.errstate(all="ignore"):
            outs = _host_eqn(eqn, [read(v) for v in eqn.invars])
        if outs is None:
            return None
        env.update(zip(eqn.outvars, outs, strict=True))
    return [read(v) for v in jaxpr.outvars]


def host_value(fn: Callable, *args: Any) -> Any:
    """``fn(*args)`` evaluated in NumPy from its jaxpr: no XLA program compiled.

    For the values a boundary check must read, such as a schedule at step 0:
    calling ``schedule(0)`` eagerly compiles a small program per operation the
    first time (seven for ``optax.linear_schedule``). Elementwise primitives
    are evaluated with NumPy; anything else (a gather, a loop) makes it return
    ``None``, and the caller may then evaluate ``fn`` itself.

    Examples:
      >>> import optax
      >>> from gdjax import _validate as V
      >>> float(V.host_value(optax.linear_schedule(-0.1, 0.1, 10), 0))
      -0.1
    """
    if any(is_tracer(a) for a in args):
        return None
    host_args = [np.asarray(a) for a in args]
    try:
        closed = jax.make_jaxpr(fn)(*host_args)
    except Exception:  # noqa: BLE001 - the caller evaluates it itself
        return None
    out = _host_jaxpr(closed.jaxpr, closed.consts, host_args)
    if out is None:
        return None
    return out[0] if len(out) == 1 else tuple(out)
