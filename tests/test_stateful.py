"""Losses with a key or a state (gdjax.loss_forms): oracles and bad inputs.

A keyed run is a hand-written optax loop drawing the same per-step keys
(bitwise in float32); the state goes through chunks, resume, checkpoints,
sweeps and the NaN guard exactly as the parameters do; a plain loss compiles
to the program it did before (no key derived, no state carried).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gdjax as gd
from gdjax import loop, pieces, runs, spec
from gdjax.errors import GdjaxTypeError, GdjaxValueError
from gdjax.loss_forms import keyed, stateful, step_key

KEY = jax.random.key(0)
(X, Y), (XV, YV) = gd.datasets.digits()
X, Y, XV, YV = X[:256], Y[:256], XV[:128], YV[:128]
DATA, VAL = (X, Y), (XV, YV)
KEEP = 0.8


def init(key, hidden=32):
    k1, k2 = jax.random.split(key)
    he = jax.nn.initializers.he_normal()
    return {
        "w1": he(k1, (64, hidden)),
        "b1": jnp.zeros((1, hidden)),
        "w2": he(k2, (hidden, 10)),
        "b2": jnp.zeros((1, 10)),
    }


P0 = init(jax.random.key(1))


def xent(logits, y):
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def dropout_loss(p, batch, key):
    """Inverted dropout on the hidden layer; key=None is inference."""
    x, y = batch
    h = jax.nn.relu(x @ p["w1"] + p["b1"])
    if key is not None:
        keep = jax.random.bernoulli(key, KEEP, h.shape)
        h = jnp.where(keep, h / KEEP, 0.0)
    return xent(h @ p["w2"] + p["b2"], y)


def bn_loss(p, s, batch, key=None, *, train=True):
    """Batch norm of the hidden layer (running mean/var in the state), dropout
    with a key; ``s["n"]`` counts the steps and ``s["k"]`` keeps the last key."""
    x, y = batch
    z = x @ p["w1"] + p["b1"]
    if train:
        mean, var = z.mean(0, keepdims=True), z.var(0, keepdims=True)
        new = {
            "mean": 0.9 * s["mean"] + 0.1 * mean,
            "var": 0.9 * s["var"] + 0.1 * var,
            "n": s["n"] + 1,
            "k": s["k"] if key is None else jax.random.key_data(key),
        }
    else:
        mean, var, new = s["mean"], s["var"], s
    h = jax.nn.relu((z - mean) / jnp.sqrt(var + 1e-5))
    if key is not None:
        h = jnp.where(jax.random.bernoulli(key, KEEP, h.shape), h / KEEP, 0.0)
    return xent(h @ p["w2"] + p["b2"], y), new


def bn_eval(p, s, batch):
    return bn_loss(p, s, batch, train=False)[0]


S0 = {
    "mean": jnp.zeros((1, 32)),
    "var": jnp.ones((1, 32)),
    "n": jnp.zeros((), jnp.int32),
    "k": jnp.zeros(2, jnp.uint32),
}
BN = stateful(bn_loss, S0, takes_key=True, eval_loss=bn_eval)
TX = optax.sgd(0.1, momentum=0.9)


def hand_loop(loss, params, state, regime, key, epochs):
    """The optax tutorial loop over fit's batches, step t using step_key(key, t)."""
    opt = TX.init(params)

    @jax.jit
    def step(p, o, s, batch, k):
        (value, s), g = jax.value_and_grad(loss, has_aux=True)(p, s, batch, k)
        u, o = TX.update(g, o, p)
        return optax.apply_updates(p, u), o, s, value

    t = 0
    losses = []
    for e in range(1, epochs + 1):
        idx, _ = pieces.batches(regime, X.shape[0], key, e)
        values = []
        for i in np.asarray(idx):
            params, opt, state, v = step(
                params, opt, state, (X[i], Y[i]), step_key(key, t)
            )
            values.append(v)
            t += 1
        losses.append(values)
    return params, opt, state, losses


def as_stateful(loss):
    return lambda p, s, b, k: (loss(p, b, k), s)


def assert_same(a, b):
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(a), jax.device_get(b))


# -------------------------------------------------------------------- oracles


