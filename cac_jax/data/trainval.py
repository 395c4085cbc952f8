"""Train/validation partition of the known-class training images.

The original holds out, per known class, a fixed fraction of the training images for
checkpoint selection: 20 % (80/20) for MNIST, SVHN, CIFAR and digits, 10 % (90/10) for
TinyImageNet. Two ways to get it here:

* :func:`train_val_split` draws it: a pure function of (labels, known classes, fraction, seed).
  Each class ``c`` is permuted by ``argsort(Generator(PCG64(SeedSequence([seed, c]))).random(n_c))``
  and its first ``floor(fraction * n_c)`` images (in that order) go to train, the rest to val.
  Raw PCG64 doubles do not change across NumPy versions (unlike ``Generator.permutation``'s
  algorithm, which NumPy may change), and seeding per class makes class ``c``'s partition
  independent of which other classes are known, so it is the same in every trial.
* :func:`read_trainval_file` reads the original's ``trainval_idxs.json``, for exact reproduction.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np


def _class_order(n: int, seed: int, cls: int) -> np.ndarray:
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), int(cls)])))
    return np.argsort(rng.random(n), kind="stable")


def _first_count(fraction: float, n: int) -> int:
    # The epsilon keeps e.g. 0.9 * 10 = 8.999... from flooring to 8.
    return int(math.floor(fraction * n + 1e-9))


def stratified_split(labels: np.ndarray, fraction: float, seed: int, classes=None) -> tuple[np.ndarray, np.ndarray]:
    """Split positions of ``labels`` per class: ``floor(fraction * n_c)`` of class ``c`` to the first part.

    Only classes in ``classes`` (default: all present) are used. Returns two sorted int64 arrays of
    positions into ``labels``.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must lie strictly between 0 and 1, got {fraction!r}")
    labels = np.asarray(labels)
    classes = np.unique(labels) if classes is None else sorted(int(c) for c in classes)
    first, second = [], []
    for cls in classes:
        where = np.flatnonzero(labels == cls)
        where = where[_class_order(len(where), seed, cls)]
        k = _first_count(fraction, len(where))
        first.append(where[:k])
        second.append(where[k:])
    cat = lambda parts: np.sort(np.concatenate(parts)).astype(np.int64) if parts else np.zeros(0, np.int64)
    return cat(first), cat(second)


def train_val_split(labels: np.ndarray, known, train_fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the known-class images of ``labels`` that go to train and to val (sorted int64).

    Deterministic: the same (labels, known, train_fraction, seed) always gives the same partition.
    """
    return stratified_split(labels, train_fraction, seed, classes=known)


def read_trainval_file(path, known, labels: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Train and val positions of the known classes from the original's ``trainval_idxs.json``.

    The file is ``{"Train": {"<class id>": [positions]}, "Val": {...}}``; positions index the
    training set in the original (torchvision) order. If ``labels`` (in that order) are given,
    every position is checked to hold an image of its class, which catches a source read in a
    different order.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"train/val file not found: {path!r} (expected the original's trainval_idxs.json)")
    with open(path) as f:
        try:
            table = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"train/val file {path!r} is not valid JSON: {e}") from None
    if not isinstance(table, dict) or not {"Train", "Val"} <= set(table):
        raise ValueError(f"train/val file {path!r} must hold an object with keys 'Train' and 'Val'")
    parts = []
    for part in ("Train", "Val"):
        missing = [c for c in known if str(int(c)) not in table[part]]
        if missing:
            raise ValueError(f"train/val file {path!r} has no {part!r} list for known classes {missing}")
        idx = np.sort(np.concatenate([np.asarray(table[part][str(int(c))], dtype=np.int64) for c in known]))
        if labels is not None:
            labels = np.asarray(labels)
            if idx.size and (idx.min() < 0 or idx.max() >= len(labels)):
                raise ValueError(f"train/val file {path!r} indexes past the {len(labels)} training images")
            for c in known:
                sel = np.asarray(table[part][str(int(c))], dtype=np.int64)
                if np.any(labels[sel] != int(c)):
                    raise ValueError(
                        f"train/val file {path!r}: positions listed for class {c} hold other classes; "
                        "the training images are not in the original (torchvision) order"
                    )
        parts.append(idx)
    if np.intersect1d(parts[0], parts[1]).size:
        raise ValueError(f"train/val file {path!r}: train and val positions overlap")
    return parts[0], parts[1]
