r"""The training run as a pure program: step, guard, record, verdict.

One epoch :math:`e` draws its batches :math:`B_{e,1}, \dots, B_{e,K}` from the
regime and ``fold_in(key, e)``, and takes one step per batch

.. math:: (u_t, s_{t+1}) = \mathrm{update}\big(\nabla L_{B_t}(\theta_t), s_t,
   \theta_t\big), \qquad \theta_{t+1} = \theta_t + u_t,

where ``update`` is any optax ``GradientTransformation``. The *guard* rejects a
step whose loss, gradient or new parameters are not finite: :math:`\theta` and
:math:`s` stay those of step :math:`t` and the run stops. After the epoch the
run *records* the mean loss and gradient norm (and validation loss, metric,
monitors) in row :math:`\lfloor (e - 1)/\text{stride} \rfloor` of the history,
and a *verdict* applies the stopping criteria. The run is

.. code-block:: python

    while state.status == RUNNING and state.epoch < epoch_limit:
        carry = run_epoch(program, inputs, state)          # scan of train_step
        history = record_epoch(program, inputs, state, carry)
        state = epoch_verdict(program, inputs, state, carry, history)

(:func:`run_epochs`), one ``lax.while_loop`` over epochs around one
``lax.scan`` over steps: one XLA program, no Python per step or epoch.
Everything here is a pure top-level function over named tuples; the host side
(validation, chunks, callbacks, results) lives in :mod:`gdjax.runs`.

Properties the tests pin down: a run advanced in chunks (``epoch_limit``
raised call by call) is bitwise the run done at once; a run stopped on NaN at
step :math:`k` holds bitwise the state of the same run with ``max_steps=k``;
under ``vmap`` every member keeps its own status and a stopped member is
frozen. A fast program (:func:`fast_epoch`: tiny steps, or any single run
without ``max_steps``) runs an epoch unchecked, tests it once, and replays it
with the checks only on trouble, which gives the same bits as checking every
step.
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

from gdjax import batching, stopping
from gdjax._typing import Batch, Key, Params, PyTree
from gdjax.loss_forms import LossSpec, step_key
from gdjax.stopping import Criteria, Status


class History(NamedTuple):
    """Per-epoch records, one row per recorded epoch.

    Attributes:
      epoch: the epoch each row records, counting from 1 (0 in a row that no
        epoch has written).
      loss: mean training loss over the epoch's batches, each evaluated at the
        parameters entering its step.
      grad_norm: mean global gradient norm over the epoch's steps.
      val_loss: loss on ``val_data`` after the epoch (NaN without it).
      metric: ``metric(params, val_data or data)`` after the epoch (NaN without).
      monitors: ``{name: values}`` for each monitor (NaN between evaluations).
    """

    epoch: jax.Array
    loss: jax.Array
    grad_norm: jax.Array
    val_loss: jax.Array
    metric: jax.Array
    monitors: dict[str, jax.Array]


class RunState(NamedTuple):
    """The state the compiled run carries from epoch to epoch.

    Attributes:
      params: the parameters (the last finite ones after a NaN/inf stop).
      opt_state: the transform's state (likewise).
      history: the :class:`History`, ``rows`` long.
      epoch: epochs run, a stopped partial epoch included (int32).
      steps: gradient steps applied (int32).
      status: a :class:`~gdjax.stopping.Status` code (int32).
      bad_leaf: index in ``params`` leaf order of the first non-finite leaf at
        a NaN/inf stop (-1 if none, or if the loss itself was non-finite).
      best_loss: the best epoch loss so far (the plateau criterion).
      bad_epochs: epochs in a row without relative improvement above ``tol``.
      loss_state: the state of a stateful loss (:func:`gdjax.stateful`), ``()``
        for any other loss (likewise the last finite one after a NaN/inf stop).
    """

    params: Params
    opt_state: PyTree
    history: History
    epoch: jax.Array
    steps: jax.Array
    status: jax.Array
    bad_leaf: jax.Array
    best_loss: jax.Array
    bad_epochs: jax.Array
    loss_state: PyTree = ()


class Inputs(NamedTuple):
    """The arrays a run reads and never changes.

    Attributes:
      data: the training set (leading example axis n).
      val_data: held-out data or None.
      key: the run's key: the data order, and the loss's key stream
        (:func:`gdjax.step_key`) for a loss declared with a key.
      criteria: the stopping numbers (:class:`~gdjax.stopping.Criteria`).
      loss_leaves: the array leaves of the loss (e.g. ``make_loss``'s ``l2``),
        so that new values do not recompile; see :func:`split_callable`.
    """

    data: Batch
    val_data: Batch | None
    key: Key
    criteria: Criteria
    loss_leaves: tuple


MEMBER_AXES = Inputs(data=None, val_data=None, key=0, criteria=0, loss_leaves=None)
"""``vmap`` axes of :class:`Inputs` over the members of a sweep: data shared."""


class Program(NamedTuple):
    """Everything that shapes the compiled program (hashable, static).

    Attributes:
      loss: the static half of the loss (:func:`split_callable`).
      update: the transform's ``update`` function.
      regime: the batching regime.
      plan: the regime resolved against the data (steps, batch size, padding).
      epochs: the epoch budget.
      stride: epochs per history row.
      guard: check every step for NaN/inf.
      until: the user's predicate, or None.
      metric: the recorded metric, or None.
      monitors: ``((name, fn), ...)``, sorted.
      monitor_every: epochs between monitor evaluations.
      has_val: whether ``val_data`` is evaluated.
      fast: the epoch-level check (:func:`fast_epoch`), chosen by
        :mod:`gdjax.runs` from the step's size (tiny steps), or for any
        single run without ``max_steps`` (:func:`gdjax.runs.single_program`).
      unroll: steps per iteration of the scan.
      bounded: a ``max_steps`` budget is set (so a fast epoch may have to be
        replayed to stop inside it); ``False`` only where ``max_steps`` is
        None, which lets a fast epoch with the guard off skip the replay.
      step_stats: each step computes its loss and gradient norm for the
        history; ``False`` (:class:`gdjax.Recording`) takes the gradient alone
        and the history's loss and gradient norm are NaN.
      replay: a fast epoch in trouble is replayed checked inside the program
        (:func:`fast_epoch`). ``False`` leaves the replay out: the run hands
        the epoch back unrun (:data:`REPLAY`) for the host to run with the
        checked program (``fast=False``; :func:`gdjax.runs.replaying`), a
        smaller program to compile. The epoch's record (metric, monitors,
        ``until``) is still evaluated before it is handed back, on
        parameters that are then dropped: a side effect in them (a
        ``jax.debug.callback``) fires for it.
    """

    loss: tuple
    update: Callable
    regime: batching.Regime
    plan: batching.Plan
    epochs: int
    stride: int
    guard: bool
    until: Callable | None
    metric: Callable | None
    monitors: tuple
    monitor_every: int
    has_val: bool
    fast: bool = False
    unroll: int = 1
    bounded: bool = True
    step_stats: bool = True
    replay: bool = True


REPLAY = -1
"""The status of a run whose last epoch a fast program (``replay=False``)
handed back unrun: its state is that before the epoch. Never in a result."""


class StepCarry(NamedTuple):
    """What the scan over one epoch's steps carries.

    Attributes:
      params: the parameters.
      opt_state: the transform's state.
      steps: gradient steps applied so far in the run (int32).
      status: the run's :class:`~gdjax.stopping.Status` code (int32).
      bad_leaf: the first non-finite leaf at a NaN/inf stop (-1 if none).
      loss_sum: the sum of the epoch's applied steps' losses.
      grad_norm_sum: the sum of their gradient norms.
      count: the epoch's applied steps (int32).
      loss_state: a stateful loss's state (``()`` for a plain loss).
    """

    params: Params
    opt_state: PyTree
    steps: jax.Array
    status: jax.Array
    bad_leaf: jax.Array
    loss_sum: jax.Array
    grad_norm_sum: jax.Array
    count: jax.Array
    loss_state: PyTree = ()


# ------------------------------------------------------------------ the loss, split


class _Hole:
    """Where an array leaf of a callable was taken out (see split_callable)."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Hole)

    def __hash__(self) -> int:
        return 0