@pytest.mark.parametrize("batch", [16, 64])  # the fast path, the checked path
def test_dropout_run_is_the_hand_loop_bitwise(batch):
    regime = gd.minibatch(batch)
    r = gd.fit(keyed(dropout_loss), P0, DATA, TX, key=KEY, epochs=3, regime=regime)
    p, o, _, _ = hand_loop(as_stateful(dropout_loss), P0, (), regime, KEY, 3)
    assert_same(r.params, p)
    assert_same(r.opt_state, o)
    assert int(r.steps) == 3 * 256 // batch
    # Dropout is on: the same run without keys goes elsewhere.
    plain = gd.fit(
        lambda q, b: dropout_loss(q, b, None),
        P0,
        DATA,
        TX,
        key=KEY,
        epochs=3,
        regime=regime,
    )
    assert not np.array_equal(plain.params["w1"], r.params["w1"])


def test_stateful_keyed_run_is_the_hand_loop_bitwise():
    regime = gd.minibatch(32)
    r = gd.fit(BN, P0, DATA, TX, key=KEY, epochs=2, regime=regime)
    p, o, s, losses = hand_loop(bn_loss, P0, S0, regime, KEY, 2)
    assert_same(r.params, p)
    assert_same(r.opt_state, o)
    assert_same(r.loss_state, s)
    assert int(r.loss_state["n"]) == int(r.steps) == 16
    np.testing.assert_allclose(r.history.loss, [np.mean(v) for v in losses], rtol=1e-6)


def test_step_keys_follow_the_global_step_not_the_data_order():
    spec_ = stateful(bn_loss, S0, takes_key=True)
    a = gd.fit(spec_, P0, DATA, TX, key=KEY, epochs=2, regime=gd.minibatch(64))
    b = gd.fit(
        spec_,
        P0,
        DATA,
        TX,
        key=KEY,
        epochs=2,
        regime=gd.minibatch(64, shuffle=False),
    )
    last = jax.random.key_data(step_key(KEY, int(a.steps) - 1))
    np.testing.assert_array_equal(a.loss_state["k"], last)
    np.testing.assert_array_equal(b.loss_state["k"], last)
    # The stream is neither the data-order key of any epoch nor the run key.
    for k in (KEY, jax.random.fold_in(KEY, 0), jax.random.fold_in(KEY, 1)):
        assert not np.array_equal(jax.random.key_data(k), last)


@pytest.mark.parametrize("form", ["keyed", "stateful"])
def test_chunked_equals_single_run(form):
    loss = keyed(dropout_loss) if form == "keyed" else BN
    kw = dict(key=KEY, epochs=4, regime=gd.minibatch(64), val_data=VAL)
    whole = gd.fit(loss, P0, DATA, TX, **kw)
    chunked = gd.fit(loss, P0, DATA, TX, chunk_epochs=1, **kw)
    assert_same(whole.state, chunked.state)


@pytest.mark.parametrize("form", ["keyed", "stateful"])
def test_resume_from_a_checkpoint_equals_the_uninterrupted_run(form, tmp_path):
    loss = keyed(dropout_loss) if form == "keyed" else BN
    kw = dict(key=KEY, regime=gd.minibatch(64), val_data=VAL)
    whole = gd.fit(loss, P0, DATA, TX, epochs=4, **kw)
    first = gd.fit(loss, P0, DATA, TX, epochs=2, **kw)
    gd.checkpoint.save(tmp_path, first)
    back = gd.checkpoint.restore(tmp_path, like=first)
    assert_same(back.loss_state, first.loss_state)
    resumed = gd.fit(loss, P0, DATA, TX, epochs=4, resume=back, **kw)
    assert_same(resumed.state, whole.state)


