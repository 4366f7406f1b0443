"""Checks at gdjax's public boundary, run on the host before anything compiles.

Inside ``jit`` an out-of-range gather clamps, a NaN learning rate is accepted and
empty data gives an exactly zero gradient: nothing in the compiled program can
tell the user. So every public entry point checks its arguments here first and
raises an error that names the argument (or the pytree key path), what was
expected and what came. Nothing here compiles: shapes come from
``jax.eval_shape`` / ``jax.make_jaxpr``, values from ``numpy`` on the host.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np

from gdjax._typing import PyTree


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


def check_key(key: Any, name: str = "key") -> jax.Array:
    """A single PRNG key: typed (``jax.random.key``) or raw uint32[2] (``PRNGKey``)."""
    if isinstance(key, (jax.Array, np.ndarray)):
        if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
            if key.shape != ():
                raise ValueError(
                    f"{name} must be a single PRNG key, got a batch of keys of shape "
                    f"{key.shape}; pass one key (sweeps split their own)."
                )
            return key
        if key.dtype == np.uint32 and key.shape == (2,):
            return jax.random.wrap_key_data(jnp.asarray(key))
    raise TypeError(
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
        raise TypeError(f"{name} must be a number, got {describe(value)}.")
    try:
        arr = np.asarray(value)
    except Exception as e:  # noqa: BLE001 - reworded below
        raise TypeError(f"{name} must be a number, got {describe(value)}.") from e
    if not (np.issubdtype(arr.dtype, np.number)):
        raise TypeError(f"{name} must be a number, got {describe(value)}.")
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
        raise ValueError(f"{name} must be finite, got {_show(arr)}.")
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
        raise ValueError(f"{name} must be in {interval}, got {_show(arr, bad)}.")
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
        raise TypeError(f"{name} must be an integer, got {describe(value)}.")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}.")
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
        raise TypeError(f"{name} must be a floating dtype, got {dtype!r}.") from e
    if not jnp.issubdtype(dt, jnp.floating):
        raise TypeError(
            f"{name} must be a floating dtype (float32, float64, bfloat16, ...), "
            f"got {dt}."
        )
    if dt == np.float64 and not jax.config.read("jax_enable_x64"):
        raise ValueError(
            f"{name}=float64 needs 64-bit mode: call "
            "jax.config.update('jax_enable_x64', True) or use "
            "`with jax.enable_x64(True):`; without it JAX silently gives float32."
        )
    return dt


def check_params(params: PyTree, name: str = "params") -> PyTree:
    """A pytree with at least one leaf, every leaf a floating-point array."""
    leaves = jax.tree_util.tree_leaves_with_path(params)
    if not leaves:
        raise ValueError(
            f"{name} must be a pytree with at least one array leaf, got "
            f"{describe(params)} with no leaves."
        )
    for path, leaf in leaves:
        where = f"{name}{jax.tree_util.keystr(path)}"
        if not hasattr(leaf, "dtype") or not hasattr(leaf, "shape"):
            raise TypeError(
                f"{where} must be an array, got {describe(leaf)}; wrap Python numbers "
                "with jnp.asarray(x, jnp.float32)."
            )
        if not jnp.issubdtype(leaf.dtype, jnp.floating):
            raise TypeError(
                f"{where} must have a floating dtype to be differentiated, got "
                f"{leaf.dtype}; cast it with .astype(jnp.float32)."
            )
        if leaf.dtype == np.float64 and not jax.config.jax_enable_x64:
            raise ValueError(
                f"{where} is float64 but 64-bit mode is off, so JAX would silently "
                "train it in float32: call jax.config.update('jax_enable_x64', True) "
                "or use `with jax.enable_x64(True):`, or cast it with "
                ".astype(np.float32)."
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
        raise ValueError(
            f"{other_name} must have the tree structure of {ref_name}: "
            + "; ".join(detail)
            + "."
        )
    for path, leaf in ref.items():
        o = oth[path]
        if tuple(np.shape(o)) != tuple(np.shape(leaf)):
            raise ValueError(
                f"{other_name}{jax.tree_util.keystr(path)} must have shape "
                f"{tuple(np.shape(leaf))} like {ref_name}, got {tuple(np.shape(o))}."
            )
        want, got = _dtype_name(leaf), _dtype_name(o)
        if dtypes and want != got:
            raise ValueError(
                f"{other_name}{jax.tree_util.keystr(path)} must have dtype {want} "
                f"like {ref_name}, got {got}."
            )


# ----------------------------------------------------------------------------- data


def check_data(data: PyTree, name: str = "data", *, check_finite: bool = True) -> int:
    """Arrays with a shared, non-empty leading example axis; returns n."""
    leaves = jax.tree_util.tree_leaves_with_path(data)
    if not leaves:
        raise ValueError(f"{name} must hold at least one array, got {describe(data)}.")
    n = None
    first = None
    for path, leaf in leaves:
        where = f"{name}{jax.tree_util.keystr(path)}"
        if not hasattr(leaf, "shape") or not hasattr(leaf, "dtype"):
            raise TypeError(
                f"{where} must be an array with a leading example axis, got "
                f"{describe(leaf)}."
            )
        if not (jnp.issubdtype(leaf.dtype, jnp.number) or leaf.dtype == np.bool_):
            raise TypeError(f"{where} must be numeric, got dtype {leaf.dtype}.")
        if leaf.ndim == 0:
            raise ValueError(
                f"{where} must have a leading example axis, got a scalar; "
                "reshape it to (n, ...)."
            )
        if n is None:
            n, first = leaf.shape[0], where
        elif leaf.shape[0] != n:
            raise ValueError(
                f"every leaf of {name} must have the same number of examples: "
                f"{first} has {n}, {where} has {leaf.shape[0]}."
            )
        if check_finite and jnp.issubdtype(leaf.dtype, jnp.inexact):
            host = np.asarray(leaf)
            if not np.all(np.isfinite(host)):
                bad = int(
                    np.argmax(~np.isfinite(host).reshape(host.shape[0], -1).all(1))
                )
                raise ValueError(
                    f"{where} contains NaN or inf (first at example {bad}); clean it "
                    "or pass check_finite=False."
                )
    if n == 0:
        raise ValueError(f"{name} is empty: its leading example axis has length 0.")
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


def check_loss(
    loss: Callable,
    params: PyTree,
    batch: PyTree,
    *,
    has_aux: bool = False,
    name: str = "loss",
    aux_hint: str = "pass has_aux=True",
) -> Any:
    """The loss traces to a float scalar that depends on ``params``.

    Uses ``jax.make_jaxpr`` (which compiles nothing) and rewords JAX's errors.
    Returns the abstract aux output (``None`` without ``has_aux``).
    """
    if not callable(loss):
        raise TypeError(
            f"{name} must be callable as loss(params, batch), got {describe(loss)}."
        )
    try:
        closed, out_shape = jax.make_jaxpr(loss, return_shape=True)(params, batch)
    except jax.errors.ConcretizationTypeError as e:
        raise TypeError(
            f"{name} uses Python control flow (if/while/bool/int) on a traced value, "
            "which cannot be compiled; use jnp.where or jax.lax.cond instead. "
            f"JAX said: {str(e).splitlines()[0]}"
        ) from e
    except (
        jax.errors.TracerBoolConversionError
    ) as e:  # pragma: no cover - subclass above
        raise TypeError(
            f"{name} uses Python control flow on a traced value; use jnp.where or "
            "jax.lax.cond instead."
        ) from e
    except (TypeError, ValueError) as e:
        kind = TypeError if isinstance(e, TypeError) else ValueError
        raise kind(
            f"{name}(params, batch) fails to trace on params {shapes(params)} and "
            f"batch {shapes(batch)}: {str(e).splitlines()[0]}"
        ) from e
    aux = None
    if has_aux:
        if not (isinstance(out_shape, (tuple, list)) and len(out_shape) == 2):
            raise TypeError(
                f"{name} was declared has_aux=True, so it must return (value, aux), "
                f"got {describe(out_shape)}."
            )
        out_shape, aux = out_shape
    elif isinstance(out_shape, (tuple, list)):
        raise TypeError(
            f"{name} must return a scalar, got a {type(out_shape).__name__} of "
            f"{len(out_shape)} items; if it returns (value, aux), {aux_hint}."
        )
    if not hasattr(out_shape, "shape") or out_shape.shape != ():
        shape = getattr(out_shape, "shape", None)
        raise TypeError(
            f"{name} must return a scalar, got shape {shape}; reduce it with "
            "jnp.mean or jnp.sum."
        )
    if not jnp.issubdtype(out_shape.dtype, jnp.floating):
        raise TypeError(
            f"{name} must return a floating-point scalar, got dtype {out_shape.dtype}."
        )
    n_params = len(jax.tree_util.tree_leaves(params))
    param_vars = closed.jaxpr.invars[:n_params]
    if not (set(param_vars) & _used_vars(closed.jaxpr)):
        raise ValueError(
            f"{name} does not depend on params: its gradient would be identically "
            "zero. Check that it reads params rather than a closed-over copy."
        )
    return aux
