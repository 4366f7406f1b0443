r"""Gradient descent on a stream of batches: data that does not fit on the device.

Contract. :func:`fit_stream` takes any iterable of equal-shaped host batches
(a NumPy generator, a ``torch.utils.data.DataLoader`` yielding arrays or CPU
tensors, a list...) and runs

.. math:: \theta_{t+1} = \theta_t + u_t\big(\nabla L_{B_t}(\theta_t)\big),
   \qquad B_t = \text{the } t\text{-th batch of the stream},

in *epochs of the stream*: ``steps_per_epoch`` batches are stacked on the
host, moved to the device in one transfer, and run as one call of one compiled
program (a ``lax.scan`` over the epoch's steps). The step is :func:`gdjax.fit`'s own:
each stream epoch is one epoch of :func:`gdjax.loop.run_epochs` over the
stacked batches in order, so the NaN/inf guard, the gradient-norm record, the
statuses and the stopping rules are the same code. The program is compiled
once and reused for every stream epoch; a last epoch with fewer batches is
padded (with copies of its last batch) and the padding is masked by a step
limit that is an argument, not a shape, so it does not recompile. A short
last *batch* follows ``last_batch`` as :func:`gdjax.minibatch` does: masked
padding for a loss that takes per-example weights (one more compile, for the
last epoch only), ``"drop"`` to skip it. While the device runs one
chunk the host stacks the next.

The stream over the same batches equals the in-memory run
``fit(loss, params, concat(batches), transform, regime=gd.minibatch(B,
shuffle=False))`` to float tolerance. The stream decides the order, so
the optional ``key`` only reaches losses that take one.

History. The result is a :class:`~gdjax.FitResult` whose epochs are stream
epochs: ``history.loss[c]`` is the mean loss over the steps of epoch ``c + 1``
(each at the parameters entering its step), ``grad_norm``, ``val_loss``,
``metric`` and ``monitors`` likewise per epoch, and the epoch-level criteria
(``target_loss``, ``grad_tol``, ``tol``/``patience``) are checked after every
epoch. ``max_steps`` stops at that exact step. A stream that runs out ends
with ``Status.STREAM_END``.

Overhead. Per epoch the host stacks ``steps_per_epoch`` batches and
transfers them, and reads the status back (one synchronization per epoch);
``benchmarks/streaming_overhead.py`` measures it against the in-memory
:func:`~gdjax.fit` over the same steps.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gdjax import _validate as V
from gdjax import batching, loop, members, runs, spec, stopping
from gdjax._sweep import check_sweep_driving
from gdjax._typing import Batch, Key, LossFn, Params
from gdjax.loop import Inputs, Program, RunState
from gdjax.results import FitResult, SweepResult
from gdjax.spec import Driving, Recording, Stopping
from gdjax.stopping import Status


def stream_epoch(
    program: Program, state: RunState, inputs: Inputs, valid: jax.Array
) -> RunState:
    """One stream epoch as one epoch of ``run_epochs`` (pure; vmappable).

    ``inputs.data`` holds the epoch's batches in order; ``valid`` is how many of
    them are real (the rest is padding, masked by a step limit). The state's
    history is a single row; ``state.epoch`` counts the stream epochs run.
    """
    was_running = state.status == Status.RUNNING
    criteria = inputs.criteria
    user_max = criteria.max_steps
    limit = jnp.minimum(user_max, state.steps + valid).astype(user_max.dtype)
    inner = state._replace(
        epoch=jnp.zeros_like(state.epoch),
        # NaN for the float series only: the int32 ``epoch`` row is zeroed.
        history=jax.tree.map(
            lambda a: jnp.full_like(a, jnp.nan), state.history._replace(epoch=None)
        )._replace(epoch=jnp.zeros_like(state.history.epoch)),
    )
    out = loop.run_epochs(
        program, inner, inputs._replace(criteria=criteria._replace(max_steps=limit)), 1
    )
    # MAX_STEPS below the user's limit is the end of the real batches:
    # run_epochs then skipped the epoch-level criteria, so apply them here.
    # MAX_EPOCHS is the end of this stream epoch: go on.
    verdict = stopping.epoch_status(
        criteria, out.history.loss[0], out.history.grad_norm[0], out.bad_epochs
    )
    status = jnp.where(
        (out.status == Status.MAX_STEPS) & (out.steps < user_max), verdict, out.status
    )
    status = jnp.where(status == Status.MAX_EPOCHS, Status.RUNNING, status)
    epoch = state.epoch + was_running.astype(state.epoch.dtype)
    return out._replace(
        epoch=epoch,
        status=status.astype(jnp.int32),
        history=out.history._replace(epoch=out.history.epoch.at[0].set(epoch)),
    )


def _members_epoch(program, state, inputs, valid):
    run = functools.partial(stream_epoch, program)
    return jax.vmap(run, in_axes=(0, loop.MEMBER_AXES, None))(state, inputs, valid)


# --------------------------------------------------------------------------- the stream


class Epoch(NamedTuple):
    """One stream epoch stacked on the host."""

    data: Any  # the batches, concatenated (padded to k batches with copies)
    valid: int  # real batches
    short: int  # real rows of a short last batch (0 if none)


_END = object()  # what next() returns past the end of the stream


class _Stream:
    """Stacks a stream's batches into epochs of ``k`` on the host."""

    def __init__(self, batches: Iterable, k: int, check_finite: bool, last_batch: str):
        self._it = iter(batches)
        self.k = k
        self.check_finite = check_finite
        self.last_batch = last_batch
        self.seen = 0
        self.treedef = None
        self.spec = None  # ((shape, dtype), ...) of one batch's leaves
        self.ended = False

    def _leaves(self, batch: Any) -> list[np.ndarray]:
        """One batch's leaves as host arrays, checked against the first batch."""
        leaves, treedef = jax.tree.flatten(batch)
        leaves = [np.asarray(a) for a in leaves]
        spec_ = tuple((a.shape, a.dtype) for a in leaves)
        if self.spec is None:
            V.check_data(
                treedef.unflatten(leaves), "the first batch", check_finite=False
            )
            self.treedef, self.spec = treedef, spec_
            return leaves
        same_tail = treedef == self.treedef and all(
            a.shape[1:] == s[1:] and a.dtype == d
            for a, (s, d) in zip(leaves, self.spec, strict=True)
        )
        rows = {a.shape[0] for a in leaves}
        if not same_tail or len(rows) != 1 or next(iter(rows)) > self.batch_size:
            raise ValueError(
                f"every batch of the stream must match the first one; batch "
                f"{self.seen} has shapes and dtypes "
                f"{tuple((a.shape, a.dtype) for a in leaves)}, expected {self.spec} "
                "(only the last batch may have fewer rows)."
            )
        return leaves

    @property
    def batch_size(self) -> int:
        return self.spec[0][0][0]

    def _check_finite(self, leaves: list[np.ndarray]) -> None:
        for leaf in leaves:
            if np.issubdtype(leaf.dtype, np.inexact) and not np.isfinite(leaf).all():
                raise ValueError(
                    f"batch {self.seen} of the stream contains NaN or inf; clean it "
                    "or pass check_finite=False."
                )

    def next(self) -> Epoch | None:
        """The next epoch (padded to k batches), or None at the end."""
        got: list[list[np.ndarray]] = []
        short = 0
        if self.ended:
            return None
        for batch in itertools.islice(self._it, self.k):
            if short:
                raise ValueError(
                    f"batch {self.seen - 1} of the stream is short but batch "
                    f"{self.seen} follows it: only the last batch may be short."
                )
            leaves = self._leaves(batch)
            if self.check_finite:
                self._check_finite(leaves)
            self.seen += 1
            rows = leaves[0].shape[0]
            if rows < self.batch_size:
                short = rows
                if self.last_batch == "drop":
                    continue
            got.append(leaves)
        if short and next(self._it, _END) is not _END:
            # The short batch ended this epoch's slice: look one batch ahead,
            # or the batches after it would be silently ignored.
            raise ValueError(
                f"batch {self.seen - 1} of the stream is short but batch "
                f"{self.seen} follows it: only the last batch may be short."
            )
        if len(got) < self.k or short:
            self.ended = True
        if not got:
            return None
        if short and self.last_batch == "pad":
            data = [np.concatenate(col, axis=0) for col in zip(*got, strict=True)]
            return Epoch(self.treedef.unflatten(data), len(got), short)
        valid = len(got)
        got += [got[-1]] * (self.k - valid)
        data = [np.concatenate(col, axis=0) for col in zip(*got, strict=True)]
        return Epoch(self.treedef.unflatten(data), valid, 0)


