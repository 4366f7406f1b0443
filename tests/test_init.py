"""Tests of gdjax.init: distributions, determinism, pytree handling, boundary checks.

Tolerance policy for the distribution tests: with N draws of a zero-mean w, the
second moment m2 = mean(w**2) estimates Var(w) with standard error
Var(w) * sqrt((kappa - 1) / N), kappa = E[w^4] / E[w^2]^2 (3 for a normal, below 3
for the truncated normal JAX uses, 9/5 for a uniform). We accept a relative error
of 5 standard errors (about 2% for a normal with N = 131072). The draws come from
a fixed key, so a test either always passes or always fails.
"""

from __future__ import annotations

import math
import zlib
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gdjax import init

FAN_IN, FAN_OUT = 512, 256
N_DRAWS = FAN_IN * FAN_OUT
TRUNC_STD = 0.87962566103423978  # std of a standard normal truncated to [-2, 2]


def _np(a) -> np.ndarray:
    return np.asarray(jnp.asarray(a, jnp.float32))


def _assert_second_moment(w: np.ndarray, variance: float, kurtosis: float) -> None:
    w = np.asarray(w, np.float64)
    n = w.size
    m2 = float(np.mean(w**2))
    se = variance * math.sqrt((kurtosis - 1.0) / n)
    assert abs(m2 - variance) <= 5 * se, (m2, variance, se)


# --------------------------------------------------------------------------- re-exports


def test_reexports_are_jax_initializers():
    ji = jax.nn.initializers
    for name in [
        "glorot_normal",
        "glorot_uniform",
        "he_normal",
        "he_uniform",
        "lecun_normal",
        "lecun_uniform",
        "normal",
        "uniform",
        "zeros",
        "ones",
        "orthogonal",
        "constant",
        "truncated_normal",
        "variance_scaling",
    ]:
        assert getattr(init, name) is getattr(ji, name), name
    assert init.xavier_normal is init.glorot_normal
    assert init.xavier_uniform is init.glorot_uniform
    assert init.kaiming_normal is init.he_normal
    assert init.kaiming_uniform is init.he_uniform
    for name in init.__all__:
        assert hasattr(init, name), name


# ---------------------------------------------------------------------------- variances

_FI, _FO = FAN_IN, FAN_OUT
VARIANCE_CASES = [
    # name, factory, variance, uniform bound (None: truncated normal at 2 sigma)
    ("glorot_normal", init.glorot_normal, 2 / (_FI + _FO), None),
    ("xavier_normal", init.xavier_normal, 2 / (_FI + _FO), None),
    ("glorot_uniform", init.glorot_uniform, 2 / (_FI + _FO), (6 / (_FI + _FO)) ** 0.5),
    ("he_normal", init.he_normal, 2 / _FI, None),
    ("kaiming_normal", init.kaiming_normal, 2 / _FI, None),
    ("he_uniform", init.he_uniform, 2 / _FI, (6 / _FI) ** 0.5),
    ("lecun_normal", init.lecun_normal, 1 / _FI, None),
    ("lecun_uniform", init.lecun_uniform, 1 / _FI, (3 / _FI) ** 0.5),
]


@pytest.mark.parametrize(
    "name,factory,variance,bound", VARIANCE_CASES, ids=[c[0] for c in VARIANCE_CASES]
)
def test_variance_scaling_family_matches_formula(name, factory, variance, bound):
    w = _np(factory()(jax.random.key(0), (FAN_IN, FAN_OUT), jnp.float32))
    assert abs(w.mean()) <= 5 * math.sqrt(variance / N_DRAWS)
    if bound is None:
        # Truncated normal: kurtosis below 3, support [-2 sigma, 2 sigma].
        _assert_second_moment(w, variance, kurtosis=3.0)
        sigma = math.sqrt(variance) / TRUNC_STD
        assert np.abs(w).max() <= 2 * sigma * (1 + 1e-6)
        assert np.abs(w).max() > 1.9 * sigma  # the tails are really used
    else:
        _assert_second_moment(w, variance, kurtosis=9 / 5)
        assert np.abs(w).max() <= bound
        assert np.abs(w).max() > 0.99 * bound


