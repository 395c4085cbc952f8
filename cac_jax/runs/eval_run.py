"""Evaluation of a trained run from its files alone: a work directory, or a checkpoint directory in it.

``--workdir W`` evaluates the best checkpoint of the last configured stage of the run in ``W``
(``W/config.json`` and ``W/checkpoints/stage<s>/best``). ``--checkpoint C`` names a checkpoint inside a
run directory at any level of the layout ``<run>/checkpoints/stage<s>/{best,latest}``: the run
directory itself, its ``checkpoints``, one ``stage<s>`` (its best checkpoint) or one ``best``/``latest``.
The config is ``<run>/config.json`` unless ``--config`` names another file. Outputs (results.json,
scores.npz, plots) go to ``--workdir`` if given, else to the run directory; an existing results.json is
renamed, never overwritten.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Sequence

from cac_jax import config as config_lib
from cac_jax.runtime import timing
from cac_jax.training.checkpoints import KINDS


def locate_checkpoint(path: str) -> tuple[str, int | None, str]:
    """(run directory, stage or None for the run's last stage, kind) named by a checkpoint path."""
    p = os.path.abspath(path)
    if not os.path.isdir(p):
        raise FileNotFoundError(f"no checkpoint directory at {path}")
    kind, stage, named = "best", None, False
    if os.path.basename(p) in KINDS:
        kind, p, named = os.path.basename(p), os.path.dirname(p), True
    m = re.fullmatch(r"stage(\d+)", os.path.basename(p))
    if m:
        stage, p, named = int(m.group(1)), os.path.dirname(p), True
    if os.path.basename(p) == "checkpoints":
        p = os.path.dirname(p)
    elif named:
        raise ValueError(f"{path} is not in the layout <run>/checkpoints/stage<s>/{{best,latest}}")
    if not os.path.isdir(os.path.join(p, "checkpoints")):
        raise FileNotFoundError(f"no checkpoints in {p} (expected {os.path.join(p, 'checkpoints')}): "
                                f"is this a trained cac-jax run?")
    return p, stage, kind


def evaluate_run_dir(workdir: str | None = None, *, checkpoint: str | None = None, config_path: str | None = None,
                     overrides: Sequence[str] = ()) -> tuple[dict, str]:
    """Evaluate a trained run and write its outputs; returns (results, path of results.json)."""
    from cac_jax.runtime import distributed
    from cac_jax.runs import run as run_lib
    from cac_jax.training import loop as train

    if checkpoint is None and workdir is None:
        raise ValueError("name a work directory (--workdir) or a checkpoint directory (--checkpoint)")
    if checkpoint is not None:
        run_dir, stage, kind = locate_checkpoint(checkpoint)
    else:
        if not os.path.isdir(workdir):
            raise FileNotFoundError(f"no work directory at {workdir}")
        run_dir, stage, kind = workdir, None, "best"
    cfg = config_lib.load_config(config_path or os.path.join(run_dir, "config.json"))
    cfg = config_lib.apply_overrides(cfg, overrides).replace(workdir=run_dir)
    if stage not in (None, 1, 2):
        raise ValueError(f"stage {stage} does not exist (stages are 1 and 2)")
    distributed.initialize(distributed.Options(auto=cfg.distributed))
    t0, timings = time.perf_counter(), timing.Timings()
    out_dir = workdir or run_dir
    with timings.active():
        with timings.section("data"):
            train.agree_on_run(cfg)
            data = train.load_data(cfg)
            train.agree_on_run(cfg, data)
        with timings.section("evaluate"):
            results, outputs = run_lib.evaluate_run(train.make_context(cfg, data, timings=timings), stage=stage,
                                                  kind=kind)
        with timings.section("outputs"):
            if distributed.is_primary():
                os.makedirs(out_dir, exist_ok=True)
            run_lib.write_scores_and_plots(out_dir, outputs)
    results["workdir"] = os.path.abspath(out_dir)
    results["timings"] = timings.as_dict(time.perf_counter() - t0)
    results["total_seconds"] = results["timings"]["total"]
    return results, run_lib.write_results(out_dir, results)
