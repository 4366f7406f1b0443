"""Batching regimes: orders are permutations, padding is masked, checks refuse."""

import jax
import numpy as np
import pytest

import gdjax as gd
from gdjax import batching


@pytest.mark.parametrize("method", ["hash", "sort"])
@pytest.mark.parametrize("n", [1, 2, 3, 7, 64, 100, 1797])
def test_permutation_is_a_permutation(method, n):
    for seed in range(5):
        order = np.asarray(batching.permutation(jax.random.key(seed), n, method))
        assert sorted(order.tolist()) == list(range(n))


def test_hash_permutation_looks_random():
    n, trials = 200, 400
    keys = jax.random.split(jax.random.key(0), trials)
    orders = np.asarray(jax.vmap(lambda k: batching.permutation(k, n))(keys))
    # Position of example 0 should be near-uniform over [0, n): its mean is
    # (n-1)/2 with standard error n/sqrt(12 trials).
    pos0 = np.argmax(orders == 0, axis=1)
    assert abs(pos0.mean() - (n - 1) / 2) < 4 * n / np.sqrt(12 * trials)
    # Orders differ between keys, and are not the identity.
    assert len({tuple(o) for o in orders}) == trials
    corr = [abs(np.corrcoef(o, np.arange(n))[0, 1]) for o in orders]
    assert np.mean(corr) < 0.15


@pytest.mark.parametrize("replacement", [False, True])
def test_stochastic_epoch(replacement):
    n = 37
    r = gd.stochastic(replacement=replacement)
    p = batching.plan(r, n)
    idx, w = batching.epoch_batches(r, p, jax.random.key(1), 3)
    assert idx.shape == (n, 1) and w is None
    flat = np.asarray(idx).ravel()
    assert flat.min() >= 0 and flat.max() < n
    if not replacement:
        assert sorted(flat.tolist()) == list(range(n))  # each example once
    else:
        assert len(set(flat.tolist())) < n  # a draw of 37 from 37 repeats w.p. ~1


@pytest.mark.parametrize("n,b", [(10, 3), (10, 5), (97, 32), (5, 5), (5, 1)])
def test_padded_last_batch_counts_every_example_once(n, b):
    r = gd.minibatch(b)
    p = batching.plan(r, n)
    assert p.steps == -(-n // b)
    idx, w = batching.epoch_batches(r, p, jax.random.key(0), 0)
    idx = np.asarray(idx)
    weights = np.ones(idx.shape) if w is None else np.asarray(w)
    counts = np.zeros(n)
    np.add.at(counts, idx.ravel(), weights.ravel())
    np.testing.assert_array_equal(counts, np.ones(n))


def test_drop_policy_and_no_shuffle():
    r = gd.minibatch(4, shuffle=False, last_batch="drop")
    p = batching.plan(r, 10)
    idx, w = batching.epoch_batches(r, p, jax.random.key(0), 5)
    assert w is None
    assert np.asarray(idx).tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]]


def test_epochs_get_different_orders_and_same_key_same_order():
    r = gd.minibatch(8)
    p = batching.plan(r, 40)
    k = jax.random.key(3)
    a = np.asarray(batching.epoch_batches(r, p, k, 0)[0])
    b = np.asarray(batching.epoch_batches(r, p, k, 1)[0])
    c = np.asarray(batching.epoch_batches(r, p, k, 0)[0])
    assert not np.array_equal(a, b)
    np.testing.assert_array_equal(a, c)


@pytest.mark.parametrize(
    "make,err,match",
    [
        (lambda: gd.minibatch(0), ValueError, "batch_size must be a positive"),
        (lambda: gd.minibatch(-3), ValueError, "batch_size must be a positive"),
        (lambda: gd.minibatch(2.5), TypeError, "batch_size must be a positive"),
        (lambda: gd.minibatch(True), TypeError, "batch_size"),
        (lambda: gd.minibatch(4, last_batch="keep"), ValueError, "last_batch"),
        (lambda: gd.stochastic(permutation="fast"), ValueError, "permutation"),
        (lambda: batching.plan(gd.minibatch(11), 10), ValueError, r"\[1, 10\]"),
        (lambda: batching.plan("minibatch", 10), TypeError, "regime must be"),
    ],
)
def test_bad_regimes_raise_before_compiling(make, err, match, compiles):
    with compiles() as c:
        with pytest.raises(err, match=match):
            make()
    assert c.count == 0
