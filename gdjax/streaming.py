r"""Gradient descent on a stream of batches: data that does not fit on the device.

Contract. :func:`fit_stream` takes any iterable of equal-shaped host batches
(a NumPy generator, a ``torch.utils.data.DataLoader`` yielding arrays or CPU
tensors, a list...) and runs

.. math:: \theta_{t+1} = \theta_t + u_t\big(\nabla L_{B_t}(\theta_t)\big),
   \qquad B_t = \text{the } t\text{-th batch of the stream},

in *chunks*: ``chunk_steps`` batches are stacked on the host, moved to the
device in one transfer, and run as one call of one compiled program (a
``lax.scan`` over the chunk's steps). The step is :func:`gdjax.fit`'s own:
the chunk is run as one epoch of ``gdjax.loop.run_epochs`` over the stacked
batches in order, so the NaN/inf guard, the gradient-norm record, the
statuses and the stopping rules are the same code. The program is compiled
once and reused for every chunk; a short last chunk is padded (with copies
of its last batch) and the padding is masked by a step limit that is an
argument, not a shape, so it does not recompile. While the device runs one
chunk the host stacks the next.

The stream over the same batches equals the in-memory run
``fit(loss, params, concat(batches), transform, regime=gd.minibatch(B,
shuffle=False))`` to float tolerance. The stream decides the order, so
there is no key.

History. The result is a :class:`~gdjax.FitResult` whose "epochs" are
chunks: ``history.loss[c]`` is the mean loss over the steps of chunk ``c``
(each at the parameters entering its step), ``grad_norm``, ``val_loss``,
``metric`` and ``monitors`` likewise per chunk, and the epoch-level criteria
(``target_loss``, ``grad_tol``, ``tol``/``patience``) are checked after every
chunk. ``max_steps`` stops at that exact step. A stream that runs out ends
with ``Status.MAX_EPOCHS`` (one pass over the data is all there is).

Overhead. Per chunk the host stacks ``chunk_steps`` batches and transfers
them, and reads the chunk's status back (one synchronization per chunk);
``benchmarks/streaming_overhead.py`` measures it against the in-memory
:func:`~gdjax.fit` over the same steps.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gdjax import _validate as V
from gdjax import batching, loop, stopping
from gdjax._typing import Batch, Key, LossFn, Params
from gdjax.errors import NonFiniteError
from gdjax.loop import FitResult, History
from gdjax.stopping import Status

if TYPE_CHECKING:  # gdjax.sweep imports nothing from here; avoid the cycle anyway
    from gdjax.sweep import SweepResult


def _chunk_program(static, state, chunk, val_data, key, criteria, valid, index):
    """Run one chunk as epoch 0 of ``run_epochs`` (pure; vmappable over members).

    ``state.epoch`` counts the chunks a member has run; ``valid`` is how many
    of the chunk's batches are real (the rest is padding, masked by a step
    limit); ``index`` is the chunk's number, recorded as ``stop_epoch``.
    """
    was_running = state.status == Status.RUNNING
    user_max = criteria.max_steps
    limit = jnp.minimum(user_max, state.steps + valid).astype(user_max.dtype)
    inner = state._replace(
        epoch=jnp.zeros_like(state.epoch),
        history=jax.tree.map(lambda a: jnp.full_like(a, jnp.nan), state.history),
        stop_epoch=jnp.full_like(state.stop_epoch, -1),
    )
    out = loop.run_epochs(
        static,
        inner,
        chunk,
        val_data,
        key,
        criteria._replace(max_steps=limit),
        jnp.int32(1),
    )
    # MAX_STEPS below the user's limit is the end of the chunk's real batches:
    # run_epochs then skipped the chunk-level criteria, so apply them here.
    # MAX_EPOCHS is the end of the chunk (a one-epoch run): go on.
    verdict = stopping.epoch_status(
        criteria, out.history.loss[0], out.history.grad_norm[0], out.bad_epochs
    )
    status = jnp.where(
        (out.status == Status.MAX_STEPS) & (out.steps < user_max), verdict, out.status
    )
    status = jnp.where(status == Status.MAX_EPOCHS, Status.RUNNING, status)
    status = status.astype(jnp.int32)
    stopped_now = was_running & (status != Status.RUNNING)
    return out._replace(
        epoch=state.epoch + was_running.astype(state.epoch.dtype),
        status=status,
        stop_epoch=jnp.where(stopped_now, index, state.stop_epoch).astype(
            state.stop_epoch.dtype
        ),
    )


_run_chunk = jax.jit(_chunk_program, static_argnums=0, donate_argnums=1)


def _run_members_chunk(static, state, chunk, val_data, keys, criteria, valid, index):
    run = functools.partial(_chunk_program, static)
    return jax.vmap(run, in_axes=(0, None, None, 0, 0, None, None))(
        state, chunk, val_data, keys, criteria, valid, index
    )


_run_members_chunks = jax.jit(_run_members_chunk, static_argnums=0, donate_argnums=1)


# --------------------------------------------------------------------------- the stream


class _Chunks:
    """Stacks a stream's batches into chunks of ``k`` on the host."""

    def __init__(self, batches: Iterable, k: int, check_finite: bool):
        self._it = iter(batches)
        self.k = k
        self.check_finite = check_finite
        self.seen = 0
        self.treedef = None
        self.spec = None  # ((shape, dtype), ...) of one batch's leaves

    def _leaves(self, batch: Any) -> list[np.ndarray]:
        """One batch's leaves as host arrays, checked against the first batch."""
        leaves, treedef = jax.tree.flatten(batch)
        leaves = [np.asarray(a) for a in leaves]
        spec = tuple((a.shape, a.dtype) for a in leaves)
        if self.spec is None:
            V.check_data(
                treedef.unflatten(leaves), "the first batch", check_finite=False
            )
            self.treedef, self.spec = treedef, spec
        elif spec != self.spec or treedef != self.treedef:
            got = (
                f"structure {treedef}"
                if treedef != self.treedef
                else f"shapes and dtypes {spec}"
            )
            want = self.treedef if treedef != self.treedef else self.spec
            raise ValueError(
                f"every batch of the stream must match the first one; batch "
                f"{self.seen} has {got}, expected {want}. Drop a short last batch "
                "(DataLoader(drop_last=True))."
            )
        return leaves

    @property
    def batch_size(self) -> int:
        return self.spec[0][0][0]

    def next(self) -> tuple[Any, int] | None:
        """The next chunk (padded to k batches) and its count of real batches."""
        got = []
        for batch in itertools.islice(self._it, self.k):
            got.append(self._leaves(batch))
            self.seen += 1
        if not got:
            return None
        valid = len(got)
        got += [got[-1]] * (self.k - valid)
        leaves = [np.concatenate(column, axis=0) for column in zip(*got, strict=True)]
        if self.check_finite:
            for leaf in leaves:
                if np.issubdtype(leaf.dtype, np.inexact):
                    finite = np.isfinite(leaf).reshape(leaf.shape[0], -1).all(axis=1)
                    if not finite.all():
                        first = (
                            self.seen
                            - valid
                            + int(np.argmin(finite)) // (self.batch_size)
                        )
                        raise ValueError(
                            f"batch {first} of the stream contains NaN or inf; "
                            "clean it or pass check_finite=False."
                        )
        return self.treedef.unflatten(leaves), valid


