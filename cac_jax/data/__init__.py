"""Open-set data: class splits, sources read through TFDS, on-device augmentation, batching.

Importing this package is cheap: TFDS and JAX load only when a function needs them.

* :func:`load_open_set` (:mod:`.loading`): one trial of a benchmark as uint8 host arrays;
  :func:`with_normalisation` sets the mean/std a recipe names.
* :func:`get_split` (:mod:`.splits`): known/unknown class ids of a benchmark and trial.
* :mod:`.registry`: per-dataset image size, augmentation, normalisation, train fraction.
* :mod:`.augment`: ``train_augment`` / ``eval_preprocess``, jit-compiled and batched.
* :mod:`.pipeline`: ``batch_indices`` for shuffled global batches, per-process slices.
* :mod:`.external`: images from elsewhere (unknowns from other datasets, calibration sets, images to classify)
  in a run's own format, by one stated conversion rule.
"""

from cac_jax.data.loading import ArraySet, OpenSetData, load_open_set, with_normalisation
from cac_jax.data.registry import DATASETS, DatasetSpec, get_spec
from cac_jax.data.splits import BENCHMARKS, FAMILIES, get_split

__all__ = [
    "ArraySet",
    "BENCHMARKS",
    "DATASETS",
    "DatasetSpec",
    "FAMILIES",
    "OpenSetData",
    "get_spec",
    "get_split",
    "load_open_set",
    "with_normalisation",
]
