"""Property tests for anyone's loss or open-set score: the kit cac-jax tests its own math with, built on hypothesis
(``pip install hypothesis``, or ``cac-jax[test]``; nothing else of cac-jax needs it).

A function under test takes ``(logits, labels)``: ``logits`` (B, N) float32, ``labels`` (B,) int32, its anchors
and hyperparameters bound (``functools.partial``, a closure). It returns a loss (a scalar, or a tuple whose first
item is the total), or a score's (B,) values (``lambda z, y: my_score(z)``). :func:`objective_loss` makes one of a
registered :class:`cac_jax.objectives.Objective`. A test then reads::

    from hypothesis import given
    from cac_jax import testing as kit

    @kit.SETTINGS
    @given(kit.batches(), kit.seeds())
    def test_my_loss(batch, seed):
        kit.check_loss(my_loss, my_float64_reference, batch, seed)  # or each check alone, e.g.:
        kit.check_invariance(my_loss, batch, lambda z, y: (z + 3, y), what="logits shifted by 3")

**Strategies**: :func:`batches` (logits at scales 1e-3…1e4, some rows on or near their class's anchor, labels,
the anchor magnitude alpha), :func:`anchor_matrices` (alpha·I or perturbed centres), :func:`class_permutations`,
and :func:`seeds` (for :func:`permutation` and the random directions of the gradient check).

**References**, float64, written from the formulas with loops (not from cac-jax's code): :func:`ref_distances`,
:func:`ref_cac_loss` (Miller et al. 2021, eqs. 1-4), :func:`ref_cac_score` (eq. 5), :func:`ref_cross_entropy`.

**Checks** (each raises AssertionError saying what failed): :func:`check_reference`,
:func:`check_permutation_equivariance`, :func:`check_invariance`, :func:`check_finite` (values and gradients in
float32), :func:`check_gradients` (against float64 central differences), :func:`check_batch_independence` (a
score's value for an image does not depend on the rest of the batch), :func:`check_jit_equals_eager`; and
:func:`check_loss` and :func:`check_score`, each every check that applies.

Tolerances scale with the batch's largest distance between a logit vector and an anchor (:attr:`Batch.magnitude`):
float32 distances carry about one ulp of it, and so does anything computed from them.
"""

from __future__ import annotations

import functools
import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import settings
from hypothesis import strategies as st

from cac_jax import objectives
from cac_jax.core import losses

# Shapes come from short lists so that jit compiles each a few times, not once per example.
CLASS_COUNTS = (2, 3, 7, 10, 31, 100, 200)
BATCH_SIZES = (1, 5, 12)
ALPHAS = (1.0, 10.0, 100.0)
SETTINGS = settings(max_examples=30, deadline=None)


class Batch(NamedTuple):
    logits: np.ndarray  # (B, N) float32
    labels: np.ndarray  # (B,) int32
    alpha: float  # the anchors' magnitude: class j's anchor is alpha·e_j

    @property
    def magnitude(self) -> float:
        """The largest distance from a logit vector to an anchor alpha·e_j, in float64."""
        z = self.logits.astype(np.float64)
        return float(np.max(np.linalg.norm(z[:, None, :] - self.alpha * np.eye(z.shape[1]), axis=-1)))

    @property
    def anchors(self) -> np.ndarray:
        return (self.alpha * np.eye(self.logits.shape[1])).astype(np.float32)


# ------------------------------------------------------------------------------------------------ strategies