class _ById:
    """An unhashable callable as a static value, equal only to itself."""

    __slots__ = ("obj",)

    def __init__(self, obj: Any):
        self.obj = obj

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _ById) and other.obj is self.obj

    def __hash__(self) -> int:
        return id(self.obj)


def _is_number(leaf: Any) -> bool:
    if isinstance(leaf, (bool, np.bool_)):
        return False
    return isinstance(leaf, (jax.Array, np.ndarray, np.generic, numbers.Number))


def split_callable(fn: Callable) -> tuple[tuple, tuple]:
    """``(static, leaves)``: a callable pytree without and with its numbers.

    A callable registered as a pytree (``make_loss``'s :class:`~gdjax.losses.Loss`
    holds ``l2`` as a leaf) is split into a hashable static half (its tree
    structure and non-numeric leaves) and its numeric leaves, which the run
    takes as arguments: equal losses share a program and new numbers do not
    recompile. A plain function is all static.
    """
    leaves, treedef = jax.tree_util.tree_flatten(fn)
    numbers_ = tuple(leaf for leaf in leaves if _is_number(leaf))
    rest = tuple(_Hole() if _is_number(leaf) else leaf for leaf in leaves)
    static: tuple = (treedef, rest)
    try:
        hash(static)
    except TypeError:
        static = (treedef, tuple(_ById(leaf) for leaf in rest))
    return static, numbers_


