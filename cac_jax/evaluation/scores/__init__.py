"""Open-set scores, one module each, looked up by name: how a trained network's outputs become a closed-set
prediction and an open-set score (larger = more likely unknown).

A score is a :class:`Score`: it declares what it needs (``logits``, penultimate ``features``), fits what it
needs on the training images (:meth:`Score.fit`: on the host, in float64, from a :class:`FitSet`) and
scores with a pure, jit-able function of the fitted statistics and a batch of outputs
(:meth:`Score.__call__` -> ``(predictions, scores)``). The evaluation runs one forward pass over the
training and test images and computes every registered score that the network's outputs allow, all in one
compiled program. Register your own with :func:`register`::

    import jax, jax.numpy as jnp
    from cac_jax.evaluation import scores

    @scores.register
    class TemperatureMSP(scores.Score):
        \"\"\"1 - max softmax(z / T): MSP (Hendrycks & Gimpel 2017) at temperature T (Guo et al. 2017).\"\"\"

        name = "msp_t2"
        temperature = 2.0

        def __call__(self, fitted, logits, features):
            p = jax.nn.softmax(logits / self.temperature, axis=-1)
            return jnp.argmax(logits, axis=-1), 1.0 - jnp.max(p, axis=-1)

after which ``cac_jax.runs.evaluate_run_dir(workdir)`` (or ``cac-jax eval --workdir W --import mymodule``)
reports ``msp_t2`` beside the built-in scores.

Built in: ``cac`` and ``distance`` (:mod:`.cac`), ``msp``, ``max_logit`` and ``energy`` (:mod:`.softmax`),
``openmax`` (:mod:`.openmax`), ``mahalanobis`` and ``mahalanobis_features`` (:mod:`.mahalanobis`),
``knn`` (:mod:`.knn`). ``../shared/reference/POSTHOC.md`` (the project's specification of the post-hoc
scores) is followed; each module says where it departs.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, ClassVar

import numpy as np

NEEDS = ("logits", "features")


@dataclasses.dataclass(frozen=True)
class FitSet:
    """What a score may fit on: the eval-mode outputs of the training images of the known classes (with their
    horizontally flipped copies where the class means use them), their labels, and the network's own
    predictions (nearest learnt centre, else argmax of the logits)."""

    logits: np.ndarray  # (n, N)
    features: np.ndarray | None  # (n, D) penultimate activations, or None
    labels: np.ndarray  # (n,)
    predictions: np.ndarray  # (n,)
    num_classes: int

    @property
    def correct(self) -> np.ndarray:
        return self.predictions == self.labels

    @functools.cached_property
    def class_means(self) -> np.ndarray:
        """(N, N) float64 class means of the correctly classified logits (the test-time anchors of SPEC.md §2),
        computed once for every score that uses them."""
        return class_means(self.logits, self.labels, self.num_classes, keep=self.correct)


class Score:
    """Base class of a score: set ``name`` (and ``needs``), implement ``__call__`` and, if it needs training
    statistics, ``fit``. Instances must be hashable (they are static arguments of the compiled program): keep
    hyperparameters as class attributes or dataclass fields of a frozen dataclass."""

    name: ClassVar[str]
    needs: ClassVar[tuple[str, ...]] = ("logits",)

    def fit(self, train: FitSet) -> dict[str, Any]:
        """Statistics of the training outputs (numpy arrays; float64 is cast to float32 for the score)."""
        return {}

    def __call__(self, fitted: dict, logits, features) -> tuple[Any, Any]:
        """(predictions (B,), open-set scores (B,), larger = unknown) of a batch; pure and jit-able."""
        raise NotImplementedError

    def __hash__(self):
        return hash((type(self), tuple(sorted(vars(self).items()))))

    def __eq__(self, other):
        return type(self) is type(other) and vars(self) == vars(other)


_REGISTRY: dict[str, Score] = {}


def register(score):
    """Register a :class:`Score` subclass (as a decorator) or instance under its ``name``; returns it. A name
    registered before is replaced."""
    instance = score() if isinstance(score, type) else score
    if not isinstance(instance, Score):
        raise TypeError(f"register expects a cac_jax.evaluation.scores.Score, got {score!r}")
    name = getattr(instance, "name", None)
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"a score needs a name that is a Python identifier, got {name!r}")
    unknown = set(instance.needs) - set(NEEDS)
    if unknown:
        raise ValueError(f"score {name!r} needs {sorted(unknown)}; a score can need only {NEEDS}")
    _REGISTRY[name] = instance
    return score


def get(name: str) -> Score:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown score {name!r}; registered: {names()}") from None


def names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def applicable(available: tuple[str, ...] = NEEDS) -> tuple[Score, ...]:
    """The registered scores whose needs ``available`` outputs cover, in registration order."""
    return tuple(s for s in _REGISTRY.values() if set(s.needs) <= set(available))


def as_float32(fitted: dict) -> dict:
    """Fitted statistics as the score sees them: float arrays in float32, the rest as given."""
    return {k: np.asarray(v, np.float32) if np.asarray(v).dtype.kind == "f" else np.asarray(v)
            for k, v in fitted.items()}


def class_means(values: np.ndarray, labels: np.ndarray, num_classes: int, keep: np.ndarray | None = None) -> np.ndarray:
    """(N, D) float64 mean of ``values`` per class, over the rows ``keep`` selects (the paper's class means:
    the correctly classified ones). A class with none kept falls back to all its rows; a class with no row
    at all is an error."""
    values = np.asarray(values)  # summed in float64 class by class: no float64 copy of all the rows
    means = np.zeros((num_classes, values.shape[1]), np.float64)
    for k in range(num_classes):
        of_k = labels == k
        if not of_k.any():
            raise ValueError(f"class {k} has no training images: cannot fit its statistics")
        chosen = of_k & keep if keep is not None else of_k
        means[k] = values[chosen if chosen.any() else of_k].mean(axis=0, dtype=np.float64)
    return means


from cac_jax.evaluation.scores import cac, knn, mahalanobis, openmax, softmax  # noqa: E402,F401  (registers them)
