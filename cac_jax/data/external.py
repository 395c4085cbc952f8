"""Images from outside a run's benchmark: unknowns from other datasets, a calibration set, images to classify.

A *source* names a set of images:

==================  ==========================================================================================
``PATH.npz``        a Keras-layout file: its ``x_test`` images (else ``x``, else ``images``); with ``y_test``
                    (else ``y``, ``labels``) beside them, the labels are kept
``DIR``             every ``.png``, ``.jpg``, ``.jpeg``, ``.bmp``, ``.gif`` and ``.webp`` below it, in sorted path order
``IMAGE.png``       one image file (PNG, JPEG, ...)
``tfds:NAME``       the ``test`` split's ``image`` feature of the TFDS dataset NAME, prepared in array_record format
                    (never downloaded: ``tfds build NAME --file_format=array_record`` where there is network)
``noise:gaussian``  1,000 images of independent pixels, round(255·clip(N(0.5, 0.25²), 0, 1)), seed 0
``noise:uniform``   1,000 images of independent pixels, uniform on 0..255, seed 0
==================  ==========================================================================================

**The conversion rule** that puts any image in a run's own format, C channels of H x W pixels (those of the run's
training images, e.g. 28 x 28 x 1 for MNIST), before the run's evaluation preprocessing (the same resize to the
network's input and normalisation as its own test images):

1. channels, by Pillow's conversions: RGB (or RGBA, alpha dropped; palette images first to RGB) to one channel by
   ITU-R 601-2 luma, L = R·299/1000 + G·587/1000 + B·114/1000; one channel to RGB by copying it to R, G and B;
2. size, when it differs: Pillow's bilinear resize to H x W (antialiased when shrinking; the aspect ratio is not
   kept).

:func:`conform` applies it to arrays whose channel count is given; images to classify (:mod:`cac_jax.runs.predict`)
must already have the run's channel count when they come as arrays (a wrong count is refused), while files are
converted by their mode.
"""

from __future__ import annotations

import dataclasses
import os
import re

import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
NOISE = {"gaussian", "uniform"}
NOISE_COUNT = 1000
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclasses.dataclass(frozen=True)
class ImageSet:
    """uint8 images (n, H, W, C) in the run's format, where they came from (one entry per image: a file path or
    ``source[i]``), their labels if the source has them, and the source as given."""

    images: np.ndarray
    origins: tuple[str, ...]
    labels: np.ndarray | None
    source: str

    def __len__(self) -> int:
        return len(self.images)


def parse_named(item: str) -> tuple[str, str]:
    """``"NAME=SOURCE"`` -> (NAME, SOURCE); NAME is a short label (letters, digits, ``_ . -``; no ``__``)."""
    name, sep, source = item.partition("=")
    name, source = name.strip(), source.strip()
    if not sep or not source:
        raise ValueError(f"unknowns {item!r}: expected NAME=SOURCE, e.g. fashion=../shared/data/fashion_mnist_test.npz "
                         f"or noise=noise:gaussian")
    if not NAME_PATTERN.match(name) or "__" in name:
        raise ValueError(f"unknowns {item!r}: the name {name!r} must be letters, digits, '_', '.' or '-' (no '__')")
    return name, source


def check_named(items) -> list[tuple[str, str]]:
    """Every ``NAME=SOURCE`` parsed, names distinct, sources well formed (the files are read later)."""
    parsed = [parse_named(i) for i in items]
    names = [n for n, _ in parsed]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"unknowns: the name(s) {repeated} are given more than once")
    for _, source in parsed:
        kind, _, rest = source.partition(":")
        if kind == "noise" and rest not in NOISE:
            raise ValueError(f"unknowns source {source!r}: the built-in noise sets are "
                             f"{', '.join('noise:' + n for n in sorted(NOISE))}")
    return parsed


