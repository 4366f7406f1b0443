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
from gdjax import _validate as V
from gdjax import checkpoint
from gdjax.checkpoint import CorruptCheckpointError
from gdjax.errors import CheckpointError
from gdjax.transforms import set_hyperparams

_sweep = gd.sweep

DOCS = Path(__file__).resolve().parents[1] / "docs" / "bad_inputs.md"


class Case(NamedTuple):
    id: str
    api: str
    what: str
    call: Callable[[], object]
    error: type[BaseException]
    match: str
    xfail: str | None = None
    kind: str = "0.1 table"


# The classes of issue 14 (a row's ``kind``), for the figures of docs/bad_inputs.md.
PARTNER = "option ignored without its partner, or not type-checked"
DTYPE = "value that changes meaning in the run's dtype"
DEGENERATE = "degenerate problem"
LATE = "checked too late (after compiling) before"
WORDS = "answered in JAX's or Python's words before"
CARELESS = "careless user (found for this table)"
KINDS = ("0.1 table", PARTNER, DTYPE, DEGENERATE, LATE, WORDS, CARELESS)


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
STATE33 = gd.runs.prepare(
    ls_loss,
    P33,
    (X3, Y3),
    MOMENTUM,
    key=KEY,
    epochs=2,
    stopping=gd.Stopping(),
    recording=gd.Recording(),
    driving=gd.Driving(),
).state
RESULT33 = gd.FitResult(STATE33)


def _reshaped_momentum(shape, dtype=np.float32):
    return gd.FitResult(
        STATE33._replace(
            opt_state=jax.tree.map(
                lambda a: np.zeros(shape, dtype) if np.shape(a) == (3, 3) else a,
                STATE33.opt_state,
            )
        )
    )


RESUME_SHAPE = _reshaped_momentum((3, 1))
RESUME_DTYPE = _reshaped_momentum((3, 3), np.float16)
RESUME_TREE = gd.FitResult(
    STATE33._replace(opt_state=MOMENTUM.init({"v": P33["w"]}))
)
RESUME_PARAMS = gd.FitResult(
    STATE33._replace(params={"w": np.zeros((3, 1), np.float32)})
)


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
checkpoint.save(CKPT / "good", RESULT33)
_bad = checkpoint.save(CKPT / "corrupt", RESULT33)
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
            r"resume must be a gd\.FitResult, got dict",
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
            "fit-compiler-options-str",
            "gd.fit",
            "compiler_options='xla_cpu_use_fusion_emitters'",
            _fit(compiler_options="xla_cpu_use_fusion_emitters"),
            TypeError,
            r"compiler_options must be a mapping of XLA option names to values, "
            r"e\.g\. gd\.QUICK_COMPILE, got str",
        ),
        Case(
            "fit-compiler-options-list-value",
            "gd.fit",
            "compiler_options={'xla_cpu_use_fusion_emitters': [False]}",
            _fit(compiler_options={"xla_cpu_use_fusion_emitters": [False]}),
            TypeError,
            r"compiler_options\['xla_cpu_use_fusion_emitters'\] must be a bool, int, "
            r"float or str, got list",
        ),
        Case(
            "fit-metric-not-callable",
            "gd.fit",
            "metric=1",
            _fit(metric=1),
            TypeError,
            r"metric must be callable as metric\(params, batch\) -> scalar, got int 1",
        ),
        Case(
            "fit-monitor-not-callable",
            "gd.fit",
            "monitors={'a': 3}",
            _fit(monitors={"a": 3}),
            TypeError,
            r"monitors\['a'\] must be callable as fn\(params, data\) -> scalar, got "
            r"int 3",
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
            "a learning rate of NaN",
            _fit(hyperparams={"learning_rate": np.float32(nan)}),
            ValueError,
            r"hyperparams\['learning_rate'\] must be a finite number in \(0, inf\), "
            r"got nan",
        ),
        Case(
            "fit-swept-lr-negative",
            "gd.fit",
            "a learning rate of -1",
            _fit(hyperparams={"learning_rate": -1.0}),
            ValueError,
            r"hyperparams\['learning_rate'\] must be a finite number in \(0, inf\), "
            r"got -1\.0",
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
            lambda: checkpoint.restore(CKPT / "empty", RESULT33),
            CheckpointError,
            r"no checkpoint \(ckpt-\*\.npz\) in .*empty",
        ),
        Case(
            "restore-corrupt",
            "checkpoint.restore",
            "a truncated checkpoint",
            lambda: checkpoint.restore(CKPT / "corrupt", RESULT33),
            CorruptCheckpointError,
            r"checkpoint .*corrupt.*ckpt-000000000\.npz is unreadable: it is truncated",
        ),
        Case(
            "restore-mismatch",
            "checkpoint.restore",
            "a checkpoint of other shapes",
            lambda: checkpoint.restore(CKPT / "good", RESUME_PARAMS),
            CheckpointError,
            r"state\.params\['w'\]\W+\w*\W*3, ?3\W+\w*\W*3, ?1",
            kind="checkpoint (rewritten, re-run)",
        ),
        Case(
            "restore-like-empty",
            "checkpoint.restore",
            "like with no leaves",
            lambda: checkpoint.restore(CKPT / "good", {}),
            TypeError,
            r"like must be a gd\.FitResult to restore into",
            kind="checkpoint (rewritten, re-run)",
        ),
        Case(
            "save-keep-zero",
            "checkpoint.save",
            "keep=0",
            lambda: checkpoint.save(CKPT / "x", RESULT33, keep=0),
            ValueError,
            r"keep must be an integer >= 1, got 0",
        ),
        Case(
            "save-not-a-result",
            "checkpoint.save",
            "a dict for state",
            lambda: checkpoint.save(CKPT / "x", {"w": P["w"]}),
            TypeError,
            r"must be a gd\.FitResult.*got dict",
            kind="checkpoint (rewritten, re-run)",
        ),
        Case(
            "save-directory-int",
            "checkpoint.save",
            "directory=3",
            lambda: checkpoint.save(3, RESULT33),
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
                ls_loss, P, DATA, TX, directory=CKPT, key=KEY, epochs=2, resume=RESULT33
            ),
            TypeError,
            r"fit_resumable sets resume itself",
        ),
    ]
    cases += _new_fit_cases() + _new_sweep_cases() + _new_other_cases()
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


