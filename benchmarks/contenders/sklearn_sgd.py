"""scikit-learn's SGD estimators where the model fits: W1, W2, W5.

``SGDRegressor`` (W1) and ``SGDClassifier(loss="log_loss")`` (W2, W5) with
``learning_rate="constant"``, ``eta0`` = the workload's rate, ``penalty=None``,
``max_iter`` = the workload's epochs, ``tol=None``, ``early_stopping=False``,
``shuffle=True``, ``average=False``, starting from the shared initial
parameters (``coef_init``, ``intercept_init``). ``n_jobs`` is left at its
default (one thread).

These estimators are per-example SGD (batch size 1), always:

* W5 (binary logistic regression, batch 1) is the same algorithm as every other
  contender; only sklearn's own shuffle differs.
* W2 (multinomial, batch 32): sklearn fits one-vs-rest binary logistic
  regressions, per example: the same epochs over the same data, a different
  objective and algorithm (flagged; its loss column is the softmax loss of its
  one-vs-rest scores).
* W1 (full batch, 1/L): per-example SGD for the same number of epochs, with
  ``eta0 = 1 / max_i ||[x_i 1]||^2`` (1/L diverges for per-example steps).
  Same passes over the data, a different algorithm (flagged).
"""

from __future__ import annotations

import warnings

import numpy as np

from benchmarks.contenders import Prepared
from benchmarks.workloads import Workload, reference_orders

NAME = "sklearn"
LABEL = "scikit-learn SGDRegressor / SGDClassifier"
REQUIRES = ("sklearn",)


def supports(w: Workload) -> bool:
    return w.name in ("W1", "W2", "W5")


def prepare(w: Workload) -> Prepared:
    import sklearn
    from sklearn.linear_model import SGDClassifier, SGDRegressor

    layer = w.params[0]
    coef0 = np.asarray(layer["w"], np.float64).T  # (k, d)
    intercept0 = np.asarray(layer["b"], np.float64)
    if w.task == "regression":
        a2 = np.max(np.sum(w.x.astype(np.float64) ** 2, axis=1) + 1.0)
        eta0 = float(1.0 / a2)
        coef0, intercept0 = coef0[0], intercept0
    else:
        eta0 = float(w.learning_rate)
    common = dict(
        penalty=None,
        learning_rate="constant",
        eta0=eta0,
        tol=None,
        early_stopping=False,
        average=False,
        fit_intercept=True,
        random_state=w.seed,
    )

    def estimator(max_iter: int, shuffle: bool):
        if w.task == "regression":
            return SGDRegressor(
                loss="squared_error", max_iter=max_iter, shuffle=shuffle, **common
            )
        return SGDClassifier(
            loss="log_loss", max_iter=max_iter, shuffle=shuffle, **common
        )

    x, y = w.x, w.y
    shared = reference_orders(w) if w.shared_order else None

    def run():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if shared is None:
                est = estimator(w.epochs, True)
                return est.fit(x, y, coef_init=coef0, intercept_init=intercept0)
            # Same order as gdjax: one epoch per fit, in that epoch's order.
            coef, intercept = coef0, intercept0
            est = estimator(1, False)
            for epoch in range(w.epochs):
                idx = shared[epoch].reshape(-1)
                est.fit(x[idx], y[idx], coef_init=coef, intercept_init=intercept)
                coef, intercept = est.coef_, est.intercept_
            return est

    def to_params(est):
        coef = np.atleast_2d(np.asarray(est.coef_, np.float64))  # (k, d)
        return [
            {
                "w": coef.T.astype(np.float32),
                "b": np.atleast_1d(np.asarray(est.intercept_)).astype(np.float32),
            }
        ]

    same = w.name == "W5"
    notes = f"scikit-learn {sklearn.__version__}, per-example SGD"
    if w.name == "W2":
        notes += ", one-vs-rest (different objective)"
    if w.name == "W1":
        notes += f", eta0={eta0:.3g} (different algorithm)"
    return Prepared(run=run, to_params=to_params, same_algorithm=same, notes=notes)
