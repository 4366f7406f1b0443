"""gdjax.pieces: fit's building blocks used by a loop of one's own.

The oracle is gd.fit itself: a hand-written jitted scan over epochs built from
gd.pieces.batches, gather and make_step must end on fit's parameters, optimizer
state and history, bit for bit (float32, CPU), in every regime.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import (
    assert_trees_equal,
    check_every_step,
    least_squares_problem,
    ls_loss,
    zeros_params,
)

import gdjax as gd
from gdjax import batching, pieces
from gdjax.errors import GdjaxTypeError, GdjaxValueError
from gdjax.loss_forms import keyed, stateful  # gd.keyed, gd.stateful

KEY = jax.random.key(0)


def own_fit(loss, params, data, transform, *, key, epochs, regime):
    """fit written by hand: a jitted scan over epochs of a scan over steps."""
    n = jax.tree.leaves(data)[0].shape[0]
    step = pieces.make_step(loss, transform)

    def epoch(state, e):
        idx, w = pieces.batches(regime, n, key, e)

        def one(carry, xs):
            state, loss_sum, gn_sum, count = carry
            i, wi = xs
            state, info = step.step(state, pieces.gather(data, i), wi)
            applied = info.applied.astype(jnp.int32)
            return (
                state,
                loss_sum + info.loss,
                gn_sum + info.grad_norm,
                count + applied,
            ), None

        zero = jnp.zeros((), jnp.float32)
        (state, ls, gs, count), _ = jax.lax.scan(
            one, (state, zero, zero, jnp.int32(0)), (idx, w)
        )
        return state, (ls / count, gs / count)

    @jax.jit
    def run(params):
        return jax.lax.scan(epoch, step.init(params, key), jnp.arange(1, epochs + 1))

    return run(params)


def digits_subset(n=200):
    (x, y), _ = gd.datasets.digits()
    return jnp.asarray(x[:n], jnp.float32), jnp.asarray(y[:n])


REGIMES = [
    gd.full_batch(),
    gd.stochastic(),
    gd.stochastic(replacement=True),
    gd.minibatch(32),  # 200 = 6 * 32 + 8: a padded last batch
    gd.minibatch(32, last_batch="drop", permutation="sort"),
]


@pytest.mark.parametrize("regime", REGIMES, ids=lambda r: r.describe())
def test_own_loop_is_fit_bitwise(regime):
    data = digits_subset()
    loss = gd.make_loss(gd.models.mlp, gd.losses.softmax_cross_entropy)
    params = gd.init.mlp(jax.random.key(1), [64, 10])
    tx = gd.sgd(0.05, momentum=0.9)
    epochs = 1 if regime.kind == "stochastic" else 3
    r = gd.fit(loss, params, data, tx, key=KEY, epochs=epochs, regime=regime)
    state, (loss_rows, gn_rows) = own_fit(
        loss, params, data, tx, key=KEY, epochs=epochs, regime=regime
    )
    assert int(state.steps) == int(r.steps) == epochs * batching.plan(regime, 200).steps
    assert int(state.status) == gd.Status.RUNNING
    assert_trees_equal((state.params, state.opt_state), (r.params, r.opt_state))
    np.testing.assert_array_equal(loss_rows, r.history.loss)
    np.testing.assert_array_equal(gn_rows, r.history.grad_norm)


def dropout_ema_loss(params, ema, batch, key):
    """Inverted dropout on the inputs (key None: inference) and an EMA of the
    batch loss as the state (a stateful, keyed loss)."""
    x, y = batch
    if key is not None:
        x = x * jax.random.bernoulli(key, 0.8, x.shape) / 0.8
    logits = gd.models.mlp(params, x)
    value = jnp.mean(gd.losses.softmax_cross_entropy(logits, y))
    return value, 0.9 * ema + 0.1 * jax.lax.stop_gradient(value)


@pytest.mark.parametrize(
    "loss",
    [
        keyed(lambda p, b, k: dropout_ema_loss(p, jnp.float32(0), b, k)[0]),
        stateful(dropout_ema_loss, jnp.float32(0.0), takes_key=True),
    ],
    ids=["keyed", "stateful+keyed"],
)
def test_own_loop_is_fit_bitwise_for_declared_losses(loss, monkeypatch):
    """Keys from gd.step_key(run key, steps applied), the state carried: the
    same steps as fit's, bit for bit. (The history's loss equals fit's
    per-step-checked path bitwise; fit's unchecked fast path for tiny steps
    rounds a declared loss's value 1 ulp apart from it, params unchanged.)"""
    data = digits_subset()
    params = gd.init.mlp(jax.random.key(1), [64, 10])
    kw = dict(key=KEY, epochs=2, regime=gd.minibatch(40))  # 200 = 5 x 40
    fast = gd.fit(loss, params, data, gd.sgd(0.1), **kw)
    check_every_step(monkeypatch)
    checked = gd.fit(loss, params, data, gd.sgd(0.1), **kw)
    state, (loss_rows, _) = own_fit(loss, params, data, gd.sgd(0.1), **kw)
    for r in (fast, checked):
        assert_trees_equal((state.params, state.opt_state), (r.params, r.opt_state))
        assert_trees_equal(state.loss_state, r.loss_state)
    np.testing.assert_array_equal(loss_rows, checked.history.loss)
    np.testing.assert_allclose(loss_rows, fast.history.loss, rtol=3e-7, atol=0)
    with pytest.raises(GdjaxValueError, match="pass the run's key"):
        pieces.make_step(loss, gd.sgd(0.1)).init(params)


