"""Oracles for gdjax.transforms: closed forms, optax reference runs, NumPy means."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gdjax import transforms as T
from gdjax.transforms import (
    AverageIteratesState,
    average_iterates,
    averaged_params,
    get_hyperparams,
    inverse_time_decay,
    power_decay,
    set_hyperparams,
    sgd,
)

# ------------------------------------------------------------------------------ helpers

_RNG = np.random.default_rng(0)
_X = _RNG.normal(size=(6, 3))
_Y = _RNG.normal(size=(6, 2))
_W0 = _RNG.normal(size=(3, 2))
_B0 = _RNG.normal(size=(1, 2))


def _params(dtype=jnp.float32):
    return {"w": jnp.asarray(_W0, dtype), "b": jnp.asarray(_B0, dtype)}


def _loss(p):
    # Not quadratic, so gradients change from step to step in a non-trivial way.
    x = jnp.asarray(_X, p["w"].dtype)
    y = jnp.asarray(_Y, p["w"].dtype)
    return jnp.sum(jnp.log(jnp.cosh(x @ p["w"] + p["b"] - y)))


_grad = jax.jit(jax.grad(_loss))


def _run(opt, params, steps, *, grad=_grad):
    """Eager updates (one op at a time, as optax's reference runs): iterates."""
    state = opt.init(params)
    iterates = []
    for _ in range(steps):
        updates, state = opt.update(grad(params), state, params)
        params = optax.apply_updates(params, updates)
        iterates.append(params)
    return iterates, state


def _assert_trees_equal(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _assert_trees_close(a, b, rtol, atol=0.0):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


@pytest.fixture(params=["float32", "float64"])
def dtype(request):
    if request.param == "float64":
        request.getfixturevalue("x64")
    return jnp.dtype(request.param)


# ------------------------------------------------------------------------- closed forms


def test_gd_on_quadratic_matches_closed_form(x64):
    rng = np.random.default_rng(1)
    q = np.linalg.qr(rng.normal(size=(4, 4)))[0]
    a = q @ np.diag([0.5, 1.0, 2.0, 4.0]) @ q.T
    x0 = rng.normal(size=4)
    eta, steps = 0.2, 30
    opt = sgd(eta)
    grad = jax.jit(lambda x: jnp.asarray(a) @ x)
    iterates, _ = _run(opt, jnp.asarray(x0), steps, grad=grad)
    for t, x in enumerate(iterates, start=1):
        expected = np.linalg.matrix_power(np.eye(4) - eta * a, t) @ x0
        np.testing.assert_allclose(np.asarray(x), expected, rtol=0, atol=1e-12)
    assert iterates[-1].dtype == jnp.float64
    assert np.linalg.norm(np.asarray(iterates[-1]) - x0) > 0.5  # it moved


def test_gd_least_squares_reaches_lstsq(x64):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(40, 3))
    y = x @ np.array([1.0, -2.0, 0.5]) + 0.3 * rng.normal(size=40)
    w_star = np.linalg.lstsq(x, y, rcond=None)[0]
    lipschitz = np.linalg.eigvalsh(x.T @ x / len(y)).max()
    opt = sgd(1.0 / lipschitz)

    def loss(w):
        return 0.5 * jnp.mean((jnp.asarray(x) @ w - jnp.asarray(y)) ** 2)

    @jax.jit
    def run(w):
        def step(carry, _):
            w, state = carry
            updates, state = opt.update(jax.grad(loss)(w), state, w)
            return (optax.apply_updates(w, updates), state), None

        return jax.lax.scan(step, (w, opt.init(w)), length=2000)[0][0]

    w = run(jnp.zeros(3))
    np.testing.assert_allclose(np.asarray(w), w_star, rtol=0, atol=1e-10)
    assert np.linalg.norm(x @ w_star - y) > 1.0  # a real residual: not interpolation


# ------------------------------------------------------------------------ optax oracles


@pytest.mark.parametrize(
    "momentum, nesterov, weight_decay",
    [
        (0.0, False, 0.0),
        (0.9, False, 0.0),
        (0.9, True, 0.0),
        (0.5, False, 0.1),
        (0.9, True, 0.01),
    ],
)
def test_sgd_equals_optax_step_for_step(dtype, momentum, nesterov, weight_decay):
    ref = optax.sgd(0.05, momentum or None, nesterov=nesterov)
    if weight_decay:
        ref = optax.chain(optax.add_decayed_weights(weight_decay), ref)
    opt = sgd(0.05, momentum, nesterov=nesterov, weight_decay=weight_decay)
    ours, state = _run(opt, _params(dtype), 20)
    theirs, _ = _run(ref, _params(dtype), 20)
    for a, b in zip(ours, theirs, strict=True):
        _assert_trees_equal(a, b)
    assert ours[-1]["w"].dtype == dtype
    assert all(v.dtype == dtype for v in get_hyperparams(state).values())
    assert not np.allclose(ours[-1]["w"], _W0, atol=1e-2)


@pytest.mark.parametrize("nesterov", [False, True])
def test_decoupled_weight_decay_equals_hand_formula(x64, nesterov):
    eta, mu, lam = 0.05, 0.8, 0.3
    opt = sgd(eta, mu, nesterov=nesterov, weight_decay=lam, decoupled_weight_decay=True)
    ours, _ = _run(opt, _params(jnp.float64), 20)
    theta = {k: np.asarray(v) for k, v in _params(jnp.float64).items()}
    m = {k: np.zeros_like(v) for k, v in theta.items()}
    for t in range(20):
        g = _grad(jax.tree.map(jnp.asarray, theta))
        g = {k: np.asarray(v) for k, v in g.items()}
        for k in theta:
            m[k] = g[k] + mu * m[k]
            d = g[k] + mu * m[k] if nesterov else m[k]
            theta[k] = theta[k] - eta * d - eta * lam * theta[k]
        _assert_trees_close(ours[t], theta, rtol=0, atol=1e-12)
    # Decoupled is not coupled: the two differ.
    coupled, _ = _run(
        sgd(eta, mu, nesterov=nesterov, weight_decay=lam), _params(jnp.float64), 20
    )
    assert not np.allclose(coupled[-1]["w"], ours[-1]["w"], atol=1e-6)


def test_inside_optax_chain_with_clipping():
    assert T.clip_by_global_norm is optax.clip_by_global_norm
    assert T.clip is optax.clip
    assert T.add_decayed_weights is optax.add_decayed_weights
    assert T.chain is optax.chain
    ours, state = _run(
        optax.chain(optax.clip_by_global_norm(0.5), sgd(0.1, 0.9)), _params(), 20
    )
    theirs, _ = _run(
        optax.chain(optax.clip_by_global_norm(0.5), optax.sgd(0.1, 0.9)), _params(), 20
    )
    assert optax.tree.norm(_grad(_params())) > 0.5  # the clip is active
    for a, b in zip(ours, theirs, strict=True):
        _assert_trees_close(a, b, rtol=1e-7, atol=1e-7)
    assert float(get_hyperparams(state)["momentum"]) == pytest.approx(0.9)


def test_schedule_learning_rate_equals_optax():
    schedule = power_decay(0.2, power=0.6)
    ours, state = _run(sgd(schedule, 0.5), _params(), 15)
    theirs, _ = _run(optax.sgd(schedule, 0.5), _params(), 15)
    for a, b in zip(ours, theirs, strict=True):
        _assert_trees_close(a, b, rtol=1e-7, atol=1e-7)
    # the state shows the rate used at the last step (count 14)
    assert float(get_hyperparams(state)["learning_rate"]) == pytest.approx(
        0.2 / 15**0.6, rel=1e-6
    )


def test_jit_equals_no_jit(dtype):
    opt = sgd(0.05, 0.9, nesterov=True, weight_decay=0.01)

    @jax.jit
    def step(params, state):
        updates, state = opt.update(_grad(params), state, params)
        return optax.apply_updates(params, updates), state

    eager, _ = _run(opt, _params(dtype), 20)
    params, state = _params(dtype), opt.init(_params(dtype))
    for t in range(20):
        params, state = step(params, state)
        tol = 1e-5 if dtype == jnp.float32 else 1e-12
        _assert_trees_close(params, eager[t], rtol=tol, atol=tol)


def test_vmapped_init_over_learning_rates_equals_single_runs(compiles):
    lrs = jax.device_put(np.array([0.5, 0.05, 0.1], np.float32))
    params = _params()
    states = jax.vmap(lambda lr: sgd(lr, 0.9).init(params))(lrs)
    with compiles() as c:  # a swept state takes new numbers member by member
        states = set_hyperparams(states, learning_rate=[0.01, 0.05, 0.1])
    assert c.count == 0
    update = sgd(0.1, 0.9).update

    def step(state):
        updates, state = update(_grad(params), state, params)
        return optax.apply_updates(params, updates)

    batched = jax.jit(jax.vmap(step))(states)
    for i, lr in enumerate([0.01, 0.05, 0.1]):
        single = jax.jit(step)(sgd(lr, 0.9).init(params))
        _assert_trees_close(
            jax.tree.map(lambda x, i=i: x[i], batched), single, rtol=1e-6, atol=1e-7
        )


# -------------------------------------------------------------------------- compilation


def test_update_is_shared_across_numeric_values():
    assert sgd(0.1, 0.9).update is sgd(0.3, 0.5).update
    wd = sgd(0.1, 0.0, weight_decay=0.0).update
    assert wd is sgd(np.float32(0.2), 0.9, weight_decay=0.1).update
    # Momentum or decay left out (None) is a different, cheaper program.
    assert sgd(0.1).update is sgd(0.3).update
    assert sgd(0.1).update is not sgd(0.1, 0.0).update
    assert sgd(0.1, 0.9, nesterov=True).update is sgd(0.2, 0.5, nesterov=True).update
    assert sgd(0.1, 0.9, nesterov=True).update is not sgd(0.1, 0.9).update
    decoupled = sgd(0.1, weight_decay=0.1, decoupled_weight_decay=True)
    assert decoupled.update is not sgd(0.1, weight_decay=0.1).update
    schedule = inverse_time_decay(0.1, 0.01)
    assert sgd(schedule, 0.1).update is sgd(schedule, 0.5).update
    assert sgd(schedule).update is not sgd(0.1).update
    assert sgd(inverse_time_decay(0.1, 0.01)).update is not sgd(schedule).update


@functools.partial(jax.jit, static_argnums=0)
def _static_step(update, params, state):
    updates, state = update(_grad(params), state, params)
    return optax.apply_updates(params, updates), state


def test_new_numbers_do_not_recompile(compiles):
    params = _params()
    opt = sgd(0.1, 0.0, weight_decay=0.0)
    _static_step(opt.update, params, opt.init(params))  # compile once
    with compiles() as c:
        opt2 = sgd(0.2, 0.5, weight_decay=0.01)
        new, _ = _static_step(opt2.update, params, opt2.init(params))
        jax.block_until_ready(new)
    assert c.count == 0
    expected, _ = _run(opt2, params, 1)
    _assert_trees_close(new, expected[0], rtol=1e-6, atol=1e-7)
    # The counter sees recompiles: optax closes over the number and recompiles.
    _static_step(optax.sgd(0.1).update, params, optax.sgd(0.1).init(params))
    with compiles() as c:
        _static_step(optax.sgd(0.2).update, params, optax.sgd(0.2).init(params))
    assert c.count >= 1


def test_set_hyperparams_changes_the_step_without_compiling(compiles):
    params = _params()
    opt = optax.chain(optax.clip_by_global_norm(1e6), sgd(0.1, 0.0))
    state = opt.init(params)
    _static_step(opt.update, params, state)
    with compiles() as c:
        new_state = set_hyperparams(state, learning_rate=0.5, momentum=np.float64(0.3))
        stepped, _ = _static_step(opt.update, params, new_state)
        jax.block_until_ready(stepped)
    assert c.count == 0
    expected = jax.tree.map(lambda p, g: p - 0.5 * g, params, _grad(params))
    _assert_trees_close(stepped, expected, rtol=1e-6, atol=1e-7)
    hp = get_hyperparams(new_state)
    assert float(hp["learning_rate"]) == 0.5
    assert float(hp["momentum"]) == pytest.approx(0.3)
    assert {k: (v.dtype, v.shape) for k, v in hp.items()} == {
        k: (v.dtype, v.shape) for k, v in get_hyperparams(state).items()
    }
    assert jax.tree.structure(new_state) == jax.tree.structure(state)
    assert float(get_hyperparams(state)["learning_rate"]) == pytest.approx(0.1)


def test_set_hyperparams_keeps_float64(x64):
    state = sgd(0.1).init(jnp.zeros(3, jnp.float64))
    state = set_hyperparams(state, learning_rate=0.25)
    assert state.hyperparams["learning_rate"].dtype == jnp.float64
    assert float(state.hyperparams["learning_rate"]) == 0.25


def test_set_hyperparams_errors():
    state = sgd(0.1, 0.0, weight_decay=0.0).init(jnp.zeros(3))
    with pytest.raises(ValueError, match="'lr'.*learning_rate.*momentum.*weight_decay"):
        set_hyperparams(state, lr=0.1)
    with pytest.raises(ValueError, match=r"learning_rate.*\(0, inf\).*nan"):
        set_hyperparams(state, learning_rate=float("nan"))
    with pytest.raises(ValueError, match=r"momentum.*\[0, 1\).*1\.5"):
        set_hyperparams(state, momentum=1.5)
    with pytest.raises(ValueError, match="shape"):
        set_hyperparams(state, learning_rate=np.array([0.1, 0.2]))
    scheduled = sgd(power_decay(0.1)).init(jnp.zeros(3))
    with pytest.raises(ValueError, match="schedule"):
        set_hyperparams(scheduled, learning_rate=0.1)
    with pytest.raises(ValueError, match="no optax.InjectStatefulHyperparamsState"):
        get_hyperparams(optax.sgd(0.1).init(jnp.zeros(3)))


def test_get_and_set_on_plain_optax_inject_state():
    opt = optax.inject_hyperparams(optax.adam)(learning_rate=1e-3, b1=0.9)
    state = set_hyperparams(opt.init(jnp.zeros(2)), b1=0.5)
    assert float(get_hyperparams(state)["b1"]) == 0.5


# --------------------------------------------------------------------------- validation


def _warm_schedule():
    schedule = optax.linear_schedule(0.0, 0.1, 10)  # 0 at step 0, uses jnp ops
    schedule(jnp.asarray(0, jnp.int32))  # evaluating it compiles its own ops once
    return schedule


@pytest.mark.parametrize(
    "args, kwargs, name",
    [
        ((float("nan"),), {}, "learning_rate"),
        ((float("inf"),), {}, "learning_rate"),
        ((0.0,), {}, "learning_rate"),
        ((-0.1,), {}, "learning_rate"),
        ((np.float32("nan"),), {}, "learning_rate"),
        ((optax.constant_schedule(0.0),), {}, "learning_rate"),
        (("warm",), {}, "learning_rate"),
        ((0.1, 1.0), {}, "momentum"),
        ((0.1, -0.1), {}, "momentum"),
        ((0.1, float("nan")), {}, "momentum"),
        ((0.1,), {"nesterov": True}, "nesterov"),
        ((0.1,), {"weight_decay": -1.0}, "weight_decay"),
        ((0.1,), {"weight_decay": float("nan")}, "weight_decay"),
    ],
)
def test_bad_inputs_raise_before_compiling(compiles, args, kwargs, name):
    if args == ("warm",):
        args = (_warm_schedule(),)
    with compiles() as c:
        with pytest.raises(ValueError, match=name) as info:
            sgd(*args, **kwargs)
    assert c.count == 0
    message = str(info.value)
    if name != "nesterov":
        assert "must be a finite number in" in message
        assert "got" in message


def test_range_and_value_in_message():
    with pytest.raises(ValueError, match=r"^momentum must be .* \[0, 1\), got 1\.0\.$"):
        sgd(0.1, 1.0)
    with pytest.raises(ValueError, match=r"learning_rate .*\(0, inf\), got nan"):
        sgd(np.array(np.nan))


def test_value_types_accepted():
    params = jnp.zeros(2)
    states = [
        sgd(lr, m).init(params)
        for lr, m in [
            (0.1, 0.5),
            (np.float32(0.1), np.float64(0.5)),
            (np.array(0.1), np.array(0.5)),
            (jnp.asarray(0.1), jnp.asarray(0.5, jnp.float32)),
            (0.1, 1 / 2),
        ]
    ]
    for state in states[1:]:
        _assert_trees_equal(state, states[0])
        assert jax.tree.structure(state) == jax.tree.structure(states[0])
    with pytest.raises(ValueError, match="scalar"):
        sgd(np.array([0.1, 0.2]))
    with pytest.raises(TypeError, match="learning_rate"):
        sgd("0.1")
    with pytest.raises(TypeError, match="nesterov"):
        sgd(0.1, 0.9, nesterov="yes")


# ---------------------------------------------------------------------------- averaging


@pytest.mark.parametrize("start", [0, 1, 4])
def test_average_iterates_is_numpy_running_mean(x64, start):
    opt = optax.chain(sgd(0.05, 0.5), average_iterates(start))
    params = _params(jnp.float64)
    state = opt.init(params)
    iterates = []
    _assert_trees_equal(averaged_params(state), params)
    for _ in range(10):
        updates, state = opt.update(_grad(params), state, params)
        params = optax.apply_updates(params, updates)
        iterates.append({k: np.asarray(v) for k, v in params.items()})
        kept = iterates[start:] or iterates[-1:]
        expected = {k: np.mean([it[k] for it in kept], axis=0) for k in params}
        _assert_trees_close(averaged_params(state), expected, rtol=0, atol=1e-12)
    assert int(optax.tree.get(state, "AverageIteratesState").count) == 10
    # passes updates through: same iterates as without averaging
    plain, _ = _run(sgd(0.05, 0.5), _params(jnp.float64), 10)
    _assert_trees_equal(plain[-1], params)
    # and the average really differs from the last iterate
    assert not np.allclose(averaged_params(state)["w"], params["w"], atol=1e-4)


def test_average_iterates_errors():
    opt = average_iterates()
    state = opt.init(jnp.zeros(2))
    assert isinstance(state, AverageIteratesState)
    with pytest.raises(ValueError, match="needs params"):
        opt.update(jnp.zeros(2), state)
    with pytest.raises(ValueError, match="start"):
        average_iterates(-1)
    with pytest.raises(TypeError, match="start"):
        average_iterates(1.5)
    with pytest.raises(ValueError, match="AverageIteratesState"):
        averaged_params(sgd(0.1).init(jnp.zeros(2)))


# ---------------------------------------------------------------------------- schedules


def test_schedules_match_formulas():
    t = np.arange(0, 1001)
    count = jnp.asarray(t, jnp.int32)
    got = inverse_time_decay(0.5, 0.02)(count)
    # weak float32, so that optax casts it to the params' dtype
    assert got.dtype == jnp.float32 and got.weak_type
    np.testing.assert_allclose(np.asarray(got), 0.5 / (1 + 0.5 * 0.02 * t), rtol=1e-6)
    got = power_decay(0.3, power=0.75, offset=10.0)(count)
    assert got.dtype == jnp.float32 and got.weak_type
    np.testing.assert_allclose(np.asarray(got), 0.3 / (t + 10.0) ** 0.75, rtol=1e-6)
    assert float(power_decay(2.0)(0)) == 2.0


def test_schedules_follow_a_float64_count(x64):
    t = np.arange(0, 50, dtype=np.float64)
    got = inverse_time_decay(0.5, 0.02)(jnp.asarray(t))
    assert got.dtype == jnp.float64 and not got.weak_type
    np.testing.assert_allclose(np.asarray(got), 0.5 / (1 + 0.5 * 0.02 * t), rtol=1e-15)
    got = power_decay(0.3, 0.6, 2.0)(jnp.asarray(t))
    np.testing.assert_allclose(np.asarray(got), 0.3 / (t + 2.0) ** 0.6, rtol=1e-14)


@pytest.mark.parametrize(
    "factory, args, name",
    [
        (inverse_time_decay, (0.0, 0.1), "init_value"),
        (inverse_time_decay, (float("nan"), 0.1), "init_value"),
        (inverse_time_decay, (0.1, -1.0), "decay_rate"),
        (power_decay, (0.1, 0.0), "power"),
        (power_decay, (0.1, 1.0, 0.0), "offset"),
        (power_decay, (-1.0,), "init_value"),
    ],
)
def test_schedule_arguments_validated(factory, args, name):
    with pytest.raises(ValueError, match=name):
        factory(*args)


# -------------------------------------------------------------------------------- state


@pytest.mark.parametrize(
    "make",
    [
        lambda: sgd(0.1),
        lambda: sgd(0.1, 0.9, nesterov=True, weight_decay=0.1),
        lambda: sgd(0.1, 0.9, weight_decay=0.1, decoupled_weight_decay=True),
        # optax's schedules give strong float32: the rate stays float32
        lambda: sgd(optax.linear_schedule(0.1, 0.01, 10), 0.5),
        # gdjax's give a weak value, which takes the params' dtype
        lambda: sgd(inverse_time_decay(0.1, 0.1)),
        lambda: optax.chain(
            optax.clip_by_global_norm(1.0), sgd(0.1), average_iterates(2)
        ),
    ],
    ids=["plain", "nesterov", "decoupled", "optax-schedule", "gdjax-schedule", "chain"],
)
def test_state_is_type_stable(request, dtype, make):
    opt = make()
    params = _params(dtype)
    grads = jax.tree.map(jnp.ones_like, params)
    init = jax.eval_shape(opt.init, params)
    after = jax.eval_shape(lambda s: opt.update(grads, s, params)[1], init)
    assert jax.tree.structure(init) == jax.tree.structure(after)
    for a, b in zip(jax.tree.leaves(init), jax.tree.leaves(after), strict=True):
        assert (a.shape, a.dtype, a.weak_type) == (b.shape, b.dtype, b.weak_type)

    def either(pred):
        state = opt.init(params)
        stepped = opt.update(grads, state, params)[1]
        return jax.lax.cond(pred, lambda: state, lambda: stepped)

    jax.make_jaxpr(either)(True)  # traces only if the two branches agree
    hyperparams = get_hyperparams(opt.init(params))
    if "optax-schedule" in request.node.name:
        assert hyperparams.pop("learning_rate").dtype == jnp.float32
    assert {v.dtype for v in hyperparams.values()} == {dtype}


# ------------------------------------------------------------ mixed precision (#21)


@pytest.mark.parametrize("nesterov", [False, True])
def test_mixed_precision_equals_optax_bitwise(nesterov):
    # Each hyperparameter is cast to its leaf: bf16 stays bf16 in updates and
    # momentum, bit for bit what optax.sgd does with a Python-float rate.
    params = {"w": jnp.asarray(_W0, jnp.bfloat16), "b": jnp.asarray(_B0, jnp.float32)}

    def grad(p):
        return _grad(jax.tree.map(lambda x: x.astype(jnp.float32), p))

    ours_opt = sgd(0.05, 0.9, nesterov=nesterov)
    ours, state = _run(
        ours_opt,
        params,
        10,
        grad=lambda p: jax.tree.map(lambda g, x: g.astype(x.dtype), grad(p), p),
    )
    theirs, _ = _run(
        optax.sgd(0.05, 0.9, nesterov=nesterov),
        params,
        10,
        grad=lambda p: jax.tree.map(lambda g, x: g.astype(x.dtype), grad(p), p),
    )
    for a, b in zip(ours, theirs, strict=True):
        _assert_trees_equal(a, b)
    trace = optax.tree.get(state, "trace")
    assert trace["w"].dtype == jnp.bfloat16 and trace["b"].dtype == jnp.float32
    assert ours[-1]["w"].dtype == jnp.bfloat16
    assert not np.allclose(np.asarray(ours[-1]["b"], np.float32), _B0, atol=1e-2)


def test_accumulator_dtype_keeps_a_float32_buffer_for_bfloat16():
    params = jnp.asarray(_W0, jnp.bfloat16)
    opt = sgd(0.05, 0.9, accumulator_dtype=jnp.float32)
    ref = optax.sgd(0.05, 0.9, accumulator_dtype=jnp.float32)
    state, ref_state = opt.init(params), ref.init(params)
    assert state.inner_state[0].trace.dtype == jnp.float32
    grads = jnp.asarray(_W0 * 1e-3, jnp.bfloat16)
    for _ in range(5):
        updates, state = opt.update(grads, state, params)
        ref_updates, ref_state = ref.update(grads, ref_state, params)
        _assert_trees_equal(updates, ref_updates)
    _assert_trees_equal(state.inner_state[0].trace, ref_state[0].trace)
    assert sgd(0.1, 0.9, accumulator_dtype=jnp.float32).update is opt.update
    assert sgd(0.1, 0.9).update is not opt.update
    with pytest.raises(TypeError, match="accumulator_dtype"):
        sgd(0.1, 0.9, accumulator_dtype=jnp.int32)
    with pytest.raises(TypeError, match="accumulator_dtype"):
        sgd(0.1, 0.9, accumulator_dtype="not a dtype")


def test_average_iterates_takes_an_integer_array_start(x64):
    as_int, _ = _run(
        optax.chain(sgd(0.05), average_iterates(3)), _params(jnp.float64), 6
    )
    opt = optax.chain(sgd(0.05), average_iterates(jnp.asarray(3)))
    params = _params(jnp.float64)
    state = opt.init(params)
    ref_state = optax.chain(sgd(0.05), average_iterates(3)).init(params)
    for _ in range(6):
        updates, state = opt.update(_grad(params), state, params)
        _, ref_state = optax.chain(sgd(0.05), average_iterates(3)).update(
            _grad(params), ref_state, params
        )
        params = optax.apply_updates(params, updates)
    _assert_trees_equal(averaged_params(state), averaged_params(ref_state))
    with pytest.raises(ValueError, match="start"):
        average_iterates(jnp.asarray(-1))
    with pytest.raises(TypeError, match="start"):
        average_iterates(jnp.asarray(1.0))
    with pytest.raises(TypeError, match="start"):
        average_iterates(np.array([1, 2]))
    with pytest.raises(TypeError, match="start"):
        average_iterates(True)


def test_hyperparams_are_stored_strong_in_the_params_highest_dtype(x64):
    params = {"a": jnp.zeros(2, jnp.bfloat16), "b": jnp.zeros(2, jnp.float64)}
    hp = get_hyperparams(sgd(0.05, 0.9).init(params))
    stored = {(v.dtype, v.weak_type) for v in hp.values()}
    assert stored == {(jnp.dtype(jnp.float64), False)}
    state = sgd(0.1).init({"z": jnp.zeros(2, jnp.complex64)})
    assert state.hyperparams["learning_rate"].dtype == jnp.float32
