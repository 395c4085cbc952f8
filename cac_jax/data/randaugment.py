"""RandAugment as Vaze et al. (ICLR 2022) train with it, on the device: their ``data/augmentations/randaugment.py``
(adapted from ildoonet/pytorch-randaugment; MODERN_PROTOCOL.md (e)), op by op as Pillow computes it, on
uint8 images (B, H, W, C), jit- and vmap-friendly.

Every image draws ``n`` ops uniformly with replacement from the op list and applies each at the fixed
magnitude ``m`` (0..30): value = m / 30 · (max − min) + min; Rotate, ShearX/Y and TranslateX/Yabs take a random
sign. The 16-op list is theirs for CIFAR10, CIFAR+N and TinyImageNet; MNIST and SVHN use the 13-op list
without Rotate and TranslateX/Yabs (:data:`OPS`, :data:`OPS_DIGITS`).

How each op matches Pillow (``tests/test_randaugment.py`` checks every one against Pillow on random images):

* exactly: Equalize (Pillow's LUT), Invert, Posterize (bits = max(1, int(v))), Solarize,
  SolarizeAdd (their numpy code, then Solarize at 128), Color, Contrast (blend with the rounded mean of L),
  Brightness (Pillow's blend: float32 in1 + f·(in2 − in1), truncated), Rotate, ShearX/Y and TranslateX/Yabs
  (the source pixel of every output pixel is computed on the host in float64 the way Pillow's nearest
  affine transform steps through the image, with black outside), CutoutAbs (their numpy box, Pillow's
  inclusive rectangle, fill (125, 123, 114));
  Sharpness (Pillow's 3×3 SMOOTH filter rounded, border pixels unfiltered, then the blend);
* within one grey level: AutoContrast, computed exactly in integers, where Pillow's double-precision LUT falls
  one level short of an exact integer (see :func:`autocontrast`).

One-channel images (our MNIST) get the same ops; Color is then the identity (as Pillow's on an "L" image) and
CutoutAbs fills 125.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

OPS = ("AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "SolarizeAdd", "Color", "Contrast",
       "Brightness", "Sharpness", "ShearX", "ShearY", "CutoutAbs", "TranslateXabs", "TranslateYabs")
OPS_DIGITS = tuple(op for op in OPS if op not in ("Rotate", "TranslateXabs", "TranslateYabs"))
DIGIT_DATASETS = ("mnist", "svhn", "digits")  # the datasets that get OPS_DIGITS (theirs: svhn, mnist)
RANGES = {"AutoContrast": (0, 1), "Equalize": (0, 1), "Invert": (0, 1), "Rotate": (0, 30), "Posterize": (0, 4),
          "Solarize": (0, 256), "SolarizeAdd": (0, 110), "Color": (0.1, 1.9), "Contrast": (0.1, 1.9),
          "Brightness": (0.1, 1.9), "Sharpness": (0.1, 1.9), "ShearX": (0.0, 0.3), "ShearY": (0.0, 0.3),
          "CutoutAbs": (0, 40), "TranslateXabs": (0.0, 100), "TranslateYabs": (0.0, 100)}
SIGNED = ("Rotate", "ShearX", "ShearY", "TranslateXabs", "TranslateYabs")
CUTOUT_FILL = (125, 123, 114)


def op_value(op: str, m: float) -> float:
    lo, hi = RANGES[op]
    return (m / 30.0) * (hi - lo) + lo


# ------------------------------------------------------------------------------------ lookup-table ops

def _lut(img, table):
    return jnp.asarray(table, jnp.uint8)[img.astype(jnp.int32)]


def invert(img):
    return (255 - img.astype(jnp.int32)).astype(jnp.uint8)


def posterize(img, bits: int):
    return (img.astype(jnp.int32) & ~(2 ** (8 - bits) - 1)).astype(jnp.uint8)


def solarize(img, threshold: float):
    x = img.astype(jnp.int32)
    return jnp.where(x < threshold, x, 255 - x).astype(jnp.uint8)


def solarize_add(img, addition: float, threshold: float = 128):
    x = jnp.clip(img.astype(jnp.float32) + addition, 0, 255).astype(jnp.uint8)  # numpy's int + float, then uint8
    return solarize(x, threshold)


def _per_channel(fn, img):
    return jnp.stack([fn(img[..., c]) for c in range(img.shape[-1])], axis=-1)


def autocontrast(img):
    """Each channel's [min, max] stretched to [0, 255]: floor((x − lo)·255 / (hi − lo)) in integers. Pillow computes
    int(x·s − lo·s) with s = 255 / (hi − lo) in double precision, which lands one grey level lower where the
    exact value is an integer in 0.4% of the (lo, hi, x) combinations; elsewhere the two are equal."""
    def channel(x):
        x = x.astype(jnp.int32)
        lo, hi = jnp.min(x), jnp.max(x)
        stretched = ((x - lo) * 255) // jnp.maximum(hi - lo, 1)
        return jnp.where(hi > lo, stretched, x).astype(jnp.uint8)

    return _per_channel(channel, img)


def equalize(img):
    def channel(x):
        hist = jnp.bincount(x.ravel().astype(jnp.int32), length=256)
        nonzero = hist > 0
        last = hist[255 - jnp.argmax(nonzero[::-1])]  # the count of the last non-empty bin
        step = (jnp.sum(hist) - last) // 255
        safe = jnp.maximum(step, 1)
        before = jnp.cumsum(hist) - hist  # pixels below each value
        lut = jnp.clip((step // 2 + before) // safe, 0, 255)
        identity = (jnp.sum(nonzero) <= 1) | (step == 0)
        return jnp.where(identity, x.astype(jnp.int32), lut[x.astype(jnp.int32)]).astype(jnp.uint8)

    return _per_channel(channel, img)


# --------------------------------------------------------------------------------------- blend ops

def _blend(degenerate, img, factor: float):
    """Pillow's ``Image.blend``: float32 in1 + f·(in2 − in1), truncated to uint8."""
    a = degenerate.astype(jnp.float32)
    t = a + jnp.float32(factor) * (img.astype(jnp.float32) - a)
    return jnp.clip(jnp.trunc(t), 0, 255).astype(jnp.uint8)


