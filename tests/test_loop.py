"""gdjax.fit: oracles for the compiled training loop and its stopping criteria."""

import functools

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
    ls_value,
    zeros_params,
)

import gdjax as gd
from gdjax import batching, loop, runs

KEY = jax.random.key(0)


def python_loop(loss, params, data, transform, regime, key, epochs, max_steps=None):
    """The optax tutorial loop over the same batches: the oracle for fit."""
    n = jax.tree.leaves(data)[0].shape[0]
    plan = batching.plan(regime, n)
    loss_w = gd.with_example_weights(loss) if plan.masked else loss
    state = transform.init(params)
    step_fn = jax.jit(
        lambda p, s, b, w: _step(loss_w, transform, p, s, b, w, plan.masked)
    )
    steps = 0
    for e in range(epochs):
        idx, w = batching.epoch_batches(regime, plan, key, e)
        w = np.ones(idx.shape, np.float32) if w is None else w
        for i, wi in zip(idx, w, strict=True):
            if max_steps is not None and steps == max_steps:
                return params, state
            params, state = step_fn(params, state, batching.gather(data, i), wi)
            steps += 1
    return params, state


def _step(loss, transform, params, state, batch, w, masked):
    grads = (
        jax.grad(loss)(params, batch, w) if masked else jax.grad(loss)(params, batch)
    )
    updates, state = transform.update(grads, state, params)
    return optax.apply_updates(params, updates), state


def test_minibatch_with_b_equal_n_is_full_batch():
    data, *_ = least_squares_problem(n=32)
    p0 = zeros_params(4)
    full = gd.fit(ls_loss, p0, data, optax.sgd(0.1), key=KEY, epochs=30)
    mb = gd.fit(
        ls_loss,
        p0,
        data,
        optax.sgd(0.1),
        key=KEY,
        epochs=30,
        regime=gd.minibatch(32, shuffle=False),
    )
    np.testing.assert_array_equal(full.params["w"], mb.params["w"])
    np.testing.assert_array_equal(full.history.loss, mb.history.loss)


@pytest.mark.parametrize(
    "regime",
    [
        gd.full_batch(),
        gd.minibatch(8),
        gd.minibatch(10),  # padded last batch, user loss -> with_example_weights
        gd.minibatch(10, last_batch="drop"),
        gd.stochastic(),
        gd.stochastic(replacement=True),
    ],
    ids=lambda r: r.describe(),
)
def test_fit_equals_python_loop(regime):
    data, *_ = least_squares_problem(n=36)
    p0 = zeros_params(4)
    tx = optax.sgd(0.05, momentum=0.9)
    # A padded last batch needs a loss that declares per-example weights: the
    # explicit choice python_loop makes too.
    masked = batching.plan(regime, 36).masked
    loss = gd.with_example_weights(ls_loss) if masked else ls_loss
    r = gd.fit(loss, p0, data, tx, key=KEY, epochs=4, regime=regime)
    params, state = python_loop(ls_loss, p0, data, tx, regime, KEY, 4)
    np.testing.assert_allclose(r.params["w"], params["w"], rtol=2e-6, atol=2e-6)
    assert int(r.epoch) == 4 and r.stopped_by == gd.Status.MAX_EPOCHS
    assert int(r.steps) == 4 * batching.plan(regime, 36).steps


def test_padded_last_batch_refuses_a_loss_without_weights(compiles):
    """n % B != 0 with last_batch="pad" and a plain user loss: a ValueError naming
    last_batch, before compiling (0.1 silently evaluated such a loss per example)."""
    data, *_ = least_squares_problem(n=36)
    with compiles() as c:
        with pytest.raises(ValueError, match="last_batch='pad'.*last batch of 6"):
            gd.fit(
                ls_loss,
                zeros_params(4),
                data,
                optax.sgd(0.05),
                key=KEY,
                epochs=2,
                regime=gd.minibatch(10),
            )
    assert c.count == 0
    # Either explicit choice runs: declared weights, or dropping the short batch.
    for loss, regime in [
        (gd.with_example_weights(ls_loss), gd.minibatch(10)),
        (ls_loss, gd.minibatch(10, last_batch="drop")),
    ]:
        r = gd.fit(loss, zeros_params(4), data, optax.sgd(0.05), key=KEY, epochs=2,
                   regime=regime)
        assert r.stopped_by == gd.Status.MAX_EPOCHS
    # B divides n: a plain loss needs no weights.
    r = gd.fit(ls_loss, zeros_params(4), data, optax.sgd(0.05), key=KEY, epochs=2,
               regime=gd.minibatch(9))
    assert int(r.steps) == 8


def test_masked_last_batch_equals_make_loss_weights():
    """A user loss (vmapped per example) and make_loss (native weights) agree."""
    data, *_ = least_squares_problem(n=30)
    x, y = data
    p0 = {"w": jnp.zeros((4, 1)), "b": jnp.zeros(1)}
    built = gd.make_loss(gd.models.linear, gd.losses.squared_error)

    def user(params, batch):
        xb, yb = batch
        r = gd.models.linear(params, xb)[:, 0] - yb
        return 0.5 * jnp.mean(r * r)

    kw = dict(key=KEY, epochs=3, regime=gd.minibatch(8))
    a = gd.fit(built, p0, (x, y), optax.sgd(0.1), **kw)
    b = gd.fit(gd.with_example_weights(user), p0, (x, y), optax.sgd(0.1), **kw)
    np.testing.assert_allclose(a.params["w"], b.params["w"], rtol=1e-5, atol=1e-6)


