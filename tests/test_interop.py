"""flax.nnx and equinox models with batch norm and dropout, trained by gd.fit/sweep.

The recipes of docs/stateful.md, checked against each library's own training
loop over the same batches: the running statistics and the parameters agree.
These tests need ``gdjax[flax]`` and ``gdjax[equinox]``; CI installs both (a
missing library fails the test rather than skipping it unless
``GDJAX_ALLOW_NO_INTEROP=1``).
"""

import os

import jax
import numpy as np
import optax
import pytest

import gdjax as gd
from gdjax import pieces
from gdjax.loss_forms import stateful, step_key

if os.environ.get("GDJAX_ALLOW_NO_INTEROP") == "1":
    nnx = pytest.importorskip("flax.nnx")
    eqx = pytest.importorskip("equinox")
else:
    import equinox as eqx
    from flax import nnx

(X, Y), (XV, YV) = gd.datasets.digits()
X, Y = X[:256], Y[:256]
DATA, VAL = (X, Y), (XV[:128], YV[:128])
REGIME = gd.minibatch(64)
KEY = jax.random.key(0)
EPOCHS = 2
TX = optax.sgd(0.1, momentum=0.9)


def xent(logits, y):
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def batches(epochs=EPOCHS):
    """fit's batches, in order."""
    for e in range(1, epochs + 1):
        idx, _ = pieces.batches(REGIME, X.shape[0], KEY, e)
        for i in np.asarray(idx):
            yield X[i], Y[i]


def close(a, b, rtol=2e-5, atol=2e-6):
    jax.tree.map(
        lambda u, v: np.testing.assert_allclose(u, v, rtol=rtol, atol=atol),
        jax.device_get(a),
        jax.device_get(b),
    )


# ---------------------------------------------------------------------- flax.nnx


class NnxMLP(nnx.Module):
    def __init__(self, rngs, rate=0.2):
        self.l1 = nnx.Linear(64, 32, rngs=rngs)
        self.bn = nnx.BatchNorm(32, momentum=0.9, rngs=rngs)
        self.drop = nnx.Dropout(rate)
        self.l2 = nnx.Linear(32, 10, rngs=rngs)

    def __call__(self, x, key=None):
        h = nnx.relu(self.bn(self.l1(x)))
        h = self.drop(h, rngs=key, deterministic=key is None)
        return self.l2(h)


def nnx_loss(rate=0.2):
    """The recipe: split once; merge (a copy) inside the loss; new stats out."""
    graphdef, params, stats = nnx.split(
        NnxMLP(nnx.Rngs(0), rate), nnx.Param, nnx.BatchStat
    )

    def loss(params, stats, batch, key):
        model = nnx.merge(graphdef, params, stats, copy=True)
        model.train()
        value = xent(model(batch[0], key if rate else None), batch[1])
        return value, nnx.state(model, nnx.BatchStat)

    def eval_loss(params, stats, batch):
        model = nnx.merge(graphdef, params, stats, copy=True)
        model.eval()
        return xent(model(batch[0]), batch[1])

    spec = stateful(loss, stats, takes_key=True, eval_loss=eval_loss)
    return spec, params, graphdef


def test_nnx_batchnorm_equals_nnx_own_loop():
    spec, params, _ = nnx_loss(rate=0.0)
    r = gd.fit(spec, params, DATA, TX, key=KEY, epochs=EPOCHS, regime=REGIME)

    model = NnxMLP(nnx.Rngs(0), rate=0.0)
    model.train()
    opt = nnx.Optimizer(model, TX, wrt=nnx.Param)

    @nnx.jit
    def step(model, opt, x, y):
        grads = nnx.grad(lambda m: xent(m(x), y))(model)
        opt.update(model, grads)

    for x, y in batches():
        step(model, opt, x, y)
    close(r.loss_state, nnx.state(model, nnx.BatchStat))
    close(r.params, nnx.state(model, nnx.Param))
    assert not np.allclose(r.loss_state["bn"]["mean"][...], 0.0)


def test_nnx_dropout_draws_gdjax_keys_and_sweeps():
    spec, params, graphdef = nnx_loss()
    r = gd.fit(
        spec, params, DATA, TX, key=KEY, epochs=EPOCHS, regime=REGIME, val_data=VAL
    )
    # The hand loop with the same keys and nnx's own value_and_grad.
    model = NnxMLP(nnx.Rngs(0))
    model.train()
    opt = nnx.Optimizer(model, TX, wrt=nnx.Param)

    @nnx.jit
    def step(model, opt, x, y, key):
        grads = nnx.grad(lambda m: xent(m(x, key), y))(model)
        opt.update(model, grads)

    for t, (x, y) in enumerate(batches()):
        step(model, opt, x, y, step_key(KEY, t))
    close(r.params, nnx.state(model, nnx.Param))
    close(r.loss_state, nnx.state(model, nnx.BatchStat))
    model.eval()
    np.testing.assert_allclose(
        r.history.val_loss[-1], xent(model(VAL[0]), VAL[1]), rtol=1e-5
    )

    sw = gd.sweep(spec, params, DATA, TX, seeds=[0, 1], epochs=EPOCHS, regime=REGIME)
    one = gd.fit(
        spec, params, DATA, TX, key=gd.seed_keys(1)[1], epochs=EPOCHS, regime=REGIME
    )
    close(sw.member(seed=1).loss_state, one.loss_state)
    close(sw.member(seed=1).params, one.params)


