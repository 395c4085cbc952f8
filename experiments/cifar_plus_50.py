"""CIFAR+50: known CIFAR-10 vehicles (0, 1, 8, 9), unknown all 50 CIFAR-100 animal classes (SPEC.md §4).

The original's config for it (batch 32, otherwise as CIFAR+10) is effectively unused: its CIFAR+10 runs
write their models into the CIFAR+50 directory too, so the published CIFAR+50 numbers come from the
CIFAR+10 models (the known classes and training data are identical; only the unknown test set differs).
This module keeps the original's batch 32 so that ``cac-jax train`` trains its own model; to reproduce
the original's protocol instead, evaluate a CIFAR+10 run against the CIFAR+50 unknowns::

    cac-jax train --experiment cifar_plus_50 --trial 0 --data-dir DATA_DIR
    cac-jax eval --workdir runs/cifar_plus_10/trial0 --set dataset=cifar_plus_50
"""

from cac_jax.config import Config


def get_config() -> Config:
    return Config(experiment="cifar_plus_50", dataset="cifar_plus_50", model="cac_cnn", batch_size=32,
                  learning_rates=(0.01, 0.001), epochs=(150, 50), weight_decay=5e-4, dropout=0.2)
