"""The bad-input table: every bad input is refused before any XLA compilation.

Each row of :data:`CASES` is ``(id, api, what, call, error, match, xfail)``:
calling ``call()`` must raise ``error`` with a message matching ``match`` (naming
the argument or pytree key path, what was expected and what came) while the
compile counter stays at zero. Inputs are built when the table is built, outside
the counted block; so is each optimizer state a call will initialize (gd.sgd's
``init`` runs a few eager ops the first time it meets a shape, before ``fit``
checks ``hyperparams``). Rows with ``xfail`` are inputs gdjax does not yet refuse
properly; each is a strict xfail whose reason names the missing check.

``docs/bad_inputs.md`` is generated from this table (plus the bad-input list of
tests/test_loop.py, which is tested there); ``test_docs_table_is_current`` fails
when it is stale. Rewrite it with ``GDJAX_REGENERATE_DOCS=1 pytest
tests/test_bad_inputs.py -k docs``.
"""

from __future__ import annotations

import importlib
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import ls_loss

import gdjax as gd
from gdjax import checkpoint
from gdjax.checkpoint import CorruptCheckpointError
from gdjax.errors import CheckpointError
from gdjax.transforms import set_hyperparams

try:
    _sweep = importlib.import_module("gdjax.sweep").sweep
except (ImportError, AttributeError):  # pragma: no cover - sweep not there yet
    _sweep = None

DOCS = Path(__file__).resolve().parents[1] / "docs" / "bad_inputs.md"


class Case(NamedTuple):
    id: str
    api: str
    what: str
    call: Callable[[], object]
    error: type[BaseException]
    match: str
    xfail: str | None = None


# ------------------------------------------------------------------ inputs

_rng = np.random.default_rng(0)
X = _rng.normal(size=(20, 4)).astype(np.float32)
Y = _rng.normal(size=(20,)).astype(np.float32)
DATA = (X, Y)
P = {"w": np.zeros(4, np.float32)}
KEY = jax.random.key(0)
KEYS2 = jax.random.split(KEY, 2)
TX = gd.sgd(0.1)
TX.init(P)

XC = _rng.normal(size=(20, 3)).astype(np.float32)
LABELS = np.arange(20, dtype=np.int32) % 3
PC = {"w": np.zeros((3, 3), np.float32), "b": np.zeros(3, np.float32)}
CE = gd.make_loss(gd.models.linear, gd.losses.softmax_cross_entropy)
LOGISTIC = gd.make_loss(gd.models.linear, gd.losses.logistic)
P1 = {"w": np.zeros((3, 1), np.float32), "b": np.zeros(1, np.float32)}

# A 3x3 problem for optimizer states that do not fit the params.
X3 = _rng.normal(size=(20, 3)).astype(np.float32)
Y3 = _rng.normal(size=(20, 3)).astype(np.float32)
P33 = {"w": np.zeros((3, 3), np.float32)}
MOMENTUM = gd.sgd(0.1, momentum=0.9)
STATE33 = gd.loop.prepare(ls_loss, P33, (X3, Y3), MOMENTUM, key=KEY, epochs=2).state


def _reshaped_momentum(shape, dtype=np.float32):
    return STATE33._replace(
        opt_state=jax.tree.map(
            lambda a: np.zeros(shape, dtype) if np.shape(a) == (3, 3) else a,
            STATE33.opt_state,
        )
    )


RESUME_SHAPE = _reshaped_momentum((3, 1))
RESUME_DTYPE = _reshaped_momentum((3, 3), np.float16)
RESUME_TREE = STATE33._replace(opt_state=MOMENTUM.init({"v": P33["w"]}))
RESUME_PARAMS = STATE33._replace(params={"w": np.zeros((3, 1), np.float32)})


def _broadcasting_update():
    """A transform whose update is (3, 1) for (3, 3) params (optax would broadcast)."""

    def update(grads, state, params=None):
        del params
        return jax.tree.map(lambda g: jnp.zeros((3, 1), g.dtype), grads), state

    return optax.GradientTransformation(lambda p: optax.EmptyState(), update)


def _extra_update():
    def update(grads, state, params=None):
        del params
        return {**grads, "v": jnp.zeros(2)}, state

    return optax.GradientTransformation(lambda p: optax.EmptyState(), update)


def _loss_if(params, batch):
    value = ls_loss(params, batch)
    if value > 1.0:  # Python control flow on a traced value
        return value
    return 2 * value


def _loss_float(params, batch):
    return ls_loss(params, batch) * float(jnp.sum(params["w"]))


def _loss_while(params, batch):
    value = ls_loss(params, batch)
    while value > 1.0:
        value = value / 2
    return value


def _loss_aux(params, batch):
    return ls_loss(params, batch), {"n": batch[0].shape[0]}


def _loss_int(params, batch):
    return jnp.sum(params["w"]).astype(jnp.int32) + batch[1].shape[0]


def _loss_per_example(params, batch):
    return (batch[0] @ params["w"] - batch[1]) ** 2


