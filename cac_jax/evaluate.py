"""Evaluation: logits over an image array (jitted, sharded), class-mean anchors, scores and metrics.

CAC test protocol (SPEC.md §2): the anchors used at test time are not alpha·I but the per-class
mean logit vectors of the *correctly classified training images* (no augmentation; for every
dataset except mnist/svhn/digits also their horizontally flipped copies). With those means μ_k,
a test image's distances are d_k = ||z - μ_k||, its closed-set prediction argmin_k d_k and its
open-set score min_k d_k·(1 - softmin(d)_k) (larger = more likely unknown). The baselines'
predictions and scores are in :mod:`cac_jax.method_scores`; every distance-based method
(``cac``, ``cac_learnt``, ``ce_distance``) uses the same class means.

Metrics (:func:`open_set_metrics`, all from :mod:`cac_jax.metrics`, unknown = positive where it matters):
``accuracy`` (closed-set, known test set), ``auroc``, ``oscr``, ``open_auc``, ``fpr95`` (fraction of
unknowns accepted at the threshold accepting 95% of knowns), ``aupr_in`` (knowns positive), ``aupr_out``.
"""

from __future__ import annotations

import dataclasses
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np

from cac_jax import mesh as mesh_lib
from cac_jax import method_scores, metrics, scores
from cac_jax.data import augment, pipeline

NO_FLIP_DATASETS = ("mnist", "svhn", "digits")
METRIC_KEYS = ("accuracy", "auroc", "oscr", "open_auc", "fpr95", "aupr_in", "aupr_out")
METRIC_NAMES = {"accuracy": "accuracy", "auroc": "AUROC", "oscr": "OSCR", "open_auc": "OpenAUC",
                "fpr95": "FPR95", "aupr_in": "AUPR-in", "aupr_out": "AUPR-out"}
SCORES_FILE = "scores.npz"


@dataclasses.dataclass(frozen=True)
class EvalOutputs:
    """Per-sample test outputs of one run: enough to recompute every metric and plot without the network.

    ``class_means`` (N, N): the test-time anchors (None for the CE methods that do not use them);
    ``train_anchors`` (N, N): alpha·I or the learnt centres (None for CE networks)."""

    method: str
    known_logits: np.ndarray
    unknown_logits: np.ndarray
    known_labels: np.ndarray
    known_pred: np.ndarray
    known_scores: np.ndarray
    unknown_scores: np.ndarray
    class_means: np.ndarray | None = None
    train_anchors: np.ndarray | None = None


def eval_batches(num_examples: int, batch_size: int):
    """(indices, mask) of this process's part of each padded global evaluation batch."""
    return pipeline.padded_batch_indices(num_examples, batch_size, process_index=jax.process_index(),
                                         process_count=jax.process_count())


