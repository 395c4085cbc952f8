"""Bad data and damaged or shared data directories: each gives one line naming the file, split or directory
and what to do, before any training, never a traceback.

Labels outside the source's classes; splits lacking a class; two processes preparing one dataset at once;
prepared data cut short, with flipped bits or without a readable dataset_info.json (prepared again from the
source when it is at hand, else refused); a data directory that cannot be written (a read-only mount in a
private mount namespace: we run as root, so chmod would not stop writes).
"""

import glob
import json
import os
import shlex
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds  # noqa: F401  (imported first so the conftest guard also patches TFDS downloads)

from cac_jax import storage
from cac_jax.data import load_open_set, sources
from test_data_sources import WNIDS, fake_tiny_files, make_npz, prepare_builtin_mnist_stand_in, write_zip


@pytest.fixture
def data_dir(tmp_path):
    return str(tmp_path / "tfds")


def _labels(n, changes=None):
    """0, 1, ..., 9, 0, 1, ... with ``changes`` ({position: label}) made."""
    y = np.arange(n) % 10
    for i, v in (changes or {}).items():
        y[i] = v
    return y


# ---- 1. labels outside the source's class ids -------------------------------------------------------------

@pytest.mark.parametrize("key, bad, shown, count", [
    ("y_train", {3: 42, 7: -1, 9: 42}, "-1, 42", "3 of 60"),
    ("y_test", {0: 10}, "10", "1 of 30"),
])
def test_npz_labels_out_of_range_are_refused_before_preparing(tmp_path, data_dir, key, bad, shown, count):
    path = tmp_path / "mnist.npz"
    make_npz(path, **{key: _labels(60 if key == "y_train" else 30, bad)})
    with pytest.raises(ValueError) as e:
        load_open_set("mnist", 0, npz_path=path, data_dir=data_dir)
    assert str(e.value) == (f"npz file {str(path)!r}, {key} holds labels outside mnist's class ids 0..9: {shown} ({count} "
                            f"images); relabel them or give mnist's own data")
    assert not os.path.exists(data_dir)  # refused before anything was prepared


def test_cifar100_labels_and_many_bad_values(tmp_path, data_dir):
    folder = tmp_path / "npz"
    folder.mkdir()
    make_npz(folder / "cifar10.npz", shape=(32, 32, 3), n_train=40, n_test=40)
    make_npz(folder / "cifar100.npz", shape=(32, 32, 3), n_train=10, n_test=200, classes=100, seed=5)
    assert len(load_open_set("cifar_plus_10", 0, npz_path=folder, data_dir=data_dir).test_unknown) == 20  # 0..99 fit
    make_npz(folder / "cifar100.npz", shape=(32, 32, 3), n_train=10, n_test=200, y_test=np.arange(200), seed=5)
    with pytest.raises(ValueError, match=r"cifar100.npz', y_test holds labels outside cifar100's class ids 0\.\.99: "
                                         r"100, 101, 102, 103, 104 and 95 more \(100 of 200 images\)"):
        load_open_set("cifar_plus_10", 0, npz_path=folder, data_dir=data_dir)


def test_tiny_imagenet_with_more_than_200_classes_is_refused(tmp_path, data_dir):
    manual = write_zip(tmp_path / "manual", fake_tiny_files(n_train=1, classes=WNIDS + ["n99999999"]))
    with pytest.raises(ValueError, match=r"Tiny ImageNet prepared in .*, train split holds labels outside tiny_imagenet's "
                                         r"class ids 0\.\.199: 200 \(1 of 201 images\)"):
        sources.read_source("tiny_imagenet", "train", data_dir=data_dir, manual_dir=manual)


# ---- 2. every split holds every one of its classes ---------------------------------------------------------

MNIST_0 = "mnist trial 0 (neal2018 splits: known classes [0, 1, 2, 4, 5, 9], unknown [3, 6, 7, 8])"


