"""gdjax's transforms keep optax's contract, checked as optax 0.2.8 checks its own.

One list of transforms (every gdjax transform, a few chains with optax's, and
``optax.sgd`` itself as the reference row) crossed with one list of checks, in
the style of optax's parameterized optimizer lists (``alias_test``,
``contrib/_common_test``, ``float64_test``, ``sharding_test``):

- dtype columns (issue 21, class 1): ``init`` and ``update`` give the same
  structure, shapes, dtypes and weak types, eagerly and under ``jit``; the state
  goes through a ``lax.cond`` against the fresh state and a ``lax.scan`` carry;
  updates keep each gradient leaf's dtype. Per dtype, for two mixes of
  precisions, and for weakly typed params.
- ``no recompile``: after ``jax.clear_caches()`` a jitted ``update`` compiles on
  its first call and not on its second (strong, weak and mixed params).
- ``abstract init`` (class 2): ``init`` of ``jax.ShapeDtypeStruct`` leaves gives
  what ``jax.eval_shape(init, params)`` promises.
- ``explicit mesh`` / ``auto mesh`` (class 3): on 8 fake CPU devices (one
  subprocess for all rows), the state's types and shardings agree between
  eager and jitted ``init`` and ``update``, and a jitted step does not compile
  again on its second call.
- ``inject_hyperparams`` (class 4): ``optax.inject_hyperparams(factory)(...)``
  builds, jits, and gives the updates and state of the plain transform.
- ``accumulator_dtype`` and ``ScalarOrSchedule``: optax's ``test_explicit_dtype``
  and the annotation test of ``contrib/_common_test``.

Control tests at the end run the same checks on transforms that have the bugs
of issue 21 and assert that each check fails there: the checks can fail.

``python tests/test_conformance.py`` runs every check and writes the matrix to
``docs/optax_conformance.md``; ``test_matrix_doc_is_current`` keeps the two in
step.
"""

import dataclasses
import inspect
import json
import os
import pathlib
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gdjax as gd

# --------------------------------------------------------------------- the row list


def _clip_then_sgd(learning_rate, momentum=0.9):
    return optax.chain(optax.clip_by_global_norm(1.0), gd.sgd(learning_rate, momentum))


def _sgd_then_decay(learning_rate, weight_decay=1e-3):
    return optax.chain(
        gd.sgd(learning_rate, 0.9, nesterov=True),
        optax.add_decayed_weights(weight_decay),
    )


def _optax_sgd_then_average(learning_rate, start=1):
    # optax.sgd without momentum: optax's trace turns a weak buffer strong (see
    # the comparison rows of the matrix), which is optax's to fix, not gdjax's.
    return optax.chain(optax.sgd(learning_rate), gd.average_iterates(start))


@dataclasses.dataclass(frozen=True)
class Row:
    """One transform under test: ``factory(**kwargs)``, as optax's lists hold them."""

    name: str
    factory: Callable[..., Any]
    kwargs: dict
    momentum: bool = False  # keeps a momentum buffer: accumulator_dtype applies
    accumulator: bool = False  # built with accumulator_dtype (updates promote)

    def make(self):
        return self.factory(**self.kwargs)


