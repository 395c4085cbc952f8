"""One run end to end: train (or resume) and evaluate, writing the run's files into its work directory.

A work directory holds ``config.json`` (written first), ``metrics.jsonl``, the checkpoints, ``scores.npz``,
the plots and ``results.json`` (written last, the mark of a finished run). A directory holding another
config is refused, and no file a user has is overwritten (an existing ``results.json`` is renamed).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import time

from cac_jax.config import Config, save_config
from cac_jax.evaluation import evaluate
from cac_jax.runtime import distributed, runtime_info, timing
from cac_jax.training import checkpoints
from cac_jax.training import loop as train
from cac_jax.training.loop import stages_to_run

# Config fields that may differ when a run in an existing work directory is resumed or re-evaluated.
RESUMABLE_CHANGES = ("workdir", "progress", "log_every_steps", "checkpoint_every_steps", "checkpoint_every_epochs",
                     "data_dir", "npz_path",
                     "manual_dir", "num_devices", "distributed", "eval_batch_size", "stages", "tensorboard")


class WorkdirError(RuntimeError):
    """The work directory holds another run, or already the finished results of this one."""



def config_diffs(old: dict, cfg: Config) -> list[str]:
    """``"field: old -> new"`` for every field of ``cfg`` that differs from the saved config ``old``, except
    the ones a resumed run may change (RESUMABLE_CHANGES); a field missing from ``old`` counts as its default."""
    # A field an earlier version did not have ran as its default.
    defaults = Config().to_dict()
    return [f"{k}: {old.get(k, defaults[k])!r} -> {v!r}" for k, v in cfg.to_dict().items()
            if k not in RESUMABLE_CHANGES and old.get(k, defaults[k]) != v]


def check_workdir(cfg: Config) -> None:
    """Refuse to mix runs: an existing config.json must match (up to RESUMABLE_CHANGES), and a run whose
    requested stages are all finished and evaluated is not retrained (its results are never overwritten)."""
    workdir = cfg.resolved_workdir
    path = os.path.join(workdir, "config.json")
    if os.path.exists(path):
        with open(path) as f:
            diffs = config_diffs(json.load(f), cfg)
        if diffs:
            raise WorkdirError(f"{workdir} holds a run with a different config ({'; '.join(diffs)}); "
                                   f"choose another --workdir")
    if os.path.exists(os.path.join(workdir, "results.json")):
        metas = [checkpoints.StageCheckpoints(workdir, s).meta("latest") for s in stages_to_run(cfg)]
        if all(m is not None and m["finished"] for m in metas):
            raise WorkdirError(f"{workdir} already holds a finished run (results.json); its results are kept. "
                                   f"Re-evaluate it with `cac-jax eval --workdir {workdir}`, or train into another "
                                   f"--workdir")


def write_results(workdir: str, results: dict) -> str:
    """Write results.json; an existing one is renamed results.<n>.json, never overwritten."""
    path = os.path.join(workdir, "results.json")
    if not distributed.is_primary():
        return path
    if os.path.exists(path):
        n = 1
        while os.path.exists(os.path.join(workdir, f"results.{n}.json")):
            n += 1
        os.rename(path, os.path.join(workdir, f"results.{n}.json"))
    with open(path, "w") as f:
        json.dump(results, f, indent=2, sort_keys=True)
        f.write("\n")
    return path


def evaluate_run(ctx: train.Context, *, stage: int | None = None, kind: str = "best"):
    """(results, per-sample outputs) of the ``kind`` checkpoint of ``stage`` (default: the best checkpoint
    of the last configured stage)."""
    stage = stage or stages_to_run(ctx.cfg)[-1]
    results, outputs = evaluate.evaluate(ctx.model, train.checkpoint_variables(ctx, stage, kind), ctx.data, ctx.cfg, ctx.mesh)
    results.update(stage=stage, checkpoint=kind, config=ctx.cfg.to_dict(), num_devices=int(ctx.mesh.devices.size),
                   runtime=runtime_info())
    return results, outputs


def write_scores_and_plots(workdir: str, outputs) -> None:
    """The per-sample test outputs (scores.npz) and the run's plots."""
    if distributed.is_primary():
        evaluate.save_outputs(os.path.join(workdir, evaluate.SCORES_FILE), outputs)
        from cac_jax.runs import plots  # matplotlib only once training is over

        plots.write_run_plots(workdir, outputs)


def write_outputs(workdir: str, results: dict, outputs) -> str:
    """:func:`write_scores_and_plots`, then results.json (:func:`write_results`), last, as the mark of a
    finished evaluation."""
    write_scores_and_plots(workdir, outputs)
    return write_results(workdir, results)


def run(cfg: Config, data=None, *, max_steps: int | None = None) -> dict | None:
    """Train (or resume) and evaluate; writes config.json, metrics.jsonl, scores.npz, the plots and
    results.json into the workdir. ``results["timings"]`` says where the time went (:mod:`cac_jax.runtime.timing`).

    Returns the results dict, or None when stopped early by ``max_steps``."""
    distributed.initialize(distributed.Options(auto=cfg.distributed))
    t0 = time.perf_counter()
    timings = timing.Timings()
    workdir = cfg.resolved_workdir
    with timings.active():
        with timings.section("setup"):
            train.agree_on_run(cfg)
            check_workdir(cfg)
            distributed.barrier("work directory checked")  # nobody reads config.json while process 0 writes it
            if distributed.is_primary():
                os.makedirs(workdir, exist_ok=True)
                save_config(cfg, os.path.join(workdir, "config.json"))
        with timings.section("data"):
            data = data if data is not None else train.load_data(cfg)
            train.agree_on_run(cfg, data)
        with timings.section("setup"):
            ctx = train.make_context(cfg, data, timings=timings)
        if not train.train(ctx, max_steps=max_steps):
            return None
        with timings.section("evaluate"):
            results, outputs = evaluate_run(ctx)
        with timings.section("outputs"):
            write_scores_and_plots(workdir, outputs)
    results["workdir"] = os.path.abspath(workdir)
    results["timings"] = timings.as_dict(time.perf_counter() - t0)
    results["total_seconds"] = results["timings"]["total"]
    write_results(workdir, results)
    return results


def train_and_report(cfg: Config) -> dict:
    """:func:`run` of ``cfg`` between a line saying what trains where and one with its result."""
    print(f"training {cfg.experiment} trial {cfg.trial} ({cfg.method}, {cfg.model}) in {cfg.resolved_workdir}",
          flush=True)
    results = run(cfg)
    print(f"  accuracy {results['accuracy']:.4f}  AUROC {results['auroc']:.4f}  "
          f"({timing.summary(results['timings'])})", flush=True)
    return results


def import_user_module(name: str):
    """Import ``name``: a module name, or the path of a .py file."""
    if name.endswith(".py"):
        if not os.path.exists(name):
            raise FileNotFoundError(f"--import {name}: no such file")
        spec = importlib.util.spec_from_file_location(os.path.splitext(os.path.basename(name))[0], name)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        raise ValueError(f"--import {name}: {e} (give a module on the Python path, or a .py file)") from None
