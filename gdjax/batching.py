"""Batching regimes: which examples feed each gradient, drawn on the device.

Plain (full-batch), stochastic and mini-batch gradient descent differ only in the
index set :math:`B_t` of each step,

.. math:: \\theta_{t+1} = \\theta_t - \\eta_t \\nabla L_{B_t}(\\theta_t),
   \\qquad L_B(\\theta) =
   \\frac{\\sum_{i \\in B} w_i \\ell_i(\\theta)}{\\sum_{i \\in B} w_i}.

A :class:`Regime` is a small hashable description (it is a static argument of the
compiled run). :func:`epoch_batches` turns ``(regime, key, epoch, n)`` into the
``(steps, batch)`` index matrix of one epoch and its example weights, with
``jax.random`` inside the compiled program: no host round-trip per step or epoch.
The key of epoch ``e`` is ``fold_in(key, e)``, so the order of epoch ``e`` depends
on nothing but the run's key and ``e`` (not on the learning rate, not on where a
resumed run restarted).

Shuffling. ``jax.random.permutation`` sorts, and on CPU one sort of 1,797
indices costs as much as a whole epoch of small logistic-regression steps. The
default ``permutation="hash"`` is a keyed bijection of ``[0, n)`` (Kensler's
hash permutation with cycle walking, Kensler 2013): O(n) integer arithmetic, no
sort. It is a *pseudo-random* permutation (at most 2^32 orders per n, one per
32-bit seed), which is what shuffling for SGD needs. ``permutation="sort"``
draws a uniform random order (an argsort of random bits; ties have probability
below n²/2³³) for when the exact distribution matters.

The last short batch. With ``last_batch="pad"`` (default) it is padded to the
batch size with weight-0 copies of example 0, so every example counts exactly
once per epoch; ``"drop"`` skips it (``n // B`` steps per epoch).

References:
  Kensler, `Correlated Multi-Jittered Sampling
  <https://graphics.pixar.com/library/MultiJitteredSampling/paper.pdf>`_, 2013.
"""

from __future__ import annotations

import functools
import math
import numbers
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gdjax._validate import check_flag, describe

_PERMUTATIONS = ("hash", "sort")
_LAST_BATCH = ("pad", "drop")


class Regime(NamedTuple):
    """A batching regime. Build one with :func:`full_batch`, :func:`stochastic`
    or :func:`minibatch`; it is hashable and static in the compiled run.

    Attributes:
      kind: ``"full"``, ``"stochastic"`` or ``"minibatch"``.
      batch_size: examples per step (``None`` for full batch: all n).
      shuffle: draw a fresh order each epoch (else take examples in order).
      replacement: sample each step's examples uniformly with replacement.
      last_batch: ``"pad"`` (masked padding) or ``"drop"``.
      permutation: ``"hash"`` (fast keyed bijection) or ``"sort"`` (uniform).
    """

    kind: str
    batch_size: int | None
    shuffle: bool
    replacement: bool
    last_batch: str
    permutation: str

    def describe(self) -> str:
        if self.kind == "full":
            return "full batch"
        if self.kind == "stochastic":
            how = "with replacement" if self.replacement else "without replacement"
            return f"stochastic ({how})"
        order = "shuffled" if self.shuffle else "in order"
        return f"mini-batch {self.batch_size} ({order}, last batch {self.last_batch})"


def _check_choice(value, name, choices):
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}.")


def full_batch() -> Regime:
    """Plain gradient descent: every step sees all n examples, in order.

    Examples:
      >>> import gdjax as gd
      >>> gd.full_batch().describe()
      'full batch'
    """
    return Regime("full", None, False, False, "drop", "hash")


def stochastic(*, replacement: bool = False, permutation: str = "hash") -> Regime:
    """Stochastic gradient descent: one example a step, n steps an epoch.

    Args:
      replacement: if True each step draws an example uniformly at random
        (Robbins–Monro sampling); if False (default) each epoch visits a fresh
        permutation of the examples, each exactly once.
      permutation: ``"hash"`` or ``"sort"``; see the module docstring.

    Examples:
      >>> import gdjax as gd
      >>> gd.stochastic(replacement=True).describe()
      'stochastic (with replacement)'
    """
    _check_choice(permutation, "permutation", _PERMUTATIONS)
    replacement = check_flag(replacement, "replacement")
    return Regime("stochastic", 1, True, replacement, "drop", permutation)


