r"""Losses that take a random key or carry a state: declared once, as a value.

A plain loss is ``loss(params, batch) -> scalar``. Deep-learning losses often
need more: a fresh key each step (dropout, augmentation, noise injection, a
variational objective) or a state that gradient descent does not train
(batch-norm running statistics, an EMA teacher, a counter). Such a loss is
declared with :func:`keyed` or :func:`stateful`, which return a
:class:`LossSpec`; :func:`gdjax.fit` and :func:`gdjax.sweep` take it where
they take a loss.

.. code-block:: python

    gd.keyed(loss)            # loss(params, batch, key) -> value
    gd.stateful(loss, state)  # loss(params, state, batch) -> (value, new_state)
    gd.stateful(loss, state, takes_key=True)
    # loss(params, state, batch, key) -> (value, new_state)

Why a value and not a flag on ``fit``: the form belongs to the loss, not to
the run. Declared once it travels with the loss through ``fit``, ``sweep``,
``resume=`` and checkpoints, and a run cannot be started with the right
function and the wrong flag. ``LossSpec`` is a pytree whose children are the
user's functions (a ``gd.make_loss`` inside keeps its ``l2`` as a traced
leaf) and whose form is static: equal declarations share one compiled
program. The initial state is held beside the pytree, not in it (the program
reads the state from the run's carry, never from the loss).

**The key.** Step :math:`t` (counting applied steps from 0 over the whole
run) receives

.. math:: k_t = \mathrm{fold\_in}\big(\mathrm{fold\_in}(k_{\mathrm{run}},
   S),\ t\big), \qquad S = 2^{32} - 1,

(:func:`step_key`): a stream apart from the data order, which uses
``fold_in(k_run, e)`` for epoch indices :math:`e < 2^{31}`, so it never meets
:math:`S`. The key depends only on the run's key and the global step: a run
resumed, or advanced in chunks, draws the same keys as the run done at once,
and each member of a sweep draws from its own run key.

**The state** is carried through the compiled loop in
``RunState.loss_state`` (``()`` for a plain loss): updated by every applied
step, kept with the parameters when the guard rejects a step (NaN/inf),
saved in checkpoints with the rest of the run, stacked over the members of
a sweep, and read back as ``result.loss_state``. Its structure, shapes and
dtypes must not change from step to step.

**Evaluation** (``val_data``'s loss, ``metric``, ``monitors``) runs in
inference mode where the model distinguishes: ``eval_loss`` if given,
otherwise the training loss called with ``key=None`` (a keyed loss should
read ``None`` as "no dropout, no augmentation") and its new state dropped.
With a stateful loss, ``metric`` and ``monitors`` take the state too:
``metric(params, state, batch)``. A batch-norm model should pass
``eval_loss`` (running averages instead of batch statistics).

A plain loss compiles to exactly the program it did before: no key is
derived and the state is an empty tuple.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gdjax import _validate as V
from gdjax._typing import Batch, Key, Params, PyTree
from gdjax.errors import GdjaxTypeError, GdjaxValueError

STREAM = 2**32 - 1
"""``fold_in`` data of the loss's key stream (no epoch index reaches it)."""


def step_key(key: Key, step: jax.typing.ArrayLike) -> Key:
    r"""The key a loss receives at global step ``step`` of a run with key ``key``.

    .. math:: k_t = \mathrm{fold\_in}(\mathrm{fold\_in}(k, 2^{32} - 1), t)

    Args:
      key: the run's key (``fit(key=...)``; a sweep member's
        ``gd.seed_keys(seed)[1]``).
      step: the number of steps applied before this one (0 for the first).

    Returns:
      A typed PRNG key.

    Examples:
      >>> import jax
      >>> from gdjax.loss_forms import step_key  # gd.step_key
      >>> k = step_key(jax.random.key(0), 3)
      >>> k.shape, bool(jax.random.key_data(k).any())
      ((), True)
    """
    stream = jax.random.fold_in(key, np.uint32(STREAM))
    return jax.random.fold_in(stream, step)


def _unflatten_spec(aux, children):
    fn, eval_fn = children
    takes_key, has_state = aux
    return LossSpec(fn, eval_fn, takes_key=takes_key, has_state=has_state)


