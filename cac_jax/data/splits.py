"""Known/unknown class splits of the six open-set benchmarks, and the known-label map.

Three families of splits, each with trials 0-4:

* ``"neal2018"`` (default): the splits of Neal et al. (ECCV 2018) that the CAC paper's Table 1 uses
  (the original repository's ``class_splits/`` at HEAD).
* ``"cac_random2020"``: the earlier random splits (``random.seed(1000)``) the original repository
  first shipped; its pretrained weights and the paper's Table 4 use them (``class_splits_old/``).
* ``"arpl2020"``: the splits of ARPL (Chen et al. 2020, ``split.py``) that Vaze et al. (ICLR 2022) and
  most later open-set papers use (``osr_splits.py``; the two are equal element for element). Trial i is
  the lists' index i (Vaze's ``--split_idx``; ARPL's own ``osr.py`` runs them in reverse). Their quirks are
  kept: CIFAR-10 splits 0 and 1, and SVHN splits 0 and 1, are the same set in another order; CIFAR+N
  splits 1 and 2 share their known set; the CIFAR+N known sets are not all vehicles and the unknowns not
  all animals; the CIFAR+10 unknowns are the last 10 of the CIFAR+50 ones.

Class ids are the dataset's original ones, in torchvision's conventions: the digit for MNIST and
SVHN, the CIFAR-10 label, CIFAR-100 *fine* labels (alphabetical) for the CIFAR+N unknowns (their test
images), and for TinyImageNet the position of the WNID in sorted order.

Training labels (:func:`label_map`): in ``neal2018`` and ``cac_random2020`` the rank of a known id among
the sorted known ids (the original's convention; those lists are stored sorted); in ``arpl2020`` its
position in the file's list, label j = ``Known[j]`` (ARPL's ``known.index(target)``, Vaze's
``subsample_classes``), so those lists keep the files' order.
"""

from __future__ import annotations

import numpy as np

BENCHMARKS = ("mnist", "svhn", "cifar10", "cifar_plus_10", "cifar_plus_50", "tiny_imagenet")
FAMILIES = ("neal2018", "cac_random2020", "arpl2020")
# Families whose training label is the position in the file's known list, not the rank of the sorted ids.
FILE_ORDER_FAMILIES = ("arpl2020",)
NUM_TRIALS = 5

# Total number of classes in each benchmark's unknown-source dataset.
_TINY_CLASSES = 200

# The 50 "animal" fine classes of CIFAR-100: the CIFAR+50 unknowns of every trial in both families.
CIFAR100_ANIMALS = (
    1, 2, 3, 4, 6, 7, 11, 14, 15, 18, 19, 21, 24, 26, 27, 29, 30, 31, 32, 34, 35, 36, 38, 42, 43,
    44, 45, 46, 50, 55, 63, 64, 65, 66, 67, 72, 73, 74, 75, 77, 78, 79, 80, 88, 91, 93, 95, 97, 98, 99,
)
CIFAR10_VEHICLES = (0, 1, 8, 9)  # airplane, automobile, ship, truck: the CIFAR+N known classes

# Neal et al.'s 10-class splits, shared by MNIST, SVHN and CIFAR10: (known, unknown) per trial.
_NEAL_10 = (
    ((0, 1, 2, 4, 5, 9), (3, 6, 7, 8)),
    ((0, 3, 5, 7, 8, 9), (1, 2, 4, 6)),
    ((0, 1, 5, 6, 7, 8), (2, 3, 4, 9)),
    ((3, 4, 5, 7, 8, 9), (0, 1, 2, 6)),
    ((0, 1, 2, 3, 7, 8), (4, 5, 6, 9)),
)
_NEAL_CIFAR_PLUS_10 = (
    (26, 31, 34, 44, 45, 63, 65, 77, 93, 98),
    (7, 11, 66, 75, 77, 93, 95, 97, 98, 99),
    (2, 11, 15, 24, 32, 34, 63, 88, 93, 95),
    (1, 11, 38, 42, 44, 45, 63, 64, 66, 67),
    (3, 15, 19, 21, 42, 46, 66, 72, 78, 98),
)
_NEAL_TINY_KNOWN = (
    (10, 28, 54, 72, 77, 91, 104, 107, 112, 124, 125, 144, 145, 157, 166, 169, 180, 186, 192, 193),
    (0, 11, 60, 71, 87, 101, 111, 131, 132, 147, 153, 156, 157, 167, 171, 175, 190, 192, 193, 199),
    (12, 13, 15, 25, 28, 33, 46, 49, 54, 61, 78, 80, 82, 90, 103, 107, 124, 140, 159, 167),
    (10, 25, 28, 35, 41, 65, 72, 82, 85, 86, 89, 91, 96, 116, 123, 128, 132, 134, 154, 188),
    (8, 10, 26, 29, 38, 44, 47, 48, 59, 62, 76, 79, 93, 102, 106, 130, 145, 175, 183, 186),
)

