"""Class Anchor Clustering (Miller et al., WACV 2021) for open-set recognition, in JAX/Flax."""

__version__ = "0.1.0"
