"""Edge of stability, reproduced: full-batch GD drives the sharpness to 2/η.

Cohen et al. (ICLR 2021, arXiv:2103.00065): under full-batch gradient descent
with step η, the sharpness λmax (top Hessian eigenvalue of the training loss)
rises ("progressive sharpening") until it reaches 2/η, the threshold beyond
which descent on a quadratic diverges, and then hovers there while the loss
keeps falling, non-monotonically.

Setup (the paper's classic one, scaled to the built-in digits): 1,000 digits,
a tanh MLP 64-64-64-10 (LeCun-normal init, last layer halved so that training
starts well below 2/η), squared error on one-hot targets, full-batch GD with
η in {0.07, 0.1, 0.13}: all step sizes in one vmapped, jitted program.
The sharpness is measured every 20 steps by Lanczos, warm-started: each
measurement starts from the previous eigenvector
(``gd.diagnostics.sharpness(..., init_vector=v, full_output=True)``), so 3
Hessian-vector products suffice; the final value is checked against a cold
40-step Lanczos estimate.

    python examples/edge_of_stability.py            # full: 4,000 steps
    python examples/edge_of_stability.py --quick    # the test suite's run
    python examples/edge_of_stability.py --out docs/figures
"""

from __future__ import annotations

import argparse
import functools
import os
import pathlib
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import gdjax as gd
from gdjax import diagnostics

FULL = {"etas": (0.07, 0.1, 0.13), "steps": 4000}
QUICK = {"etas": (0.1, 0.13), "steps": 1200}
EVERY = 20  # steps between sharpness measurements
WARM_ITERS = 3  # Lanczos steps per warm-started measurement
N_EXAMPLES = 1000
WIDTHS = (64, 64, 64, 10)


class EdgeOfStability(NamedTuple):
    """One run per step size (leading axis) of full-batch GD.

    Attributes:
      etas: ``(m,)`` step sizes.
      steps: ``(t,)`` the step after which each sharpness was measured
        (0: at initialization).
      sharpness: ``(m, t)`` λmax along the run (warm-started Lanczos).
      residual: ``(m, t)`` the Lanczos residual of each measurement.
      loss: ``(m, S)`` the training loss before each of the S steps.
      cold: ``(m,)`` a cold 40-step Lanczos λmax at the final params.
      seconds: wall time of the run (compile included).
    """

    etas: np.ndarray
    steps: np.ndarray
    sharpness: np.ndarray
    residual: np.ndarray
    loss: np.ndarray
    cold: np.ndarray
    seconds: float


def problem(n: int = N_EXAMPLES):
    """(loss, params, data): a tanh MLP with squared error on one-hot digits."""
    (x, y), _ = gd.datasets.digits(test_fraction=0.0)
    x, y = x[:n], jax.nn.one_hot(y[:n], 10)
    apply = functools.partial(gd.models.mlp, activation=jnp.tanh)
    loss = gd.make_loss(apply, gd.losses.squared_error)
    params = gd.init.mlp(jax.random.key(0), list(WIDTHS))
    params[-1] = {"w": 0.5 * params[-1]["w"], "b": params[-1]["b"]}
    return loss, params, (x, y)


@functools.partial(jax.jit, static_argnames=("loss", "blocks"))
def _trajectories(loss, params, data, etas, v0, *, blocks):
    """vmap over η of: `blocks` x (EVERY GD steps, then a warm λmax)."""

    def member(eta):
        def step(p, _):
            value, grad = jax.value_and_grad(loss)(p, data)
            return jax.tree.map(lambda w, g: w - eta * g, p, grad), value

        def block(carry, _):
            p, v = carry
            p, losses = jax.lax.scan(step, p, None, length=EVERY)
            eig = diagnostics.sharpness(
                loss, p, data, init_vector=v, iters=WARM_ITERS, full_output=True
            )
            return (p, eig.vector), (losses, eig.value, eig.residual)

        (p, _), (losses, lam, res) = jax.lax.scan(
            block, (params, v0), None, length=blocks
        )
        cold = diagnostics.sharpness(loss, p, data, key=jax.random.key(7), iters=40)
        return losses.reshape(-1), lam, res, cold

    return jax.vmap(member)(etas)


