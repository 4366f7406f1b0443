"""gd.sweep: every member equals its single fit; one program; clear errors;
the SweepResult tables (sel, summary, best, long format)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import least_squares_problem, ls_loss

import gdjax as gd
from gdjax import SweepResult, seed_keys, sweep

DATA, W_STAR, MU, L = least_squares_problem(n=32, d=4)


def ls_init(key):
    return {"w": 0.5 * jax.random.normal(key, (4,))}


def assert_member_equals_fit(member, single, atol=2e-6):
    """Float outputs to float32 tolerance, discrete outputs exactly."""
    np.testing.assert_allclose(
        member.params["w"], single.params["w"], rtol=1e-5, atol=atol
    )
    np.testing.assert_allclose(
        member.history.loss, single.history.loss, rtol=1e-5, atol=atol
    )
    for field in ("status", "steps", "epoch"):
        assert int(getattr(member, field)) == int(getattr(single, field)), field


def fit_member(seed, transform, *, init=ls_init, hyperparams=None, **kw):
    init_key, run_key = seed_keys(seed)
    return gd.fit(
        ls_loss,
        init(init_key),
        DATA,
        transform,
        key=run_key,
        hyperparams=hyperparams,
        **kw,
    )


def test_seed_keys_is_a_split_of_the_seed_key():
    init_key, run_key = seed_keys(7)
    want = jax.random.split(jax.random.key(7))
    np.testing.assert_array_equal(
        jax.random.key_data(init_key), jax.random.key_data(want[0])
    )
    np.testing.assert_array_equal(
        jax.random.key_data(run_key), jax.random.key_data(want[1])
    )


def test_grid_members_equal_single_fits_with_early_stopping():
    kw = dict(epochs=40, regime=gd.minibatch(8), tol=0.1, patience=1)
    tx = gd.sgd(0.1)
    res = sweep(
        ls_loss,
        ls_init,
        DATA,
        tx,
        seeds=[0, 1, 2],
        hyperparams={"learning_rate": [0.02, 0.1]},
        **kw,
    )
    assert isinstance(res, SweepResult)
    assert res.axes == ("seed", "learning_rate") and res.shape == (3, 2)
    assert res.coords == {"seed": (0, 1, 2), "learning_rate": (0.02, 0.1)}
    for i, seed in enumerate([0, 1, 2]):
        for j, lr in enumerate([0.02, 0.1]):
            single = fit_member(seed, tx, hyperparams={"learning_rate": lr}, **kw)
            assert_member_equals_fit(res.member(i, j), single)
    # The property under test: members stopped on their own, at different epochs,
    # and each reports its own stop; the batch ran until the last one stopped.
    assert set(res.reasons().ravel()) == {"NO_IMPROVEMENT"}
    stops = res.result.epoch  # the 1-based epoch in which each member stopped
    assert len(np.unique(stops)) >= 3
    assert res.executed_epochs == int(stops.max()) < 40
    # Each member's history holds exactly the epochs 1..epoch it ran.
    rows = np.asarray(res.result.state.history.epoch)
    for idx in np.ndindex(*res.shape):
        e = int(stops[idx])
        np.testing.assert_array_equal(rows[idx][:e], np.arange(1, e + 1))
        assert not rows[idx][e:].any()
    # By coordinates, and in chunks (the same program, resumed) to the same result.
    chex_equal = res.member(seed=2, learning_rate=0.1)
    np.testing.assert_array_equal(chex_equal.params["w"], res.member(2, 1).params["w"])
    chunked = sweep(
        ls_loss,
        ls_init,
        DATA,
        tx,
        seeds=[0, 1, 2],
        hyperparams={"learning_rate": [0.02, 0.1]},
        chunk_epochs=3,
        **kw,
    )
    for a, b in zip(jax.tree.leaves(chunked), jax.tree.leaves(res), strict=True):
        np.testing.assert_array_equal(a, b)


def test_member_starts_from_its_own_init_even_one_that_cannot_be_vmapped():
    """Each seed's init runs eagerly on its own key (no init program: a fresh
    init function compiles nothing new), so an init that could not run under
    vmap (here a callback without a vmap rule) works too; member s is the fit
    from init(seed_keys(s)[0])."""

    def callback_init(key):
        half = jax.pure_callback(
            lambda k: np.float32(0.5),
            jax.ShapeDtypeStruct((), jnp.float32),
            jax.random.key_data(key),
        )
        return {"w": half * jax.random.normal(key, (4,))}

    with pytest.raises(NotImplementedError, match="vmap"):
        jax.vmap(callback_init)(jax.vmap(jax.random.key)(jnp.arange(2)))
    seeds = [0, 1, 2]
    tx = gd.sgd(0.05)
    for init in (ls_init, callback_init):
        res = sweep(ls_loss, init, DATA, tx, seeds=seeds, epochs=2)
        for i, seed in enumerate(seeds):
            single = fit_member(seed, tx, init=init, epochs=2)
            assert_member_equals_fit(res.member(i), single)


def test_zip_members_equal_single_fits_with_swept_criteria():
    tx = gd.sgd(0.05, momentum=0.5)
    lrs, moms, targets = [0.02, 0.05, 0.1], [0.0, 0.5, 0.9], [0.3, 0.02, 0.01]
    kw = dict(epochs=60, regime=gd.full_batch())
    res = sweep(
        ls_loss,
        ls_init,
        DATA,
        tx,
        seeds=[3, 4],
        grid=False,
        hyperparams={"learning_rate": lrs, "momentum": moms, "target_loss": targets},
        **kw,
    )
    assert res.axes == ("seed", "setting") and res.shape == (2, 3)
    assert res.coords["setting"][1] == {
        "learning_rate": 0.05,
        "momentum": 0.5,
        "target_loss": 0.02,
    }
    for i, seed in enumerate([3, 4]):
        for j in range(3):
            single = fit_member(
                seed,
                tx,
                hyperparams={"learning_rate": lrs[j], "momentum": moms[j]},
                target_loss=targets[j],
                **kw,
            )
            assert_member_equals_fit(res.member(i, j), single)
    assert set(res.reasons().ravel()) == {"TARGET_LOSS"}
    assert len(np.unique(res.result.epoch)) >= 3
    np.testing.assert_array_equal(
        res.member(seed=4, momentum=0.9).params["w"], res.member(1, 2).params["w"]
    )
    # sel by a swept value drops the zipped "setting" axis.
    by_value = res.sel(momentum=0.9)
    assert by_value.axes == ("seed",) and by_value.coords == {"seed": (3, 4)}
    np.testing.assert_array_equal(
        by_value.member(seed=4).params["w"], res.member(1, 2).params["w"]
    )
    # The long table names every swept value of a zipped setting in its own column.
    table = res.to_dict()
    assert list(table)[:4] == ["seed", "learning_rate", "momentum", "target_loss"]
    rows = (table["seed"] == 4) & (table["momentum"] == 0.9)
    np.testing.assert_array_equal(table["loss"][rows], res.member(1, 2).history.loss)
    assert np.all(table["learning_rate"][rows] == pytest.approx(0.1))


def test_shared_init_and_values_of_any_type_compile_once(compiles):
    tx = gd.sgd(0.1)
    params = {"w": jnp.zeros(4)}
    kw = dict(seeds=[0, 1], epochs=3, regime=gd.minibatch(16))
    first = sweep(
        ls_loss, params, DATA, tx, hyperparams={"learning_rate": [0.1, 0.2]}, **kw
    )
    for values in (
        [np.float32(0.3), np.float64(0.1)],
        np.array([0.05, 0.4]),
        jnp.array([0.1, 0.2], jnp.float32),
    ):
        with compiles() as c:
            res = sweep(
                ls_loss,
                params,
                DATA,
                gd.sgd(0.5),
                hyperparams={"learning_rate": values},
                **kw,
            )
        assert c.count == 0, values
    np.testing.assert_array_equal(res.result.params["w"], first.result.params["w"])
    # Shared init: every seed starts from params, only the data order differs.
    single = gd.fit(
        ls_loss,
        params,
        DATA,
        gd.sgd(0.2),
        key=seed_keys(1)[1],
        epochs=3,
        regime=gd.minibatch(16),
    )
    assert_member_equals_fit(res.member(1, 1), single)


# The digits problem, built once per module: a 64-8-10 MLP.
mlp_init = functools.partial(gd.init.mlp, widths=[64, 8, 10])


def test_digits_mlp_64_seeds_by_4_learning_rates_is_one_run_program(compiles):
    (x, y), _ = gd.datasets.digits()
    loss = gd.make_loss(gd.models.mlp, gd.losses.softmax_cross_entropy)
    runs = gd.loop.advance_members._cache_size()
    kw = dict(seeds=range(64), epochs=1, regime=gd.minibatch(512))
    with compiles() as c:
        res = sweep(
            loss,
            mlp_init,
            (x, y),
            gd.sgd(0.1),
            hyperparams={"learning_rate": [0.01, 0.03, 0.1, 0.3]},
            **kw,
        )
    # One program runs all 256 members. init runs eagerly, seed by seed, so the
    # rest are tiny eager ops cached by shape (the MLP's truncated normals per
    # layer shape, their scaling, transform.init's zeros, the keys): 21 in a
    # fresh process, fewer when earlier tests warmed them.
    assert gd.loop.advance_members._cache_size() == runs + 1
    assert c.count <= 1 + 21
    assert res.shape == (64, 4)
    assert np.all(np.isfinite(res.final_loss))
    assert np.all(res.result.steps == 3)
    # Members differ by seed (init and order) and by learning rate.
    w = res.result.params[0]["w"]
    assert not np.allclose(w[0, 0], w[1, 0]) and not np.allclose(w[0, 0], w[0, 1])
    with compiles() as c:
        again = sweep(
            loss,
            functools.partial(gd.init.mlp, widths=[64, 8, 10]),
            (x, y),
            gd.sgd(0.5),
            hyperparams={"learning_rate": np.array([0.2, 0.4, 0.6, 0.8])},
            **kw,
        )
    assert c.count == 0
    assert again.shape == (64, 4)


def test_fresh_init_lambda_compiles_nothing_the_second_time(compiles):
    # FACTS.md: clear the caches first, or a zero could be an earlier test's
    # warm cache; the first call then shows that the counter counts.
    jax.clear_caches()
    kw = dict(
        seeds=[0, 1],
        hyperparams={"learning_rate": [0.05, 0.1]},
        epochs=3,
        regime=gd.minibatch(8),
    )
    runs = gd.loop.advance_members._cache_size()
    with compiles() as first:
        a = sweep(ls_loss, lambda k: ls_init(k), DATA, gd.sgd(0.1), **kw)
    assert first.count >= 1 and gd.loop.advance_members._cache_size() == runs + 1
    with compiles() as second:
        b = sweep(ls_loss, lambda k: ls_init(k), DATA, gd.sgd(0.1), **kw)
    assert second.count == 0
    assert gd.loop.advance_members._cache_size() == runs + 1
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(u, v)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_first_sweep_from_cold_caches_builds_two_programs(dtype, compiles):
    """A first sweep (an MLP init lambda, momentum, a hand-written sum loss,
    odd n) compiles two programs: the members' start (keys and init, one
    program for every seed) and the run. Op by op it was 18 (W4). Each
    member still equals the single fit from ``init(seed_keys(s)[0])``."""
    from gdjax import _validate as V

    with jax.enable_x64(dtype == np.float64):
        rng = np.random.default_rng(4)
        x = rng.normal(size=(37, 3)).astype(dtype)
        y = np.sin(x[:, 0]).astype(dtype)

        def loss(p, batch):
            xb, yb = batch
            return 0.5 * jnp.sum((gd.models.mlp(p, xb)[:, 0] - yb) ** 2)

        def init(k):
            return gd.init.mlp(k, [3, 7, 1], dtype=dtype)

        tx = gd.sgd(0.01, momentum=0.9)
        kw = dict(epochs=2, regime=gd.minibatch(4, last_batch="drop"))
        jax.clear_caches()
        V.clear_memo()
        with compiles() as c:
            r = sweep(loss, init, (x, y), tx, seeds=[0, 5, 9],
                      hyperparams={"learning_rate": [0.01, 0.02]}, grid=True, **kw)
            jax.block_until_ready(r.result.params)
        assert c.count == 2
        init_key, run_key = seed_keys(9)
        single = gd.fit(loss, init(init_key), (x, y), gd.sgd(0.02, momentum=0.9),
                        key=run_key, **kw)
    member = r.member(seed=9, learning_rate=0.02)
    assert r.result.params[0]["w"].dtype == dtype
    for u, v in zip(jax.tree.leaves(member.params), jax.tree.leaves(single.params),
                    strict=True):
        np.testing.assert_array_equal(u, v)


def test_start_programs_take_the_constants_of_each_init(compiles):
    """Two inits that differ only in an array they close over trace to the
    same start program: the array is an input of it, passed at each call, so
    each sweep starts from its own array and the second compiles nothing.
    The start is jax.jit(init)(init_key) bit for bit (eager, this init's own
    add after a draw may round an ulp apart: XLA fuses it)."""
    bases = [np.arange(4.0, dtype=np.float32), -np.arange(4.0, dtype=np.float32)]

    def make_init(base):
        return lambda k: {"w": base + 0.1 * jax.random.normal(k, (4,))}

    kw = dict(seeds=[0, 1], epochs=1, regime=gd.minibatch(8))
    counts = []
    for base in bases:
        with compiles() as c:
            r = sweep(ls_loss, make_init(base), DATA, gd.sgd(1e-30), **kw)
        counts.append(c.count)
        for s in (0, 1):  # a step of 1e-30 rounds away: the end is the start
            np.testing.assert_array_equal(
                r.member(seed=s).params["w"],
                jax.jit(make_init(base))(seed_keys(s)[0])["w"],
            )
    assert counts[1] == 0


def test_start_programs_tell_apart_the_functions_of_callbacks():
    """Two inits that load their weights through a host callback of the same
    name trace to the same text (JAX prints a function as its address): the
    start program is remembered by the function too, so the second sweep
    starts from its own weights, not the first one's."""

    def make_init(value):
        def load():
            return np.full(4, value, np.float32)

        def init(k):
            del k
            shape = jax.ShapeDtypeStruct((4,), jnp.float32)
            return {"w": jax.pure_callback(load, shape)}

        return init

    kw = dict(seeds=[0], epochs=1, regime=gd.minibatch(8))
    for value in (1.0, 2.0):
        r = sweep(ls_loss, make_init(value), DATA, gd.sgd(1e-30), **kw)
        np.testing.assert_array_equal(r.member(seed=0).params["w"], np.full(4, value))