@dataclasses.dataclass(frozen=True, eq=False)
class LossSpec:
    """A loss declared with its form: does it take a key, does it carry a state.

    Build it with :func:`keyed` or :func:`stateful`. A pytree: its children
    are ``fn`` and ``eval_fn``, its static data the two flags; ``state``
    (the initial state) is not part of the tree.

    Attributes:
      fn: the training loss, in the form the flags say.
      eval_fn: the evaluation loss (``None``: ``fn`` with ``key=None``).
      takes_key: ``fn`` takes a key as its last argument.
      has_state: ``fn`` takes and returns a state.
      state: the initial state, a pytree of arrays or ``state(params) ->
        pytree`` (``()`` without state).
    """

    fn: Callable
    eval_fn: Callable | None = None
    takes_key: bool = False
    has_state: bool = False
    state: Any = ()

    def tree_flatten(self):
        """Children: the functions; static: the form; the state stays out."""
        return (self.fn, self.eval_fn), (self.takes_key, self.has_state)

    @property
    def accepts_weights(self) -> bool:
        """A declared loss does not take per-example weights (no padded batch)."""
        return False

    def __call__(self, params: Params, batch: Batch) -> jax.Array:
        """Refused: a declared loss is called with its key and state, never as
        ``loss(params, batch)`` (which would silently drop its dropout)."""
        del params, batch
        raise GdjaxTypeError(
            f"a loss declared as {self.signature()} is called with its key and "
            "state by gd.fit, gd.sweep, gd.fit_stream and gd.pieces.make_step; "
            "this caller calls loss(params, batch) (gd.fit_data_parallel and the "
            "diagnostics do not take declared losses yet). Pass a plain loss, e.g. "
            "the evaluation loss."
        )

    def train_value(
        self, params: Params, state: PyTree, batch: Batch, key: Key | None
    ) -> tuple[jax.Array, PyTree]:
        """``(value, new_state)`` of one training step (``state`` is ``()`` if none)."""
        args = (params, state, batch) if self.has_state else (params, batch)
        if self.takes_key:
            args += (key,)
        out = self.fn(*args)
        return out if self.has_state else (out, state)

    def eval_value(self, params: Params, state: PyTree, batch: Batch) -> jax.Array:
        """The loss in inference mode (``eval_fn``, or ``fn`` with ``key=None``)."""
        if self.eval_fn is not None:
            if self.has_state:
                return self.eval_fn(params, state, batch)
            return self.eval_fn(params, batch)
        return self.train_value(params, state, batch, None)[0]

    def evaluate(self, fn: Callable, params: Params, state: PyTree, batch: Batch):
        """``fn(params, [state,] batch)``: a metric or monitor of this run."""
        return fn(params, state, batch) if self.has_state else fn(params, batch)

    def signature(self) -> str:
        """How the training loss is called, in words."""
        args = "params, state, batch" if self.has_state else "params, batch"
        if self.takes_key:
            args += ", key"
        out = "(value, new_state)" if self.has_state else "value"
        return f"loss({args}) -> {out}"


jax.tree_util.register_pytree_node(LossSpec, LossSpec.tree_flatten, _unflatten_spec)


def keyed(loss: Callable, *, eval_loss: Callable | None = None) -> LossSpec:
    """Declare a loss that takes a fresh random key each step.

    Args:
      loss: ``loss(params, batch, key) -> scalar``. Step ``t`` receives
        :func:`step_key` ``(run_key, t)``; evaluation passes ``key=None``
        (read it as inference mode: no dropout).
      eval_loss: ``eval_loss(params, batch) -> scalar`` for ``val_data``,
        instead of ``loss(params, batch, None)``.

    Returns:
      A :class:`LossSpec` for :func:`gdjax.fit` and :func:`gdjax.sweep`.

    Examples:
      >>> import jax, jax.numpy as jnp, gdjax as gd
      >>> from gdjax.loss_forms import keyed  # gd.keyed
      >>> def loss(p, batch, key):
      ...     x, y = batch
      ...     if key is not None:  # training: inverted dropout on the inputs
      ...         x = x * jax.random.bernoulli(key, 0.9, x.shape) / 0.9
      ...     return jnp.mean((x @ p["w"] - y) ** 2)
      >>> x = jnp.ones((8, 2)); y = jnp.ones((8, 1))
      >>> r = gd.fit(keyed(loss), {"w": jnp.zeros((2, 1))}, (x, y), gd.sgd(0.1),
      ...            key=jax.random.key(0), epochs=50)
      >>> bool(r.final_loss < 0.1)
      True
    """
    _check_callable(loss, "loss")
    if eval_loss is not None:
        _check_callable(eval_loss, "eval_loss")
    return LossSpec(loss, eval_loss, takes_key=True, has_state=False)


