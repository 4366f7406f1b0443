"""Batch norm: an MLP whose loss carries running statistics, by gd.fit and gd.sweep.

Each hidden layer of the MLP 64-256-256-10 is normalized with the mean and
variance of its batch while it trains, and the running averages of those
statistics (momentum 0.9) are the loss's *state*: not trained by gradient,
carried through the compiled run, kept with the parameters when a step is
rejected, saved in checkpoints, and stacked over the members of a sweep. The
loss is declared with ``stateful``:

    loss(params, state, batch) -> (value, new_state)

and evaluated (``val_data``, the metric) in inference mode through
``eval_loss``: the running averages instead of the batch's statistics. With a
stateful loss the metric takes the state too: ``metric(params, state, batch)``.

Run:  python examples/batchnorm_mlp.py
"""

import argparse
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax

import gdjax as gd
from gdjax.loss_forms import stateful  # gd.stateful

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--out", default="gdjax-out", help="(unused: no figure)")
parser.add_argument("--epochs", type=int, default=40)
args = parser.parse_args()
epochs = 5 if os.environ.get("GDJAX_EXAMPLE_QUICK") == "1" else args.epochs
MOMENTUM, EPS = 0.9, 1e-5

(x, y), (x_test, y_test) = gd.datasets.digits()
sizes = (64, 256, 256, 10)


def init(key):
    """Weights and biases; a scale and shift (trained) after each normalization."""
    keys = jax.random.split(key, len(sizes) - 1)
    he = jax.nn.initializers.he_normal()
    params = []
    for k, m, n in zip(keys, sizes[:-1], sizes[1:], strict=True):
        layer = {"w": he(k, (m, n)), "b": jnp.zeros((1, n))}
        if n != sizes[-1]:
            layer |= {"scale": jnp.ones((1, n)), "shift": jnp.zeros((1, n))}
        params.append(layer)
    return params


# The running statistics of each hidden layer: the loss's initial state.
state0 = [{"mean": jnp.zeros((1, n)), "var": jnp.ones((1, n))} for n in sizes[1:-1]]


def apply(params, state, x, *, train):
    """Logits and the new running statistics (unchanged when not training)."""
    h, new_state = x, []
    for layer, stats in zip(params[:-1], state, strict=True):
        z = h @ layer["w"] + layer["b"]
        if train:
            mean, var = z.mean(0, keepdims=True), z.var(0, keepdims=True)
            stats = {
                "mean": MOMENTUM * stats["mean"] + (1 - MOMENTUM) * mean,
                "var": MOMENTUM * stats["var"] + (1 - MOMENTUM) * var,
            }
        else:
            mean, var = stats["mean"], stats["var"]
        z = (z - mean) / jnp.sqrt(var + EPS) * layer["scale"] + layer["shift"]
        h = jax.nn.relu(z)
        new_state.append(stats)
    last = params[-1]
    return h @ last["w"] + last["b"], new_state


def xent(logits, y):
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def loss(params, state, batch):
    x, y = batch
    logits, new_state = apply(params, state, x, train=True)
    return xent(logits, y), new_state


def eval_loss(params, state, batch):
    x, y = batch
    return xent(apply(params, state, x, train=False)[0], y)


def accuracy(params, state, batch):
    x, y = batch
    return jnp.mean(apply(params, state, x, train=False)[0].argmax(-1) == y)


spec = stateful(loss, state0, eval_loss=eval_loss)
options = dict(
    epochs=epochs,
    # Batch statistics of a padded batch would be wrong: drop the short one.
    regime=gd.minibatch(128, last_batch="drop"),
    val_data=(x_test, y_test),
    metric=accuracy,
)
tx = gd.sgd(0.05, momentum=0.9)
init_key, run_key = gd.seed_keys(0)
result = gd.fit(spec, init(init_key), (x, y), tx, key=run_key, **options)
print(f"batch norm: {result.reason}")
stats = result.loss_state[0]
mean, var = float(stats["mean"].mean()), float(stats["var"].mean())
print(
    f"running statistics of layer 1: mean of means {mean:.3f}, of variances {var:.3f}"
)
batch_mode = xent(
    apply(result.params, result.loss_state, x_test, train=True)[0], y_test
)
print(
    f"fit: test accuracy {100 * result.history.metric[-1]:.1f}% (test loss "
    f"{result.history.val_loss[-1]:.4f} with the running statistics, "
    f"{float(batch_mode):.4f} with the test set's own)"
)

sweep = gd.sweep(spec, init, (x, y), tx, seeds=range(4), **options)
acc = 100 * np.asarray(sweep.final("metric"))
print(
    f"sweep of 4 seeds: test accuracy {acc.mean():.1f}% +- {acc.std():.1f} "
    f"({', '.join(f'{a:.1f}' for a in acc)})"
)
member = sweep.member(seed=0)
same = float(np.max(np.abs(member.loss_state[0]["var"] - stats["var"])))
print(f"sweep member seed=0's running variances equal the fit's: max |diff| {same:.1e}")