# ------------------------------------------------------------------ issue 14 rows

NAN, INF = float("nan"), float("inf")
P_NAN = {"w": np.array([0.0, NAN, 0.0, 0.0], np.float32)}
P_EMPTY = {"w": np.zeros(4, np.float32), "b": np.zeros((3, 0), np.float32)}
P16 = {"w": np.zeros(4, np.float16)}
X_BIG64 = X.astype(np.float64)
X_BIG64[3, 1] = 1e300
Y_BIG64 = (np.arange(20) * 2**40).astype(np.int64)
SCHEDULED = gd.sgd(optax.linear_schedule(0.1, 0.01, 10))
WD = gd.sgd(0.1, weight_decay=1e-4)
for _tx in (SCHEDULED, WD, MOMENTUM):
    _tx.init(P)
TINY_LR = gd.sgd(1e-50)
HUGE_LR = gd.sgd(1e39)
ALMOST_ONE = gd.sgd(0.1, momentum=1 - 1e-9)
RAN_TWO = gd.FitResult(STATE33._replace(epoch=np.asarray(2, np.int32)))
STACKED = gd.FitResult(jax.tree.map(lambda a: np.stack([a, a]), STATE33))
MIXED_FRAME = None
try:  # pandas is optional (gdjax[pandas])
    import pandas as pd

    MIXED_FRAME = pd.DataFrame({"x": np.arange(20.0), "name": ["a"] * 20})
except ImportError:  # pragma: no cover
    pd = None


def _loss_round(params, batch):
    x, y = batch
    return jnp.mean((x @ jnp.round(params["w"]) - y) ** 2)


def _loss_argmax(params, batch):
    x, y = batch
    return jnp.mean((x[:, jnp.argmax(params["w"])] - y) ** 2)


def _loss_stop_gradient(params, batch):
    return ls_loss(jax.lax.stop_gradient(params), batch)


def _loss_key_typo(params, batch):
    return ls_loss({"w": params["W"]}, batch)


def _loss_complex(params, batch):
    return ls_loss(params, batch).astype(jnp.complex64)


def _loss_while_loop(params, batch):
    # A data-dependent loop: forward works, reverse-mode differentiation cannot.
    value = ls_loss(params, batch)
    return jax.lax.while_loop(lambda v: v > 1.0, lambda v: v / 2, value)


def _generator():
    yield X, Y


def _in_jit():
    return jax.jit(lambda p: gd.fit(ls_loss, p, DATA, TX, key=KEY, epochs=2).params)(P)


def _in_vmap():
    ws = np.zeros((2, 4), np.float32)
    return jax.vmap(
        lambda w: gd.fit(ls_loss, {"w": w}, DATA, TX, key=KEY, epochs=2).params["w"]
    )(ws)


def _key_in_jit():
    return jax.jit(lambda k: gd.fit(ls_loss, P, DATA, TX, key=k, epochs=2).params)(KEY)


