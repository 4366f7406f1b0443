"""gdjax: gradient descent as pure, composable, jittable JAX functions.

initialize (``gd.init``) → forward and loss (``gd.make_loss``) → backprop
(``gd.value_and_grad``) → update (``gd.sgd`` or any optax chain) → iterate
(``gd.fit``, one XLA program) → many runs at once (``gd.sweep``).
"""

from gdjax import batching, datasets, init, losses, models, stopping, transforms
from gdjax.batching import Regime, full_batch, minibatch, stochastic
from gdjax.errors import CheckpointError, GdjaxError, NonFiniteError
from gdjax.gradients import GradResult, value_and_grad
from gdjax.losses import accuracy, make_loss, with_example_weights
from gdjax.loop import FitResult, History, fit
from gdjax.stopping import Status
from gdjax.transforms import (
    average_iterates,
    averaged_params,
    get_hyperparams,
    inverse_time_decay,
    power_decay,
    set_hyperparams,
    sgd,
)

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "FitResult",
    "GdjaxError",
    "GradResult",
    "History",
    "NonFiniteError",
    "Regime",
    "Status",
    "accuracy",
    "average_iterates",
    "averaged_params",
    "batching",
    "datasets",
    "fit",
    "full_batch",
    "get_hyperparams",
    "init",
    "inverse_time_decay",
    "losses",
    "make_loss",
    "minibatch",
    "models",
    "power_decay",
    "set_hyperparams",
    "sgd",
    "stochastic",
    "stopping",
    "transforms",
    "value_and_grad",
    "with_example_weights",
]