def test_data_is_not_replicated_per_member():
    rng = np.random.default_rng(0)
    n, d = 4096, 16
    data = (
        jnp.asarray(rng.normal(size=(n, d)), jnp.float32),
        jnp.asarray(rng.normal(size=(n,)), jnp.float32),
    )
    data_bytes = n * d * 4 + n * 4

    def init(key):
        return {"w": jax.random.normal(key, (d,))}

    def arguments(seeds):
        stopping, recording, driving = gd.spec.from_options()
        plan = gd.members.plan_members(
            ls_loss,
            init,
            data,
            gd.sgd(0.1),
            seeds=gd.members.check_seeds(seeds),
            axes=gd.members.sweep_axes({"learning_rate": [0.1]}, True),
            epochs=2,
            regime=gd.full_batch(),
            val_data=None,
            devices=None,
            stopping=stopping,
            recording=recording,
            driving=driving,
        )
        run = gd.members.member_run(plan)
        lowered = gd.loop.advance_members.lower(
            run.program, run.state, run.inputs, np.int32(2)
        )
        member_bytes = (
            sum(
                leaf.nbytes
                for leaf in jax.tree.leaves((run.state, run.inputs.criteria))
            )
            + jax.random.key_data(run.inputs.key).nbytes
        )
        return lowered.compile().memory_analysis().argument_size_in_bytes, member_bytes

    small, small_members = arguments([0, 1])
    big, big_members = arguments(list(range(8)))
    # The data is one argument of its own size in both programs ...
    assert small >= data_bytes and big >= data_bytes
    # ... and eight members cost six more members' state, not six more data copies.
    # (XLA drops the arguments the program never reads, hence "<=".)
    assert 0 < big - small <= big_members - small_members
    assert big - small < data_bytes / 20