def _new_fit_cases() -> list[Case]:
    f = _fit
    rows = [
        # options ignored without their partner, or not type-checked
        ("fit-patience-without-tol", "patience=3 without tol", f(patience=3),
         ValueError, r"patience=3 is given without tol", PARTNER),
        ("fit-patience-negative-no-tol", "patience=-2 without tol", f(patience=-2),
         ValueError, r"patience=-2 is given without tol", PARTNER),
        ("fit-guard-string", "guard='off'", f(guard="off"),
         TypeError, r"guard must be True or False, got str 'off'", PARTNER),
        ("fit-progress-string", "progress='yes'", f(progress="yes"),
         TypeError, r"progress must be True or False, got str 'yes'", PARTNER),
        ("fit-donate-string", "donate='no'", f(donate="no"),
         TypeError, r"donate must be True or False, got str 'no'", PARTNER),
        ("fit-raise-on-nonfinite-int", "raise_on_nonfinite=1",
         f(raise_on_nonfinite=1),
         TypeError, r"raise_on_nonfinite must be True or False, got int 1", PARTNER),
        ("fit-check-finite-string", "check_finite='no'", f(check_finite="no"),
         TypeError, r"check_finite must be True or False, got str 'no'", PARTNER),
        ("fit-monitor-every-alone", "monitor_every=5 without monitors",
         f(monitor_every=5),
         ValueError, r"monitor_every=5 is given without monitors", PARTNER),
        ("fit-tol-bool", "tol=True", f(tol=True),
         TypeError, r"tol must be a number, got bool True", PARTNER),
        ("fit-grad-tol-vector", "grad_tol of shape (2,)",
         f(grad_tol=np.array([0.1, 0.2])),
         TypeError, r"grad_tol must be a single number, got .* shape \(2,\)", PARTNER),
        ("fit-target-loss-string", "target_loss='0.1'", f(target_loss="0.1"),
         TypeError, r"target_loss must be a number, got str '0\.1'", PARTNER),
        ("fit-target-loss-list", "target_loss=[0.1]", f(target_loss=[0.1]),
         TypeError, r"target_loss must be a single number, got list", PARTNER),
        ("fit-learning-rate-keyword", "learning_rate=0.1 given to fit",
         f(learning_rate=0.1),
         TypeError, r"unexpected keyword argument\(s\) \['learning_rate'\]", PARTNER),
        ("fit-option-typo", "target_los=0.1 (a typo)", f(target_los=0.1),
         TypeError, r"unexpected keyword argument\(s\) \['target_los'\] \(did you "
         r"mean 'target_loss'\?\)", CARELESS),
        ("fit-stopping-dict", "stopping={'tol': 0.1}", f(stopping={"tol": 0.1}),
         TypeError, r"stopping must be a gd\.Stopping, got dict", PARTNER),
        ("fit-recording-wrong-value", "recording=gd.Stopping()",
         f(recording=gd.Stopping()),
         TypeError, r"recording must be a gd\.Recording, got Stopping", PARTNER),
        # values that change meaning in the run's dtype
        ("fit-sgd-lr-underflow", "gd.sgd(1e-50): 0 in float32", f(tx=TINY_LR),
         ValueError, r"the transform's learning_rate \(as its state stores it, in "
         r"float32\) must be a finite number in \(0, inf\), got 0\.0", DTYPE),
        ("fit-sgd-lr-overflow", "gd.sgd(1e39): inf in float32", f(tx=HUGE_LR),
         ValueError, r"the transform's learning_rate .* got inf", DTYPE),
        ("fit-sgd-momentum-rounds", "gd.sgd(0.1, momentum=1 - 1e-9): 1.0 in float32",
         f(tx=ALMOST_ONE),
         ValueError, r"the transform's momentum .*must be a finite number in "
         r"\[0, 1\), got 1\.0", DTYPE),
        ("fit-sgd-lr-underflow-float16", "gd.sgd(1e-8) for float16 params",
         f(params=P16, tx=gd.sgd(1e-8)),
         ValueError, r"the transform's learning_rate \(as its state stores it, in "
         r"float32\) must be in \(0, inf\) in the run's dtype float16, got 1e-08, "
         r"which underflows to 0\.0", DTYPE),
        ("fit-hyperparams-lr-underflow", "hyperparams learning_rate=1e-50",
         f(hyperparams={"learning_rate": 1e-50}),
         ValueError, r"hyperparams\['learning_rate'\] must be in \(0, inf\) in the "
         r"run's dtype float32, got 1e-50, which underflows to 0\.0", DTYPE),
        ("fit-hyperparams-lr-overflow", "hyperparams learning_rate=1e39",
         f(hyperparams={"learning_rate": 1e39}),
         ValueError, r"hyperparams\['learning_rate'\] .* got 1e\+39, which "
         r"overflows to inf", DTYPE),
        ("fit-hyperparams-momentum-rounds", "hyperparams momentum=1 - 1e-9",
         f(tx=MOMENTUM, hyperparams={"momentum": 1 - 1e-9}),
         ValueError, r"hyperparams\['momentum'\] must be in \[0, 1\) in the run's "
         r"dtype float32, got 0\.999999999, which rounds to 1\.0", DTYPE),
        ("fit-hyperparams-wd-overflow", "hyperparams weight_decay=1e39",
         f(tx=WD, hyperparams={"weight_decay": 1e39}),
         ValueError, r"hyperparams\['weight_decay'\] .* overflows to inf", DTYPE),
        ("fit-target-loss-overflow", "target_loss=1e39 (inf in float32)",
         f(target_loss=1e39),
         ValueError, r"target_loss must be finite in the run's dtype float32, got "
         r"1e\+39", DTYPE),
        ("fit-grad-tol-overflow", "grad_tol=1e39 (inf in float32)",
         f(grad_tol=1e39),
         ValueError, r"grad_tol must be finite in the run's dtype float32", DTYPE),
        ("fit-float64-data-overflow", "float64 data of 1e300 without x64",
         f(data=(X_BIG64, Y)),
         ValueError, r"data\[0\] is float64 but 64-bit mode is off, so the run holds "
         r"it as float32, where example 3 does not fit", DTYPE),
        ("fit-int64-labels-overflow", "int64 labels past int32 without x64",
         f(data=(X, Y_BIG64)),
         ValueError, r"data\[1\] is int64 .* as int32, where example 1 does not fit",
         DTYPE),
        ("fit-nan-params", "NaN in the initial params", f(params=P_NAN),
         ValueError, r"params\['w'\] must be finite, got NaN or inf \(first at flat "
         r"index 1\)", DTYPE),
        ("fit-inf-params", "inf in the initial params",
         f(params={"w": np.array([INF, 0, 0, 0], np.float32)}),
         ValueError, r"params\['w'\] must be finite, got NaN or inf \(first at flat "
         r"index 0\)", DTYPE),
        # degenerate problems
        ("fit-zero-size-param", "a params leaf of shape (0,)",
         f(params={"w": np.zeros(0, np.float32)}),
         ValueError, r"params\['w'\] must have at least one element, got shape \(0,\)",
         DEGENERATE),
        ("fit-empty-param-among-others", "a (3, 0) leaf beside a real one",
         f(params=P_EMPTY),
         ValueError, r"params\['b'\] must have at least one element, got shape "
         r"\(3, 0\)", DEGENERATE),
        ("fit-loss-round", "a loss reading params through jnp.round",
         f(loss=_loss_round),
         ValueError, r"loss's gradient with respect to params is identically zero",
         DEGENERATE),
        ("fit-loss-argmax", "a loss reading params through argmax",
         f(loss=_loss_argmax),
         ValueError, r"gradient with respect to params is identically zero",
         DEGENERATE),
        ("fit-loss-stop-gradient", "a loss that stop_gradients its params",
         f(loss=_loss_stop_gradient),
         ValueError, r"gradient with respect to params is identically zero",
         DEGENERATE),
        ("fit-loss-while-loop", "a loss with a lax.while_loop on params",
         f(loss=_loss_while_loop),
         TypeError, r"loss cannot be differentiated with respect to params \(reverse "
         r"mode\): ValueError: Reverse-mode differentiation does not work for "
         r"lax\.while_loop", WORDS),
        ("fit-constant-loss", "a loss that ignores params", f(loss=_loss_constant),
         ValueError, r"loss does not depend on params", DEGENERATE),
        # checks that happened too late
        ("fit-callback-not-callable", "callback=5", f(callback=5),
         TypeError, r"callback must be callable as callback\(result\) -> bool, got "
         r"int 5", LATE),
        ("fit-callback-no-argument", "a callback taking no argument",
         f(callback=lambda: None),
         TypeError, r"callback must be callable as callback\(result\) -> bool \(1 "
         r"positional argument\)", LATE),
        ("fit-until-one-argument", "until taking one argument",
         f(until=lambda history: False),
         TypeError, r"until must be callable as until\(history, epoch\) -> bool \(2 "
         r"positional arguments\)", LATE),
        ("fit-epochs-past-int32", "epochs=2**31", f(epochs=2**31),
         ValueError, r"epochs must be at most 2\*\*31 - 1", LATE),
        ("fit-max-steps-past-int32", "max_steps=2**40", f(max_steps=2**40),
         ValueError, r"max_steps must be at most 2\*\*31 - 1", LATE),
        ("fit-steps-past-int32", "2**30 epochs of 20 steps",
         f(epochs=2**30, regime=gd.stochastic()),
         ValueError, r"epochs=1073741824 at 20 steps per epoch is 21474836480 steps, "
         r"past 2\*\*31 - 1", LATE),
        ("fit-hyperparams-unknown-momentum", "hyperparams momentum for gd.sgd(0.1)",
         f(hyperparams={"momentum": 0.5}),
         ValueError, r"unknown hyperparameter 'momentum'; opt_state holds "
         r"\['learning_rate'\]", LATE),
        ("fit-hyperparams-scheduled", "hyperparams learning_rate over a schedule",
         f(tx=SCHEDULED, hyperparams={"learning_rate": 0.1}),
         ValueError, r"hyperparams\['learning_rate'\] is driven by a schedule", LATE),
        ("fit-hyperparams-vector", "hyperparams learning_rate=[0.1, 0.2] in fit",
         f(hyperparams={"learning_rate": [0.1, 0.2]}),
         ValueError, r"hyperparams\['learning_rate'\] must be a single number for one "
         r"run, got shape \(2,\); .*gd\.sweep", LATE),
        ("fit-hyperparams-not-dict", "hyperparams=0.1", f(hyperparams=0.1),
         TypeError, r"hyperparams must be a dict \{name: value\}, got float 0\.1",
         LATE),
        ("fit-hyperparams-string", "hyperparams learning_rate='0.1'",
         f(hyperparams={"learning_rate": "0.1"}),
         TypeError, r"hyperparams\['learning_rate'\] must be a number, got str", LATE),
        ("fit-resume-ran-out", "resume of 2 epochs with epochs=2",
         f(params=P33, data=(X3, Y3), tx=MOMENTUM, resume=RAN_TWO),
         ValueError, r"resume has already run 2 epochs and epochs=2 leaves none", LATE),
        ("fit-resume-stacked", "resume with a stacked (sweep) result",
         f(params=P33, data=(X3, Y3), tx=MOMENTUM, resume=STACKED),
         ValueError, r"resume must be a single run's FitResult, got a stacked one",
         LATE),
        ("fit-resume-monitors", "resume recorded without the monitors asked",
         f(params=P33, data=(X3, Y3), tx=MOMENTUM, resume=RESULT33,
           monitors={"a": lambda p, d: jnp.sum(p["w"])}),
         ValueError, r"resume records monitors \[\], but this call asks for \['a'\]",
         LATE),
        # messages in JAX's words
        ("fit-in-jit", "gd.fit called inside jax.jit", _in_jit,
         TypeError, r"gd\.fit must be called outside jax\.jit, jax\.vmap and "
         r"jax\.grad, but params\['w'\] is a traced value", WORDS),
        ("fit-in-vmap", "gd.fit called inside jax.vmap", _in_vmap,
         TypeError, r"gd\.fit must be called outside jax\.jit.*params\['w'\]", WORDS),
        ("fit-key-in-jit", "a traced key", _key_in_jit,
         TypeError, r"gd\.fit must be called outside .*but key is a traced value",
         WORDS),
        ("fit-until-vector", "until returning a vector",
         f(until=lambda h, e: h.loss > 0),
         TypeError, r"until must return a real or boolean scalar from until\(history, "
         r"epoch\), got shape \(2,\)", WORDS),
        ("fit-metric-vector", "metric returning a vector",
         f(metric=lambda p, b: b[0] @ p["w"]),
         TypeError, r"metric must return a real or boolean scalar .*got shape \(20,\)",
         WORDS),
        ("fit-monitor-vector", "a monitor returning the params",
         f(monitors={"w": lambda p, d: p["w"]}),
         TypeError, r"monitors\['w'\] must return a real or boolean scalar .*shape "
         r"\(4,\)", WORDS),
        ("fit-metric-key-error", "a metric reading a missing key",
         f(metric=lambda p, b: jnp.sum(p["v"])),
         TypeError, r"metric\(params, batch\) fails to trace: KeyError: 'v'", WORDS),
        ("fit-none-param", "a None leaf in params",
         f(params={"w": P["w"], "b": None}),
         TypeError, r"params\['b'\] must be an array, got None", WORDS),
        ("fit-hyperparams-plain-optax", "hyperparams= with optax.sgd(0.1)",
         f(tx=optax.sgd(0.1), hyperparams={"learning_rate": 0.1}),
         ValueError, r"this transform holds none \(a plain optax transform", WORDS),
        ("fit-loss-key-typo", "a loss reading params['W'] (a typo)",
         f(loss=_loss_key_typo),
         TypeError, r"loss\(params, batch\) fails to trace .*KeyError: 'W'", WORDS),
        ("fit-loss-one-argument", "a loss taking params only",
         f(loss=lambda p: jnp.sum(p["w"] ** 2)),
         TypeError, r"loss\(params, batch\) fails to trace .*TypeError: .*positional",
         WORDS),
        ("fit-val-data-no-labels", "val_data=(X,) without labels",
         f(val_data=(X,)),
         ValueError, r"val_data does not fit loss.*ValueError: not enough values to "
         r"unpack", WORDS),
        ("fit-data-none-label", "data=(X, None)", f(data=(X, None)),
         TypeError, r"data\[1\] must be an array, got None", WORDS),
        ("fit-mixed-dataframe", "a DataFrame with a string column as x",
         f(data=(MIXED_FRAME, Y)),
         TypeError, r"data\[0\] must be numeric, got dtype object", WORDS),
        # a careless user
        ("fit-transform-factory", "transform=gd.sgd (not called)", f(tx=gd.sgd),
         TypeError, r"transform must be an optax GradientTransformation .* \(a "
         r"factory: call it", CARELESS),
        ("fit-transform-optax-factory", "transform=optax.adam (not called)",
         f(tx=optax.adam),
         TypeError, r"got function <function adam.*\(a factory: call it", CARELESS),
        ("fit-transform-none", "transform=None", f(tx=None),
         TypeError, r"transform must be an optax GradientTransformation.*got NoneType",
         CARELESS),
        ("fit-regime-factory", "regime=gd.minibatch (not called)",
         f(regime=gd.minibatch),
         TypeError, r"regime must be gd\.full_batch\(\), gd\.stochastic\(\) or "
         r"gd\.minibatch\(B\)", CARELESS),
        ("fit-pad-plain-loss", "minibatch(8) on 20 examples with a plain loss",
         f(regime=gd.minibatch(8)),
         ValueError, r"last_batch='pad' needs a loss that takes per-example weights",
         CARELESS),
        ("fit-int-key", "key=0 (a seed)", f(key=0),
         TypeError, r"key must be a PRNG key from jax\.random\.key\(seed\), got int 0",
         CARELESS),
        ("fit-key-none", "key=None", f(key=None),
         TypeError, r"key must be a PRNG key.*got NoneType", CARELESS),
        ("fit-epochs-none", "epochs=None", f(epochs=None),
         TypeError, r"epochs must be an integer, got NoneType", CARELESS),
        ("fit-epochs-bool", "epochs=True", f(epochs=True),
         TypeError, r"epochs must be an integer, got bool True", CARELESS),
        ("fit-epochs-string", "epochs='10'", f(epochs="10"),
         TypeError, r"epochs must be an integer, got str '10'", CARELESS),
        ("fit-chunk-epochs-float", "chunk_epochs=2.5", f(chunk_epochs=2.5),
         TypeError, r"chunk_epochs must be an integer, got float 2\.5", CARELESS),
        ("fit-data-none", "data=None", f(data=None),
         TypeError, r"data must be an array, got None", CARELESS),
        ("fit-data-generator", "a generator of batches as data",
         f(data=_generator()),
         TypeError, r"data must be a pytree of arrays .*got generator.*gd\.fit_stream",
         CARELESS),
        ("fit-loss-per-example-fn", "gd.losses.squared_error passed as the loss",
         f(loss=gd.losses.squared_error),
         ValueError, r"loss\(params, batch\) fails to trace on params \['w'\]: "
         r"float32\[4\]", CARELESS),
        ("fit-loss-complex", "a loss returning complex64", f(loss=_loss_complex),
         TypeError, r"loss must return a floating-point scalar, got dtype complex64",
         CARELESS),
        ("fit-monitor-empty-name", "monitors={'': fn}",
         f(monitors={"": lambda p, d: 0.0}),
         TypeError, r"monitors keys must be non-empty strings, got ''", CARELESS),
        ("fit-monitors-list", "monitors=[fn]", f(monitors=[lambda p, d: 0.0]),
         TypeError, r"monitors must be a dict \{name: fn\(params, data\) -> scalar\}, "
         r"got list", CARELESS),
        ("fit-val-data-dict", "val_data as a dict for tuple data",
         f(val_data={"x": X, "y": Y}),
         TypeError, r"val_data does not fit loss", CARELESS),
        ("fit-history-size-past-int32", "history_size=2**31", f(history_size=2**31),
         ValueError, r"history_size must be at most 2\*\*31 - 1", CARELESS),
    ]
    return [
        Case(i, "gd.fit", what, call, err, match, kind=kind)
        for i, what, call, err, match, kind in rows
    ]


