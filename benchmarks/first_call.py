"""Time to first result: a fresh process's first ``gd.fit`` against the optax loop's.

Each sample is a new Python process that imports gdjax, loads the data, builds
the parameters (outside the clock) and then times one training call to its
result, counting XLA compilations with ``jax.monitoring``. The two contenders
alternate (gdjax, optax, gdjax, ...) so that machine load hits both alike; the
figure is the ratio of medians. The optax contender is what a JAX tutorial
writes: a jitted ``lax.scan`` over one epoch's batches (the permutation
drawn with ``jax.random.permutation`` inside the jit) in a Python loop over
epochs; full batch (W1), a jitted step on all the data in a Python loop.

W4 is a sweep: ``gd.sweep`` of W3 over 16 seeds x 4 learning rates for one
epoch (the benchmark's quick W4), against ``jax.vmap`` of the same jitted
epoch over the 64 members, initial parameters drawn by a vmapped jitted init.

With ``--warm`` each contender also runs with JAX's persistent compilation
cache in a folder that an earlier process of the same contender filled
(gdjax through ``gd.enable_compilation_cache``, the optax loop through
``jax.config``): what a researcher sees on re-running a script or restarting
a notebook. Loads from that cache are counted with the compilations.

Target (issue "Time to first result"): gdjax's first call (cold caches) at
most 1.5x the optax loop's, with at most 3 compilations.

    python benchmarks/first_call.py [--samples 5] [--workloads W1,W2,W3,W4,W5] \
        [--warm] [--quick]

``--quick`` adds gdjax with ``compiler_options=gd.QUICK_COMPILE`` (XLA's older
CPU emitters) as a third contender, in its own column.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

TARGET_RATIO = 1.5
TARGET_COMPILES = 3

WORKLOADS = {
    # name: (description, model widths or None for linear, batch or None, epochs)
    "W1": ("full-batch least squares, n=8192, d=256, 500 steps", "ls", None, 500),
    "W2": ("softmax regression, digits, batch 32, 30 epochs", [64, 10], 32, 30),
    "W3": ("MLP 64-256-256-10, momentum 0.9, batch 128, 40 epochs", [64, 256, 256, 10],
           128, 40),
    "W4": ("W3 over 16 seeds x 4 learning rates, 1 epoch (one sweep)",
           [64, 256, 256, 10], 128, 1),
    "W5": ("logistic regression, batch 1, 10 epochs", "logistic", 1, 10),
}

_CHILD = r"""
import json, sys, time
import jax, jax.numpy as jnp, numpy as np, optax
count = [0]
def listen(event, duration, **kw):
    if event == "/jax/core/compile/backend_compile_duration":
        count[0] += 1
def listen_load(event, **kw):
    if event == "/jax/compilation_cache/cache_hits":
        count[0] += 1
jax.monitoring.register_event_duration_secs_listener(listen)
jax.monitoring.register_event_listener(listen_load)
import gdjax as gd
who, name = sys.argv[1], sys.argv[2]
widths, batch, epochs = json.loads(sys.argv[3])
cache = sys.argv[4]
if cache and who.startswith("gdjax"):
    gd.enable_compilation_cache(cache, min_compile_time_s=0)