def test_least_squares_meets_linear_rate_bound(x64):
    data, w_star, mu, lips = least_squares_problem(n=128, d=6, dtype=np.float64)
    x, y = data
    p0 = zeros_params(6, jnp.float64)
    r = gd.fit(ls_loss, p0, data, optax.sgd(1.0 / lips), key=KEY, epochs=60)
    f_star = ls_value(w_star, x, y)
    gap0 = ls_value(np.zeros(6), x, y) - f_star
    rho = 1.0 - mu / lips
    gaps = np.asarray(r.history.loss) - f_star
    bound = gap0 * rho ** (2 * np.arange(60))
    assert np.all(gaps <= bound * (1 + 1e-9) + 1e-13)
    np.testing.assert_allclose(r.params["w"], w_star, atol=1e-4)


def test_chunked_run_is_bitwise_the_single_program():
    data, *_ = least_squares_problem(n=40)
    kw = dict(key=KEY, epochs=13, regime=gd.minibatch(16), tol=1e-4, patience=3)
    loss = gd.with_example_weights(ls_loss)  # 40 = 2 * 16 + 8: a masked last batch
    one = gd.fit(loss, zeros_params(4), data, optax.sgd(0.05), **kw)
    seen = []
    chunked = gd.fit(
        loss,
        zeros_params(4),
        data,
        optax.sgd(0.05),
        chunk_epochs=4,
        callback=lambda s: seen.append(int(s.epoch)),
        **kw,
    )
    for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(chunked), strict=True):
        np.testing.assert_array_equal(a, b)
    # The callback sees every chunk, the last (partial) one included.
    assert seen == [4, 8, 12, 13] and int(one.epoch) == 13


def test_callback_can_stop_the_run():
    data, *_ = least_squares_problem(n=40)
    r = gd.fit(
        ls_loss,
        zeros_params(4),
        data,
        optax.sgd(0.05),
        key=KEY,
        epochs=20,
        chunk_epochs=5,
        callback=lambda s: int(s.epoch) >= 10,
    )
    assert r.stopped_by == gd.Status.CALLBACK and int(r.epoch) == 10


def test_same_key_same_bits_and_lr_does_not_change_order():
    data, *_ = least_squares_problem(n=40)
    kw = dict(key=jax.random.key(7), epochs=3, regime=gd.minibatch(7))
    loss = gd.with_example_weights(ls_loss)  # 40 = 5 * 7 + 5: a masked last batch
    a = gd.fit(loss, zeros_params(4), data, optax.sgd(0.05), **kw)
    b = gd.fit(loss, zeros_params(4), data, optax.sgd(0.05), **kw)
    np.testing.assert_array_equal(a.params["w"], b.params["w"])
    # The order of each epoch is fold_in(key, epoch) whatever the transform.
    r = gd.minibatch(7)
    plan = batching.plan(r, 40)
    orders = [
        np.asarray(batching.epoch_batches(r, plan, kw["key"], e)[0]) for e in range(3)
    ]
    for lr in (0.01, 0.05):
        p, _ = python_loop(
            ls_loss, zeros_params(4), data, optax.sgd(lr), r, kw["key"], 3
        )
        got = gd.fit(loss, zeros_params(4), data, optax.sgd(lr), **kw)
        np.testing.assert_allclose(got.params["w"], p["w"], rtol=2e-6, atol=2e-7)
    assert not np.array_equal(orders[0], orders[1])


# ------------------------------------------------------------------- stopping


def _unstopped(epochs=40, lr=0.05, regime=None):
    data, *_ = least_squares_problem(n=48)
    r = gd.fit(
        ls_loss,
        zeros_params(4),
        data,
        optax.sgd(lr),
        key=KEY,
        epochs=epochs,
        regime=regime,
    )
    return data, r


def test_max_epochs():
    _, r = _unstopped(epochs=7)
    assert r.stopped_by == gd.Status.MAX_EPOCHS
    assert int(r.epoch) == 7 and int(r.steps) == 7
    assert r.history.loss.shape == (7,) and np.all(np.isfinite(r.history.loss))
    np.testing.assert_array_equal(r.history.epoch, np.arange(1, 8))


def test_max_steps_stops_mid_epoch_at_the_right_step():
    data, *_ = least_squares_problem(n=48)
    regime = gd.minibatch(10)  # 5 steps an epoch, the last one masked
    r = gd.fit(
        gd.with_example_weights(ls_loss),
        zeros_params(4),
        data,
        optax.sgd(0.05),
        key=KEY,
        epochs=10,
        regime=regime,
        max_steps=13,
    )
    assert r.stopped_by == gd.Status.MAX_STEPS
    # Steps 11..13 are in epoch 3 (counting from 1): the run stopped in it.
    assert int(r.steps) == 13 and int(r.epoch) == 3
    p, _ = python_loop(
        ls_loss, zeros_params(4), data, optax.sgd(0.05), regime, KEY, 10, max_steps=13
    )
    np.testing.assert_allclose(r.params["w"], p["w"], rtol=2e-6, atol=2e-7)
    # The history holds the 3 epochs run; the raw rows past them stay unwritten.
    assert r.history.loss.shape == (3,) and np.all(np.isfinite(r.history.loss))
    raw = r.state.history
    assert np.all(np.isnan(raw.loss[3:])) and np.all(np.asarray(raw.epoch[3:]) == 0)


