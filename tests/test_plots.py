"""Plots are written and are valid PNGs; metrics.jsonl records repeated by a resumed run are read once."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from cac_jax import cli
from cac_jax.evaluation import evaluate
from cac_jax.runs import plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _outputs(method="cac", with_means=True):
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 20)
    known = 10 * np.eye(3)[labels] + rng.normal(size=(60, 3))
    unknown = rng.normal(2.0, 2.0, size=(40, 3))
    means = np.stack([known[labels == k].mean(axis=0) for k in range(3)])
    return evaluate.EvalOutputs(method=method, known_logits=known.astype(np.float32),
                                unknown_logits=unknown.astype(np.float32), known_labels=labels,
                                known_pred=labels, known_scores=rng.random(60), unknown_scores=rng.random(40) + 0.5,
                                class_means=means if with_means else None,
                                train_anchors=10 * np.eye(3) if with_means else None)


def _metrics_log(path):
    recs = []
    for stage, steps in ((1, range(2, 13, 2)), (2, range(8, 13, 2))):  # stage 2 restarts from epoch 2 (step 6)
        for s in steps:
            recs.append({"kind": "train", "stage": stage, "step": s - (6 if stage == 2 else 0), "global_step": s,
                         "loss": 1.0 / s, "anchor_loss": 5.0 / s, "tuplet_loss": 0.5 / s, "train_accuracy": 1 - 1 / s})
            if s % 4 == 0:
                recs.append({"kind": "epoch", "stage": stage, "epoch": s // 4, "step": recs[-1]["step"],
                             "global_step": s, "val_anchor_loss": 3.0 / s, "val_accuracy": 1 - 0.5 / s})
    recs.append(dict(recs[0]))  # a resumed run writes a record again
    with open(path, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in recs)
    return len(recs) - 1


def _assert_png(path):
    with open(path, "rb") as f:
        assert f.read(8) == PNG_MAGIC
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] > 100 and im.size[1] > 100


@pytest.mark.parametrize("method,with_means", [("cac", True), ("ce_msp", False)])
def test_run_plots_are_valid_pngs(tmp_path, method, with_means):
    n = _metrics_log(tmp_path / "metrics.jsonl")
    assert len(plots.read_metrics(tmp_path / "metrics.jsonl")) == n
    written = plots.write_run_plots(str(tmp_path), _outputs(method, with_means))
    assert [os.path.basename(p) for p in written] == list(plots.RUN_PLOTS)
    for p in written:
        _assert_png(p)


def test_training_curves_of_a_run_without_validation(tmp_path):
    """holdout_val=false: epoch records carry no validation metrics; the curves are drawn all the same."""
    _metrics_log(tmp_path / "metrics.jsonl")
    recs = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    recs = [{k: v for k, v in r.items() if not k.startswith("val_")} for r in recs]
    path = plots.plot_training_curves(str(tmp_path / "curves.png"), recs)
    _assert_png(path)


def test_run_plots_without_training_log(tmp_path):
    written = plots.write_run_plots(str(tmp_path), _outputs())
    assert [os.path.basename(p) for p in written] == ["roc.png", "score_hist.png", "logit_pca.png"]


def test_roc_points_unknown_positive():
    # Unknowns scoring higher are found before any known is flagged; swapping the roles loses that.
    fpr, tpr = plots.roc_points(np.array([0.1, 0.2]), np.array([0.3, 0.4]))
    assert tpr[fpr == 0].max() == 1.0
    fpr, tpr = plots.roc_points(np.array([0.3, 0.4]), np.array([0.1, 0.2]))
    assert tpr[fpr < 1].max() == 0.0


def test_plots_command_redraws_from_saved_scores(tmp_path, capsys):
    run = tmp_path / "sweep" / "trial0"
    run.mkdir(parents=True)
    evaluate.save_outputs(run / evaluate.SCORES_FILE, _outputs())
    assert cli.main(["plots", str(run)]) == 0
    for name in ("roc.png", "score_hist.png", "logit_pca.png"):
        _assert_png(run / name)
    sweep = {"experiment": "digits", "method": "cac", "per_trial": [{"trial": 0, "workdir": str(run)}]}
    (tmp_path / "sweep" / "results.json").write_text(json.dumps(sweep))
    assert cli.main(["plots", str(tmp_path / "sweep")]) == 0
    _assert_png(tmp_path / "sweep" / "roc.png")
    assert cli.main(["plots", str(tmp_path)]) == 1
    assert "neither" in capsys.readouterr().err


def test_score_histogram_spreads_the_scores_that_crowd_near_zero():
    """Confident knowns score ~1e-8..1e-1 (CAC, MSP), unknowns ~1..10: a linear axis puts every known in one
    bar; the symlog bins spread them."""
    rng = np.random.default_rng(0)
    known, unknown = 10.0 ** rng.uniform(-8, -1, 500), rng.uniform(1, 10, 200)
    bins, linthresh = plots.symlog_bins(np.concatenate([known, unknown]))
    assert np.all(np.diff(bins) > 0) and bins[0] <= known.min() and bins[-1] >= unknown.max() and linthresh > 0
    assert np.count_nonzero(np.histogram(known, bins)[0]) >= 10
    assert np.count_nonzero(np.histogram(known, np.linspace(0, 10, 51))[0]) == 1
    flat, _ = plots.symlog_bins(np.zeros(5))  # one value: still a valid histogram
    assert len(flat) == 2