def width_init(key, width):
    return {"w": jax.random.normal(key, (4, width)) / width}


def width_loss(params, batch):
    x, y = batch
    r = jnp.sum(x @ params["w"], axis=1) - y
    return 0.5 * jnp.mean(r * r)


def test_outer_width_changes_shapes(compiles):
    kw = dict(
        seeds=[0, 1],
        hyperparams={"learning_rate": [0.05, 0.1]},
        epochs=2,
        regime=gd.minibatch(8),
    )
    res = sweep(
        width_loss, width_init, DATA, gd.sgd(0.1), outer={"width": [3, 5]}, **kw
    )
    assert res.axes == ("width", "seed", "learning_rate")
    assert res.shape == (2, 2, 2)
    # Histories stack over every axis; params of different widths cannot.
    assert res.result.history.loss.shape == (2, 2, 2, 2)
    assert res.result.params.shape == (2,)
    assert res.member(1, 1, 0).params["w"].shape == (4, 5)
    assert res.member(width=3, seed=0, learning_rate=0.1).params["w"].shape == (4, 3)
    assert len(res.summary()) == 4
    # Each outer point is the plain sweep with init(key, width=w): the same
    # compiled programs (the partial is matched by value), the same members.
    with compiles() as c:
        point = sweep(
            width_loss, functools.partial(width_init, width=5), DATA, gd.sgd(0.1), **kw
        )
    assert c.count == 0
    for a, b in zip(
        jax.tree.leaves(point.result),
        jax.tree.leaves(_take_outer(res.result, 1)),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)


