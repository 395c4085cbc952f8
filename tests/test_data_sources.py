"""Sources read through TFDS (npz builder, digits, Tiny ImageNet builder, built-in) and load_open_set."""

import glob
import io
import json
import os
import pathlib
import zipfile

import numpy as np
import pytest
import tensorflow_datasets as tfds  # imported here so the conftest guard also patches TFDS downloads

from cac_jax.data import load_open_set, registry, sources
from cac_jax.data.builders import local_npz, tiny_imagenet
from cac_jax.data.loading import pixel_statistics
from conftest import NetworkBlocked


def make_npz(path, n_train=60, n_test=30, shape=(28, 28), classes=10, seed=0, y_column=False, **override):
    """A Keras-layout npz whose pixel (0, 0, ...) encodes the position, to check order."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in (("train", n_train), ("test", n_test)):
        x = rng.integers(0, 256, (n, *shape), dtype=np.uint8)
        y = (np.arange(n) % classes).astype(np.uint8)
        arrays[f"x_{split}"], arrays[f"y_{split}"] = x, (y[:, None] if y_column else y)
    arrays.update(override)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    np.savez(path, **arrays)
    return arrays


@pytest.fixture
def data_dir(tmp_path):
    return str(tmp_path / "tfds")


def test_npz_roundtrip_keeps_order(tmp_path, data_dir):
    arrays = make_npz(tmp_path / "mnist.npz", y_column=True)
    for split in ("train", "test"):
        out = sources.read_npz(tmp_path / "mnist.npz", split, data_dir=data_dir)
        assert out.original_order
        assert out.images.dtype == np.uint8 and out.images.shape[1:] == (28, 28, 1)
        np.testing.assert_array_equal(out.images[..., 0], arrays[f"x_{split}"])
        np.testing.assert_array_equal(out.labels, arrays[f"y_{split}"].reshape(-1))


def test_our_records_decoded_directly_equal_tfds_decoding(tmp_path, data_dir):
    make_npz(tmp_path / "mnist.npz", n_train=70, n_test=3)
    sources.read_npz(tmp_path / "mnist.npz", "train", data_dir=data_dir)  # prepares
    (version_dir,) = glob.glob(os.path.join(data_dir, "cac_local_npz", "*", "1.0.0"))
    builder = tfds.builder_from_directory(version_dir)
    images, labels = sources._read_own(builder, "train")
    generic = list(builder.as_data_source()["train"])
    order = np.argsort([ex["index"] for ex in generic], kind="stable")
    np.testing.assert_array_equal(images, np.stack([generic[i]["image"] for i in order]))
    np.testing.assert_array_equal(labels, [generic[i]["label"] for i in order])
    assert images.dtype == np.uint8 and labels.dtype == np.int64


def test_npz_prepared_once_and_changed_file_is_reprepared(tmp_path, data_dir, monkeypatch):
    path = tmp_path / "cifar10.npz"
    make_npz(path, shape=(32, 32, 3), seed=1)
    first = sources.read_npz(path, "train", data_dir=data_dir)
    prepared = sorted(pathlib.Path(data_dir, "cac_local_npz").iterdir())
    assert len(prepared) == 1

    def fail(*a, **k):
        raise AssertionError("prepared twice")

    with monkeypatch.context() as m:
        m.setattr(local_npz.CacLocalNpz, "_split_generators", fail)
        again = sources.read_npz(path, "train", data_dir=data_dir)  # cached: no generation
    np.testing.assert_array_equal(first.images, again.images)

    make_npz(path, shape=(32, 32, 3), seed=2)
    os.utime(path, ns=(os.stat(path).st_atime_ns, os.stat(path).st_mtime_ns + 10**9))
    changed = sources.read_npz(path, "train", data_dir=data_dir)
    assert not np.array_equal(first.images, changed.images)
    assert len(list(pathlib.Path(data_dir, "cac_local_npz").iterdir())) == 2


@pytest.mark.parametrize(
    "override,message",
    [
        ({"y_test": None}, r"lacks \['y_test'\]"),
        ({"x_train": np.zeros((60, 28, 28), np.float32)}, "dtype float32, expected uint8"),
        ({"x_train": np.zeros((60, 28, 28, 2), np.uint8)}, "expected \\(n, H, W\\) or \\(n, H, W, C\\)"),
        ({"y_train": np.zeros(59, np.uint8)}, "y_train has shape \\(59,\\)"),
        ({"y_train": np.zeros(60, np.float32)}, "integer labels"),
        ({"x_test": np.zeros((30, 32, 32), np.uint8)}, "x_test images are"),
    ],
)
def test_npz_bad_content(tmp_path, override, message):
    make_npz(tmp_path / "bad.npz", **override)
    with pytest.raises(ValueError, match=message):
        local_npz.inspect_npz(tmp_path / "bad.npz")


def test_npz_missing_or_not_a_zip(tmp_path):
    with pytest.raises(FileNotFoundError, match="numpy.savez"):
        local_npz.inspect_npz(tmp_path / "nope.npz")
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(ValueError, match="not an .npz"):
        local_npz.inspect_npz(tmp_path / "text.npz")


def test_wrong_image_size_for_dataset(tmp_path, data_dir):
    make_npz(tmp_path / "mnist.npz", shape=(32, 32, 3))
    with pytest.raises(ValueError, match=r"mnist images in .* have shape \(32, 32, 3\), expected \(28, 28, 1\)"):
        load_open_set("mnist", 0, npz_path=tmp_path / "mnist.npz", data_dir=data_dir)


def test_load_open_set_mnist_from_npz(tmp_path, data_dir):
    arrays = make_npz(tmp_path / "mnist.npz", n_train=100, n_test=50)
    d = load_open_set("mnist", 1, npz_path=tmp_path / "mnist.npz", data_dir=data_dir)
    known, unknown = [0, 3, 5, 7, 8, 9], [1, 2, 4, 6]
    assert (d.known, d.unknown, d.num_classes, d.image_size, d.channels) == (tuple(known), tuple(unknown), 6, 32, 1)
    assert (d.mean, d.std, d.flip, d.rotate, d.scale_min) == ((0.1343,), (0.3110,), 0.0, 0.0, 0.7)
    assert len(d.train) == 6 * 8 and len(d.val) == 6 * 2  # 10 per class, 80/20
    for s in (d.train, d.val, d.test_known):
        assert s.images.dtype == np.uint8 and s.images.shape[1:] == (28, 28, 1)
        assert s.labels.dtype == np.int32 and set(s.labels.tolist()) == set(range(6))
    assert len(d.test_known) == 30 and len(d.test_unknown) == 20
    assert set(d.test_unknown.labels.tolist()) == set(unknown)  # raw ids
    # train and val are disjoint subsets of the training images
    rows = {img.tobytes() for img in arrays["x_train"]}
    train_rows = {img.tobytes() for img in d.train.images}
    val_rows = {img.tobytes() for img in d.val.images}
    assert train_rows <= rows and val_rows <= rows and not train_rows & val_rows
    again = load_open_set("mnist", 1, npz_path=tmp_path / "mnist.npz", data_dir=data_dir)
    np.testing.assert_array_equal(d.val.images, again.val.images)
    other_seed = load_open_set("mnist", 1, npz_path=tmp_path / "mnist.npz", data_dir=data_dir, seed=1)
    assert not np.array_equal(d.val.images, other_seed.val.images)


def test_trainval_file_with_npz(tmp_path, data_dir):
    make_npz(tmp_path / "mnist.npz", n_train=40, n_test=20)
    labels = np.arange(40) % 10
    table = {part: {str(c): np.flatnonzero(labels == c)[sl].tolist() for c in range(10)} for part, sl in (("Train", slice(0, 3)), ("Val", slice(3, 4)))}
    (tmp_path / "tv.json").write_text(json.dumps(table))
    d = load_open_set("mnist", 0, npz_path=tmp_path / "mnist.npz", data_dir=data_dir, trainval_file=tmp_path / "tv.json")
    assert (len(d.train), len(d.val)) == (18, 6)


def make_cifar_dir(folder):
    folder.mkdir()
    make_npz(folder / "cifar10.npz", shape=(32, 32, 3), n_train=40, n_test=40)
    make_npz(folder / "cifar100.npz", shape=(32, 32, 3), n_train=10, n_test=200, classes=100, seed=5)
    return folder


def test_cifar_plus_from_npz_directory_and_mapping(tmp_path, data_dir):
    folder = make_cifar_dir(tmp_path / "npz")
    d = load_open_set("cifar_plus_10", 2, npz_path=folder, data_dir=data_dir)
    assert d.known == (0, 1, 8, 9) and d.num_classes == 4
    assert set(d.test_unknown.labels.tolist()) == {2, 11, 15, 24, 32, 34, 63, 88, 93, 95}
    assert len(d.test_unknown) == 20 and len(d.test_known) == 16
    d50 = load_open_set("cifar_plus_50", 0, data_dir=data_dir, npz_path={"cifar10": folder / "cifar10.npz", "cifar100": folder / "cifar100.npz"})
    assert len(d50.test_unknown) == 100 and d50.mean == (0.4965, 0.5063, 0.5173)


def test_cifar_plus_npz_errors(tmp_path, data_dir):
    folder = make_cifar_dir(tmp_path / "npz")
    with pytest.raises(ValueError, match="reads two datasets.*cifar10.npz and cifar100.npz"):
        load_open_set("cifar_plus_10", 0, npz_path=folder / "cifar10.npz", data_dir=data_dir)
    with pytest.raises(ValueError, match="no entry for 'cifar100'"):
        load_open_set("cifar_plus_10", 0, npz_path={"cifar10": folder / "cifar10.npz"}, data_dir=data_dir)
    os.remove(folder / "cifar100.npz")
    with pytest.raises(FileNotFoundError, match="needs cifar100.npz in"):
        load_open_set("cifar_plus_10", 0, npz_path=folder, data_dir=data_dir)


def test_digits_default_needs_no_file_and_matches_registry_statistics():
    d = load_open_set()  # digits, trial 0, prepared in $CAC_JAX_DATA_DIR (a test temp dir)
    assert (d.dataset, d.trial, d.family, d.image_size, d.channels, d.num_classes) == ("digits", 0, "neal2018", 8, 1, 6)
    assert d.train.images.shape[1:] == (8, 8, 1) and d.train.images.max() == 255
    spec = registry.get_spec("digits")
    from cac_jax.data.builders.digits import digits_arrays

    train_labels = digits_arrays()["train"][1]
    for trial in range(5):
        t = load_open_set("digits", trial)
        mean, std = pixel_statistics(t.train.images)
        assert spec.mean(trial) == tuple(round(m, 4) for m in mean)
        assert spec.std(trial) == tuple(round(s, 4) for s in std)
        # every image is used once: known training images in train/val, all test images in test
        assert len(t.train) + len(t.val) == np.isin(train_labels, t.known).sum()
        assert len(t.test_known) + len(t.test_unknown) == 364


def test_bad_dataset_family_trial():
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'"):
        load_open_set("imagenet", 0)
    with pytest.raises(ValueError, match="unknown split family"):
        load_open_set("digits", 0, family="random")
    with pytest.raises(ValueError, match="trial"):
        load_open_set("digits", 5)
    with pytest.raises(ValueError, match="does not read .npz"):
        load_open_set("digits", 0, npz_path="x.npz")


def test_builtin_tfds_not_prepared_gives_instructions(data_dir):
    with pytest.raises(FileNotFoundError, match=r"never downloads.*tfds build cifar10 --file_format=array_record"):
        load_open_set("cifar10", 0, data_dir=data_dir)
    with pytest.raises(FileNotFoundError, match="svhn_cropped"):
        sources.read_tfds("svhn", "test", data_dir=data_dir)


def prepare_builtin_mnist_stand_in(data_dir, n_train=50, n_test=30, seed=0):
    """Prepare, without TensorFlow, what ``tfds build mnist --file_format=array_record`` would leave in ``data_dir``.

    A stand-in builder with the registered MNIST builder's name, version and features (PNG
    ``Image`` (28, 28, 1), ``ClassLabel`` 10) writes ``data_dir/mnist/3.0.1``. It yields the PNG
    bytes itself (made with PIL), since ``Image`` encodes arrays with TensorFlow; the bytes are
    stored as they are and read back with TFDS's normal decoding. Its class is not registered, so
    ``tfds.builder("mnist")`` still gives TFDS's own MNIST builder, which then finds the data
    prepared. Every image is random, so each one identifies its example. Returns the arrays.
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    arrays = {split: (rng.integers(0, 256, (n, 28, 28, 1), dtype=np.uint8), np.arange(n) % 10) for split, n in (("train", n_train), ("test", n_test))}

    def png(image):
        buf = io.BytesIO()
        Image.fromarray(image[..., 0], "L").save(buf, "PNG")
        return buf.getvalue()

    class MnistStandIn(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        name = "mnist"
        VERSION = tfds.core.Version("3.0.1")

        def _info(self):
            features = {"image": tfds.features.Image(shape=(28, 28, 1)), "label": tfds.features.ClassLabel(num_classes=10)}
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(features))

        def _split_generators(self, dl_manager):
            return {split: self._generate_examples(split) for split in arrays}

        def _generate_examples(self, split):
            images, labels = arrays[split]
            for i in range(len(labels)):
                yield i, {"image": png(images[i]), "label": int(labels[i])}

    builder = MnistStandIn(data_dir=data_dir, file_format="array_record")
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(try_download_gcs=False))
    assert os.path.isdir(os.path.join(data_dir, "mnist", "3.0.1"))
    return arrays