def test_sweep_member_is_the_single_fit():
    seeds = [0, 1, 2, 3]
    sw = gd.sweep(
        BN,
        init,
        DATA,
        gd.sgd(0.1, momentum=0.9),
        seeds=seeds,
        epochs=2,
        regime=gd.minibatch(64),
        val_data=VAL,
    )
    n_state = np.asarray(sw.result.loss_state["n"])
    assert n_state.shape == (4,)
    for s in seeds:
        init_key, run_key = gd.seed_keys(s)
        one = gd.fit(
            BN,
            init(init_key),
            DATA,
            gd.sgd(0.1, momentum=0.9),
            key=run_key,
            epochs=2,
            regime=gd.minibatch(64),
            val_data=VAL,
        )
        member = sw.member(seed=s)
        assert int(member.steps) == int(one.steps)
        np.testing.assert_array_equal(member.loss_state["k"], one.loss_state["k"])
        assert int(member.loss_state["n"]) == int(one.loss_state["n"])
        for a, b in [(member.params, one.params), (member.loss_state, one.loss_state)]:
            jax.tree.map(
                lambda u, v: np.testing.assert_allclose(u, v, rtol=2e-5, atol=2e-6),
                jax.device_get(a),
                jax.device_get(b),
            )
    # Each member draws its own keys.
    keys = np.asarray(sw.result.loss_state["k"])
    assert len({tuple(k) for k in keys.tolist()}) == 4


def test_state_from_params_per_member():
    """state(params): an EMA teacher starts at each member's own parameters."""

    def ema_loss(p, teacher, batch):
        value = dropout_loss(p, batch, None)
        new = jax.tree.map(lambda t, q: 0.5 * t + 0.5 * q, teacher, p)
        return value, new

    spec_ = stateful(ema_loss, lambda p: p)
    sw = gd.sweep(spec_, init, DATA, TX, seeds=[0, 1], epochs=1)
    for s in (0, 1):
        one = gd.fit(
            spec_, init(gd.seed_keys(s)[0]), DATA, TX, key=gd.seed_keys(s)[1], epochs=1
        )
        jax.tree.map(
            lambda u, v: np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-6),
            jax.device_get(sw.member(seed=s).loss_state),
            jax.device_get(one.loss_state),
        )
    # Full batch: step 1 sees p0 (teacher p0), step 2 sees p1: (p0 + p1) / 2.
    p0 = init(gd.seed_keys(0)[0])
    p1 = gd.fit(spec_, p0, DATA, TX, key=KEY, epochs=1).params
    two = gd.fit(spec_, p0, DATA, TX, key=KEY, epochs=2)
    jax.tree.map(
        lambda t, a, b: np.testing.assert_allclose(t, 0.5 * a + 0.5 * b, rtol=1e-6),
        jax.device_get(two.loss_state),
        jax.device_get(p0),
        jax.device_get(p1),
    )


@pytest.mark.parametrize("batch", [16, 64])
def test_nonfinite_step_rejects_the_state_with_the_params(batch):
    def loss(p, s, b):
        value = dropout_loss(p, b, None)
        bad = jnp.where(s["n"] >= 5, jnp.nan, 0.0)
        return value + bad, {"n": s["n"] + 1, "sum": s["sum"] + value}

    spec_ = stateful(loss, {"n": jnp.zeros((), jnp.int32), "sum": jnp.zeros(())})
    kw = dict(key=KEY, epochs=3, regime=gd.minibatch(batch))
    r = gd.fit(spec_, P0, DATA, TX, **kw)
    assert r.failed and int(r.steps) == 5
    capped = gd.fit(spec_, P0, DATA, TX, max_steps=5, **kw)
    assert int(r.loss_state["n"]) == 5
    assert_same(r.loss_state, capped.loss_state)
    assert_same(r.params, capped.params)


def test_evaluation_is_in_inference_mode():
    r = gd.fit(
        keyed(dropout_loss),
        P0,
        DATA,
        TX,
        key=KEY,
        epochs=2,
        regime=gd.minibatch(64),
        val_data=VAL,
    )
    np.testing.assert_allclose(
        r.history.val_loss[-1], dropout_loss(r.params, VAL, None), rtol=1e-6
    )
    # A stateful loss: eval_loss with the final running statistics; the metric
    # gets the state (here: the steps counted so far, epoch by epoch).
    r = gd.fit(
        BN,
        P0,
        DATA,
        TX,
        key=KEY,
        epochs=3,
        regime=gd.minibatch(64),
        val_data=VAL,
        metric=lambda p, s, b: s["n"].astype(jnp.float32),
        monitors={"var": lambda p, s, b: jnp.mean(s["var"])},
    )
    np.testing.assert_allclose(
        r.history.val_loss[-1], bn_eval(r.params, r.loss_state, VAL), rtol=1e-6
    )
    train_mode = bn_loss(r.params, r.loss_state, VAL)[0]
    assert abs(float(train_mode) - float(r.history.val_loss[-1])) > 1e-4
    np.testing.assert_array_equal(r.history.metric, [4.0, 8.0, 12.0])
    np.testing.assert_allclose(
        r.history.monitors["var"][-1], jnp.mean(r.loss_state["var"]), rtol=1e-6
    )


