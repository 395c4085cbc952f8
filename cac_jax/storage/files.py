"""Atomic writes and readers that name the file they cannot read.

Every file a user or a later command reads (``config.json``, ``results.json``, a sweep's results, ``scores.npz``,
the plots, a report) is written by :func:`atomic_open`: into a temporary file beside the target, flushed to disk,
then renamed over it. A kill, a full disk or a read-only directory therefore leaves the previous file (or none),
never half a file that a later command would take as a result. Append-only logs (``metrics.jsonl``) cannot be
renamed into place: their readers drop a torn last line with a warning that names the file
(:func:`read_jsonl`), and their writer cuts such a line off before appending (:func:`repair_jsonl_tail`).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
import warnings


class CacJaxWarning(UserWarning):
    """Something was repaired or skipped and the user should know (a torn log line, a damaged checkpoint)."""


class StorageError(RuntimeError):
    """A file or directory could not be written (full disk, read-only place, a file where a directory should be)."""


class DamagedFile(ValueError):
    """A file exists but cannot be read as what it should be (cut short, not JSON, not an npz)."""

    def __init__(self, path: str, reason: str, advice: str = ""):
        self.path = path
        super().__init__(f"{path} is damaged or incomplete ({reason}){'; ' + advice if advice else ''}")


def warn(message: str) -> None:
    """A one-line warning for the user (the cac-jax command prints it as ``cac-jax: warning: ...``)."""
    warnings.warn(message, CacJaxWarning, stacklevel=3)


_HINTS = {
    errno.ENOSPC: "the disk is full: free some space and run the same command again",
    errno.EDQUOT: "the disk quota is exhausted: free some space and run the same command again",
    errno.EROFS: "the file system is read-only: choose a writable place",
    errno.EACCES: "permission denied: choose a place you can write to",
    errno.EPERM: "permission denied: choose a place you can write to",
    errno.ENOTDIR: "a file stands where a directory is needed: move it away or choose another place",
    errno.EEXIST: "a file stands where a directory is needed: move it away or choose another place",
}


def describe_os_error(error: OSError, path: str | None = None, verb: str = "write") -> str:
    """``"cannot <verb> PATH: <reason> (<what to do>)"`` for an error on ``path`` (default: the error's own file)."""
    where = path or error.filename or "a file"
    reason = error.strerror or str(error)
    hint = _HINTS.get(error.errno)
    return f"cannot {verb} {where}: {reason}" + (f" ({hint})" if hint else "")


def storage_error(error: OSError, path: str) -> StorageError:
    return StorageError(describe_os_error(error, path))


def make_dirs(path: str) -> None:
    """``os.makedirs(path, exist_ok=True)``, a failure being a :class:`StorageError` that names ``path``."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise storage_error(e, path) from None
    if not os.path.isdir(path):
        raise StorageError(f"cannot use {path} as a directory: a file stands there (move it away or choose another place)")


@contextlib.contextmanager
def atomic_open(path: str, mode: str = "w"):
    """Open a temporary file beside ``path`` for writing; on a clean exit it is flushed to disk and renamed over
    ``path`` (on an error it is removed and ``path`` is left as it was). ``mode`` is "w" or "wb". A failed write
    (full disk, read-only place) is a :class:`StorageError` naming ``path``."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes whole files (mode 'w' or 'wb'), got mode {mode!r}")
    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's 0600 would hide a result from the user's group
    except OSError as e:
        raise storage_error(e, path) from None
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        remove_if_exists(tmp)
        raise storage_error(e, path) from None
    except BaseException:
        remove_if_exists(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_text(path: str, text: str) -> str:
    with atomic_open(path) as f:
        f.write(text)
    return path


def write_json(path: str, obj) -> str:
    """``obj`` as indented JSON with sorted keys and a final newline, atomically."""
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path: str, *, advice: str = "") -> dict:
    """The JSON object in ``path``; :class:`DamagedFile` (naming it, with ``advice``) when it is cut short or not a
    JSON object. A missing file raises FileNotFoundError as usual."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except IsADirectoryError:
        raise DamagedFile(path, "a directory, not a file", advice) from None
    try:
        obj = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        reason = "empty" if not raw.strip() else f"not valid JSON: {str(e).splitlines()[0]}"
        raise DamagedFile(path, reason, advice) from None
    if not isinstance(obj, dict):
        raise DamagedFile(path, f"a JSON {type(obj).__name__}, not an object", advice)
    return obj


def read_jsonl(path: str) -> list[dict]:
    """The records of an append-only JSON-lines file. A line that is not a JSON object (a torn last line after a
    kill or a full disk) is skipped with a warning naming the file and line; a missing file has no records."""
    try:
        with open(path, "rb") as f:
            lines = f.read().split(b"\n")
    except FileNotFoundError:
        return []
    records, bad = [], []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            rec = None
        if isinstance(rec, dict):
            records.append(rec)
        else:
            bad.append(number)
    if bad:
        warn(f"{path}: skipped {len(bad)} unreadable line(s) (line {', '.join(map(str, bad[:5]))}"
             f"{', ...' if len(bad) > 5 else ''}; a write cut short by a kill or a full disk)")
    return records


def repair_jsonl_tail(path: str) -> None:
    """Cut a torn last line (no final newline: a write cut short) off an append-only log before appending to it,
    so that the next record starts on a line of its own; warns, naming the file."""
    try:
        with open(path, "rb+") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            if size == 0:
                return
            f.seek(size - 1)
            if f.read(1) == b"\n":
                return
            f.seek(0)
            keep = f.read().rfind(b"\n") + 1
            f.truncate(keep)
    except FileNotFoundError:
        return
    except OSError as e:
        raise storage_error(e, path) from None
    warn(f"{path}: dropped a torn last line ({size - keep} bytes; a write cut short by a kill or a full disk)")


def remove_if_exists(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)


def set_aside(path: str, label: str = "damaged") -> str:
    """Rename ``path`` to ``<path>.<label>`` (``.<label>.<n>`` if that exists), keeping what a user saved; returns
    the new name."""
    target, n = f"{path}.{label}", 1
    while os.path.exists(target):
        target, n = f"{path}.{label}.{n}", n + 1
    try:
        os.rename(path, target)
    except OSError as e:
        raise storage_error(e, target) from None
    return target


def keep_previous(*paths: str) -> None:
    """Copy the existing ones of ``paths`` (files written together, e.g. ``p.csv`` and ``p.json``) to
    ``<stem>.<n><suffix>``, with the first n free for all of them, before they are written again: nothing a user
    saved is overwritten."""
    present = [p for p in paths if os.path.exists(p)]
    if not present:
        return

    def numbered(path, n):
        stem, suffix = os.path.splitext(path)
        return f"{stem}.{n}{suffix}"

    n = 1
    while any(os.path.exists(numbered(p, n)) for p in paths):
        n += 1
    for path in present:
        try:
            shutil.copy2(path, numbered(path, n))
        except OSError as e:
            raise storage_error(e, numbered(path, n)) from None
