"""Open-set metrics: definitions checked by brute force, sklearn and their invariances."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score

from cac_jax.core import metrics

# Scores drawn from a few integer levels so that ties (the usual source of bugs) are common.
score_lists = st.lists(st.integers(-5, 5), min_size=1, max_size=40)


def pairwise(known, unknown, weight=None):
    """Brute force: sum over all (known i, unknown j) of w_i * (1[s_i < s_j] + 1[s_i = s_j] / 2)."""
    weight = np.ones(len(known)) if weight is None else np.asarray(weight, float)
    total = sum(w * ((k < u) + (k == u) / 2) for k, w in zip(known, weight) for u in unknown)
    return total / (len(known) * len(unknown))


@settings(max_examples=200, deadline=None)
@given(score_lists, score_lists)
def test_auroc_is_mann_whitney_and_matches_sklearn(known, unknown):
    value = metrics.auroc(known, unknown)
    assert value == pytest.approx(pairwise(known, unknown))
    labels = [0] * len(known) + [1] * len(unknown)
    assert value == pytest.approx(roc_auc_score(labels, known + unknown))


@settings(max_examples=100, deadline=None)
@given(score_lists, score_lists)
def test_auroc_invariant_under_increasing_maps_and_flips_with_sign(known, unknown):
    k, u = np.array(known, float), np.array(unknown, float)
    value = metrics.auroc(k, u)
    assert metrics.auroc(np.exp(k) * 3 + 1, np.exp(u) * 3 + 1) == pytest.approx(value)
    assert metrics.auroc(np.tanh(k / 7), np.tanh(u / 7)) == pytest.approx(value)
    assert value + metrics.auroc(-k, -u) == pytest.approx(1.0)


@settings(max_examples=200, deadline=None)
@given(st.data(), score_lists)
def test_oscr_and_open_auc(data, unknown):
    known = data.draw(score_lists)
    correct = data.draw(st.lists(st.booleans(), min_size=len(known), max_size=len(known)))
    brute = pairwise(known, unknown, correct)
    assert metrics.open_auc(known, unknown, correct) == pytest.approx(brute)
    assert metrics.oscr(known, unknown, correct) == pytest.approx(brute)
    assert metrics.oscr(known, unknown, correct) <= metrics.auroc(known, unknown) + 1e-12
    all_correct = [True] * len(known)
    assert metrics.oscr(known, unknown, all_correct) == pytest.approx(metrics.auroc(known, unknown))


@settings(max_examples=100, deadline=None)
@given(st.data(), score_lists)
def test_oscr_curve_ends_at_accuracy_with_one_point_per_threshold(data, unknown):
    known = data.draw(score_lists)
    correct = data.draw(st.lists(st.booleans(), min_size=len(known), max_size=len(known)))
    fpr, ccr = metrics.oscr_curve(known, unknown, correct)
    assert (fpr[0], ccr[0]) == (0.0, 0.0)
    assert fpr[-1] == 1.0 and ccr[-1] == pytest.approx(np.mean(correct))
    assert len(fpr) == len(set(known) | set(unknown)) + 1
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(ccr) >= 0)


def test_oscr_hand_computed():
    """knowns (0 correct, 1 wrong, 2 correct), unknowns (1, 3). At thresholds 0, 1, 2, 3:
    fpr = 0, 1/2, 1/2, 1 and ccr = 1/3, 1/3, 2/3, 2/3; area = 1/2 * 1/3 + 1/2 * 2/3 = 1/2."""
    fpr, ccr = metrics.oscr_curve([0, 1, 2], [1, 3], [True, False, True])
    np.testing.assert_allclose(fpr, [0, 0, 0.5, 0.5, 1])
    np.testing.assert_allclose(ccr, [0, 1 / 3, 1 / 3, 2 / 3, 2 / 3])
    assert metrics.oscr([0, 1, 2], [1, 3], [True, False, True]) == pytest.approx(0.5)


def test_fpr_at_tpr():
    known = np.arange(100, dtype=float)  # accept 95 knowns -> threshold 94
    unknown = np.array([10.0, 94.0, 95.0, 200.0])
    assert metrics.fpr_at_tpr(known, unknown, 0.95) == 0.5
    assert metrics.fpr_at_tpr(known, unknown, 1.0) == 0.75
    with pytest.raises(ValueError, match="tpr must lie in"):
        metrics.fpr_at_tpr(known, unknown, 0.0)


def test_aupr_perfect_separation_and_accuracy():
    assert metrics.aupr_in([0, 1], [2, 3]) == pytest.approx(1.0)
    assert metrics.aupr_out([0, 1], [2, 3]) == pytest.approx(1.0)
    assert metrics.closed_set_accuracy([0, 1, 2, 2], [0, 1, 2, 0]) == 0.75


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: metrics.auroc([], [1.0]), "known_scores must be a non-empty 1-D array"),
        (lambda: metrics.auroc([[1.0]], [1.0]), "known_scores must be a non-empty 1-D array"),
        (lambda: metrics.auroc([1.0], [np.nan]), "unknown_scores holds 1 non-finite"),
        (lambda: metrics.oscr([1.0, 2.0], [1.0], [True]), "known_correct of shape"),
        (lambda: metrics.closed_set_accuracy([1, 2], [1]), "labels of shape"),
    ],
)
def test_bad_input_has_clear_message(call, message):
    with pytest.raises(ValueError, match=message):
        call()
