"""PNG plots of a run (from its saved test outputs and metrics.jsonl) and of a sweep.

Per run, in the work directory: ``roc.png`` (known vs unknown ROC, unknown = positive), ``score_hist.png``
(histograms of the open-set score of knowns and unknowns), ``logit_pca.png`` (test logits projected on
their first two principal components, with the test-time class means and the training anchors marked) and
``training_curves.png`` (training loss and its terms, train/val accuracy, the val selection loss); for a calibrated
run ``confusion.png`` (the K + 1-class confusion matrix of the method's own score at the calibrated threshold, with
the dataset's class names); per set of unknowns from another dataset, ``roc_unknowns_<set>.png`` (every score).
Per sweep: ``roc.png`` with one curve per trial.

Matplotlib is imported only here, and only through its object API (``Figure`` on the Agg canvas):
no pyplot global state, no backend switch, and the training path never imports it.
"""

from __future__ import annotations

import os

import numpy as np

from cac_jax import storage

RUN_PLOTS = ("roc.png", "score_hist.png", "logit_pca.png", "training_curves.png")


def _figure(width: float = 6.0, height: float = 4.5):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str) -> str:
    fig.tight_layout()
    with storage.atomic_open(path, "wb") as f:
        fig.savefig(f, format="png")
    return path


def roc_points(known_scores, unknown_scores) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) of the ROC curve with the unknowns as the positive class (larger score = unknown)."""
    from sklearn.metrics import roc_curve

    labels = np.concatenate([np.zeros(len(known_scores)), np.ones(len(unknown_scores))])
    fpr, tpr, _ = roc_curve(labels, np.concatenate([known_scores, unknown_scores]))
    return fpr, tpr


def plot_roc(path: str, curves: list[tuple[str, np.ndarray, np.ndarray]], title: str = "ROC (unknown = positive)") -> str:
    """One ROC curve per (label, known_scores, unknown_scores), with the chance diagonal."""
    from cac_jax.core import metrics

    fig = _figure(5.0, 5.0)
    ax = fig.add_subplot()
    for label, known, unknown in curves:
        fpr, tpr = roc_points(known, unknown)
        ax.plot(fpr, tpr, lw=1.5, label=f"{label} (AUROC {metrics.auroc(known, unknown):.3f})")
    ax.plot([0, 1], [0, 1], ls="--", c="0.6", lw=1)
    ax.set(xlabel="false positive rate (knowns flagged unknown)", ylabel="true positive rate (unknowns flagged)",
           xlim=(0, 1), ylim=(0, 1.01), title=title)
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)


def symlog_bins(values: np.ndarray, count: int = 50) -> tuple[np.ndarray, float]:
    """(bin edges equally spaced on a symmetric-log axis, its linear threshold): the scores of confident knowns
    crowd near 0 (CAC, MSP) and would fill one bar of a linear histogram."""
    values = np.asarray(values, np.float64)
    magnitude = np.abs(values[values != 0])
    linthresh = float(np.quantile(magnitude, 0.02)) if len(magnitude) else 1.0
    linthresh = max(linthresh, 1e-30)

    def forward(x):
        return np.sign(x) * np.log1p(np.abs(x) / linthresh)

    def inverse(y):
        return np.sign(y) * linthresh * np.expm1(np.abs(y))

    lo, hi = forward(values.min()), forward(values.max())
    if hi <= lo:
        return np.array([values.min() - 0.5, values.max() + 0.5]), linthresh
    edges = inverse(np.linspace(lo, hi, count + 1))
    edges[0], edges[-1] = values.min(), values.max()  # exactly: the round trip may miss them by an ulp
    return edges, linthresh


def plot_score_hist(path: str, known_scores, unknown_scores, method: str = "") -> str:
    """Histograms of the open-set score of the known and unknown test images (fraction of each set per bin)
    on a symmetric-log axis (:func:`symlog_bins`)."""
    fig = _figure()
    ax = fig.add_subplot()
    known, unknown = np.asarray(known_scores, np.float64), np.asarray(unknown_scores, np.float64)
    bins, linthresh = symlog_bins(np.concatenate([known, unknown]))
    for values, name in ((known, "known"), (unknown, "unknown")):
        ax.hist(values, bins=bins, weights=np.full(len(values), 1.0 / max(len(values), 1)), alpha=0.6,
                label=f"{name} ({len(values)})")
    ax.set_xscale("symlog", linthresh=linthresh)
    ax.set(xlabel=f"open-set score{f' ({method})' if method else ''}; larger = unknown (symlog axis)",
           ylabel="fraction of the set", title="open-set score of the test images")
    ax.legend()
    return _save(fig, path)


def pca_2d(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean (N,), components (2, N)) of the first two principal axes of the rows of ``x``."""
    mean = x.mean(axis=0)
    _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
    comps = vt[:2]
    if comps.shape[0] < 2:  # a single logit dimension: pad with a zero axis
        comps = np.vstack([comps, np.zeros_like(comps)])
    return mean, comps


