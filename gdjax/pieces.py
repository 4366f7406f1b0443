r"""Your own loop, gdjax's pieces: the building blocks of ``fit`` as pure functions.

Research code often writes its own training loop (two models, an inner loop, a
custom schedule of evaluations). These are the pieces ``gd.fit`` runs inside its
compiled program, callable on their own, under ``jit``, ``lax.scan`` and
``vmap``:

* :func:`batches` -- the indices (and padding weights) of one epoch or one step
  of a regime, from ``(regime, n, key, epoch[, step])``: the order ``fit``
  uses, drawn on the device;
* :func:`gather` -- those examples of every leaf of the data;
* :func:`make_step` -- ``Step(init, step)``: ``step(state, batch) -> (state,
  info)`` is ``fit``'s training step (the same function,
  :func:`gdjax.loop.train_step`), with its NaN/inf guard;
* :func:`gdjax.reject_nonfinite` (:mod:`gdjax.guard`) -- the guard as an optax
  transform, for loops that keep their own step;
* the stopping rules of :mod:`gdjax.stopping` -- pure predicates on running
  values or a history.

Contract. Epochs count from 1, as everywhere in gdjax (``result.epoch``,
``history.epoch``, ``until``): epoch :math:`e` draws its order from
``fold_in(key, e - 1)``. ``step`` is the position of a batch in its epoch,
counting from 0 (a row of the epoch's ``(steps, batch)`` index matrix). A
hand-written loop over these pieces takes exactly ``fit``'s steps:

.. code-block:: python

    step = gd.make_step(loss, transform)
    state = step.init(params, key)                  # key: for a keyed loss
    for e in range(1, epochs + 1):                  # or a lax.scan
        idx, w = gd.batches(regime, n, key, e)
        for i in range(len(idx)):                   # or a lax.scan
            state, info = step.step(state, gd.gather(data, idx[i]),
                                    None if w is None else w[i])

and ends on ``fit``'s parameters and optimizer state, bitwise (float32, CPU;
``tests/test_pieces.py``). ``examples/own_loop.py`` writes it as one jitted
scan and then trains two models in lockstep on the same batches.
"""

from __future__ import annotations

import functools
import numbers
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gdjax import batching, loop, loss_forms, stopping
from gdjax._typing import Batch, Key, LossFn, Params, PyTree
from gdjax.errors import GdjaxTypeError, GdjaxValueError
from gdjax.loss_forms import LossSpec
from gdjax.stopping import Status

# ------------------------------------------------------------------------ batches


class Batches(NamedTuple):
    """The examples of one epoch or one step: what :func:`batches` returns.

    Attributes:
      indices: int32 example indices, ``(steps, batch)`` for an epoch,
        ``(batch,)`` for a step (full batch: ``(1, n)`` and ``(n,)``).
      weights: float32 weights of the same shape, 0 on the padding of a short
        last batch (``last_batch="pad"``), or None when no step is padded.
    """

    indices: jax.Array
    weights: jax.Array | None


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(
        value, (bool, np.bool_)
    )


def _concrete_int(value: Any) -> int | None:
    """``value`` as a Python int if it is a concrete integer (not traced)."""
    if _is_int(value):
        return int(value)
    if isinstance(value, (np.ndarray, jax.Array)) and not isinstance(
        value, jax.core.Tracer
    ):
        if np.ndim(value) == 0 and np.issubdtype(np.asarray(value).dtype, np.integer):
            return int(value)
    return None


def epoch_plan(regime: batching.Regime, n: int) -> batching.Plan:
    """The layout of an epoch of ``regime`` on ``n`` examples (host side).

    Raises:
      GdjaxTypeError: ``regime`` is not a regime or ``n`` not an integer.
      GdjaxValueError: a batch larger than ``n``, or no step per epoch.

    Examples:
      >>> import gdjax as gd
      >>> gd.pieces.epoch_plan(gd.minibatch(32), 100)
      Plan(n=100, batch_size=32, steps=4, masked=True)
    """
    if not isinstance(regime, batching.Regime):
        raise GdjaxTypeError(
            "regime must be gd.full_batch(), gd.stochastic() or gd.minibatch(B), "
            f"got {type(regime).__name__}."
        )
    if not _is_int(n) or n < 1:
        raise GdjaxValueError(
            f"n must be a positive Python integer (the number of examples), got {n!r}."
        )
    try:
        plan = batching.plan(regime, int(n))
    except ValueError as e:
        raise GdjaxValueError(str(e)) from None
    if plan.steps < 1:
        raise GdjaxValueError(
            f"regime {regime.describe()} leaves zero steps per epoch for n={n} "
            "examples; use a smaller batch_size."
        )
    return plan