# The original repository's first (random, seed 1000) splits.
_OLD_MNIST = (
    ((0, 1, 2, 3, 6, 9), (4, 5, 7, 8)),
    ((2, 3, 5, 7, 8, 9), (0, 1, 4, 6)),
    ((0, 2, 3, 5, 7, 9), (1, 4, 6, 8)),
    ((0, 1, 3, 4, 5, 7), (2, 6, 8, 9)),
    ((0, 2, 4, 6, 8, 9), (1, 3, 5, 7)),
)
_OLD_SVHN = (
    ((1, 2, 3, 4, 7, 8), (0, 5, 6, 9)),
    ((0, 2, 3, 5, 6, 7), (1, 4, 8, 9)),
    ((0, 2, 4, 5, 7, 9), (1, 3, 6, 8)),
    ((0, 1, 2, 3, 4, 6), (5, 7, 8, 9)),
    ((3, 4, 5, 6, 8, 9), (0, 1, 2, 7)),
)
_OLD_CIFAR10 = (
    ((2, 3, 4, 6, 8, 9), (0, 1, 5, 7)),
    ((1, 3, 4, 5, 6, 7), (0, 2, 8, 9)),
    ((0, 1, 4, 5, 6, 8), (2, 3, 7, 9)),
    ((1, 2, 4, 7, 8, 9), (0, 3, 5, 6)),
    ((0, 1, 2, 3, 6, 9), (4, 5, 7, 8)),
)
_OLD_CIFAR_PLUS_10 = (
    (3, 18, 24, 30, 36, 43, 78, 80, 93, 98),
    (6, 24, 26, 42, 50, 66, 74, 79, 91, 98),
    (4, 29, 36, 38, 46, 55, 63, 72, 75, 79),
    (18, 26, 27, 30, 32, 36, 43, 64, 93, 95),
    (4, 18, 19, 24, 35, 46, 50, 65, 88, 93),
)
_OLD_TINY_KNOWN = (
    (24, 45, 46, 49, 50, 58, 75, 76, 85, 87, 123, 126, 131, 142, 146, 147, 159, 189, 192, 199),
    (5, 6, 8, 30, 35, 51, 57, 81, 101, 113, 115, 129, 131, 140, 144, 155, 159, 168, 176, 198),
    (4, 15, 22, 23, 28, 29, 52, 57, 75, 85, 92, 114, 124, 127, 135, 155, 165, 190, 196, 199),
    (21, 43, 46, 50, 58, 59, 63, 71, 81, 82, 101, 122, 125, 142, 146, 150, 165, 170, 178, 196),
    (1, 13, 15, 18, 25, 49, 53, 57, 64, 65, 72, 80, 103, 104, 129, 134, 144, 152, 154, 186),
)


