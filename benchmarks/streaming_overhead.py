"""Cost of streaming host batches (fit_stream) vs the in-memory fit, same steps.

    python benchmarks/streaming_overhead.py

Workloads on the built-in digits (1,344 training rows used, 42 batches of 32
an epoch, in order): logistic regression (a tiny step, where per-chunk host
work shows most) and an MLP 64-256-256-10 (a step heavy enough to hide it),
sgd with momentum 0.9, 10 epochs = 420 steps. The in-memory run is
``fit(..., regime=gd.minibatch(32, shuffle=False))``; the stream is a
generator yielding the same NumPy batches, run with ``gd.fit_stream`` in
stream epochs of ``k`` steps (``steps_per_epoch=k``; the device computes the
masked steps of a padded last stream epoch too, so a ``k`` that divides the
stream is cheapest). Prints the median
steady-state time (after a warm-up that compiles every variant; runs
interleaved) and the ratio stream / in-memory.
"""

from __future__ import annotations

import statistics
import time

import jax
import numpy as np

import gdjax as gd

B, EPOCHS, REPEATS = 32, 10, 7


def batches(x: np.ndarray, y: np.ndarray, epochs: int):
    for _ in range(epochs):
        for i in range(0, len(x), B):
            yield x[i : i + B], y[i : i + B]


def main() -> None:
    (x, y), _ = gd.datasets.digits()
    n = (x.shape[0] // B) * B
    x, y = np.asarray(x[:n]), np.asarray(y[:n])
    loss = gd.make_loss(gd.models.mlp, gd.losses.softmax_cross_entropy)
    tx = gd.sgd(0.05, momentum=0.9)
    steps = EPOCHS * n // B
    print(f"{steps} steps of batch {B}; jax {jax.__version__}, {jax.devices()[0]}")
    for name, widths in (
        ("logistic 64-10", [64, 10]),
        ("MLP 64-256-256-10", [64, 256, 256, 10]),
    ):
        params = gd.init.mlp(jax.random.key(0), widths)
        variants = {
            "in-memory fit": lambda params=params: gd.fit(
                loss,
                params,
                (x, y),
                tx,
                key=jax.random.key(1),
                epochs=EPOCHS,
                regime=gd.minibatch(B, shuffle=False),
            )
        }
        # 420 steps: k=60 divides them; k=256 pads the last epoch with 92
        # masked steps, which still compute (the price of not recompiling).
        for k in (15, 60, 256):
            variants[f"fit_stream k={k:3d}"] = lambda k=k, params=params: gd.fit_stream(
                loss, params, batches(x, y, EPOCHS), tx, steps_per_epoch=k
            )
        times: dict[str, list[float]] = {v: [] for v in variants}
        for run in variants.values():  # warm-up: compile every variant
            jax.block_until_ready(run().params)
        for _ in range(REPEATS):
            for v, run in variants.items():
                t = time.perf_counter()
                jax.block_until_ready(run().params)
                times[v].append(time.perf_counter() - t)
        base = statistics.median(times["in-memory fit"])
        print(name)
        for v, ts in times.items():
            t = statistics.median(ts)
            print(f"  {v:20s}: {t * 1e3:8.1f} ms  ratio {t / base:.2f}")


if __name__ == "__main__":
    main()