@st.composite
def batches(draw, classes=CLASS_COUNTS, batch_sizes=BATCH_SIZES, log_scales=(-3.0, 4.0), alphas=ALPHAS,
            near_anchor: float = 0.3) -> Batch:
    """A :class:`Batch`: logits N(0, s²) with s = 10^u, u uniform in ``log_scales``, and a fraction ``near_anchor``
    of the rows placed on their class's anchor (exactly, for a tenth of them) or within 1e-3 of it."""
    n = draw(st.sampled_from(classes))
    b = draw(st.sampled_from(batch_sizes))
    scale = 10.0 ** draw(st.floats(*log_scales))
    alpha = draw(st.sampled_from(alphas))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    labels = rng.integers(0, n, size=b)
    logits = rng.normal(size=(b, n)) * scale
    near = rng.random(b) < near_anchor
    noise = rng.normal(size=(int(near.sum()), n)) * 1e-3 * (rng.random((int(near.sum()), 1)) > 0.1)
    logits[near] = alpha * np.eye(n)[labels[near]] + noise
    return Batch(logits.astype(np.float32), labels.astype(np.int32), alpha)


@st.composite
def anchor_matrices(draw, n: int, alphas=ALPHAS) -> np.ndarray:
    """(n, n) float32 centres: alpha·I, or alpha·I moved by up to alpha/4 per coordinate (learnt centres)."""
    alpha = draw(st.sampled_from(alphas))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    moved = draw(st.booleans())
    return (alpha * np.eye(n) + moved * rng.uniform(-alpha / 4, alpha / 4, size=(n, n))).astype(np.float32)


def seeds():
    """Seeds for :func:`permutation` and the random directions of :func:`check_gradients`."""
    return st.integers(0, 2**32 - 1)


def class_permutations(n: int):
    """Permutations of the n classes, as arrays (class j becomes class perm[j]); the checks also take a seed."""
    return st.permutations(range(n)).map(np.array)


def permutation(n: int, seed: int) -> np.ndarray:
    """A permutation of the n classes: class j becomes class perm[j]."""
    return np.random.default_rng(seed).permutation(n)


def permuted(batch: Batch, perm: np.ndarray) -> Batch:
    """The same batch with class j renamed perm[j]: logit coordinate j moves to perm[j], and so do the labels (the
    anchors alpha·I are unchanged by the renaming)."""
    logits = np.empty_like(batch.logits)
    logits[:, perm] = batch.logits
    return Batch(logits, perm[batch.labels].astype(np.int32), batch.alpha)


# ------------------------------------------------------------------------------------------------ references

def ref_distances(logits, anchors) -> np.ndarray:
    """(B, M) d_bm = ||z_b − c_m||₂, float64, one sum at a time."""
    logits, anchors = np.asarray(logits, np.float64), np.asarray(anchors, np.float64)
    return np.array([[math.sqrt(sum((zk - ck) ** 2 for zk, ck in zip(z, c))) for c in anchors] for z in logits])


def _log1p_sum_exp(exponents) -> float:
    """log(1 + Σ exp(e)) without overflow."""
    values = [0.0, *exponents]
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


def ref_cac_loss(logits, labels, anchors, lbda: float = 0.1) -> tuple[float, float, float]:
    """(total, anchor term, tuplet term) of CAC, eqs. 1-4, float64: L_A = mean d_y, L_T = mean log(1 + Σ_{j≠y}
    exp(d_y − d_j)), total = lbda·L_A + L_T."""
    d = ref_distances(logits, anchors)
    anchor = [row[y] for row, y in zip(d, labels)]
    tuplet = [_log1p_sum_exp([row[y] - row[j] for j in range(len(row)) if j != y]) for row, y in zip(d, labels)]
    anchor_term, tuplet_term = float(np.mean(anchor)), float(np.mean(tuplet))
    return lbda * anchor_term + tuplet_term, anchor_term, tuplet_term


def ref_cac_score(logits, anchors) -> np.ndarray:
    """(B, N) CAC's per-class score d_j·(1 − softmin(d)_j), eq. 5, float64; the open-set score is its row minimum and
    the prediction its argmin."""
    d = ref_distances(logits, anchors)
    out = np.zeros_like(d)
    for b, row in enumerate(d):
        weights = [math.exp(-(v - min(row))) for v in row]
        for j, v in enumerate(row):
            out[b, j] = v * sum(w for k, w in enumerate(weights) if k != j) / sum(weights)
    return out


