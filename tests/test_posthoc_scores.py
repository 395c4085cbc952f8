"""Every registered score against an independent slow reference (numpy loops, float64) on random and
adversarial inputs (ties, a class with few samples, zero distances), POSTHOC.md's golden vectors, and the
registry itself."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cac_jax.evaluation import scores
from cac_jax.evaluation.scores import knn, mahalanobis, openmax, softmax

SETTINGS = settings(max_examples=25, deadline=None)


def fit_set(rng, n=60, c=4, d=5, scale=3.0, separation=4.0):
    labels = np.arange(n) % c
    logits = rng.normal(size=(n, c)) * scale / 3 + separation * np.eye(c)[labels]
    features = rng.normal(size=(n, d)) + separation * np.eye(c, d)[labels]
    predictions = np.where(rng.random(n) < 0.85, labels, rng.integers(0, c, n))
    return scores.FitSet(logits=logits, features=features, labels=labels, predictions=predictions, num_classes=c)


def run(score, train, logits, features=None):
    fitted = scores.as_float32(score.fit(train))
    pred, s = jax.jit(score)(fitted, jnp.asarray(logits, jnp.float32),
                             None if features is None else jnp.asarray(features, jnp.float32))
    return np.asarray(pred), np.asarray(s, np.float64)


def ref_class_means(values, labels, keep, c):
    out = []
    for k in range(c):
        rows = [v for v, y, m in zip(values, labels, keep) if y == k and m]
        if not rows:
            rows = [v for v, y in zip(values, labels) if y == k]
        out.append(np.mean(np.asarray(rows, np.float64), axis=0))
    return np.asarray(out)


# ------------------------------------------------------------------------------------------- registry

def test_every_built_in_score_is_registered_with_what_it_needs():
    assert set(scores.names()) >= {"cac", "distance", "msp", "max_logit", "energy", "openmax", "mahalanobis",
                                   "mahalanobis_features", "knn"}
    logits_only = {s.name for s in scores.applicable(("logits",))}
    assert "knn" not in logits_only and "mahalanobis_features" not in logits_only and "openmax" in logits_only
    with pytest.raises(ValueError, match="unknown score 'nope'.*cac"):
        scores.get("nope")


def test_a_score_of_ones_own_registers_and_runs():
    class TemperatureMSP(scores.Score):
        name = "msp_t2_test"
        temperature = 2.0

        def __call__(self, fitted, logits, features):
            p = jax.nn.softmax(logits / self.temperature, axis=-1)
            return jnp.argmax(logits, axis=-1), 1.0 - jnp.max(p, axis=-1)

    try:
        scores.register(TemperatureMSP)
        assert "msp_t2_test" in scores.names() and scores.get("msp_t2_test") == TemperatureMSP()
        pred, s = run(scores.get("msp_t2_test"), fit_set(np.random.default_rng(0)), np.array([[4.0, 0.0]]))
        assert pred.tolist() == [0] and s[0] == pytest.approx(1 - 1 / (1 + np.exp(-2.0)), rel=1e-6)
    finally:
        scores._REGISTRY.pop("msp_t2_test", None)
    with pytest.raises(ValueError, match="can need only"):
        scores.register(type("Bad", (scores.Score,), {"name": "bad", "needs": ("gradients",)}))


# -------------------------------------------------------------------------------------- logits alone

@SETTINGS
@given(seed=st.integers(0, 2**31), scale=st.sampled_from([0.1, 1.0, 30.0, 1e3]))
def test_msp_max_logit_energy_against_float64_loops(seed, scale):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(9, 5)) * scale
    z[0] = z[0, 0]  # a tie across all classes
    z = z.astype(np.float32).astype(np.float64)
    train = fit_set(rng)
    for name, ref in [
        ("msp", lambda v: 1 - max(np.exp(v - v.max())) / np.sum(np.exp(v - v.max()))),
        ("max_logit", lambda v: -max(v)),
        ("energy", lambda v: -(v.max() + np.log(np.sum(np.exp(v - v.max()))))),
    ]:
        pred, s = run(scores.get(name), train, z)
        expected = np.array([ref(v) for v in z])
        np.testing.assert_allclose(s, expected, rtol=2e-5, atol=1e-6 * max(1.0, scale))
        assert (pred == np.argmax(z, axis=1)).all()


def test_energy_properties():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(20, 6)).astype(np.float32) * 5
    e = np.asarray(softmax.energy(z))
    np.testing.assert_allclose(np.asarray(softmax.energy(z + 3.0)), e - 3.0, rtol=1e-5, atol=1e-5)
    assert np.all(e <= -z.max(axis=1) + 1e-5) and np.all(e >= -z.max(axis=1) - np.log(6) - 1e-5)
    np.testing.assert_allclose(np.asarray(softmax.energy(z[:, ::-1])), e, rtol=1e-6)
    assert np.isfinite(np.asarray(softmax.energy(np.full((2, 6), 1e4, np.float32)))).all()


# -------------------------------------------------------------------------------- class-mean distances

@SETTINGS
@given(seed=st.integers(0, 2**31), few=st.booleans())
def test_cac_and_distance_against_loops(seed, few):
    rng = np.random.default_rng(seed)
    train = fit_set(rng)
    if few:  # class 3 with a single correctly classified image
        keep = (train.labels != 3) | (np.arange(len(train.labels)) == 3)
        train = scores.FitSet(train.logits, train.features, train.labels,
                              np.where(keep, train.predictions, (train.labels + 1) % 4), 4)
    z = rng.normal(size=(12, 4)) * 3
    means = ref_class_means(train.logits, train.labels, train.predictions == train.labels, 4)
    z[0] = means[1]  # zero distance to a mean
    z = z.astype(np.float32).astype(np.float64)
    d = np.array([[np.sqrt(np.sum((v - m) ** 2)) for m in means] for v in z])
    softmin = np.exp(-(d - d.min(1, keepdims=True)))
    softmin /= softmin.sum(1, keepdims=True)
    pred, s = run(scores.get("distance"), train, z)
    np.testing.assert_allclose(s, d.min(1), rtol=1e-5, atol=1e-4)
    assert (pred == d.argmin(1)).all()
    pred, s = run(scores.get("cac"), train, z)
    np.testing.assert_allclose(s, (d * (1 - softmin)).min(1), rtol=1e-4, atol=1e-4)
    assert (pred == d.argmin(1)).all()


# ------------------------------------------------------------------------------------------ Mahalanobis

def ref_mahalanobis(train_values, labels, c, test_values):
    x = np.asarray(train_values, np.float64)
    means = np.array([x[labels == k].mean(0) for k in range(c)])
    cov = sum(np.outer(v - means[y], v - means[y]) for v, y in zip(x, labels)) / len(x)
    prec = np.linalg.pinv(cov, hermitian=True, rcond=1e-10)
    d = np.array([[(v - m) @ prec @ (v - m) for m in means] for v in np.asarray(test_values, np.float64)])
    return d.argmin(1), d.min(1)


@SETTINGS
@given(seed=st.integers(0, 2**31), duplicate=st.booleans())
def test_mahalanobis_on_logits_and_features_against_loops(seed, duplicate):
    rng = np.random.default_rng(seed)
    train = fit_set(rng)
    if duplicate:  # a rank-deficient covariance: the pseudo-inverse ignores the repeated direction
        f = np.concatenate([train.features, train.features[:, :1]], axis=1)
        train = scores.FitSet(train.logits, f, train.labels, train.predictions, 4)
    z = rng.normal(size=(10, 4)) * 3
    h = rng.normal(size=(10, train.features.shape[1])) * 3
    if duplicate:
        h[:, -1] = h[:, 0]
    for name, tr, te in (("mahalanobis", train.logits, z), ("mahalanobis_features", train.features, h)):
        pred, s = run(scores.get(name), train, z, h)
        ref_pred, ref = ref_mahalanobis(tr, train.labels, 4, te)
        np.testing.assert_allclose(s, ref, rtol=2e-4, atol=2e-4)
        assert (pred == ref_pred).all()


def test_mahalanobis_is_affine_invariant_and_zero_at_the_means():
    rng = np.random.default_rng(3)
    train = fit_set(rng, n=200, d=4)
    a, b = rng.normal(size=(4, 4)) + 3 * np.eye(4), rng.normal(size=4)
    moved = scores.FitSet(train.logits, train.features @ a.T + b, train.labels, train.predictions, 4)
    h = rng.normal(size=(7, 4))
    score = scores.get("mahalanobis_features")
    _, s = run(score, train, np.zeros((7, 4)), h)
    _, t = run(score, moved, np.zeros((7, 4)), h @ a.T + b)
    np.testing.assert_allclose(s, t, rtol=1e-3)
    means = mahalanobis.fit_gaussian(train.features, train.labels, 4)["means"]
    _, at_means = run(score, train, np.zeros((4, 4)), means)
    np.testing.assert_allclose(at_means, 0, atol=1e-4)


# -------------------------------------------------------------------------------------------------- KNN

def ref_knn(bank, test, k):
    u = [b / (np.linalg.norm(b) + 1e-10) for b in np.asarray(bank, np.float64)]
    out = []
    for t in np.asarray(test, np.float64):
        q = t / (np.linalg.norm(t) + 1e-10)
        out.append(sorted(np.linalg.norm(q - b) for b in u)[min(k, len(u)) - 1])
    return np.array(out)


@SETTINGS
@given(seed=st.integers(0, 2**31), k=st.sampled_from([1, 3, 50, 500]))
def test_knn_against_loops_with_ties_and_zero_distances(seed, k):
    rng = np.random.default_rng(seed)
    train = fit_set(rng)
    h = rng.normal(size=(8, 5))
    h[0] = train.features[0] * 2.5  # at distance 0 from a bank member after normalisation
    h[1] = 0.0  # a zero feature vector
    bank = train.features.copy()
    bank[1:4] = bank[0]  # tied bank members
    train = scores.FitSet(train.logits, bank, train.labels, train.predictions, 4)
    z = rng.normal(size=(8, 4))
    pred, s = run(knn.KNN(k=k), train, z, h)
    np.testing.assert_allclose(s, ref_knn(bank, h, k), rtol=1e-4, atol=1e-5)
    assert (pred == np.argmax(z.astype(np.float32), axis=1)).all()


@SETTINGS
@given(seed=st.integers(0, 2**31), n=st.integers(1, 300), rows=st.integers(1, 300), scale=st.sampled_from([1, 1000]),
       group=st.sampled_from([1, 2, 5, knn.GROUP]))
def test_the_kth_neighbour_by_bisection_is_top_ks(seed, n, rows, scale, group):
    """The selection kernel against lax.top_k, every k, query counts that do and do not fill its blocks, groups of
    the candidate filter small enough to be used (and, at scale 1, ties between group maxima that make a block fall
    back to the whole bank). Integer vectors keep the similarities exact whatever the order of summation; at scale
    1 most of them tie, and zeros, negatives and -0.0 occur."""
    rng = np.random.default_rng(seed)
    queries = np.round(rng.normal(size=(rows, 4)) * scale).astype(np.float32)
    bank = np.round(rng.normal(size=(n, 4)) * scale).astype(np.float32) * np.float32(-1.0 if seed % 2 else 1.0)
    k = int(rng.integers(1, n + 1))
    got = np.asarray(knn.kth_largest_index(jnp.asarray(queries), jnp.asarray(bank), k, group=group))
    similarities = queries @ bank.T
    values, _ = jax.lax.top_k(jnp.asarray(similarities), k)
    np.testing.assert_array_equal(similarities[np.arange(rows), got], np.asarray(values)[:, k - 1])
    first = np.argmax(similarities == np.asarray(values)[:, k - 1:k], axis=1)
    np.testing.assert_array_equal(got, first)  # among equal values the first, filtered or not


def test_the_candidate_filter_is_in_the_program_and_a_tie_at_its_boundary_is_still_exact():
    """The filtered search is compiled in (its sort of the group maxima); on distinct similarities, and where every
    group maximum occurs twice (so the (k+1)-th ties the k-th and the block must be searched whole), the result is
    top_k's neighbour."""
    rng = np.random.default_rng(0)
    bank = rng.normal(size=(64, 8)).astype(np.float32)
    queries = rng.normal(size=(5, 8)).astype(np.float32)
    tied = np.concatenate([bank, bank])  # every group maximum occurs twice (groups of 1)
    for b in (bank, tied):
        got = np.asarray(knn.kth_largest_index(jnp.asarray(queries), jnp.asarray(b), 3, group=1))
        s = queries @ b.T
        np.testing.assert_array_equal(s[np.arange(5), got], -np.sort(-s, axis=1)[:, 2])
    text = jax.jit(lambda q, b: knn.kth_largest_index(q, b, 3, group=1)).lower(queries, bank).as_text()
    assert "top_k" in text or "topk" in text.lower()


