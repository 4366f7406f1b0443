"""The ceiling: the whole run written by hand as one jitted JAX program.

Everything happens in one ``jax.jit``: the data order of every epoch is drawn on
the device up front, vectorized over epochs (the keyed hash bijection of
:func:`gdjax.batching.permutation`, one O(n) integer pass per epoch and no sort;
``fold_in(key, e)`` per epoch as gdjax does, so the order is gdjax's), then one
flat ``lax.scan`` over all ``epochs x steps`` steps gathers each batch, takes
``jax.grad`` of the plain-JAX loss and applies SGD (heavy-ball momentum when
asked) with nothing else in the carry: no loss history, no gradient norm, no
NaN guard, no stopping test. Its final parameters therefore equal gdjax's to
float tolerance.

Shuffles tried (W2, per epoch of 1,347 indices, 2 cores): argsort of random
uint32 bits about 10x and ``jax.random.permutation`` about 14x the cost of the
hash bijection vectorized over epochs, so the hash it is.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import gdjax as gd
from benchmarks.contenders import Prepared, common
from benchmarks.workloads import Workload

NAME = "fused"
LABEL = "hand-fused JAX (one jit, lax.scan)"
REQUIRES: tuple[str, ...] = ()


def supports(w: Workload) -> bool:
    del w
    return True


def orders(key: jax.Array, n: int, epochs: int, steps: int, batch: int, shuffle: bool):
    """``(epochs * steps, batch)`` int32 indices: each epoch a fresh permutation."""
    if not shuffle:
        one = jnp.arange(steps * batch, dtype=jnp.int32).reshape(steps, batch)
        return jnp.tile(one, (epochs, 1))
    keys = jax.vmap(lambda e: jax.random.fold_in(key, e))(jnp.arange(epochs))
    perm = jax.vmap(lambda k: gd.batching.permutation(k, n, "hash"))(keys)
    return perm[:, : steps * batch].reshape(epochs * steps, batch)


def train(
    params,
    x,
    y,
    key,
    learning_rate,
    *,
    task: str,
    epochs: int,
    steps: int,
    batch: int | None,
    momentum: float,
    shuffle: bool = True,
    unroll: int = 1,
):
    """The fused run (pure; jit it, or vmap it over members first)."""
    loss = common.loss_fn(task)
    grad = jax.grad(loss)
    lr = jnp.asarray(learning_rate, jnp.float32)
    heavy_ball = momentum != 0.0

    def update(carry, g):
        p, m = carry
        if heavy_ball:
            m = jax.tree.map(lambda mi, gi: momentum * mi + gi, m, g)
            g = m
        p = jax.tree.map(lambda pi, gi: pi - lr * gi, p, g)
        return p, m

    mom = jax.tree.map(jnp.zeros_like, params) if heavy_ball else ()
    if batch is None:  # full batch: no gather at all

        def full_step(carry, _):
            return update(carry, grad(carry[0], x, y)), None

        carry, _ = jax.lax.scan(full_step, (params, mom), length=epochs, unroll=unroll)
        return carry[0]

    n = x.shape[0]
    idx = orders(key, n, epochs, steps, batch, shuffle)

    def step(carry, i):
        xb = x.at[i].get(mode="promise_in_bounds")
        yb = y.at[i].get(mode="promise_in_bounds")
        return update(carry, grad(carry[0], xb, yb)), None

    carry, _ = jax.lax.scan(step, (params, mom), idx, unroll=unroll)
    return carry[0]


# Tuned on the 2-core CPU: unrolling the step loop amortizes XLA's per-iteration
# overhead for tiny steps; more unrolling grows the code and stops paying.
UNROLL = {"W1": 1, "W2": 2, "W3": 1, "W4": 1, "W5": 4}


def static_kwargs(w: Workload, shuffle: bool = True, unroll: int | None = None):
    return dict(
        task=w.task,
        epochs=w.epochs,
        steps=w.steps_per_epoch,
        batch=w.batch_size,
        momentum=float(w.momentum),
        shuffle=shuffle,
        unroll=UNROLL.get(w.name, 1) if unroll is None else unroll,
    )


_STATIC = ("task", "epochs", "steps", "batch", "momentum", "shuffle", "unroll")
train_jit = jax.jit(train, static_argnames=_STATIC)


def prepare(
    w: Workload, *, shuffle: bool = True, unroll: int | None = None
) -> Prepared:
    if w.is_sweep:
        from benchmarks.contenders import w4_sweep

        return w4_sweep.prepare_fused(w, unroll=unroll)
    kw = static_kwargs(w, shuffle, unroll)
    x, y = jnp.asarray(w.x), jnp.asarray(w.y)
    params = jax.tree.map(jnp.asarray, w.params)
    key = jax.random.key(w.seed)
    lr = np.float32(w.learning_rate)

    def run():
        return jax.block_until_ready(train_jit(params, x, y, key, lr, **kw))

    def memory():
        return common.xla_memory(train_jit.lower(params, x, y, key, lr, **kw).compile())

    return Prepared(
        run=run,
        to_params=common.to_numpy,
        xla_memory=memory,
        notes=f"unroll={kw['unroll']}" + ("" if shuffle else ", no shuffle"),
    )
