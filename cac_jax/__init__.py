"""Class Anchor Clustering (Miller et al., WACV 2021) for open-set recognition, in JAX/Flax."""

from cac_jax import xla_setup as _xla_setup

# Before JAX starts a backend: XLA's CPU convolutions instead of YNNPACK's (about 2x faster training here).
_xla_setup.apply()

__version__ = "0.1.0"
