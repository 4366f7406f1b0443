"""Your own loop from gdjax's pieces: gd.fit by hand, then two models in lockstep.

Part 1 writes ``gd.fit`` as a user would: one jitted ``lax.scan`` over epochs,
each a ``lax.scan`` over the epoch's batches, from three pieces,

    gd.pieces.batches(regime, n, key, epoch)   the epoch's indices (fit's order)
    gd.pieces.gather(data, indices)            the batch
    gd.pieces.make_step(loss, transform)       fit's step, NaN guard included

and checks that it ends on fit's parameters, optimizer state and loss history
bit for bit, in the full-batch, stochastic and mini-batch regimes.

Part 2 does what ``fit`` cannot: a softmax regression and an MLP trained in
lockstep on the same batches (one compiled ``lax.while_loop``), the MLP's
optimizer guarded by ``gd.guard.reject_nonfinite`` inside an ``optax.chain``,
a paired per-batch comparison of the two losses, and a plateau rule from
``gd.stopping`` on the MLP that stops both.

Run:  python examples/own_loop.py
"""

import argparse
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax

import gdjax as gd
from gdjax import guard, pieces, stopping

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--out", default="gdjax-out", help="(unused: no figure)")
parser.add_argument("--epochs", type=int, default=40, help="part 2's budget")
args = parser.parse_args()
quick = os.environ.get("GDJAX_EXAMPLE_QUICK") == "1"
epochs = 3 if quick else 10

(x, y), (x_test, y_test) = gd.datasets.digits()
data = (x, y)
n = x.shape[0]
loss = gd.make_loss(gd.models.mlp, gd.losses.softmax_cross_entropy)
init_key, run_key = jax.random.split(jax.random.key(0))


# ------------------------------------------------ part 1: gd.fit, written by hand


def own_fit(params, transform, regime, key, epochs):
    """fit's run as one jitted scan over epochs: (final step state, loss rows)."""
    step = pieces.make_step(loss, transform)

    def epoch(state, e):
        indices, weights = pieces.batches(regime, n, key, e)

        def one(carry, batch_xs):
            state, loss_sum, count = carry
            idx, w = batch_xs
            state, info = step.step(state, pieces.gather(data, idx), w)
            return (state, loss_sum + info.loss, count + info.applied), None

        zero = jnp.zeros((), jnp.float32)
        (state, loss_sum, count), _ = jax.lax.scan(
            one, (state, zero, jnp.int32(0)), (indices, weights)
        )
        return state, loss_sum / count  # fit's history.loss row

    @jax.jit
    def run(params):
        return jax.lax.scan(epoch, step.init(params), jnp.arange(1, epochs + 1))

    return run(params)


params = gd.init.mlp(init_key, [64, 10])
transform = gd.sgd(0.05, momentum=0.9)
for name, regime, budget in [
    ("full batch", gd.full_batch(), epochs),
    ("stochastic", gd.stochastic(), 1),
    ("mini-batch 32", gd.minibatch(32), epochs),
]:
    r = gd.fit(loss, params, data, transform, key=run_key, epochs=budget, regime=regime)
    state, loss_rows = own_fit(params, transform, regime, run_key, budget)
    same = all(
        np.array_equal(a, b)
        for a, b in zip(
            jax.tree.leaves((state.params, state.opt_state, loss_rows)),
            jax.tree.leaves((r.params, r.opt_state, r.history.loss)),
            strict=True,
        )
    )
    print(
        f"{name:14s} own loop == gd.fit bitwise (params, opt_state, history.loss): "
        f"{same}  [{int(state.steps)} steps, final loss {float(loss_rows[-1]):.4f}]"
    )
    assert same


# ------------------------------------ part 2: two models in lockstep (not fit's)

regime = gd.minibatch(64)
lin_key, mlp_key = jax.random.split(init_key)
models = {
    "softmax regression": (gd.init.mlp(lin_key, [64, 10]), gd.sgd(0.1)),
    "MLP 64-64-10": (
        gd.init.mlp(mlp_key, [64, 64, 10]),
        optax.chain(
            optax.clip_by_global_norm(5.0),
            guard.reject_nonfinite(optax.sgd(0.05, momentum=0.9)),
        ),
    ),
}
steps = {name: pieces.make_step(loss, tx) for name, (_, tx) in models.items()}
lin, mlp = (steps[name] for name in models)
criteria = gd.Stopping(tol=1e-2, patience=2).criteria(np.float32)
budget = 2 * epochs if quick else args.epochs


def lockstep_epoch(carry):
    e, (s_lin, s_mlp), plateau, rows, status = carry
    indices, weights = pieces.batches(regime, n, run_key, e + 1)

    def one(c, batch_xs):
        s_lin, s_mlp, sums = c
        idx, w = batch_xs
        batch = pieces.gather(data, idx)  # the same batch for both models
        s_lin, a = lin.step(s_lin, batch, w)
        s_mlp, b = mlp.step(s_mlp, batch, w)
        below = (b.loss < a.loss).astype(a.loss.dtype)
        sums = sums + jnp.stack([a.loss, b.loss, below])
        return (s_lin, s_mlp, sums), None

    (s_lin, s_mlp, sums), _ = jax.lax.scan(
        one, (s_lin, s_mlp, jnp.zeros(3)), (indices, weights)
    )
    means = sums / indices.shape[0]
    best, bad = stopping.plateau_update(criteria, means[1], *plateau)
    verdict = jnp.where(
        stopping.plateaued(bad, criteria.patience),
        gd.Status.NO_IMPROVEMENT,
        jnp.where(e + 1 >= budget, gd.Status.MAX_EPOCHS, gd.Status.RUNNING),
    ).astype(jnp.int32)
    return e + 1, (s_lin, s_mlp), (best, bad), rows.at[e].set(means), verdict


@jax.jit
def lockstep(p_lin, p_mlp):
    carry = (
        jnp.int32(0),
        (lin.init(p_lin), mlp.init(p_mlp)),
        stopping.plateau_init(),
        jnp.full((budget, 3), jnp.nan),
        jnp.int32(gd.Status.RUNNING),
    )
    going = lambda c: c[-1] == gd.Status.RUNNING  # noqa: E731
    return jax.lax.while_loop(going, lockstep_epoch, carry)


ran, (s_lin, s_mlp), _, rows, status = lockstep(*(p for p, _ in models.values()))
ran = int(ran)
acc = gd.accuracy(gd.models.mlp)
print(
    f"lockstep: {ran} epochs on the same {ran * -(-n // 64)} batches, stopped: "
    f"{gd.Status(int(status)).message}"
)
for name, s in zip(models, (s_lin, s_mlp), strict=True):
    print(
        f"  {name:18s} train loss {float(rows[ran - 1, list(models).index(name)]):.4f}"
        f"  test accuracy {float(acc(s.params, (x_test, y_test))):.3f}"
    )
print(
    "  paired: the MLP's batch loss was below the softmax regression's on "
    f"{100 * float(rows[ran - 1, 2]):.0f}% of the last epoch's batches; "
    f"guard rejections: {int(s_mlp.opt_state[1].bad_steps)}"
)