elif cache:
    jax.config.update("jax_compilation_cache_dir", cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
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
    # W4's sweep draws its parameters itself, inside the clock: no draw here,
    # which would compile init's ops before it.
    params = None if name == "W4" else gd.init.mlp(jax.random.key(1), widths)
    apply = gd.models.mlp
    per = gd.losses.softmax_cross_entropy
x, y = np.asarray(x), np.asarray(y)
momentum = 0.9 if name in ("W3", "W4") else None
n = x.shape[0]
b = n if batch is None else batch
steps = n // b
jax.block_until_ready(jax.tree.leaves(params))
def epoch(p, s, k, tx):
    # One epoch of the optax loop: a lax.scan over the shuffled batches
    # (xs, ys: the data on the device, put there inside the optax timing).
    def loss(p, xb, yb):
        return jnp.mean(per(apply(p, xb), yb))
    if batch is None:  # full batch: one step on all the data, no order
        u, s = tx.update(jax.grad(loss)(p, xs, ys), s, p)
        return optax.apply_updates(p, u), s
    order = jax.random.permutation(k, n)[: steps * b].reshape(steps, b)
    def step(c, idx):
        p, s = c
        g = jax.grad(loss)(p, xs[idx], ys[idx])
        u, s = tx.update(g, s, p)
        return (optax.apply_updates(p, u), s), None
    (p, s), _ = jax.lax.scan(step, (p, s), order)
    return p, s
regime = gd.full_batch() if batch is None else gd.minibatch(b, last_batch="drop")
opts = {"compiler_options": gd.QUICK_COMPILE} if who == "gdjax-quick" else {}
c0 = count[0]
t0 = time.perf_counter()
if name == "W4":
    seeds, lrs = list(range(16)), [0.005, 0.01, 0.02, 0.05]
    init = lambda k: gd.init.mlp(k, widths)
if name == "W4" and who.startswith("gdjax"):
    r = gd.sweep(gd.make_loss(apply, per), init, (x, y),
                 gd.sgd(lrs[0], momentum=momentum), seeds=seeds,
                 hyperparams={"learning_rate": lrs}, grid=True, epochs=epochs,
                 regime=regime, **opts)
    jax.block_until_ready(r.result.params)
elif name == "W4":
    xs, ys = jnp.asarray(x), jnp.asarray(y)
    seed_arr = jnp.repeat(jnp.arange(len(seeds)), len(lrs))
    lr_arr = jnp.tile(jnp.asarray(lrs, jnp.float32), len(seeds))
    @jax.jit
    def start(seed_arr):
        keys = jax.vmap(lambda s: jax.random.split(jax.random.key(s)))(seed_arr)
        p = jax.vmap(init)(keys[:, 0])
        s = jax.vmap(lambda p: optax.sgd(0.1, momentum=momentum).init(p))(p)
        return p, s, keys[:, 1]
    p, s, run_keys = start(seed_arr)
    member = lambda p, s, k, lr: epoch(p, s, k, optax.sgd(lr, momentum=momentum))
    vepoch = jax.jit(jax.vmap(member))
    for e in range(epochs):
        keys = jax.vmap(lambda k: jax.random.fold_in(k, e))(run_keys)
        p, s = vepoch(p, s, keys, lr_arr)
    jax.block_until_ready(p)
elif who.startswith("gdjax"):
    r = gd.fit(gd.make_loss(apply, per), params, (x, y),
               gd.sgd(0.05, momentum=momentum), key=key, epochs=epochs, regime=regime,
               **opts)
    jax.block_until_ready(r.params)
else:
    xs, ys = jnp.asarray(x), jnp.asarray(y)
    tx = optax.sgd(0.05, momentum=momentum)
    one = jax.jit(lambda p, s, k: epoch(p, s, k, tx))
    p, s = params, tx.init(params)
    for e in range(epochs):
        p, s = one(p, s, jax.random.fold_in(key, e))
    jax.block_until_ready(p)
print(json.dumps({"seconds": time.perf_counter() - t0, "compiles": count[0] - c0}))
"""


def _sample(who: str, name: str, cache: str = "") -> dict:
    _, widths, batch, epochs = WORKLOADS[name]
    spec = json.dumps([widths, batch, epochs])
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, who, name, spec, cache],
        capture_output=True, text=True, check=True,
        env={**os.environ, "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu")},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(name: str, samples: int, warm: bool = False, quick: bool = False) -> dict:
    """Medians over ``samples`` fresh processes per contender, interleaved.
    With ``quick``, gdjax with ``compiler_options=gd.QUICK_COMPILE`` is a third
    contender (``quick_*`` keys)."""
    who_all = ("gdjax", "optax") + (("gdjax-quick",) if quick else ())
    with tempfile.TemporaryDirectory() as folder:
        caches = dict.fromkeys(who_all, "")
        if warm:  # one process per contender fills its own cache first
            for who in caches:
                caches[who] = os.path.join(folder, who)
                _sample(who, name, caches[who])
        times: dict[str, list[float]] = {who: [] for who in who_all}
        compiles: dict[str, list[int]] = {who: [] for who in who_all}
        for _ in range(samples):
            for who in who_all:
                got = _sample(who, name, caches[who])
                times[who].append(got["seconds"])
                compiles[who].append(got["compiles"])
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["gdjax"] / med["optax"]
    worst = max(compiles["gdjax"])
    row = {
        "workload": name,
        "warm": warm,
        "gdjax_s": med["gdjax"],
        "optax_s": med["optax"],
        "ratio": ratio,
        "gdjax_compiles": worst,
        "optax_compiles": max(compiles["optax"]),
        "pass": ratio <= TARGET_RATIO and worst <= TARGET_COMPILES,
    }
    if quick:
        row["quick_s"] = med["gdjax-quick"]
        row["quick_ratio"] = med["gdjax-quick"] / med["optax"]
        row["quick_compiles"] = max(compiles["gdjax-quick"])
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument("--workloads", default="W2")
    parser.add_argument("--warm", action="store_true",
                        help="also measure with each contender's compilation "
                        "cache filled by an earlier process")
    parser.add_argument("--quick", action="store_true",
                        help="also measure gdjax with compiler_options="
                        "gd.QUICK_COMPILE (an extra column)")
    parser.add_argument("--json", default=None, help="also write the rows here")
    args = parser.parse_args(argv)
    extra = " gdjax QUICK_COMPILE (ratio) |" if args.quick else ""
    print("| workload | caches | gdjax first call | optax loop first call | ratio | "
          f"compiles (gdjax/optax) | target |{extra}")
    print("|---|---|---|---|---|---|---|" + ("---|" if args.quick else ""))
    rows = []
    for name in args.workloads.split(","):
        for warm in (False, True) if args.warm else (False,):
            r = measure(name, args.samples, warm, args.quick)
            rows.append(r)
            verdict = ("PASS" if r["pass"] else "FAIL") if not warm else "–"
            quick = (f" {r['quick_s']:.2f} s ({r['quick_ratio']:.2f}) |"
                     if args.quick else "")
            print(f"| {name} {WORKLOADS[name][0]} | {'warm' if warm else 'cold'} | "
                  f"{r['gdjax_s']:.2f} s | {r['optax_s']:.2f} s | {r['ratio']:.2f} | "
                  f"{r['gdjax_compiles']}/{r['optax_compiles']} | {verdict} "
                  f"(≤{TARGET_RATIO}×, ≤{TARGET_COMPILES}) |{quick}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