def _check_stream_args(
    steps_per_epoch: Any, last_batch: Any, loss: LossFn, driving: Driving
) -> int:
    k = V.check_count(steps_per_epoch, "steps_per_epoch")
    if last_batch not in ("pad", "drop"):
        raise ValueError(f"last_batch must be 'pad' or 'drop', got {last_batch!r}.")
    if last_batch == "pad" and not getattr(loss, "accepts_weights", False):
        raise ValueError(
            "last_batch='pad' (the default) needs a loss that takes per-example "
            "weights, to mask a short last batch of the stream; pass "
            "last_batch='drop' (skip a short last batch) or a loss from "
            "gd.make_loss / gd.with_example_weights."
        )
    if driving.chunk_epochs is not None:
        raise TypeError(
            "fit_stream runs one compiled call per stream epoch of steps_per_epoch "
            "batches; chunk_epochs does not apply (set steps_per_epoch instead)."
        )
    if driving.donate:
        raise TypeError("fit_stream always donates its state; drop donate=True.")
    return k


def _first(stream: _Stream) -> Epoch:
    first = stream.next()
    if first is None:
        raise ValueError("batches is empty: the stream yielded no batch.")
    return first


def _short_program(run: runs.Run, epoch: Epoch, stream: _Stream) -> Program:
    """The program of a last epoch that ends with a short batch (masked)."""
    b = stream.batch_size
    n = (epoch.valid - 1) * b + epoch.short
    regime = batching.minibatch(b, shuffle=False, last_batch="pad")
    return run.program._replace(
        regime=regime, plan=batching.plan(regime, n), fast=False
    )