def _take_outer(result, i):
    return jax.tree.map(lambda a: a[i], result)


def test_outer_batch_size_stacks():
    res = sweep(
        ls_loss,
        ls_init,
        DATA,
        gd.sgd(0.05),
        seeds=[0, 1],
        outer={"batch_size": [8, 32]},
        epochs=2,
        regime=gd.minibatch(4, shuffle=False),
    )
    assert res.axes == ("batch_size", "seed") and res.shape == (2, 2)
    np.testing.assert_array_equal(res.result.steps, [[8, 8], [2, 2]])
    assert res.result.params["w"].shape == (2, 2, 4)
    # shuffle=False is kept: the seeds differ only by their initial parameters.
    single = gd.fit(
        ls_loss,
        ls_init(seed_keys(1)[0]),
        DATA,
        gd.sgd(0.05),
        key=jax.random.key(9),
        epochs=2,
        regime=gd.minibatch(32, shuffle=False),
    )
    assert_member_equals_fit(res.member(1, 1), single)


def test_summary_best_and_reasons_with_a_diverging_setting():
    lrs = [0.05, 0.2, 2.0 / MU * 10]  # the last one diverges
    res = sweep(
        ls_loss,
        ls_init,
        DATA,
        gd.sgd(0.1),
        seeds=[0, 1, 2],
        hyperparams={"learning_rate": lrs},
        epochs=30,
        val_data=(DATA[0][:8], DATA[1][:8]),
    )
    reasons = res.reasons()
    assert reasons.shape == (3, 3)
    assert all(r.startswith("NONFINITE") for r in reasons[:, 2])
    assert set(reasons[:, :2].ravel()) == {"MAX_EPOCHS"}
    rows = res.summary()
    assert [r["learning_rate"] for r in rows] == pytest.approx(lrs)
    final = np.array(
        [[res.member(i, j).final_loss for j in range(3)] for i in range(3)]
    )
    for j, row in enumerate(rows[:2]):
        assert row["loss_mean"] == pytest.approx(final[:, j].mean(), rel=1e-6)
        assert row["loss_std"] == pytest.approx(final[:, j].std(), rel=1e-5)
        assert row["loss_min"] == pytest.approx(final[:, j].min())
        assert row["loss_max"] == pytest.approx(final[:, j].max())
        assert row["failed"] == 0 and row["seeds"] == 3
        assert np.isfinite(row["val_loss_mean"])
    assert rows[2]["failed"] == 3 and np.isnan(rows[2]["loss_mean"])
    best, value = res.best()
    j = int(np.argmin(final[:, :2].mean(axis=0)))
    assert best == {"learning_rate": lrs[j]}
    assert value == pytest.approx(final[:, j].mean(), rel=1e-6)
    assert res.best("val_loss")[0]["learning_rate"] in lrs[:2]
    # A pytree: tree maps keep the axes.
    mapped = jax.tree.map(lambda a: a, res)
    assert mapped.axes == res.axes and mapped.shape == res.shape