def batches(
    regime: batching.Regime,
    n: int,
    key: Key,
    epoch: jax.typing.ArrayLike,
    step: jax.typing.ArrayLike | None = None,
) -> Batches:
    r"""The example indices of epoch ``epoch`` (or of one of its steps), as ``fit``
    draws them.

    Epoch :math:`e` of a run with key :math:`k` takes its order from
    ``fold_in(k, e - 1)``: it depends on nothing but the key and :math:`e`.
    Mini-batches are consecutive slices of that order; a short last batch is
    padded with weight-0 copies of example 0 (``last_batch="pad"``) or dropped;
    stochastic descent with replacement draws each step's example uniformly.

    Pure: ``key``, ``epoch`` and ``step`` may be traced, so it runs inside
    ``jit`` and ``lax.scan`` and maps under ``vmap`` (over keys, epochs or
    steps); ``regime`` and ``n`` are static.

    Args:
      regime: :func:`gdjax.full_batch`, :func:`gdjax.stochastic` or
        :func:`gdjax.minibatch`.
      n: the number of examples (a Python int).
      key: the run's PRNG key (``fit``'s ``key``).
      epoch: the epoch, counting from 1.
      step: None for the whole epoch, or the position of one batch in it,
        counting from 0 (row ``step`` of the epoch's indices). One step of a
        hash-shuffled regime costs O(batch), not O(n).

    Returns:
      :class:`Batches` ``(indices, weights)``: ``(steps, batch)`` for an epoch,
      ``(batch,)`` for one step; ``weights`` is None when no step is padded.

    Examples:
      >>> import jax, gdjax as gd
      >>> idx, w = gd.pieces.batches(gd.minibatch(4, shuffle=False), 10,
      ...                            jax.random.key(0), epoch=1)
      >>> idx.tolist()
      [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 0, 0]]
      >>> w[2].tolist()
      [1.0, 1.0, 0.0, 0.0]
      >>> gd.pieces.batches(gd.minibatch(4, shuffle=False), 10,
      ...                   jax.random.key(0), 1, step=1).indices.tolist()
      [4, 5, 6, 7]
    """
    plan = epoch_plan(regime, n)
    e = _concrete_int(epoch)
    if e is not None and e < 1:
        raise GdjaxValueError(f"epoch counts from 1, got {e}.")
    e0 = jnp.asarray(epoch, jnp.int32) - 1
    if step is None:
        idx, w = batching.epoch_batches(regime, plan, key, e0)
        return Batches(idx, w)
    s = _concrete_int(step)
    if s is not None and not 0 <= s < plan.steps:
        raise GdjaxValueError(
            f"step must be in [0, {plan.steps - 1}] ({plan.steps} steps an epoch of "
            f"{regime.describe()} on n={n}), got {s}; inside jit it would be clamped."
        )
    idx, w = batching.step_batch(regime, plan, key, e0, step)
    return Batches(idx, w)


gather = batching.gather
"""``gather(data, indices)``: the examples ``indices`` of every leaf of ``data``
(a pytree with a leading example axis), along axis 0.

An index out of range is clamped into ``[0, n)``, inside ``jit`` or not: take
the indices from :func:`batches`, which never makes one.
"""


# --------------------------------------------------------------------------- step


class StepState(NamedTuple):
    """What :func:`make_step`'s ``step`` carries from step to step.

    Attributes:
      params: the parameters (the last finite ones after a guard stop).
      opt_state: the transform's state (likewise).
      steps: steps applied (int32).
      status: :class:`~gdjax.Status` code (int32): ``RUNNING``, or the
        ``NONFINITE_*`` reason the guard stopped on. A stopped state is
        frozen: later steps apply nothing, as in ``fit``.
      bad_leaf: index, in ``params`` leaf order, of the first non-finite leaf
        at a guard stop (-1 if none, or if the loss itself was non-finite).
      loss_state: the state of a loss declared with ``gd.stateful`` (kept
        with the parameters on a rejected step); ``()`` for any other loss.
      key: the run's key, for a loss declared with a key (``gd.keyed``,
        ``gd.stateful(..., takes_key=True)``): step ``t`` (steps applied so
        far) receives ``gd.step_key(key, t)``, as in ``fit``; else None.
    """

    params: Params
    opt_state: PyTree
    steps: jax.Array
    status: jax.Array
    bad_leaf: jax.Array
    loss_state: PyTree = ()
    key: Key | None = None


