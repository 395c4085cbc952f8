"""Where a CPU train step's convolutions get their scratch memory: the heap, not fresh pages each step.

XLA's CPU convolutions (Eigen) allocate their packing buffers with ``malloc`` on every call: for the
CIFAR network at batch 128, 34-402 MB blocks, about 1.5 GB per step. glibc serves blocks that large with
a fresh ``mmap`` and gives them back with ``munmap`` on ``free``, so every step the kernel zero-fills and
maps ~100,000 new pages: on this repository's 2-core CPU, 0.17-0.19 s of system time per 0.73 s step.
:func:`apply` (called by :func:`cac_jax.runtime.configure`, never on import) therefore

* calls ``mallopt(M_MMAP_MAX, 0)``: the main arena serves every block from its ``brk`` heap, which can
  hold blocks of any size, and ``mallopt(M_TRIM_THRESHOLD, 2 GiB - 1)``: freed memory stays in that heap
  for the next step instead of going back to the kernel;
* sets ``jax_cpu_enable_async_dispatch`` to False, so that JAX runs a single-device CPU computation on
  the thread that calls it (the Python thread) instead of a thread of its own. That is what brings the
  buffers to the main arena: glibc gives every other thread an arena of its own, whose heaps hold at
  most 64 MB, so those threads would still mmap large blocks whatever ``M_MMAP_MAX`` says.

Measured (2-core Xeon, jax 0.10.2): CIFAR step 735 -> 640 ms, ~480 instead of ~100,000 page faults per
step, 0.005 instead of 0.17 s of system time; compiling that step and the default ``cac-jax train``
(digits, many short steps: 27.1 s with ``CAC_JAX_MALLOC=system``, 27.6 s without, same results) are
unchanged. Computations
over several devices keep JAX's asynchronous dispatch (the flag applies to single-device ones only).
An earlier form of this setting, ``M_ARENA_MAX = 1`` (every thread in the main arena, asynchronous
dispatch kept), gained less (752 -> 683 ms) and slowed compilation by 30% and the digits job by 15%:
one arena is one lock for all of XLA's threads.

The price: a process keeps its peak heap until it exits (a training or evaluation run does anyway),
and JAX calls on the CPU return when their result is ready instead of at once. Limits, all deliberate:

* Only where JAX computes on the CPU, the case it was measured on: not when ``JAX_PLATFORMS`` names an
  accelerator first, or, without ``JAX_PLATFORMS``, a PJRT plugin or libtpu is installed.
* glibc only (Linux); elsewhere nothing is done.
* JAX reads the dispatch setting when it starts its CPU backend: :func:`apply` after a first JAX
  computation leaves glibc and the dispatch as they are, with a warning, and the run record says so.
* ``CAC_JAX_MALLOC=system`` in the environment leaves glibc and JAX's dispatch as they are.

Every run records the outcome (``runtime.malloc`` in ``results.json``).
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import warnings

from cac_jax.runtime import backends

ENV = "CAC_JAX_MALLOC"
# mallopt parameter numbers from glibc's <malloc.h>.
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
SETTINGS = {"M_MMAP_MAX": (M_MMAP_MAX, 0), "M_TRIM_THRESHOLD": (M_TRIM_THRESHOLD, 2**31 - 1)}
DISPATCH = ("jax_cpu_enable_async_dispatch", False)


def _not_on_the_cpu(environ) -> str | None:
    """Why JAX will not compute on the CPU in this process, judged before it starts; None if it will."""
    platforms = environ.get("JAX_PLATFORMS", "").strip()
    if platforms:
        return None if platforms.split(",")[0].strip() == "cpu" else f"JAX_PLATFORMS={platforms} (measured on the CPU)"
    plugins = [name for name in ("jax_plugins", "libtpu") if importlib.util.find_spec(name) is not None]
    return f"accelerator plugin {plugins[0]} installed (measured on the CPU)" if plugins else None


def _glibc():
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018  (raises AttributeError outside glibc)
        libc.mallopt  # noqa: B018
    except (OSError, AttributeError):
        return None
    return libc


_in_effect = "system: cac_jax.runtime.host_malloc.apply() not called"


def in_effect() -> str:
    """What :func:`apply` did in this process, for the runtime record of every run."""
    return _in_effect


def apply(environ=os.environ) -> str:
    """Make :data:`SETTINGS` and :data:`DISPATCH` where JAX will compute on the CPU and ``environ`` does not opt
    out; returns (and remembers) the outcome: "heap: ...", "partial: ..." or "system: <why>"."""
    global _in_effect
    if _in_effect.startswith("heap"):  # applied already
        return _in_effect
    _in_effect = _apply(environ)
    if _in_effect.startswith("heap"):
        dispatch_on_calling_thread()
    return _in_effect


def dispatch_on_calling_thread() -> None:
    """The second half of :func:`apply`: single-device CPU computations on the calling thread."""
    global _in_effect
    if not _in_effect.startswith("heap") or _in_effect.endswith(DISPATCH[0] + "=False"):
        return
    if backends.started():
        _in_effect += f" ({DISPATCH[0]} left True: JAX's backends started before cac_jax could set it)"
        warnings.warn(f"JAX started its backends before cac_jax could set {DISPATCH[0]}=False, so single-device "
                      "CPU steps mmap their convolutions' scratch memory afresh (~13% slower). Call "
                      "cac_jax.runtime.configure() before the first JAX computation.",
                      RuntimeWarning, stacklevel=2)
        return
    import jax

    jax.config.update(*DISPATCH)
    _in_effect += f" {DISPATCH[0]}=False"


def _apply(environ) -> str:
    choice = environ.get(ENV, "").strip().lower()
    if choice == "system":
        return f"system: {ENV}=system"
    if choice:
        raise ValueError(f"{ENV}={environ[ENV]!r}: the only value is 'system' (leave glibc's malloc settings and "
                         "JAX's CPU dispatch alone)")
    elsewhere = _not_on_the_cpu(environ)
    if elsewhere:
        return f"system: {elsewhere}"
    if backends.started():
        warnings.warn("cac_jax.runtime.configure() ran after JAX started its backends: glibc's malloc and JAX's CPU "
                      "dispatch are left as they are (CPU training ~13% slower)", RuntimeWarning, stacklevel=3)
        return "system: JAX's backends started before cac_jax.runtime.configure()"
    libc = _glibc()
    if libc is None:
        return "system: not glibc"
    failed = [name for name, (param, value) in SETTINGS.items() if libc.mallopt(param, value) != 1]
    if failed:
        return f"partial: mallopt refused {', '.join(failed)}"
    return "heap: " + " ".join(f"{name}={value}" for name, (_, value) in SETTINGS.items())
