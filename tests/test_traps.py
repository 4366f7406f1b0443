"""The traps of gdjax 0.1 (issue "an API without traps"): each test failed on 0.1.

Oracles: a hand-written Python loop over the same batches, uninterrupted runs
(resume must equal them bitwise), the float64 history of a reference run, and a
compilation counter (rebuilt losses and new numbers must not recompile).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import least_squares_problem, ls_loss, zeros_params

import gdjax as gd

KEY = jax.random.key(0)


def _odd_problem(n=37, d=3, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    y = (x @ rng.normal(size=(d,)) + 0.1 * rng.normal(size=(n,))).astype(np.float32)
    return jnp.asarray(x), jnp.asarray(y)


def sum_loss(params, batch):
    """A sum-reduced loss: its step grows with the batch."""
    x, y = batch
    r = x @ params["w"] - y
    return 0.5 * jnp.sum(r * r)


def centred_loss(params, batch):
    """A loss that couples the examples of a batch (batch-mean centring)."""
    x, y = batch
    xc = x - jnp.mean(x, axis=0, keepdims=True)
    r = xc @ params["w"] - (y - jnp.mean(y))
    return 0.5 * jnp.mean(r * r)


def _reference(loss, params, data, lr, regime, epochs):
    """Plain SGD over the batches gd.batching gives, one jitted step at a time."""
    n = jax.tree.leaves(data)[0].shape[0]
    plan = gd.batching.plan(regime, n)
    step = jax.jit(
        lambda p, b: jax.tree.map(lambda a, g: a - lr * g, p, jax.grad(loss)(p, b))
    )
    for e in range(epochs):
        idx, _ = gd.batching.epoch_batches(regime, plan, KEY, e)
        for i in np.asarray(idx):
            params = step(params, gd.batching.gather(data, jnp.asarray(i)))
    return params


# --------------------------------------------------------- 1. padding and user losses


@pytest.mark.parametrize("loss", [sum_loss, centred_loss], ids=["sum", "coupled"])
def test_padding_never_rewrites_a_user_loss(loss):
    data = _odd_problem()
    with pytest.raises(ValueError, match=r"last_batch='pad' needs a loss that takes"):
        gd.fit(
            loss,
            zeros_params(3),
            data,
            optax.sgd(0.01),
            key=KEY,
            epochs=2,
            regime=gd.minibatch(8),
        )
    regime = gd.minibatch(8, last_batch="drop")
    r = gd.fit(
        loss, zeros_params(3), data, optax.sgd(0.01), key=KEY, epochs=3, regime=regime
    )
    want = _reference(loss, zeros_params(3), data, 0.01, regime, 3)
    np.testing.assert_allclose(r.params["w"], want["w"], rtol=2e-6, atol=1e-7)
    assert int(r.steps) == 3 * (37 // 8)


def test_adding_one_example_does_not_change_what_a_sum_loss_means():
    """n = 40 and n = 41 (plus one dropped example) take the same kind of step."""
    x, y = _odd_problem(n=41)
    regime = gd.minibatch(8, shuffle=False, last_batch="drop")
    a = gd.fit(
        sum_loss,
        zeros_params(3),
        (x[:40], y[:40]),
        optax.sgd(0.01),
        key=KEY,
        epochs=2,
        regime=regime,
    )
    b = gd.fit(
        sum_loss,
        zeros_params(3),
        (x, y),
        optax.sgd(0.01),
        key=KEY,
        epochs=2,
        regime=regime,
    )
    np.testing.assert_array_equal(a.params["w"], b.params["w"])


def test_declared_weights_mask_the_padding_exactly():
    """make_loss declares per-example weights: padding is masked, every example once."""
    data = _odd_problem()
    loss = gd.make_loss(lambda p, x: x @ p["w"], gd.losses.squared_error)
    r = gd.fit(
        loss,
        zeros_params(3),
        data,
        optax.sgd(0.05),
        key=KEY,
        epochs=1,
        regime=gd.minibatch(8, shuffle=False),
    )
    assert int(r.steps) == 5
    x, y = data
    p = zeros_params(3)
    for lo in range(0, 37, 8):
        b = (x[lo : lo + 8], y[lo : lo + 8])
        p = jax.tree.map(lambda a, g: a - 0.05 * g, p, jax.grad(loss)(p, b))
    np.testing.assert_allclose(r.params["w"], p["w"], rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------------- 2. resume


def test_resume_applies_the_new_learning_rate():
    (x, y), *_ = least_squares_problem(n=32)
    first = gd.fit(ls_loss, zeros_params(4), (x, y), gd.sgd(0.1), key=KEY, epochs=5)
    resumed = gd.fit(
        ls_loss, zeros_params(4), (x, y), gd.sgd(0.01), key=KEY, epochs=10, resume=first
    )
    fresh = gd.fit(ls_loss, first.params, (x, y), gd.sgd(0.01), key=KEY, epochs=5)
    np.testing.assert_array_equal(resumed.params["w"], fresh.params["w"])
    assert float(gd.get_hyperparams(resumed.opt_state)["learning_rate"]) == (
        pytest.approx(0.01)
    )
    assert int(resumed.epoch) == 10
    np.testing.assert_array_equal(resumed.history.loss[:5], first.history.loss)


def test_resume_refuses_a_transform_of_another_structure():
    (x, y), *_ = least_squares_problem(n=32)
    first = gd.fit(ls_loss, zeros_params(4), (x, y), gd.sgd(0.1), key=KEY, epochs=2)
    with pytest.raises(ValueError, match="resume.opt_state"):
        gd.fit(
            ls_loss,
            zeros_params(4),
            (x, y),
            gd.sgd(0.1, momentum=0.9),
            key=KEY,
            epochs=4,
            resume=first,
        )


def test_resume_extends_a_finished_run_bitwise():
    (x, y), *_ = least_squares_problem(n=40)
    kw = dict(key=KEY, regime=gd.minibatch(8))
    tx = gd.sgd(0.05, momentum=0.9)
    short = gd.fit(ls_loss, zeros_params(4), (x, y), tx, epochs=20, **kw)
    assert short.stopped_by == gd.Status.MAX_EPOCHS
    longer = gd.fit(ls_loss, zeros_params(4), (x, y), tx, epochs=30, resume=short, **kw)
    once = gd.fit(ls_loss, zeros_params(4), (x, y), tx, epochs=30, **kw)
    np.testing.assert_array_equal(longer.params["w"], once.params["w"])
    np.testing.assert_array_equal(longer.history.loss, once.history.loss)
    assert int(longer.epoch) == int(once.epoch) == 30
    with pytest.raises(ValueError, match="already run 30 epochs"):
        gd.fit(ls_loss, zeros_params(4), (x, y), tx, epochs=30, resume=longer, **kw)


def test_resume_after_a_callback_stop_goes_on():
    (x, y), *_ = least_squares_problem(n=40)
    kw = dict(key=KEY, regime=gd.minibatch(8))
    tx = gd.sgd(0.05)
    stopped = gd.fit(
        ls_loss,
        zeros_params(4),
        (x, y),
        tx,
        epochs=30,
        chunk_epochs=5,
        callback=lambda r: int(r.epoch) >= 10,
        **kw,
    )
    assert stopped.stopped_by == gd.Status.CALLBACK and int(stopped.epoch) == 10
    resumed = gd.fit(
        ls_loss, zeros_params(4), (x, y), tx, epochs=30, resume=stopped, **kw
    )
    once = gd.fit(ls_loss, zeros_params(4), (x, y), tx, epochs=30, **kw)
    assert int(resumed.epoch) == 30
    np.testing.assert_array_equal(resumed.params["w"], once.params["w"])


# -------------------------------------------------------------------- 3. callbacks


@pytest.mark.parametrize("epochs,chunk", [(10, 3), (9, 3), (7, 10)])
def test_callback_sees_every_chunk_the_last_included(epochs, chunk):
    (x, y), *_ = least_squares_problem(n=16)
    seen: list[int] = []

    def saver(result):
        seen.append(int(result.epoch))
        return False

    r = gd.fit(
        ls_loss,
        zeros_params(4),
        (x, y),
        gd.sgd(0.05),
        key=KEY,
        epochs=epochs,
        chunk_epochs=chunk,
        callback=saver,
    )
    assert seen[-1] == int(r.epoch) == epochs
    assert seen == sorted(set(seen))


def test_callback_sees_the_chunk_in_which_a_criterion_stopped():
    (x, y), *_ = least_squares_problem(n=16, noise=0.0)
    seen = []
    r = gd.fit(
        ls_loss,
        zeros_params(4),
        (x, y),
        gd.sgd(0.5),
        key=KEY,
        epochs=500,
        chunk_epochs=7,
        target_loss=1e-3,
        callback=lambda res: seen.append((int(res.epoch), res.stopped_by)),
    )
    assert r.stopped_by == gd.Status.TARGET_LOSS
    assert seen[-1] == (int(r.epoch), gd.Status.TARGET_LOSS)


# --------------------------------------------------------- 4. criteria in the run dtype


def test_float64_target_loss_stops_at_the_exact_epoch(x64):
    (x, y), *_ = least_squares_problem(n=32, dtype=np.float64)
    p0 = zeros_params(4, jnp.float64)
    ref = gd.fit(ls_loss, p0, (x, y), optax.sgd(0.05), key=KEY, epochs=60)
    losses = np.asarray(ref.history.loss)
    assert losses.dtype == np.float64
    # An epoch whose loss rounds *down* in float32: a float32 threshold stops late.
    k = next(
        i for i in range(5, 60) if np.float32(losses[i]) < losses[i] < losses[i - 1]
    )
    r = gd.fit(
        ls_loss,
        p0,
        (x, y),
        optax.sgd(0.05),
        key=KEY,
        epochs=60,
        target_loss=float(losses[k]),
    )
    assert r.stopped_by == gd.Status.TARGET_LOSS
    assert int(r.epoch) == k + 1


# ------------------------------------------------------------ 5. no needless compiles


def _digits_like(n=48, d=5, k=3, seed=2):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.normal(size=(n, d)).astype(np.float32))
    y = jnp.asarray((np.arange(n) % k).astype(np.int32))
    return (x, y), gd.init.dense(jax.random.key(1), d, k)


def test_rebuilt_loss_and_metric_reuse_the_compiled_run(compiles):
    data, params = _digits_like()

    def run(l2):
        return gd.fit(
            gd.make_loss(gd.models.linear, gd.losses.softmax_cross_entropy, l2=l2),
            params,
            data,
            gd.sgd(0.1),
            key=KEY,
            epochs=3,
            regime=gd.minibatch(16),
            metric=gd.accuracy(gd.models.linear),
            tol=1e-4,
        )

    first = run(1e-3)
    with compiles() as c:
        again = run(1e-3)
    assert c.count == 0
    np.testing.assert_array_equal(first.params["w"], again.params["w"])
    with compiles() as c:
        other = run(1e-2)
    assert c.count == 0
    assert not np.array_equal(first.params["w"], other.params["w"])


def test_new_l2_is_the_same_program_with_another_number():
    data, params = _digits_like()
    losses = [
        gd.make_loss(gd.models.linear, gd.losses.softmax_cross_entropy, l2=l2)
        for l2 in (1e-3, 1e-2)
    ]
    assert losses[0] != losses[1]
    assert losses[0] == gd.make_loss(
        gd.models.linear, gd.losses.softmax_cross_entropy, l2=1e-3
    )
    r = gd.fit(losses[1], params, data, gd.sgd(0.1), key=KEY, epochs=2)
    expected = params
    for _ in range(2):
        g = jax.grad(losses[1])(expected, data)
        expected = jax.tree.map(lambda a, b: a - 0.1 * b, expected, g)
    np.testing.assert_allclose(r.params["w"], expected["w"], rtol=1e-5, atol=1e-7)


def test_switching_tol_on_does_not_recompile(compiles):
    (x, y), *_ = least_squares_problem(n=16)
    kw = dict(key=KEY, epochs=4)
    gd.fit(ls_loss, zeros_params(4), (x, y), gd.sgd(0.1), **kw)
    with compiles() as c:
        gd.fit(ls_loss, zeros_params(4), (x, y), gd.sgd(0.1), tol=1e-3, **kw)
        gd.fit(
            ls_loss,
            zeros_params(4),
            (x, y),
            gd.sgd(0.1),
            target_loss=1e-3,
            grad_tol=1e-6,
            **kw,
        )
    assert c.count == 0


# ----------------------------------------------------------------------- 6. results


def test_fit_result_is_a_table():
    (x, y), *_ = least_squares_problem(n=16)
    r = gd.fit(
        ls_loss,
        zeros_params(4),
        (x, y),
        gd.sgd(0.1),
        key=KEY,
        epochs=50,
        target_loss=0.05,
        val_data=(x, y),
    )
    n = int(r.epoch)
    assert n < 50 and r.history.loss.shape == (n,)
    assert np.all(np.isfinite(r.history.loss))
    cols = r.to_dict()
    assert cols["epoch"].tolist() == list(range(1, n + 1))
    assert set(cols) == {"epoch", "loss", "grad_norm", "val_loss"}
    assert f"epoch {n}" in r.reason and "step -1" not in r.reason
    pd = pytest.importorskip("pandas")
    frame = r.to_pandas()
    assert isinstance(frame, pd.DataFrame) and len(frame) == n
    np.testing.assert_array_equal(frame["loss"].to_numpy(), np.asarray(r.history.loss))
    np.testing.assert_array_equal(
        pd.DataFrame(r.to_dict()).to_numpy(), frame.to_numpy()
    )


def test_a_nan_at_the_first_step_is_described_in_words():
    (x, y), *_ = least_squares_problem(n=16)

    def loss(p, b):  # NaN at the initial params: sqrt of a negative number
        return ls_loss(p, b) + jnp.sqrt(p["w"][0] - 1.0)

    r = gd.fit(loss, zeros_params(4), (x, y), optax.sgd(0.1), key=KEY, epochs=3)
    assert r.failed and int(r.steps) == 0
    assert "at step 1 (epoch 1)" in r.reason and "the initial ones" in r.reason
    np.testing.assert_array_equal(r.params["w"], np.zeros(4, np.float32))


def test_internals_are_out_of_the_way():
    (x, y), *_ = least_squares_problem(n=16)
    r = gd.fit(ls_loss, zeros_params(4), (x, y), gd.sgd(0.1), key=KEY, epochs=2)
    for name in ("best_loss", "bad_epochs", "bad_leaf", "count", "index", "stop_epoch"):
        assert not hasattr(r, name), name
    assert hasattr(r.state, "best_loss")
    # A FitResult is a pytree: device_get / tree.map see the whole run state.
    leaves = jax.tree.leaves(r)
    assert len(leaves) == len(jax.tree.leaves(r.state))


def test_a_callback_may_keep_what_it_is_given_when_the_run_donates():
    (x, y), *_ = least_squares_problem(n=16)
    kept = []
    gd.fit(
        ls_loss,
        zeros_params(4),
        (x, y),
        gd.sgd(0.1),
        key=KEY,
        epochs=6,
        chunk_epochs=2,
        donate=True,
        callback=lambda r: kept.append(r.params),
    )
    sw_kept = []
    gd.sweep(
        ls_loss,
        zeros_params(4),
        (x, y),
        gd.sgd(0.1),
        seeds=[0, 1],
        epochs=6,
        chunk_epochs=2,
        callback=lambda r: sw_kept.append(r.params),
    )
    for params in kept + sw_kept:  # none deleted by a later donation
        assert np.all(np.isfinite(np.asarray(params["w"])))
    assert len(kept) == len(sw_kept) == 3


def test_resume_of_a_scheduled_transform_continues_the_schedule_bitwise():
    (x, y), *_ = least_squares_problem(n=32)
    tx = gd.sgd(gd.inverse_time_decay(0.5, 1e-2), momentum=0.5)
    kw = dict(key=KEY, regime=gd.minibatch(8))
    half = gd.fit(ls_loss, zeros_params(4), (x, y), tx, epochs=5, **kw)
    resumed = gd.fit(ls_loss, zeros_params(4), (x, y), tx, epochs=10, resume=half, **kw)
    once = gd.fit(ls_loss, zeros_params(4), (x, y), tx, epochs=10, **kw)
    np.testing.assert_array_equal(resumed.params["w"], once.params["w"])
