"""A claim is a test: every command that README.md, an experiment's docstring or a benchmark's header gives
runs here, as written or in the quick form tests/_claims.py's registry names, and does what the document says.

The fast test fails when a document gives a command the registry lacks, or the registry holds one no document
gives any more. The slow test runs each command in its own work directory laid out like the repository root:
``benchmarks/`` and ``tests/`` hold links to the scripts (their outputs stay in the work directory),
``../shared`` is a stand-in of the shared folder (synthetic files of the real ones' layout: CI may not have
it, and the real data are too big for its time), and ``cac-jax``, ``python`` and ``python3`` are this
interpreter's. Commands that read what another one left (an evaluation, a report, plots) get a copy of its
work directory's output; every command runs once per module, so documents giving the same quick form share
one run.
"""

import dataclasses
import glob
import io
import itertools
import json
import os
import pathlib
import resource
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import _claims
from _claims import REGISTRY, ROOT

SHARED = ROOT.parent / "shared"


def test_every_promised_command_is_in_the_registry():
    promised = {c: doc for doc, commands in _claims.collect().items() for c in commands}
    untested = sorted(f"{doc}: {c}" for c, doc in promised.items() if c not in REGISTRY)
    stale = sorted(c for c in REGISTRY if c not in promised)
    assert not untested, "commands the documents give without a test (add them to tests/_claims.py):\n" + "\n".join(untested)
    assert not stale, "registry commands no document gives any more:\n" + "\n".join(stale)


def test_the_registry_holds_together():
    for command, claim in REGISTRY.items():
        assert claim.runs_here or claim.why, command  # a command that cannot run says why
        for _, source, _ in claim.reuse:
            assert REGISTRY[source].form(source), (command, source)
        assert set(claim.inputs) <= set(INPUTS), command
        if claim.elsewhere:
            path, name = claim.elsewhere.split("::")
            assert f"def {name}(" in (ROOT / path).read_text(), claim.elsewhere


def test_commands_are_read_from_blocks_docstrings_and_headers():
    assert _claims._commands(["cac-jax train --a \\", "    --b 1   # why", "# note", "x  # y"], False) == [
        "cac-jax train --a --b 1", "x"]
    assert _claims._commands(["Usage: python x.py [--n N]", "cac-jax in prose", "    cac-jax train"], True) == [
        "python x.py [--n N]", "cac-jax train"]
    assert _claims._drop_comment("a --command \"cd x # not a comment\"  # comment") == 'a --command "cd x # not a comment"  '


# ---- stand-ins --------------------------------------------------------------------------------------------

def _keras(path, n_train, n_test, shape, classes=10, seed=0):
    rng = np.random.default_rng(seed)
    labels = {n: (np.arange(n) % classes).astype(np.uint8) for n in (n_train, n_test)}
    np.savez(path, x_train=rng.integers(0, 256, (n_train, *shape), dtype=np.uint8), y_train=labels[n_train],
             x_test=rng.integers(0, 256, (n_test, *shape), dtype=np.uint8), y_test=labels[n_test])


def _jpeg(image, quality=75):
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def _jpeg_pack(path, n_train=400, n_test=100):
    """cifar10_jpeg.npz's layout: the JPEG bytes every image shares, then each image's rest, back to back."""
    rng = np.random.default_rng(1)
    splits = {s: [_jpeg(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in range(n)]
              for s, n in (("train", n_train), ("test", n_test))}
    header = os.path.commonprefix([b for files in splits.values() for b in files])
    arrays = {"jpeg_header": np.frombuffer(header, np.uint8)}
    for s, files in splits.items():
        rest = [b[len(header):] for b in files]
        arrays[f"{s}_payload"] = np.frombuffer(b"".join(rest), np.uint8)
        arrays[f"{s}_offsets"] = np.cumsum([0] + [len(b) for b in rest]).astype(np.int64)
        arrays[f"{s}_labels"] = (np.arange(len(files)) % 10).astype(np.uint8)
    np.savez(path, **arrays)


EXPAND_STAND_IN = '''"""Stand-in of ../shared/data/expand_cifar10.py (absent here): [SRC] DEST, the same layout."""
import io, pathlib, sys
import numpy as np
from PIL import Image
args = sys.argv[1:]
src, dest = args if len(args) == 2 else (pathlib.Path(__file__).with_name("cifar10_jpeg.npz"), args[0])
pack, out = np.load(src), {}
for s in ("train", "test"):
    payload, offsets, header = pack[s + "_payload"], pack[s + "_offsets"], pack["jpeg_header"].tobytes()
    out["x_" + s] = np.stack([np.asarray(Image.open(io.BytesIO(header + payload[a:b].tobytes())).convert("RGB"))
                              for a, b in zip(offsets[:-1], offsets[1:])])
    out["y_" + s] = pack[s + "_labels"].astype(np.uint8)
np.savez(dest, **out)
'''


def _trainval(labels, path):
    """The original's trainval_idxs.json layout: per class, 80% Train and 20% Val indices."""
    where = [np.flatnonzero(labels == c) for c in range(10)]
    cut = [int(0.8 * len(w)) for w in where]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"Train": {str(c): w[:k].tolist() for c, (w, k) in enumerate(zip(where, cut))},
                                "Val": {str(c): w[k:].tolist() for c, (w, k) in enumerate(zip(where, cut))}}))