def _sw(**kwargs):
    init = kwargs.pop("init", P)
    tx = kwargs.pop("tx", MOMENTUM)
    kwargs = {"seeds": [0, 1], "epochs": 2, **kwargs}
    return lambda: gd.sweep(ls_loss, init, DATA, tx, **kwargs)


def _new_sweep_cases() -> list[Case]:
    lr = "learning_rate"
    rows = [
        ("sweep-duplicate-lr", "learning_rate=[0.1, 0.1]",
         _sw(hyperparams={lr: [0.1, 0.1]}),
         ValueError, r"hyperparams\['learning_rate'\] must be distinct, got \[0\.1\] "
         r"more than once", DEGENERATE),
        ("sweep-duplicate-lr-float32", "learning rates equal only in float32",
         _sw(hyperparams={lr: [0.1, 0.1 + 1e-12]}),
         ValueError, r"hyperparams\['learning_rate'\] must be distinct in the run's "
         r"dtype float32", DEGENERATE),
        ("sweep-duplicate-momentum", "momentum=[0.5, 0.5]",
         _sw(hyperparams={"momentum": [0.5, 0.5]}),
         ValueError, r"hyperparams\['momentum'\] must be distinct", DEGENERATE),
        ("sweep-duplicate-zip", "grid=False with a repeated setting",
         _sw(hyperparams={lr: [0.1, 0.1], "momentum": [0.5, 0.5]}, grid=False),
         ValueError, r"grid=False settings must be distinct", DEGENERATE),
        ("sweep-duplicate-outer", "outer batch_size=[4, 4]",
         _sw(outer={"batch_size": [4, 4]}),
         ValueError, r"outer\['batch_size'\] must be distinct", DEGENERATE),
        ("sweep-lr-underflow", "a swept learning rate of 1e-50",
         _sw(hyperparams={lr: [0.1, 1e-50]}),
         ValueError, r"hyperparams\['learning_rate'\] must be in \(0, inf\) in the "
         r"run's dtype float32, got 1e-50, which underflows to 0\.0", DTYPE),
        ("sweep-lr-overflow", "a swept learning rate of 1e39",
         _sw(hyperparams={lr: [0.1, 1e39]}),
         ValueError, r"which overflows to inf in float32", DTYPE),
        ("sweep-momentum-rounds", "a swept momentum of 1 - 1e-9",
         _sw(hyperparams={"momentum": [0.5, 1 - 1e-9]}),
         ValueError, r"hyperparams\['momentum'\] .* which rounds to 1\.0", DTYPE),
        ("sweep-target-overflow", "a swept target_loss of 1e39",
         _sw(hyperparams={"target_loss": [0.1, 1e39]}),
         ValueError, r"hyperparams\['target_loss'\] must be finite in the run's "
         r"dtype float32", DTYPE),
        ("sweep-sgd-lr-underflow", "gd.sgd(1e-50) swept over momentum only",
         _sw(tx=TINY_LR),
         ValueError, r"the transform's learning_rate .* got 0\.0", DTYPE),
        ("sweep-momentum-rounds-bfloat16", "momentum 0.999 for bfloat16 params",
         _sw(init={"w": np.zeros(4, jnp.bfloat16)},
             hyperparams={"momentum": [0.5, 0.999]}),
         ValueError, r"hyperparams\['momentum'\] must be in \[0, 1\) in the run's "
         r"dtype bfloat16, got 0\.999, which rounds to 1\.0", DTYPE),
        ("sweep-nan-shared-params", "shared params holding NaN", _sw(init=P_NAN),
         ValueError, r"params\['w'\] must be finite", DTYPE),
        ("sweep-seeds-int", "seeds=5", _sw(seeds=5),
         TypeError, r"seeds must be a sequence of integers .*for n seeds pass "
         r"range\(n\)", CARELESS),
        ("sweep-seeds-negative", "seeds=[-1, 0]", _sw(seeds=[-1, 0]),
         ValueError, r"seeds must be integers in \[0, 2\*\*32\), got -1", CARELESS),
        ("sweep-seeds-float", "seeds=[0.5]", _sw(seeds=[0.5]),
         TypeError, r"seeds must be integers, got float 0\.5", CARELESS),
        ("sweep-seeds-too-big", "seeds=[2**32]", _sw(seeds=[2**32]),
         ValueError, r"seeds must be integers in \[0, 2\*\*32\), got 4294967296",
         CARELESS),
        ("sweep-seeds-string", "seeds='01'", _sw(seeds="01"),
         TypeError, r"seeds must be integers, got str '0'", CARELESS),
        ("sweep-hyper-scalar", "learning_rate=0.1 (not a list)",
         _sw(hyperparams={lr: 0.1}),
         TypeError, r"hyperparams\['learning_rate'\] must be a sequence of numbers.*"
         r"write \[value\]", CARELESS),
        ("sweep-hyper-strings", "learning_rate=['0.1', '0.2']",
         _sw(hyperparams={lr: ["0.1", "0.2"]}),
         TypeError, r"hyperparams\['learning_rate'\] must hold numbers", CARELESS),
        ("sweep-hyper-2d", "a 2-D array of learning rates",
         _sw(hyperparams={lr: np.full((2, 2), 0.1)}),
         TypeError, r"hyperparams\['learning_rate'\] must be a sequence of numbers",
         CARELESS),
        ("sweep-patience-without-tol", "patience swept without tol",
         _sw(hyperparams={"patience": [1, 2]}),
         ValueError, r"hyperparams\['patience'\] is swept but tol is off", PARTNER),
        ("sweep-tol-twice", "tol fixed and swept",
         _sw(tol=0.1, hyperparams={"tol": [0.1, 0.2]}),
         ValueError, r"'tol' is both swept \(hyperparams\) and fixed", CARELESS),
        ("sweep-max-steps-zero", "max_steps=[0, 5]",
         _sw(hyperparams={"max_steps": [0, 5]}),
         ValueError, r"hyperparams\['max_steps'\] must be an integer >= 1, got 0",
         CARELESS),
        ("sweep-max-steps-past-int32", "max_steps=[5, 2**40]",
         _sw(hyperparams={"max_steps": [5, 2**40]}),
         ValueError, r"hyperparams\['max_steps'\] must be at most 2\*\*31 - 1", LATE),
        ("sweep-scheduled-lr", "a swept learning rate driven by a schedule",
         _sw(tx=SCHEDULED, hyperparams={lr: [0.1, 0.2]}),
         ValueError, r"hyperparams\['learning_rate'\] is driven by a schedule",
         CARELESS),
        ("sweep-plain-optax", "a swept learning rate with optax.sgd(0.1)",
         _sw(tx=optax.sgd(0.1), hyperparams={lr: [0.1, 0.2]}),
         ValueError, r"unknown hyperparameter 'learning_rate'.*holds no injected "
         r"hyperparameters", WORDS),
        ("sweep-devices-zero", "devices=0", _sw(devices=0),
         ValueError, r"devices must be an integer >= 1, got 0", CARELESS),
        ("sweep-devices-too-many", "devices=4096", _sw(devices=4096),
         ValueError, r"devices=4096 but only \d+ device\(s\) are available", CARELESS),
        ("sweep-devices-string", "devices='cpu'", _sw(devices="cpu"),
         TypeError, r"devices must be a device count or a non-empty sequence of jax "
         r"devices, got str 'cpu'", CARELESS),
        ("sweep-outer-empty", "outer batch_size=[]", _sw(outer={"batch_size": []}),
         ValueError, r"outer\['batch_size'\] is empty", CARELESS),
        ("sweep-outer-not-init-keyword", "outer width with shared params",
         _sw(outer={"width": [2, 3]}),
         ValueError, r"outer axes \['width'\] are passed to init as keywords, so init "
         r"must be a callable", CARELESS),
        ("sweep-outer-both", "outer batch_size and regime",
         _sw(outer={"batch_size": [4], "regime": [gd.full_batch()]}),
         ValueError, r"outer may vary batch_size or regime, not both", CARELESS),
        ("sweep-outer-also-swept", "outer learning_rate also in hyperparams",
         _sw(outer={lr: [0.1]}, hyperparams={lr: [0.1, 0.2]}),
         ValueError, r"outer\['learning_rate'\] is also swept inside", CARELESS),
        ("sweep-init-int", "init returning int params",
         _sw(init=lambda k: {"w": jnp.zeros(4, jnp.int32)}),
         TypeError, r"init\(key\)\['w'\] must have a floating dtype", CARELESS),
        ("sweep-init-raises", "init raising ZeroDivisionError",
         _sw(init=lambda k: 1 / 0),
         TypeError, r"init must be callable as init\(key\) -> params .*division by "
         r"zero", WORDS),
        ("sweep-init-string", "init='glorot'", _sw(init="glorot"),
         TypeError, r"params must be an array, got str 'glorot'", CARELESS),
        ("sweep-grid-string", "grid='no'", _sw(hyperparams={lr: [0.1]}, grid="no"),
         TypeError, r"grid must be True or False, got str 'no'", PARTNER),
        ("sweep-donate", "donate=True", _sw(donate=True),
         TypeError, r"sweep\(\) does not take donate=True", CARELESS),
        ("sweep-epochs-zero", "epochs=0", _sw(epochs=0),
         ValueError, r"epochs must be an integer >= 1, got 0", CARELESS),
        ("sweep-loss-round", "a loss through jnp.round",
         lambda: gd.sweep(_loss_round, P, DATA, MOMENTUM, seeds=[0], epochs=2),
         ValueError, r"gradient with respect to params is identically zero",
         DEGENERATE),
    ]
    return [
        Case(i, "gd.sweep", what, call, err, match, kind=kind)
        for i, what, call, err, match, kind in rows
    ]


