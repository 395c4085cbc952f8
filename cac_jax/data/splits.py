"""Known/unknown class splits of the six open-set benchmarks, and the known-label map.

Two families of splits, each with trials 0-4:

* ``"neal2018"`` (default): the splits of Neal et al. (ECCV 2018) that the CAC paper's Table 1 uses
  (the original repository's ``class_splits/`` at HEAD).
* ``"cac_random2020"``: the earlier random splits (``random.seed(1000)``) the original repository
  first shipped; its pretrained weights and the paper's Table 4 use them (``class_splits_old/``).

Class ids are the dataset's original ones, in torchvision's conventions: the digit for MNIST and
SVHN, the CIFAR-10 label, CIFAR-100 *fine* labels (alphabetical) for the CIFAR+N unknowns, and for
TinyImageNet the position of the WNID in sorted order. Lists are stored sorted: the order inside
the original files carries no meaning (the label map sorts them anyway).
"""

from __future__ import annotations

import numpy as np

BENCHMARKS = ("mnist", "svhn", "cifar10", "cifar_plus_10", "cifar_plus_50", "tiny_imagenet")
FAMILIES = ("neal2018", "cac_random2020")
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


def _tiny(known_lists):
    # TinyImageNet unknowns are the other 180 of the 200 classes.
    return tuple((k, tuple(sorted(set(range(_TINY_CLASSES)) - set(k)))) for k in known_lists)


def _plus(unknown_lists):
    return tuple((CIFAR10_VEHICLES, u) for u in unknown_lists)


_SPLITS = {
    "neal2018": {
        "mnist": _NEAL_10,
        "svhn": _NEAL_10,
        "cifar10": _NEAL_10,
        "cifar_plus_10": _plus(_NEAL_CIFAR_PLUS_10),
        "cifar_plus_50": _plus((CIFAR100_ANIMALS,) * NUM_TRIALS),
        "tiny_imagenet": _tiny(_NEAL_TINY_KNOWN),
    },
    "cac_random2020": {
        "mnist": _OLD_MNIST,
        "svhn": _OLD_SVHN,
        "cifar10": _OLD_CIFAR10,
        "cifar_plus_10": _plus(_OLD_CIFAR_PLUS_10),
        # The old files hold a different permutation per trial of the same 50 classes.
        "cifar_plus_50": _plus((CIFAR100_ANIMALS,) * NUM_TRIALS),
        "tiny_imagenet": _tiny(_OLD_TINY_KNOWN),
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
    """Known and unknown class ids of ``benchmark`` in ``trial`` (0-4), both sorted ascending.

    ``family="neal2018"`` gives the paper's Table 1 splits; ``family="cac_random2020"`` the original
    repository's earlier random splits. For CIFAR+N the known ids are CIFAR-10 labels and the
    unknown ids CIFAR-100 fine labels; the two lists are disjoint within their own dataset.
    """
    check_family(family)
    if benchmark not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {benchmark!r}; choose one of {', '.join(BENCHMARKS)}")
    known, unknown = _SPLITS[family][benchmark][check_trial(trial)]
    return list(known), list(unknown)


def label_map(known) -> dict[int, int]:
    """Map each known class id to its rank among the sorted known ids (the original's convention).

    E.g. known = [9, 0, 4] gives {0: 0, 4: 1, 9: 2}.
    """
    return {int(c): rank for rank, c in enumerate(sorted(int(k) for k in known))}


def remap_labels(labels: np.ndarray, known) -> np.ndarray:
    """Replace each known class id in ``labels`` by its rank among the sorted ``known`` ids (int32).

    Raises ValueError if ``labels`` holds an id that is not in ``known``.
    """
    labels = np.asarray(labels)
    sorted_known = np.array(sorted(int(k) for k in known), dtype=np.int64)
    ranks = np.searchsorted(sorted_known, labels)
    ok = (ranks < len(sorted_known)) & (sorted_known[np.minimum(ranks, len(sorted_known) - 1)] == labels)
    if not ok.all():
        raise ValueError(f"labels {sorted(set(np.asarray(labels)[~ok].tolist()))} are not known classes {sorted_known.tolist()}")
    return ranks.astype(np.int32)
