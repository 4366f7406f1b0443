"""Cost of running fit in compiled chunks (progress bar / callbacks) vs one program.

    python benchmarks/chunked_overhead.py

Workload: MLP 64-256-256-10 on the built-in digits, mini-batch 128, momentum 0.9,
40 epochs. Prints the median steady-state time (5 runs after a warm-up) of the
single-program run and of chunked runs, and their ratio.
"""

from __future__ import annotations

import statistics
import time

import jax

import gdjax as gd


def main() -> None:
    (x, y), _ = gd.datasets.digits()
    params = gd.init.mlp(jax.random.key(0), [64, 256, 256, 10])
    loss = gd.make_loss(gd.models.mlp, gd.losses.softmax_cross_entropy)
    tx = gd.sgd(0.05, momentum=0.9)
    kw = dict(key=jax.random.key(1), epochs=40, regime=gd.minibatch(128))

    variants = {"single program": {}}
    for k in (1, 5, 10):
        variants[f"chunks of {k:2d} epochs"] = dict(
            chunk_epochs=k, callback=lambda s: False
        )
    times: dict[str, list[float]] = {name: [] for name in variants}
    for extra in variants.values():  # warm-up: compile each variant
        jax.block_until_ready(gd.fit(loss, params, (x, y), tx, **kw, **extra))
    for _ in range(7):  # interleaved, so machine noise hits every variant alike
        for name, extra in variants.items():
            t = time.perf_counter()
            jax.block_until_ready(gd.fit(loss, params, (x, y), tx, **kw, **extra))
            times[name].append(time.perf_counter() - t)
    base = statistics.median(times["single program"])
    for name, ts in times.items():
        t = statistics.median(ts)
        print(f"{name:22s}: {t * 1e3:8.1f} ms  ratio {t / base:.3f}")


if __name__ == "__main__":
    main()