def test_new_initial_state_reuses_the_program(compiles):
    kw = dict(key=KEY, epochs=1, regime=gd.minibatch(64))
    gd.fit(BN, P0, DATA, TX, **kw)
    other = stateful(
        bn_loss, {**S0, "var": 2 * jnp.ones((1, 32))}, takes_key=True, eval_loss=bn_eval
    )
    with compiles() as c:
        r = gd.fit(other, P0, DATA, TX, **kw)
    assert c.count == 0
    assert float(r.loss_state["var"][0, 0]) != float(
        gd.fit(BN, P0, DATA, TX, **kw).loss_state["var"][0, 0]
    )


def _lowered(loss, regime=None):
    stopping, recording, driving = spec.from_options(None, None, None)
    run = runs.prepare(
        loss,
        P0,
        DATA,
        TX,
        key=KEY,
        epochs=2,
        regime=regime,
        stopping=stopping,
        recording=recording,
        driving=driving,
    )
    return loop.advance.lower(run.program, run.state, run.inputs, np.int32(2)).as_text()


def test_plain_loss_program_has_no_key_and_no_state():
    plain = _lowered(lambda p, b: dropout_loss(p, b, None))
    declared = _lowered(keyed(dropout_loss))
    assert "threefry" not in plain and "threefry" in declared
    r = gd.fit(lambda p, b: dropout_loss(p, b, None), P0, DATA, TX, key=KEY, epochs=1)
    assert r.loss_state == ()


# ----------------------------------------------------------------- bad inputs


def fit(loss, **kw):
    kw = {"key": KEY, "epochs": 2, "regime": gd.minibatch(64), **kw}
    return gd.fit(loss, P0, DATA, TX, **kw)


def _scalar_only(p, s, b):
    return dropout_loss(p, b, None)


def _grows(p, s, b):
    return dropout_loss(p, b, None), {**s, "extra": s["n"]}


def _recast(p, s, b):
    return dropout_loss(p, b, None), {"n": s["n"].astype(jnp.float32)}


def _reshaped(p, s, b):
    return dropout_loss(p, b, None), {"n": jnp.stack([s["n"], s["n"]])}


N0 = {"n": jnp.zeros((), jnp.int32)}


@pytest.mark.parametrize(
    ("loss", "kind", "match"),
    [
        (stateful(_scalar_only, N0), GdjaxTypeError, r"returns \(value, new_state\)"),
        (stateful(_grows, N0), GdjaxValueError, "structure of its state"),
        (stateful(_recast, N0), GdjaxValueError, r"new_state\['n'\] is float32"),
        (stateful(_reshaped, N0), GdjaxValueError, r"new_state\['n'\] is int32\[2\]"),
        (dropout_loss, GdjaxTypeError, r"gd.keyed\(loss\)"),
        (keyed(lambda p, b: dropout_loss(p, b, None)), GdjaxTypeError, "signature"),
        (
            stateful(lambda p, s, b: (dropout_loss(p, b, None), s), N0, takes_key=True),
            GdjaxTypeError,
            "signature",
        ),
    ],
)
def test_bad_declared_losses_are_refused_before_compiling(loss, kind, match, compiles):
    with compiles() as c, pytest.raises(kind, match=match):
        fit(loss)
    assert c.count == 0
    with pytest.raises(kind, match=match):
        gd.sweep(loss, init, DATA, TX, seeds=[0, 1], epochs=1, regime=gd.minibatch(64))


def test_keyed_loss_that_cannot_evaluate_without_a_key():
    def needs_key(p, b, key):
        x, y = b
        return xent((x * jax.random.uniform(key, x.shape)) @ p["w1"] @ p["w2"], y)

    with pytest.raises(GdjaxTypeError, match="key=None"):
        fit(keyed(needs_key), val_data=VAL)
    fit(keyed(needs_key, eval_loss=lambda p, b: dropout_loss(p, b, None)), val_data=VAL)


