"""Pure parameter initializers: ``key -> params pytree``.

Contract:

* **Key first, and explicit.** Every function here takes a PRNG key as its first
  argument (a typed ``jax.random.key`` or a raw ``jax.random.PRNGKey``), holds no
  state and reads no global key. The same key gives the same parameters, bit for
  bit.
* **Keys follow the tree, not the order.** :func:`init_tree` and :func:`dense`
  give the leaf at key path ``p`` the key
  ``jax.random.fold_in(key, zlib.crc32(jax.tree_util.keystr(p).encode()))``, so
  adding, removing or reordering a leaf leaves every other leaf unchanged.
  :func:`mlp` gives layer ``i`` the key ``jax.random.split(key, n_layers)[i]``.
* **dtype is a parameter.** float32 by default; bfloat16 works; float64 works in
  64-bit mode. A non-float dtype raises ``TypeError`` and float64 without 64-bit
  mode raises ``ValueError``.
* **Checked before anything compiles.** Keys, dtypes, widths and shapes are
  checked on the host, and each initializer is traced with ``jax.eval_shape``
  before it runs, so a bad argument raises an error that names it (or the key
  path of the offending leaf) and nothing is compiled first.
* **Per-leaf initializers are JAX's own.** ``glorot_normal``, ``he_uniform``,
  ``orthogonal``, ... are re-exported unchanged from ``jax.nn.initializers``:
  each is a factory returning ``init(key, shape, dtype) -> jax.Array``.
"""

from __future__ import annotations

import inspect
import numbers
import zlib
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.nn.initializers import (
    constant,
    glorot_normal,
    glorot_uniform,
    he_normal,
    he_uniform,
    kaiming_normal,
    kaiming_uniform,
    lecun_normal,
    lecun_uniform,
    normal,
    ones,
    orthogonal,
    truncated_normal,
    uniform,
    variance_scaling,
    xavier_normal,
    xavier_uniform,
    zeros,
)
from jax.typing import DTypeLike

from gdjax._typing import Initializer, Key, Params, PyTree
from gdjax._validate import check_float_dtype, check_int, check_key, describe, memo

__all__ = [
    "constant",
    "default_rule",
    "dense",
    "glorot_normal",
    "glorot_uniform",
    "he_normal",
    "he_uniform",
    "init_tree",
    "kaiming_normal",
    "kaiming_uniform",
    "lecun_normal",
    "lecun_uniform",
    "mlp",
    "normal",
    "ones",
    "orthogonal",
    "truncated_normal",
    "uniform",
    "variance_scaling",
    "xavier_normal",
    "xavier_uniform",
    "zeros",
]

Rule = Callable[[str, tuple[int, ...]], Initializer]
"""``rule(path, shape) -> initializer``: picks the initializer for one leaf."""

_lecun_normal = lecun_normal()


# -------------------------------------------------------------------------------- rules


def default_rule(path: str, shape: tuple[int, ...]) -> Initializer:
    r"""The rule :func:`init_tree` uses unless told otherwise.

    Weights (leaves of two or more dimensions) get LeCun normal, biases and
    scalars (leaves of fewer than two dimensions) start at zero:

    .. math::
      W \sim \mathcal{N}_{[-2\sigma, 2\sigma]}\!\left(0, \sigma^2\right),
      \quad \operatorname{Var}(W) = \frac{1}{\text{fan\_in}}, \qquad b = 0.

    A fan-in is not defined for a leaf of fewer than two dimensions, so LeCun
    normal cannot initialize one.

    Args:
      path: the leaf's key path, as ``jax.tree_util.keystr`` writes it
        (unused: the rule looks only at the shape).
      shape: the leaf's shape.

    Returns:
      ``lecun_normal()`` if ``len(shape) >= 2``, else ``zeros``.

    Examples:
      >>> from gdjax import init
      >>> init.default_rule("['b']", (4,)) is init.zeros
      True
    """
    del path
    return _lecun_normal if len(shape) >= 2 else zeros


# ------------------------------------------------------------------------------ helpers


def _leaf_key(key: Key, path: tuple) -> jax.Array:
    """A key for the leaf at ``path`` that depends on the path alone."""
    tag = zlib.crc32(jax.tree_util.keystr(path).encode())
    return jax.random.fold_in(key, tag)