def _loss_constant(params, batch):
    del params
    return jnp.mean(batch[1])


# Checkpoints: a folder with one checkpoint of STATE33, a corrupt one, an empty one.
CKPT = Path(tempfile.mkdtemp(prefix="gdjax-bad-inputs-"))
checkpoint.save(CKPT / "good", STATE33)
_bad = checkpoint.save(CKPT / "corrupt", STATE33)
_bad.write_bytes(_bad.read_bytes()[:-100])
(CKPT / "empty").mkdir()


def _fit(loss=ls_loss, params=P, data=DATA, tx=TX, **kwargs):
    kwargs = {"key": KEY, "epochs": 2, **kwargs}
    return lambda: gd.fit(loss, params, data, tx, **kwargs)


def _sweep_call(**kwargs):
    kwargs = {"seeds": [0, 1], "epochs": 2, **kwargs}
    return lambda: _sweep(ls_loss, P, DATA, gd.sgd(0.1, momentum=0.5), **kwargs)


def _cases() -> list[Case]:
    nan, inf = float("nan"), float("inf")
    f64 = {"w": np.zeros(4, np.float64)}
    x_nan_y = Y.copy()
    x_nan_y[5] = nan
    bad_labels = LABELS.copy()
    bad_labels[4] = 3
    neg_labels = LABELS.copy()
    neg_labels[7] = -1
    cases = [
        # params
        Case(
            "fit-int-param",
            "gd.fit",
            "a params leaf of dtype int32",
            _fit(params={"w": np.zeros(4, np.int32)}),
            TypeError,
            r"params\['w'\] must have a floating dtype.*got int32",
        ),
        Case(
            "fit-python-float-param",
            "gd.fit",
            "a params leaf that is a Python float",
            _fit(params={"w": 1.0}),
            TypeError,
            r"params\['w'\] must be an array, got float 1\.0",
        ),
        Case(
            "fit-deep-int-param",
            "gd.fit",
            "an int leaf deep in a nested params tree",
            _fit(
                params={
                    "layers": [
                        {"w": np.zeros(4, np.float32)},
                        {"b": np.zeros((), np.int8)},
                    ]
                }
            ),
            TypeError,
            r"params\['layers'\]\[1\]\['b'\] must have a floating dtype",
        ),
        Case(
            "fit-complex-param",
            "gd.fit",
            "a complex64 params leaf",
            _fit(params={"w": np.zeros(4, np.complex64)}),
            TypeError,
            r"params\['w'\] must have a floating dtype.*got complex64",
        ),
        Case(
            "fit-no-leaves",
            "gd.fit",
            "a params tree with no leaves",
            _fit(params={"w": []}),
            ValueError,
            r"params must be a pytree with at least one array leaf.*no leaves",
        ),
        Case(
            "fit-float64-no-x64",
            "gd.fit",
            "float64 params without x64 enabled",
            _fit(params=f64),
            ValueError,
            r"params\['w'\].*float64.*64-bit",
        ),
        Case(
            "dense-float64-no-x64",
            "gd.init.dense",
            "dtype=float64 without x64",
            lambda: gd.init.dense(KEY, 3, 2, dtype=jnp.float64),
            ValueError,
            r"dtype=float64 needs 64-bit mode",
        ),
        Case(
            "init-tree-int-dtype",
            "gd.init.init_tree",
            "an integer dtype",
            lambda: gd.init.init_tree(KEY, {"w": (3, 2)}, dtype=jnp.int32),
            TypeError,
            r"dtype must be a floating dtype.*got int32",
        ),
        Case(
            "mlp-one-width",
            "gd.init.mlp",
            "widths with one size",
            lambda: gd.init.mlp(KEY, [64]),
            ValueError,
            r"widths must hold at least two sizes.*got \[64\]",
        ),
        Case(
            "mlp-zero-width",
            "gd.init.mlp",
            "a zero width",
            lambda: gd.init.mlp(KEY, [64, 0, 10]),
            ValueError,
            r"widths\[1\] must be a positive integer, got 0",
        ),
        Case(
            "mlp-fractional-width",
            "gd.init.mlp",
            "a fractional width",
            lambda: gd.init.mlp(KEY, [64, 2.5]),
            ValueError,
            r"widths\[1\] must be a positive integer, got 2\.5",
        ),
        Case(
            "mlp-widths-string",
            "gd.init.mlp",
            "widths given as a string",
            lambda: gd.init.mlp(KEY, "64,10"),
            TypeError,
            r"widths must be a sequence of positive integers.*got str",
        ),
        Case(
            "dense-zero-in-dim",
            "gd.init.dense",
            "in_dim=0",
            lambda: gd.init.dense(KEY, 0, 3),
            ValueError,
            r"in_dim must be an integer >= 1, got 0",
        ),
        Case(
            "init-tree-negative-shape",
            "gd.init.init_tree",
            "a negative size",
            lambda: gd.init.init_tree(KEY, {"w": (3, -1)}),
            ValueError,
            r"shapes\['w'\] must be a shape of non-negative sizes, got \(3, -1\)",
        ),
        Case(
            "init-tree-not-a-shape",
            "gd.init.init_tree",
            "a leaf that is not a shape",
            lambda: gd.init.init_tree(KEY, {"w": "3x4"}),
            TypeError,
            r"shapes\['w'\] must be a shape.*got str '3x4'",
        ),
        # keys
        Case(
            "dense-int-key",
            "gd.init.dense",
            "an int key",
            lambda: gd.init.dense(0, 3, 2),
            TypeError,
            r"key must be a PRNG key.*got int 0",
        ),
        Case(
            "mlp-key-batch",
            "gd.init.mlp",
            "a batch of keys",
            lambda: gd.init.mlp(KEYS2, [3, 2]),
            ValueError,
            r"key must be a single PRNG key, got a batch of keys of shape \(2,\)",
        ),
        Case(
            "fit-float-key",
            "gd.fit",
            "a float key",
            _fit(key=0.5),
            TypeError,
            r"key must be a PRNG key.*got float 0\.5",
        ),
        Case(
            "fit-raw-key-shape",
            "gd.fit",
            "a raw uint32 key of shape (3,)",
            _fit(key=np.zeros(3, np.uint32)),
            TypeError,
            r"key must be a PRNG key.*shape \(3,\) and dtype uint32",
        ),
        # grads / optimizer state vs params
        Case(
            "fit-update-broadcasts",
            "gd.fit",
            "a transform whose (3, 1) update optax would broadcast onto (3, 3)",
            _fit(params=P33, data=(X3, Y3), tx=_broadcasting_update()),
            ValueError,
            r"updates\['w'\] must have shape \(3, 3\) like params, got \(3, 1\)",
        ),
        Case(
            "fit-update-extra-leaf",
            "gd.fit",
            "a transform whose update adds a leaf",
            _fit(tx=_extra_update()),
            ValueError,
            r"updates must have the tree structure of params: unexpected \['v'\]",
        ),
        Case(
            "fit-resume-params-shape",
            "gd.fit",
            "resume with (3, 1) params",
            _fit(params=P33, data=(X3, Y3), tx=MOMENTUM, resume=RESUME_PARAMS),
            ValueError,
            r"resume\.params\['w'\] must have shape \(3, 3\).*got \(3, 1\)",
        ),
        Case(
            "fit-resume-opt-shape",
            "gd.fit",
            "resume with a (3, 1) momentum for (3, 3)",
            _fit(params=P33, data=(X3, Y3), tx=MOMENTUM, resume=RESUME_SHAPE),
            ValueError,
            r"resume\.opt_state.*\['w'\].*\(3, 3\).*\(3, 1\)",
        ),
        Case(
            "fit-resume-opt-tree",
            "gd.fit",
            "resume with a momentum tree keyed 'v'",
            _fit(params=P33, data=(X3, Y3), tx=MOMENTUM, resume=RESUME_TREE),
            ValueError,
            r"resume\.opt_state.*\['v'\]",
        ),
        Case(
            "fit-resume-opt-dtype",
            "gd.fit",
            "resume with a float16 momentum",
            _fit(params=P33, data=(X3, Y3), tx=MOMENTUM, resume=RESUME_DTYPE),
            ValueError,
            r"resume\.opt_state.*must have dtype float32 like "
            r"transform\.init\(params\), got float16",
        ),
        Case(
            "fit-resume-not-a-result",
            "gd.fit",
            "resume that is not a FitResult",
            _fit(resume={"params": P}),
            TypeError,
            r"resume must be a FitResult, got dict",
        ),
        # losses
        Case(
            "fit-loss-not-callable",
            "gd.fit",
            "a loss that is not callable",
            _fit(loss="mse"),
            TypeError,
            r"loss must be callable as loss\(params, batch\), got str 'mse'",
        ),
        Case(
            "fit-loss-int",
            "gd.fit",
            "a loss returning int32",
            _fit(loss=_loss_int),
            TypeError,
            r"loss must return a floating-point scalar, got dtype int32",
        ),
        Case(
            "fit-loss-aux",
            "gd.fit",
            "a loss returning (value, aux)",
            _fit(loss=_loss_aux),
            TypeError,
            r"loss must return a scalar, got a tuple of 2 items",
        ),
        Case(
            "fit-loss-vector",
            "gd.fit",
            "a per-example loss vector",
            _fit(loss=_loss_per_example),
            TypeError,
            r"loss must return a scalar, got shape \(20,\)",
        ),
        Case(
            "fit-loss-if",
            "gd.fit",
            "Python `if` on a traced loss value",
            _fit(loss=_loss_if),
            TypeError,
            r"loss uses Python control flow \(if/while/bool/int\) on a traced value",
        ),
        Case(
            "fit-loss-float-call",
            "gd.fit",
            "float() of a traced value in the loss",
            _fit(loss=_loss_float),
            TypeError,
            r"loss uses Python control flow .* on a traced value",
        ),
        Case(
            "fit-loss-shape-error",
            "gd.fit",
            "a loss that fails to trace (shapes)",
            _fit(params={"w": np.zeros(5, np.float32)}),
            TypeError,
            r"loss\(params, batch\) fails to trace on params \['w'\]: float32\[5\] and "
            r"batch .*dot_general",
        ),
        Case(
            "vg-loss-while",
            "gd.value_and_grad",
            "Python `while` on a traced value",
            lambda: gd.value_and_grad(_loss_while)(P, DATA),
            TypeError,
            r"loss uses Python control flow",
        ),
        Case(
            "vg-has-aux-scalar",
            "gd.value_and_grad",
            "has_aux=True, scalar returned",
            lambda: gd.value_and_grad(ls_loss, has_aux=True)(P, DATA),
            TypeError,
            r"loss was declared has_aux=True, so it must return \(value, aux\)",
        ),
        Case(
            "vg-int-params",
            "gd.value_and_grad",
            "int32 params",
            lambda: gd.value_and_grad(ls_loss)({"w": np.zeros(4, np.int32)}, DATA),
            TypeError,
            r"params\['w'\] must have a floating dtype.*got int32",
        ),
        Case(
            "vg-constant-loss",
            "gd.value_and_grad",
            "a loss that ignores params",
            lambda: gd.value_and_grad(_loss_constant)(P, DATA),
            ValueError,
            r"loss does not depend on params",
        ),
        Case(
            "vg-has-aux-flag",
            "gd.value_and_grad",
            "has_aux='yes'",
            lambda: gd.value_and_grad(ls_loss, has_aux="yes"),
            TypeError,
            r"has_aux must be True or False, got 'yes'",
        ),
        Case(
            "make-loss-apply",
            "gd.make_loss",
            "apply that is not callable",
            lambda: gd.make_loss("linear", gd.losses.squared_error),
            TypeError,
            r"apply must be callable as apply\(params, x\), got str 'linear'",
        ),
        Case(
            "make-loss-l2-negative",
            "gd.make_loss",
            "l2=-0.1",
            lambda: gd.make_loss(gd.models.linear, gd.losses.squared_error, l2=-0.1),
            ValueError,
            r"l2 must be in \[0, inf\), got -0\.1",
        ),
        Case(
            "make-loss-l2-nan",
            "gd.make_loss",
            "l2=nan",
            lambda: gd.make_loss(gd.models.linear, gd.losses.squared_error, l2=nan),
            ValueError,
            r"l2 must be finite, got nan",
        ),
        # data
        Case(
            "fit-string-data",
            "gd.fit",
            "a data leaf of strings",
            _fit(data=(np.array(["a"] * 20), Y)),
            TypeError,
            r"data\[0\] must be numeric, got dtype <U1",
        ),
        Case(
            "fit-object-data",
            "gd.fit",
            "a data leaf of Python objects",
            _fit(data=(X, np.array([None] * 20))),
            TypeError,
            r"data\[1\] must be numeric, got dtype object",
        ),
        Case(
            "fit-list-data",
            "gd.fit",
            "data given as Python lists",
            _fit(data=(X.tolist(), Y)),
            TypeError,
            r"data\[0\]\[0\]\[0\] must be an array with a leading example axis, "
            r"got float",
        ),
        Case(
            "fit-nan-labels",
            "gd.fit",
            "NaN in the labels",
            _fit(data=(X, x_nan_y)),
            ValueError,
            r"data\[1\] contains NaN or inf \(first at example 5\).*check_finite=False",
        ),
        Case(
            "fit-nan-val-data",
            "gd.fit",
            "NaN in val_data",
            _fit(val_data=(X, x_nan_y)),
            ValueError,
            r"val_data\[1\] contains NaN or inf \(first at example 5\)",
        ),
        Case(
            "fit-val-data-lengths",
            "gd.fit",
            "val_data leaves of different lengths",
            _fit(val_data=(X[:5], Y[:4])),
            ValueError,
            r"every leaf of val_data must have the same number of examples: "
            r"val_data\[0\] has 5, val_data\[1\] has 4",
        ),
        Case(
            "fit-empty-val-data",
            "gd.fit",
            "empty val_data",
            _fit(val_data=(X[:0], Y[:0])),
            ValueError,
            r"val_data is empty",
        ),
        Case(
            "fit-val-data-features",
            "gd.fit",
            "val_data with 5 features for 4",
            _fit(val_data=(np.zeros((5, 5), np.float32), Y[:5])),
            TypeError,
            r"val_data does not fit loss.*val_data \[0\]: float32\[5, 5\]",
        ),
        Case(
            "fit-label-out-of-range",
            "gd.fit",
            "class label 3 with 3 classes",
            _fit(loss=CE, params=PC, data=(XC, bad_labels)),
            ValueError,
            r"data labels data\[1\] must be integers in \[0, 3\).*got 3 at index 4",
        ),
        Case(
            "fit-label-negative",
            "gd.fit",
            "class label -1",
            _fit(loss=CE, params=PC, data=(XC, neg_labels)),
            ValueError,
            r"data labels data\[1\] must be integers in \[0, 3\).*got -1 at index 7",
        ),
        Case(
            "fit-label-float",
            "gd.fit",
            "float class labels",
            _fit(loss=CE, params=PC, data=(XC, LABELS.astype(np.float32))),
            TypeError,
            r"softmax_cross_entropy labels must be integer class indices, got dtype "
            r"float32",
        ),
        Case(
            "fit-label-binary",
            "gd.fit",
            "label 2 for a logistic loss",
            _fit(loss=LOGISTIC, params=P1, data=(XC, LABELS)),
            ValueError,
            r"data labels data\[1\] must be in \{0, 1\}, got 2 at index 2",
        ),
        # batching
        Case(
            "minibatch-zero",
            "gd.minibatch",
            "batch_size=0",
            lambda: gd.minibatch(0),
            ValueError,
            r"batch_size must be a positive integer, got 0",
        ),
        Case(
            "minibatch-negative",
            "gd.minibatch",
            "batch_size=-3",
            lambda: gd.minibatch(-3),
            ValueError,
            r"batch_size must be a positive integer, got -3",
        ),
        Case(
            "minibatch-fractional",
            "gd.minibatch",
            "batch_size=2.5",
            lambda: gd.minibatch(2.5),
            TypeError,
            r"batch_size must be a positive integer, got float 2\.5",
        ),
        Case(
            "minibatch-last-batch",
            "gd.minibatch",
            "last_batch='keep'",
            lambda: gd.minibatch(4, last_batch="keep"),
            ValueError,
            r"last_batch must be one of \('pad', 'drop'\), got 'keep'",
        ),
        Case(
            "stochastic-permutation",
            "gd.stochastic",
            "permutation='random'",
            lambda: gd.stochastic(permutation="random"),
            ValueError,
            r"permutation must be one of \('hash', 'sort'\), got 'random'",
        ),
        Case(
            "fit-regime-string",
            "gd.fit",
            "regime='minibatch'",
            _fit(regime="minibatch"),
            TypeError,
            r"regime must be gd.full_batch\(\), gd.stochastic\(\) or gd.minibatch\(B\)",
        ),
        # budgets and criteria
        Case(
            "fit-epochs-float",
            "gd.fit",
            "epochs=2.0",
            _fit(epochs=2.0),
            TypeError,
            r"epochs must be an integer, got float 2\.0",
        ),
        Case(
            "fit-epochs-negative",
            "gd.fit",
            "epochs=-1",
            _fit(epochs=-1),
            ValueError,
            r"epochs must be an integer >= 1, got -1",
        ),
        Case(
            "fit-max-steps-zero",
            "gd.fit",
            "max_steps=0",
            _fit(max_steps=0),
            ValueError,
            r"max_steps must be an integer >= 1, got 0",
        ),
        Case(
            "fit-patience-fractional",
            "gd.fit",
            "patience=1.5 with tol",
            _fit(tol=0.1, patience=1.5),
            TypeError,
            r"patience must be an integer, got float 1\.5",
        ),
        Case(
            "fit-grad-tol-negative",
            "gd.fit",
            "grad_tol=-0.001",
            _fit(grad_tol=-1e-3),
            ValueError,
            r"grad_tol must be in \[0, inf\), got -0\.001",
        ),
        Case(
            "fit-tol-nan",
            "gd.fit",
            "tol=nan",
            _fit(tol=nan),
            ValueError,
            r"tol must be finite, got nan",
        ),
        Case(
            "fit-target-inf",
            "gd.fit",
            "target_loss=inf",
            _fit(target_loss=inf),
            ValueError,
            r"target_loss must be finite, got inf",
        ),
        Case(
            "fit-monitor-every-zero",
            "gd.fit",
            "monitor_every=0",
            _fit(monitor_every=0),
            ValueError,
            r"monitor_every must be an integer >= 1, got 0",
        ),
        Case(
            "fit-history-size-zero",
            "gd.fit",
            "history_size=0",
            _fit(history_size=0),
            ValueError,
            r"history_size must be an integer >= 1, got 0",
        ),
        Case(
            "fit-chunk-epochs-zero",
            "gd.fit",
            "chunk_epochs=0 with a callback",
            _fit(chunk_epochs=0, callback=lambda s: None),
            ValueError,
            r"chunk_epochs must be an integer >= 1, got 0",
        ),
        Case(
            "fit-metric-not-callable",
            "gd.fit",
            "metric=1",
            _fit(metric=1),
            TypeError,
            r"metric must be callable, got int 1",
        ),
        Case(
            "fit-monitor-not-callable",
            "gd.fit",
            "monitors={'a': 3}",
            _fit(monitors={"a": 3}),
            TypeError,
            r"monitors\['a'\] must be callable, got int 3",
        ),
        # learning rate, momentum, weight decay
        Case(
            "sgd-lr-nan",
            "gd.sgd",
            "learning_rate=nan",
            lambda: gd.sgd(nan),
            ValueError,
            r"learning_rate must be a finite number in \(0, inf\), got nan",
        ),
        Case(
            "sgd-lr-inf",
            "gd.sgd",
            "learning_rate=inf",
            lambda: gd.sgd(inf),
            ValueError,
            r"learning_rate must be a finite number in \(0, inf\), got inf",
        ),
        Case(
            "sgd-lr-zero",
            "gd.sgd",
            "learning_rate=0",
            lambda: gd.sgd(0.0),
            ValueError,
            r"learning_rate must be a finite number in \(0, inf\), got 0\.0",
        ),
        Case(
            "sgd-lr-negative",
            "gd.sgd",
            "learning_rate=-0.1",
            lambda: gd.sgd(-0.1),
            ValueError,
            r"learning_rate must be .* \(0, inf\), got -0\.1",
        ),
        Case(
            "sgd-lr-string",
            "gd.sgd",
            "learning_rate='0.1'",
            lambda: gd.sgd("0.1"),
            TypeError,
            r"learning_rate must be a number, got str '0\.1'",
        ),
        Case(
            "sgd-lr-vector",
            "gd.sgd",
            "learning_rate of shape (2,)",
            lambda: gd.sgd(np.array([0.1, 0.2])),
            ValueError,
            r"learning_rate must be a scalar \(0-d\), got shape \(2,\)",
        ),
        Case(
            "sgd-schedule-negative",
            "gd.sgd",
            "a schedule that is -0.1 at step 0",
            lambda: gd.sgd(optax.constant_schedule(-0.1)),
            ValueError,
            r"learning_rate \(its value at step 0\) must be a finite number in "
            r"\(0, inf\), got -0\.1",
        ),
        Case(
            "sgd-schedule-nan",
            "gd.sgd",
            "a schedule that is NaN at step 0",
            lambda: gd.sgd(optax.constant_schedule(nan)),
            ValueError,
            r"learning_rate \(its value at step 0\) .* got nan",
        ),
        Case(
            "fit-swept-lr-nan",
            "gd.fit",
            "a learning-rate array containing NaN",
            _fit(hyperparams={"learning_rate": np.array([0.1, nan])}),
            ValueError,
            r"hyperparams\['learning_rate'\] must be a finite number in \(0, inf\), "
            r"got an array containing nan",
        ),
        Case(
            "fit-swept-lr-negative",
            "gd.fit",
            "a learning-rate array containing -1",
            _fit(hyperparams={"learning_rate": np.array([0.1, -1.0])}),
            ValueError,
            r"hyperparams\['learning_rate'\] must be a finite number in \(0, inf\), "
            r"got an array containing -1\.0",
        ),
        Case(
            "set-hyperparams-lr-array",
            "gd.set_hyperparams",
            "a learning-rate array containing -1",
            lambda: set_hyperparams(TX.init(P), learning_rate=np.array([0.1, -1.0])),
            ValueError,
            r"learning_rate must be a finite number in \(0, inf\), got an array "
            r"containing -1\.0",
        ),
        Case(
            "fit-hyperparam-unknown",
            "gd.fit",
            "hyperparams={'lr': 0.1}",
            _fit(hyperparams={"lr": 0.1}),
            ValueError,
            r"unknown hyperparameter 'lr'; opt_state holds \['learning_rate'",
        ),
        Case(
            "fit-hyperparam-momentum",
            "gd.fit",
            "hyperparams momentum=1.5",
            _fit(hyperparams={"momentum": 1.5}),
            ValueError,
            r"hyperparams\['momentum'\] must be a finite number in \[0, 1\), got 1\.5",
        ),
        Case(
            "sgd-momentum-one",
            "gd.sgd",
            "momentum=1.0",
            lambda: gd.sgd(0.1, momentum=1.0),
            ValueError,
            r"momentum must be a finite number in \[0, 1\), got 1\.0",
        ),
        Case(
            "sgd-momentum-negative",
            "gd.sgd",
            "momentum=-0.1",
            lambda: gd.sgd(0.1, momentum=-0.1),
            ValueError,
            r"momentum must be a finite number in \[0, 1\), got -0\.1",
        ),
        Case(
            "sgd-nesterov-no-momentum",
            "gd.sgd",
            "nesterov=True without momentum",
            lambda: gd.sgd(0.1, nesterov=True),
            ValueError,
            r"nesterov=True needs momentum in \(0, 1\)",
        ),
        Case(
            "sgd-nesterov-flag",
            "gd.sgd",
            "nesterov='yes'",
            lambda: gd.sgd(0.1, 0.9, nesterov="yes"),
            TypeError,
            r"nesterov must be True or False, got str 'yes'",
        ),
        Case(
            "sgd-weight-decay-negative",
            "gd.sgd",
            "weight_decay=-1e-4",
            lambda: gd.sgd(0.1, weight_decay=-1e-4),
            ValueError,
            r"weight_decay must be a finite number in \[0, inf\), got -0\.0001",
        ),
        # checkpoints
        Case(
            "restore-empty-folder",
            "checkpoint.restore",
            "a folder with no checkpoint",
            lambda: checkpoint.restore(CKPT / "empty", STATE33),
            CheckpointError,
            r"no checkpoint \(ckpt-\*\.npz\) in .*empty",
        ),
        Case(
            "restore-corrupt",
            "checkpoint.restore",
            "a truncated checkpoint",
            lambda: checkpoint.restore(CKPT / "corrupt", STATE33),
            CorruptCheckpointError,
            r"checkpoint .*corrupt.*ckpt-000000000\.npz is unreadable: it is truncated",
        ),
        Case(
            "restore-mismatch",
            "checkpoint.restore",
            "a checkpoint of other shapes",
            lambda: checkpoint.restore(CKPT / "good", RESUME_PARAMS),
            CheckpointError,
            r"does not match this run:\n  - state\.params\['w'\]: shape \(3, 3\) in "
            r"the checkpoint, \(3, 1\) here",
        ),
        Case(
            "restore-like-empty",
            "checkpoint.restore",
            "like with no leaves",
            lambda: checkpoint.restore(CKPT / "good", {}),
            ValueError,
            r"like must be the state to restore into",
        ),
        Case(
            "save-keep-zero",
            "checkpoint.save",
            "keep=0",
            lambda: checkpoint.save(CKPT / "x", STATE33, keep=0),
            ValueError,
            r"keep must be an integer >= 1, got 0",
        ),
        Case(
            "save-not-a-result",
            "checkpoint.save",
            "a dict for state",
            lambda: checkpoint.save(CKPT / "x", {"w": P["w"]}),
            TypeError,
            r"state must be a gdjax FitResult.*got dict",
        ),
        Case(
            "save-directory-int",
            "checkpoint.save",
            "directory=3",
            lambda: checkpoint.save(3, STATE33),
            TypeError,
            r"directory must be a path \(str or os.PathLike\), got int 3",
        ),
        Case(
            "saver-every-zero",
            "checkpoint.saver",
            "every=0",
            lambda: checkpoint.saver(CKPT / "x", every=0),
            ValueError,
            r"every must be an integer >= 1, got 0",
        ),
        Case(
            "fit-resumable-resume",
            "checkpoint.fit_resumable",
            "resume= given",
            lambda: checkpoint.fit_resumable(
                ls_loss, P, DATA, TX, directory=CKPT, key=KEY, epochs=2, resume=STATE33
            ),
            TypeError,
            r"fit_resumable sets resume itself",
        ),
    ]
    if _sweep is not None:
        cases += [
            Case(
                "sweep-unequal-lists",
                "gd.sweep",
                "grid=False with lists of 2 and 3",
                _sweep_call(
                    hyperparams={
                        "learning_rate": [0.1, 0.2],
                        "momentum": [0.1, 0.2, 0.3],
                    },
                    grid=False,
                ),
                ValueError,
                r"must have equal lengths, got \{'learning_rate': 2, "
                r"'momentum': 3\}",
            ),
            Case(
                "sweep-unknown-name",
                "gd.sweep",
                "hyperparams={'lr': [...]}",
                _sweep_call(hyperparams={"lr": [0.1, 0.2]}),
                ValueError,
                r"unknown hyperparameter 'lr'; sweepable names are \[.*learning_rate",
            ),
            Case(
                "sweep-duplicate-seeds",
                "gd.sweep",
                "seeds=[0, 1, 1]",
                _sweep_call(seeds=[0, 1, 1]),
                ValueError,
                r"seeds must be distinct, got \[1\] more than once",
            ),
            Case(
                "sweep-no-seeds",
                "gd.sweep",
                "seeds=[]",
                _sweep_call(seeds=[]),
                ValueError,
                r"seeds is empty: the sweep has no members",
            ),
            Case(
                "sweep-empty-list",
                "gd.sweep",
                "hyperparams={'learning_rate': []}",
                _sweep_call(hyperparams={"learning_rate": []}),
                ValueError,
                r"hyperparams\['learning_rate'\] is empty",
            ),
            Case(
                "sweep-lr-nan",
                "gd.sweep",
                "a swept learning rate of NaN",
                _sweep_call(hyperparams={"learning_rate": [0.1, nan]}),
                ValueError,
                r"hyperparams\['learning_rate'\] must be a finite number in "
                r"\(0, inf\), got an array containing nan",
            ),
            Case(
                "sweep-lr-zero",
                "gd.sweep",
                "a swept learning rate of 0",
                _sweep_call(hyperparams={"learning_rate": [0.1, 0.0]}),
                ValueError,
                r"hyperparams\['learning_rate'\] must be a finite number in "
                r"\(0, inf\), got an array containing 0\.0",
            ),
        ]
    return cases