A_FILE = CKPT / "a-file"
A_FILE.write_text("not a folder")


def _resumable(directory):
    return lambda: checkpoint.fit_resumable(
        ls_loss, P, DATA, TX, directory=directory, key=KEY, epochs=2
    )


def _new_other_cases() -> list[Case]:
    rows = [
        ("resumable-directory-is-file", "checkpoint.fit_resumable",
         "directory that is an existing file", _resumable(A_FILE),
         gd.GdjaxError, r"directory", LATE),
        ("resumable-directory-uncreatable", "checkpoint.fit_resumable",
         "directory that cannot be created (under /proc)",
         _resumable("/proc/gdjax-checkpoints"),
         gd.GdjaxError, r"directory", LATE),
        ("minibatch-shuffle-string", "gd.minibatch", "shuffle='no'",
         lambda: gd.minibatch(4, shuffle="no"),
         TypeError, r"shuffle must be True or False, got str 'no'", PARTNER),
        ("stochastic-replacement-string", "gd.stochastic", "replacement='yes'",
         lambda: gd.stochastic(replacement="yes"),
         TypeError, r"replacement must be True or False, got str 'yes'", PARTNER),
        ("vg-none-param", "gd.value_and_grad", "a None leaf in params",
         lambda: gd.value_and_grad(ls_loss)({"w": P["w"], "b": None}, DATA),
         TypeError, r"params\['b'\] must be an array, got None", WORDS),
        ("vg-loss-round", "gd.value_and_grad", "a loss through jnp.round",
         lambda: gd.value_and_grad(_loss_round)(P, DATA),
         ValueError, r"gradient with respect to params is identically zero",
         DEGENERATE),
        ("sgd-schedule-negative-linear", "gd.sgd",
         "a linear schedule starting at -0.1",
         lambda: gd.sgd(optax.linear_schedule(-0.1, 0.1, 10)),
         ValueError, r"learning_rate \(its value at step 0\) must be a finite number "
         r"in \(0, inf\), got -0\.1", LATE),
        ("sgd-schedule-nan-cosine", "gd.sgd", "a cosine schedule of NaN",
         lambda: gd.sgd(optax.cosine_decay_schedule(NAN, 10)),
         ValueError, r"learning_rate \(its value at step 0\) .* got nan", LATE),
    ]
    rows = [r if len(r) == 8 else (*r, None) for r in rows]
    return [
        Case(i, api, what, call, err, match, xfail=xfail, kind=kind)
        for i, api, what, call, err, match, kind, xfail in rows
    ]


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


