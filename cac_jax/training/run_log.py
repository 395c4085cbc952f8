"""Metrics sink: one JSON object per line in ``<workdir>/metrics.jsonl``, plus TensorBoard on request.

With ``tensorboard=True`` (``--set tensorboard=true``) TensorBoard event files are written too, through
``tensorboardX`` or ``torch.utils.tensorboard`` (neither is a dependency; a clear error if neither is
there). Off by default: importing torch for it alone costs a short run 1.6 s. Only process 0 writes.
"""

from __future__ import annotations

import json
import os

import jax

from cac_jax import storage


def _tensorboard_writer(logdir: str):
    for module in ("tensorboardX", "torch.utils.tensorboard"):
        try:
            return __import__(module, fromlist=["SummaryWriter"]).SummaryWriter(logdir)
        except ImportError:
            continue
    raise ValueError("tensorboard=true needs tensorboardX or torch (pip install tensorboardX); "
                     "metrics.jsonl is written without them")


class RunLog:
    def __init__(self, workdir: str, *, tensorboard: bool = False):
        self._active = jax.process_index() == 0
        if self._active:
            storage.make_dirs(workdir)
        self._tb = _tensorboard_writer(os.path.join(workdir, "tensorboard")) if self._active and tensorboard else None
        self._file = None
        if self._active:
            path = os.path.join(workdir, "metrics.jsonl")
            storage.repair_jsonl_tail(path)  # a resumed run's records start on a line of their own
            try:
                self._file = open(path, "a")
            except OSError as e:
                raise storage.StorageError(storage.describe_os_error(e, path)) from None

    def write(self, record: dict) -> None:
        """``record`` needs a ``kind`` ("train" or "epoch") and a ``step``; numbers go to TensorBoard."""
        if not self._active:
            return
        try:
            self._file.write(json.dumps(record, sort_keys=True) + "\n")
            self._file.flush()
        except OSError as e:
            raise storage.StorageError(storage.describe_os_error(e, self._file.name)) from None
        if self._tb is not None:
            for k, v in record.items():
                if isinstance(v, (int, float)) and k not in ("step", "stage", "epoch"):
                    self._tb.add_scalar(f"{record['kind']}/{k}", v, record["global_step"])

    def close(self) -> None:
        if self._file:
            self._file.close()
        if self._tb is not None:
            self._tb.close()