def _positions(images, reference):
    """Position in ``reference`` of each image of ``images`` (all images are distinct)."""
    where = {image.tobytes(): i for i, image in enumerate(reference)}
    assert len(where) == len(reference)
    return np.array([where[image.tobytes()] for image in images])


def test_builtin_tfds_prepared_is_read_without_tensorflow(data_dir):
    arrays = prepare_builtin_mnist_stand_in(data_dir)
    builder = tfds.builder("mnist", data_dir=data_dir, try_gcs=False)
    assert builder.is_prepared() and type(builder).__module__.startswith("tensorflow_datasets.")  # TFDS's own MNIST
    for split in ("train", "test"):
        out = sources.read_tfds("mnist", split, data_dir=data_dir)
        images, labels = arrays[split]
        assert out.original_order is False
        assert out.images.dtype == np.uint8 and out.images.shape == images.shape
        assert out.labels.dtype == np.int64
        pos = _positions(out.images, images)  # TFDS stores a shuffled order: match examples by content
        assert sorted(pos.tolist()) == list(range(len(images)))
        np.testing.assert_array_equal(out.images, images[pos])
        np.testing.assert_array_equal(out.labels, labels[pos])
    # read_source checks the image shape on the same path
    np.testing.assert_array_equal(sources.read_source("mnist", "test", data_dir=data_dir).labels, sources.read_tfds("mnist", "test", data_dir=data_dir).labels)


