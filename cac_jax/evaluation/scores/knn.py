"""Deep nearest neighbours (Sun et al., ICML 2022; POSTHOC.md §4): the distance from a test sample's
normalised penultimate feature to its k-th nearest normalised training feature, k = 50.

Fit: the bank u_i = h_i / (||h_i|| + 1e-10) of **all** training features (no labels, no correctness filter;
the same training images as the class means, flipped copies included where those use them). Score:
||u − u_(k)||_2 (larger = unknown); prediction: argmax of the logits (KNN has no labels). The k nearest are
found by the largest u·u_i; the k-th distance is then computed from the difference itself, not as
sqrt(2 − 2·u·u_(k)), which would lose half the digits of a close neighbour's distance. A bank smaller
than k uses its farthest member (k = n).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from cac_jax.evaluation.scores import FitSet, Score, register

EPS = 1e-10


def normalise(x):
    return x / (jnp.linalg.norm(x, axis=-1, keepdims=True) + EPS)


@register
@dataclasses.dataclass(frozen=True, eq=False)
class KNN(Score):
    """||u − u_(k)|| on L2-normalised penultimate features, k = 50 (Sun et al. 2022)."""

    name = "knn"
    needs = ("logits", "features")
    k: int = 50

    def fit(self, train: FitSet) -> dict:
        h = np.asarray(train.features, np.float32)  # float32 like the score: the bank may be GBs (TinyImageNet)
        return {"bank": h / (np.linalg.norm(h, axis=-1, keepdims=True) + np.float32(EPS))}

    def __call__(self, fitted, logits, features):
        bank = fitted["bank"]
        u = normalise(jnp.asarray(features, jnp.float32))
        k = min(self.k, bank.shape[0])
        _, nearest = jax.lax.top_k(u @ bank.T, k)
        kth = bank[nearest[:, k - 1]]
        return jnp.argmax(logits, axis=-1), jnp.linalg.norm(u - kth, axis=-1)