def _check_initializer(init: Any, name: str) -> Initializer:
    if not callable(init):
        raise TypeError(
            f"{name} must be an initializer init(key, shape, dtype) such as "
            f"gdjax.init.lecun_normal(), got {describe(init)}."
        )
    return init


def _is_path_rule(fn: Callable) -> bool:
    """A rule takes exactly two positional arguments; an initializer takes three."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return False
    positional = 0
    for p in sig.parameters.values():
        if p.kind is inspect.Parameter.VAR_POSITIONAL:
            return False
        if p.kind in (
            inspect.Parameter.POSITIONAL_ONLY,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
        ):
            positional += 1
    return positional == 2


def _check_draw(
    init: Initializer, shape: tuple[int, ...], dtype: np.dtype, where: str, name: str
) -> None:
    """Traces ``init`` for one leaf (compiling nothing) and rewords its errors.

    A check that passed is remembered per initializer, shape and dtype (a
    sweep draws every seed's parameters with the same initializers).
    """
    memo(
        ("init-draw", init, shape, np.dtype(dtype).str),
        lambda: _trace_draw(init, shape, dtype, where, name),
    )


def _trace_draw(
    init: Initializer, shape: tuple[int, ...], dtype: np.dtype, where: str, name: str
) -> bool:
    try:
        # The key is made inside the trace so that nothing runs, let alone compiles.
        out = jax.eval_shape(lambda: init(jax.random.key(0), shape, dtype))
    except Exception as e:  # noqa: BLE001 - reworded, chained
        kind = TypeError if isinstance(e, TypeError) else ValueError
        raise kind(
            f"{name} cannot initialize {where} of shape {shape} and dtype {dtype}: "
            f"{str(e).splitlines()[0] if str(e) else type(e).__name__}"
        ) from e
    if getattr(out, "shape", None) != shape or getattr(out, "dtype", None) != dtype:
        raise ValueError(
            f"{name} must return an array of shape {shape} and dtype {dtype} for "
            f"{where}, got {describe(out)}."
        )
    return True


def _is_shape(x: Any) -> bool:
    return type(x) is tuple and all(
        isinstance(d, numbers.Integral) and not isinstance(d, (bool, np.bool_))
        for d in x
    )


def _is_shape_leaf(x: Any) -> bool:
    return isinstance(x, jax.ShapeDtypeStruct) or _is_shape(x)


def _check_widths(widths: Any) -> list[int]:
    if isinstance(widths, np.ndarray):
        widths = widths.tolist() if widths.ndim == 1 else widths
    if not isinstance(widths, Sequence) or isinstance(widths, (str, bytes)):
        raise TypeError(
            "widths must be a sequence of positive integers such as [64, 32, 10], "
            f"got {describe(widths)}."
        )
    if len(widths) < 2:
        raise ValueError(
            "widths must hold at least two sizes (input and output), got "
            f"{list(widths)!r}."
        )
    for i, w in enumerate(widths):
        if (
            isinstance(w, (bool, np.bool_))
            or not isinstance(w, numbers.Integral)
            or w < 1
        ):
            raise ValueError(f"widths[{i}] must be a positive integer, got {w!r}.")
    return [int(w) for w in widths]


def _dense(
    key: Key,
    in_dim: int,
    out_dim: int,
    w_init: Initializer,
    b_init: Initializer,
    dtype: np.dtype,
) -> dict[str, jax.Array]:
    w_path = (jax.tree_util.DictKey("w"),)
    b_path = (jax.tree_util.DictKey("b"),)
    return {
        "w": w_init(_leaf_key(key, w_path), (in_dim, out_dim), dtype),
        "b": b_init(_leaf_key(key, b_path), (out_dim,), dtype),
    }


# ------------------------------------------------------------------------------- public


def dense(
    key: Key,
    in_dim: int,
    out_dim: int,
    *,
    w_init: Initializer = _lecun_normal,
    b_init: Initializer = zeros,
    dtype: DTypeLike = jnp.float32,
) -> dict[str, jax.Array]:
    r"""Parameters of one dense (affine) layer, ``{"w": W, "b": b}``.

    The layer computes :math:`y = x W + b` (see :func:`gdjax.models.linear`) with

    .. math::
      W \sim \texttt{w\_init}, \quad W \in \mathbb{R}^{d_\text{in} \times
      d_\text{out}}, \qquad b \sim \texttt{b\_init}, \quad b \in
      \mathbb{R}^{d_\text{out}}.

    By default :math:`\operatorname{Var}(W) = 1/d_\text{in}` (LeCun normal) and
    :math:`b = 0`. Keys follow the tree paths ``['w']`` and ``['b']``, so
    ``dense(key, i, o)`` equals ``init_tree(key, {"w": (i, o), "b": (o,)})``.

    Args:
      key: a PRNG key.
      in_dim: input size :math:`d_\text{in} \ge 1`.
      out_dim: output size :math:`d_\text{out} \ge 1`.
      w_init: initializer ``init(key, shape, dtype)`` of the weights.
      b_init: initializer of the biases.
      dtype: a floating dtype for both leaves.

    Returns:
      ``{"w": array (in_dim, out_dim), "b": array (out_dim,)}``.

    Examples:
      >>> import jax
      >>> from gdjax import init
      >>> params = init.dense(jax.random.key(0), 3, 2)
      >>> params["w"].shape, params["b"].shape, params["w"].dtype
      ((3, 2), (2,), dtype('float32'))
      >>> params["b"]
      Array([0., 0.], dtype=float32)

    References:
      LeCun, Bottou, Orr & Müller, `Efficient BackProp
      <https://doi.org/10.1007/3-540-49430-8_2>`_, 1998.
    """
    in_dim = check_int(in_dim, "in_dim")
    out_dim = check_int(out_dim, "out_dim")
    dt = check_float_dtype(dtype)
    _check_initializer(w_init, "w_init")
    _check_initializer(b_init, "b_init")
    _check_draw(w_init, (in_dim, out_dim), dt, "params['w']", "w_init")
    _check_draw(b_init, (out_dim,), dt, "params['b']", "b_init")
    key = check_key(key)
    return _dense(key, in_dim, out_dim, w_init, b_init, dt)


def mlp(
    key: Key,
    widths: Sequence[int],
    *,
    w_init: Initializer = _lecun_normal,
    b_init: Initializer = zeros,
    dtype: DTypeLike = jnp.float32,
) -> list[dict[str, jax.Array]]:
    r"""Parameters of a multilayer perceptron: one :func:`dense` layer per pair.

    For widths :math:`(d_0, d_1, \dots, d_L)` layer :math:`\ell = 1, \dots, L`
    holds :math:`W_\ell \in \mathbb{R}^{d_{\ell-1} \times d_\ell}` and
    :math:`b_\ell \in \mathbb{R}^{d_\ell}`, drawn as in :func:`dense` with the key
    ``jax.random.split(key, L)[ℓ - 1]``. Apply it with :func:`gdjax.models.mlp`.

    Args:
      key: a PRNG key.
      widths: layer sizes, input first and output last: a sequence of at least
        two positive integers.
      w_init: initializer ``init(key, shape, dtype)`` of every weight matrix.
      b_init: initializer of every bias.
      dtype: a floating dtype for every leaf.

    Returns:
      A list of ``len(widths) - 1`` dicts ``{"w": (d_in, d_out), "b": (d_out,)}``.

    Examples:
      >>> import jax
      >>> from gdjax import init
      >>> params = init.mlp(jax.random.key(0), [64, 32, 10])
      >>> [(p["w"].shape, p["b"].shape) for p in params]
      [((64, 32), (32,)), ((32, 10), (10,))]
    """
    sizes = _check_widths(widths)
    dt = check_float_dtype(dtype)
    _check_initializer(w_init, "w_init")
    _check_initializer(b_init, "b_init")
    for i, (d_in, d_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        _check_draw(w_init, (d_in, d_out), dt, f"params[{i}]['w']", "w_init")
        _check_draw(b_init, (d_out,), dt, f"params[{i}]['b']", "b_init")
    key = check_key(key)
    keys = jax.random.split(key, len(sizes) - 1)
    return [
        _dense(keys[i], d_in, d_out, w_init, b_init, dt)
        for i, (d_in, d_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True))
    ]


def init_tree(
    key: Key,
    shapes: PyTree,
    rule: Initializer | Rule = default_rule,
    *,
    dtype: DTypeLike = jnp.float32,
) -> Params:
    r"""Initializes every leaf of a pytree of shapes.

    Each leaf of ``shapes`` is a shape (a tuple of non-negative integers; ``()``
    is a scalar) or a ``jax.ShapeDtypeStruct``; the containers around them
    (dicts, lists, tuples, NamedTuples, any registered pytree) are kept. The leaf
    at key path :math:`p` becomes

    .. math::
      \theta_p = \text{init}_p\big(\operatorname{fold\_in}(k,
      \operatorname{crc32}(p)),\ \text{shape}_p,\ \text{dtype}_p\big),

    so each leaf's values depend only on ``key`` and its own path: adding a leaf
    leaves the others unchanged.

    Args:
      key: a PRNG key.
      shapes: a pytree whose leaves are shape tuples or ``jax.ShapeDtypeStruct``.
      rule: either one initializer ``init(key, shape, dtype)`` used for every
        leaf, or a function ``rule(path, shape) -> initializer`` of the leaf's
        key path (a ``jax.tree_util.keystr`` string such as ``"['w']"``) and
        shape. A callable taking exactly two positional arguments is read as a
        rule. The default, :func:`default_rule`, gives leaves of two or more
        dimensions LeCun normal and starts biases and scalars (fewer than two
        dimensions) at zero.
      dtype: the floating dtype of leaves given as plain shapes; a
        ``ShapeDtypeStruct``'s own dtype wins.

    Returns:
      A pytree of the structure of ``shapes`` with a ``jax.Array`` at each leaf.

    Examples:
      >>> import jax
      >>> from gdjax import init
      >>> params = init.init_tree(jax.random.key(0), {"w": (3, 4), "b": (4,)})
      >>> jax.tree.map(lambda a: a.shape, params)
      {'b': (4,), 'w': (3, 4)}
      >>> params["b"]
      Array([0., 0., 0., 0.], dtype=float32)
      >>> def rule(path, shape):
      ...     return init.orthogonal() if "w" in path else init.normal(0.1)
      >>> shapes = [{"w": (4, 4), "b": (4,)}]
      >>> params = init.init_tree(jax.random.key(0), shapes, rule)
      >>> bool(jax.numpy.allclose(params[0]["w"].T @ params[0]["w"],
      ...                         jax.numpy.eye(4), atol=1e-5))
      True
    """
    dt = check_float_dtype(dtype)
    if not callable(rule):
        raise TypeError(
            "rule must be an initializer init(key, shape, dtype) or a function "
            f"rule(path, shape) -> initializer, got {describe(rule)}."
        )
    path_rule = _is_path_rule(rule)
    leaves, treedef = jax.tree_util.tree_flatten_with_path(
        shapes, is_leaf=_is_shape_leaf
    )
    plan = []
    for path, leaf in leaves:
        where = f"shapes{jax.tree_util.keystr(path)}"
        if isinstance(leaf, jax.ShapeDtypeStruct):
            shape = tuple(int(d) for d in leaf.shape)
            leaf_dt = check_float_dtype(leaf.dtype, f"{where}.dtype")
        elif _is_shape(leaf):
            shape = tuple(int(d) for d in leaf)
            leaf_dt = dt
        else:
            raise TypeError(
                f"{where} must be a shape (a tuple of ints such as (3, 4), or () "
                f"for a scalar) or a jax.ShapeDtypeStruct, got {describe(leaf)}."
            )
        if any(d < 0 for d in shape):
            raise ValueError(
                f"{where} must be a shape of non-negative sizes, got {shape}."
            )
        if path_rule:
            name = f"rule({jax.tree_util.keystr(path)!r}, {shape})"
            try:
                init = rule(jax.tree_util.keystr(path), shape)
            except Exception as e:  # noqa: BLE001 - reworded, chained
                raise TypeError(
                    f"{name} raised {type(e).__name__}: {e}. rule takes two "
                    "positional arguments, so it was read as rule(path, shape) -> "
                    "initializer; an initializer must accept (key, shape, dtype)."
                ) from e
            _check_initializer(init, name)
        else:
            init, name = rule, "rule"
        _check_draw(init, shape, leaf_dt, where, name)
        plan.append((path, init, shape, leaf_dt))
    key = check_key(key)
    values = [
        init(_leaf_key(key, path), shape, leaf_dt)
        for path, init, shape, leaf_dt in plan
    ]
    return jax.tree_util.tree_unflatten(treedef, values)
