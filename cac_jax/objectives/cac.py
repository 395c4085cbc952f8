"""Class Anchor Clustering (Miller et al., WACV 2021): L = lbda·L_A + L_T (:func:`cac_jax.core.losses.cac_loss`).

* ``cac``: against the fixed anchors alpha·I, through the O(B·N) distances of
  :func:`~cac_jax.core.losses.scaled_identity_distances` (the head's own distances are for prediction only).
* ``cac_learnt`` (the paper's learnt-centre ablation): against the head's learnt centres, which the loss trains.

Both predict the nearest centre, and keep the checkpoint of the lowest mean validation anchor loss (the distance to
the true class's centre), ties going to the later epoch as the original's ``<=`` (SPEC.md §4).
"""

from __future__ import annotations

from cac_jax.core import losses
from cac_jax.objectives import Objective, register


@register
class CAC(Objective):
    name = "cac"
    head = "anchors"
    headline = "cac"
    terms = ("anchor", "tuplet")

    def loss(self, out, labels, settings):
        total, anchor, tuplet = losses.cac_loss(out.logits, labels, lbda=settings.lbda, alpha=settings.alpha)
        return total, {"anchor": anchor, "tuplet": tuplet}


@register
class CACLearnt(CAC):
    name = "cac_learnt"
    head = "learnt"

    def loss(self, out, labels, settings):
        total, anchor, tuplet = losses.cac_loss(out.logits, labels, anchors=out.centres, lbda=settings.lbda,
                                                alpha=settings.alpha)
        return total, {"anchor": anchor, "tuplet": tuplet}