def test_load_open_set_from_prepared_builtin_tfds(data_dir, tmp_path):
    arrays = prepare_builtin_mnist_stand_in(data_dir, n_train=50, n_test=30)  # 5 train, 3 test images per class
    d = load_open_set("mnist", 0, data_dir=data_dir)
    known, unknown = [0, 1, 2, 4, 5, 9], [3, 6, 7, 8]
    assert (d.known, d.unknown, d.num_classes, d.channels) == (tuple(known), tuple(unknown), 6, 1)
    assert (len(d.train), len(d.val), len(d.test_known), len(d.test_unknown)) == (6 * 4, 6 * 1, 6 * 3, 4 * 3)  # 80/20 per class
    train_x, train_y = arrays["train"]
    test_x, test_y = arrays["test"]
    for part, (x, y) in ((d.train, arrays["train"]), (d.val, arrays["train"]), (d.test_known, arrays["test"])):
        assert part.images.dtype == np.uint8 and part.images.shape[1:] == (28, 28, 1) and part.labels.dtype == np.int32
        np.testing.assert_array_equal(np.array(known)[part.labels], y[_positions(part.images, x)])  # remapped labels
    train_pos, val_pos = _positions(d.train.images, train_x), _positions(d.val.images, train_x)
    assert sorted(np.concatenate([train_pos, val_pos]).tolist()) == np.flatnonzero(np.isin(train_y, known)).tolist()
    np.testing.assert_array_equal(d.test_unknown.labels, test_y[_positions(d.test_unknown.images, test_x)])  # raw ids
    assert set(d.test_unknown.labels.tolist()) == set(unknown)
    # built-in TFDS data are shuffled, so the original's train/val file cannot apply
    with pytest.raises(ValueError, match="original \\(torchvision\\) order.*use npz_path for mnist"):
        load_open_set("mnist", 0, data_dir=data_dir, trainval_file=tmp_path / "unused.json")


