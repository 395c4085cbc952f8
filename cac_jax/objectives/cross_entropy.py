"""``ce``: softmax cross-entropy on the logits (the closed-set baseline), with ARPL's label smoothing when the run
sets ``label_smoothing`` (Vaze et al.'s recipe). Predicts the largest logit; keeps the checkpoint of the strictly
highest validation accuracy, as the original's CE script."""

from __future__ import annotations

import jax.numpy as jnp
import optax

from cac_jax.objectives import Objective, register


def smoothed_targets(labels, num_classes: int, smoothing: float):
    """(B, N) ARPL's label smoothing (``loss/LabelSmoothing.py``): 1 − s on the true class and s / (N − 1) on each
    other one (not optax's / PyTorch's (1 − s) + s / N)."""
    one_hot = jnp.eye(num_classes, dtype=jnp.float32)[labels]
    return one_hot * (1.0 - smoothing) + (1.0 - one_hot) * (smoothing / (num_classes - 1))


@register
class CrossEntropy(Objective):
    name = "ce"
    head = "logits"
    headline = "msp"
    uses_label_smoothing = True

    def loss(self, out, labels, settings):
        """Mean of −log softmax(z)_y, or with smoothing s > 0 of −Σ_j q_j·log softmax(z)_j, q from
        :func:`smoothed_targets`."""
        if settings.label_smoothing:
            q = smoothed_targets(labels, out.logits.shape[-1], settings.label_smoothing)
            return optax.softmax_cross_entropy(out.logits, q).mean(), {}
        return optax.softmax_cross_entropy_with_integer_labels(out.logits, labels).mean(), {}
