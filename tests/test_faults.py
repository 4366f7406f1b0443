"""Faults survived: NaN/inf in the loss, the gradient or the new parameters.

Each fault is triggered by the parameters crossing a threshold that travels in the
data (so one compiled program serves every step k), at a step chosen by a host
simulation of the heavy-ball trajectory. The guarded run must stop at that step
with the right status, epoch and first offending leaf, and hand back the params
and optimizer state of ``fit(..., max_steps=k)`` bit for bit.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import least_squares_problem

import gdjax as gd
from gdjax import loop, runs

KEY = jax.random.key(0)
LR, MOMENTUM = 0.1, 0.9
STEPS_PER_EPOCH = 10  # n = 40, batch 4
FMAX = float(np.finfo(np.float32).max)


def _trajectory(grad: float, steps: int) -> np.ndarray:
    """x_0..x_steps of a leaf with a constant gradient under heavy ball (float64)."""
    x, v, out = 0.0, 0.0, [0.0]
    for _ in range(steps):
        v = grad + MOMENTUM * v
        x = x - LR * v
        out.append(x)
    return np.asarray(out)


def _threshold(k: int) -> float:
    """A threshold that ``s`` (gradient -1 from 0) first exceeds at step k."""
    if k == 0:
        return -1.0
    s = _trajectory(-1.0, k)
    return float((s[k - 1] + s[k]) / 2)


def _ls(w, x, y):
    r = x @ w - y
    return 0.5 * jnp.mean(r * r)


def _data(**extra):
    (x, y), *_ = least_squares_problem(n=40)
    n = x.shape[0]
    return {
        "x": x,
        "y": y,
        **{k: jnp.full((n,), v, jnp.float32) for k, v in extra.items()},
    }


def _params():
    # The faulty leaf sits deep in the tree: params['extra'][1].
    return {
        "w": jnp.zeros(4),
        "s": jnp.zeros(()),
        "extra": [jnp.zeros(2), jnp.zeros(())],
    }


def loss_fault(p, b):
    """Finite until s > t, then the loss is b['fill'] (NaN or inf); grads finite."""
    bad = jnp.where(p["s"] > b["t"][0], b["fill"][0], 0.0)
    return (
        _ls(p["w"], b["x"], b["y"])
        - p["s"]
        + jnp.sum(p["extra"][0]) * 0.0
        + bad
        + (0.0 * p["extra"][1])
    )


@jax.custom_jvp
def _spike(q, trigger):
    del trigger
    return 0.0 * q


@_spike.defjvp
def _spike_jvp(primals, tangents):
    q, trigger = primals
    dq, _ = tangents
    slope = jnp.where(trigger > 0, jnp.inf, 0.0)
    return _spike(q, trigger), slope * dq


def grad_fault(p, b):
    """Finite loss; the gradient of params['extra'][1] is inf once s > t."""
    return (
        _ls(p["w"], b["x"], b["y"])
        - p["s"]
        + jnp.sum(p["extra"][0]) * 0.0
        + _spike(p["extra"][1], p["s"] - b["t"][0])
    )


def grad_sqrt(p, b):
    """sqrt at 0: a finite loss (0) with an infinite gradient, from step 0."""
    return (
        _ls(p["w"], b["x"], b["y"])
        + 0.0 * p["s"]
        + jnp.sum(p["extra"][0]) * 0.0
        + jnp.sqrt(p["extra"][1])
    )


def params_fault(p, b):
    """Loss and gradient finite; the update of params['extra'][1] overflows."""
    big = p["extra"][1]
    push = (big - jax.lax.stop_gradient(big)) * b["g"][0]  # value 0, gradient g
    return (
        _ls(p["w"], b["x"], b["y"])
        + 0.0 * p["s"]
        + jnp.sum(p["extra"][0]) * 0.0
        + (push)
    )


def _overflow_start(k: int, g: float) -> float:
    """big_0 such that big_0 + (cumulative update) first overflows at step k."""
    added = _trajectory(g, k + 1)  # added[j] = total update after j steps
    return FMAX - float((added[k] + added[k + 1]) / 2)


FAULTS = {
    # name: (loss, k, data extras, params change, status, leaf in reason)
    "nan-loss-step-0": (
        loss_fault,
        0,
        dict(t=_threshold(0), fill=np.nan),
        None,
        gd.Status.NONFINITE_LOSS,
        None,
    ),
    "nan-loss-step-13": (
        loss_fault,
        13,
        dict(t=_threshold(13), fill=np.nan),
        None,
        gd.Status.NONFINITE_LOSS,
        None,
    ),
    "inf-loss-step-27": (
        loss_fault,
        27,
        dict(t=_threshold(27), fill=np.inf),
        None,
        gd.Status.NONFINITE_LOSS,
        None,
    ),
    "inf-grad-sqrt-step-0": (
        grad_sqrt,
        0,
        {},
        None,
        gd.Status.NONFINITE_GRAD,
        "params['extra'][1]",
    ),
    "inf-grad-jvp-step-13": (
        grad_fault,
        13,
        dict(t=_threshold(13)),
        None,
        gd.Status.NONFINITE_GRAD,
        "params['extra'][1]",
    ),
    "params-overflow-step-17": (
        params_fault,
        17,
        dict(g=-1e37),
        _overflow_start(17, -1e37),
        gd.Status.NONFINITE_PARAMS,
        "params['extra'][1]",
    ),
}


def _setup(name):
    loss, k, extras, big, status, leaf = FAULTS[name]
    params = _params()
    if big is not None:
        params["extra"][1] = jnp.asarray(big, jnp.float32)
    data = _data(**extras)
    kw = dict(key=KEY, epochs=5, regime=gd.minibatch(4), check_finite=False)
    return loss, k, params, data, kw, status, leaf


@pytest.mark.parametrize("name", list(FAULTS))
def test_fault_stops_at_step_k_with_the_state_of_max_steps_k(name):
    loss, k, params, data, kw, status, leaf = _setup(name)
    tx = gd.sgd(LR, momentum=MOMENTUM)
    r = gd.fit(loss, params, data, tx, **kw)
    assert r.stopped_by == status and r.failed
    assert int(r.steps) == k
    assert int(r.epoch) == k // STEPS_PER_EPOCH + 1  # epochs count from 1
    assert f"at step {k + 1} (epoch {k // STEPS_PER_EPOCH + 1})" in r.reason
    if leaf is None:
        assert int(r.state.bad_leaf) == -1 and "first bad leaf" not in r.reason
    else:
        assert f"first bad leaf: {leaf}" in r.reason
    # The state is that of the run stopped after step k - 1, bit for bit.
    if k == 0:
        want = (params, tx.init(params))
    else:
        ref = gd.fit(loss, params, data, tx, max_steps=k, **kw)
        assert ref.stopped_by == gd.Status.MAX_STEPS and int(ref.steps) == k
        want = (ref.params, ref.opt_state)
    got = (r.params, r.opt_state)
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes()
    assert all(np.isfinite(np.asarray(a)).all() for a in jax.tree.leaves(got))
    # History: a row per epoch run, the stopped one included; finite rows for
    # the epochs that completed.
    np.testing.assert_array_equal(r.history.epoch, np.arange(1, int(r.epoch) + 1))
    assert np.isfinite(np.asarray(r.history.loss)[: k // STEPS_PER_EPOCH]).all()
    # raise_on_nonfinite raises with that same result.
    with pytest.raises(gd.NonFiniteError) as info:
        gd.fit(loss, params, data, tx, raise_on_nonfinite=True, **kw)
    assert str(info.value) == r.reason
    for a, b in zip(
        jax.tree.leaves(info.value.result), jax.tree.leaves(r), strict=True
    ):
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes()


def test_without_the_guard_the_fault_runs_on():
    loss, k, params, data, kw, _, _ = _setup("nan-loss-step-13")
    r = gd.fit(loss, params, data, gd.sgd(LR, momentum=MOMENTUM), guard=False, **kw)
    assert not r.failed and int(r.steps) == 5 * STEPS_PER_EPOCH
    assert np.isnan(np.asarray(r.history.loss)[1:]).all()


def test_under_vmap_only_the_bad_member_stops():
    loss, k, params, bad_data, kw, status, _ = _setup("nan-loss-step-13")
    good_data = _data(t=1e9, fill=np.nan)
    tx = gd.sgd(LR, momentum=MOMENTUM)
    options = gd.spec.from_options(check_finite=False)
    stopping, recording, driving = options
    preps = [
        runs.prepare(
            loss,
            params,
            d,
            tx,
            key=kw["key"],
            epochs=kw["epochs"],
            regime=kw["regime"],
            stopping=stopping,
            recording=recording,
            driving=driving,
        )
        for d in (good_data, bad_data)
    ]
    assert preps[0].program == preps[1].program
    stack = lambda *trees: jax.tree.map(lambda *a: jnp.stack(a), *trees)  # noqa: E731
    run = jax.jit(
        jax.vmap(lambda s, i: loop.run_epochs(preps[0].program, s, i, kw["epochs"]))
    )
    out = run(stack(*(p.state for p in preps)), stack(*(p.inputs for p in preps)))
    member = [gd.FitResult(jax.tree.map(lambda a, i=i: a[i], out)) for i in range(2)]
    assert member[0].stopped_by == gd.Status.MAX_EPOCHS
    assert int(member[0].steps) == 5 * STEPS_PER_EPOCH
    assert member[1].stopped_by == status and int(member[1].steps) == k
    assert int(member[1].epoch) == 2
    single_good = gd.fit(loss, params, good_data, tx, **kw)
    single_bad = gd.fit(loss, params, bad_data, tx, max_steps=k, **kw)
    for got, want in ((member[0], single_good), (member[1], single_bad)):
        for a, b in zip(
            jax.tree.leaves((got.params, got.opt_state)),
            jax.tree.leaves((want.params, want.opt_state)),
            strict=True,
        ):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_sweep_member_that_diverges_stops_alone():
    (x, y), *_ = least_squares_problem(n=40)
    loss = gd.make_loss(gd.models.linear, gd.losses.squared_error)
    params = {"w": jnp.zeros((4, 1)), "b": jnp.zeros(1)}
    res = gd.sweep(
        loss,
        params,
        (x, y),
        gd.sgd(0.1),
        seeds=[0],
        hyperparams={"learning_rate": [0.05, 50.0]},
        epochs=30,
        regime=gd.minibatch(8),
    )
    status = np.asarray(res.result.status)[0]
    assert status[0] == gd.Status.MAX_EPOCHS
    assert gd.Status(int(status[1])).failed
    assert np.isfinite(np.asarray(jax.tree.leaves(res.result.params)[0])).all()
