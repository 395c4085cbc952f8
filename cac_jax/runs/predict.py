"""A trained run as an open-set classifier: each image is accepted as one of the known classes, or rejected as
unknown, at the threshold calibrated on held-out knowns (:mod:`cac_jax.core.decisions`).

    import cac_jax
    clf = cac_jax.load("runs/digits/trial0")        # config.json, the best checkpoint, calibration.npz
    p = clf.predict(images)                         # uint8 (n, H, W) or (n, H, W, C), any H x W
    p.class_name, p.accepted, p.score, p.p_value    # one entry per image

``cac-jax predict --workdir W INPUT...`` does the same for .npz files, image files and folders, and writes one row
per image as CSV and JSON. What is needed besides the network comes from ``calibration.npz`` (written by ``train``
and ``eval``): the scores' statistics fitted on the training images, so neither the training images nor a pass over
them are needed, and the calibration, refused if it was made for another checkpoint than the one loaded.

Images are resized to the run's own image size by the rule of :mod:`cac_jax.data.external`; arrays must have the
run's channel count (files are converted by their mode). The forward pass is batched and compiled once per batch
shape (at most one per power of two up to the evaluation batch, whatever the number of images), on every device.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os

import numpy as np

from cac_jax import config as config_lib
from cac_jax import objectives
from cac_jax import storage
from cac_jax.data import external
from cac_jax.evaluation import calibration as calibration_lib
from cac_jax.evaluation import evaluate
from cac_jax.evaluation import scores as score_registry
from cac_jax.training import checkpoints


@dataclasses.dataclass(frozen=True)
class Predictions:
    """One entry per image. ``label``: the closed-set prediction 0..K-1; ``class_id``/``class_name``: the dataset's
    original class; ``accepted``: known (True) or unknown (False), None when the run is uncalibrated; ``score``: the
    open-set score (larger = more unknown); ``p_value``: its conformal p-value (None when uncalibrated)."""

    label: np.ndarray
    class_id: np.ndarray
    class_name: tuple[str, ...]
    accepted: np.ndarray | None
    score: np.ndarray
    p_value: np.ndarray | None
    score_name: str
    threshold: float | None

    def __len__(self) -> int:
        return len(self.label)

    @property
    def decision(self) -> list[str]:
        """The class name where accepted, "unknown" where rejected (the class name when uncalibrated)."""
        if self.accepted is None:
            return list(self.class_name)
        return [n if a else "unknown" for n, a in zip(self.class_name, self.accepted)]

    def rows(self, inputs) -> list[dict]:
        """One dict per image, ``inputs`` naming each (a file path or ``file[index]``)."""
        decision = self.decision
        return [{"input": str(inputs[i]), "class_id": int(self.class_id[i]), "class_name": self.class_name[i],
                 "accepted": None if self.accepted is None else bool(self.accepted[i]), "decision": decision[i],
                 "score": self.score_name, "score_value": float(self.score[i]),
                 "p_value": None if self.p_value is None else float(self.p_value[i])} for i in range(len(self))]


class Classifier:
    """A trained run, loaded once, classifying any number of images (see the module docstring)."""

    def __init__(self, workdir: str, *, score: str | None = None, num_devices: int | None = None):
        from cac_jax import models
        from cac_jax.training import mesh as mesh_lib
        from cac_jax.training import state as train_state

        if not os.path.isdir(workdir):
            raise FileNotFoundError(f"no work directory at {workdir}")
        self.workdir = workdir
        self.cfg = config_lib.load_config(os.path.join(workdir, "config.json"))
        self.calibration = calibration_lib.load(os.path.join(workdir, calibration_lib.FILE))
        meta = self.calibration.meta
        self.score_name = score or meta["score"]
        if self.score_name not in self.calibration.fitted:
            raise ValueError(f"score {self.score_name!r} is not in {workdir}/{calibration_lib.FILE}; it holds "
                             f"{sorted(self.calibration.fitted)} (a score of your own: --import it and run eval again)")
        self.score_fn = score_registry.get(self.score_name)
        self.shape = tuple(meta["native_shape"])
        self.mesh = mesh_lib.make_mesh(num_devices or self.cfg.num_devices)
        self.model = models.create_model(model=self.cfg.model, head=objectives.get(self.cfg.method).head,
                                           num_classes=meta["num_classes"], image_size=meta["image_size"],
                                           dropout=self.cfg.dropout, alpha=self.cfg.alpha, dtype=self.cfg.dtype)
        tx = train_state.make_optimizer(momentum=self.cfg.momentum, weight_decay=self.cfg.weight_decay,
                                        optimizer=self.cfg.optimizer)
        target = train_state.create(self.model, self.cfg.seed, image_size=meta["image_size"], channels=self.shape[2],
                                    tx=tx, sharding=mesh_lib.replicated(self.mesh))
        made_for = meta["checkpoint"]
        store = checkpoints.StageCheckpoints(workdir, made_for["stage"])
        signature = checkpoints.signature(self.cfg, meta["num_classes"], meta["image_size"], self.shape[2])
        try:
            state, found = store.restore(made_for["kind"], target, signature,
                                         data={"training_data_fingerprint": meta["training_data_fingerprint"]})
        finally:
            store.close()
        if found.get("step") != made_for["step"] or found.get("digests", {}).get("state") != made_for["digest"]:
            raise ValueError(f"{workdir}/{calibration_lib.FILE} was made for the {made_for['kind']} checkpoint of "
                             f"stage {made_for['stage']} at step {made_for['step']}, but that checkpoint now holds step "
                             f"{found.get('step')}: evaluate the run again (cac-jax eval --workdir {workdir})")
        self.variables = state.variables()
        stats = self.calibration.fitted[self.score_name]
        if stats is None:
            stats = self._refit()
        self.fitted = mesh_lib.replicate(self.mesh, {self.score_name: stats})
        self.class_ids = np.asarray(meta["class_ids"], np.int64)
        self.class_names = tuple(meta["class_names"])

    def _refit(self) -> dict:
        """The score's statistics, left out of calibration.npz for their size, fitted again on the training images
        the run's config names (refused if they are not the data the network was trained on)."""
        from cac_jax.data import loading
        from cac_jax.training import loop as train

        data = train.load_data(self.cfg)
        if loading.fingerprints(data)[1] != self.calibration.meta["training_data_fingerprint"]:
            why = self.calibration.meta["refit"][self.score_name]
            raise ValueError(f"score {self.score_name!r} needs the run's training images ({why}), but the data its "
                             f"config names are not those the network was trained on")
        train_set = evaluate.fit_set(self.model, self.variables, data, mesh=self.mesh,
                                     flip=evaluate.anchor_flip(self.cfg, data.dataset),
                                     batch_size=self.cfg.eval_batch_size)
        return score_registry.as_float32(self.score_fn.fit(train_set))

    @property
    def calibrated(self) -> bool:
        return self.calibration.calibrated

    def _program(self):
        meta = self.calibration.meta
        return evaluate._forward_fn(self.model, self.mesh, meta["image_size"], tuple(meta["mean"]), tuple(meta["std"]),
                                    False, self.model.dtype, (self.score_fn,))

    def programs_compiled(self) -> int:
        """How many programs the forward pass has compiled so far (one per batch shape)."""
        return self._program()._cache_size()

    def batch_size(self, n: int) -> int:
        """The batch of a call on n images: the evaluation batch, or the power of two that holds them (fewer
        compiled shapes than one per n, less padding than a full batch for a handful of images)."""
        return min(self.cfg.eval_batch_size, 1 << max(0, int(n) - 1).bit_length())

    def predict(self, images, *, what: str = "images") -> Predictions:
        """Decisions for uint8 images (n, H, W) or (n, H, W, C) with the run's channel count C, any H x W."""
        x = external.conform(images, self.shape, what, channels_known=False)
        if not len(x):
            raise ValueError(f"{what}: no images")
        meta = self.calibration.meta
        _, out = evaluate.forward(self.model, self.variables, x, mesh=self.mesh, image_size=meta["image_size"],
                                  mean=meta["mean"], std=meta["std"], batch_size=self.batch_size(len(x)),
                                  score_set=(self.score_fn,), fitted=self.fitted)
        label, score = (np.asarray(a) for a in out[self.score_name])
        score = score.astype(np.float64)
        threshold = self.calibration.threshold(self.score_name)
        return Predictions(label=label, class_id=self.class_ids[label],
                           class_name=tuple(self.class_names[i] for i in label),
                           accepted=None if threshold is None else score <= threshold, score=score,
                           p_value=self.calibration.p_values(self.score_name, score), score_name=self.score_name,
                           threshold=threshold)

    def read_inputs(self, inputs) -> tuple[np.ndarray, list[str]]:
        """(images in the run's format, a name per image) of .npz files (their x_test; arrays, so the channel count
        must be the run's), image files and folders of them, in the order given."""
        images, names = [], []
        for item in inputs:
            if os.path.isfile(item) and item.endswith(".npz"):
                found = external.read(item, self.shape, strict_channels=True)
            else:
                found = external.read(item, self.shape)
            images.append(found.images)
            names += found.origins
        return np.concatenate(images), names


def load(workdir: str, *, score: str | None = None, num_devices: int | None = None) -> Classifier:
    """The trained run in ``workdir`` as a :class:`Classifier` (``score``: another than the run's own)."""
    return Classifier(workdir, score=score, num_devices=num_devices)


def write_predictions(prefix: str, rows: list[dict]) -> tuple[str, str]:
    """``<prefix>.csv`` and ``<prefix>.json``, atomically; files of an earlier call are kept as ``<prefix>.<n>.*``."""
    paths = (f"{prefix}.csv", f"{prefix}.json")
    storage.keep_previous(*paths)
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: "" if v is None else v for k, v in r.items()} for r in rows)
    storage.write_text(paths[0], text.getvalue())
    storage.write_json(paths[1], rows)
    return paths
