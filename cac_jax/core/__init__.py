"""The math: the CAC loss and its distance kernels (:mod:`.losses`), the CAC score (:mod:`.cac_score`),
the open-set metrics (:mod:`.metrics`), calibrated decisions (:mod:`.decisions`: conformal p-values,
thresholds, the K + 1-class metrics) and input checks (:mod:`.validation`). Pure functions of arrays;
imports jax and numpy only."""
