"""CAC test-time scores against the kit's float64 reference (cac_jax.testing) and hand-computed cases."""

import math

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from cac_jax import testing as kit
from cac_jax.core import losses
from cac_jax.core import cac_score as scores

cac_score = jax.jit(scores.cac_score)


@settings(max_examples=30, deadline=None)
@given(st.sampled_from([2, 3, 6, 20]), st.sampled_from([1, 8]), st.floats(-2, 1.5), st.integers(0, 2**32 - 1))
def test_score_matches_float64_reference(n, b, log_scale, seed):
    rng = np.random.default_rng(seed)
    anchors = rng.normal(size=(n, n)) * 10
    logits = anchors[rng.integers(0, n, b)] + rng.normal(size=(b, n)) * 10.0**log_scale
    got = cac_score(jnp.asarray(logits, jnp.float32), jnp.asarray(anchors, jnp.float32))
    want = kit.ref_cac_score(logits.astype(np.float32), anchors.astype(np.float32))
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=1e-5 * (1 + want.max()))
    np.testing.assert_array_equal(scores.predict(jnp.asarray(logits, jnp.float32), jnp.asarray(anchors, jnp.float32)),
                                  np.argmin(want, axis=1))
    np.testing.assert_allclose(scores.open_set_score(jnp.asarray(logits, jnp.float32), jnp.asarray(anchors, jnp.float32)),
                               want.min(axis=1), rtol=2e-4, atol=1e-5 * (1 + want.max()))


def test_hand_computed_score():
    """Anchors 10*I (N = 2), z = (10, 0): d = (0, sqrt 200), softmin = (1, e^-sqrt200)/(1 + e^-sqrt200).
    s_0 = 0, s_1 = sqrt(200) / (1 + e^-sqrt200); open-set score 0; prediction 0.
    z = (0, 0): d = (10, 10), softmin = (1/2, 1/2), s = (5, 5)."""
    anchors = losses.anchors(2)
    got = scores.cac_score(jnp.array([[10.0, 0.0], [0.0, 0.0]]), anchors)
    r = math.sqrt(200.0)
    np.testing.assert_allclose(got, [[0.0, r / (1 + math.exp(-r))], [5.0, 5.0]], rtol=1e-6)
    np.testing.assert_allclose(scores.open_set_score(jnp.array([[10.0, 0.0], [0.0, 0.0]]), anchors), [0.0, 5.0], rtol=1e-6, atol=1e-6)
    assert scores.predict(jnp.array([[10.0, 0.0]]), anchors).tolist() == [0]


def test_confident_knowns_do_not_tie_at_zero():
    """Near its class mean a known's score is d * sum_{k != j} softmin_k, tiny but distinct; the naive
    1 - softmin rounds it to exactly 0 in float32 and ties all confident knowns."""
    anchors = losses.anchors(3)
    logits = jnp.array([[10.5, 0.0, 0.0], [10.2, 0.0, 0.0]])
    s = scores.open_set_score(logits, anchors)
    d = np.linalg.norm(np.asarray(logits, np.float64)[:, None] - 10 * np.eye(3), axis=-1)
    want = (d * (1 - np.exp(-d) / np.exp(-d).sum(1, keepdims=True))).min(1)
    assert np.all(np.asarray(s) > 0) and s[0] > s[1]
    np.testing.assert_allclose(s, want, rtol=1e-4)


def test_large_distances_keep_their_relative_precision():
    """Distances ~150 within a few units of each other (logits of scale ~100): from the float32 distances the
    score is exact to a few float32 ulps (4.7e-7 here), where a log-sum-exp of the unshifted distances left
    1.5e-5."""
    rng = np.random.default_rng(0)
    d = (150 + rng.normal(size=(2000, 6)) * rng.choice([0.3, 1, 3], size=(2000, 1))).astype(np.float32)
    got = np.asarray(jax.jit(scores.cac_score_of_distances)(jnp.asarray(d)), np.float64)
    d64 = d.astype(np.float64)
    e = np.exp(-(d64 - d64.min(1, keepdims=True)))
    others = np.array([[np.sum(np.delete(row, j)) for j in range(6)] for row in e])  # no cancellation at all
    want = d64 * others / e.sum(1, keepdims=True)
    assert np.max(np.abs(got - want) / want) < 1e-6
