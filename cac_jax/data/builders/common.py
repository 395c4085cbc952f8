"""Features and example generation shared by this project's builders."""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds


def image_features(image_shape: tuple[int, int, int]) -> tfds.features.FeaturesDict:
    """Raw uint8 image (no PNG: encoding it needs TensorFlow), class label and original position."""
    return tfds.features.FeaturesDict(
        {
            "image": tfds.features.Tensor(shape=tuple(image_shape), dtype=np.uint8),
            "label": tfds.features.Tensor(shape=(), dtype=np.int64),
            "index": tfds.features.Tensor(shape=(), dtype=np.int64),
        }
    )


def generate_examples(images: np.ndarray, labels: np.ndarray):
    """Yield ``(key, example)`` for aligned arrays; the key and ``index`` are the position."""
    for i in range(len(images)):
        yield i, {"image": images[i], "label": int(labels[i]), "index": i}
