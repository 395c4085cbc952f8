"""Per-dataset facts: network input size, augmentation, normalisation, train fraction, sources.

Values follow the original's ``datasets/config.json`` (SPEC.md §4). Normalisation constants are per
trial and apply to pixels scaled to [0, 1]: ``x_norm = (x / 255 - mean_t) / std_t``. As in the
original they are indexed by trial number only: they were computed on the known-class training
images of the *old* random splits and are used unchanged with both split families.

``digits`` (scikit-learn's 8x8 digits, this project's built-in default) uses the MNIST splits, no
resize (image size 8), MNIST's augmentation (flip 0, rotate 0, scale_min 0.7), an 80/20 train/val
split, and per-trial mean/std computed by :func:`cac_jax.data.loading.pixel_statistics` on the
train set of ``load_open_set("digits", trial)`` (known classes, neal2018 splits, seed-0 train/val
split), rounded to 4 digits.
"""

from __future__ import annotations

import dataclasses

from cac_jax.data.splits import check_trial

DATASETS = ("digits", "mnist", "svhn", "cifar10", "cifar_plus_10", "cifar_plus_50", "tiny_imagenet")


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """Facts of one open-set dataset.

    Attributes:
      name: dataset name (one of :data:`DATASETS`).
      benchmark: whose class splits it uses (``digits`` uses ``mnist``'s).
      image_size: network input side S; images are resized (bilinear) from ``native_size`` to S.
      native_size: side of the source images.
      channels: 1 (grey) or 3 (RGB).
      flip: probability of a horizontal flip in training.
      rotate: training rotation is uniform in [-rotate, +rotate] degrees.
      scale_min: RandomResizedCrop area fraction lies in [scale_min, 1].
      means, stds: per trial (5 entries), per channel, for [0, 1] pixels.
      train_fraction: fraction of each known class's training images used for training (rest: val).
      known_source: source dataset of training and known test images.
      unknown_source: source dataset whose *test* split gives the unknown test images.
    """

    name: str
    benchmark: str
    image_size: int
    native_size: int
    channels: int
    flip: float
    rotate: float
    scale_min: float
    means: tuple[tuple[float, ...], ...]
    stds: tuple[tuple[float, ...], ...]
    train_fraction: float
    known_source: str
    unknown_source: str

    def mean(self, trial: int) -> tuple[float, ...]:
        """Per-channel mean of ``trial`` (0-4)."""
        return self.means[check_trial(trial)]

    def std(self, trial: int) -> tuple[float, ...]:
        """Per-channel standard deviation of ``trial`` (0-4)."""
        return self.stds[check_trial(trial)]


_CIFAR_PLUS_MEAN = ((0.4965, 0.5063, 0.5173),) * 5
_CIFAR_PLUS_STD = ((0.2599, 0.2575, 0.2745),) * 5

SPECS = {
    "digits": DatasetSpec(
        "digits", "mnist", 8, 8, 1, 0.0, 0.0, 0.7,
        means=((0.3069,), (0.3063,), (0.3070,), (0.3046,), (0.3069,)),
        stds=((0.3766,), (0.3700,), (0.3767,), (0.3730,), (0.3770,)),
        train_fraction=0.8, known_source="digits", unknown_source="digits",
    ),
    "mnist": DatasetSpec(
        "mnist", "mnist", 32, 28, 1, 0.0, 0.0, 0.7,
        means=((0.1321,), (0.1343,), (0.1382,), (0.1248,), (0.1421,)),
        stds=((0.3101,), (0.3110,), (0.3154,), (0.3023,), (0.3193,)),
        train_fraction=0.8, known_source="mnist", unknown_source="mnist",
    ),
    "svhn": DatasetSpec(
        "svhn", "svhn", 32, 32, 3, 0.0, 0.0, 0.7,
        means=((0.4479, 0.4485, 0.4492), (0.4491, 0.4498, 0.4509), (0.4499, 0.4506, 0.4513),
               (0.4495, 0.4500, 0.4507), (0.4503, 0.4503, 0.4508)),
        stds=((0.2008, 0.1997, 0.1998), (0.1992, 0.1981, 0.1984), (0.1986, 0.1975, 0.1977),
              (0.2014, 0.2001, 0.2002), (0.2000, 0.1989, 0.1994)),
        train_fraction=0.8, known_source="svhn", unknown_source="svhn",
    ),
    "cifar10": DatasetSpec(
        "cifar10", "cifar10", 32, 32, 3, 0.5, 10.0, 0.8,
        means=((0.4858, 0.4771, 0.4326), (0.4850, 0.4598, 0.4032), (0.4882, 0.4847, 0.4552),
               (0.4872, 0.4836, 0.4498), (0.4917, 0.4810, 0.4498)),
        stds=((0.2422, 0.2374, 0.2547), (0.2452, 0.2397, 0.2474), (0.2454, 0.2408, 0.2622),
              (0.2465, 0.2432, 0.2595), (0.2512, 0.2487, 0.2685)),
        train_fraction=0.8, known_source="cifar10", unknown_source="cifar10",
    ),
    "cifar_plus_10": DatasetSpec(
        "cifar_plus_10", "cifar_plus_10", 32, 32, 3, 0.5, 0.0, 0.8, _CIFAR_PLUS_MEAN, _CIFAR_PLUS_STD,
        train_fraction=0.8, known_source="cifar10", unknown_source="cifar100",
    ),
    "cifar_plus_50": DatasetSpec(
        "cifar_plus_50", "cifar_plus_50", 32, 32, 3, 0.5, 0.0, 0.8, _CIFAR_PLUS_MEAN, _CIFAR_PLUS_STD,
        train_fraction=0.8, known_source="cifar10", unknown_source="cifar100",
    ),
    "tiny_imagenet": DatasetSpec(
        "tiny_imagenet", "tiny_imagenet", 64, 64, 3, 0.5, 20.0, 0.7,
        means=((0.4795, 0.4367, 0.3741), (0.4927, 0.4622, 0.4247), (0.4585, 0.4563, 0.4133),
               (0.4664, 0.4517, 0.4131), (0.4766, 0.4387, 0.3951)),
        stds=((0.2787, 0.2707, 0.2759), (0.2742, 0.2692, 0.2828), (0.2696, 0.2590, 0.2752),
              (0.2779, 0.2712, 0.2865), (0.2822, 0.2678, 0.2841)),
        train_fraction=0.9, known_source="tiny_imagenet", unknown_source="tiny_imagenet",
    ),
}


def get_spec(dataset: str) -> DatasetSpec:
    """The :class:`DatasetSpec` of ``dataset``; ValueError naming the valid ones otherwise."""
    if dataset not in SPECS:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    return SPECS[dataset]


_DIGITS = tuple(str(d) for d in range(10))
# The class names of the sources that give known classes, by class id (torchvision's and TFDS's order). Tiny
# ImageNet's classes are WordNet ids, read with its archive; they are named by their id here.
CLASS_NAMES = {"digits": _DIGITS, "mnist": _DIGITS, "svhn": _DIGITS,
               "cifar10": ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")}


def class_names(dataset: str, class_ids) -> list[str]:
    """The names of ``class_ids`` of ``dataset``'s known-class source (``"class <id>"`` where it has none, or for
    data of no registered dataset)."""
    spec = SPECS.get(dataset)
    names = CLASS_NAMES.get(spec.known_source) if spec else None
    return [names[int(c)] if names else f"class {int(c)}" for c in class_ids]