# ARPL / Vaze et al. (osr_splits.py at 3258f05 = ARPL's split.py at 3ede8b3), in the files' order.
_ARPL_MNIST_KNOWN = (
    (2, 4, 5, 9, 8, 3),
    (3, 2, 6, 9, 4, 0),
    (5, 8, 3, 2, 4, 6),
    (3, 7, 8, 4, 0, 5),
    (6, 3, 4, 9, 8, 2),
)
_ARPL_SVHN_KNOWN = (
    (5, 3, 7, 2, 8, 6),
    (3, 8, 7, 6, 2, 5),
    (8, 9, 4, 7, 2, 1),
    (3, 8, 2, 5, 0, 6),
    (4, 9, 2, 7, 1, 0),
)
_ARPL_CIFAR10_KNOWN = (
    (0, 6, 4, 9, 1, 7),
    (7, 6, 4, 9, 0, 1),
    (1, 5, 7, 3, 9, 4),
    (8, 6, 1, 9, 0, 7),
    (2, 4, 1, 7, 9, 6),
)
_ARPL_CIFAR_PLUS_KNOWN = (
    (4, 7, 9, 1),
    (6, 7, 1, 9),
    (9, 6, 1, 7),
    (6, 4, 9, 1),
    (1, 0, 9, 8),
)
_ARPL_CIFAR_PLUS_10_UNKNOWN = (
    (30, 25, 1, 9, 8, 0, 46, 52, 49, 71),
    (41, 9, 49, 40, 73, 60, 48, 30, 95, 71),
    (8, 9, 49, 40, 73, 60, 48, 95, 30, 71),
    (95, 60, 30, 73, 46, 49, 68, 99, 8, 71),
    (33, 2, 3, 97, 46, 21, 64, 63, 88, 43),
)
_ARPL_CIFAR_PLUS_50_UNKNOWN = (
    (27, 94, 29, 77, 88, 26, 69, 48, 75, 5, 59, 93, 39, 57, 45, 40, 78, 20, 98, 47, 66, 70, 91, 76, 41, 83, 99, 32, 53, 72, 2, 95, 21, 73, 84, 68, 35, 11, 55, 60, 30, 25, 1, 9, 8, 0, 46, 52, 49, 71),
    (65, 97, 86, 24, 45, 67, 2, 3, 91, 98, 79, 29, 62, 82, 33, 76, 0, 35, 5, 16, 54, 11, 99, 52, 85, 1, 25, 66, 28, 84, 23, 56, 75, 46, 21, 72, 55, 68, 8, 69, 41, 9, 49, 40, 73, 60, 48, 30, 95, 71),
    (20, 83, 65, 97, 94, 2, 93, 16, 67, 29, 62, 33, 24, 98, 5, 86, 35, 54, 0, 91, 52, 66, 85, 84, 56, 11, 1, 76, 25, 55, 21, 99, 72, 41, 23, 75, 28, 68, 69, 46, 8, 9, 49, 40, 73, 60, 48, 95, 30, 71),
    (92, 82, 77, 64, 5, 33, 62, 56, 70, 0, 20, 28, 67, 14, 84, 53, 91, 29, 85, 2, 52, 83, 75, 35, 11, 21, 72, 98, 55, 1, 41, 76, 25, 66, 69, 9, 48, 54, 40, 23, 95, 60, 30, 73, 46, 49, 68, 99, 8, 71),
    (47, 6, 19, 0, 62, 93, 59, 65, 54, 70, 34, 55, 23, 38, 72, 76, 53, 31, 78, 96, 77, 27, 92, 18, 82, 50, 98, 32, 1, 75, 83, 4, 51, 35, 80, 11, 74, 66, 36, 42, 33, 2, 3, 97, 46, 21, 64, 63, 88, 43),
)
_ARPL_TINY_KNOWN = (
    (108, 147, 17, 58, 193, 123, 72, 144, 75, 167, 134, 14, 81, 171, 44, 197, 152, 66, 1, 133),
    (198, 161, 91, 59, 57, 134, 61, 184, 90, 35, 29, 23, 199, 38, 133, 19, 186, 18, 85, 67),
    (177, 0, 119, 26, 78, 80, 191, 46, 134, 92, 31, 152, 27, 60, 114, 50, 51, 133, 162, 93),
    (98, 36, 158, 177, 189, 157, 170, 191, 82, 196, 138, 166, 43, 13, 152, 11, 75, 174, 193, 190),
    (95, 6, 145, 153, 0, 143, 31, 23, 189, 81, 20, 21, 89, 26, 36, 170, 102, 177, 108, 169),
)


def _complement(known_lists, total: int):
    # (known, the other classes ascending): MNIST, SVHN, CIFAR10 (10 classes), TinyImageNet (200).
    return tuple((k, tuple(sorted(set(range(total)) - set(k)))) for k in known_lists)


def _plus(unknown_lists, known_lists=(CIFAR10_VEHICLES,) * NUM_TRIALS):
    return tuple(zip(known_lists, unknown_lists))


