"""gdjax with its types: a fit, a sweep and their results, as a type checker sees them.

``basedpyright`` checks this file in CI with the project's configuration
(``pyrightconfig.json``); it also runs: ``python docs/site/examples/typed_usage.py``.
Every annotation below is what gdjax's own signatures promise, so a user's
checker catches a misspelt field or a wrong argument before anything runs.
"""

from __future__ import annotations

import jax
import numpy as np
import optax

import gdjax as gd


def train(epochs: int = 3) -> tuple[gd.FitResult, gd.SweepResult]:
    """One run and a 2 seeds x 2 learning rates sweep of a small MLP on the digits."""
    (x, y), test = gd.datasets.digits(test_fraction=0.25)
    assert test is not None  # None only with test_fraction=0
    x_test, y_test = test
    init_key, run_key = jax.random.split(jax.random.key(0))
    params = gd.init.mlp(init_key, [64, 32, 10])
    loss = gd.make_loss(gd.models.mlp, gd.losses.softmax_cross_entropy)
    tx: optax.GradientTransformation = gd.sgd(0.1, momentum=0.9)

    result: gd.FitResult = gd.fit(
        loss,
        params,
        (x, y),
        tx,
        key=run_key,
        epochs=epochs,
        regime=gd.minibatch(32),
        val_data=(x_test, y_test),
        metric=gd.accuracy(gd.models.mlp),
    )
    history: gd.History = result.history
    reason: str = result.reason
    losses = np.asarray(history.loss)
    print(f"fit: {reason}; loss {losses[0]:.3f} -> {losses[-1]:.3f}")

    sweep: gd.SweepResult = gd.sweep(
        loss,
        lambda key: gd.init.mlp(key, [64, 32, 10]),
        (x, y),
        tx,
        seeds=range(2),
        hyperparams={"learning_rate": [0.03, 0.1]},
        epochs=epochs,
        regime=gd.minibatch(32),
    )
    member: gd.FitResult = sweep.member(seed=1, learning_rate=0.1)
    print(f"sweep: axes {sweep.axes}, shape {sweep.shape}; best {sweep.best()}")
    print(f"member seed=1, lr=0.1: {member.reason}")
    return result, sweep


if __name__ == "__main__":
    train()
