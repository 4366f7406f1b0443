"""A sweep of learning rate x batch size, with a heatmap of the final loss.

``gd.sweep`` trains every (seed, learning rate, batch size) at once.
The learning rate is a number in the optimizer state, so all its values run
as members of one vmapped program; the batch size changes the shapes of the
program, so it is an ``outer`` axis: one compiled program per batch size, the
results stacked on labelled axes ``("batch_size", "seed", "learning_rate")``.

The model is softmax regression on the 8x8 digits, every member trained for
the same number of epochs. Expect the best learning rate to grow with the
batch size (larger batches average away more gradient noise), and the largest
rates with the smallest batches to do worst.

Run:  python examples/sweep_lr_batch.py   (writes gdjax-out/sweep_lr_batch.png)
"""

import argparse
import os

import numpy as np

import gdjax as gd

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--out", default="gdjax-out", help="folder for the figure")
parser.add_argument("--epochs", type=int, default=10)
args = parser.parse_args()
quick = os.environ.get("GDJAX_EXAMPLE_QUICK") == "1"
epochs = 3 if quick else args.epochs

(x, y), _ = gd.datasets.digits()
loss = gd.make_loss(gd.models.linear, gd.losses.softmax_cross_entropy)


def init(key):
    return gd.init.dense(key, 64, 10)


learning_rates = [0.1, 0.3, 1.0, 3.0, 10.0, 30.0]
batch_sizes = [8, 32, 128, 512]
if quick:  # one compilation per batch size: keep two of them
    batch_sizes = [8, 128]
result = gd.sweep(
    loss,
    init,
    (x, y),
    gd.sgd(0.1),  # the 0.1 is replaced by each swept value
    seeds=range(2 if quick else 3),
    hyperparams={"learning_rate": learning_rates},
    outer={"batch_size": batch_sizes},
    regime=gd.minibatch(32),  # shuffled mini-batches; outer sets the size
    epochs=epochs,
)
print(f"{result}: {np.size(result.result.epoch)} runs, {epochs} epochs each")

# Mean final training loss over seeds, batch sizes down, learning rates across.
final = result.final_loss  # shape (batch_size, seed, learning_rate)
print("\nfinal training loss, mean over seeds")
print("batch \\ lr " + "".join(f"{lr:>9g}" for lr in learning_rates))
for i, b in enumerate(batch_sizes):
    print(f"{b:>10} " + "".join(f"{v:9.4f}" for v in final[i].mean(axis=0)))

best, value = result.best()
print(
    f"\nbest: batch_size={best['batch_size']}, "
    f"learning_rate={best['learning_rate']:g} (mean final loss {value:.4f})"
)
for i, b in enumerate(batch_sizes):
    j = int(np.nanargmin(final[i].mean(axis=0)))
    print(f"  best learning rate at batch size {b:>3}: {learning_rates[j]:g}")

try:
    from matplotlib.figure import Figure

    from gdjax import plot
except ImportError:
    print("matplotlib is not installed: no figure (pip install 'gdjax[plot]')")
else:
    fig = Figure(figsize=(6.4, 4.4), layout="constrained")
    ax = fig.subplots()
    plot.heatmap(result, x="learning_rate", y="batch_size", ax=ax)
    fig.suptitle(f"softmax regression on the digits, {epochs} epochs")
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "sweep_lr_batch.png")
    fig.savefig(path, dpi=100)
    print(f"wrote {path}")