def plot_logit_pca(path: str, out) -> str:
    """Known test logits coloured by class, unknowns in grey, class means (x) and training anchors (*),
    all projected on the first two principal components of the test logits."""
    fig = _figure(6.0, 5.5)
    ax = fig.add_subplot()
    mean, comps = pca_2d(np.concatenate([out.known_logits, out.unknown_logits]).astype(np.float64))

    def proj(x):
        return (np.asarray(x, np.float64) - mean) @ comps.T

    u = proj(out.unknown_logits)
    ax.scatter(u[:, 0], u[:, 1], s=6, c="0.55", alpha=0.5, label="unknown", rasterized=True)
    k = proj(out.known_logits)
    classes = np.unique(out.known_labels)
    colours = [f"C{i % 10}" for i in range(len(classes))]
    for c, col in zip(classes, colours):
        sel = out.known_labels == c
        ax.scatter(k[sel, 0], k[sel, 1], s=6, c=col, alpha=0.6, label=f"class {c}", rasterized=True)
    if out.class_means is not None:
        m = proj(out.class_means)
        ax.scatter(m[:, 0], m[:, 1], marker="X", s=120, c=colours[: len(m)], edgecolors="k", label="class means")
    if out.train_anchors is not None:
        a = proj(out.train_anchors)
        ax.scatter(a[:, 0], a[:, 1], marker="*", s=160, c=colours[: len(a)], edgecolors="k", label="training anchors")
    ax.set(xlabel="PC 1", ylabel="PC 2", title=f"test logits, PCA ({out.method})")
    ax.legend(fontsize=7, markerscale=1.5, loc="best")
    return _save(fig, path)


def read_metrics(path: str) -> list[dict]:
    """The records of metrics.jsonl; a record repeated by a resumed run (same kind, stage and global step)
    keeps its last occurrence."""
    records = {}
    for r in storage.read_jsonl(path):
        if "kind" in r and "global_step" in r:
            records[(r["kind"], r.get("stage"), r["global_step"])] = r
    return sorted(records.values(), key=lambda r: (r["global_step"], r["kind"]))


