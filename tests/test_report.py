"""The report table for hand-made results.json files: our mean ± std, the paper's numbers, and the flags."""

import json
import os

import pytest

from cac_jax import cli
from cac_jax.runs import paper_results
from cac_jax.runs import report
from cac_jax.config import get_experiment
from cac_jax.runs.sweep import METRIC_KEYS, summarize


def _write_sweep(directory, experiment, method, aurocs, **config_changes):
    cfg = get_experiment(experiment).replace(method=method, **config_changes).to_dict()
    per_trial = [{"trial": k, **{m: 0.9 for m in METRIC_KEYS}, "auroc": a} for k, a in enumerate(aurocs)]
    mean, std = summarize(per_trial)
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "results.json"), "w") as f:
        json.dump({"experiment": experiment, "dataset": cfg["dataset"], "method": method,
                   "trials": list(range(len(aurocs))), "per_trial": per_trial, "mean": mean, "std": std,
                   "std_ddof": 1, "config": cfg}, f)
    return str(directory)


def test_report_table(tmp_path):
    mnist = _write_sweep(tmp_path / "mnist" / "cac", "mnist", "cac", [0.99, 0.98, 0.97, 0.98, 0.98])
    cifar = _write_sweep(tmp_path / "cifar" / "ce_msp", "cifar10", "ce_msp", [0.70, 0.74], epochs=(10, 5),
                         npz_path="/data/cifar10_jpeg.npz")
    digits = _write_sweep(tmp_path / "digits" / "ce_distance", "digits", "ce_distance", [0.95] * 5)
    lines = report.report([mnist, cifar, digits]).splitlines()
    assert lines[0].startswith("| benchmark | splits | objective | score | trials | accuracy | AUROC |")
    assert lines[1] == "|" + " --- |" * 13
    # Sweeps of earlier versions (no per-score results): one row each, the method's own score.
    # mnist: AUROC mean 98.00, sample std 0.7071 -> 0.71; paper CAC 99.1 -> delta -1.1; full protocol
    assert lines[2] == ("| mnist | neal2018 | cac | cac | 5 | 90.00 ± 0.00 | 98.00 ± 0.71 | 90.00 ± 0.00 | 90.00 ± 0.00 "
                        "| 99.1 ± 0.5 | 97.8 ± 0.2 | -1.1 | — |")
    assert lines[3] == ("| cifar10 | neal2018 | ce | msp | 2 | 90.00 ± 0.00 | 72.00 ± 2.83 | 90.00 ± 0.00 | 90.00 ± 0.00 "
                        "| 80.1 ± 3.0 | 67.7 ± 3.2 | +4.3 | shortened (epochs 10,5 of 150,50); JPEG data copy; "
                        "2 trials |")
    assert lines[4] == ("| digits | neal2018 | ce | distance | 5 | 90.00 ± 0.00 | 95.00 ± 0.00 | 90.00 ± 0.00 | 90.00 ± 0.00 "
                        "| — | — | — | — |")
    assert "Miller et al. WACV 2021" in lines[6] and "Neal et al." in lines[6]


def test_report_searches_one_level_down_and_accepts_a_single_run(tmp_path, capsys):
    root = tmp_path / "sweeps" / "svhn"
    _write_sweep(root / "ce_msp", "svhn", "ce_msp", [0.9, 0.9])
    _write_sweep(root / "cac", "svhn", "cac", [0.95, 0.93])
    (root / "notes").mkdir()  # no results.json: ignored
    assert [os.path.basename(p) for p in report.find_sweeps([str(root)])] == ["cac", "ce_msp"]
    run = tmp_path / "run"
    run.mkdir()
    cfg = get_experiment("tiny_imagenet").replace(trial=2, epochs=(500, 300)).to_dict()
    (run / "results.json").write_text(json.dumps({"accuracy": 0.8, "auroc": 0.75, "config": cfg}))
    out = tmp_path / "report.md"
    assert cli.main(["report", str(root), str(run), "--output", str(out)]) == 0
    text = capsys.readouterr().out
    assert text == out.read_text()
    assert "| svhn | neal2018 | cac | cac | 2 | 90.00 ± 0.00 | 94.00 ± 1.41 |" in text
    assert "| tiny_imagenet | neal2018 | cac | cac | 1 | 80.00 | 75.00 | — | — | 76.0 ± 1.5 | 57.7 | -1.0 | 1 trial |" in text
    assert cli.main(["report", str(tmp_path / "nothing")]) == 1
    assert "no sweep directory" in capsys.readouterr().err