def eval_batch_size(requested: int, mesh) -> int:
    """The requested eval batch rounded up to a multiple of the device count."""
    n = mesh.devices.size
    return -(-requested // n) * n


@functools.lru_cache(maxsize=None)
def _forward_fn(model, mesh, image_size, mean, std, hflip, dtype, method):
    # One compiled program per (network, preprocessing, method) and batch shape: known and unknown test
    # batches, and every evaluation of a process, share it.
    def f(variables, images, means):
        x = augment.eval_preprocess(images, image_size=image_size, mean=mean, std=std, hflip=hflip)
        logits, _ = model.apply(variables, x.astype(dtype), train=False)
        if method is None:
            return (logits,)
        return (logits, *method_scores.predict_and_score(method, logits, means))

    rep = mesh_lib.replicated(mesh)
    return jax.jit(f, in_shardings=(rep, mesh_lib.batch_sharding(mesh), rep), out_shardings=rep)


def _forward(model, variables, images, *, mesh, image_size, mean, std, hflip=False, batch_size=512, method=None,
             means=None) -> tuple[np.ndarray, ...]:
    fn = _forward_fn(model, mesh, int(image_size), tuple(mean), tuple(std), bool(hflip), model.dtype, method)
    means = None if means is None else mesh_lib.replicate(mesh, np.asarray(means, np.float32))
    bs = eval_batch_size(batch_size, mesh)
    out = []
    for idx, _ in eval_batches(len(images), bs):
        (batch,) = mesh_lib.put_batch(mesh, images[idx])
        out.append(fn(variables, batch, means))  # no host copy here: the next batch is sent while this one runs
    if not out:
        empty = (np.zeros((0, model.num_classes), np.float32), np.zeros(0, np.int32), np.zeros(0, np.float32))
        return empty[:1 if method is None else 3]
    # Only the last global batch is padded, at its end.
    return tuple(np.concatenate(parts)[: len(images)] for parts in zip(*jax.device_get(out)))


def compute_logits(model, variables, images: np.ndarray, *, mesh, image_size: int, mean, std,
                   hflip: bool = False, batch_size: int = 512) -> np.ndarray:
    """Eval-mode logits (n, N) of uint8 images (n, H, W, C), batched and split over the mesh."""
    return _forward(model, variables, images, mesh=mesh, image_size=image_size, mean=mean, std=std, hflip=hflip,
                    batch_size=batch_size)[0]


def compute_scores(model, variables, images: np.ndarray, method: str, means, *, mesh, image_size: int, mean, std,
                   batch_size: int = 512) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(logits (n, N), predictions (n,), open-set scores (n,)) of ``method``
    (:func:`cac_jax.method_scores.predict_and_score`), computed with the forward pass, batch by batch."""
    return _forward(model, variables, images, mesh=mesh, image_size=image_size, mean=mean, std=std,
                    batch_size=batch_size, method=method, means=means)


def class_means(logits: np.ndarray, labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """(N, N) mean logit vector of the correctly classified samples of each class.

    A class with no correct sample (only in degenerate runs) falls back to the mean of all its samples."""
    means = np.zeros((num_classes, logits.shape[1]), np.float64)
    for k in range(num_classes):
        of_k = labels == k
        if not of_k.any():
            raise ValueError(f"class {k} has no training images: cannot compute its anchor")
        keep = of_k & (predictions == k)
        means[k] = logits[keep if keep.any() else of_k].mean(axis=0)
    return means


def training_anchors(variables) -> np.ndarray | None:
    """The centres the network was trained against: learnt centres, fixed alpha·I, or None (CE network)."""
    if "centres" in variables["params"]:
        return np.asarray(variables["params"]["centres"], np.float64)
    if "anchors" in variables:
        return np.asarray(variables["anchors"]["centres"], np.float64)
    return None


def training_predictions(logits: np.ndarray, variables) -> np.ndarray:
    """What the trained network predicts: the nearest learnt centre, else argmax of the logits
    (which is also the nearest fixed anchor alpha·e_j, since ||z - alpha·e_j||² = ||z||² - 2·alpha·z_j + alpha²)."""
    centres = variables["params"].get("centres")
    if centres is not None:
        return np.asarray(_nearest_centre(jnp.asarray(logits), jnp.asarray(centres, jnp.float32)))
    return np.argmax(logits, axis=-1)


_nearest_centre = jax.jit(scores.predict)


def anchor_flip(cfg, dataset: str) -> bool:
    """Whether flipped copies join the class means: ``cfg.anchor_flip`` if set, else all but mnist/svhn/digits."""
    return cfg.anchor_flip if cfg.anchor_flip is not None else dataset not in NO_FLIP_DATASETS


def class_mean_anchors(model, variables, data, *, mesh, flip: bool, batch_size: int = 512) -> np.ndarray:
    """SPEC.md §2 step 2: class means of correctly classified (unaugmented, optionally also flipped) train images."""
    kw = dict(mesh=mesh, image_size=data.image_size, mean=data.mean, std=data.std, batch_size=batch_size)
    logits = [compute_logits(model, variables, data.train.images, **kw)]
    if flip:
        logits.append(compute_logits(model, variables, data.train.images, hflip=True, **kw))
    logits = np.concatenate(logits)
    labels = np.tile(data.train.labels, len(logits) // len(data.train.labels))
    return class_means(logits, labels, training_predictions(logits, variables), data.num_classes)


def open_set_metrics(known_scores, unknown_scores, known_pred, known_labels) -> dict:
    """The seven metrics of :data:`METRIC_KEYS` (fractions in [0, 1]) from per-sample test outputs."""
    correct = np.asarray(known_pred) == np.asarray(known_labels)
    return {
        "accuracy": metrics.closed_set_accuracy(known_pred, known_labels),
        "auroc": metrics.auroc(known_scores, unknown_scores),
        "oscr": metrics.oscr(known_scores, unknown_scores, correct),
        "open_auc": metrics.open_auc(known_scores, unknown_scores, correct),
        "fpr95": metrics.fpr_at_tpr(known_scores, unknown_scores, tpr=0.95),
        "aupr_in": metrics.aupr_in(known_scores, unknown_scores),
        "aupr_out": metrics.aupr_out(known_scores, unknown_scores),
    }


def compute_outputs(model, variables, data, cfg, mesh) -> EvalOutputs:
    """Logits, predictions and open-set scores of the known and unknown test sets for ``cfg.method``."""
    kw = dict(mesh=mesh, image_size=data.image_size, mean=data.mean, std=data.std, batch_size=cfg.eval_batch_size)
    means = None
    if method_scores.needs_class_means(cfg.method):
        means = class_mean_anchors(model, variables, data, mesh=mesh, flip=anchor_flip(cfg, data.dataset),
                                   batch_size=cfg.eval_batch_size)
    known_logits, pred, known_scores = compute_scores(model, variables, data.test_known.images, cfg.method, means, **kw)
    unknown_logits, _, unknown_scores = compute_scores(model, variables, data.test_unknown.images, cfg.method, means,
                                                       **kw)
    return EvalOutputs(method=cfg.method, known_logits=known_logits, unknown_logits=unknown_logits,
                       known_labels=np.asarray(data.test_known.labels), known_pred=np.asarray(pred),
                       known_scores=np.asarray(known_scores, np.float64),
                       unknown_scores=np.asarray(unknown_scores, np.float64),
                       class_means=means, train_anchors=training_anchors(variables))


def evaluate(model, variables, data, cfg, mesh) -> tuple[dict, EvalOutputs]:
    """(results, outputs): the metrics of :data:`METRIC_KEYS` plus test-set sizes and timing, and the
    per-sample outputs they were computed from."""
    t0 = time.perf_counter()
    out = compute_outputs(model, variables, data, cfg, mesh)
    results = open_set_metrics(out.known_scores, out.unknown_scores, out.known_pred, out.known_labels)
    results.update(num_known_test=int(len(out.known_logits)), num_unknown_test=int(len(out.unknown_logits)),
                   anchor_flip=bool(anchor_flip(cfg, data.dataset)) if out.class_means is not None else None,
                   eval_seconds=round(time.perf_counter() - t0, 3))
    return results, out


def save_outputs(path: str, out: EvalOutputs) -> None:
    """Write ``out`` as a compressed .npz (absent optional arrays are left out)."""
    arrays = {f.name: getattr(out, f.name) for f in dataclasses.fields(out)}
    arrays = {k: np.asarray(v) for k, v in arrays.items() if v is not None}
    np.savez_compressed(path, **arrays)


def load_outputs(path: str) -> EvalOutputs:
    """Read what :func:`save_outputs` wrote."""
    try:
        with np.load(path) as f:
            arrays = {k: f[k] for k in f.files}
    except FileNotFoundError:
        raise FileNotFoundError(f"no saved test scores at {path}: evaluate the run first (cac-jax eval)") from None
    arrays["method"] = str(arrays["method"])
    return EvalOutputs(**arrays)