def plot_training_curves(path: str, records: list[dict]) -> str:
    """Three panels over global steps: training loss (and anchor/tuplet terms), train and val accuracy,
    the val loss that selects the checkpoint (anchor loss for CAC, CE loss otherwise). Stage 2 restarts
    from stage 1's best epoch, so its curves (dashed) begin at that epoch, at the dotted line."""
    fig = _figure(12.0, 3.8)
    ax_loss, ax_acc, ax_val = fig.subplots(1, 3)
    epochs_all = [r for r in records if r["kind"] == "epoch" and "val_accuracy" in r]  # none if nothing held out
    val_key = "val_anchor_loss" if epochs_all and "val_anchor_loss" in epochs_all[0] else "val_ce_loss"
    for stage, ls in ((1, "-"), (2, "--")):
        train = [r for r in records if r["kind"] == "train" and r.get("stage") == stage]
        epochs = [r for r in epochs_all if r.get("stage") == stage]
        label = (lambda name: name) if stage == 1 else (lambda name: None)
        steps = [r["global_step"] for r in train]
        for i, (key, name) in enumerate((("loss", "loss"), ("anchor_loss", "anchor term"), ("tuplet_loss", "tuplet term"))):
            if train and key in train[0]:
                ax_loss.plot(steps, [r[key] for r in train], ls=ls, c=f"C{i}", lw=1, label=label(name))
        ax_acc.plot(steps, [r["train_accuracy"] for r in train], ls=ls, c="C0", lw=1, label=label("train"))
        if epochs:
            ax_acc.plot([r["global_step"] for r in epochs], [r["val_accuracy"] for r in epochs], ls=ls, c="C1",
                        marker="o", ms=3, label=label("val"))
            ax_val.plot([r["global_step"] for r in epochs], [r.get(val_key, np.nan) for r in epochs], ls=ls,
                        c="C0", marker="o", ms=3)
        if stage == 2 and (train or epochs):
            start = min(r["global_step"] - r["step"] for r in train + epochs)
            for ax in (ax_loss, ax_acc, ax_val):
                ax.axvline(start, ls=":", c="0.5")
    ax_loss.set(xlabel="step", ylabel="training loss", title="training loss (stage 2 dashed)")
    ax_acc.set(xlabel="step", ylabel="accuracy", title="accuracy")
    if epochs_all:
        ax_val.set(xlabel="step", ylabel=val_key, title=f"validation ({val_key})")
    else:
        ax_val.set_axis_off()
        ax_val.text(0.5, 0.5, "no validation images\n(holdout_val=false):\nthe last network is evaluated",
                    ha="center", va="center", transform=ax_val.transAxes)
    for ax in (ax_loss, ax_acc):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    return _save(fig, path)


def plot_confusion(path: str, matrix, names: list[str], title: str) -> str:
    """A (K + 1) x (K + 1) confusion matrix, rows = true class, as counts with each row's share as the colour."""
    m = np.asarray(matrix, np.float64)
    shares = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    side = max(4.0, 0.45 * len(names) + 2.0)
    fig = _figure(side + 1.0, side)
    ax = fig.add_subplot()
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    if len(names) <= 21:
        for (i, j), count in np.ndenumerate(m.astype(np.int64)):
            ax.text(j, i, str(count), ha="center", va="center", fontsize=7,
                    color="white" if shares[i, j] > 0.5 else "black")
    ax.set(xlabel="decision", ylabel="true class", title=title)
    fig.colorbar(image, ax=ax, fraction=0.046, label="share of the row")
    return _save(fig, path)


def write_run_plots(workdir: str, out, results: dict | None = None) -> list[str]:
    """The plots of one run (ROC curves of every score; the histogram of the method's own; training curves only
    when ``metrics.jsonl`` exists; with ``results``, the confusion matrix at the calibrated threshold; an ROC plot
    per set of unknowns from another dataset); returns their paths."""
    own = out.score or out.method
    curves = [(f"{own} (the method's own)", out.known_scores, out.unknown_scores)]
    curves += [(name, v["known_scores"], v["unknown_scores"]) for name, v in out.scores.items() if name != own]
    written = [
        plot_roc(os.path.join(workdir, "roc.png"), curves, title="ROC of every score (unknown = positive)"),
        plot_score_hist(os.path.join(workdir, "score_hist.png"), out.known_scores, out.unknown_scores, own),
        plot_logit_pca(os.path.join(workdir, "logit_pca.png"), out),
    ]
    log = os.path.join(workdir, "metrics.jsonl")
    if os.path.exists(log):
        written.append(plot_training_curves(os.path.join(workdir, "training_curves.png"), read_metrics(log)))
    point = (results or {}).get("operating_point")
    if point and "confusion" in point:
        names = list(results.get("class_names") or range(len(point["confusion"]) - 1)) + ["unknown"]
        written.append(plot_confusion(
            os.path.join(workdir, "confusion.png"), point["confusion"], [str(n) for n in names],
            f"{own} at the calibrated threshold (target {100 * point['target']:.0f}% of knowns accepted)"))
    for name, per_score in out.external.items():
        sets = [(score, out.scores[score]["known_scores"], values) for score, values in per_score.items()
                if score in out.scores]
        written.append(plot_roc(os.path.join(workdir, f"roc_unknowns_{name}.png"), sets,
                                title=f"test knowns against unknowns '{name}' (unknown = positive)"))
    return written
