"""gdjax.streaming: a stream of host batches equals the in-memory run over them."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import least_squares_problem, ls_loss

import gdjax as gd
from gdjax.streaming import fit_stream, sweep_stream
from gdjax.sweep import seed_keys

(X, Y), W_STAR, MU, L = least_squares_problem(n=48, d=4)
X, Y = np.asarray(X), np.asarray(Y)
B, K = 8, 6  # 6 batches an epoch; chunks of 6 batches
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


def test_stream_equals_in_memory_fit_and_short_chunk_does_not_recompile(compiles):
    # 3 epochs of 6 batches = 18 steps in chunks of 6: each chunk is an epoch.
    single = in_memory(18)
    streamed = fit_stream(ls_loss, P0, batches(3), TX, chunk_steps=K)
    assert_close(streamed, single)
    np.testing.assert_allclose(
        streamed.history.loss, single.history.loss[:3], rtol=1e-6
    )
    np.testing.assert_allclose(
        streamed.history.grad_norm, single.history.grad_norm[:3], rtol=1e-6
    )
    assert int(streamed.steps) == 18 and int(streamed.epoch) == 3
    assert streamed.stopped_by == gd.Status.MAX_EPOCHS  # the stream ran out
    # 15 steps: the last chunk holds 3 real batches and 3 masked copies, and
    # runs in the same compiled program.
    with compiles() as c:
        capped = fit_stream(ls_loss, P0, batches(3), TX, chunk_steps=K, max_steps=15)
        ragged = fit_stream(
            ls_loss,
            P0,
            (b for i, b in enumerate(batches(3)) if i < 15),
            TX,
            chunk_steps=K,
        )
    assert c.count == 0
    for r in (capped, ragged):
        assert int(r.steps) == 15 and int(r.epoch) == 3
        assert_close(r, in_memory(15))
    assert capped.stopped_by == gd.Status.MAX_STEPS
    assert ragged.stopped_by == gd.Status.MAX_EPOCHS
    # The masked steps do not count in the last chunk's mean loss.
    np.testing.assert_allclose(
        capped.history.loss[:2], single.history.loss[:2], rtol=1e-6
    )
    assert capped.history.loss[2] != pytest.approx(single.history.loss[2])


def test_criteria_are_checked_after_every_chunk():
    r = fit_stream(ls_loss, P0, batches(40), TX, chunk_steps=K, target_loss=0.05)
    single = in_memory(None, target_loss=0.05)
    assert r.stopped_by == single.stopped_by == gd.Status.TARGET_LOSS
    assert int(r.stop_epoch) == int(single.stop_epoch) > 0
    assert int(r.steps) == int(single.steps) < 40 * K
    assert_close(r, single)
    assert r.history.loss.shape == (int(r.epoch),)
    # A short last chunk is checked too.
    short = fit_stream(
        ls_loss,
        P0,
        (b for i, b in enumerate(batches(40)) if i < 6 * int(r.epoch) - 3),
        TX,
        chunk_steps=K,
        target_loss=float(r.history.loss[-1]) * 2,
    )
    assert short.stopped_by == gd.Status.TARGET_LOSS


def test_nonfinite_step_is_rejected_as_in_fit():
    big = {"learning_rate": 5.0 / MU}
    r = fit_stream(ls_loss, P0, batches(20), TX, chunk_steps=K, hyperparams=big)
    single = in_memory(None, hyperparams=big)
    assert r.failed and r.stopped_by == single.stopped_by
    assert int(r.steps) == int(single.steps) and int(r.stop_epoch) == int(
        single.stop_epoch
    )
    assert np.all(np.isfinite(r.params["w"]))
    with pytest.raises(gd.NonFiniteError):
        fit_stream(
            ls_loss,
            P0,
            batches(20),
            TX,
            chunk_steps=K,
            hyperparams=big,
            raise_on_nonfinite=True,
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
    r = fit_stream(ls_loss, P0, Loader(), TX, chunk_steps=K)
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
        chunk_steps=K,
    )
    assert res.shape == (2, 2)
    for i, seed in enumerate([0, 1]):
        for j, lr in enumerate([0.02, 0.05]):
            single = fit_stream(
                ls_loss,
                init(seed_keys(seed)[0]),
                batches(2),
                TX,
                chunk_steps=K,
                hyperparams={"learning_rate": lr},
            )
            m = res.member(i, j)
            assert_close(m, single)
            np.testing.assert_allclose(m.history.loss, single.history.loss, rtol=1e-5)
            assert int(m.steps) == int(single.steps) == 12


@pytest.mark.parametrize(
    "stream,match",
    [
        ([], "yielded no batch"),
        ([(X[:8], Y[:8]), (X[:4], Y[:4])], r"batch 1 .*shapes.*drop_last"),
        (
            [(X[:8], Y[:8]), (X[:8] * np.nan, Y[:8])],
            "batch 1 of the stream contains NaN",
        ),
    ],
    ids=["empty", "ragged", "nan"],
)
def test_bad_streams_raise_before_compiling(compiles, stream, match):
    with compiles() as c:
        with pytest.raises(ValueError, match=match):
            fit_stream(ls_loss, P0, stream, TX, chunk_steps=2)
    assert c.count == 0
