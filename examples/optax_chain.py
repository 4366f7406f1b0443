"""gdjax and optax compose both ways: gd.sgd inside optax.chain, optax.adam in gd.fit.

Every gdjax update rule is an optax ``GradientTransformation``, and ``gd.fit``
takes any optax transformation, so the two libraries mix freely:

1. ``optax.chain`` of gradient clipping (``optax.clip_by_global_norm``),
   weight decay (``optax.add_decayed_weights``: added to the gradient, as
   ``torch.optim.SGD(weight_decay=...)`` does) and gdjax's SGD with
   momentum and a 1/t learning-rate schedule (``gd.inverse_time_decay``):

       g <- clip(g, 1);  g <- g + wd * theta;  theta <- theta - lr_t * m(g),
       lr_t = lr_0 / (1 + lr_0 * lambda * t)  (Bottou's schedule);

2. optax's Adam with a cosine learning-rate schedule from ``optax.schedules``;
3. for reference, plain ``gd.sgd`` with a constant step.

All three train the same MLP on the 8x8 digits from the same start, each as
one compiled ``gd.fit`` run.

Run:  python examples/optax_chain.py
"""

import argparse
import os

import jax
import optax

import gdjax as gd

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--out", default="gdjax-out", help="(unused: no figure)")
parser.add_argument("--epochs", type=int, default=20)
args = parser.parse_args()
epochs = 3 if os.environ.get("GDJAX_EXAMPLE_QUICK") == "1" else args.epochs

(x, y), (x_test, y_test) = gd.datasets.digits()
batch_size = 32
steps = epochs * -(-x.shape[0] // batch_size)  # total steps, for the cosine schedule
init_key, run_key = jax.random.split(jax.random.key(0))
params = gd.init.mlp(init_key, [64, 64, 10])
loss = gd.make_loss(gd.models.mlp, gd.losses.softmax_cross_entropy)

transforms = {
    # 1. gdjax SGD (momentum, scheduled step) inside an optax chain.
    "clip + decay + gd.sgd(1/t)": optax.chain(
        optax.clip_by_global_norm(1.0),
        optax.add_decayed_weights(1e-4),
        gd.sgd(gd.inverse_time_decay(0.1, decay_rate=1e-2), momentum=0.9),
    ),
    # 2. an optax optimizer with an optax schedule.
    "optax.adam(cosine)": optax.adam(optax.cosine_decay_schedule(3e-3, steps)),
    # 3. the baseline.
    "gd.sgd(0.1)": gd.sgd(0.1),
}

print(f"MLP 64-64-10 on the digits, mini-batch {batch_size}, {epochs} epochs\n")
print(f"{'transform':>28}  final train loss  test accuracy")
results = {}
for name, tx in transforms.items():
    result = results[name] = gd.fit(
        loss,
        params,
        (x, y),
        tx,
        key=run_key,
        epochs=epochs,
        regime=gd.minibatch(batch_size),
        val_data=(x_test, y_test),
        metric=gd.accuracy(gd.models.mlp),
    )
    print(
        f"{name:>28}  {result.final_loss:16.4f}  "
        f"{100 * float(result.history.metric[-1]):12.1f}%"
    )

# gd.sgd keeps its numbers as arrays in its state, even inside a chain: after
# training, the scheduled learning rate is 0.1 / (1 + 0.1 * 1e-2 * t) at step t.
chained = results["clip + decay + gd.sgd(1/t)"]
numbers = gd.get_hyperparams(chained.opt_state)
print(
    f"\ngd.sgd inside the chain after {int(chained.steps)} steps: "
    + ", ".join(f"{k}={float(v):.4g}" for k, v in numbers.items())
)
