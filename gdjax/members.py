r"""The plan of a sweep's members: seeds × settings × devices.

A sweep trains one *member* per (seed, hyperparameter setting). The member
with seed :math:`s` and setting :math:`h` is, to float tolerance (and exactly
in its discrete outputs: epochs, steps, status), the single run

.. code-block:: python

    init_key, run_key = gd.seed_keys(s)
    gd.fit(loss, init(init_key), data, transform, key=run_key,
           hyperparams=h_transform, **h_criteria, **options)

where ``h_transform`` are the transform's injected hyperparameters of ``h``
and ``h_criteria`` its stopping criteria. With :math:`M` members the whole
sweep is

.. math:: \big(\theta^{(m)}_T\big)_{m=1}^{M} =
   \mathrm{vmap}_m\ \mathrm{run}\big(\theta^{(m)}_0, s^{(m)}, h^{(m)};\ D\big)

compiled once (:data:`gdjax.loop.advance_members`) over a flat member axis,
with the data :math:`D` unbatched (one copy, never one per member). A swept
number is an array in the member's optimizer state
(``optax.inject_hyperparams``) or in its :class:`~gdjax.stopping.Criteria`, so
new values reuse the program. The initial parameters are drawn seed by seed
by one compiled program (:func:`start_program`: the keys and ``init``),
remembered by what ``init`` traces to, so a new ``init`` function that does
the same (an inline lambda) compiles nothing. Compiled, ``init`` gives
``jax.jit(init)(init_key)``: bit for bit ``init(init_key)`` for JAX's and
gdjax's initializers, and possibly an ulp apart where ``init`` does its own
arithmetic on the draws (XLA fuses it); pass ``jax.jit(init)(init_key)`` to
``fit`` to reproduce a member bit for bit.

Devices: with several devices the member axis is sharded over a mesh
``("members",)``; the data is replicated. The member count is padded to a
multiple of the device count with copies of member 0, dropped afterwards.

This module is shared by :func:`gdjax.sweep`, :func:`gdjax.sweep_stream` and
the learning-rate range test.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import inspect
import itertools
import numbers
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.extend
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from gdjax import _validate as V
from gdjax import batching, loop, loss_forms, runs, sharding, transforms
from gdjax._typing import Batch, Key, LossFn, Params, PyTree
from gdjax.errors import GdjaxTypeError, GdjaxValueError
from gdjax.loop import RunState
from gdjax.results import gather
from gdjax.spec import Driving, Recording, Stopping
from gdjax.stopping import Criteria

CRITERIA = Criteria._fields
"""Stopping criteria that can be swept (per-member arrays in the program)."""

MEMBER_AXIS = "members"
"""The mesh axis a sweep's members are sharded over."""

_SEED_LIMIT = 2**32


def seed_keys(seed: int) -> tuple[Key, Key]:
    r"""The two keys of a sweep member: one for its initial parameters, one for its run.

    .. math:: (k_{\mathrm{init}}, k_{\mathrm{run}}) =
       \mathrm{split}(\mathrm{key}(s))

    The member of :func:`gdjax.sweep` with seed ``s`` equals
    ``fit(loss, init(init_key), data, transform, key=run_key, ...)``.

    Args:
      seed: a non-negative integer below ``2**32``.

    Returns:
      ``(init_key, run_key)``, two typed PRNG keys.

    Examples:
      >>> import jax, gdjax as gd
      >>> init_key, run_key = gd.seed_keys(3)
      >>> bool((jax.random.key_data(init_key) != jax.random.key_data(run_key)).any())
      True
    """
    keys = jax.random.split(jax.random.key(seed))
    return keys[0], keys[1]


# ----------------------------------------------------------------------- checking


