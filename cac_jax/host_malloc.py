"""Opt-in glibc malloc settings under which a CPU train step of the paper's networks stops page-faulting.

XLA's CPU convolutions (Eigen) allocate their packing buffers with ``malloc`` on every call: for the
CIFAR network at batch 128, 34-402 MB blocks, about 1.5 GB per step. glibc serves blocks that large with
a fresh ``mmap`` and gives them back with ``munmap`` on ``free``, so every step the kernel zero-fills and
maps ~100,000 new pages: on this repository's 2-core CPU, 0.17 s of system time per 0.7 s step.
``CAC_JAX_MALLOC=heap`` in the environment makes ``import cac_jax`` call ``mallopt`` with

* ``M_ARENA_MAX = 1``: every thread allocates from the main arena, which grows with ``brk`` and so can
  hold blocks of any size (a thread arena's heap holds at most 64 MB; larger requests are mmapped);
* ``M_MMAP_MAX = 0``: no block is served by ``mmap``;
* ``M_TRIM_THRESHOLD = 2 GiB - 1``: freed memory stays in the heap for the next step instead of going back
  to the kernel.

It is not the default because one arena is also one lock, and what it costs depends on the work
(measured on the 2-core CPU, glibc defaults -> ``heap``):

* CIFAR train step, batch 128 (interleaved processes, median): 752 -> 683 ms, no page faults after
  the first steps; the gain;
* compiling that step: 5.0-5.6 -> 6.9-7.2 s. XLA compiles on two threads of its own, which now queue for
  the lock (1,500 -> 80,000 context switches); a run needs ~25 steps of that network to pay it back;
* the default ``cac-jax train`` (digits, small network, many short steps): 25.2-27.1 -> 29.9-30.8 s,
  and a dispatch-bound call (the loss kernel at N = 10) 0.07-0.08 -> 0.10-0.11 ms: the Python thread and
  XLA's execution thread queue for the lock;
* a process keeps its peak heap until it exits.

So: worth it for long CPU runs of the 32×32 networks (``--experiment mnist``/``cifar10``/... on a CPU),
not otherwise, and not measured with several host devices (where more threads share the lock) or on an
accelerator. Threads that allocated before the call keep their own arenas, so the setting is made at
``import cac_jax``, before JAX starts its backends. glibc only (Linux): elsewhere ``heap`` is refused
with a message. Every run records the outcome (``runtime.malloc`` in ``results.json``).
"""

from __future__ import annotations

import ctypes
import os

ENV = "CAC_JAX_MALLOC"
CHOICES = ("system", "heap")
# mallopt parameter numbers from glibc's <malloc.h>.
M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8
SETTINGS = {"M_ARENA_MAX": (M_ARENA_MAX, 1), "M_MMAP_MAX": (M_MMAP_MAX, 0),
            "M_TRIM_THRESHOLD": (M_TRIM_THRESHOLD, 2**31 - 1)}


def _glibc():
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018  (raises AttributeError outside glibc)
        libc.mallopt  # noqa: B018
    except (OSError, AttributeError):
        return None
    return libc


_in_effect = "system: cac_jax.host_malloc.apply() not called"


def in_effect() -> str:
    """What :func:`apply` did in this process, for the runtime record of every run."""
    return _in_effect


def apply(environ=os.environ) -> str:
    """Make :data:`SETTINGS` with ``mallopt`` if ``environ`` asks for them (``CAC_JAX_MALLOC=heap``); returns
    (and remembers) the outcome: "heap: M_ARENA_MAX=1 ..." or "system: <why>"."""
    global _in_effect
    _in_effect = _apply(environ)
    return _in_effect


def _apply(environ) -> str:
    choice = environ.get(ENV, "").strip().lower() or "system"
    if choice not in CHOICES:
        raise ValueError(f"{ENV}={environ[ENV]!r}: expected 'heap' (keep large blocks in the heap, for long CPU "
                         "runs of the 32x32 networks) or 'system' (glibc's defaults, the default)")
    if choice == "system":
        return "system: glibc's defaults"
    libc = _glibc()
    if libc is None:
        raise ValueError(f"{ENV}=heap sets glibc's malloc options, and this process does not run on glibc")
    failed = [name for name, (param, value) in SETTINGS.items() if libc.mallopt(param, value) != 1]
    if failed:
        raise RuntimeError(f"{ENV}=heap: glibc's mallopt refused {', '.join(failed)}")
    return "heap: " + " ".join(f"{name}={value}" for name, (_, value) in SETTINGS.items())
