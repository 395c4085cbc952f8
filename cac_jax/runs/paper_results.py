"""Published open-set AUROC (%), mean ± std over the 5 trials, for comparison with our sweeps, each under the
split family and recipe it was measured with (the report sets a number beside ours only where both match).

* ``neal2018`` splits, ``cac2021`` recipe -- Miller et al., "Class Anchor Clustering: a Loss for
  Distance-based Open Set Recognition", WACV 2021, Table 1 (trials 0-4), as quoted in Table 1 ("AUC scores
  (%)") of the anonymous NeurIPS-2022 submission "Reaching Nirvana: Maximizing the Margin in Both Euclidean
  and Angular Spaces for Deep Neural Network Classification", which cites CAC as Miller et al. WACV 2021; the
  paper's own text was not at hand, so the ± values are second-hand. The softmax-thresholding row is the
  standard baseline of Neal et al., "Open Set Learning with Counterfactual Images", ECCV 2018, as quoted there
  (std not reported for CIFAR+10, CIFAR+50, TinyImageNet). The author of CAC notes that this softmax row was
  copied from earlier papers, and that a re-trained MSP baseline scores higher.
* ``arpl2020`` splits, ``vaze2022`` recipe -- the MLS baseline (cross-entropy scored by its maximum logit) of
  Vaze et al., "Open-Set Recognition: a Good Closed-Set Classifier is All You Need", ICLR 2022, Table 1
  (MODERN_PROTOCOL.md (c)): SVHN to TinyImageNet are a **secondary** source (a third-party paper's reprint;
  TinyImageNet's 83.0 also matches the authors' README for their released weights), MNIST's 99.3 is
  **unverified** (from memory, found in no stored source). No std is published with them.

The built-in ``digits`` benchmark (scikit-learn's 8x8 digits) has no published numbers.
"""

from __future__ import annotations

from typing import NamedTuple

BENCHMARKS = ("mnist", "svhn", "cifar10", "cifar_plus_10", "cifar_plus_50", "tiny_imagenet")


class Published(NamedTuple):
    mean: float  # %
    std: float | None  # %, None where not published
    source: str  # who, and how far it was verified


def _row(values, stds, source):
    return {b: Published(m, s, source(b) if callable(source) else source) for b, m, s in zip(BENCHMARKS, values, stds)}


# (split family, recipe) -> (objective, score) -> benchmark -> Published
PUBLISHED: dict[tuple[str, str], dict[tuple[str, str], dict[str, Published]]] = {
    ("neal2018", "cac2021"): {
        ("cac", "cac"): _row((99.1, 94.1, 80.1, 87.7, 87.0, 76.0), (0.5, 0.7, 3.0, 1.2, 0.0, 1.5),
                             "CAC, Miller et al. Table 1"),
        ("ce", "msp"): _row((97.8, 88.6, 67.7, 81.6, 80.5, 57.7), (0.2, 0.6, 3.2, None, None, None),
                            "softmax, Neal et al. 2018"),
    },
    ("arpl2020", "vaze2022"): {
        ("ce", "max_logit"): _row((99.3, 97.1, 93.6, 97.9, 96.5, 83.0), (None,) * 6,
                                  lambda b: "MLS, Vaze et al. Table 1, " + ("unverified" if b == "mnist" else "secondary")),
    },
}

# The rows of the paper's Table 1 by their old names.
PAPER_ROWS = {"cac": ("cac", "cac"), "softmax": ("ce", "msp")}


def published(family: str, recipe: str, objective: str, score: str, benchmark: str) -> Published | None:
    """What was published for ``benchmark`` with this split family, recipe, objective and score, or None."""
    return PUBLISHED.get((family, recipe), {}).get((objective, score), {}).get(benchmark)


def paper_auroc(benchmark: str, row: str) -> tuple[float, float | None] | None:
    """(mean %, std %) of the paper's Table 1 ``row`` ("cac" or "softmax") on ``benchmark``, or None."""
    found = published("neal2018", "cac2021", *PAPER_ROWS[row], benchmark)
    return None if found is None else (found.mean, found.std)
