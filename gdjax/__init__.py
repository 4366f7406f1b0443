"""gdjax: gradient descent as pure, composable, jittable JAX functions.

initialize (``gd.init``) → forward and loss (``gd.make_loss``) → backprop
(``gd.value_and_grad``) → update (``gd.sgd`` or any optax chain) → iterate
(``gd.fit``, one XLA program) → many runs at once (``gd.sweep``).
"""

from gdjax import (
    batching,
    checkpoint,
    datasets,
    diagnostics,
    init,
    losses,
    models,
    plot,
    sharding,
    stopping,
    streaming,
    theory,
    transforms,
)
from gdjax.batching import Regime, full_batch, minibatch, stochastic
from gdjax.errors import CheckpointError, GdjaxError, GdjaxWarning, NonFiniteError
from gdjax.gradients import GradResult, value_and_grad
from gdjax.loop import FitResult, History, fit
from gdjax.losses import accuracy, make_loss, with_example_weights
from gdjax.sharding import fit_data_parallel
from gdjax.stopping import Status
from gdjax.streaming import fit_stream
from gdjax.sweep import SweepResult, seed_keys
from gdjax.transforms import (
    average_iterates,
    averaged_params,
    get_hyperparams,
    inverse_time_decay,
    power_decay,
    set_hyperparams,
    sgd,
)

__version__: str = next(  # from the metadata: the version is written in pyproject.toml
    (
        d.version
        for d in __import__("importlib.metadata").metadata.distributions(name="gdjax")
    ),
    "0.0.0+unknown",  # a source tree that was never installed
)

__all__ = [
    "CheckpointError",
    "FitResult",
    "GdjaxError",
    "GdjaxWarning",
    "GradResult",
    "History",
    "NonFiniteError",
    "Regime",
    "Status",
    "SweepResult",
    "accuracy",
    "average_iterates",
    "averaged_params",
    "batching",
    "checkpoint",
    "datasets",
    "diagnostics",
    "fit",
    "fit_data_parallel",
    "fit_stream",
    "full_batch",
    "get_hyperparams",
    "init",
    "inverse_time_decay",
    "losses",
    "make_loss",
    "minibatch",
    "models",
    "plot",
    "power_decay",
    "seed_keys",
    "set_hyperparams",
    "sgd",
    "sharding",
    "stochastic",
    "stopping",
    "streaming",
    "theory",
    "transforms",
    "value_and_grad",
    "with_example_weights",
]