def test_glorot_differs_from_he_and_lecun():
    # The shapes are not square, so the three formulas give distinguishable values;
    # guard against a test that would pass for any of them.
    vs = sorted([2 / (_FI + _FO), 2 / _FI, 1 / _FI])
    gaps = [b / a - 1 for a, b in zip(vs[:-1], vs[1:], strict=True)]
    assert min(gaps) > 10 * 5 * math.sqrt(2 / N_DRAWS)


def test_normal_variance():
    w = _np(init.normal(0.05)(jax.random.key(1), (FAN_IN, FAN_OUT)))
    _assert_second_moment(w, 0.05**2, kurtosis=3.0)


def test_uniform_is_on_zero_to_scale():
    # jax.nn.initializers.uniform(scale) draws U[0, scale): mean scale / 2,
    # variance scale**2 / 12, second moment scale**2 / 3.
    scale = 0.3
    w = _np(init.uniform(scale)(jax.random.key(2), (FAN_IN, FAN_OUT)))
    assert w.min() >= 0.0 and w.max() < scale
    centered = w - scale / 2
    _assert_second_moment(centered, scale**2 / 12, kurtosis=9 / 5)
    m2 = float(np.mean(np.asarray(w, np.float64) ** 2))
    assert m2 == pytest.approx(scale**2 / 3, rel=0.01)


@pytest.mark.parametrize("shape", [(9, 6)])  # wide: test_dense_custom_initializers
def test_orthogonal_is_orthogonal(shape):
    w = np.asarray(init.orthogonal()(jax.random.key(3), shape), np.float64)
    small = min(shape)
    gram = w.T @ w if shape[0] >= shape[1] else w @ w.T
    np.testing.assert_allclose(gram, np.eye(small), atol=2e-5)
    w2 = np.asarray(init.orthogonal(scale=2.0)(jax.random.key(3), shape), np.float64)
    gram2 = w2.T @ w2 if shape[0] >= shape[1] else w2 @ w2.T
    np.testing.assert_allclose(gram2, 4 * np.eye(small), atol=1e-4)


# -------------------------------------------------------------------------- dense / mlp


def test_dense_shapes_dtypes_and_zero_bias():
    p = init.dense(jax.random.key(0), 9, 4)
    assert set(p) == {"w", "b"}
    assert p["w"].shape == (9, 4) and p["b"].shape == (4,)
    assert p["w"].dtype == jnp.float32 and p["b"].dtype == jnp.float32
    assert np.all(_np(p["b"]) == 0)
    assert np.any(_np(p["w"]) != 0)


def test_dense_variance_is_lecun():
    p = init.dense(jax.random.key(4), FAN_IN, FAN_OUT)
    _assert_second_moment(_np(p["w"]), 1 / FAN_IN, kurtosis=3.0)


def test_dense_custom_initializers():
    p = init.dense(
        jax.random.key(0), 6, 9, w_init=init.orthogonal(), b_init=init.constant(0.5)
    )
    w = np.asarray(p["w"], np.float64)
    np.testing.assert_allclose(w @ w.T, np.eye(6), atol=2e-5)
    assert np.all(_np(p["b"]) == 0.5)


def test_same_key_same_bits_different_key_different_values():
    a = init.mlp(jax.random.key(0), [6, 9, 4])
    b = init.mlp(jax.random.key(0), [6, 9, 4])
    c = init.mlp(jax.random.key(1), [6, 9, 4])
    for la, lb, lc in zip(a, b, c, strict=True):
        assert np.array_equal(_np(la["w"]), _np(lb["w"]))
        assert np.array_equal(_np(la["b"]), _np(lb["b"]))
        assert not np.any(_np(la["w"]) == _np(lc["w"]))


def test_raw_prngkey_equals_typed_key():
    typed = init.dense(jax.random.key(7), 6, 9)
    raw = init.dense(jax.random.PRNGKey(7), 6, 9)
    assert np.array_equal(_np(typed["w"]), _np(raw["w"]))


