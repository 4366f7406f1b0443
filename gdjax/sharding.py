r"""Data-parallel gradient descent: one run, its examples spread over devices.

Contract. :func:`fit_data_parallel` is :func:`gdjax.fit` with the data's
example axis sharded over a one-dimensional device mesh and everything else
(parameters, optimizer state, history) replicated. Each step's batch is
split over the devices too, so every device computes the gradient of its
share of the batch, and XLA adds the all-reduce that sums the shares:

.. math:: \nabla L_B(\theta) = \frac{1}{|B|} \sum_{d=1}^{D}
   \sum_{i \in B_d} \nabla \ell_i(\theta),
   \qquad B = B_1 \cup \dots \cup B_D .

Nothing else changes: the same compiled program (``gdjax.loop.run_epochs``),
the same batches, the same stopping rules. The result equals the
single-device :func:`~gdjax.fit` to float tolerance (the sums are taken in
another order). The mesh axes are ``Auto`` (in jax 0.10 ``jax.make_mesh``
defaults to ``Explicit`` axes, with which a data-parallel backward pass
fails on a sharding type error); XLA places the collectives.

The batch is constrained to the mesh inside the loss (a
``with_sharding_constraint`` on the gathered batch), so the parameters'
gradient is an all-reduce of per-device partial sums rather than a
replicated computation on a gathered batch.

Several hosts. The same code runs on several hosts (one process each) once
``jax.distributed.initialize()`` has connected them: the mesh spans every
device of every process, each process loads only its own rows, and
:func:`shard_data` assembles the global array:

.. code-block:: python

    import jax, gdjax as gd
    from gdjax import sharding

    jax.distributed.initialize()          # on every host, before any JAX call
    mesh = sharding.data_mesh()            # all devices of all hosts
    x, y = load_rows(jax.process_index(), jax.process_count())  # this host's
    data = sharding.shard_data((x, y), mesh, process_local=True)
    result = sharding.fit_data_parallel(
        loss, params, data, gd.sgd(0.1), key=jax.random.key(0), epochs=10,
        regime=gd.minibatch(1024), mesh=mesh,
        check_finite=False,                # no process holds every row to check
    )

Every process runs the same program with the same arguments (same params,
key, regime, epochs); each process's rows must be the same count. The result
is replicated: every process holds the final parameters and history.
Host-side checks that read every value cannot run on an array no process
holds whole: pass ``check_finite=False``, and note that a ``gd.make_loss``
classification loss reads every label to check it (check the labels on each
host before assembling the global array, and pass a plain function
``lambda p, b: loss(p, b)``).
Host values are put on shardings that span processes with :func:`place`
(each process fills its own shards, no cross-process equality check) and
read back with :func:`gdjax.results.gather`. ``checkpoint.fit_resumable`` on such data
runs data-parallel over its mesh and adds checkpoints (process 0 writes,
every process resumes). Tested with 2
and 4 processes on one machine (``tests/test_multiprocess.py``, running
``examples/multiprocess_launch.py``); see ``docs/multiprocess.md``.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from gdjax import _validate as V
from gdjax import runs, spec
from gdjax._typing import Batch, LossFn, Params
from gdjax.results import FitResult


def data_mesh(
    devices: int | Sequence[jax.Device] | None = None, axis: str = "data"
) -> Mesh:
    """A one-dimensional ``Auto`` mesh over devices, for data parallelism.

    Args:
      devices: a device count (the first ``k`` of ``jax.devices()``), a list of
        devices, or ``None`` for all of them.
      axis: the mesh axis name.

    Returns:
      ``jax.make_mesh((D,), (axis,), axis_types=(AxisType.Auto,))``.

    Examples:
      >>> from gdjax import sharding
      >>> sharding.data_mesh(1).axis_names
      ('data',)
    """
    chosen = V.check_devices(devices)
    if chosen is None:
        chosen = jax.devices()
    return jax.make_mesh(
        (len(chosen),),
        (axis,),
        axis_types=(jax.sharding.AxisType.Auto,),
        devices=chosen,
    )


def _check_mesh(mesh: Mesh | None, axis: str) -> Mesh:
    if mesh is None:
        return data_mesh(axis=axis)
    if not isinstance(mesh, Mesh):
        raise TypeError(f"mesh must be a jax.sharding.Mesh, got {V.describe(mesh)}.")
    if axis not in mesh.axis_names:
        raise ValueError(
            f"mesh has axes {mesh.axis_names}, not {axis!r}; pass axis=<name>."
        )
    return mesh


def shard_data(
    data: Batch,
    mesh: Mesh | None = None,
    *,
    axis: str = "data",
    process_local: bool = False,
) -> Batch:
    r"""Place ``data`` with its example axis split over ``mesh``'s ``axis``.

    Device :math:`d` of :math:`D` holds examples
    :math:`[d\,n/D, (d+1)\,n/D)` of every leaf.

    Args:
      data: a pytree of arrays with a shared leading example axis of length
        ``n``, divisible by the number of devices along ``axis``.
      mesh: the mesh (default :func:`data_mesh` over every device).
      axis: the mesh axis to split the examples over.
      process_local: ``data`` holds only this process's rows (multi-host);
        the global array is built with
        ``jax.make_array_from_process_local_data``.

    Returns:
      The same pytree of global ``jax.Array``\ s, sharded
      ``NamedSharding(mesh, P(axis))``.

    Raises:
      ValueError: ``n`` is not divisible by the device count.

    Examples:
      >>> import jax, numpy as np
      >>> from gdjax import sharding
      >>> x = sharding.shard_data(np.zeros((4, 2)), sharding.data_mesh(1))
      >>> x.sharding.spec == jax.sharding.PartitionSpec("data")
      True
    """
    mesh = _check_mesh(mesh, axis)
    n = V.check_data(data, "data", check_finite=False)
    d = mesh.shape[axis]
    spec = NamedSharding(mesh, P(axis))
    if process_local:
        return jax.tree.map(
            lambda a: jax.make_array_from_process_local_data(spec, np.asarray(a)), data
        )
    if n % d:
        raise ValueError(
            f"data has n={n} examples, which {d} devices cannot split evenly; drop "
            f"{n % d} example(s) or pad to {n + d - n % d}, or pass "
            "data_placement='replicate' to fit_data_parallel."
        )
    return place(data, spec)


def place(
    tree: Any, sharding: jax.sharding.Sharding | None, *, copy: bool = False
) -> Any:
    """Put host values onto ``sharding``, in one process or across several.

    Every process must pass the same values (each process builds them from the
    same arguments, as SPMD asks). On one process this is ``jax.device_put``.
    Across processes each one fills its own devices' shards from its copy with
    ``jax.make_array_from_callback``: ``jax.device_put`` would first check that
    every process holds equal values, a collective that also fails for values
    equal bit for bit when they hold NaN (an unwritten history), since
    ``nan != nan``. Arrays already spread over processes are resharded.

    Args:
      tree: a pytree of arrays (NumPy, JAX, typed PRNG keys).
      sharding: the target sharding (``None``: the default device).
      copy: never alias the input's buffers (a run that donates its state
        must not consume arrays the caller still holds). Across processes
        the result is always a copy.

    Returns:
      The pytree of arrays on ``sharding``.
    """
    if sharding is None or sharding.is_fully_addressable:
        return jax.device_put(tree, sharding, may_alias=False if copy else None)

    def one(leaf: Any) -> jax.Array:
        if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
            return jax.device_put(leaf, sharding, may_alias=False if copy else None)
        dtype = leaf.dtype if hasattr(leaf, "dtype") else np.result_type(leaf)
        if jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
            impl = jax.random.key_impl(leaf)
            data = one(jax.random.key_data(leaf))
            return jax.random.wrap_key_data(data, impl=impl)
        host = np.asarray(leaf)
        return jax.make_array_from_callback(
            host.shape, sharding, lambda index: np.array(host[index])
        )

    return jax.tree.map(one, tree)


@functools.partial(
    jax.tree_util.register_dataclass, data_fields=["loss"], meta_fields=["sharding"]
)
@dataclasses.dataclass(frozen=True)
class ShardedLoss:
    """``loss`` with its batch (and example weights) split over a mesh.

    A value: the same loss and sharding give an equal object (the compiled run
    is reused), and a ``make_loss`` loss keeps its numbers as leaves. The batch
    is constrained inside the loss, so the gradient is an all-reduce of
    per-device partial sums rather than a replicated computation.

    Attributes:
      loss: the loss it wraps.
      sharding: the ``NamedSharding`` that splits the batch's example axis.
    """

    loss: Callable
    sharding: NamedSharding

    @property
    def accepts_weights(self) -> bool:
        return bool(getattr(self.loss, "accepts_weights", False))

    def check_data(self, params: Params, data: Batch) -> None:
        if hasattr(self.loss, "check_data"):
            self.loss.check_data(params, data)

    def __call__(self, params: Params, batch: Batch, weights: Any = None):
        batch = jax.lax.with_sharding_constraint(batch, self.sharding)
        if weights is None:
            return self.loss(params, batch)
        weights = jax.lax.with_sharding_constraint(weights, self.sharding)
        return self.loss(params, batch, weights=weights)


def prepare_data_parallel(
    loss: LossFn,
    params: Params,
    data: Batch,
    transform: optax.GradientTransformation,
    *,
    mesh: Mesh | None = None,
    axis: str = "data",
    data_placement: str = "shard",
    val_data: Batch | None = None,
    **kwargs: Any,
) -> runs.Run:
    """:func:`gdjax.runs.prepare` for a data-parallel run: the loss splits its
    batch over ``mesh``'s ``axis``, the data is sharded (or replicated), the
    state and key replicated, over processes too.

    ``kwargs`` are those of :func:`gdjax.runs.prepare` (``key``, ``epochs``,
    ``resume``, ``stopping``, ...). Used by :func:`fit_data_parallel` and
    :func:`gdjax.checkpoint.fit_resumable`.
    """
    mesh = _check_mesh(mesh, axis)
    if data_placement not in ("shard", "replicate"):
        raise ValueError(
            f"data_placement must be 'shard' or 'replicate', got {data_placement!r}."
        )
    split = NamedSharding(mesh, P(axis))
    replicated = NamedSharding(mesh, P())
    V.check_data(data, "data", check_finite=False)
    if data_placement == "shard":
        data = shard_data(data, mesh, axis=axis)
    else:
        data = place(data, replicated)
    if val_data is not None:
        val_data = place(val_data, replicated)
    run = runs.prepare(
        ShardedLoss(loss, split), params, data, transform, val_data=val_data, **kwargs
    )
    return run._replace(
        state=place(run.state, replicated),
        inputs=run.inputs._replace(key=place(run.inputs.key, replicated)),
    )


def fit_data_parallel(
    loss: LossFn,
    params: Params,
    data: Batch,
    transform: optax.GradientTransformation,
    *,
    mesh: Mesh | None = None,
    axis: str = "data",
    data_placement: str = "shard",
    **fit_args: Any,
) -> FitResult:
    r""":func:`gdjax.fit`, data-parallel over the devices of a mesh.

    .. math:: \theta_{t+1} = \theta_t + u_t\Big(\tfrac{1}{|B_t|}
       \textstyle\sum_{d} \sum_{i \in B_{t,d}} \nabla \ell_i(\theta_t)\Big)

    with the batch :math:`B_t` split over the :math:`D` devices; see the
    module docstring.

    Args:
      loss, params, data, transform: as for :func:`gdjax.fit`. ``data`` may
        already be sharded (from :func:`shard_data`); otherwise it is placed
        here.
      mesh: a mesh with an ``axis`` (default :func:`data_mesh` over every
        device).
      axis: the mesh axis that splits examples and batches.
      data_placement: ``"shard"`` (each device holds ``n / D`` examples; ``n``
        must be divisible by ``D``) or ``"replicate"`` (every device holds all
        the data; the batches are still split, so the compute is parallel).
      **fit_args: every other argument of :func:`gdjax.fit` (``key``,
        ``epochs``, ``regime``, ``val_data``, ``hyperparams``, ``resume``,
        ``stopping``/``recording``/``driving`` and the flat run options).

    Returns:
      The :class:`~gdjax.FitResult`, replicated on every device of the mesh.

    Examples:
      >>> import jax, jax.numpy as jnp, gdjax as gd
      >>> x = jnp.array([[1.0], [2.0], [3.0]]); y = 2.0 * x[:, 0]
      >>> loss = gd.make_loss(gd.models.linear, gd.losses.squared_error)
      >>> params = {"w": jnp.zeros((1, 1)), "b": jnp.zeros(1)}
      >>> r = gd.fit_data_parallel(loss, params, (x, y), gd.sgd(0.1),
      ...                          key=jax.random.key(0), epochs=200,
      ...                          target_loss=1e-3)
      >>> r.stopped_by.name, int(r.epoch), round(float(r.params["w"][0, 0]), 1)
      ('TARGET_LOSS', 153, 1.9)
    """
    options = {k: fit_args.pop(k) for k in list(fit_args) if k in spec.OPTION_NAMES}
    stopping, recording, driving = spec.from_options(
        fit_args.pop("stopping", None),
        fit_args.pop("recording", None),
        fit_args.pop("driving", None),
        **options,
    )
    run = prepare_data_parallel(
        loss,
        params,
        data,
        transform,
        mesh=mesh,
        axis=axis,
        data_placement=data_placement,
        stopping=stopping,
        recording=recording,
        driving=driving,
        **fit_args,
    )
    state = runs.drive(
        run, advance=runs.advance_for(driving), driving=driving, donates=driving.donate
    )
    return runs.finish(state, driving)


__all__ = [
    "ShardedLoss",
    "data_mesh",
    "fit_data_parallel",
    "place",
    "prepare_data_parallel",
    "shard_data",
]