def cold() -> None:
    """Empty JAX's compilation caches and gdjax's memo of traced checks.

    A check that passes only because an earlier test compiled (and cached) the
    small eager programs it runs would count zero compilations on a warm cache.
    """
    jax.clear_caches()
    V.clear_memo()


@pytest.mark.parametrize("case", _params())
def test_bad_input_is_refused_before_compiling(case, compiles):
    cold()
    with compiles() as c:
        with pytest.raises(case.error, match=case.match) as info:
            case.call()
    assert c.count == 0, f"{case.id}: {c.count} XLA compilations before the error"
    # One line, naming the argument: no JAX traceback text pasted in.
    assert "Traceback" not in str(info.value)


# Rows of gd.fit / gd.sweep whose error class is still a plain TypeError/ValueError,
# each with where the fix belongs (none left).
NOT_YET_GDJAX_ERRORS: dict[str, str] = {}


def test_fit_and_sweep_errors_are_gdjax_errors():
    plain = []
    for case in CASES:
        if case.api not in ("gd.fit", "gd.sweep") or case.xfail:
            continue
        try:
            case.call()
        except gd.GdjaxError:
            continue
        except Exception:  # noqa: BLE001 - collected below
            plain.append(case.id)
    assert sorted(plain) == sorted(NOT_YET_GDJAX_ERRORS)