ROWS = [
    Row("gd.sgd", gd.sgd, dict(learning_rate=0.1)),
    Row("gd.sgd momentum", gd.sgd, dict(learning_rate=0.1, momentum=0.9), True),
    Row(
        "gd.sgd nesterov",
        gd.sgd,
        dict(learning_rate=0.1, momentum=0.9, nesterov=True),
        True,
    ),
    Row(
        "gd.sgd weight decay",
        gd.sgd,
        dict(learning_rate=0.1, momentum=0.9, weight_decay=1e-2),
        True,
    ),
    Row(
        "gd.sgd decoupled weight decay",
        gd.sgd,
        dict(
            learning_rate=0.1,
            momentum=0.9,
            weight_decay=1e-2,
            decoupled_weight_decay=True,
        ),
        True,
    ),
    Row(
        "gd.sgd inverse_time_decay",
        gd.sgd,
        dict(learning_rate=gd.inverse_time_decay(0.1, 0.5), momentum=0.9),
        True,
    ),
    Row("gd.sgd power_decay", gd.sgd, dict(learning_rate=gd.power_decay(0.1, 0.6))),
    Row(
        "gd.sgd float32 accumulator",
        gd.sgd,
        # a string, not jnp.float32: inject_hyperparams takes callables for
        # schedules (optax.sgd has the same rule)
        dict(learning_rate=0.1, momentum=0.9, accumulator_dtype="float32"),
        True,
        True,
    ),
    Row("gd.average_iterates", gd.average_iterates, dict(start=2)),
    Row("clip_by_global_norm → gd.sgd", _clip_then_sgd, dict(learning_rate=0.1)),
    Row("gd.sgd → add_decayed_weights", _sgd_then_decay, dict(learning_rate=0.1)),
    Row(
        "optax.sgd → gd.average_iterates",
        _optax_sgd_then_average,
        dict(learning_rate=0.1),
    ),
]
_BY_NAME = {row.name: row for row in ROWS}

# For comparison only (the matrix's last rows, not asserted): optax's own sgd,
# and optax.inject_hyperparams of it, which gdjax.sgd used before issue 21.
COMPARISON = [
    Row("optax.sgd", optax.sgd, dict(learning_rate=0.1, momentum=0.9), True),
    Row(
        "inject_hyperparams(optax.sgd)",
        optax.inject_hyperparams(optax.sgd),
        dict(learning_rate=0.1, momentum=0.9),
        True,
    ),
]

# ----------------------------------------------------------------------- params

_DTYPES = {
    "bfloat16": (jnp.bfloat16,),
    "float16": (jnp.float16,),
    "float32": (jnp.float32,),
    "float64": (jnp.float64,),
    "complex64": (jnp.complex64,),
    "complex128": (jnp.complex128,),
    "bf16+f32": (jnp.bfloat16, jnp.float32),
    "f32+f64": (jnp.float32, jnp.float64),
    "weak": None,
}
_X64 = {"float64", "complex128", "f32+f64"}
_EAGER = {"bf16+f32", "f32+f64", "weak"}


def _params(column: str) -> dict:
    """A matrix and a vector; two dtypes for a mix, Python-scalar-like for weak."""
    if column == "weak":
        # jnp.array(1.0) is weakly typed float32: what optax's weak-type bugs meet.
        return {"w": jnp.array(1.0), "b": jnp.array(-2.0)}
    first, second = (_DTYPES[column] * 2)[:2]
    return {
        "w": jnp.asarray(np.full((2, 3), 0.5), first),
        "b": jnp.asarray(np.array([1.0, -2.0]), second),
    }


def _grads(params):
    # Strong, in each leaf's dtype (a weak leaf's gradient is a strong array here).
    return jax.tree.map(lambda p: jnp.full(p.shape, 0.25, jnp.asarray(p).dtype), params)


def _types(tree):
    """Structure and, per leaf, shape / dtype / weak type (sharding-free)."""

    def one(leaf):
        aval = jax.typeof(leaf) if isinstance(leaf, jax.Array) else leaf
        return (tuple(aval.shape), jnp.dtype(aval.dtype), bool(aval.weak_type))

    return jax.tree.structure(tree), [one(leaf) for leaf in jax.tree.leaves(tree)]


def _assert_same_types(a, b, what):
    ta, tb = _types(a), _types(b)
    assert ta[0] == tb[0], f"{what}: state structure changed: {ta[0]} -> {tb[0]}"
    for i, (x, y) in enumerate(zip(ta[1], tb[1], strict=True)):
        assert x == y, f"{what}: state leaf {i} (shape, dtype, weak) {x} -> {y}"


