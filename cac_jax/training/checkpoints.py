"""Orbax checkpoints of one training stage: ``latest`` (for resuming) and ``best`` (for stage 2 and eval).

Layout: ``<workdir>/checkpoints/stage<s>/latest/<step>/{state,best,meta}`` and
``<workdir>/checkpoints/stage<s>/best/<step>/{state,meta}``, one step kept in each.
``state`` is the whole train state (params, BatchNorm statistics, anchors, optimiser state, step);
``meta`` (JSON) holds where the run stands (epochs done, best-so-far value and epoch, finished flag)
and a *signature* of the network (model, method, number of classes, input size and channels) that is
compared with the config before anything is restored, so an unfitting checkpoint is a clear
``ValueError`` rather than a shape error from deep inside Orbax.

While a stage trains, its best state so far travels inside ``latest`` (the ``best`` item), so the two are
written in one atomic save and a resumed run finds the best state that its ``latest`` meta describes;
the stage's own ``best`` checkpoint is written when the stage ends, before ``latest`` says it is finished.
(A ``latest`` written before the ``best`` item existed has none: its best state is then read from ``best``,
which those versions wrote at every improvement.)

Saves are asynchronous: ``save`` returns once the state is copied off the device and the files are
written in the background, the next save (of either kind; or :meth:`StageCheckpoints.wait`/``close``)
waiting for them. A save interrupted by a kill stays a temporary directory, which the next run removes;
the checkpoint before it is untouched. In a job of several processes every process calls every method
(Orbax saves collectively: one copy of the replicated state, the files written by process 0).
"""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp
from flax import serialization

KINDS = ("latest", "best")


def signature(cfg, num_classes: int, image_size: int, channels: int) -> dict[str, Any]:
    """What a checkpoint's shapes depend on; must match between the checkpoint and the config."""
    return {"model": cfg.model, "method": cfg.method, "num_classes": int(num_classes),
            "image_size": int(image_size), "channels": int(channels)}


def check_signature(found: dict, expected: dict, where: str) -> None:
    diffs = [f"{k}: checkpoint {found.get(k)!r} vs config {v!r}" for k, v in expected.items() if found.get(k) != v]
    if diffs:
        raise ValueError(f"the checkpoint in {where} does not fit the config ({'; '.join(diffs)}); "
                         f"use another --workdir or the config it was trained with")


class StageCheckpoints:
    """The ``latest`` and ``best`` checkpoints of one stage of one run."""

    def __init__(self, workdir: str, stage: int):
        self.root = os.path.join(os.path.abspath(workdir), "checkpoints", f"stage{stage}")
        self._managers: dict[str, ocp.CheckpointManager] = {}

    def _manager(self, kind: str) -> ocp.CheckpointManager:
        if kind not in KINDS:
            raise ValueError(f"checkpoint kind {kind!r} is not one of {KINDS}")
        if kind not in self._managers:
            # A save that a killed process left unfinished stays a temporary directory: removed here.
            options = ocp.CheckpointManagerOptions(max_to_keep=1, enable_async_checkpointing=True, create=True,
                                                   cleanup_tmp_directories=True)
            items = ("state", "best", "meta") if kind == "latest" else ("state", "meta")
            self._managers[kind] = ocp.CheckpointManager(os.path.join(self.root, kind), options=options,
                                                         item_names=items)
        return self._managers[kind]

    def exists(self, kind: str) -> bool:
        return os.path.isdir(os.path.join(self.root, kind)) and self._manager(kind).latest_step() is not None

    def save(self, kind: str, step: int, state, meta: dict, *, best=None) -> None:
        """Start saving ``state`` (train step ``step``) and ``meta``; ``latest`` also takes the stage's best
        state so far, ``best`` (``state`` itself while there is none). Returns once the arrays are off the
        device: the caller may donate them to the next step."""
        mngr = self._manager(kind)
        # One save in flight per process: in a job of several processes Orbax finishes every save behind
        # barriers of one fixed name, so a ``best`` save finishing while ``latest`` does fails the job.
        self.wait()
        if step in mngr.all_steps():
            # A resumed run replays the steps after its latest checkpoint, and may save one of them again.
            mngr.delete(step)
        items = {"state": ocp.args.StandardSave(serialization.to_state_dict(state)), "meta": ocp.args.JsonSave(meta)}
        if kind == "latest":
            items["best"] = ocp.args.StandardSave(serialization.to_state_dict(state if best is None else best))
        mngr.save(step, args=ocp.args.Composite(**items), force=True)

    def wait(self) -> None:
        """Block until every save started so far is on disk."""
        for mngr in self._managers.values():
            mngr.wait_until_finished()

    def meta(self, kind: str) -> dict | None:
        if not self.exists(kind):
            return None
        mngr = self._manager(kind)
        return mngr.restore(mngr.latest_step(), args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]

    def restore(self, kind: str, target, expected_signature: dict, *, item: str = "state") -> tuple[Any, dict]:
        """(state shaped and sharded like ``target``, meta); ValueError if it does not fit. ``item="best"``
        reads the best state that ``latest`` carries."""
        meta = self.meta(kind)
        where = os.path.join(self.root, kind)
        if meta is None:
            raise FileNotFoundError(f"no checkpoint in {where}")
        check_signature(meta.get("signature", {}), expected_signature, where)
        mngr = self._manager(kind)
        step = mngr.latest_step()
        if item == "best" and not os.path.isdir(os.path.join(where, str(step), "best")):
            return self.restore("best", target, expected_signature)[0], meta  # written before the ``best`` item
        target_dict = serialization.to_state_dict(target)
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target_dict)
        try:
            restored = mngr.restore(step, args=ocp.args.Composite(**{item: ocp.args.StandardRestore(abstract)}))[item]
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"the checkpoint in {where} does not fit the config: {e}") from None
        return serialization.from_state_dict(target, restored), meta

    def close(self) -> None:
        for mngr in self._managers.values():
            mngr.close()