def test_known_class_missing_from_test_split(tmp_path, data_dir):
    path = tmp_path / "mnist.npz"
    make_npz(path, y_test=np.where(_labels(30) == 0, 3, _labels(30)))
    with pytest.raises(ValueError) as e:
        load_open_set("mnist", 0, npz_path=path, data_dir=data_dir)
    assert str(e.value) == (f"{MNIST_0}: the test_known split has no images of classes [0] (read from npz file "
                            f"{str(path)!r}, y_test); is it the right data?")


def test_unknown_class_missing_from_test_split(tmp_path, data_dir):
    path = tmp_path / "mnist.npz"
    make_npz(path, y_test=np.where(_labels(30) == 7, 0, _labels(30)))
    with pytest.raises(ValueError, match=r"the test_unknown split has no images of classes \[7\] \(read from npz file"):
        load_open_set("mnist", 0, npz_path=path, data_dir=data_dir)


def test_class_too_thin_for_train_and_val(tmp_path, data_dir):
    y = np.where(_labels(60) == 5, 4, _labels(60))
    y[5] = 5  # one image of class 5: floor(0.8 * 1) = 0 go to train
    path = tmp_path / "mnist.npz"
    make_npz(path, y_train=y)
    with pytest.raises(ValueError) as e:
        load_open_set("mnist", 0, npz_path=path, data_dir=data_dir)
    assert str(e.value) == (f"{MNIST_0}: the train split has no images of classes [5]: npz file {str(path)!r}, y_train "
                            f"holds only 1 image of class 5 for train and val together; give it more images of those "
                            f"classes")
    # Without a validation split the one image trains.
    assert 5 in load_open_set("mnist", 0, npz_path=path, data_dir=data_dir, holdout_val=False).known


def test_val_split_lacking_a_class_from_the_trainval_file(tmp_path, data_dir):
    make_npz(tmp_path / "mnist.npz", n_train=40, n_test=20)
    labels = np.arange(40) % 10
    table = {"Train": {str(c): np.flatnonzero(labels == c)[:3].tolist() for c in range(10)},
             "Val": {str(c): np.flatnonzero(labels == c)[3:4].tolist() if c != 9 else [] for c in range(10)}}
    (tmp_path / "tv.json").write_text(json.dumps(table))
    with pytest.raises(ValueError, match=r"the val split has no images of classes \[9\]: .* holds only 4 images of class 9"):
        load_open_set("mnist", 0, npz_path=tmp_path / "mnist.npz", data_dir=data_dir, trainval_file=tmp_path / "tv.json")


def test_empty_split_is_refused(tmp_path):
    make_npz(tmp_path / "mnist.npz", x_test=np.zeros((0, 28, 28), np.uint8), y_test=np.zeros(0, np.int64))
    with pytest.raises(ValueError, match=r"mnist.npz': x_test holds no images; both splits need images"):
        load_open_set("mnist", 0, npz_path=tmp_path / "mnist.npz")


# ---- 3. two first runs preparing one dataset at once -------------------------------------------------------

# Both processes start reading together (a file barrier) and preparing takes a second longer than it would,
# so the second one reaches the preparation while the first is inside it. Without the lock the second failed
# with FileExistsError ("Cannot rename .../incomplete.XXXXXX_1.0.0. Destination .../1.0.0 already exists").
_PREPARE_AT_ONCE = """
import os, sys, time
import numpy as np
from cac_jax.data import sources
from cac_jax.data.builders import local_npz

npz, ready, other, out = sys.argv[1:]
generators = local_npz.CacLocalNpz._split_generators
def slow(self, dl_manager):
    time.sleep(1.0)
    return generators(self, dl_manager)
local_npz.CacLocalNpz._split_generators = slow
open(ready, "w").close()
while not os.path.exists(other):
    time.sleep(0.01)
np.save(out, sources.read_npz(npz, "train").images)
"""