def ref_cross_entropy(logits, labels) -> float:
    """mean_b (log Σ_j exp z_bj − z_by), float64."""
    logits = np.asarray(logits, np.float64)
    per = []
    for z, y in zip(logits, labels):
        top = max(z)
        per.append(top + math.log(sum(math.exp(v - top) for v in z)) - z[y])
    return float(np.mean(per))


# ------------------------------------------------------------------------------------------------ adapters

def objective_loss(objective: objectives.Objective | str, *, alpha: float = 10.0, lbda: float = 0.1,
                   label_smoothing: float = 0.0, centres=None) -> Callable:
    """``f(logits, labels) -> (total, *terms)`` (the terms in the order the objective declares them) of a registered
    objective, seen as the train step sees it: the distances to its head's centres (``centres``, default alpha·I)
    alongside the logits. Centres exactly alpha·I give what training with fixed anchors gives."""
    objective = objectives.get(objective) if isinstance(objective, str) else objective
    settings_ = objectives.Settings(alpha=alpha, lbda=lbda, label_smoothing=label_smoothing)

    def f(logits, labels):
        logits = jnp.asarray(logits)
        c = None
        if objective.head != "logits":
            c = jnp.asarray(centres) if centres is not None else losses.anchors(logits.shape[1], alpha, logits.dtype)
        out = objectives.Outputs(logits=logits, distances=None if c is None else losses.distances(logits, c), centres=c)
        total, terms = objective.loss(out, jnp.asarray(labels), settings_)
        objectives.check_terms(objective, terms)
        return (total, *(terms[t] for t in objective.terms))

    return f


# ------------------------------------------------------------------------------------------------ checks

def _outputs(value) -> list[np.ndarray]:
    return [np.asarray(v, np.float64) for v in (value if isinstance(value, (tuple, list)) else (value,))]


def _tolerance(batch: Batch, atol: float | None) -> float:
    return 4e-6 * batch.magnitude + 1e-6 if atol is None else atol


def _assert_close(what: str, got, want, rtol: float, atol: float) -> None:
    got, want = _outputs(got), _outputs(want)
    if len(got) != len(want):
        raise AssertionError(f"{what}: {len(got)} outputs against {len(want)}")
    for i, (g, w) in enumerate(zip(got, want)):
        if g.shape != w.shape:
            raise AssertionError(f"{what}: output {i} has shape {g.shape}, expected {w.shape}")
        bad = ~np.isclose(g, w, rtol=rtol, atol=atol)
        if np.any(bad):
            where = tuple(int(k) for k in np.argwhere(bad)[0]) if g.ndim else ()
            raise AssertionError(f"{what}: output {i}{list(where) if where else ''} is {g[where].item()!r}, expected "
                                 f"{w[where].item()!r} (rtol {rtol:g}, atol {atol:.3g}; {int(bad.sum())} of {bad.size} "
                                 f"differ)")


def check_reference(fn: Callable, reference: Callable, batch: Batch, *, rtol: float = 2e-5,
                    atol: float | None = None) -> None:
    """``fn(logits, labels)`` in float32 agrees with ``reference(logits, labels)`` (float64) on every output."""
    got = _jitted(fn)(jnp.asarray(batch.logits), jnp.asarray(batch.labels))
    want = reference(batch.logits.astype(np.float64), batch.labels)
    _assert_close("against the reference", got, want, rtol, _tolerance(batch, atol))


def check_permutation_equivariance(fn: Callable, batch: Batch, perm_or_seed, *, rtol: float = 1e-5,
                                   atol: float | None = None) -> None:
    """Renaming the classes by a permutation (an array, e.g. from :func:`class_permutations`, or a seed for
    :func:`permutation`; :func:`permuted`) changes nothing: a loss, or a score's values, are the same. A function
    that treats some class apart (forgets it, or weighs it otherwise) fails."""
    n = batch.logits.shape[1]
    perm = permutation(n, perm_or_seed) if np.ndim(perm_or_seed) == 0 else np.asarray(perm_or_seed)
    if sorted(perm.tolist()) != list(range(n)):
        raise ValueError(f"not a permutation of the {n} classes: {perm.tolist()}")
    moved = permuted(batch, perm)
    f = _jitted(fn)
    _assert_close(f"after renaming the classes by {perm.tolist()[:12]}", f(jnp.asarray(moved.logits), moved.labels),
                  f(jnp.asarray(batch.logits), batch.labels), rtol, _tolerance(batch, atol))