def conform(images: np.ndarray, shape: tuple[int, int, int], what: str, *, channels_known: bool = True) -> np.ndarray:
    """uint8 images (n, h, w[, c]) in the run's ``shape`` (H, W, C) by the module's conversion rule.
    ``channels_known=False`` refuses a channel count other than C instead of converting it."""
    x = np.asarray(images)
    if x.dtype != np.uint8:
        raise ValueError(f"{what}: images must be uint8 (0..255), got dtype {x.dtype}")
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3, 4) or min(x.shape[1:3], default=0) < 1:
        raise ValueError(f"{what}: expected images of shape (n, H, W) or (n, H, W, C) with C in 1, 3, 4; "
                         f"got {x.shape}")
    height, width, channels = shape
    if x.shape[-1] != channels and not channels_known:
        raise ValueError(f"{what}: images with {x.shape[-1]} channels, but the network takes {channels} "
                         f"(shape {x.shape[1:]}, expected (H, W, {channels}))")
    if x.shape[1:] == (height, width, channels):
        return x
    from PIL import Image

    mode = "L" if channels == 1 else "RGB"
    out = np.empty((len(x), height, width, channels), np.uint8)
    for i, image in enumerate(x):
        pil = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image,
                              mode={1: "L", 3: "RGB", 4: "RGBA"}[image.shape[-1]])
        out[i] = _pil_to_array(pil, mode, (width, height), channels)
    return out


def _pil_to_array(pil, mode: str, size: tuple[int, int], channels: int) -> np.ndarray:
    from PIL import Image

    if pil.mode not in ("L", "RGB"):
        pil = pil.convert("RGB")  # palette, RGBA, CMYK, 16-bit grey...: RGB first, then the rule
    if pil.mode != mode:
        pil = pil.convert(mode)
    if pil.size != size:
        pil = pil.resize(size, Image.BILINEAR)
    return np.asarray(pil, np.uint8).reshape(size[1], size[0], channels)


def read_image_file(path: str, shape: tuple[int, int, int]) -> np.ndarray:
    """One image file as (H, W, C) uint8 in the run's format; a file that is not an image is named."""
    from PIL import Image, UnidentifiedImageError

    height, width, channels = shape
    try:
        with Image.open(path) as pil:
            pil.load()
            return _pil_to_array(pil, "L" if channels == 1 else "RGB", (width, height), channels)
    except FileNotFoundError:
        raise FileNotFoundError(f"no image file at {path}") from None
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise ValueError(f"{path} is not an image Pillow can read ({type(e).__name__}: {e})") from None


def image_files(directory: str) -> list[str]:
    """The image files below ``directory`` (by suffix, case-insensitive), sorted by path."""
    found = []
    for root, dirs, files in os.walk(directory):
        dirs.sort()
        found += [os.path.join(root, f) for f in sorted(files) if f.lower().endswith(IMAGE_SUFFIXES)]
    return found


def _npz(path: str, shape, strict_channels: bool = False) -> ImageSet:
    import zipfile

    try:
        with np.load(path) as f:
            arrays = {k: f[k] for k in ("x_test", "x", "images", "y_test", "y", "labels") if k in f.files}
            names = sorted(f.files)
    except FileNotFoundError:
        raise FileNotFoundError(f"no file at {path}") from None
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path} is not a readable .npz file ({type(e).__name__}: {str(e)[:120]})") from None
    key = next((k for k in ("x_test", "x", "images") if k in arrays), None)
    if key is None:
        raise ValueError(f"{path} holds {names}, but no images under x_test, x or images (the Keras layout: "
                         f"numpy.savez(path, x_test=..., y_test=...))")
    images = arrays[key]
    label_key = {"x_test": "y_test", "x": "y", "images": "labels"}[key]
    labels = np.asarray(arrays[label_key]).reshape(-1) if label_key in arrays else None
    if labels is not None and len(labels) != len(images):
        raise ValueError(f"{path}: {len(images)} images in {key} but {len(labels)} labels in {label_key}")
    return ImageSet(conform(images, shape, f"{path} ({key})", channels_known=not strict_channels),
                    tuple(f"{path}[{i}]" for i in range(len(images))), labels, path)