def test_the_table_covers_every_class_of_issue_14():
    counts = {kind: sum(c.kind == kind for c in CASES) for kind in KINDS}
    assert all(counts[k] >= 5 for k in KINDS[1:]), counts
    assert len(CASES) >= 150


# ------------------------------------------------------------------ what is accepted


@pytest.mark.skipif(pd is None, reason="pandas is not installed")
def test_pandas_data_is_converted_and_trains_like_numpy():
    frame = pd.DataFrame(X, columns=list("abcd"))
    series = pd.Series(Y)
    kw = dict(key=KEY, epochs=3, regime=gd.minibatch(5))
    ref = gd.fit(ls_loss, P, DATA, TX, **kw)
    got = gd.fit(ls_loss, P, (frame, series), TX, val_data=(frame, series), **kw)
    np.testing.assert_array_equal(got.params["w"], ref.params["w"])
    np.testing.assert_array_equal(got.history.loss, ref.history.loss)


def test_a_stop_at_the_first_step_is_described_from_one():
    x = X.copy()
    x[0, 0] = np.nan
    r = gd.fit(ls_loss, P, (x, Y), TX, key=KEY, epochs=2, check_finite=False)
    assert int(r.steps) == 0
    assert "at step 1 " in r.reason and "the initial ones" in r.reason
    assert "-1" not in r.reason


def test_a_grid_of_two_swept_axes_is_accepted():
    # On a grid each value appears once per other axis's value: not a repeat.
    res = gd.sweep(
        ls_loss,
        P,
        DATA,
        MOMENTUM,
        seeds=[0],
        hyperparams={"learning_rate": [0.05, 0.1], "momentum": [0.5, 0.9]},
        epochs=2,
    )
    assert res.shape == (1, 2, 2)
    assert np.all(np.isfinite(res.final_loss))


def test_float64_data_that_fits_float32_is_accepted():
    r = gd.fit(ls_loss, P, (X.astype(np.float64), Y), TX, key=KEY, epochs=2)
    ref = gd.fit(ls_loss, P, DATA, TX, key=KEY, epochs=2)
    np.testing.assert_array_equal(r.params["w"], ref.params["w"])


def _relu_loss(params, batch):
    x, y = batch
    return jnp.mean((jax.nn.relu(x @ params["w"]) - y) ** 2)


