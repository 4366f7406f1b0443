"""gdjax: gradient descent as pure, composable, jittable JAX functions.

initialize (``gd.init``) → forward and loss (``gd.make_loss``) → backprop
(``gd.value_and_grad``) → update (``gd.sgd`` or any optax chain) → iterate
(``gd.fit``, one XLA program) → many runs at once (``gd.sweep``).
"""

from gdjax import (
    batching,
    cache,
    checkpoint,
    curvature,
    datasets,
    diagnostics,
    guard,
    init,
    loop,
    loss_forms,
    losses,
    members,
    models,
    pieces,
    plot,
    results,
    runs,
    sharding,
    spec,
    stopping,
    streaming,
    theory,
    transforms,
)
from gdjax._sweep import sweep
from gdjax.batching import Regime, full_batch, minibatch, stochastic
from gdjax.cache import QUICK_COMPILE, enable_compilation_cache
from gdjax.errors import (
    CheckpointError,
    GdjaxError,
    GdjaxTypeError,
    GdjaxValueError,
    GdjaxWarning,
    IgnoredBatchWarning,
    NonFiniteError,
    ZeroGradientWarning,
)
from gdjax.gradients import GradResult, value_and_grad
from gdjax.guard import RejectNonfiniteState, reject_nonfinite
from gdjax.loop import History
from gdjax.loss_forms import LossSpec, keyed, stateful, step_key
from gdjax.losses import accuracy, make_loss, with_example_weights
from gdjax.members import seed_keys
from gdjax.pieces import batches, gather, make_step
from gdjax.results import FitResult, SweepResult
from gdjax.runs import fit
from gdjax.sharding import fit_data_parallel
from gdjax.spec import Driving, Recording, Stopping
from gdjax.stopping import Status
from gdjax.streaming import fit_stream, sweep_stream
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
    "Driving",
    "FitResult",
    "GdjaxError",
    "GdjaxTypeError",
    "GdjaxValueError",
    "GdjaxWarning",
    "GradResult",
    "History",
    "LossSpec",
    "IgnoredBatchWarning",
    "NonFiniteError",
    "QUICK_COMPILE",
    "Recording",
    "RejectNonfiniteState",
    "Regime",
    "Status",
    "Stopping",
    "SweepResult",
    "ZeroGradientWarning",
    "accuracy",
    "average_iterates",
    "averaged_params",
    "batches",
    "batching",
    "cache",
    "checkpoint",
    "curvature",
    "datasets",
    "diagnostics",
    "enable_compilation_cache",
    "gather",
    "fit",
    "fit_data_parallel",
    "fit_stream",
    "full_batch",
    "get_hyperparams",
    "guard",
    "init",
    "keyed",
    "loop",
    "loss_forms",
    "inverse_time_decay",
    "losses",
    "make_loss",
    "make_step",
    "members",
    "minibatch",
    "models",
    "pieces",
    "plot",
    "power_decay",
    "reject_nonfinite",
    "results",
    "runs",
    "seed_keys",
    "set_hyperparams",
    "sgd",
    "sharding",
    "spec",
    "stateful",
    "step_key",
    "stochastic",
    "stopping",
    "streaming",
    "sweep",
    "sweep_stream",
    "theory",
    "transforms",
    "value_and_grad",
    "with_example_weights",
]
