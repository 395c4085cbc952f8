"""The networks (:mod:`.networks`: the paper's encoder, a small digits encoder, the heads) and their
convolution (:mod:`.conv`)."""

from cac_jax.models.networks import (CAC_CNN_WIDTHS, SMALL_CNN_WIDTHS, Encoder, OpenSetClassifier,  # noqa: F401
                                     count_params, create_model, init_variables)
