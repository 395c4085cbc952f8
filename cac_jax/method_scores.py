"""Closed-set prediction and open-set score of every method, from test logits (pure functions).

Convention (as :mod:`cac_jax.metrics`): the open-set score is "unknownness", larger = more likely unknown.
``means`` are the per-class mean logit vectors of the correctly classified training images (SPEC.md §2),
the test-time anchors of every distance-based method.

=================  ===========================================  ==========================================
method             prediction                                   open-set score
=================  ===========================================  ==========================================
``cac``            argmin_j d_j,  d_j = ||z - mean_j||          min_j d_j·(1 - softmin(d)_j)  (CAC, eq. 5)
``cac_learnt``     as ``cac`` (the ablation is scored against   as ``cac``
                   class means too, the same protocol)
``ce_msp``         argmax_j z_j                                 1 - max_j softmax(z)_j  (Hendrycks & Gimpel)
``ce_max_logit``   argmax_j z_j                                 -max_j z_j            (Vaze et al. 2022)
``ce_distance``    argmin_j d_j                                 min_j d_j  (plain Euclidean distance to
                                                                the nearest class mean: the post-hoc
                                                                distance classifier CAC improves on)
=================  ===========================================  ==========================================
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from cac_jax import losses, scores

DISTANCE_METHODS = ("cac", "cac_learnt", "ce_distance")


def needs_class_means(method: str) -> bool:
    """Whether ``method`` scores against the class means of the training logits."""
    return method in DISTANCE_METHODS


def msp_score(logits):
    """(B,) 1 - max_j softmax(z)_j: low confidence = unknown (Hendrycks & Gimpel 2017).

    It ranks samples as -max softmax does (1 more), but keeps them apart where the maximum softmax rounds to
    1 in float32 (a largest logit ~17 above the rest; ~11% of a trained MNIST network's test images, which
    -max softmax tied): with r = sum_{j != argmax} exp(z_j - z_max), 1 - max softmax = r / (1 + r), and r
    is summed without the argmax term, so nothing cancels."""
    z = jnp.asarray(logits)
    top = jnp.argmax(z, axis=-1)
    e = jnp.exp(z - jnp.take_along_axis(z, top[..., None], axis=-1))
    r = jnp.sum(jnp.where(jnp.arange(z.shape[-1]) == top[..., None], 0.0, e), axis=-1)
    return r / (1.0 + r)


def max_logit_score(logits):
    """(B,) -max_j z_j: a small largest logit = unknown."""
    return -jnp.max(logits, axis=-1)


def predict_and_score(method: str, logits, means=None):
    """(predictions (B,), open-set scores (B,)) of ``logits`` (B, N) for ``method``; see the module table."""
    z = jnp.asarray(logits, jnp.float32)
    if needs_class_means(method):
        if means is None:
            raise ValueError(f"method {method!r} needs the class means of the training logits")
        d = losses.distances(z, jnp.asarray(means, jnp.float32))
        per_class = d if method == "ce_distance" else scores.cac_score_of_distances(d)
        return jnp.argmin(d, axis=-1), jnp.min(per_class, axis=-1)
    if method == "ce_msp":
        return jnp.argmax(z, axis=-1), msp_score(z)
    if method == "ce_max_logit":
        return jnp.argmax(z, axis=-1), max_logit_score(z)
    raise ValueError(f"unknown method {method!r}")
