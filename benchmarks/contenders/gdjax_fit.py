"""gdjax as a user calls it: one ``gd.fit`` per run (W4: one ``gd.sweep``).

``run()`` is the whole public call, host-side validation included: ``gd.fit(loss,
params, data, gd.sgd(lr, momentum), key=..., epochs=..., regime=...)`` (plain
``gd.sgd(lr)``, which keeps no momentum buffer, when the momentum is 0) with the
defaults (``guard=True``: every step checks loss, gradients and new parameters
for NaN/inf; a per-epoch loss and gradient-norm history). The regime drops the
last short batch like every other contender (``gd.minibatch(B,
last_batch="drop")``, ``gd.stochastic()`` for B = 1, ``gd.full_batch()``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import gdjax as gd
from benchmarks.contenders import Prepared, common
from benchmarks.workloads import Workload

NAME = "gdjax"
LABEL = "gdjax gd.fit (W4: gd.sweep)"
REQUIRES: tuple[str, ...] = ()


def supports(w: Workload) -> bool:
    del w
    return True


def regime(w: Workload, shuffle: bool = True) -> gd.Regime:
    if shuffle or w.batch_size is None:
        return w.regime()
    return gd.minibatch(w.batch_size, shuffle=False, last_batch="drop")


def prepare(
    w: Workload, *, guard: bool = True, shuffle: bool = True, step_stats: bool = True
) -> Prepared:
    if w.is_sweep:
        from benchmarks.contenders import w4_sweep

        return w4_sweep.prepare_sweep(w, guard=guard, step_stats=step_stats)
    loss = w.gd_loss()
    params = jax.tree.map(jnp.asarray, w.params)
    data = (jnp.asarray(w.x), jnp.asarray(w.y))
    tx = gd.sgd(w.learning_rate, momentum=w.momentum or None)
    reg = regime(w, shuffle)
    key = jax.random.key(w.seed)
    kwargs = dict(key=key, epochs=w.epochs, regime=reg, guard=guard,
                  step_stats=step_stats)

    def run():
        return jax.block_until_ready(gd.fit(loss, params, data, tx, **kwargs))

    def memory():
        # gd.fit's own pieces: the prepared run and its compiled program.
        stopping, recording, driving = gd.spec.from_options(
            guard=guard, step_stats=step_stats
        )
        run = gd.runs.prepare(
            loss,
            params,
            data,
            tx,
            key=key,
            epochs=w.epochs,
            regime=reg,
            stopping=stopping,
            recording=recording,
            driving=driving,
        )
        advance = gd.runs.advance_for(driving)
        lowered = advance.lower(run.program, run.state, run.inputs, np.int32(w.epochs))
        return common.xla_memory(lowered.compile())

    notes = []
    if not guard:
        notes.append("guard=False")
    if not step_stats:
        notes.append("step_stats=False")
    if not shuffle:
        notes.append("shuffle=False")
    return Prepared(
        run=run,
        to_params=lambda r: common.to_numpy(r.params),
        xla_memory=memory,
        notes=", ".join(notes),
    )
