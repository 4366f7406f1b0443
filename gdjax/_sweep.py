""":func:`sweep`: many runs as one program (re-exported as ``gdjax.sweep``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import optax

from gdjax import batching, members, spec
from gdjax._typing import Batch, Key, LossFn, Params
from gdjax.errors import GdjaxTypeError
from gdjax.results import FitResult, SweepResult
from gdjax.spec import Driving, Recording, Stopping


def check_sweep_driving(driving: Driving, where: str) -> None:
    """Refuse the driving options that do not apply to members."""
    for name in ("donate", "raise_on_nonfinite"):
        if getattr(driving, name):
            raise GdjaxTypeError(
                f"{where} does not take {name}=True: members always donate their "
                "state to the program, and a failed member is reported in the "
                "result (sweep.failed()), not raised."
            )


def sweep(
    loss: LossFn,
    init: Callable[[Key], Params] | Params,
    data: Batch,
    transform: optax.GradientTransformation,
    *,
    seeds: Sequence[int],
    epochs: int,
    hyperparams: Mapping[str, Sequence[float]] | None = None,
    grid: bool = True,
    regime: batching.Regime | None = None,
    val_data: Batch | None = None,
    outer: Mapping[str, Sequence[Any]] | None = None,
    devices: int | Sequence[jax.Device] | None = None,
    stopping: Stopping | None = None,
    recording: Recording | None = None,
    driving: Driving | None = None,
    **options: Any,
) -> SweepResult:
    r"""Train every (seed, hyperparameter setting) at once, as one compiled program.

    For seeds :math:`s_1..s_S` and settings :math:`h_1..h_H` (the product of
    the ``hyperparams`` lists, or their zip) it runs the :math:`M = S H`
    members

    .. math:: \theta^{(s,h)}_{t+1} = \theta^{(s,h)}_t +
       u\big(\nabla L_{B^{(s)}_t}(\theta^{(s,h)}_t);\ h\big),
       \qquad \theta^{(s,h)}_0 = \mathrm{init}(k^{(s)}_{\mathrm{init}})

    in one ``jit(vmap(run_epochs))``; member :math:`(s, h)` equals
    ``gd.fit(loss, init(gd.seed_keys(s)[0]), data, transform,
    key=gd.seed_keys(s)[1], hyperparams=h, ...)`` (see :mod:`gdjax.members`).

    Args:
      loss: ``loss(params, batch) -> scalar``, as for :func:`gdjax.fit`.
      init: ``init(key) -> params`` (each seed draws its own, from
        ``seed_keys(seed)[0]``) or a params pytree shared by every member.
      data: the training data, shared by all members (one copy per device).
      transform: an optax ``GradientTransformation``; to sweep its numbers,
        build it with :func:`gdjax.sgd` or ``optax.inject_hyperparams``.
      seeds: distinct integers in ``[0, 2**32)``.
      epochs: the epoch budget of every member.
      hyperparams: ``{name: values}``: names of the transform's injected
        hyperparameters (:func:`gdjax.get_hyperparams`) or the numeric
        stopping criteria ``tol``, ``target_loss``, ``grad_tol``,
        ``max_steps``, ``patience``; values distinct numbers.
      grid: ``True`` sweeps the product of the lists (one axis per name);
        ``False`` zips equal-length lists (one ``"setting"`` axis).
      regime: the batching regime (:func:`gdjax.full_batch` by default).
      val_data: held-out data, evaluated after every epoch.
      outer: ``{name: values}`` that change shapes, run as a Python loop
        (one compilation each): ``"batch_size"``, ``"regime"``, or a keyword
        of ``init`` (e.g. a width, with ``init(key, width=...)``).
      devices: a device count or list of devices to shard the members over;
        ``None`` shards over all devices when there are several.
      stopping, recording, driving: run options as for :func:`gdjax.fit`
        (the callback sees the stacked members, padding included).
      **options: their fields as flat keywords, as for :func:`gdjax.fit`.

    Returns:
      A :class:`~gdjax.SweepResult` with axes ``(*outer, "seed",
      *hyperparams)`` (or ``(*outer, "seed", "setting")`` with ``grid=False``).

    Raises:
      TypeError, ValueError: before anything compiles, for an empty sweep,
        duplicate seeds or values, unequal zipped lists, an unknown or
        out-of-range hyperparameter, and everything :func:`gdjax.fit` refuses.

    Examples:
      >>> import jax.numpy as jnp, gdjax as gd
      >>> x = jnp.array([[1.0], [2.0], [3.0]]); y = 2.0 * x[:, 0]
      >>> loss = gd.make_loss(gd.models.linear, gd.losses.squared_error)
      >>> params = {"w": jnp.zeros((1, 1)), "b": jnp.zeros(1)}
      >>> res = gd.sweep(loss, params, (x, y), gd.sgd(0.1), seeds=[0, 1],
      ...                hyperparams={"learning_rate": [0.01, 0.1]},
      ...                epochs=200, target_loss=1e-3)
      >>> res.axes, res.shape
      (('seed', 'learning_rate'), (2, 2))
      >>> res.reasons()[0].tolist(), res.result.epoch[0].tolist()
      (['MAX_EPOCHS', 'TARGET_LOSS'], [200, 153])
      >>> res.best()[0]
      {'learning_rate': 0.1}
    """
    stopping, recording, driving = spec.from_options(
        stopping, recording, driving, **options
    )
    check_sweep_driving(driving, "sweep()")
    seed_values = members.check_seeds(seeds)
    axes = members.sweep_axes(hyperparams, grid)
    outer_coords, points = members.outer_points(outer, init, regime, axes)
    device_list = members.check_devices(devices)
    plans = [
        members.plan_members(
            loss,
            point_init,
            data,
            transform,
            seeds=seed_values,
            axes=axes,
            epochs=epochs,
            regime=point_regime,
            val_data=val_data,
            devices=device_list,
            stopping=stopping,
            recording=recording,
            driving=driving,
        )
        for _, point_init, point_regime in points
    ]
    inner_shape = (len(seed_values), *(len(v) for _, v in axes.coords))
    states = [members.reshape(members.execute(p, driving), inner_shape) for p in plans]
    seed_coord = (("seed", tuple(int(s) for s in seed_values)),)
    coords = outer_coords + seed_coord + axes.coords
    outer_shape = tuple(len(v) for _, v in outer_coords)
    state = (
        states[0] if not outer_coords else members.combine_points(states, outer_shape)
    )
    return SweepResult(FitResult(state), tuple(a for a, _ in coords), coords)


__all__ = ["sweep"]
