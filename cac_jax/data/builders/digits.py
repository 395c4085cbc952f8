"""``cac_digits``: scikit-learn's bundled 8x8 digits as a small built-in open-set dataset.

1797 grey images of the digits 0-9 ship inside scikit-learn, so this dataset needs no file and no
network; it is what ``cac-jax`` uses when the user names no data.

* Pixels: scikit-learn's values 0..16 are scaled to uint8 by ``round(v * 255 / 16)``; shape (8, 8, 1).
* Train/test: a fixed stratified split, ``stratified_split(labels, 0.8, seed=0)`` (80 % of each
  class, rounded down, to train): 1433 train and 364 test images.
"""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

from cac_jax.data.builders.common import generate_examples, image_features
from cac_jax.data.trainval import stratified_split

TRAIN_FRACTION = 0.8
SPLIT_SEED = 0


def digits_arrays() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{"train": (images, labels), "test": (images, labels)}``, images uint8 (n, 8, 8, 1)."""
    from sklearn.datasets import load_digits  # bundled with scikit-learn: reads no network

    bunch = load_digits()
    images = np.round(bunch.images * 255.0 / 16.0).astype(np.uint8)[..., None]
    labels = bunch.target.astype(np.int64)
    train, test = stratified_split(labels, TRAIN_FRACTION, seed=SPLIT_SEED)
    return {"train": (images[train], labels[train]), "test": (images[test], labels[test])}


class CacDigits(tfds.core.GeneratorBasedBuilder):
    """scikit-learn's 8x8 digits, split 80/20 per class with a fixed seed."""

    name = "cac_digits"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description=__doc__,
            features=image_features((8, 8, 1)),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download
        return {split: generate_examples(*arrays) for split, arrays in digits_arrays().items()}

    def _generate_examples(self):  # abstract in TFDS; the split generators above do the work
        raise NotImplementedError