def test_mlp_layers_use_split_keys():
    key = jax.random.key(5)
    params = init.mlp(key, [6, 9, 4])
    keys = jax.random.split(key, 2)
    assert len(params) == 2
    for i, (d_in, d_out) in enumerate([(6, 9), (9, 4)]):
        expected = init.dense(keys[i], d_in, d_out)
        assert params[i]["w"].shape == (d_in, d_out)
        assert params[i]["b"].shape == (d_out,)
        assert np.array_equal(_np(params[i]["w"]), _np(expected["w"]))
        assert np.array_equal(_np(params[i]["b"]), _np(expected["b"]))
    # Each layer has its own key: the same shape drawn with another layer's key
    # gives other values.
    assert not np.any(_np(params[0]["w"]) == _np(init.dense(keys[1], 6, 9)["w"]))


def test_mlp_accepts_tuple_and_numpy_widths():
    a = init.mlp(jax.random.key(0), (6, 9, 4))
    b = init.mlp(jax.random.key(0), np.array([6, 9, 4]))
    assert [p["w"].shape for p in a] == [p["w"].shape for p in b] == [(6, 9), (9, 4)]
    assert np.array_equal(_np(a[0]["w"]), _np(b[0]["w"]))


def test_dense_equals_init_tree():
    key = jax.random.key(8)
    d = init.dense(key, 6, 9)
    t = init.init_tree(key, {"w": (6, 9), "b": (9,)})
    assert np.array_equal(_np(d["w"]), _np(t["w"]))
    assert np.array_equal(_np(d["b"]), _np(t["b"]))


# ---------------------------------------------------------------------------- init_tree


class Layer(NamedTuple):
    w: tuple
    b: tuple


def test_init_tree_key_is_fold_in_of_path_crc32():
    key = jax.random.key(9)
    params = init.init_tree(key, {"enc": [{"w": (6, 9)}]})
    path = "['enc'][0]['w']"
    leaf_key = jax.random.fold_in(key, zlib.crc32(path.encode()))
    expected = init.lecun_normal()(leaf_key, (6, 9), jnp.float32)
    assert np.array_equal(_np(params["enc"][0]["w"]), _np(expected))


def test_init_tree_structures_shapes_and_dtypes():
    shapes = {
        "dict": {"w": (6, 9), "b": (9,)},
        "list": [(9, 4), (4,)],
        "tuple": ((9, 4), ()),
        "named": Layer(w=(6, 9), b=(4,)),
        "struct": jax.ShapeDtypeStruct((6, 9), jnp.bfloat16),
    }
    params = init.init_tree(jax.random.key(0), shapes)
    assert isinstance(params["named"], Layer)
    assert isinstance(params["list"], list) and isinstance(params["tuple"], tuple)
    expected = {
        "dict": {"w": (6, 9), "b": (9,)},
        "list": [(9, 4), (4,)],
        "tuple": ((9, 4), ()),
        "named": Layer(w=(6, 9), b=(4,)),
        "struct": (6, 9),
    }
    got = jax.tree.map(lambda a: a.shape, params)
    assert jax.tree.structure(got, is_leaf=lambda x: type(x) is tuple) == (
        jax.tree.structure(expected, is_leaf=lambda x: type(x) is tuple)
    )
    assert jax.tree.leaves(got, is_leaf=lambda x: type(x) is tuple) == jax.tree.leaves(
        expected, is_leaf=lambda x: type(x) is tuple
    )
    dtypes = {str(a.dtype) for a in jax.tree.leaves(params)}
    assert params["struct"].dtype == jnp.bfloat16
    assert dtypes == {"float32", "bfloat16"}
    # Default rule: >= 2 dims drawn, fewer start at zero.
    for leaf in [params["dict"]["b"], params["list"][1], params["tuple"][1]]:
        assert np.all(_np(leaf) == 0)
    for leaf in [params["dict"]["w"], params["named"].w, params["struct"]]:
        assert np.all(_np(leaf) != 0)


def test_init_tree_single_shape_and_scalar():
    w = init.init_tree(jax.random.key(0), (6, 9))
    assert w.shape == (6, 9) and np.any(_np(w) != 0)
    s = init.init_tree(jax.random.key(0), ())
    assert s.shape == () and float(s) == 0.0
    assert init.init_tree(jax.random.key(0), {}) == {}


def test_init_tree_adding_a_leaf_leaves_others_unchanged():
    key = jax.random.key(11)
    small = init.init_tree(key, {"a": (6, 9), "b": [(9, 4)]})
    big = init.init_tree(
        key, {"a": (6, 9), "b": [(9, 4), (9, 4)], "c": (9, 4), "aa": (6, 9)}
    )
    assert np.array_equal(_np(small["a"]), _np(big["a"]))
    assert np.array_equal(_np(small["b"][0]), _np(big["b"][0]))
    # Leaves of the same shape at different paths differ.
    assert not np.any(_np(big["a"]) == _np(big["aa"]))


