"""Calibrated decisions: conformal p-values and thresholds against their definitions, the acceptance rate on fresh
exchangeable knowns within a binomial band, and the K + 1-class metrics against scikit-learn."""

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

from cac_jax.core import decisions

# A few integer levels: ties, where conformal bookkeeping goes wrong, are common.
values = st.lists(st.integers(-4, 4), min_size=1, max_size=30)
targets = st.sampled_from([0.5, 0.8, 0.9, 0.95, 0.99])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(-4, 4), min_size=2, max_size=40), targets)
def test_the_p_value_is_valid_whichever_image_is_the_new_one(pool, target):
    """Exchangeability made exact: each of the n + 1 images is the new one in turn, the others calibrate. A valid
    p-value is rejected (p <= alpha) for at most a fraction alpha of them, ties included."""
    alpha = 1 - Fraction(target).limit_denominator(100)
    rejected = 0
    for i in range(len(pool)):
        calibration = pool[:i] + pool[i + 1:]
        p = decisions.p_values(calibration, [pool[i]])[0]
        rejected += Fraction(p).limit_denominator(10_000) <= alpha
        assert decisions.accepts(calibration, [pool[i]], target)[0] == (Fraction(p).limit_denominator(10_000) > alpha)
    assert Fraction(rejected, len(pool)) <= alpha


@settings(max_examples=200, deadline=None)
@given(values, values)
def test_p_values_count_the_calibration_scores_at_least_as_large(calibration, scores):
    p = decisions.p_values(calibration, scores)
    expected = [(1 + sum(c >= s for c in calibration)) / (len(calibration) + 1) for s in scores]
    np.testing.assert_allclose(p, expected)


@settings(max_examples=200, deadline=None)
@given(values, targets)
def test_the_threshold_is_the_split_conformal_quantile(calibration, target):
    n = len(calibration)
    k = int(np.ceil(Fraction(n + 1) * Fraction(target).limit_denominator(100)))
    expected = sorted(calibration)[k - 1] if k <= n else np.inf
    assert decisions.threshold(calibration, target) == expected


@pytest.mark.parametrize("target", [0.9, 0.95])
def test_acceptance_of_fresh_exchangeable_knowns_stays_in_the_binomial_band(target):
    """Calibrate on n knowns, accept m fresh ones: over 200 repetitions the rate has mean >= target and <= target +
    1/(n+1), and each rate lies within 4.5 standard deviations (calibration's Beta spread plus the test's binomial)."""
    rng = np.random.default_rng(0)
    n, m = 500, 2000
    sd = np.sqrt(target * (1 - target) / m + target * (1 - target) / (n + 2))
    rates = []
    for _ in range(200):
        calibration, fresh = rng.gumbel(size=n), rng.gumbel(size=m)
        rates.append(decisions.accepts(calibration, fresh, target).mean())
    rates = np.array(rates)
    assert np.all(np.abs(rates - target) < 4.5 * sd), (rates.min(), rates.max())
    assert target - 3 * sd / np.sqrt(len(rates)) <= rates.mean() <= target + 1 / (n + 1) + 3 * sd / np.sqrt(len(rates))


def test_too_few_calibration_images_accept_everything_and_bad_targets_are_named():
    assert decisions.threshold(np.arange(10.0), 0.95) == np.inf  # 10 < 1/0.05 - 1
    assert decisions.accepts(np.arange(10.0), [1e9], 0.95).all()
    with pytest.raises(ValueError, match="target known-acceptance rate must lie in"):
        decisions.threshold([1.0, 2.0], 1.0)
    with pytest.raises(ValueError, match="non-finite"):
        decisions.p_values([1.0, np.nan], [0.0])


@st.composite
def open_set_cases(draw):
    k = draw(st.integers(1, 5))
    n_known, n_unknown = draw(st.integers(1, 25)), draw(st.integers(0, 25))
    labels = draw(st.lists(st.integers(0, k - 1), min_size=n_known, max_size=n_known))
    pred = draw(st.lists(st.integers(0, k - 1), min_size=n_known, max_size=n_known))
    accept = draw(st.lists(st.booleans(), min_size=n_known, max_size=n_known))
    unknown_pred = draw(st.lists(st.integers(0, k - 1), min_size=n_unknown, max_size=n_unknown))
    unknown_accept = draw(st.lists(st.booleans(), min_size=n_unknown, max_size=n_unknown))
    return k, labels, pred, accept, unknown_pred, unknown_accept


@settings(max_examples=300, deadline=None)
@given(open_set_cases())
def test_k_plus_1_metrics_match_scikit_learn(case):
    k, labels, pred, accept, unknown_pred, unknown_accept = case
    got = decisions.operating_point(labels, pred, accept, unknown_pred, unknown_accept, k)
    true = labels + [k] * len(unknown_pred)
    decided = [p if a else k for p, a in zip(pred + unknown_pred, accept + unknown_accept)]
    every = list(range(k + 1))
    assert got["confusion"] == confusion_matrix(true, decided, labels=every).tolist()
    assert got["macro_f1"] == pytest.approx(f1_score(true, decided, labels=every, average="macro", zero_division=0))
    assert got["open_set_accuracy"] == pytest.approx(accuracy_score(true, decided))
    assert got["known_acceptance"] == pytest.approx(np.mean(accept))
    assert got["ccr"] == pytest.approx(np.mean([a and p == y for a, p, y in zip(accept, pred, labels)]))
    if unknown_pred:
        assert got["unknown_rejection"] == pytest.approx(1 - np.mean(unknown_accept))


@settings(max_examples=200, deadline=None)
@given(values, values)
def test_the_oracle_threshold_maximises_youdens_j_over_every_candidate(known, unknown):
    def j(t):
        return np.mean(np.array(unknown) > t) - np.mean(np.array(known) > t)

    t = decisions.youden_threshold(known, unknown)
    assert j(t) == pytest.approx(max(j(c) for c in set(known) | set(unknown)))
