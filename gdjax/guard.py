r"""The non-finite guard of ``gd.fit`` as an optax transform, for any loop.

:func:`reject_nonfinite` wraps a ``GradientTransformation``. At every update it
checks the incoming gradient, the inner transform's update and the parameters
it would make; if any is not finite (NaN or inf) the step is rejected: the
update returned is :math:`-0` (``p + (-0) == p`` bit for bit, for every ``p``),
the inner state stays as it was, and the wrapper's state records the step and
the leaf. By default the first rejection *halts* the transform (every later
update is rejected too), which is what ``fit``'s NaN stop does to a run: the
parameters and optimizer state are bitwise those of the same run stopped one
step earlier. ``halt=False`` skips each bad step alone and goes on.

Unlike :func:`optax.apply_if_finite`, which checks only the incoming gradient,
skips bad steps silently and, after ``max_consecutive_errors`` of them in a
row, applies the next one (NaN and all), this guard also checks the update and
the new parameters (an overflow of :math:`\theta + u` is caught), never lets a
non-finite value through, and says where it happened.

Numerics. An accepted update is the inner update, bit for bit; but a loop that
adds it to the parameters in the same compiled program may round differently
from the unguarded loop. On CPU, XLA fuses ``p + (-lr * g)`` into one fused
multiply-add; a select between the product and the sum (any guard that returns
a conditional update, ``optax.apply_if_finite`` too) prevents that, so a
guarded run drifts from the unguarded one by float rounding (W5, batch-1
logistic regression: 7e-7 after 1,347 steps). ``fit``'s own guard and
:func:`gdjax.pieces.make_step` select the new *parameters* after the sum, keep
the fusion, and are bitwise the unguarded run while no step is rejected.

Transforms *before* the guard in a chain update their state on a rejected step
too: put every stateful transform inside it,
``optax.chain(optax.clip_by_global_norm(1.0), gd.reject_nonfinite(optax.adam(1e-3)))``.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gdjax import loop
from gdjax._typing import Params, PyTree
from gdjax.errors import GdjaxTypeError
from gdjax.stopping import Status


class RejectNonfiniteState(NamedTuple):
    """State of :func:`reject_nonfinite`.

    Attributes:
      inner_state: the wrapped transform's state (that of the last applied
        step).
      count: updates seen (int32).
      bad_steps: updates rejected (int32): non-finite ones and, once halted,
        every later one. Steps applied = ``count - bad_steps``.
      first_bad_step: the number of the first rejected update, counting from 1
        (int32; 0 if none). With ``k`` steps applied before it, it is
        ``k + 1``, the step ``fit`` names in its reason.
      first_bad_leaf: index, in ``params`` leaf order, of the first
        non-finite leaf of that update's gradient (or, if the gradient was
        finite, of its new parameters); -1 if none or if only ``value`` was bad.
      first_bad_status: why that update was rejected, a
        :class:`~gdjax.Status` code (int32): ``NONFINITE_LOSS`` (the ``value``
        extra argument), ``NONFINITE_GRAD`` (the incoming gradient) or
        ``NONFINITE_PARAMS`` (the update or the new parameters); ``RUNNING``
        (0) if none.
    """

    inner_state: PyTree
    count: jax.Array
    bad_steps: jax.Array
    first_bad_step: jax.Array
    first_bad_leaf: jax.Array
    first_bad_status: jax.Array


def _flags(tree: PyTree) -> jax.Array:
    """:func:`gdjax.loop.leaf_flags` (``fit``'s test), one True for an empty tree."""
    if not jax.tree.leaves(tree):
        return jnp.ones((1,), bool)
    return loop.leaf_flags(tree)


def reject_nonfinite(
    inner: optax.GradientTransformation, *, halt: bool = True
) -> optax.GradientTransformationExtraArgs:
    r"""Wrap ``inner`` so that a step whose gradient, update or new parameters
    are not finite is rejected, counted and located.

    .. math:: (u, s') = \mathrm{inner}(g, s, \theta);\quad
       \text{ok} = \mathrm{finite}(g) \wedge \mathrm{finite}(u) \wedge
       \mathrm{finite}(\theta + u) \;[\wedge\ \mathrm{finite}(\text{value})];
       \quad (u, s') \leftarrow (u, s') \text{ if ok else } (-0, s)

    Without ``params`` (``update(g, state)``) the update itself is checked
    instead of the new parameters. An extra argument ``value`` (the loss, as
    ``optax.contrib.reduce_on_plateau`` takes it) is checked too and forwarded
    to ``inner`` with the others.

    Args:
      inner: the transform to guard (an optax ``GradientTransformation``;
        chain the stateful ones inside).
      halt: if True (default), the first rejected update halts the transform:
        every later update is rejected and the inner state stays, as ``fit``'s
        NaN stop freezes a run. If False, each non-finite update is skipped on
        its own and later finite ones apply.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` whose state is a
      :class:`RejectNonfiniteState`; ``init`` and ``update`` return the same
      structure, dtypes and weak types (int32 counters), so the state is a
      ``lax.scan`` carry and maps under ``vmap``.

    Compared with ``optax.apply_if_finite(inner, max_consecutive_errors)``:
    that wrapper checks only the incoming gradient, so an update that
    overflows the parameters goes through; after ``max_consecutive_errors``
    bad steps in a row it applies the next one, NaN included; its state says
    how many steps were bad but not which or where. This one checks the
    gradient, the update and the new parameters, never applies a non-finite
    step, and keeps the first bad step, its leaf and its reason.

    Examples:
      >>> import jax.numpy as jnp, optax, gdjax as gd
      >>> tx = optax.chain(optax.clip_by_global_norm(1.0),
      ...                  gd.guard.reject_nonfinite(optax.sgd(0.1, momentum=0.9)))
      >>> params = {"a": jnp.ones(2), "b": jnp.ones(3)}
      >>> state = tx.init(params)
      >>> grads = {"a": jnp.ones(2), "b": jnp.array([1.0, jnp.nan, 1.0])}
      >>> updates, state = tx.update(grads, state, params)
      >>> guard_state = state[1]
      >>> int(guard_state.bad_steps), int(guard_state.first_bad_step)
      (1, 1)
      >>> gd.Status(int(guard_state.first_bad_status)).name
      'NONFINITE_GRAD'
      >>> optax.apply_updates(params, updates)["b"].tolist()
      [1.0, 1.0, 1.0]

    References:
      optax, `apply_if_finite
      <https://optax.readthedocs.io/en/latest/api/transformations.html>`_.
    """
    if not (
        callable(getattr(inner, "init", None))
        and callable(getattr(inner, "update", None))
    ):
        raise GdjaxTypeError(
            "inner must be an optax GradientTransformation (optax.sgd(...), "
            f"optax.chain(...)), got {type(inner).__name__}."
        )
    if not isinstance(halt, (bool, np.bool_)):
        raise GdjaxTypeError(f"halt must be True or False, got {halt!r}.")
    halt = bool(halt)
    inner = optax.with_extra_args_support(inner)

    init_fn = functools.partial(_reject_init, inner)
    update_fn = functools.partial(_reject_update, inner, halt)
    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _reject_init(
    inner: optax.GradientTransformationExtraArgs, params: Params
) -> RejectNonfiniteState:
    """:func:`reject_nonfinite`'s ``init_fn``, ``inner`` bound there."""
    i32 = jnp.int32
    return RejectNonfiniteState(
        inner_state=inner.init(params),
        count=jnp.zeros((), i32),
        bad_steps=jnp.zeros((), i32),
        first_bad_step=jnp.zeros((), i32),
        first_bad_leaf=jnp.full((), -1, i32),
        first_bad_status=jnp.asarray(Status.RUNNING, i32),
    )


def _reject_update(
    inner: optax.GradientTransformationExtraArgs,
    halt: bool,
    updates: Any,
    state: RejectNonfiniteState,
    params: Params | None = None,
    **extra_args: Any,
) -> tuple[Any, RejectNonfiniteState]:
    """:func:`reject_nonfinite`'s ``update_fn``, ``inner`` and ``halt`` bound there."""
    grads = updates
    new_updates, new_inner = inner.update(
        grads, state.inner_state, params, **extra_args
    )
    ok, why, leaf = _verdict(extra_args.get("value"), grads, new_updates, params)
    apply = ok
    if halt:
        apply = apply & (state.bad_steps == 0)
    first = (state.first_bad_step == 0) & ~apply
    count = state.count + jnp.int32(1)
    kept = jax.tree.map(lambda u: jnp.full_like(u, -0.0), new_updates)
    out_updates = jax.tree.map(lambda a, b: jnp.where(apply, a, b), new_updates, kept)
    out_inner = jax.tree.map(
        lambda a, b: jnp.where(apply, a, b), new_inner, state.inner_state
    )
    return out_updates, RejectNonfiniteState(
        inner_state=out_inner,
        count=count,
        bad_steps=state.bad_steps + (~apply).astype(jnp.int32),
        first_bad_step=jnp.where(first, count, state.first_bad_step),
        first_bad_leaf=jnp.where(first, leaf, state.first_bad_leaf),
        first_bad_status=jnp.where(first, why, state.first_bad_status),
    )


def _verdict(
    value: Any, grads: Any, updates: Any, params: Params | None
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(ok, why, leaf)`` of one step: all finite, else the first failing
    ``Status`` (loss, gradient, new parameters or, without ``params``, the
    update) and the first bad leaf (-1: none, or the loss)."""
    value_ok = jnp.bool_(True) if value is None else jnp.all(_flags(value))
    if params is None:
        checked = updates
    else:
        checked = optax.apply_updates(params, updates)
    # For finite theta, theta + u is finite only if u is: one test of the
    # new parameters covers the update (and catches an overflow of the sum).
    grad_flags, out_flags = _flags(grads), _flags(checked)
    grad_ok, out_ok = jnp.all(grad_flags), jnp.all(out_flags)
    ok = value_ok & grad_ok & out_ok
    why = jnp.where(
        ~value_ok,
        Status.NONFINITE_LOSS,
        jnp.where(~grad_ok, Status.NONFINITE_GRAD, Status.NONFINITE_PARAMS),
    ).astype(jnp.int32)
    # Selects, not a lax.cond: under vmap a cond becomes a select anyway,
    # and argmin over one flag per leaf costs next to nothing.
    leaf = jnp.where(
        ~grad_ok,
        jnp.argmin(grad_flags),
        jnp.where(~out_ok, jnp.argmin(out_flags), -1),
    )
    leaf = jnp.where(value_ok, leaf, -1).astype(jnp.int32)
    return ok, why, leaf


def bad_leaf_path(params: Params, state: RejectNonfiniteState) -> str | None:
    """The path of the first bad leaf, e.g. ``"params['w']"`` (None if none).

    Args:
      params: the parameters (for their tree structure).
      state: a :class:`RejectNonfiniteState` (outside ``jit``: a number is read).

    Examples:
      >>> import jax.numpy as jnp, optax, gdjax as gd
      >>> tx = gd.guard.reject_nonfinite(optax.sgd(1.0))
      >>> p = {"a": jnp.ones(1), "b": jnp.ones(1)}
      >>> _, s = tx.update({"a": jnp.ones(1), "b": jnp.full(1, jnp.inf)},
      ...                  tx.init(p), p)
      >>> gd.guard.bad_leaf_path(p, s)
      "params['b']"
    """
    leaf = int(state.first_bad_leaf)
    if leaf < 0:
        return None
    paths = jax.tree_util.tree_leaves_with_path(params)
    return f"params{jax.tree_util.keystr(paths[leaf][0])}"


__all__ = ["RejectNonfiniteState", "bad_leaf_path", "reject_nonfinite"]
