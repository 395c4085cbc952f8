"""Evaluation of one trained network with every score: one forward pass over the training and test images,
the statistics each score fits on the training images, and the scores' predictions and metrics.

CAC test protocol (SPEC.md §2): the training images are passed without augmentation (for every dataset
except mnist/svhn/digits also their horizontally flipped copies); their logits, penultimate features,
labels and the network's own predictions form the :class:`~cac_jax.evaluation.scores.FitSet` every score
fits on (the CAC score's class means come from the correctly classified ones). The test images' logits and
features then go through every applicable registered score (:mod:`cac_jax.evaluation.scores`) in the same
compiled program as the forward pass. A score whose fit fails (e.g. OpenMax on a class with a single
correct image) is reported with its error; the others go on.

The method's own score (:func:`headline_score`: the objective's ``headline``, e.g. ``cac`` for the CAC objectives,
``msp`` for ``ce`` and ``ce_msp``, ``max_logit`` for ``ce_max_logit``, ``distance`` for ``ce_distance``) gives the top-level
metrics of ``results.json``; ``results["scores"]`` holds those of every score.

Decisions (:mod:`cac_jax.core.decisions`): the held-out known images (the validation split, or
``cfg.calibration``) go through the same program; their scores calibrate each score's threshold at
``cfg.target_acceptance`` (split conformal), and ``results["scores"][name]["operating_point"]`` gives the
K + 1-class figures there (known acceptance, unknown rejection, CCR, open-set accuracy, macro-F1, confusion).
A run without held-out knowns is "uncalibrated". ``results["oracle"]`` holds the same figures at a threshold chosen
on the test set (Youden's J), labelled as such. Sets of unknowns from other datasets (``cfg.unknowns``,
:mod:`cac_jax.data.external`) get AUROC, FPR95, AUPR-out and the fraction rejected, per score, under
``results["unknown_sets"]``.

Metrics (:func:`open_set_metrics`, all from :mod:`cac_jax.core.metrics`, unknown = positive where it matters):
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

from cac_jax import objectives, storage
from cac_jax.core import cac_score, decisions, metrics
from cac_jax.data import augment, external, registry, splits
from cac_jax.evaluation import calibration as calibration_lib
from cac_jax.evaluation import scores as score_registry
from cac_jax.runtime import interrupts, timing
from cac_jax.training import mesh as mesh_lib

NO_FLIP_DATASETS = ("mnist", "svhn", "digits")
METRIC_KEYS = ("accuracy", "auroc", "oscr", "open_auc", "fpr95", "aupr_in", "aupr_out")
METRIC_NAMES = {"accuracy": "accuracy", "auroc": "AUROC", "oscr": "OSCR", "open_auc": "OpenAUC",
                "fpr95": "FPR95", "aupr_in": "AUPR-in", "aupr_out": "AUPR-out"}
SCORES_FILE = "scores.npz"


@dataclasses.dataclass(frozen=True)
class EvalOutputs:
    """Per-sample test outputs of one run: enough to recompute every metric and plot without the network.

    ``class_means`` (N, N): the test-time anchors (the class means of the correctly classified training logits);
    ``train_anchors`` (N, N): alpha·I or the learnt centres (None for CE networks); ``scores``: every score's
    predictions and scores of the known and unknown test images, the headline's also at the top level."""

    method: str
    known_logits: np.ndarray
    unknown_logits: np.ndarray
    known_labels: np.ndarray
    known_pred: np.ndarray
    known_scores: np.ndarray
    unknown_scores: np.ndarray
    class_means: np.ndarray | None = None
    train_anchors: np.ndarray | None = None
    score: str | None = None  # the headline score that known_pred/known_scores/unknown_scores hold
    # name -> {"known_pred", "known_scores", "unknown_pred", "unknown_scores", "calibration_scores"}
    scores: dict = dataclasses.field(default_factory=dict)
    external: dict = dataclasses.field(default_factory=dict)  # set name -> {score name: scores of its images}
    class_names: tuple = ()  # of the labels 0..K-1
    calibration: calibration_lib.Calibration | None = None  # not in scores.npz: calibration.npz holds it


