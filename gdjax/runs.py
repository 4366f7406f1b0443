r"""The host side of a run: prepare, drive in chunks, finish.

Every entry point that trains goes through here:

1. :func:`prepare` validates the arguments (NumPy and ``jax.eval_shape``
   only: nothing compiles), resolves the regime against the data and builds a
   :class:`Run`: the static :class:`~gdjax.loop.Program`, the initial
   :class:`~gdjax.loop.RunState` (or the one a ``resume=`` result holds) and
   the :class:`~gdjax.loop.Inputs`.
2. :func:`drive` calls a compiled program (:data:`gdjax.loop.advance`, its
   donated or vmapped form, or a streaming chunk program) once, or chunk by
   chunk with a progress bar and a callback that sees every chunk, the last
   one included.
3. :func:`finish` wraps the state in a :class:`~gdjax.FitResult` and raises
   :class:`~gdjax.NonFiniteError` if asked.

:func:`fit` is those three calls. The options of a run are the values of
:mod:`gdjax.spec`; flat keywords build them.
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
from gdjax import batching, loop, loss_forms, spec
from gdjax._typing import Batch, Key, LossFn, Params, PyTree
from gdjax.errors import GdjaxTypeError, GdjaxValueError, NonFiniteError
from gdjax.loop import Inputs, Program, RunState
from gdjax.loss_forms import LossSpec
from gdjax.results import FitResult, describe_stop, gather
from gdjax.spec import Driving, Recording, Stopping
from gdjax.stopping import Status
from gdjax.transforms import get_hyperparams, hyperparam_names, set_hyperparams

FAST_STEP = 65_536
"""Steps of at most this many batch x parameter products are checked per epoch
in a program that keeps the replay inside (a sweep, a run with ``max_steps``);
a single run without ``max_steps`` is checked per epoch at any size
(:func:`single_program`)."""
UNROLL_STEP = 4_096
"""Steps of at most this many products run 2 to an iteration of the scan."""
TINY_STEP = 256
"""In a lean run (``guard=False, step_stats=False``), steps of at most this many
products run 4 to an iteration (batch-1 SGD on a linear model, the benchmark's
W5: 1.11x instead of 1.26x the hand-fused run, 2 CPU cores)."""


class Run(NamedTuple):
    """A validated run, ready to compile: what :func:`prepare` returns.

    Attributes:
      program: the static :class:`~gdjax.loop.Program`.
      state: the initial :class:`~gdjax.loop.RunState` (None when abstract).
      inputs: the :class:`~gdjax.loop.Inputs` the run reads.
      dtype: the loss's dtype (the history's and the thresholds').
    """

    program: Program
    state: RunState | None
    inputs: Inputs
    dtype: np.dtype


def check_transform(transform: Any) -> None:
    """An optax ``GradientTransformation`` (``init`` and ``update``)."""
    if not (
        callable(getattr(transform, "init", None))
        and callable(getattr(transform, "update", None))
    ):
        hint = (
            " (a factory: call it, e.g. gd.sgd(0.1))"
            if callable(transform) and not hasattr(transform, "init")
            else ""
        )
        raise GdjaxTypeError(
            "transform must be an optax GradientTransformation (gd.sgd(...), "
            f"optax.chain(...)), got {V.describe(transform)}{hint}."
        )


def use_dtypes(params: Params, stored: Any = None) -> list[np.dtype]:
    """The dtypes a hyperparameter takes in a run: as stored, and as cast to each
    float dtype of ``params`` (gd.sgd casts it to the leaf it multiplies)."""
    leaves = [np.dtype(leaf.dtype) for leaf in jax.tree.leaves(params)]
    out = [] if stored is None else [np.dtype(stored)]
    for dt in leaves:
        if jnp.issubdtype(dt, jnp.floating) and dt not in out:
            out.append(dt)
    return out


def check_transform_values(transform: Any, params: Params) -> tuple[list, list, dict]:
    """``(settable, scheduled, stored)``: the transform's injected hyperparameters.

    Read from ``transform.init`` traced abstractly (nothing compiles); each
    number the transform holds is range-checked as its state stores it and in
    each params dtype it is cast to (``gd.sgd(1e-50)`` is a learning rate of 0
    in float32, ``gd.sgd(1e-8)`` one of 0 for float16 params).

    Remembered per ``transform.init`` and params signature (the numbers live in
    ``init``'s closure): a loop of ``fit`` calls with one transform traces it
    once.
    """
    return V.memo(
        ("transform-values", transform.init, V.signature(params)),
        lambda: _transform_values(transform, params),
    )


def _transform_values(transform: Any, params: Params) -> tuple[list, list, dict]:
    with np.errstate(over="ignore", under="ignore"):  # a cast the check reports
        state = V.abstract_values(transform.init, params)
    settable, scheduled = hyperparam_names(state)
    stored = get_hyperparams(state) if settable or scheduled else {}
    for name in settable:
        value = stored[name]
        if isinstance(value, np.ndarray):
            for dtype in [None, *use_dtypes(params, value.dtype)]:
                V.check_range(
                    value,
                    f"the transform's {name}",
                    key=name,
                    dtype=dtype,
                    what=f" (as its state stores it, in {value.dtype})",
                )
    return settable, scheduled, stored


def check_fit_hyperparams(hyperparams: Any, transform: Any, params: Params) -> None:
    """``fit(hyperparams=...)``: known, settable names; one number each, in range
    in the dtype the optimizer state holds it in."""
    settable, scheduled, stored = check_transform_values(transform, params)
    if hyperparams is None:
        return
    values = V.check_hyperparams(hyperparams, scalar=True)
    for name in values:
        if name in scheduled:
            raise GdjaxValueError(
                f"hyperparams[{name!r}] is driven by a schedule in the transform; "
                f"setting it would have no effect. Settable: {settable}."
            )
        if name in settable:
            continue
        if not settable:
            raise GdjaxValueError(
                f"hyperparams={sorted(values)} sets a transform's injected "
                "hyperparameters, but this transform holds none (a plain optax "
                "transform such as optax.sgd(0.1)?): build it with gd.sgd(...) or "
                "optax.inject_hyperparams(optax.sgd)(learning_rate=...)."
            )
        raise GdjaxValueError(
            f"unknown hyperparameter {name!r}; opt_state holds {settable}."
        )
    for n in values:
        for dtype in use_dtypes(params, stored[n].dtype):
            V.check_hyperparams({n: values[n]}, dtypes={n: dtype}, scalar=True)


def step_size(params: Params, plan: batching.Plan) -> int:
    """Batch size times parameter count: how big one step is.

    At or below :data:`FAST_STEP` the per-step NaN/inf test (a reduction per
    leaf, a select per leaf) costs as much as the step itself, so the epoch
    runs unchecked and is tested once (:func:`gdjax.loop.fast_epoch`); with
    the replay in the program that compiles the step twice, which only pays
    for such steps (a single run without ``max_steps`` replays on the host,
    :func:`single_program`, and takes the fast path at any size). At or below
    :data:`UNROLL_STEP` even XLA's loop (about a microsecond per iteration on
    CPU, as much as a batch-1 logistic-regression step) is worth amortizing.
    """
    size = sum(math.prod(np.shape(p)) for p in jax.tree.leaves(params))
    return plan.batch_size * size


def abstract_batch(data: Batch, b: int) -> Batch:
    """The shapes of one batch of ``b`` examples of ``data``."""
    return jax.tree.map(
        lambda a: jax.ShapeDtypeStruct((b,) + tuple(a.shape[1:]), a.dtype), data
    )


def _plan(regime: batching.Regime, n: int, loss: LossFn) -> batching.Plan:
    with V.boundary():
        plan = batching.plan(regime, n)
    if plan.steps < 1:
        raise GdjaxValueError(
            f"regime {regime.describe()} leaves zero steps per epoch for n={n} "
            "examples; use a smaller batch_size."
        )
    if plan.masked and not getattr(loss, "accepts_weights", False):
        short = n - (plan.steps - 1) * plan.batch_size
        raise GdjaxValueError(
            f"last_batch='pad' needs a loss that takes per-example weights: "
            f"{regime.describe()} on n={n} examples leaves a last batch of {short}, "
            "and padding it would change a loss that is not a mean of per-example "
            "terms (a sum, batch statistics). Pass gd.minibatch(..., "
            "last_batch='drop') to skip the short batch, or a loss from "
            "gd.make_loss / gd.with_example_weights (a declared per-example mean)."
        )
    return plan


def _trace_loss(loss: LossFn, params: Params, batch: Batch) -> V.LossTrace:
    def check() -> V.LossTrace:
        return V.trace_loss(
            loss,
            params,
            batch,
            aux_hint="fit needs the value alone: pass lambda p, b: loss(p, b)[0]",
        )

    # Traced checks depend only on the functions and the signatures: once each.
    return V.memo(("fit-loss", loss, V.signature(params, batch)), check)


def _check_val_data(loss: LossFn, params: Params, val_data: Batch, data: Batch):
    try:
        jax.eval_shape(loss, params, val_data)
    except Exception as e:  # noqa: BLE001 - reworded, JAX's error chained
        kind = GdjaxValueError if isinstance(e, ValueError) else GdjaxTypeError
        raise kind(
            f"val_data does not fit loss: loss(params, val_data) fails on "
            f"val_data {V.shapes(val_data)} (data is {V.shapes(data)}): "
            f"{type(e).__name__}: {(str(e).splitlines() or [''])[0]}"
        ) from e


def _check_update(transform, params: Params, opt_state: PyTree) -> None:
    def check() -> bool:
        grads = jax.eval_shape(lambda p: p, params)
        updates = jax.eval_shape(transform.update, grads, opt_state, params)
        V.check_same_structure(params, updates[0], "params", "the transform's updates")
        return True

    V.memo(("update", transform.update, V.signature(params, opt_state)), check)


def _check_data_and_loss(
    loss, params, data, val_data, regime, epochs, stopping, driving
) -> tuple[Batch, Batch | None, batching.Plan, V.LossTrace]:
    """Data, the batching plan and the traced loss."""
    n = V.check_data(data, "data", check_finite=driving.check_finite)
    plan = _plan(regime, n, loss)
    if stopping.max_steps is None and epochs * plan.steps > V.INT32_MAX:
        raise GdjaxValueError(
            f"epochs={epochs} at {plan.steps} steps per epoch is "
            f"{epochs * plan.steps} steps, past 2**31 - 1 (the run counts steps in "
            "int32); lower epochs or pass max_steps."
        )
    batch = abstract_batch(data, plan.batch_size)
    if isinstance(loss, LossSpec):
        if val_data is not None:
            V.check_data(val_data, "val_data", check_finite=driving.check_finite)
        state = loss_forms.initial_state(loss, params, abstract=True)
        trace = loss_forms.check_loss(loss, params, batch, state, val_data)
    else:
        loss_forms.check_plain(loss)
        trace = _trace_loss(loss, params, batch)
    V.warn_ignored_batch(trace)
    if val_data is not None and not isinstance(loss, LossSpec):
        V.check_data(val_data, "val_data", check_finite=driving.check_finite)
        _check_val_data(loss, params, val_data, data)
    if hasattr(loss, "check_data"):
        with V.boundary():
            loss.check_data(params, data)
            if val_data is not None:
                loss.check_data(params, val_data)
    return data, val_data, plan, trace


def check_recording(
    stopping: Stopping,
    recording: Recording,
    params: Params,
    data: Batch,
    val_data: Batch | None,
    dtype: Any,
    epochs: int,
    loss_state: PyTree | None = None,
) -> None:
    """``metric``, ``monitors`` and ``until`` trace to scalars; thresholds are
    finite in the run's ``dtype`` (all abstract: nothing compiles).

    With a stateful loss (``loss_state`` its abstract state) the metric and
    the monitors are called ``fn(params, state, batch)``.
    """
    for name in ("target_loss", "grad_tol", "tol"):
        value = getattr(stopping, name)
        if value is not None:
            V.check_in_dtype(value, name, dtype)
    ps, with_state = (params,), ""
    if loss_state is not None:
        ps, with_state = (params, loss_state), "state, "
    checks = [
        (
            "metric",
            recording.metric,
            f"metric(params, {with_state}batch)",
            (*ps, data if val_data is None else val_data),
        ),
    ]
    checks += [
        (
            f"monitors[{n!r}]",
            fn,
            f"monitors[{n!r}](params, {with_state}data)",
            (*ps, data),
        )
        for n, fn in recording.monitors
    ]
    if stopping.until is not None:
        names = tuple(n for n, _ in recording.monitors)
        history = loop.initial_state(rows(epochs, recording), names, None, None, dtype)
        epoch = jax.ShapeDtypeStruct((), np.int32)
        checks.append(
            ("until", stopping.until, "until(history, epoch)", (history.history, epoch))
        )
    for name, fn, call, args in checks:
        if fn is not None:
            V.memo(
                ("scalar-fn", fn, V.signature(*args)),
                functools.partial(V.check_scalar_fn, fn, args, name, call),
            )


def warn_if_stuck(state: RunState) -> None:
    """Warn (:class:`~gdjax.errors.ZeroGradientWarning`) when the gradient was
    exactly zero in every parameter throughout the first epoch: plain descent
    never moved.

    Read from the run's own history (its first row's mean gradient norm), so
    it costs no program of its own: a first call compiles the run and nothing
    else.
    """
    grad_norm = np.asarray(jax.device_get(state.history.grad_norm))
    epoch = np.asarray(jax.device_get(state.history.epoch))
    if grad_norm.ndim == 1 and grad_norm.size and epoch[0] == 1:
        V.warn_zero_gradient(bool(grad_norm[0] == 0))


def make_program(
    loss: LossFn,
    params: Params,
    transform: Any,
    *,
    regime: batching.Regime,
    plan: batching.Plan,
    epochs: int,
    stopping: Stopping,
    recording: Recording,
    has_val: bool,
) -> tuple[Program, tuple]:
    """The static program of a run and the loss's numeric leaves."""
    loss_static, loss_leaves = loop.split_callable(loss)
    size = step_size(params, plan)
    program = Program(
        loss=loss_static,
        update=transform.update,
        regime=regime,
        plan=plan,
        epochs=epochs,
        stride=recording.stride(epochs),
        guard=stopping.guard,
        until=stopping.until,
        metric=recording.metric,
        monitors=recording.monitors,
        monitor_every=recording.monitor_every,
        has_val=has_val,
        fast=size <= FAST_STEP,
        unroll=_unroll(size, stopping, recording),
        bounded=stopping.max_steps is not None,
        step_stats=recording.step_stats,
    )
    return program, loss_leaves