def test_other_bad_inputs():
    with pytest.raises(GdjaxTypeError, match="typed PRNG key"):
        stateful(_scalar_only, {"k": jax.random.key(0)})
    with pytest.raises(GdjaxTypeError, match="numeric array"):
        stateful(_scalar_only, {"s": "text"})
    with pytest.raises(GdjaxTypeError, match="callable"):
        keyed(3)
    with pytest.raises(GdjaxTypeError, match="takes_key"):
        stateful(_grows, N0, takes_key="yes")
    # metric must take the state with a stateful loss.
    with pytest.raises(TypeError, match=r"metric\(params, state, batch\)"):
        fit(BN, metric=lambda p, b: jnp.float32(0.0))
    # A padded last batch would change a stateful loss: refused, naming last_batch.
    with pytest.raises(GdjaxValueError, match="last_batch"):
        fit(BN, regime=gd.minibatch(100))
    # resume with another state layout.
    first = fit(BN, epochs=1)
    other = stateful(
        lambda p, s, b, k: bn_loss(p, {**s}, b, k),
        {**S0, "n": jnp.zeros(())},
        takes_key=True,
    )
    with pytest.raises(GdjaxValueError, match="resume's loss state"):
        fit(other, resume=first, epochs=2)


def test_fit_stream_draws_fit_keys_and_carries_the_state():
    """A stream of fit's batches (no shuffling) is fit: same keys, same state."""
    regime = gd.minibatch(64, shuffle=False)
    r = gd.fit(BN, P0, DATA, TX, key=KEY, epochs=2, regime=regime)
    batches = [(X[i : i + 64], Y[i : i + 64]) for i in range(0, 256, 64)] * 2
    s = gd.fit_stream(
        BN, P0, iter(batches), TX, steps_per_epoch=4, key=KEY, last_batch="drop"
    )
    assert int(s.steps) == 8
    assert_same(s.loss_state, r.loss_state)
    assert_same(s.params, r.params)


@pytest.mark.parametrize("loss", [keyed(dropout_loss), BN])
def test_callers_of_loss_params_batch_refuse_a_declared_loss(loss):
    """Never a silent plain call (a keyed loss would train without dropout)."""
    with pytest.raises(TypeError, match="declared as loss"):
        loss(P0, DATA)
    with pytest.raises(TypeError, match="declared as loss"):
        gd.fit_data_parallel(
            loss, P0, DATA, TX, key=KEY, epochs=1, regime=gd.minibatch(64)
        )


def test_fit_resumable_extends_a_stateful_run(tmp_path):
    kw = dict(key=KEY, regime=gd.minibatch(64), val_data=VAL)
    whole = gd.fit(BN, P0, DATA, TX, epochs=4, **kw)
    gd.checkpoint.fit_resumable(BN, P0, DATA, TX, directory=tmp_path, epochs=2, **kw)
    more = gd.checkpoint.fit_resumable(
        BN, P0, DATA, TX, directory=tmp_path, epochs=4, **kw
    )
    assert_same(more.state, whole.state)
    # Another declared loss is another run: refused, not resumed.
    other = stateful(bn_loss, S0, takes_key=False, eval_loss=bn_eval)
    with pytest.raises(gd.CheckpointError):
        gd.checkpoint.fit_resumable(
            other, P0, DATA, TX, directory=tmp_path, epochs=4, **kw
        )


def test_zero_gradient_warning_for_a_declared_loss():
    def dead(p, s, b, key):
        x, y = b
        out = jax.nn.relu(x @ p["w"]) @ p["v"]
        return jnp.mean((out - 1.0) ** 2), s + 1

    zeros = {"w": jnp.zeros((64, 4)), "v": jnp.zeros((4, 1))}
    spec_ = stateful(dead, jnp.zeros((), jnp.int32), takes_key=True)
    with pytest.warns(gd.errors.ZeroGradientWarning):
        gd.fit(spec_, zeros, (X, Y[:, None]), TX, key=KEY, epochs=1)
