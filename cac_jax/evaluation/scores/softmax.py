"""Scores of the logits alone: no training statistics.

* ``msp`` (Hendrycks & Gimpel, ICLR 2017): 1 − max_j softmax(z)_j, computed as r/(1 + r) with
  r = Σ_{j≠argmax} exp(z_j − z_max), so samples whose maximum softmax rounds to 1 in float32 keep their order.
* ``max_logit`` (MLS; Vaze et al., ICLR 2022): −max_j z_j.
* ``energy`` (Liu et al., NeurIPS 2020): −T·log Σ_j exp(z_j / T), T = 1 (POSTHOC.md §1: their default), as a
  max-shifted log-sum-exp.

All predict argmax_j z_j.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from cac_jax.evaluation.scores import Score, register


def msp(logits):
    """(B,) 1 − max softmax(z) as r/(1 + r) (see the module docstring)."""
    z = jnp.asarray(logits, jnp.float32)
    top = jnp.argmax(z, axis=-1)
    e = jnp.exp(z - jnp.take_along_axis(z, top[..., None], axis=-1))
    r = jnp.sum(jnp.where(jnp.arange(z.shape[-1]) == top[..., None], 0.0, e), axis=-1)
    return r / (1.0 + r)


def energy(logits, temperature: float = 1.0):
    """(B,) −T·logsumexp(z / T)."""
    z = jnp.asarray(logits, jnp.float32)
    return -temperature * jax.nn.logsumexp(z / temperature, axis=-1)


@register
class MSP(Score):
    """1 − max softmax (Hendrycks & Gimpel 2017)."""

    name = "msp"

    def __call__(self, fitted, logits, features):
        return jnp.argmax(logits, axis=-1), msp(logits)


@register
class MaxLogit(Score):
    """−max logit, MLS (Vaze et al. 2022)."""

    name = "max_logit"

    def __call__(self, fitted, logits, features):
        return jnp.argmax(logits, axis=-1), -jnp.max(jnp.asarray(logits, jnp.float32), axis=-1)


@register
class Energy(Score):
    """−T·logsumexp(z / T), T = 1 (Liu et al. 2020)."""

    name = "energy"
    temperature = 1.0

    def __call__(self, fitted, logits, features):
        return jnp.argmax(logits, axis=-1), energy(logits, self.temperature)