# ----------------------------------------------------------------------- checks


def check_dtype(row: Row, column: str) -> None:
    """Class 1: state types stable eagerly, under jit, lax.cond and lax.scan.

    The traced paths are checked with ``jax.eval_shape`` (the types ``jit``
    gives, without compiling); an eager ``update`` runs for the mixed and weak
    columns (eager and traced code differ only in how a number becomes an
    array, not per dtype).
    """
    opt = row.make()
    params = _params(column)
    grads = _grads(params)
    state = opt.init(params)
    _assert_same_types(state, jax.eval_shape(opt.init, params), "jit(init)")
    traced = jax.eval_shape(opt.update, grads, state, params)
    _assert_same_types(state, traced[1], "jit(update)")
    outputs = [traced[0]]
    if column in _EAGER:
        updates, eager_state = opt.update(grads, state, params)
        _assert_same_types(state, eager_state, "eager update")
        outputs.append(updates)
    if not row.accumulator:
        for updates in outputs:
            for name in params:
                assert updates[name].dtype == grads[name].dtype, (
                    f"updates[{name!r}] is {updates[name].dtype}, gradient "
                    f"{grads[name].dtype}"
                )

    def cond_then_scan(pred, params, state):
        # optax's test_state_shape_dtype_shard_stability: a cond that the
        # compiler cannot fold, between the fresh state and the stepped one.
        stepped = opt.update(grads, state, params)[1]
        state = jax.lax.cond(pred, lambda: state, lambda: stepped)

        def body(carry, _):
            p, s = carry
            u, s = opt.update(grads, s, p)
            return (optax.apply_updates(p, u), s), None

        return jax.lax.scan(body, (params, state), length=3)[0]

    out_params, out_state = jax.eval_shape(
        cond_then_scan, jnp.asarray(True), params, state
    )
    _assert_same_types(state, out_state, "lax.cond + lax.scan carry")
    for name in params:
        assert out_params[name].dtype == params[name].dtype


def check_recompile(row: Row, compiles, *, clear: bool = False) -> None:
    """A jitted update compiles once; its second call (on its own state) never.

    Each column jits a new function, so its first call must compile (asserted:
    a zero on the second call then means something); ``clear=True`` also
    empties JAX's caches first, as a cold process would have them.
    """
    for column in ("weak", "bf16+f32"):
        opt = row.make()
        params = _params(column)
        grads = _grads(params)
        state = opt.init(params)
        step = jax.jit(lambda g, s, p, opt=opt: opt.update(g, s, p))
        if clear:
            jax.clear_caches()
        with compiles() as counter:
            _, state = step(grads, state, params)
        first = counter.count
        with compiles() as counter:
            jax.block_until_ready(step(grads, state, params))
        assert first >= 1, "the counter saw no first compilation"
        assert counter.count == 0, f"{column}: second call compiled {counter.count}x"


def check_abstract_init(row: Row) -> None:
    """Class 2: init of ShapeDtypeStructs, as optax's sharding_test does it."""
    opt = row.make()
    params = {
        "w": jax.ShapeDtypeStruct((2, 4, 8), jnp.float32),
        "b": jax.ShapeDtypeStruct((8,), jnp.bfloat16),
    }
    state = opt.init(params)
    concrete = {k: jnp.zeros(v.shape, v.dtype) for k, v in params.items()}
    _assert_same_types(jax.eval_shape(opt.init, concrete), state, "abstract init")


