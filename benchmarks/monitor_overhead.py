"""Cost of recording the sharpness inside gd.fit: runs with and without the monitor.

A small MLP (64-64-10, relu, cross-entropy) on the 1,347 training digits, trained
by full-batch GD (1 step an epoch) and by mini-batch SGD (batch 32, 43 steps an
epoch). The monitor is `gd.diagnostics.sharpness_monitor(loss, iters=10)`: 11
Hessian-vector products on the full data per evaluation, every k epochs. Each
program is compiled and warmed up first; then the three variants run in
interleaved rounds (so load from other processes hits them alike) and each
time is the median over the rounds.

    python benchmarks/monitor_overhead.py [--epochs 200] [--repeats 7]
"""

import argparse
import platform
import statistics
import time

import jax

import gdjax as gd
from gdjax import diagnostics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--iters", type=int, default=10)
    args = parser.parse_args()

    (x, y), _ = gd.datasets.digits()
    loss = gd.make_loss(gd.models.mlp, gd.losses.softmax_cross_entropy)
    params = gd.init.mlp(jax.random.key(0), [64, 64, 10])
    monitor = diagnostics.sharpness_monitor(
        loss, key=jax.random.key(1), iters=args.iters
    )
    print(
        f"jax {jax.__version__} on {jax.devices()[0].device_kind} "
        f"({platform.machine()}), {args.epochs} epochs, sharpness iters="
        f"{args.iters}, median of {args.repeats} interleaved rounds"
    )
    print(
        f"{'regime':16s} {'no monitor':>11s} {'k=1':>9s} {'ratio':>6s} "
        f"{'k=10':>9s} {'ratio':>6s}"
    )
    for label, regime in (
        ("full batch", gd.full_batch()),
        ("mini-batch 32", gd.minibatch(32)),
    ):

        def run(every, regime=regime):
            mons = None if every is None else {"sharpness": monitor}
            result = gd.fit(
                loss,
                params,
                (x, y),
                gd.sgd(0.1),
                key=jax.random.key(2),
                epochs=args.epochs,
                regime=regime,
                monitors=mons,
                monitor_every=every or 1,
            )
            return jax.block_until_ready(result.params)

        variants = (None, 1, 10)
        times = {every: [] for every in variants}
        for every in variants:
            run(every)  # compile and warm up
        for _ in range(args.repeats):
            for every in variants:
                start = time.perf_counter()
                run(every)
                times[every].append(time.perf_counter() - start)
        base, k1, k10 = (statistics.median(times[every]) for every in variants)
        print(
            f"{label:16s} {base:10.3f}s {k1:8.3f}s {k1 / base:6.2f} "
            f"{k10:8.3f}s {k10 / base:6.2f}"
        )


if __name__ == "__main__":
    main()