BAD = [
    (dict(seeds=[]), ValueError, "seeds is empty"),
    (dict(seeds=[0, 1, 0]), ValueError, r"seeds must be distinct, got \[0\]"),
    (dict(seeds=3), TypeError, "range"),
    (dict(hyperparams={"learning_rate": []}), ValueError, "learning_rate.*empty"),
    (
        dict(hyperparams={"learning_rate": [0.1, 0.2], "momentum": [0.5]}, grid=False),
        ValueError,
        "equal lengths",
    ),
    (
        dict(hyperparams={"lr": [0.1]}),
        ValueError,
        r"unknown hyperparameter 'lr'.*'learning_rate'.*'tol'",
    ),
    (dict(hyperparams={"learning_rate": [0.1, -0.1]}), ValueError, "learning_rate"),
    (dict(hyperparams={"learning_rate": [np.nan]}), ValueError, "finite"),
    (dict(hyperparams={"momentum": [1.0]}), ValueError, "momentum"),
    (dict(hyperparams={"patience": [2]}), ValueError, "tol is off"),
    (dict(hyperparams={"max_steps": [2.5]}), TypeError, "max_steps"),
    (dict(hyperparams={"learning_rate": 0.1}), TypeError, r"\[value\]"),
    (dict(hyperparams={"tol": [0.1]}, tol=0.1), ValueError, "both swept"),
    (
        dict(hyperparams={"learning_rate": [0.1, 0.2, 0.1]}),
        ValueError,
        r"hyperparams\['learning_rate'\] must be distinct, got \[0.1\]",
    ),
    (
        dict(
            hyperparams={"learning_rate": [0.1, 0.1], "momentum": [0.5, 0.5]},
            grid=False,
        ),
        ValueError,
        "settings must be distinct",
    ),
    (dict(resume=None), TypeError, "unexpected keyword"),
    (dict(outer={"width": [2]}), ValueError, "unknown outer axis 'width'"),
]


