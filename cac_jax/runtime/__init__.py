"""The process-wide settings cac-jax runs with, applied on request, never on import.

``import cac_jax`` (or any of its modules) changes nothing in the process. The ``cac-jax`` command, the
benchmarks and the test suite call :func:`configure` first thing, and so can a script of your own::

    import cac_jax.runtime
    cac_jax.runtime.configure()      # before the first JAX computation
    import jax
    ...

It applies the measured CPU settings (:mod:`.xla_setup`: XLA's own convolutions instead of YNNPACK's and
512-bit vectors, about 2x faster CPU training here; :mod:`.host_malloc`: the convolutions' scratch memory
kept in glibc's heap and single-device CPU computations on the calling thread, about 13% faster) and
JAX's persistent compilation cache (:func:`.xla_setup.enable_compilation_cache`). Each part acts only
where it was measured and explains itself when it cannot act; :func:`runtime_info` (stored in every
``results.json``) records what is in effect. :mod:`.distributed` (jobs of several processes) and
:mod:`.timing` (where a run's time goes) live here too.
"""

from __future__ import annotations

import os
from importlib import metadata

from cac_jax.runtime import host_malloc, xla_setup


def configure(*, compilation_cache: bool = True, environ=os.environ) -> dict:
    """Apply cac-jax's CPU settings and (unless ``compilation_cache=False``) the persistent compilation cache to
    this process; returns what is in effect. Call it before JAX runs its first computation."""
    xla_setup.apply(environ)
    host_malloc.apply(environ)
    cache = xla_setup.enable_compilation_cache(environ) if compilation_cache else None
    return {"xla_flags": environ.get("XLA_FLAGS", ""), "malloc": host_malloc.in_effect(), "compilation_cache": cache}


def runtime_info() -> dict:
    """Versions, backend and XLA flags, stored with every result so timings and numbers can be traced."""
    import jax

    return {"jax": jax.__version__, "jaxlib": metadata.version("jaxlib"), "backend": jax.default_backend(),
            "device_kind": jax.devices()[0].device_kind, "device_count": jax.device_count(),
            "process_count": jax.process_count(), "xla_flags": os.environ.get("XLA_FLAGS", ""),
            "malloc": host_malloc.in_effect()}