def test_target_loss_fires_at_first_epoch_below_it():
    data, ref = _unstopped()
    target = float(ref.history.loss[12]) * 1.0001
    expected = int(np.argmax(np.asarray(ref.history.loss) <= target))
    r = gd.fit(
        ls_loss,
        zeros_params(4),
        data,
        optax.sgd(0.05),
        key=KEY,
        epochs=40,
        target_loss=target,
    )
    assert r.stopped_by == gd.Status.TARGET_LOSS
    # History row `expected` is epoch expected + 1 (epochs count from 1).
    assert int(r.epoch) == expected + 1
    assert r.history.loss.shape == (expected + 1,)


def test_grad_tol_fires_at_first_epoch_below_it():
    data, ref = _unstopped()
    tol = float(ref.history.grad_norm[20]) * 1.0001
    expected = int(np.argmax(np.asarray(ref.history.grad_norm) <= tol))
    r = gd.fit(
        ls_loss,
        zeros_params(4),
        data,
        optax.sgd(0.05),
        key=KEY,
        epochs=40,
        grad_tol=tol,
    )
    assert r.stopped_by == gd.Status.GRAD_TOL and int(r.epoch) == expected + 1


def test_plateau_matches_sklearn_rule():
    data, ref = _unstopped(epochs=200, lr=0.01)
    tol, patience = 0.015, 3
    best, bad, expected = np.inf, 0, None
    for e, loss in enumerate(np.asarray(ref.history.loss)):
        if loss < best - tol * abs(best) or not np.isfinite(best):
            bad = 0
        else:
            bad += 1
        best = min(best, loss)
        if bad >= patience:
            expected = e
            break
    assert expected is not None and expected > patience
    r = gd.fit(
        ls_loss,
        zeros_params(4),
        data,
        optax.sgd(0.01),
        key=KEY,
        epochs=200,
        tol=tol,
        patience=patience,
    )
    assert r.stopped_by == gd.Status.NO_IMPROVEMENT and int(r.epoch) == expected + 1


def test_user_predicate_on_history():
    data, _ = _unstopped()

    def until(history, epoch):
        # epoch: the number of the epoch just run, from 1; its row is epoch - 1.
        return (epoch >= 3) & (history.loss[epoch - 1] > 0.5 * history.loss[0])

    ref = gd.fit(ls_loss, zeros_params(4), data, optax.sgd(0.05), key=KEY, epochs=40)
    losses = np.asarray(ref.history.loss)
    expected = next(e for e in range(2, 40) if losses[e] > 0.5 * losses[0])
    r = gd.fit(
        ls_loss, zeros_params(4), data, optax.sgd(0.05), key=KEY, epochs=40, until=until
    )
    assert r.stopped_by == gd.Status.PREDICATE and int(r.epoch) == expected + 1


@pytest.mark.parametrize("bad_step", [0, 7])
def test_nan_mid_run_returns_last_finite_state(bad_step):
    data, *_ = least_squares_problem(n=40)
    x, y = data
    regime = gd.minibatch(4, shuffle=False)  # 10 steps an epoch, step k sees 4k..4k+3
    x = x.at[4 * bad_step + 1, 2].set(jnp.nan)
    tx = optax.sgd(0.05, momentum=0.9)
    r = gd.fit(
        ls_loss,
        zeros_params(4),
        (x, y),
        tx,
        key=KEY,
        epochs=5,
        regime=regime,
        check_finite=False,
    )
    assert r.stopped_by == gd.Status.NONFINITE_LOSS and r.failed
    assert int(r.steps) == bad_step and int(r.epoch) == 1
    # Steps count from 1 in the reason: the bad one is step bad_step + 1.
    assert f"at step {bad_step + 1} (epoch 1)" in r.reason
    ref = gd.fit(
        ls_loss,
        zeros_params(4),
        data,
        tx,
        key=KEY,
        epochs=5,
        regime=regime,
        max_steps=max(bad_step, 1),
    )
    if bad_step == 0:
        np.testing.assert_array_equal(r.params["w"], np.zeros(4))
    else:
        for a, b in zip(
            jax.tree.leaves((r.params, r.opt_state)),
            jax.tree.leaves((ref.params, ref.opt_state)),
            strict=True,
        ):
            np.testing.assert_array_equal(a, b)
    with pytest.raises(gd.NonFiniteError, match="NaN or inf") as info:
        gd.fit(
            ls_loss,
            zeros_params(4),
            (x, y),
            tx,
            key=KEY,
            epochs=5,
            regime=regime,
            check_finite=False,
            raise_on_nonfinite=True,
        )
    np.testing.assert_array_equal(info.value.result.params["w"], r.params["w"])


def test_divergence_is_caught_in_params_or_grads_and_names_the_leaf():
    data, *_ = least_squares_problem(n=40)
    params = {"a": jnp.zeros(()), "w": jnp.zeros(4)}

    def loss(p, b):
        return ls_loss({"w": p["w"]}, b) + 0.0 * p["a"]

    r = gd.fit(loss, params, data, optax.sgd(1e3), key=KEY, epochs=500)
    assert r.failed
    assert r.stopped_by in (
        gd.Status.NONFINITE_LOSS,
        gd.Status.NONFINITE_GRAD,
        gd.Status.NONFINITE_PARAMS,
    )
    assert np.all(np.isfinite(r.params["w"]))
    if r.stopped_by != gd.Status.NONFINITE_LOSS:
        assert "params['w']" in r.reason