def _tfds(name: str, shape, data_dir) -> ImageSet:
    import tensorflow_datasets as tfds

    how = (f"prepare it with `tfds build {name} --file_format=array_record"
           + (f" --data_dir={data_dir}`" if data_dir else "`") + " on a machine with network (nothing is downloaded here)")
    try:
        builder = tfds.builder(name, data_dir=data_dir, try_gcs=False)
    except Exception as e:  # noqa: BLE001  (TFDS raises its own DatasetNotFoundError and friends)
        raise ValueError(f"tfds:{name}: no such TFDS dataset ({str(e).splitlines()[0][:200]})") from None
    if not builder.is_prepared():
        raise FileNotFoundError(f"tfds:{name} is not prepared in {builder.data_dir}: {how}")
    file_format = getattr(builder.info.file_format, "value", builder.info.file_format)
    if file_format != "array_record":
        raise ValueError(f"tfds:{name} in {builder.data_dir} is stored as {file_format}, not array_record: {how}")
    if "test" not in builder.info.splits or "image" not in builder.info.features:
        raise ValueError(f"tfds:{name} has splits {sorted(builder.info.splits)} and features "
                         f"{sorted(builder.info.features)}; a set of unknowns needs a test split with an image feature")
    source = builder.as_data_source()["test"]
    images = np.stack([r["image"] for r in source.__getitems__(list(range(len(source))))]) if len(source) else None
    if images is None:
        raise ValueError(f"tfds:{name}: its test split holds no images")
    return ImageSet(conform(images, shape, f"tfds:{name}"), tuple(f"tfds:{name}[{i}]" for i in range(len(images))),
                    None, f"tfds:{name}")


def _noise(kind: str, shape) -> ImageSet:
    rng = np.random.default_rng(0)
    size = (NOISE_COUNT, *shape)
    if kind == "gaussian":
        images = np.round(255 * np.clip(rng.normal(0.5, 0.25, size), 0, 1)).astype(np.uint8)
    else:
        images = rng.integers(0, 256, size, dtype=np.uint8)
    return ImageSet(images, tuple(f"noise:{kind}[{i}]" for i in range(NOISE_COUNT)), None, f"noise:{kind}")


def read(source: str, shape: tuple[int, int, int], *, data_dir=None, strict_channels: bool = False) -> ImageSet:
    """The images of ``source`` (see the module table) in the run's ``shape`` (H, W, C); ``strict_channels``: an
    .npz's arrays must have C channels (refused otherwise) instead of being converted."""
    shape = tuple(int(s) for s in shape)
    kind, sep, rest = source.partition(":")
    if sep and kind == "noise":
        if rest not in NOISE:
            raise ValueError(f"{source!r}: the built-in noise sets are {', '.join('noise:' + n for n in sorted(NOISE))}")
        return _noise(rest, shape)
    if sep and kind == "tfds":
        return _tfds(rest, shape, data_dir)
    path = os.path.expanduser(source)
    if os.path.isdir(path):
        files = image_files(path)
        if not files:
            raise ValueError(f"{path} holds no image files ({', '.join(IMAGE_SUFFIXES)})")
        return ImageSet(np.stack([read_image_file(f, shape) for f in files]), tuple(files), None, source)
    if path.endswith(".npz"):
        return _npz(path, shape, strict_channels)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{source!r} is neither a file, a directory, tfds:NAME nor noise:KIND")
    return ImageSet(read_image_file(path, shape)[None], (path,), None, source)


def _row_digests(images: np.ndarray) -> list[bytes]:
    import hashlib

    flat = np.ascontiguousarray(images).reshape(len(images), -1)
    return [hashlib.blake2b(row.tobytes(), digest_size=12).digest() for row in flat]


def shared_images(images: np.ndarray, others: np.ndarray) -> int:
    """How many of ``images`` also occur, byte for byte, in ``others`` (a calibration set must share none with the
    images the network trained or is tested on)."""
    if not len(images) or not len(others):
        return 0
    theirs = set(_row_digests(others))
    return sum(d in theirs for d in _row_digests(images))
