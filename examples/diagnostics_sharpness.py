"""Edge of stability: full-batch gradient descent drives the sharpness to 2/η.

Cohen et al. (2021, arXiv:2103.00065) found that full-batch gradient descent on
a neural network first *sharpens* (the top Hessian eigenvalue λmax grows) until
η·λmax reaches 2, the threshold beyond which descent on a quadratic diverges,
and then hovers there while the loss keeps falling, non-monotonically. Here:
a tanh MLP on 512 digits with squared error on one-hot targets, η = 0.05,
λmax recorded by `gd.diagnostics.sharpness_monitor` every 25 epochs inside the
one compiled run.

    python examples/diagnostics_sharpness.py --out ./gdjax-out
"""

import argparse
import functools
import os
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np

import gdjax as gd
from gdjax import diagnostics

QUICK = os.environ.get("GDJAX_EXAMPLE_QUICK") == "1"  # the test suite's short run
LR, EPOCHS, EVERY = 0.05, (300 if QUICK else 4000), 25


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="./gdjax-out", help="folder for the PNG")
    out = pathlib.Path(parser.parse_args().out)
    out.mkdir(parents=True, exist_ok=True)

    (x, y), _ = gd.datasets.digits(test_fraction=0.0)
    x, y = x[:512], jax.nn.one_hot(y[:512], 10)  # squared error: sharpening is clear
    apply = functools.partial(gd.models.mlp, activation=jnp.tanh)
    loss = gd.make_loss(apply, gd.losses.squared_error)
    params = gd.init.mlp(jax.random.key(0), [64, 64, 64, 10])

    # The monitor runs 20 power iterations of Hessian-vector products on the
    # full data every EVERY epochs, inside the compiled loop.
    monitor = diagnostics.sharpness_monitor(loss, key=jax.random.key(1), iters=20)
    start = time.perf_counter()
    run = gd.fit(
        loss,
        params,
        (x, y),
        gd.sgd(LR),
        key=jax.random.key(2),
        epochs=EPOCHS,
        monitors={"sharpness": monitor},
        monitor_every=EVERY,
    )
    seconds = time.perf_counter() - start

    lam = np.asarray(run.history.monitors["sharpness"])
    measured = np.flatnonzero(np.isfinite(lam))  # history rows the monitor wrote
    epoch = np.asarray(run.history.epoch)  # each row's epoch, counting from 1
    eta_lam = LR * lam[measured]
    edge = eta_lam >= 1.9
    reached = int(epoch[measured[np.argmax(edge)]]) if edge.any() else None
    late = eta_lam[epoch[measured] > 2 * EPOCHS // 3]
    loss_curve = np.asarray(run.history.loss)
    print(
        f"{EPOCHS} epochs of full-batch GD (eta={LR}) in {seconds:.1f} s "
        f"(compile included); {run.reason}"
    )
    print(f"eta*lambda_max: start {eta_lam[0]:.3f}, max {eta_lam.max():.3f}")
    print(f"first reached 1.9 at epoch {reached}")
    print(
        f"last third: mean {late.mean():.3f}, min {late.min():.3f}, "
        f"max {late.max():.3f} (edge of stability: about 2)"
    )
    if reached is not None:
        rises = int(np.sum(np.diff(loss_curve[reached - 1 :]) > 0))
        print(
            f"loss {loss_curve[0]:.4f} -> {run.final_loss:.4f}; it rose in {rises} "
            "epochs after reaching the edge (non-monotone descent)"
        )

    try:
        from matplotlib.figure import Figure

        from gdjax import plot
    except ImportError:
        print("matplotlib is not installed: no figure (pip install 'gdjax[plot]')")
        return
    fig = Figure(figsize=(11, 4), layout="constrained")
    ax_loss, ax_sharp = fig.subplots(1, 2)
    ax_loss.plot(epoch, loss_curve)
    ax_loss.set(
        yscale="log",
        xlabel="epoch",
        ylabel="training loss",
        title=f"full-batch GD, eta = {LR}",
    )
    plot.plot_sharpness(run.history, LR, ax=ax_sharp)
    path = out / "diagnostics_sharpness.png"
    fig.savefig(path, dpi=120)
    print(f"saved {path}")


if __name__ == "__main__":
    main()