def headline_score(method: str) -> str:
    """The score that gives ``method``'s top-level results (its objective's ``headline``, or the shorthand's)."""
    return objectives.headline(method)


@functools.lru_cache(maxsize=None)
def _forward_fn(model, mesh, image_size, mean, std, hflip, dtype, score_set):
    # One compiled program per (network, preprocessing, scores) and batch shape: known and unknown test
    # batches, and every evaluation of a process, share it.
    def f(variables, images, fitted):
        x = augment.eval_preprocess(images, image_size=image_size, mean=mean, std=std, hflip=hflip)
        logits, _, features = model.apply(variables, x.astype(dtype), train=False, with_features=True)
        features = features.astype(jnp.float32)
        if score_set is None:
            return logits, features
        return logits, {s.name: s(fitted[s.name], logits, features) for s in score_set}

    rep = mesh_lib.replicated(mesh)
    return jax.jit(f, in_shardings=(rep, mesh_lib.batch_sharding(mesh), rep), out_shardings=rep)


def forward(model, variables, images: np.ndarray, *, mesh, image_size: int, mean, std, hflip: bool = False,
            batch_size: int = 512, score_set: tuple | None = None, fitted=None):
    """Eval-mode outputs of uint8 images (n, H, W, C), batched and split over the mesh: (logits (n, N), features
    (n, D)), or with ``score_set`` (logits, {score name: (predictions (n,), scores (n,))}) from the ``fitted``
    statistics (on the devices)."""
    fn = _forward_fn(model, mesh, int(image_size), tuple(mean), tuple(std), bool(hflip), model.dtype, score_set)
    bs = mesh_lib.eval_batch_size(batch_size, mesh)
    out = []
    for idx, _ in mesh_lib.eval_batches(len(images), bs):
        interrupts.check()
        (batch,) = mesh_lib.put_batch(mesh, images[idx])
        out.append(fn(variables, batch, fitted))  # no host copy here: the next batch is sent while this one runs
    if not out:  # shapes from the program itself, without running it
        shaped = jax.eval_shape(fn, variables, jax.ShapeDtypeStruct((bs, *images.shape[1:]), images.dtype), fitted)
        return jax.tree.map(lambda a: np.zeros((0, *a.shape[1:]), a.dtype), shaped)
    # Only the last global batch is padded, at its end.
    return jax.tree.map(lambda *parts: np.concatenate(parts)[: len(images)], *jax.device_get(out))


def compute_logits(model, variables, images: np.ndarray, *, mesh, image_size: int, mean, std,
                   hflip: bool = False, batch_size: int = 512) -> np.ndarray:
    """Eval-mode logits (n, N) of uint8 images (n, H, W, C), batched and split over the mesh."""
    return forward(model, variables, images, mesh=mesh, image_size=image_size, mean=mean, std=std, hflip=hflip,
                   batch_size=batch_size)[0]


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


_nearest_centre = jax.jit(cac_score.predict)


def anchor_flip(cfg, dataset: str) -> bool:
    """Whether flipped copies join the class means: ``cfg.anchor_flip`` if set, else all but mnist/svhn/digits."""
    return cfg.anchor_flip if cfg.anchor_flip is not None else dataset not in NO_FLIP_DATASETS


def fit_set(model, variables, data, *, mesh, flip: bool, batch_size: int = 512) -> score_registry.FitSet:
    """The training images' eval-mode outputs (with their flipped copies if ``flip``), labels and the network's
    predictions: what every score fits on (SPEC.md §2 step 2)."""
    kw = dict(mesh=mesh, image_size=data.image_size, mean=data.mean, std=data.std, batch_size=batch_size)
    parts = [forward(model, variables, data.train.images, **kw)]
    if flip:
        parts.append(forward(model, variables, data.train.images, hflip=True, **kw))
    logits = np.concatenate([p[0] for p in parts])
    features = np.concatenate([p[1] for p in parts])
    labels = np.tile(np.asarray(data.train.labels), len(parts))
    return score_registry.FitSet(logits=logits, features=features, labels=labels,
                                 predictions=training_predictions(logits, variables), num_classes=data.num_classes)


