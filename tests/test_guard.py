"""gdjax.guard.reject_nonfinite: fit's NaN guard as an optax transform.

Oracles: gd.fit's NaN stop (the same run stopped one step earlier, bitwise), a
run on the same batches without the bad ones (halt=False), and
optax.apply_if_finite on the cases where the two must differ.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import assert_trees_equal, least_squares_problem, ls_loss, zeros_params

import gdjax as gd
from gdjax import guard, pieces
from gdjax.errors import GdjaxTypeError

KEY = jax.random.key(0)
REGIME = gd.minibatch(4, shuffle=False)  # 10 steps an epoch, step k sees 4k..4k+3


def own_loop(tx, data, epochs, n=40):
    """A user's loop: jitted scan, jax.grad, tx.update, optax.apply_updates."""

    @jax.jit
    def run(params):
        def epoch(carry, e):
            idx, _ = pieces.batches(REGIME, n, KEY, e)

            def step(carry, i):
                p, s = carry
                g = jax.grad(ls_loss)(p, pieces.gather(data, i))
                u, s = tx.update(g, s, p)
                return (optax.apply_updates(p, u), s), None

            return jax.lax.scan(step, carry, idx)[0], None

        carry = (params, tx.init(params))
        return jax.lax.scan(epoch, carry, jnp.arange(1, epochs + 1))[0]

    return run(zeros_params(4))


@pytest.mark.parametrize("bad_step", [0, 7])
def test_rejected_step_is_fits_nan_stop(bad_step):
    """A NaN in the batch of step bad_step + 1; the loop goes on for 3 epochs
    (30 updates): the guard halts, and params and inner state are bitwise
    fit's NaN stop and fit stopped by max_steps one step earlier."""
    data, *_ = least_squares_problem(n=40)
    x, y = data
    bad = (x.at[4 * bad_step + 1, 2].set(jnp.nan), y)
    tx = optax.sgd(0.05, momentum=0.9)
    kw = dict(key=KEY, epochs=3, regime=REGIME)
    stop = gd.fit(ls_loss, zeros_params(4), bad, tx, check_finite=False, **kw)
    assert stop.failed and int(stop.steps) == bad_step
    params, state = own_loop(guard.reject_nonfinite(tx), bad, epochs=3)
    assert_trees_equal((params, state.inner_state), (stop.params, stop.opt_state))
    if bad_step:
        earlier = gd.fit(ls_loss, zeros_params(4), data, tx, max_steps=bad_step, **kw)
        assert_trees_equal(
            (params, state.inner_state), (earlier.params, earlier.opt_state)
        )
    assert int(state.count) == 30 and int(state.bad_steps) == 30 - bad_step
    assert int(state.first_bad_step) == bad_step + 1 == int(stop.steps) + 1
    assert int(state.first_bad_status) == gd.Status.NONFINITE_GRAD
    assert guard.bad_leaf_path(params, state) == "params['w']"


def test_overflowing_parameters_are_rejected_where_apply_if_finite_is_not():
    """A finite gradient whose update overflows float32: apply_if_finite checks
    the gradient only and lets inf into the parameters; the guard rejects it."""
    params = {"a": jnp.zeros(2), "b": jnp.full(2, 3e38, jnp.float32)}
    grads = {"a": jnp.ones(2), "b": jnp.full(2, -3e38, jnp.float32)}
    tx = guard.reject_nonfinite(optax.sgd(1.0))
    updates, state = tx.update(grads, tx.init(params), params)
    assert_trees_equal(optax.apply_updates(params, updates), params)
    assert int(state.first_bad_status) == gd.Status.NONFINITE_PARAMS
    assert guard.bad_leaf_path(params, state) == "params['b']"
    theirs = optax.apply_if_finite(optax.sgd(1.0), max_consecutive_errors=5)
    u, _ = theirs.update(grads, theirs.init(params), params)
    assert np.isinf(np.asarray(optax.apply_updates(params, u)["b"])).all()