def _drive(
    run: runs.Run,
    stream: _Stream,
    first: Epoch,
    *,
    advance: Callable,
    driving: Driving,
    place: Callable[[Any], Any] = jax.device_put,
) -> tuple[RunState, list[loop.History]]:
    """Run epoch after epoch, stacking the next on the host meanwhile."""
    program, state, inputs, _ = run
    # The program donates its state: copy the caller's arrays first.
    state = jax.device_put(state, may_alias=False)
    records: list[loop.History] = []
    bar = runs.progress_bar(None, 0) if driving.progress else None
    nxt: Epoch | None = first._replace(data=place(first.data))
    try:
        while nxt is not None:
            prog = program if not nxt.short else _short_program(run, nxt, stream)
            state = advance(
                prog, state, inputs._replace(data=nxt.data), np.int32(nxt.valid)
            )
            # Work on the host while the device runs this epoch.
            upcoming = (
                stream.next() if not nxt.short and nxt.valid == stream.k else None
            )
            nxt = (
                None
                if upcoming is None
                else upcoming._replace(data=place(upcoming.data))
            )
            history, status = jax.device_get((state.history, state.status))  # one sync
            records.append(history)
            if bar is not None:
                bar.update(1)
            running = np.asarray(status) == Status.RUNNING
            asked = driving.callback is not None and driving.callback(
                FitResult(_with_history(runs.callback_view(state, True), records))
            )
            if not running.any():
                break
            if asked:
                state = runs.stop_running(state, Status.CALLBACK)
                break
    finally:
        if bar is not None:
            bar.close()
    # The stream ran out: the members still going ran out of data.
    return runs.stop_running(state, Status.STREAM_END), records


def _with_history(state: RunState, records: list[loop.History]) -> RunState:
    """The state with its per-epoch records joined (one row per stream epoch)."""
    history = jax.tree.map(lambda *xs: np.concatenate(xs, axis=-1), *records)
    return state._replace(history=history)


