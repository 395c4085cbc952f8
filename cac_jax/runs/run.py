"""One run end to end: train (or resume) and evaluate, writing the run's files into its work directory.

A work directory holds ``config.json`` (written first), ``metrics.jsonl``, the checkpoints, ``scores.npz``,
the plots and ``results.json`` (written last). One command at a time works in it (a lock; a second is refused,
naming the first). A directory holding another config is refused, and no file a user has is overwritten (an
existing ``results.json`` is kept as ``results.<n>.json``).

Provenance: every ``results.json`` says what produced it (:func:`provenance`): ``final`` (the best checkpoint of
the run's last stage, once that stage has finished: the protocol's result) or ``partial`` (and why), the stage,
checkpoint and step evaluated, the fingerprint of the data evaluated and of the data the network was trained
on, the config that trained it, apart from the evaluation's own settings, and the command. Only a final result
of the same config and data counts as a finished run (``train`` then stops, a sweep reuses it); anything else
in ``results.json`` is evaluated again after the training it needs.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import time

import cac_jax
from cac_jax import config as config_lib
from cac_jax import storage
from cac_jax.config import Config, save_config
from cac_jax.data import loading
from cac_jax.evaluation import calibration, evaluate
from cac_jax.runs.errors import WorkdirError
from cac_jax.runtime import distributed, runtime_info, timing
from cac_jax.training import checkpoints
from cac_jax.training import loop as train
from cac_jax.training.loop import stages_to_run

RESULTS_FILE = "results.json"


def config_diffs(old: dict, cfg: Config) -> list[str]:
    """``"field: old -> new"`` for every field of ``cfg`` that differs from the saved config ``old``, except
    the ones a resumed run may change (:data:`cac_jax.config.RESUMABLE_FIELDS`)."""
    return config_lib.field_diffs(old, cfg.to_dict(), ignore=config_lib.RESUMABLE_FIELDS)


def read_results(path: str) -> dict | None:
    """The results in ``path``, None when there are none. A damaged file (cut short by a kill or a full disk) is
    never taken as a result: it is set aside as ``<path>.damaged`` with a warning, and counts as absent."""
    if not os.path.exists(path):
        return None
    try:
        return storage.read_json(path)
    except storage.DamagedFile as e:
        if distributed.is_primary():
            storage.warn(f"{e}; kept as {storage.set_aside(path)} and not taken as a result")
        return None


def not_final_because(results: dict, data_fingerprint: str | None = None) -> str | None:
    """Why ``results`` are not the final results of their run on the data with ``data_fingerprint`` (None: they are)."""
    prov = results.get("provenance")
    if not isinstance(prov, dict):
        return "it records no provenance (written by an earlier version)"
    if prov.get("status") != "final":
        return f"it is a partial result ({'; '.join(prov.get('partial_because', [])) or 'unfinished'})"
    if data_fingerprint is not None and prov.get("data_fingerprint") != data_fingerprint:
        return "it was computed on other data"
    return None


def check_workdir(cfg: Config) -> None:
    """Refuse to mix runs: an existing config.json must match (up to RESUMABLE_FIELDS)."""
    workdir = cfg.resolved_workdir
    path = os.path.join(workdir, "config.json")
    if os.path.exists(path):
        diffs = config_diffs(storage.read_json(path, advice="delete it only if the run is not worth keeping"), cfg)
        if diffs:
            raise WorkdirError(f"{workdir} holds a run with a different config ({'; '.join(diffs)}); "
                               f"choose another --workdir")


def check_finished(ctx: train.Context) -> None:
    """Refuse to train again a run whose stages have all finished and whose results.json is their final result on
    this data (its results are kept); other results are evaluated again."""
    workdir = ctx.cfg.resolved_workdir
    results = read_results(os.path.join(workdir, RESULTS_FILE))
    if results is None or not_final_because(results, ctx.data_fingerprint) is not None:
        return
    metas = [checkpoints.StageCheckpoints(workdir, s).meta("latest") for s in stages_to_run(ctx.cfg)]
    if all(m is not None and m["finished"] for m in metas):
        raise WorkdirError(f"{workdir} already holds a finished run (results.json); its results are kept. "
                           f"Re-evaluate it with `cac-jax eval --workdir {workdir}`, or train into another --workdir")


def write_results(workdir: str, results: dict) -> str:
    """Write results.json atomically; an existing one is kept as results.<n>.json, never overwritten."""
    path = os.path.join(workdir, RESULTS_FILE)
    if not distributed.is_primary():
        return path
    storage.keep_previous(path)
    return storage.write_json(path, results)


def provenance(ctx: train.Context, stage: int, kind: str, meta: dict) -> dict:
    """What produced an evaluation of the ``kind`` checkpoint of ``stage`` (whose meta is ``meta``): see the module
    docstring."""
    cfg = ctx.cfg
    last = stages_to_run(cfg)[-1]
    latest = checkpoints.StageCheckpoints(cfg.resolved_workdir, stage).meta("latest")
    why = []
    if kind != "best":
        why.append(f"the {kind} checkpoint, not the stage's selected best")
    if stage != last:
        why.append(f"stage {stage} of a run whose last stage is {last}")
    if latest is None or not latest.get("finished"):
        why.append(f"stage {stage} has not finished")
    settings = cfg.to_dict()
    return {"status": "partial" if why else "final", "partial_because": why, "stage": stage, "checkpoint": kind,
            "checkpoint_dir": os.path.join(checkpoints.StageCheckpoints(cfg.resolved_workdir, stage).root, kind),
            "step": meta.get("step"), "epochs_done": meta.get("epochs_done"),
            "data_fingerprint": ctx.data_fingerprint, "trained_on_data": meta.get("data_fingerprint"),
            "training_data_fingerprint": meta.get("training_data_fingerprint"),
            "trained_config": meta.get("trained_config") or config_lib.training_fields(settings),
            "evaluation": {k: settings[k] for k in config_lib.EVAL_FIELDS if k != "workdir"},
            "imported_from": meta.get("imported_from"), "command": storage.command_line(),
            "cac_jax": cac_jax.__version__}


def check_trained_config(ctx: train.Context, meta: dict, where: str) -> None:
    """Refuse a config that does not describe the network in a checkpoint (``eval --config`` of another run)."""
    trained = meta.get("trained_config")
    if not trained:
        return  # an imported network, or a checkpoint of an earlier version
    diffs = config_lib.field_diffs(trained, ctx.cfg.to_dict(),
                                   ignore=config_lib.RESUMABLE_FIELDS + config_lib.EVAL_CHANGES)
    if diffs:
        raise ValueError(f"the config does not describe the network in {where} (trained -> given: {'; '.join(diffs)}); "
                         f"evaluate it with the config it was trained with")


def evaluate_run(ctx: train.Context, *, stage: int | None = None, kind: str = "best"):
    """(results, per-sample outputs) of the ``kind`` checkpoint of ``stage`` (default: the best checkpoint
    of the last configured stage), with their :func:`provenance`."""
    stage = stage or stages_to_run(ctx.cfg)[-1]
    variables, meta = train.checkpoint_variables(ctx, stage, kind)
    check_trained_config(ctx, meta, os.path.join(checkpoints.StageCheckpoints(ctx.cfg.resolved_workdir, stage).root, kind))
    results, outputs = evaluate.evaluate(ctx.model, variables, ctx.data, ctx.cfg, ctx.mesh)
    # The calibration is of this network: predict refuses it for another checkpoint.
    outputs.calibration.meta.update(checkpoint={"stage": stage, "kind": kind, "step": meta.get("step"),
                                                "digest": meta.get("digests", {}).get("state")},
                                    training_data_fingerprint=ctx.training_fingerprint)
    results.update(stage=stage, checkpoint=kind, config=ctx.cfg.to_dict(), num_devices=int(ctx.mesh.devices.size),
                   runtime=runtime_info(), provenance=provenance(ctx, stage, kind, meta))
    return results, outputs


def write_scores_and_plots(workdir: str, outputs, results: dict) -> None:
    """The per-sample test outputs (scores.npz), the calibration (calibration.npz) and the run's plots."""
    if distributed.is_primary():
        evaluate.save_outputs(os.path.join(workdir, evaluate.SCORES_FILE), outputs)
        calibration.save(os.path.join(workdir, calibration.FILE), outputs.calibration)
        from cac_jax.runs import plots  # matplotlib only once training is over

        plots.write_run_plots(workdir, outputs, results)


def hold(*workdirs: str) -> contextlib.ExitStack:
    """The work directories' locks (process 0 holds them for a job of several processes)."""
    stack = contextlib.ExitStack()
    if distributed.is_primary():
        for workdir in dict.fromkeys(os.path.abspath(w) for w in workdirs):
            stack.enter_context(storage.workdir_lock(workdir))
    return stack


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
            train.agree_on_run(cfg)  # before anything is written
        with hold(workdir):
            with timings.section("setup"):
                check_workdir(cfg)
                distributed.barrier("work directory checked")  # nobody reads config.json while process 0 writes it
                if distributed.is_primary():
                    save_config(cfg, os.path.join(workdir, "config.json"))
            with timings.section("data"):
                data = data if data is not None else train.load_data(cfg)
                fingerprints = loading.fingerprints(data)
                train.agree_on_run(cfg, fingerprints[0])
            with timings.section("setup"):
                ctx = train.make_context(cfg, data, timings=timings, fingerprints=fingerprints)
                check_finished(ctx)
            if not train.train(ctx, max_steps=max_steps):
                return None
            with timings.section("evaluate"):
                results, outputs = evaluate_run(ctx)
            with timings.section("outputs"):
                write_scores_and_plots(workdir, outputs, results)
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