def stateful(
    loss: Callable,
    state: Any,
    *,
    takes_key: bool = False,
    eval_loss: Callable | None = None,
) -> LossSpec:
    """Declare a loss that carries a state that gradient descent does not train.

    Args:
      loss: ``loss(params, state, batch) -> (value, new_state)`` (with
        ``takes_key=True``: ``loss(params, state, batch, key)``). The
        gradient is taken with respect to ``params`` only; ``new_state`` must
        have the structure, shapes and dtypes of ``state``.
      state: the initial state, a pytree of numeric arrays (batch-norm
        statistics), or ``state(params) -> pytree`` to build it from each
        run's initial parameters (an EMA teacher; in a sweep, per member).
      takes_key: ``loss`` takes a key as its last argument (:func:`step_key`).
      eval_loss: ``eval_loss(params, state, batch) -> scalar``, the loss in
        inference mode (running averages) for ``val_data``; without it the
        training loss is used (with ``key=None``), its new state dropped.

    Returns:
      A :class:`LossSpec` for :func:`gdjax.fit` and :func:`gdjax.sweep`; the
      final state is ``result.loss_state``.

    Examples:
      >>> import jax, jax.numpy as jnp, gdjax as gd
      >>> from gdjax.loss_forms import stateful  # gd.stateful
      >>> def loss(p, count, batch):  # counts the steps it is called for
      ...     x, y = batch
      ...     return jnp.mean((x @ p["w"] - y) ** 2), count + 1
      >>> x = jnp.ones((8, 2)); y = jnp.ones((8, 1))
      >>> spec = stateful(loss, jnp.zeros((), jnp.int32))
      >>> r = gd.fit(spec, {"w": jnp.zeros((2, 1))}, (x, y), gd.sgd(0.1),
      ...            key=jax.random.key(0), epochs=5)
      >>> int(r.loss_state), int(r.steps)
      (5, 5)
    """
    _check_callable(loss, "loss")
    if eval_loss is not None:
        _check_callable(eval_loss, "eval_loss")
    if not isinstance(takes_key, (bool, np.bool_)):
        raise GdjaxTypeError(f"takes_key must be True or False, got {takes_key!r}.")
    if not callable(state):
        check_state(state)
    return LossSpec(
        loss, eval_loss, takes_key=bool(takes_key), has_state=True, state=state
    )


# ---------------------------------------------------------------------- checking


def _check_callable(fn: Any, name: str) -> None:
    if not callable(fn):
        raise GdjaxTypeError(f"{name} must be callable, got {V.describe(fn)}.")


def check_state(state: PyTree, name: str = "state") -> None:
    """A state is a pytree of numeric arrays (no typed keys, no objects)."""
    for path, leaf in jax.tree_util.tree_leaves_with_path(state):
        where = f"{name}{jax.tree_util.keystr(path)}"
        dtype = getattr(leaf, "dtype", None)
        if dtype is not None and jnp.issubdtype(dtype, jax.dtypes.prng_key):
            raise GdjaxTypeError(
                f"{where} is a typed PRNG key; a loss state holds numbers. Declare "
                "the loss with takes_key=True (a fresh key each step), or store "
                "jax.random.key_data(key)."
            )
        arr = np.asarray(leaf) if dtype is None else leaf
        kind = arr.dtype
        if not (jnp.issubdtype(kind, jnp.number) or jnp.issubdtype(kind, jnp.bool_)):
            raise GdjaxTypeError(
                f"{where} must be a numeric array, got {V.describe(leaf)}."
            )