def test_one_row_per_objective_and_score_published_numbers_only_where_they_match(tmp_path):
    """A CE sweep scored every way: msp is set beside the paper's softmax row, the other scores beside nothing."""
    path = _write_sweep(tmp_path / "ce", "mnist", "ce", [0.98, 0.96])
    with open(os.path.join(path, "results.json")) as f:
        sweep = json.load(f)
    scores = {}
    for name, auroc in (("msp", 0.97), ("max_logit", 0.99), ("openmax", 0.90)):
        mean, std = summarize([{**{m: 0.9 for m in METRIC_KEYS}, "auroc": auroc}] * 2)
        scores[name] = {"mean": mean, "std": std}
    sweep.update(objective="ce", score="msp", scores=scores)
    with open(os.path.join(path, "results.json"), "w") as f:
        json.dump(sweep, f)
    rows = [r for r in report.report([path]).splitlines() if r.startswith("| mnist")]
    assert [r.split(" | ")[2:4] for r in rows] == [["ce", "msp"], ["ce", "max_logit"], ["ce", "openmax"]]
    assert rows[0].split(" | ")[11] == "-0.8"  # 97.0 against the paper's softmax 97.8
    assert rows[1].split(" | ")[11] == "—" and rows[2].split(" | ")[11] == "—"


def test_published_numbers_only_beside_their_own_split_family(tmp_path):
    """Table 1 is on Neal et al.'s splits: a sweep on another family gets no paper column and no delta."""
    for family in ("arpl2020", "cac_random2020"):
        path = _write_sweep(tmp_path / family, "cifar10", "cac", [0.9, 0.92], split_family=family)
        (row,) = [r for r in report.report([path]).splitlines() if r.startswith("| cifar10")]
        cells = row.split(" | ")
        assert cells[1] == family and cells[9:12] == ["—", "—", "—"]


def test_flags():
    cfg = get_experiment("cifar10").to_dict()
    assert report.shortened(cfg) == (False, (150, 50))
    assert report.shortened({**cfg, "epochs": [150, 49]})[0]
    assert not report.shortened({**cfg, "epochs": [200, 50]})[0]
    assert not report.data_copy(cfg) and not report.data_copy({**cfg, "npz_path": "mnist.npz"})
    assert report.data_copy({**cfg, "npz_path": "../shared/data/CIFAR10_JPEG.npz"})


@pytest.mark.parametrize("benchmark", ["mnist", "svhn", "cifar10", "cifar_plus_10", "cifar_plus_50", "tiny_imagenet"])
def test_paper_numbers_match_the_reference(benchmark):
    """The project's copy equals the numbers in ../shared/reference/README.md (when that file is present)."""
    ref = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "reference", "README.md")
    if not os.path.exists(ref):
        pytest.skip("reference README not present")
    text = open(ref).read()
    cac_row = next(line for line in text.splitlines() if line.startswith("| 99.1"))
    cols = ["mnist", "svhn", "cifar10", "cifar_plus_10", "cifar_plus_50", "tiny_imagenet"]
    cell = cac_row.strip("| ").split(" | ")[cols.index(benchmark)]
    mean, std = (float(x) for x in cell.split(" ± "))
    assert paper_results.paper_auroc(benchmark, "cac") == (mean, std)
    softmax = text.split("Softmax-thresholding baseline as quoted in the literature:")[1].split(".\n")[0]
    values = [float(v) for v in softmax.replace(" ", "").split("/")]
    assert paper_results.paper_auroc(benchmark, "softmax")[0] == values[cols.index(benchmark)]
    assert paper_results.paper_auroc("digits", "cac") is None