def check_inject(row: Row) -> None:
    """Class 4: optax's test_optimizers_can_be_wrapped_in_inject_hyperparams."""
    opt = row.make()
    opt_inject = optax.inject_hyperparams(row.factory)(**row.kwargs)
    params = [jnp.negative(jnp.ones((2, 3))), jnp.ones((2, 5, 2))]
    grads = [jnp.ones((2, 3)), jnp.negative(jnp.ones((2, 5, 2)))]
    state = jax.jit(opt.init)(params)
    state_inject = jax.jit(opt_inject.init)(params)
    for _ in range(3):  # several steps: a schedule or a count must advance
        updates, state = jax.jit(opt.update)(grads, state, params)
        updates_inject, state_inject = jax.jit(opt_inject.update)(
            grads, state_inject, params
        )
        for a, b in zip(
            jax.tree.leaves(updates_inject), jax.tree.leaves(updates), strict=True
        ):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6)
        params = optax.apply_updates(params, updates)

    # The buffers (momentum, average) agree; 0-d leaves differ in layout where
    # inject_hyperparams evaluates a schedule that the plain transform keeps.
    def buffers(tree):
        return [x for x in jax.tree.leaves(tree) if np.ndim(x) > 0]

    for a, b in zip(buffers(state_inject.inner_state), buffers(state), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6)


def check_accumulator(row: Row) -> None:
    """optax's test_explicit_dtype: the momentum buffer's dtype is the one asked."""
    for params_dtype in ("bfloat16", "float32", "complex64"):
        for state_dtype in ("bfloat16", "float32", "complex64", None):
            kwargs = {k: v for k, v in row.kwargs.items() if k != "accumulator_dtype"}
            opt = row.factory(**kwargs, accumulator_dtype=state_dtype)
            params = jnp.array([0.0, 0.0], dtype=params_dtype)
            trace = optax.tree.get(opt.init(params), "trace")
            expected = jnp.dtype(params_dtype if state_dtype is None else state_dtype)
            assert trace.dtype == expected, (params_dtype, state_dtype, trace.dtype)
            if jnp.promote_types(params_dtype, expected) == expected:  # no lossy cast
                state = opt.update(params + 1, opt.init(params), params)[1]
                assert optax.tree.get(state, "trace").dtype == expected


def check_annotation(row: Row) -> None:
    """contrib/_common_test: a schedulable rate is annotated ScalarOrSchedule,
    and a constant schedule then gives the steps of the constant."""
    parameter = inspect.signature(row.factory).parameters["learning_rate"]
    assert parameter.annotation in (optax.ScalarOrSchedule, optax.Schedule), (
        f"learning_rate is annotated {parameter.annotation!r}"
    )
    kwargs = dict(row.kwargs)
    runs = []
    for rate in (optax.constant_schedule(1e-3), 1e-3):
        opt = row.factory(**{**kwargs, "learning_rate": rate})
        params = jnp.array([-1.0, 10.0, 1.0])
        state = opt.init(params)
        for _ in range(10):
            updates, state = opt.update(2 * params, state, params)
            params = optax.apply_updates(params, updates)
        runs.append(params)
    np.testing.assert_allclose(np.asarray(runs[0]), np.asarray(runs[1]), rtol=1e-6)


def _applies(row: Row, column: str) -> bool:
    if row.accumulator and column.startswith("complex"):
        return False  # a real buffer for complex params drops the imaginary part
    if column == "accumulator_dtype":
        return row.momentum and row.factory in (gd.sgd, optax.sgd)
    if column == "ScalarOrSchedule":
        return row.factory in (gd.sgd, optax.sgd)
    return True


# ------------------------------------------------------------ the sharding checks

_SHARDING_ENV = "GDJAX_CONFORMANCE_SHARDING"