def fit_stream(
    loss: LossFn,
    params: Params,
    batches: Iterable[Batch],
    transform: optax.GradientTransformation,
    *,
    steps_per_epoch: int,
    key: Key | None = None,
    val_data: Batch | None = None,
    hyperparams: Mapping[str, Any] | None = None,
    last_batch: str = "pad",
    stopping: Stopping | None = None,
    recording: Recording | None = None,
    driving: Driving | None = None,
    **options: Any,
) -> FitResult:
    r"""Run gradient descent over a stream of host batches, an epoch per call.

    .. math:: \theta_{t+1} = \theta_t + u_t\big(\nabla L_{B_t}(\theta_t)\big),
       \quad B_t = \text{batch } t \text{ of } \texttt{batches}

    Args:
      loss: ``loss(params, batch) -> scalar``.
      params: initial parameters.
      batches: an iterable of equal-shaped batches (pytrees of arrays with a
        leading example axis: NumPy arrays, CPU torch tensors, ...), the last
        of which may be shorter; consumed once, ``steps_per_epoch`` at a time
        (plus one epoch ahead).
      transform: an optax ``GradientTransformation``.
      steps_per_epoch: batches per stream epoch: one compiled call, one
        history row, one check of the criteria, one callback.
      key: the run's key (the stream fixes the data order; the key reaches
        only a loss that takes one).
      val_data, hyperparams: as for :func:`gdjax.fit`.
      last_batch: ``"pad"`` (a short last batch is padded and masked; needs
        a loss that takes per-example weights) or ``"drop"``.
      stopping, recording, driving: the options of :func:`gdjax.fit`
        (``chunk_epochs`` and ``donate`` excepted), also as flat keywords
        (``**options``).

    Returns:
      A :class:`~gdjax.FitResult` with one history row per stream epoch;
      ``Status.STREAM_END`` when the stream ran out.

    Examples:
      >>> import numpy as np, jax.numpy as jnp, gdjax as gd
      >>> rng = np.random.default_rng(0)
      >>> def stream(n):
      ...     for _ in range(n):
      ...         x = rng.normal(size=(8, 1)).astype(np.float32)
      ...         yield x, 2.0 * x[:, 0]
      >>> loss = gd.make_loss(gd.models.linear, gd.losses.squared_error)
      >>> params = {"w": jnp.zeros((1, 1)), "b": jnp.zeros(1)}
      >>> r = gd.fit_stream(loss, params, stream(50), gd.sgd(0.1),
      ...                   steps_per_epoch=16)
      >>> int(r.steps), int(r.epoch), r.stopped_by.name
      (50, 4, 'STREAM_END')
      >>> round(float(r.params["w"][0, 0]), 3)
      2.0
    """
    stopping, recording, driving = spec.from_options(
        stopping, recording, driving, **options
    )
    k = _check_stream_args(steps_per_epoch, last_batch, loss, driving)
    stream = _Stream(batches, k, driving.check_finite, last_batch)
    first = _first(stream)
    run = runs.prepare(
        loss,
        params,
        first.data,
        transform,
        key=jax.random.key(0) if key is None else key,
        epochs=1,
        regime=_first_regime(stream, first),
        val_data=val_data,
        hyperparams=hyperparams,
        stopping=stopping,
        recording=recording,
        driving=dataclasses.replace(driving, check_finite=False),
    )
    run = _bounded(run)
    advance = loop.jit_run(stream_epoch, donate=True, options=driving.compiler_options)
    state, records = _drive(run, stream, first, advance=advance, driving=driving)
    return runs.finish(_with_history(state, records), driving)


def _bounded(run: runs.Run) -> runs.Run:
    """A stream epoch ends its real batches at a step limit (:func:`stream_epoch`):
    its program is always ``bounded``, whether or not the user set ``max_steps``."""
    return run._replace(program=run.program._replace(bounded=True))


def _first_regime(stream: _Stream, first: Epoch) -> batching.Regime:
    """The regime of the first stream epoch: masked when it already ends short."""
    last = "pad" if first.short else "drop"
    return batching.minibatch(stream.batch_size, shuffle=False, last_batch=last)