def _unroll(size: int, stopping: Stopping, recording: Recording) -> int:
    """Steps per scan iteration: 4 for tiny steps in a lean run (no guard, no
    step statistics: the step is a gradient and an update), 2 for small
    steps, else 1. Unrolling copies the step in the program: a lean tiny
    step is cheap to copy, a checked one (the fast path's replay included)
    is not, and 4 copies of it cost more at the first call (0.45 s on W5)
    than they save in a run (7%)."""
    lean = not (stopping.guard or recording.step_stats)
    if size <= TINY_STEP and lean:
        return 4
    return 2 if size <= UNROLL_STEP else 1


def rows(epochs: int, recording: Recording) -> int:
    """History rows of a run of ``epochs`` epochs."""
    return -(-epochs // recording.stride(epochs))


def prepare(
    loss: LossFn,
    params: Params,
    data: Batch,
    transform: Any,
    *,
    key: Key,
    epochs: int,
    regime: batching.Regime | None = None,
    val_data: Batch | None = None,
    hyperparams: Mapping[str, Any] | None = None,
    resume: FitResult | None = None,
    stopping: Stopping,
    recording: Recording,
    driving: Driving,
    abstract: bool = False,
) -> Run:
    """Validate every argument of a run on the host and build it.

    Nothing here compiles an XLA program; shapes come from ``jax.make_jaxpr``
    and ``jax.eval_shape``. With ``abstract=True`` (a sweep's planner)
    ``params`` may hold ``jax.ShapeDtypeStruct`` leaves and no state is built.
    """
    regime = batching.full_batch() if regime is None else regime
    data = V.as_arrays(data, "data")
    val_data = None if val_data is None else V.as_arrays(val_data, "val_data")
    V.check_not_traced("gd.fit", params=params, data=data, val_data=val_data, key=key)
    V.check_key(key, wrap=False)
    epochs = V.check_count(epochs, "epochs")
    V.check_params(params, finite=driving.check_finite)
    check_transform(transform)
    data, val_data, plan, trace = _check_data_and_loss(
        loss, params, data, val_data, regime, epochs, stopping, driving
    )
    dtype = trace.dtype
    loss_state = None
    if isinstance(loss, LossSpec) and loss.has_state:
        loss_state = loss_forms.initial_state(loss, params, abstract=True)
    check_recording(
        stopping, recording, params, data, val_data, dtype, epochs, loss_state
    )
    check_fit_hyperparams(hyperparams, transform, params)
    program, loss_leaves = make_program(
        loss,
        params,
        transform,
        regime=regime,
        plan=plan,
        epochs=epochs,
        stopping=stopping,
        recording=recording,
        has_val=val_data is not None,
    )
    inputs = Inputs(
        data=_on_device(data),
        val_data=None if val_data is None else _on_device(val_data),
        key=key if abstract else V.check_key(key),
        criteria=stopping.criteria(dtype),
        loss_leaves=loss_leaves,
    )
    if abstract:
        _check_update(transform, params, jax.eval_shape(transform.init, params))
        return Run(program, None, inputs, dtype)
    state = _start_state(
        transform, params, epochs, recording, dtype, hyperparams, resume, loss
    )
    _check_update(transform, params, state.opt_state)
    return Run(program, state, inputs, dtype)


def _on_device(tree: Any) -> Any:
    """Host arrays onto the default device; JAX arrays stay where they are
    (data already sharded, over processes too, is not moved)."""
    return jax.tree.map(
        lambda a: a if isinstance(a, jax.Array) else jax.device_put(a), tree
    )


def _start_state(
    transform, params, epochs, recording, dtype, hyperparams, resume, loss=None
) -> RunState:
    n_rows = rows(epochs, recording)
    names = tuple(name for name, _ in recording.monitors)
    if resume is None:
        opt_state = transform.init(params)
        loss_state = loss_forms.initial_state(loss, params)
        state = loop.initial_state(
            n_rows, names, params, opt_state, dtype, loss_state
        )
    else:
        state = resume_state(resume, transform, params, epochs, recording)
        V.check_same_structure(
            loss_forms.initial_state(loss, params, abstract=True),
            state.loss_state,
            "the loss's state",
            "resume's loss state",
            dtypes=True,
        )
    if hyperparams:
        state = state._replace(
            opt_state=set_hyperparams(state.opt_state, **hyperparams)
        )
    return state


def resume_state(
    resume: Any, transform: Any, params: Params, epochs: int, recording: Recording
) -> RunState:
    """The state that continues ``resume`` under this call's arguments.

    The run goes on from where ``resume`` stopped, whatever stopped it (its
    budget, a criterion, a callback, a NaN): its parameters, optimizer state,
    counters and history carry over; the history is laid out again for the
    new epoch budget (which may be larger); the status is reset to running.
    The transform's injected hyperparameters are this call's (a new
    ``gd.sgd(0.01)`` replaces the 0.1 the run had); a transform whose state
    has another structure is refused with the difference.
    """
    if not isinstance(resume, FitResult):
        raise GdjaxTypeError(
            f"resume must be a gd.FitResult, got {V.describe(resume)}."
        )
    old = resume.state
    if np.ndim(old.status) != 0:
        raise GdjaxValueError(
            "resume must be a single run's FitResult, got a stacked one of shape "
            f"{np.shape(old.status)}; take a member first (sweep.member(...))."
        )
    V.check_same_structure(params, old.params, "params", "resume.params", dtypes=True)
    ran = int(old.epoch)
    if ran >= epochs:
        raise GdjaxValueError(
            f"resume has already run {ran} epochs and epochs={epochs} leaves none to "
            f"run; pass the new total budget, e.g. epochs={ran + epochs}."
        )
    names = sorted(name for name, _ in recording.monitors)
    if sorted(old.history.monitors) != names:
        raise GdjaxValueError(
            f"resume records monitors {sorted(old.history.monitors)}, but this "
            f"call asks for {names}."
        )
    fresh = jax.eval_shape(transform.init, params)
    V.check_same_structure(
        fresh, old.opt_state, "transform.init(params)", "resume.opt_state", dtypes=True
    )
    opt_state = old.opt_state
    settable, _ = hyperparam_names(fresh)
    if settable:
        # The new transform's numbers (cheap: init is zeros and constants); a
        # scheduled one is driven by the state's step count, which carries over.
        numbers = get_hyperparams(transform.init(params))
        opt_state = set_hyperparams(opt_state, **{n: numbers[n] for n in settable})
    history = _relayout(jax.device_get(old.history), epochs, recording)
    return old._replace(
        opt_state=opt_state,
        history=history,
        status=np.asarray(Status.RUNNING, np.int32),
    )


def _relayout(history: loop.History, epochs: int, recording: Recording) -> loop.History:
    """The rows of an old history placed for a new budget (stride may change)."""
    stride = recording.stride(epochs)
    n_rows = -(-epochs // stride)
    old_epoch = np.asarray(history.epoch)
    where = np.flatnonzero(old_epoch > 0)
    slots = (old_epoch[where] - 1) // stride

    def place(values: np.ndarray, fill: Any) -> np.ndarray:
        values = np.asarray(values)
        out = np.full((n_rows,), fill, values.dtype)
        out[slots] = values[where]  # in order: the last epoch of a window wins
        return out

    nan = np.nan
    return loop.History(
        epoch=place(history.epoch, 0),
        loss=place(history.loss, nan),
        grad_norm=place(history.grad_norm, nan),
        val_loss=place(history.val_loss, nan),
        metric=place(history.metric, nan),
        monitors={k: place(v, nan) for k, v in history.monitors.items()},
    )


# ------------------------------------------------------------------------ driving


def progress_bar(total: int | None, done: int):
    """A tqdm bar over epochs (``gdjax[progress]``)."""
    try:
        from tqdm.auto import tqdm
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "progress=True needs tqdm: pip install 'gdjax[progress]'."
        ) from e
    return tqdm(total=total, initial=done, unit="epoch", leave=False)


def stop_running(state: RunState, status: Status) -> RunState:
    """``state`` with every member still running stopped with ``status``."""
    # On the devices: the members may be split over processes.
    running = jnp.asarray(state.status) == Status.RUNNING
    return state._replace(
        status=jnp.where(running, np.int32(status), state.status).astype(jnp.int32)
    )


def drive(
    run: Run,
    *,
    advance: Callable,
    driving: Driving,
    wrap: Callable[[RunState], Any] = FitResult,
    donates: bool = False,
) -> RunState:
    """Run a prepared program to its end, in one call or in chunks of epochs.

    ``advance(program, state, inputs, epoch_limit)`` is the compiled program.
    Chunked (``driving.chunked``), the same program is called again with a
    larger ``epoch_limit``; after every chunk, the last one included, the host
    updates the progress bar and calls ``driving.callback(wrap(state))``; a
    truthy return stops the members still running with ``Status.CALLBACK``.
    """
    program, state, inputs, _ = run
    epochs = program.epochs
    if not driving.chunked:
        return advance(program, state, inputs, np.int32(epochs))
    k = driving.chunk_epochs or max(1, math.ceil(epochs / 20))
    done = int(np.min(gather(state.epoch)))
    bar = progress_bar(epochs, done) if driving.progress else None
    try:
        while True:
            limit = min(epochs, done + k)
            state = advance(program, state, inputs, np.int32(limit))
            # Gathered: the members of a sweep may be split over processes.
            status, epochs_now, hist = gather(
                (state.status, state.epoch, state.history.loss)
            )
            reached = int(np.min(epochs_now))
            new_done = max(reached, limit)
            if bar is not None:
                bar.update(new_done - done)
                row = max(int(np.max(epochs_now)) - 1, 0) // program.stride
                bar.set_postfix(loss=f"{np.nanmean(np.asarray(hist)[..., row]):.4g}")
            done = new_done
            running = np.asarray(status) == Status.RUNNING
            asked = driving.callback is not None and driving.callback(
                wrap(callback_view(state, donates))
            )
            if not running.any() or done >= epochs:
                break
            if asked:
                state = stop_running(state, Status.CALLBACK)
                break
    finally:
        if bar is not None:
            bar.close()
    return state


def callback_view(state: RunState, donates: bool) -> RunState:
    """What a callback may keep: a copy when the next chunk donates ``state``
    (a host copy when the members are split over processes: no process could
    read them otherwise)."""
    split = any(
        isinstance(a, jax.Array)
        and not (a.is_fully_addressable or a.is_fully_replicated)
        for a in jax.tree.leaves(state)
    )
    if split:
        return gather(state)
    if not donates:
        return state
    return jax.tree.map(lambda a: a.copy() if isinstance(a, jax.Array) else a, state)


def finish(state: RunState, driving: Driving) -> FitResult:
    """The :class:`~gdjax.FitResult` of a single run (raising if asked)."""
    result = FitResult(state)
    if driving.raise_on_nonfinite and result.failed:
        raise NonFiniteError(describe_stop(state), result)
    return result


def single_program(program: Program) -> Program:
    """The program :class:`replaying` compiles first for a single run.

    Without ``max_steps`` every epoch takes the fast path (``fast=True``),
    whatever the size of its steps, and without its replay
    (``replay=False``): the steps run unchecked and the epoch is tested once.
    That program is the smallest to compile (compile alone, fastest of 3 from
    cold caches, ``python benchmarks/compile_time.py``: W2 0.47 -> 0.31 s, W3
    0.62 -> 0.40 s, W5 0.55 -> 0.36 s) and does not check every step. (With
    ``max_steps`` the last epoch is in trouble in every run that reaches it:
    the program stays as prepared, its replay inside.)
    """
    if program.bounded:
        return program
    return program._replace(fast=True, replay=False)


class replaying:  # noqa: N801 - used as a function: advance = replaying(...)
    """A single run's ``advance``, with the fast path's replay done on the host.

    ``replaying(jitted)(program, state, inputs, epoch_limit)`` runs
    :func:`single_program`'s program. An epoch in trouble comes back unrun
    (:data:`gdjax.loop.REPLAY`): a NaN or inf, or (rarely) a loss or
    gradient-norm sum that overflowed although every step was finite. The
    checked program (``fast=False``, compiled only then) runs it, which gives
    the bits the in-program replay gives, and goes on to ``epoch_limit``
    itself: a run that a NaN stops stops there, and one whose sums overflow
    is not handed back epoch after epoch. The status is read after each call
    (the end of a run reads it anyway). ``lower(program, ...)`` lowers the
    program it compiles first (for memory figures).
    """

    def __init__(self, jitted: Any):
        self.jitted = jitted

    def __call__(
        self, program: Program, state: RunState, inputs: Inputs, epoch_limit: Any
    ) -> RunState:
        fast = single_program(program)
        state = self.jitted(fast, state, inputs, epoch_limit)
        if fast.replay:
            return state
        status = int(gather(state.status))
        if status != loop.REPLAY:
            return state
        state = state._replace(status=np.int32(Status.RUNNING))
        return self.jitted(program._replace(fast=False), state, inputs, epoch_limit)

    def lower(self, program: Program, *args: Any) -> Any:
        """``jitted.lower`` of the program a call compiles first."""
        return self.jitted.lower(single_program(program), *args)


advance = replaying(loop.advance)
"""The compiled run of one member (:data:`gdjax.loop.advance`, :func:`replaying`)."""

advance_donated = replaying(loop.advance_donated)
"""As :data:`advance`, donating the state's buffers."""


def advance_for(driving: Driving) -> Callable:
    """The compiled single-run program ``driving`` asks for (donating or not,
    its ``compiler_options``)."""
    if not driving.compiler_options:
        return advance_donated if driving.donate else advance
    jitted = loop.jit_run(
        loop.run_epochs, donate=driving.donate, options=driving.compiler_options
    )
    return replaying(jitted)


# ----------------------------------------------------------------------------- fit


def fit(
    loss: LossFn,
    params: Params,
    data: Batch,
    transform: optax.GradientTransformation,
    *,
    key: Key,
    epochs: int,
    regime: batching.Regime | None = None,
    val_data: Batch | None = None,
    hyperparams: Mapping[str, Any] | None = None,
    resume: FitResult | None = None,
    stopping: Stopping | None = None,
    recording: Recording | None = None,
    driving: Driving | None = None,
    **options: Any,
) -> FitResult:
    r"""Run gradient descent to a stop, as one compiled program.

    .. math:: \theta_{t+1} = \theta_t + u_t(\nabla L_{B_t}(\theta_t)),
       \quad t = 0, 1, \ldots \text{ until a stopping criterion holds}

    Args:
      loss: ``loss(params, batch) -> scalar``; any jittable function. A loss
        that declares per-example weights (``gd.make_loss``,
        ``gd.with_example_weights``) also masks a padded last batch. A loss
        that takes a key each step or carries a state is declared with
        :func:`gdjax.keyed` or :func:`gdjax.stateful` (see
        :mod:`gdjax.loss_forms`); its state ends in ``result.loss_state``.
      params: initial parameters, any pytree of float arrays (flax, equinox...).
      data: a pytree of arrays sharing a leading example axis of length n,
        e.g. ``(x, y)``; put on the device once and gathered into batches.
      transform: an optax ``GradientTransformation`` (``gd.sgd(...)`` or any
        optax chain).
      key: the run's PRNG key; it decides the data order (epoch e uses
        ``fold_in(key, e - 1)``) and, for a keyed loss, the loss's keys
        (:func:`gdjax.step_key`), and nothing else.
      epochs: the epoch budget (and the length of the history).
      regime: :func:`gdjax.full_batch` (default), :func:`gdjax.stochastic` or
        :func:`gdjax.minibatch`.
      val_data: held-out data, evaluated with ``loss`` after every epoch.
      hyperparams: numbers to set in the transform's injected hyperparameters
        (``{"learning_rate": 0.1}``); arrays, so new values do not recompile.
      resume: a :class:`~gdjax.FitResult` to continue, whatever stopped it;
        ``epochs`` is the new total budget, and this call's transform
        hyperparameters apply.
      stopping, recording, driving: the options of the run as
        :class:`gdjax.spec.Stopping`, :class:`gdjax.spec.Recording`,
        :class:`gdjax.spec.Driving` values.
      **options: the fields of those values as flat keywords, e.g.
        ``target_loss=0.05``, ``tol=1e-3, patience=5``, ``max_steps``,
        ``grad_tol``, ``until``, ``guard``; ``metric``, ``monitors``,
        ``monitor_every``, ``history_size``; ``chunk_epochs``, ``callback``,
        ``progress``, ``donate``, ``raise_on_nonfinite``, ``check_finite``.

    Returns:
      A :class:`~gdjax.FitResult`: ``params``, ``opt_state``, ``history`` (the
      epochs run), ``epoch``, ``steps``, ``status``, ``reason``.

    Raises:
      GdjaxTypeError, GdjaxValueError: (subclasses of ``TypeError`` and
        ``ValueError``) before anything compiles, for any argument gdjax can
        tell is wrong: the table in ``docs/bad_inputs.md``. Numbers are checked
        in the dtype they take in the run (``gd.sgd(1e-50)`` is 0 in float32).
      NonFiniteError: with ``raise_on_nonfinite=True``, when the run met NaN/inf.

    Warns:
      gdjax.errors.ZeroGradientWarning: the gradient on the first batch is
        exactly zero in every parameter (descent would not move).
      gdjax.errors.IgnoredBatchWarning: ``loss`` never reads its batch.

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
    stopping, recording, driving = spec.from_options(
        stopping, recording, driving, **options
    )
    run = prepare(
        loss,
        params,
        data,
        transform,
        key=key,
        epochs=epochs,
        regime=regime,
        val_data=val_data,
        hyperparams=hyperparams,
        resume=resume,
        stopping=stopping,
        recording=recording,
        driving=driving,
    )
    state = drive(
        run, advance=advance_for(driving), driving=driving, donates=driving.donate
    )
    if resume is None:
        warn_if_stuck(state)
    return finish(state, driving)


__all__ = [
    "FAST_STEP",
    "TINY_STEP",
    "UNROLL_STEP",
    "Run",
    "abstract_batch",
    "advance",
    "advance_donated",
    "advance_for",
    "callback_view",
    "check_transform",
    "drive",
    "finish",
    "fit",
    "make_program",
    "prepare",
    "progress_bar",
    "replaying",
    "resume_state",
    "rows",
    "single_program",
    "step_size",
    "stop_running",
]
