"""Parameters from flax or equinox, trained by gd.fit: any pytree works.

``gd.fit`` needs ``loss(params, batch) -> scalar`` and ``params`` as a pytree
of float arrays; it never looks inside. So a model from another library trains
as it is:

* flax (linen): ``variables = model.init(key, x)``, a nested dict
  ``{"params": {"Dense_0": {"kernel", "bias"}, ...}}``, and
  ``model.apply(variables, x)``;
* equinox: the model *is* a pytree; ``eqx.partition`` splits its arrays
  (trained) from the rest (activation functions, sizes), ``eqx.combine`` puts
  them back inside the loss.

flax and equinox are optional (``pip install 'gdjax[flax]'``, ``'gdjax[equinox]'``).
Without them this script says so and trains a plain dict laid out exactly like
flax's variables, with a hand-written apply: the same pytree gd.fit would get
from flax. Models with batch norm or dropout (flax.nnx ``BatchStat``, equinox
``eqx.nn.State``, a key per step) are declared with ``gd.stateful`` /
``gd.keyed``: the recipes are in docs/stateful.md, tested in
tests/test_interop.py.

Run:  python examples/flax_equinox_params.py [--library auto|flax|equinox|dict]
"""

import argparse
import importlib.util
import os

import jax
import jax.numpy as jnp

import gdjax as gd

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--out", default="gdjax-out", help="(unused: no figure)")
parser.add_argument(
    "--library",
    choices=["auto", "flax", "equinox", "dict"],
    default="auto",
    help="where the parameters come from (auto: flax, else equinox, else dict)",
)
args = parser.parse_args()
epochs = 3 if os.environ.get("GDJAX_EXAMPLE_QUICK") == "1" else 20

(x, y), (x_test, y_test) = gd.datasets.digits()
init_key, run_key = jax.random.split(jax.random.key(0))
hidden = 32


def installed(name):
    return importlib.util.find_spec(name) is not None


library = args.library
if library == "auto":
    library = next((n for n in ("flax", "equinox") if installed(n)), "dict")
    if library == "dict":
        print(
            "flax and equinox are not installed (pip install 'gdjax[flax]' or "
            "'gdjax[equinox]'); using a plain dict with flax's layout instead."
        )
elif library != "dict" and not installed(library):
    raise SystemExit(f"{library} is not installed: pip install 'gdjax[{library}]'")


if library == "flax":
    import flax.linen as nn

    class MLP(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.relu(nn.Dense(hidden)(x))
            return nn.Dense(10)(x)

    model = MLP()
    params = model.init(init_key, x[:1])  # {"params": {"Dense_0": ..., ...}}

    def apply(params, x):
        return model.apply(params, x)

elif library == "equinox":
    import equinox as eqx

    model = eqx.nn.MLP(64, 10, width_size=hidden, depth=1, key=init_key)
    # Trainable arrays on one side, everything else (static) on the other.
    params, static = eqx.partition(model, eqx.is_inexact_array)

    def apply(params, x):
        return jax.vmap(eqx.combine(params, static))(x)  # eqx models see one example

else:  # a plain pytree with flax's layout: {"params": {"Dense_i": {kernel, bias}}}
    k0, k1 = jax.random.split(init_key)
    lecun = jax.nn.initializers.lecun_normal()
    params = {
        "params": {
            "Dense_0": {"kernel": lecun(k0, (64, hidden)), "bias": jnp.zeros(hidden)},
            "Dense_1": {"kernel": lecun(k1, (hidden, 10)), "bias": jnp.zeros(10)},
        }
    }

    def apply(params, x):
        p = params["params"]
        # bias[None]: an explicit batch axis, so strict rank promotion is happy.
        h = jax.nn.relu(x @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"][None])
        return h @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"][None]


print(f"parameters from: {library}")
for path, leaf in jax.tree_util.tree_leaves_with_path(params):
    print(f"  params{jax.tree_util.keystr(path)}: {leaf.shape} {leaf.dtype}")

loss = gd.make_loss(apply, gd.losses.softmax_cross_entropy)
result = gd.fit(
    loss,
    params,
    (x, y),
    gd.sgd(0.1, momentum=0.9),
    key=run_key,
    epochs=epochs,
    regime=gd.minibatch(32),
    val_data=(x_test, y_test),
    metric=gd.accuracy(apply),
)
# The result's params have the structure that went in: hand them back to the
# library (flax: model.apply(result.params, x); equinox: eqx.combine(...)).
same = jax.tree.structure(result.params) == jax.tree.structure(params)
print(f"trained {epochs} epochs: {result.reason}")
print(f"same pytree structure after training: {same}")
print(
    f"final training loss {result.final_loss:.4f}, "
    f"test accuracy {100 * float(result.history.metric[-1]):.1f}%"
)