def class_mean_anchors(model, variables, data, *, mesh, flip: bool, batch_size: int = 512) -> np.ndarray:
    """SPEC.md §2 step 2: class means of correctly classified (unaugmented, optionally also flipped) train images."""
    return fit_set(model, variables, data, mesh=mesh, flip=flip, batch_size=batch_size).class_means


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


def native_shape(data) -> tuple[int, int, int]:
    """(H, W, C) of the run's own images, into which other images are converted (:mod:`cac_jax.data.external`)."""
    return tuple(int(d) for d in data.train.images.shape[1:])


def class_ids(data) -> list[int]:
    """The dataset's original class ids of the labels 0..K-1."""
    mapping = splits.label_map(data.known, data.family)
    return sorted(mapping, key=mapping.get)


def calibration_images(data, cfg) -> tuple[np.ndarray | None, str]:
    """(held-out known images or None, where they come from): ``cfg.calibration`` if set, else the validation split;
    never training or test images (a given set sharing any with them is refused)."""
    if cfg.calibration:
        given = external.read(cfg.calibration, native_shape(data), data_dir=cfg.data_dir)
        if given.labels is not None:
            strangers = sorted(set(np.unique(given.labels).tolist()) - set(data.known))
            if strangers:
                raise ValueError(f"calibration={cfg.calibration}: labels {strangers[:10]} are not known classes "
                                 f"{list(data.known)}; calibrate on held-out images of the known classes only")
        for split in ("train", "val", "test_known", "test_unknown"):
            shared = external.shared_images(given.images, getattr(data, split).images)
            if shared:
                raise ValueError(f"calibration={cfg.calibration}: {shared} of its {len(given)} images are also in "
                                 f"the {split} split; calibrating on them would void the guarantee (and on test "
                                 f"images, look at the answers). Give held-out known images")
        return given.images, f"{cfg.calibration} ({len(given)} held-out known images)"
    if len(data.val):
        return data.val.images, f"the validation split ({len(data.val)} known images held out of training)"
    return None, ("none: the run holds out no known images (holdout_val=false); give some with "
                  "--set calibration=SOURCE")


