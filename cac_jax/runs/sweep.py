"""Sweeps: one method over several trials of one benchmark, run one after another and resumable.

Every trial's network is scored by every score (:mod:`cac_jax.evaluation.scores`): the sweep keeps the
method's own score at the top level and every score's mean and std under ``scores``, one row each in
``results.md`` and in ``cac-jax report``.

Layout: ``<sweep>/trial<k>/`` is an ordinary run directory (config.json, checkpoints, results.json,
scores.npz, plots). A trial whose ``results.json`` is the *final* result of the same config on the same data
(its provenance says so, and its data fingerprint is that of the trial's data now) is not rerun: its numbers
are reused. Any other trial is finished by :func:`cac_jax.runs.run.run`: an interrupted one resumes from its
latest checkpoint, and a trained one whose results.json is partial (e.g. an evaluation of a stage-1
checkpoint), damaged or of an earlier version is evaluated again. So every number a sweep averages is the
final result of its trial. The sweep then writes ``<sweep>/results.json`` (per-trial metrics, their mean and
std, each trial's data fingerprint), ``<sweep>/results.md`` (the same as a Markdown table) and
``<sweep>/roc.png`` (one ROC curve per trial), atomically. One command at a time works in a sweep directory.

Statistics: the mean and the **sample** standard deviation (``ddof=1``, i.e. divided by n - 1) over the
trials, per metric; the paper's "±" over its 5 trials is presumably the same. With one trial the std is
undefined and stored as None.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import numpy as np

from cac_jax import storage
from cac_jax.runtime import distributed
from cac_jax.config import Config
from cac_jax.evaluation.evaluate import METRIC_KEYS, METRIC_NAMES, headline_score

STD_DDOF = 1
DEFAULT_TRIALS = (0, 1, 2, 3, 4)


def default_workdir(cfg: Config) -> str:
    """``runs/sweeps/<run name>/<method>``; the run name says the split family and recipe where they are not the
    paper's (:attr:`Config.run_name`)."""
    return os.path.join("runs", "sweeps", cfg.run_name, cfg.method)


def trial_workdir(sweep_dir: str, trial: int) -> str:
    return os.path.join(sweep_dir, f"trial{trial}")


def summarize(per_trial: Sequence[dict], keys: Sequence[str] = METRIC_KEYS) -> tuple[dict, dict]:
    """(mean, std) per metric over the trials; std is the sample std (ddof=1), None for a single trial."""
    mean, std = {}, {}
    for k in keys:
        values = np.array([r[k] for r in per_trial], np.float64)
        mean[k] = float(values.mean())
        std[k] = float(values.std(ddof=STD_DDOF)) if len(values) > STD_DDOF else None
    return mean, std


def summarize_scores(per_trial: Sequence[dict]) -> dict:
    """{score: {"mean", "std"}} of every score that every trial has (see :func:`summarize`)."""
    if not per_trial:
        return {}
    common = set.intersection(*(set(r.get("scores", {})) for r in per_trial))
    ordered = [name for name in per_trial[0].get("scores", {}) if name in common]
    out = {}
    for name in ordered:
        mean, std = summarize([r["scores"][name] for r in per_trial])
        out[name] = {"mean": mean, "std": std}
    return out


DECISION_NAMES = {"known_acceptance": "known accepted", "unknown_rejection": "unknown rejected", "ccr": "CCR",
                  "open_set_accuracy": "open-set accuracy", "macro_f1": "macro-F1 (K + 1)"}
DECISION_KEYS = tuple(DECISION_NAMES)
UNKNOWN_SET_KEYS = ("auroc", "fpr95", "aupr_out", "rejected")


def _summarize_present(rows: Sequence[dict], keys: Sequence[str]) -> dict:
    """{"mean", "std"} of the keys that hold a number in every row (a fraction rejected is None when uncalibrated)."""
    present = [k for k in keys if all(isinstance(r.get(k), (int, float)) for r in rows)]
    mean, std = summarize(rows, present)
    return {"mean": mean, "std": std}


def summarize_decisions(per_trial: Sequence[dict]) -> dict:
    """{score: {"mean", "std"}} of the figures at the calibrated threshold (:data:`DECISION_KEYS`), for the scores
    that every trial has calibrated."""
    points = [r.get("operating_points") or {} for r in per_trial]
    common = set.intersection(*(set(p) for p in points)) if points else set()
    return {name: _summarize_present([p[name] for p in points], DECISION_KEYS)
            for name in (points[0] if points else {}) if name in common}


def summarize_unknown_sets(per_trial: Sequence[dict]) -> dict:
    """{set: {score: {"mean", "std"}}} of AUROC, FPR95, AUPR-out and the fraction rejected against each set of
    unknowns from another dataset that every trial scored."""
    sets = [r.get("unknown_sets") or {} for r in per_trial]
    common = set.intersection(*(set(s) for s in sets)) if sets else set()
    out = {}
    for name in (sets[0] if sets else {}):
        if name in common:
            scores = set.intersection(*(set(s[name]) for s in sets))
            out[name] = {score: _summarize_present([s[name][score] for s in sets], UNKNOWN_SET_KEYS)
                         for score in sets[0][name] if score in scores}
    return out


