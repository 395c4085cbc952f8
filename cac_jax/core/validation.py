"""Argument checks for the public kernels.

They read only static facts (rank, shape, dtype), so they work on traced arrays inside `jax.jit` and
turn a wrong call into one message that names the argument, instead of a broadcasting error deep in XLA.
"""

import jax
import jax.numpy as jnp
import numpy as np


def _dtype(x):
    return np.dtype(x.dtype) if hasattr(x, "dtype") else np.result_type(x)


def _describe(x):
    return f"shape {tuple(np.shape(x))} and dtype {_dtype(x)}"


def check_floating(name, x, rank):
    """`x` must be a floating array of the given rank."""
    if np.ndim(x) != rank:
        raise ValueError(f"{name} must have rank {rank}, got {_describe(x)}")
    if not jnp.issubdtype(_dtype(x), jnp.floating):
        raise TypeError(f"{name} must be a floating-point array, got {_describe(x)}")


def check_integer(name, x, rank):
    """`x` must be an integer array of the given rank."""
    if np.ndim(x) != rank:
        raise ValueError(f"{name} must have rank {rank}, got {_describe(x)}")
    if not jnp.issubdtype(_dtype(x), jnp.integer):
        raise TypeError(f"{name} must be an integer array, got {_describe(x)}")


def check_logits_and_anchors(logits, anchors):
    """logits (B, N) and anchors (M, N) must agree on N."""
    check_floating("logits", logits, 2)
    check_floating("anchors", anchors, 2)
    if np.shape(anchors)[1] != np.shape(logits)[1]:
        raise ValueError(
            f"anchors must have shape (M, {np.shape(logits)[1]}) to match logits of shape "
            f"{tuple(np.shape(logits))}, got {tuple(np.shape(anchors))}"
        )


def check_labels(labels, logits):
    """labels (B,) integers, one per row of logits (B, N)."""
    check_integer("labels", labels, 1)
    if np.shape(labels)[0] != np.shape(logits)[0]:
        raise ValueError(
            f"labels of shape {tuple(np.shape(labels))} do not match logits of shape "
            f"{tuple(np.shape(logits))}: need one label per row"
        )


def check_label_range(labels, num_classes):
    """Labels outside [0, N) would be clamped silently by a gather; refuse them when they are concrete
    (under jit the values are unknown and the caller's data pipeline is responsible)."""
    if isinstance(labels, jax.core.Tracer):
        return
    values = np.asarray(labels)
    if values.size and (values.min() < 0 or values.max() >= num_classes):
        bad = values[(values < 0) | (values >= num_classes)]
        raise ValueError(f"labels must lie in [0, {num_classes}), got {bad[:5].tolist()}")
