"""Train state (params, BatchNorm statistics, fixed anchors, optimiser) and the optimiser itself."""

from __future__ import annotations

import functools
from typing import Any

import jax
import optax
from flax.training import train_state

from cac_jax import models


class TrainState(train_state.TrainState):
    """Flax TrainState plus the non-trainable collections.

    ``batch_stats``: BatchNorm running statistics. ``constants``: other non-trainable collections,
    i.e. ``{"anchors": {"centres": alpha*I}}`` for the CAC head, ``{}`` otherwise; they are never
    passed to the optimiser, so they cannot change during training."""

    batch_stats: Any
    constants: Any

    def variables(self) -> dict:
        return {"params": self.params, "batch_stats": self.batch_stats, **self.constants}


def make_optimizer(learning_rate: float, *, momentum: float, weight_decay: float) -> optax.GradientTransformation:
    """PyTorch SGD: g <- g + wd·w (coupled L2), buf <- momentum·buf + g, w <- w - lr·buf (constant lr)."""
    return optax.chain(optax.add_decayed_weights(weight_decay), optax.sgd(learning_rate, momentum=momentum))


def from_variables(model: models.OpenSetClassifier, variables: dict, tx: optax.GradientTransformation) -> TrainState:
    """A fresh optimiser state (step 0, zero momentum) around existing variables."""
    constants = {k: v for k, v in variables.items() if k not in ("params", "batch_stats")}
    return TrainState.create(apply_fn=model.apply, params=variables["params"], tx=tx,
                             batch_stats=variables.get("batch_stats", {}), constants=constants)


@functools.lru_cache(maxsize=None)
def _init_fn(model, image_size: int, channels: int, sharding):
    # Cached so that every stage, resume and evaluation of a process reuses one compilation.
    return jax.jit(lambda k: models.init_variables(model, k, image_size, channels), out_shardings=sharding)


def create(model: models.OpenSetClassifier, key: jax.Array, *, image_size: int, channels: int,
           tx: optax.GradientTransformation, sharding) -> TrainState:
    """Initialise the model and optimiser, placed with ``sharding`` (replicated over the mesh)."""
    variables = _init_fn(model, image_size, channels, sharding)(key)
    return jax.device_put(from_variables(model, variables, tx), sharding)