def test_download_attempt_fails_the_test(data_dir):
    with pytest.raises(NetworkBlocked):
        tfds.data_source("mnist", split="train", data_dir=data_dir, download=True)


# ---- Tiny ImageNet -------------------------------------------------------------------------

WNIDS = [f"n{k:08d}" for k in range(200)]


def _jpeg(value, size=64, grey=False):
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L" if grey else "RGB", (size, size), value if grey else (value, 0, 0)).save(buf, "JPEG", quality=95)
    return buf.getvalue()


def fake_tiny_files(n_train=2, classes=WNIDS, bad_size=False):
    """{relative path: bytes} of a tiny-imagenet-200 tree; colour encodes the class."""
    files = {"wnids.txt": "\n".join(classes).encode()}
    annotations = []
    for c, wnid in enumerate(classes):
        for k in range(n_train):
            files[f"train/{wnid}/images/{wnid}_{k}.JPEG"] = _jpeg(c, grey=(k == 1))
        files[f"train/{wnid}/{wnid}_boxes.txt"] = b""
        files[f"val/images/val_{c}.JPEG"] = _jpeg(c, size=32 if bad_size and c == 3 else 64)
        annotations.append(f"val_{c}.JPEG\t{wnid}\t0\t0\t63\t63")
    files["val/val_annotations.txt"] = "\n".join(reversed(annotations)).encode()
    return files


