"""Built-in default: CAC on scikit-learn's 8x8 digits (MNIST splits), a small CNN, under a minute on a CPU.

Command (the same as plain ``cac-jax train``)::

    cac-jax train --experiment digits --trial 0
"""

from cac_jax.config import Config


def get_config() -> Config:
    return Config(experiment="digits", dataset="digits", model="small_cnn", batch_size=64,
                  learning_rates=(0.01, 0.001), epochs=(30, 10), weight_decay=5e-6, dropout=0.2,
                  log_every_steps=10)
