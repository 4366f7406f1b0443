"""The floor: how fast this machine could do a workload's arithmetic at best.

For each step of a workload the forward and backward passes are matrix
products of known shapes: for a layer ``(d_in -> d_out)`` at batch ``B``, the
forward ``(B, d_in) @ (d_in, d_out)``, the weight gradient ``(d_in, B) @ (B,
d_out)`` and, except for the first layer, the input gradient ``(B, d_out) @
(d_out, d_in)``. Each distinct shape is timed here as a jitted ``lax.scan`` of
many such products (the smaller operand changes every iteration, so nothing is
hoisted; unrolled 8 times, so loop overhead is amortized), which gives the
measured peak FLOP/s *of that shape* on this machine: compute-bound for the
MLP's products, memory-bound for W1's matrix-vector products (those read the
8 MB design matrix, so their rate is the achieved bandwidth).

The floor of a run is then::

    floor = members * steps * (sum over products of 2*m*k*n / rate(m, k, n)
                               + elementwise FLOPs / peak FLOP/s)

where the elementwise FLOPs (bias, ReLU and its gradient, the loss, the update:
2 per parameter for SGD, 4 with momentum) are charged at the machine's peak
(a large square matmul), which makes them nearly free: the floor is a lower
bound, not a prediction. Gathers, shuffles and loop control cost nothing in it.
"""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.workloads import Workload

Shape = tuple[int, int, int]


def products(w: Workload) -> list[Shape]:
    """The matrix products ``(m, k, n)`` of one step (m x k times k x n)."""
    b = w.batch
    out: list[Shape] = []
    for i, (d_in, d_out) in enumerate(zip(w.widths[:-1], w.widths[1:], strict=True)):
        out.append((b, d_in, d_out))  # forward
        out.append((d_in, b, d_out))  # weight gradient
        if i > 0:
            out.append((b, d_out, d_in))  # input gradient
    return out


def parameter_count(w: Workload) -> int:
    return sum(a * b + b for a, b in zip(w.widths[:-1], w.widths[1:], strict=True))


def elementwise_flops(w: Workload) -> int:
    """Per-step FLOPs outside the matrix products (an estimate)."""
    b = w.batch
    hidden = sum(w.widths[1:-1])
    k = w.widths[-1]
    per_update = 4 if w.momentum else 2
    return (
        b * sum(w.widths[1:]) * 2  # bias add, bias gradient
        + b * hidden * 2  # ReLU and its gradient
        + b * k * 6  # loss and its gradient
        + parameter_count(w) * per_update
    )


def step_flops(w: Workload) -> int:
    return sum(2 * m * k * n for m, k, n in products(w)) + elementwise_flops(w)


@functools.cache
def _program(m: int, k: int, n: int, reps: int):
    vary_left = m * k <= k * n

    def run(a, bs):
        def body(acc, x):
            y = x @ a if vary_left else a @ x
            return acc + y, None

        acc = jnp.zeros((m, n), a.dtype)
        return jax.lax.scan(body, acc, bs, unroll=8)[0]

    return jax.jit(run), vary_left


def time_product(m: int, k: int, n: int, *, budget: float = 0.05) -> float:
    """Seconds per ``(m, k) @ (k, n)`` float32 product, best of 3 (in a scan)."""
    rng = np.random.default_rng(0)
    est = max(2 * m * k * n / 20e9, 2e-7)  # rough first guess
    reps = int(min(max(budget / est, 16), 4096)) // 8 * 8
    fn, vary_left = _program(m, k, n, reps)
    if vary_left:
        fixed = rng.standard_normal((k, n), np.float32)
        small = rng.standard_normal((reps, m, k), np.float32)
    else:
        fixed = rng.standard_normal((m, k), np.float32)
        small = rng.standard_normal((reps, k, n), np.float32)
    fixed, small = jnp.asarray(fixed), jnp.asarray(small)
    jax.block_until_ready(fn(fixed, small))
    best = np.inf
    for _ in range(3):
        t = time.perf_counter()
        jax.block_until_ready(fn(fixed, small))
        best = min(best, time.perf_counter() - t)
    return best / reps


@functools.cache
def machine_peak(budget: float = 0.2) -> dict[str, float]:
    """Peak FLOP/s of a 1024^3 float32 matmul and read bandwidth of a 256 MB sum."""
    t = time_product(1024, 1024, 1024, budget=budget)
    flops = 2 * 1024**3 / t
    x = jnp.ones((64 * 1024 * 1024,), jnp.float32)
    total = jax.jit(jnp.sum)
    jax.block_until_ready(total(x))
    best = np.inf
    for _ in range(3):
        t0 = time.perf_counter()
        jax.block_until_ready(total(x))
        best = min(best, time.perf_counter() - t0)
    del x
    return {"matmul_flops": flops, "read_bandwidth": 4 * 64 * 1024 * 1024 / best}


def floor(w: Workload, *, budget: float = 0.05) -> dict:
    """The floor of workload ``w`` on this machine (see the module docstring)."""
    peak = machine_peak()["matmul_flops"]
    shapes = products(w)
    per_shape = {s: time_product(*s, budget=budget) for s in sorted(set(shapes))}
    step_s = sum(per_shape[s] for s in shapes) + elementwise_flops(w) / peak
    runs = w.members * w.steps
    return {
        "products": [
            {
                "shape": list(s),
                "seconds": per_shape[s],
                "gflops": 2 * s[0] * s[1] * s[2] / per_shape[s] / 1e9,
            }
            for s in sorted(set(shapes))
        ],
        "step_flops": step_flops(w),
        "run_flops": step_flops(w) * runs,
        "step_seconds": step_s,
        "seconds": step_s * runs,
    }


__all__ = ["elementwise_flops", "floor", "machine_peak", "products", "step_flops"]
