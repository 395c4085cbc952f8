"""The Class Anchor Clustering loss (Miller et al., WACV 2021, eqs. 1-4) and its distance kernels.

Notation: logits z in R^N, label y, anchors c_j (row j of an (M, N) matrix; CAC uses c_j = alpha * e_j),
distances d_j = ||z - c_j||_2 (plain, not squared).

    anchor term  L_A = mean_i d_{y_i}(z_i)
    tuplet term  L_T = mean_i log(1 + sum_{j != y_i} exp(d_{y_i} - d_j))
                     = mean_i logsumexp_j(d_{y_i} - d_j)           (= cross-entropy on -d)
    total        L   = lbda * L_A + L_T

The original evaluates exp(d_y - d_j) literally in float64 to avoid overflow; the log-sum-exp form
is the same number and stays finite in float32 for any distances.
"""

import jax
import jax.numpy as jnp
import numpy as np

from cac_jax.core import validation


def anchors(num_classes, alpha=10.0, dtype=jnp.float32):
    """The fixed CAC anchors: the (N, N) matrix alpha * I, row j the anchor of class j."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    if not np.isfinite(alpha) or alpha <= 0:
        raise ValueError(f"alpha must be a finite positive number, got {alpha!r}")
    return alpha * jnp.eye(num_classes, dtype=dtype)


def safe_sqrt(squared):
    """sqrt with gradient 0 at 0 (as PyTorch's norm backward) instead of inf, so a logit vector
    sitting exactly on an anchor never yields a NaN gradient."""
    # Test for exact zero (not "> 0") so that a NaN input stays NaN instead of becoming distance 0.
    zero = squared == 0
    return jnp.where(zero, 0.0, jnp.sqrt(jnp.where(zero, 1.0, squared)))


def _compute_dtype(logits):
    # bfloat16/float16 logits are upcast: distances of magnitude ~10 need more than 8 mantissa bits.
    return jnp.promote_types(logits.dtype, jnp.float32)


def _distance_to_anchor(logits, anchor):
    """||z_i - c||_2 for every row z_i of logits (B, N) and one anchor c (N,)."""
    diff = logits - anchor
    return safe_sqrt(jnp.sum(diff * diff, axis=-1))


def distances(logits, anchors):
    """Euclidean distances (B, M) from logits (B, N) to each row of anchors (M, N).

    The per-anchor kernel is vmapped over the anchors, so any anchor matrix works (fixed CAC anchors,
    class means, learnt centres). Cost O(B * M * N), memory O(B * M).
    """
    validation.check_logits_and_anchors(logits, anchors)
    dtype = jnp.promote_types(_compute_dtype(logits), anchors.dtype)
    return _vmapped_distances(logits.astype(dtype), anchors.astype(dtype))


@jax.custom_vjp
def _vmapped_distances(logits, anchors):
    return jax.vmap(_distance_to_anchor, in_axes=(None, 0), out_axes=1)(logits, anchors)


def _vmapped_distances_fwd(logits, anchors):
    d = _vmapped_distances(logits, anchors)
    return d, (logits, anchors, d)


def _vmapped_distances_bwd(residuals, g):
    # Autodiff of the vmapped kernel materialises every difference z_b - c_m, a (B, M, N) buffer
    # (51 GB at B = 128, N = M = 10^4). With w = g / d (0 where d = 0, PyTorch's subgradient):
    #   dL/dz_b = sum_m w_bm (z_b - c_m) = z_b sum_m w_bm - (w C)_b
    #   dL/dc_m = -sum_b w_bm (z_b - c_m) = c_m sum_b w_bm - (w^T Z)_m
    logits, anchors, d = residuals
    positive = d > 0
    w = jnp.where(positive, g / jnp.where(positive, d, 1.0), 0.0)
    grad_logits = logits * jnp.sum(w, axis=1, keepdims=True) - w @ anchors
    grad_anchors = anchors * jnp.sum(w, axis=0)[:, None] - w.T @ logits
    return grad_logits, grad_anchors


_vmapped_distances.defvjp(_vmapped_distances_fwd, _vmapped_distances_bwd)


def scaled_identity_distances(logits, alpha=10.0):
    """distances(logits, anchors(N, alpha)) without building the N x N matrix: O(B * N).

    d_j^2 = sum_{k != j} z_k^2 + (z_j - alpha)^2. The expanded form ||z||^2 - 2 alpha z_j + alpha^2 is the
    same number but cancels catastrophically near the anchor (||z||^2 ~ alpha^2 while d ~ 0), which is
    exactly where training drives the logits. sum_{k != j} z_k^2 = ||z||^2 - z_j^2 is itself accurate
    (>= ||z||^2 / 2) for every j except the largest coordinate, whose sum is taken directly.
    """
    validation.check_floating("logits", logits, 2)
    z = logits.astype(_compute_dtype(logits))
    sq = z * z
    largest = jax.nn.one_hot(jnp.argmax(sq, axis=1), z.shape[1], dtype=bool)
    total = jnp.sum(sq, axis=1, keepdims=True)
    rest_of_largest = jnp.sum(jnp.where(largest, 0.0, sq), axis=1, keepdims=True)
    others = jnp.where(largest, rest_of_largest, total - sq)
    return safe_sqrt(others + (z - alpha) ** 2)


def accurate_logsumexp(x):
    """logsumexp over the last axis as m + log1p(sum of exp(x_k - m) over k != argmax), m = max x.

    Same value as jax.nn.logsumexp, but keeps full relative precision when the result is tiny: for a
    well-classified sample the tuplet term is log(1 + eps) with eps << 1, which log(1 + eps) in float32
    rounds to a multiple of 6e-8 and log1p does not.
    """
    top = jnp.argmax(x, axis=-1)
    m = jnp.take_along_axis(x, top[..., None], axis=-1)
    is_top = jax.nn.one_hot(top, x.shape[-1], dtype=bool)
    rest = jnp.sum(jnp.where(is_top, 0.0, jnp.exp(x - m)), axis=-1)
    return m[..., 0] + jnp.log1p(rest)


def cac_loss(logits, labels, anchors=None, lbda=0.1, alpha=10.0):
    """The CAC loss of a batch: returns (total, anchor_term, tuplet_term), three scalars.

    logits (B, N) floating, labels (B,) integers in [0, N). anchors=None means the fixed anchors
    alpha * I through the O(B * N) path; pass an (N, N) matrix for learnt centres or other anchors.
    """
    validation.check_floating("logits", logits, 2)
    validation.check_labels(labels, logits)
    validation.check_label_range(labels, np.shape(logits)[1])
    if anchors is None:
        d = scaled_identity_distances(logits, alpha)
    else:
        if np.shape(anchors)[0] != np.shape(logits)[1]:
            raise ValueError(
                f"cac_loss needs one anchor per class: anchors of shape (N, N) = "
                f"({np.shape(logits)[1]}, {np.shape(logits)[1]}), got {tuple(np.shape(anchors))}"
            )
        d = distances(logits, anchors)
    return cac_loss_from_distances(d, labels, lbda)


def cac_loss_from_distances(d, labels, lbda=0.1):
    """(total, anchor_term, tuplet_term) from a (B, N) distance matrix and labels (B,)."""
    d_true = jnp.take_along_axis(d, labels[:, None], axis=1)[:, 0]
    anchor_term = jnp.mean(d_true)
    # Differences first: d_y + logsumexp(-d) would round a small tuplet term away against large distances.
    tuplet_term = jnp.mean(accurate_logsumexp(d_true[:, None] - d))
    return lbda * anchor_term + tuplet_term, anchor_term, tuplet_term