def test_validation_and_metric_recorded():
    (xtr, ytr), (xte, yte) = gd.datasets.digits(test_fraction=0.3)
    params = gd.init.dense(KEY, 64, 10)
    loss = gd.make_loss(gd.models.linear, gd.losses.softmax_cross_entropy)
    r = gd.fit(
        loss,
        params,
        (xtr, ytr),
        gd.sgd(0.5),
        key=KEY,
        epochs=5,
        regime=gd.minibatch(64),
        val_data=(xte, yte),
        metric=gd.accuracy(gd.models.linear),
    )
    np.testing.assert_allclose(
        r.history.val_loss[-1], loss(r.params, (xte, yte)), rtol=1e-6
    )
    acc = np.mean(np.argmax(gd.models.linear(r.params, xte), -1) == np.asarray(yte))
    np.testing.assert_allclose(r.history.metric[-1], acc, rtol=1e-6)
    assert acc > 0.8


def test_numbers_passed_as_arrays_do_not_recompile(compiles):
    data, *_ = least_squares_problem(n=40)
    kw = dict(key=KEY, epochs=5, regime=gd.minibatch(8))
    gd.fit(ls_loss, zeros_params(4), data, gd.sgd(0.1, momentum=0.5), tol=1e-3, **kw)
    p0 = zeros_params(4)
    with compiles() as c:
        for lr, m, tol in [(0.05, 0.9, 1e-2), (np.float32(0.2), np.asarray(0.1), 0.5)]:
            gd.fit(ls_loss, p0, data, gd.sgd(lr, momentum=m), tol=tol, **kw)
            gd.fit(
                ls_loss,
                p0,
                data,
                gd.sgd(0.1, momentum=0.5),
                tol=tol,
                hyperparams={"learning_rate": lr},
                **kw,
            )
    assert c.count == 0


def test_jit_of_fit_program_matches_float64(x64):
    data, w_star, _, lips = least_squares_problem(n=64, dtype=np.float64)
    r = gd.fit(
        ls_loss,
        zeros_params(4, jnp.float64),
        data,
        gd.sgd(1 / lips),
        key=KEY,
        epochs=2000,
        grad_tol=1e-10,
    )
    assert r.params["w"].dtype == jnp.float64
    assert r.stopped_by == gd.Status.GRAD_TOL
    np.testing.assert_allclose(r.params["w"], w_star, rtol=1e-8)


# ------------------------------------------------------------------- bad input


def _bad_cases():
    data, *_ = least_squares_problem(n=20)
    x, y = data
    p = zeros_params(4)
    tx = optax.sgd(0.1)
    ok = dict(key=KEY, epochs=2)
    return [
        (
            "different lengths",
            (ls_loss, p, (x, y[:-1]), tx),
            ok,
            ValueError,
            "same number of examples",
        ),
        ("empty data", (ls_loss, p, (x[:0], y[:0]), tx), ok, ValueError, "empty"),
        (
            "batch too big",
            (ls_loss, p, data, tx),
            dict(ok, regime=gd.minibatch(21)),
            ValueError,
            r"batch_size must be in \[1, 20\]",
        ),
        (
            "drop leaves no step",
            (ls_loss, p, data, tx),
            dict(ok, regime=gd.minibatch(25, last_batch="drop")),
            ValueError,
            r"batch_size must be in \[1, 20\]",
        ),
        (
            "zero epochs",
            (ls_loss, p, data, tx),
            dict(key=KEY, epochs=0),
            ValueError,
            "epochs must be an integer >= 1",
        ),
        (
            "int key",
            (ls_loss, p, data, tx),
            dict(key=0, epochs=2),
            TypeError,
            "key must be a PRNG key",
        ),
        (
            "key batch",
            (ls_loss, p, data, tx),
            dict(key=jax.random.split(KEY, 3), epochs=2),
            ValueError,
            "batch of keys",
        ),
        (
            "not differentiable",
            (lambda q, b: jnp.sum(b[1]) * 1.0, p, data, tx),
            ok,
            ValueError,
            "does not depend on params",
        ),
        (
            "non-scalar loss",
            (lambda q, b: b[0] @ q["w"], p, data, tx),
            ok,
            TypeError,
            "must return a scalar",
        ),
        (
            "nan in data",
            (ls_loss, p, (x.at[3, 1].set(jnp.inf), y), tx),
            ok,
            ValueError,
            r"data\[0\] contains NaN or inf \(first at example 3\)",
        ),
        (
            "no example axis",
            (ls_loss, p, (x, jnp.float32(1.0)), tx),
            ok,
            ValueError,
            "leading example axis",
        ),
        (
            "negative tol",
            (ls_loss, p, data, tx),
            dict(ok, tol=-1.0),
            ValueError,
            r"tol must be in \[0",
        ),
        (
            "patience zero",
            (ls_loss, p, data, tx),
            dict(ok, tol=0.1, patience=0),
            ValueError,
            "patience must be an integer >= 1",
        ),
        (
            "not a transform",
            (ls_loss, p, data, "sgd"),
            ok,
            TypeError,
            "transform must be an optax GradientTransformation",
        ),
        (
            "nan lr override",
            (ls_loss, p, data, gd.sgd(0.1)),
            dict(ok, hyperparams={"learning_rate": float("nan")}),
            ValueError,
            "learning_rate.*finite",
        ),
    ]