def minibatch(
    batch_size: int,
    *,
    shuffle: bool = True,
    last_batch: str = "pad",
    permutation: str = "hash",
) -> Regime:
    """Mini-batch gradient descent with batches of ``batch_size`` examples.

    Args:
      batch_size: examples per step, an integer in ``[1, n]``.
      shuffle: reshuffle the examples each epoch from the run's key (default)
        or take them in order.
      last_batch: ``"pad"`` keeps the short last batch, padded and masked so
        every example counts once per epoch; ``"drop"`` skips it.
      permutation: ``"hash"`` or ``"sort"``; see the module docstring.

    Examples:
      >>> import gdjax as gd
      >>> gd.minibatch(32).describe()
      'mini-batch 32 (shuffled, last batch pad)'
    """
    if isinstance(batch_size, (bool, np.bool_)) or not isinstance(
        batch_size, numbers.Integral
    ):
        raise TypeError(
            f"batch_size must be a positive integer, got {describe(batch_size)}."
        )
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size}.")
    _check_choice(last_batch, "last_batch", _LAST_BATCH)
    _check_choice(permutation, "permutation", _PERMUTATIONS)
    # A string such as "no" is truthy: refuse it rather than shuffle.
    shuffle = check_flag(shuffle, "shuffle")
    return Regime("minibatch", int(batch_size), shuffle, False, last_batch, permutation)


class Plan(NamedTuple):
    """How a regime lays out an epoch of n examples (host-side, static).

    Attributes:
      n: the number of examples.
      batch_size: examples per step.
      steps: steps per epoch.
      masked: True when some step carries weight-0 padding.
    """

    n: int
    batch_size: int
    steps: int
    masked: bool