def _released_network(path, channels):
    """A CAC network of the original's architecture, saved as the released files are."""
    import torch

    from benchmarks import torch_reference

    torch.manual_seed(0)
    state = torch_reference.OpenSetClassifier(num_classes=6, image_size=32, channels=channels).state_dict()
    state["means"] = state.pop("anchors")
    state["covars"] = torch.zeros(6, 6, 6, dtype=torch.float64)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"net": state, "acc": 97.5, "epoch": 12}, path)


def make_shared(shared):
    data = shared / "data"
    data.mkdir(parents=True)
    _keras(data / "mnist.npz", 600, 200, (28, 28))
    _jpeg_pack(data / "cifar10_jpeg.npz")
    _keras(data / "fashion_mnist_test.npz", 0, 100, (28, 28), seed=3)
    real = SHARED / "data" / "expand_cifar10.py"
    if real.exists():
        shutil.copy(real, data / "expand_cifar10.py")
    else:
        (data / "expand_cifar10.py").write_text(EXPAND_STAND_IN)
    with np.load(data / "mnist.npz") as f:
        _trainval(f["y_train"], shared / "reference/cac-openset/MNIST/trainval_idxs.json")
    try:
        import torch  # noqa: F401
    except ImportError:
        return
    _released_network(shared / "reference/weights/MNIST/MNIST_0_CACclassifierAnchorLoss.pth", 1)
    _released_network(shared / "reference/weights/CIFAR10/CIFAR10_0_CACclassifierAnchorLoss.pth", 3)


def _tfds_stand_in(data_dir, name, n_train, n_test):
    """What `tfds build NAME --file_format=array_record` leaves, from TFDS's own builder given random images."""
    import tensorflow_datasets as tfds
    from PIL import Image

    base, rng = tfds.builder_cls(name), np.random.default_rng(2)

    def png(image):
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, "PNG")
        return buf.getvalue()

    class StandIn(base, skip_registration=True):
        def _split_generators(self, dl_manager):
            return {s: self._generate_examples(s, n) for s, n in (("train", n_train), ("test", n_test))}

        def _generate_examples(self, split, n):
            classes = self.info.features["label"].num_classes
            for i in range(n):
                example = {"id": f"{split}_{i}", "image": png(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)),
                           "label": i % classes}
                if "coarse_label" in self.info.features:
                    example["coarse_label"] = i % 20
                yield i, example

    StandIn.name = name
    StandIn(data_dir=str(data_dir), file_format="array_record").download_and_prepare(
        download_config=tfds.download.DownloadConfig(try_download_gcs=False))


def _tiny_imagenet_zip(folder, per_class=8):
    """tiny-imagenet-200.zip's layout, 200 classes of ``per_class`` training images and one validation image."""
    import zipfile

    wnids, rng = [f"n{k:08d}" for k in range(200)], np.random.default_rng(3)
    folder.mkdir(parents=True)
    with zipfile.ZipFile(folder / "tiny-imagenet-200.zip", "w") as z:
        z.writestr("tiny-imagenet-200/wnids.txt", "\n".join(wnids))
        annotations = []
        for c, wnid in enumerate(wnids):
            for k in range(per_class):
                z.writestr(f"tiny-imagenet-200/train/{wnid}/images/{wnid}_{k}.JPEG",
                           _jpeg(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), 90))
            z.writestr(f"tiny-imagenet-200/train/{wnid}/{wnid}_boxes.txt", "")
            z.writestr(f"tiny-imagenet-200/val/images/val_{c}.JPEG", _jpeg(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), 90))
            annotations.append(f"val_{c}.JPEG\t{wnid}\t0\t0\t63\t63")
        z.writestr("tiny-imagenet-200/val/val_annotations.txt", "\n".join(annotations))


def _cifar10_npz(stock):
    path = stock / "cifar10.npz"
    if not path.exists():
        _keras(path, 400, 100, (32, 32, 3), seed=4)
    return path


def _data_dir(stock):
    path = stock / "DATA_DIR"
    if not path.exists():
        for name, n_train, n_test in (("cifar10", 400, 100), ("cifar100", 200, 400), ("svhn_cropped", 400, 100)):
            _tfds_stand_in(path, name, n_train, n_test)
    return path


def _manual_dir(stock):
    path = stock / "MANUAL_DIR"
    if not path.exists():
        _tiny_imagenet_zip(path)
    return path


def _copy(make):
    def place(work, stock, target):
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(make(stock), target)
    return place


def _link(make):
    def place(work, stock, target):
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(make(stock))
    return place


def _cifar10_trainval(work, stock, target):
    with np.load(_cifar10_npz(stock)) as f:
        _trainval(f["y_train"], target)


