"""gdjax.streaming: a stream of host batches equals the in-memory run over them."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import least_squares_problem, ls_loss

import gdjax as gd
from gdjax import fit_stream, seed_keys, sweep_stream

(X, Y), W_STAR, MU, L = least_squares_problem(n=48, d=4)
X, Y = np.asarray(X), np.asarray(Y)
B, K = 8, 6  # 6 batches an epoch; stream epochs of 6 batches
# ls_loss takes no per-example weights, so it cannot mask a short last batch:
# the streams below have none, and say so with last_batch="drop".
S = dict(steps_per_epoch=K, last_batch="drop")
P0 = {"w": jnp.zeros(4)}
TX = gd.sgd(0.05, momentum=0.9)


def batches(epochs, x=X, y=Y):
    """The batches of a no-shuffle mini-batch run, as a host generator."""
    for _ in range(epochs):
        for i in range(0, len(x), B):
            yield x[i : i + B], y[i : i + B]


def in_memory(steps, **kw):
    """The oracle: fit over the same batches (one compiled program for all)."""
    return gd.fit(
        ls_loss,
        P0,
        (X, Y),
        TX,
        key=jax.random.key(0),
        epochs=40,
        regime=gd.minibatch(B, shuffle=False),
        max_steps=steps,
        **kw,
    )


def assert_close(a, b):
    np.testing.assert_allclose(a.params["w"], b.params["w"], rtol=1e-5, atol=1e-6)


def test_stream_equals_in_memory_fit_and_short_epoch_does_not_recompile(compiles):
    # 3 epochs of 6 batches = 18 steps in stream epochs of 6.
    single = in_memory(18)
    streamed = fit_stream(ls_loss, P0, batches(3), TX, **S)
    assert_close(streamed, single)
    np.testing.assert_allclose(
        streamed.history.loss, single.history.loss[:3], rtol=1e-6
    )
    np.testing.assert_allclose(
        streamed.history.grad_norm, single.history.grad_norm[:3], rtol=1e-6
    )
    assert int(streamed.steps) == 18 and int(streamed.epoch) == 3
    assert streamed.stopped_by == gd.Status.STREAM_END  # the stream ran out
    # 15 steps: the last epoch holds 3 real batches and 3 masked copies, and
    # runs in the same compiled program.
    with compiles() as c:
        capped = fit_stream(ls_loss, P0, batches(3), TX, max_steps=15, **S)
        ragged = fit_stream(
            ls_loss,
            P0,
            (b for i, b in enumerate(batches(3)) if i < 15),
            TX,
            **S,
        )
    assert c.count == 0
    for r in (capped, ragged):
        assert int(r.steps) == 15 and int(r.epoch) == 3
        assert_close(r, in_memory(15))
    assert capped.stopped_by == gd.Status.MAX_STEPS
    assert ragged.stopped_by == gd.Status.STREAM_END
    # The masked steps do not count in the last epoch's mean loss.
    np.testing.assert_allclose(
        capped.history.loss[:2], single.history.loss[:2], rtol=1e-6
    )
    assert capped.history.loss[2] != pytest.approx(single.history.loss[2])


def test_criteria_are_checked_after_every_chunk():
    r = fit_stream(ls_loss, P0, batches(40), TX, target_loss=0.05, **S)
    single = in_memory(None, target_loss=0.05)
    assert r.stopped_by == single.stopped_by == gd.Status.TARGET_LOSS
    assert int(r.epoch) == int(single.epoch) > 1
    assert int(r.steps) == int(single.steps) < 40 * K
    assert_close(r, single)
    assert r.history.loss.shape == (int(r.epoch),)
    # A short last epoch is checked too.
    short = fit_stream(
        ls_loss,
        P0,
        (b for i, b in enumerate(batches(40)) if i < 6 * int(r.epoch) - 3),
        TX,
        **S,
        target_loss=float(r.history.loss[-1]) * 2,
    )
    assert short.stopped_by == gd.Status.TARGET_LOSS


def test_nonfinite_step_is_rejected_as_in_fit():
    big = {"learning_rate": 5.0 / MU}
    r = fit_stream(ls_loss, P0, batches(20), TX, hyperparams=big, **S)
    single = in_memory(None, hyperparams=big)
    assert r.failed and r.stopped_by == single.stopped_by
    assert int(r.steps) == int(single.steps) and int(r.epoch) == int(single.epoch)
    assert r.reason == single.reason
    assert np.all(np.isfinite(r.params["w"]))
    with pytest.raises(gd.NonFiniteError):
        fit_stream(
            ls_loss,
            P0,
            batches(20),
            TX,
            hyperparams=big,
            raise_on_nonfinite=True,
            **S,
        )


class Tensor:
    """Stands in for a CPU torch tensor: converts with ``np.asarray``."""

    def __init__(self, a):
        self.a = a

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self.a, dtype=dtype)


class Loader:
    """A DataLoader-like iterable (re-iterable, yields tensor-likes)."""

    def __iter__(self):
        for x, y in batches(1):
            yield Tensor(x), Tensor(y)


def test_any_iterable_of_batches():
    r = fit_stream(ls_loss, P0, Loader(), TX, **S)
    assert_close(r, in_memory(6))


def test_sweep_over_seeds_on_one_stream():
    def init(key):
        return {"w": jax.random.normal(key, (4,))}

    res = sweep_stream(
        ls_loss,
        init,
        batches(2),
        TX,
        seeds=[0, 1],
        hyperparams={"learning_rate": [0.02, 0.05]},
        **S,
    )
    assert res.shape == (2, 2)
    for i, seed in enumerate([0, 1]):
        for j, lr in enumerate([0.02, 0.05]):
            single = fit_stream(
                ls_loss,
                init(seed_keys(seed)[0]),
                batches(2),
                TX,
                hyperparams={"learning_rate": lr},
                **S,
            )
            m = res.member(i, j)
            assert_close(m, single)
            np.testing.assert_allclose(m.history.loss, single.history.loss, rtol=1e-5)
            assert int(m.steps) == int(single.steps) == 12


# ------------------------------------------------------------- short last batch

WLOSS = gd.make_loss(lambda p, x: x @ p["w"], gd.losses.squared_error)
N_SHORT = 44  # 5 batches of 8 and a last batch of 4


def one_pass(n=N_SHORT, **kw):
    """The oracle: one in-memory epoch over the first n examples, in order."""
    return gd.fit(
        WLOSS,
        P0,
        (X[:n], Y[:n]),
        TX,
        key=jax.random.key(0),
        epochs=1,
        regime=gd.minibatch(B, shuffle=False, **kw),
    )


@pytest.mark.parametrize("k", [6, 4])
def test_short_last_batch_is_masked_and_equals_in_memory_fit(k):
    # k=6: one stream epoch holds all six batches, the last of 4 rows; k=4: the
    # second stream epoch holds 2 real batches (the last short) and 2 copies.
    single = one_pass()
    assert int(single.steps) == 6
    r = fit_stream(
        WLOSS, P0, batches(1, X[:N_SHORT], Y[:N_SHORT]), TX, steps_per_epoch=k
    )
    assert r.stopped_by == gd.Status.STREAM_END
    assert int(r.steps) == 6 and int(r.epoch) == -(-6 // k)
    assert_close(r, single)
    # The short batch's loss is the mean over its 4 real rows: every epoch
    # mean is a mean over its real steps, and the step losses agree.
    steps_per_row = [min(k, 6 - i) for i in range(0, 6, k)]
    np.testing.assert_allclose(
        np.dot(r.history.loss, steps_per_row) / 6, single.history.loss[0], rtol=1e-6
    )
    # Masking matters: the short batch is not the same as a full batch that
    # holds 4 other real rows after it (what unmasked padding would train on).
    padded = fit_stream(
        WLOSS,
        P0,
        batches(1, np.concatenate([X[:44], X[:4]]), np.concatenate([Y[:44], Y[:4]])),
        TX,
        steps_per_epoch=k,
    )
    assert not np.allclose(padded.params["w"], r.params["w"], rtol=1e-5, atol=1e-6)


def test_short_last_batch_dropped():
    single = one_pass(last_batch="drop")
    assert int(single.steps) == 5
    for loss in (WLOSS, ls_loss):  # "drop" needs no weights
        r = fit_stream(
            loss,
            P0,
            batches(1, X[:N_SHORT], Y[:N_SHORT]),
            TX,
            steps_per_epoch=3,
            last_batch="drop",
        )
        assert int(r.steps) == 5 and int(r.epoch) == 2
        assert r.stopped_by == gd.Status.STREAM_END
        np.testing.assert_allclose(
            r.params["w"], one_pass(40).params["w"], rtol=1e-5, atol=1e-6
        )
        assert_close(r, single)


def test_sweep_stream_masks_a_short_last_batch_per_member():
    def init(key):
        return {"w": jax.random.normal(key, (4,))}

    def stream():
        return batches(1, X[:N_SHORT], Y[:N_SHORT])

    kw = dict(steps_per_epoch=4, val_data=(X[:8], Y[:8]))
    res = sweep_stream(
        WLOSS,
        init,
        stream(),
        TX,
        seeds=[0, 1],
        hyperparams={"learning_rate": [0.02, 0.05]},
        **kw,
    )
    assert set(res.reasons().ravel()) == {"STREAM_END"}
    for i, seed in enumerate([0, 1]):
        for j, lr in enumerate([0.02, 0.05]):
            single = fit_stream(
                WLOSS,
                init(seed_keys(seed)[0]),
                stream(),
                TX,
                hyperparams={"learning_rate": lr},
                **kw,
            )
            m = res.member(i, j)
            assert int(m.steps) == int(single.steps) == 6
            assert int(m.epoch) == int(single.epoch) == 2
            assert_close(m, single)
            np.testing.assert_allclose(
                m.history.val_loss, single.history.val_loss, rtol=1e-5
            )


def test_stream_end_status_and_reason():
    r = fit_stream(ls_loss, P0, batches(3), TX, **S)
    assert r.status == gd.Status.STREAM_END == 8
    assert not r.failed
    assert r.reason == "the stream ended (epoch 3, after 18 steps)"
    assert r.reason.startswith(gd.Status.STREAM_END.message)
    # A stream cut inside an epoch ends the same way, at its own step.
    cut = fit_stream(
        ls_loss, P0, (b for i, b in enumerate(batches(3)) if i < 14), TX, **S
    )
    assert cut.reason == "the stream ended (epoch 3, after 14 steps)"


def test_callback_sees_every_epoch_including_the_last():
    seen = []

    def callback(r):
        seen.append(
            (
                int(r.epoch),
                int(r.steps),
                np.array(r.history.loss),
                np.array(r.history.epoch),
            )
        )
        return False

    stream = (b for i, b in enumerate(batches(3)) if i < 15)
    r = fit_stream(ls_loss, P0, stream, TX, callback=callback, **S)
    assert [e for e, *_ in seen] == [1, 2, 3]
    assert [s for _, s, *_ in seen] == [6, 12, 15]
    for e, _, loss, rows in seen:
        np.testing.assert_array_equal(rows, np.arange(1, e + 1))
        np.testing.assert_array_equal(loss, r.history.loss[:e])
    # A truthy return stops the run after that epoch.
    stopped = fit_stream(
        ls_loss, P0, batches(3), TX, callback=lambda r: int(r.epoch) == 2, **S
    )
    assert stopped.stopped_by == gd.Status.CALLBACK
    assert int(stopped.epoch) == 2 and int(stopped.steps) == 12


@pytest.mark.parametrize(
    "stream,match",
    [
        ([], "yielded no batch"),
        ([(X[:4], Y[:4]), (X[:8], Y[:8])], r"batch 1 .*shapes.*fewer rows"),
        (
            [(X[:8], Y[:8]), (X[:4], Y[:4]), (X[:8], Y[:8])],
            "batch 1 of the stream is short but batch 2 follows",
        ),
        (
            [(X[:8], Y[:8]), (X[:8] * np.nan, Y[:8])],
            "batch 1 of the stream contains NaN",
        ),
    ],
    ids=["empty", "longer", "short_inside", "nan"],
)
def test_bad_streams_raise_before_compiling(compiles, stream, match):
    with compiles() as c:
        with pytest.raises(ValueError, match=match):
            fit_stream(ls_loss, P0, stream, TX, steps_per_epoch=2, last_batch="drop")
    assert c.count == 0


def test_pad_needs_a_loss_with_weights(compiles):
    with compiles() as c:
        with pytest.raises(ValueError, match="last_batch='pad'"):
            fit_stream(ls_loss, P0, batches(1), TX, steps_per_epoch=K)
    assert c.count == 0
