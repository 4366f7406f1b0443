"""Gradient noise scale: how large a batch is worth it, measured during training.

McCandlish et al. (2018, arXiv:1812.06162) predict the critical batch size, past
which a bigger batch stops buying proportionally fewer steps, by the simple
noise scale B_simple = tr(Σ)/|G|² (trace of the per-example gradient covariance
over the squared true gradient). It grows as the loss falls: early on every
example's gradient points the same way; later the signal |G|² shrinks faster
than the noise tr(Σ). Here a small MLP on the digits, trained by mini-batch
SGD, records both estimates every epoch (two `noise_scale_monitor`s on
per-example gradients); as the paper advises, each is smoothed before the
ratio is taken. The paper's two-batch estimator (Appendix A), which needs only
batch gradients, checks the end point.

    python examples/diagnostics_noise_scale.py --out ./gdjax-out
"""

import argparse
import os
import pathlib

import jax
import numpy as np

import gdjax as gd
from gdjax import diagnostics

QUICK = os.environ.get("GDJAX_EXAMPLE_QUICK") == "1"  # the test suite's short run
BATCH, EPOCHS, SMOOTH = 32, (6 if QUICK else 30), 5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="./gdjax-out", help="folder for the PNG")
    out = pathlib.Path(parser.parse_args().out)
    out.mkdir(parents=True, exist_ok=True)

    (x, y), _ = gd.datasets.digits()
    loss = gd.make_loss(gd.models.mlp, gd.losses.softmax_cross_entropy)
    params = gd.init.mlp(jax.random.key(0), [64, 32, 10])
    monitors = {
        name: diagnostics.noise_scale_monitor(loss, quantity=name)
        for name in ("trace_cov", "grad_norm_sq")
    }
    run = gd.fit(
        loss,
        params,
        (x, y),
        gd.sgd(0.05),
        key=jax.random.key(1),
        epochs=EPOCHS,
        regime=gd.minibatch(BATCH),
        monitors=monitors,
    )

    # Moving averages of numerator and denominator, then their ratio.
    kernel = np.ones(SMOOTH) / SMOOTH
    recorded = run.history.monitors
    trace = np.convolve(np.asarray(recorded["trace_cov"]), kernel, "valid")
    grad_sq = np.convolve(np.asarray(recorded["grad_norm_sq"]), kernel, "valid")
    b_simple = trace / grad_sq
    rows = np.arange(b_simple.size) + SMOOTH // 2  # the centre of each window
    epochs = np.asarray(run.history.epoch)[rows]  # counting from 1
    loss_curve = np.asarray(run.history.loss)
    print(f"mini-batch SGD, batch {BATCH}, on {x.shape[0]} digits; {run.reason}")
    print(f" epoch   loss   tr(Sigma)   |G|^2   B_simple  ({SMOOTH}-epoch averages)")
    for i in range(0, b_simple.size, 4):
        print(
            f"{epochs[i]:6d} {loss_curve[rows[i]]:7.4f} {trace[i]:9.3f} "
            f"{grad_sq[i]:8.4f} {b_simple[i]:9.1f}"
        )

    # At the end, both estimators. With batches drawn without replacement the
    # two-batch estimates are unbiased for exactly the per-example ones.
    simple = diagnostics.simple_noise_scale(loss, run.params, (x, y))
    two = diagnostics.noise_scale_two_batch(
        loss,
        run.params,
        (x, y),
        key=jax.random.key(2),
        b_small=32,
        b_big=1024,
        repeats=64,
    )
    for name, ns in (("per-example", simple), ("two-batch", two)):
        print(
            f"final params, {name:11s}: tr(Sigma)={float(ns.trace_cov):.3f} "
            f"|G|^2={float(ns.grad_norm_sq):.4f} B_simple={float(ns.b_simple):.0f}"
        )
    side = "below" if BATCH < b_simple[-1] else "above"
    print(
        f"B_simple grew {b_simple[-1] / b_simple[0]:.1f}x; batch {BATCH} is {side} "
        "the critical batch size"
    )

    try:
        from matplotlib.figure import Figure
    except ImportError:
        print("matplotlib is not installed: no figure (pip install 'gdjax[plot]')")
        return
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.subplots()
    ax.plot(epochs, b_simple, "o-", ms=3, label=r"$B_\mathrm{simple}$ (smoothed)")
    ax.axhline(BATCH, color="C3", ls="--", lw=1, label=f"batch size used ({BATCH})")
    ax.set(
        yscale="log",
        xlabel="epoch",
        ylabel="examples",
        title="gradient noise scale (critical batch size)",
    )
    ax.legend(fontsize="small")
    path = out / "diagnostics_noise_scale.png"
    fig.savefig(path, dpi=120)
    print(f"saved {path}")


if __name__ == "__main__":
    main()
