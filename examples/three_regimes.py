"""Plain, stochastic and mini-batch gradient descent: one MLP, three regimes.

The three regimes differ only in which examples feed each step,

    theta <- theta - lr * grad L_B(theta),

with B all n examples (full batch: one step per epoch), one example
(stochastic: n steps per epoch) or B examples (mini-batch: ceil(n / B) steps
per epoch). Each is one ``gd.fit`` call with a different ``regime=``, from the
same initial parameters, for the same number of epochs, so every regime sees
the same examples the same number of times. The printed loss is the training
loss on the whole training set after each epoch (a monitor evaluated inside
the compiled run), so the three columns are directly comparable.

Run:  python examples/three_regimes.py   (writes gdjax-out/three_regimes.png)
"""

import argparse
import os

import jax

import gdjax as gd

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--out", default="gdjax-out", help="folder for the figure")
parser.add_argument("--epochs", type=int, default=10)
args = parser.parse_args()
epochs = 3 if os.environ.get("GDJAX_EXAMPLE_QUICK") == "1" else args.epochs

(x, y), (x_test, y_test) = gd.datasets.digits()
n = x.shape[0]
init_key, run_key = jax.random.split(jax.random.key(0))
params = gd.init.mlp(init_key, [64, 32, 10])  # the same start for every regime
loss = gd.make_loss(gd.models.mlp, gd.losses.softmax_cross_entropy)

# (regime, learning rate): each rate a little below where that regime turns
# erratic on this problem (noisier gradients need smaller steps).
regimes = {
    "full batch": (gd.full_batch(), 0.7),
    "mini-batch 32": (gd.minibatch(32), 0.1),
    "stochastic": (gd.stochastic(), 0.02),
}
results = {}
for name, (regime, lr) in regimes.items():
    results[name] = gd.fit(
        loss,
        params,
        (x, y),
        gd.sgd(lr),
        key=run_key,
        epochs=epochs,
        regime=regime,
        monitors={"train_loss": loss},  # whole training set, after each epoch
        val_data=(x_test, y_test),
        metric=gd.accuracy(gd.models.mlp),
    )
    r = results[name]
    print(
        f"{name:>13}: lr={lr:<5g} {int(r.steps):>6} steps of "
        f"{gd.batching.plan(regime, n).batch_size:>4} examples; "
        f"test accuracy {100 * float(r.history.metric[-1]):.1f}%"
    )

print("\ntraining loss (cross-entropy on all", n, "training images) per epoch")
print("epoch " + "".join(f"{name:>15}" for name in results))
for i, e in enumerate(results["full batch"].history.epoch):  # epochs count from 1
    row = "".join(
        f"{float(r.history.monitors['train_loss'][i]):15.4f}" for r in results.values()
    )
    print(f"{int(e):5d} {row}")

try:
    from matplotlib.figure import Figure

    from gdjax import plot
except ImportError:
    print("matplotlib is not installed: no figure (pip install 'gdjax[plot]')")
else:
    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.subplots()
    plot.loss_curves(
        results,
        ax,
        value="train_loss",
        band=None,  # one seed: no band
        ylabel="training loss (cross-entropy)",
    )
    ax.set_title("MLP 64-32-10 on the digits: one seed, same start")
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "three_regimes.png")
    fig.savefig(path, dpi=100)
    print(f"wrote {path}")