def test_two_processes_prepare_one_dataset_at_once(tmp_path, data_dir):
    npz = tmp_path / "mnist.npz"
    arrays = make_npz(npz, n_train=200)
    env = {**os.environ, "CAC_JAX_DATA_DIR": data_dir}
    procs = [subprocess.Popen([sys.executable, "-c", _PREPARE_AT_ONCE, str(npz), str(tmp_path / f"ready{i}"),
                               str(tmp_path / f"ready{1 - i}"), str(tmp_path / f"out{i}.npy")],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in (0, 1)]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert sum("waiting for another process" in out for out in outputs) == 1, outputs
    for i in (0, 1):
        np.testing.assert_array_equal(np.load(tmp_path / f"out{i}.npy")[..., 0], arrays["x_train"])
    assert len(glob.glob(os.path.join(data_dir, "cac_local_npz", "*", "1.0.0"))) == 1


# ---- 4. damaged prepared data -------------------------------------------------------------------------------

def _flip(path, offset):
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x10]))


def _shard(version_dir, split="train"):
    return glob.glob(os.path.join(version_dir, f"*-{split}.array_record-*"))[0]


DAMAGES = {
    "shard cut short": (lambda d: os.truncate(_shard(d), 1000), "ArrayRecord file should be at least 64KB big"),
    "shard with a flipped bit": (lambda d: _flip(_shard(d), 30000), "Corrupted Riegeli/records file"),
    "dataset_info.json missing": (lambda d: os.remove(os.path.join(d, "dataset_info.json")),
                                  "FileNotFoundError: no dataset_info.json or features.json"),
    "dataset_info.json damaged": (lambda d: open(os.path.join(d, "dataset_info.json"), "w").write('{"name": "cac_l'),
                                  "Failed to load JSON"),
}


@pytest.mark.parametrize("damage", DAMAGES)
def test_damaged_npz_data_are_prepared_again(tmp_path, data_dir, damage):
    npz = tmp_path / "mnist.npz"
    arrays = make_npz(npz, n_train=300)  # a 2.4 MB shard: well over array_record's 64 KB minimum
    sources.read_npz(npz, "train", data_dir=data_dir)
    (version_dir,) = glob.glob(os.path.join(data_dir, "cac_local_npz", "*", "1.0.0"))
    damage_fn, reason = DAMAGES[damage]
    damage_fn(version_dir)
    with pytest.warns(storage.CacJaxWarning, match=rf"the prepared data in {version_dir} cannot be read \(.*{reason}.*\); "
                                                   rf"deleting it and preparing npz file '{npz}' again"):
        out = sources.read_npz(npz, "train", data_dir=data_dir)
    np.testing.assert_array_equal(out.images[..., 0], arrays["x_train"])
    np.testing.assert_array_equal(sources.read_npz(npz, "test", data_dir=data_dir).images[..., 0], arrays["x_test"])


def test_damaged_digits_are_prepared_again(data_dir):
    first = sources.read_digits("test", data_dir=data_dir)
    version_dir = os.path.join(data_dir, "cac_digits", "1.0.0")
    os.truncate(_shard(version_dir, "test"), 100)
    with pytest.warns(storage.CacJaxWarning, match=f"prepared data in {version_dir} cannot be read"):
        again = sources.read_digits("test", data_dir=data_dir)
    np.testing.assert_array_equal(first.images, again.images)


def test_data_damaged_again_after_preparing_are_refused(tmp_path, data_dir, monkeypatch):
    make_npz(tmp_path / "mnist.npz")
    sources.read_npz(tmp_path / "mnist.npz", "train", data_dir=data_dir)

    def damaged(builder, split):
        raise RuntimeError("Corrupted Riegeli/records file: chunk data hash mismatch\nmore lines")

    monkeypatch.setattr(sources, "_read_own", damaged)
    with pytest.warns(storage.CacJaxWarning), pytest.raises(ValueError) as e:
        sources.read_npz(tmp_path / "mnist.npz", "train", data_dir=data_dir)
    (version_dir,) = glob.glob(os.path.join(data_dir, "cac_local_npz", "*", "1.0.0"))
    assert str(e.value) == (f"the prepared data in {version_dir} cannot be read (RuntimeError: Corrupted Riegeli/records "
                            f"file: chunk data hash mismatch); delete that directory and run again; if it recurs right "
                            f"after preparing, set CAC_JAX_DATA_DIR or --data-dir to a directory on another disk")


