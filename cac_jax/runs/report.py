"""``cac-jax report``: our sweeps (mean ± std over trials) next to the published numbers, as Markdown.

One table per (split family, recipe), so numbers of different splits or training recipes never share a
column; in it one row per (objective, score) of each sweep (every network is scored by every score; a sweep
of an earlier version, without them, gives one row): benchmark, objective, score, number of trials, our
accuracy, AUROC, OSCR and FPR95 (mean ± sample std, in %), the published AUROC of the same objective and
score under the same split family and recipe (:mod:`cac_jax.runs.paper_results`: CAC's Table 1 and Neal et
al.'s softmax beside ``neal2018``/``cac2021`` sweeps, Vaze et al.'s MLS beside ``arpl2020``/``vaze2022``
ones; "—" where none is published, e.g. digits), our AUROC minus it, and notes:

* **shortened**: some stage ran fewer epochs than its recipe gives (``cac2021``: the experiment module's
  defaults, ``experiments/<name>.py``; ``vaze2022``: 600), so the run is not the full protocol;
* **differs from the recipe**: every other recipe field (:data:`cac_jax.config.RECIPE_FIELDS`) the run set
  otherwise, with the recipe's value;
* **JPEG data copy**: the data came from a lossy JPEG copy of the dataset, recognised by "jpeg" in the
  name of the ``npz_path`` file (e.g. ``cifar10_jpeg.npz``), not the original pixels;
* **1 trial** (or n trials) when fewer than the published 5;
* **PARTIAL** (with the reason) for a run's results.json that is not the final result of its run (e.g. an
  evaluation of a stage-1 or ``latest`` checkpoint): no published number is set beside it;
* **provenance unrecorded** for results of an earlier version, which did not say what produced them.

A results.json of a single run (not a sweep) is accepted as a sweep of one trial. A sweep only ever averages
final results (:mod:`cac_jax.runs.sweep`). A file that cannot be read is refused, naming it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from cac_jax import config as config_lib
from cac_jax import objectives, storage
from cac_jax.runs import paper_results
from cac_jax.runs.sweep import format_pm, summarize, summarize_unknown_sets, trial_decisions

PAPER_TRIALS = 5


def shortened(config: dict) -> tuple[bool, tuple[int, ...] | None]:
    """(whether some stage ran fewer epochs than the run's recipe gives, those epochs; None without a recipe)."""
    known = config_lib.saved_recipe(config)
    if known is None:
        return False, None
    run, want = known
    return any(e < d for e, d in zip(run["epochs"], want["epochs"])), tuple(want["epochs"])


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
    results = storage.read_json(file, advice="run the sweep (or evaluate the run) again to rewrite it")
    if "per_trial" in results:
        return results
    if "config" not in results or "auroc" not in results:
        raise ValueError(f"{file} is neither a sweep's nor a run's results.json")
    c = results["config"]
    prov = results.get("provenance")
    recorded = {"status": prov.get("status"), "partial_because": prov.get("partial_because", [])} if prov else {}
    per_trial = [{"trial": c["trial"], **{k: v for k, v in results.items() if isinstance(v, (int, float))},
                  **recorded}]
    keys = [k for k in ("accuracy", "auroc", "oscr", "fpr95") if k in results]
    mean, std = summarize(per_trial, keys)
    valid = {name: m for name, m in results.get("scores", {}).items() if "error" not in m}
    scores = {name: dict(zip(("mean", "std"), summarize([m], keys))) for name, m in valid.items()}
    return {"experiment": c["experiment"], "dataset": c["dataset"], "method": c["method"], "trials": [c["trial"]],
            "per_trial": per_trial, "mean": mean, "std": std, "config": c, "scores": scores,
            "score": results.get("score"), "unknown_sets": summarize_unknown_sets([trial_decisions(results)])}


def find_sweeps(paths: Sequence[str]) -> list[str]:
    """Each path with a results.json, or else its immediate subdirectories that have one (sorted by the
    order of the registered methods, then name)."""
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
        order = {m: i for i, m in enumerate(objectives.methods())}
        found += [os.path.join(p, d) for d in sorted(subs, key=lambda d: (order.get(d, len(order)), d))]
    return found


def _published(value) -> str:
    if value is None:
        return "—"
    return f"{value.mean:.1f}" + (f" ± {value.std:.1f}" if value.std is not None else "") + f" ({value.source})"


def _metric(stats: dict, key: str) -> str:
    if key not in stats["mean"]:
        return "—"
    return format_pm(stats["mean"][key], stats["std"].get(key))


def _objective(sweep: dict) -> str:
    """The sweep's objective (older sweeps recorded only the method; a method not registered here stands for itself)."""
    method = sweep["method"]
    return sweep.get("objective") or (objectives.get(method).name if method in objectives.methods() else method)


def _own_score(sweep: dict) -> str:
    """The method's own score (older sweeps did not record it)."""
    method = sweep["method"]
    return sweep.get("score") or (objectives.headline(method) if method in objectives.methods() else method)


def _rows(sweep: dict) -> list[tuple[str, str, dict]]:
    """(objective, score, {"mean", "std"}) of every score of the sweep, the method's own first."""
    objective, own = _objective(sweep), _own_score(sweep)
    scores = sweep.get("scores") or {own: {"mean": sweep["mean"], "std": sweep["std"]}}
    ordered = sorted(scores, key=lambda name: name != own)
    return [(objective, name, scores[name]) for name in ordered]


def _text(value) -> str:
    return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def partial(sweep: dict) -> str | None:
    """Why some trial of ``sweep`` is not a final result (None: all are; see the module docstring)."""
    for r in sweep["per_trial"]:
        if "status" not in r:
            return None
        if r["status"] != "final":
            return "; ".join(r.get("partial_because") or ["not the run's final result"])
    return None


def notes(config: dict, trials: int, per_trial: Sequence[dict] = ()) -> list[str]:
    """The notes column of a sweep (see the module docstring)."""
    out = []
    why = partial({"per_trial": per_trial})
    if why:
        out.append(f"PARTIAL: {why}")
    elif any("status" not in r for r in per_trial):
        out.append("provenance unrecorded (an earlier version)")
    short, want = shortened(config)
    if short:
        out.append(f"shortened (epochs {_text(config['epochs'])} of {_text(want)})")
    others = {k: v for k, v in config_lib.recipe_deviations(config).items() if k != "epochs"}
    if others:
        out.append("differs from the recipe: " + ", ".join(f"{k} {_text(run)} (recipe {_text(want)})"
                                                          for k, (want, run) in others.items()))
    if data_copy(config):
        out.append("JPEG data copy")
    if trials < PAPER_TRIALS:
        out.append(f"{trials} trial{'s' if trials > 1 else ''}")
    return out


def group(sweep: dict) -> tuple[str, str]:
    """(split family, recipe) of a sweep; a config without them (an earlier version) ran the defaults."""
    c = sweep["config"]
    return c.get("split_family", "neal2018"), c.get("recipe", "cac2021")


def report_rows(sweep: dict) -> list[str]:
    c = sweep["config"]
    # The benchmark is the dataset evaluated: a CIFAR+10 network evaluated on CIFAR+50 stands beside CIFAR+50's.
    benchmark = sweep.get("dataset") or sweep["experiment"]
    family, recipe = group(sweep)
    n = len(sweep["per_trial"])
    note = "; ".join(notes(c, n, sweep["per_trial"])) or "—"
    rows = []
    for objective, score, stats in _rows(sweep):
        paper = None if partial(sweep) else paper_results.published(family, recipe, objective, score, benchmark)
        delta = f"{100 * stats['mean']['auroc'] - paper.mean:+.1f}" if paper else "—"
        cells = [benchmark, objective, score, str(n), _metric(stats, "accuracy"), _metric(stats, "auroc"),
                 _metric(stats, "oscr"), _metric(stats, "fpr95"), _published(paper), delta, note]
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def unknown_sets_table(sweeps: Sequence[dict]) -> list[str]:
    """One row per sweep, set of unknowns from another dataset and score (the method's own first); none without."""
    rows = []
    for sweep in sweeps:
        own = _own_score(sweep)
        note = "; ".join(notes(sweep["config"], len(sweep["per_trial"]), sweep["per_trial"])) or "—"
        for set_name, per_score in (sweep.get("unknown_sets") or {}).items():
            for score in sorted(per_score, key=lambda name: name != own):
                stats = per_score[score]
                cells = [sweep.get("dataset") or sweep["experiment"], _objective(sweep),
                         set_name, score, str(len(sweep["per_trial"])), _metric(stats, "auroc"),
                         _metric(stats, "fpr95"), _metric(stats, "rejected"), note]
                rows.append("| " + " | ".join(cells) + " |")
    if not rows:
        return []
    head = ("| benchmark | objective | unknowns from | score | trials | AUROC | FPR95 | rejected at the calibrated "
            "threshold | notes |")
    return ["### unknowns from other datasets", "", head, "|" + " --- |" * (head.count("|") - 1), *rows, ""]


HEADER = ("| benchmark | objective | score | trials | accuracy | AUROC | OSCR | FPR95 | published AUROC (same splits, "
          "recipe, objective, score) | Δ AUROC | notes |")


def report(paths: Sequence[str]) -> str:
    """The Markdown report of the sweeps in ``paths`` (see the module docstring)."""
    sweeps = [load_sweep(p) for p in find_sweeps(paths)]
    groups = list(dict.fromkeys(group(s) for s in sweeps))
    lines = []
    for family, recipe in groups:
        lines += [f"### splits {family}, recipe {recipe}", "", HEADER, "|" + " --- |" * (HEADER.count("|") - 1)]
        lines += [row for s in sweeps if group(s) == (family, recipe) for row in report_rows(s)]
        lines.append("")
    lines += unknown_sets_table(sweeps)
    lines += ["Ours: mean ± sample std (ddof=1) over trials, in %. Published: AUROC (%) under the same split family and "
              "recipe only -- CAC, Miller et al. WACV 2021 Table 1, as quoted in Table 1 of the NeurIPS-2022 "
              "submission \"Reaching Nirvana\"; softmax baseline from Neal et al. ECCV 2018; MLS, Vaze et al. ICLR "
              "2022 Table 1 (secondary source; MNIST unverified) -- see cac_jax/runs/paper_results.py. Δ: our AUROC "
              "minus the published one. FPR95: lower is better."]
    return "\n".join(lines) + "\n"