def _readme_file(name):
    def write(work, stock, target):
        target.write_text(_claims.readme()[1][name])
    return write


# What a work directory may be given first ({path in it: how to make it}); DATA_DIR and MANUAL_DIR are the
# placeholders of the experiments' docstrings, as folders of that name.
INPUTS = {
    "data/cifar10.npz": _copy(_cifar10_npz),
    "data/cifar10_trainval.json": _cifar10_trainval,
    "DATA_DIR": _link(_data_dir),
    "MANUAL_DIR": _link(_manual_dir),
    "my_scores.py": _readme_file("my_scores.py"),
    "decide.py": _readme_file("decide.py"),
    "my_loss.py": _readme_file("my_loss.py"),
    "test_my_loss.py": _readme_file("test_my_loss.py"),
}


# ---- running them ------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Ran:
    work: pathlib.Path
    returncode: int
    output: str
    seconds: float
    cpu_seconds: float


def _children_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@pytest.fixture(scope="module")
def run_claim(tmp_path_factory):
    """run_claim(command) -> Ran: the command's form run once in a fresh work directory (memoised by form)."""
    base = tmp_path_factory.mktemp("claims")
    make_shared(base / "shared")
    stock, bin_dir = base / "stock", base / "bin"
    stock.mkdir()
    bin_dir.mkdir()
    for name, args in (("cac-jax", " -m cac_jax"), ("python", ""), ("python3", "")):
        (bin_dir / name).write_text(f'#!/bin/sh\nexec "{sys.executable}"{args} "$@"\n')
        (bin_dir / name).chmod(0o755)
    done, count = {}, itertools.count()

    def run(command: str) -> Ran:
        from cac_jax.runs import launch

        claim = REGISTRY[command]
        form = claim.form(command)
        key = repr((form, claim.inputs, claim.reuse, claim.remove, sorted(claim.env.items())))
        if key in done:
            return done[key]
        work = base / f"c{next(count):02d}" / "work"  # numbered before the commands it reuses run
        for folder in ("benchmarks", "tests"):
            (work / folder).mkdir(parents=True)
            for script in (ROOT / folder).iterdir():
                if script.suffix in (".py", ".sh"):
                    (work / folder / script.name).symlink_to(script)
        (work.parent / "shared").symlink_to(base / "shared")
        for name in claim.inputs:
            INPUTS[name](work, stock, work / name)
        for dest, source, path in claim.reuse:
            before = run(source)
            assert before.returncode == REGISTRY[source].returncode, f"{source!r}, whose output this reuses, failed"
            if (before.work / path).is_dir():
                shutil.copytree(before.work / path, work / dest, symlinks=True)
            else:
                shutil.copy2(before.work / path, work / dest)
        for pattern in claim.remove:
            for path in glob.glob(str(work / pattern)):
                os.remove(path)
        env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "PYTHONUNBUFFERED": "1",
               **{k: v.replace("{work}", str(work)) for k, v in claim.env.items()}}
        line = form.replace("{port}", str(launch.free_port())).replace("{work}", str(work)).replace("{root}", str(ROOT))
        t0, cpu0 = time.perf_counter(), _children_cpu()
        # A session of its own, so that a timeout ends the command's children too (a job's processes).
        proc = subprocess.Popen(["bash", "-c", line], cwd=work, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, errors="replace", start_new_session=True)
        try:
            output, _ = proc.communicate(timeout=claim.timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            output = proc.communicate()[0] + f"\n[timed out after {claim.timeout} s]"
        done[key] = Ran(work, proc.returncode, output, time.perf_counter() - t0, _children_cpu() - cpu0)
        return done[key]

    return run


def _param(command):
    claim = REGISTRY[command]
    marks = [pytest.mark.xfail(strict=True, reason=claim.xfail)] if claim.xfail else []
    return pytest.param(command, marks=marks, id=command[:100])


@pytest.mark.slow
@pytest.mark.parametrize("command", [_param(c) for c in REGISTRY])
def test_promised_command_runs(command, run_claim):
    claim = REGISTRY[command]
    if claim.elsewhere:
        pytest.skip(f"run by {claim.elsewhere}" + (f" ({claim.why})" if claim.why else ""))
    if claim.form(command) is None:
        pytest.skip(f"cannot run here: {claim.why}")
    if claim.torch:
        pytest.importorskip("torch")
    ran = run_claim(command)
    print(f"{ran.seconds:.1f} s ({ran.cpu_seconds:.1f} s CPU) in {ran.work}: {claim.form(command)}")
    assert ran.returncode == claim.returncode, ran.output[-5000:]
    for pattern in claim.expect:
        assert glob.glob(str(ran.work / pattern)), f"{pattern} was not written; output:\n{ran.output[-3000:]}"
    for text in claim.says:
        assert text in ran.output, f"{text!r} not in the output:\n{ran.output[-3000:]}"
    if claim.check:
        claim.check(ran.work, ran.output)