def test_damaged_tiny_imagenet_without_its_archive_is_refused_and_with_it_prepared_again(tmp_path, data_dir):
    manual = write_zip(tmp_path / "manual", fake_tiny_files(n_train=1, classes=WNIDS[:5]))
    first = sources.read_tiny_imagenet("test", data_dir=data_dir, manual_dir=manual)
    version_dir = os.path.join(data_dir, "cac_tiny_imagenet", "1.0.0")
    os.remove(os.path.join(version_dir, "dataset_info.json"))
    with pytest.raises(ValueError, match=rf"^the prepared data in {version_dir} cannot be read \(.*\); delete that "
                                         rf"directory and prepare it again from a manual_dir \(--set manual_dir=DIR\)"):
        sources.read_tiny_imagenet("test", data_dir=data_dir)
    with pytest.warns(storage.CacJaxWarning, match="deleting it and preparing Tiny ImageNet again"):
        again = sources.read_tiny_imagenet("test", data_dir=data_dir, manual_dir=manual)
    np.testing.assert_array_equal(first.images, again.images)


@pytest.mark.parametrize("damage", ["shard cut short", "dataset_info.json missing", "dataset_info.json damaged"])
def test_damaged_builtin_tfds_data_are_refused(data_dir, damage):
    prepare_builtin_mnist_stand_in(data_dir)
    version_dir = os.path.join(data_dir, "mnist", "3.0.1")
    DAMAGES[damage][0](version_dir)
    with pytest.raises(ValueError) as e:
        sources.read_tfds("mnist", "train", data_dir=data_dir)
    message = str(e.value)
    assert "\n" not in message and DAMAGES[damage][1] in message, message
    assert message.startswith(f"the prepared data in {os.path.join(data_dir, 'mnist')}"), message
    assert message.endswith(f"); delete that directory and prepare it with `tfds build mnist --file_format=array_record "
                            f"--data_dir={data_dir}` on a machine with network, or pass a Keras-layout mnist.npz "
                            f"(npz_path)."), message


