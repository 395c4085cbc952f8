"""Train state (params, BatchNorm statistics, fixed anchors, optimiser) and the optimiser itself."""

from __future__ import annotations

import functools
from typing import Any

import jax
import numpy as np
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

    def apply_gradients_at(self, *, grads, learning_rate, batch_stats) -> "TrainState":
        """One optimiser step with the (traced) ``learning_rate``: params <- params + lr·update."""
        updates, opt_state = self.tx.update(grads, self.opt_state, self.params)
        updates = jax.tree.map(lambda u: learning_rate * u, updates)
        return self.replace(step=self.step + 1, params=optax.apply_updates(self.params, updates),
                            opt_state=opt_state, batch_stats=batch_stats)


@functools.lru_cache(maxsize=None)
def make_optimizer(*, momentum: float, weight_decay: float, optimizer: str = "sgd") -> optax.GradientTransformation:
    """PyTorch SGD without its learning rate: g <- g + wd·w (coupled L2), buf <- momentum·buf + g, update -buf.

    The learning rate multiplies the update in the train step (:meth:`TrainState.apply_gradients_at`), as an
    argument rather than a constant of the program, so one compiled step serves both stages, resumes and any
    schedule. ``sgd(1.0)`` keeps the optimiser state of ``sgd(lr)`` (checkpoints of either restore into the
    other) and -buf·lr is bit for bit the -lr·buf that ``sgd(lr)`` computes. Cached: the optimiser is part of
    the train state's static structure, and an equal one keeps the compiled step valid.

    ``optimizer="adam"``: PyTorch's Adam (b1 0.9, b2 0.999, eps 1e-8, the weight decay added to the gradient,
    as its ``weight_decay``), likewise without its learning rate (Vaze et al.'s TinyImageNet recipe)."""
    if optimizer == "adam":
        return optax.chain(optax.add_decayed_weights(weight_decay), optax.adam(1.0, b1=0.9, b2=0.999, eps=1e-8))
    if optimizer != "sgd":
        raise ValueError(f"optimizer={optimizer!r} is not one of ('sgd', 'adam')")
    return optax.chain(optax.add_decayed_weights(weight_decay), optax.sgd(1.0, momentum=momentum))


def from_variables(model: models.OpenSetClassifier, variables: dict, tx: optax.GradientTransformation) -> TrainState:
    """A fresh optimiser state (step 0, zero momentum) around existing variables."""
    constants = {k: v for k, v in variables.items() if k not in ("params", "batch_stats")}
    state = TrainState.create(apply_fn=model.apply, params=variables["params"], tx=tx,
                              batch_stats=variables.get("batch_stats", {}), constants=constants)
    # A strong int32 step, the type a restored checkpoint has: a weakly typed one would compile the step again.
    return state.replace(step=np.int32(0))


@functools.lru_cache(maxsize=None)
def _init_fn(model, image_size: int, channels: int, tx, sharding):
    # Cached so that every stage, resume and evaluation of a process reuses one compilation.
    def init(seed):
        variables = models.init_variables(model, jax.random.key(seed), image_size, channels)
        return from_variables(model, variables, tx)

    return jax.jit(init, out_shardings=sharding)


@functools.lru_cache(maxsize=None)
def _restart_fn(model, tx, sharding):
    return jax.jit(lambda variables: from_variables(model, variables, tx), out_shardings=sharding)


def create(model: models.OpenSetClassifier, seed: int, *, image_size: int, channels: int,
           tx: optax.GradientTransformation, sharding) -> TrainState:
    """The model initialised from ``jax.random.key(seed)`` with a fresh optimiser, placed with ``sharding``
    (replicated over the mesh); one compiled program."""
    return _init_fn(model, image_size, channels, tx, sharding)(seed)


def restart(model: models.OpenSetClassifier, variables: dict, tx: optax.GradientTransformation, sharding) -> TrainState:
    """:func:`from_variables` as one compiled program, placed with ``sharding``."""
    return _restart_fn(model, tx, sharding)(variables)