def compute_outputs(model, variables, data, cfg, mesh) -> tuple[EvalOutputs, dict, dict]:
    """(outputs, {score name: error}, {set name: (source, image count)}): logits and every applicable score's predictions and scores of the known
    and unknown test sets, the held-out knowns (calibration) and the sets of unknowns from other datasets, with
    the calibration; the scores whose fit failed; the sets of unknowns read."""
    # Every image set is read before the first pass: a bad source fails before minutes of work.
    held_out, source = calibration_images(data, cfg)
    others = {name: external.read(src, native_shape(data), data_dir=cfg.data_dir)
              for name, src in external.check_named(cfg.unknowns)}
    with timing.section("eval_fit_pass"):
        train = fit_set(model, variables, data, mesh=mesh, flip=anchor_flip(cfg, data.dataset),
                        batch_size=cfg.eval_batch_size)
    headline = headline_score(cfg.method)
    fitted, errors = {}, {}
    with timing.section("eval_fits"):
        for score in score_registry.applicable():
            try:
                fitted[score.name] = score_registry.as_float32(score.fit(train))
            except ValueError as e:
                errors[score.name] = str(e)
    if headline in errors:
        raise ValueError(f"the {headline} score of method {cfg.method} cannot be fitted: {errors[headline]}")
    chosen = tuple(s for s in score_registry.applicable() if s.name in fitted)
    with timing.section("eval_scored_passes"):
        kw = dict(mesh=mesh, image_size=data.image_size, mean=data.mean, std=data.std,
                  batch_size=cfg.eval_batch_size, score_set=chosen, fitted=mesh_lib.replicate(mesh, fitted))
        known_logits, known = forward(model, variables, data.test_known.images, **kw)
        unknown_logits, unknown = forward(model, variables, data.test_unknown.images, **kw)
        held = forward(model, variables, held_out, **kw)[1] if held_out is not None else None
        outside = {name: forward(model, variables, s.images, **kw)[1] for name, s in others.items()}
    per_score = {name: {"known_pred": np.asarray(known[name][0]),
                        "known_scores": np.asarray(known[name][1], np.float64),
                        "unknown_pred": np.asarray(unknown[name][0]),
                        "unknown_scores": np.asarray(unknown[name][1], np.float64)} for name in known}
    if held is not None:
        for name in per_score:
            per_score[name]["calibration_scores"] = np.asarray(held[name][1], np.float64)
    top = per_score[headline]
    ids = class_ids(data)
    cal = calibration_lib.Calibration(
        fitted={name: fitted[name] for name in known},
        scores={name: np.sort(v["calibration_scores"]) for name, v in per_score.items() if "calibration_scores" in v},
        meta={"target": float(cfg.target_acceptance), "source": source, "n": 0 if held_out is None else len(held_out),
              "score": headline, "dataset": data.dataset, "trial": data.trial, "family": data.family,
              "num_classes": data.num_classes, "class_ids": ids, "class_names": registry.class_names(data.dataset, ids),
              "native_shape": list(native_shape(data)), "image_size": data.image_size,
              "mean": list(data.mean), "std": list(data.std)})
    out = EvalOutputs(method=cfg.method, known_logits=known_logits, unknown_logits=unknown_logits,
                      known_labels=np.asarray(data.test_known.labels), known_pred=top["known_pred"],
                      known_scores=top["known_scores"], unknown_scores=top["unknown_scores"],
                      class_means=train.class_means,
                      train_anchors=training_anchors(variables), score=headline, scores=per_score,
                      external={name: {score: np.asarray(v[1], np.float64) for score, v in o.items()}
                                for name, o in outside.items()},
                      class_names=tuple(cal.meta["class_names"]), calibration=cal)
    return out, errors, {name: (s.source, len(s)) for name, s in others.items()}


def decision_metrics(out: EvalOutputs, num_classes: int) -> tuple[dict, dict]:
    """({score: operating point at the calibrated threshold}, {score: the same at the oracle threshold}); the first
    is empty when the run is uncalibrated."""
    calibrated, oracle = {}, {}
    for name, v in out.scores.items():
        def at(t):
            return {"threshold": t if np.isfinite(t) else "inf",
                    **decisions.operating_point(out.known_labels, v["known_pred"], v["known_scores"] <= t,
                                                v["unknown_pred"], v["unknown_scores"] <= t, num_classes)}

        try:
            if out.calibration is not None and out.calibration.calibrated:
                calibrated[name] = {"target": out.calibration.target, **at(out.calibration.threshold(name))}
            oracle[name] = at(decisions.youden_threshold(v["known_scores"], v["unknown_scores"]))
        except ValueError as e:  # a score with non-finite values on some images
            calibrated[name] = oracle[name] = {"error": str(e)}
    return calibrated, oracle


def unknown_set_metrics(out: EvalOutputs, sources: dict) -> dict:
    """{set: {"source", "n", "scores": {score: AUROC, FPR95, AUPR-out against the test knowns, and the fraction
    rejected at the calibrated threshold (None when uncalibrated)}}}."""
    result = {}
    for name, per_score in out.external.items():
        rows = {}
        for score, values in per_score.items():
            known = out.scores[score]["known_scores"]
            t = out.calibration.threshold(score) if out.calibration is not None else None
            rows[score] = {"auroc": metrics.auroc(known, values), "fpr95": metrics.fpr_at_tpr(known, values, tpr=0.95),
                           "aupr_out": metrics.aupr_out(known, values),
                           "rejected": None if t is None else float(np.mean(values > t))}
        source, n = sources[name]
        result[name] = {"source": source, "n": n, "conversion": "cac_jax.data.external (README: Using a trained "
                        "network)", "scores": rows}
    return result