@pytest.mark.parametrize("kwargs,error,match", BAD, ids=lambda v: str(v)[:40])
def test_bad_input_raises_before_compiling(compiles, kwargs, error, match):
    base = dict(seeds=[0, 1], epochs=2)
    base.update(kwargs)
    with compiles() as c:
        with pytest.raises(error, match=match):
            sweep(ls_loss, ls_init, DATA, gd.sgd(0.1, momentum=0.5), **base)
    assert c.count == 0


# --------------------------------------------------------------- result tables


def r_squared(params, batch):
    """The coefficient of determination on ``batch`` (higher is better)."""
    x, y = batch
    r = x @ params["w"] - y
    return 1.0 - jnp.sum(r * r) / jnp.sum((y - jnp.mean(y)) ** 2)


VAL = (DATA[0][:8], DATA[1][:8])
TABLE_LRS = [0.01, 0.05, 0.3]


@functools.cache
def table_sweep():
    """Members that stop at different epochs, with val_loss and a metric."""
    return sweep(
        ls_loss,
        ls_init,
        DATA,
        gd.sgd(0.1),
        seeds=[0, 1, 2],
        hyperparams={"learning_rate": TABLE_LRS},
        epochs=40,
        regime=gd.minibatch(8),
        tol=0.1,
        patience=1,
        val_data=VAL,
        metric=r_squared,
    )


