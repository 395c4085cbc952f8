"""The CAC loss and distances against an independent float64 reference written from the formulas."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cac_jax.core import losses

SETTINGS = settings(max_examples=30, deadline=None)
# Shapes come from short lists so that jit compiles each a few times, not once per example.
CLASS_COUNTS = [2, 3, 7, 10, 31, 100, 200]
BATCH_SIZES = [1, 5, 12]

loss = jax.jit(losses.cac_loss, static_argnames=("lbda", "alpha"))
fast_distances = jax.jit(losses.scaled_identity_distances, static_argnames=("alpha",))
general_distances = jax.jit(losses.distances)


def reference_cac_loss(logits, labels, anchors, lbda):
    """Slow float64 loss: loops over samples and classes, exactly as eqs. 1-4 read."""
    logits = np.asarray(logits, np.float64)
    anchors = np.asarray(anchors, np.float64)
    anchor_terms, tuplet_terms = [], []
    for z, y in zip(logits, labels):
        d = [math.sqrt(sum((zk - ck) ** 2 for zk, ck in zip(z, c))) for c in anchors]
        anchor_terms.append(d[y])
        exponents = [0.0] + [d[y] - d[j] for j in range(len(d)) if j != y]
        top = max(exponents)  # log(1 + sum exp(.)) evaluated without overflow
        tuplet_terms.append(top + math.log(sum(math.exp(e - top) for e in exponents)))
    anchor_term, tuplet_term = np.mean(anchor_terms), np.mean(tuplet_terms)
    return lbda * anchor_term + tuplet_term, anchor_term, tuplet_term


@st.composite
def batches(draw, max_classes=200):
    """Logits at scales 1e-3..1e4, some rows placed on or near an anchor, and labels."""
    n = draw(st.sampled_from([c for c in CLASS_COUNTS if c <= max_classes]))
    b = draw(st.sampled_from(BATCH_SIZES))
    scale = 10.0 ** draw(st.floats(-3, 4))
    alpha = draw(st.sampled_from([1.0, 10.0, 100.0]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    labels = rng.integers(0, n, size=b)
    logits = rng.normal(size=(b, n)) * scale
    near = rng.random(b) < 0.3
    logits[near] = alpha * np.eye(n)[labels[near]] + rng.normal(size=(near.sum(), n)) * 1e-3
    return logits.astype(np.float32), labels.astype(np.int32), alpha


def assert_close_to_reference(got, want, max_distance):
    # float32 distances carry ~1 ulp of the largest distance; differences of them inherit that.
    atol = 4e-6 * max_distance + 1e-6
    np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=2e-5, atol=atol)


@SETTINGS
@given(batches())
def test_loss_matches_float64_reference(batch):
    logits, labels, alpha = batch
    anchor_matrix = alpha * np.eye(logits.shape[1])
    want = reference_cac_loss(logits, labels, anchor_matrix, lbda=0.1)
    max_distance = float(np.max(np.linalg.norm(logits.astype(np.float64)[:, None] - anchor_matrix, axis=-1)))
    for got in (
        loss(jnp.asarray(logits), jnp.asarray(labels), alpha=alpha),
        loss(jnp.asarray(logits), jnp.asarray(labels), losses.anchors(logits.shape[1], alpha)),
    ):
        assert all(np.isfinite(t) for t in got)
        for g, w in zip(got, want):
            assert_close_to_reference(g, w, max_distance)


@functools.partial(jax.jit, static_argnames=("alpha",))
def loss_gradient(logits, labels, anchors, alpha):
    return jax.grad(lambda z: losses.cac_loss(z, labels, anchors, alpha=alpha)[0])(logits)


@SETTINGS
@given(batches())
def test_gradients_finite_and_loss_nonnegative(batch):
    logits, labels, alpha = batch
    grad_fast = loss_gradient(jnp.asarray(logits), labels, None, alpha)
    grad_general = loss_gradient(jnp.asarray(logits), labels, losses.anchors(logits.shape[1], alpha), alpha)
    assert np.all(np.isfinite(grad_fast)) and np.all(np.isfinite(grad_general))
    total, anchor_term, tuplet_term = loss(jnp.asarray(logits), labels, alpha=alpha)
    assert total >= 0 and anchor_term >= 0 and tuplet_term >= 0


@SETTINGS
@given(batches(max_classes=50))
def test_fast_path_equals_general_path(batch):
    logits, labels, alpha = batch
    z = jnp.asarray(logits)
    fast = fast_distances(z, alpha)
    general = general_distances(z, losses.anchors(z.shape[1], alpha))
    scale = float(jnp.max(general)) + 1.0
    np.testing.assert_allclose(fast, general, rtol=1e-5, atol=1e-6 * scale)
    for f, g in zip(loss(z, labels, alpha=alpha), loss(z, labels, losses.anchors(z.shape[1], alpha))):
        np.testing.assert_allclose(f, g, rtol=1e-5, atol=1e-6 * scale)


@SETTINGS
@given(batches(max_classes=10))
def test_jit_equals_eager(batch):
    logits, labels, alpha = batch
    eager = losses.cac_loss(jnp.asarray(logits), jnp.asarray(labels), alpha=alpha)
    jitted = loss(jnp.asarray(logits), jnp.asarray(labels), alpha=alpha)
    max_distance = float(jnp.max(general_distances(jnp.asarray(logits), losses.anchors(logits.shape[1], alpha))))
    for e, j in zip(eager, jitted):
        np.testing.assert_allclose(e, j, rtol=1e-5, atol=4e-6 * max_distance + 1e-6)


@SETTINGS
@given(batches(max_classes=30), st.data())
def test_equivariant_under_class_permutation(batch, data):
    logits, labels, alpha = batch
    n = logits.shape[1]
    perm = np.array(data.draw(st.permutations(range(n))))
    # Class j becomes class perm[j]: logit coordinates, labels and anchor rows move together.
    permuted_logits = np.empty_like(logits)
    permuted_logits[:, perm] = logits
    permuted_anchors = np.empty((n, n), np.float32)
    permuted_anchors[perm] = (alpha * np.eye(n, dtype=np.float32))[:, np.argsort(perm)]
    base = loss(jnp.asarray(logits), labels, losses.anchors(n, alpha))
    moved = loss(jnp.asarray(permuted_logits), perm[labels].astype(np.int32), jnp.asarray(permuted_anchors))
    max_distance = float(jnp.max(general_distances(jnp.asarray(logits), losses.anchors(n, alpha))))
    for b, m in zip(base, moved):
        np.testing.assert_allclose(b, m, rtol=1e-5, atol=4e-6 * max_distance + 1e-6)


loss_from_distances = jax.jit(losses.cac_loss_from_distances)


@SETTINGS
@given(batches(max_classes=50), st.floats(-50, 50))
def test_tuplet_term_invariant_to_constant_shift_of_distances(batch, shift):
    logits, labels, alpha = batch
    d = fast_distances(jnp.asarray(logits), alpha)
    _, _, tuplet = loss_from_distances(d, labels)
    _, _, shifted = loss_from_distances(d + shift, labels)
    np.testing.assert_allclose(tuplet, shifted, rtol=1e-4, atol=1e-5 * (1.0 + float(jnp.max(jnp.abs(d)))))


def test_anchor_term_zero_iff_logits_on_true_anchors():
    n, alpha = 5, 10.0
    labels = np.array([0, 3, 4, 1], np.int32)
    on_anchor = losses.anchors(n, alpha)[labels]
    assert float(losses.cac_loss(on_anchor, labels, alpha=alpha)[1]) == 0.0
    assert float(losses.cac_loss(on_anchor, labels, losses.anchors(n, alpha))[1]) == 0.0
    moved = on_anchor.at[2, 1].add(1e-3)
    assert float(losses.cac_loss(moved, labels, alpha=alpha)[1]) > 0.0


def test_gradient_finite_exactly_on_anchor():
    labels = np.array([0, 2], np.int32)
    on_anchor = losses.anchors(3)[labels]
    for anchors in (None, losses.anchors(3)):
        grad = jax.grad(lambda z: losses.cac_loss(z, labels, anchors)[0])(on_anchor)
        assert np.all(np.isfinite(grad))
        grad_d = jax.jacobian(lambda z: losses.distances(z, losses.anchors(3)))(on_anchor)
        assert np.all(np.isfinite(grad_d))


@pytest.mark.parametrize("fast", [True, False])
def test_gradient_matches_finite_differences_float64(fast):
    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        logits = jnp.asarray(rng.normal(size=(4, 6)) * 5, jnp.float64)
        labels = jnp.asarray([0, 5, 2, 2])
        anchors = None if fast else losses.anchors(6, 10.0, dtype=jnp.float64)
        f = lambda z: losses.cac_loss(z, labels, anchors)[0]
        grad = np.asarray(jax.grad(f)(logits))
        eps = 1e-6
        numeric = np.zeros_like(grad)
        for idx in np.ndindex(*logits.shape):
            step = jnp.zeros_like(logits).at[idx].set(eps)
            numeric[idx] = (f(logits + step) - f(logits - step)) / (2 * eps)
        np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8)
        assert f(logits).dtype == jnp.float64


def test_hand_computed_case():
    """N = 2, alpha = 10, z = (10, 0), y = 0: d = (0, sqrt(200)).
    L_A = 0; L_T = log(1 + exp(0 - sqrt(200))); total = 0.1 * 0 + L_T."""
    total, anchor_term, tuplet_term = losses.cac_loss(jnp.array([[10.0, 0.0]]), jnp.array([0]))
    expected = math.log1p(math.exp(-math.sqrt(200.0)))
    assert float(anchor_term) == 0.0
    np.testing.assert_allclose(tuplet_term, expected, rtol=1e-5)
    np.testing.assert_allclose(total, expected, rtol=1e-5)

    # z = (0, 0), y = 1: d = (10, 10): L_A = 10, L_T = log 2, total = 1 + log 2.
    total, anchor_term, tuplet_term = losses.cac_loss(jnp.array([[0.0, 0.0]]), jnp.array([1]))
    np.testing.assert_allclose([anchor_term, tuplet_term, total], [10.0, math.log(2), 1 + math.log(2)], rtol=1e-6)


def test_large_logits_stay_finite_in_float32():
    logits = jnp.array([[1e4, -1e4, 3e3], [-1e4, -1e4, -1e4]], jnp.float32)
    labels = jnp.array([1, 0])
    out = losses.cac_loss(logits, labels)
    want = reference_cac_loss(np.asarray(logits), [1, 0], 10 * np.eye(3), 0.1)
    assert all(np.isfinite(o) for o in out)
    for o, w in zip(out, want):
        assert_close_to_reference(o, w, max_distance=3e4)


def test_bfloat16_logits_are_upcast():
    logits = jnp.array([[9.0, 1.0], [2.0, 8.0]], jnp.bfloat16)
    total, _, _ = losses.cac_loss(logits, jnp.array([0, 1]))
    assert total.dtype == jnp.float32


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: losses.cac_loss(jnp.zeros((3,)), jnp.zeros((3,), jnp.int32)), "logits must have rank 2"),
        (lambda: losses.cac_loss(jnp.zeros((3, 4)), jnp.zeros((2,), jnp.int32)), "one label per row"),
        (lambda: losses.cac_loss(jnp.zeros((3, 4)), jnp.zeros((3,))), "labels must be an integer array"),
        (lambda: losses.cac_loss(jnp.zeros((3, 4)), jnp.array([0, 1, 4])), r"labels must lie in \[0, 4\)"),
        (lambda: losses.cac_loss(jnp.zeros((3, 4)), jnp.zeros((3,), jnp.int32), jnp.eye(3)), "one anchor per class"),
        (lambda: losses.distances(jnp.zeros((3, 4)), jnp.eye(3)), r"anchors must have shape \(M, 4\)"),
        (lambda: losses.distances(jnp.zeros((3, 4), jnp.int32), jnp.eye(4)), "logits must be a floating-point"),
        (lambda: losses.anchors(0), "num_classes must be a positive integer"),
        (lambda: losses.anchors(3, alpha=-1.0), "alpha must be a finite positive number"),
    ],
)
def test_bad_input_has_clear_message(call, message):
    with pytest.raises((ValueError, TypeError), match=message):
        call()


@SETTINGS
@given(st.sampled_from([1, 5]), st.sampled_from([2, 7, 31]), st.sampled_from([1, 3, 10]), st.integers(0, 2**32 - 1))
def test_distance_gradients_match_autodiff_of_the_direct_formula(b, n, m, seed):
    """distances() has a hand-written backward pass (autodiff of the vmapped kernel would materialise a
    (B, M, N) buffer); it must agree with autodiff of sqrt(sum((z - c)^2)) for logits and anchors."""
    rng = np.random.default_rng(seed)
    z = jnp.asarray(rng.normal(size=(b, n)) * 3, jnp.float32)
    c = jnp.asarray(rng.normal(size=(m, n)) * 3, jnp.float32)
    weights = jnp.asarray(rng.normal(size=(b, m)), jnp.float32)
    ours = jax.grad(lambda z, c: jnp.sum(weights * losses.distances(z, c)), (0, 1))(z, c)
    direct = jax.grad(lambda z, c: jnp.sum(weights * jnp.sqrt(jnp.sum((z[:, None] - c[None]) ** 2, -1))), (0, 1))(z, c)
    for o, d in zip(ours, direct):
        np.testing.assert_allclose(o, d, rtol=1e-4, atol=1e-5)


def test_nan_logits_give_nan_loss_not_a_finite_value():
    total, anchor_term, _ = losses.cac_loss(jnp.array([[jnp.nan, 0.0]]), jnp.array([0]))
    assert np.isnan(total) and np.isnan(anchor_term)
