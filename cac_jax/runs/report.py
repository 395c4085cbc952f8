"""``cac-jax report``: our sweeps (mean ± std over trials) next to the published numbers, as Markdown.

One row per (split family, objective, score) of each sweep (every network is scored by every score; a sweep of an earlier
version, without them, gives one row): benchmark, objective, score, number of trials, our accuracy, AUROC,
OSCR and FPR95 (mean ± sample std, in %), the published AUROC of CAC and of the softmax baseline on that
benchmark (:mod:`cac_jax.runs.paper_results`; "—" where none is published, e.g. digits), the difference
between our AUROC and the published one of the same objective and score (``cac``/``cac`` against CAC,
``ce``/``msp`` against softmax), and notes. The published numbers are Table 1's, on the ``neal2018`` splits: they are set beside sweeps of
that family only (``—`` beside ``cac_random2020`` or ``arpl2020`` sweeps), so numbers of different split
families never share a comparison. The notes:

* **shortened**: some stage ran fewer epochs than the experiment module's defaults
  (``experiments/<name>.py``), so the run is not the paper's protocol;
* **JPEG data copy**: the data came from a lossy JPEG copy of the dataset, recognised by "jpeg" in the
  name of the ``npz_path`` file (e.g. ``cifar10_jpeg.npz``), not the original pixels;
* **1 trial** (or n trials) when fewer than the paper's 5.

A results.json of a single run (not a sweep) is accepted as a sweep of one trial.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

from cac_jax import config as config_lib
from cac_jax.evaluation.evaluate import HEADLINE
from cac_jax.runs import paper_results
from cac_jax.runs.sweep import format_pm, summarize

PAPER_ROW = {("cac", "cac"): "cac", ("ce", "msp"): "softmax"}  # (objective, score) -> the published row
PAPER_TRIALS = 5
PAPER_FAMILY = "neal2018"  # the splits of the published numbers (CAC's Table 1, Neal et al.'s softmax row)


def shortened(config: dict) -> tuple[bool, tuple[int, ...] | None]:
    """(whether some stage ran fewer epochs than the experiment's default, those default epochs or None
    when the experiment is unknown)."""
    try:
        default = config_lib.get_experiment(config["experiment"]).epochs
    except ValueError:
        return False, None
    return any(e < d for e, d in zip(config["epochs"], default)), tuple(default)


def data_copy(config: dict) -> bool:
    """Whether the data came from a JPEG copy (``npz_path`` whose file name contains "jpeg")."""
    path = config.get("npz_path")
    if isinstance(path, dict):
        return any("jpeg" in os.path.basename(str(p)).lower() for p in path.values())
    return bool(path) and "jpeg" in os.path.basename(str(path)).lower()


def load_sweep(path: str) -> dict:
    """The sweep in ``path`` (a directory or its results.json); a single run becomes a one-trial sweep."""
    file = os.path.join(path, "results.json") if os.path.isdir(path) else path
    if not os.path.exists(file):
        raise FileNotFoundError(f"no results.json in {path}: run `cac-jax sweep` first")
    with open(file) as f:
        results = json.load(f)
    if "per_trial" in results:
        return results
    if "config" not in results or "auroc" not in results:
        raise ValueError(f"{file} is neither a sweep's nor a run's results.json")
    c = results["config"]
    per_trial = [{"trial": c["trial"], **{k: v for k, v in results.items() if isinstance(v, (int, float))}}]
    keys = [k for k in ("accuracy", "auroc", "oscr", "fpr95") if k in results]
    mean, std = summarize(per_trial, keys)
    valid = {name: m for name, m in results.get("scores", {}).items() if "error" not in m}
    scores = {name: dict(zip(("mean", "std"), summarize([m], keys))) for name, m in valid.items()}
    return {"experiment": c["experiment"], "dataset": c["dataset"], "method": c["method"], "trials": [c["trial"]],
            "per_trial": per_trial, "mean": mean, "std": std, "config": c, "scores": scores,
            "score": results.get("score")}


def find_sweeps(paths: Sequence[str]) -> list[str]:
    """Each path with a results.json, or else its immediate subdirectories that have one (sorted by the
    order of config.METHODS, then name)."""
    found = []
    for p in paths:
        if os.path.isfile(p) or os.path.exists(os.path.join(p, "results.json")):
            found.append(p)
            continue
        if not os.path.isdir(p):
            raise FileNotFoundError(f"no sweep directory at {p}")
        subs = [d for d in os.listdir(p) if os.path.exists(os.path.join(p, d, "results.json"))]
        if not subs:
            raise FileNotFoundError(f"no results.json in {p} or its subdirectories: run `cac-jax sweep` first")
        order = {m: i for i, m in enumerate(config_lib.METHODS)}
        found += [os.path.join(p, d) for d in sorted(subs, key=lambda d: (order.get(d, len(order)), d))]
    return found


def _paper(benchmark: str, row: str) -> str:
    value = paper_results.paper_auroc(benchmark, row)
    if value is None:
        return "—"
    mean, std = value
    return f"{mean:.1f}" + (f" ± {std:.1f}" if std is not None else "")


def _metric(stats: dict, key: str) -> str:
    if key not in stats["mean"]:
        return "—"
    return format_pm(stats["mean"][key], stats["std"].get(key))


def _rows(sweep: dict) -> list[tuple[str, str, dict]]:
    """(objective, score, {"mean", "std"}) of every score of the sweep, the method's own first."""
    objective = sweep.get("objective") or config_lib.OBJECTIVES.get(sweep["method"], sweep["method"])
    own = sweep.get("score") or HEADLINE.get(sweep["method"], sweep["method"])
    scores = sweep.get("scores") or {own: {"mean": sweep["mean"], "std": sweep["std"]}}
    ordered = sorted(scores, key=lambda name: name != own)
    return [(objective, name, scores[name]) for name in ordered]


