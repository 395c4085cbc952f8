"""Images from outside a run's benchmark (cac_jax.data.external): every kind of source, the conversion rule against
Pillow and its formula, and bad sources named in one message."""

import os

import numpy as np
import pytest
from PIL import Image

from cac_jax.data import external, sources


def test_the_conversion_rule_is_luma_and_bilinear_resizing():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (3, 32, 32, 3), np.uint8)
    grey = external.conform(rgb, (28, 28, 1), "rgb")
    for image, got in zip(rgb, grey):
        luma = Image.fromarray(image).convert("L")  # ITU-R 601-2: L = R 299/1000 + G 587/1000 + B 114/1000
        r, g, b = (image[..., c].astype(float) for c in range(3))
        formula = (r * 299 + g * 587 + b * 114) / 1000
        assert np.abs(np.asarray(luma, float) - formula).max() <= 1
        np.testing.assert_array_equal(got[..., 0], np.asarray(luma.resize((28, 28), Image.BILINEAR)))
    colour = external.conform(grey, (32, 32, 3), "grey")
    assert colour.shape == (3, 32, 32, 3) and (colour[..., 0] == colour[..., 2]).all()
    same = rng.integers(0, 256, (2, 8, 8, 1), np.uint8)
    assert external.conform(same, (8, 8, 1), "as is") is same  # already in the run's format: untouched


def test_noise_sets_are_fixed_and_shaped_like_the_run():
    gaussian = external.read("noise:gaussian", (28, 28, 1))
    assert gaussian.images.shape == (1000, 28, 28, 1) and gaussian.images.dtype == np.uint8
    assert abs(gaussian.images.mean() / 255 - 0.5) < 0.01 and gaussian.labels is None
    np.testing.assert_array_equal(gaussian.images, external.read("noise:gaussian", (28, 28, 1)).images)
    uniform = external.read("noise:uniform", (32, 32, 3))
    assert uniform.images.shape == (1000, 32, 32, 3) and uniform.origins[3] == "noise:uniform[3]"


def test_npz_sources_give_their_test_images_and_labels(tmp_path):
    np.savez(tmp_path / "k.npz", x_train=np.zeros((5, 28, 28), np.uint8), x_test=np.ones((4, 28, 28), np.uint8),
             y_test=np.arange(4))
    np.savez(tmp_path / "plain.npz", images=np.ones((2, 10, 12, 3), np.uint8))
    k = external.read(str(tmp_path / "k.npz"), (8, 8, 1))
    assert k.images.shape == (4, 8, 8, 1) and list(k.labels) == [0, 1, 2, 3]
    plain = external.read(str(tmp_path / "plain.npz"), (8, 8, 1))
    assert plain.images.shape == (2, 8, 8, 1) and plain.labels is None


def test_a_prepared_tfds_dataset_is_a_source_and_nothing_is_downloaded(tmp_path):
    data_dir = os.environ["CAC_JAX_DATA_DIR"]
    test = sources.read_digits("test", data_dir=data_dir)  # prepares cac_digits in array_record
    got = external.read("tfds:cac_digits", (8, 8, 1), data_dir=data_dir)
    # The data source's order is its files' (shuffled at preparation), so compare them as sets.
    assert got.images.shape == test.images.shape and external.shared_images(got.images, test.images) == len(test.images)
    with pytest.raises(FileNotFoundError, match=r"tfds:mnist is not prepared in .*tfds build mnist --file_format"):
        external.read("tfds:mnist", (28, 28, 1), data_dir=str(tmp_path))
    with pytest.raises(ValueError, match="tfds:no_such_set: no such TFDS dataset"):
        external.read("tfds:no_such_set", (28, 28, 1), data_dir=str(tmp_path))


@pytest.mark.parametrize("item, message", [
    ("fashion", "expected NAME=SOURCE"), ("=x.npz", "the name ''"), ("a b=x.npz", "the name 'a b'"),
    ("a__b=x.npz", "no '__'"), ("n=noise:pink", "the built-in noise sets are noise:gaussian, noise:uniform"),
])
def test_bad_named_sources_are_refused_before_any_work(item, message):
    with pytest.raises(ValueError, match=message):
        external.check_named([item])
    with pytest.raises(ValueError, match="given more than once"):
        external.check_named(["a=noise:gaussian", "a=noise:uniform"])


def test_bad_sources_name_the_file(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    np.savez(tmp_path / "mismatch.npz", x_test=np.zeros((3, 8, 8), np.uint8), y_test=np.zeros(2))
    np.savez(tmp_path / "floats.npz", x_test=np.zeros((3, 8, 8), np.float32))
    for source, message in ((tmp_path / "empty", "holds no image files"), (tmp_path / "bad.npz", "is not a readable .npz"),
                            (tmp_path / "mismatch.npz", "3 images in x_test but 2 labels"),
                            (tmp_path / "floats.npz", "images must be uint8"),
                            (tmp_path / "nowhere", "is neither a file, a directory")):
        with pytest.raises((ValueError, FileNotFoundError), match=message):
            external.read(str(source), (8, 8, 1))


def test_shared_images_are_counted_byte_for_byte():
    a = np.arange(4 * 8 * 8, dtype=np.uint8).reshape(4, 8, 8, 1)
    assert external.shared_images(a[:2], a) == 2 and external.shared_images(a[:2], a[2:]) == 0