def run(etas=FULL["etas"], steps: int = FULL["steps"]) -> EdgeOfStability:
    """Full-batch GD for each η (one vmapped program), λmax every EVERY steps."""
    loss, params, data = problem()
    start = time.perf_counter()
    init = diagnostics.sharpness(
        loss, params, data, key=jax.random.key(1), iters=30, full_output=True
    )
    losses, lam, res, cold = _trajectories(
        loss,
        params,
        data,
        jnp.asarray(etas, jnp.float32),
        init.vector,
        blocks=steps // EVERY,
    )
    losses = np.asarray(losses)
    seconds = time.perf_counter() - start
    m = len(etas)
    lam0 = np.full((m, 1), float(init.value))
    res0 = np.full((m, 1), float(init.residual))
    return EdgeOfStability(
        etas=np.asarray(etas, float),
        steps=np.arange(0, steps + 1, EVERY)[: lam.shape[1] + 1],
        sharpness=np.concatenate([lam0, np.asarray(lam)], 1),
        residual=np.concatenate([res0, np.asarray(res)], 1),
        loss=losses,
        cold=np.asarray(cold),
        seconds=seconds,
    )


def summarize(r: EdgeOfStability) -> list[dict]:
    """Per η: start, first step at 2/η, the second half's band, loss rises."""
    rows = []
    for i, eta in enumerate(r.etas):
        ratio = r.sharpness[i] * eta / 2  # 1 at the edge of stability
        reached = np.flatnonzero(ratio >= 0.95)
        t_reach = int(r.steps[reached[0]]) if reached.size else None
        late = ratio[r.steps >= r.steps[-1] / 2]
        loss = r.loss[i]
        after = loss[t_reach:] if t_reach is not None else loss[:0]
        rows.append(
            {
                "eta": float(eta),
                "start": float(ratio[0]),
                "reached_at": t_reach,
                "late_min": float(late.min()),
                "late_max": float(late.max()),
                "late_mean": float(late.mean()),
                "loss_start": float(loss[0]),
                "loss_end": float(loss[-1]),
                "rises_after_edge": int(np.sum(np.diff(after) > 0)),
                "warm_vs_cold": float(r.sharpness[i, -1] / r.cold[i] - 1),
            }
        )
    return rows