def freeze(value: Any) -> Any:
    """A hashable, readable form of a coordinate value."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.item() if value.ndim == 0 else tuple(value.tolist())
    if isinstance(value, list):
        return tuple(freeze(v) for v in value)
    return value


def check_seeds(seeds: Any) -> np.ndarray:
    """Distinct integers in ``[0, 2**32)`` as a uint32 array."""
    if isinstance(seeds, numbers.Integral) or not isinstance(
        seeds, (Sequence, np.ndarray, range)
    ):
        raise GdjaxTypeError(
            "seeds must be a sequence of integers (a list, range or 1-D array), got "
            f"{V.describe(seeds)}; for n seeds pass range(n)."
        )
    arr = np.asarray(list(seeds) if not isinstance(seeds, np.ndarray) else seeds)
    if arr.ndim != 1:
        raise GdjaxValueError(f"seeds must be one-dimensional, got shape {arr.shape}.")
    if arr.size == 0:
        raise GdjaxValueError("seeds is empty: the sweep has no members.")
    for s in arr.tolist():
        if isinstance(s, bool) or not isinstance(s, numbers.Integral):
            raise GdjaxTypeError(f"seeds must be integers, got {V.describe(s)}.")
        if not 0 <= s < _SEED_LIMIT:
            raise GdjaxValueError(f"seeds must be integers in [0, 2**32), got {s}.")
    V.check_distinct(arr, "seeds", "a repeated seed is a repeated member")
    return arr.astype(np.uint32)


def check_sequence(values: Any, name: str) -> np.ndarray:
    """A non-empty 1-D sequence of numbers as an array."""
    if isinstance(values, (str, bytes, Mapping)) or np.ndim(values) != 1:
        raise GdjaxTypeError(
            f"{name} must be a sequence of numbers (a list or 1-D array), got "
            f"{V.describe(values)}; for a single value write [value]."
        )
    arr = np.asarray(values)
    if arr.size == 0:
        raise GdjaxValueError(f"{name} is empty: the sweep has no members.")
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.number):
        raise GdjaxTypeError(f"{name} must hold numbers, got {V.describe(values)}.")
    return arr


def check_mapping(value: Any, name: str) -> dict[str, Any]:
    """``None`` or a dict with string keys, as a dict."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise GdjaxTypeError(
            f"{name} must be a dict of name -> values, got {V.describe(value)}."
        )
    for key in value:
        if not isinstance(key, str):
            raise GdjaxTypeError(f"{name} keys must be strings, got {key!r}.")
    return dict(value)


class Axes(NamedTuple):
    """The hyperparameter axes of one sweep (host-side).

    Attributes:
      names: the swept names.
      coords: ``((axis, values), ...)`` after ``"seed"``.
      flat: name -> ``(H,)`` values, the settings in C order.
      count: the number of settings H.
    """

    names: tuple[str, ...]
    coords: tuple
    flat: dict[str, np.ndarray]
    count: int


def sweep_axes(hyperparams: Any, grid: Any) -> Axes:
    """The settings of ``hyperparams``: their product (grid) or their zip."""
    if not isinstance(grid, (bool, np.bool_)):
        raise GdjaxTypeError(f"grid must be True or False, got {V.describe(grid)}.")
    lists = {
        name: check_sequence(values, f"hyperparams[{name!r}]")
        for name, values in check_mapping(hyperparams, "hyperparams").items()
    }
    names = tuple(lists)
    if not names:
        return Axes((), (), {}, 1)
    if grid:
        for name, values in lists.items():
            V.check_distinct(
                values,
                f"hyperparams[{name!r}]",
                "a repeated value is a repeated member",
            )
        mesh = np.meshgrid(*(np.arange(len(v)) for v in lists.values()), indexing="ij")
        flat = {n: lists[n][m.ravel()] for n, m in zip(names, mesh, strict=True)}
        coords = tuple((n, tuple(freeze(v) for v in lists[n])) for n in names)
        return Axes(names, coords, flat, int(np.prod([len(v) for v in lists.values()])))
    lengths = {n: len(v) for n, v in lists.items()}
    if len(set(lengths.values())) != 1:
        raise GdjaxValueError(
            "grid=False zips the hyperparameter lists, so they must have equal "
            f"lengths, got {lengths}; use grid=True for their product."
        )
    k = next(iter(lengths.values()))
    settings = tuple(tuple((n, freeze(lists[n][i])) for n in names) for i in range(k))
    if len(set(settings)) != k:
        raise GdjaxValueError(
            "grid=False settings must be distinct (a repeated setting is a repeated "
            "member)."
        )
    return Axes(names, (("setting", settings),), lists, k)


