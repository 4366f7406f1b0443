"""Scale: bounded history on long runs, donation on large params."""

import resource

import jax
import jax.numpy as jnp
import numpy as np
from helpers import least_squares_problem, ls_loss, zeros_params

import gdjax as gd
from gdjax import runs


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_million_step_run_keeps_bounded_history_and_memory():
    data, *_ = least_squares_problem(n=8, d=2)
    kw = dict(key=jax.random.key(0), history_size=1000)
    short = gd.fit(ls_loss, zeros_params(2), data, gd.sgd(0.01), epochs=10**5, **kw)
    before = _rss_mb()
    long = gd.fit(ls_loss, zeros_params(2), data, gd.sgd(0.01), epochs=10**6, **kw)
    grown = _rss_mb() - before
    assert int(long.steps) == 10**6 and long.stopped_by == gd.Status.MAX_EPOCHS
    assert long.history.loss.shape == short.history.loss.shape == (1000,)
    assert np.all(np.isfinite(long.history.loss))
    # Row r holds epoch (r + 1) * stride (counting from 1): the last epoch of
    # each window.
    stride = 10**6 // 1000
    np.testing.assert_array_equal(
        long.history.epoch, stride * np.arange(1, 1001, dtype=np.int32)
    )
    again = gd.fit(
        ls_loss,
        zeros_params(2),
        data,
        gd.sgd(0.01),
        epochs=3 * stride,
        key=jax.random.key(0),
        history_size=10**6,
    )
    np.testing.assert_array_equal(
        long.history.loss[:3], again.history.loss[stride - 1 :: stride]
    )
    assert grown < 50, f"peak RSS grew by {grown:.0f} MB over a 10x longer run"


def test_donation_keeps_peak_memory_near_the_state():
    """10^7 params with momentum: compiled peak = args + outputs - aliased + temps."""
    size = 10**7

    def loss(p, b):
        return 0.5 * jnp.sum((p["w"] - jnp.mean(b[0])) ** 2)

    data = (jnp.ones((4, 1)),)
    stop, rec, drive = gd.spec.from_options()
    run = runs.prepare(
        loss,
        {"w": jnp.zeros(size)},
        data,
        gd.sgd(0.1, momentum=0.9),
        key=jax.random.key(0),
        epochs=3,
        stopping=stop,
        recording=rec,
        driving=drive,
    )
    args = (run.program, run.state, run.inputs, np.int32(3))
    peaks = {}
    # The programs fit compiles (runs.single_program's, through runs.advance*).
    for name, fn in (("plain", runs.advance), ("donated", runs.advance_donated)):
        m = fn.lower(*args).compile().memory_analysis()
        peaks[name] = (
            m.argument_size_in_bytes
            + m.output_size_in_bytes
            - m.alias_size_in_bytes
            + m.temp_size_in_bytes
        )
    param_bytes = 4 * size
    state_bytes = 2 * param_bytes  # params + momentum buffer: the baseline
    assert peaks["donated"] < peaks["plain"] - 1.5 * param_bytes
    assert peaks["donated"] - state_bytes <= 4 * param_bytes
    # And it trains: one donated run, finite and moving.
    params = {"w": jnp.full(size, 2.0)}
    r = gd.fit(
        loss,
        params,
        data,
        gd.sgd(0.1, momentum=0.9),
        key=jax.random.key(0),
        epochs=3,
        donate=True,
    )
    assert float(r.params["w"][0]) < 2.0 and r.stopped_by == gd.Status.MAX_EPOCHS