def test_init_tree_single_initializer_rule():
    params = init.init_tree(jax.random.key(0), {"w": (6, 9), "b": (9,)}, init.ones)
    assert np.all(_np(params["w"]) == 1) and np.all(_np(params["b"]) == 1)
    params = init.init_tree(jax.random.key(0), {"b": (9,)}, init.normal(1.0))
    assert np.all(_np(params["b"]) != 0)


def test_init_tree_path_rule():
    seen = []

    def rule(path, shape):
        seen.append((path, shape))
        return init.orthogonal() if path.endswith("['w']") else init.constant(0.1)

    params = init.init_tree(jax.random.key(0), [{"w": (9, 6), "b": (9,)}], rule)
    assert sorted(seen) == [("[0]['b']", (9,)), ("[0]['w']", (9, 6))]
    w = np.asarray(params[0]["w"], np.float64)
    np.testing.assert_allclose(w.T @ w, np.eye(6), atol=2e-5)
    np.testing.assert_allclose(_np(params[0]["b"]), 0.1)


def test_default_rule():
    assert init.default_rule("['b']", (3,)) is init.zeros
    assert init.default_rule("", ()) is init.zeros
    assert init.default_rule("['w']", (3, 4)) is init.default_rule("", (2, 2, 2))
    w = init.default_rule("['w']", (6, 9))(jax.random.key(0), (6, 9), jnp.float32)
    assert w.shape == (6, 9) and np.any(_np(w) != 0)


# ------------------------------------------------------------------------------- dtypes


def test_float64_under_x64(x64):
    del x64
    key = jax.random.key(0)
    d = init.dense(key, 6, 9, dtype=jnp.float64)
    t = init.init_tree(key, {"w": (6, 9), "b": (9,), "s": ()}, dtype=jnp.float64)
    for leaf in jax.tree.leaves([d, t]):
        assert leaf.dtype == jnp.float64
    assert np.array_equal(np.asarray(d["w"]), np.asarray(t["w"]))
    assert np.any(np.asarray(d["w"]) != 0)
    # float64 draws are not float32 draws cast up.
    w32 = np.asarray(init.dense(key, 6, 9)["w"], np.float64)
    assert not np.array_equal(np.asarray(d["w"]), w32)


def test_bfloat16():
    m = init.mlp(jax.random.key(0), [6, 9, 4], dtype=jnp.bfloat16)
    t = init.init_tree(jax.random.key(0), {"w": (6, 9)}, dtype=jnp.bfloat16)
    for leaf in jax.tree.leaves([m, t]):
        assert leaf.dtype == jnp.bfloat16
        assert np.all(np.isfinite(_np(leaf)))
    assert np.any(_np(m[0]["w"]) != 0)


# --------------------------------------------------------------------------- bad inputs
# Each case uses sizes no other test uses, so any random draw made before the check
# would need a fresh compilation and the counter would see it.


@pytest.mark.parametrize(
    "widths,index,shown",
    [
        ([13, 17, 0], 2, "0"),
        ([13, -17, 3], 1, "-17"),
        ([13, 17.0, 3], 1, "17.0"),
        ([13, True, 3], 1, "True"),
    ],
)
def test_mlp_bad_width_names_index(compiles, widths, index, shown):
    key = jax.random.key(0)
    with compiles() as c, pytest.raises(ValueError) as e:
        init.mlp(key, widths)
    assert c.count == 0
    assert str(e.value) == f"widths[{index}] must be a positive integer, got {shown}."


@pytest.mark.parametrize("widths,error", [([13], ValueError), (13, TypeError)])
def test_mlp_bad_widths(compiles, widths, error):
    key = jax.random.key(0)
    with compiles() as c, pytest.raises(error, match="widths"):
        init.mlp(key, widths)
    assert c.count == 0


