"""CIFAR10, 6 known / 4 unknown classes (SPEC.md §4): batch 128, lr 0.01 then 0.001, 150 + 50 epochs, wd 5e-6,
dropout 0.2, 32x32x3.

Commands (the shared copy is a compact JPEG pack: expand it into a Keras-layout npz first, and label the
results "CIFAR-10 (JPEG q75 copy)")::

    mkdir -p data && python ../shared/data/expand_cifar10.py data/cifar10.npz
    cac-jax train --experiment cifar10 --trial 0 --npz data/cifar10.npz
"""

from cac_jax.config import Config


def get_config() -> Config:
    return Config(experiment="cifar10", dataset="cifar10", model="cac_cnn", batch_size=128,
                  learning_rates=(0.01, 0.001), epochs=(150, 50), weight_decay=5e-6, dropout=0.2)