def initial_state(spec: Any, params: Params, *, abstract: bool = False) -> PyTree:
    """The state a run starts from (``()`` for a plain loss); shapes if abstract.

    Concrete states come back as NumPy arrays of the run's canonical dtypes
    (strong types: the compiled loop's carry must keep its types).
    """
    if not isinstance(spec, LossSpec) or not spec.has_state:
        return ()
    state = spec.state
    if callable(state):
        try:
            shapes = jax.eval_shape(state, params)
        except Exception as e:  # noqa: BLE001 - reworded, JAX's error chained
            raise GdjaxTypeError(
                "state must be a pytree of arrays or state(params) -> pytree; "
                f"calling it on params failed: {type(e).__name__}: "
                f"{(str(e).splitlines() or [''])[0]}"
            ) from e
        check_state(shapes, "state(params)")
        if abstract:
            return shapes
        state = state(params)
    if abstract:
        return jax.eval_shape(lambda s: s, state)
    return jax.tree.map(_host, jax.device_get(state))


def _host(leaf: Any) -> np.ndarray:
    arr = np.asarray(leaf)
    return arr.astype(jax.dtypes.canonicalize_dtype(arr.dtype), copy=False)


def member_states(spec: Any, params: Params, members: int) -> PyTree:
    """The initial states of ``members`` stacked members with stacked ``params``."""
    if not isinstance(spec, LossSpec) or not spec.has_state:
        return ()
    if callable(spec.state):
        # Eager and op by op, as the members' optimizer states are built.
        return jax.tree.map(_host, jax.device_get(jax.vmap(spec.state)(params)))
    one = initial_state(spec, None)
    return jax.tree.map(lambda a: np.broadcast_to(a, (members, *a.shape)).copy(), one)


