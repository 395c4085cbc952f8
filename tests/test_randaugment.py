"""RandAugment on the device against Pillow, op by op, on random uint8 images (Vaze et al.'s randaugment.py,
MODERN_PROTOCOL.md (e)): every op equal to Pillow's, AutoContrast within one grey level; the composition and
the train pipeline."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageEnhance, ImageOps

from cac_jax.data import augment
from cac_jax.data import randaugment as ra

MAGNITUDES = (6, 8, 9, 15, 18)  # the M of every benchmark (theirs)


def images(seed):
    rng = np.random.default_rng(seed)
    full = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    narrow = (rng.integers(0, 256, (32, 32, 3)) // 5 + 70).astype(np.uint8)  # a low-contrast image
    smooth = np.clip(np.cumsum(rng.integers(-3, 4, (32, 32, 3)), axis=1) + 128, 0, 255).astype(np.uint8)
    return [full, narrow, smooth, np.full((32, 32, 3), 77, np.uint8)]


def pillow(op, x, v):
    img = Image.fromarray(x)
    if op == "AutoContrast":
        return ImageOps.autocontrast(img)
    if op == "Equalize":
        return ImageOps.equalize(img)
    if op == "Invert":
        return ImageOps.invert(img)
    if op == "Posterize":
        return ImageOps.posterize(img, max(1, int(v)))
    if op == "Solarize":
        return ImageOps.solarize(img, v)
    if op == "SolarizeAdd":  # their code: numpy int + addition, clip, uint8, then Solarize at 128
        return ImageOps.solarize(Image.fromarray(np.clip(x.astype(np.int64) + v, 0, 255).astype(np.uint8)), 128)
    if op in ("Color", "Contrast", "Brightness", "Sharpness"):
        return getattr(ImageEnhance, op)(img).enhance(v)
    if op == "Rotate":
        return img.rotate(v)
    return img.transform(img.size, Image.AFFINE, ra.geometric_matrix(op, v, 32, 32))


def ours(op, x, v):
    x = jnp.asarray(x)
    fns = {"AutoContrast": ra.autocontrast, "Equalize": ra.equalize, "Invert": ra.invert,
           "Posterize": lambda x: ra.posterize(x, max(1, int(v))), "Solarize": lambda x: ra.solarize(x, v),
           "SolarizeAdd": lambda x: ra.solarize_add(x, v), "Color": lambda x: ra.color(x, v),
           "Contrast": lambda x: ra.contrast(x, v), "Brightness": lambda x: ra.brightness(x, v),
           "Sharpness": lambda x: ra.sharpness(x, v)}
    if op in fns:
        return fns[op](x)
    rows, cols = ra.affine_source(32, 32, ra.geometric_matrix(op, v, 32, 32))
    return ra._sample(x, jnp.asarray(rows), jnp.asarray(cols))


@pytest.mark.parametrize("op", [op for op in ra.OPS if op != "CutoutAbs"])
def test_every_op_matches_pillow(op):
    tolerance = 1 if op == "AutoContrast" else 0  # see ra.autocontrast: Pillow's double-precision LUT
    for seed in range(2):
        for x in images(seed):
            for m in MAGNITUDES:
                for sign in ((1, -1) if op in ra.SIGNED else (1,)):
                    v = sign * ra.op_value(op, m)
                    got = np.asarray(ours(op, x, v)).astype(int)
                    want = np.asarray(pillow(op, x, v)).astype(int)
                    assert got.shape == want.shape
                    assert np.abs(got - want).max() <= tolerance, (op, m, sign, seed)


def test_autocontrast_differs_from_pillow_only_where_its_lut_falls_short_of_an_integer():
    x = np.repeat(np.arange(0, 256, dtype=np.uint8)[None, :, None], 3, axis=2)[:, :251]  # lo 0, hi 250
    got = np.asarray(ra.autocontrast(jnp.asarray(x))).astype(int)
    want = np.asarray(ImageOps.autocontrast(Image.fromarray(x))).astype(int)
    exact = (np.arange(251) * 255) // 250
    assert (got[0, :, 0] == exact).all() and set(np.unique(got - want)) <= {0, 1}


def test_cutout_is_their_box_and_pillows_inclusive_rectangle():
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    for m in MAGNITUDES:
        v = ra.op_value("CutoutAbs", m)
        for u in rng.random((5, 2)):
            x0, y0 = 32 + u[0] * (1 - 32), 32 + u[1] * (1 - 32)  # numpy uniform(w) = uniform(low=w, high=1)
            x0, y0 = int(max(0, x0 - v / 2.0)), int(max(0, y0 - v / 2.0))
            img = Image.fromarray(x.copy())
            ImageDraw.Draw(img).rectangle((x0, y0, min(32, x0 + v), min(32, y0 + v)), ra.CUTOUT_FILL)
            got = ra.cutout(jnp.asarray(x), v, jnp.asarray(u, jnp.float32))
            np.testing.assert_array_equal(np.asarray(got), np.asarray(img))


def test_rand_augment_applies_n_drawn_ops_per_image():
    rng = np.random.default_rng(0)
    batch = rng.integers(0, 256, (64, 32, 32, 3), dtype=np.uint8)
    out = np.asarray(jax.jit(lambda k, x: ra.rand_augment(k, x, n=1, m=9))(jax.random.key(0), jnp.asarray(batch)))
    assert out.shape == batch.shape and out.dtype == np.uint8
    # With one op per image every output is one op's result at M = 9 (either sign).
    for i in range(8):
        results = [np.asarray(ours(op, batch[i], s * ra.op_value(op, 9))) for op in ra.OPS if op != "CutoutAbs"
                   for s in ((1, -1) if op in ra.SIGNED else (1,))]
        cut = (out[i] == np.array(ra.CUTOUT_FILL, np.uint8)).all(-1)
        assert any(np.array_equal(out[i], r) for r in results) or cut.any()
    again = ra.rand_augment(jax.random.key(0), jnp.asarray(batch), n=1, m=9)
    np.testing.assert_array_equal(np.asarray(again), out)  # a function of its key
    digits = ra.rand_augment(jax.random.key(1), jnp.asarray(batch[..., :1]), n=2, m=8, ops=ra.OPS_DIGITS)
    assert digits.shape == (64, 32, 32, 1)
    assert len(ra.OPS) == 16 and len(ra.OPS_DIGITS) == 13


def test_the_train_pipeline_pads_crops_flips_and_normalises():
    rng = np.random.default_rng(0)
    batch = jnp.asarray(rng.integers(0, 256, (16, 28, 28, 1), dtype=np.uint8))
    x = augment.randaugment_train(jax.random.key(0), batch, image_size=32, n=1, m=8, ops=ra.OPS_DIGITS,
                                  mean=augment.VAZE_MEAN[:1], std=augment.VAZE_STD[:1])
    assert x.shape == (16, 32, 32, 1) and x.dtype == jnp.float32
    zero = (0 - augment.VAZE_MEAN[0]) / augment.VAZE_STD[0]
    assert np.isclose(np.asarray(x), zero).any()  # the zero padding shows where a crop is shifted
    with pytest.raises(ValueError, match="unknown RandAugment op 'Blur'"):
        ra.make_ops(("Blur",), 9, 32, 32)