def trial_decisions(results: dict) -> dict:
    """What a sweep keeps of one run's decisions: every score's figures at the calibrated threshold (without the
    confusion matrix), and per set of unknowns from another dataset, per score, its four figures."""
    points = {name: {k: m["operating_point"][k] for k in DECISION_KEYS}
              for name, m in results.get("scores", {}).items() if "error" not in m.get("operating_point", {"error": 1})}
    sets = {name: {score: dict(m) for score, m in entry["scores"].items()}
            for name, entry in (results.get("unknown_sets") or {}).items()}
    return {"operating_points": points, "unknown_sets": sets}


def _reusable_results(cfg: Config, data_fingerprint: Callable[[Config], str], log: Callable[[str], None]) -> dict | None:
    """The trial's final results on its data now, or None when it has none (it is then trained or evaluated); a
    ValueError when they come from a different config (another sweep in the same directory)."""
    from cac_jax.runs import run as run_lib

    path = os.path.join(cfg.resolved_workdir, run_lib.RESULTS_FILE)
    results = run_lib.read_results(path)
    if results is None:
        return None
    diffs = run_lib.config_diffs(results.get("config", {}), cfg)
    if diffs:
        raise ValueError(f"{path} holds results of a different config ({'; '.join(diffs)}); "
                         f"choose another sweep --workdir")
    why = run_lib.not_final_because(results, data_fingerprint(cfg))
    missing = [k for k in METRIC_KEYS if k not in results]
    if why is None and missing:
        why = f"it lacks the metrics {missing} (an older evaluation)"
    if why is not None:
        log(f"{cfg.method} trial {cfg.trial}: {path} is not reused ({why}); finishing the trial")
        return None
    return results


def run_sweep(base: Config, trials: Sequence[int] = DEFAULT_TRIALS, workdir: str | None = None, *,
              load_data: Callable[[Config], object] | None = None, parallel: int = 1,
              log: Callable[[str], None] = print) -> dict:
    """Train and evaluate ``base`` on every trial (skipping finished ones), then write the sweep's
    results.json, results.md and roc.png into ``workdir``. ``load_data(cfg)`` supplies a trial's data
    (default: the config's own data). ``parallel`` > 1 trains that many trials at once, each in its own
    process (:mod:`cac_jax.runs.parallel_trials`; they load their own data). Returns the sweep results."""
    from cac_jax.runs import run as run_lib

    if not trials:
        raise ValueError("a sweep needs at least one trial")
    if parallel > 1 and load_data is not None:
        raise ValueError("parallel trials load their own data in their own processes; give load_data or parallel")
    if parallel > 1 and distributed.in_job():
        raise ValueError(f"--parallel {parallel} starts processes of its own, which a job of "
                         f"{distributed.process_count()} processes cannot: in such a job every trial runs on all "
                         f"processes, one after another (leave out --parallel)")
    workdir = workdir or default_workdir(base)
    with run_lib.hold(workdir):
        return _run_sweep(base, trials, workdir, load_data=load_data, parallel=parallel, log=log)


def _run_sweep(base, trials, workdir, *, load_data, parallel, log) -> dict:
    from cac_jax.data import loading
    from cac_jax.runs import run as run_lib
    from cac_jax.training import loop as train

    load = load_data or train.load_data
    cfgs = {k: base.replace(trial=k, workdir=trial_workdir(workdir, k)) for k in trials}
    fingerprints = {}

    def data_fingerprint(cfg):
        if cfg.trial not in fingerprints:
            fingerprints[cfg.trial] = loading.fingerprint(load(cfg))
        return fingerprints[cfg.trial]

    done = {k: _reusable_results(cfg, data_fingerprint, log) for k, cfg in cfgs.items()}
    todo = [k for k in trials if done[k] is None]
    for k in trials:
        if done[k] is not None:
            log(f"{base.method} trial {k}: finished before, reusing {cfgs[k].resolved_workdir}/results.json")
    if parallel > 1 and len(todo) > 1:
        from cac_jax.runs import parallel_trials

        load(cfgs[todo[0]])  # prepares and checks the data once, with one clear error
        done.update(parallel_trials.run_trials([cfgs[k] for k in todo], parallel, log=log))
    else:
        for k in todo:
            log(f"{base.method} trial {k}: training in {cfgs[k].resolved_workdir}")
            done[k] = run_lib.run(cfgs[k], load_data(cfgs[k]) if load_data else None)
    per_trial = []
    for k in trials:
        results = done[k]
        log(f"{base.method} trial {k}: " + "  ".join(f"{METRIC_NAMES[m]} {results[m]:.4f}" for m in METRIC_KEYS))
        valid = {name: m for name, m in results.get("scores", {}).items() if "error" not in m}
        prov = results["provenance"]
        per_trial.append({"trial": k, **{m: results[m] for m in METRIC_KEYS}, "scores": valid, **trial_decisions(results),
                          "workdir": os.path.abspath(cfgs[k].resolved_workdir), "status": prov["status"],
                          "data_fingerprint": prov["data_fingerprint"]})
    mean, std = summarize(per_trial)
    sweep = {"experiment": base.experiment, "dataset": base.dataset, "method": base.method,
             "objective": base.objective, "score": headline_score(base.method), "trials": list(trials),
             "per_trial": per_trial, "mean": mean, "std": std, "std_ddof": STD_DDOF,
             "scores": summarize_scores(per_trial), "operating_points": summarize_decisions(per_trial),
             "unknown_sets": summarize_unknown_sets(per_trial), "config": base.replace(workdir=None).to_dict()}
    if distributed.is_primary():
        write_sweep(workdir, sweep)
    return sweep


