"""``cac_local_npz``: a Keras-layout ``.npz`` file prepared into array_record.

The file holds ``x_train``, ``y_train``, ``x_test``, ``y_test``: images uint8 of shape (n, H, W)
or (n, H, W, C) with C in {1, 3}, labels integers of shape (n,) or (n, 1) — the layout of
``keras.datasets.{mnist,cifar10,cifar100}.load_data()`` saved with ``np.savez``.

Caching: each file gets its own builder config named ``<stem>_<fingerprint>``, where the
fingerprint is the first 16 hex digits of SHA-256 over the file's absolute path, size and
modification time (ns). Preparing the same unchanged file again reuses the prepared data; an edited,
replaced or moved file gets a new fingerprint and is prepared afresh, never served stale.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import zipfile

import numpy as np
import tensorflow_datasets as tfds

from cac_jax.data.builders.common import generate_examples, image_features

KEYS = ("x_train", "y_train", "x_test", "y_test")


def _array_header(zf: zipfile.ZipFile, key: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of one array of an npz, read from its header without loading the data."""
    with zf.open(key + ".npy") as f:
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read(f)
    return shape, dtype


def inspect_npz(path) -> tuple[int, int, int]:
    """Check an npz file's keys, shapes and dtypes; return its image shape (H, W, C).

    Raises FileNotFoundError if it is missing and ValueError naming the first problem otherwise.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"npz file not found: {path!r}; put there a Keras-layout .npz, i.e. "
            "numpy.savez(path, x_train=..., y_train=..., x_test=..., y_test=...) with uint8 images"
        )
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise ValueError(f"{path!r} is not an .npz file (numpy.savez output)") from None
    with zf:
        names = {n[:-4] for n in zf.namelist() if n.endswith(".npy")}
        missing = [k for k in KEYS if k not in names]
        if missing:
            raise ValueError(f"npz file {path!r} lacks {missing}; it must hold {list(KEYS)} (Keras layout)")
        h = {k: _array_header(zf, k) for k in KEYS}
    image_shape = None
    for split in ("train", "test"):
        (xs, xd), (ys, yd) = h["x_" + split], h["y_" + split]
        if xd != np.uint8:
            raise ValueError(f"npz file {path!r}: x_{split} has dtype {xd}, expected uint8 pixels 0..255")
        if len(xs) == 3:
            xs = xs + (1,)
        if len(xs) != 4 or xs[3] not in (1, 3):
            raise ValueError(f"npz file {path!r}: x_{split} has shape {h['x_' + split][0]}, expected (n, H, W) or (n, H, W, C) with C 1 or 3")
        if xs[0] == 0:
            raise ValueError(
                f"npz file {path!r}: x_{split} holds no images; both splits need images (TFDS cannot prepare an empty one)"
            )
        if not (len(ys) == 1 or (len(ys) == 2 and ys[1] == 1)) or ys[0] != xs[0]:
            raise ValueError(f"npz file {path!r}: y_{split} has shape {ys}, expected ({xs[0]},) to match x_{split}")
        if not np.issubdtype(yd, np.integer):
            raise ValueError(f"npz file {path!r}: y_{split} has dtype {yd}, expected integer labels")
        if image_shape is not None and xs[1:] != image_shape:
            raise ValueError(f"npz file {path!r}: x_train images are {image_shape} but x_test images are {xs[1:]}")
        image_shape = xs[1:]
    return tuple(int(d) for d in image_shape)


def read_labels(path) -> dict[str, np.ndarray]:
    """``{"y_train": labels, "y_test": labels}`` of an inspected npz file, flat, read without its images
    (cheap), to check them before the preparation."""
    with np.load(os.fspath(path)) as npz:
        return {k: npz[k].reshape(-1) for k in ("y_train", "y_test")}


def fingerprint(path) -> str:
    """16 hex digits identifying the file by absolute path, size and modification time."""
    path = os.path.abspath(os.fspath(path))
    st = os.stat(path)
    return hashlib.sha256(f"{path}\0{st.st_size}\0{st.st_mtime_ns}".encode()).hexdigest()[:16]


@dataclasses.dataclass(eq=False)
class NpzConfig(tfds.core.BuilderConfig):
    """One prepared npz file: its path and image shape (H, W, C)."""

    npz_path: str = ""
    image_shape: tuple[int, int, int] = (0, 0, 0)


def npz_config(path) -> NpzConfig:
    """Validate ``path`` and build its config (name ``<stem>_<fingerprint>``, see module docstring)."""
    shape = inspect_npz(path)
    stem = "".join(ch if ch.isalnum() else "_" for ch in os.path.basename(os.fspath(path)).removesuffix(".npz")).lower()
    return NpzConfig(
        name=f"{stem}_{fingerprint(path)}",
        version=tfds.core.Version("1.0.0"),
        description=f"Prepared from {os.path.abspath(os.fspath(path))}",
        npz_path=os.path.abspath(os.fspath(path)),
        image_shape=shape,
    )


class CacLocalNpz(tfds.core.GeneratorBasedBuilder):
    """Keras-layout ``.npz`` images and labels; construct with ``config=npz_config(path)``."""

    name = "cac_local_npz"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    BUILDER_CONFIGS = []  # configs are made per file by npz_config()

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description=__doc__,
            features=image_features(self.builder_config.image_shape),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # the file is local
        with np.load(self.builder_config.npz_path) as npz:
            arrays = {k: npz[k] for k in KEYS}
        out = {}
        for split in ("train", "test"):
            x = arrays["x_" + split]
            x = x[..., None] if x.ndim == 3 else x
            out[split] = generate_examples(x, arrays["y_" + split].reshape(-1).astype(np.int64))
        return out

    def _generate_examples(self):  # abstract in TFDS; the split generators above do the work
        raise NotImplementedError
