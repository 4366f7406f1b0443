"""The optax tutorial loop: Python over epochs and batches, one jitted step.

As in optax's "Getting started": the data stays in NumPy, each epoch draws a
permutation on the host (``np.random.default_rng(seed).permutation(n)``), each
batch is sliced on the host and passed to a ``jax.jit``-ted step that computes
``jax.value_and_grad`` of the loss, ``optax.sgd(lr, momentum)`` updates and
``optax.apply_updates``. Full batch (W1) passes the device arrays, converted
once. The last short batch is dropped, so the step compiles once.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks.contenders import Prepared, common
from benchmarks.workloads import Workload, reference_orders

NAME = "optax"
LABEL = "optax tutorial loop (jitted step, NumPy shuffle)"
REQUIRES: tuple[str, ...] = ()


def supports(w: Workload) -> bool:
    return not w.is_sweep


def prepare(w: Workload) -> Prepared:
    loss_fn = common.loss_fn(w.task)
    optimizer = optax.sgd(w.learning_rate, momentum=w.momentum or None)

    @jax.jit
    def step(params, opt_state, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    x, y = w.x, w.y
    b, steps = w.batch, w.steps_per_epoch
    shared = reference_orders(w) if w.shared_order else None

    def run():
        params = jax.tree.map(jnp.asarray, w.params)
        opt_state = optimizer.init(params)
        if w.batch_size is None:
            xd, yd = jnp.asarray(x), jnp.asarray(y)
            for _ in range(w.epochs):
                params, opt_state, _loss = step(params, opt_state, xd, yd)
            return jax.block_until_ready(params)
        rng = np.random.default_rng(w.seed)
        for epoch in range(w.epochs):
            perm = (
                shared[epoch].reshape(-1)
                if shared is not None
                else rng.permutation(w.n)
            )
            for i in range(steps):
                idx = perm[i * b : (i + 1) * b]
                params, opt_state, _loss = step(params, opt_state, x[idx], y[idx])
        return jax.block_until_ready(params)

    def memory():
        params = jax.tree.map(jnp.asarray, w.params)
        xb, yb = x[:b], y[:b]
        return common.xla_memory(
            step.lower(params, optimizer.init(params), xb, yb).compile()
        )

    return Prepared(
        run=run,
        to_params=common.to_numpy,
        xla_memory=memory,
        notes="XLA bytes: the step program",
    )