def plan(regime: Regime, n: int) -> Plan:
    """Resolve a regime against n examples, refusing what would misbehave.

    Raises:
      ValueError: batch larger than n, or a policy that leaves no step.
    """
    if not isinstance(regime, Regime):
        raise TypeError(
            "regime must be gd.full_batch(), gd.stochastic() or gd.minibatch(B), "
            f"got {describe(regime)}."
        )
    if regime.kind == "full":
        return Plan(n, n, 1, False)
    b = regime.batch_size
    if b > n:
        raise ValueError(
            f"batch_size must be in [1, {n}] for data with n={n} examples, got {b}; "
            "inside jit a larger batch would silently repeat examples."
        )
    if regime.replacement:
        return Plan(n, b, max(n // b, 1), False)
    if regime.last_batch == "drop":
        steps = n // b
        return Plan(n, b, steps, False)
    steps = math.ceil(n / b)
    return Plan(n, b, steps, steps * b != n)


# ----------------------------------------------------------------------------- orders


def _hash_permute(i: jax.Array, n: int, seed: jax.Array) -> jax.Array:
    """Kensler's keyed bijection of [0, n) applied to ``i`` (uint32), cycle walked."""
    w = (1 << max(int(n - 1).bit_length(), 1)) - 1
    wu = jnp.uint32(w)
    p = seed

    def bijection(x):
        x = x ^ p
        x = x * jnp.uint32(0xE170893D)
        x = x ^ (p >> 16)
        x = x ^ ((x & wu) >> 4)
        x = x ^ (p >> 8)
        x = x * jnp.uint32(0x0929EB3F)
        x = x ^ (p >> 23)
        x = x ^ ((x & wu) >> 1)
        x = x * (jnp.uint32(1) | (p >> 27))
        x = x * jnp.uint32(0x6935FA69)
        x = x ^ ((x & wu) >> 11)
        x = x * jnp.uint32(0x74DCB303)
        x = x ^ ((x & wu) >> 2)
        x = x * jnp.uint32(0x9E501CC3)
        x = x ^ ((x & wu) >> 2)
        x = x * jnp.uint32(0xC860A3DF)
        x = x & wu
        x = x ^ (x >> 5)
        return x

    # Cycle walking: a bijection of [0, 2^m) restricted to [0, n) by re-applying
    # it to the values that land outside; expected fewer than 2 rounds. The
    # first round is the loop's too (every value is walked once), so that the
    # bijection is compiled once.
    def walk(state):
        x, first = state
        return jnp.where(first | (x >= n), bijection(x), x), jnp.zeros((), bool)

    x, _ = jax.lax.while_loop(
        lambda state: state[1] | jnp.any(state[0] >= n), walk, (i, jnp.ones((), bool))
    )
    return ((x + p) % jnp.uint32(n)).astype(jnp.int32)


@functools.partial(jax.jit, static_argnums=(1, 2))
def permutation(key: jax.Array, n: int, method: str = "hash") -> jax.Array:
    """A random order of ``range(n)`` as int32, drawn inside the program.

    Args:
      key: a PRNG key.
      n: number of examples (static).
      method: ``"hash"`` (keyed bijection, no sort) or ``"sort"`` (uniform).

    Examples:
      >>> import jax, numpy as np, gdjax as gd
      >>> order = gd.batching.permutation(jax.random.key(0), 10)
      >>> sorted(np.asarray(order).tolist()) == list(range(10))
      True
    """
    if method == "sort":
        return jnp.argsort(jax.random.bits(key, (n,), jnp.uint32)).astype(jnp.int32)
    seed = jax.random.bits(key, (), jnp.uint32)
    return _hash_permute(jnp.arange(n, dtype=jnp.uint32), n, seed)


def epoch_batches(
    regime: Regime, plan_: Plan, key: jax.Array, epoch: jax.Array
) -> tuple[jax.Array, jax.Array | None]:
    """Indices ``(steps, batch)`` and weights ``(steps, batch)`` of one epoch.

    Weights are ``None`` when every example in every step counts (no padding).

    Examples:
      >>> import jax, gdjax as gd
      >>> r = gd.minibatch(4, shuffle=False)
      >>> idx, w = gd.batching.epoch_batches(r, gd.batching.plan(r, 10),
      ...                                    jax.random.key(0), 0)
      >>> idx.tolist()
      [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 0, 0]]
      >>> w.tolist()
      [[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 0.0, 0.0]]
    """
    n, b, steps, masked = plan_
    if regime.kind == "full":
        return jnp.arange(n, dtype=jnp.int32)[None], None
    ekey = jax.random.fold_in(key, epoch)
    if regime.replacement:
        return jax.random.randint(ekey, (steps, b), 0, n, dtype=jnp.int32), None
    if regime.shuffle:
        order = permutation(ekey, n, regime.permutation)
    else:
        order = jnp.arange(n, dtype=jnp.int32)
    total = steps * b
    if total <= n:
        return order[:total].reshape(steps, b), None
    pad = total - n
    idx = jnp.concatenate([order, jnp.zeros((pad,), jnp.int32)]).reshape(steps, b)
    weights = (jnp.arange(total) < n).reshape(steps, b)
    return idx, weights.astype(jnp.float32)


def step_batch(
    regime: Regime, plan_: Plan, key: jax.Array, epoch: jax.Array, step: jax.Array
) -> tuple[jax.Array, jax.Array | None]:
    """Indices ``(batch,)`` and weights of one step: row ``step`` of
    :func:`epoch_batches` (``epoch`` and ``step`` count from 0, may be traced).

    The hash permutation is a bijection applied index by index, so one step's
    batch costs O(batch) without the epoch's order; the uniform ``"sort"``
    order and sampling with replacement draw the epoch's numbers and take the
    row (the same numbers, so the same batch).

    Examples:
      >>> import jax, gdjax as gd
      >>> r = gd.minibatch(4)
      >>> p, k = gd.batching.plan(r, 10), jax.random.key(0)
      >>> idx, w = gd.batching.epoch_batches(r, p, k, 3)
      >>> i2, w2 = gd.batching.step_batch(r, p, k, 3, 2)
      >>> i2.tolist() == idx[2].tolist(), w2.tolist() == w[2].tolist()
      (True, True)
    """
    n, b, steps, masked = plan_
    if regime.kind == "full":
        return jnp.arange(n, dtype=jnp.int32), None
    step = jnp.asarray(step, jnp.int32)
    if regime.replacement or (regime.shuffle and regime.permutation == "sort"):
        idx, w = epoch_batches(regime, plan_, key, epoch)
        row = jnp.take(idx, step, axis=0)
        return row, None if w is None else jnp.take(w, step, axis=0)
    pos = step * b + jnp.arange(b, dtype=jnp.int32)
    valid = pos < n
    if regime.shuffle:
        seed = jax.random.bits(jax.random.fold_in(key, epoch), (), jnp.uint32)
        safe = jnp.minimum(pos, n - 1).astype(jnp.uint32)
        idx = _hash_permute(safe, n, seed)
    else:
        idx = pos
    if not masked:
        return idx, None
    return jnp.where(valid, idx, 0), valid.astype(jnp.float32)


def gather(data, idx: jax.Array):
    """The examples ``idx`` of every leaf of ``data`` (a pytree, leading axis n).

    An index outside ``[0, n)`` is clamped into it (``mode="clip"``, XLA's own
    gather rule, so the step holds no bounds code); the regimes never draw one.
    ``jnp.take``'s default instead wraps negative indices and fills
    out-of-range rows with NaN, which puts a compare and a select over the
    whole batch into every step (in W2's run program the largest kernel: 53 of
    about 415 ms of LLVM time).
    """
    return jax.tree.map(lambda a: a.at[idx].get(mode="clip"), data)


__all__ = [
    "Plan",
    "Regime",
    "epoch_batches",
    "full_batch",
    "gather",
    "minibatch",
    "permutation",
    "plan",
    "step_batch",
    "stochastic",
]