def _luma(img):
    """Pillow's RGB -> L: (19595 R + 38470 G + 7471 B + 2^15) >> 16."""
    if img.shape[-1] == 1:
        return img[..., 0].astype(jnp.int32)
    x = img.astype(jnp.int32)
    return (x[..., 0] * 19595 + x[..., 1] * 38470 + x[..., 2] * 7471 + 0x8000) >> 16


def color(img, factor: float):
    gray = jnp.broadcast_to(_luma(img)[..., None], img.shape).astype(jnp.uint8)
    return _blend(gray, img, factor)


def contrast(img, factor: float):
    mean = jnp.floor(jnp.mean(_luma(img).astype(jnp.float32)) + 0.5)
    return _blend(jnp.full(img.shape, mean, jnp.float32), img, factor)


def brightness(img, factor: float):
    return _blend(jnp.zeros(img.shape, jnp.float32), img, factor)


def sharpness(img, factor: float):
    x = img.astype(jnp.float32)
    kernel = jnp.array([[1, 1, 1], [1, 5, 1], [1, 1, 1]], jnp.float32) / 13.0
    padded = jnp.pad(x, ((1, 1), (1, 1), (0, 0)), mode="edge")
    h, w = img.shape[:2]
    smooth = sum(kernel[i, j] * padded[i:i + h, j:j + w] for i in range(3) for j in range(3))
    smooth = jnp.clip(jnp.floor(smooth + 0.5), 0, 255)
    border = jnp.zeros((h, w, 1), bool).at[1:-1, 1:-1].set(True)
    return _blend(jnp.where(border, smooth, x), img, factor)


# ------------------------------------------------------------------------------------ geometric ops

def affine_source(height: int, width: int, matrix) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) (H, W) int32: the input pixel Pillow's nearest AFFINE transform takes for every output pixel
    (−1 outside), stepping through the image in float64 as Pillow does (x0 = c + a/2 + b/2, then += a per column
    and += b per row)."""
    a, b, c, d, e, f = (float(v) for v in matrix)
    xo = c + b * 0.5 + a * 0.5
    yo = f + e * 0.5 + d * 0.5
    row_x = np.add.accumulate(np.concatenate([[xo], np.full(height - 1, b)]))
    row_y = np.add.accumulate(np.concatenate([[yo], np.full(height - 1, e)]))
    xx = np.add.accumulate(np.concatenate([row_x[:, None], np.full((height, width - 1), a)], axis=1), axis=1)
    yy = np.add.accumulate(np.concatenate([row_y[:, None], np.full((height, width - 1), d)], axis=1), axis=1)

    def coord(v, size):
        idx = np.where(v < 0, -1, np.trunc(v)).astype(np.int64)
        return np.where((idx >= 0) & (idx < size), idx, -1)

    cols, rows = coord(xx, width), coord(yy, height)
    outside = (cols < 0) | (rows < 0)
    return np.where(outside, -1, rows).astype(np.int32), np.where(outside, -1, cols).astype(np.int32)


def rotate_matrix(angle: float, height: int, width: int):
    """Pillow's ``Image.rotate(angle)`` (about the centre, no expand) as its AFFINE matrix."""
    theta = -math.radians(angle % 360.0)
    m = [round(math.cos(theta), 15), round(math.sin(theta), 15), 0.0, round(-math.sin(theta), 15),
         round(math.cos(theta), 15), 0.0]
    cx, cy = width / 2.0, height / 2.0
    m[2] = m[0] * -cx + m[1] * -cy + cx
    m[5] = m[3] * -cx + m[4] * -cy + cy
    return m


