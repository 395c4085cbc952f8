"""Published open-set AUROC (%), mean ± std over the 5 trials, for comparison with our sweeps.

Source: Miller et al., "Class Anchor Clustering: a Loss for Distance-based Open Set Recognition",
WACV 2021, Table 1 (Neal et al. 2018 splits, trials 0-4), as quoted in Table 1 ("AUC scores (%)") of the
anonymous NeurIPS-2022 submission "Reaching Nirvana: Maximizing the Margin in Both Euclidean and Angular
Spaces for Deep Neural Network Classification", which cites CAC as Miller et al. WACV 2021; the paper's
own text was not at hand, so the ± values are second-hand. The softmax-thresholding row is the standard
baseline of Neal et al., "Open Set Learning with Counterfactual Images", ECCV 2018, as quoted there (std
not reported for CIFAR+10, CIFAR+50, TinyImageNet). The author of CAC notes that this softmax row was
copied from earlier papers, and that a re-trained MSP baseline scores higher. The built-in ``digits``
benchmark (scikit-learn's 8x8 digits) has no published numbers.
"""

from __future__ import annotations

# benchmark (experiment name) -> row -> (mean %, std % or None)
PAPER_AUROC: dict[str, dict[str, tuple[float, float | None]]] = {
    "mnist": {"cac": (99.1, 0.5), "softmax": (97.8, 0.2)},
    "svhn": {"cac": (94.1, 0.7), "softmax": (88.6, 0.6)},
    "cifar10": {"cac": (80.1, 3.0), "softmax": (67.7, 3.2)},
    "cifar_plus_10": {"cac": (87.7, 1.2), "softmax": (81.6, None)},
    "cifar_plus_50": {"cac": (87.0, 0.0), "softmax": (80.5, None)},
    "tiny_imagenet": {"cac": (76.0, 1.5), "softmax": (57.7, None)},
}


def paper_auroc(benchmark: str, row: str) -> tuple[float, float | None] | None:
    """(mean %, std %) of ``row`` ("cac" or "softmax") on ``benchmark``, or None when not published."""
    return PAPER_AUROC.get(benchmark, {}).get(row)
