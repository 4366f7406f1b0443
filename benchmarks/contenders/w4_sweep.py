"""W4: W3 over 64 seeds x 4 learning rates; every use of ``gd.sweep`` lives here.

Member ``(seed s, learning rate lr)`` starts from ``gd.init.mlp(init_key, ...)``
and draws its data order from ``run_key``, with ``(init_key, run_key) =
gd.seed_keys(s)``; members are ordered seed-major (``S x H``), as
``SweepResult.result`` stacks them. Three contenders do that work:

* ``gdjax``: one ``gd.sweep(loss, init, data, gd.sgd(lr0, 0.9),
  seeds=..., hyperparams={"learning_rate": lrs}, epochs=..., regime=...)``;
* ``gdjax-seq``: a Python loop of 256 ``gd.fit`` calls;
* ``fused``: the hand-fused W3 program (:mod:`benchmarks.contenders.fused`)
  under ``jax.vmap`` over members, initial parameters drawn by a second small
  jitted program.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

import gdjax as gd
from benchmarks.contenders import Prepared, common, fused
from benchmarks.workloads import Workload


def seed_keys(seed):
    """``gd.seed_keys`` (the sweep's contract: a member's init and run keys)."""
    return gd.seed_keys(seed)


def _init(widths, key):
    return gd.init.mlp(key, list(widths))


def _data(w: Workload):
    return jnp.asarray(w.x), jnp.asarray(w.y)


def _flatten_members(params, members: int):
    """Leaves of shape (S, H, ...) -> (S * H, ...) NumPy float32."""
    return [
        {
            k: np.asarray(v, np.float32).reshape((members,) + np.shape(v)[2:])
            for k, v in layer.items()
        }
        for layer in params
    ]


def prepare_sweep(
    w: Workload, *, guard: bool = True, step_stats: bool = True
) -> Prepared:
    loss = w.gd_loss()
    data = _data(w)
    init = functools.partial(_init, w.widths)
    tx = gd.sgd(w.sweep_lrs[0], momentum=w.momentum)
    kwargs = dict(
        seeds=list(w.sweep_seeds),
        hyperparams={"learning_rate": list(w.sweep_lrs)},
        grid=True,
        epochs=w.epochs,
        regime=w.regime(),
        guard=guard,
        step_stats=step_stats,
    )

    def run():
        return jax.block_until_ready(gd.sweep(loss, init, data, tx, **kwargs))

    def to_params(result):
        return _flatten_members(result.result.params, w.members)

    def memory():
        # gd.sweep's own pieces (gd.members plans and stacks the members,
        # gd.loop.advance_members runs them), on one device as in run().
        stopping, recording, driving = gd.spec.from_options(
            guard=guard, step_stats=step_stats
        )
        plan = gd.members.plan_members(
            loss,
            init,
            data,
            tx,
            seeds=gd.members.check_seeds(kwargs["seeds"]),
            axes=gd.members.sweep_axes(kwargs["hyperparams"], True),
            epochs=w.epochs,
            regime=w.regime(),
            val_data=None,
            devices=gd.members.check_devices(None),
            stopping=stopping,
            recording=recording,
            driving=driving,
        )
        run = gd.members.member_run(plan)
        lowered = gd.loop.advance_members.lower(
            run.program, run.state, run.inputs, np.int32(w.epochs)
        )
        return common.xla_memory(lowered.compile())

    return Prepared(run=run, to_params=to_params, xla_memory=memory)


def prepare_sequential(w: Workload, *, guard: bool = True) -> Prepared:
    loss = w.gd_loss()
    data = _data(w)
    init = functools.partial(_init, w.widths)
    regime = w.regime()

    def run():
        finals = []
        for seed in w.sweep_seeds:
            init_key, run_key = seed_keys(seed)
            params = init(init_key)
            for lr in w.sweep_lrs:
                r = gd.fit(
                    loss,
                    params,
                    data,
                    gd.sgd(lr, momentum=w.momentum),
                    key=run_key,
                    epochs=w.epochs,
                    regime=regime,
                    guard=guard,
                )
                finals.append(r.params)
        return jax.block_until_ready(finals)

    def to_params(finals):
        return [
            {
                k: np.stack([np.asarray(f[i][k], np.float32) for f in finals])
                for k in ("w", "b")
            }
            for i in range(len(w.widths) - 1)
        ]

    return Prepared(run=run, to_params=to_params, notes=f"{w.members} gd.fit calls")


def prepare_fused(w: Workload, *, unroll: int | None = None) -> Prepared:
    x, y = _data(w)
    seeds = np.repeat(np.asarray(w.sweep_seeds, np.uint32), len(w.sweep_lrs))
    lrs = np.tile(np.asarray(w.sweep_lrs, np.float32), len(w.sweep_seeds))
    static = fused.static_kwargs(w, unroll=unroll)

    @jax.jit
    def start(seeds):
        def one(seed):
            init_key, run_key = seed_keys(seed)
            return _init(w.widths, init_key), run_key

        return jax.vmap(one)(seeds)

    train = jax.jit(
        jax.vmap(
            functools.partial(fused.train, **static), in_axes=(0, None, None, 0, 0)
        )
    )

    def run():
        params, keys = start(seeds)
        return jax.block_until_ready(train(params, x, y, keys, lrs))

    def memory():
        params, keys = start(seeds)
        return common.xla_memory(train.lower(params, x, y, keys, lrs).compile())

    return Prepared(
        run=run,
        to_params=common.to_numpy,
        xla_memory=memory,
        notes=f"vmap over {w.members} members, unroll={static['unroll']}",
    )
