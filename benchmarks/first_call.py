"""Time to first result: a fresh process's first ``gd.fit`` against the optax loop's.

Each sample is a new Python process that imports gdjax, loads the data, builds
the parameters (outside the clock) and then times one training call to its
result, counting XLA compilations with ``jax.monitoring``. The two contenders
alternate (gdjax, optax, gdjax, ...) so that machine load hits both alike; the
figure is the ratio of medians. The optax contender is what a JAX tutorial
writes: a jitted ``lax.scan`` over one epoch's batches (host permutation
drawn with ``jax.random.permutation`` inside the jit) in a Python loop over
epochs.

Target (issue "Time to first result"): gdjax's first call at most 1.5x the
optax loop's, with at most 3 compilations.

    python benchmarks/first_call.py [--samples 5] [--workloads W1,W2,W3,W5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

TARGET_RATIO = 1.5
TARGET_COMPILES = 3

WORKLOADS = {
    # name: (description, model widths or None for linear, batch or None, epochs)
    "W1": ("full-batch least squares, n=8192, d=256, 500 steps", "ls", None, 500),
    "W2": ("softmax regression, digits, batch 32, 30 epochs", [64, 10], 32, 30),
    "W3": ("MLP 64-256-256-10, momentum 0.9, batch 128, 40 epochs", [64, 256, 256, 10],
           128, 40),
    "W5": ("logistic regression, batch 1, 10 epochs", "logistic", 1, 10),
}

_CHILD = r"""
import json, sys, time
import jax, jax.numpy as jnp, numpy as np, optax
count = [0]
def listen(event, duration, **kw):
    if event == "/jax/core/compile/backend_compile_duration":
        count[0] += 1
jax.monitoring.register_event_duration_secs_listener(listen)
import gdjax as gd
who, name = sys.argv[1], sys.argv[2]
widths, batch, epochs = json.loads(sys.argv[3])
key = jax.random.key(0)
if widths == "ls":
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8192, 256)).astype(np.float32)
    y = (x @ rng.normal(size=256)).astype(np.float32)
    params = {"w": np.zeros(256, np.float32)}
    apply = lambda p, x: x @ p["w"]
    per = gd.losses.squared_error
elif widths == "logistic":
    (x, y), _ = gd.datasets.digits(test_fraction=0.25)
    y = (np.asarray(y) % 2).astype(np.float32)
    params = {"w": np.zeros((64, 1), np.float32), "b": np.zeros(1, np.float32)}
    apply = gd.models.linear
    per = gd.losses.logistic
else:
    (x, y), _ = gd.datasets.digits(test_fraction=0.25)
    params = gd.init.mlp(jax.random.key(1), widths)
    apply = gd.models.mlp
    per = gd.losses.softmax_cross_entropy
x, y = np.asarray(x), np.asarray(y)
momentum = 0.9 if name == "W3" else None
n = x.shape[0]
b = n if batch is None else batch
steps = n // b
jax.block_until_ready(jax.tree.leaves(params))
c0 = count[0]
t0 = time.perf_counter()
if who == "gdjax":
    loss = gd.make_loss(apply, per)
    regime = gd.full_batch() if batch is None else gd.minibatch(b, last_batch="drop")
    r = gd.fit(loss, params, (x, y), gd.sgd(0.05, momentum=momentum), key=key,
               epochs=epochs, regime=regime)
    jax.block_until_ready(r.params)
else:
    tx = optax.sgd(0.05, momentum=momentum)
    xs, ys = jnp.asarray(x), jnp.asarray(y)
    def loss(p, xb, yb):
        return jnp.mean(per(apply(p, xb), yb))
    @jax.jit
    def epoch(p, s, k):
        order = jax.random.permutation(k, n)[: steps * b].reshape(steps, b)
        def step(c, idx):
            p, s = c
            g = jax.grad(loss)(p, xs[idx], ys[idx])
            u, s = tx.update(g, s, p)
            return (optax.apply_updates(p, u), s), None
        (p, s), _ = jax.lax.scan(step, (p, s), order)
        return p, s
    p, s = params, tx.init(params)
    for e in range(epochs):
        p, s = epoch(p, s, jax.random.fold_in(key, e))
    jax.block_until_ready(p)
print(json.dumps({"seconds": time.perf_counter() - t0, "compiles": count[0] - c0}))
"""


def _sample(who: str, name: str) -> dict:
    _, widths, batch, epochs = WORKLOADS[name]
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, who, name, json.dumps([widths, batch, epochs])],
        capture_output=True, text=True, check=True,
        env={**os.environ, "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu")},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(name: str, samples: int) -> dict:
    times: dict[str, list[float]] = {"gdjax": [], "optax": []}
    compiles: dict[str, list[int]] = {"gdjax": [], "optax": []}
    for _ in range(samples):
        for who in ("gdjax", "optax"):
            got = _sample(who, name)
            times[who].append(got["seconds"])
            compiles[who].append(got["compiles"])
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["gdjax"] / med["optax"]
    worst = max(compiles["gdjax"])
    return {
        "workload": name,
        "gdjax_s": med["gdjax"],
        "optax_s": med["optax"],
        "ratio": ratio,
        "gdjax_compiles": worst,
        "optax_compiles": max(compiles["optax"]),
        "pass": ratio <= TARGET_RATIO and worst <= TARGET_COMPILES,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument("--workloads", default="W2")
    args = parser.parse_args(argv)
    print("| workload | gdjax first call | optax loop first call | ratio | compiles "
          "(gdjax/optax) | target |")
    print("|---|---|---|---|---|---|")
    for name in args.workloads.split(","):
        r = measure(name, args.samples)
        verdict = "PASS" if r["pass"] else "FAIL"
        print(f"| {name} {WORKLOADS[name][0]} | {r['gdjax_s']:.2f} s | "
              f"{r['optax_s']:.2f} s | {r['ratio']:.2f} | {r['gdjax_compiles']}/"
              f"{r['optax_compiles']} | {verdict} (≤{TARGET_RATIO}×, "
              f"≤{TARGET_COMPILES}) |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