def geometric_matrix(op: str, value: float, height: int, width: int):
    if op == "Rotate":
        return rotate_matrix(value, height, width)
    return {"ShearX": (1, value, 0, 0, 1, 0), "ShearY": (1, 0, 0, value, 1, 0),
            "TranslateXabs": (1, 0, value, 0, 1, 0), "TranslateYabs": (1, 0, 0, 0, 1, value)}[op]


def _sample(img, rows, cols):
    inside = (rows >= 0)[..., None]
    return jnp.where(inside, img[jnp.maximum(rows, 0), jnp.maximum(cols, 0)], 0).astype(jnp.uint8)


def cutout(img, value: float, u):
    """Their CutoutAbs with the uniform draws u = (u_x, u_y) in [0, 1): centre numpy ``uniform(w)`` =
    ``uniform(low=w, high=1)`` in (1, w]; Pillow's rectangle covers [x0, x1] x [y0, y1] inclusive."""
    h, w = img.shape[:2]
    cx = w + u[0] * (1 - w)
    cy = h + u[1] * (1 - h)
    x0 = jnp.floor(jnp.maximum(0.0, cx - value / 2.0))
    y0 = jnp.floor(jnp.maximum(0.0, cy - value / 2.0))
    x1 = jnp.minimum(w, x0 + value)
    y1 = jnp.minimum(h, y0 + value)
    xs, ys = jnp.arange(w)[None, :], jnp.arange(h)[:, None]
    box = (xs >= x0) & (xs <= jnp.floor(x1)) & (ys >= y0) & (ys <= jnp.floor(y1))
    fill = jnp.asarray(CUTOUT_FILL[: img.shape[-1]], jnp.uint8)  # (125,) for one channel
    return jnp.where(box[..., None], fill, img)


# ---------------------------------------------------------------------------------------- RandAugment

def make_ops(ops: tuple[str, ...], m: float, height: int, width: int):
    """One function (img, sign, u) -> img per op, at magnitude ``m`` for images of (height, width)."""
    unknown = [op for op in ops if op not in RANGES]
    if unknown:
        raise ValueError(f"unknown RandAugment op {unknown[0]!r}; the ops are {OPS}")
    fns = []
    for op in ops:
        v = op_value(op, m)
        if op in SIGNED:  # the geometric ops, the ones with a random sign
            maps = [tuple(jnp.asarray(a) for a in affine_source(height, width, geometric_matrix(op, s * v, height, width)))
                    for s in (1.0, -1.0)]
            fns.append(lambda img, sign, u, maps=maps: jnp.where(sign, _sample(img, *maps[1]), _sample(img, *maps[0])))
            continue
        simple = {"AutoContrast": autocontrast, "Equalize": equalize, "Invert": invert,
                  "Posterize": lambda x, v=v: posterize(x, max(1, int(v))), "Solarize": lambda x, v=v: solarize(x, v),
                  "SolarizeAdd": lambda x, v=v: solarize_add(x, v), "Color": lambda x, v=v: color(x, v),
                  "Contrast": lambda x, v=v: contrast(x, v), "Brightness": lambda x, v=v: brightness(x, v),
                  "Sharpness": lambda x, v=v: sharpness(x, v)}
        if op == "CutoutAbs":
            fns.append(lambda img, sign, u, v=v: cutout(img, v, u))
        else:
            fns.append(lambda img, sign, u, f=simple[op]: f(img))
    return fns


def rand_augment(key, images, *, n: int, m: float, ops: tuple[str, ...] = OPS):
    """RandAugment(n, m) of uint8 images (B, H, W, C): every image its own ``n`` ops, drawn uniformly with
    replacement from ``ops``."""
    b, h, w = images.shape[:3]
    fns = make_ops(tuple(ops), m, h, w)
    keys = jax.random.split(key, 3)
    which = jax.random.randint(keys[0], (b, n), 0, len(fns))
    signs = jax.random.bernoulli(keys[1], 0.5, (b, n))
    uniforms = jax.random.uniform(keys[2], (b, n, 2))

    def one(img, which, signs, uniforms):
        for i in range(n):
            img = jax.lax.switch(which[i], fns, img, signs[i], uniforms[i])
        return img

    return jax.vmap(one)(images, which, signs, uniforms)
