"""``load_open_set``: one trial of an open-set benchmark as uint8 arrays in host memory.

For a dataset and trial: the known classes' training images split into train and val, the known
classes' test images, and the unknown classes' test images (from CIFAR-100's *test* split for
CIFAR+N). Known labels are remapped to their rank among the sorted known class ids; unknown test
labels stay raw class ids of the unknown source.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping

import numpy as np

from cac_jax.data import registry, sources, splits, trainval


@dataclasses.dataclass(frozen=True)
class ArraySet:
    """Images uint8 (n, H, W, C) at the source's native size and int32 labels (n,)."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


@dataclasses.dataclass(frozen=True)
class OpenSetData:
    """One trial of an open-set benchmark; see :func:`load_open_set`.

    ``mean``/``std`` are per channel for [0, 1] pixels; ``image_size`` is the network input side
    (images are resized to it on the device); ``flip``, ``rotate``, ``scale_min`` are the training
    augmentation settings of :func:`cac_jax.data.augment.train_augment`.
    """

    train: ArraySet
    val: ArraySet
    test_known: ArraySet
    test_unknown: ArraySet
    num_classes: int
    image_size: int
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    flip: float
    rotate: float
    scale_min: float
    known: tuple[int, ...]
    unknown: tuple[int, ...]
    dataset: str
    trial: int
    family: str


def _sources_of(spec: registry.DatasetSpec) -> tuple[str, ...]:
    return tuple(dict.fromkeys((spec.known_source, spec.unknown_source)))


def resolve_npz(npz_path, source: str, spec: registry.DatasetSpec):
    """The ``.npz`` file to read for ``source`` from the user's ``npz_path``, or None.

    ``npz_path`` may be one file (datasets with a single source), a directory holding
    ``<source>.npz`` (``mnist.npz``, ``svhn.npz``, ``cifar10.npz``, ``cifar100.npz``), or a mapping
    ``{source: file}``. CIFAR+10/+50 read two sources, so they need the directory or the mapping:
    ``cifar10.npz`` for the known classes and ``cifar100.npz`` (fine labels) for the unknown ones.
    """
    if npz_path is None:
        return None
    needed = _sources_of(spec)
    if isinstance(npz_path, Mapping):
        if source not in npz_path:
            raise ValueError(f"npz_path mapping has no entry for {source!r}; {spec.name} needs {{{', '.join(repr(s) + ': path' for s in needed)}}}")
        return npz_path[source]
    path = os.fspath(npz_path)
    if os.path.isdir(path):
        file = os.path.join(path, f"{source}.npz")
        if not os.path.isfile(file):
            raise FileNotFoundError(
                f"{spec.name} needs {source}.npz in {path!r}: a Keras-layout file, e.g. "
                f"numpy.savez({file!r}, x_train=..., y_train=..., x_test=..., y_test=...) with uint8 images"
            )
        return file
    if len(needed) > 1:
        raise ValueError(
            f"{spec.name} reads two datasets ({needed[0]} for known classes, {needed[1]} test split for unknown ones), "
            f"so npz_path must be a directory holding {needed[0]}.npz and {needed[1]}.npz, or a mapping "
            f"{{'{needed[0]}': path, '{needed[1]}': path}}; got the single path {path!r}"
        )
    return path