def sweep_markdown(sweep: dict) -> str:
    """Per-trial rows and a mean ± std row, metrics in %."""
    head = "| trial | " + " | ".join(METRIC_NAMES[m] for m in METRIC_KEYS) + " |"
    c = sweep.get("config", {})
    lines = [f"### {sweep['experiment']} / {sweep['method']} ({len(sweep['per_trial'])} trials; splits "
             f"{c.get('split_family', 'neal2018')}, recipe {c.get('recipe', 'cac2021')})", "",
             head, "|" + " --- |" * (len(METRIC_KEYS) + 1)]
    for r in sweep["per_trial"]:
        lines.append(f"| {r['trial']} | " + " | ".join(f"{100 * r[m]:.2f}" for m in METRIC_KEYS) + " |")
    lines.append("| mean ± std | " + " | ".join(format_pm(sweep["mean"][m], sweep["std"][m]) for m in METRIC_KEYS)
                 + " |")
    if sweep.get("scores"):
        lines += ["", f"Every score of the same {len(sweep['per_trial'])} networks (mean ± std):", "",
                  "| score | " + " | ".join(METRIC_NAMES[m] for m in METRIC_KEYS) + " |",
                  "|" + " --- |" * (len(METRIC_KEYS) + 1)]
        for name, s in sweep["scores"].items():
            mark = " (the method's own)" if name == sweep.get("score") else ""
            lines.append(f"| {name}{mark} | " + " | ".join(format_pm(s["mean"][m], s["std"][m]) for m in METRIC_KEYS)
                         + " |")
    if sweep.get("operating_points"):
        target = sweep.get("config", {}).get("target_acceptance", 0.95)
        lines += ["", f"Decisions at the threshold calibrated on held-out knowns to accept {100 * target:g}% of them "
                      f"(K + 1 classes; mean ± std):", "",
                  "| score | " + " | ".join(DECISION_NAMES.values()) + " |", "|" + " --- |" * (len(DECISION_NAMES) + 1)]
        for name, s in sweep["operating_points"].items():
            lines.append(f"| {name} | " + " | ".join(_pm(s, k) for k in DECISION_NAMES) + " |")
    for set_name, per_score in (sweep.get("unknown_sets") or {}).items():
        lines += ["", f"Unknowns from another dataset, '{set_name}', against the test knowns (mean ± std):", "",
                  "| score | " + " | ".join(UNKNOWN_SET_NAMES.values()) + " |", "|" + " --- |" * (len(UNKNOWN_SET_NAMES) + 1)]
        for name, s in per_score.items():
            lines.append(f"| {name} | " + " | ".join(_pm(s, k) for k in UNKNOWN_SET_NAMES) + " |")
    lines += ["", f"Metrics in %; ± is the sample standard deviation over trials (ddof={sweep.get('std_ddof', STD_DDOF)})."
              " FPR95: lower is better."]
    return "\n".join(lines) + "\n"


UNKNOWN_SET_NAMES = {"auroc": "AUROC", "fpr95": "FPR95", "aupr_out": "AUPR-out",
                     "rejected": "rejected at the calibrated threshold"}


def _pm(stats: dict, key: str) -> str:
    return format_pm(stats["mean"][key], stats["std"][key]) if key in stats["mean"] else "—"


def format_pm(mean: float, std: float | None) -> str:
    """``"mean ± std"`` in % with two decimals (just the mean when std is None)."""
    return f"{100 * mean:.2f}" + (f" ± {100 * std:.2f}" if std is not None else "")


def write_sweep(workdir: str, sweep: dict) -> None:
    storage.write_json(os.path.join(workdir, "results.json"), sweep)
    storage.write_text(os.path.join(workdir, "results.md"), sweep_markdown(sweep))
    write_sweep_roc(workdir, sweep)


def write_sweep_roc(workdir: str, sweep: dict) -> str | None:
    """roc.png with one curve per trial that has saved test scores; None when none has."""
    from cac_jax.evaluation import evaluate
    from cac_jax.runs import plots

    curves = []
    for r in sweep["per_trial"]:
        path = os.path.join(r["workdir"], evaluate.SCORES_FILE)
        if os.path.exists(path):
            out = evaluate.load_outputs(path)
            curves.append((f"trial {r['trial']}", out.known_scores, out.unknown_scores))
    if not curves:
        return None
    return plots.plot_roc(os.path.join(workdir, "roc.png"), curves,
                          title=f"{sweep['experiment']} / {sweep['method']}: ROC per trial")