_SPLITS = {
    "neal2018": {
        "mnist": _NEAL_10,
        "svhn": _NEAL_10,
        "cifar10": _NEAL_10,
        "cifar_plus_10": _plus(_NEAL_CIFAR_PLUS_10),
        "cifar_plus_50": _plus((CIFAR100_ANIMALS,) * NUM_TRIALS),
        "tiny_imagenet": _complement(_NEAL_TINY_KNOWN, _TINY_CLASSES),
    },
    "cac_random2020": {
        "mnist": _OLD_MNIST,
        "svhn": _OLD_SVHN,
        "cifar10": _OLD_CIFAR10,
        "cifar_plus_10": _plus(_OLD_CIFAR_PLUS_10),
        # The old files hold a different permutation per trial of the same 50 classes.
        "cifar_plus_50": _plus((CIFAR100_ANIMALS,) * NUM_TRIALS),
        "tiny_imagenet": _complement(_OLD_TINY_KNOWN, _TINY_CLASSES),
    },
    "arpl2020": {
        "mnist": _complement(_ARPL_MNIST_KNOWN, 10),
        "svhn": _complement(_ARPL_SVHN_KNOWN, 10),
        "cifar10": _complement(_ARPL_CIFAR10_KNOWN, 10),
        "cifar_plus_10": _plus(_ARPL_CIFAR_PLUS_10_UNKNOWN, _ARPL_CIFAR_PLUS_KNOWN),
        "cifar_plus_50": _plus(_ARPL_CIFAR_PLUS_50_UNKNOWN, _ARPL_CIFAR_PLUS_KNOWN),
        "tiny_imagenet": _complement(_ARPL_TINY_KNOWN, _TINY_CLASSES),
    },
}


def check_trial(trial) -> int:
    """Return ``trial`` as an int, or raise ValueError if it is not one of 0..4."""
    if isinstance(trial, bool) or not isinstance(trial, (int, np.integer)) or not 0 <= trial < NUM_TRIALS:
        raise ValueError(f"trial must be an integer in 0..{NUM_TRIALS - 1}, got {trial!r}")
    return int(trial)


def check_family(family: str) -> str:
    """Return ``family`` or raise ValueError naming the valid split families."""
    if family not in FAMILIES:
        raise ValueError(f"unknown split family {family!r}; choose one of {', '.join(FAMILIES)}")
    return family


def get_split(benchmark: str, trial: int, family: str = "neal2018") -> tuple[list[int], list[int]]:
    """Known and unknown class ids of ``benchmark`` in ``trial`` (0-4).

    ``family="neal2018"`` gives the paper's Table 1 splits; ``family="cac_random2020"`` the original
    repository's earlier random splits, both sorted ascending; ``family="arpl2020"`` the ARPL / Vaze et al.
    splits in their files' order (the known list's order gives the labels). For CIFAR+N the known ids are
    CIFAR-10 labels and the unknown ids CIFAR-100 fine labels; the two lists are disjoint within their own
    dataset.
    """
    check_family(family)
    if benchmark not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {benchmark!r}; choose one of {', '.join(BENCHMARKS)}")
    known, unknown = _SPLITS[family][benchmark][check_trial(trial)]
    return list(known), list(unknown)


def label_map(known, family: str = "neal2018") -> dict[int, int]:
    """Map each known class id to its training label: its rank among the sorted known ids (the original's
    convention), or in the :data:`FILE_ORDER_FAMILIES` its position in ``known``.

    E.g. known = [9, 0, 4] gives {0: 0, 4: 1, 9: 2}, and with ``family="arpl2020"`` {9: 0, 0: 1, 4: 2}.
    """
    order = [int(k) for k in known] if check_family(family) in FILE_ORDER_FAMILIES else sorted(int(k) for k in known)
    return {c: label for label, c in enumerate(order)}


def remap_labels(labels: np.ndarray, known, family: str = "neal2018") -> np.ndarray:
    """Replace each known class id in ``labels`` by its training label (:func:`label_map`; int32).

    Raises ValueError if ``labels`` holds an id that is not in ``known``.
    """
    labels = np.asarray(labels)
    mapping = label_map(known, family)
    table = np.full(max(max(mapping), int(labels.max(initial=0))) + 1, -1, np.int64)
    table[list(mapping)] = list(mapping.values())
    out = np.where((labels >= 0) & (labels < len(table)), table[np.clip(labels, 0, len(table) - 1)], -1)
    if (out < 0).any():
        raise ValueError(f"labels {sorted(set(labels[out < 0].tolist()))} are not known classes {sorted(mapping)}")
    return out.astype(np.int32)