def pixel_statistics(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) standard deviation of uint8 images scaled to [0, 1]."""
    x = np.asarray(images, dtype=np.float64) / 255.0
    axes = tuple(range(x.ndim - 1))
    return tuple(x.mean(axis=axes).tolist()), tuple(x.std(axis=axes).tolist())


def _select(images: np.ndarray, labels: np.ndarray, classes) -> tuple[np.ndarray, np.ndarray]:
    keep = np.isin(labels, np.asarray(list(classes), dtype=np.int64))
    return images[keep], labels[keep]


def _require_classes(labels: np.ndarray, classes, split: str, origin: str, where: str, pool=None) -> None:
    """Refuse a split that lacks one of its classes, before any training: a known class missing from
    test_known would otherwise fail only after training, in the plots, and one missing from train is never
    learnt. ``pool``: the training images' labels that train and val were taken from, to say when they hold
    too few of a class to give it to both."""
    missing = sorted(set(int(c) for c in classes) - set(np.unique(labels).tolist()))
    if not missing:
        return
    has = "holds no images" if len(labels) == 0 else f"has no images of classes {missing}"
    held = {c: int(np.sum(pool == c)) for c in missing} if pool is not None else {}
    few = ", ".join(f"{n} image{'s' * (n > 1)} of class {c}" for c, n in held.items() if n)
    if few:
        raise ValueError(f"{where}: the {split} split {has}: {origin} holds only {few} for train and val together; "
                         f"give it more images of those classes")
    raise ValueError(f"{where}: the {split} split {has} (read from {origin}); is it the right data?")


def load_open_set(
    dataset: str = "digits",
    trial: int = 0,
    *,
    family: str = "neal2018",
    data_dir=None,
    npz_path=None,
    manual_dir=None,
    trainval_file=None,
    seed: int = 0,
    holdout_val: bool = True,
) -> OpenSetData:
    """Load trial ``trial`` (0-4) of ``dataset`` into host memory; never downloads.

    Args:
      dataset: one of ``digits`` (default: scikit-learn's bundled digits, no file needed),
        ``mnist``, ``svhn``, ``cifar10``, ``cifar_plus_10``, ``cifar_plus_50``, ``tiny_imagenet``.
      trial: 0-4.
      family: ``"neal2018"`` (paper Table 1), ``"cac_random2020"`` (the original's first splits) or
        ``"arpl2020"`` (ARPL / Vaze et al.: the modern protocol's splits, labels in their files' order).
      data_dir: TFDS data directory (see :mod:`cac_jax.data.sources` for the defaults).
      npz_path: read Keras-layout ``.npz`` files instead of built-in TFDS datasets: one file, a
        directory of ``<source>.npz`` files, or a mapping ``{source: file}``; see :func:`resolve_npz`.
      manual_dir: directory holding ``tiny-imagenet-200.zip`` or ``tiny-imagenet-200/``.
      trainval_file: the original's ``trainval_idxs.json`` to use its exact train/val partition
        (needs a source in the original order: an npz file or Tiny ImageNet).
      seed: seed of the drawn train/val partition (:func:`cac_jax.data.trainval.train_val_split`).
      holdout_val: False puts every known-class training image in ``train`` and none in ``val`` (Vaze et al.'s
        ``split_train_val=False``).
    """
    spec = registry.get_spec(dataset)
    splits.check_family(family)
    trial = splits.check_trial(trial)
    known, unknown = splits.get_split(spec.benchmark, trial, family)

    def read(source, split):
        return sources.read_source(
            source, split, data_dir=data_dir, npz_file=resolve_npz(npz_path, source, spec), manual_dir=manual_dir
        )

    train_src = read(spec.known_source, "train")
    test_src = read(spec.known_source, "test")
    unknown_src = test_src if spec.unknown_source == spec.known_source else read(spec.unknown_source, "test")

    if not holdout_val:
        if trainval_file is not None:
            raise ValueError("trainval_file gives a validation split, but holdout_val=False trains on every image")
        train_idx = np.flatnonzero(np.isin(train_src.labels, np.asarray(known, np.int64)))
        val_idx = train_idx[:0]
    elif trainval_file is not None:
        if not train_src.original_order:
            raise ValueError(
                "trainval_file needs the training images in the original (torchvision) order, but built-in TFDS "
                f"datasets store them shuffled; use npz_path for {spec.known_source}"
            )
        train_idx, val_idx = trainval.read_trainval_file(trainval_file, known, labels=train_src.labels)
    else:
        train_idx, val_idx = trainval.train_val_split(train_src.labels, known, spec.train_fraction, seed)

    def known_set(images, labels):
        return ArraySet(images, splits.remap_labels(labels, known, family))

    test_known = _select(test_src.images, test_src.labels, known)
    test_unknown = _select(unknown_src.images, unknown_src.labels, unknown)
    where = f"{dataset} trial {trial} ({family} splits: known classes {list(known)}, unknown {list(unknown)})"
    _require_classes(train_src.labels[train_idx], known, "train", train_src.origin, where, pool=train_src.labels)
    if holdout_val:
        _require_classes(train_src.labels[val_idx], known, "val", train_src.origin, where, pool=train_src.labels)
    _require_classes(test_known[1], known, "test_known", test_src.origin, where)
    _require_classes(test_unknown[1], unknown, "test_unknown", unknown_src.origin, where)
    return OpenSetData(
        train=known_set(train_src.images[train_idx], train_src.labels[train_idx]),
        val=known_set(train_src.images[val_idx], train_src.labels[val_idx]),
        test_known=known_set(*test_known),
        test_unknown=ArraySet(test_unknown[0], test_unknown[1].astype(np.int32)),
        num_classes=len(known),
        image_size=spec.image_size,
        channels=spec.channels,
        mean=spec.mean(trial),
        std=spec.std(trial),
        flip=spec.flip,
        rotate=spec.rotate,
        scale_min=spec.scale_min,
        known=tuple(known),
        unknown=tuple(unknown),
        dataset=dataset,
        trial=trial,
        family=family,
    )


def with_normalisation(data: OpenSetData, normalisation: str) -> OpenSetData:
    """``data`` with the per-channel mean/std that ``normalisation`` names: ``"dataset"``, its own (the
    original's), or ``"vaze2022"``, Vaze et al.'s CIFAR statistics for every dataset (a one-channel image, our
    MNIST, which they convert to RGB, takes the first channel's)."""
    if normalisation == "dataset":
        return data
    if normalisation != "vaze2022":
        raise ValueError(f"normalisation={normalisation!r} is not one of ('dataset', 'vaze2022')")
    from cac_jax.data import augment

    c = data.channels
    return dataclasses.replace(data, mean=augment.VAZE_MEAN[:c], std=augment.VAZE_STD[:c])


# What training reads. A network is trained on the same data as another exactly when these agree, whatever the
# test sets: CIFAR+10 and CIFAR+50 share them (the original evaluates its CIFAR+10 networks on CIFAR+50's unknowns).
TRAINING_FIELDS = ("train", "val", "num_classes", "image_size", "channels", "mean", "std", "flip", "rotate",
                   "scale_min", "known", "trial", "family")


def _update(h, name: str, value) -> None:
    h.update(name.encode())
    if isinstance(value, ArraySet):
        for a in (value.images, value.labels):
            a = np.ascontiguousarray(a)
            h.update(f"{a.dtype.str}{a.shape}".encode())
            if a.size:  # an empty split (holdout_val=false) has no bytes to hash
                h.update(memoryview(a).cast("B"))
    else:
        h.update(repr(value).encode())


def fingerprints(data: OpenSetData) -> tuple[str, str]:
    """(a digest of everything ``data`` holds, of what training reads: :data:`TRAINING_FIELDS`). Equal digests mean
    the same data, so processes of one job can check they read the same, and a checkpoint records what it was
    trained on (about 1 s per GB of images)."""
    import hashlib

    training = hashlib.blake2b(digest_size=16)
    for name in TRAINING_FIELDS:
        _update(training, name, getattr(data, name))
    everything = training.copy()
    for field in dataclasses.fields(data):
        if field.name not in TRAINING_FIELDS:
            _update(everything, field.name, getattr(data, field.name))
    return everything.hexdigest(), training.hexdigest()


def fingerprint(data: OpenSetData) -> str:
    """The digest of everything ``data`` holds (:func:`fingerprints`)."""
    return fingerprints(data)[0]
