r"""Update transforms for gradient descent, as optax ``GradientTransformation``\ s.

Contract. Every factory here returns an optax transform: ``init(params) ->
state`` and ``update(updates, state, params) -> (updates, state)``, usable
inside ``optax.chain`` (either side of optax's own transforms) and inside
``optax.inject_hyperparams``. States are NamedTuples of arrays, and for any
mix of bfloat16/float16/float32/float64/complex leaves, weakly typed or not:

- *type-stable*: ``init`` returns exactly the structure, shapes, dtypes and
  weak types that ``update`` returns (all strong), so a ``lax.cond`` or a
  ``lax.scan`` carry can hold either and a jitted step never traces twice;
- *dtype follows each leaf*: a hyperparameter is cast to the dtype of the leaf
  it multiplies, so a bfloat16 leaf gets bfloat16 updates and keeps a bfloat16
  momentum buffer (unless ``accumulator_dtype`` asks otherwise), as optax's own
  ``sgd`` does with a Python-float rate;
- *abstract init*: ``init`` takes ``jax.ShapeDtypeStruct`` leaves;
- *placed like a jitted update places it*: the 0-d leaves (count, numeric
  hyperparameters) are replicated over the mesh of ``jax.set_mesh`` when one
  is set, else over the mesh the params live on, so the state an eager
  ``init`` returns has the shardings that a jitted ``update`` hands back.

Numbers are data, structure is program. :func:`sgd` keeps its learning rate,
momentum and weight decay as arrays in its state (an
``optax.InjectStatefulHyperparamsState``, as ``optax.inject_hyperparams``
builds it), and every call with the same static structure (``nesterov``,
``decoupled_weight_decay``, ``accumulator_dtype``, numeric or scheduled
learning rate) returns the *same* ``update`` function object. A training loop
that passes ``update`` as a static ``jit`` argument therefore compiles once
for ``sgd(0.1, 0.9)`` and reuses that program for ``sgd(0.3, 0.5)``; so do
:func:`set_hyperparams` and a sweep that writes new numbers into the state.

Arguments are checked on the host before anything is traced or compiled: a
bad value raises ``ValueError`` naming the argument, the range expected and
the value that came.

What optax already has is re-exported, not rewritten: :func:`chain`,
:func:`clip`, :func:`clip_by_global_norm`, :func:`add_decayed_weights`.
"""

import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec
from optax import add_decayed_weights, chain, clip, clip_by_global_norm

from gdjax import _validate as V
from gdjax._typing import ArrayLike, Params, PyTree
from gdjax._validate import check_real, describe

__all__ = [
    "AverageIteratesState",
    "add_decayed_weights",
    "average_iterates",
    "averaged_params",
    "chain",
    "clip",
    "clip_by_global_norm",
    "check_hyperparams",
    "get_hyperparams",
    "hyperparam_names",
    "inverse_time_decay",
    "power_decay",
    "set_hyperparams",
    "sgd",
]

# optax 0.2.8 builds InjectStatefulHyperparamsState; the older class is kept by
# optax for backward compatibility and may still sit in saved states.
_INJECT_STATES = (optax.InjectStatefulHyperparamsState, optax.InjectHyperparamsState)


# ------------------------------------------------------------------------------- checks


def _interval(low: float, high: float | None, low_inc: bool, high_inc: bool) -> str:
    hi = "inf" if high is None else f"{high:g}"
    return (
        ("[" if low_inc else "(")
        + f"{low:g}, {hi}"
        + ("]" if high_inc and high is not None else ")")
    )


def _check_scalar(
    value: Any,
    name: str,
    *,
    low: float,
    high: float | None = None,
    low_inclusive: bool = True,
    high_inclusive: bool = False,
    what: str = "",
    scalar: bool = True,
) -> Any:
    """A real 0-d number in a range; the message names range and value.

    ``check_real`` does the work; its ValueError is reworded so that a NaN is
    reported with the range it missed, not only as "not finite". A traced
    value (inside ``jit``/``vmap``) cannot be read on the host and is passed
    through unchecked.
    """
    if V.is_tracer(value):
        return value
    if np.iscomplexobj(value):
        raise TypeError(f"{name} must be a real number, got {describe(value)}.")
    interval = _interval(low, high, low_inclusive, high_inclusive)
    try:
        check_real(
            value,
            name,
            low=low,
            high=high,
            low_inclusive=low_inclusive,
            high_inclusive=high_inclusive,
        )
    except ValueError:
        host = np.asarray(value, dtype=float)
        ok = np.isfinite(host) & ((host >= low) if low_inclusive else (host > low))
        if high is not None:
            ok &= (host <= high) if high_inclusive else (host < high)
        if host.ndim == 0:
            shown = repr(host.item())
        else:
            shown = f"an array containing {host[~ok].flat[0].item()!r}"
        raise ValueError(
            f"{name}{what} must be a finite number in {interval}, got {shown}."
        ) from None
    if scalar and np.ndim(value) != 0:
        raise ValueError(
            f"{name} must be a scalar (0-d), got shape {np.shape(value)}; to sweep "
            "several values, vmap over members or use set_hyperparams."
        )
    return value


def _mesh_of(tree: PyTree) -> jax.sharding.Mesh | None:
    """The mesh that concrete leaves of ``tree`` are laid out on, if any."""
    for leaf in jax.tree.leaves(tree):
        if isinstance(leaf, jax.Array) and not V.is_tracer(leaf):
            sharding = leaf.sharding
            if isinstance(sharding, NamedSharding):
                return sharding.mesh
    return None