# ----------------------------------------------------------------------- equinox


class EqxMLP(eqx.Module):
    l1: eqx.nn.Linear
    bn: eqx.nn.BatchNorm
    drop: eqx.nn.Dropout
    l2: eqx.nn.Linear

    def __init__(self, key, rate=0.2):
        k1, k2 = jax.random.split(key)
        self.l1 = eqx.nn.Linear(64, 32, key=k1)
        self.bn = eqx.nn.BatchNorm(32, axis_name="batch", momentum=0.9, mode="ema")
        self.drop = eqx.nn.Dropout(rate)
        self.l2 = eqx.nn.Linear(32, 10, key=k2)

    def __call__(self, x, state, key=None):
        h, state = self.bn(self.l1(x), state)
        h = self.drop(jax.nn.relu(h), key=key)
        return self.l2(h), state


def eqx_forward(model, x, state, key):
    """vmap over the batch (axis "batch" for the statistics), a key per example."""
    keys = None if key is None else jax.random.split(key, x.shape[0])
    return jax.vmap(
        model,
        axis_name="batch",
        in_axes=(0, None, None if key is None else 0),
        out_axes=(0, None),
    )(x, state, keys)


def eqx_loss(rate=0.2):
    """The recipe: partition once; combine inside the loss; eqx.nn.State as state."""
    model, state = eqx.nn.make_with_state(EqxMLP)(jax.random.key(1), rate)
    params, static = eqx.partition(model, eqx.is_inexact_array)

    def loss(params, state, batch, key):
        model = eqx.combine(params, static)
        logits, state = eqx_forward(model, batch[0], state, key if rate else None)
        return xent(logits, batch[1]), state

    def eval_loss(params, state, batch):
        model = eqx.nn.inference_mode(eqx.combine(params, static))
        return xent(eqx_forward(model, batch[0], state, None)[0], batch[1])

    spec = stateful(loss, state, takes_key=True, eval_loss=eval_loss)
    return spec, params, static, model, state


@pytest.mark.parametrize("rate", [0.0, 0.2])
def test_equinox_batchnorm_and_dropout_equal_equinox_own_loop(rate):
    spec, params, static, model, state = eqx_loss(rate)
    r = gd.fit(
        spec, params, DATA, TX, key=KEY, epochs=EPOCHS, regime=REGIME, val_data=VAL
    )
    opt = TX.init(eqx.filter(model, eqx.is_inexact_array))

    @eqx.filter_jit
    def step(model, state, opt, x, y, key):
        def lf(m):
            logits, new = eqx_forward(m, x, state, key if rate else None)
            return xent(logits, y), new

        (_, state), grads = eqx.filter_value_and_grad(lf, has_aux=True)(model)
        updates, opt = TX.update(grads, opt, eqx.filter(model, eqx.is_inexact_array))
        return eqx.apply_updates(model, updates), state, opt

    for t, (x, y) in enumerate(batches()):
        model, state, opt = step(model, state, opt, x, y, step_key(KEY, t))
    close(r.loss_state, state)
    close(r.params, eqx.filter(model, eqx.is_inexact_array))
    inference = eqx.nn.inference_mode(model)
    val = xent(eqx_forward(inference, VAL[0], state, None)[0], VAL[1])
    np.testing.assert_allclose(r.history.val_loss[-1], val, rtol=1e-5)


def test_equinox_sweep_member_is_the_single_fit():
    spec, params, *_ = eqx_loss()
    # A partitioned module is callable: pass it to sweep as init(key) -> params.
    sw = gd.sweep(
        spec, lambda key: params, DATA, TX, seeds=[0, 1], epochs=EPOCHS, regime=REGIME
    )
    one = gd.fit(
        spec, params, DATA, TX, key=gd.seed_keys(0)[1], epochs=EPOCHS, regime=REGIME
    )
    close(sw.member(seed=0).loss_state, one.loss_state)
    close(sw.member(seed=0).params, one.params)
    # The same start, each member its own dropout keys.
    assert not np.allclose(
        jax.tree.leaves(sw.member(seed=0).params)[0],
        jax.tree.leaves(sw.member(seed=1).params)[0],
    )


@pytest.mark.slow
def test_flax_equinox_example_runs_each_real_branch():
    """examples/flax_equinox_params.py with equinox (the examples test runs the
    default, flax): the real branch, not the dict fallback."""
    import pathlib
    import subprocess
    import sys

    script = (
        pathlib.Path(__file__).parent.parent / "examples" / "flax_equinox_params.py"
    )
    env = dict(os.environ, GDJAX_EXAMPLE_QUICK="1")
    out = subprocess.run(
        [sys.executable, str(script), "--library", "equinox"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert "same pytree structure after training: True" in out.stdout
    assert "not installed" not in out.stdout
