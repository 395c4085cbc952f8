"""A tiny synthetic open-set data set shaped like cac_jax.data.OpenSetData, for fast training tests."""

import numpy as np

from cac_jax.config import Config
from cac_jax.data import ArraySet, OpenSetData


def _images(labels, rng, size):
    """Class k: a bright 2x2 patch at a class-specific place on noise (unknowns: their own places)."""
    n = len(labels)
    images = rng.integers(0, 60, size=(n, size, size, 1), dtype=np.uint8)
    for i, k in enumerate(labels):
        r, c = (2 * int(k)) % (size - 1), (3 * int(k)) % (size - 1)
        images[i, r:r + 2, c:c + 2, 0] = 250
    return images


def synthetic_data(num_classes=3, size=8, n_train=96, n_val=24, n_test=24, seed=0) -> OpenSetData:
    rng = np.random.default_rng(seed)

    def known(n):
        labels = np.arange(n, dtype=np.int32) % num_classes
        return ArraySet(images=_images(labels, rng, size), labels=labels)

    unknown_labels = np.full(n_test, num_classes + 1, np.int32)
    return OpenSetData(
        train=known(n_train), val=known(n_val), test_known=known(n_test),
        test_unknown=ArraySet(images=_images(unknown_labels, rng, size), labels=unknown_labels),
        num_classes=num_classes, image_size=size, channels=1, mean=(0.2,), std=(0.3,), flip=0.0, rotate=0.0,
        scale_min=0.8, known=tuple(range(num_classes)), unknown=(num_classes + 1,), dataset="synthetic",
        trial=0, family="neal2018")


def tiny_config(workdir, **changes) -> Config:
    base = Config(experiment="digits", dataset="synthetic", model="small_cnn", batch_size=16, epochs=(2, 1),
                  log_every_steps=2, eval_batch_size=32, progress=False, workdir=str(workdir), anchor_flip=False)
    return base.replace(**changes)