def test_knn_default_k_is_50():
    assert scores.get("knn").k == 50


# --------------------------------------------------------------------------------------------- OpenMax

def test_weibull_fit_matches_libmr_golden_set_a():
    """POSTHOC.md §2.13, set A (libMR 0.1.9's own numbers), T = 1."""
    d = 1 + 0.05 * np.arange(40) + 0.002 * np.arange(40) ** 2
    fit = openmax.fit_weibull_high(d, 20, 1.0)
    assert fit["shift"] == pytest.approx(2.8)
    assert fit["scale"] == pytest.approx(2.796604848813163, rel=1e-6)
    assert fit["shape"] == pytest.approx(2.8306540002901817, rel=1e-6)
    queries = np.array([0, 2, 3.5, 4, 4.5, 5, 6, 8])
    expected = [0, 5.715779774e-4, 0.2168088767, 0.3977101045, 0.5955718016, 0.7687731527, 0.9576538167, 0.9999267776]
    w = jax.jit(openmax.w_score, static_argnums=4)(queries, fit["shift"], fit["scale"], fit["shape"], 1.0)
    np.testing.assert_allclose(np.asarray(w), expected, atol=2e-6)


def test_weibull_fit_is_order_and_tail_invariant_and_refuses_degenerate_tails():
    rng = np.random.default_rng(0)
    d = rng.gamma(3.0, size=60)
    fit = openmax.fit_weibull_high(d, 20, 1.0)
    perm = openmax.fit_weibull_high(rng.permutation(d), 20, 1.0)
    low = np.sort(d)
    low[:30] *= 0.5  # values below the tail
    assert fit == pytest.approx(perm) and fit == pytest.approx(openmax.fit_weibull_high(low, 20, 1.0))
    few = openmax.fit_weibull_high(d[:5], 20, 1.0)  # fewer than the tail size: all of them
    assert few["shift"] == pytest.approx(np.min(d[:5]))
    with pytest.raises(ValueError, match="all equal"):
        openmax.fit_weibull_high(np.full(5, 2.0), 20, 1.0)
    with pytest.raises(ValueError, match="at least 2"):
        openmax.fit_weibull_high(np.array([1.0]), 20, 1.0)


