"""Dropout: an MLP whose loss draws a fresh key every step, by gd.fit and gd.sweep.

The MLP 64-256-256-10 drops each hidden unit with probability 0.2 while it
trains (inverted dropout: the kept ones are scaled by 1/0.8). The loss is
declared with ``keyed``: it is called ``loss(params, batch, key)``, step t
receiving ``step_key(run_key, t)`` (a stream apart from the data order, the
same after a resume or in chunks), and evaluated with ``key=None``, which the
loss reads as inference mode (no dropout) for ``val_data`` and the metric.

Then a 4-seed ``gd.sweep``: each member starts from its own initial
parameters and draws its own dropout keys, all in one compiled program.

Run:  python examples/dropout_mlp.py
"""

import argparse
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax

import gdjax as gd
from gdjax.loss_forms import keyed  # gd.keyed

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--out", default="gdjax-out", help="(unused: no figure)")
parser.add_argument("--epochs", type=int, default=40)
args = parser.parse_args()
epochs = 5 if os.environ.get("GDJAX_EXAMPLE_QUICK") == "1" else args.epochs
RATE = 0.2

(x, y), (x_test, y_test) = gd.datasets.digits()
sizes = (64, 256, 256, 10)


def init(key):
    keys = jax.random.split(key, len(sizes) - 1)
    he = jax.nn.initializers.he_normal()
    return [
        {"w": he(k, (m, n)), "b": jnp.zeros((1, n))}
        for k, m, n in zip(keys, sizes[:-1], sizes[1:], strict=True)
    ]


def apply(params, x, key=None):
    """Logits; with a key, dropout after each hidden layer."""
    h = x
    for i, layer in enumerate(params):
        h = h @ layer["w"] + layer["b"]
        if i < len(params) - 1:
            h = jax.nn.relu(h)
            if key is not None:
                keep = jax.random.bernoulli(
                    jax.random.fold_in(key, i), 1 - RATE, h.shape
                )
                h = jnp.where(keep, h / (1 - RATE), 0.0)
    return h


def loss(params, batch, key):
    x, y = batch
    logits = apply(params, x, key)  # key=None: evaluation, no dropout
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def accuracy(params, batch):
    x, y = batch
    return jnp.mean(apply(params, x).argmax(-1) == y)


options = dict(
    epochs=epochs,
    regime=gd.minibatch(128, last_batch="drop"),
    val_data=(x_test, y_test),
    metric=accuracy,
)
tx = gd.sgd(0.05, momentum=0.9)
init_key, run_key = gd.seed_keys(0)
result = gd.fit(keyed(loss), init(init_key), (x, y), tx, key=run_key, **options)
plain = gd.fit(
    lambda p, b: loss(p, b, None), init(init_key), (x, y), tx, key=run_key, **options
)
print(f"dropout {RATE}: {result.reason}")
print(
    f"fit: test accuracy {100 * result.history.metric[-1]:.1f}% with dropout, "
    f"{100 * plain.history.metric[-1]:.1f}% without "
    f"(test loss {result.history.val_loss[-1]:.4f} vs {plain.history.val_loss[-1]:.4f})"
)

sweep = gd.sweep(keyed(loss), init, (x, y), tx, seeds=range(4), **options)
acc = 100 * np.asarray(sweep.final("metric"))
print(
    f"sweep of 4 seeds: test accuracy {acc.mean():.1f}% +- {acc.std():.1f} "
    f"({', '.join(f'{a:.1f}' for a in acc)})"
)
member = sweep.member(seed=0)
same = float(np.max(np.abs(member.params[0]["w"] - result.params[0]["w"])))
print(f"sweep member seed=0 equals the fit above: max |diff| {same:.1e}")