def by_hand_r2(w):
    x, y = (np.asarray(a, np.float64) for a in VAL)
    r = x @ np.asarray(w, np.float64) - y
    return 1.0 - np.sum(r * r) / np.sum((y - y.mean()) ** 2)


def test_sel_partial_gives_a_sweep_and_full_gives_a_member():
    res = table_sweep()
    part = res.sel(learning_rate=0.05)
    assert isinstance(part, SweepResult)
    assert part.axes == ("seed",) and part.shape == (3,)
    assert part.coords == {"seed": (0, 1, 2)}
    for i in range(3):
        a, b = part.member(i), res.member(i, 1)
        for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
            np.testing.assert_array_equal(u, v)
    np.testing.assert_allclose(part.final_loss, res.final_loss[:, 1])
    [row] = part.summary()
    assert row["loss_mean"] == pytest.approx(float(np.mean(res.final_loss[:, 1])))
    other = res.sel(seed=2)
    assert other.axes == ("learning_rate",) and other.shape == (3,)
    np.testing.assert_array_equal(
        other.member(learning_rate=0.3).params["w"], res.member(2, 2).params["w"]
    )
    # Fixing the seed leaves one seed per setting: summary and best still hold.
    rows = other.summary()
    assert [r["seeds"] for r in rows] == [1, 1, 1]
    np.testing.assert_allclose(
        [r["loss_mean"] for r in rows], res.final_loss[2], rtol=1e-6
    )
    j = int(np.argmin(res.final_loss[2]))
    best, value = other.best()
    assert best == {"learning_rate": TABLE_LRS[j]}
    assert value == pytest.approx(float(res.final_loss[2, j]), rel=1e-6)
    full = res.sel(seed=2, learning_rate=0.05)
    assert isinstance(full, gd.FitResult)
    want = res.member(2, 1)
    assert int(full.epoch) == int(want.epoch) and full.reason == want.reason
    for u, v in zip(jax.tree.leaves(full), jax.tree.leaves(want), strict=True):
        np.testing.assert_array_equal(u, v)
    chained = res.sel(learning_rate=0.05).sel(seed=2)
    assert isinstance(chained, gd.FitResult)
    np.testing.assert_array_equal(chained.history.loss, want.history.loss)
    with pytest.raises(ValueError, match="not in"):
        res.sel(learning_rate=0.07)
    with pytest.raises(ValueError, match="unknown coordinate"):
        res.sel(momentum=0.5)


def test_summary_metric_columns_and_best_by_metric_max():
    res = table_sweep()
    assert not res.failed().any()
    # The recorded metric is R^2 at each member's final parameters.
    r2 = np.array(
        [[by_hand_r2(res.member(i, j).params["w"]) for j in range(3)] for i in range(3)]
    )
    np.testing.assert_allclose(res.final("metric"), r2, rtol=1e-4, atol=1e-5)
    rows = res.summary()
    assert [r["learning_rate"] for r in rows] == pytest.approx(TABLE_LRS)
    val = res.final_val_loss
    for j, row in enumerate(rows):
        for name, values in (("metric", res.final("metric")), ("val_loss", val)):
            col = values[:, j]
            assert row[f"{name}_mean"] == pytest.approx(col.mean(), rel=1e-6)
            assert row[f"{name}_std"] == pytest.approx(col.std(), rel=1e-5, abs=1e-9)
            assert row[f"{name}_min"] == pytest.approx(col.min())
            assert row[f"{name}_max"] == pytest.approx(col.max())
    means = r2.mean(axis=0)
    # The settings' mean R^2 differ, so max and min pick different settings.
    assert np.argmax(means) != np.argmin(means)
    assert np.min(np.abs(np.diff(np.sort(means)))) > 1e-3
    best, value = res.best(by="metric", mode="max")
    assert best == {"learning_rate": TABLE_LRS[int(np.argmax(means))]}
    assert value == pytest.approx(means.max(), rel=1e-4)
    worst, low = res.best(by="metric", mode="min")
    assert worst == {"learning_rate": TABLE_LRS[int(np.argmin(means))]}
    assert low == pytest.approx(means.min(), rel=1e-4)
    with pytest.raises(ValueError, match="mode"):
        res.best(by="metric", mode="median")
    with pytest.raises(ValueError, match="unknown series"):
        res.best(by="accuracy")


