"""TinyImageNet, 20 known / 180 unknown classes (SPEC.md §4): batch 128, lr 0.01 then 0.001, 500 + 300 epochs,
wd 1e-3 (the original's ``10e-4``), dropout 0.3, 64x64x3.

Command (tiny-imagenet-200.zip placed in MANUAL_DIR; nothing is downloaded)::

    cac-jax train --experiment tiny_imagenet --trial 0 --set manual_dir=MANUAL_DIR
"""

from cac_jax.config import Config


def get_config() -> Config:
    return Config(experiment="tiny_imagenet", dataset="tiny_imagenet", model="cac_cnn", batch_size=128,
                  learning_rates=(0.01, 0.001), epochs=(500, 300), weight_decay=1e-3, dropout=0.3)