def check_invariance(fn: Callable, batch: Batch, transform: Callable, *, rtol: float = 1e-4,
                     atol: float | None = None, what: str = "the transformed batch") -> None:
    """``fn(*transform(logits, labels))`` equals ``fn(logits, labels)``: invariance to what should not matter (e.g.
    a constant added to every logit, for softmax cross-entropy and MSP)."""
    logits, labels = transform(batch.logits, batch.labels)
    f = _jitted(fn)
    _assert_close(f"on {what}", f(jnp.asarray(logits), labels), f(jnp.asarray(batch.logits), batch.labels),
                  rtol, _tolerance(batch, atol))


@functools.lru_cache(maxsize=32)
def _jitted(fn):
    """``jax.jit(fn)``, one per function: the checks of one example share its compilations."""
    return jax.jit(fn)


@functools.lru_cache(maxsize=32)
def _total(fn):
    """The summed first output of ``fn``, jitted, and its gradient with respect to the logits."""
    def total(z, y):
        value = fn(z, y)
        return jnp.sum(value[0] if isinstance(value, (tuple, list)) else value)
    return jax.jit(total), jax.jit(jax.grad(total))


def check_finite(fn: Callable, batch: Batch) -> None:
    """Every output, and the gradient of the (summed) first one with respect to the logits, is finite in float32,
    rows on an anchor included."""
    z = jnp.asarray(batch.logits, jnp.float32)
    for i, v in enumerate(_outputs(_jitted(fn)(z, batch.labels))):
        if not np.all(np.isfinite(v)):
            raise AssertionError(f"output {i} is not finite at logits of magnitude {batch.magnitude:.3g}: {v}")
    grad = np.asarray(_total(fn)[1](z, batch.labels))
    if not np.all(np.isfinite(grad)):
        rows = sorted({int(r) for r in np.argwhere(~np.isfinite(grad))[:, 0]})
        raise AssertionError(f"the gradient is not finite in rows {rows} (magnitude {batch.magnitude:.3g})")


def check_gradients(fn: Callable, batch: Batch, seed: int, *, directions: int = 3, rtol: float = 1e-5,
                    eps: float = 1e-6) -> None:
    """In float64, the gradient of the (summed) first output along random directions v equals the derivative of
    f(z + tv) at t = 0 by central differences D(h) = (f(z + hv) − f(z − hv)) / 2h, Richardson-extrapolated:
    (4·D(h/2) − D(h)) / 3, h = ``eps``. A custom gradient that is wrong, or a stop_gradient where none belongs,
    fails. Rows 1e-3 from their anchor (:func:`batches`) curve on that scale, which a plain central difference
    would mistake for an error; the extrapolation's truncation error is O(h⁴) there, and its rounding error, a few
    1e-16·|f|/h, is covered by the absolute tolerance 1e-8·(1 + |f|)."""
    rng = np.random.default_rng(seed)
    with jax.enable_x64(True):
        z = jnp.asarray(batch.logits, jnp.float64)
        f, gradient = _total(fn)
        value = abs(float(f(z, batch.labels)))
        grad = np.asarray(gradient(z, batch.labels), np.float64)

        def central(v, h):
            return (float(f(z + h * v, batch.labels)) - float(f(z - h * v, batch.labels))) / (2 * h)

        for k in range(directions):
            v = rng.normal(size=z.shape)
            v /= np.linalg.norm(v)
            numeric = (4 * central(v, eps / 2) - central(v, eps)) / 3
            analytic = float(np.sum(grad * v))
            if not math.isclose(analytic, numeric, rel_tol=rtol, abs_tol=1e-8 * (1.0 + value)):
                raise AssertionError(f"gradient along direction {k}: autodiff gives {analytic!r}, finite differences "
                                     f"{numeric!r} (h = {eps:g}, loss {value:.6g})")


