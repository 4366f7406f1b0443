"""The five workloads: data, model, initial parameters and budget, fixed by seeds.

Contract. A :class:`Workload` holds everything a contender needs to do the same
work as every other: float32 data as NumPy arrays, the model as layer widths
(every model is an MLP ``[{"w": (d_in, d_out), "b": (d_out,)}, ...]``, one layer
for linear and logistic regression, applied as :func:`gdjax.models.mlp`), the
initial parameters as NumPy arrays (drawn once with :func:`gdjax.init.mlp`), the
loss kind, the batch size, the learning rate, the momentum and the number of
epochs. The last short batch is dropped for every contender (``n // B`` full
batches per epoch), so every step sees exactly ``B`` examples and no jitted step
recompiles for a short batch.

Final training loss and accuracy are computed here, in float64 NumPy, from the
final parameters of each contender: one evaluator for all, so the table shows
that the same work was done.

=====  ================================  =========  =======  =========  ========
id     model                             data       batch    lr         momentum
=====  ================================  =========  =======  =========  ========
W1     least squares, d = 256            n = 8192   full     1/L        0
W2     multinomial logistic, 64 -> 10    digits     32       0.1        0
W3     MLP 64-256-256-10 (ReLU)          digits     128      0.05       0.9
W4     W3 over 64 seeds x 4 lrs          digits     128      swept      0.9
W5     binary logistic (digit >= 5)      digits     1        0.05       0
=====  ================================  =========  =======  =========  ========
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import numpy as np

import gdjax as gd

MODES = ("smoke", "quick", "full")
WORKLOADS = ("W1", "W2", "W3", "W4", "W5")

# Epochs (for W1: full-batch steps) per mode. W3 and W4 share the smoke budget so
# that the smoke run's sequential W4 reuses W3's compiled gd.fit program.
EPOCHS = {
    "W1": {"smoke": 5, "quick": 100, "full": 500},
    "W2": {"smoke": 2, "quick": 30, "full": 100},
    "W3": {"smoke": 1, "quick": 10, "full": 40},
    "W4": {"smoke": 1, "quick": 1, "full": 2},
    "W5": {"smoke": 1, "quick": 3, "full": 10},
}
REPEATS = {"smoke": 1, "quick": 3, "full": 5}
# W4 is 64 seeds x 4 learning rates; --quick runs 16 x 4 to stay under 3 minutes.
SWEEP_SEEDS = {"smoke": 4, "quick": 16, "full": 64}
SWEEP_LRS = {
    "smoke": (0.01, 0.05),
    "quick": (0.005, 0.01, 0.02, 0.05),
    "full": (0.005, 0.01, 0.02, 0.05),
}

DATA_SEED = 0  # W1's synthetic data
INIT_SEED = 1  # initial parameters
RUN_SEED = 2  # data order (the key given to gd.fit)

Params = list[dict[str, np.ndarray]]


@dataclasses.dataclass(frozen=True, eq=False)
class Workload:
    """One benchmark problem; identical for every contender.

    Attributes:
      name: ``"W1"`` ... ``"W5"``.
      title: one line for the report.
      task: ``"regression"`` (squared error), ``"multiclass"`` (softmax
        cross-entropy) or ``"binary"`` (logistic).
      widths: layer widths, input first (ReLU between layers).
      batch_size: examples per step; ``None`` for full batch.
      epochs: passes over the data (full batch: steps).
      learning_rate: constant step size (W4: the first swept value).
      momentum: heavy-ball momentum (0: plain SGD).
      x: ``(n, d)`` float32 inputs.
      y: ``(n,)`` float32 targets or int32 labels.
      params: initial parameters (NumPy), for single-run workloads.
      seed: the run key's seed (data order) for single-run workloads.
      sweep_seeds: W4's seeds (each gives init and run keys through
        ``gd.seed_keys``); empty otherwise.
      sweep_lrs: W4's learning rates; empty otherwise.
      shared_order: if True, host-side contenders take gdjax's data order
        instead of drawing their own (used by the smoke test to compare final
        losses tightly); the timed benchmark leaves it False.
      mode: the budget mode the workload was built for.
    """

    name: str
    title: str
    task: str
    widths: tuple[int, ...]
    batch_size: int | None
    epochs: int
    learning_rate: float
    momentum: float
    x: np.ndarray
    y: np.ndarray
    params: Params
    seed: int = RUN_SEED
    sweep_seeds: tuple[int, ...] = ()
    sweep_lrs: tuple[float, ...] = ()
    shared_order: bool = False
    mode: str = "quick"
    notes: str = ""

    @property
    def n(self) -> int:
        return int(self.x.shape[0])

    @property
    def batch(self) -> int:
        """Examples per step (n for full batch)."""
        return self.n if self.batch_size is None else self.batch_size

    @property
    def steps_per_epoch(self) -> int:
        return 1 if self.batch_size is None else self.n // self.batch_size

    @property
    def steps(self) -> int:
        """Gradient steps of one run."""
        return self.epochs * self.steps_per_epoch

    @property
    def members(self) -> int:
        """Runs in the workload (W4: seeds x learning rates)."""
        return max(1, len(self.sweep_seeds) * len(self.sweep_lrs))

    @property
    def is_sweep(self) -> bool:
        return bool(self.sweep_seeds)

    def regime(self) -> gd.Regime:
        """The gdjax batching regime of this workload (last batch dropped)."""
        if self.batch_size is None:
            return gd.full_batch()
        if self.batch_size == 1:
            return gd.stochastic()
        return gd.minibatch(self.batch_size, last_batch="drop")

    def gd_loss(self):
        """The gdjax loss: ``gd.make_loss(gd.models.mlp, <per-example loss>)``."""
        return _gd_loss(self.task)

    def describe(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "task": self.task,
            "widths": list(self.widths),
            "n": self.n,
            "batch_size": self.batch,
            "steps_per_epoch": self.steps_per_epoch,
            "epochs": self.epochs,
            "steps_per_run": self.steps,
            "members": self.members,
            "learning_rate": self.learning_rate,
            "momentum": self.momentum,
            "sweep_seeds": len(self.sweep_seeds),
            "sweep_lrs": list(self.sweep_lrs),
            "last_batch": "drop",
            "dtype": "float32",
            "notes": self.notes,
        }


@functools.cache
def _gd_loss(task: str):
    per_example = {
        "regression": gd.losses.squared_error,
        "multiclass": gd.losses.softmax_cross_entropy,
        "binary": gd.losses.logistic,
    }[task]
    return gd.make_loss(gd.models.mlp, per_example)


def _numpy_params(params) -> Params:
    return [
        {k: np.asarray(v, np.float32) for k, v in layer.items()} for layer in params
    ]


def init_params(key: jax.Array, widths: tuple[int, ...]) -> Params:
    """``gd.init.mlp(key, widths)`` as NumPy arrays (LeCun normal, zero bias)."""
    return _numpy_params(gd.init.mlp(key, list(widths)))


@functools.cache
def _digits() -> tuple[np.ndarray, np.ndarray]:
    (x, y), _ = gd.datasets.digits()
    return np.asarray(x, np.float32), np.asarray(y, np.int32)


@functools.cache
def _least_squares() -> tuple[np.ndarray, np.ndarray, float]:
    (x, y), _ = gd.datasets.least_squares(jax.random.key(DATA_SEED), 8192, 256)
    x = np.asarray(x, np.float32)
    y = np.asarray(y, np.float32)
    # The Hessian of (1/2n)||[X 1] theta - y||^2 is A^T A / n with A = [X 1]
    # (the model has a bias); L is its top eigenvalue, computed once.
    a = np.concatenate([x, np.ones((x.shape[0], 1), np.float32)], 1).astype(np.float64)
    top = float(np.linalg.eigvalsh(a.T @ a / a.shape[0])[-1])
    return x, y, top


def build(name: str, mode: str = "quick", *, shared_order: bool = False) -> Workload:
    """The workload ``name`` with the budget of ``mode`` (smoke, quick or full)."""
    if name not in WORKLOADS:
        raise ValueError(f"workload must be one of {WORKLOADS}, got {name!r}.")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}.")
    epochs = EPOCHS[name][mode]
    key = jax.random.key(INIT_SEED)
    common = dict(epochs=epochs, shared_order=shared_order, mode=mode)
    if name == "W1":
        x, y, top = _least_squares()
        widths = (256, 1)
        return Workload(
            name="W1",
            title=f"full-batch GD, least squares n=8192 d=256, {epochs} steps, lr=1/L",
            task="regression",
            widths=widths,
            batch_size=None,
            learning_rate=1.0 / top,
            momentum=0.0,
            x=x,
            y=y,
            params=init_params(key, widths),
            notes=f"L = {top:.6g}, top eigenvalue of [X 1]^T [X 1] / n",
            **common,
        )
    x, labels = _digits()
    if name == "W2":
        widths = (64, 10)
        return Workload(
            name="W2",
            title=f"mini-batch SGD, multinomial logistic, digits, B=32, {epochs} ep",
            task="multiclass",
            widths=widths,
            batch_size=32,
            learning_rate=0.1,
            momentum=0.0,
            x=x,
            y=labels,
            params=init_params(key, widths),
            **common,
        )
    if name == "W3":
        widths = (64, 256, 256, 10)
        return Workload(
            name="W3",
            title=f"SGD+momentum 0.9, MLP 64-256-256-10, digits, B=128, {epochs} ep",
            task="multiclass",
            widths=widths,
            batch_size=128,
            learning_rate=0.05,
            momentum=0.9,
            x=x,
            y=labels,
            params=init_params(key, widths),
            **common,
        )
    if name == "W4":
        widths = (64, 256, 256, 10)
        seeds = tuple(range(SWEEP_SEEDS[mode]))
        lrs = SWEEP_LRS[mode]
        return Workload(
            name="W4",
            title=(
                f"sweep of W3: {len(seeds)} seeds x {len(lrs)} lrs = "
                f"{len(seeds) * len(lrs)} runs, {epochs} ep each"
            ),
            task="multiclass",
            widths=widths,
            batch_size=128,
            learning_rate=lrs[0],
            momentum=0.9,
            x=x,
            y=labels,
            params=[],
            sweep_seeds=seeds,
            sweep_lrs=lrs,
            notes="member (seed s, lr): init and run keys from gd.seed_keys(s)",
            **common,
        )
    widths = (64, 1)
    return Workload(
        name="W5",
        title=f"SGD batch 1, binary logistic (digit >= 5), digits, {epochs} ep",
        task="binary",
        widths=widths,
        batch_size=1,
        learning_rate=0.05,
        momentum=0.0,
        x=x,
        y=(labels >= 5).astype(np.int32),
        params=init_params(key, widths),
        **common,
    )


# --------------------------------------------------------------------------- orders


def reference_orders(w: Workload, key: jax.Array | None = None) -> np.ndarray:
    """gdjax's data order for a run: ``(epochs, steps_per_epoch, batch)`` int32.

    The indices ``gd.fit(..., key=key, regime=w.regime())`` uses, from
    :func:`gdjax.batching.epoch_batches`; host contenders consume them when
    ``w.shared_order`` is set.
    """
    key = jax.random.key(w.seed) if key is None else key
    regime = w.regime()
    plan = gd.batching.plan(regime, w.n)
    out = [
        np.asarray(gd.batching.epoch_batches(regime, plan, key, e)[0])
        for e in range(w.epochs)
    ]
    return np.stack(out).astype(np.int32)


# ------------------------------------------------------------------------ evaluation


def _forward(params: Params, x: np.ndarray) -> np.ndarray:
    h = x.astype(np.float64)
    for i, layer in enumerate(params):
        h = h @ np.asarray(layer["w"], np.float64) + np.asarray(layer["b"], np.float64)
        if i < len(params) - 1:
            h = np.maximum(h, 0.0)
    return h


def evaluate(w: Workload, params: Params) -> tuple[float, float | None]:
    """Final training loss (the workload's loss, float64) and accuracy.

    Accuracy is ``None`` for regression. Non-finite parameters give NaN.
    """
    z = _forward(params, w.x)
    if w.task == "regression":
        r = z[:, 0] - w.y.astype(np.float64)
        return float(0.5 * np.mean(r * r)), None
    if w.task == "binary":
        t = w.y.astype(np.float64)
        s = z[:, 0]
        # log(1 + e^-s) for t=1, log(1 + e^s) for t=0, stably.
        loss = np.logaddexp(0.0, -s) * t + np.logaddexp(0.0, s) * (1 - t)
        acc = np.mean((s > 0) == (t > 0))
        return float(np.mean(loss)), float(acc)
    zmax = z.max(axis=1, keepdims=True)
    lse = zmax[:, 0] + np.log(np.exp(z - zmax).sum(axis=1))
    loss = lse - z[np.arange(len(w.y)), w.y]
    acc = np.mean(np.argmax(z, axis=1) == w.y)
    return float(np.mean(loss)), float(acc)


def evaluate_members(w: Workload, stacked: Params) -> tuple[float, float | None]:
    """Mean over members of :func:`evaluate`, for stacked (sweep) parameters."""
    m = np.asarray(stacked[0]["w"]).shape[0]
    losses, accs = [], []
    for i in range(m):
        member = [{k: np.asarray(v)[i] for k, v in layer.items()} for layer in stacked]
        loss, acc = evaluate(w, member)
        losses.append(loss)
        accs.append(acc)
    acc = None if accs[0] is None else float(np.mean(accs))
    return float(np.mean(losses)), acc


def member_grid(w: Workload) -> list[tuple[int, float]]:
    """W4's members in sweep order: ``(seed, lr)`` with the seed axis first."""
    return [(s, lr) for s in w.sweep_seeds for lr in w.sweep_lrs]


__all__ = [
    "EPOCHS",
    "MODES",
    "REPEATS",
    "WORKLOADS",
    "Workload",
    "build",
    "evaluate",
    "evaluate_members",
    "init_params",
    "member_grid",
    "reference_orders",
]
