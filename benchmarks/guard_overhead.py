"""What the non-finite guard costs: ``fit(guard=True)`` vs ``fit(guard=False)``.

The guard checks the loss, every gradient leaf and every new parameter leaf for
NaN/inf at every step (``jnp.isfinite`` reductions and a select), inside the
compiled loop. This times the same mini-batch MLP run on the 8x8 digits both
ways: one warm-up call each (which compiles), then ``--repeats`` timed calls,
alternating, and prints the medians and their ratio.

Run: ``python benchmarks/guard_overhead.py [--epochs 20] [--batch 32]
[--widths 64,128,10] [--repeats 5]``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax

import gdjax as gd


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--widths", default="64,128,10")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)

    (x, y), _ = gd.datasets.digits(test_fraction=0.25)
    widths = [int(w) for w in args.widths.split(",")]
    params = gd.init.mlp(jax.random.key(0), widths)
    loss = gd.make_loss(gd.models.mlp, gd.losses.softmax_cross_entropy)
    kwargs = dict(
        key=jax.random.key(1), epochs=args.epochs, regime=gd.minibatch(args.batch)
    )

    def run(guard: bool) -> float:
        start = time.perf_counter()
        r = gd.fit(
            loss, params, (x, y), gd.sgd(0.1, momentum=0.9), guard=guard, **kwargs
        )
        jax.block_until_ready(r)
        return time.perf_counter() - start

    for guard in (True, False):  # compile both programs
        run(guard)
    times: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(args.repeats):
        for guard in (True, False):
            times[guard].append(run(guard))
    on, off = statistics.median(times[True]), statistics.median(times[False])
    steps = args.epochs * -(-x.shape[0] // args.batch)
    print(
        f"MLP {widths} on digits (n={x.shape[0]}), batch {args.batch}, "
        f"{args.epochs} epochs = {steps} steps, {jax.default_backend()}; "
        f"median of {args.repeats} after warm-up"
    )
    print(f"guard=True : {on * 1e3:8.1f} ms ({on / steps * 1e6:.1f} us/step)")
    print(f"guard=False: {off * 1e3:8.1f} ms ({off / steps * 1e6:.1f} us/step)")
    print(f"ratio guard/no-guard: {on / off:.3f}")
    return {"guard": on, "no_guard": off, "ratio": on / off}


if __name__ == "__main__":
    main()
