"""Training objectives, one class each, looked up by name: how a network is trained (the counterpart of the
scores of :mod:`cac_jax.evaluation.scores`, which say how a trained network is scored).

An objective is an :class:`Objective`. It declares its ``name``; its ``head`` (what the network puts after its
logits: ``"anchors"``, fixed anchors alpha·I; ``"learnt"``, learnt centres starting at alpha·I; ``"logits"``,
nothing); its loss (:meth:`Objective.loss`: the total and its named ``terms``); its training prediction
(:meth:`Objective.predict`); the validation value that picks the best checkpoint (:meth:`Objective.validation_loss`,
logged as ``validation_name``; ``selection``: that or ``"val_accuracy"``, with ``"min"`` or ``"max"``); and its
``headline`` score, the one that gives a run's top-level results. Register your own with :func:`register`::

    import jax.numpy as jnp
    from cac_jax import objectives
    from cac_jax.core import losses

    @objectives.register
    class SquaredCAC(objectives.Objective):
        \"\"\"CAC's loss on squared distances (an ablation).\"\"\"

        name = "cac_squared"
        head = "anchors"
        headline = "cac"
        terms = ("anchor", "tuplet")

        def loss(self, out, labels, settings):
            d2 = losses.scaled_identity_distances(out.logits, settings.alpha) ** 2
            total, anchor, tuplet = losses.cac_loss_from_distances(d2, labels, settings.lbda)
            return total, {"anchor": anchor, "tuplet": tuplet}

after which ``cac-jax train --import my_loss.py --method cac_squared`` trains it (``eval`` and ``sweep`` take the
same ``--import``). Every method is pure and jit-able: the train step traces it. Instances must be hashable (they
are static arguments of the compiled step): keep hyperparameters as class attributes.

Built in: ``cac`` and ``cac_learnt`` (:mod:`.cac`), ``ce`` (:mod:`.cross_entropy`). The *methods* ``ce_msp``,
``ce_max_logit`` and ``ce_distance`` are shorthands (:data:`SHORTHANDS`): the ``ce`` objective with another
headline score (every run is scored by every score; the shorthand only picks the top-level one).
"""

from __future__ import annotations

import hashlib
import inspect
from typing import Any, ClassVar, NamedTuple

import jax.numpy as jnp
import optax

HEADS = ("anchors", "learnt", "logits")
SHORTHANDS = {"ce_msp": ("ce", "msp"), "ce_max_logit": ("ce", "max_logit"), "ce_distance": ("ce", "distance")}


class Outputs(NamedTuple):
    """What the network gives a loss for a batch of B images of N known classes."""

    logits: Any  # (B, N) float32
    distances: Any  # (B, N) Euclidean distances to the head's centres; None for the "logits" head
    centres: Any  # (N, N) the head's centres (alpha·I, or the learnt ones, trained through the loss); None for "logits"


class Settings(NamedTuple):
    """The run's loss settings (config fields ``alpha``, ``lbda``, ``label_smoothing``)."""

    alpha: float
    lbda: float
    label_smoothing: float = 0.0


class Objective:
    """Base class of an objective: set ``name``, ``head``, ``headline`` (and ``terms`` if the loss has named terms),
    implement :meth:`loss`. The defaults of :meth:`predict`, :meth:`validation_loss` and ``selection`` are those of
    the built-in objectives of the same head."""

    name: ClassVar[str]
    head: ClassVar[str] = "logits"
    headline: ClassVar[str] = "msp"
    terms: ClassVar[tuple[str, ...]] = ()
    uses_label_smoothing: ClassVar[bool] = False  # whether the loss reads settings.label_smoothing

    def loss(self, out: Outputs, labels, settings: Settings) -> tuple[Any, dict[str, Any]]:
        """(total, {term: value}) of a batch: scalars, ``terms`` exactly the declared ones (means over the batch)."""
        raise NotImplementedError

    def predict(self, out: Outputs):
        """(B,) the predicted class: the nearest centre, or (head ``"logits"``) the largest logit."""
        if out.distances is not None:
            return jnp.argmin(out.distances, axis=-1)
        return jnp.argmax(out.logits, axis=-1)

    def validation_loss(self, out: Outputs, labels):
        """(B,) per image, the value whose mean over the validation images is logged as ``validation_name``: the
        distance to the true class's centre (SPEC.md §4, the original's "anchor loss"), or (head ``"logits"``)
        the cross-entropy."""
        if out.distances is not None:
            return jnp.take_along_axis(out.distances, labels[:, None], axis=-1)[:, 0]
        return optax.softmax_cross_entropy_with_integer_labels(out.logits, labels)

    @property
    def validation_name(self) -> str:
        return "val_anchor_loss" if self.head != "logits" else "val_ce_loss"

    @property
    def selection(self) -> tuple[str, str]:
        """(metric, mode) that picks the best checkpoint: the metric (``validation_name`` or ``"val_accuracy"``)
        and "min" or "max". The original's: the lowest anchor loss (CAC), the highest accuracy (cross-entropy)."""
        return (self.validation_name, "min") if self.head != "logits" else ("val_accuracy", "max")

    def __hash__(self):
        return hash((type(self), tuple(sorted(vars(self).items()))))

    def __eq__(self, other):
        return type(self) is type(other) and vars(self) == vars(other)