def report_rows(sweep: dict) -> list[str]:
    c = sweep["config"]
    benchmark = sweep["experiment"]
    notes = []
    short, default = shortened(c)
    if short:
        notes.append(f"shortened (epochs {','.join(map(str, c['epochs']))} of {','.join(map(str, default))})")
    if data_copy(c):
        notes.append("JPEG data copy")
    n = len(sweep["per_trial"])
    if n < PAPER_TRIALS:
        notes.append(f"{n} trial{'s' if n > 1 else ''}")
    family = c.get("split_family", "neal2018")
    published = family == PAPER_FAMILY
    rows = []
    for objective, score, stats in _rows(sweep):
        paper = paper_results.paper_auroc(benchmark, PAPER_ROW.get((objective, score), "")) if published else None
        delta = f"{100 * stats['mean']['auroc'] - paper[0]:+.1f}" if paper else "—"
        cells = [benchmark, family, objective, score, str(n), _metric(stats, "accuracy"), _metric(stats, "auroc"),
                 _metric(stats, "oscr"), _metric(stats, "fpr95"),
                 _paper(benchmark, "cac") if published else "—", _paper(benchmark, "softmax") if published else "—",
                 delta, "; ".join(notes) or "—"]
        rows.append("| " + " | ".join(cells) + " |")
    return rows


HEADER = ("| benchmark | splits | objective | score | trials | accuracy | AUROC | OSCR | FPR95 | paper CAC AUROC "
          "| paper softmax AUROC | Δ AUROC vs paper | notes |")


def report(paths: Sequence[str]) -> str:
    """The Markdown report of the sweeps in ``paths`` (see the module docstring)."""
    sweeps = [load_sweep(p) for p in find_sweeps(paths)]
    lines = [HEADER, "|" + " --- |" * (HEADER.count("|") - 1)]
    lines += [row for s in sweeps for row in report_rows(s)]
    lines += ["",
              "Ours: mean ± sample std (ddof=1) over trials, in %. Paper: AUROC (%) of CAC, Miller et al. WACV 2021 "
              "Table 1, as quoted in Table 1 of the NeurIPS-2022 submission \"Reaching Nirvana\"; softmax baseline "
              "from Neal et al. ECCV 2018 (see cac_jax/runs/paper_results.py). Δ: our AUROC minus the paper's for the "
              "same objective and score (cac/cac vs CAC, ce/msp vs softmax). FPR95: lower is better."]
    return "\n".join(lines) + "\n"