class StepInfo(NamedTuple):
    """What one step reports.

    Attributes:
      loss: the batch loss at the parameters entering the step (0 when the
        step was not applied: stopped, or rejected by the guard).
      grad_norm: the global norm of the step's gradient (0 when not applied).
      status: the state's status after the step (int32).
      applied: whether the step changed the parameters (bool).

    Summing ``loss`` over an epoch's steps in order and dividing by the number
    applied gives ``fit``'s history row (``history.loss``), bitwise.
    """

    loss: jax.Array
    grad_norm: jax.Array
    status: jax.Array
    applied: jax.Array


class Step(NamedTuple):
    """A training step and its initial state: what :func:`make_step` returns.

    Attributes:
      init: ``init(params, key=None) -> StepState`` (``key``: the run's key,
        needed by a loss declared with a key).
      step: ``step(state, batch, weights=None) -> (state, StepInfo)``.
    """

    init: Callable[..., StepState]
    step: Callable[..., tuple[StepState, StepInfo]]


def make_step(
    loss: LossFn, transform: optax.GradientTransformation, *, guard: bool = True
) -> Step:
    r"""``fit``'s training step as a pure function, for a loop of your own.

    .. math:: (u_t, s_{t+1}) = \mathrm{update}(\nabla L_{B_t}(\theta_t), s_t,
       \theta_t), \qquad \theta_{t+1} = \theta_t + u_t

    ``step`` is :func:`gdjax.loop.train_step`, the function ``fit`` scans over
    each epoch's batches. With ``guard=True`` a step whose loss, gradient or
    new parameters are not finite is rejected: the state keeps its
    parameters and optimizer state, its ``status`` says why
    (``Status.NONFINITE_LOSS``, ``NONFINITE_GRAD``, ``NONFINITE_PARAMS``) and
    it stays frozen, as ``fit`` stops. ``init`` and ``step`` are pure: ``jit``
    them, ``lax.scan`` the step, ``vmap`` both over members.

    Args:
      loss: ``loss(params, batch) -> scalar``; a loss that declares
        per-example weights (``gd.make_loss``, ``gd.with_example_weights``)
        also takes the ``weights`` of a padded batch; a loss declared with a
        key or a state (``gd.keyed``, ``gd.stateful``) gets them as in
        ``fit``: its state is carried in ``StepState.loss_state``, its key
        derived from the key given to ``init``.
      transform: an optax ``GradientTransformation``.
      guard: reject non-finite steps and stop (``fit``'s ``guard``).

    Returns:
      :class:`Step` ``(init, step)``: ``init(params, key=None) -> StepState``;
      ``step(state, batch, weights=None) -> (StepState, StepInfo)``, where
      ``batch`` is the batch itself (``gd.pieces.gather(data, indices)``) and
      ``weights`` the padding weights :func:`batches` gave (None if none).

    Examples:
      >>> import jax, jax.numpy as jnp, optax, gdjax as gd
      >>> loss = lambda p, b: jnp.mean((b[0] @ p - b[1]) ** 2)
      >>> step = gd.pieces.make_step(loss, optax.sgd(0.1))
      >>> state = step.init(jnp.zeros(2))
      >>> batch = (jnp.eye(2), jnp.array([1.0, -1.0]))
      >>> state, info = jax.jit(step.step)(state, batch)
      >>> state.params.tolist(), float(info.loss), int(state.steps)
      ([0.10000000149011612, -0.10000000149011612], 1.0, 1)
    """
    if not callable(loss):
        raise GdjaxTypeError(f"loss must be callable, got {type(loss).__name__}.")
    if not (
        callable(getattr(transform, "init", None))
        and callable(getattr(transform, "update", None))
    ):
        raise GdjaxTypeError(
            "transform must be an optax GradientTransformation (gd.sgd(...), "
            f"optax.chain(...)), got {type(transform).__name__}."
        )
    if not isinstance(guard, (bool, np.bool_)):
        raise GdjaxTypeError(f"guard must be True or False, got {guard!r}.")
    loss_static, loss_leaves = loop.split_callable(loss)
    criteria = stopping.make_criteria()  # no step budget: a loop of your own

    declared = isinstance(loss, LossSpec)
    takes_key = declared and loss.takes_key
    init = functools.partial(_step_init, loss, transform, takes_key)
    step = functools.partial(
        _step_step, loss, transform, bool(guard), loss_static, loss_leaves, criteria
    )
    return Step(init, step)


