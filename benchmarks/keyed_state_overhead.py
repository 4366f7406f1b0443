"""What a key and a state cost a run: declared losses against a plain loss, on W3.

W3: SGD with momentum 0.9, MLP 64-256-256-10 (ReLU), the 8x8 digits, batch 128
(last batch dropped: a declared loss takes no padding), 40 epochs. The same loss
arithmetic in five forms, each ``gd.fit`` timed after a warm-up call (which
compiles), interleaved round by round, one process; it prints the ratio of the
medians, the median of each round's ratio (robust to a machine whose load
drifts) and the ratio of median process CPU times (less sensitive to other
processes than wall time), and the ratio of the fastest runs:

* ``plain``: ``loss(params, batch)`` (the 0.1 program: no key, no state);
* ``keyed``: ``keyed(loss)`` whose loss reads one bit of its key (so the key
  derivation is not dead code) and adds ``0 * bit``: the plumbing of the key
  (two ``fold_in`` per step) with next to no use of it;
* ``stateful``: ``stateful(loss, state)`` carrying a step counter and the
  running mean of the loss (the carry, the guard's select on it);
* ``keyed+stateful``: both;
* ``dropout``: real dropout (rate 0.2) on both hidden layers, for scale: what a
  model that uses its key pays (the mask draws), not plumbing.

Run: ``python benchmarks/keyed_state_overhead.py [--epochs 40] [--repeats 11]``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import optax

import gdjax as gd
from gdjax.loss_forms import keyed, stateful

SIZES = (64, 256, 256, 10)


def init(key):
    keys = jax.random.split(key, len(SIZES) - 1)
    he = jax.nn.initializers.he_normal()
    return [
        {"w": he(k, (m, n)), "b": jnp.zeros((1, n))}
        for k, m, n in zip(keys, SIZES[:-1], SIZES[1:], strict=True)
    ]


def apply(params, x, key=None, rate=0.2):
    h = x
    for i, layer in enumerate(params):
        h = h @ layer["w"] + layer["b"]
        if i < len(params) - 1:
            h = jax.nn.relu(h)
            if key is not None:
                keep = jax.random.bernoulli(
                    jax.random.fold_in(key, i), 1 - rate, h.shape
                )
                h = jnp.where(keep, h / (1 - rate), 0.0)
    return h


def plain(params, batch):
    x, y = batch
    return optax.softmax_cross_entropy_with_integer_labels(apply(params, x), y).mean()


def one_bit(key):
    return (jax.random.bits(key, (), jnp.uint32) & 1).astype(jnp.float32)


def with_key(params, batch, key):
    value = plain(params, batch)
    return value if key is None else value + 0.0 * one_bit(key)


def with_state(params, state, batch):
    value = plain(params, batch)
    n = state["n"] + 1
    mean = state["mean"] + (value - state["mean"]) / n.astype(value.dtype)
    return value, {"n": n, "mean": mean}


def with_both(params, state, batch, key):
    value, new = with_state(params, state, batch)
    return value + 0.0 * one_bit(key), new


def dropout(params, batch, key):
    x, y = batch
    logits = apply(params, x, key)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


STATE0 = {"n": jnp.zeros((), jnp.int32), "mean": jnp.zeros(())}
FORMS = {
    "plain": plain,
    "keyed": keyed(with_key),
    "stateful": stateful(with_state, STATE0),
    "keyed+stateful": stateful(with_both, STATE0, takes_key=True),
    "dropout": keyed(dropout),
}


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=11)
    args = parser.parse_args(argv)

    (x, y), _ = gd.datasets.digits()
    params = init(jax.random.key(0))
    kwargs = dict(
        key=jax.random.key(1),
        epochs=args.epochs,
        regime=gd.minibatch(args.batch, last_batch="drop"),
    )
    tx = gd.sgd(0.05, momentum=0.9)

    cpu: dict[str, list[float]] = {name: [] for name in FORMS}

    def run(name: str) -> float:
        start, start_cpu = time.perf_counter(), time.process_time()
        r = gd.fit(FORMS[name], params, (x, y), tx, **kwargs)
        jax.block_until_ready(r)
        cpu[name].append(time.process_time() - start_cpu)
        return time.perf_counter() - start

    for name in FORMS:  # compile every program
        run(name)
        cpu[name].clear()
    times: dict[str, list[float]] = {name: [] for name in FORMS}
    for _ in range(args.repeats):
        for name in FORMS:
            times[name].append(run(name))
    med = {name: statistics.median(t) for name, t in times.items()}
    # Paired: each round's ratio to that round's plain run (robust to load drift).
    paired = {
        name: statistics.median(a / b for a, b in zip(t, times["plain"], strict=True))
        for name, t in times.items()
    }
    steps = args.epochs * (x.shape[0] // args.batch)
    print(
        f"W3: MLP {SIZES} on digits (n={x.shape[0]}), batch {args.batch}, "
        f"{args.epochs} epochs = {steps} steps, {jax.default_backend()}; "
        f"median of {args.repeats}, interleaved, after warm-up"
    )
    cpu_med = {name: statistics.median(t) for name, t in cpu.items()}
    for name, t in med.items():
        print(
            f"{name:15s} {t * 1e3:8.1f} ms ({t / steps * 1e6:6.1f} us/step)  "
            f"ratio to plain {t / med['plain']:.3f} (paired median {paired[name]:.3f}; "
            f"CPU time {cpu_med[name] / cpu_med['plain']:.3f}; "
            f"fastest {min(times[name]) / min(times['plain']):.3f})"
        )
    return paired


if __name__ == "__main__":
    main()