CASES = _cases()


def _params():
    out = []
    for case in CASES:
        marks = (
            [pytest.mark.xfail(strict=True, reason=case.xfail)] if case.xfail else []
        )
        out.append(pytest.param(case, id=case.id, marks=marks))
    return out


def test_the_table_is_big_and_distinct():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))
    assert len({(c.api, c.what) for c in CASES}) == len(CASES)
    assert len(CASES) >= 35


@pytest.mark.parametrize("case", _params())
def test_bad_input_is_refused_before_compiling(case, compiles):
    with compiles() as c:
        with pytest.raises(case.error, match=case.match):
            case.call()
    assert c.count == 0, f"{case.id}: {c.count} XLA compilations before the error"


# ------------------------------------------------------------------ what is accepted


def test_nan_data_is_accepted_with_check_finite_false():
    x = X.copy()
    x[3, 1] = np.nan
    with pytest.raises(ValueError, match="contains NaN"):
        gd.fit(ls_loss, P, (x, Y), TX, key=KEY, epochs=2)
    r = gd.fit(ls_loss, P, (x, Y), TX, key=KEY, epochs=2, check_finite=False)
    assert r.stopped_by == gd.Status.NONFINITE_LOSS and int(r.steps) == 0


def test_hyperparameter_spellings_are_accepted_and_compile_once(compiles):
    kw = dict(key=KEY, epochs=3, regime=gd.minibatch(5))
    first = gd.fit(ls_loss, P, DATA, gd.sgd(0.1, momentum=0.5), **kw)
    spellings = [
        0.1,
        np.float32(0.1),
        np.float64(0.1),
        np.asarray(0.1),
        np.asarray(0.1, np.float32),
        jnp.asarray(0.1),
    ]
    txs = [
        gd.sgd(lr, momentum=m)
        for lr in spellings
        for m in (0.5, np.float32(0.5), np.asarray(0.5))
    ]
    for tx in txs:
        tx.init(P)  # eager state building (not the run) is outside the count
    with compiles() as c:
        results = [gd.fit(ls_loss, P, DATA, tx, **kw) for tx in txs]
        results += [
            gd.fit(
                ls_loss,
                P,
                DATA,
                gd.sgd(0.3, momentum=0.5),
                hyperparams={"learning_rate": lr},
                **kw,
            )
            for lr in spellings
        ]
    assert c.count == 0
    for r in results:
        np.testing.assert_array_equal(r.params["w"], first.params["w"])


