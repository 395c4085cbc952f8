"""The CAC loss and distances, property-tested with the project's kit (cac_jax.testing: strategies, the float64
references written from the formulas, the checks), plus hand-computed cases and bad inputs."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cac_jax import testing as kit
from cac_jax.core import losses

fast_distances = jax.jit(losses.scaled_identity_distances, static_argnames=("alpha",))
general_distances = jax.jit(losses.distances)


def fast(logits, labels, alpha):
    """The fixed anchors alpha·I through the O(B·N) path."""
    return losses.cac_loss(logits, labels, alpha=alpha)


def general(logits, labels, alpha):
    """The same anchors as a matrix, through the vmapped distance kernel."""
    return losses.cac_loss(logits, labels, losses.anchors(logits.shape[1], alpha, logits.dtype))


PATHS = {"fast": fast, "general": general}


def _reference(batch):
    return lambda z, y: kit.ref_cac_loss(z, y, batch.anchors, lbda=0.1)


@pytest.mark.parametrize("path", PATHS)
@kit.SETTINGS
@given(batch=kit.batches(), seed=kit.seeds())
def test_loss_against_the_float64_reference_with_every_check(path, batch, seed):
    loss = functools.partial(PATHS[path], alpha=batch.alpha)
    kit.check_loss(loss, _reference(batch), batch, seed)
    assert all(float(t) >= 0 for t in loss(jnp.asarray(batch.logits), batch.labels))


@kit.SETTINGS
@given(kit.batches(classes=(2, 3, 7, 10, 31)))
def test_fast_path_equals_general_path(batch):
    z = jnp.asarray(batch.logits)
    fast_d = fast_distances(z, batch.alpha)
    general_d = general_distances(z, losses.anchors(z.shape[1], batch.alpha))
    scale = float(jnp.max(general_d)) + 1.0
    np.testing.assert_allclose(fast_d, general_d, rtol=1e-5, atol=1e-6 * scale)
    for f, g in zip(fast(z, batch.labels, batch.alpha), general(z, batch.labels, batch.alpha)):
        np.testing.assert_allclose(f, g, rtol=1e-5, atol=1e-6 * scale)


loss_from_distances = jax.jit(losses.cac_loss_from_distances)


@kit.SETTINGS
@given(kit.batches(classes=(2, 3, 7, 10, 31)), st.floats(-50, 50))
def test_tuplet_term_invariant_to_constant_shift_of_distances(batch, shift):
    d = fast_distances(jnp.asarray(batch.logits), batch.alpha)
    _, _, tuplet = loss_from_distances(d, batch.labels)
    _, _, shifted = loss_from_distances(d + shift, batch.labels)
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
    want = kit.ref_cac_loss(np.asarray(logits), [1, 0], 10 * np.eye(3), 0.1)
    assert all(np.isfinite(o) for o in out)
    np.testing.assert_allclose(np.asarray(out, np.float64), want, rtol=2e-5, atol=4e-6 * 3e4)


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


@kit.SETTINGS
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
