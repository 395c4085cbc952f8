"""Evaluation: logits over an image array (jitted, sharded), class-mean anchors, CAC scores and metrics.

CAC test protocol (SPEC.md §2): the anchors used at test time are not alpha·I but the per-class
mean logit vectors of the *correctly classified training images* (no augmentation; for every
dataset except mnist/svhn/digits also their horizontally flipped copies). With those means μ_k,
a test image's distances are d_k = ||z - μ_k||, its closed-set prediction argmin_k d_k and its
open-set score min_k d_k·(1 - softmin(d)_k) (larger = more likely unknown). AUROC takes unknown
as the positive class; accuracy is top-1 on the known test set.
"""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
import numpy as np

from cac_jax import mesh as mesh_lib
from cac_jax import metrics, scores
from cac_jax.data import augment

NO_FLIP_DATASETS = ("mnist", "svhn", "digits")


def padded_batches(num_examples: int, batch_size: int):
    """Yield (indices, mask) covering 0..n-1 in order; the last batch is padded (mask False) to full size.

    Each process gets its contiguous slice of every global batch."""
    pc, pi = jax.process_count(), jax.process_index()
    for start in range(0, num_examples, batch_size):
        idx = np.arange(start, min(start + batch_size, num_examples))
        mask = np.ones(batch_size, bool)
        mask[len(idx):] = False
        idx = np.concatenate([idx, np.full(batch_size - len(idx), idx[0])])
        yield idx.reshape(pc, -1)[pi], mask.reshape(pc, -1)[pi]


def eval_batch_size(requested: int, mesh) -> int:
    """The requested eval batch rounded up to a multiple of the device count."""
    n = mesh.devices.size
    return -(-requested // n) * n


@functools.lru_cache(maxsize=None)
def _logits_fn(model, mesh, image_size, mean, std, hflip, dtype):
    def f(variables, images):
        x = augment.eval_preprocess(images, image_size=image_size, mean=mean, std=std, hflip=hflip)
        logits, _ = model.apply(variables, x.astype(dtype), train=False)
        return logits

    return jax.jit(f, in_shardings=(mesh_lib.replicated(mesh), mesh_lib.batch_sharding(mesh)),
                   out_shardings=mesh_lib.replicated(mesh))


def compute_logits(model, variables, images: np.ndarray, *, mesh, image_size: int, mean, std,
                   hflip: bool = False, batch_size: int = 512) -> np.ndarray:
    """Eval-mode logits (n, N) of uint8 images (n, H, W, C), batched and split over the mesh."""
    fn = _logits_fn(model, mesh, int(image_size), tuple(mean), tuple(std), bool(hflip), model.dtype)
    bs = eval_batch_size(batch_size, mesh)
    out = []
    for idx, _ in padded_batches(len(images), bs):
        (batch,) = mesh_lib.put_batch(mesh, images[idx])
        out.append(np.asarray(fn(variables, batch)))
    if not out:
        return np.zeros((0, model.num_classes), np.float32)
    return np.concatenate(out)[: len(images)]  # only the last global batch is padded, at its end


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


def training_anchors(variables, num_classes: int, alpha: float) -> np.ndarray:
    """The anchors the network was trained against: learnt centres if present, else alpha·I."""
    params = variables["params"]
    if "centres" in params:
        return np.asarray(params["centres"], np.float64)
    return alpha * np.eye(num_classes)


def class_mean_anchors(model, variables, data, *, mesh, alpha: float, flip: bool, batch_size: int = 512) -> np.ndarray:
    """SPEC.md §2 step 2: class means of correctly classified (unaugmented, optionally also flipped) train images."""
    kw = dict(mesh=mesh, image_size=data.image_size, mean=data.mean, std=data.std, batch_size=batch_size)
    logits = [compute_logits(model, variables, data.train.images, **kw)]
    if flip:
        logits.append(compute_logits(model, variables, data.train.images, hflip=True, **kw))
    logits = np.concatenate(logits)
    labels = np.tile(data.train.labels, len(logits) // len(data.train.labels))
    trained = training_anchors(variables, data.num_classes, alpha)
    pred = np.asarray(scores.predict(jnp.asarray(logits), jnp.asarray(trained, jnp.float32)))
    return class_means(logits, labels, pred, data.num_classes)


def open_set_scores(method: str, logits: np.ndarray, anchors: np.ndarray | None):
    """(predictions, open-set score: larger = unknown) of one test set for ``method``."""
    z = jnp.asarray(logits)
    if method in ("cac", "cac_learnt", "ce_distance"):
        a = jnp.asarray(anchors, jnp.float32)
        return np.asarray(scores.predict(z, a)), np.asarray(scores.open_set_score(z, a))
    pred = np.asarray(jnp.argmax(z, axis=-1))
    if method == "ce_msp":
        return pred, -np.asarray(jax.nn.softmax(z, axis=-1).max(axis=-1))
    if method == "ce_max_logit":
        return pred, -np.asarray(z.max(axis=-1))
    raise ValueError(f"unknown method {method!r}")


def evaluate(model, variables, data, cfg, mesh) -> dict:
    """Closed-set accuracy and AUROC of a trained network on the known/unknown test sets."""
    t0 = time.perf_counter()
    flip = cfg.anchor_flip if cfg.anchor_flip is not None else data.dataset not in NO_FLIP_DATASETS
    kw = dict(mesh=mesh, image_size=data.image_size, mean=data.mean, std=data.std, batch_size=cfg.eval_batch_size)
    anchors = None
    if cfg.method in ("cac", "cac_learnt", "ce_distance"):
        anchors = class_mean_anchors(model, variables, data, mesh=mesh, alpha=cfg.alpha, flip=flip,
                                     batch_size=cfg.eval_batch_size)
    known_logits = compute_logits(model, variables, data.test_known.images, **kw)
    unknown_logits = compute_logits(model, variables, data.test_unknown.images, **kw)
    pred, known_scores = open_set_scores(cfg.method, known_logits, anchors)
    _, unknown_scores = open_set_scores(cfg.method, unknown_logits, anchors)
    return {
        "accuracy": float(metrics.closed_set_accuracy(pred, data.test_known.labels)),
        "auroc": float(metrics.auroc(known_scores, unknown_scores)),
        "num_known_test": int(len(known_logits)),
        "num_unknown_test": int(len(unknown_logits)),
        "anchor_flip": bool(flip),
        "eval_seconds": round(time.perf_counter() - t0, 3),
    }