def join_callable(static: tuple, leaves: tuple) -> Callable:
    """The callable back from :func:`split_callable`'s halves."""
    treedef, rest = static
    it = iter(leaves)
    out = [
        next(it) if isinstance(x, _Hole) else (x.obj if isinstance(x, _ById) else x)
        for x in rest
    ]
    return jax.tree_util.tree_unflatten(treedef, out)


# ------------------------------------------------------------------------ the step


def _tree_select(pred: jax.Array, new: PyTree, old: PyTree) -> PyTree:
    return jax.tree.map(lambda a, b: jnp.where(pred, a, b), new, old)


def leaf_flags(tree: PyTree) -> jax.Array:
    """One bool per leaf of ``tree``: are all its entries finite?"""
    return jnp.stack(
        [jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)]
    )


def all_finite(tree: PyTree) -> jax.Array:
    r"""Are all the entries of all the leaves of ``tree`` finite? (a bool scalar)

    One reduction per leaf: :math:`x \cdot 0` is 0 for a finite :math:`x`
    and NaN for :math:`\pm\infty` or NaN, and a sum of zeros cannot
    overflow, so :math:`\sum x \cdot 0` is finite exactly when every entry
    is. (``jnp.all(jnp.isfinite(x))`` compiles to three kernels per leaf on
    CPU: the test, a split reduction and its tail.) Quicker to compile, not to
    run (a float sum against a boolean one): for the once-an-epoch test of
    :func:`clean_epoch`, not for every step.
    """
    flags = [
        jnp.isfinite(jnp.sum(x * jnp.zeros((), x.dtype)))
        for x in jax.tree_util.tree_leaves(tree)
    ]
    return jnp.all(jnp.stack(flags)) if flags else jnp.bool_(True)


def first_bad_leaf(tree: PyTree) -> jax.Array:
    """Index of the first leaf holding a NaN or inf (-1 if none)."""
    flags = leaf_flags(tree)
    return jnp.where(jnp.all(flags), -1, jnp.argmin(flags)).astype(jnp.int32)