def test_own_loop_is_fit_bitwise_with_per_step_checks(monkeypatch):
    """A step too big for fit's unchecked fast path (every step checked)."""
    data = digits_subset()
    loss = gd.make_loss(gd.models.mlp, gd.losses.softmax_cross_entropy)
    params = gd.init.mlp(jax.random.key(2), [64, 16, 10])
    check_every_step(monkeypatch)
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-2))
    kw = dict(key=KEY, epochs=2, regime=gd.minibatch(64))
    r = gd.fit(loss, params, data, tx, **kw)
    state, (loss_rows, _) = own_fit(loss, params, data, tx, **kw)
    assert_trees_equal((state.params, state.opt_state), (r.params, r.opt_state))
    np.testing.assert_array_equal(loss_rows, r.history.loss)


@pytest.mark.parametrize(
    "regime",
    [
        gd.full_batch(),
        gd.stochastic(),
        gd.stochastic(replacement=True),
        gd.stochastic(permutation="sort"),
        gd.minibatch(4),
        gd.minibatch(4, shuffle=False),
        gd.minibatch(4, last_batch="drop"),
        gd.minibatch(4, permutation="sort"),
    ],
    ids=lambda r: r.describe() + r.permutation,
)
def test_one_step_is_a_row_of_its_epoch(regime):
    n = 10
    plan = batching.plan(regime, n)

    @jax.jit
    def rows(key, e):
        steps = jnp.arange(plan.steps)
        return jax.vmap(lambda s: pieces.batches(regime, n, key, e, s))(steps)

    for e in (1, 2, 7):
        idx, w = pieces.batches(regime, n, KEY, e)
        # fit's epoch e draws from fold_in(key, e - 1)
        ref_idx, ref_w = batching.epoch_batches(regime, plan, KEY, e - 1)
        np.testing.assert_array_equal(idx, ref_idx)
        one_idx, one_w = rows(KEY, e)
        np.testing.assert_array_equal(one_idx, idx)
        assert (one_w is None) == (w is None) == (not plan.masked)
        if w is not None:
            np.testing.assert_array_equal(one_w, w)
            # every example once, padding weighted 0
            assert sorted(np.asarray(idx)[np.asarray(w) > 0].tolist()) == list(range(n))


def test_batches_vmap_over_keys_and_epochs():
    regime = gd.minibatch(5)
    keys = jax.random.split(KEY, 3)
    epochs = jnp.arange(1, 5)
    many = jax.vmap(
        jax.vmap(lambda k, e: pieces.batches(regime, 20, k, e).indices, (None, 0)),
        (0, None),
    )(keys, epochs)
    assert many.shape == (3, 4, 4, 5)
    for i in range(3):
        for j in range(4):
            np.testing.assert_array_equal(
                many[i, j], pieces.batches(regime, 20, keys[i], j + 1).indices
            )
    assert not np.array_equal(many[0, 0], many[0, 1])


def test_batches_under_jit_compiles_once_for_every_epoch_and_step(compiles):
    regime = gd.minibatch(7)
    epoch_fn = jax.jit(lambda k, e: pieces.batches(regime, 30, k, e))
    step_fn = jax.jit(lambda k, e, s: pieces.batches(regime, 30, k, e, s))
    epoch_fn(KEY, 1), step_fn(KEY, 1, 0)
    with compiles() as c:
        for e in range(2, 6):
            idx, w = (
                np.asarray(epoch_fn(KEY, e).indices),
                np.asarray(epoch_fn(KEY, e).weights),
            )
            for s in range(5):
                one = step_fn(KEY, e, s)
                np.testing.assert_array_equal(one.indices, idx[s])
                np.testing.assert_array_equal(one.weights, w[s])
    assert c.count == 0


