"""Reading a source dataset split into host memory through TFDS (array_record, no TensorFlow).

A *source* is one labelled image collection with ``train`` and ``test`` splits:

=================  =================================================  ===========================
source             read from                                          image shape
=================  =================================================  ===========================
``digits``         our ``cac_digits`` builder (scikit-learn, bundled)  (8, 8, 1)
``mnist``          ``mnist.npz`` via ``cac_local_npz``, or TFDS ``mnist``          (28, 28, 1)
``svhn``           ``svhn.npz`` via ``cac_local_npz``, or TFDS ``svhn_cropped``    (32, 32, 3)
``cifar10``        ``cifar10.npz`` via ``cac_local_npz``, or TFDS ``cifar10``      (32, 32, 3)
``cifar100``       ``cifar100.npz`` (fine labels) or TFDS ``cifar100`` (``label`` = fine)  (32, 32, 3)
``tiny_imagenet``  our ``cac_tiny_imagenet`` builder (manual archive)  (64, 64, 3)
=================  =================================================  ===========================

Every path is ``builder.as_data_source()[split]`` → batched ``__getitems__`` reads → one uint8
array. Nothing here downloads: built-in TFDS datasets must already be prepared in array_record
format (``tfds build mnist --file_format=array_record``), else a FileNotFoundError says how.

Data directories: ``data_dir`` if given; otherwise our builders use ``$CAC_JAX_DATA_DIR`` or
``~/.cache/cac_jax/tensorflow_datasets``, and the built-in TFDS datasets TFDS's own default
(``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``), where ``tfds build`` puts them.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

SOURCES = ("digits", "mnist", "svhn", "cifar10", "cifar100", "tiny_imagenet")
SPLITS = ("train", "test")
IMAGE_SHAPES = {
    "digits": (8, 8, 1),
    "mnist": (28, 28, 1),
    "svhn": (32, 32, 3),
    "cifar10": (32, 32, 3),
    "cifar100": (32, 32, 3),
    "tiny_imagenet": (64, 64, 3),
}
TFDS_NAMES = {"mnist": "mnist", "svhn": "svhn_cropped", "cifar10": "cifar10", "cifar100": "cifar100"}
_READ_CHUNK = 8192


@dataclasses.dataclass(frozen=True)
class SourceSplit:
    """One split in host memory: ``images`` uint8 (n, H, W, C), ``labels`` int64 (n,).

    ``original_order`` is True when position i is image i of the torchvision/Keras order (our
    builders), so the original's ``trainval_idxs.json`` applies; built-in TFDS datasets store a
    shuffled order, so it is False for them.
    """

    images: np.ndarray
    labels: np.ndarray
    original_order: bool


def default_data_dir() -> str:
    """Where our builders prepare data: ``$CAC_JAX_DATA_DIR`` or ``~/.cache/cac_jax/tensorflow_datasets``."""
    return os.environ.get("CAC_JAX_DATA_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "cac_jax", "tensorflow_datasets")


def _download_config(manual_dir=None):
    import tensorflow_datasets as tfds

    # try_download_gcs=False: never look for a pre-built copy on Google's bucket.
    return tfds.download.DownloadConfig(manual_dir=manual_dir, try_download_gcs=False)


def _read_all(source, keyed_by_index: bool) -> tuple[np.ndarray, np.ndarray]:
    """All examples of a TFDS data source as stacked arrays, sorted by ``index`` when stored."""
    n = len(source)
    images, labels, index = [], [], []
    for start in range(0, n, _READ_CHUNK):
        for ex in source.__getitems__(list(range(start, min(n, start + _READ_CHUNK)))):
            images.append(ex["image"])
            labels.append(ex["label"])
            if keyed_by_index:
                index.append(ex["index"])
    if not images:
        raise ValueError("the split is empty")
    images = np.stack(images).astype(np.uint8, copy=False)
    labels = np.asarray(labels, dtype=np.int64)
    if keyed_by_index:
        order = np.argsort(np.asarray(index, dtype=np.int64), kind="stable")
        images, labels = images[order], labels[order]
    return images, labels


def _prepare_and_read(builder, split: str, manual_dir=None) -> SourceSplit:
    # A no-op when already prepared; otherwise TFDS shows its progress bars while it writes.
    builder.download_and_prepare(download_config=_download_config(manual_dir))
    images, labels = _read_all(builder.as_data_source()[split], keyed_by_index=True)
    return SourceSplit(images, labels, original_order=True)


def read_digits(split: str, *, data_dir=None) -> SourceSplit:
    """scikit-learn's 8x8 digits (see :mod:`cac_jax.data.builders.digits`), prepared once and cached."""
    from cac_jax.data.builders.digits import CacDigits

    return _prepare_and_read(CacDigits(data_dir=data_dir or default_data_dir(), file_format="array_record"), _check_split(split))


