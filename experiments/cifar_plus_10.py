"""CIFAR+10: known CIFAR-10 vehicles (0, 1, 8, 9), unknown 10 CIFAR-100 animal classes (SPEC.md §4):
batch 128, lr 0.01 then 0.001, 150 + 50 epochs, wd 5e-4, dropout 0.2, 32x32x3.

Command (CIFAR-10 and CIFAR-100 prepared for TFDS in DATA_DIR)::

    cac-jax train --experiment cifar_plus_10 --trial 0 --data-dir DATA_DIR
"""

from cac_jax.config import Config


def get_config() -> Config:
    return Config(experiment="cifar_plus_10", dataset="cifar_plus_10", model="cac_cnn", batch_size=128,
                  learning_rates=(0.01, 0.001), epochs=(150, 50), weight_decay=5e-4, dropout=0.2)
