"""Ctrl-C and SIGTERM that are never lost.

Python raises KeyboardInterrupt wherever the main thread happens to be when SIGINT arrives; raised inside a
finaliser or a callback from C++ (an array's ``__del__``, a library's cleanup), it is printed as "ignored", or
caught by the library, and the run goes on. :func:`install` (the ``cac-jax`` command calls it) handles SIGINT
(KeyboardInterrupt) and SIGTERM (:class:`Terminated`, as a scheduler stops a job: through every ``finally``, so
that saves in flight finish, and in a job of several processes so that the others hear of it at once) and also
records the signal; the loops that take time (train steps, evaluation batches) call :func:`check`, which raises
it again: a stop signal ends the run at the next step at the latest. Without :func:`install` nothing changes and
:func:`check` never raises.
"""

from __future__ import annotations

import signal

_received: list[int] = []


class Terminated(BaseException):
    """SIGTERM arrived (a scheduler's stop, a preemption)."""


def _raise(signum: int):
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise Terminated("SIGTERM")


def _on_signal(signum, frame):
    _received.append(signum)
    _raise(signum)


def install() -> None:
    """Handle SIGINT and SIGTERM as above (from the main thread, before the work starts)."""
    _received.clear()
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)


def received() -> bool:
    """Whether a stop signal arrived since :func:`install`."""
    return bool(_received)


def check() -> None:
    """Raise the stop signal that arrived (and was perhaps swallowed where it was first raised), if any."""
    if _received:
        _raise(_received[0])
