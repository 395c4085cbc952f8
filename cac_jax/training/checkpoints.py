"""Orbax checkpoints of one training stage: ``latest`` (for resuming) and ``best`` (for stage 2 and eval).

Layout: ``<workdir>/checkpoints/stage<s>/latest/<step>/{state,best,meta}`` (the last two steps kept) and
``<workdir>/checkpoints/stage<s>/best/<step>/{state,meta}``. ``state`` is the whole train state (params,
BatchNorm statistics, anchors, optimiser state, step); ``meta`` (JSON) holds where the run stands (epochs done,
best-so-far value and epoch, finished flag), a *signature* of the network (model, method, number of classes,
input size and channels) that is compared with the config before anything is restored, so an unfitting
checkpoint is a clear ``ValueError`` rather than a shape error from deep inside Orbax, the fingerprint of the
data it was trained on (a resume or an evaluation on other data is refused) and the training config.

Integrity: ``meta`` also holds a digest of every saved tree (:func:`tree_digest`), checked after each restore. A
step that cannot be read, or whose arrays no longer match their digest (a flipped bit, a truncated file), is
*damaged*: a restore falls back to the previous ``latest`` step (a resumed run then replays the steps between,
and ends as an uninterrupted run would), and ``best`` to the copy of the stage's best state that the finished
``latest`` carries, saying so; with nothing usable left it names the directory (:class:`CheckpointDamaged`).

While a stage trains, its best state so far travels inside ``latest`` (the ``best`` item), so the two are
written in one atomic save and a resumed run finds the best state that its ``latest`` meta describes;
the stage's own ``best`` checkpoint is written when the stage ends, before ``latest`` says it is finished.
(A ``latest`` written before the ``best`` item existed has none: its best state is then read from ``best``,
which those versions wrote at every improvement; checkpoints of those versions carry no digests either.)

Saves are asynchronous: ``save`` returns once the state is copied off the device and the files are
written in the background, the next save (of either kind; or :meth:`StageCheckpoints.wait`/``close``)
waiting for them. A save interrupted by a kill stays a temporary directory, which the next run removes;
the checkpoint before it is untouched. A save that fails (a full disk) is a :class:`~cac_jax.storage.StorageError`
naming the directory. In a job of several processes every process calls every method (Orbax saves
collectively: one copy of the replicated state, the files written by process 0).
"""

from __future__ import annotations

import errno
import functools
import hashlib
import os
import re
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import serialization

from cac_jax import storage
from cac_jax.runtime import interrupts

KINDS = ("latest", "best")
KEEP = {"latest": 2, "best": 1}  # the previous latest is the fallback of a damaged one


class CheckpointDamaged(ValueError):
    """No usable checkpoint is left where one should be."""


def signature(cfg, num_classes: int, image_size: int, channels: int) -> dict[str, Any]:
    """What a checkpoint's shapes depend on; must match between the checkpoint and the config."""
    return {"model": cfg.model, "method": cfg.method, "num_classes": int(num_classes),
            "image_size": int(image_size), "channels": int(channels)}


def check_signature(found: dict, expected: dict, where: str) -> None:
    diffs = [f"{k}: checkpoint {found.get(k)!r} vs config {v!r}" for k, v in expected.items() if found.get(k) != v]
    if diffs:
        raise ValueError(f"the checkpoint in {where} does not fit the config ({'; '.join(diffs)}); "
                         f"use another --workdir or the config it was trained with")


def check_data(meta: dict, expected: dict | None, where: str) -> None:
    """Refuse data other than the data the checkpoint was trained on: ``expected`` holds the fingerprints of the
    data given now that must equal those ``meta`` records (a checkpoint of an imported network, or of an earlier
    version, records none)."""
    for key, value in (expected or {}).items():
        found = meta.get(key)
        if found and value and found != value:
            raise ValueError(f"the network in {where} was trained on other data ({key.replace('_', ' ')} {found[:12]}) "
                             f"than the data given now ({value[:12]}): give the data it was trained on (a copy of "
                             f"the same data in another file is fine)")