@pytest.mark.parametrize(
    "args, err, match",
    [
        ((gd.minibatch(4), 10, KEY, 0), GdjaxValueError, "epoch counts from 1"),
        ((gd.minibatch(4), 10, KEY, 1, 3), GdjaxValueError, r"in \[0, 2\]"),
        ((gd.minibatch(4), 10, KEY, 1, -1), GdjaxValueError, "step must be"),
        ((gd.minibatch(40), 10, KEY, 1), GdjaxValueError, "batch_size must be in"),
        ((gd.minibatch(4, last_batch="drop"), 3, KEY, 1), GdjaxValueError, "batch"),
        (("minibatch", 10, KEY, 1), GdjaxTypeError, "regime must be"),
        ((gd.minibatch(4), 10.0, KEY, 1), GdjaxValueError, "n must be"),
    ],
)
def test_batches_refuses_what_would_misbehave(args, err, match):
    with pytest.raises(err, match=match):
        pieces.batches(*args)


def test_step_guard_stops_like_fit():
    """NaN in the batch of step 8: the step is rejected, the state frozen, and
    everything equals fit's NaN stop, bitwise."""
    data, *_ = least_squares_problem(n=40)
    x, y = data
    x = x.at[4 * 7 + 1, 2].set(jnp.nan)
    regime = gd.minibatch(4, shuffle=False)
    tx = optax.sgd(0.05, momentum=0.9)
    kw = dict(key=KEY, epochs=3, regime=regime)
    r = gd.fit(ls_loss, zeros_params(4), (x, y), tx, check_finite=False, **kw)
    assert r.stopped_by == gd.Status.NONFINITE_LOSS and int(r.steps) == 7
    state, (loss_rows, _) = own_fit(ls_loss, zeros_params(4), (x, y), tx, **kw)
    assert int(state.status) == gd.Status.NONFINITE_LOSS
    assert int(state.steps) == 7 and int(state.bad_leaf) == int(r.state.bad_leaf)
    assert_trees_equal((state.params, state.opt_state), (r.params, r.opt_state))
    # fit records the stopped epoch's mean over its 7 applied steps
    np.testing.assert_array_equal(loss_rows[:1], r.history.loss)
    assert np.all(np.isnan(loss_rows[1:]))  # 0 / 0: nothing applied after the stop


def test_guarded_step_is_the_unguarded_step_bitwise_on_clean_data():
    """fit's guard selects the parameters after p + u: XLA keeps its fused
    multiply-add, so on clean data the guard changes no bit (batch-1 logistic
    regression, where a select between -lr * g and the sum would)."""
    (x, y), _ = gd.datasets.digits()
    data = (jnp.asarray(x[:300], jnp.float32), jnp.asarray(y[:300] >= 5, jnp.int32))
    loss = gd.make_loss(gd.models.mlp, gd.losses.logistic)
    params = gd.init.mlp(jax.random.key(1), [64, 1])

    def run(guard):
        step = pieces.make_step(loss, optax.sgd(0.05), guard=guard)
        idx, _ = pieces.batches(gd.stochastic(), 300, KEY, 1)
        final, _ = jax.jit(
            lambda s: jax.lax.scan(
                lambda s, i: step.step(s, pieces.gather(data, i)), s, idx
            )
        )(step.init(params))
        return final.params

    assert_trees_equal(run(True), run(False))


def test_step_without_guard_lets_nan_in():
    data, *_ = least_squares_problem(n=8)
    x, y = data
    step = pieces.make_step(ls_loss, optax.sgd(0.1), guard=False)
    state, info = step.step(step.init(zeros_params(4)), (x.at[0, 0].set(jnp.nan), y))
    assert bool(info.applied) and int(info.status) == gd.Status.RUNNING
    assert np.isnan(np.asarray(state.params["w"])).any()


def test_step_refuses_weights_for_a_loss_without_them():
    data, *_ = least_squares_problem(n=8)
    step = pieces.make_step(ls_loss, optax.sgd(0.1))
    with pytest.raises(GdjaxValueError, match="with_example_weights"):
        step.step(step.init(zeros_params(4)), data, jnp.ones(8))
    weighted = pieces.make_step(gd.with_example_weights(ls_loss), optax.sgd(0.1))
    _, info = weighted.step(weighted.init(zeros_params(4)), data, jnp.ones(8))
    assert np.isfinite(float(info.loss))


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        ((1.0, optax.sgd(0.1)), {}, "loss must be callable"),
        ((ls_loss, optax.sgd), {}, "transform must be an optax"),
        ((ls_loss, optax.sgd(0.1)), {"guard": "yes"}, "guard must be True or False"),
    ],
)
def test_make_step_refuses_bad_arguments(args, kwargs, match):
    with pytest.raises(GdjaxTypeError, match=match):
        pieces.make_step(*args, **kwargs)