@pytest.mark.parametrize("form, expected", [
    ("code", [0.17184752, 0.77016714, 0.03469542, 0.00424868, 0.01904125]),
    ("paper", [0.01398398, 0.9325405, 0.04201021, 0.00209157, 0.00937374]),
])
def test_recalibration_golden_toy(form, expected):
    """POSTHOC.md §2.13: v = (6, 2, -1, 0.5), w = (0.3, 0.9, 0.5, 0.1), alpha = 2."""
    v = jnp.array([[6.0, 2.0, -1.0, 0.5]])
    r = openmax.rank_weights(v, 2, form)
    p = openmax.recalibrate(v, jnp.array([[0.3, 0.9, 0.5, 0.1]]), r)
    np.testing.assert_allclose(np.asarray(p)[0], expected, rtol=1e-5)


def test_zero_w_scores_give_the_sigmoid_of_the_energy():
    v = jnp.array([[6.0, 2.0, -1.0, 0.5], [1e4, -1e4, 0.0, 3.0]])
    p = np.asarray(openmax.recalibrate(v, jnp.zeros((2, 4)), openmax.rank_weights(v, 4)))
    np.testing.assert_allclose(p[0, 0], 0.0024164252, rtol=1e-6)
    assert np.isfinite(p).all() and np.allclose(p.sum(1), 1)


