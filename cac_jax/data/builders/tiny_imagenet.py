"""``cac_tiny_imagenet``: Tiny ImageNet (200 classes, 64x64 RGB) from the standard archive.

Not in the TFDS catalog. Put the standard ``tiny-imagenet-200.zip`` (from
http://cs231n.stanford.edu/tiny-imagenet-200.zip), or the folder it unpacks to, in the manual
directory. Nothing is ever downloaded.

* Class ids are the positions of the WNIDs (the ``train/`` folder names) in sorted order, as
  torchvision's ImageFolder gives them.
* ``train``: 500 images per class. ``index`` is the ImageFolder position of the original's
  flattened layout: classes in id order, files inside a class in lexicographic order.
* ``test``: the labelled ``val/`` images (50 per class), labels from ``val/val_annotations.txt``
  (the original reorganises ``val/`` into class folders; ``index`` follows that order).
* Greyscale images are converted to RGB, as PIL's ``convert("RGB")`` in torchvision's loader does.
"""

from __future__ import annotations

import io
import os
import posixpath
import zipfile

import numpy as np
import tensorflow_datasets as tfds

from cac_jax.data.builders.common import image_features

ARCHIVE = "tiny-imagenet-200.zip"
FOLDER = "tiny-imagenet-200"
IMAGE_SHAPE = (64, 64, 3)
INSTRUCTIONS = (
    f"Put the standard {ARCHIVE} (http://cs231n.stanford.edu/{ARCHIVE}) or the {FOLDER}/ folder it "
    "unpacks to (with train/ and val/val_annotations.txt) in the manual directory, then run again."
)


class _Tree:
    """Read-only view of the ``tiny-imagenet-200`` tree, in a zip or a folder, by relative path."""

    def __init__(self, manual_dir: str):
        zip_path = os.path.join(manual_dir, ARCHIVE)
        for root in (os.path.join(manual_dir, FOLDER), manual_dir):
            if os.path.isdir(os.path.join(root, "train")) and os.path.isdir(os.path.join(root, "val")):
                self._root, self._zip = root, None
                files = []
                for dirpath, _, names in os.walk(root):
                    rel = os.path.relpath(dirpath, root).replace(os.sep, "/")
                    files += [n if rel == "." else f"{rel}/{n}" for n in names]
                self.files = sorted(files)
                return
        if os.path.isfile(zip_path):
            self._zip = zipfile.ZipFile(zip_path)
            prefix = FOLDER + "/"
            self.files = sorted(n[len(prefix):] for n in self._zip.namelist() if n.startswith(prefix) and not n.endswith("/"))
            return
        raise FileNotFoundError(f"Tiny ImageNet not found in manual directory {manual_dir!r}. {INSTRUCTIONS}")

    def read(self, rel: str) -> bytes:
        if self._zip is not None:
            return self._zip.read(FOLDER + "/" + rel)
        with open(os.path.join(self._root, *rel.split("/")), "rb") as f:
            return f.read()


def find_tree(manual_dir: str) -> _Tree:
    """The ``tiny-imagenet-200`` tree in ``manual_dir``; FileNotFoundError saying what to put there."""
    return _Tree(manual_dir)


def _decode(data: bytes, name: str) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        arr = np.asarray(im.convert("RGB"))
    if arr.shape != IMAGE_SHAPE:
        raise ValueError(f"Tiny ImageNet image {name!r} is {arr.shape[1]}x{arr.shape[0]}, expected 64x64")
    return arr


def list_examples(tree: _Tree) -> dict[str, list[tuple[str, int]]]:
    """``{"train": [(path, label)], "test": [...]}`` in ImageFolder order (see module docstring)."""
    train_files = [f for f in tree.files if f.startswith("train/") and f.lower().endswith((".jpeg", ".jpg", ".png"))]
    wnids = sorted({f.split("/")[1] for f in train_files})
    if not wnids:
        raise FileNotFoundError(f"Tiny ImageNet tree has no images under train/. {INSTRUCTIONS}")
    class_id = {w: i for i, w in enumerate(wnids)}
    # ImageFolder order of the flattened train/<wnid>/<file>: by class, then by file name.
    train = sorted(((f, class_id[f.split("/")[1]]) for f in train_files), key=lambda e: (e[1], posixpath.basename(e[0])))
    if "val/val_annotations.txt" not in tree.files:
        raise FileNotFoundError(f"Tiny ImageNet tree lacks val/val_annotations.txt. {INSTRUCTIONS}")
    test = []
    for line in tree.read("val/val_annotations.txt").decode().splitlines():
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2 or fields[1] not in class_id:
            raise ValueError(f"val/val_annotations.txt: cannot read line {line!r} (expected '<file>\\t<wnid>\\t...' with a known wnid)")
        test.append(("val/images/" + fields[0], class_id[fields[1]]))
    if not test:
        raise ValueError(f"Tiny ImageNet's val/val_annotations.txt lists no images; it is the test split. {INSTRUCTIONS}")
    test.sort(key=lambda e: (e[1], posixpath.basename(e[0])))
    return {"train": train, "test": test}


class CacTinyImagenet(tfds.core.GeneratorBasedBuilder):
    """Tiny ImageNet 200 from a manually placed archive or folder; ``test`` is the labelled val set."""

    name = "cac_tiny_imagenet"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = INSTRUCTIONS

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description=__doc__,
            features=image_features(IMAGE_SHAPE),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager):
        tree = find_tree(os.fspath(dl_manager.manual_dir))
        return {split: self._examples(tree, entries) for split, entries in list_examples(tree).items()}

    def _examples(self, tree: _Tree, entries):
        for index, (path, label) in enumerate(entries):
            yield index, {"image": _decode(tree.read(path), path), "label": label, "index": index}

    def _generate_examples(self):  # abstract in TFDS; the split generators above do the work
        raise NotImplementedError
