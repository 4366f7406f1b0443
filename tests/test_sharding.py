"""Sharded sweeps and data-parallel fits on 8 simulated CPU devices.

The device count is fixed when JAX starts, so the multi-device checks run in a
subprocess with ``--xla_force_host_platform_device_count=8`` and report back
as JSON; the assertions are made here.
"""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import least_squares_problem, ls_loss
from jax.sharding import PartitionSpec as P

import gdjax as gd
from gdjax import sharding

SCRIPT = textwrap.dedent(
    """
    import json
    import jax, jax.numpy as jnp, numpy as np
    import gdjax as gd
    from gdjax import seed_keys, sharding, sweep

    assert len(jax.devices()) == 8
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype(np.float32)
    y = (x @ rng.normal(size=4) + 0.1 * rng.normal(size=64)).astype(np.float32)
    data = (jnp.asarray(x), jnp.asarray(y))

    def loss(p, b):  # a plain user loss: masking goes through with_example_weights
        xb, yb = b
        r = xb @ p["w"] - yb
        return 0.5 * jnp.mean(r * r)

    def init(key):
        return {"w": 0.5 * jax.random.normal(key, (4,))}

    out = {}
    kw = dict(epochs=12, regime=gd.minibatch(8), tol=0.1, patience=1)
    for seeds, lrs in (([0, 1, 2], [0.02, 0.1]), ([0, 1, 2, 3, 4], [0.02, 0.1])):
        res = sweep(loss, init, data, gd.sgd(0.1), seeds=seeds,
                    hyperparams={"learning_rate": lrs}, **kw)
        stopping, recording, driving = gd.spec.from_options(tol=0.1, patience=1)
        plan = gd.members.plan_members(
            loss, init, data, gd.sgd(0.1), seeds=gd.members.check_seeds(seeds),
            axes=gd.members.sweep_axes({"learning_rate": lrs}, True),
            epochs=12, regime=gd.minibatch(8), val_data=None,
            devices=jax.devices(), stopping=stopping, recording=recording,
            driving=driving)
        run = gd.members.member_run(plan)
        worst, same = 0.0, True
        for i, s in enumerate(seeds):
            for j, lr in enumerate(lrs):
                ik, rk = seed_keys(s)
                f = gd.fit(loss, init(ik), data, gd.sgd(0.1), key=rk,
                           hyperparams={"learning_rate": lr}, **kw)
                m = res.member(i, j)
                worst = max(worst, float(np.max(np.abs(m.params["w"] - f.params["w"]))))
                same &= all(int(getattr(m, k)) == int(getattr(f, k))
                            for k in ("status", "steps", "epoch"))
        out[f"sweep{len(seeds) * len(lrs)}"] = dict(
            shape=list(res.shape), params=worst, discrete=bool(same),
            stops=sorted(set(res.result.epoch.ravel().tolist())),
            mesh=int(plan.mesh.devices.size), padded=len(plan.member_seed),
            spec=str(run.state.params["w"].sharding.spec),
            devices=len(run.state.params["w"].sharding.device_set),
            data_devices=len(run.inputs.data[0].sharding.device_set),
            data_spec=str(run.inputs.data[0].sharding.spec),
        )

    p0 = init(jax.random.key(3))
    # Batches of 12 (the last one padded and masked: an explicit weighted loss)
    # split over 8 devices.
    wloss = gd.with_example_weights(loss)
    kw = dict(key=jax.random.key(1), epochs=4, regime=gd.minibatch(12),
              val_data=(x[:16], y[:16]))
    r = sharding.fit_data_parallel(wloss, p0, data, gd.sgd(0.1, momentum=0.9), **kw)
    f = gd.fit(wloss, p0, data, gd.sgd(0.1, momentum=0.9), **kw)
    out["dp"] = dict(
        params=float(np.max(np.abs(np.asarray(r.params["w"] - f.params["w"])))),
        loss=float(np.max(np.abs(np.asarray(r.history.loss - f.history.loss)))),
        val=float(np.max(np.abs(np.asarray(r.history.val_loss - f.history.val_loss)))),
        rows=[len(r.history.loss), len(f.history.loss)],
        steps=[int(r.steps), int(f.steps)],
        spec=str(r.params["w"].sharding.spec),
        devices=len(r.params["w"].sharding.device_set),
    )
    sharded = sharding.shard_data(data)
    out["shard_data"] = dict(
        spec=str(sharded[0].sharding.spec),
        rows=sorted({s.data.shape[0] for s in sharded[0].addressable_shards}),
    )
    try:
        sharding.shard_data((x[:10], y[:10]))
    except ValueError as e:
        out["uneven"] = str(e)
    print("RESULT" + json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def eight_devices():
    env = dict(os.environ)
    env["XLA_FLAGS"] = (
        env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    )
    env["JAX_PLATFORMS"] = "cpu"
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [s for s in proc.stdout.splitlines() if s.startswith("RESULT")][-1]
    return json.loads(line[len("RESULT") :])


@pytest.mark.parametrize(
    "name,shape,mesh,padded",
    [("sweep6", [3, 2], 6, 6), ("sweep10", [5, 2], 8, 16)],
)
def test_sharded_sweep_members_equal_single_fits(
    eight_devices, name, shape, mesh, padded
):
    r = eight_devices[name]
    assert r["shape"] == shape
    # Members are sharded over min(devices, members) devices (6 members: 6 of
    # the 8), padded to a multiple of that with copies of member 0 (10 -> 16);
    # the data is replicated.
    assert r["mesh"] == mesh and r["padded"] == padded
    assert r["spec"] == str(P("members")) and r["devices"] == mesh
    assert r["data_spec"] == str(P()) and r["data_devices"] == mesh
    assert r["params"] < 2e-6
    assert r["discrete"]
    assert len(r["stops"]) >= 2  # members stopped at different epochs


def test_data_parallel_fit_equals_single_device_fit(eight_devices):
    r = eight_devices["dp"]
    assert r["params"] < 1e-6 and r["loss"] < 1e-5 and r["val"] < 1e-5
    assert r["rows"] == [4, 4]
    assert r["steps"][0] == r["steps"][1] > 0
    assert r["spec"] == str(P()) and r["devices"] == 8


def test_shard_data_splits_examples(eight_devices):
    assert eight_devices["shard_data"] == {"spec": str(P("data")), "rows": [8]}
    assert "n=10" in eight_devices["uneven"] and "replicate" in eight_devices["uneven"]


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (dict(data_placement="scatter"), ValueError, "data_placement"),
        (dict(axis="batch"), ValueError, "not 'batch'"),
        (dict(mesh="cpu"), TypeError, "Mesh"),
    ],
)
def test_data_parallel_bad_arguments(kwargs, error, match):
    data, *_ = least_squares_problem(n=8, d=2)
    kwargs.setdefault("mesh", sharding.data_mesh(1))
    with pytest.raises(error, match=match):
        sharding.fit_data_parallel(
            ls_loss,
            {"w": jnp.zeros(2)},
            data,
            gd.sgd(0.1),
            key=jax.random.key(0),
            epochs=1,
            **kwargs,
        )
    assert np.asarray(jax.devices()).size >= 1
