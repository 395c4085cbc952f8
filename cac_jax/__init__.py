"""Class Anchor Clustering (Miller et al., WACV 2021) for open-set recognition, in JAX/Flax.

Importing the package (or any module of it) changes nothing in the process: the ``cac-jax`` command applies
the measured CPU settings and the compilation cache (:func:`cac_jax.runtime.configure`), and a script of
your own can call that one function.

Layers, each importing only those above it in this list: ``core`` (the loss, scores, metrics), ``objectives``
(training objectives, looked up by name), ``testing`` (the property-testing kit, needs hypothesis), ``storage``,
``data``, ``config``, ``runtime`` (process settings, jobs of several processes, timings), ``models``, ``training``,
``evaluation`` (forward passes and the score registry), ``runs`` (a run end to end, sweeps, reports,
plots), ``cli``.
"""

__version__ = "0.1.0"


def load(workdir: str, *, score: str | None = None, num_devices: int | None = None):
    """A trained run as an open-set classifier: ``cac_jax.load(W).predict(images)`` accepts each image as a known
    class or rejects it as unknown at the run's calibrated threshold (:mod:`cac_jax.runs.predict`)."""
    from cac_jax.runs import predict

    return predict.load(workdir, score=score, num_devices=num_devices)