def step_verdict(
    value: jax.Array, gnorm: jax.Array, grads: PyTree, new_params: PyTree
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(ok, why, leaf)``: is a step finite, which status if not, which leaf.

    The gradient norm (computed anyway for the history) is finite if every
    gradient entry is, unless the norm itself overflows
    (:math:`\\|g\\| > 1.8 \\cdot 10^{19}` in float32): only then are the
    gradient's leaves checked one by one. Which leaf went bad is worked out on
    a failing step only.
    """
    loss_ok = jnp.isfinite(value)
    grad_ok = jax.lax.cond(
        jnp.isfinite(gnorm), lambda: jnp.bool_(True), lambda: jnp.all(leaf_flags(grads))
    )
    # Per leaf, not all_finite: per step on W4's 64 members x 70k parameters
    # the float sum of x * 0 ran 12% slower than the isfinite-and reduction.
    par_ok = jnp.all(leaf_flags(new_params))
    ok = loss_ok & grad_ok & par_ok
    why = jnp.where(
        ~loss_ok,
        Status.NONFINITE_LOSS,
        jnp.where(~grad_ok, Status.NONFINITE_GRAD, Status.NONFINITE_PARAMS),
    ).astype(jnp.int32)
    leaf = jax.lax.cond(
        ~ok & loss_ok,
        lambda: jnp.where(grad_ok, first_bad_leaf(new_params), first_bad_leaf(grads)),
        lambda: jnp.int32(-1),
    )
    return ok, why, leaf


def _value_and_grad(program: Program, inputs: Inputs) -> Callable:
    loss = join_callable(program.loss, inputs.loss_leaves)
    return jax.value_and_grad(loss)


def declared_step(
    loss: LossSpec, inputs: Inputs, carry: StepCarry, batch: Batch, value: bool = True
) -> tuple[jax.Array | None, PyTree, PyTree]:
    """``(value, grads, new_state)`` of a loss declared with a key or a state.

    The key of the step is :func:`gdjax.step_key` of the run's key and the
    steps applied so far; the gradient is taken with respect to the params.
    With ``value=False`` only the gradient is taken (the value is None).
    """
    key = step_key(inputs.key, carry.steps) if loss.takes_key else None
    if not value:
        g = jax.grad(loss.train_value, has_aux=True)
        grads, new_state = g(carry.params, carry.loss_state, batch, key)
        return None, grads, new_state
    vg = jax.value_and_grad(loss.train_value, has_aux=True)
    (value_, new_state), grads = vg(carry.params, carry.loss_state, batch, key)
    return value_, grads, new_state


def train_step(
    program: Program,
    inputs: Inputs,
    carry: StepCarry,
    batch_xs: tuple[jax.Array, jax.Array],
    *,
    checked: bool = True,
) -> tuple[StepCarry, None]:
    """One gradient step on the batch ``batch_xs = (indices, weights)``.

    Checked (the default): a step is applied only while the run is going and
    under ``max_steps``, and with the guard on only if it is finite; otherwise
    the carry keeps its parameters and state and the status says why. Unchecked
    (the fast path): every step applies. A loss declared with a key or a state
    (:mod:`gdjax.loss_forms`) gets the step's key and the carried state
    (:func:`declared_step`); its new state is applied or rejected with the
    parameters. A plain loss traces exactly as before (no key, ``()`` state).
    """
    idx, w = batch_xs
    data = inputs.data
    batch = data if program.regime.kind == "full" else batching.gather(data, idx)
    loss = join_callable(program.loss, inputs.loss_leaves)
    new_state = carry.loss_state
    args = (carry.params, batch, w) if program.plan.masked else (carry.params, batch)
    if isinstance(loss, LossSpec):
        value, grads, new_state = declared_step(
            loss, inputs, carry, batch, program.step_stats
        )
    elif program.step_stats:
        value, grads = _value_and_grad(program, inputs)(*args)
    else:
        value, grads = None, jax.grad(loss)(*args)
    if value is None:  # step_stats=False: no loss, no norm (sums stay 0)
        value = gnorm = jnp.zeros((), carry.loss_sum.dtype)
    else:
        gnorm = optax.tree.norm(grads).astype(value.dtype)
    updates, new_opt = program.update(grads, carry.opt_state, carry.params)
    new_params = optax.apply_updates(carry.params, updates)
    if not checked:
        one = jnp.ones((), jnp.int32)
        return StepCarry(
            new_params,
            new_opt,
            carry.steps + one.astype(carry.steps.dtype),
            carry.status,
            carry.bad_leaf,
            carry.loss_sum + value,
            carry.grad_norm_sum + gnorm,
            carry.count + one,
            new_state,
        ), None
    status, bad_leaf = carry.status, carry.bad_leaf
    apply = (status == Status.RUNNING) & (carry.steps < inputs.criteria.max_steps)
    if program.guard:
        ok, why, leaf = step_verdict(value, gnorm, grads, new_params)
        fail = apply & ~ok
        status = jnp.where(fail, why, status).astype(jnp.int32)
        bad_leaf = jnp.where(fail, leaf, bad_leaf).astype(jnp.int32)
        apply = apply & ok
    zero = jnp.zeros_like(value)
    return StepCarry(
        _tree_select(apply, new_params, carry.params),
        _tree_select(apply, new_opt, carry.opt_state),
        carry.steps + apply.astype(carry.steps.dtype),
        status,
        bad_leaf,
        carry.loss_sum + jnp.where(apply, value, zero),
        carry.grad_norm_sum + jnp.where(apply, gnorm, zero),
        carry.count + apply.astype(jnp.int32),
        _tree_select(apply, new_state, carry.loss_state),
    ), None


def clean_epoch(program: Program, inputs: Inputs, fast: StepCarry) -> jax.Array:
    """Would the checked steps have rejected none of the epoch's steps?

    A non-finite loss or gradient leaves a non-finite sum, and non-finite
    parameters stay non-finite (p + u is inf or NaN once p is), so an epoch
    run unchecked is clean if its sums and parameters are finite (with the
    guard on) and it stayed within ``max_steps``: the checked steps would
    then give the same result, bit for bit.
    """
    clean = fast.steps <= inputs.criteria.max_steps
    if program.guard:
        clean = clean & jnp.isfinite(fast.loss_sum) & jnp.isfinite(fast.grad_norm_sum)
        clean = clean & all_finite(fast.params)
    return clean


def fast_epoch(
    program: Program, inputs: Inputs, carry: StepCarry, xs: tuple
) -> tuple[StepCarry, jax.Array | None]:
    """One fast epoch: unchecked, tested once, replayed checked if needed.

    Returns ``(carry, trouble)``. The epoch runs unchecked; if it is not
    :func:`clean_epoch` (a NaN, or the ``max_steps`` budget ending inside it)
    it is replayed step by step with the checks. The replay sits in a
    while_loop, not a cond, so that under vmap (a sweep) it runs only when
    some member needs it; ``trouble`` is then None. With ``program.replay``
    off the replay is left out and ``trouble`` says whether the epoch needs
    it (:func:`run_epochs` hands it back, :data:`REPLAY`).
    """
    fast_step = functools.partial(train_step, program, inputs, checked=False)
    fast, _ = jax.lax.scan(fast_step, carry, xs, unroll=program.unroll)
    if not (program.guard or program.bounded):
        return fast, None  # nothing could need the checked replay
    replay = (carry.status == Status.RUNNING) & ~clean_epoch(program, inputs, fast)
    if not program.replay:
        return fast, replay
    checked_step = functools.partial(train_step, program, inputs)

    def checked_epoch(todo_and_carry):
        del todo_and_carry
        again, _ = jax.lax.scan(checked_step, carry, xs)
        return jnp.zeros((), bool), again

    _, out = jax.lax.while_loop(lambda tc: tc[0], checked_epoch, (replay, fast))
    return out, None


def run_epoch(
    program: Program, inputs: Inputs, state: RunState
) -> tuple[StepCarry, jax.Array | None]:
    """The steps of epoch ``state.epoch + 1``, from its batches to its sums,
    and whether the epoch must be handed back (:func:`fast_epoch`; None when
    it cannot be)."""
    idx, w = batching.epoch_batches(
        program.regime, program.plan, inputs.key, state.epoch
    )
    if w is None:
        w = jnp.ones(idx.shape, jnp.float32)
    zero = jnp.zeros((), state.history.loss.dtype)
    carry = StepCarry(
        state.params,
        state.opt_state,
        state.steps,
        state.status,
        state.bad_leaf,
        zero,
        zero,
        jnp.zeros((), jnp.int32),
        state.loss_state,
    )
    if program.fast:
        return fast_epoch(program, inputs, carry, (idx, w))
    carry, _ = jax.lax.scan(
        functools.partial(train_step, program, inputs), carry, (idx, w)
    )
    return carry, None


# ---------------------------------------------------------------- record, verdict


def epoch_means(
    carry: StepCarry, step_stats: bool = True
) -> tuple[jax.Array, jax.Array]:
    """The epoch's mean loss and gradient norm (NaN if no step applied, or
    without ``step_stats``)."""
    nan = jnp.full((), jnp.nan, carry.loss_sum.dtype)
    if not step_stats:
        return nan, nan
    ran = carry.count > 0
    n = jnp.maximum(carry.count, 1)
    return (
        jnp.where(ran, carry.loss_sum / n, nan),
        jnp.where(ran, carry.grad_norm_sum / n, nan),
    )


def record_epoch(
    program: Program, inputs: Inputs, state: RunState, carry: StepCarry
) -> History:
    """The history with epoch ``state.epoch + 1`` written into its row."""
    hist = state.history
    e = state.epoch
    nan = jnp.full((), jnp.nan, hist.loss.dtype)
    e_loss, e_gn = epoch_means(carry, program.step_stats)
    slot = e // program.stride
    params, loss_state = carry.params, carry.loss_state
    loss = join_callable(program.loss, inputs.loss_leaves)
    declared = isinstance(loss, LossSpec)
    val_h, met_h = hist.val_loss, hist.metric
    if program.has_val:
        if declared:  # inference mode (see gdjax.loss_forms)
            val = loss.eval_value(params, loss_state, inputs.val_data)
        else:
            val = loss(params, inputs.val_data)
        val_h = val_h.at[slot].set(val.astype(nan.dtype))
    if program.metric is not None:
        eval_data = inputs.val_data if program.has_val else inputs.data
        met = (
            loss.evaluate(program.metric, params, loss_state, eval_data)
            if declared
            else program.metric(params, eval_data)
        )
        met_h = met_h.at[slot].set(jnp.asarray(met).astype(nan.dtype))
    monitors = dict(hist.monitors)
    for name, fn in program.monitors:
        if declared:
            fn = functools.partial(loss.evaluate, fn)
            operand = (params, loss_state)
        else:
            operand = (params,)
        value = jax.lax.cond(
            e % program.monitor_every == 0,
            lambda o, fn=fn: jnp.asarray(fn(*o, inputs.data), nan.dtype),
            lambda o: nan,
            operand,
        )
        monitors[name] = jnp.where(
            jnp.isnan(value), monitors[name], monitors[name].at[slot].set(value)
        )
    return History(
        epoch=hist.epoch.at[slot].set((e + 1).astype(hist.epoch.dtype)),
        loss=hist.loss.at[slot].set(e_loss),
        grad_norm=hist.grad_norm.at[slot].set(e_gn),
        val_loss=val_h,
        metric=met_h,
        monitors=monitors,
    )


def epoch_verdict(
    program: Program,
    inputs: Inputs,
    state: RunState,
    carry: StepCarry,
    history: History,
) -> RunState:
    """The state after the epoch, its status set by the stopping criteria.

    A status set during the epoch (NaN/inf) wins; then ``max_steps``; then the
    epoch's criteria (target loss, gradient tolerance, plateau, ``until``);
    then the epoch budget.
    """
    criteria = inputs.criteria
    e_loss, e_gn = epoch_means(carry, program.step_stats)
    status = jnp.where(
        (carry.status == Status.RUNNING) & (carry.steps >= criteria.max_steps),
        Status.MAX_STEPS,
        carry.status,
    ).astype(jnp.int32)
    best, bad_epochs = stopping.plateau_update(
        criteria, e_loss, state.best_loss, state.bad_epochs
    )
    verdict = stopping.epoch_status(criteria, e_loss, e_gn, bad_epochs)
    if program.until is not None:
        verdict = jnp.where(
            program.until(history, state.epoch + 1), Status.PREDICATE, verdict
        ).astype(jnp.int32)
    verdict = jnp.where(
        (verdict == Status.RUNNING) & (state.epoch + 1 >= program.epochs),
        Status.MAX_EPOCHS,
        verdict,
    )
    status = jnp.where(status == Status.RUNNING, verdict, status).astype(jnp.int32)
    return RunState(
        params=carry.params,
        opt_state=carry.opt_state,
        history=history,
        epoch=state.epoch + 1,
        steps=carry.steps,
        status=status,
        bad_leaf=carry.bad_leaf,
        best_loss=best,
        bad_epochs=bad_epochs,
        loss_state=carry.loss_state,
    )


def run_epochs(
    program: Program, state: RunState, inputs: Inputs, epoch_limit: jax.Array
) -> RunState:
    """Advance ``state`` until it stops or has run ``epoch_limit`` epochs.

    Pure and jittable: :func:`advance` jits it, :func:`advance_members` jits
    its ``vmap`` over the members of a sweep. A fast program with
    ``replay=False`` stops at an epoch in trouble and hands it back: the state
    before it, with status :data:`REPLAY`.
    """

    def body(state: RunState) -> RunState:
        carry, trouble = run_epoch(program, inputs, state)
        history = record_epoch(program, inputs, state, carry)
        after = epoch_verdict(program, inputs, state, carry, history)
        if trouble is None:
            return after
        # The history row is left as written: the replay of the epoch writes
        # the same row again. A cond, not a select: its branches are copies,
        # which compile to no kernels (W3's program: 0.1 s less to compile).
        handed_back = state._replace(
            history=after.history, status=jnp.int32(REPLAY)
        )
        return jax.lax.cond(trouble, lambda: handed_back, lambda: after)

    def going(state: RunState) -> jax.Array:
        return (state.status == Status.RUNNING) & (state.epoch < epoch_limit)

    return jax.lax.while_loop(going, body, state)


def jit_run(
    fn: Callable, *, donate: bool = False, options: tuple[tuple[str, Any], ...] = ()
) -> Callable:
    """``jax.jit`` of a run function ``fn(program, state, ...)``: the program
    static, the state donated or not, XLA ``options`` (``compiler_options``,
    sorted pairs; :class:`gdjax.spec.Driving`). One jitted function per
    combination, so that each keeps its own compiled programs."""
    return _jit_run(fn, bool(donate), tuple(options))


@functools.cache
def _jit_run(fn: Callable, donate: bool, options: tuple) -> Callable:
    return jax.jit(
        fn,
        static_argnums=0,
        donate_argnums=1 if donate else (),
        compiler_options=dict(options) or None,
    )


advance = jit_run(run_epochs)
"""``jit(run_epochs)``: the compiled run of one member."""

advance_donated = jit_run(run_epochs, donate=True)
"""As :data:`advance`, donating the state's buffers."""


