"""Linear regression by gradient descent, checked against the closed form.

Plain (full-batch) gradient descent on the mean squared error

    L(w, b) = 1/(2n) * sum_i (x_i . w + b - y_i)^2

is a linear iteration that converges to the least-squares solution for any
step size below 2/L, where L is the largest eigenvalue of the Hessian
[X 1]^T [X 1] / n. With the step 1/L and a gradient-norm stopping test it
reaches the answer of ``np.linalg.lstsq`` to float64 round-off.

Run:  python examples/linear_regression.py
"""

import argparse
import os

import jax
import jax.numpy as jnp
import numpy as np

import gdjax as gd

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--out", default="gdjax-out", help="(unused: no figure)")
args = parser.parse_args()
quick = os.environ.get("GDJAX_EXAMPLE_QUICK") == "1"

# float64 so that "matches the closed form" can mean 1e-10, not 1e-5.
with jax.enable_x64(True):
    # y = X w* + 0.1 noise, with 256 examples and 8 features, drawn from a key.
    (x, y), w_true = gd.datasets.least_squares(
        jax.random.key(0), n=256, d=8, noise=0.1, dtype=jnp.float64
    )
    n, d = x.shape

    # The closed form: least squares on [X 1] (the column of ones is the bias).
    design = np.c_[np.asarray(x), np.ones(n)]
    exact, *_ = np.linalg.lstsq(design, np.asarray(y), rcond=None)

    # Step size 1/L from the Hessian of the loss, which is constant here.
    hessian = design.T @ design / n
    eig = np.linalg.eigvalsh(hessian)
    lr = 1.0 / eig[-1]
    kappa = eig[-1] / eig[0]
    print(f"condition number of the Hessian: {kappa:.2f}; step 1/L = {lr:.4f}")

    loss = gd.make_loss(gd.models.linear, gd.losses.squared_error)
    params = {"w": jnp.zeros((d, 1)), "b": jnp.zeros(1)}
    result = gd.fit(
        loss,
        params,
        (x, y),
        gd.sgd(lr),
        key=jax.random.key(1),  # full batch: the key orders nothing
        epochs=500 if quick else 2000,
        grad_tol=1e-12,  # mean gradient norm of the (single) step of an epoch
    )
    print(f"gradient descent: {result.reason}")

    gd_solution = np.r_[np.asarray(result.params["w"][:, 0]), result.params["b"]]
    error = np.max(np.abs(gd_solution - exact))
    np.set_printoptions(precision=6, suppress=True)
    print("closed form (lstsq):", exact)
    print("gradient descent:   ", gd_solution)
    print(f"max |GD - lstsq| = {error:.2e}")
    # Plain descent with step 1/L shrinks the error by (1 - 1/kappa) per step, so a
    # well-conditioned problem like this one needs only tens of steps.
    print(f"final loss {result.final_loss:.6f} after {int(result.steps)} steps")
    if error > 1e-8:
        raise SystemExit(f"GD did not reach the closed form (error {error:.2e})")
    print("OK: gradient descent matches the closed-form least-squares solution")