# ------------------------------------------------------------------ the docs table


def _loop_cases() -> list[Case]:
    """tests/test_loop.py's bad-input list (tested there), for the docs table."""
    from test_loop import _bad_cases

    return [
        Case(
            f"loop-{name}",
            "gd.fit",
            name,
            (lambda a=args, k=kwargs: gd.fit(*a, **k)),
            err,
            match,
        )
        for name, args, kwargs, err, match in _bad_cases()
    ]


def _message(case: Case) -> str:
    try:
        case.call()
    except Exception as e:  # noqa: BLE001 - every row is an error
        text = str(e)
        error = type(e).__name__
    else:  # pragma: no cover - the tests above fail first
        return "(no error)", "(none)"
    text = text.replace(str(CKPT), "<tmp>")
    text = re.sub(r"0x[0-9a-fA-F]+", "0x…", text)
    text = text.replace("|", "\\|").replace("\n", "<br>")
    return error, text


def render() -> str:
    rows = [c for c in CASES + _loop_cases() if not c.xfail]
    lines = [
        "# Bad inputs gdjax refuses before compiling",
        "",
        "Generated from the table in `tests/test_bad_inputs.py` (and the bad-input "
        "list of `tests/test_loop.py`); do not edit by hand. Rewrite it with "
        "`GDJAX_REGENERATE_DOCS=1 python -m pytest tests/test_bad_inputs.py -k docs`.",
        "",
        "Each row is a test: the input raises the error shown, with this message, "
        "before any XLA program is compiled.",
        "",
        "| API | Bad input | Error | Message |",
        "|---|---|---|---|",
    ]
    for case in rows:
        error, text = _message(case)
        what = case.what.replace("|", "\\|")
        lines.append(f"| `{case.api}` | {what} | `{error}` | {text} |")
    pending = [c for c in CASES if c.xfail]
    if pending:
        lines += [
            "",
            "## Not refused properly yet",
            "",
            "Strict xfails in `tests/test_bad_inputs.py`: each is a bad input that "
            "gdjax lets through, or refuses with JAX's words instead of its own.",
            "",
            "| API | Bad input | Expected | Today |",
            "|---|---|---|---|",
        ]
        for case in pending:
            lines.append(
                f"| `{case.api}` | {case.what} | `{case.error.__name__}` | "
                f"{case.xfail} |"
            )
    return "\n".join(lines) + "\n"


def test_docs_table_is_current():
    text = render()
    if os.environ.get("GDJAX_REGENERATE_DOCS") == "1":
        DOCS.parent.mkdir(exist_ok=True)
        DOCS.write_text(text)
    assert DOCS.exists(), f"{DOCS} is missing: run with GDJAX_REGENERATE_DOCS=1"
    assert DOCS.read_text() == text, (
        f"{DOCS} is stale: rerun with GDJAX_REGENERATE_DOCS=1 and commit it"
    )
