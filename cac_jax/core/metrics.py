"""Open-set metrics on host numpy arrays.

Convention throughout: a score is "unknownness" (larger = more likely unknown, as CAC's min_j s_j);
a known test sample is accepted at threshold t when its score is <= t. AUROC treats unknowns as the
positive class, as the original's `metrics.py`.
"""

import numpy as np


def _scores(name, x):
    x = np.asarray(x)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array, got shape {x.shape}")
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise TypeError(f"{name} must be numeric, got dtype {x.dtype}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} holds {np.count_nonzero(~np.isfinite(x))} non-finite values")
    return x.astype(np.float64)


def _same_length(a_name, a, b_name, b):
    if a.shape != b.shape:
        raise ValueError(f"{a_name} of shape {a.shape} and {b_name} of shape {b.shape} must match")


def _midranks(values):
    """1-based ranks of `values`, tied values sharing the mean of their ranks."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    last_rank = np.cumsum(counts)
    return (last_rank - (counts - 1) / 2.0)[inverse]


def auroc(known_scores, unknown_scores):
    """Area under the ROC curve, unknown = positive, ties counted 1/2.

    AUROC = P(s_unknown > s_known) + P(s_unknown = s_known) / 2 = U / (n_known * n_unknown), the
    Mann-Whitney U of the unknowns, computed from mid-ranks in O(n log n).
    """
    known = _scores("known_scores", known_scores)
    unknown = _scores("unknown_scores", unknown_scores)
    ranks = _midranks(np.concatenate([known, unknown]))
    n_k, n_u = known.size, unknown.size
    u = ranks[n_k:].sum() - n_u * (n_u + 1) / 2.0
    return float(u / (n_k * n_u))


def closed_set_accuracy(predictions, labels):
    """Fraction of known test samples whose predicted class equals the label."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if predictions.ndim != 1 or predictions.size == 0:
        raise ValueError(f"predictions must be a non-empty 1-D array, got shape {predictions.shape}")
    _same_length("predictions", predictions, "labels", labels)
    return float(np.mean(predictions == labels))


def oscr_curve(known_scores, unknown_scores, known_correct):
    """The open-set classification rate curve (Dhamija et al., NeurIPS 2018).

    Returns (fpr, ccr), two arrays from (0, 0) to (1, accuracy): at each distinct threshold t,
    fpr = fraction of unknowns with score <= t, ccr = fraction of all knowns that are correctly
    classified and have score <= t. Samples with equal scores enter together (one point per distinct
    score, so a tie is a straight segment), and no point is added beyond the thresholds: the curve
    ends at the closed-set accuracy, not at (1, 1).
    """
    known = _scores("known_scores", known_scores)
    unknown = _scores("unknown_scores", unknown_scores)
    correct = np.asarray(known_correct, dtype=bool)
    _same_length("known_scores", known, "known_correct", correct)
    thresholds = np.unique(np.concatenate([known, unknown]))
    accepted_unknown = np.searchsorted(np.sort(unknown), thresholds, side="right")
    accepted_correct = np.searchsorted(np.sort(known[correct]), thresholds, side="right")
    fpr = np.concatenate([[0.0], accepted_unknown / unknown.size])
    ccr = np.concatenate([[0.0], accepted_correct / known.size])
    return fpr, ccr


def oscr(known_scores, unknown_scores, known_correct):
    """Area under the OSCR curve (trapezoid rule); <= AUROC, = AUROC when every known is correct."""
    fpr, ccr = oscr_curve(known_scores, unknown_scores, known_correct)
    return float(np.sum(np.diff(fpr) * (ccr[1:] + ccr[:-1]) / 2.0))


def open_auc(known_scores, unknown_scores, known_correct):
    """OpenAUC (Wang et al., NeurIPS 2022): over all (known, unknown) pairs, the fraction in which the
    known is correctly classified and scored below the unknown, ties counted 1/2:

        OpenAUC = 1/(n_k n_u) sum_i sum_j 1[correct_i] (1[s_i < s_j] + 1[s_i = s_j] / 2)

    Counted by sorting in O(n log n). It equals the area under the OSCR curve (both integrate the
    correct-classification rate over the unknowns' scores), computed here independently of `oscr`.
    """
    known = _scores("known_scores", known_scores)
    unknown = _scores("unknown_scores", unknown_scores)
    correct = np.asarray(known_correct, dtype=bool)
    _same_length("known_scores", known, "known_correct", correct)
    sorted_unknown = np.sort(unknown)
    kept = known[correct]
    above = unknown.size - np.searchsorted(sorted_unknown, kept, side="right")
    tied = np.searchsorted(sorted_unknown, kept, side="right") - np.searchsorted(sorted_unknown, kept, side="left")
    return float((above.sum() + tied.sum() / 2.0) / (known.size * unknown.size))


def fpr_at_tpr(known_scores, unknown_scores, tpr=0.95):
    """False-positive rate at a given true-positive rate, in the out-of-distribution convention
    (Hendrycks & Gimpel 2017): choose the smallest threshold t that accepts at least `tpr` of the
    knowns (score <= t), and return the fraction of unknowns also accepted at t. Lower is better."""
    if not 0.0 < tpr <= 1.0:
        raise ValueError(f"tpr must lie in (0, 1], got {tpr!r}")
    known = np.sort(_scores("known_scores", known_scores))
    unknown = _scores("unknown_scores", unknown_scores)
    threshold = known[int(np.ceil(tpr * known.size - 1e-9)) - 1]
    return float(np.mean(unknown <= threshold))


def aupr_in(known_scores, unknown_scores):
    """Average precision with the knowns as the positive class (ranked by low score)."""
    known = _scores("known_scores", known_scores)
    unknown = _scores("unknown_scores", unknown_scores)
    labels = np.concatenate([np.ones(known.size), np.zeros(unknown.size)])
    return float(_average_precision(labels, -np.concatenate([known, unknown])))


def aupr_out(known_scores, unknown_scores):
    """Average precision with the unknowns as the positive class (ranked by high score)."""
    known = _scores("known_scores", known_scores)
    unknown = _scores("unknown_scores", unknown_scores)
    labels = np.concatenate([np.zeros(known.size), np.ones(unknown.size)])
    return float(_average_precision(labels, np.concatenate([known, unknown])))


def _average_precision(*args, **kwargs):
    # scikit-learn is imported when first needed: importing it sets process-wide OpenMP variables
    # (KMP_DUPLICATE_LIB_OK, KMP_INIT_AT_FORK), which importing cac_jax must not do.
    from sklearn.metrics import average_precision_score

    return average_precision_score(*args, **kwargs)
