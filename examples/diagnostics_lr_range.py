"""Learning-rate range test: 28 learning rates trained side by side, one program.

Smith (2017, arXiv:1506.01186) picks a learning rate by training briefly at
increasing rates and reading the loss curve: too small barely moves, too large
diverges, and a good rate sits where the loss falls fastest. In gdjax each rate
is its own short run of the same `gd.fit` program, vmapped over the learning
rate held as an array in the optimizer state: one compilation for the grid.
Here: an MLP on the digits, 2 epochs of mini-batch SGD (batch 64) per rate;
then a 15-epoch run at the suggested rate against one at a tenth of it.

    python examples/diagnostics_lr_range.py --out ./gdjax-out
"""

import argparse
import os
import pathlib
import time

import jax
import numpy as np

import gdjax as gd
from gdjax import diagnostics

QUICK = os.environ.get("GDJAX_EXAMPLE_QUICK") == "1"  # the test suite's short run
RATES, RANGE_EPOCHS, TRAIN_EPOCHS = (8, 1, 2) if QUICK else (28, 2, 15)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="./gdjax-out", help="folder for the PNG")
    out = pathlib.Path(parser.parse_args().out)
    out.mkdir(parents=True, exist_ok=True)

    (x, y), (x_test, y_test) = gd.datasets.digits()
    loss = gd.make_loss(gd.models.mlp, gd.losses.softmax_cross_entropy)
    params = gd.init.mlp(jax.random.key(0), [64, 64, 10])
    lrs = np.logspace(-3, 2, RATES)

    start = time.perf_counter()
    res = diagnostics.lr_range_test(
        loss,
        params,
        (x, y),
        gd.sgd,  # a factory: each member gets gd.sgd with its own rate
        key=jax.random.key(1),
        lrs=lrs,
        epochs=RANGE_EPOCHS,
        regime=gd.minibatch(64),
    )
    seconds = time.perf_counter() - start
    print(
        f"{lrs.size} rates x {RANGE_EPOCHS} epochs in {seconds:.1f} s "
        "(one compiled program, compile included)"
    )
    print(
        f"initial loss {res.initial_loss:.3f}; stable up to "
        f"{res.suggestion_max_stable:.3g}; steepest descent at "
        f"{res.suggestion_steepest:.3g}"
    )
    rows = zip(
        res.lrs[::3], res.losses[::3], res.stable[::3], res.unstable[::3], strict=True
    )
    for lr, final, ok, bad in rows:  # every third rate
        verdict = "stable" if ok else ("unstable" if bad else "too slow")
        print(f"  lr {lr:8.4f}  loss {final:9.4f}  {verdict}")

    # Train for real at the suggestion and at a tenth of it.
    accuracy = gd.accuracy(gd.models.mlp)
    for lr in (res.suggestion_steepest, res.suggestion_steepest / 10):
        run = gd.fit(
            loss,
            params,
            (x, y),
            gd.sgd(lr),
            key=jax.random.key(2),
            epochs=TRAIN_EPOCHS,
            regime=gd.minibatch(64),
        )
        acc = float(accuracy(run.params, (x_test, y_test)))
        print(
            f"{TRAIN_EPOCHS} epochs at lr {lr:.3g}: train loss "
            f"{run.final_loss:.4f}, test accuracy {acc:.3f}"
        )

    try:
        from gdjax import plot

        ax = plot.plot_lr_range(res)
    except ImportError:
        print("matplotlib is not installed: no figure (pip install 'gdjax[plot]')")
        return
    ax.set_yscale("log")
    path = out / "diagnostics_lr_range.png"
    ax.figure.savefig(path, dpi=120)
    print(f"saved {path}")


if __name__ == "__main__":
    main()
