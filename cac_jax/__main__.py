"""``python -m cac_jax``: the same as the ``cac-jax`` console command."""

import sys

from cac_jax.cli import main

sys.exit(main())
