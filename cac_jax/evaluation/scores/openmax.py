"""OpenMax (Bendale & Boult, CVPR 2016), as POSTHOC.md §2 specifies it, with its defaults.

Fit (host, float64), per class c, on the logits of the correctly classified training images of c:

* the mean activation vector μ_c (the class mean of the CAC evaluation) and the distances
  δ_i = ||z_i − μ_c||_2 (Euclidean: the distance of OpenOOD, Neal et al. and pytorch-ood);
* libMR's ``FitHigh``: the η = 20 largest distances (all of them if the class has fewer, with at least 2),
  s_c the smallest of them, translated to y = δ + T − s_c with T = 1 (PyPI libmr's ``translate_amount``;
  10,000 in the paper's own copy), and a two-parameter Weibull fitted to y by maximum likelihood: the root κ of
  Σ y^κ ln y / Σ y^κ − 1/κ − mean(ln y) = 0 (bracketed, ``scipy.optimize.brentq``) and λ = (mean y^κ)^{1/κ}.
  A tail of equal distances has no fit (libMR returns its −9999 sentinel): it is an error here.

Score of logits v (B, C): w-scores W_j = 1 − exp(−(max(0, ||v − μ_j|| − s_j + T) / λ_j)^κ_j) (the Weibull
CDF, libMR's ``W_score``; evaluated as −expm1(−exp(κ·log1p(u))) with u = (d − s + T − λ)/λ), rank weights
r = (α + 1 − i)/α for the class ranked i = 1..α by v (the code form of every implementation but Vastlab's;
the paper's (α − i)/α is ``rank_weights="paper"``), α = min(10, C), revised logits v̂_j = v_j·(1 − r_j W_j)
and the unknown logit v̂_0 = Σ_j r_j W_j v_j, and the open-set score P̂_0 = softmax(v̂_0, v̂_1..v̂_C)_0, the
probability of the unknown class (max-shifted: no overflow). Prediction: argmax_{j ≥ 1} v̂_j. Ties in the
ranking go to the lower class index.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from scipy import optimize

from cac_jax.evaluation.scores import FitSet, Score, register


def fit_weibull_high(distances, tail: int, translate: float) -> dict:
    """libMR ``FitHigh``: {"shift": s, "scale": λ, "shape": κ} of the ``tail`` largest ``distances``."""
    d = np.sort(np.asarray(distances, np.float64))[::-1]
    if len(d) < 2:
        raise ValueError(f"a Weibull fit needs at least 2 distances, got {len(d)}")
    top = d[: min(tail, len(d))]
    shift = top[-1]
    y = top + translate - shift
    logs = np.log(y)
    if logs.max() - logs.min() <= 0:
        raise ValueError(f"the {len(top)} largest distances are all equal ({top[0]!r}): no Weibull fit")

    def profile(kappa):  # increasing in kappa; its root is the maximum-likelihood shape
        e = np.exp(kappa * (logs - logs.max()))
        return np.sum(e * logs) / np.sum(e) - 1.0 / kappa - logs.mean()

    lo, hi = 1.0, 1.0
    while profile(lo) > 0:
        lo /= 2
    while profile(hi) < 0:
        hi *= 2
    kappa = optimize.brentq(profile, lo, hi, xtol=1e-14, rtol=4 * np.finfo(float).eps, maxiter=500)
    scale = np.exp(logs.max()) * np.mean(np.exp(kappa * (logs - logs.max()))) ** (1.0 / kappa)
    return {"shift": shift, "scale": scale, "shape": kappa}


def w_score(d, shift, scale, shape, translate):
    """The Weibull CDF of distances d (stable form; see the module docstring); broadcasts."""
    u = (d - shift + (translate - scale)) / scale
    inside = u > -1
    safe = jnp.where(inside, u, 0.0)
    return jnp.where(inside, -jnp.expm1(-jnp.exp(shape * jnp.log1p(safe))), 0.0)


def rank_weights(logits, alpha: int, form: str = "code"):
    """(B, C) r_j: (α + 1 − i)/α ("code") or (α − i)/α ("paper") for the class ranked i = 1..α, else 0."""
    order = jnp.argsort(-logits, axis=-1, stable=True)
    rank = jnp.argsort(order, axis=-1, stable=True)  # 0-based rank of every class
    top = (alpha - rank) if form == "code" else (alpha - 1 - rank)
    return jnp.where(rank < alpha, top, 0).astype(jnp.float32) / alpha


def recalibrate(logits, w, r):
    """(B, C + 1) OpenMax probabilities (unknown first) from logits, w-scores and rank weights."""
    v = jnp.asarray(logits, jnp.float32)
    revised = v * (1.0 - r * w)
    unknown = jnp.sum(v * r * w, axis=-1, keepdims=True)
    return jax.nn.softmax(jnp.concatenate([unknown, revised], axis=-1), axis=-1)


@register
@dataclasses.dataclass(frozen=True, eq=False)
class OpenMax(Score):
    """P̂_0, the OpenMax probability of the unknown class (Bendale & Boult 2016; POSTHOC.md §2 defaults)."""

    name = "openmax"
    tail: int = 20
    alpha: int = 10  # clipped to the number of classes
    translate: float = 1.0
    rank_weights: str = "code"

    def fit(self, train: FitSet) -> dict:
        means = train.class_means
        logits = np.asarray(train.logits, np.float64)
        fits = []
        for c in range(train.num_classes):
            mine = (train.labels == c) & train.correct
            if not mine.any():
                raise ValueError(f"class {c} has no correctly classified training image: no OpenMax model")
            try:
                fits.append(fit_weibull_high(np.linalg.norm(logits[mine] - means[c], axis=-1), self.tail,
                                             self.translate))
            except ValueError as e:
                raise ValueError(f"class {c}: {e}") from None
        return {"means": means, **{k: np.array([f[k] for f in fits]) for k in ("shift", "scale", "shape")}}

    def __call__(self, fitted, logits, features):
        v = jnp.asarray(logits, jnp.float32)
        d = jnp.linalg.norm(v[:, None, :] - fitted["means"][None], axis=-1)
        w = w_score(d, fitted["shift"], fitted["scale"], fitted["shape"], self.translate)
        r = rank_weights(v, min(self.alpha, v.shape[-1]), self.rank_weights)
        p = recalibrate(v, w, r)
        return jnp.argmax(p[:, 1:], axis=-1), p[:, 0]