def write_tree(root, files):
    for rel, data in files.items():
        p = root / "tiny-imagenet-200" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return root


def write_zip(root, files):
    root.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(root / "tiny-imagenet-200.zip", "w") as z:
        for rel, data in files.items():
            z.writestr("tiny-imagenet-200/" + rel, data)
    return root


@pytest.mark.parametrize("layout", [write_tree, write_zip])
def test_tiny_imagenet_listing_order(tmp_path, layout):
    classes = ["n02", "n01", "n03"]
    files = fake_tiny_files(n_train=12, classes=classes)
    tree = tiny_imagenet.find_tree(str(layout(tmp_path / "manual", files)))
    listing = tiny_imagenet.list_examples(tree)
    train = listing["train"]
    assert [label for _, label in train] == [0] * 12 + [1] * 12 + [2] * 12  # sorted wnids: n01, n02, n03
    names = [p.rsplit("/", 1)[1] for p, label in train if label == 0]
    assert names == sorted(names) and names[:3] == ["n01_0.JPEG", "n01_1.JPEG", "n01_10.JPEG"]  # lexicographic
    assert listing["test"] == [("val/images/val_1.JPEG", 0), ("val/images/val_0.JPEG", 1), ("val/images/val_2.JPEG", 2)]


def test_tiny_imagenet_load_open_set(tmp_path, data_dir):
    manual = write_zip(tmp_path / "manual", fake_tiny_files())
    d = load_open_set("tiny_imagenet", 0, manual_dir=manual, data_dir=data_dir)
    assert d.num_classes == 20 and d.image_size == 64 and d.train.images.shape[1:] == (64, 64, 3)
    assert (len(d.train), len(d.val), len(d.test_known), len(d.test_unknown)) == (20, 20, 20, 180)  # floor(0.9·2) = 1
    known = sorted(d.known)
    # colour (red channel, JPEG-approximate) encodes the original class id
    red = d.test_known.images[..., 0].mean(axis=(1, 2))
    np.testing.assert_allclose(red, np.array(known)[d.test_known.labels], atol=3)
    assert np.all(np.abs(d.test_unknown.images[..., 0].mean(axis=(1, 2)) - d.test_unknown.labels) < 3)
    # once prepared, the manual directory is no longer needed
    load_open_set("tiny_imagenet", 1, data_dir=data_dir)


def test_tiny_imagenet_errors(tmp_path, data_dir):
    with pytest.raises(FileNotFoundError, match="no manual_dir was given.*tiny-imagenet-200.zip"):
        load_open_set("tiny_imagenet", 0, data_dir=data_dir)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_open_set("tiny_imagenet", 0, data_dir=data_dir, manual_dir=tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="not found in manual directory"):
        load_open_set("tiny_imagenet", 0, data_dir=data_dir, manual_dir=tmp_path / "empty")
    files = fake_tiny_files(n_train=1, classes=WNIDS[:5])
    del files["val/val_annotations.txt"]
    with pytest.raises(FileNotFoundError, match="val_annotations.txt"):
        tiny_imagenet.list_examples(tiny_imagenet.find_tree(str(write_tree(tmp_path / "m2", files))))


def test_tiny_imagenet_wrong_image_size(tmp_path, data_dir):
    manual = write_tree(tmp_path / "manual", fake_tiny_files(n_train=1, classes=WNIDS[:5], bad_size=True))
    with pytest.raises(ValueError, match="val_3.JPEG' is 32x32, expected 64x64"):
        sources.read_tiny_imagenet("test", data_dir=data_dir, manual_dir=manual)


# ---- optional checks on real data, when present on this machine -----------------------------

REAL_MNIST = pathlib.Path("/work/shared/data/mnist.npz")
REFERENCE = pathlib.Path(__file__).resolve().parents[1] / ".." / "shared" / "reference" / "cac-openset"


@pytest.mark.slow
@pytest.mark.skipif(not (REAL_MNIST.is_file() and (REFERENCE / "MNIST" / "trainval_idxs.json").is_file()), reason="real MNIST not available")
def test_real_mnist_with_original_trainval_file(data_dir):
    d = load_open_set("mnist", 0, npz_path=REAL_MNIST, data_dir=data_dir, trainval_file=REFERENCE / "MNIST" / "trainval_idxs.json")
    assert d.train.images.shape[1:] == (28, 28, 1) and len(d.test_known) + len(d.test_unknown) == 10000