def run_members(
    program: Program, state: RunState, inputs: Inputs, epoch_limit: jax.Array
) -> RunState:
    """``vmap`` of :func:`run_epochs` over members (:data:`MEMBER_AXES`)."""
    run = functools.partial(run_epochs, program)
    return jax.vmap(run, in_axes=(0, MEMBER_AXES, None))(state, inputs, epoch_limit)


advance_members = jit_run(run_members, donate=True)
"""The compiled run of a sweep's members (donates their state)."""


def initial_state(
    rows: int,
    monitors: tuple[str, ...],
    params: Params,
    opt_state: PyTree,
    dtype: Any,
    loss_state: PyTree = (),
) -> RunState:
    """The state of a run before its first epoch (history all NaN), on the host."""
    nan = np.full((rows,), np.nan, dtype)
    history = History(
        epoch=np.zeros((rows,), np.int32),
        loss=nan,
        grad_norm=nan.copy(),
        val_loss=nan.copy(),
        metric=nan.copy(),
        monitors={name: nan.copy() for name in monitors},
    )
    i32 = functools.partial(np.asarray, dtype=np.int32)
    return RunState(
        params=params,
        opt_state=opt_state,
        history=history,
        epoch=i32(0),
        steps=i32(0),
        status=i32(Status.RUNNING),
        bad_leaf=i32(-1),
        best_loss=np.asarray(np.inf, dtype),
        bad_epochs=i32(0),
        loss_state=loss_state,
    )


__all__ = [
    "MEMBER_AXES",
    "REPLAY",
    "History",
    "Inputs",
    "Program",
    "RunState",
    "StepCarry",
    "advance",
    "advance_donated",
    "advance_members",
    "all_finite",
    "clean_epoch",
    "declared_step",
    "epoch_means",
    "epoch_verdict",
    "fast_epoch",
    "first_bad_leaf",
    "initial_state",
    "jit_run",
    "join_callable",
    "leaf_flags",
    "record_epoch",
    "run_epoch",
    "run_epochs",
    "run_members",
    "split_callable",
    "step_verdict",
    "train_step",
]
