"""Same key, same bits: in one process, across processes, threads and devices."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import _train_script as script
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import least_squares_problem, ls_loss, zeros_params

import gdjax as gd
from gdjax import batching, checkpoint

SCRIPT = Path(script.__file__)


def test_same_key_same_bits_in_one_process():
    a = script.result_hash(script.reference())
    assert script.result_hash(script.reference()) == a
    loss, params, data, tx, kwargs = script.problem()
    other = gd.fit(loss, params, data, tx, **{**kwargs, "key": jax.random.key(6)})
    assert script.result_hash(other) != a  # the hash sees the data order


def _hash_in_subprocess(xla_flags: str | None) -> subprocess.Popen:
    env = dict(os.environ)
    root = str(Path(gd.__file__).parents[1])
    env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")])
    env.pop("XLA_FLAGS", None)
    if xla_flags:
        env["XLA_FLAGS"] = xla_flags
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), "hash"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
def test_same_bits_across_processes_one_thread_and_eight_devices():
    here = script.result_hash(script.reference())
    configs = {
        "default": (None, 1),
        "one thread": (
            "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
            1,
        ),
        "8 fake devices": ("--xla_force_host_platform_device_count=8", 8),
    }
    procs = {name: _hash_in_subprocess(flags) for name, (flags, _) in configs.items()}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        lines = dict(line.split() for line in out.splitlines())
        assert int(lines["devices"]) == configs[name][1], name
        assert lines["hash"] == here, name


def _recorded_indices(transform, **kw):
    """The example indices each step of a fit saw, read back by a callback."""
    (x, y), *_ = least_squares_problem(n=40)
    data = {"x": x, "y": y, "i": jnp.arange(40, dtype=jnp.int32)}
    seen = []

    def loss(p, b):
        jax.debug.callback(
            lambda i: seen.append(np.asarray(i).copy()), b["i"], ordered=True
        )
        return ls_loss(p, (b["x"], b["y"]))

    r = gd.fit(
        loss,
        zeros_params(4),
        data,
        transform,
        key=jax.random.key(3),
        epochs=3,
        regime=gd.minibatch(8),
        **kw,
    )
    steps = int(r.steps)
    # fit may evaluate the loss once on the host side before the run (the
    # boundary's zero-gradient check); the steps are the calls after it.
    assert steps == 15 and len(seen) - steps in (0, 1), len(seen)
    return np.stack(seen[len(seen) - steps :])


def test_index_stream_ignores_learning_rate_momentum_and_tol():
    base = _recorded_indices(gd.sgd(0.05))
    regime = gd.minibatch(8)
    plan = batching.plan(regime, 40)
    expected = np.concatenate(
        [
            np.asarray(batching.epoch_batches(regime, plan, jax.random.key(3), e)[0])
            for e in range(3)
        ]
    )
    np.testing.assert_array_equal(base, expected)
    assert not np.array_equal(expected[:5], expected[5:10])  # epochs differ
    for transform, kw in [
        (gd.sgd(0.2, momentum=0.9), dict(tol=0.5, patience=100)),
        (optax.sgd(0.01, momentum=0.5, nesterov=True), {}),
    ]:
        np.testing.assert_array_equal(_recorded_indices(transform, **kw), base)


def test_keys_are_never_reused():
    (x, y), *_ = least_squares_problem(n=37)  # a shape no other test traces
    with jax.debug_key_reuse(True):
        # The checker is on, inside compiled code too.
        with pytest.raises(jax.errors.KeyReuseError):
            jax.jit(lambda k: jax.random.normal(k) + jax.random.normal(k))(
                jax.random.key(1)
            )
        key = jax.random.key(5)
        gd.init.mlp(key, [4, 3, 1])
        params = gd.init.init_tree(key, {"w": (4,)})
        # 37 = 7 * 5 + 2: a masked last batch, so the loss declares its weights.
        loss = gd.with_example_weights(ls_loss)
        for regime in (gd.minibatch(5), gd.stochastic(replacement=True)):
            r = gd.fit(
                loss, params, (x, y), gd.sgd(0.01), key=key, epochs=2, regime=regime
            )
            assert int(r.steps) > 0


def test_fingerprint(x64):
    fp = checkpoint.fingerprint()
    assert set(fp) == {"jax", "jaxlib", "optax", "numpy", "gdjax", "backend", "x64"}
    assert fp["jax"] == jax.__version__
    assert fp["jaxlib"] == importlib.metadata.version("jaxlib")
    assert fp["optax"] == optax.__version__
    assert fp["numpy"] == np.__version__
    assert fp["gdjax"] == gd.__version__
    assert fp["backend"] == jax.default_backend()
    assert fp["x64"] is True
    with jax.enable_x64(False):
        assert checkpoint.fingerprint()["x64"] is False
