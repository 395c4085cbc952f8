"""Evaluation of a trained run from its files alone: a work directory, or a checkpoint directory in it.

``--workdir W`` evaluates the best checkpoint of the last configured stage of the run in ``W``
(``W/config.json`` and ``W/checkpoints/stage<s>/best``). ``--checkpoint C`` names a checkpoint inside a
run directory at any level of the layout ``<run>/checkpoints/stage<s>/{best,latest}``: the run
directory itself, its ``checkpoints``, one ``stage<s>`` (its best checkpoint) or one ``best``/``latest``.
The config is ``<run>/config.json`` unless ``--config`` names another file, which must describe the same network
(the checkpoint records the config it was trained with). Outputs (results.json, scores.npz, plots) go to
``--workdir`` if given, else to the run directory; an existing results.json is kept as ``results.<n>.json``.

``--set`` may change only evaluation settings (:data:`cac_jax.config.EVAL_CHANGES`: where the data and devices
are, the evaluation batch, ``anchor_flip``, and the dataset whose test sets are used, among those with the same
training data: CIFAR+10's networks on CIFAR+50, as the original does); a field that says what the network was
trained on (the trial, the split family, alpha, ...) or how its results are labelled (the experiment) is refused,
naming it. The training data must be those the network was trained on (a copy in another file is fine). Results
of any checkpoint but the best of the run's last, finished stage say ``"provenance": {"status": "partial", ...}``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence

from cac_jax import config as config_lib
from cac_jax.runtime import timing
from cac_jax.training import checkpoints


def eval_config(cfg: config_lib.Config, overrides: Sequence[str]) -> config_lib.Config:
    """``cfg`` with the ``key=value`` overrides, all of which must be evaluation settings (or leave the value as
    it is)."""
    changed = config_lib.apply_overrides(cfg, overrides)
    diffs = config_lib.field_diffs(cfg.to_dict(), changed.to_dict(), ignore=config_lib.EVAL_CHANGES)
    if diffs:
        names = ", ".join(d.split(":")[0] for d in diffs)
        raise ValueError(f"eval --set {names}: what the network was trained on, or how its results are labelled, "
                         f"cannot change at evaluation ({'; '.join(diffs)}); evaluation may set only "
                         f"{', '.join(f for f in config_lib.EVAL_CHANGES if f != 'workdir')}. Train another run for that")
    return changed


def evaluate_run_dir(workdir: str | None = None, *, checkpoint: str | None = None, config_path: str | None = None,
                     overrides: Sequence[str] = ()) -> tuple[dict, str]:
    """Evaluate a trained run and write its outputs; returns (results, path of results.json)."""
    from cac_jax.data import loading
    from cac_jax.runtime import distributed
    from cac_jax.runs import run as run_lib
    from cac_jax.training import loop as train

    if checkpoint is None and workdir is None:
        raise ValueError("name a work directory (--workdir) or a checkpoint directory (--checkpoint)")
    if checkpoint is not None:
        run_dir, stage, kind = checkpoints.locate(checkpoint)
    else:
        if not os.path.isdir(workdir):
            raise FileNotFoundError(f"no work directory at {workdir}")
        run_dir, stage, kind = workdir, None, "best"
    cfg = config_lib.load_config(config_path or os.path.join(run_dir, "config.json"))
    cfg = eval_config(cfg, overrides).replace(workdir=run_dir)
    distributed.initialize(distributed.Options(auto=cfg.distributed))
    t0, timings = time.perf_counter(), timing.Timings()
    out_dir = workdir or run_dir
    with timings.active():
        with timings.section("data"):
            train.agree_on_run(cfg)  # before anything is written
        with run_lib.hold(run_dir, out_dir):
            with timings.section("data"):
                data = train.load_data(cfg)
                fingerprints = loading.fingerprints(data)
                train.agree_on_run(cfg, fingerprints[0])
            with timings.section("evaluate"):
                ctx = train.make_context(cfg, data, timings=timings, fingerprints=fingerprints)
                results, outputs = run_lib.evaluate_run(ctx, stage=stage, kind=kind)
            with timings.section("outputs"):
                run_lib.write_scores_and_plots(out_dir, outputs, results)
            results["workdir"] = os.path.abspath(out_dir)
            results["timings"] = timings.as_dict(time.perf_counter() - t0)
            results["total_seconds"] = results["timings"]["total"]
            return results, run_lib.write_results(out_dir, results)
