"""Critical batch size, reproduced: steps and examples trade off on a hyperbola.

McCandlish et al. (2018, arXiv:1812.06162, "An Empirical Model of Large-Batch
Training"): the optimization steps S and training examples E = B·S needed to
reach a target loss trade off as

    (S / S_min - 1) (E / E_min - 1) = 1,   i.e.   S(B) = S_min (1 + B_crit / B),

with the critical batch size B_crit = E_min / S_min, which the simple noise
scale B_simple = tr(Σ) / |G|² (per-example gradient covariance over the squared
true gradient) predicts.

Setup: multinomial logistic regression on the 1,797 built-in digits, mini-batch
SGD. For each batch size B, one ``gd.sweep`` trains a grid of learning rates
side by side (one vmapped program per B); S(B) is the step at which the
training loss first reaches the target (interpolated between epochs), at the
best learning rate. Every step sees exactly B examples (the short last batch
is dropped: with 1,797 = 28·64 + 5 examples a padded last step of 5 examples
at a large rate is a noisy step that the model does not describe), so
E = B·S. The hyperbola is fitted in log space (S against B), and
B_simple (``gd.diagnostics.simple_noise_scale``, from per-example gradients on
the full data) is recorded along a full-batch run and read where the loss
crosses the target (ratio of the two unbiased estimates, each averaged over
the nearby epochs, as the paper recommends).

    python examples/critical_batch_size.py            # full reproduction
    python examples/critical_batch_size.py --quick    # the test suite's run
    python examples/critical_batch_size.py --out docs/figures
"""

from __future__ import annotations

import argparse
import os
import pathlib
import time
from typing import NamedTuple

import jax
import numpy as np

import gdjax as gd
from gdjax import diagnostics

TARGET = 0.2  # training loss (mean cross-entropy) to reach
FULL = {
    "batch_sizes": (4, 8, 16, 32, 64, 128, 256, 512, 1797),
    "lrs": tuple(float(v) for v in np.geomspace(0.35, 16, 12)),
}
QUICK = {
    "batch_sizes": (16, 128, 1797),
    "lrs": (1.0, 2.0, 4.0, 8.0),
}


class CriticalBatch(NamedTuple):
    """The measurements and the fit.

    Attributes:
      batch_sizes: ``(k,)``.
      steps: ``(k,)`` S(B), steps to the target at the best learning rate.
      best_lr: ``(k,)`` that learning rate.
      examples: ``(k,)`` E(B) = B·S(B).
      s_min, e_min: the fitted hyperbola's asymptotes.
      b_crit: E_min / S_min.
      r2: the fit's R² on log S.
      b_simple: ``(k,)`` the simple noise scale at the target loss, measured
        along each batch size's best run.
      curves: per batch size, ``(loss, trace_cov, grad_norm_sq)`` per epoch
        of its best run.
      seconds: wall time.
    """

    batch_sizes: np.ndarray
    steps: np.ndarray
    best_lr: np.ndarray
    examples: np.ndarray
    s_min: float
    e_min: float
    b_crit: float
    r2: float
    b_simple: np.ndarray
    curves: list
    seconds: float

    @property
    def b_simple_median(self) -> float:
        """The median over batch sizes of B_simple at the target."""
        return float(np.nanmedian(self.b_simple))


def problem():
    """(loss, params, data): softmax regression on all 1,797 digits."""
    (x, y), _ = gd.datasets.digits(test_fraction=0.0)
    loss = gd.make_loss(gd.models.linear, gd.losses.softmax_cross_entropy)
    params = gd.init.dense(jax.random.key(0), 64, 10)
    return loss, params, (x, y)


def steps_to_target(losses: np.ndarray, steps_per_epoch: int, target: float):
    """The first step at which the training loss reaches ``target`` (inf if never).

    ``losses[e]`` is the mean over epoch ``e``'s steps of the loss before each
    step, i.e. (for a smooth curve) the loss at step ``e·k + (k-1)/2``; the
    crossing is interpolated linearly in log loss between epochs.
    """
    losses = np.asarray(losses, float)
    t = np.arange(losses.size) * steps_per_epoch + (steps_per_epoch - 1) / 2
    below = np.flatnonzero(np.isfinite(losses) & (losses <= target))
    if below.size == 0:
        return np.inf
    j = below[0]
    if j == 0:
        return float(t[0])
    a, b = np.log(losses[j - 1]), np.log(losses[j])
    frac = (a - np.log(target)) / (a - b)
    return float(t[j - 1] + frac * (t[j] - t[j - 1]))


