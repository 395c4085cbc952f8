"""A run's calibration: what turns its network's outputs into decisions without the training or test data.

``calibration.npz`` in a run directory (written by ``train`` and ``eval``, atomically) holds, per score:

* the statistics the score fitted on the training images (``fit__<score>__<key>``), so that applying the network
  needs neither the training images nor a pass over them; statistics larger than :data:`MAX_STORED_BYTES` (KNN's
  bank of every training feature: 240 MB for MNIST's network) are left out, listed in ``meta["refit"]``, and
  rebuilt from the training images by the one command that needs them (``predict --score knn``);
* the sorted scores of the held-out known images (``cal__<score>``): the conformal calibration
  (:mod:`cac_jax.core.decisions`), absent when the run had none ("uncalibrated");
* ``meta`` (JSON): the target acceptance rate, where the calibration images came from, the checkpoint evaluated
  (stage, kind, step and the digest of its arrays: a calibration is refused for another network), the training
  data's fingerprint, the image format (native shape, input size, normalisation) and the classes, in label
  order, as the dataset's original ids and names.
"""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np

from cac_jax import storage
from cac_jax.core import decisions

FILE = "calibration.npz"
FORMAT = 1
MAX_STORED_BYTES = 16 * 2**20


@dataclasses.dataclass(frozen=True)
class Calibration:
    fitted: dict  # score name -> {key: array}, or None for statistics left out of the file (meta["refit"])
    scores: dict  # score name -> sorted calibration scores (float64); empty when uncalibrated
    meta: dict

    @property
    def calibrated(self) -> bool:
        return bool(self.scores)

    @property
    def target(self) -> float:
        return float(self.meta["target"])

    def threshold(self, score: str) -> float | None:
        """The score's rejection threshold (accept s <= t); None when uncalibrated."""
        if not self.calibrated:
            return None
        return decisions.threshold(self.scores[score], self.target)

    def p_values(self, score: str, values) -> np.ndarray | None:
        return decisions.p_values(self.scores[score], values) if self.calibrated else None


def save(path: str, calibration: Calibration) -> str:
    sizes = {name: sum(np.asarray(v).nbytes for v in stats.values())
             for name, stats in calibration.fitted.items() if stats is not None}
    refit = {name: f"{n / 2**20:.0f} MB of statistics, rebuilt from the training images when needed"
             for name, n in sizes.items() if n > MAX_STORED_BYTES}
    refit.update({name: why for name, why in calibration.meta.get("refit", {}).items() if name not in sizes})
    # The names too: a score that fits nothing (msp, energy, ...) has no arrays to say it is there.
    meta = {**calibration.meta, "format": FORMAT, "scores": sorted(calibration.fitted), "refit": refit}
    arrays = {"meta": np.asarray(json.dumps(meta))}
    for name, stats in calibration.fitted.items():
        if name not in refit:
            arrays.update({f"fit__{name}__{k}": np.asarray(v) for k, v in stats.items()})
    arrays.update({f"cal__{name}": np.asarray(v, np.float64) for name, v in calibration.scores.items()})
    with storage.atomic_open(path, "wb") as f:
        np.savez_compressed(f, **arrays)
    return path


def load(path: str) -> Calibration:
    """What :func:`save` wrote; a missing file says how to make it, a damaged one is a DamagedFile naming it."""
    try:
        with np.load(path) as f:
            arrays = {k: f[k] for k in f.files}
        meta = json.loads(str(arrays.pop("meta")))
        fitted = {name: None if name in meta.get("refit", {}) else {} for name in meta["scores"]}
        scores = {}
        for key, value in arrays.items():
            kind, name, *rest = key.split("__")
            if kind == "fit":
                fitted.setdefault(name, {})[rest[0]] = value
            elif kind == "cal":
                scores[name] = value
    except FileNotFoundError:
        raise FileNotFoundError(f"no calibration at {path}: evaluate the run first (cac-jax eval --workdir ...), "
                                f"which writes it") from None
    except Exception as e:  # noqa: BLE001  (zip, zlib, JSON and key errors of a file cut short or overwritten)
        raise storage.DamagedFile(path, f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}",
                                  "evaluate the run again (cac-jax eval --workdir ...) to rewrite it") from None
    if meta.get("format") != FORMAT:
        raise storage.DamagedFile(path, f"format {meta.get('format')!r}, this version reads {FORMAT}",
                                  "evaluate the run again (cac-jax eval --workdir ...) to rewrite it")
    return Calibration(fitted=fitted, scores=scores, meta=meta)


def summary(calibration: Calibration) -> dict:
    """The calibration as results.json records it (without the arrays)."""
    meta = calibration.meta
    return {"status": "calibrated" if calibration.calibrated else "uncalibrated", "target": meta["target"],
            "source": meta["source"], "n": meta["n"],
            "thresholds": {name: _finite(calibration.threshold(name)) for name in calibration.scores}}


def _finite(value):
    return value if value is None or math.isfinite(value) else "inf"