def test_long_format_table_has_one_row_per_member_epoch_run():
    res = table_sweep()
    table = res.to_dict()
    assert list(table) == [
        "seed",
        "learning_rate",
        "epoch",
        "loss",
        "grad_norm",
        "val_loss",
        "metric",
    ]
    epochs = np.asarray(res.result.epoch)
    # Members stopped at different epochs: the table holds the epochs each ran,
    # not the padded grid.
    assert len(np.unique(epochs)) >= 2
    assert all(len(col) == int(epochs.sum()) for col in table.values())
    assert int(epochs.sum()) < 9 * int(epochs.max())
    for i, seed in enumerate([0, 1, 2]):
        for j, lr in enumerate(TABLE_LRS):
            rows = (table["seed"] == seed) & np.isclose(table["learning_rate"], lr)
            member = res.member(i, j)
            np.testing.assert_array_equal(
                table["epoch"][rows], np.arange(1, int(epochs[i, j]) + 1)
            )
            for name in ("loss", "grad_norm", "val_loss", "metric"):
                np.testing.assert_array_equal(
                    table[name][rows], getattr(member.history, name)
                )
            # The member's own table is the same rows without the coordinates.
            own = member.to_dict()
            for name, col in own.items():
                np.testing.assert_array_equal(table[name][rows], col)
    # Back from the table to the padded (seed, lr, epoch) histories.
    seeds, lrs = list(res.coords["seed"]), list(res.coords["learning_rate"])
    padded = np.full(res.result.history.loss.shape, np.nan, np.float32)
    for s, lr, e, v in zip(
        table["seed"],
        table["learning_rate"],
        table["epoch"],
        table["loss"],
        strict=True,
    ):
        padded[seeds.index(s), lrs.index(lr), e - 1] = v
    np.testing.assert_array_equal(padded, res.result.history.loss)


def test_to_pandas_round_trip():
    pd = pytest.importorskip("pandas")
    res = table_sweep()
    table = res.to_dict()
    df = res.to_pandas()
    assert isinstance(df, pd.DataFrame)
    assert list(df.columns) == list(table) and len(df) == int(res.result.epoch.sum())
    for name, col in table.items():
        np.testing.assert_array_equal(df[name].to_numpy(), col)
    # Pivot back: one row per member, one column per epoch, NaN past its stop.
    wide = df.pivot_table(
        index=["seed", "learning_rate"], columns="epoch", values="loss", dropna=False
    )
    assert wide.shape == (9, int(res.result.epoch.max()))
    np.testing.assert_allclose(
        wide.to_numpy(), res.result.history.loss.reshape(9, -1), rtol=0, atol=0
    )
    counts = df.groupby(["seed", "learning_rate"]).size().to_numpy()
    np.testing.assert_array_equal(counts, res.result.epoch.ravel())


def test_members_without_step_stats_equal_single_fits():
    kw = dict(epochs=3, regime=gd.minibatch(8), guard=False, step_stats=False)
    tx = gd.sgd(0.05)
    res = sweep(ls_loss, ls_init, DATA, tx, seeds=[0, 1],
                hyperparams={"learning_rate": [0.02, 0.1]}, **kw)
    for i, seed in enumerate([0, 1]):
        for j, lr in enumerate([0.02, 0.1]):
            single = fit_member(seed, tx, hyperparams={"learning_rate": lr}, **kw)
            np.testing.assert_allclose(
                res.member(i, j).params["w"], single.params["w"], rtol=1e-5, atol=2e-6
            )
            assert np.isnan(res.member(i, j).history.loss).all()