def read_npz(path, split: str, *, data_dir=None) -> SourceSplit:
    """A Keras-layout ``.npz`` file (see :mod:`cac_jax.data.builders.local_npz`), prepared once per file version."""
    from cac_jax.data.builders.local_npz import CacLocalNpz, npz_config

    builder = CacLocalNpz(config=npz_config(path), data_dir=data_dir or default_data_dir(), file_format="array_record")
    return _prepare_and_read(builder, _check_split(split))


def read_tiny_imagenet(split: str, *, data_dir=None, manual_dir=None) -> SourceSplit:
    """Tiny ImageNet from ``manual_dir`` (see :mod:`cac_jax.data.builders.tiny_imagenet`), prepared once.

    Once prepared in ``data_dir`` the manual directory is no longer needed.
    """
    from cac_jax.data.builders.tiny_imagenet import INSTRUCTIONS, CacTinyImagenet, find_tree

    builder = CacTinyImagenet(data_dir=data_dir or default_data_dir(), file_format="array_record")
    if not builder.is_prepared():
        if manual_dir is None:
            raise FileNotFoundError(f"Tiny ImageNet is not prepared in {builder.data_dir!r} and no manual_dir was given. {INSTRUCTIONS}")
        if not os.path.isdir(manual_dir):
            raise FileNotFoundError(f"manual directory {os.fspath(manual_dir)!r} does not exist. {INSTRUCTIONS}")
        find_tree(os.fspath(manual_dir))  # a clear error before TFDS starts preparing
    return _prepare_and_read(builder, _check_split(split), manual_dir=manual_dir)


def read_tfds(source: str, split: str, *, data_dir=None) -> SourceSplit:
    """A built-in TFDS dataset that the user has already prepared in array_record format.

    Never downloads or prepares: an unprepared dataset raises FileNotFoundError with the command
    that prepares it (run it where there is network) and the npz alternative.
    """
    import tensorflow_datasets as tfds

    name = TFDS_NAMES[source]
    builder = tfds.builder(name, data_dir=data_dir, try_gcs=False)
    where = os.fspath(builder.data_dir)
    how = (
        f"Prepare it with `tfds build {name} --file_format=array_record"
        + (f" --data_dir={data_dir}`" if data_dir else "`")
        + f" on a machine with network, or pass a Keras-layout {source}.npz (npz_path)."
    )
    if not builder.is_prepared():
        raise FileNotFoundError(f"TFDS dataset {name!r} is not prepared in {where!r}; this program never downloads. {how}")
    file_format = builder.info.file_format
    if file_format is None or getattr(file_format, "value", file_format) != "array_record":
        raise ValueError(f"TFDS dataset {name!r} in {where!r} is stored as {file_format}, but random access needs array_record. {how}")
    images, labels = _read_all(builder.as_data_source()[_check_split(split)], keyed_by_index=False)
    return SourceSplit(images, labels, original_order=False)


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    return split


def read_source(source: str, split: str, *, data_dir=None, npz_file=None, manual_dir=None) -> SourceSplit:
    """Read ``split`` of ``source`` (see the module table), checking its image shape.

    ``npz_file`` (mnist, svhn, cifar10, cifar100) reads that file instead of the built-in TFDS
    dataset; ``manual_dir`` is where Tiny ImageNet's archive lies.
    """
    if source not in SOURCES:
        raise ValueError(f"unknown source dataset {source!r}; choose one of {', '.join(SOURCES)}")
    if npz_file is not None and source in ("digits", "tiny_imagenet"):
        raise ValueError(f"source {source!r} does not read .npz files (got {os.fspath(npz_file)!r})")
    expected = IMAGE_SHAPES[source]
    if npz_file is not None:
        from cac_jax.data.builders.local_npz import inspect_npz

        shape = inspect_npz(npz_file)  # checks before the (slower) preparation
        if shape != expected:
            raise ValueError(f"{source} images in {os.fspath(npz_file)!r} have shape {shape}, expected {expected} (H, W, C)")
    if source == "digits":
        out = read_digits(split, data_dir=data_dir)
    elif source == "tiny_imagenet":
        out = read_tiny_imagenet(split, data_dir=data_dir, manual_dir=manual_dir)
    elif npz_file is not None:
        out = read_npz(npz_file, split, data_dir=data_dir)
    else:
        out = read_tfds(source, split, data_dir=data_dir)
    if out.images.shape[1:] != expected:
        raise ValueError(f"{source} images have shape {out.images.shape[1:]}, expected {expected} (H, W, C)")
    return out
