"""Type aliases shared across gdjax.

Outputs are ``jax.Array``; inputs accept ``jax.typing.ArrayLike``. Pytrees are
``Any`` because JAX has no precise pytree type.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
from jax.typing import ArrayLike

PyTree = Any
Params = PyTree
"""A pytree of floating-point arrays: the parameters being descended on."""
Batch = PyTree
"""A pytree of arrays sharing a leading example axis, e.g. ``(x, y)``."""
Key = jax.Array
"""A typed PRNG key from ``jax.random.key`` (a raw ``PRNGKey`` also works)."""
LossFn = Callable[[Params, Batch], jax.Array]
"""``loss(params, batch) -> scalar``."""
ApplyFn = Callable[[Params, jax.Array], jax.Array]
"""``apply(params, x) -> predictions``."""
Schedule = Callable[[ArrayLike], ArrayLike]
"""``schedule(count) -> learning rate``, as in optax."""
Initializer = Callable[..., jax.Array]
"""``init(key, shape, dtype) -> array``, as in ``jax.nn.initializers``."""

__all__ = [
    "ApplyFn",
    "ArrayLike",
    "Batch",
    "Initializer",
    "Key",
    "LossFn",
    "Params",
    "PyTree",
    "Schedule",
]
