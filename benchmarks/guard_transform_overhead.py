"""What ``gd.guard.reject_nonfinite`` costs in a loop of your own, on W3 and W5.

Each variant is the same hand-written run, one ``jax.jit`` of a ``lax.scan``
over epochs of a ``lax.scan`` over the epoch's batches (``gd.pieces.batches``
and ``gather``, ``jax.grad`` of the workload's loss, ``tx.update``,
``optax.apply_updates``), with ``tx`` one of

* ``unguarded``: ``optax.chain(optax.clip_by_global_norm(1.0), optax.sgd(lr, m))``
* ``reject_nonfinite``: ``optax.chain(optax.clip_by_global_norm(1.0),
  gd.guard.reject_nonfinite(optax.sgd(lr, m)))``
* ``apply_if_finite``: the same with ``optax.apply_if_finite(..., 10)`` (reference)

W3 = SGD + momentum 0.9, MLP 64-256-256-10, batch 128 on the digits; W5 = SGD
with batch 1, binary logistic regression (``benchmarks/workloads.py``). All
variants compile first (one warm-up call each); then ``--repeats`` rounds, each
timing every variant once in turn (interleaved, in one process), and the
medians and their ratios to ``unguarded`` are printed side by side.

Run: ``python benchmarks/guard_transform_overhead.py [--mode full|quick|smoke]
[--repeats 7] [--only W3,W5]``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import optax

from benchmarks import workloads
from gdjax import guard, pieces


def transforms(lr: float, momentum: float) -> dict[str, optax.GradientTransformation]:
    def sgd():
        return optax.sgd(lr, momentum=momentum or None)

    clip = optax.clip_by_global_norm(1.0)
    return {
        "unguarded": optax.chain(clip, sgd()),
        "reject_nonfinite": optax.chain(clip, guard.reject_nonfinite(sgd())),
        "apply_if_finite": optax.chain(clip, optax.apply_if_finite(sgd(), 10)),
    }


def make_run(w: workloads.Workload, tx: optax.GradientTransformation):
    """The whole run as one jitted program: ``run(params, key) -> params``."""
    loss = w.gd_loss()
    data = (jnp.asarray(w.x), jnp.asarray(w.y))
    regime = w.regime()

    def epoch(carry, e, key):
        idx, _ = pieces.batches(regime, w.n, key, e)  # last batch dropped: no weights

        def step(carry, i):
            params, state = carry
            grads = jax.grad(loss)(params, pieces.gather(data, i))
            updates, state = tx.update(grads, state, params)
            return (optax.apply_updates(params, updates), state), None

        return jax.lax.scan(step, carry, idx)[0], None

    @jax.jit
    def run(params, key):
        carry = (params, tx.init(params))
        epochs = jnp.arange(1, w.epochs + 1)
        carry, _ = jax.lax.scan(lambda c, e: epoch(c, e, key), carry, epochs)
        return carry[0]

    return run


def measure(w: workloads.Workload, repeats: int) -> dict[str, float]:
    params = jax.tree.map(jnp.asarray, w.params)
    key = jax.random.key(w.seed)
    runs = {
        name: make_run(w, tx)
        for name, tx in transforms(w.learning_rate, w.momentum).items()
    }
    finals = {}
    for name, run in runs.items():  # compile each, and check they agree
        finals[name] = jax.block_until_ready(run(params, key))
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            jax.block_until_ready(run(params, key))
            times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(t) for name, t in times.items()}
    base = medians["unguarded"]
    drift = {
        name: max(
            float(jnp.max(jnp.abs(a - b)))
            for a, b in zip(
                jax.tree.leaves(finals[name]),
                jax.tree.leaves(finals["unguarded"]),
                strict=True,
            )
        )
        for name in runs
    }
    print(
        f"{w.name}: {w.title}; {w.steps} steps, {jax.default_backend()}, "
        f"median of {repeats} interleaved repeats"
    )
    for name, m in medians.items():
        spread = f"{min(times[name]) * 1e3:.1f}-{max(times[name]) * 1e3:.1f}"
        print(
            f"  {name:17s} {m * 1e3:9.1f} ms  ({m / w.steps * 1e6:7.2f} us/step, "
            f"range {spread} ms)  ratio {m / base:.3f}"
        )
    print(
        "  final params, max |difference| from unguarded (no step rejected; "
        "float rounding, see gdjax/guard.py): "
        + ", ".join(
            f"{name} {d:.1e}" for name, d in drift.items() if name != "unguarded"
        )
    )
    return {f"{w.name}/{name}": m / base for name, m in medians.items()}


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", default="full", choices=workloads.MODES)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--only", default="W3,W5")
    args = parser.parse_args(argv)
    ratios: dict[str, float] = {}
    for name in args.only.split(","):
        ratios.update(measure(workloads.build(name, args.mode), args.repeats))
    return ratios


if __name__ == "__main__":
    main()