@pytest.mark.parametrize(
    "call",
    [
        lambda key, dt: init.dense(key, 13, 19, dtype=dt),
        lambda key, dt: init.mlp(key, [13, 19, 23], dtype=dt),
        lambda key, dt: init.init_tree(key, {"w": (13, 19)}, dtype=dt),
    ],
    ids=["dense", "mlp", "init_tree"],
)
def test_non_float_dtype_raises_before_compiling(compiles, call):
    key = jax.random.PRNGKey(0)
    with compiles() as c:
        with pytest.raises(TypeError, match=r"dtype must be a floating dtype.*int32"):
            call(key, jnp.int32)
        with pytest.raises(ValueError, match=r"dtype=float64 needs 64-bit mode"):
            call(key, jnp.float64)
    assert c.count == 0


def test_shape_dtype_struct_dtype_is_checked(compiles):
    key = jax.random.key(0)
    shapes = {"w": jax.ShapeDtypeStruct((13, 29), jnp.int32)}
    with compiles() as c, pytest.raises(TypeError, match=r"shapes\['w'\]\.dtype"):
        init.init_tree(key, shapes)
    assert c.count == 0


@pytest.mark.parametrize(
    "call",
    [
        lambda key: init.dense(key, 13, 31),
        lambda key: init.mlp(key, [13, 31, 2]),
        lambda key: init.init_tree(key, {"w": (13, 31)}),
    ],
    ids=["dense", "mlp", "init_tree"],
)
def test_bad_keys_raise_before_compiling(compiles, call):
    batch = jax.random.split(jax.random.key(0), 3)
    with compiles() as c:
        with pytest.raises(TypeError, match=r"key must be a PRNG key.*int 0"):
            call(0)
        with pytest.raises(ValueError, match=r"key must be a single PRNG key.*\(3,\)"):
            call(batch)
        with pytest.raises(TypeError, match=r"key must be a PRNG key"):
            call(np.zeros((3, 2), np.uint32))
    assert c.count == 0


@pytest.mark.parametrize(
    "kwargs,error,pattern",
    [
        ({"in_dim": 0}, ValueError, r"in_dim must be an integer >= 1, got 0"),
        ({"out_dim": 2.0}, TypeError, r"out_dim must be an integer"),
        ({"w_init": 0.1}, TypeError, r"w_init must be an initializer"),
        (
            {"b_init": init.lecun_normal()},
            ValueError,
            r"b_init cannot initialize params\['b'\] of shape \(37,\)",
        ),
    ],
)
def test_dense_bad_arguments(compiles, kwargs, error, pattern):
    key = jax.random.key(0)
    args = {"in_dim": 13, "out_dim": 37} | kwargs
    in_dim, out_dim = args.pop("in_dim"), args.pop("out_dim")
    with compiles() as c, pytest.raises(error, match=pattern):
        init.dense(key, in_dim, out_dim, **args)
    assert c.count == 0


@pytest.mark.parametrize(
    "shapes,rule,error,pattern",
    [
        ({"w": [13, 41]}, init.default_rule, TypeError, r"shapes\['w'\]\[0\] must be"),
        ({"w": (13, -41)}, init.default_rule, ValueError, r"shapes\['w'\] must be"),
        ({"w": "13x41"}, init.default_rule, TypeError, r"shapes\['w'\] must be"),
        (
            {"w": (13, 41), "b": (41,)},
            init.lecun_normal(),
            ValueError,
            r"rule cannot initialize shapes\['b'\] of shape \(41,\).*at least 2D",
        ),
        (
            {"w": (13, 41)},
            lambda path, shape: 0.5,
            TypeError,
            r"rule\(\"\['w'\]\", \(13, 41\)\) must be an initializer",
        ),
        ({"w": (13, 41)}, "lecun", TypeError, r"rule must be an initializer"),
    ],
)
def test_init_tree_bad_arguments(compiles, shapes, rule, error, pattern):
    key = jax.random.key(0)
    with compiles() as c, pytest.raises(error, match=pattern):
        init.init_tree(key, shapes, rule)
    assert c.count == 0


def test_mlp_initializer_error_names_the_layer(compiles):
    key = jax.random.key(0)
    pattern = r"b_init cannot initialize params\[0\]\['b'\] of shape \(43,\)"
    with compiles() as c, pytest.raises(ValueError, match=pattern):
        init.mlp(key, [13, 43, 47], b_init=init.glorot_normal())
    assert c.count == 0