def ref_openmax(v, means, fits, alpha, translate):
    """Algorithm 2 per sample and class, float64 (the code form of the rank weights)."""
    v = np.asarray(v, np.float64)
    out = []
    for row in v:
        order = sorted(range(len(row)), key=lambda j: (-row[j], j))
        revised, unknown = list(row), 0.0
        for i, j in enumerate(order[:alpha]):
            d = np.linalg.norm(row - means[j])
            x = max(0.0, d - fits["shift"][j] + translate)
            w = 1 - np.exp(-((x / fits["scale"][j]) ** fits["shape"][j]))
            r = (alpha - i) / alpha
            revised[j] = row[j] * (1 - r * w)
            unknown += row[j] * r * w
        e = np.exp(np.array([unknown, *revised]) - max(unknown, *revised))
        out.append(e[0] / e.sum())
    return np.array(out)


@SETTINGS
@given(seed=st.integers(0, 2**31), alpha=st.sampled_from([1, 2, 10]))
def test_openmax_against_a_float64_loop(seed, alpha):
    rng = np.random.default_rng(seed)
    train = fit_set(rng, n=120)
    score = openmax.OpenMax(alpha=alpha)
    fitted = score.fit(train)
    z = rng.normal(size=(10, 4)) * 4
    z[0] = fitted["means"][2]  # zero distance to a class's mean
    z = z.astype(np.float32).astype(np.float64)
    pred, s = run(score, train, z)
    np.testing.assert_allclose(s, ref_openmax(z, fitted["means"], fitted, min(alpha, 4), 1.0), rtol=1e-4, atol=1e-6)


def test_openmax_fit_says_which_class_cannot_be_fitted():
    rng = np.random.default_rng(0)
    train = fit_set(rng)
    wrong = np.where(train.labels == 2, (train.labels + 1) % 4, train.labels)  # class 2 never correct
    with pytest.raises(ValueError, match="class 2 has no correctly classified"):
        openmax.OpenMax().fit(scores.FitSet(train.logits, None, train.labels, wrong, 4))


def test_scores_of_a_sample_do_not_depend_on_its_batch():
    rng = np.random.default_rng(5)
    train = fit_set(rng, n=120)
    z, h = rng.normal(size=(6, 4)) * 3, rng.normal(size=(6, 5))
    for score in scores.applicable():
        _, together = run(score, train, z, h)
        alone = np.concatenate([run(score, train, z[i:i + 1], h[i:i + 1])[1] for i in range(6)])
        np.testing.assert_allclose(together, alone, rtol=1e-5, atol=1e-6, err_msg=score.name)