def sweep_stream(
    loss: LossFn,
    init: Callable[[Key], Params] | Params,
    batches: Iterable[Batch],
    transform: optax.GradientTransformation,
    *,
    seeds: Sequence[int],
    steps_per_epoch: int,
    hyperparams: Mapping[str, Sequence[float]] | None = None,
    grid: bool = True,
    val_data: Batch | None = None,
    devices: int | Sequence[jax.Device] | None = None,
    last_batch: str = "pad",
    stopping: Stopping | None = None,
    recording: Recording | None = None,
    driving: Driving | None = None,
    **options: Any,
) -> SweepResult:
    r"""Many members on one stream: every epoch's batches are shared by all.

    The members (seeds x hyperparameter settings, as in :func:`gdjax.sweep`)
    run as ``vmap`` of :func:`fit_stream`'s epoch program, with the batches an
    unbatched argument: the stream is read once, whatever the number of
    members. Member :math:`(s, h)` equals ``fit_stream(loss,
    init(seed_keys(s)[0]), same batches, transform, hyperparams=h, ...)`` (to
    float tolerance; bit for bit from ``jax.jit(init)``, as for
    :func:`gdjax.sweep`).

    Args:
      loss, init, transform, seeds, hyperparams, grid, val_data, devices: as
        for :func:`gdjax.sweep`.
      batches, steps_per_epoch, last_batch: as for :func:`fit_stream`.
      stopping, recording, driving: as for :func:`gdjax.sweep`, also as flat
        keywords (``**options``).

    Returns:
      A :class:`~gdjax.SweepResult` (one history row per stream epoch).

    Examples:
      >>> import numpy as np, jax.numpy as jnp, gdjax as gd
      >>> x = np.linspace(-1, 1, 64, dtype=np.float32)[:, None]
      >>> stream = ((x[i:i + 8], 2.0 * x[i:i + 8, 0]) for i in range(0, 64, 8))
      >>> loss = gd.make_loss(gd.models.linear, gd.losses.squared_error)
      >>> params = {"w": jnp.zeros((1, 1)), "b": jnp.zeros(1)}
      >>> res = gd.sweep_stream(loss, params, stream, gd.sgd(0.1), seeds=[0],
      ...                       hyperparams={"learning_rate": [0.1, 0.5]},
      ...                       steps_per_epoch=4)
      >>> res.shape, res.result.steps.tolist()
      ((1, 2), [[8, 8]])
    """
    stopping, recording, driving = spec.from_options(
        stopping, recording, driving, **options
    )
    check_sweep_driving(driving, "sweep_stream()")
    k = _check_stream_args(steps_per_epoch, last_batch, loss, driving)
    seed_values = members.check_seeds(seeds)
    axes = members.sweep_axes(hyperparams, grid)
    device_list = members.check_devices(devices)
    stream = _Stream(batches, k, driving.check_finite, last_batch)
    first = _first(stream)
    plan = members.plan_members(
        loss,
        init,
        first.data,
        transform,
        seeds=seed_values,
        axes=axes,
        epochs=1,
        regime=_first_regime(stream, first),
        val_data=val_data,
        devices=device_list,
        stopping=stopping,
        recording=recording,
        driving=dataclasses.replace(driving, check_finite=False),
    )
    run = _bounded(members.member_run(plan, driving.compiler_options))
    _, rep = members.shardings(plan)
    place: Callable[[Any], Any] = functools.partial(jax.device_put, device=rep)
    state, records = _drive(
        run,
        stream,
        first,
        advance=loop.jit_run(
            _members_epoch, donate=True, options=driving.compiler_options
        ),
        driving=driving,
        place=place,
    )
    host = members.to_host(_with_history(state, records), plan.members)
    shape = (len(seed_values), *(len(v) for _, v in axes.coords))
    coords = (("seed", tuple(int(s) for s in seed_values)),) + axes.coords
    return SweepResult(
        FitResult(members.reshape(host, shape)), tuple(a for a, _ in coords), coords
    )


__all__ = ["fit_stream", "stream_epoch", "sweep_stream"]
