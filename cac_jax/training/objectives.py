"""Training objectives and the checkpoint-selection metric, functions of the method (whose objective is
``Config.objective``; how a trained network is scored is :mod:`cac_jax.evaluation.scores`).

* ``cac``: L = lbda·L_A + L_T against fixed anchors alpha·I (``cac_loss`` fast path, anchors=None).
  Training accuracy is argmin of distance, which under one-hot anchors is argmax of the logits.
* ``cac_learnt``: the same loss against the learnt centres (``params["centres"]``).
* ``ce`` (and its shorthands ``ce_*``): softmax cross-entropy on the logits; accuracy is argmax of the logits.

Checkpoint selection (SPEC.md §4): CAC methods keep the epoch with the lowest mean validation
anchor loss (mean distance to the true-class anchor), ties going to the later epoch as the
original's ``<=``; CE methods keep the strictly highest validation accuracy, as the original CE script.
"""

from __future__ import annotations

import jax.numpy as jnp
import optax

from cac_jax.core import losses


def is_cac(method: str) -> bool:
    return method in ("cac", "cac_learnt")


def smoothed_targets(labels, num_classes: int, smoothing: float):
    """(B, N) ARPL's label smoothing (``loss/LabelSmoothing.py``, Vaze et al.'s recipe): 1 − s on the true class
    and s / (N − 1) on each other one (not optax's / PyTorch's (1 − s) + s / N)."""
    one_hot = jnp.eye(num_classes, dtype=jnp.float32)[labels]
    return one_hot * (1.0 - smoothing) + (1.0 - one_hot) * (smoothing / (num_classes - 1))


def training_loss(method: str, logits, distances, labels, *, centres=None, lbda: float, alpha: float,
                  label_smoothing: float = 0.0):
    """Per-batch (loss, terms, num_correct); ``terms`` holds the named components (means over the batch).
    ``label_smoothing`` (CE only): mean of −Σ q·log softmax(z) with q from :func:`smoothed_targets`."""
    if is_cac(method):
        anchors = centres if method == "cac_learnt" else None
        total, anchor, tuplet = losses.cac_loss(logits, labels, anchors=anchors, lbda=lbda, alpha=alpha)
        pred = jnp.argmin(distances, axis=-1) if method == "cac_learnt" else jnp.argmax(logits, axis=-1)
        terms = {"anchor": anchor, "tuplet": tuplet}
    else:
        if label_smoothing:
            q = smoothed_targets(labels, logits.shape[-1], label_smoothing)
            total = optax.softmax_cross_entropy(logits, q).mean()
        else:
            total = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
        pred = jnp.argmax(logits, axis=-1)
        terms = {}
    return total, terms, jnp.sum(pred == labels)


def validation_sums(method: str, logits, distances, labels, mask):
    """Masked per-batch sums for the val pass: anchor distance (CAC) or CE loss, and correct count."""
    mask = mask.astype(jnp.float32)
    if is_cac(method):
        true_dist = jnp.take_along_axis(distances, labels[:, None], axis=-1)[:, 0]
        pred = jnp.argmin(distances, axis=-1)
        loss = true_dist
    else:
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
        pred = jnp.argmax(logits, axis=-1)
    return {"loss": jnp.sum(loss * mask), "correct": jnp.sum((pred == labels) * mask), "count": jnp.sum(mask)}


def selection(method: str) -> tuple[str, str]:
    """(metric name, mode): which validation value picks the best checkpoint, and "min" or "max"."""
    return ("val_anchor_loss", "min") if is_cac(method) else ("val_accuracy", "max")


def improves(value: float, best: float | None, mode: str) -> bool:
    if best is None:
        return True
    return value <= best if mode == "min" else value > best