def _check_chunk_steps(chunk_steps: Any) -> int:
    return V.check_int(chunk_steps, "chunk_steps", minimum=1)


def _prepare(
    loss, params, first_chunk, transform, *, batch_size, max_steps, stop_kwargs
) -> loop.Prepared:
    regime = batching.minibatch(batch_size, shuffle=False, last_batch="drop")
    return loop.prepare(
        loss,
        params,
        first_chunk,
        transform,
        key=np.zeros(2, np.uint32),
        epochs=1,
        regime=regime,
        max_steps=max_steps,
        check_finite=False,  # each batch is checked on the host as it comes
        **stop_kwargs,
    )


def _drive_stream(
    prepared: loop.Prepared,
    chunks: _Chunks,
    first: tuple[Any, int],
    *,
    advance: Callable,
    callback: Callable | None,
    place: Callable[[Any], Any] = jax.device_put,
) -> tuple[FitResult, list[History]]:
    """Run chunk after chunk, stacking the next on the host meanwhile."""
    static, state, _, val_data, key, criteria = prepared
    # The chunk program donates its state: copy the caller's arrays first.
    state = jax.device_put(state, may_alias=False)
    records: list[History] = []
    nxt = (place(first[0]), first[1])
    index = 0
    while nxt is not None:
        chunk, valid = nxt
        state = advance(
            static,
            state,
            chunk,
            val_data,
            key,
            criteria,
            np.int32(valid),
            np.int32(index),
        )
        # Work on the host while the device runs this chunk.
        upcoming = chunks.next() if valid == chunks.k else None
        nxt = None if upcoming is None else (place(upcoming[0]), upcoming[1])
        history, status = jax.device_get((state.history, state.status))  # one sync
        records.append(history)
        index += 1
        running = status == Status.RUNNING
        if not running.any():
            break
        if callback is not None and callback(state):
            state = state._replace(
                status=jnp.where(running, Status.CALLBACK, state.status).astype(
                    jnp.int32
                ),
                stop_epoch=jnp.where(running, index - 1, state.stop_epoch).astype(
                    jnp.int32
                ),
            )
            break
    # The stream ran out: its members that are still going ran out of data.
    status = np.asarray(state.status)
    running = status == Status.RUNNING
    state = state._replace(
        status=np.where(running, np.int32(Status.MAX_EPOCHS), status).astype(np.int32),
        stop_epoch=np.where(running, np.int32(index - 1), np.asarray(state.stop_epoch)),
    )
    return state, records