def test_step_state_is_type_stable_and_compiles_once(compiles):
    data, *_ = least_squares_problem(n=8)
    step = pieces.make_step(ls_loss, gd.sgd(0.1, momentum=0.9))
    state = step.init(zeros_params(4))
    out, _ = jax.eval_shape(step.step, state, data)
    assert jax.tree.structure(out) == jax.tree.structure(state)
    for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(state), strict=True):
        assert (a.shape, a.dtype, a.weak_type) == (b.shape, b.dtype, b.weak_type)
    fn = jax.jit(step.step)
    state, _ = fn(state, data)
    with compiles() as c:
        for _ in range(3):
            state, _ = fn(state, data)
    assert c.count == 0 and int(state.steps) == 4


def test_step_vmaps_over_members():
    """Members with their own learning rate and a NaN in one member's data:
    each member is its single run (vmapped float32: ~1e-7), statuses exact."""
    data, *_ = least_squares_problem(n=16)
    x, y = data
    xs = jnp.stack([x, x.at[3, 0].set(jnp.inf), x])
    lrs = jnp.array([0.05, 0.05, 0.2])
    step = pieces.make_step(ls_loss, gd.sgd(0.05, momentum=0.9))

    def run(lr, xm):
        state = step.init(zeros_params(4))
        state = state._replace(
            opt_state=gd.set_hyperparams(state.opt_state, learning_rate=lr)
        )
        idx, _ = pieces.batches(gd.minibatch(4, shuffle=False), 16, KEY, 1)
        state, _ = jax.lax.scan(
            lambda s, i: step.step(s, pieces.gather((xm, y), i)), state, idx
        )
        return state

    many = jax.jit(jax.vmap(run))(lrs, xs)
    for m in range(3):
        one = jax.jit(run)(lrs[m], xs[m])
        assert int(many.status[m]) == int(one.status)
        assert int(many.steps[m]) == int(one.steps)
        np.testing.assert_allclose(
            many.params["w"][m], one.params["w"], rtol=1e-6, atol=1e-7
        )
    assert list(np.asarray(many.status)) == [0, gd.Status.NONFINITE_LOSS, 0]
    assert list(np.asarray(many.steps)) == [4, 0, 4]


# ------------------------------------------------------------------------ stopping


CRITERIA = [
    dict(target_loss=0.3),
    dict(grad_tol=0.05),
    dict(tol=0.05, patience=2),
    dict(target_loss=0.05, tol=0.2, patience=1),
]


def test_history_status_is_where_fit_stops():
    data, *_ = least_squares_problem(n=32)
    kw = dict(key=KEY, epochs=40, regime=gd.minibatch(8))
    free = gd.fit(ls_loss, zeros_params(4), data, optax.sgd(0.05), **kw)
    replay = jax.jit(gd.stopping.history_status)
    for criteria in CRITERIA:
        stopped = gd.fit(
            ls_loss, zeros_params(4), data, optax.sgd(0.05), **kw, **criteria
        )
        assert stopped.stopped_by != gd.Status.MAX_EPOCHS, criteria  # it fires
        c = gd.Stopping(**criteria).criteria(np.float32)
        v = replay(c, free.history.loss, free.history.grad_norm)
        assert int(v.epoch) == int(stopped.epoch), criteria
        assert int(v.stopped_by) == int(stopped.stopped_by), criteria
        np.testing.assert_array_equal(stopped.state.best_loss, v.best[int(v.epoch) - 1])
        # the running form: the same rule, epoch by epoch
        best, bad = gd.stopping.plateau_init()
        rows = zip(free.history.loss, free.history.grad_norm, strict=True)
        ran = 0
        for loss, gn in rows:
            ran += 1
            best, bad = gd.stopping.plateau_update(c, loss, best, bad)
            status = gd.stopping.epoch_status(c, loss, gn, bad)
            if status != gd.Status.RUNNING:
                break
        assert (ran, int(status)) == (int(stopped.epoch), int(stopped.stopped_by))


def test_predicates():
    f32 = jnp.float32
    assert bool(gd.stopping.target_reached(f32(0.1), 0.1))
    assert not bool(gd.stopping.target_reached(f32(0.1000001), 0.1))
    assert bool(gd.stopping.grad_converged(f32(1e-4), 1e-4))
    assert not bool(gd.stopping.grad_converged(f32(jnp.nan), 1.0))
    assert bool(gd.stopping.plateaued(jnp.int32(3), 3))
    assert not bool(gd.stopping.plateaued(jnp.int32(2), 3))
    v = gd.stopping.history_status(
        gd.Stopping(target_loss=0.0).criteria(np.float32), jnp.ones(3), jnp.ones(3)
    )
    assert int(v.epoch) == 0 and int(v.stopped_by) == gd.Status.RUNNING
