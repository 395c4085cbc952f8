"""``python -m cac_jax``: the same as the ``cac-jax`` console command."""

from cac_jax.cli import entry

entry()