def _history(records: list[History]) -> History:
    """Per-chunk records (each with a trailing epoch axis of 1) joined."""
    return jax.tree.map(lambda *xs: np.concatenate(xs, axis=-1), *records)


def fit_stream(
    loss: LossFn,
    params: Params,
    batches: Iterable[Batch],
    transform: optax.GradientTransformation,
    *,
    chunk_steps: int,
    max_steps: int | None = None,
    target_loss: float | None = None,
    grad_tol: float | None = None,
    tol: float | None = None,
    patience: int = 5,
    val_data: Batch | None = None,
    metric: Callable | None = None,
    monitors: Mapping[str, Callable] | None = None,
    hyperparams: Mapping[str, Any] | None = None,
    callback: Callable[[FitResult], Any] | None = None,
    guard: bool = True,
    check_finite: bool = True,
    raise_on_nonfinite: bool = False,
) -> FitResult:
    r"""Run gradient descent over a stream of host batches, a chunk per call.

    .. math:: \theta_{t+1} = \theta_t + u_t\big(\nabla L_{B_t}(\theta_t)\big),
       \quad B_t = \text{batch } t \text{ of } \texttt{batches}

    Args:
      loss: ``loss(params, batch) -> scalar``.
      params: initial parameters.
      batches: an iterable of equal-shaped batches (pytrees of arrays with a
        leading example axis: NumPy arrays, CPU torch tensors, ...); consumed
        once, ``chunk_steps`` at a time (plus one chunk ahead: when a
        criterion stops the run, up to ``chunk_steps`` batches past the stop
        have been read).
      transform: an optax ``GradientTransformation``.
      chunk_steps: batches per compiled call (``k``). Larger chunks amortize
        the per-call host work; the device holds two chunks at a time.
      max_steps: stop after this many steps (exactly).
      target_loss, grad_tol, tol, patience: as for :func:`gdjax.fit`,
        checked after every chunk on the chunk's mean loss / gradient norm.
      val_data, metric, monitors: as for :func:`gdjax.fit`, evaluated after
        every chunk.
      hyperparams: values for the transform's injected hyperparameters.
      callback: ``callback(state) -> bool`` after every chunk; truthy stops.
      guard: reject non-finite steps and stop, as :func:`gdjax.fit` does.
      check_finite: refuse batches containing NaN or inf (checked on the host).
      raise_on_nonfinite: raise :class:`~gdjax.errors.NonFiniteError` instead
        of returning a failed result.

    Returns:
      A :class:`~gdjax.FitResult` whose history has one entry per chunk run
      (``epoch`` chunks) and whose ``steps`` counts the steps applied.

    Examples:
      >>> import numpy as np, jax.numpy as jnp, gdjax as gd
      >>> from gdjax.streaming import fit_stream
      >>> rng = np.random.default_rng(0)
      >>> def stream(n):
      ...     for _ in range(n):
      ...         x = rng.normal(size=(8, 1)).astype(np.float32)
      ...         yield x, 2.0 * x[:, 0]
      >>> loss = gd.make_loss(gd.models.linear, gd.losses.squared_error)
      >>> params = {"w": jnp.zeros((1, 1)), "b": jnp.zeros(1)}
      >>> r = fit_stream(loss, params, stream(50), gd.sgd(0.1), chunk_steps=16)
      >>> int(r.steps), int(r.epoch), r.stopped_by.name
      (50, 4, 'MAX_EPOCHS')
      >>> round(float(r.params["w"][0, 0]), 3)
      2.0
    """
    k = _check_chunk_steps(chunk_steps)
    chunks = _Chunks(batches, k, bool(check_finite))
    first = chunks.next()
    if first is None:
        raise ValueError("batches is empty: the stream yielded no batch.")
    batch_size = chunks.batch_size
    prepared = _prepare(
        loss,
        params,
        first[0],
        transform,
        batch_size=batch_size,
        max_steps=max_steps,
        stop_kwargs=dict(
            target_loss=target_loss,
            grad_tol=grad_tol,
            tol=tol,
            patience=patience,
            val_data=val_data,
            metric=metric,
            monitors=monitors,
            hyperparams=hyperparams,
            guard=guard,
        ),
    )
    state, records = _drive_stream(
        prepared, chunks, first, advance=_run_chunk, callback=callback
    )
    result = state._replace(history=_history(records))
    if raise_on_nonfinite and result.failed:
        raise NonFiniteError(loop.describe_stop(result), result)
    return result