def tree_digest(tree) -> str:
    """A digest of every array of a pytree (paths, dtypes, shapes and bytes), of host or device arrays alike."""
    h = hashlib.blake2b(digest_size=16)
    for path, leaf in jax.tree_util.tree_flatten_with_path(jax.device_get(tree))[0]:
        a = np.ascontiguousarray(leaf)
        h.update(f"{jax.tree_util.keystr(path)}|{a.dtype.str}|{a.shape}|".encode())
        if a.size:
            h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def locate(path: str) -> tuple[str, int | None, str]:
    """(run directory, stage or None for the run's last stage, kind) named by a checkpoint path at any level of
    the layout ``<run>/checkpoints/stage<s>/{best,latest}``: the run itself, its ``checkpoints``, one
    ``stage<s>`` (its best checkpoint) or one ``best``/``latest``."""
    p = os.path.abspath(path)
    if not os.path.isdir(p):
        raise FileNotFoundError(f"no checkpoint directory at {path}")
    kind, stage, named = "best", None, False
    if os.path.basename(p) in KINDS:
        kind, p, named = os.path.basename(p), os.path.dirname(p), True
    m = re.fullmatch(r"stage(\d+)", os.path.basename(p))
    if m:
        stage, p, named = int(m.group(1)), os.path.dirname(p), True
    if os.path.basename(p) == "checkpoints":
        p = os.path.dirname(p)
    elif named:
        raise ValueError(f"{path} is not in the layout <run>/checkpoints/stage<s>/{{best,latest}}")
    if not os.path.isdir(os.path.join(p, "checkpoints")):
        raise FileNotFoundError(f"no checkpoints in {p} (expected {os.path.join(p, 'checkpoints')}): "
                                f"is this a trained cac-jax run?")
    if stage is not None and stage not in (1, 2):
        raise ValueError(f"stage {stage} does not exist (stages are 1 and 2)")
    return p, stage, kind


def _first_line(error: BaseException) -> str:
    """``Type: the first line of the message``, without TensorStore's dump of its spec."""
    text = str(error).strip().split(". See full TensorStore details")[0]
    return f"{type(error).__name__}: {text.splitlines()[0][:160]}" if text else type(error).__name__


def _uninterrupted(method):
    """Run ``method`` with Ctrl-C and SIGTERM held until it returns (:func:`interrupts.deferred`): Orbax's
    managers start threads and futures that an exception raised half-way would leave broken."""

    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        with interrupts.deferred():
            return method(*args, **kwargs)

    return wrapper


