"""Random configurations of ``fit`` and ``sweep``: valid ones run and match a
reference loop, invalid ones raise a ``GdjaxError`` before compiling.

The problem is fixed (16 examples, 3 features, float32) and the valid
configurations are drawn from a few programs (two transform structures, two
regimes, two epoch budgets), so compilations are shared between examples. The
reference is a plain Python loop of ``jax.grad`` and ``optax`` over the same
batches in order (``shuffle=False``), stopping after the same number of steps.
An invalid configuration is a valid one with one mistake in it; it must raise
a :class:`gdjax.GdjaxError` (a ``TypeError``/``ValueError`` too) with zero XLA
compilations from cold caches.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import ls_loss
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gdjax as gd
from gdjax import _validate as V

N, D = 16, 3
_rng = np.random.default_rng(1)
X = _rng.normal(size=(N, D)).astype(np.float32)
Y = (X @ np.array([1.0, -2.0, 0.5], np.float32)).astype(np.float32)
DATA = (X, Y)
P0 = {"w": np.zeros(D, np.float32)}
KEY = jax.random.key(0)

SETTINGS = settings(
    max_examples=6,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
INVALID_SETTINGS = settings(SETTINGS, max_examples=30)


# ------------------------------------------------------------------ valid configs


@st.composite
def fit_configs(draw):
    return dict(
        lr=draw(st.sampled_from([0.05, 0.1, 0.2])),
        momentum=draw(st.sampled_from([None, 0.5])),
        batch=draw(st.sampled_from([N, 4])),
        epochs=draw(st.sampled_from([2, 3])),
        max_steps=draw(st.one_of(st.none(), st.integers(1, 12))),
        chunk_epochs=draw(st.one_of(st.none(), st.just(1))),
        guard=draw(st.booleans()),
        override=draw(st.one_of(st.none(), st.sampled_from([0.03, 0.15]))),
    )


def _transform(cfg):
    return gd.sgd(cfg["lr"], momentum=cfg["momentum"])


def _regime(cfg):
    if cfg["batch"] == N:
        return gd.full_batch()
    return gd.minibatch(cfg["batch"], shuffle=False)


def _fit_kwargs(cfg):
    kw = dict(
        key=KEY,
        epochs=cfg["epochs"],
        regime=_regime(cfg),
        max_steps=cfg["max_steps"],
        chunk_epochs=cfg["chunk_epochs"],
        guard=cfg["guard"],
    )
    if cfg["override"] is not None:
        kw["hyperparams"] = {"learning_rate": cfg["override"]}
    return kw


_GRAD = jax.jit(jax.grad(ls_loss))


def reference(cfg, lr=None):
    """Plain optax steps over the batches in order: the expected params and steps."""
    lr = cfg["override"] if lr is None and cfg["override"] is not None else lr
    lr = cfg["lr"] if lr is None else lr
    tx = optax.sgd(lr, momentum=cfg["momentum"])
    params = jax.tree.map(jnp.asarray, P0)
    state = tx.init(params)
    b = cfg["batch"]
    per_epoch = N // b
    total = cfg["epochs"] * per_epoch
    if cfg["max_steps"] is not None:
        total = min(total, cfg["max_steps"])
    for t in range(total):
        i = (t % per_epoch) * b
        g = _GRAD(params, (X[i : i + b], Y[i : i + b]))
        updates, state = tx.update(g, state, params)
        params = optax.apply_updates(params, updates)
    return params, total


@SETTINGS
@given(fit_configs())
def test_valid_fit_configurations_match_the_reference_loop(cfg):
    r = gd.fit(ls_loss, P0, DATA, _transform(cfg), **_fit_kwargs(cfg))
    want, steps = reference(cfg)
    assert int(r.steps) == steps
    np.testing.assert_allclose(r.params["w"], want["w"], rtol=2e-5, atol=1e-6)
    assert not r.failed


@st.composite
def sweep_configs(draw):
    cfg = draw(fit_configs())
    cfg["seeds"] = draw(
        st.lists(st.integers(0, 3), min_size=1, max_size=2, unique=True)
    )
    cfg["lrs"] = draw(
        st.lists(
            st.sampled_from([0.02, 0.05, 0.1]), min_size=1, max_size=3, unique=True
        )
    )
    cfg["chunk_epochs"] = None
    cfg["override"] = None
    return cfg


@SETTINGS
@given(sweep_configs())
def test_valid_sweep_configurations_match_the_reference_loop(cfg):
    kw = _fit_kwargs(cfg)
    del kw["key"]
    res = gd.sweep(
        ls_loss,
        P0,
        DATA,
        _transform(cfg),
        seeds=cfg["seeds"],
        hyperparams={"learning_rate": cfg["lrs"]},
        **kw,
    )
    assert res.shape == (len(cfg["seeds"]), len(cfg["lrs"]))
    for seed in cfg["seeds"]:
        for lr in cfg["lrs"]:
            member = res.member(seed=seed, learning_rate=lr)
            want, steps = reference(cfg, lr=lr)
            assert int(member.steps) == steps
            np.testing.assert_allclose(
                member.params["w"], want["w"], rtol=2e-5, atol=1e-6
            )


# ------------------------------------------------------------------ invalid configs

_NAN = float("nan")
_NAN_PARAMS = {"w": np.array([0.0, _NAN, 0.0], np.float32)}
_FIT_MISTAKES = {
    "epochs zero": dict(epochs=0),
    "epochs float": dict(epochs=2.0),
    "epochs past int32": dict(epochs=2**31),
    "lr zero": dict(hyperparams={"learning_rate": 0.0}),
    "lr nan": dict(hyperparams={"learning_rate": _NAN}),
    "lr underflows": dict(hyperparams={"learning_rate": 1e-50}),
    "lr string": dict(hyperparams={"learning_rate": "0.1"}),
    "lr list": dict(hyperparams={"learning_rate": [0.1, 0.2]}),
    "unknown hyperparameter": dict(hyperparams={"lr": 0.1}),
    "patience alone": dict(patience=3),
    "guard string": dict(guard="off"),
    "history_size zero": dict(history_size=0),
    "chunk_epochs zero": dict(chunk_epochs=0),
    "target overflows": dict(target_loss=1e39),
    "tol negative": dict(tol=-1.0),
    "int key": dict(key=0),
    "callback not callable": dict(callback=3),
    "until vector": dict(until=lambda h, e: h.loss > 0),
    "unknown option": dict(learning_rate=0.1),
    "batch too big": dict(regime=gd.minibatch(N + 1)),
    "monitor_every alone": dict(monitor_every=2),
}
_FIT_BAD_ARGS = {
    "nan params": dict(params=_NAN_PARAMS),
    "empty params": dict(params={"w": np.zeros(0, np.float32)}),
    "short labels": dict(data=(X, Y[:-1])),
    "nan data": dict(data=(np.where(X > 1, np.nan, X).astype(np.float32), Y)),
    "loss through round": dict(
        loss=lambda p, b: jnp.mean((b[0] @ jnp.round(p["w"]) - b[1]) ** 2)
    ),
    "plain optax with hyperparams": dict(
        transform=optax.sgd(0.1), hyperparams={"learning_rate": 0.1}
    ),
}


def _cold():
    jax.clear_caches()
    V.clear_memo()


@INVALID_SETTINGS
@given(
    fit_configs(),
    st.sampled_from(sorted(_FIT_MISTAKES) + sorted(_FIT_BAD_ARGS)),
)
def test_invalid_fit_configurations_raise_before_compiling(compiles, cfg, mistake):
    kw = _fit_kwargs(cfg)
    args = dict(loss=ls_loss, params=P0, data=DATA, transform=_transform(cfg))
    bad = {**_FIT_MISTAKES, **_FIT_BAD_ARGS}[mistake]
    for name, value in bad.items():
        (args if name in args else kw)[name] = value
    _cold()
    with compiles() as c:
        with pytest.raises(gd.GdjaxError):
            gd.fit(args["loss"], args["params"], args["data"], args["transform"], **kw)
    assert c.count == 0, mistake


_SWEEP_MISTAKES = {
    "duplicate seeds": dict(seeds=[1, 1]),
    "no seeds": dict(seeds=[]),
    "negative seed": dict(seeds=[-1]),
    "duplicate lrs": dict(hyperparams={"learning_rate": [0.1, 0.1]}),
    "lrs equal in float32": dict(hyperparams={"learning_rate": [0.1, 0.1 + 1e-12]}),
    "lr zero": dict(hyperparams={"learning_rate": [0.1, 0.0]}),
    "lr underflows": dict(hyperparams={"learning_rate": [0.1, 1e-50]}),
    "lr scalar": dict(hyperparams={"learning_rate": 0.1}),
    "unknown name": dict(hyperparams={"lr": [0.1]}),
    "patience swept alone": dict(hyperparams={"patience": [1, 2]}),
    "max_steps zero": dict(hyperparams={"max_steps": [0, 2]}),
    "grid string": dict(grid="no"),
    "devices zero": dict(devices=0),
    "epochs zero": dict(epochs=0),
    "guard string": dict(guard="off"),
}


@INVALID_SETTINGS
@given(sweep_configs(), st.sampled_from(sorted(_SWEEP_MISTAKES)))
def test_invalid_sweep_configurations_raise_before_compiling(compiles, cfg, mistake):
    kw = _fit_kwargs(cfg)
    del kw["key"]
    kw = dict(seeds=cfg["seeds"], hyperparams={"learning_rate": cfg["lrs"]}, **kw)
    kw.update(_SWEEP_MISTAKES[mistake])
    tx = _transform(cfg)
    _cold()
    with compiles() as c:
        with pytest.raises(gd.GdjaxError):
            gd.sweep(ls_loss, P0, DATA, tx, **kw)
    assert c.count == 0, mistake