def test_nan_never_gets_through_unlike_apply_if_finite():
    params = jnp.ones(3)
    nan = jnp.full(3, jnp.nan)
    ours = guard.reject_nonfinite(optax.sgd(0.1), halt=False)
    theirs = optax.apply_if_finite(optax.sgd(0.1), max_consecutive_errors=2)
    p_ours, s_ours = params, ours.init(params)
    p_theirs, s_theirs = params, theirs.init(params)
    for _ in range(4):
        u, s_ours = ours.update(nan, s_ours, p_ours)
        p_ours = optax.apply_updates(p_ours, u)
        u, s_theirs = theirs.update(nan, s_theirs, p_theirs)
        p_theirs = optax.apply_updates(p_theirs, u)
    np.testing.assert_array_equal(p_ours, params)
    assert int(s_ours.bad_steps) == 4 and int(s_ours.first_bad_step) == 1
    assert np.isnan(np.asarray(p_theirs)).all()  # the 3rd bad step went through


def test_halt_false_skips_only_the_bad_steps():
    """halt=False: the run equals the same loop over the clean batches only."""
    data, *_ = least_squares_problem(n=40)
    x, y = data
    bad = (x.at[4 * 3 + 1, 2].set(jnp.inf).at[4 * 8, 0].set(jnp.nan), y)
    tx = optax.sgd(0.05, momentum=0.9)
    params, state = own_loop(guard.reject_nonfinite(tx, halt=False), bad, epochs=2)
    assert int(state.count) == 20 and int(state.bad_steps) == 4
    assert int(state.first_bad_step) == 4
    p, s = zeros_params(4), tx.init(zeros_params(4))
    step = jax.jit(lambda p, s, b: _plain_step(tx, p, s, b))
    for _ in range(2):
        for k in range(10):
            if k in (3, 8):
                continue
            p, s = step(p, s, pieces.gather(data, jnp.arange(4 * k, 4 * k + 4)))
    np.testing.assert_allclose(params["w"], p["w"], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(
        state.inner_state[0].trace["w"], s[0].trace["w"], rtol=1e-6, atol=1e-7
    )


def _plain_step(tx, p, s, b):
    u, s = tx.update(jax.grad(ls_loss)(p, b), s, p)
    return optax.apply_updates(p, u), s


def test_in_a_chain_under_jit_and_vmap():
    """optax.chain(clip_by_global_norm, reject_nonfinite(sgd + momentum)) over
    members, one of which meets a NaN: each member is its own single run."""
    data, *_ = least_squares_problem(n=40)
    x, y = data
    xs = jnp.stack([x, x.at[4 * 5 + 2, 1].set(jnp.nan), x])
    lrs = jnp.array([0.05, 0.05, 0.1])

    def run(lr, xm):
        tx = optax.chain(
            optax.clip_by_global_norm(1.0),
            guard.reject_nonfinite(
                optax.inject_hyperparams(optax.sgd)(learning_rate=lr, momentum=0.9)
            ),
        )
        params = zeros_params(4)
        state = tx.init(params)
        idx, _ = pieces.batches(REGIME, 40, KEY, 1)

        def step(carry, i):
            p, s = carry
            g = jax.grad(ls_loss)(p, pieces.gather((xm, y), i))
            u, s = tx.update(g, s, p)
            return (optax.apply_updates(p, u), s), None

        return jax.lax.scan(step, (params, state), idx)[0]

    p_many, s_many = jax.jit(jax.vmap(run))(lrs, xs)
    g_many = s_many[1]
    assert list(np.asarray(g_many.bad_steps)) == [0, 5, 0]
    assert list(np.asarray(g_many.first_bad_step)) == [0, 6, 0]
    for m in range(3):
        p_one, s_one = jax.jit(run)(lrs[m], xs[m])
        np.testing.assert_allclose(p_many["w"][m], p_one["w"], rtol=1e-6, atol=1e-7)
        assert int(s_one[1].bad_steps) == int(g_many.bad_steps[m])
    # member 1 holds the state after its 5 clean steps: member 0's after 5 steps
    p5, _ = run_steps(lrs[0], x, y, 5)
    np.testing.assert_allclose(p_many["w"][1], p5["w"], rtol=1e-6, atol=1e-7)


def run_steps(lr, x, y, k):
    tx = optax.chain(
        optax.clip_by_global_norm(1.0),
        optax.inject_hyperparams(optax.sgd)(learning_rate=lr, momentum=0.9),
    )
    params = zeros_params(4)
    state = tx.init(params)
    for i in range(k):
        b = pieces.gather((x, y), jnp.arange(4 * i, 4 * i + 4))
        u, state = tx.update(jax.grad(ls_loss)(params, b), state, params)
        params = optax.apply_updates(params, u)
    return params, state


def test_accepted_update_is_the_inner_update_bitwise():
    params = {"w": jax.random.normal(KEY, (5,)), "b": jnp.ones(())}
    grads = jax.tree.map(lambda p: 0.3 * p + 0.1, params)
    inner = optax.chain(optax.clip_by_global_norm(0.5), optax.adam(1e-2))
    tx = guard.reject_nonfinite(inner)
    s_in, s_tx = inner.init(params), tx.init(params)
    for _ in range(3):
        u_in, s_in = inner.update(grads, s_in, params)
        u_tx, s_tx = tx.update(grads, s_tx, params)
        assert_trees_equal((u_tx, s_tx.inner_state), (u_in, s_in))
    assert int(s_tx.count) == 3 and int(s_tx.bad_steps) == 0
    assert int(s_tx.first_bad_step) == 0 and int(s_tx.first_bad_leaf) == -1


def test_state_is_type_stable():
    params = {"w": jnp.zeros(3), "b": jnp.zeros(())}
    for inner in (optax.sgd(0.1, momentum=0.9), gd.sgd(0.1), optax.adam(1e-3)):
        tx = guard.reject_nonfinite(inner)
        s0 = tx.init(params)
        _, s1 = jax.eval_shape(tx.update, params, s0, params)
        assert jax.tree.structure(s0) == jax.tree.structure(s1)
        for a, b in zip(jax.tree.leaves(s0), jax.tree.leaves(s1), strict=True):
            assert (a.shape, a.dtype, a.weak_type) == (b.shape, b.dtype, b.weak_type)
        for field in guard.RejectNonfiniteState._fields[1:]:
            assert getattr(s0, field).dtype == jnp.int32
        # a lax.cond between the two traces
        _, s1 = tx.update(params, s0, params)
        jax.lax.cond(True, lambda a, b: a, lambda a, b: b, s0, s1)


def test_rejected_update_is_negative_zero_and_keeps_signed_zeros():
    params = jnp.array([-0.0, 0.0, 1.0])
    tx = guard.reject_nonfinite(optax.sgd(0.1))
    updates, _ = tx.update(jnp.full(3, jnp.nan), tx.init(params), params)
    new = optax.apply_updates(params, updates)
    assert np.signbit(np.asarray(updates)).all()
    np.testing.assert_array_equal(np.signbit(np.asarray(new)), [True, False, False])
    np.testing.assert_array_equal(new, params)


def test_value_extra_arg_and_no_params():
    params = jnp.ones(2)
    tx = guard.reject_nonfinite(optax.sgd(0.1))
    _, s = tx.update(jnp.ones(2), tx.init(params), params, value=jnp.float32(jnp.nan))
    assert int(s.first_bad_status) == gd.Status.NONFINITE_LOSS
    assert int(s.first_bad_leaf) == -1 and guard.bad_leaf_path(params, s) is None
    # inside a chain the value reaches it as an extra argument
    chained = optax.chain(optax.clip(1.0), tx)
    _, cs = chained.update(jnp.ones(2), chained.init(params), params, value=jnp.inf)
    assert int(cs[1].bad_steps) == 1
    # without params the update itself is checked
    big = guard.reject_nonfinite(optax.scale(jnp.float32(1e38)))
    u, s = big.update(jnp.full(2, 1e10, jnp.float32), big.init(params))
    assert int(s.first_bad_status) == gd.Status.NONFINITE_PARAMS
    np.testing.assert_array_equal(u, jnp.zeros(2))


def test_make_step_with_the_guard_transform():
    """The transform composes with gd.pieces.make_step (fit's own guard off)."""
    data, *_ = least_squares_problem(n=8)
    x, y = data
    step = pieces.make_step(
        ls_loss, guard.reject_nonfinite(optax.sgd(0.1)), guard=False
    )
    state = step.init(zeros_params(4))
    state, _ = step.step(state, data)
    kept = state.params
    state, _ = step.step(state, (x.at[0, 0].set(jnp.inf), y))
    assert_trees_equal(state.params, kept)
    assert int(state.opt_state.first_bad_step) == 2


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        ((optax.sgd,), {}, "inner must be an optax"),
        ((optax.sgd(0.1),), {"halt": 1}, "halt must be True or False"),
    ],
)
def test_bad_arguments(args, kwargs, match):
    with pytest.raises(GdjaxTypeError, match=match):
        guard.reject_nonfinite(*args, **kwargs)
