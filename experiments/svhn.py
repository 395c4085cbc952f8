"""SVHN (train split; 'extra' unused), 6 known / 4 unknown digits (SPEC.md §4): batch 128, lr 0.01 then 0.001,
50 + 25 epochs, wd 5e-6, dropout 0.2, 32x32x3.

Command (SVHN prepared for TFDS in DATA_DIR; nothing is downloaded)::

    cac-jax train --experiment svhn --trial 0 --data-dir DATA_DIR
"""

from cac_jax.config import Config


def get_config() -> Config:
    return Config(experiment="svhn", dataset="svhn", model="cac_cnn", batch_size=128,
                  learning_rates=(0.01, 0.001), epochs=(50, 25), weight_decay=5e-6, dropout=0.2)
