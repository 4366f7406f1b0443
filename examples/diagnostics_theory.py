"""Gradient descent on least squares against what theory predicts, epoch by epoch.

For f(w) = |Xw - y|²/(2n) the Hessian is H = XᵀX/n, and full-batch descent
with step η contracts the error by ρ = max|1 - ηλ| per step, so the loss gap
obeys f(w_t) - f* <= ρ^{2t} (f(w_0) - f*) at every epoch. The best constant
step is η* = 2/(μ+L) with ρ* = (κ-1)/(κ+1); Polyak's heavy ball with
η = 4/(√L+√μ)², β = ((√κ-1)/(√κ+1))² reaches (√κ-1)/(√κ+1). Here a synthetic
problem (`gd.datasets.least_squares`, its design given the spectrum 1...4.5)
is run with `gd.fit` at η*, 0.8η*, 1.2η* and with heavy ball, and
each run is checked against its predicted rate with `gd.theory.compare_rate`.

    python examples/diagnostics_theory.py --out ./gdjax-out
"""

import argparse
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

import gdjax as gd
from gdjax import theory

jax.config.update("jax_enable_x64", True)  # gaps down to 1e-12 without rounding

EPOCHS = 25


def loss(params, batch):
    x, y = batch
    r = x @ params["w"] - y
    return 0.5 * jnp.mean(r * r)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="./gdjax-out", help="folder for the PNG")
    out = pathlib.Path(parser.parse_args().out)
    out.mkdir(parents=True, exist_ok=True)

    (x, y), _ = gd.datasets.least_squares(
        jax.random.key(0), 512, 6, noise=0.5, dtype=jnp.float64
    )
    # Give X^T X / n the spectrum 1 ... 4.5 (keep X's singular vectors): with
    # kappa < 5, 1.2 x eta* is still stable and "optimal beats nearby" means
    # something.
    u, _, vt = np.linalg.svd(np.asarray(x), full_matrices=False)
    x = jnp.asarray(u * np.sqrt(512 * np.linspace(1.0, 4.5, 6)) @ vt)
    eigs = theory.least_squares_spectrum(x)
    mu, big_l = float(eigs[0]), float(eigs[-1])
    w_star = np.linalg.lstsq(np.asarray(x), np.asarray(y), rcond=None)[0]
    f_star = float(loss({"w": jnp.asarray(w_star)}, (x, y)))
    step = theory.optimal_lr(mu, big_l)
    hb = theory.heavy_ball_optimal(mu, big_l)
    print(f"spectrum of X^T X / n: mu={mu:.3f}, L={big_l:.3f}, kappa={big_l / mu:.1f}")
    print(
        f"optimal eta*={float(step.learning_rate):.4f} rate {float(step.rate):.4f}; "
        f"heavy ball eta={float(hb.learning_rate):.4f} beta={float(hb.momentum):.4f}"
        f" rate {float(hb.rate):.4f}"
    )

    p0 = {"w": jnp.zeros(6)}
    runs = {}
    for scale in (0.8, 1.0, 1.2):
        lr = scale * float(step.learning_rate)
        runs[f"GD {scale}x eta*"] = (gd.sgd(lr), theory.gd_rate(eigs, lr))
    runs["heavy ball"] = (
        gd.sgd(float(hb.learning_rate), momentum=float(hb.momentum)),
        hb.rate,
    )
    gaps = {}
    print(
        f"{'run':16s} {'rho':>7s} {'observed':>9s} {'max ratio':>10s} "
        f"{'gap after ' + str(EPOCHS):>14s}"
    )
    for name, (tx, rho) in runs.items():
        r = gd.fit(loss, p0, (x, y), tx, key=jax.random.key(1), epochs=EPOCHS)
        gaps[name] = np.asarray(r.history.loss) - f_star
        # Compare only while the gap is well above float64 rounding of f*.
        t_max = int(np.sum(gaps[name] > 1e-11)) if gaps[name][-1] < 1e-11 else EPOCHS
        check = theory.compare_rate(r.history.loss[:t_max], f_star, rho)
        observed = (gaps[name][t_max - 1] / gaps[name][0]) ** (1 / (2 * (t_max - 1)))
        # GD meets its bound every epoch (max ratio <= 1); heavy ball's rate is
        # asymptotic (a factor linear in t), so its ratio may exceed 1.
        ratio = f"{float(check.max_ratio):10.3f}" if "GD" in name else "  (t rho^t)"
        print(
            f"{name:16s} {float(rho):7.4f} {observed:9.4f} {ratio} "
            f"{gaps[name][-1]:14.3e}"
        )
    final = {name: gap[-1] for name, gap in gaps.items()}
    nearby = min(final["GD 0.8x eta*"], final["GD 1.2x eta*"])
    print(
        f"smallest final gap: {min(final, key=final.get)}; optimal GD step beats "
        f"0.8x and 1.2x: {final['GD 1.0x eta*'] < nearby}"
    )

    try:
        from matplotlib.figure import Figure
    except ImportError:
        print("matplotlib is not installed: no figure (pip install 'gdjax[plot]')")
        return
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.subplots()
    t = np.arange(EPOCHS)  # full batch: epoch t + 1 records f(w_t), t steps in
    for i, (name, gap) in enumerate(gaps.items()):
        rho = float(runs[name][1])
        ax.semilogy(t, gap, color=f"C{i}", label=name)
        ax.semilogy(t, gap[0] * rho ** (2 * t), color=f"C{i}", ls=":", lw=1)
    ax.set(
        xlabel="step $t$ (epoch $t + 1$)",
        ylabel=r"$f(w_t) - f^\star$",
        title=r"least squares: observed (solid) vs $\rho^{2t}$ bound (dotted)",
    )
    ax.legend(fontsize="small")
    path = out / "diagnostics_theory.png"
    fig.savefig(path, dpi=120)
    print(f"saved {path}")


if __name__ == "__main__":
    main()