def test_zero_gradient_at_the_start_warns():
    # A ReLU unit initialized at zero is dead: relu'(0) = 0, so every
    # parameter's gradient is exactly zero and descent never moves.
    with pytest.warns(gd.errors.ZeroGradientWarning, match="exactly zero in every"):
        r = gd.fit(_relu_loss, P, DATA, TX, key=KEY, epochs=2)
    np.testing.assert_array_equal(r.params["w"], P["w"])  # the warning was right
    # Away from zero the same loss trains, without a warning (errors here).
    start = {"w": np.full(4, 0.1, np.float32)}
    gd.fit(_relu_loss, start, DATA, TX, key=KEY, epochs=2)


def test_a_loss_that_ignores_its_batch_warns():
    def closed(params, batch):  # closes over the whole data set
        del batch
        return ls_loss(params, DATA)

    with pytest.warns(gd.errors.IgnoredBatchWarning, match="never reads its batch"):
        gd.fit(closed, P, DATA, TX, key=KEY, epochs=2, regime=gd.minibatch(5))
    # The warning is right: two different batches give the same value.
    w = {"w": np.ones(4, np.float32)}
    assert float(closed(w, (X[:5], Y[:5]))) == float(closed(w, (X[5:10], Y[5:10])))


def test_the_normal_losses_do_not_warn():
    # filterwarnings=error turns any warning into a failure here.
    xc, labels = XC, LABELS
    for loss, params, data in [
        (ls_loss, P, DATA),
        (CE, PC, (xc, labels)),
        (LOGISTIC, P1, (xc, (labels > 0).astype(np.int32))),
        (gd.make_loss(gd.models.linear, gd.losses.squared_error, l2=0.1),
         {"w": np.zeros((4, 1), np.float32), "b": np.zeros(1, np.float32)},
         (X, Y[:, None])),
    ]:
        gd.fit(loss, params, data, gd.sgd(0.1), key=KEY, epochs=2)


# ------------------------------------------------------------- what stays in the run
# A valid input can still diverge: the boundary checks do not replace the
# guarantees the compiled run keeps (stop at the first non-finite step, keep the
# last finite params, raise only when asked).


def test_a_diverging_run_stops_with_the_last_finite_params():
    big = (X * 1e3, Y * 1e3)
    r = gd.fit(ls_loss, P, big, gd.sgd(10.0), key=KEY, epochs=50)
    assert r.failed and r.stopped_by in (
        gd.Status.NONFINITE_LOSS,
        gd.Status.NONFINITE_GRAD,
        gd.Status.NONFINITE_PARAMS,
    )
    assert np.all(np.isfinite(r.params["w"]))
    assert int(r.steps) >= 1 and f"at step {int(r.steps) + 1} " in r.reason
    with pytest.raises(gd.NonFiniteError) as info:
        gd.fit(ls_loss, P, big, gd.sgd(10.0), key=KEY, epochs=50,
               raise_on_nonfinite=True)
    np.testing.assert_array_equal(info.value.result.params["w"], r.params["w"])


def test_guard_false_lets_nan_through_as_asked():
    big = (X * 1e3, Y * 1e3)
    r = gd.fit(ls_loss, P, big, gd.sgd(10.0), key=KEY, epochs=50, guard=False)
    assert not np.all(np.isfinite(r.params["w"]))


def test_nan_from_a_callable_init_is_refused_before_the_sweep_compiles():
    # init must run (eagerly, per seed) to show its values, so this check
    # cannot be compile-free; it still comes before the sweep's program.
    def init(k):
        return {"w": jnp.log(jax.random.uniform(k, (4,)) - 0.5)}  # NaN for some

    before = gd.loop.advance_members._cache_size()
    with pytest.raises(gd.errors.GdjaxValueError, match=r"init\(seed_keys\(\d\)\[0\]\)"
                       r"\['w'\] must be finite"):
        gd.sweep(ls_loss, init, DATA, TX, seeds=[0, 1, 2], epochs=2)
    assert gd.loop.advance_members._cache_size() == before


def test_host_value_reads_schedules_without_compiling(compiles):
    schedules = [
        optax.linear_schedule(-0.1, 0.1, 10),
        optax.cosine_decay_schedule(NAN, 10),
        optax.exponential_decay(0.1, 10, 0.5),
        optax.warmup_cosine_decay_schedule(0.0, 0.1, 5, 50),
        optax.piecewise_constant_schedule(0.1, {5: 0.5}),
    ]
    cold()
    with compiles() as c:
        values = [V.host_value(s, np.int32(3)) for s in schedules]
    assert c.count == 0
    for s, v in zip(schedules, values, strict=True):
        np.testing.assert_allclose(v, s(3), rtol=1e-6)


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
    text = re.sub(r"\(\d+ bytes\)", "(… bytes)", text)  # a checkpoint's size varies
    text = text.replace("|", "\\|").replace("\n", "<br>")
    return error, text


def render() -> str:
    rows = [c for c in CASES + _loop_cases() if not c.xfail]
    counts = {kind: sum(c.kind == kind for c in CASES) for kind in KINDS}
    counts.update(
        {c.kind: sum(d.kind == c.kind for d in CASES) for c in CASES}
    )
    lines = [
        "# Bad inputs gdjax refuses before compiling",
        "",
        "Generated from the table in `tests/test_bad_inputs.py` (and the bad-input "
        "list of `tests/test_loop.py`); do not edit by hand. Rewrite it with "
        "`GDJAX_REGENERATE_DOCS=1 python -m pytest tests/test_bad_inputs.py -k docs`.",
        "",
        "Each row is a test: the input raises the error shown, with this message, "
        "before any XLA program is compiled. Each row of the table runs from cold "
        "caches (`jax.clear_caches()` and gdjax's memo of traced checks emptied "
        "first), so no row passes because an earlier test compiled something. "
        "gdjax's own errors are `GdjaxTypeError` / `GdjaxValueError` "
        "(subclasses of `gd.GdjaxError` and of `TypeError` / `ValueError`).",
        "",
        "| Class | Rows |",
        "|---|---|",
        *(f"| {kind} | {n} |" for kind, n in counts.items() if n),
        f"| **all rows of the table** | **{len(CASES)}** |",
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
            "gdjax lets through, refuses with JAX's words instead of its own, or "
            "refuses only after compiling.",
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