def evaluate(model, variables, data, cfg, mesh) -> tuple[dict, EvalOutputs]:
    """(results, outputs): the headline score's metrics (:data:`METRIC_KEYS`), every score's under ``scores`` (each
    with its calibrated ``operating_point``), the calibration, the oracle block, the sets of unknowns from other
    datasets, test-set sizes and timing, and the per-sample outputs they were computed from."""
    t0 = time.perf_counter()
    out, errors, sources = compute_outputs(model, variables, data, cfg, mesh)
    results = open_set_metrics(out.known_scores, out.unknown_scores, out.known_pred, out.known_labels)
    per_score = {name: open_set_metrics(v["known_scores"], v["unknown_scores"], v["known_pred"], out.known_labels)
                 for name, v in out.scores.items()}
    calibrated, oracle = decision_metrics(out, data.num_classes)
    for name, point in calibrated.items():
        per_score[name]["operating_point"] = point
    per_score.update({name: {"error": message} for name, message in errors.items()})
    results.update(score=out.score, scores=per_score, calibration=calibration_lib.summary(out.calibration),
                   operating_point=calibrated.get(out.score), class_names=list(out.class_names),
                   oracle={"note": "at the threshold that maximises Youden's J on the test set itself: it looks at "
                                   "the test unknowns, so these are upper bounds to compare with, not results",
                           "scores": oracle},
                   unknown_sets=unknown_set_metrics(out, sources),
                   num_known_test=int(len(out.known_logits)), num_unknown_test=int(len(out.unknown_logits)),
                   anchor_flip=bool(anchor_flip(cfg, data.dataset)), eval_seconds=round(time.perf_counter() - t0, 3))
    return results, out


def _score_key(name: str, field: str) -> str:
    return f"score__{name}__{field}"


def save_outputs(path: str, out: EvalOutputs) -> None:
    """Write ``out`` (but its calibration) as a compressed .npz (absent optional arrays are left out; every score's
    arrays as ``score__<name>__<field>``, the sets of unknowns from other datasets' as ``external__<set>__<score>``)."""
    skip = ("scores", "external", "calibration", "class_names")
    arrays = {f.name: getattr(out, f.name) for f in dataclasses.fields(out) if f.name not in skip}
    arrays = {k: np.asarray(v) for k, v in arrays.items() if v is not None}
    for name, fields in out.scores.items():
        arrays.update({_score_key(name, k): np.asarray(v) for k, v in fields.items()})
    for name, per_score in out.external.items():
        arrays.update({f"external__{name}__{score}": np.asarray(v) for score, v in per_score.items()})
    if out.class_names:
        arrays["class_names"] = np.asarray(out.class_names)
    with storage.atomic_open(path, "wb") as f:
        np.savez_compressed(f, **arrays)


def load_outputs(path: str) -> EvalOutputs:
    """Read what :func:`save_outputs` wrote (also the files of earlier versions, without ``scores``); a file that
    cannot be read is a :class:`~cac_jax.storage.DamagedFile` naming it."""
    try:
        with np.load(path) as f:
            arrays = {k: f[k] for k in f.files}
        per_score: dict = {}
        external: dict = {}
        for key in [k for k in arrays if k.startswith(("score__", "external__"))]:
            kind, name, field = key.split("__")
            (per_score if kind == "score" else external).setdefault(name, {})[field] = arrays.pop(key)
        arrays["method"] = str(arrays["method"])
        arrays["score"] = str(arrays["score"]) if "score" in arrays else headline_score(arrays["method"])
        arrays["class_names"] = tuple(str(c) for c in arrays.get("class_names", ()))
        return EvalOutputs(**arrays, scores=per_score, external=external)
    except FileNotFoundError:
        raise FileNotFoundError(f"no saved test scores at {path}: evaluate the run first (cac-jax eval)") from None
    except Exception as e:  # noqa: BLE001  (zipfile, zlib, pickle and key errors of a file cut short or overwritten)
        raise storage.DamagedFile(path, f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}",
                                  "evaluate the run again (cac-jax eval --workdir ...) to rewrite it") from None
