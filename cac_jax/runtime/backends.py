"""Whether JAX has started its backends (after which XLA_FLAGS and JAX's CPU dispatch setting are read)."""

import sys


def started() -> bool:
    if "jax" not in sys.modules:  # cheap and the usual case: nothing can have started
        return False
    from jax._src import xla_bridge  # no public API says whether a backend exists yet

    backends_are_initialized = getattr(xla_bridge, "backends_are_initialized", None)
    return bool(backends_are_initialized and backends_are_initialized())