def _sharding_checks(rows) -> dict:
    """Run in a process with 8 CPU devices: {row name: {column: "ok" | error}}."""
    from jax.sharding import AxisType, NamedSharding
    from jax.sharding import PartitionSpec as P

    assert jax.device_count() == 8, jax.devices()
    compiled = {"n": 0}

    def listener(event, duration, **kwargs):
        del duration, kwargs
        if event == "/jax/core/compile/backend_compile_duration":
            compiled["n"] += 1

    jax.monitoring.register_event_duration_secs_listener(listener)

    def types(tree):
        # jax.typeof carries the sharding under an explicit mesh.
        return jax.tree.structure(tree), [
            str(jax.typeof(x)) for x in jax.tree.leaves(tree)
        ]

    def shardings(tree):
        return [
            (x.sharding.mesh.shape_tuple, x.sharding.spec)
            if isinstance(x.sharding, NamedSharding)
            else repr(x.sharding)
            for x in jax.tree.leaves(tree)
        ]

    def second_call_compiles(opt, grads, state, params):
        step = jax.jit(opt.update)
        _, state = step(grads, state, params)
        before = compiled["n"]
        jax.block_until_ready(step(grads, state, params))
        return compiled["n"] - before

    def explicit(opt):
        # optax's sharding_test: float16 params split over the mesh, plus a
        # replicated float32 vector.
        mesh = jax.make_mesh((8,), ("x",), axis_types=(AxisType.Explicit,))
        with jax.set_mesh(mesh):
            params = {
                "w": jnp.zeros((2, 8, 4), jnp.float16, out_sharding=P(None, "x")),
                "b": jnp.zeros((3,), jnp.float32, out_sharding=P()),
            }
            grads = jax.tree.map(lambda p: p + 1, params)
            state0 = opt.init(params)
            assert types(state0) == types(jax.jit(opt.init)(params)), "jit(init)"
            eager = opt.update(grads, state0, params)[1]
            jitted = jax.jit(opt.update)(grads, state0, params)[1]
            assert types(eager) == types(jitted), "eager vs jit(update)"
            assert types(state0) == types(jitted), "init vs update"
            n = second_call_compiles(opt, grads, state0, params)
            assert n == 0, f"second jitted call compiled {n}x"

    def auto(opt):
        mesh = jax.make_mesh((8,), ("x",), axis_types=(AxisType.Auto,))
        params = {
            "w": jax.device_put(
                jnp.zeros((2, 8, 4)), NamedSharding(mesh, P(None, "x"))
            ),
            "b": jax.device_put(jnp.zeros((3,)), NamedSharding(mesh, P())),
        }
        grads = jax.tree.map(lambda p: p + 1, params)
        state0 = opt.init(params)  # placed params, no mesh context
        eager = opt.update(grads, state0, params)[1]
        jitted = jax.jit(opt.update)(grads, state0, params)[1]
        assert shardings(eager) == shardings(jitted), "eager vs jit(update)"
        assert shardings(state0) == shardings(jitted), "init vs update"
        n = second_call_compiles(opt, grads, state0, params)
        assert n == 0, f"second jitted call compiled {n}x"
        with jax.set_mesh(mesh):  # the same under jax.set_mesh of an auto mesh
            state0 = opt.init(params)
            n = second_call_compiles(opt, grads, state0, params)
            assert n == 0, f"under set_mesh: second jitted call compiled {n}x"

    results = {}
    for name, make, columns in rows:
        results[name] = {}
        for column, check in (("explicit mesh", explicit), ("auto mesh", auto)):
            if column not in columns:
                continue
            try:
                check(make())
                results[name][column] = "ok"
            except Exception as e:  # noqa: BLE001 - reported back, asserted there
                results[name][column] = f"{type(e).__name__}: {e}"[:300]
    return results


def _control_device_put_hyperparams():
    # gdjax before issue 21: hyperparameters put on one device with device_put.
    inner = optax.inject_hyperparams(optax.sgd)(0.1, 0.9)

    def init(params):
        state = inner.init(params)
        hyper = {
            k: v if isinstance(v, jax.core.Tracer) else jax.device_put(np.asarray(v))
            for k, v in state.hyperparams.items()
        }
        return state._replace(hyperparams=hyper)

    return optax.GradientTransformationExtraArgs(init, inner.update)


