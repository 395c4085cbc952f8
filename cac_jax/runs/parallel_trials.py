"""Train several trials at once on one machine, each in its own process (``cac-jax sweep --parallel N``).

One trial of these benchmarks leaves a modern GPU mostly idle: batch 128 of 32x32 images makes small
kernels, and between them sit per-step host work, validation and checkpoint writes at every epoch end.
Processes that share the GPU fill each other's gaps, so N trials at once finish a sweep sooner than N
one after another. On a CPU, where one process already uses every core, they gain nothing.

Each child is an ordinary :func:`cac_jax.runs.run.run` of one config: it writes the usual run directory,
its console output goes to ``<workdir>/train.log``, and a sweep that is stopped resumes every trial
from its latest checkpoint. JAX would let each process take 75% of the GPU memory, so a child whose
environment does not set ``XLA_PYTHON_CLIENT_MEM_FRACTION`` gets an equal share of 90% of it.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import time
import warnings
from collections.abc import Callable, Sequence

from cac_jax import storage

LOG_FILE = "train.log"
GPU_MEMORY_SHARED = 0.9


def _child(cfg_dict: dict, mem_fraction: float, log_path: str) -> None:
    """Entry point of one trial's process (spawned: no JAX state inherited from the parent): its output to
    ``log_path``, the settings of the ``cac-jax`` command, the modules the run was made with (the config's
    ``imports``: an objective or scores of one's own), then the trial."""
    # Output (Python's and XLA's C++ logs alike) goes to the trial's log, not into the parent's console.
    with open(log_path, "a") as f:
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
    # Read when JAX first starts a GPU backend, which happens below, after this line.
    os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", f"{mem_fraction:.3f}")
    from cac_jax import runtime
    from cac_jax.config import Config
    from cac_jax.runs import run

    runtime.configure()
    for module in cfg_dict.get("imports", ()):
        run.import_user_module(module)
    cfg = Config.from_dict(cfg_dict)
    run.train_and_report(cfg)


def progress(cfg) -> str:
    """Where a running trial stands, from its metrics log: ``"stage 1 epoch 12/70"`` (epochs of both stages).

    ``python -m cac_jax.runs.parallel_trials DIR...`` prints it for every run under the DIRs (any run, not only a sweep's)."""
    epochs = [rec for rec in _log_records(os.path.join(cfg.resolved_workdir, "metrics.jsonl")) if rec.get("kind") == "epoch"]
    last = epochs[-1] if epochs else None
    total = sum(cfg.epochs)
    return "starting" if last is None else f"stage {last['stage']} epoch {last['epoch']}/{total}"


def _log_records(path: str) -> list[dict]:
    with warnings.catch_warnings():  # a line still being written is not worth a warning here
        warnings.simplefilter("ignore", storage.CacJaxWarning)
        return storage.read_jsonl(path)


def _last_line(path: str) -> str:
    """The last line of a trial's output: its one-line error when it failed."""
    lines = [line for line in _tail(path).splitlines() if line.strip()]
    return lines[-1].strip() if lines else "no output"


def _tail(path: str, lines: int = 15) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return "(no log)"


class TrialsFailed(RuntimeError):
    """Some trials ended with an error; the others finished and kept their results."""


def run_trials(cfgs: Sequence, parallel: int, *, log: Callable[[str], None] = print,
               poll_seconds: float = 60.0) -> dict[int, dict]:
    """Train and evaluate every config, ``parallel`` at a time, each in a spawned process.

    Returns ``{trial: results}`` read from each run's results.json. Raises :class:`TrialsFailed` naming
    every failed trial with the end of its log, after the others have finished. Interrupting the parent
    stops the children; each resumes from its latest checkpoint when the sweep is run again."""
    if parallel < 1:
        raise ValueError(f"parallel must be >= 1, got {parallel}")
    ctx = multiprocessing.get_context("spawn")
    share = GPU_MEMORY_SHARED / min(parallel, len(cfgs))
    pending, running, results, failed = list(cfgs), {}, {}, {}
    last_report = time.monotonic()
    try:
        while pending or running:
            while pending and len(running) < parallel:
                cfg = pending.pop(0)
                os.makedirs(cfg.resolved_workdir, exist_ok=True)
                proc = ctx.Process(target=_child, args=(cfg.to_dict(), share, os.path.join(cfg.resolved_workdir, LOG_FILE)),
                                   name=f"trial{cfg.trial}")
                proc.start()
                running[cfg.trial] = (proc, cfg)
                log(f"{cfg.method} trial {cfg.trial}: training in {cfg.resolved_workdir} (process {proc.pid}, "
                    f"output in {os.path.join(cfg.resolved_workdir, LOG_FILE)})")
            multiprocessing.connection.wait([p.sentinel for p, _ in running.values()], timeout=poll_seconds)
            for trial, (proc, cfg) in list(running.items()):
                if proc.exitcode is None:
                    continue
                del running[trial]
                log_path = os.path.join(cfg.resolved_workdir, LOG_FILE)
                if proc.exitcode == 0:
                    results[trial] = storage.read_json(os.path.join(cfg.resolved_workdir, "results.json"))
                    log(f"{cfg.method} trial {trial}: finished")
                else:
                    failed[trial] = f"exit code {proc.exitcode}, {_last_line(log_path)} (its output: {log_path})"
                    log(f"{cfg.method} trial {trial}: FAILED ({failed[trial]}); end of its output:\n{_tail(log_path)}")
            if running and time.monotonic() - last_report >= poll_seconds:
                last_report = time.monotonic()
                log("  ".join(f"trial {t}: {progress(c)}" for t, (_, c) in sorted(running.items())))
    finally:
        for proc, _ in running.values():  # only when interrupted: stop the children, keep their checkpoints
            proc.terminate()
        for proc, _ in running.values():
            proc.join()
    if failed:
        raise TrialsFailed("trials failed (the others finished): " + "; ".join(f"trial {t}: {m}"
                                                                               for t, m in sorted(failed.items())))
    return results


if __name__ == "__main__":
    import sys

    from cac_jax.config import load_config

    for root in sys.argv[1:]:
        for workdir, _, files in sorted(os.walk(root)):
            if "config.json" in files:
                cfg = load_config(os.path.join(workdir, "config.json")).replace(workdir=workdir)
                print(f"{workdir}: {progress(cfg)}")