def plot(r: EdgeOfStability, path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_sharp) = plt.subplots(1, 2, figsize=(11, 4.2))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, eta in enumerate(r.etas):
        c = colors[i % len(colors)]
        ax_loss.plot(r.loss[i], color=c, lw=1, label=f"η = {eta:g}")
        ax_sharp.plot(
            r.steps, r.sharpness[i], color=c, lw=1.5, label=f"λmax, η = {eta:g}"
        )
        ax_sharp.axhline(2 / eta, color=c, ls="--", lw=1, label=f"2/η = {2 / eta:.3g}")
    ax_loss.set(
        yscale="log",
        xlabel="step",
        ylabel="training loss (squared error)",
        title="full-batch GD, tanh MLP, 1,000 digits",
    )
    ax_loss.legend()
    ax_sharp.set(
        xlabel="step",
        ylabel="sharpness λmax of the training loss",
        title="sharpness rises to 2/η and hovers (Cohen et al. 2021)",
    )
    ax_sharp.legend(fontsize=8, ncol=2, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def w3_monitor_cost(rounds: int = 7, epochs: int = 40) -> dict[str, float]:
    """The cost of recording a warm-started λmax every epoch of benchmark W3.

    W3: MLP 64-256-256-10 (ReLU), 1,347 training digits, SGD with momentum 0.9
    at 0.05, batch 128 (10 steps an epoch, last batch dropped), 40 epochs.
    Timed (median of interleaved rounds, after compiling): ``gd.fit`` of W3,
    the same run as a hand-written jitted loop over epochs, and that loop with
    a warm-started λmax (2 Lanczos steps from the previous eigenvector) after
    every epoch, on the full training set and on a fixed probe of the first
    128 or 64 examples. Returns seconds per variant.
    """
    import statistics

    import optax

    (x, y), _ = gd.datasets.digits()
    n, batch = int(x.shape[0]), 128
    per_epoch = n // batch
    loss = gd.make_loss(gd.models.mlp, gd.losses.softmax_cross_entropy)
    params0 = gd.init.mlp(jax.random.key(1), [64, 256, 256, 10])
    tx = gd.sgd(0.05, momentum=0.9)

    @functools.partial(jax.jit, static_argnames=("probe", "iters"))
    def loop(params, key, v0, probe, iters):
        def epoch(carry, k):
            p, s, v = carry
            order = jax.random.permutation(k, n)[: per_epoch * batch]

            def step(c, idx):
                p, s = c
                u, s = tx.update(jax.grad(loss)(p, (x[idx], y[idx])), s, p)
                return (optax.apply_updates(p, u), s), None

            (p, s), _ = jax.lax.scan(step, (p, s), order.reshape(per_epoch, batch))
            lam = jnp.zeros(())
            if probe:
                e = diagnostics.sharpness(
                    loss,
                    p,
                    (x[:probe], y[:probe]),
                    init_vector=v,
                    iters=iters,
                    full_output=True,
                )
                v, lam = e.vector, e.value
            return (p, s, v), lam

        keys = jax.random.split(key, epochs)
        (p, _, _), lams = jax.lax.scan(epoch, (params, tx.init(params), v0), keys)
        return p, lams

    def fit():
        return gd.fit(
            loss,
            params0,
            (x, y),
            tx,
            key=jax.random.key(2),
            epochs=epochs,
            regime=gd.minibatch(batch, last_batch="drop"),
        ).params

    key, v0 = jax.random.key(2), jax.tree.map(jnp.zeros_like, params0)
    variants = {"gd.fit": fit, "loop": lambda: loop(params0, key, v0, 0, 0)}
    for probe in (n, 128, 64):
        variants[f"loop+warm({probe})"] = functools.partial(
            loop, params0, key, v0, probe, 2
        )
    for run_it in variants.values():
        jax.block_until_ready(run_it())
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(rounds):
        for k, run_it in variants.items():
            start = time.perf_counter()
            jax.block_until_ready(run_it())
            times[k].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few-second run")
    parser.add_argument("--out", default="./gdjax-out", help="folder for the PNG")
    parser.add_argument(
        "--w3-cost",
        action="store_true",
        help="time a warm-started λmax every epoch of benchmark W3 instead",
    )
    args = parser.parse_args()
    if args.w3_cost:
        t = w3_monitor_cost()
        for k, v in t.items():
            print(
                f"{k:18s} {v * 1e3:8.1f} ms   x{v / t['gd.fit']:.2f} gd.fit   "
                f"x{v / t['loop']:.2f} loop"
            )
        return
    # GDJAX_EXAMPLE_QUICK=1 is how tests/test_examples.py asks for a short run.
    quick = args.quick or os.environ.get("GDJAX_EXAMPLE_QUICK") == "1"
    cfg = QUICK if quick else FULL
    r = run(cfg["etas"], cfg["steps"])
    print(
        f"{len(r.etas)} step sizes x {cfg['steps']} full-batch steps, λmax every "
        f"{EVERY} steps ({WARM_ITERS} warm Lanczos steps): {r.seconds:.1f} s"
    )
    for row in summarize(r):
        print(
            f"η={row['eta']:<5g} η·λmax/2: start {row['start']:.2f}, reaches 0.95 at "
            f"step {row['reached_at']}, second half [{row['late_min']:.3f}, "
            f"{row['late_max']:.3f}] mean {row['late_mean']:.3f}; loss "
            f"{row['loss_start']:.3f} -> {row['loss_end']:.4f}, rose in "
            f"{row['rises_after_edge']} steps after the edge; warm/cold - 1 = "
            f"{row['warm_vs_cold']:+.1e}"
        )
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        plot(r, out / "eos.png")
    except ImportError:
        print("matplotlib is not installed: no figure (pip install 'gdjax[plot]')")
        return
    print(f"saved {out / 'eos.png'}")


if __name__ == "__main__":
    main()
