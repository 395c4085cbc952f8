"""Distance-based scores against the class means of the training logits (SPEC.md §2).

With μ_k the mean logit vector of the correctly classified training images of class k (the test-time anchors
of the original) and d_k = ||z − μ_k||_2:

* ``cac`` (Miller et al., WACV 2021, eq. 5): prediction argmin_k d_k, score min_k d_k·(1 − softmin(d)_k).
* ``distance``: prediction argmin_k d_k, score min_k d_k, the plain post-hoc distance classifier that CAC
  improves on.
"""

from __future__ import annotations

import jax.numpy as jnp

from cac_jax.core import cac_score, losses
from cac_jax.evaluation.scores import FitSet, Score, register


class _ClassMeanDistance(Score):
    def fit(self, train: FitSet) -> dict:
        return {"means": train.class_means}

    def distances(self, fitted, logits):
        return losses.distances(jnp.asarray(logits, jnp.float32), fitted["means"])


@register
class CAC(_ClassMeanDistance):
    """min_k d_k·(1 − softmin(d)_k) against the class means (Miller et al. 2021, eq. 5)."""

    name = "cac"

    def __call__(self, fitted, logits, features):
        d = self.distances(fitted, logits)
        return jnp.argmin(d, axis=-1), jnp.min(cac_score.cac_score_of_distances(d), axis=-1)


@register
class Distance(_ClassMeanDistance):
    """min_k ||z − μ_k||_2: the distance to the nearest class mean."""

    name = "distance"

    def __call__(self, fitted, logits, features):
        d = self.distances(fitted, logits)
        return jnp.argmin(d, axis=-1), jnp.min(d, axis=-1)
