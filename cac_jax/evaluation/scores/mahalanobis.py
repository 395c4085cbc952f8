"""Mahalanobis distance to the nearest class mean with one shared covariance (Lee et al., NeurIPS 2018),
post hoc: one layer, no input preprocessing, no layer ensemble (OpenOOD's ``mds``; POSTHOC.md §3).

Fit (float64): class means μ_c over **all** training images of class c (Lee et al.; POSTHOC.md §3.1), the
shared covariance Σ = (1/n) Σ_c Σ_{i ∈ c} (φ_i − μ_c)(φ_i − μ_c)ᵀ from the class-centred data, and its
Hermitian pseudo-inverse P = Σ⁺ (eigenvalues below 1e-10 of the largest count as zero, as ``pinvh``).
Score: min_c (φ − μ_c)ᵀ P (φ − μ_c); prediction: argmin_c. The quadratic form is evaluated as
||(φ − μ_c)·W||² with P = W Wᵀ, so a batch costs O(B·N·D) and no (D, D) product per sample.

* ``mahalanobis``: φ = the logits.
* ``mahalanobis_features``: φ = the penultimate features (the flattened encoder output the linear layer sees).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from cac_jax.evaluation.scores import FitSet, Score, class_means, register

RCOND = 1e-10
CHUNK = 4096


def fit_gaussian(values: np.ndarray, labels: np.ndarray, num_classes: int) -> dict:
    """{"means": (N, D), "whiten": (D, r)}: class means and W with W Wᵀ = pinvh(shared covariance), float64."""
    values = np.asarray(values)
    means = class_means(values, labels, num_classes)
    # Accumulated in float64 over chunks of rows: TinyImageNet's 2 x 90k 8192-d features would need 12 GB at once.
    cov = np.zeros((values.shape[1], values.shape[1]), np.float64)
    for start in range(0, len(values), CHUNK):
        centred = values[start:start + CHUNK].astype(np.float64) - means[labels[start:start + CHUNK]]
        cov += centred.T @ centred
    cov /= len(values)
    eigval, eigvec = np.linalg.eigh(cov)
    keep = eigval > RCOND * max(eigval.max(), 0.0)
    whiten = eigvec[:, keep] / np.sqrt(eigval[keep])
    return {"means": means, "whiten": whiten}


def mahalanobis_distances(fitted: dict, x):
    """(B, N) squared Mahalanobis distances of x (B, D) to every class mean."""
    w = fitted["whiten"]
    proj = jnp.asarray(x, jnp.float32) @ w
    centres = fitted["means"] @ w
    return jnp.sum(jnp.square(proj[:, None, :] - centres[None, :, :]), axis=-1)


class _Mahalanobis(Score):
    def values(self, logits, features):
        raise NotImplementedError

    def fit(self, train: FitSet) -> dict:
        return fit_gaussian(self.values(train.logits, train.features), train.labels, train.num_classes)

    def __call__(self, fitted, logits, features):
        d = mahalanobis_distances(fitted, self.values(logits, features))
        return jnp.argmin(d, axis=-1), jnp.min(d, axis=-1)


@register
class Mahalanobis(_Mahalanobis):
    """min_c (z − μ_c)ᵀ Σ⁺ (z − μ_c) on the logits (Lee et al. 2018)."""

    name = "mahalanobis"

    def values(self, logits, features):
        return logits


@register
class MahalanobisFeatures(_Mahalanobis):
    """min_c (h − μ_c)ᵀ Σ⁺ (h − μ_c) on the penultimate features h (Lee et al. 2018)."""

    name = "mahalanobis_features"
    needs = ("logits", "features")

    def values(self, logits, features):
        return features
