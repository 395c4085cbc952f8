"""Ctrl-C and SIGTERM that are never lost.

Python raises KeyboardInterrupt wherever the main thread happens to be when SIGINT arrives; raised inside a
finaliser or a callback from C++ (an array's ``__del__``, a library's cleanup), it is printed as "ignored", or
caught by the library, and the run goes on. :func:`install` (the ``cac-jax`` command calls it) handles SIGINT
(KeyboardInterrupt) and SIGTERM (:class:`Terminated`, as a scheduler stops a job: through every ``finally``, so
that saves in flight finish, and in a job of several processes so that the others hear of it at once) and also
records the signal; the loops that take time (train steps, evaluation batches) call :func:`check`, which raises
it again: a stop signal ends the run at the next step at the latest. Inside :func:`deferred` (a checkpoint library
starting its save threads, a restore) the first signal waits for the block to end. Without :func:`install`
nothing changes and :func:`check` never raises.
"""

from __future__ import annotations

import contextlib
import signal

_received: list[int] = []
_held: list[int] = []  # a signal that arrived inside deferred(), raised when the block ends
_depth = [0]


class Terminated(BaseException):
    """SIGTERM arrived (a scheduler's stop, a preemption)."""


def _raise(signum: int):
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise Terminated("SIGTERM")


def _on_signal(signum, frame):
    _received.append(signum)
    if _depth[0] and not _held:
        _held.append(signum)
        return
    _raise(signum)  # outside deferred(), or a second signal: the user insists


def install() -> None:
    """Handle SIGINT and SIGTERM as above (from the main thread, before the work starts)."""
    _received.clear()
    _held.clear()
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)


def received() -> bool:
    """Whether a stop signal arrived since :func:`install`."""
    return bool(_received)


def check() -> None:
    """Raise the stop signal that arrived (and was perhaps swallowed where it was first raised), if any."""
    if _received:
        _raise(_received[0])


@contextlib.contextmanager
def deferred():
    """Hold the first stop signal until the block ends, then raise it. An exception raised at an arbitrary point of
    a library's bookkeeping leaves it half done: seen in Orbax, a save whose thread was never started ("cannot
    join thread before it is started") and a process that hung at exit. A second signal does not wait."""
    _depth[0] += 1
    try:
        yield
    finally:
        _depth[0] -= 1
        held = _held[:] if not _depth[0] else []
        if not _depth[0]:
            _held.clear()
    if held:
        _raise(held[0])