@pytest.mark.parametrize("case", _bad_cases(), ids=lambda c: c[0])
def test_bad_input_raises_before_compiling(case, compiles):
    name, args, kwargs, err, match = case
    with compiles() as c:
        with pytest.raises(err, match=match):
            gd.fit(*args, **kwargs)
    assert c.count == 0, name


@pytest.mark.parametrize("bad_step", [None, 6])
def test_epoch_level_fast_path_equals_per_step_checks(bad_step, monkeypatch):
    """Tiny steps run an epoch unchecked and replay it checked only on trouble:
    the result must be bitwise that of checking every step."""
    data, *_ = least_squares_problem(n=40)
    x, y = data
    if bad_step is not None:
        x = x.at[4 * bad_step + 2, 0].set(jnp.inf)
    kw = dict(key=KEY, epochs=3, regime=gd.minibatch(4), check_finite=False,
              max_steps=25)
    tx = gd.sgd(0.05, momentum=0.9)
    def program():
        stop, rec, drive = gd.spec.from_options(max_steps=25, check_finite=False)
        return runs.prepare(
            ls_loss, zeros_params(4), (x, y), tx, key=KEY, epochs=3,
            regime=gd.minibatch(4), stopping=stop, recording=rec, driving=drive,
        ).program

    assert program().fast  # 4 examples x 4 parameters: a tiny step
    fast = gd.fit(ls_loss, zeros_params(4), (x, y), tx, **kw)
    check_every_step(monkeypatch)
    assert not program().fast
    slow = gd.fit(ls_loss, zeros_params(4), (x, y), tx, **kw)
    for a, b in zip(jax.tree.leaves(fast), jax.tree.leaves(slow), strict=True):
        np.testing.assert_array_equal(a, b)
    if bad_step is None:
        assert fast.stopped_by == gd.Status.MAX_STEPS and int(fast.steps) == 25
    else:
        assert fast.failed