def _check_values(name: str, values: np.ndarray, dtype: Any, grid: bool) -> None:
    """Swept values in range, and distinct, in the ``dtype`` the run holds them in
    (a list: each dtype they take)."""
    if isinstance(dtype, list):
        for one in dtype:
            _check_values(name, values, one, grid)
        return
    where = f"hyperparams[{name!r}]"
    if name in ("max_steps", "patience"):
        for v in values.tolist():
            V.check_count(v, where)
        return
    if name in ("tol", "grad_tol"):
        V.check_nonnegative(values, where)
    elif name in CRITERIA:
        V.check_real(values, where)
    else:
        V.check_hyperparams({name: values}, dtypes={name: dtype})
    if name in CRITERIA:
        V.check_in_dtype(values, where, dtype)
    if grid:
        V.check_distinct(values, where, "a repeated value is a repeated member", dtype)


def check_devices(devices: Any) -> list | None:
    """The devices to shard members over (None: one device)."""
    if devices is None:
        available = jax.devices()
        return available if len(available) > 1 else None
    return V.check_devices(devices)


def abstract_params(init: Any) -> Params:
    """The shapes ``init(key)`` gives (or ``init`` itself, a shared pytree)."""
    if callable(init):
        try:
            return jax.eval_shape(init, jax.eval_shape(jax.random.key, 0))
        except Exception as e:  # noqa: BLE001 - reworded, JAX's message chained
            raise GdjaxTypeError(
                "init must be callable as init(key) -> params (or be a params "
                f"pytree shared by every member); calling it on a key failed: {e}"
            ) from e
    return init


# --------------------------------------------------------------------------- plan


class Plan(NamedTuple):
    """One compiled sweep, validated and ready (host-side).

    Attributes:
      run: member 0's program and inputs (no state).
      init: the ``init(key)`` function, or None for shared params.
      shared: the params every member starts from, or None.
      transform_init: the transform's ``init``.
      seeds: ``(S,)`` uint32.
      member_seed: ``(M_pad,)`` position in ``seeds`` of each member's seed.
      hyperparams: injected values, ``(M_pad,)`` each.
      criteria: :class:`~gdjax.stopping.Criteria` of ``(M_pad,)`` arrays.
      members: the member count M (without padding).
      mesh: the mesh the members are sharded over, or None.
      recording: the run's :class:`~gdjax.spec.Recording`.
      loss: a declared loss (:func:`gdjax.stateful`), whose initial state the
        members start from; None otherwise.
    """

    run: runs.Run
    init: Callable | None
    shared: Params | None
    transform_init: Callable
    seeds: np.ndarray
    member_seed: np.ndarray
    hyperparams: dict[str, np.ndarray]
    criteria: Criteria
    members: int
    mesh: jax.sharding.Mesh | None
    recording: Recording
    loss: Any = None


def broadcast(tree: Any, m: int) -> Any:
    """Every leaf with a leading member axis of length ``m`` (a view)."""
    return jax.tree.map(
        lambda a: np.broadcast_to(np.asarray(a), (m, *np.shape(a))), tree
    )


def _sweepable(transform: Any, params: Params, axes: Axes, stopping: Stopping):
    """The injected hyperparameters (abstract) after checking the swept names."""
    settable, scheduled, injected = runs.check_transform_values(transform, params)
    available = list(settable) + list(CRITERIA)
    for name in axes.names:
        if name in scheduled:
            raise GdjaxValueError(
                f"hyperparams[{name!r}] is driven by a schedule in the transform; "
                f"sweeping it would have no effect. Sweepable: {available}."
            )
        if name not in available:
            hint = (
                ""
                if settable
                else " (the transform holds no injected hyperparameters: build it "
                "with gd.sgd or optax.inject_hyperparams to sweep them)"
            )
            raise GdjaxValueError(
                f"unknown hyperparameter {name!r}; sweepable names are "
                f"{available}{hint}."
            )
        if name in CRITERIA and getattr(stopping, name) is not None:
            raise GdjaxValueError(
                f"{name!r} is both swept (hyperparams) and fixed (keyword argument); "
                "give it once."
            )
    if "patience" in axes.names and "tol" not in axes.names and stopping.tol is None:
        raise GdjaxValueError(
            "hyperparams['patience'] is swept but tol is off; patience counts "
            "epochs without relative improvement above tol, so pass tol=... too."
        )
    return {n: injected[n] for n in settable}