def _as_array(
    value: Any, dtype: Any, mesh: jax.sharding.Mesh | None = None
) -> jax.Array:
    """``value`` as a strong array of ``dtype``, placed as a jitted step places it.

    ``jnp.asarray(0.1, dtype)`` (and even ``jnp.asarray`` of a NumPy value)
    compiles a small program the first time it meets a shape and dtype; a
    NumPy cast on the host plus ``device_put`` does not. The value is
    replicated over the mesh of ``jax.set_mesh`` when one is set, else over
    ``mesh`` (the params' mesh), else left uncommitted on the default device:
    where a jitted ``update`` puts a 0-d output whose inputs live there, so
    its second call finds the shardings of the first and does not compile
    again. A traced value (inside ``jit``/``vmap``) is converted in the trace.
    """
    if V.is_tracer(value):
        return jnp.asarray(value, dtype)
    host = np.asarray(value).astype(dtype)
    if not jax.sharding.get_abstract_mesh().empty:
        try:
            mesh = jax.sharding.get_mesh()
        except ValueError:  # inside jit: a constant, which follows the mesh
            return jnp.asarray(host)
    if mesh is None or mesh.empty:
        return jax.device_put(host)
    return jax.device_put(host, NamedSharding(mesh, PartitionSpec()))


def _check_flag(value: Any, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {describe(value)}.")
    return bool(value)


_RANGES = V.RANGES  # the one table of ranges lives in gdjax._validate


# ---------------------------------------------------------------------------------- sgd


def _leaf_dtype(leaf: Any) -> np.dtype:
    # .dtype first: a jax.ShapeDtypeStruct (abstract init) has one but is no array.
    dtype = getattr(leaf, "dtype", None)
    return jnp.dtype(dtype) if dtype is not None else jax.dtypes.result_type(leaf)


def _hyperparam_dtype(params: Params, accumulator: Any = None) -> np.dtype:
    """The dtype hyperparameters are stored in: the highest of the params'
    float dtypes, the momentum buffer's and float32.

    optax's ``hyperparam_dtype=None`` rule (the params' highest dtype), read
    from ``.dtype`` so that ``jax.ShapeDtypeStruct`` leaves work, and raised
    to float32 at least: it is the storage dtype only, and each use casts to
    the leaf it multiplies, so a bfloat16 leaf still computes in bfloat16
    while a float32 momentum buffer for it gets momentum 0.9, not the 0.8984
    that bfloat16 can hold. A float64 run gets the float64 value of 0.05.
    Complex dtypes count as their real counterpart (a step size is real).
    """
    dtypes = [_leaf_dtype(leaf) for leaf in jax.tree.leaves(params)]
    if accumulator is not None:
        dtypes.append(jnp.dtype(accumulator))
    dtypes = [jnp.dtype(jnp.float32)] + [
        jnp.finfo(d).dtype for d in dtypes if jnp.issubdtype(d, jnp.inexact)
    ]
    dtype = functools.reduce(jnp.promote_types, dtypes)
    return jnp.dtype(jax.dtypes.canonicalize_dtype(dtype))


def _like(value: jax.Array, leaf: jax.Array) -> jax.Array:
    """A hyperparameter in the dtype of the leaf it multiplies (strong)."""
    return jnp.asarray(value, leaf.dtype)


_HOST_ZEROS_BYTES = 8 << 20
"""Zero buffers up to this size are made on the host and copied over."""


def _zeros(leaf: Any, dtype: Any) -> jax.Array:
    """A strong zero buffer like ``leaf`` (an array or a ShapeDtypeStruct).

    ``jnp.zeros_like`` on a concrete array compiles a small program the first
    time it meets a shape (a momentum state of an MLP: one per layer shape, a
    first ``fit`` paying for each); for a concrete leaf held by this process
    (up to 8 MiB) NumPy zeros put on the leaf's sharding give the same array
    without compiling. Traced leaves (``init`` under ``jit``, ``vmap`` or
    ``eval_shape``) take ``jnp.zeros_like``.
    """
    dtype = jax.dtypes.canonicalize_dtype(leaf.dtype if dtype is None else dtype)
    concrete = isinstance(leaf, np.ndarray) or (
        isinstance(leaf, jax.Array) and not V.is_tracer(leaf)
        and leaf.is_fully_addressable
    )
    if concrete:
        if math.prod(np.shape(leaf)) * np.dtype(dtype).itemsize <= _HOST_ZEROS_BYTES:
            zeros = np.zeros(np.shape(leaf), dtype)
            if isinstance(leaf, jax.Array) and leaf.committed:
                return jax.device_put(zeros, leaf.sharding)
            return jax.device_put(zeros)
    return jnp.zeros_like(leaf, dtype=dtype)


def _schedule_value(value: Any, dtype: Any, mesh: jax.sharding.Mesh | None) -> Any:
    """optax's rule for a scheduled value: a strong array keeps its dtype,
    anything else (a weak array, a Python or NumPy number) takes ``dtype``."""
    if isinstance(value, jax.Array):
        return value if not jax.typeof(value).weak_type else jnp.asarray(value, dtype)
    return _as_array(value, dtype, mesh)


class _Structure(NamedTuple):
    """What changes the program of :func:`sgd` (numbers do not)."""

    nesterov: bool
    decoupled: bool
    momentum: bool
    weight_decay: bool
    accumulator_dtype: np.dtype | None


def _check_accumulator_dtype(value: Any) -> np.dtype | None:
    if value is None:
        return None
    try:
        dtype = jnp.dtype(value)
    except TypeError:
        raise TypeError(
            "accumulator_dtype must be a float or complex dtype or None, got "
            f"{describe(value)}."
        ) from None
    if not jnp.issubdtype(dtype, jnp.inexact):
        raise TypeError(
            f"accumulator_dtype must be a float or complex dtype or None, got {dtype}."
        )
    return dtype


def _build_update(structure: _Structure, schedule: Any) -> Callable[..., Any]:
    """``update`` of :func:`sgd` for one static structure.

    The state is laid out as ``optax.inject_hyperparams`` of
    ``chain([add_decayed_weights], [trace], scale_by_learning_rate)`` (decay
    after the trace when decoupled) lays it out, so states saved by earlier
    versions and tools that read ``TraceState`` still fit. The arithmetic is
    optax's, with each hyperparameter cast to the leaf it multiplies (optax
    casts to the params' highest dtype, which turns bfloat16 leaves float32).
    """
    trace_at = int(structure.weight_decay and not structure.decoupled)

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        if params is None and structure.weight_decay:
            raise ValueError(
                "gdjax.transforms.sgd with weight_decay needs params in update: "
                "call update(grads, state, params)."
            )
        hyperparams = dict(state.hyperparams)
        schedule_states = state.hyperparams_states
        if schedule is not None:
            wrapped = schedule_states["learning_rate"]
            hyperparams["learning_rate"] = _schedule_value(
                schedule(wrapped.count),
                hyperparams["learning_rate"].dtype,
                _mesh_of(wrapped.count),
            )
            schedule_states = {
                **schedule_states,
                "learning_rate": wrapped._replace(
                    count=optax.safe_increment(wrapped.count)
                ),
            }
        inner = []
        if structure.weight_decay and not structure.decoupled:
            # g <- g + wd theta, then optax.sgd: torch.optim.SGD(weight_decay=wd).
            wd = hyperparams["weight_decay"]
            updates = jax.tree.map(lambda g, p: g + _like(wd, p) * p, updates, params)
            inner.append(optax.EmptyState())
        if structure.momentum:
            mu = hyperparams["momentum"]
            trace = state.inner_state[trace_at].trace
            new_trace = jax.tree.map(lambda g, t: g + _like(mu, t) * t, updates, trace)
            if structure.nesterov:
                updates = jax.tree.map(
                    lambda g, t: g + _like(mu, t) * t, updates, new_trace
                )
            else:
                updates = new_trace
            # The buffer keeps init's dtype (and a strong type) whatever the
            # gradients' dtype promoted it to.
            new_trace = jax.tree.map(lambda n, t: n.astype(t.dtype), new_trace, trace)
            inner.append(optax.TraceState(trace=new_trace))
        if structure.weight_decay and structure.decoupled:
            # m <- g + mu m ; u <- -lr (m + wd theta): decay outside the momentum.
            wd = hyperparams["weight_decay"]
            updates = jax.tree.map(lambda u, p: u + _like(wd, p) * p, updates, params)
            inner.append(optax.EmptyState())
        step = -hyperparams["learning_rate"]
        updates = jax.tree.map(lambda u: u * _like(step, u), updates)
        inner.append(optax.EmptyState())
        return updates, optax.InjectStatefulHyperparamsState(
            count=optax.safe_increment(state.count),
            hyperparams=hyperparams,
            hyperparams_states=schedule_states,
            inner_state=tuple(inner),
        )

    return update_fn


# One update per static structure: it is the object a loop passes as a static
# jit argument, so it must be the same across calls.
@functools.cache  # at most 16 structures x a few accumulator dtypes
def _numeric_update(structure: _Structure) -> Callable[..., Any]:
    return _build_update(structure, None)


# A schedule is part of the program; the same schedule object gets the same
# update back, a new one gets a new program. Bounded so lambdas don't pile up.
@functools.lru_cache(maxsize=64)
def _schedule_update(structure: _Structure, schedule: Any) -> Callable[..., Any]:
    return _build_update(structure, schedule)


def _with_numbers(update: Callable[..., Any], numbers: dict) -> Callable[..., Any]:
    def update_fn(updates, state, params=None, **extra_args):
        hyperparams = dict(state.hyperparams)
        for name, value in numbers.items():
            hyperparams[name] = jnp.asarray(value, hyperparams[name].dtype)
        state = state._replace(hyperparams=hyperparams)
        return update(updates, state, params, **extra_args)

    return update_fn


def _check_schedule(schedule: Callable, name: str) -> None:
    # Read from the schedule's jaxpr in NumPy: calling it compiles programs.
    value = V.host_value(schedule, np.int32(0))
    if value is None:  # an op NumPy cannot evaluate here: call it
        value = schedule(jax.device_put(np.int32(0)))
    if V.is_tracer(value):
        return
    _check_scalar(
        np.asarray(value), name, **_RANGES[name], what=" (its value at step 0)"
    )


def sgd(
    learning_rate: optax.ScalarOrSchedule,
    momentum: ArrayLike | None = None,
    *,
    nesterov: bool = False,
    weight_decay: ArrayLike | None = None,
    decoupled_weight_decay: bool = False,
    accumulator_dtype: Any | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Stochastic gradient descent with momentum and weight decay, numbers as data.

    With gradient :math:`g_t = \nabla L(\theta_t)`, learning rate :math:`\eta_t`,
    momentum :math:`\mu` and weight decay :math:`\lambda`, the coupled form
    (``decoupled_weight_decay=False``, as ``torch.optim.SGD(weight_decay=λ)``)
    is

    .. math::
      \tilde g_t = g_t + \lambda \theta_t, \quad
      m_{t+1} = \tilde g_t + \mu m_t, \quad
      \theta_{t+1} = \theta_t - \eta_t d_t,

    with :math:`d_t = m_{t+1}` (heavy ball) or
    :math:`d_t = \tilde g_t + \mu m_{t+1}` (``nesterov=True``). The decoupled
    form keeps the decay out of the momentum:

    .. math::
      m_{t+1} = g_t + \mu m_t, \quad
      \theta_{t+1} = \theta_t - \eta_t d_t - \eta_t \lambda \theta_t ,

    with :math:`d_t` as above, :math:`g_t` in place of :math:`\tilde g_t`.

    With :math:`\mu = \lambda = 0` this is plain gradient descent
    :math:`\theta_{t+1} = \theta_t - \eta_t \nabla L(\theta_t)`, equal to
    ``optax.sgd`` step for step (bitwise, in every float dtype).

    It computes what ``optax.inject_hyperparams`` of ``optax.sgd`` /
    ``optax.add_decayed_weights`` / ``optax.chain`` computes, and its state
    has that layout: ``learning_rate``, ``momentum`` and ``weight_decay`` live
    as arrays in the state's ``hyperparams`` (stored in the params' highest
    float dtype, float32 at least), and two calls with the same ``nesterov``,
    ``decoupled_weight_decay``, ``accumulator_dtype`` and kind of learning
    rate (number or the same schedule object) return the same ``update``
    function object. A loop that takes ``update`` as a static ``jit``
    argument therefore compiles once for all numeric values; change them with
    :func:`set_hyperparams`. Unlike ``inject_hyperparams``, each use casts a
    hyperparameter to the dtype of the leaf it multiplies, so mixed-precision
    params keep their dtypes in updates and state. ``momentum=None``
    (default) keeps no momentum buffer; any number (0 included) keeps one, so
    momentum can be swept through 0 in one program. Likewise
    ``weight_decay=None`` leaves the decay out, and a number puts it in (then
    ``update`` needs ``params``).

    Inside ``optax.inject_hyperparams(sgd)`` under ``jit`` (numbers traced),
    the injected numbers are the ones in force at each step, as for optax's
    own transforms. Built eagerly from concrete numbers, the transform reads
    its numbers from the state: that is what lets one ``update`` serve them
    all (so eager ``inject_hyperparams`` without ``jit`` uses the inner
    state's values; jit the update, as any training loop does).

    Args:
      learning_rate: step size :math:`\eta > 0`, a Python float, NumPy scalar
        or 0-d array, or a schedule ``count -> value`` (checked at step 0).
      momentum: :math:`\mu \in [0, 1)`, or ``None`` for plain gradient descent.
      nesterov: use Nesterov's look-ahead momentum (needs ``momentum > 0``).
      weight_decay: :math:`\lambda \ge 0`, or ``None`` for none.
      decoupled_weight_decay: decay the weights outside the momentum
        (Loshchilov & Hutter's SGDW) instead of adding :math:`\lambda\theta` to
        the gradient.
      accumulator_dtype: dtype of the momentum buffer (as ``optax.sgd``'s), or
        ``None`` for each leaf's own dtype; e.g. ``jnp.float32`` keeps the
        momentum of bfloat16 params in float32.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` whose state is an
      ``optax.InjectStatefulHyperparamsState``.

    Raises:
      ValueError: a hyperparameter out of range, NaN or infinite, or
        ``nesterov=True`` with zero momentum; raised before anything compiles.
      TypeError: a flag that is not a bool, or an ``accumulator_dtype`` that is
        not a float or complex dtype.

    Examples:
      >>> import jax.numpy as jnp
      >>> import optax
      >>> from gdjax.transforms import get_hyperparams, set_hyperparams, sgd
      >>> opt = sgd(0.1, momentum=0.9)
      >>> params = jnp.array([1.0, -2.0])
      >>> state = opt.init(params)
      >>> grads = params  # gradient of ||params||^2 / 2
      >>> updates, state = opt.update(grads, state, params)
      >>> optax.apply_updates(params, updates)
      Array([ 0.9, -1.8], dtype=float32)
      >>> sgd(0.3, momentum=0.5).update is opt.update  # same program
      True
      >>> state = set_hyperparams(state, learning_rate=0.05)
      >>> get_hyperparams(state)["learning_rate"]
      Array(0.05, dtype=float32)

    References:
      Robbins & Monro, `A Stochastic Approximation Method
      <https://doi.org/10.1214/aoms/1177729586>`_, 1951.

      Polyak, `Some methods of speeding up the convergence of iteration
      methods <https://doi.org/10.1016/0041-5553(64)90137-5>`_, 1964.

      Sutskever et al., `On the importance of initialization and momentum in
      deep learning <http://proceedings.mlr.press/v28/sutskever13.pdf>`_, 2013.

      Loshchilov & Hutter, `Decoupled Weight Decay Regularization
      <https://arxiv.org/abs/1711.05101>`_, 2019.

      `optax#577 <https://github.com/google-deepmind/optax/issues/577>`_:
      hyperparameters as arrays avoid recompilation.
    """
    structure = _sgd_structure(
        learning_rate,
        momentum,
        nesterov=nesterov,
        weight_decay=weight_decay,
        decoupled_weight_decay=decoupled_weight_decay,
        accumulator_dtype=accumulator_dtype,
    )
    scheduled = callable(learning_rate)
    numeric = {"learning_rate": learning_rate} if not scheduled else {}
    numeric.update(
        (k, v)
        for k, v in (("momentum", momentum), ("weight_decay", weight_decay))
        if v is not None
    )
    if scheduled:
        try:
            update_fn = _schedule_update(structure, learning_rate)
        except TypeError:  # an unhashable schedule: build it afresh
            update_fn = _build_update(structure, learning_rate)
    else:
        update_fn = _numeric_update(structure)
    traced = {k: v for k, v in numeric.items() if V.is_tracer(v)}
    if traced:
        # Built inside a trace, as optax.inject_hyperparams(sgd) does at each
        # step under jit: the numbers passed in are the ones in force, so they
        # go into the state before the shared update reads it.
        update_fn = _with_numbers(update_fn, traced)

    init_fn = functools.partial(
        _sgd_init, structure, numeric, learning_rate if scheduled else None
    )
    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _sgd_structure(
    learning_rate: optax.ScalarOrSchedule,
    momentum: ArrayLike | None,
    *,
    nesterov: bool,
    weight_decay: ArrayLike | None,
    decoupled_weight_decay: bool,
    accumulator_dtype: Any | None,
) -> _Structure:
    """:func:`sgd`'s arguments checked, and the static structure they give."""
    nesterov = _check_flag(nesterov, "nesterov")
    decoupled = _check_flag(decoupled_weight_decay, "decoupled_weight_decay")
    if callable(learning_rate):
        _check_schedule(learning_rate, "learning_rate")
    else:
        _check_scalar(learning_rate, "learning_rate", **_RANGES["learning_rate"])
    if momentum is not None:
        _check_scalar(momentum, "momentum", **_RANGES["momentum"])
    if weight_decay is not None:
        _check_scalar(weight_decay, "weight_decay", **_RANGES["weight_decay"])
    if nesterov and (
        momentum is None
        or (not V.is_tracer(momentum) and float(np.asarray(momentum)) == 0.0)
    ):
        raise ValueError(
            f"nesterov=True needs momentum in (0, 1), got momentum={momentum}; pass "
            "e.g. momentum=0.9, or drop nesterov."
        )
    if decoupled and weight_decay is None:
        raise ValueError("decoupled_weight_decay=True needs a weight_decay, got None.")
    accumulator = _check_accumulator_dtype(accumulator_dtype)
    return _Structure(
        nesterov,
        decoupled,
        momentum is not None,
        weight_decay is not None,
        accumulator if momentum is not None else None,
    )


def _sgd_init(
    structure: _Structure,
    numeric: dict[str, Any],
    schedule: Callable | None,
    params: Params,
) -> optax.InjectStatefulHyperparamsState:
    """:func:`sgd`'s ``init_fn``: the numbers in ``numeric`` and, when the
    learning rate is a ``schedule``, its state and first value, as arrays of
    the storage dtype (exactly what ``update`` hands back)."""
    mesh = _mesh_of(params)
    dtype = _hyperparam_dtype(params, structure.accumulator_dtype)
    hyperparams = {k: _as_array(v, dtype, mesh) for k, v in numeric.items()}
    schedule_states = {}
    if schedule is not None:
        count = _as_array(0, jnp.int32, mesh)
        schedule_states["learning_rate"] = (
            optax.schedules.WrappedSchedule(schedule).init()._replace(count=count)
        )
        hyperparams["learning_rate"] = _schedule_value(schedule(count), dtype, mesh)
    inner = _sgd_inner_state(structure, params)
    return optax.InjectStatefulHyperparamsState(
        count=_as_array(0, jnp.int32, mesh),
        hyperparams=hyperparams,
        hyperparams_states=schedule_states,
        inner_state=inner,
    )


def _sgd_inner_state(structure: _Structure, params: Params) -> tuple:
    """The states of :func:`sgd`'s chain, in its order: decay, trace, decay, scale."""
    inner = []
    if structure.weight_decay and not structure.decoupled:
        inner.append(optax.EmptyState())
    if structure.momentum:
        trace = jax.tree.map(lambda p: _zeros(p, structure.accumulator_dtype), params)
        inner.append(optax.TraceState(trace=trace))
    if structure.weight_decay and structure.decoupled:
        inner.append(optax.EmptyState())
    inner.append(optax.EmptyState())
    return tuple(inner)


# -------------------------------------------------------------------------- hyperparams


def _hyperparam_nodes(opt_state: PyTree) -> list[tuple[tuple, Any]]:
    found = []
    for cls in _INJECT_STATES:
        found += [
            (path, node)
            for path, node in optax.tree.get_all_with_path(opt_state, cls.__name__)
            if isinstance(node, cls)
        ]
    return found


def _collect(opt_state: PyTree) -> tuple[dict[str, Any], set[str]]:
    """Every hyperparameter by name, and the names driven by a schedule."""
    values: dict[str, Any] = {}
    scheduled: set[str] = set()
    where: dict[str, str] = {}
    for path, node in _hyperparam_nodes(opt_state):
        here = jax.tree_util.keystr(path) or "<root>"
        for name, value in node.hyperparams.items():
            if name in values:
                raise ValueError(
                    f"hyperparameter {name!r} appears in more than one "
                    f"inject_hyperparams state (at {where[name]} and {here}); "
                    "get or set it on each sub-state separately."
                )
            values[name], where[name] = value, here
        scheduled |= set(getattr(node, "hyperparams_states", {}) or {})
    return values, scheduled


def check_hyperparams(values: Any, *, where: str = "hyperparams") -> None:
    """Range-check numbers meant for injected hyperparameters, on the host.

    The ranges of :func:`sgd` (``learning_rate > 0``, ``momentum`` in
    ``[0, 1)``, ``weight_decay >= 0``, all finite) are checked elementwise, so
    a swept array is checked member by member; other names pass through. This
    is the one table of ranges that ``fit(hyperparams=...)``, ``sweep`` and
    :func:`set_hyperparams` share.

    Raises:
      ValueError: naming ``where[name]``, the range and the offending value.
    """
    for name, value in values.items():
        if name in _RANGES:
            _check_scalar(value, f"{where}[{name!r}]", **_RANGES[name], scalar=False)


def hyperparam_names(opt_state: PyTree) -> tuple[list[str], list[str]]:
    """``(settable, scheduled)``: the injected hyperparameter names in a state.

    Settable names can be changed with :func:`set_hyperparams`; scheduled ones
    are driven by a schedule inside the transform.
    """
    values, scheduled = _collect(opt_state)
    return sorted(set(values) - scheduled), sorted(scheduled)


def get_hyperparams(opt_state: PyTree) -> dict[str, jax.Array]:
    r"""The hyperparameters held in an optimizer state, by name.

    Reads every ``optax.InjectStatefulHyperparamsState`` (or the older
    ``InjectHyperparamsState``) in ``opt_state``, at the top or nested in an
    ``optax.chain`` state. A scheduled hyperparameter shows its current value.

    Args:
      opt_state: a state from :func:`sgd` or any ``optax.inject_hyperparams``
        transform, alone or inside a chain.

    Returns:
      A dict ``name -> array`` (0-d, or batched with a leading axis when the
      state is a vmapped sweep's).

    Raises:
      ValueError: no such state is found, or a name appears in two of them.

    Examples:
      >>> import jax.numpy as jnp
      >>> import optax
      >>> from gdjax.transforms import get_hyperparams, sgd
      >>> opt = optax.chain(optax.clip_by_global_norm(1.0), sgd(0.1, 0.9))
      >>> hp = get_hyperparams(opt.init(jnp.zeros(3)))
      >>> sorted(hp), hp["momentum"]
      (['learning_rate', 'momentum'], Array(0.9, dtype=float32))
    """
    if not _hyperparam_nodes(opt_state):
        raise ValueError(
            "opt_state holds no optax.InjectStatefulHyperparamsState: build the "
            "transform with gdjax.transforms.sgd or optax.inject_hyperparams, got "
            f"{describe(opt_state)}."
        )
    values, _ = _collect(opt_state)
    return values


def _convert_like(value: Any, stored: Any, name: str) -> jax.Array:
    """``value`` as an array of ``stored``'s dtype and shape, compiling nothing."""
    stored_shape = tuple(np.shape(stored))
    dtype = stored.dtype
    if V.is_tracer(value):
        out = jnp.asarray(value, dtype)
        if out.shape != stored_shape:
            raise ValueError(
                f"{name} must have shape {stored_shape} like the stored value, got "
                f"{out.shape}."
            )
        return out
    if np.iscomplexobj(value):
        raise TypeError(f"{name} must be a real number, got {describe(value)}.")
    # Elementwise, so a batched (swept) value is checked member by member.
    _check_scalar(value, name, **_RANGES.get(name, dict(low=-np.inf)), scalar=False)
    host = np.asarray(value)
    if host.shape != stored_shape:
        try:
            host = np.broadcast_to(host, stored_shape)
        except ValueError:
            raise ValueError(
                f"{name} must have shape {stored_shape} like the stored value (or "
                f"be a scalar), got {host.shape}."
            ) from None
    # The new value lives where the old one lived (a mesh, a swept state's
    # member sharding), so a compiled step takes it without compiling again.
    sharding = stored.sharding if isinstance(stored, jax.Array) else None
    if isinstance(sharding, NamedSharding):
        return jax.device_put(host.astype(dtype), sharding)
    return _as_array(host, dtype)


def set_hyperparams(opt_state: PyTree, **values: ArrayLike) -> PyTree:
    r"""A copy of ``opt_state`` with new numeric hyperparameter values.

    The state's structure, dtypes and shapes are kept, so a compiled step
    that took the old state takes the new one without recompiling. Values are
    converted on the host (or with ``jnp.asarray`` when traced); no XLA
    program is built. Values are written with ``optax.tree.set`` into the
    ``hyperparams`` of every ``InjectStatefulHyperparamsState`` in the state,
    also nested in an ``optax.chain`` state. ``learning_rate``, ``momentum``
    and ``weight_decay`` are checked against :func:`sgd`'s ranges; other
    names only for being finite reals.

    Args:
      opt_state: a state from :func:`sgd` or any ``optax.inject_hyperparams``
        transform.
      **values: ``name=value``; a scalar is broadcast over a batched (swept)
        state's leading axis.

    Returns:
      The new state.

    Raises:
      ValueError: an unknown name (the message lists those available), a name
        driven by a schedule (setting it would have no effect), or a value out
        of range.

    Examples:
      >>> import jax.numpy as jnp
      >>> from gdjax.transforms import set_hyperparams, sgd
      >>> state = sgd(0.1, momentum=0.0).init(jnp.zeros(2))
      >>> state = set_hyperparams(state, learning_rate=0.5, momentum=0.9)
      >>> state.hyperparams["learning_rate"], state.hyperparams["momentum"]
      (Array(0.5, dtype=float32), Array(0.9, dtype=float32))
    """
    stored, scheduled = _collect(opt_state)
    settable = sorted(set(stored) - scheduled)
    for name in values:
        if name in scheduled:
            raise ValueError(
                f"hyperparameter {name!r} is driven by a schedule; setting it would "
                f"have no effect. Settable: {settable}."
            )
        if name not in stored:
            raise ValueError(
                f"unknown hyperparameter {name!r}; opt_state holds {settable}."
            )
    if not values:
        return opt_state
    new = {name: _convert_like(v, stored[name], name) for name, v in values.items()}

    def in_hyperparams(path: tuple, value: Any) -> bool:
        del value
        return (
            len(path) >= 2
            and getattr(path[-2], "name", None) == "hyperparams"
            and getattr(path[-2], "tuple_name", None)
            in {cls.__name__ for cls in _INJECT_STATES}
        )

    return optax.tree.set(opt_state, in_hyperparams, **new)


# ---------------------------------------------------------------------------- averaging


class AverageIteratesState(NamedTuple):
    """State of :func:`average_iterates`.

    Attributes:
      count: updates seen so far (shape ``()``, int32).
      average: like params: the mean of the iterates from ``start`` on.
    """

    count: jax.Array
    average: Params


def average_iterates(start: ArrayLike = 0) -> optax.GradientTransformationExtraArgs:
    r"""Polyak–Ruppert averaging of the iterates, passing updates through.

    At the update with count :math:`c` (0 for the first), the new iterate is
    :math:`\theta_{c+1} = \theta_c + u_c` (``params + updates``, as
    ``optax.apply_updates`` forms it). The state keeps

    .. math::
      \bar\theta = \frac{1}{c - s + 1} \sum_{k=s}^{c} \theta_{k+1}, \qquad
      s = \text{start},

    updated as :math:`\bar\theta \leftarrow \bar\theta + (\theta_{c+1} -
    \bar\theta)/(c - s + 1)`; before ``start`` it is the latest iterate (the
    params at ``init``), so :func:`averaged_params` is always a point. With
    ``start=0`` it averages every iterate after :math:`\theta_0`, as
    ``sklearn``'s ``SGDRegressor(average=True)`` and
    ``torch.optim.ASGD(t0=0)`` do. ``optax.ema`` averages updates, not
    iterates; this is the iterate average. Put it last in a chain, so that
    ``updates`` are the final ones.

    Args:
      start: the update count from which iterates enter the average
        (burn-in), an integer >= 0: a Python or NumPy integer, or a 0-d
        integer array (``optax.inject_hyperparams(average_iterates)`` passes
        it as one, and may trace it).

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with state
      :class:`AverageIteratesState`; read the average with
      :func:`averaged_params`.

    Examples:
      >>> import jax.numpy as jnp
      >>> import optax
      >>> from gdjax.transforms import average_iterates, averaged_params
      >>> opt = optax.chain(optax.sgd(0.5), average_iterates())
      >>> params = jnp.array([4.0])
      >>> state = opt.init(params)
      >>> for _ in range(2):  # iterates 2.0 then 1.0 on ||params||^2 / 2
      ...     updates, state = opt.update(params, state, params)
      ...     params = optax.apply_updates(params, updates)
      >>> averaged_params(state)
      Array([1.5], dtype=float32)

    References:
      Polyak & Juditsky, `Acceleration of Stochastic Approximation by
      Averaging <https://doi.org/10.1137/0330046>`_, 1992.

      Ruppert, `Efficient Estimations from a Slowly Convergent Robbins-Monro
      Process <https://hdl.handle.net/1813/8664>`_, 1988.
    """
    start = _check_start(start)

    def init_fn(params: Params) -> AverageIteratesState:
        # A strong copy (update returns strong arrays) that never aliases
        # params (both may be donated to the same program); zeros of the right
        # shape, dtype and sharding for abstract (ShapeDtypeStruct) params.
        average = jax.tree.map(
            lambda p: (
                _zeros(p, None)
                if isinstance(p, jax.ShapeDtypeStruct)
                else jnp.array(p, dtype=_leaf_dtype(p), copy=True)
            ),
            params,
        )
        return AverageIteratesState(
            count=_as_array(0, jnp.int32, _mesh_of(params)), average=average
        )

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        if params is None:
            raise ValueError(
                "average_iterates needs params in update to form the iterate "
                "params + updates: call update(updates, state, params)."
            )
        iterate = optax.apply_updates(params, updates)
        n = jnp.maximum(state.count - start + 1, 1)
        average = jax.tree.map(
            lambda a, x: a + (x.astype(a.dtype) - a) / n.astype(a.dtype),
            state.average,
            iterate,
        )
        count = optax.safe_increment(state.count)
        return updates, AverageIteratesState(count=count, average=average)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _check_start(start: Any) -> Any:
    """``start`` as an integer >= 0; a 0-d integer array stays one (data)."""
    dtype = getattr(start, "dtype", None)
    integral = isinstance(start, (int, np.integer)) or (
        dtype is not None and jnp.issubdtype(dtype, jnp.integer)
    )
    if isinstance(start, (bool, np.bool_)) or not integral or np.ndim(start) != 0:
        raise TypeError(f"start must be an integer (0-d), got {describe(start)}.")
    if V.is_tracer(start):
        return start
    if int(start) < 0:
        raise ValueError(f"start must be an integer >= 0, got {int(start)}.")
    return start if isinstance(start, jax.Array) else int(start)


def averaged_params(opt_state: PyTree) -> Params:
    r"""The iterate average held by :func:`average_iterates` in ``opt_state``.

    Args:
      opt_state: a state holding one :class:`AverageIteratesState`, alone or
        inside an ``optax.chain`` state.

    Returns:
      The averaged params (same structure as params).

    Raises:
      ValueError: no :class:`AverageIteratesState`, or more than one.

    Examples:
      >>> import jax.numpy as jnp
      >>> from gdjax.transforms import average_iterates, averaged_params
      >>> averaged_params(average_iterates().init(jnp.ones(2)))
      Array([1., 1.], dtype=float32)
    """
    found = [
        node
        for _, node in optax.tree.get_all_with_path(opt_state, "AverageIteratesState")
        if isinstance(node, AverageIteratesState)
    ]
    if len(found) != 1:
        raise ValueError(
            "opt_state must hold exactly one AverageIteratesState (put "
            "gdjax.transforms.average_iterates() last in the chain), found "
            f"{len(found)}."
        )
    return found[0].average


# ---------------------------------------------------------------------------- schedules


def _count(count: ArrayLike) -> jax.Array:
    # A float count keeps its dtype; an integer one meets only Python floats
    # below, so the value comes out weakly typed (float32 unless x64) and
    # optax.inject_hyperparams / scale_by_schedule adopt the params' dtype,
    # as they do for optax's own schedules.
    t = jnp.asarray(count)
    if not jnp.issubdtype(t.dtype, jnp.number) or jnp.issubdtype(
        t.dtype, jnp.complexfloating
    ):
        raise TypeError(f"count must be a real number, got {describe(count)}.")
    return t


def inverse_time_decay(init_value: float, decay_rate: float) -> optax.Schedule:
    r"""Bottou's inverse-time step size, an optax schedule.

    .. math::
      \eta_t = \frac{\eta_0}{1 + \eta_0 \lambda t}

    the schedule of Bottou's SGD code and of scikit-learn's
    ``learning_rate='optimal'`` (with :math:`\lambda` the regularization),
    :math:`O(1/t)` as Robbins–Monro asks.

    Args:
      init_value: :math:`\eta_0 > 0`, the value at :math:`t = 0`.
      decay_rate: :math:`\lambda \ge 0`; 0 gives a constant.

    Returns:
      ``schedule(count) -> value``: in the count's dtype when that is a float,
      else weakly typed (float32 unless x64), so that optax casts it to the
      params' dtype.

    Examples:
      >>> from gdjax.transforms import inverse_time_decay
      >>> schedule = inverse_time_decay(0.5, decay_rate=2.0)
      >>> [float(schedule(t)) for t in (0, 1, 9)]
      [0.5, 0.25, 0.05000000074505806]

    References:
      Bottou, `Stochastic Gradient Descent Tricks
      <https://leon.bottou.org/publications/pdf/tricks-2012.pdf>`_, 2012.
    """
    init_value = float(
        _check_scalar(init_value, "init_value", low=0.0, low_inclusive=False)
    )
    decay_rate = float(_check_scalar(decay_rate, "decay_rate", low=0.0))

    def schedule(count: ArrayLike) -> jax.Array:
        t = _count(count)
        return init_value / (1.0 + init_value * decay_rate * t)

    return schedule


def power_decay(
    init_value: float, power: float = 1.0, offset: float = 1.0
) -> optax.Schedule:
    r"""Polynomially decaying step size, an optax schedule.

    .. math::
      \eta_t = \frac{\eta_0}{(t + t_0)^p}

    For :math:`1/2 < p \le 1` the steps satisfy Robbins & Monro's conditions
    :math:`\sum_t \eta_t = \infty`, :math:`\sum_t \eta_t^2 < \infty`;
    :math:`p = 1` is the classic :math:`1/t`. Note :math:`\eta_0` is the
    value at :math:`t = 0` only when :math:`t_0 = 1`.

    Args:
      init_value: :math:`\eta_0 > 0`.
      power: :math:`p > 0`.
      offset: :math:`t_0 > 0`, shifting the count so that step 0 is finite.

    Returns:
      ``schedule(count) -> value``, its dtype as for :func:`inverse_time_decay`.

    Examples:
      >>> from gdjax.transforms import power_decay
      >>> schedule = power_decay(1.0, power=0.5)
      >>> [float(schedule(t)) for t in (0, 3, 99)]
      [1.0, 0.5, 0.10000000149011612]

    References:
      Robbins & Monro, `A Stochastic Approximation Method
      <https://doi.org/10.1214/aoms/1177729586>`_, 1951.
    """
    init_value = float(
        _check_scalar(init_value, "init_value", low=0.0, low_inclusive=False)
    )
    power = float(_check_scalar(power, "power", low=0.0, low_inclusive=False))
    offset = float(_check_scalar(offset, "offset", low=0.0, low_inclusive=False))

    def schedule(count: ArrayLike) -> jax.Array:
        t = _count(count)
        return init_value / (t + offset) ** power

    return schedule