def test_flipped_bits_in_a_shard_never_go_unnoticed(tmp_path, data_dir):
    """Evidence that reading catches damage: array_record's Riegeli chunks carry hashes of their header and
    data, so a flipped bit in the records fails the read. The file's last part (the index footer and the padding
    to 64 KB) and its first bytes (the file signature) are not read back as records: a flip there changes nothing
    that is read. Never different images without an error."""
    from array_record.python import array_record_module

    make_npz(tmp_path / "mnist.npz", n_train=300)
    sources.read_npz(tmp_path / "mnist.npz", "train", data_dir=data_dir)
    shard = _shard(glob.glob(os.path.join(data_dir, "cac_local_npz", "*", "1.0.0"))[0])
    original = open(shard, "rb").read()

    def records(path):
        reader = array_record_module.ArrayRecordReader(path)
        try:
            return reader.read(list(range(reader.num_records())))
        finally:
            reader.close()

    expected, copy = records(shard), str(tmp_path / "copy.array_record")
    rng = np.random.default_rng(0)
    size = len(original)
    # The records fill the first 70% of this shard (4.1 of 7 blocks of 64 KB): flips there must all fail.
    for offset, in_records in [(o, True) for o in rng.integers(size // 8, size // 2, 40)] + \
                              [(o, False) for o in rng.integers(0, size, 20)]:
        damaged = bytearray(original)
        damaged[offset] ^= 1 << int(offset % 8)
        open(copy, "wb").write(damaged)
        try:
            read = records(copy)
        except RuntimeError as e:
            assert "Riegeli" in str(e) or "ArrayRecord" in str(e), e
            continue
        assert not in_records, f"a flipped bit at byte {offset} of {size} went unnoticed"
        assert read == expected, f"a flipped bit at byte {offset} of {size} changed the records without an error"


# ---- 5. a data directory that cannot be written ------------------------------------------------------------

_READ_NPZ = """
import json, sys
from cac_jax.data import sources
try:
    print(json.dumps({"sum": int(sources.read_npz(sys.argv[1], "train").images.sum())}))
except Exception as e:
    print(json.dumps({"error": type(e).__name__, "message": str(e)}))
"""


def run_read_only(directories, args, env):
    """``python -c args[0] args[1:]`` with each of ``directories`` bind-mounted read-only, in a private user and
    mount namespace (we run as root, so chmod would not stop writes); skips where namespaces are unavailable.
    Returns the JSON the script printed last."""
    mounts = " && ".join(f"mount --bind {shlex.quote(d)} {shlex.quote(d)} && mount -o remount,ro,bind {shlex.quote(d)}"
                         for d in directories)
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", mounts], capture_output=True, text=True) \
        if shutil.which("unshare") else None
    if probe is None or probe.returncode:
        pytest.skip(f"no user and mount namespaces here (unshare -rm: {probe.stderr.strip() if probe else 'not installed'})")
    command = " ".join(shlex.quote(a) for a in [sys.executable, "-c", *args])
    done = subprocess.run(["unshare", "-rm", "sh", "-c", f"{mounts} && exec {command}"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("where", ["CAC_JAX_DATA_DIR inside", "CAC_JAX_DATA_DIR itself", "HOME"])
def test_read_only_data_directory_is_refused_in_one_line(tmp_path, where):
    npz, read_only = tmp_path / "mnist.npz", tmp_path / "read_only"
    make_npz(npz)
    read_only.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "CAC_JAX_DATA_DIR"}
    data_dir = {"CAC_JAX_DATA_DIR inside": read_only / "data", "CAC_JAX_DATA_DIR itself": read_only,
                "HOME": read_only / ".cache" / "cac_jax" / "tensorflow_datasets"}[where]
    env.update({"HOME": str(read_only)} if where == "HOME" else {"CAC_JAX_DATA_DIR": str(data_dir)})
    result = run_read_only([str(read_only)], [_READ_NPZ, str(npz)], env)
    assert result["error"] == "StorageError", result
    assert result["message"].startswith(f"cannot write {data_dir}"), result
    assert result["message"].endswith(f": Read-only file system (the file system is read-only: choose a writable place); "
                                      f"preparing npz file {str(npz)!r} needs a writable data directory, and {data_dir} "
                                      f"is not: set CAC_JAX_DATA_DIR or --data-dir to a writable one"), result


def test_data_prepared_in_a_read_only_directory_are_read(tmp_path, data_dir):
    npz = tmp_path / "mnist.npz"
    arrays = make_npz(npz)
    sources.read_npz(npz, "train", data_dir=data_dir)
    result = run_read_only([data_dir], [_READ_NPZ, str(npz)], {**os.environ, "CAC_JAX_DATA_DIR": data_dir})
    assert result == {"sum": int(arrays["x_train"].sum())}


def test_file_where_the_data_directory_should_be(tmp_path):
    make_npz(tmp_path / "mnist.npz")
    (tmp_path / "file").write_text("")
    with pytest.raises(storage.StorageError, match=r"^cannot write .*file/cac_local_npz/.*: Not a directory \(a file stands "
                                                   r"where a directory is needed.*set CAC_JAX_DATA_DIR or --data-dir to a "
                                                   r"writable one$"):
        sources.read_npz(tmp_path / "mnist.npz", "train", data_dir=tmp_path / "file")


# ---- the command line: one line, before any training -------------------------------------------------------

def test_train_on_bad_data_fails_in_one_line_before_training(tmp_path, capsys):
    from cac_jax import cli

    path, workdir = tmp_path / "mnist.npz", tmp_path / "run"
    make_npz(path, y_test=np.where(_labels(30) == 0, 3, _labels(30)))
    assert cli.main(["train", "--experiment", "mnist", "--npz", str(path), "--workdir", str(workdir),
                     "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err == (f"cac-jax train: error: {MNIST_0}: the test_known split has no images of classes [0] (read from npz "
                   f"file {str(path)!r}, y_test); is it the right data?\n")
    assert not (workdir / "checkpoints").exists() and not (workdir / "metrics.jsonl").exists()