def sweep_stream(
    loss: LossFn,
    init: Callable[[Key], Params] | Params,
    batches: Iterable[Batch],
    transform: optax.GradientTransformation,
    *,
    seeds: Sequence[int],
    hyperparams: Mapping[str, Sequence[float]] | None = None,
    grid: bool = True,
    chunk_steps: int,
    devices: int | Sequence[jax.Device] | None = None,
    check_finite: bool = True,
    **fit_kwargs: Any,
) -> SweepResult:
    r"""Many members on one stream: every chunk is shared by all of them.

    The members (seeds x hyperparameter settings, as in
    :func:`gdjax.sweep.sweep`) run as ``vmap`` of :func:`fit_stream`'s chunk
    program, with the chunk an unbatched argument: the stream is read once,
    whatever the number of members. Member :math:`(s, h)` equals
    ``fit_stream(loss, init(seed_keys(s)[0]), same batches, transform,
    hyperparams=h, ...)`` (the run key is unused: the stream fixes the order).

    Args:
      loss, init, transform, seeds, hyperparams, grid, devices: as for
        :func:`gdjax.sweep.sweep`.
      batches, chunk_steps, check_finite: as for :func:`fit_stream`.
      **fit_kwargs: ``max_steps``, ``target_loss``, ``grad_tol``, ``tol``,
        ``patience``, ``val_data``, ``metric``, ``monitors``, ``guard``,
        ``callback``.

    Returns:
      A :class:`gdjax.sweep.SweepResult` (history per chunk).

    Examples:
      >>> import numpy as np, jax.numpy as jnp, gdjax as gd
      >>> from gdjax.streaming import sweep_stream
      >>> x = np.linspace(-1, 1, 64, dtype=np.float32)[:, None]
      >>> stream = ((x[i:i + 8], 2.0 * x[i:i + 8, 0]) for i in range(0, 64, 8))
      >>> loss = gd.make_loss(gd.models.linear, gd.losses.squared_error)
      >>> params = {"w": jnp.zeros((1, 1)), "b": jnp.zeros(1)}
      >>> res = sweep_stream(loss, params, stream, gd.sgd(0.1), seeds=[0],
      ...                    hyperparams={"learning_rate": [0.1, 0.5]},
      ...                    chunk_steps=4)
      >>> res.shape, res.result.steps.tolist()
      ((1, 2), [[8, 8]])
    """
    from gdjax import sweep as sweep_mod

    allowed = (
        "max_steps",
        "target_loss",
        "grad_tol",
        "tol",
        "patience",
        "val_data",
        "metric",
        "monitors",
        "guard",
        "callback",
    )
    unknown = sorted(set(fit_kwargs) - set(allowed))
    if unknown:
        raise TypeError(
            f"sweep_stream() got unexpected keyword argument(s) {unknown}; it takes "
            f"{list(allowed)}."
        )
    k = _check_chunk_steps(chunk_steps)
    seed_values = sweep_mod._check_seeds(seeds)
    axes = sweep_mod._sweep_axes(
        sweep_mod._check_mapping(hyperparams, "hyperparams"), grid
    )
    device_list = sweep_mod._check_devices(devices)
    chunks = _Chunks(batches, k, bool(check_finite))
    first = chunks.next()
    if first is None:
        raise ValueError("batches is empty: the stream yielded no batch.")
    batch_size = chunks.batch_size
    callback = fit_kwargs.pop("callback", None)
    plan = sweep_mod._plan(
        loss,
        init,
        first[0],
        transform,
        seeds=seed_values,
        axes=axes,
        epochs=1,
        regime=batching.minibatch(batch_size, shuffle=False, last_batch="drop"),
        devices=device_list,
        fit_kwargs=dict(fit_kwargs, check_finite=False),
    )
    prepared = sweep_mod._member_inputs(plan)
    place: Callable[[Any], Any] = jax.device_put
    if plan.mesh is not None:
        replicated = jax.sharding.NamedSharding(plan.mesh, jax.sharding.PartitionSpec())
        place = functools.partial(jax.device_put, device=replicated)
    state, records = _drive_stream(
        prepared,
        chunks,
        first,
        advance=_run_members_chunks,
        callback=callback,
        place=place,
    )
    state = state._replace(history=_history(records))
    host = jax.tree.map(lambda a: np.asarray(a)[: plan.members], jax.device_get(state))
    shape = (len(seed_values), *(len(v) for _, v in axes.coords))
    seed_coord = (("seed", tuple(int(s) for s in seed_values)),)
    coords = seed_coord + axes.coords
    return sweep_mod.SweepResult(
        sweep_mod._reshape(host, shape), tuple(a for a, _ in coords), coords
    )


__all__ = ["fit_stream", "sweep_stream"]
