"""One writer per work directory, and one preparer per dataset.

:func:`workdir_lock` takes an exclusive ``flock`` on ``<workdir>/.cac-jax.lock`` for the whole of a ``train``,
``eval`` or ``sweep`` command and writes who holds it (command, process, host, since when) into the file. A
second command on the same directory is refused at once with a message naming the holder: two writers would
delete each other's checkpoint saves. The kernel releases the lock when its process ends, however it ends
(kill -9 included), so a lock left behind is never stale: the file then only says who held it last. On a
network file system the lock is the server's (NFSv4 locks, which Linux uses for ``flock`` there), so
commands on two hosts sharing the directory exclude each other too. In a job of several processes, process 0
takes it for the job. A file system without locks gets a warning, and no lock.

:func:`file_lock` waits instead: two first runs that need the same dataset prepared take turns, and the second
finds it prepared.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import os
import socket
import sys

from cac_jax.storage.files import make_dirs, storage_error, warn

LOCK_NAME = ".cac-jax.lock"
_held: dict[str, int] = {}  # lock files this process holds -> nesting depth (a sweep's trial inside the sweep)
_UNSUPPORTED = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)


class WorkdirBusy(RuntimeError):
    """Another command holds the work directory."""


def _holder_text(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        info = json.loads(os.read(fd, 65536).decode("utf-8"))
        return (f"`{info['command']}`, process {info['pid']} on host {info['host']} since {info['since']}")
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


def _describe_self(command: str) -> bytes:
    return json.dumps({"command": command, "pid": os.getpid(), "host": socket.gethostname(),
                       "since": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}).encode()


def command_line() -> str:
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "python"
    return " ".join(["cac-jax" if name in ("cac-jax", "__main__.py") else name, *sys.argv[1:]])


@contextlib.contextmanager
def workdir_lock(workdir: str, command: str | None = None):
    """Hold ``workdir`` (created if needed) for the block; :class:`WorkdirBusy` naming the holder when another
    process holds it. Re-entrant within a process."""
    make_dirs(workdir)
    path = os.path.realpath(os.path.join(workdir, LOCK_NAME))
    if path in _held:
        _held[path] += 1
        try:
            yield
        finally:
            _held[path] -= 1
        return
    fd = _open_lock_file(path)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            locked = True
        except BlockingIOError:
            raise WorkdirBusy(f"{workdir} is in use by another cac-jax command ({_holder_text(fd)}); wait for it to "
                              f"end, or use another work directory") from None
        except OSError as e:
            if e.errno not in _UNSUPPORTED:
                raise
            warn(f"the file system of {workdir} does not support locks ({e.strerror}): a second command on this "
                 f"directory would not be refused")
            locked = False
        if locked:
            os.ftruncate(fd, 0)
            os.pwrite(fd, _describe_self(command or command_line()), 0)
        _held[path] = 1
        try:
            yield
        finally:
            del _held[path]
    finally:
        os.close(fd)  # releases the flock


def _open_lock_file(path: str) -> int:
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise storage_error(e, path) from None


@contextlib.contextmanager
def file_lock(path: str, what: str, *, announce=print):
    """Hold an exclusive lock on the file ``path`` for the block, waiting for another holder (saying so once
    through ``announce``); a :class:`~cac_jax.storage.StorageError` naming ``path`` where it cannot be created."""
    make_dirs(os.path.dirname(path))
    fd = _open_lock_file(path)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            announce(f"waiting for another process ({_holder_text(fd)}) that is preparing {what}")
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as e:
            if e.errno not in _UNSUPPORTED:
                raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, _describe_self(command_line()), 0)
        yield
    finally:
        os.close(fd)