def check_plain(loss: Any) -> None:
    """A plain loss that asks for a third argument was meant to be declared
    (one that declares per-example weights takes them third)."""
    if getattr(loss, "accepts_weights", False):
        return
    try:
        sig = inspect.signature(loss)
    except (TypeError, ValueError):
        return
    params = list(sig.parameters.values())
    positional = [
        p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return
    required = [p for p in positional if p.default is p.empty]
    if len(required) <= 2:
        return
    names = ", ".join(p.name for p in required)
    raise GdjaxTypeError(
        f"loss takes {len(required)} arguments ({names}), but fit calls a plain "
        "loss as loss(params, batch). Declare its form: gd.keyed(loss) for "
        "loss(params, batch, key), gd.stateful(loss, state) for "
        "loss(params, state, batch) -> (value, new_state) (takes_key=True adds a key)."
    )


def _bind(spec: LossSpec, fn: Callable, n: int, what: str) -> None:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return
    try:
        sig.bind(*range(n))
    except TypeError as e:
        raise GdjaxTypeError(
            f"{what} is declared as {spec.signature() if what == 'loss' else what}, "
            f"but its signature is {sig}: {e}."
        ) from e


def _first_line(e: Exception) -> str:
    return f"{type(e).__name__}: {(str(e).splitlines() or [''])[0]}"


def _same_state(state: PyTree, new: PyTree) -> None:
    """``new`` has exactly the structure, shapes and dtypes of ``state``."""
    old_def, new_def = jax.tree.structure(state), jax.tree.structure(new)
    if old_def != new_def:
        raise GdjaxValueError(
            "the loss's new_state must have the structure of its state (the state "
            f"is carried through a compiled loop): state is {old_def}, new_state is "
            f"{new_def}."
        )
    for (path, a), b in zip(
        jax.tree_util.tree_leaves_with_path(state), jax.tree.leaves(new), strict=True
    ):
        if tuple(a.shape) != tuple(b.shape) or a.dtype != b.dtype:
            raise GdjaxValueError(
                f"the loss's new_state{jax.tree_util.keystr(path)} is "
                f"{b.dtype}{list(b.shape)} but state{jax.tree_util.keystr(path)} is "
                f"{a.dtype}{list(a.shape)}: a state keeps its shapes and dtypes from "
                "step to step (cast the update, e.g. .astype(old.dtype))."
            )


def check_loss(
    spec: LossSpec,
    params: Params,
    batch: Batch,
    state: PyTree,
    val_data: Batch | None = None,
) -> Any:
    """Trace a declared loss on abstract values and check its form (no compile).

    The training call is checked first; with ``val_data`` (the one use of the
    evaluation loss) the evaluation call must trace to a scalar on it.
    Remembered per functions, form and signatures (``gdjax._validate.memo``):
    tracing costs milliseconds, as much as a short compiled run.
    """
    key = ("declared-loss", spec.fn, spec.eval_fn, spec.takes_key, spec.has_state)
    key += V.signature(params, batch, state, val_data)

    def compute() -> V.LossTrace:
        trace, abstract_state = _check_training(spec, params, batch, state)
        if val_data is not None:
            _check_evaluation(spec, params, abstract_state, "val_data", val_data)
        return trace

    return V.memo(key, compute)


def _check_training(
    spec: LossSpec, params: Params, batch: Batch, state: PyTree
) -> tuple[V.LossTrace, PyTree]:
    """The training call, not remembered; its trace and the abstract ``state``.

    It must bind, trace, give a float scalar (a stateful loss: ``(value,
    new_state)`` with ``new_state`` shaped as ``state``), depend on ``params``
    and have a gradient.
    """
    n = (3 if spec.has_state else 2) + spec.takes_key
    _bind(spec, spec.fn, n, "loss")
    if spec.eval_fn is not None:
        _bind(spec, spec.eval_fn, 3 if spec.has_state else 2, "eval_loss")
    key = jax.eval_shape(jax.random.key, 0) if spec.takes_key else None
    state = jax.eval_shape(lambda s: s, state)
    try:
        out = jax.eval_shape(spec.train_value, params, state, batch, key)
    except GdjaxTypeError:
        raise
    except Exception as e:  # noqa: BLE001 - reworded, JAX's error chained
        kind = GdjaxValueError if isinstance(e, ValueError) else GdjaxTypeError
        raise kind(
            f"the loss, declared as {spec.signature()}, fails to trace on params "
            f"{V.shapes(params)} and batch {V.shapes(batch)}: {_first_line(e)}"
        ) from e
    if spec.has_state:
        value = out[0] if isinstance(out, tuple) and len(out) == 2 else out
        if not (isinstance(out, tuple) and len(out) == 2) or not hasattr(
            value, "shape"
        ):
            raise GdjaxTypeError(
                "a stateful loss returns (value, new_state), got "
                f"{V.shapes(out) if not hasattr(out, 'shape') else 'a single array'} "
                f"({spec.signature()}): return the new state too, e.g. "
                "(loss, state) if it does not change."
            )
        _same_state(state, out[1])

    def value_of(p, extra):
        b, s, k = extra
        return spec.train_value(p, s, b, k)[0]

    return V.trace_loss(value_of, params, (batch, state, key), name="loss"), state


def _check_evaluation(
    spec: LossSpec, params: Params, state: PyTree, where: str, data: Batch
) -> None:
    """The evaluation call (the one use of the evaluation loss) traces to a
    scalar on ``data``."""
    try:
        value = jax.eval_shape(spec.eval_value, params, state, data)
    except Exception as e:  # noqa: BLE001 - reworded, JAX's error chained
        how = (
            "eval_loss(params, [state,] batch)"
            if spec.eval_fn is not None
            else "the loss with key=None"
            if spec.takes_key
            else "the loss"
        )
        raise GdjaxTypeError(
            f"evaluating the loss ({how}) on {where} {V.shapes(data)} fails: "
            f"{_first_line(e)}. A keyed loss is evaluated with key=None "
            "(inference mode: no dropout); handle it, or pass eval_loss."
        ) from e
    if getattr(value, "shape", None) != ():
        raise GdjaxTypeError(
            f"the evaluation loss must return a scalar, got {V.shapes(value)}."
        )


__all__ = [
    "STREAM",
    "LossSpec",
    "check_loss",
    "check_plain",
    "check_state",
    "initial_state",
    "keyed",
    "member_states",
    "stateful",
    "step_key",
]
