"""Property tests (hypothesis) on random pytrees, regimes and sizes.

Shapes and sizes come from small fixed sets: every new shape or structure costs
XLA compilations (FACTS.md: 200 random pytrees cost 163 compilations), so the
examples reuse a handful of them.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gdjax as gd
from gdjax import _validate as V
from gdjax import batching

SHAPES = [(), (3,), (2, 3)]


class Spec:
    """A leaf placeholder: a shape and a dtype (not a pytree node)."""

    def __init__(self, shape, dtype):
        self.shape, self.dtype = shape, dtype


class Pair(NamedTuple):
    a: Any
    b: Any


def trees(dtypes=("float32",), max_leaves=6):
    leaf = st.builds(Spec, st.sampled_from(SHAPES), st.sampled_from(dtypes))
    return st.recursive(
        leaf,
        lambda children: st.one_of(
            st.dictionaries(st.sampled_from("abcd"), children, min_size=1, max_size=3),
            st.lists(children, min_size=1, max_size=3),
            st.tuples(children, children),
            st.builds(Pair, children, children),
        ),
        max_leaves=max_leaves,
    )


def _arrays(spec_tree, seed):
    rng = np.random.default_rng(seed)
    return jax.tree.map(
        lambda s: jnp.asarray(rng.normal(size=s.shape).astype(s.dtype)), spec_tree
    )


def _bits(tree):
    return [np.asarray(a).tobytes() for a in jax.tree.leaves(tree)]


# ------------------------------------------------------------------ sgd vs optax


def _sgd_matches_optax(spec, lr, momentum, nesterov, steps, seed):
    params = _arrays(spec, seed)
    grads = [_arrays(spec, seed + 1 + t) for t in range(steps)]
    ours, theirs = (
        gd.sgd(lr, momentum, nesterov=nesterov),
        optax.sgd(lr, momentum or None, nesterov=nesterov),
    )
    p1, s1 = params, ours.init(params)
    p2, s2 = params, theirs.init(params)
    for g in grads:
        u1, s1 = ours.update(g, s1, p1)
        u2, s2 = theirs.update(g, s2, p2)
        p1, p2 = optax.apply_updates(p1, u1), optax.apply_updates(p2, u2)
    assert jax.tree.structure(p1) == jax.tree.structure(p2)
    return p1, p2


_sgd_args = dict(
    lr=st.sampled_from([1e-3, 0.05, 0.3, 1.0]),
    momentum=st.sampled_from([0.0, 0.5, 0.9]),
    nesterov=st.booleans(),
    steps=st.integers(1, 3),
    seed=st.integers(0, 2**16),
)


@settings(max_examples=30, deadline=None)
@given(spec=trees(), **_sgd_args)
def test_sgd_step_equals_optax_sgd(spec, lr, momentum, nesterov, steps, seed):
    nesterov = nesterov and momentum > 0
    p1, p2 = _sgd_matches_optax(spec, lr, momentum, nesterov, steps, seed)
    assert _bits(p1) == _bits(p2)


@settings(max_examples=25, deadline=None)
@given(spec=trees(("float32", "float64")), **_sgd_args)
def test_sgd_step_equals_optax_sgd_mixed_dtypes(
    spec, lr, momentum, nesterov, steps, seed
):
    nesterov = nesterov and momentum > 0
    with jax.enable_x64(True):
        p1, p2 = _sgd_matches_optax(spec, lr, momentum, nesterov, steps, seed)
        # gd.sgd keeps its numbers in the tree's highest dtype (optax's
        # inject_hyperparams rule), so lr * g is rounded once in float64 before
        # the float32 cast; optax.sgd's weak Python float rounds in float32. The
        # float32 leaves differ by a few ulps of the step (near 0, many ulps).
        for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p2), strict=True):
            assert a.dtype == b.dtype
            if a.dtype == jnp.float64:
                assert np.asarray(a).tobytes() == np.asarray(b).tobytes()
            else:
                np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------ init_tree


def _shape_tree(spec):
    return jax.tree.map(lambda s: s.shape, spec, is_leaf=lambda x: isinstance(x, Spec))


@settings(max_examples=30, deadline=None)
@given(spec=trees(), seed=st.integers(0, 2**16))
def test_init_tree_is_deterministic_and_exact(spec, seed):
    shapes = _shape_tree(spec)
    key = jax.random.key(seed)
    a = gd.init.init_tree(key, shapes)
    b = gd.init.init_tree(key, shapes)
    assert jax.tree.structure(a) == jax.tree.structure(jax.tree.map(lambda s: 0, spec))
    assert _bits(a) == _bits(b)
    for leaf, s in zip(jax.tree.leaves(a), jax.tree.leaves(spec), strict=True):
        assert leaf.shape == s.shape and leaf.dtype == jnp.float32
    # A leaf's value depends on the key and its own path only.
    wrapped = gd.init.init_tree(key, {"extra": (2, 2), "tree": shapes})["tree"]
    nested = gd.init.init_tree(key, {"tree": shapes})["tree"]
    assert _bits(wrapped) == _bits(nested)


@settings(max_examples=25, deadline=None)
@given(spec=trees(("float32", "float64")), seed=st.integers(0, 2**16))
def test_init_tree_keeps_each_leaf_dtype_under_x64(spec, seed):
    with jax.enable_x64(True):
        structs = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype), spec)
        a = gd.init.init_tree(jax.random.key(seed), structs)
        b = gd.init.init_tree(jax.random.key(seed), structs)
        assert _bits(a) == _bits(b)
        for leaf, s in zip(jax.tree.leaves(a), jax.tree.leaves(spec), strict=True):
            assert leaf.shape == s.shape and leaf.dtype == np.dtype(s.dtype)


# ------------------------------------------------------------------ structure checks


def _dict_paths(tree):
    """Key paths of leaves whose parent is a dict."""
    return [
        p
        for p, _ in jax.tree_util.tree_leaves_with_path(tree)
        if p and isinstance(p[-1], jax.tree_util.DictKey)
    ]


def _edit(tree, path, fn):
    """``tree`` with the node at ``path`` replaced by ``fn(node)``."""
    if not path:
        return fn(tree)
    head, rest = path[0], path[1:]
    if isinstance(head, jax.tree_util.DictKey):
        return {**tree, head.key: _edit(tree[head.key], rest, fn)}
    if isinstance(head, jax.tree_util.GetAttrKey):
        return tree._replace(**{head.name: _edit(getattr(tree, head.name), rest, fn)})
    items = list(tree)
    items[head.idx] = _edit(items[head.idx], rest, fn)
    return items if isinstance(tree, list) else tuple(items)


@settings(max_examples=50, deadline=None)
@given(spec=trees(max_leaves=8), data=st.data())
def test_structure_mismatch_names_the_path(spec, data):
    params = jax.tree.map(lambda s: np.zeros(s.shape, np.float32), spec)
    paths = [p for p, _ in jax.tree_util.tree_leaves_with_path(params)]
    kinds = ["shape"] + (["missing", "unexpected"] if _dict_paths(params) else [])
    kind = data.draw(st.sampled_from(kinds))
    if kind == "shape":
        path = data.draw(st.sampled_from(paths))
        other = _edit(params, path, lambda a: np.zeros((*a.shape, 2), np.float32))
        expect = f"updates{jax.tree_util.keystr(path)} must have shape"
    else:
        path = data.draw(st.sampled_from(_dict_paths(params)))
        if kind == "missing":
            other = _edit(
                params,
                path[:-1],
                lambda d: {k: v for k, v in d.items() if k != path[-1].key},
            )
        else:
            path = (*path[:-1], jax.tree_util.DictKey("zz"))
            other = _edit(
                params, path[:-1], lambda d: {**d, "zz": np.zeros(1, np.float32)}
            )
        expect = f"{kind} {V.path_str(path)}"
    with pytest.raises(ValueError, match=re.escape(expect)):
        V.check_same_structure(params, other, "params", "updates")
    V.check_same_structure(params, params, "params", "updates")  # and no false alarm


# ------------------------------------------------------------------ batching


def _ls(params, batch):
    x, y = batch
    r = x @ params["w"] - y
    return 0.5 * jnp.mean(r * r)


@settings(max_examples=25, deadline=None)
@given(
    n=st.sampled_from([4, 9]),
    lr=st.floats(0.01, 0.5),
    momentum=st.sampled_from([0.0, 0.9]),
    seed=st.integers(0, 2**16),
)
def test_minibatch_of_n_in_order_is_full_batch(n, lr, momentum, seed):
    d = 3
    rng = np.random.default_rng(seed)
    data = (
        rng.normal(size=(n, d)).astype(np.float32),
        rng.normal(size=(n,)).astype(np.float32),
    )
    params = {"w": np.zeros(d, np.float32)}
    kw = dict(key=jax.random.key(seed), epochs=4)
    tx = gd.sgd(lr, momentum=momentum)
    full = gd.fit(_ls, params, data, tx, **kw)
    mini = gd.fit(_ls, params, data, tx, regime=gd.minibatch(n, shuffle=False), **kw)
    assert _bits(full.params) == _bits(mini.params)
    assert _bits(full.history.loss) == _bits(mini.history.loss)


@settings(max_examples=50, deadline=None)
@given(
    n=st.sampled_from([1, 5, 8, 13, 32]),
    b=st.sampled_from([1, 3, 4, 8, 13]),
    last_batch=st.sampled_from(["pad", "drop"]),
    shuffle=st.booleans(),
    permutation=st.sampled_from(["hash", "sort"]),
    epoch=st.integers(0, 1000),
    seed=st.integers(0, 2**16),
)
def test_every_example_once_per_epoch(
    n, b, last_batch, shuffle, permutation, epoch, seed
):
    b = min(b, n)
    regime = gd.minibatch(
        b, shuffle=shuffle, last_batch=last_batch, permutation=permutation
    )
    plan = batching.plan(regime, n)
    idx, w = batching.epoch_batches(regime, plan, jax.random.key(seed), epoch)
    idx = np.asarray(idx)
    w = np.ones(idx.shape) if w is None else np.asarray(w)
    assert idx.shape == (plan.steps, b)
    counted = idx[w > 0]
    assert ((0 <= idx) & (idx < n)).all()
    if last_batch == "pad":
        assert sorted(counted.tolist()) == list(range(n))  # each exactly once
        assert (w == 0).sum() == plan.steps * b - n
    else:
        assert plan.steps == n // b and (w > 0).all()
        assert len(set(counted.tolist())) == counted.size == (n // b) * b
    if not shuffle:
        np.testing.assert_array_equal(counted, np.arange(counted.size))
