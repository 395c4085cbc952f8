"""From open-set scores to decisions: a threshold calibrated on held-out knowns, conformal p-values, and the metrics
of the K + 1-class classifier that results (K known classes and "unknown").

Convention (as :mod:`cac_jax.core.metrics`): a score is unknownness, larger = more likely unknown.

**Split conformal calibration** (Vovk et al. 2005; Angelopoulos & Bates 2021, §1). Given the scores c_1..c_n of n
held-out *known* images (never training or test images), an image with score s gets the conformal p-value

    p(s) = (1 + #{i : c_i >= s}) / (n + 1)

and is rejected as unknown when p(s) <= alpha, alpha = 1 - target (target: the known-acceptance rate wanted, 0.95
by default). If the calibration scores and the score of a new known image are *exchangeable* (the images come from
the same distribution and the network never trained on either), p is a valid p-value, P(p <= alpha) <= alpha: a
new known is rejected with probability at most alpha (rejecting only at p < alpha, more cautious, keeps that too).
For scores without ties a known is also accepted with probability at most target + 1/(n + 1). The guarantee is
marginal (over calibration sets and images), holds for every score and every network, and says nothing about
unknowns: their rejection rate is what the score earns. Images of another distribution than the calibration's
(another camera, a corrupted copy) void it.

Rejecting when p <= alpha is the same as accepting when s <= t with t = c_(k), the k-th smallest calibration
score, k = ceil((n + 1)·target), the split-conformal quantile (:func:`threshold`); when k > n (fewer than
1/alpha - 1 calibration images) no finite threshold keeps the guarantee and t = +inf accepts everything.
"""

from __future__ import annotations

import math

import numpy as np


def _calibration(scores) -> np.ndarray:
    c = np.asarray(scores, np.float64)
    if c.ndim != 1 or c.size == 0:
        raise ValueError(f"calibration scores must be a non-empty 1-D array, got shape {c.shape}")
    if not np.all(np.isfinite(c)):
        raise ValueError(f"calibration scores hold {np.count_nonzero(~np.isfinite(c))} non-finite values")
    return np.sort(c)


def _target(target: float) -> float:
    if not 0.0 < float(target) < 1.0:
        raise ValueError(f"target known-acceptance rate must lie in (0, 1), got {target}")
    return float(target)


def p_values(calibration_scores, scores) -> np.ndarray:
    """Conformal p-values p(s) = (1 + #{c_i >= s}) / (n + 1) of ``scores`` against the calibration scores."""
    c = _calibration(calibration_scores)
    s = np.asarray(scores, np.float64)
    at_least = c.size - np.searchsorted(c, s, side="left")  # #{c_i >= s}; a NaN score counts none: p = 1/(n+1)
    return (1.0 + at_least) / (c.size + 1.0)


def threshold(calibration_scores, target: float = 0.95) -> float:
    """The score t with s <= t  <=>  p(s) >= 1 - target: the k-th smallest calibration score, k = ceil((n+1)·target)
    (+inf when k > n)."""
    c = _calibration(calibration_scores)
    # The small tolerance keeps (n + 1)·target that is an integer in exact arithmetic from rounding up.
    k = math.ceil((c.size + 1) * _target(target) - 1e-9)
    return float(c[k - 1]) if k <= c.size else math.inf


def accepts(calibration_scores, scores, target: float = 0.95) -> np.ndarray:
    """Whether each score is accepted as known: s <= :func:`threshold`, i.e. p(s) > 1 - target (decided on the
    order statistic, free of the rounding of 1 - target)."""
    return np.asarray(scores, np.float64) <= threshold(calibration_scores, target)


def k_plus_1(pred, accept, num_classes: int) -> np.ndarray:
    """Decisions in 0..K: the closed-set prediction where accepted, K ("unknown") where rejected."""
    return np.where(np.asarray(accept, bool), np.asarray(pred, np.int64), num_classes)


def confusion(true, pred, num_labels: int) -> np.ndarray:
    """(L, L) counts, row = true label, column = predicted (scikit-learn's ``confusion_matrix`` layout)."""
    out = np.zeros((num_labels, num_labels), np.int64)
    np.add.at(out, (np.asarray(true, np.int64), np.asarray(pred, np.int64)), 1)
    return out


def macro_f1(matrix: np.ndarray) -> float:
    """Unweighted mean over the labels of F1 = 2·TP / (2·TP + FP + FN), 0 for a label never true nor predicted
    (scikit-learn's ``f1_score(average="macro", labels=range(L), zero_division=0)``)."""
    m = np.asarray(matrix, np.float64)
    tp = np.diag(m)
    denominator = m.sum(axis=0) + m.sum(axis=1)  # 2·TP + FP + FN
    f1 = np.divide(2 * tp, denominator, out=np.zeros_like(tp), where=denominator > 0)
    return float(f1.mean())


def operating_point(known_labels, known_pred, known_accept, unknown_pred, unknown_accept, num_classes: int) -> dict:
    """The K + 1-class classifier's figures at one threshold (fractions in [0, 1]). True labels: a known test
    image's class, K for an unknown; decisions: the closed-set prediction where accepted, K where rejected.

    ``known_acceptance`` (test knowns accepted), ``unknown_rejection`` (test unknowns rejected), ``ccr`` (knowns
    accepted *and* correctly classified, over all knowns: OSCR's correct classification rate at this point),
    ``open_set_accuracy`` (K + 1-class accuracy over all test images), ``macro_f1`` (over the K + 1 classes) and
    ``confusion`` ((K + 1) x (K + 1) counts as nested lists; last row and column: unknown)."""
    known_labels = np.asarray(known_labels, np.int64)
    known_accept, unknown_accept = np.asarray(known_accept, bool), np.asarray(unknown_accept, bool)
    true = np.concatenate([known_labels, np.full(unknown_accept.size, num_classes, np.int64)])
    pred = np.concatenate([k_plus_1(known_pred, known_accept, num_classes),
                           k_plus_1(unknown_pred, unknown_accept, num_classes)])
    matrix = confusion(true, pred, num_classes + 1)
    return {"known_acceptance": float(known_accept.mean()),
            "unknown_rejection": float(1.0 - unknown_accept.mean()) if unknown_accept.size else None,
            "ccr": float(np.mean(known_accept & (np.asarray(known_pred) == known_labels))),
            "open_set_accuracy": float(np.mean(true == pred)),
            "macro_f1": macro_f1(matrix),
            "confusion": matrix.tolist()}


def youden_threshold(known_scores, unknown_scores) -> float:
    """The *oracle* threshold t (accept s <= t) that maximises Youden's J = P(unknown rejected) - P(known rejected)
    on the test scores themselves (the smallest such t). It looks at the test unknowns, so figures at it are an
    upper bound to compare with, never a result."""
    known = np.sort(np.asarray(known_scores, np.float64))
    unknown = np.sort(np.asarray(unknown_scores, np.float64))
    candidates = np.unique(np.concatenate([known, unknown]))
    rejected_unknown = 1.0 - np.searchsorted(unknown, candidates, side="right") / unknown.size
    rejected_known = 1.0 - np.searchsorted(known, candidates, side="right") / known.size
    return float(candidates[int(np.argmax(rejected_unknown - rejected_known))])
