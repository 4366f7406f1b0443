"""What issue 21's transforms cost: ``gd.sgd`` now against ``gd.sgd`` at a git ref.

Issue 21 replaced ``optax.inject_hyperparams`` inside :func:`gdjax.sgd` by an
update that casts each hyperparameter to the leaf it multiplies. This loads
``gdjax/transforms.py`` as it was at ``--ref`` (default ``f7f6eb4``, the commit
before) next to the current one, in one process, and times the same jitted
``lax.scan`` of steps with each, on four shapes like the benchmark workloads
(W2, W3, W4 as a vmap over 16 learning rates, W5), alternating old and new.
It prints, per shape, the median and min time ratios new/old, whether the final
params are bitwise equal, and the difference in optimized-HLO op counts (the
ratio is noise on a loaded machine; the op counts are not).

Run: ``python -m benchmarks.transforms_ab [--ref f7f6eb4] [--repeats 21]``.
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import pathlib
import re
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import gdjax.transforms as current

_ROOT = pathlib.Path(__file__).resolve().parents[1]

# name: (layer widths, batch, steps, sgd kwargs, members swept over lr or 0)
SHAPES = {
    "W2-like softmax regression, B=32": ([64, 10], 32, 420, dict(learning_rate=0.1), 0),
    "W3-like MLP 64-256-256-10, B=128, momentum": (
        [64, 256, 256, 10],
        128,
        40,
        dict(learning_rate=0.05, momentum=0.9),
        0,
    ),
    "W4-like W3 vmapped over 16 learning rates": (
        [64, 256, 256, 10],
        128,
        10,
        dict(learning_rate=0.05, momentum=0.9),
        16,
    ),
    "W5-like logistic regression, B=1": ([64, 2], 1, 1347, dict(learning_rate=0.05), 0),
}


def _load_old(ref: str):
    source = subprocess.run(
        ["git", "show", f"{ref}:gdjax/transforms.py"],
        cwd=_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    path = pathlib.Path(tempfile.mkdtemp()) / "gdjax_transforms_old.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("gdjax_transforms_old", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _mlp(params, x):
    for layer in params[:-1]:
        x = jax.nn.relu(x @ layer["w"] + layer["b"])
    return x @ params[-1]["w"] + params[-1]["b"]


def _loss(params, x, y):
    logits = _mlp(params, x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def _program(module, widths, batch, steps, kwargs, members, rng):
    params = [
        {
            "w": jnp.asarray(rng.normal(size=(a, b)) / np.sqrt(a), jnp.float32),
            "b": jnp.zeros(b, jnp.float32),
        }
        for a, b in zip(widths[:-1], widths[1:], strict=True)
    ]
    xs = jnp.asarray(rng.normal(size=(steps, batch, widths[0])), jnp.float32)
    ys = jnp.asarray(rng.integers(0, widths[-1], size=(steps, batch)))
    opt = module.sgd(**kwargs)

    def run(state, params, xs, ys):
        def body(carry, batch):
            p, s = carry
            updates, s = opt.update(jax.grad(_loss)(p, *batch), s, p)
            return (optax.apply_updates(p, updates), s), None

        return jax.lax.scan(body, (params, state), (xs, ys))[0][0]

    if members:
        lrs = np.linspace(0.01, 0.1, members, dtype=np.float32)
        states = jax.vmap(lambda _: opt.init(params))(jnp.arange(members))
        state = module.set_hyperparams(states, learning_rate=lrs)
        run = jax.vmap(run, in_axes=(0, None, None, None))
    else:
        state = opt.init(params)
    compiled = jax.jit(run).lower(state, params, xs, ys).compile()
    args = (state, params, xs, ys)
    return compiled, args


def _ops(compiled) -> collections.Counter:
    return collections.Counter(re.findall(r"= \S+ ([\w-]+)\(", compiled.as_text()))


def main(argv: list[str] | None = None) -> dict[str, dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref", default="f7f6eb4")
    parser.add_argument("--repeats", type=int, default=21)
    args = parser.parse_args(argv)
    old = _load_old(args.ref)
    report = {}
    for name, (widths, batch, steps, kwargs, members) in SHAPES.items():
        programs = {
            tag: _program(module, widths, batch, steps, kwargs, members, rng)
            for tag, module, rng in (
                ("old", old, np.random.default_rng(0)),
                ("new", current, np.random.default_rng(0)),
            )
        }
        outputs = {tag: fn(*a) for tag, (fn, a) in programs.items()}
        bitwise = all(
            np.array_equal(np.asarray(a), np.asarray(b))
            for a, b in zip(
                jax.tree.leaves(outputs["old"]),
                jax.tree.leaves(outputs["new"]),
                strict=True,
            )
        )
        times = {"old": [], "new": []}
        for rep in range(args.repeats):
            for tag in ("old", "new") if rep % 2 else ("new", "old"):
                fn, a = programs[tag]
                start = time.perf_counter()
                jax.block_until_ready(fn(*a))
                times[tag].append(time.perf_counter() - start)
        ops_old, ops_new = _ops(programs["old"][0]), _ops(programs["new"][0])
        diff = {
            k: ops_new[k] - ops_old[k]
            for k in sorted(set(ops_old) | set(ops_new))
            if ops_new[k] != ops_old[k]
        }
        report[name] = dict(
            median_ratio=float(np.median(times["new"]) / np.median(times["old"])),
            min_ratio=float(min(times["new"]) / min(times["old"])),
            median_old_ms=float(np.median(times["old"]) * 1e3),
            median_new_ms=float(np.median(times["new"]) * 1e3),
            bitwise_equal=bitwise,
            op_count_diff=diff,
        )
        r = report[name]
        print(
            f"{name}: new/old median {r['median_ratio']:.3f}, min "
            f"{r['min_ratio']:.3f} (old {r['median_old_ms']:.2f} ms, new "
            f"{r['median_new_ms']:.2f} ms); params bitwise equal: {bitwise}; "
            f"optimized-HLO op counts new-old: {diff}"
        )
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
