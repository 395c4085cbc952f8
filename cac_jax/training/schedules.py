"""Learning-rate schedules, per epoch: the learning rate is an argument of the train step, so a schedule
changes nothing in the compiled program.

* ``"constant"`` (the paper's recipe): ``learning_rates[stage - 1]`` throughout the stage.
* ``"cosine_warm_restarts"`` (Vaze et al. 2022, ``utils/schedulers.py::CosineAnnealingWarmupRestarts_New``
  stepped after every epoch, as their ``osr.py`` does; MODERN_PROTOCOL.md (b)): with base lr η,
  η_min = ``eta_min_fraction``·η, T = epochs / (``num_restarts`` + 1) and
  cos(t) = η_min + (η − η_min)(1 + cos(π t / T)) / 2, epoch e (0-based within the stage) trains at
  η_min for e = 0, η_min + (e / W)(cos(W) − η_min) for 1 ≤ e ≤ W = ``warmup_epochs`` (one warm-up, at the
  start), and cos((e − 1) mod T) after it (so epoch W + 1 repeats cos(W), and the restarts come at
  e = T + 1, 2T + 1, ...).
"""

from __future__ import annotations

import math

SCHEDULES = ("constant", "cosine_warm_restarts")


def epoch_learning_rate(cfg, stage: int, epoch: int) -> float:
    """The learning rate of ``epoch`` (0-based, within ``stage``) under ``cfg.lr_schedule``."""
    base = float(cfg.learning_rates[stage - 1])
    if cfg.lr_schedule == "constant":
        return base
    if cfg.lr_schedule != "cosine_warm_restarts":
        raise ValueError(f"lr_schedule={cfg.lr_schedule!r} is not one of {SCHEDULES}")
    eta_min = cfg.eta_min_fraction * base
    period = max(int(cfg.epochs[stage - 1] / (cfg.num_restarts + 1)), 1)

    def cosine(t):
        return eta_min + (base - eta_min) * (1 + math.cos(math.pi * t / period)) / 2

    warmup = cfg.warmup_epochs
    if epoch == 0:
        return eta_min
    if epoch <= warmup:
        return eta_min + epoch / warmup * (cosine(warmup) - eta_min)
    return cosine((epoch - 1) % period)
