"""The training run, compiled: initialize → forward → backprop → update → iterate.

:func:`fit` runs gradient descent

.. math:: \\theta_{t+1} = \\theta_t + u_t, \\qquad
   (u_t, s_{t+1}) = \\mathrm{update}(\\nabla L_{B_t}(\\theta_t), s_t, \\theta_t)

where ``update`` is any optax ``GradientTransformation`` (``gd.sgd(0.1)`` is
:math:`u_t = -\\eta \\nabla L_{B_t}`) and :math:`B_t` comes from the batching
regime. One epoch is a ``lax.scan`` over its steps; the run is a
``lax.while_loop`` over epochs that ends when a stopping criterion holds. All of
it is one XLA program: no Python per step or per epoch.

The loop state is the :class:`FitResult` itself: parameters, optimizer state,
counters, status and a per-epoch :class:`History` of fixed length ``epochs``
(entries after the last epoch run are NaN). Passing a result back as
``fit(..., resume=result)`` continues the same run, which is how chunked runs
(progress bars, callbacks) and checkpoints work: a run done in chunks is bitwise
the run done at once.

Under ``vmap`` (see :mod:`gdjax.sweep`) each member carries its own status: a
member that stops is frozen (the while loop selects its old state) while the
others go on.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gdjax import _validate as V
from gdjax import batching, stopping
from gdjax._typing import Batch, Key, LossFn, Params, PyTree
from gdjax.errors import NonFiniteError
from gdjax.stopping import Criteria, Status
from gdjax.transforms import check_hyperparams, set_hyperparams


class History(NamedTuple):
    """Per-epoch records, each of shape ``(epochs,)`` (NaN where not run).

    Attributes:
      loss: mean training loss over the epoch's batches, each evaluated at the
        parameters entering its step.
      grad_norm: mean global gradient norm over the epoch's steps.
      val_loss: loss on ``val_data`` after the epoch (NaN without it).
      metric: ``metric(params, val_data or data)`` after the epoch (NaN without).
      monitors: ``{name: values}`` for each monitor (NaN between evaluations).
    """

    loss: jax.Array
    grad_norm: jax.Array
    val_loss: jax.Array
    metric: jax.Array
    monitors: dict[str, jax.Array]


class FitResult(NamedTuple):
    """The state of a run; also what :func:`fit` returns.

    Attributes:
      params: final parameters (the last finite ones if the run hit NaN/inf).
      opt_state: final optimizer state (likewise).
      history: the per-epoch :class:`History`.
      epoch: epochs run (including a partial one that a stop cut short).
      steps: gradient steps applied.
      status: a :class:`~gdjax.stopping.Status` code (int32).
      stop_epoch: the epoch in which the run stopped (-1 while running).
      bad_leaf: index of the first non-finite leaf, in ``params`` leaf order
        (-1 if none or if the loss itself was non-finite).
      best_loss: best epoch loss so far (for the plateau criterion).
      bad_epochs: epochs in a row without relative improvement.
    """

    params: Params
    opt_state: PyTree
    history: History
    epoch: jax.Array
    steps: jax.Array
    status: jax.Array
    stop_epoch: jax.Array
    bad_leaf: jax.Array
    best_loss: jax.Array
    bad_epochs: jax.Array

    @property
    def stopped_by(self) -> Status:
        """The :class:`~gdjax.stopping.Status` of a single (unbatched) run."""
        return Status(int(self.status))

    @property
    def failed(self) -> bool:
        """True if the run stopped on NaN or inf."""
        return self.stopped_by.failed

    @property
    def final_loss(self) -> float:
        """The last recorded epoch loss of a single run."""
        loss = np.asarray(self.history.loss)
        finite = np.flatnonzero(np.isfinite(loss))
        return float(loss[finite[-1]]) if finite.size else float("nan")

    @property
    def reason(self) -> str:
        """Why a single run stopped, in a sentence."""
        return describe_stop(self)


def describe_stop(result: FitResult) -> str:
    """A sentence saying why (and where) a single run stopped."""
    status = Status(int(result.status))
    text = f"{status.message} (epoch {int(result.stop_epoch)}"
    text += f", after {int(result.steps)} steps)"
    if status.failed:
        text = (
            f"{status.message} at step {int(result.steps)} (epoch "
            f"{int(result.stop_epoch)}); params and opt_state are those after step "
            f"{int(result.steps) - 1}, the last finite ones"
        )
        leaf = int(result.bad_leaf)
        if leaf >= 0:
            paths = jax.tree_util.tree_leaves_with_path(result.params)
            text += f"; first bad leaf: params{jax.tree_util.keystr(paths[leaf][0])}"
    elif status == Status.RUNNING:
        text = f"{status.message} after epoch {int(result.epoch)}"
    return text


class _Static(NamedTuple):
    """Everything that shapes the compiled program (hashable)."""

    loss: Callable
    update: Callable
    regime: batching.Regime
    plan: batching.Plan
    epochs: int
    guard: bool
    until: Callable | None
    metric: Callable | None
    monitors: tuple
    monitor_every: int
    has_val: bool
    plateau: bool
    stride: int
    fast: bool = False
    unroll: int = 1


def _tree_select(pred, new, old):
    return jax.tree.map(lambda a, b: jnp.where(pred, a, b), new, old)


def _leaf_flags(tree) -> jax.Array:
    """One bool per leaf: are all its entries finite?"""
    return jnp.stack(
        [jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree_util.tree_leaves(tree)]
    )


def _first_bad_leaf(tree) -> jax.Array:
    """Index of the first leaf holding a NaN or inf (-1 if none)."""
    flags = _leaf_flags(tree)
    return jnp.where(jnp.all(flags), -1, jnp.argmin(flags)).astype(jnp.int32)


def _weighted_loss(loss: Callable) -> Callable:
    if getattr(loss, "accepts_weights", False):
        return lambda p, b, w: loss(p, b, weights=w)
    from gdjax.losses import with_example_weights

    return with_example_weights(loss)


def run_epochs(
    static: _Static,
    state: FitResult,
    data: Batch,
    val_data: Batch | None,
    key: Key,
    criteria: Criteria,
    epoch_limit: jax.Array,
) -> FitResult:
    """Advance ``state`` until it stops or reaches ``epoch_limit`` (pure, jittable).

    This is the whole training program; :func:`fit` jits it and
    :func:`gdjax.sweep` jits its ``vmap``.
    """
    regime, plan = static.regime, static.plan
    value_and_grad = jax.value_and_grad(
        _weighted_loss(static.loss) if plan.masked else static.loss
    )
    full = regime.kind == "full"

    def step(carry, xs, checked):
        params, opt_state, steps, status, bad_leaf, loss_sum, gn_sum, count = carry
        idx, w = xs
        batch = data if full else batching.gather(data, idx)
        if plan.masked:
            value, grads = value_and_grad(params, batch, w)
        else:
            value, grads = value_and_grad(params, batch)
        gnorm = optax.tree.norm(grads)
        updates, new_opt = static.update(grads, opt_state, params)
        new_params = optax.apply_updates(params, updates)
        if not checked:
            # The fast path: every step applies and nothing is tested; the epoch
            # is tested once at its end and replayed with checked=True if needed.
            one = jnp.ones((), jnp.int32)
            return (
                new_params,
                new_opt,
                steps + one.astype(steps.dtype),
                status,
                bad_leaf,
                loss_sum + value,
                gn_sum + gnorm.astype(value.dtype),
                count + one,
            ), None
        running = (status == Status.RUNNING) & (steps < criteria.max_steps)
        if static.guard:
            # The gradient norm (computed anyway for the history) is finite if
            # every gradient entry is, unless the norm itself overflows (|g| >
            # 1.8e19 in float32): only then are the leaves checked one by one.
            # Gating the update on a fresh reduction of the gradients would
            # cost a pass over them every step.
            loss_ok = jnp.isfinite(value)
            grad_ok = jax.lax.cond(
                jnp.isfinite(gnorm),
                lambda: jnp.bool_(True),
                lambda: jnp.all(_leaf_flags(grads)),
            )
            par_ok = jnp.all(_leaf_flags(new_params))
            ok = loss_ok & grad_ok & par_ok
            why = jnp.where(
                ~loss_ok,
                Status.NONFINITE_LOSS,
                jnp.where(~grad_ok, Status.NONFINITE_GRAD, Status.NONFINITE_PARAMS),
            )
            fail = running & ~ok
            # Which leaf went bad is worked out on the failing step only.
            leaf = jax.lax.cond(
                fail & loss_ok,
                lambda: jnp.where(
                    grad_ok, _first_bad_leaf(new_params), _first_bad_leaf(grads)
                ),
                lambda: jnp.int32(-1),
            )
            status = jnp.where(fail, why, status).astype(jnp.int32)
            bad_leaf = jnp.where(fail, leaf, bad_leaf).astype(jnp.int32)
            apply = running & ok
        else:
            apply = running
        params = _tree_select(apply, new_params, params)
        opt_state = _tree_select(apply, new_opt, opt_state)
        steps = steps + apply.astype(steps.dtype)
        zero = jnp.zeros_like(value)
        loss_sum = loss_sum + jnp.where(apply, value, zero)
        gn_sum = gn_sum + jnp.where(apply, gnorm.astype(value.dtype), zero)
        count = count + apply.astype(jnp.int32)
        return (
            params,
            opt_state,
            steps,
            status,
            bad_leaf,
            loss_sum,
            gn_sum,
            count,
        ), None

    def epoch_body(state: FitResult) -> FitResult:
        e = state.epoch
        idx, w = batching.epoch_batches(regime, plan, key, e)
        if w is None:
            w = jnp.ones(idx.shape, jnp.float32)
        hist = state.history
        zero = jnp.zeros((), hist.loss.dtype)
        carry = (
            state.params,
            state.opt_state,
            state.steps,
            state.status,
            state.bad_leaf,
            zero,
            zero,
            jnp.zeros((), jnp.int32),
        )
        xs = (idx, w)
        checked_step = functools.partial(step, checked=True)
        if static.fast:
            carry = _fast_epoch(
                functools.partial(step, checked=False),
                checked_step,
                carry,
                xs,
                state.status,
                criteria,
                guard=static.guard,
                unroll=static.unroll,
            )
        else:
            carry, _ = jax.lax.scan(checked_step, carry, xs)
        params, opt_state, steps, status, bad_leaf, loss_sum, gn_sum, count = carry
        status = jnp.where(
            (status == Status.RUNNING) & (steps >= criteria.max_steps),
            Status.MAX_STEPS,
            status,
        ).astype(jnp.int32)

        nan = jnp.full((), jnp.nan, hist.loss.dtype)
        ran = count > 0
        e_loss = jnp.where(ran, loss_sum / jnp.maximum(count, 1), nan)
        e_gn = jnp.where(ran, gn_sum / jnp.maximum(count, 1), nan)
        # History slot of epoch e: e // stride (the last epoch of each window of
        # `stride` epochs wins), so a long run keeps at most `history_size` rows.
        slot = e // static.stride
        loss_h = hist.loss.at[slot].set(e_loss)
        gn_h = hist.grad_norm.at[slot].set(e_gn)
        val_h, met_h = hist.val_loss, hist.metric
        eval_data = val_data if static.has_val else data
        if static.has_val:
            val_h = val_h.at[slot].set(static.loss(params, val_data).astype(nan.dtype))
        if static.metric is not None:
            met_h = met_h.at[slot].set(
                static.metric(params, eval_data).astype(nan.dtype)
            )
        mon_h = dict(hist.monitors)
        for name, fn in static.monitors:
            value = jax.lax.cond(
                e % static.monitor_every == 0,
                lambda p, fn=fn: jnp.asarray(fn(p, data), nan.dtype),
                lambda p: nan,
                params,
            )
            mon_h[name] = jnp.where(
                jnp.isnan(value), mon_h[name], mon_h[name].at[slot].set(value)
            )
        history = History(loss_h, gn_h, val_h, met_h, mon_h)

        best, bad_epochs = state.best_loss, state.bad_epochs
        if static.plateau:
            best, bad_epochs = stopping.plateau_update(
                criteria, e_loss, best, bad_epochs
            )
        verdict = stopping.epoch_status(criteria, e_loss, e_gn, bad_epochs)
        if static.until is not None:
            verdict = jnp.where(
                static.until(history, e), Status.PREDICATE, verdict
            ).astype(jnp.int32)
        verdict = jnp.where(
            (verdict == Status.RUNNING) & (e + 1 >= static.epochs),
            Status.MAX_EPOCHS,
            verdict,
        )
        running = status == Status.RUNNING
        status = jnp.where(running, verdict, status).astype(jnp.int32)
        stop_epoch = jnp.where(
            (status != Status.RUNNING) & (state.stop_epoch < 0), e, state.stop_epoch
        ).astype(jnp.int32)
        return FitResult(
            params=params,
            opt_state=opt_state,
            history=history,
            epoch=e + 1,
            steps=steps,
            status=status,
            stop_epoch=stop_epoch,
            bad_leaf=bad_leaf,
            best_loss=best,
            bad_epochs=bad_epochs,
        )

    def cond(state: FitResult) -> jax.Array:
        return (state.status == Status.RUNNING) & (state.epoch < epoch_limit)

    return jax.lax.while_loop(cond, epoch_body, state)


def _fast_epoch(fast_step, checked_step, carry, xs, status, criteria, *, guard, unroll):
    """One epoch of tiny steps: unchecked, tested once, replayed checked if needed.

    A non-finite loss or gradient leaves a non-finite sum, and non-finite
    parameters stay non-finite (p + u is inf or NaN once p is), so a clean
    epoch is one in which the checked step would have rejected nothing: both
    give the same result. Otherwise (a NaN, or the max_steps budget ending
    inside the epoch) the epoch is replayed step by step with the checks. The
    replay sits in a while_loop, not a cond, so that under vmap (a sweep) it
    runs only when some member needs it.
    """
    fast, _ = jax.lax.scan(fast_step, carry, xs, unroll=unroll)
    clean = fast[2] <= criteria.max_steps
    if guard:
        clean = clean & jnp.isfinite(fast[5]) & jnp.isfinite(fast[6])
        clean = clean & jnp.all(_leaf_flags(fast[0]))
    replay = (status == Status.RUNNING) & ~clean

    def checked_epoch(todo_and_carry):
        del todo_and_carry
        again, _ = jax.lax.scan(checked_step, carry, xs)
        return jnp.zeros((), bool), again

    _, out = jax.lax.while_loop(lambda tc: tc[0], checked_epoch, (replay, fast))
    return out


@functools.partial(jax.jit, static_argnums=0)
def _advance(static, state, data, val_data, key, criteria, epoch_limit):
    return run_epochs(static, state, data, val_data, key, criteria, epoch_limit)


@functools.partial(jax.jit, static_argnums=0, donate_argnums=1)
def _advance_donated(static, state, data, val_data, key, criteria, epoch_limit):
    return run_epochs(static, state, data, val_data, key, criteria, epoch_limit)


def initial_state(
    static: _Static, params: Params, opt_state: PyTree, dtype
) -> FitResult:
    """The state of a run before its first epoch (history all NaN)."""
    nan = np.full((-(-static.epochs // static.stride),), np.nan, dtype)
    history = History(
        loss=nan,
        grad_norm=nan.copy(),
        val_loss=nan.copy(),
        metric=nan.copy(),
        monitors={name: nan.copy() for name, _ in static.monitors},
    )
    i32 = functools.partial(np.asarray, dtype=np.int32)
    return FitResult(
        params=params,
        opt_state=opt_state,
        history=jax.tree.map(jnp.asarray, history),
        epoch=i32(0),
        steps=i32(0),
        status=i32(Status.RUNNING),
        stop_epoch=i32(-1),
        bad_leaf=i32(-1),
        best_loss=np.asarray(np.inf, dtype),
        bad_epochs=i32(0),
    )


class Prepared(NamedTuple):
    """A validated run, ready to compile: what :func:`prepare` returns."""

    static: _Static
    state: FitResult
    data: Batch
    val_data: Batch | None
    key: Key
    criteria: Criteria


def _abstract_batch(data: Batch, b: int) -> Batch:
    return jax.tree.map(
        lambda a: jax.ShapeDtypeStruct((b,) + tuple(a.shape[1:]), a.dtype), data
    )


def prepare(
    loss: LossFn,
    params: Params,
    data: Batch,
    transform: optax.GradientTransformation,
    *,
    key: Key,
    epochs: int,
    regime: batching.Regime | None = None,
    max_steps: int | None = None,
    target_loss: float | None = None,
    grad_tol: float | None = None,
    tol: float | None = None,
    patience: int = 5,
    until: Callable | None = None,
    val_data: Batch | None = None,
    metric: Callable | None = None,
    monitors: Mapping[str, Callable] | None = None,
    monitor_every: int = 1,
    hyperparams: Mapping[str, Any] | None = None,
    guard: bool = True,
    check_finite: bool = True,
    resume: FitResult | None = None,
    history_size: int = 10_000,
) -> Prepared:
    """Validate every argument of :func:`fit` on the host and build its state.

    Nothing here compiles an XLA program for the run; shapes come from
    ``jax.make_jaxpr`` / ``jax.eval_shape``. :func:`gdjax.sweep` builds on it.
    """
    regime = batching.full_batch() if regime is None else regime
    key = V.check_key(key)
    epochs = V.check_int(epochs, "epochs", minimum=1)
    V.check_params(params)
    n = V.check_data(data, "data", check_finite=check_finite)
    data = jax.device_put(data)
    plan = batching.plan(regime, n)
    if plan.steps < 1:
        raise ValueError(
            f"regime {regime.describe()} leaves zero steps per epoch for n={n} "
            "examples; use last_batch='pad' or a smaller batch_size."
        )
    if max_steps is not None:
        max_steps = V.check_int(max_steps, "max_steps", minimum=1)
    if target_loss is not None:
        V.check_real(target_loss, "target_loss")
    if grad_tol is not None:
        V.check_nonnegative(grad_tol, "grad_tol")
    if tol is not None:
        V.check_nonnegative(tol, "tol")
        patience = V.check_int(patience, "patience", minimum=1)
    monitor_every = V.check_int(monitor_every, "monitor_every", minimum=1)
    history_size = V.check_int(history_size, "history_size", minimum=1)
    stride = -(-epochs // history_size)
    if val_data is not None:
        V.check_data(val_data, "val_data", check_finite=check_finite)
        val_data = jax.device_put(val_data)
    if not (hasattr(transform, "init") and hasattr(transform, "update")):
        raise TypeError(
            "transform must be an optax GradientTransformation (gd.sgd(...), "
            f"optax.chain(...)), got {V.describe(transform)}."
        )
    for name, fn in (("until", until), ("metric", metric)):
        if fn is not None and not callable(fn):
            raise TypeError(f"{name} must be callable, got {V.describe(fn)}.")
    monitors = tuple(sorted((monitors or {}).items()))
    for name, fn in monitors:
        if not callable(fn):
            raise TypeError(
                f"monitors[{name!r}] must be callable, got {V.describe(fn)}."
            )

    batch_abstract = _abstract_batch(data, plan.batch_size)

    def check_loss() -> np.dtype:
        V.check_loss(
            loss,
            params,
            batch_abstract,
            aux_hint="fit needs the value alone: pass lambda p, b: loss(p, b)[0]",
        )
        return np.dtype(jax.eval_shape(loss, params, batch_abstract).dtype)

    # Traced checks depend only on the functions and the signatures: once each.
    dtype = V.memo(("fit-loss", loss, V.signature(params, batch_abstract)), check_loss)
    if val_data is not None:
        try:
            jax.eval_shape(loss, params, val_data)
        except (TypeError, ValueError) as e:
            kind = TypeError if isinstance(e, TypeError) else ValueError
            raise kind(
                f"val_data does not fit loss: loss(params, val_data) fails on "
                f"val_data {V.shapes(val_data)} (data is {V.shapes(data)}): "
                f"{str(e).splitlines()[0]}"
            ) from e
    if hasattr(loss, "check_data"):
        loss.check_data(params, data)
        if val_data is not None:
            loss.check_data(params, val_data)

    if hyperparams:
        # Before init, which may run eager ops.
        check_hyperparams(hyperparams)
    if resume is not None:
        state = _check_resume(resume, params, -(-epochs // stride), monitors)
        V.check_same_structure(
            jax.eval_shape(transform.init, params),
            state.opt_state,
            "transform.init(params)",
            "resume.opt_state",
            dtypes=True,
        )
        opt_state = state.opt_state
    else:
        opt_state = transform.init(params)
    if hyperparams:
        opt_state = set_hyperparams(opt_state, **hyperparams)

    def check_update() -> bool:
        grads_abstract = jax.eval_shape(lambda p: p, params)
        updates = jax.eval_shape(transform.update, grads_abstract, opt_state, params)
        V.check_same_structure(params, updates[0], "params", "the transform's updates")
        return True

    V.memo(("update", transform.update, V.signature(params, opt_state)), check_update)

    static = _Static(
        loss=loss,
        update=transform.update,
        regime=regime,
        plan=plan,
        epochs=epochs,
        guard=bool(guard),
        until=until,
        metric=metric,
        monitors=monitors,
        monitor_every=monitor_every,
        has_val=val_data is not None,
        plateau=tol is not None,
        stride=stride,
        fast=_products(params, plan) <= _FAST_STEP,
        unroll=2 if _products(params, plan) <= _UNROLL_STEP else 1,
    )
    if resume is None:
        state = initial_state(static, params, opt_state, dtype)
    else:
        state = state._replace(opt_state=opt_state)
    criteria = stopping.make_criteria(
        max_steps=max_steps,
        target_loss=target_loss,
        grad_tol=grad_tol,
        tol=tol,
        patience=patience,
    )
    return Prepared(static, state, data, val_data, key, criteria)


_FAST_STEP = 65_536
"""Steps of at most this many batch x parameter products are checked per epoch."""
_UNROLL_STEP = 4_096
"""Steps of at most this many products run 2 to an iteration of the scan."""


def _products(params: Params, plan: batching.Plan) -> int:
    """Batch size times parameter count: how big one step is.

    At or below :data:`_FAST_STEP` the per-step NaN/inf test (a reduction per
    leaf, a select per leaf) costs as much as the step itself, so the epoch
    runs unchecked and is tested once (:func:`_fast_epoch`); that compiles the
    step twice, which only pays for such steps. At or below
    :data:`_UNROLL_STEP` even XLA's loop (about a microsecond per iteration on
    CPU, as much as a batch-1 logistic-regression step) is worth amortizing.
    """
    size = sum(
        math.prod(getattr(p, "shape", np.shape(p))) for p in jax.tree.leaves(params)
    )
    return plan.batch_size * size


def _check_resume(resume: FitResult, params: Params, rows: int, monitors) -> FitResult:
    if not isinstance(resume, FitResult):
        raise TypeError(f"resume must be a FitResult, got {V.describe(resume)}.")
    V.check_same_structure(params, resume.params, "params", "resume.params")
    if resume.history.loss.shape[-1] != rows:
        raise ValueError(
            f"resume holds a history of {resume.history.loss.shape[-1]} rows but "
            f"this call's epochs and history_size give {rows}; resume with the same "
            "epoch budget."
        )
    if sorted(resume.history.monitors) != [name for name, _ in monitors]:
        raise ValueError(
            f"resume records monitors {sorted(resume.history.monitors)}, but this "
            f"call asks for {[name for name, _ in monitors]}."
        )
    return resume


def drive(
    prepared: Prepared,
    *,
    advance: Callable,
    chunk_epochs: int | None = None,
    callback: Callable[[FitResult], Any] | None = None,
    progress: bool = False,
) -> FitResult:
    """Run a prepared program to the end, in one call or in chunks of epochs.

    ``advance(static, state, data, val_data, key, criteria, epoch_limit)`` is the
    compiled program (``_advance`` or a vmapped one). In chunked mode the same
    compiled program is called again with a larger ``epoch_limit``; the host shows
    a progress bar, calls ``callback(state)`` (a truthy return stops the run with
    ``Status.CALLBACK``) and stops early when every member has stopped.
    """
    static, state, data, val_data, key, criteria = prepared
    epochs = static.epochs
    if chunk_epochs is None and callback is None and not progress:
        return advance(static, state, data, val_data, key, criteria, np.int32(epochs))
    if chunk_epochs is None:
        chunk_epochs = max(1, math.ceil(epochs / 20))
    k = V.check_int(chunk_epochs, "chunk_epochs")
    bar = _progress_bar(epochs) if progress else None
    done = int(np.min(np.asarray(state.epoch)))
    try:
        while True:
            limit = min(epochs, done + k)
            state = advance(
                static, state, data, val_data, key, criteria, np.int32(limit)
            )
            reached = int(np.min(np.asarray(state.epoch)))
            if bar is not None:
                bar.update(max(reached, limit) - done)
                loss = np.asarray(state.history.loss)[
                    ..., max(reached - 1, 0) // static.stride
                ]
                bar.set_postfix(loss=f"{np.nanmean(loss):.4g}")
            done = max(reached, limit)
            running = np.asarray(state.status) == Status.RUNNING
            if not running.any():
                break
            if callback is not None and callback(state):
                state = state._replace(
                    status=jnp.where(running, Status.CALLBACK, state.status).astype(
                        jnp.int32
                    ),
                    stop_epoch=jnp.where(running, state.epoch - 1, state.stop_epoch),
                )
                break
            if done >= epochs:  # pragma: no cover - MAX_EPOCHS is set in-program
                break
    finally:
        if bar is not None:
            bar.close()
    return state


def _progress_bar(total: int):
    try:
        from tqdm.auto import tqdm
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "progress=True needs tqdm: pip install 'gdjax[progress]'."
        ) from e
    return tqdm(total=total, unit="epoch", leave=False)


def fit(
    loss: LossFn,
    params: Params,
    data: Batch,
    transform: optax.GradientTransformation,
    *,
    key: Key,
    epochs: int,
    regime: batching.Regime | None = None,
    max_steps: int | None = None,
    target_loss: float | None = None,
    grad_tol: float | None = None,
    tol: float | None = None,
    patience: int = 5,
    until: Callable | None = None,
    val_data: Batch | None = None,
    metric: Callable | None = None,
    monitors: Mapping[str, Callable] | None = None,
    monitor_every: int = 1,
    hyperparams: Mapping[str, Any] | None = None,
    chunk_epochs: int | None = None,
    callback: Callable[[FitResult], Any] | None = None,
    progress: bool = False,
    guard: bool = True,
    raise_on_nonfinite: bool = False,
    check_finite: bool = True,
    resume: FitResult | None = None,
    donate: bool = False,
    history_size: int = 10_000,
) -> FitResult:
    """Run gradient descent to a stop, as one compiled program.

    .. math:: \\theta_{t+1} = \\theta_t + u_t(\\nabla L_{B_t}(\\theta_t)),
       \\quad t = 0, 1, \\ldots \\text{ until a stopping criterion holds}

    Args:
      loss: ``loss(params, batch) -> scalar``; any jittable function (a
        :func:`gdjax.make_loss` loss also masks padded batches natively).
      params: initial parameters, any pytree of float arrays (flax, equinox...).
      data: a pytree of arrays sharing a leading example axis of length n,
        e.g. ``(x, y)``; it is put on the device once and batches are gathered.
      transform: an optax ``GradientTransformation`` (``gd.sgd(...)`` or any
        optax chain).
      key: the run's PRNG key; it decides the data order (epoch e uses
        ``fold_in(key, e)``) and nothing else.
      epochs: the epoch budget (and the length of the history).
      regime: :func:`gdjax.full_batch` (default), :func:`gdjax.stochastic` or
        :func:`gdjax.minibatch`.
      max_steps, target_loss, grad_tol, tol, patience, until: stopping
        criteria, see :mod:`gdjax.stopping`; ``None`` turns one off.
      val_data: held-out data, evaluated with ``loss`` after every epoch.
      metric: ``metric(params, batch) -> scalar`` recorded after every epoch
        on ``val_data`` (or on ``data`` without it).
      monitors: ``{name: fn(params, data) -> scalar}`` recorded every
        ``monitor_every`` epochs (e.g. sharpness, see :mod:`gdjax.diagnostics`).
      hyperparams: numbers to set in the transform's injected hyperparameters
        (``{"learning_rate": 0.1}``); arrays, so new values do not recompile.
      chunk_epochs: run in compiled chunks of this many epochs (one program,
        reused) so ``callback``/``progress`` can see the run; the result is
        bitwise that of the single-program run.
      callback: ``callback(state) -> bool`` after every chunk; truthy stops.
      progress: show a tqdm progress bar (``gdjax[progress]``).
      guard: check loss, gradients and new parameters for NaN/inf every step.
      raise_on_nonfinite: raise :class:`~gdjax.errors.NonFiniteError` (with
        the result attached) instead of returning a failed result.
      check_finite: refuse data that contains NaN or inf.
      resume: a :class:`FitResult` to continue (same loss, data, budget).
      donate: donate the run state's buffers to the program (saves memory on
        large models; the ``params`` you passed must not be used afterwards).
      history_size: the most history rows kept. With more epochs than this,
        row ``e // stride`` holds epoch e's record (the last of each window of
        ``stride = ceil(epochs / history_size)`` epochs), so memory stays
        bounded however long the run.

    Returns:
      A :class:`FitResult`: ``params``, ``opt_state``, ``history``, ``epoch``,
      ``steps``, ``status`` (see ``result.reason``).

    Examples:
      >>> import jax, jax.numpy as jnp, gdjax as gd
      >>> x = jnp.array([[1.0], [2.0], [3.0]]); y = 2.0 * x[:, 0]
      >>> loss = gd.make_loss(gd.models.linear, gd.losses.squared_error)
      >>> params = {"w": jnp.zeros((1, 1)), "b": jnp.zeros(1)}
      >>> r = gd.fit(loss, params, (x, y), gd.sgd(0.2), key=jax.random.key(0),
      ...            epochs=2000, grad_tol=1e-4)
      >>> r.stopped_by.name, round(float(r.params["w"][0, 0]), 3)
      ('GRAD_TOL', 2.0)
    """
    prepared = prepare(
        loss,
        params,
        data,
        transform,
        key=key,
        epochs=epochs,
        regime=regime,
        max_steps=max_steps,
        target_loss=target_loss,
        grad_tol=grad_tol,
        tol=tol,
        patience=patience,
        until=until,
        val_data=val_data,
        metric=metric,
        monitors=monitors,
        monitor_every=monitor_every,
        hyperparams=hyperparams,
        guard=guard,
        check_finite=check_finite,
        resume=resume,
        history_size=history_size,
    )
    result = drive(
        prepared,
        advance=_advance_donated if donate else _advance,
        chunk_epochs=chunk_epochs,
        callback=callback,
        progress=progress,
    )
    if raise_on_nonfinite and result.failed:
        raise NonFiniteError(describe_stop(result), result)
    return result


__all__ = ["FitResult", "History", "describe_stop", "fit", "prepare", "run_epochs"]
