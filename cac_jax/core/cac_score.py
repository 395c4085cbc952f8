"""Test-time CAC scores (Miller et al., WACV 2021, eq. 5) and predictions.

With distances d_j = ||z - c_j||_2 to the anchors c_j (at test time: the class means of the training
logits, SPEC.md §2) and softmin(d) = softmax(-d):

    per-class score   s_j = d_j * (1 - softmin(d)_j)
    open-set score    min_j s_j           (larger = more likely unknown)
    prediction        argmin_j d_j        (= argmin_j s_j, since 1 - softmin is increasing in d)
"""

import jax
import jax.numpy as jnp

from cac_jax.core.losses import distances


def one_minus_softmin(d):
    """1 - softmin(d)_j for every j of d (B, N), accurate also where softmin_j ~ 1 and at large distances.

    The naive 1 - p rounds to 0 for the nearest anchor of a confident sample, which would tie every
    such known at score 0. For the nearest anchor j* we use sum_{k != j*} softmin_k instead; for the
    others p_j <= 1/2 and 1 - p_j has no cancellation. The distances are shifted by their minimum before
    the log-sum-exps: at distances ~150 the log-sum-exps themselves would be ~150 and their difference,
    the exponent, would keep only about 1e-5 of relative precision.
    """
    neg = -(d - jnp.min(d, axis=1, keepdims=True))
    total = jax.nn.logsumexp(neg, axis=1, keepdims=True)
    nearest = jax.nn.one_hot(jnp.argmax(neg, axis=1), d.shape[1], dtype=bool)
    others = jax.nn.logsumexp(jnp.where(nearest, -jnp.inf, neg), axis=1, keepdims=True)
    return jnp.where(nearest, jnp.exp(others - total), 1.0 - jnp.exp(neg - total))


def cac_score(logits, anchors):
    """The (B, N) matrix d_j * (1 - softmin(d)_j) of logits (B, N) against anchors (N, N)."""
    return cac_score_of_distances(distances(logits, anchors))


def cac_score_of_distances(d):
    """:func:`cac_score` from the distances d (B, N) themselves."""
    return d * one_minus_softmin(d)


def open_set_score(logits, anchors):
    """(B,) min_j of cac_score: larger means more likely unknown."""
    return jnp.min(cac_score(logits, anchors), axis=1)


def predict(logits, anchors):
    """(B,) closed-set prediction: index of the nearest anchor."""
    return jnp.argmin(distances(logits, anchors), axis=1)
