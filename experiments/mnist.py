"""MNIST, 6 known / 4 unknown digits (SPEC.md §4): batch 128, lr 0.01 then 0.001, 35 + 35 epochs, wd 5e-6,
dropout 0.2, 28x28 resized to 32x32, one channel.

Command::

    cac-jax train --experiment mnist --trial 0 --npz ../shared/data/mnist.npz
"""

from cac_jax.config import Config


def get_config() -> Config:
    return Config(experiment="mnist", dataset="mnist", model="cac_cnn", batch_size=128,
                  learning_rates=(0.01, 0.001), epochs=(35, 35), weight_decay=5e-6, dropout=0.2)