def check_batch_independence(fn: Callable, batch: Batch, seed: int, *, rtol: float = 1e-5,
                             atol: float | None = None) -> None:
    """A score's value for an image does not depend on the other images of its batch: each row scored alone, and
    the batch shuffled, give the same values. (A loss, a mean over the batch, is not meant to pass this.)"""
    z, f = jnp.asarray(batch.logits), _jitted(fn)
    full = _outputs(f(z, batch.labels))
    if any(v.shape[:1] != (len(batch.labels),) for v in full):
        raise AssertionError(f"a score returns one value per image; got shapes {[v.shape for v in full]}")
    order = np.random.default_rng(seed).permutation(len(batch.labels))
    shuffled = [v[np.argsort(order)] for v in _outputs(f(z[order], batch.labels[order]))]
    _assert_close("with the batch shuffled", shuffled, full, rtol, _tolerance(batch, atol))
    for i in range(len(batch.labels)):
        alone = _outputs(f(z[i:i + 1], batch.labels[i:i + 1]))
        _assert_close(f"image {i} scored alone", [a[0] for a in alone], [v[i] for v in full], rtol,
                      _tolerance(batch, atol))


def check_jit_equals_eager(fn: Callable, batch: Batch, *, rtol: float = 1e-5, atol: float | None = None) -> None:
    """``jax.jit(fn)`` gives what ``fn`` gives run op by op."""
    z, y = jnp.asarray(batch.logits), jnp.asarray(batch.labels)
    _assert_close("jitted against eager", _jitted(fn)(z, y), fn(z, y), rtol, _tolerance(batch, atol))


def check_loss(fn: Callable, reference: Callable | None, batch: Batch, seed: int) -> None:
    """Every check that applies to a loss, at the default tolerances: :func:`check_reference` (unless ``reference``
    is None), :func:`check_permutation_equivariance`, :func:`check_finite`, :func:`check_gradients`,
    :func:`check_jit_equals_eager`."""
    if reference is not None:
        check_reference(fn, reference, batch)
    check_permutation_equivariance(fn, batch, seed)
    check_finite(fn, batch)
    check_gradients(fn, batch, seed)
    check_jit_equals_eager(fn, batch)


def check_score(fn: Callable, reference: Callable | None, batch: Batch, seed: int, *, rtol: float = 2e-4,
                atol: float | None = None) -> None:
    """Every check that applies to an open-set score, ``fn(logits, labels) -> (B,)``: :func:`check_reference` (unless
    ``reference`` is None; at ``rtol``), :func:`check_permutation_equivariance`, :func:`check_batch_independence`,
    :func:`check_finite`, :func:`check_jit_equals_eager`; ``atol`` (default: :attr:`Batch.magnitude`'s) for every
    comparison, as the score's float32 error may grow faster than the logits' magnitude."""
    if reference is not None:
        check_reference(fn, reference, batch, rtol=rtol, atol=atol)
    check_permutation_equivariance(fn, batch, seed, atol=atol)
    check_batch_independence(fn, batch, seed, atol=atol)
    check_finite(fn, batch)
    check_jit_equals_eager(fn, batch, atol=atol)


__all__ = ["ALPHAS", "BATCH_SIZES", "Batch", "CLASS_COUNTS", "SETTINGS", "anchor_matrices", "batches",
           "class_permutations",
           "check_batch_independence", "check_finite", "check_gradients", "check_invariance",
           "check_jit_equals_eager", "check_loss", "check_permutation_equivariance", "check_reference", "check_score", "objective_loss",
           "permutation", "permuted", "ref_cac_loss", "ref_cac_score", "ref_cross_entropy", "ref_distances", "seeds"]