def test_fast_path_without_guard_or_budget_skips_the_replay(monkeypatch):
    """With the guard off and no max_steps nothing can need the checked replay:
    the program drops it (its while loops), and the run is still bitwise
    the per-step one (a run with an inf in its data goes on, NaN and all)."""
    data, *_ = least_squares_problem(n=40)
    x, y = data
    x = x.at[4 * 3 + 2, 0].set(jnp.inf)
    kw = dict(key=KEY, epochs=3, regime=gd.minibatch(4), check_finite=False,
              guard=False)
    tx = gd.sgd(0.05, momentum=0.9)

    def whiles(**extra):
        stop, rec, drive = gd.spec.from_options(
            guard=False, check_finite=False, **extra
        )
        run = runs.prepare(
            ls_loss, zeros_params(4), (x, y), tx, key=KEY, epochs=3,
            regime=kw["regime"], stopping=stop, recording=rec, driving=drive,
        )
        assert run.program.fast and run.program.bounded == bool(extra)
        lowered = loop.advance.lower(*run[:3], np.int32(3))
        return lowered.as_text().count("stablehlo.while")

    assert whiles() < whiles(max_steps=10**6)
    fast = gd.fit(ls_loss, zeros_params(4), (x, y), tx, **kw)
    check_every_step(monkeypatch)
    slow = gd.fit(ls_loss, zeros_params(4), (x, y), tx, **kw)
    assert not np.isfinite(np.asarray(fast.params["w"])).all()
    for a, b in zip(jax.tree.leaves(fast), jax.tree.leaves(slow), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("width", [None, 300], ids=["tiny-step", "wide-step"])
@pytest.mark.parametrize("trips", [False, True], ids=["clean", "nan-in-epoch-3"])
def test_host_replay_equals_per_step_checks(trips, width, monkeypatch, compiles):
    """A single guarded run without max_steps compiles the fast program
    without its replay, whatever its step's size: an epoch in trouble comes
    back unrun and the checked program (compiled then, and only then) runs
    it. Bitwise the run that checks every step: parameters, momentum,
    history, status, steps, for a hand-written sum loss in float64 on an odd
    n, in chunks and donated too; the internal REPLAY status never shows.
    The loss turns NaN once the trained weights' norm passes its value after
    3 epochs of a clean run: in a later epoch, not the first."""
    head = "w" if width is None else "u"

    def sum_loss(p, batch, limit=np.inf):  # sum-reduced, as a user writes it
        x, y = batch
        h = x @ p["w"] if width is None else jnp.tanh(x @ p["v"]) @ p["u"]
        trip = jnp.where(jnp.linalg.norm(p[head]) > limit, jnp.nan, 0.0)
        return jnp.sum((h - y) ** 2) / 8.0 + trip

    with jax.enable_x64(True):
        (x, y), *_ = least_squares_problem(n=41, dtype=np.float64)
        rng = np.random.default_rng(3)
        params = (
            {"w": np.zeros(4)}
            if width is None
            else {"v": rng.normal(size=(4, width)) / 4, "u": np.zeros(width)}
        )
        tx = gd.sgd(0.002, momentum=0.9)
        kw = dict(key=KEY, epochs=8, regime=gd.minibatch(4, last_batch="drop"))
        loss = sum_loss
        if trips:
            three = gd.fit(sum_loss, params, (x, y), tx, **{**kw, "epochs": 3})
            limit = 0.999 * np.linalg.norm(three.params[head])
            loss = functools.partial(sum_loss, limit=limit)
        seen = []
        with compiles() as c:
            fast = gd.fit(loss, params, (x, y), tx, **kw)
        assert c.count == (2 if trips else 1)
        chunked = gd.fit(loss, params, (x, y), tx, chunk_epochs=1, donate=True,
                         callback=lambda r: seen.append(int(r.status)), **kw)
        check_every_step(monkeypatch)
        slow = gd.fit(loss, params, (x, y), tx, **kw)
    for r in (fast, chunked):
        assert_trees_equal(jax.device_get(r.state), jax.device_get(slow.state))
    assert min(seen) >= 0 and len(seen) == slow.epoch
    if trips:
        assert slow.stopped_by == gd.Status.NONFINITE_LOSS and 2 <= slow.epoch <= 4
        assert slow.steps < 10 * slow.epoch
    else:
        assert slow.epoch == 8 and slow.stopped_by == gd.Status.MAX_EPOCHS


def test_overflowing_sums_replay_once_and_go_on_checked(monkeypatch, compiles):
    """Every step finite, the epoch's loss sum not (3e38 a step in float32):
    the first epoch comes back in trouble, and its checked replay goes on to
    the end of the run itself (two programs, not a hand-back per epoch), to
    the bits of the run that checks every step."""
    (x, y), *_ = least_squares_problem(n=40)

    def huge_loss(p, batch):
        return jnp.float32(3e38) + ls_loss(p, batch)

    kw = dict(key=KEY, epochs=6, regime=gd.minibatch(4))
    calls = []
    jitted = runs.advance.jitted

    def counted(program, *args):
        calls.append(program.fast)
        return jitted(program, *args)

    monkeypatch.setattr(runs.advance, "jitted", counted)
    with compiles() as c:
        fast = gd.fit(huge_loss, zeros_params(4), (x, y), gd.sgd(0.05), **kw)
    assert c.count == 2 and calls == [True, False]
    monkeypatch.undo()
    assert fast.stopped_by == gd.Status.MAX_EPOCHS and fast.epoch == 6
    assert np.isinf(fast.history.loss).all()
    check_every_step(monkeypatch)
    slow = gd.fit(huge_loss, zeros_params(4), (x, y), gd.sgd(0.05), **kw)
    assert_trees_equal(jax.device_get(fast.state), jax.device_get(slow.state))


def test_single_program_leaves_the_replay_out():
    """Without max_steps a single run's program has no replay (fewer while
    loops than the prepared one, which keeps it for sweeps); with max_steps
    the last epoch needs it and it stays."""
    (x, y), *_ = least_squares_problem(n=41)

    def program(**extra):
        stop, rec, drive = gd.spec.from_options(**extra)
        run = runs.prepare(
            ls_loss, zeros_params(4), (x, y), gd.sgd(0.05), key=KEY, epochs=3,
            regime=gd.minibatch(4, last_batch="drop"), stopping=stop,
            recording=rec, driving=drive,
        )
        return run, runs.single_program(run.program)

    def whiles(run, program):
        lowered = loop.advance.lower(program, run.state, run.inputs, np.int32(3))
        return lowered.as_text().count("stablehlo.while")

    run, single = program()
    assert run.program.replay and not single.replay and single.fast
    assert whiles(run, single) < whiles(run, run.program)
    run, single = program(max_steps=10)
    assert single == run.program


# ------------------------------------------------------------------- 0.2 rules


def test_resume_continues_exactly_and_goes_on_after_a_stop():
    """resume=r: bitwise the uninterrupted run; epochs is the new total; the
    status is reset, so a run stopped by a criterion goes on."""
    data, *_ = least_squares_problem(n=40)
    kw = dict(key=KEY, regime=gd.minibatch(8))
    tx = gd.sgd(0.05, momentum=0.9)
    whole = gd.fit(ls_loss, zeros_params(4), data, tx, epochs=10, **kw)
    first = gd.fit(ls_loss, zeros_params(4), data, tx, epochs=4, **kw)
    rest = gd.fit(ls_loss, zeros_params(4), data, tx, epochs=10, resume=first, **kw)
    for a, b in zip(jax.tree.leaves(whole), jax.tree.leaves(rest), strict=True):
        np.testing.assert_array_equal(a, b)
    assert int(rest.epoch) == 10 and int(rest.steps) == 50
    np.testing.assert_array_equal(rest.history.epoch, np.arange(1, 11))
    # Stopped by target_loss in some epoch k < 10: resuming runs epochs k+1..10,
    # bitwise the steps of the uninterrupted run.
    target = float(whole.history.loss[3]) * 1.0001
    stopped = gd.fit(
        ls_loss, zeros_params(4), data, tx, epochs=10, target_loss=target, **kw
    )
    assert stopped.stopped_by == gd.Status.TARGET_LOSS and int(stopped.epoch) < 10
    more = gd.fit(ls_loss, zeros_params(4), data, tx, epochs=10, resume=stopped, **kw)
    assert more.stopped_by == gd.Status.MAX_EPOCHS
    np.testing.assert_array_equal(more.params["w"], whole.params["w"])
    # A new transform's hyperparameters apply from the resumed epoch on.
    slow = gd.fit(
        ls_loss, zeros_params(4), data, gd.sgd(0.001, momentum=0.9), epochs=10,
        resume=first, **kw,
    )
    np.testing.assert_allclose(
        gd.get_hyperparams(slow.opt_state)["learning_rate"], 0.001, rtol=1e-7
    )
    # Oracle: epochs 5..10 by hand from first's state with the new rate.
    slow_tx = gd.sgd(0.001, momentum=0.9)
    params = first.params
    state = gd.set_hyperparams(first.opt_state, learning_rate=0.001)
    regime = kw["regime"]
    plan = batching.plan(regime, 40)
    step = jax.jit(lambda p, s, b: _step(ls_loss, slow_tx, p, s, b, None, False))
    for e in range(4, 10):
        idx, _ = batching.epoch_batches(regime, plan, KEY, e)
        for i in idx:
            params, state = step(params, state, batching.gather(data, i))
    np.testing.assert_allclose(slow.params["w"], params["w"], rtol=2e-6, atol=2e-7)
    assert not np.allclose(slow.params["w"], whole.params["w"], rtol=1e-3)
    with pytest.raises(ValueError, match="leaves none to run"):
        gd.fit(ls_loss, zeros_params(4), data, tx, epochs=4, resume=first, **kw)


def test_float64_run_compares_its_thresholds_in_float64(x64):
    """A target equal to an epoch's float64 loss stops in that very epoch, even
    where rounding the target to float32 would put it below the loss."""
    data, *_ = least_squares_problem(n=48, dtype=np.float64)
    kw = dict(key=KEY, epochs=40)
    p0 = zeros_params(4, jnp.float64)
    ref = gd.fit(ls_loss, p0, data, gd.sgd(0.05), **kw)
    losses = np.asarray(ref.history.loss)
    assert losses.dtype == np.float64 and np.all(np.diff(losses) < 0)
    # An epoch whose loss float32 rounds down, but above the next epoch's loss.
    k = next(
        e for e in range(5, 39)
        if np.float64(np.float32(losses[e])) < losses[e]
        and np.float32(losses[e]) > losses[e + 1]
    )
    r = gd.fit(ls_loss, p0, data, gd.sgd(0.05), target_loss=float(losses[k]), **kw)
    assert r.stopped_by == gd.Status.TARGET_LOSS and int(r.epoch) == k + 1


def test_turning_the_plateau_criterion_on_does_not_recompile(compiles):
    data, *_ = least_squares_problem(n=40)
    kw = dict(key=KEY, epochs=30, regime=gd.minibatch(8))
    off = gd.fit(ls_loss, zeros_params(4), data, gd.sgd(0.05), **kw)
    with compiles() as c:
        on = gd.fit(
            ls_loss, zeros_params(4), data, gd.sgd(0.05), tol=0.05, patience=2, **kw
        )
    assert c.count == 0
    assert off.stopped_by == gd.Status.MAX_EPOCHS
    assert on.stopped_by == gd.Status.NO_IMPROVEMENT and int(on.epoch) < 30


def _sum_loss(p, batch):  # hand-written, sum-reduced
    xb, yb = batch
    return 0.5 * jnp.sum((xb @ p["w"] - yb) ** 2)


@pytest.mark.parametrize("loss, x64", [(ls_loss, False), (_sum_loss, True)],
                         ids=["ls_loss float32", "hand-written sum float64"])
def test_step_stats_off_takes_the_same_steps_and_records_no_loss(loss, x64):
    """step_stats=False takes jax.grad alone: the same parameters as the run
    that also computes each step's loss and gradient norm, NaN in those two
    history series, and what would read them refused before compiling."""
    with jax.enable_x64(x64):
        _step_stats_off(loss, jnp.float64 if x64 else jnp.float32)


def _step_stats_off(loss, dtype):
    data, *_ = least_squares_problem(n=41)
    data = jax.tree.map(lambda a: np.asarray(a, dtype), data)
    tx = gd.sgd(0.05 if dtype == jnp.float32 else 0.01, momentum=0.9)
    kw = dict(key=KEY, epochs=4, regime=gd.minibatch(4, last_batch="drop"),
              guard=False)
    start = {"w": np.zeros(4, dtype)}
    full = gd.fit(loss, start, data, tx, **kw)
    lean = gd.fit(loss, start, data, tx, step_stats=False, **kw)
    assert lean.params["w"].dtype == dtype
    np.testing.assert_allclose(lean.params["w"], full.params["w"], rtol=1e-6)
    assert int(lean.steps) == int(full.steps) == 40 and int(lean.epoch) == 4
    assert lean.stopped_by == gd.Status.MAX_EPOCHS
    assert np.isnan(lean.history.loss).all() and np.isnan(lean.history.grad_norm).all()
    assert np.isfinite(full.history.loss).all()
    # A metric still works (evaluated after each epoch, not per step).
    metric = gd.fit(loss, start, data, tx, step_stats=False,
                    metric=loss, **kw)
    np.testing.assert_allclose(metric.history.metric[-1], loss(lean.params, data),
                               rtol=1e-5)
    for extra, names in [
        (dict(guard=True), "guard"),
        (dict(guard=False, target_loss=0.1), "target_loss"),
        (dict(guard=False, tol=1e-3), "tol"),
        (dict(guard=False, grad_tol=1e-3), "grad_tol"),
    ]:
        opts = {**kw, **extra}
        with pytest.raises(ValueError, match=f"step_stats=False.*{names}"):
            gd.fit(loss, start, data, tx, step_stats=False, **opts)
    with pytest.raises(TypeError, match="step_stats"):
        gd.fit(loss, start, data, tx, step_stats="no", **kw)


def test_tiny_steps_of_a_lean_run_unroll_four():
    data, *_ = least_squares_problem(n=40)

    def program(batch, **options):
        stop, rec, drive = gd.spec.from_options(**options)
        return runs.prepare(
            ls_loss, zeros_params(4), data, gd.sgd(0.1), key=KEY, epochs=1,
            regime=gd.minibatch(batch), stopping=stop, recording=rec, driving=drive,
        ).program

    assert program(1, guard=False, step_stats=False).unroll == 4  # 4 params x 1
    assert program(1).unroll == program(1, guard=False).unroll == 2
    assert runs.TINY_STEP < 4 * 40 * 2 <= runs.UNROLL_STEP
    data, *_ = least_squares_problem(n=80)
    assert program(80).unroll == 2


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_first_fit_from_cold_caches_compiles_one_program(dtype, compiles):
    """A fresh process's first fit builds one program: the run. No eager op on
    the host side compiles (checks, the momentum state, the key), for a
    hand-written sum-reduced loss on an MLP, float32 or float64, odd n."""
    from gdjax import _validate as V

    with jax.enable_x64(dtype == jnp.float64):
        rng = np.random.default_rng(3)
        x = rng.normal(size=(37, 5)).astype(dtype)
        y = rng.normal(size=(37,)).astype(dtype)
        params = jax.tree.map(
            lambda a: np.asarray(a, dtype),
            gd.init.mlp(jax.random.key(0), [5, 7, 1], dtype=dtype),
        )

        def loss(p, batch):  # sum-reduced, written by hand
            xb, yb = batch
            return 0.5 * jnp.sum((gd.models.mlp(p, xb)[:, 0] - yb) ** 2)

        key = jax.random.key(1)
        jax.clear_caches()
        V.clear_memo()
        with compiles() as c:
            r = gd.fit(loss, params, (x, y), gd.sgd(0.01, momentum=0.9), key=key,
                       epochs=3, regime=gd.minibatch(8, last_batch="drop"))
            jax.block_until_ready(r.params)
        assert c.count == 1
        assert r.history.loss.dtype == dtype and np.isfinite(r.history.loss).all()


def test_quick_compile_is_the_default_run_bit_for_bit(x64, compiles):
    """compiler_options=gd.QUICK_COMPILE (XLA's older CPU emitters) reaches
    the compiled programs of fit, sweep (its start and its run) and
    fit_stream: each compiles its own programs, and the numbers are those of XLA's
    default emitters, bit for bit (float64, a hand-written sum loss on an MLP
    with momentum, odd n). The default emitters are asked for by name: the
    quick test run turns the older ones on for every program (conftest)."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(29, 3))
    y = np.cos(x[:, 0])

    def loss(p, batch):
        xb, yb = batch
        return 0.5 * jnp.sum((gd.models.mlp(p, xb)[:, 0] - yb) ** 2)

    params = gd.init.mlp(jax.random.key(2), [3, 6, 1], dtype=jnp.float64)
    tx = gd.sgd(0.01, momentum=0.9)
    kw = dict(epochs=3, regime=gd.minibatch(4, last_batch="drop"))

    def runs_with(**options):
        single = gd.fit(loss, params, (x, y), tx, key=KEY, **kw, **options)
        swept = gd.sweep(loss, params, (x, y), tx, seeds=[0, 1],
                         hyperparams={"learning_rate": [0.01, 0.02]}, **kw, **options)
        stream = [(x[i : i + 4], y[i : i + 4]) for i in range(0, 28, 4)]
        streamed = gd.fit_stream(loss, params, stream, tx, steps_per_epoch=7,
                                 last_batch="drop", **options)
        return jax.device_get((single.state, swept.result.state, streamed.state))

    default = runs_with(compiler_options={"xla_cpu_use_fusion_emitters": True})
    with compiles() as c:
        quick = runs_with(compiler_options=gd.QUICK_COMPILE)
    assert c.count == 4
    for a, b in zip(jax.tree.leaves(default), jax.tree.leaves(quick), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "value, match",
    [
        ("xla_cpu_use_fusion_emitters", "mapping of XLA option names"),
        ({1: True}, "option names \\(str\\)"),
        ({"xla_cpu_use_fusion_emitters": [False]}, "must be a bool, int, float or str"),
    ],
)
def test_bad_compiler_options_are_refused_before_compiling(value, match, compiles):
    data, *_ = least_squares_problem(n=16)
    params = zeros_params(4)
    with compiles() as c, pytest.raises(TypeError, match=match):
        gd.fit(ls_loss, params, data, gd.sgd(0.1), key=KEY, epochs=1,
               compiler_options=value)
    assert c.count == 0


def test_an_option_xla_does_not_know_fails_naming_it():
    data, *_ = least_squares_problem(n=16)
    with pytest.raises(Exception, match="xla_no_such_option"):
        gd.fit(ls_loss, zeros_params(4), data, gd.sgd(0.1), key=KEY, epochs=1,
               compiler_options={"xla_no_such_option": True})