def _step_init(
    loss: LossFn,
    transform: optax.GradientTransformation,
    takes_key: bool,
    params: Params,
    key: Key | None = None,
) -> StepState:
    """:func:`make_step`'s ``init``, its first three arguments bound there."""
    if takes_key and key is None:
        raise GdjaxValueError(
            "this loss is declared with a key: pass the run's key, "
            "step.init(params, key), as fit takes key=."
        )
    i32 = jnp.int32
    return StepState(
        params=params,
        opt_state=transform.init(params),
        steps=jnp.zeros((), i32),
        status=jnp.asarray(Status.RUNNING, i32),
        bad_leaf=jnp.asarray(-1, i32),
        loss_state=_initial_loss_state(loss, params),
        key=key if takes_key else None,
    )


def _step_step(
    loss: LossFn,
    transform: optax.GradientTransformation,
    guard: bool,
    loss_static: Any,
    loss_leaves: Any,
    criteria: Any,
    state: StepState,
    batch: Batch,
    weights: jax.Array | None = None,
) -> tuple[StepState, StepInfo]:
    """:func:`make_step`'s ``step``, its first six arguments bound there:
    one :func:`gdjax.loop.train_step` on the whole ``batch``."""
    masked = weights is not None
    if masked and not getattr(loss, "accepts_weights", False):
        raise GdjaxValueError(
            "step got weights (a padded batch), but loss does not take "
            "per-example weights: wrap it with gd.with_example_weights(loss), "
            "build it with gd.make_loss, or use last_batch='drop'."
        )
    size = jax.tree.leaves(batch)[0].shape[0]
    program = _one_batch_program(loss_static, transform, guard, size, masked)
    inputs = loop.Inputs(
        data=batch,
        val_data=None,
        key=state.key,
        criteria=criteria,
        loss_leaves=loss_leaves,
    )
    zero = jnp.zeros((), _loss_dtype(loss, state, batch, weights))
    carry = loop.StepCarry(
        params=state.params,
        opt_state=state.opt_state,
        steps=state.steps,
        status=state.status,
        bad_leaf=state.bad_leaf,
        loss_sum=zero,
        grad_norm_sum=zero,
        count=jnp.zeros((), jnp.int32),
        loss_state=state.loss_state,
    )
    w = jnp.ones((size,), jnp.float32) if weights is None else weights
    out, _ = loop.train_step(program, inputs, carry, (None, w))
    new = StepState(
        out.params,
        out.opt_state,
        out.steps,
        out.status,
        out.bad_leaf,
        out.loss_state,
        state.key,
    )
    info = StepInfo(
        loss=out.loss_sum,
        grad_norm=out.grad_norm_sum,
        status=out.status,
        applied=out.count > 0,
    )
    return new, info


def _one_batch_program(
    loss_static: Any,
    transform: optax.GradientTransformation,
    guard: bool,
    size: int,
    masked: bool,
) -> loop.Program:
    """The static program of one step on a gathered batch of ``size``."""
    return loop.Program(
        loss=loss_static,
        update=transform.update,
        # The batch arrives gathered: train_step uses it whole.
        regime=batching.full_batch(),
        plan=batching.Plan(size, size, 1, masked),
        epochs=1,
        stride=1,
        guard=guard,
        until=None,
        metric=None,
        monitors=(),
        monitor_every=1,
        has_val=False,
    )


def _loss_dtype(loss: Any, state: StepState, batch: Batch, weights: Any) -> Any:
    """The dtype of the loss's value (abstract: traces, computes nothing)."""
    if isinstance(loss, LossSpec):
        key = None
        if loss.takes_key:
            key = jax.random.key(0) if state.key is None else state.key
        value = jax.eval_shape(
            lambda p, s, b, k: loss.train_value(p, s, b, k)[0],
            state.params,
            state.loss_state,
            batch,
            key,
        )
    elif weights is not None:
        value = jax.eval_shape(loss, state.params, batch, weights)
    else:
        value = jax.eval_shape(loss, state.params, batch)
    return value.dtype


def _initial_loss_state(loss: Any, params: Params) -> PyTree:
    """``fit``'s initial loss state; inside a trace (``init`` under ``jit`` or
    ``vmap``) a ``state(params)`` is built from the traced params."""
    if not (isinstance(loss, LossSpec) and loss.has_state):
        return ()
    if any(isinstance(p, jax.core.Tracer) for p in jax.tree.leaves(params)):
        state = loss.state(params) if callable(loss.state) else loss.state
        return jax.tree.map(
            lambda x: (
                jnp.asarray(np.asarray(x)) if not isinstance(x, jax.core.Tracer) else x
            ),
            state,
        )
    return jax.tree.map(jnp.asarray, loss_forms.initial_state(loss, params))


__all__ = [
    "Batches",
    "Step",
    "StepInfo",
    "StepState",
    "batches",
    "epoch_plan",
    "gather",
    "make_step",
]