def fit_hyperbola(batch_sizes, steps):
    """Fit S = S_min + E_min / B by least squares on log S.

    Returns ``(S_min, E_min, R²)``, R² of the fit on log S.
    """
    from scipy.optimize import least_squares

    b = np.asarray(batch_sizes, float)
    log_s = np.log(np.asarray(steps, float))

    def resid(z):
        s_min, e_min = np.exp(z)
        return np.log(s_min + e_min / b) - log_s

    z0 = np.log([np.min(steps), np.min(b * steps)])
    z = least_squares(resid, z0).x
    r = resid(z)
    r2 = 1 - np.sum(r**2) / np.sum((log_s - log_s.mean()) ** 2)
    s_min, e_min = np.exp(z)
    return float(s_min), float(e_min), float(r2)


def _epochs_for(batch: int, n: int) -> int:
    """An epoch budget that reaches the target with room: twice a rough
    hyperbola (S_min ~ 30 steps, E_min ~ 3,000 examples), plus two epochs."""
    steps = 30 + 3000 / batch
    per_epoch = max(n // batch, 1)
    return int(np.ceil(2.0 * steps / per_epoch)) + 2


def _ratio_near(loss, trace, g2, target, k: int = 3):
    """B_simple near ``target``: numerator and denominator each averaged over
    the ``k`` epochs whose loss is nearest to it (in log), then divided."""
    ok = np.flatnonzero(np.isfinite(loss) & (loss > 0))
    if ok.size == 0:
        return float("nan")
    near = ok[np.argsort(np.abs(np.log(loss[ok] / target)))[:k]]
    return float(np.mean(trace[near]) / np.mean(g2[near]))


def run(batch_sizes=FULL["batch_sizes"], lrs=FULL["lrs"], target=TARGET):
    """One gd.sweep over learning rates per batch size; fit; B_simple."""
    loss, params, data = problem()
    n = int(data[0].shape[0])
    start = time.perf_counter()
    # The two unbiased estimates behind B_simple, recorded every epoch of every
    # member from per-example gradients on the full data.
    monitors = {
        "trace": diagnostics.noise_scale_monitor(loss, quantity="trace_cov"),
        "g2": diagnostics.noise_scale_monitor(loss, quantity="grad_norm_sq"),
    }
    steps_list, lr_list, b_simple, curves = [], [], [], []
    for batch in batch_sizes:
        full = batch >= n
        per_epoch = 1 if full else n // batch
        res = gd.sweep(
            loss,
            params,
            data,
            gd.sgd(0.1),
            seeds=[0],
            hyperparams={"learning_rate": list(lrs)},
            epochs=_epochs_for(batch, n),
            regime=gd.full_batch() if full else gd.minibatch(batch, last_batch="drop"),
            monitors=monitors,
        )
        hist = res.result.history
        losses = np.asarray(hist.loss).reshape(len(lrs), -1)
        trace = np.asarray(hist.monitors["trace"]).reshape(len(lrs), -1)
        g2 = np.asarray(hist.monitors["g2"]).reshape(len(lrs), -1)
        s = np.array([steps_to_target(h, per_epoch, target) for h in losses])
        j = int(np.argmin(s))
        steps_list.append(s[j])
        lr_list.append(lrs[j])
        b_simple.append(_ratio_near(losses[j], trace[j], g2[j], target))
        curves.append((losses[j], trace[j], g2[j]))
    bs = np.asarray(batch_sizes, float)
    steps = np.asarray(steps_list)
    s_min, e_min, r2 = fit_hyperbola(bs, steps)
    return CriticalBatch(
        batch_sizes=bs,
        steps=steps,
        best_lr=np.asarray(lr_list),
        examples=bs * steps,
        s_min=s_min,
        e_min=e_min,
        b_crit=e_min / s_min,
        r2=r2,
        b_simple=np.asarray(b_simple),
        curves=curves,
        seconds=time.perf_counter() - start,
    )


def plot(r: CriticalBatch, path: pathlib.Path, target: float = TARGET) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_se, ax_sb) = plt.subplots(1, 2, figsize=(12, 4.6))
    # Left: the S-E tradeoff, measured points and the fitted hyperbola.
    bb = np.geomspace(r.batch_sizes.min() / 2, r.batch_sizes.max() * 4, 200)
    s_fit = r.s_min * (1 + r.b_crit / bb)
    ax_se.plot(
        bb * s_fit,
        s_fit,
        "-",
        color="C1",
        label=f"fit: (S/S_min - 1)(E/E_min - 1) = 1, R² = {r.r2:.3f}",
    )
    ax_se.plot(
        r.examples,
        r.steps,
        "o",
        color="C0",
        label="measured (each B at its best learning rate)",
    )
    ax_se.axhline(r.s_min, color="gray", ls=":", lw=1, label=f"S_min = {r.s_min:.1f}")
    ax_se.axvline(r.e_min, color="gray", ls="--", lw=1, label=f"E_min = {r.e_min:.0f}")
    ax_se.plot(
        [r.b_crit * r.s_min * 2],
        [2 * r.s_min],
        "*",
        color="C3",
        ms=12,
        label=f"B = B_crit = E_min/S_min = {r.b_crit:.0f}",
    )
    for b, e, st in zip(r.batch_sizes, r.examples, r.steps, strict=True):
        ax_se.annotate(
            f"B={b:g}", (e, st), fontsize=7, xytext=(4, 3), textcoords="offset points"
        )
    ax_se.set(
        xscale="log",
        yscale="log",
        xlabel="examples processed E = B·S to reach the target",
        ylabel="optimization steps S to reach the target",
        title=f"steps vs examples, softmax regression on digits, target loss {target}",
    )
    ax_se.legend(fontsize=7, loc="upper right")
    # Right: S against B, with the fit's knee B_crit and the measured B_simple.
    ax_sb.plot(bb, s_fit, "-", color="C1", label="fit S_min (1 + B_crit / B)")
    linear = bb <= 2 * r.b_crit  # perfect scaling, drawn up to 2 B_crit
    ax_sb.plot(
        bb[linear],
        r.e_min / bb[linear],
        ":",
        color="gray",
        lw=1,
        label="perfect scaling S = E_min / B",
    )
    ax_sb.axhline(r.s_min, color="gray", ls=":", lw=1)
    ax_sb.plot(r.batch_sizes, r.steps, "o", color="C0", label="measured S(B)")
    ax_sb.axvline(
        r.b_crit,
        color="C3",
        ls="--",
        lw=1.5,
        label=f"B_crit = E_min/S_min = {r.b_crit:.0f} (fit)",
    )
    lo, hi = np.nanpercentile(r.b_simple, [25, 75])
    ax_sb.axvspan(
        lo,
        hi,
        color="C2",
        alpha=0.2,
        label=f"B_simple at the target, runs' IQR [{lo:.0f}, {hi:.0f}]",
    )
    ax_sb.axvline(
        r.b_simple_median,
        color="C2",
        ls="-.",
        lw=1.5,
        label=f"median B_simple = {r.b_simple_median:.0f} (paper: ≈ B_crit)",
    )
    ax_sb.set(
        xscale="log",
        yscale="log",
        xlabel="batch size B",
        ylabel="optimization steps S to reach the target",
        title="critical batch size vs noise scale (McCandlish et al. 2018)",
    )
    ax_sb.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few-second run")
    parser.add_argument("--out", default="./gdjax-out", help="folder for the PNG")
    args = parser.parse_args()
    # GDJAX_EXAMPLE_QUICK=1 is how tests/test_examples.py asks for a short run.
    quick = args.quick or os.environ.get("GDJAX_EXAMPLE_QUICK") == "1"
    cfg = QUICK if quick else FULL
    r = run(cfg["batch_sizes"], cfg["lrs"])
    print(
        f"{len(r.batch_sizes)} batch sizes x {len(cfg['lrs'])} lrs: {r.seconds:.1f} s"
    )
    print(f"{'B':>6s} {'best lr':>8s} {'S':>9s} {'E':>10s} {'fit S':>9s}")
    rows = zip(r.batch_sizes, r.best_lr, r.steps, r.examples, strict=True)
    for b, lr, st, e in rows:
        fit = r.s_min * (1 + r.b_crit / b)
        print(f"{b:6g} {lr:8.3f} {st:9.1f} {e:10.0f} {fit:9.1f}")
    print(
        f"fit: S_min={r.s_min:.1f}, E_min={r.e_min:.0f}, R²(log S)={r.r2:.4f}; "
        f"B_crit = E_min/S_min = {r.b_crit:.1f}"
    )
    print(
        "B_simple at the target along each run: "
        + ", ".join(
            f"B={b:g}: {v:.0f}" for b, v in zip(r.batch_sizes, r.b_simple, strict=True)
        )
        + f"; median {r.b_simple_median:.1f} "
        f"(B_simple / B_crit = {r.b_simple_median / r.b_crit:.2f})"
    )
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        plot(r, out / "critical_batch.png")
    except ImportError:
        print("matplotlib is not installed: no figure (pip install 'gdjax[plot]')")
        return
    print(f"saved {out / 'critical_batch.png'}")


if __name__ == "__main__":
    main()
