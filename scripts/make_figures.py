"""Regenerate every figure in ``docs/`` with one command.

    python scripts/make_figures.py            # all figures (about a minute on 2 cores)
    python scripts/make_figures.py --only sweep_curves heatmap

Each figure is drawn by gdjax's public API (``import gdjax as gd``) on a small
problem that trains in seconds on a CPU, and written atomically to
``docs/figures/<name>.png`` (the demo's picture to ``docs/demo.png``).

``docs/figures/sweep_curves_before.png`` is frozen: it shows what
``gd.plot.loss_curves`` drew for the 8 seeds x 5 learning rates x 3 momenta
sweep before issue 22, made with the code of commit f7f6eb4::

    mkdir /tmp/before && git archive f7f6eb4 | tar -x -C /tmp/before
    PYTHONPATH=/tmp/before python scripts/make_figures.py --before
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIGURES = os.path.join(ROOT, "docs", "figures")

SEEDS = list(range(8))
LEARNING_RATES = [0.01, 0.03, 0.1, 0.3, 1.0]
MOMENTA = [0.0, 0.5, 0.9]
EPOCHS = 20
BATCH = 64


def _save(fig, path: str) -> None:
    """Write ``fig`` as a PNG through a temporary file, then rename into place."""
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".png.tmp")
    os.close(fd)
    try:
        fig.savefig(tmp, format="png", dpi=100)
        os.replace(tmp, path)
    except BaseException:
        os.remove(tmp)
        raise
    print(f"wrote {os.path.relpath(path, ROOT)}")


def digits_problem():
    """Softmax regression on the 8x8 digits: loss, init, training data."""
    import functools

    import gdjax as gd

    train, _ = gd.datasets.digits()
    loss = gd.make_loss(gd.models.mlp, gd.losses.softmax_cross_entropy)
    init = functools.partial(gd.init.mlp, widths=[64, 10])
    return loss, init, train


def sweep_8x5x3():
    """8 seeds x 5 learning rates x 3 momenta, mini-batch 64, 20 epochs."""
    import gdjax as gd

    loss, init, train = digits_problem()
    return gd.sweep(
        loss,
        init,
        train,
        gd.sgd(0.1, momentum=0.5),  # nonzero momentum: it is swept, so injected
        seeds=SEEDS,
        hyperparams={"learning_rate": LEARNING_RATES, "momentum": MOMENTA},
        epochs=EPOCHS,
        regime=gd.minibatch(BATCH),
    )


def before() -> None:
    """What one call of the pre-issue-22 ``loss_curves`` drew for the sweep."""
    import gdjax as gd

    sw = sweep_8x5x3()
    ax = gd.plot.loss_curves({"sgd": sw})
    ax.set_title("before (gdjax f7f6eb4): gd.plot.loss_curves({'sgd': sweep})")
    _save(ax.figure, os.path.join(FIGURES, "sweep_curves_before.png"))


def sweep_curves() -> None:
    import gdjax as gd

    sw = sweep_8x5x3()
    fig = gd.plot.sweep_curves(sw)
    _save(fig, os.path.join(FIGURES, "sweep_curves_after.png"))
    ax = gd.plot.heatmap(sw, x="learning_rate", y="momentum")
    _save(ax.figure, os.path.join(FIGURES, "heatmap.png"))


def loss_curves() -> None:
    import gdjax as gd

    loss, init, train = digits_problem()
    runs = {}
    for name, regime, lr in (
        ("full batch, lr 0.5", gd.full_batch(), 0.5),
        ("mini-batch 64, lr 0.1", gd.minibatch(BATCH), 0.1),
    ):
        runs[name] = gd.sweep(
            loss,
            init,
            train,
            gd.sgd(lr),
            seeds=SEEDS[:4],
            epochs=EPOCHS,
            regime=regime,
        )
    ax = gd.plot.loss_curves(runs, x="steps")
    ax.set_title("two regimes, 4 seeds each: median and 10-90% band")
    _save(ax.figure, os.path.join(FIGURES, "loss_curves.png"))


def diagnostics() -> None:
    import jax
    import jax.numpy as jnp
    import numpy as np

    import gdjax as gd

    loss, init, train = digits_problem()
    params = init(jax.random.key(0))
    result = gd.diagnostics.lr_range_test(
        loss,
        params,
        train,
        key=jax.random.key(1),
        lrs=np.logspace(-3, 1.5, 16),
        steps=30,
    )
    ax = gd.plot.plot_lr_range(result)
    _save(ax.figure, os.path.join(FIGURES, "lr_range.png"))

    # Full-batch descent on an MLP: the sharpness rises to about 2 / lr
    # (progressive sharpening, the edge of stability), then falls.
    x, y = jnp.asarray(train[0][:256]), jnp.asarray(train[1][:256])
    mlp = gd.init.mlp(jax.random.key(0), widths=[64, 32, 10])
    lr = 1.0
    run = gd.fit(
        loss,
        mlp,
        (x, y),
        gd.sgd(lr),
        key=jax.random.key(2),
        epochs=300,
        monitors={
            "sharpness": gd.diagnostics.sharpness_monitor(loss, key=jax.random.key(3))
        },
        monitor_every=5,
    )
    ax = gd.plot.plot_sharpness(run.history, lr)
    _save(ax.figure, os.path.join(FIGURES, "sharpness.png"))


def demo() -> None:
    """The demo's picture, by the command itself (defaults), into docs/."""
    with tempfile.TemporaryDirectory() as out:
        subprocess.run(
            [sys.executable, "-m", "gdjax", "demo", "--quiet", "--out", out],
            check=True,
        )
        os.replace(
            os.path.join(out, "demo.png"), os.path.join(ROOT, "docs", "demo.png")
        )
    print("wrote docs/demo.png")


FIGS = {
    "sweep_curves": sweep_curves,
    "loss_curves": loss_curves,
    "diagnostics": diagnostics,
    "demo": demo,
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=sorted(FIGS), default=None)
    parser.add_argument(
        "--before", action="store_true", help="only the frozen 'before' image"
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("MPLBACKEND", "Agg")
    if args.before:
        before()
        return 0
    for name in args.only or FIGS:
        start = time.perf_counter()
        FIGS[name]()
        print(f"  {name}: {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