_SHARDING_CONTROLS = {
    "control: hyperparams by device_put": (
        "explicit mesh",
        _control_device_put_hyperparams,
    ),
    # optax's own count is created on one device: a jitted step moves it.
    "control: optax.adam": ("auto mesh", lambda: optax.adam(0.1)),
}


def _run_sharding_subprocess(which: str = "1") -> dict:
    env = dict(os.environ)
    env["XLA_FLAGS"] = (
        env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    )
    env["JAX_PLATFORMS"] = "cpu"
    env[_SHARDING_ENV] = which
    proc = subprocess.run(
        [sys.executable, __file__],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def sharding_results():
    return _run_sharding_subprocess()


# ------------------------------------------------------------------------ tests

_DTYPE_COLUMNS = list(_DTYPES)
_COLUMNS = [
    *_DTYPE_COLUMNS,
    "no recompile",
    "abstract init",
    "explicit mesh",
    "auto mesh",
    "inject_hyperparams",
    "accumulator_dtype",
    "ScalarOrSchedule",
]
_IDS = [row.name for row in ROWS]


@pytest.fixture(params=_DTYPE_COLUMNS)
def dtype_column(request):
    if request.param in _X64:
        request.getfixturevalue("x64")
    return request.param


@pytest.mark.parametrize("row", ROWS, ids=_IDS)
def test_dtype_stable(row, dtype_column):
    if not _applies(row, dtype_column):
        pytest.skip("does not apply")
    check_dtype(row, dtype_column)


@pytest.mark.parametrize("row", ROWS, ids=_IDS)
def test_no_recompile_on_second_call(row, compiles):
    check_recompile(row, compiles)


def test_no_recompile_from_cold_caches(compiles):
    check_recompile(_BY_NAME["gd.sgd momentum"], compiles, clear=True)


@pytest.mark.parametrize("row", ROWS, ids=_IDS)
def test_abstract_init(row):
    check_abstract_init(row)


@pytest.mark.parametrize("column", ["explicit mesh", "auto mesh"])
@pytest.mark.parametrize("row", ROWS, ids=_IDS)
def test_sharding(row, column, sharding_results):
    assert sharding_results[row.name][column] == "ok"


@pytest.mark.parametrize("row", ROWS, ids=_IDS)
def test_inject_hyperparams(row):
    check_inject(row)


@pytest.mark.parametrize(
    "row", [r for r in ROWS if _applies(r, "accumulator_dtype")], ids=lambda r: r.name
)
def test_accumulator_dtype(row):
    check_accumulator(row)


@pytest.mark.parametrize(
    "row", [r for r in ROWS if _applies(r, "ScalarOrSchedule")], ids=lambda r: r.name
)
def test_learning_rate_annotation(row):
    check_annotation(row)


# --------------------------------------------------------------------- controls
# Each check, run on a transform with the bug it looks for, must fail.


def _inject_sgd(**kwargs):
    return Row("inject(optax.sgd)", optax.inject_hyperparams(optax.sgd), kwargs, True)


@pytest.mark.parametrize("column", ["bf16+f32", "weak"])
def test_control_dtype_check_fails_on_inject_hyperparams(column):
    # optax.inject_hyperparams stores hyperparameters in the params' highest
    # dtype and multiplies with them: bf16 leaves turn f32, weak ones strong.
    with pytest.raises(AssertionError):
        check_dtype(_inject_sgd(learning_rate=0.1, momentum=0.9), column)


def test_control_recompile_check_fails_on_weak_promotion(compiles):
    with pytest.raises(AssertionError, match="weak: second call compiled"):
        check_recompile(_inject_sgd(learning_rate=0.1, momentum=0.9), compiles)


def test_control_abstract_check_fails_on_inject_hyperparams():
    with pytest.raises(TypeError):
        check_abstract_init(_inject_sgd(learning_rate=0.1))


def test_control_inject_check_fails_on_a_strict_factory():
    def strict(start=0):  # gdjax's average_iterates before issue 21
        if not isinstance(start, int):
            raise TypeError("start must be an integer")
        return gd.average_iterates(start)

    with pytest.raises(TypeError, match="start must be an integer"):
        check_inject(Row("strict", strict, {}))


def test_control_sharding_checks_fail(sharding_results):
    for name, (column, _) in _SHARDING_CONTROLS.items():
        assert sharding_results[name][column].startswith("AssertionError"), (
            sharding_results[name]
        )


def test_inject_follows_a_schedule_over_steps():
    # Injected numbers are in force at every step (not the inner state's).
    schedule = optax.linear_schedule(0.1, 0.01, 4)
    ours = optax.inject_hyperparams(gd.sgd)(learning_rate=schedule, momentum=0.5)
    ref = optax.sgd(schedule, 0.5)
    params = jnp.array([1.0, -2.0])
    state, ref_state, ref_params = ours.init(params), ref.init(params), params
    step = jax.jit(ours.update)
    for _ in range(5):
        updates, state = step(params, state, params)
        params = optax.apply_updates(params, updates)
        ref_updates, ref_state = ref.update(ref_params, ref_state, ref_params)
        ref_params = optax.apply_updates(ref_params, ref_updates)
    np.testing.assert_allclose(np.asarray(params), np.asarray(ref_params), rtol=1e-6)
    assert not np.allclose(np.asarray(params), [1.0, -2.0], atol=0.1)


# ------------------------------------------------------------------------- matrix

_DOC = pathlib.Path(__file__).resolve().parents[1] / "docs" / "optax_conformance.md"
_HEADER = """# optax conformance matrix

gdjax's update transforms checked as optax 0.2.8 checks its own optimizers
(`alias_test`, `contrib/_common_test`, `float64_test`, `sharding_test`): one
list of transforms crossed with one list of checks. Generated by
`python tests/test_conformance.py` (which runs every check); the test suite
runs the same checks (`tests/test_conformance.py`) and fails if this table is
out of date. ✓ passes, ✗ fails, – does not apply.

Columns: the dtype columns (bfloat16 … weak) check that `init` and `update`
give the same structure, shapes, dtypes and weak types under `jit` (by
`jax.eval_shape`) and, for the mixed and weak columns, eagerly too; that the
state goes through a `lax.cond` and a `lax.scan` carry; and that updates keep
the gradient's dtype (params in that dtype; `bf16+f32` and `f32+f64` mix two
leaves; `weak` is `jnp.array(1.0)`-style params). *no recompile*: with weak
and with bf16+f32 params, a freshly jitted `update` compiles on its first call
(asserted, so that a zero means something) and not on its second (one test
also starts from `jax.clear_caches()`). *abstract init*:
`init(jax.ShapeDtypeStruct(...))` gives what `jax.eval_shape(init, params)`
promises. *explicit mesh* / *auto mesh*: 8 fake CPU devices, one subprocess;
state types and shardings agree between eager and jitted `init`/`update`, and
a jitted step does not compile again on its second call (auto: params placed
on the mesh, and under `jax.set_mesh`). *inject_hyperparams*:
`optax.inject_hyperparams(factory)(...)` gives the plain transform's updates
and buffers over 3 jitted steps. *accumulator_dtype*: optax's
`test_explicit_dtype`. *ScalarOrSchedule*: `learning_rate` annotated
as optax's type and a constant schedule steps as the constant.
"""


def _table(rows, results) -> tuple[list[str], int, int]:
    lines = ["| transform | " + " | ".join(_COLUMNS) + " |"]
    lines.append("|---" * (len(_COLUMNS) + 1) + "|")
    passed = total = 0
    for row in rows:
        cells = []
        for column in _COLUMNS:
            if not _applies(row, column):
                cells.append("–")
                continue
            ok = results[row.name][column] == "ok"
            passed += ok
            total += 1
            cells.append("✓" if ok else "✗")
        lines.append(f"| {row.name} | " + " | ".join(cells) + " |")
    return lines, passed, total


_COMPARISON_HEADER = """
## For comparison: optax's sgd, and inject_hyperparams of it

Not part of gdjax's contract and not asserted by the suite (the control tests
assert only that the checks fail on the bugs of issue 21): the same checks on
`optax.sgd(0.1, momentum=0.9)` and on
`optax.inject_hyperparams(optax.sgd)(0.1, momentum=0.9)` (what `gd.sgd` was
built on before). optax's trace buffer starts weakly typed for weak params and
turns strong at the first update; `inject_hyperparams` also multiplies with
hyperparameters stored in the params' highest dtype (bfloat16 leaves turn
float32) and cannot init from `ShapeDtypeStruct`s.
"""


def render(results: dict) -> str:
    lines, passed, total = _table(ROWS, results)
    text = [_HEADER, *lines, ""]
    text.append(
        f"{passed} of {total} cases pass ({len(ROWS)} transforms × "
        f"{len(_COLUMNS)} checks; {len(ROWS) * len(_COLUMNS) - total} do not "
        "apply)."
    )
    if all(row.name in results for row in COMPARISON):
        text.append(_COMPARISON_HEADER)
        text.extend(_table(COMPARISON, results)[0])
    return "\n".join(text) + "\n"


def _run_everything() -> dict:
    """Every check on every row, as the matrix reports it (sharding in a subprocess)."""
    from conftest import CompileCounter  # tests/ is sys.path[0] when run directly

    jax.config.update("jax_numpy_rank_promotion", "raise")
    sharding = _run_sharding_subprocess("all")
    results = {}
    for row in ROWS + COMPARISON:
        out = results[row.name] = dict(sharding[row.name])
        for column in _COLUMNS:
            if column in out or not _applies(row, column):
                continue
            try:
                if column in _DTYPES:
                    with jax.enable_x64(column in _X64):
                        check_dtype(row, column)
                elif column == "no recompile":
                    check_recompile(row, CompileCounter())
                elif column == "abstract init":
                    check_abstract_init(row)
                elif column == "inject_hyperparams":
                    check_inject(row)
                elif column == "accumulator_dtype":
                    check_accumulator(row)
                elif column == "ScalarOrSchedule":
                    check_annotation(row)
                out[column] = "ok"
            except Exception as e:  # noqa: BLE001 - shown in the matrix
                out[column] = f"{type(e).__name__}: {e}"
    return results


def test_matrix_doc_is_current():
    # The suite asserts every cell of ROWS passes; the document must show that
    # matrix (the comparison section after it is informative and not compared).
    all_pass = {row.name: dict.fromkeys(_COLUMNS, "ok") for row in ROWS}
    text = _DOC.read_text()
    expected = render(all_pass)
    assert text.startswith(expected), (
        "docs/optax_conformance.md is out of date: run "
        "`python tests/test_conformance.py`"
    )


if __name__ == "__main__":
    if os.environ.get(_SHARDING_ENV):
        jax.config.update("jax_numpy_rank_promotion", "raise")
        both = ("explicit mesh", "auto mesh")
        rows = [(row.name, row.make, both) for row in ROWS]
        if os.environ[_SHARDING_ENV] == "all":
            rows += [(row.name, row.make, both) for row in COMPARISON]
        rows += [
            (name, make, (column,))
            for name, (column, make) in _SHARDING_CONTROLS.items()
        ]
        print(json.dumps(_sharding_checks(rows)))
    else:
        results = _run_everything()
        failed = {
            (name, column): why
            for name, cells in results.items()
            for column, why in cells.items()
            if why != "ok" and name in _BY_NAME
        }
        for (name, column), why in failed.items():
            print(f"FAIL {name} / {column}: {why}", file=sys.stderr)
        _DOC.write_text(render(results))
        print(f"wrote {_DOC} ({len(failed)} failing cells in the gdjax rows)")