class StageCheckpoints:
    """The ``latest`` and ``best`` checkpoints of one stage of one run."""

    def __init__(self, workdir: str, stage: int):
        self.root = os.path.join(os.path.abspath(workdir), "checkpoints", f"stage{stage}")
        self._managers: dict[str, ocp.CheckpointManager] = {}

    @_uninterrupted
    def _manager(self, kind: str) -> ocp.CheckpointManager:
        if kind not in KINDS:
            raise ValueError(f"checkpoint kind {kind!r} is not one of {KINDS}")
        if kind not in self._managers:
            # A save that a killed process left unfinished stays a temporary directory: removed here.
            options = ocp.CheckpointManagerOptions(max_to_keep=KEEP[kind], enable_async_checkpointing=True,
                                                   create=True, cleanup_tmp_directories=True)
            items = ("state", "best", "meta") if kind == "latest" else ("state", "meta")
            try:
                self._managers[kind] = ocp.CheckpointManager(os.path.join(self.root, kind), options=options,
                                                             item_names=items)
            except OSError as e:
                raise storage.StorageError(storage.describe_os_error(e, os.path.join(self.root, kind))) from None
        return self._managers[kind]

    def _steps(self, kind: str) -> list[int]:
        """The saved steps of ``kind``, newest first."""
        if not os.path.isdir(os.path.join(self.root, kind)):
            return []
        return sorted(self._manager(kind).all_steps(), reverse=True)

    def exists(self, kind: str) -> bool:
        return bool(self._steps(kind))

    @_uninterrupted
    def save(self, kind: str, step: int, state, meta: dict, *, best=None) -> None:
        """Start saving ``state`` (train step ``step``) and ``meta`` with the digests of what is saved; ``latest``
        also takes the stage's best state so far, ``best`` (``state`` itself while there is none). Returns once the
        arrays are off the device: the caller may donate them to the next step."""
        mngr = self._manager(kind)
        # One save in flight per process: in a job of several processes Orbax finishes every save behind
        # barriers of one fixed name, so a ``best`` save finishing while ``latest`` does fails the job.
        self.wait()
        trees = {"state": serialization.to_state_dict(state)}
        if kind == "latest":
            trees["best"] = serialization.to_state_dict(state if best is None else best)
        meta = {**meta, "digests": {name: tree_digest(tree) for name, tree in trees.items()}}
        where = os.path.join(self.root, kind)
        try:
            if step in mngr.all_steps():
                # A resumed run replays the steps after its latest checkpoint, and may save one of them again.
                mngr.delete(step)
            items = {name: ocp.args.StandardSave(tree) for name, tree in trees.items()}
            mngr.save(step, args=ocp.args.Composite(**items, meta=ocp.args.JsonSave(meta)), force=True)
        except Exception as e:  # noqa: BLE001  (Orbax wraps the OS error of a full disk in its own)
            raise _save_error(e, where) from None

    @_uninterrupted
    def wait(self) -> None:
        """Block until every save started so far is on disk."""
        for kind, mngr in self._managers.items():
            try:
                mngr.wait_until_finished()
            except Exception as e:  # noqa: BLE001
                raise _save_error(e, os.path.join(self.root, kind)) from None

    def _read_meta(self, kind: str, step: int) -> dict:
        mngr = self._manager(kind)
        meta = mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
        if not isinstance(meta, dict) or "step" not in meta:
            raise ValueError("its meta is not a checkpoint's")
        return meta

    @_uninterrupted
    def meta(self, kind: str) -> dict | None:
        """The meta of the newest step of ``kind`` whose meta can be read (None without any)."""
        for step in self._steps(kind):
            try:
                return self._read_meta(kind, step)
            except Exception:  # noqa: BLE001  (a damaged step: restore() says so, and falls back alike)
                continue
        return None

    def _restore_items(self, kind: str, step: int, meta: dict, items: tuple[str, ...], target) -> dict:
        """{item: state dict} of ``step``, each checked against its digest; raises on any damage."""
        mngr = self._manager(kind)
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, serialization.to_state_dict(target))
        args = ocp.args.Composite(**{item: ocp.args.StandardRestore(abstract) for item in items})
        restored = mngr.restore(step, args=args)
        digests = meta.get("digests", {})
        for item in items:
            if item in digests and tree_digest(restored[item]) != digests[item]:
                raise ValueError(f"its {item} arrays do not match their digest (bit rot or a file overwritten)")
        return {item: restored[item] for item in items}

    def _usable(self, kind: str, items: tuple[str, ...], target, expected_signature: dict,
                data: dict | None, *, only_finished: bool = False):
        """Yield (step, meta, {item: state dict}) of the steps of ``kind`` whose items restore intact, newest first,
        noting the damaged ones in ``self.damaged``. A step that does not fit the config (signature, data) is an
        error, not damage."""
        where = os.path.join(self.root, kind)
        for step in self._steps(kind):
            try:
                meta = self._read_meta(kind, step)
            except Exception as e:  # noqa: BLE001
                self.damaged.append(f"{where}/{step} ({_first_line(e)})")
                continue
            if only_finished and not meta.get("finished"):
                continue
            check_signature(meta.get("signature", {}), expected_signature, where)
            check_data(meta, data, where)
            wanted = tuple(i for i in items if i != "best" or os.path.isdir(os.path.join(where, str(step), "best")))
            if not wanted:
                continue
            try:
                trees = self._restore_items(kind, step, meta, wanted, target)
            except Exception as e:  # noqa: BLE001  (a truncated or unreadable file, arrays off their digest)
                self.damaged.append(f"{where}/{step} ({_first_line(e)})")
                continue
            yield step, meta, trees

    @_uninterrupted
    def _restore(self, kind: str, items: tuple[str, ...], target, expected_signature: dict,
                 data: dict | None) -> tuple[dict, dict]:
        """({item: state dict}, meta) of the newest intact step of ``kind``, with the fallbacks of the module
        docstring; a warning names every damaged step passed over."""
        self.damaged: list[str] = []
        found = next(self._usable(kind, items, target, expected_signature, data), None)
        if found is None and kind == "best":
            # The finished ``latest`` carries the stage's best state as its ``best`` item.
            found = next(((s, m, {"state": t["best"]}) for s, m, t in self._usable(
                "latest", ("best",), target, expected_signature, data, only_finished=True)
                if "best" in t), None)
            via = "the copy of the stage's best state in its finished latest checkpoint"
        else:
            via = "the previous one"
        if found is None:
            where = os.path.join(self.root, kind)
            if not self.damaged:
                raise FileNotFoundError(f"no checkpoint in {where}")
            raise CheckpointDamaged(f"no usable checkpoint in {where}: {'; '.join(self.damaged)}. If it is damaged, "
                                    f"delete {self.root} to train this stage again from its start")
        if self.damaged:
            storage.warn(f"damaged checkpoint {'; '.join(self.damaged)}: using {via} (step {found[0]})")
        return found[2], found[1]

    def restore(self, kind: str, target, expected_signature: dict, *, item: str = "state",
                data: dict | None = None) -> tuple[Any, dict]:
        """(state shaped and sharded like ``target``, meta); ValueError if it does not fit: the network, or the data
        (``data``: {meta key: fingerprint} that the checkpoint's meta must match, :func:`check_data`).
        ``item="best"`` reads the best state that ``latest`` carries."""
        if item == "best":
            _, meta, best = self.restore_latest(target, expected_signature, data=data)
            return best, meta
        trees, meta = self._restore(kind, ("state",), target, expected_signature, data)
        return serialization.from_state_dict(target, trees["state"]), meta

    def restore_latest(self, target, expected_signature: dict, *, data: dict | None = None):
        """(state, meta, the best state so far or None) of one intact ``latest`` step, to resume from."""
        trees, meta = self._restore("latest", ("state", "best"), target, expected_signature, data)
        state = serialization.from_state_dict(target, trees["state"])
        if meta["best_value"] is None:
            return state, meta, None
        if "best" in trees:
            return state, meta, serialization.from_state_dict(target, trees["best"])
        # Written before the ``best`` item existed: those versions wrote ``best`` at every improvement.
        return state, meta, self.restore("best", target, expected_signature, data=data)[0]

    @_uninterrupted
    def close(self) -> None:
        for kind, mngr in self._managers.items():
            try:
                mngr.close()
            except Exception as e:  # noqa: BLE001
                raise _save_error(e, os.path.join(self.root, kind)) from None


def _save_error(error: BaseException, where: str) -> Exception:
    """A one-line StorageError for a save that failed on the file system (a full disk, a read-only place)."""
    cause, seen = error, set()
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, OSError) and cause.errno is not None:
            return storage.StorageError(storage.describe_os_error(cause, where))
        cause = cause.__cause__ or cause.__context__
    text = str(error)
    for needle, errno_name in (("No space left", "ENOSPC"), ("Read-only file system", "EROFS"),
                               ("Permission denied", "EACCES"), ("Disk quota", "EDQUOT")):
        if needle in text:
            return storage.StorageError(storage.describe_os_error(
                OSError(getattr(errno, errno_name), os.strerror(getattr(errno, errno_name))), where))
    return storage.StorageError(f"cannot write checkpoint {where}: {_first_line(error)}")