def plan_members(
    loss: LossFn,
    init: Any,
    data: Batch,
    transform: Any,
    *,
    seeds: np.ndarray,
    axes: Axes,
    epochs: int,
    regime: batching.Regime | None,
    val_data: Batch | None,
    devices: list | None,
    stopping: Stopping,
    recording: Recording,
    driving: Driving,
) -> Plan:
    """Validate a sweep (nothing compiles) and lay out its members."""
    runs.check_transform(transform)
    abstract = abstract_params(init)
    V.check_params(abstract, "params" if not callable(init) else "init(key)")
    injected = _sweepable(transform, abstract, axes, stopping)
    swept_criteria = [n for n in axes.names if n in CRITERIA]
    for name in ("max_steps", "patience"):
        if name in axes.names:  # before they build member 0's Stopping
            _check_values(name, axes.flat[name], None, grid=False)
    # Member 0's values switch each swept criterion on in the program.
    first = {n: axes.flat[n][0].item() for n in swept_criteria}
    if "patience" in first and stopping.tol is None and "tol" not in first:
        first["tol"] = 0.0
    run = runs.prepare(
        loss,
        abstract,
        data,
        transform,
        key=np.zeros(2, np.uint32),
        epochs=epochs,
        regime=regime,
        val_data=val_data,
        stopping=dataclasses.replace(stopping, **first),
        recording=recording,
        driving=driving,
        abstract=True,
    )
    _check_axes_values(axes, run.inputs.criteria, abstract, injected)
    m = len(seeds) * axes.count
    mesh, m_pad = _member_mesh(devices, m)
    # Member m = (seed m // H, setting m % H); padding repeats member 0.
    pick = np.concatenate([np.arange(m), np.zeros(m_pad - m, np.int64)])
    setting = pick % axes.count
    hyper = {
        n: np.asarray(axes.flat[n][setting], dtype=injected[n].dtype)
        for n in axes.names
        if n not in CRITERIA
    }
    criteria = broadcast(run.inputs.criteria, m_pad)
    criteria = criteria._replace(
        **{
            n: np.asarray(axes.flat[n][setting], dtype=getattr(criteria, n).dtype)
            for n in swept_criteria
        }
    )
    return Plan(
        run=run,
        init=init if callable(init) else None,
        shared=None if callable(init) else init,
        transform_init=transform.init,
        seeds=seeds,
        member_seed=(pick // axes.count).astype(np.int32),
        hyperparams=hyper,
        criteria=criteria,
        members=m,
        mesh=mesh,
        recording=recording,
        loss=loss,
    )


def _check_axes_values(
    axes: Axes, criteria: Any, abstract: Any, injected: dict[str, Any]
) -> None:
    """Check each swept axis's values against the dtype they will be stored in:
    the criterion's, or the hyperparameter's as the params' dtypes use it."""
    for name in axes.names:
        dtype = (
            getattr(criteria, name).dtype
            if name in CRITERIA
            else runs.use_dtypes(abstract, injected[name].dtype)
        )
        grid = axes.coords[0][0] != "setting"
        # On a grid, an axis's own values (the flat layout repeats them).
        values = np.asarray(dict(axes.coords)[name]) if grid else axes.flat[name]
        _check_values(name, values, dtype, grid=grid)


def _member_mesh(devices: list | None, m: int) -> tuple[Any, int]:
    """``(mesh, m_pad)``: a one-axis mesh over at most ``m`` of ``devices``
    (None without devices) and ``m`` rounded up to a multiple of its size."""
    if devices is None:
        return None, m
    d = min(len(devices), m)
    mesh = jax.make_mesh(
        (d,),
        (MEMBER_AXIS,),
        axis_types=(jax.sharding.AxisType.Auto,),
        devices=devices[:d],
    )
    return mesh, -(-m // d) * d


def shardings(plan: Plan) -> tuple[Any, Any]:
    """(member-axis sharding, replicated sharding), or (None, None) on one device."""
    if plan.mesh is None:
        return None, None
    return NamedSharding(plan.mesh, P(MEMBER_AXIS)), NamedSharding(plan.mesh, P())


_START_PROGRAMS: collections.OrderedDict = collections.OrderedDict()
_START_PROGRAMS_KEPT = 32
_START_PROGRAMS_LOCK = threading.Lock()


def _held(jaxpr: Any) -> tuple:
    """What the equations of ``jaxpr`` (and of the jaxprs inside them) hold
    that its text does not show by value: a callback's function, a mesh, an
    array. Hashable ones as themselves (compared by equality: functions by
    identity), others by identity."""
    held: list = []

    def visit(v: Any) -> None:
        if isinstance(v, jax.extend.core.ClosedJaxpr):
            walk(v.jaxpr)
            for c in v.consts:
                visit(c)
        elif isinstance(v, jax.extend.core.Jaxpr):
            walk(v)
        elif isinstance(v, (tuple, list)):
            for x in v:
                visit(x)
        elif not isinstance(v, (str, int, float, complex, type(None), np.dtype)):
            try:
                hash(v)
                held.append(v)
            except TypeError:  # kept alive by the jaxpr the program holds
                held.append(("unhashable", id(v)))

    def walk(j: Any) -> None:
        for eqn in j.eqns:
            for v in eqn.params.values():
                visit(v)

    walk(jaxpr)
    return tuple(held)


def _run_jaxpr(jaxpr: Any, consts: list, seed: Any) -> list:
    closed = jax.extend.core.ClosedJaxpr(jaxpr, consts)
    return jax.extend.core.jaxpr_as_fun(closed)(seed)


def start_program(init: Callable | None, options: tuple = ()) -> Callable:
    """``seed -> (run-key data, init(init_key))`` compiled (:func:`seed_keys`):
    one program for every seed of a sweep, and for every ``init`` that traces
    to the same program.

    The program is remembered by what it traces to (its jaxpr's text, and
    what its equations hold that the text does not show: a callback's
    function), not by the ``init`` function object: a fresh ``lambda k:
    gd.init.mlp(k, widths)`` at every call of a notebook cell finds the
    program the last one compiled. The arrays ``init`` closes over are inputs
    of the program, passed at each call: two inits that differ in their
    values share it, and nothing here keeps them alive. (Op by op, the keys
    and ``init`` compiled a program per op and shape at a first sweep: 16 for
    W4's MLP, 1.0 s; as one program, 0.6 s.) With ``init=None`` (shared
    parameters) it draws the keys alone. ``options``: the sweep's
    ``compiler_options`` (:class:`gdjax.spec.Driving`).
    """

    def start(seed: Any) -> tuple[jax.Array, Params | None]:
        init_key, run_key = seed_keys(seed)
        params = None if init is None else init(init_key)
        return jax.random.key_data(run_key), params

    seed = jax.ShapeDtypeStruct((), np.uint32)
    closed, out_shape = jax.make_jaxpr(start, return_shape=True)(seed)
    treedef = jax.tree.structure(out_shape)
    name = (str(closed.jaxpr), _held(closed.jaxpr), treedef, options)
    with _START_PROGRAMS_LOCK:
        flat = _START_PROGRAMS.get(name)
        if flat is None:
            flat = jax.jit(
                functools.partial(_run_jaxpr, closed.jaxpr),
                compiler_options=dict(options) or None,
            )
            _START_PROGRAMS[name] = flat
            if len(_START_PROGRAMS) > _START_PROGRAMS_KEPT:
                _START_PROGRAMS.popitem(last=False)
        else:
            _START_PROGRAMS.move_to_end(name)
    consts = list(closed.consts)

    def program(seed: np.uint32) -> tuple[jax.Array, Params | None]:
        return jax.tree.unflatten(treedef, flat(consts, seed))

    return program


def initial_state(
    plan: Plan, options: tuple = ()
) -> tuple[np.ndarray, PyTree, PyTree]:
    """Each member's run-key data, initial parameters and transform state,
    stacked on the host (a leading member axis).

    Per seed: the keys and ``init`` as one compiled program
    (:func:`start_program`), then the transform's ``init`` eagerly on that
    seed's concrete parameters: :func:`gdjax.sgd`'s state of a concrete leaf
    is NumPy zeros, which compile nothing (vmapped over the stacked members it
    compiled a broadcast per shape).
    """
    start = start_program(plan.init, options)
    per_seed = []
    for s in plan.seeds.tolist():
        run_key, params = start(np.uint32(s))
        opt_state = None if params is None else plan.transform_init(params)
        per_seed.append((run_key, params, opt_state))
    per_seed = jax.device_get(per_seed)
    pick = plan.member_seed
    key_data = np.stack([k for k, _, _ in per_seed])[pick]
    if plan.init is None:
        m = len(pick)
        opt_state = jax.device_get(plan.transform_init(plan.shared))
        return key_data, broadcast(plan.shared, m), broadcast(opt_state, m)
    # NaN in a member's start fails that member at its first step; say so before
    # the sweep compiles.
    for s, (_, p, _) in zip(plan.seeds.tolist(), per_seed, strict=True):
        V.check_params(p, f"init(seed_keys({s})[0])", finite=True)

    def stack(i: int) -> PyTree:
        trees = [seed[i] for seed in per_seed]
        return jax.tree.map(lambda *xs: np.stack(xs)[pick], *trees)

    return key_data, stack(1), stack(2)


def member_run(plan: Plan, options: tuple = ()) -> runs.Run:
    """The stacked initial state and inputs of a plan, on the devices
    (``options``: the sweep's ``compiler_options``, for its start program)."""
    run = plan.run
    shard, rep = shardings(plan)
    key_data, params, opt_state = initial_state(plan, options)
    # sharding.place, not jax.device_put: across processes device_put checks
    # that every process holds equal values, and the NaN of an unwritten
    # history never equals itself.
    put = functools.partial(sharding.place, sharding=shard)
    params = put(params)
    if plan.hyperparams:
        opt_state = transforms.set_hyperparams(opt_state, **plan.hyperparams)
    # A copy: the run donates its state, and an optimizer state may share one
    # array between leaves.
    opt_state = put(opt_state, copy=True)
    names = tuple(name for name, _ in plan.recording.monitors)
    rows = runs.rows(run.program.epochs, plan.recording)
    rest = loop.initial_state(rows, names, None, None, run.dtype)
    rest = put(broadcast(rest._replace(params=None, opt_state=None), len(key_data)))
    loss_state = put(loss_forms.member_states(plan.loss, params, len(key_data)))
    state = rest._replace(params=params, opt_state=opt_state, loss_state=loss_state)
    inputs = run.inputs._replace(
        data=sharding.place(run.inputs.data, rep),
        val_data=None
        if run.inputs.val_data is None
        else sharding.place(run.inputs.val_data, rep),
        key=jax.random.wrap_key_data(put(key_data)),
        criteria=put(plan.criteria),
    )
    return run._replace(state=state, inputs=inputs)


def to_host(state: RunState, members: int) -> RunState:
    """The members' state on the host, padding members dropped.

    Across processes the members are gathered (a collective): every process
    gets every member.
    """
    return jax.tree.map(lambda a: a[:members], gather(state))


def execute(plan: Plan, driving: Driving) -> RunState:
    """Run a plan's members to their stops; their state on the host."""
    from gdjax.results import FitResult

    run = member_run(plan, driving.compiler_options)
    advance = loop.jit_run(
        loop.run_members, donate=True, options=driving.compiler_options
    )
    state = runs.drive(
        run,
        advance=advance,
        driving=driving,
        wrap=FitResult,
        donates=True,
    )
    return to_host(state, plan.members)


def reshape(state: RunState, shape: tuple[int, ...]) -> RunState:
    """A flat member axis laid out as the sweep's axes."""
    return jax.tree.map(lambda a: a.reshape(shape + a.shape[1:]), state)


# -------------------------------------------------------------------------- outer


def _check_outer_init(init: Any, init_names: list[str]) -> None:
    if not callable(init):
        raise GdjaxValueError(
            f"outer axes {init_names} are passed to init as keywords, so init "
            "must be a callable init(key, **kw)."
        )
    try:
        sig = inspect.signature(init)
    except (TypeError, ValueError):  # pragma: no cover - builtins
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values()):
        return
    known = [
        p.name
        for p in sig.parameters.values()
        if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
    ][1:]
    for n in init_names:
        if n not in known:
            raise GdjaxValueError(
                f"unknown outer axis {n!r}: it is not batch_size, regime or "
                f"a keyword of init (which takes {known})."
            )


def _point_regime(base: batching.Regime, values: dict[str, Any], regime: Any):
    if "regime" in values:
        return values["regime"]
    if "batch_size" not in values:
        return regime
    if base.kind == "stochastic":
        raise GdjaxValueError(
            "outer batch_size needs regime=None, gd.full_batch() or "
            f"gd.minibatch(...), got {base.describe()}."
        )
    b = values["batch_size"]
    if base.kind == "minibatch":
        return batching.minibatch(
            b,
            shuffle=base.shuffle,
            last_batch=base.last_batch,
            permutation=base.permutation,
        )
    return batching.minibatch(b)


def outer_points(
    outer: Any, init: Any, regime: batching.Regime | None, axes: Axes
) -> tuple[tuple, list[tuple[dict[str, Any], Any, Any]]]:
    """The outer coordinates and, per point, ``(values, init, regime)``."""
    outer = check_mapping(outer, "outer")
    if not outer:
        return (), [({}, init, regime)]
    lists = {}
    for name, values in outer.items():
        if name == "seed" or name in axes.names:
            raise GdjaxValueError(
                f"outer[{name!r}] is also swept inside (seed or hyperparams); "
                "give it once."
            )
        if isinstance(values, (str, bytes, Mapping)) or not isinstance(
            values, (Sequence, np.ndarray, range)
        ):
            raise GdjaxTypeError(
                f"outer[{name!r}] must be a sequence of values, got "
                f"{V.describe(values)}."
            )
        values = list(values)
        if not values:
            raise GdjaxValueError(
                f"outer[{name!r}] is empty: the sweep has no members."
            )
        frozen = [freeze(v) for v in values]
        try:
            repeated = len(set(frozen)) != len(frozen)
        except TypeError:  # unhashable values (regimes are hashable)
            repeated = False
        if repeated:
            raise GdjaxValueError(
                f"outer[{name!r}] must be distinct, got {values} (a repeated value "
                "is a repeated run)."
            )
        lists[name] = values
    if "batch_size" in lists and "regime" in lists:
        raise GdjaxValueError("outer may vary batch_size or regime, not both.")
    init_names = [n for n in lists if n not in ("batch_size", "regime")]
    if init_names:
        _check_outer_init(init, init_names)
    base = batching.full_batch() if regime is None else regime
    points = []
    for combo in itertools.product(*lists.values()):
        values = dict(zip(lists, combo, strict=True))
        point_init = init
        if init_names:
            point_init = functools.partial(init, **{n: values[n] for n in init_names})
        points.append((values, point_init, _point_regime(base, values, regime)))
    coords = tuple((n, tuple(freeze(v) for v in vs)) for n, vs in lists.items())
    return coords, points


def stack_points(parts: list[Any], shape: tuple[int, ...]) -> Any:
    """Stack per-point pytrees over outer axes, or an object array if shapes differ."""
    structs = {jax.tree.structure(p) for p in parts}
    if len(structs) == 1:
        shapes = {tuple(np.shape(x) for x in jax.tree.leaves(p)) for p in parts}
        if len(shapes) == 1:
            stacked = jax.tree.map(lambda *xs: np.stack(xs), *parts)
            return jax.tree.map(lambda a: a.reshape(shape + a.shape[1:]), stacked)
    out = np.empty(len(parts), dtype=object)
    for i, p in enumerate(parts):
        out[i] = p
    return out.reshape(shape)


def combine_points(states: list[RunState], shape: tuple[int, ...]) -> RunState:
    """Per-point member states stacked over the outer axes (field by field)."""
    return RunState(
        **{
            field: stack_points([getattr(s, field) for s in states], shape)
            for field in RunState._fields
        }
    )


__all__ = [
    "CRITERIA",
    "MEMBER_AXIS",
    "Axes",
    "Plan",
    "abstract_params",
    "broadcast",
    "check_devices",
    "check_mapping",
    "check_seeds",
    "check_sequence",
    "combine_points",
    "execute",
    "freeze",
    "initial_state",
    "member_run",
    "outer_points",
    "plan_members",
    "reshape",
    "seed_keys",
    "shardings",
    "start_program",
    "sweep_axes",
    "to_host",
]
