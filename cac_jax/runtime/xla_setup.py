"""The XLA settings cac-jax runs with: CPU flags, and JAX's persistent compilation cache.

jaxlib 0.10 hands CPU convolutions to YNNPACK (YNN fusions of type "individual_convolution"). For the
3x3 convolutions of the CAC network XLA's own (Eigen) convolution is much faster; on this repository's
2-core CPU, batch 128, the 32x32x64->64 layer takes (forward / input gradient / weight gradient)
101 / 101 / 312 ms with YNNPACK and 49 / 50 / 87 ms without, and the CIFAR train step 1489 ms against
793 ms. XLA's own loops (batch norm, activations, their gradients) are emitted for 256-bit vectors by
default; 512-bit vectors, where the CPU has them, take the step a further 0-2% down (687 -> 674 ms,
median of 12 interleaved rounds, before cac_jax.runtime.host_malloc; 1.3-1.8% after it in
``python -m benchmarks.cpu_settings_ab``; it changes no result: the same operations in the same order). So
:func:`apply` (called by :func:`cac_jax.runtime.configure`, never on import) adds

    --xla_cpu_experimental_ynn_fusion_type=-individual_convolution --xla_cpu_prefer_vector_width=512

to ``XLA_FLAGS``, which affects only the CPU backend. Limits, all deliberate:

* XLA reads ``XLA_FLAGS`` once, when JAX's first backend starts. Applying them after JAX has run a
  computation is too late: then the environment is left as it is (so a run's recorded ``xla_flags``
  stay true) and a warning says that the settings are not in effect.
* The YNN flag is experimental and an unknown flag value aborts the process, so the flags are added only
  under the jaxlib releases they were measured on (``MEASURED_JAXLIB``).
* A flag the user's ``XLA_FLAGS`` already sets is left as the user set it: to get YNNPACK convolutions
  back, run with ``XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=+individual_convolution``.
"""

from __future__ import annotations

import os
import warnings
from importlib import metadata

from cac_jax import storage
from cac_jax.runtime import backends

FAST_CPU_FLAGS = ("--xla_cpu_experimental_ynn_fusion_type=-individual_convolution",
                  "--xla_cpu_prefer_vector_width=512")
MEASURED_JAXLIB = ("0.10.",)


def with_fast_cpu_flags(xla_flags: str, jaxlib_version: str) -> str:
    """``xla_flags`` plus those of :data:`FAST_CPU_FLAGS` that it does not set, where this jaxlib knows them."""
    if not jaxlib_version.startswith(MEASURED_JAXLIB):
        return xla_flags
    missing = [f for f in FAST_CPU_FLAGS if f.split("=", 1)[0] not in xla_flags]
    return " ".join([*xla_flags.split(), *missing])


def apply(environ=os.environ) -> None:
    """Put :func:`with_fast_cpu_flags` into ``environ["XLA_FLAGS"]`` (see the module docstring for when it acts)."""
    try:
        version = metadata.version("jaxlib")
    except metadata.PackageNotFoundError:
        return
    current = environ.get("XLA_FLAGS", "")
    flags = with_fast_cpu_flags(current, version)
    if flags == current:
        return
    if backends.started():
        warnings.warn(f"cac_jax.runtime.configure() ran after JAX started its backends, so XLA has read XLA_FLAGS "
                      f"already and {' '.join(FAST_CPU_FLAGS)} is not in effect: CPU training runs about 2x slower. "
                      f"Call it before the first JAX computation, or put the flag into XLA_FLAGS yourself.",
                      RuntimeWarning, stacklevel=3)
        return
    environ["XLA_FLAGS"] = flags


CACHE_ENV = "CAC_JAX_COMPILATION_CACHE"


def compilation_cache_dir(environ=os.environ) -> str | None:
    """Where :func:`enable_compilation_cache` keeps compiled programs: ``$CAC_JAX_COMPILATION_CACHE`` if set
    (``off`` for nowhere), else ``~/.cache/cac_jax/jax_compilation_cache``, beside the prepared datasets."""
    choice = environ.get(CACHE_ENV, "").strip()
    if choice.lower() in ("off", "0", "false", "no", "none"):
        return None
    if choice:
        return os.path.abspath(os.path.expanduser(choice))
    return os.path.join(os.path.expanduser("~"), ".cache", "cac_jax", "jax_compilation_cache")


def enable_compilation_cache(environ=os.environ) -> str | None:
    """Turn on JAX's persistent compilation cache in :func:`compilation_cache_dir`, for every program however
    quickly it compiled (a run compiles a handful of programs, and even the small ones add up to seconds), so
    a repeated command compiles nothing; returns the directory (None: off). A cache directory the user gave
    JAX itself (``JAX_COMPILATION_CACHE_DIR``) is left as it is. The ``cac-jax`` command calls this."""
    import jax

    if jax.config.jax_compilation_cache_dir:
        return jax.config.jax_compilation_cache_dir
    path = compilation_cache_dir(environ)
    if path is None:
        return None
    try:
        storage.make_dirs(path)
    except storage.StorageError as e:  # a read-only HOME: compile every time, but run
        storage.warn(f"no compilation cache ({e}); set {CACHE_ENV}=DIR to keep one elsewhere")
        return None
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    return path