_REGISTRY: dict[str, Objective] = {}
_BUILT_IN = ("cac", "cac_learnt", "ce")


def register(objective):
    """Register an :class:`Objective` subclass (as a decorator) or instance under its ``name``; returns it. A name
    registered before is replaced; a built-in objective's or a shorthand's name is refused."""
    instance = objective() if isinstance(objective, type) else objective
    if not isinstance(instance, Objective):
        raise TypeError(f"register expects a cac_jax.objectives.Objective, got {objective!r}")
    name = getattr(instance, "name", None)
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"an objective needs a name that is a Python identifier, got {name!r}")
    if name in SHORTHANDS or (name in _BUILT_IN and name in _REGISTRY and type(_REGISTRY[name]) is not type(instance)):
        raise ValueError(f"objective {name!r}: that name is a built-in method's; choose another")
    if instance.head not in HEADS:
        raise ValueError(f"objective {name!r}: head {instance.head!r} is not one of {HEADS}")
    if type(instance).loss is Objective.loss:
        raise ValueError(f"objective {name!r} does not implement loss(self, out, labels, settings)")
    if not isinstance(instance.terms, tuple) or not all(isinstance(t, str) and t.isidentifier() for t in instance.terms):
        raise ValueError(f"objective {name!r}: terms must be a tuple of identifiers, got {instance.terms!r}")
    reserved = {"loss", "correct", "count", "nonfinite"} & set(instance.terms)
    if reserved:
        raise ValueError(f"objective {name!r}: terms may not be named {sorted(reserved)} (the train step's own sums)")
    metric, mode = instance.selection
    if metric not in (instance.validation_name, "val_accuracy") or mode not in ("min", "max"):
        raise ValueError(f"objective {name!r}: selection {instance.selection!r} must be ({instance.validation_name!r} "
                         f"or 'val_accuracy', 'min' or 'max')")
    if not isinstance(instance.headline, str):
        raise ValueError(f"objective {name!r}: headline must name a score, got {instance.headline!r}")
    _REGISTRY[name] = instance
    return objective


def get(method: str) -> Objective:
    """The objective that ``method`` (a registered name or a shorthand) trains."""
    name = SHORTHANDS[method][0] if method in SHORTHANDS else method
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown method {method!r}; registered: {methods()}") from None


def names() -> tuple[str, ...]:
    """The registered objectives, built-in ones first."""
    return tuple(_REGISTRY)


def methods() -> tuple[str, ...]:
    """Everything ``--method`` takes: the registered objectives, then the shorthands."""
    return names() + tuple(SHORTHANDS)


def headline(method: str) -> str:
    """The score that gives ``method``'s top-level results."""
    return SHORTHANDS[method][1] if method in SHORTHANDS else get(method).headline


def fingerprints() -> dict[str, str]:
    """{name: the first 12 hex digits of the SHA-256 of its class's source and its bases'} of every registered
    objective, so that the processes of a job can check that they train the same ones (the same name from another
    version of a file is not the same objective)."""
    out = {}
    for name, objective in _REGISTRY.items():
        text = ""
        for cls in (c for c in type(objective).__mro__ if c not in (Objective, object)):
            try:
                text += inspect.getsource(cls)
            except (OSError, TypeError):  # defined interactively: its name is all there is
                text += cls.__qualname__
        out[name] = hashlib.sha256(text.encode()).hexdigest()[:12]
    return out


def check_terms(objective: Objective, terms: dict) -> None:
    """Refuse a loss whose terms are not the ones its objective declares (the step's metric sums are made from them)."""
    if not isinstance(terms, dict) or set(terms) != set(objective.terms):
        found = sorted(terms) if isinstance(terms, dict) else type(terms).__name__
        raise ValueError(f"objective {objective.name!r}: loss returned terms {found}, but declares "
                         f"terms = {objective.terms!r}; return (total, dict of exactly those)")


from cac_jax.objectives import cac, cross_entropy  # noqa: E402,F401  (registers them)
