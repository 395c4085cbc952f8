"""On-device image preprocessing: the original's torchvision transforms, batched and jit-compiled.

Training (the original's order): Resize(S) → RandomResizedCrop(S, scale=(scale_min, 1),
ratio=(3/4, 4/3)) → RandomHorizontalFlip(flip) → RandomRotation(±rotate, nearest, fill 0) →
ToTensor → Normalize(mean, std). Evaluation: Resize(S) → (optional flip) → ToTensor → Normalize.

How it is computed. Input images are square uint8 (B, H, W, C). ``Resize`` to S×S is bilinear
(upscaling, e.g. MNIST 28→32, as PIL does: sample at ``(o + 0.5)·H/S − 0.5``, clamped to the
image) or, when shrinking, ``jax.image.resize`` with antialiasing. The crop, flip and rotation are
then one gather per output pixel, and this composition is exact, not an approximation: nearest
rotation only *selects* a pixel of the flipped crop, so for output pixel (y, x), with
a = −angle (radians, PIL's convention: positive angles turn counter-clockwise), c = S/2:

    u = cos a·(x + ½ − c) + sin a·(y + ½ − c) + c,   v = −sin a·(x + ½ − c) + cos a·(y + ½ − c) + c
    (rx, ry) = (⌊u⌋, ⌊v⌋)                 — outside [0, S) → fill 0 (PIL's nearest affine)
    fx = S − 1 − rx if flipped else rx      — horizontal flip of the crop
    (sx, sy) = (j + (fx + ½)·w/S − ½, i + (ry + ½)·h/S − ½), clamped to the box [j, j+w−1]×[i, i+h−1]

and the value is the bilinear interpolation of the resized image at (sy, sx). Like PIL on uint8
images we interpolate horizontally, round, then vertically, and round (round half up), so every
intermediate is an integer image as in torchvision. Remaining difference from PIL: float
coefficients instead of PIL's 22-bit fixed point (at most one grey level, rarely).

RandomResizedCrop parameters follow torchvision: up to 10 attempts of area fraction
~ U(scale_min, 1) and log aspect ratio ~ U(log r0, log r1); w = round(√(A·r)), h = round(√(A/r));
the first attempt with 0 < w ≤ S and 0 < h ≤ S wins, with top-left i ~ U{0..S−h}, j ~ U{0..S−w};
if none fits, the whole image (the fallback for square images). Vectorised: all 10 attempts are
drawn per image and ``argmax`` picks the first valid one.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

_ATTEMPTS = 10
DEFAULT_RATIO = (3.0 / 4.0, 4.0 / 3.0)


def _round(x):
    # PIL rounds half up when it stores interpolated uint8 values.
    return jnp.floor(x + 0.5)


def _gather(images, ys, xs):
    """images (B, H, W, C), integer ys/xs (B, S, S) → (B, S, S, C)."""
    return jax.vmap(lambda im, y, x: im[y, x])(images, ys, xs)


def _bilinear(images, sy, sx, y_lo, y_hi, x_lo, x_hi):
    """PIL-style bilinear sample of ``images`` at float (sy, sx) (B, S, S), clamped per image to
    the integer box [y_lo, y_hi] × [x_lo, x_hi] (each (B, 1, 1)); horizontal pass, round, vertical, round."""
    sy = jnp.clip(sy, y_lo, y_hi)
    sx = jnp.clip(sx, x_lo, x_hi)
    y0 = jnp.floor(sy).astype(jnp.int32)
    x0 = jnp.floor(sx).astype(jnp.int32)
    y1 = jnp.minimum(y0 + 1, y_hi.astype(jnp.int32))
    x1 = jnp.minimum(x0 + 1, x_hi.astype(jnp.int32))
    wy = (sy - y0)[..., None]
    wx = (sx - x0)[..., None]
    top = _round((1 - wx) * _gather(images, y0, x0) + wx * _gather(images, y0, x1))
    bottom = _round((1 - wx) * _gather(images, y1, x0) + wx * _gather(images, y1, x1))
    return _round((1 - wy) * top + wy * bottom)


def resize(images, size: int):
    """Resize square float images (B, H, H, C) with integer values to (B, size, size, C), as PIL does."""
    b, h, w, c = images.shape
    if (h, w) == (size, size):
        return images
    if h > size or w > size:
        return _round(jax.image.resize(images, (b, size, size, c), "bilinear", antialias=True))
    o = jnp.arange(size, dtype=jnp.float32)
    sy = jnp.broadcast_to(((o + 0.5) * h / size - 0.5)[None, :, None], (b, size, size))
    sx = jnp.broadcast_to(((o + 0.5) * w / size - 0.5)[None, None, :], (b, size, size))
    zero = jnp.zeros((b, 1, 1), jnp.float32)
    return _bilinear(images, sy, sx, zero, zero + (h - 1), zero, zero + (w - 1))


def crop_params(key, batch: int, size: int, scale_min: float, ratio=DEFAULT_RATIO):
    """torchvision RandomResizedCrop boxes for S×S images: int32 arrays (i, j, h, w), each (batch,)."""
    k_area, k_ratio, k_i, k_j = jax.random.split(key, 4)
    area = float(size * size)
    target = jax.random.uniform(k_area, (batch, _ATTEMPTS), minval=scale_min, maxval=1.0) * area
    log_r = jax.random.uniform(k_ratio, (batch, _ATTEMPTS), minval=math.log(ratio[0]), maxval=math.log(ratio[1]))
    aspect = jnp.exp(log_r)
    w = jnp.round(jnp.sqrt(target * aspect)).astype(jnp.int32)
    h = jnp.round(jnp.sqrt(target / aspect)).astype(jnp.int32)
    valid = (w > 0) & (w <= size) & (h > 0) & (h <= size)
    first = jnp.argmax(valid, axis=1)
    found = valid.any(axis=1)
    pick = lambda a: jnp.take_along_axis(a, first[:, None], axis=1)[:, 0]
    # Fallback for a square image: its aspect ratio 1 lies inside ``ratio``, so the whole image.
    w = jnp.where(found, pick(w), size)
    h = jnp.where(found, pick(h), size)
    i = jnp.floor(jax.random.uniform(k_i, (batch,)) * (size - h + 1)).astype(jnp.int32)
    j = jnp.floor(jax.random.uniform(k_j, (batch,)) * (size - w + 1)).astype(jnp.int32)
    return i, j, h, w


def warp(images, boxes, flips, angles, size: int):
    """Crop ``boxes`` (i, j, h, w) of S×S float images, resize to S, flip where ``flips``, rotate by
    ``angles`` degrees counter-clockwise (nearest, fill 0): the composition in the module docstring."""
    b = images.shape[0]
    i, j, h, w = (a.astype(jnp.float32)[:, None, None] for a in boxes)
    o = jnp.arange(size, dtype=jnp.float32) + 0.5
    ys = jnp.broadcast_to(o[None, :, None], (b, size, size))
    xs = jnp.broadcast_to(o[None, None, :], (b, size, size))
    if angles is None:
        rx, ry, inside = xs - 0.5, ys - 0.5, None
    else:
        a = -jnp.deg2rad(angles)[:, None, None]
        c = size / 2.0
        u = jnp.cos(a) * (xs - c) + jnp.sin(a) * (ys - c) + c
        v = -jnp.sin(a) * (xs - c) + jnp.cos(a) * (ys - c) + c
        rx, ry = jnp.floor(u), jnp.floor(v)
        inside = (u >= 0) & (rx < size) & (v >= 0) & (ry < size)
    if flips is not None:
        rx = jnp.where(flips[:, None, None], size - 1 - rx, rx)
    sy = i + (ry + 0.5) * h / size - 0.5
    sx = j + (rx + 0.5) * w / size - 0.5
    out = _bilinear(images, sy, sx, i, i + h - 1, j, j + w - 1)
    return out if inside is None else out * inside[..., None]


def _normalise(images, mean, std):
    mean = jnp.asarray(mean, jnp.float32)
    std = jnp.asarray(std, jnp.float32)
    return (images / 255.0 - mean) / std


@functools.partial(jax.jit, static_argnames=("image_size", "scale_min", "flip", "rotate", "mean", "std", "ratio"))
def _train_augment(key, images, *, image_size, scale_min, flip, rotate, mean, std, ratio):
    b = images.shape[0]
    k_crop, k_flip, k_rot = jax.random.split(key, 3)
    x = resize(images.astype(jnp.float32), image_size)
    boxes = crop_params(k_crop, b, image_size, scale_min, ratio)
    flips = jax.random.bernoulli(k_flip, flip, (b,)) if flip > 0 else None
    angles = jax.random.uniform(k_rot, (b,), minval=-rotate, maxval=rotate) if rotate > 0 else None
    return _normalise(warp(x, boxes, flips, angles, image_size), mean, std)


def train_augment(key, images, *, image_size: int, scale_min: float, flip: float, rotate: float, mean, std, ratio=DEFAULT_RATIO):
    """Randomly augment a batch of uint8 images (B, H, H, C) → normalised float32 (B, S, S, C).

    Deterministic for ``key``; each image draws its own crop, flip (probability ``flip``) and
    angle ~ U(−rotate, rotate) degrees. ``image_size`` S, the settings and ``mean``/``std``
    (per channel, for [0, 1] pixels) are compile-time constants; jit-compiled per setting.
    """
    _check(images, image_size)
    return _train_augment(
        key, images, image_size=int(image_size), scale_min=float(scale_min), flip=float(flip),
        rotate=float(rotate), mean=_floats(mean), std=_floats(std), ratio=_floats(ratio),
    )


@functools.partial(jax.jit, static_argnames=("image_size", "mean", "std", "hflip"))
def _eval_preprocess(images, *, image_size, mean, std, hflip):
    x = resize(images.astype(jnp.float32), image_size)
    if hflip:
        x = x[:, :, ::-1, :]
    return _normalise(x, mean, std)


def eval_preprocess(images, *, image_size: int, mean, std, hflip: bool = False):
    """Resize uint8 images (B, H, H, C) to S, optionally mirror them, normalise → float32 (B, S, S, C)."""
    _check(images, image_size)
    return _eval_preprocess(images, image_size=int(image_size), mean=_floats(mean), std=_floats(std), hflip=bool(hflip))


def _floats(values) -> tuple[float, ...]:
    return tuple(float(v) for v in values)


def _check(images, image_size) -> None:
    shape = getattr(images, "shape", None)
    if shape is None or len(shape) != 4 or shape[1] != shape[2]:
        raise ValueError(f"expected a batch of square images (B, H, H, C), got shape {shape}")
    if int(image_size) < 1:
        raise ValueError(f"image_size must be positive, got {image_size!r}")


# Vaze et al.'s normalisation, the CIFAR statistics for every dataset (MODERN_PROTOCOL.md (b)); a one-channel
# image (our MNIST; they convert it to RGB) takes the first channel's.
VAZE_MEAN = (0.4914, 0.4822, 0.4465)
VAZE_STD = (0.2023, 0.1994, 0.2010)


@functools.partial(jax.jit, static_argnames=("image_size", "n", "m", "ops", "flip", "mean", "std"))
def _randaugment_train(key, images, *, image_size, n, m, ops, flip, mean, std):
    from cac_jax.data import randaugment

    b = images.shape[0]
    k_ra, k_crop, k_flip = jax.random.split(key, 3)
    x = randaugment.rand_augment(k_ra, images, n=n, m=m, ops=ops)
    x = resize(x.astype(jnp.float32), image_size)
    padded = jnp.pad(x, ((0, 0), (4, 4), (4, 4), (0, 0)))
    offsets = jax.random.randint(k_crop, (b, 2), 0, 9)
    x = jax.vmap(lambda img, o: jax.lax.dynamic_slice(img, (o[0], o[1], 0), (image_size, image_size, img.shape[-1])))(
        padded, offsets)
    flips = jax.random.bernoulli(k_flip, flip, (b,))
    x = jnp.where(flips[:, None, None, None], x[:, :, ::-1, :], x)
    return _normalise(x, mean, std)


def randaugment_train(key, images, *, image_size: int, n: int, m: float, ops, flip: float = 0.5, mean, std):
    """Vaze et al.'s train augmentation of uint8 images (B, H, H, C) → normalised float32 (B, S, S, C):
    RandAugment(n, m) at the stored size (:mod:`cac_jax.data.randaugment`), Resize(S), RandomCrop(S,
    padding=4) with zero padding, RandomHorizontalFlip(``flip``, digits too), Normalize(mean, std)."""
    _check(images, image_size)
    return _randaugment_train(key, images, image_size=int(image_size), n=int(n), m=float(m), ops=tuple(ops),
                              flip=float(flip), mean=_floats(mean), std=_floats(std))
