"""Plain-JAX pieces shared by the hand-written JAX contenders (optax loop, fused).

The model and losses are written with ``jax.numpy`` and ``optax.losses`` only,
the way a researcher writes them without gdjax; they compute the same maths as
``gd.make_loss(gd.models.mlp, ...)`` (mean over the batch of the per-example
loss: half squared error, softmax cross-entropy, or sigmoid cross-entropy).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax


def apply(params: list[dict[str, jax.Array]], x: jax.Array) -> jax.Array:
    """MLP forward pass, ReLU between layers, no activation after the last."""
    h = x
    for layer in params[:-1]:
        h = jax.nn.relu(h @ layer["w"] + layer["b"])
    return h @ params[-1]["w"] + params[-1]["b"]


def loss_fn(task: str):
    """``loss(params, x, y) -> scalar`` for ``task``."""

    def loss(params, x, y):
        z = apply(params, x)
        if task == "regression":
            return 0.5 * jnp.mean((z[:, 0] - y) ** 2)
        if task == "binary":
            return jnp.mean(
                optax.losses.sigmoid_binary_cross_entropy(z[:, 0], y.astype(z.dtype))
            )
        return jnp.mean(optax.losses.softmax_cross_entropy_with_integer_labels(z, y))

    return loss


def to_numpy(params: Any) -> list[dict[str, np.ndarray]]:
    """Any pytree of layers -> NumPy float32 layers (blocks until ready)."""
    return [
        {k: np.asarray(v, np.float32) for k, v in layer.items()} for layer in params
    ]


def xla_memory(compiled: Any) -> dict[str, int] | None:
    """``compiled.memory_analysis()`` as bytes: temp, argument, output, alias, total.

    ``total`` is temp + argument + output (alias bytes, shared between an
    argument and an output, are listed but not subtracted).
    """
    try:
        ma = compiled.memory_analysis()
    except Exception:  # noqa: BLE001 - not every backend implements it
        return None
    if ma is None:
        return None
    out = {
        "temp": int(ma.temp_size_in_bytes),
        "argument": int(ma.argument_size_in_bytes),
        "output": int(ma.output_size_in_bytes),
        "alias": int(ma.alias_size_in_bytes),
    }
    out["total"] = out["temp"] + out["argument"] + out["output"]
    return out
