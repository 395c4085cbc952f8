"""The report table for hand-made results.json files: our mean ± std, the paper's numbers, and the flags."""

import json
import os

import pytest

from cac_jax import cli
from cac_jax import config
from cac_jax.runs import paper_results
from cac_jax.runs import report
from cac_jax.config import get_experiment
from cac_jax.runs.sweep import METRIC_KEYS, summarize


def _write_sweep(directory, experiment, method, aurocs, *, status="final", **config_changes):
    """A sweep's results.json; ``status=None`` writes one of an earlier version, whose trials record no provenance."""
    cfg = get_experiment(experiment).replace(method=method, **config_changes).to_dict()
    per_trial = [{"trial": k, **{m: 0.9 for m in METRIC_KEYS}, "auroc": a, **({"status": status} if status else {})}
                 for k, a in enumerate(aurocs)]
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
    assert lines[0] == "### splits neal2018, recipe cac2021"
    assert lines[2].startswith("| benchmark | objective | score | trials | accuracy | AUROC |")
    assert lines[3] == "|" + " --- |" * 11
    # Sweeps of earlier versions (no per-score results): one row each, the method's own score.
    # mnist: AUROC mean 98.00, sample std 0.7071 -> 0.71; paper CAC 99.1 -> delta -1.1; full protocol
    assert lines[4] == ("| mnist | cac | cac | 5 | 90.00 ± 0.00 | 98.00 ± 0.71 | 90.00 ± 0.00 | 90.00 ± 0.00 "
                        "| 99.1 ± 0.5 (CAC, Miller et al. Table 1) | -1.1 | — |")
    assert lines[5] == ("| cifar10 | ce | msp | 2 | 90.00 ± 0.00 | 72.00 ± 2.83 | 90.00 ± 0.00 | 90.00 ± 0.00 "
                        "| 67.7 ± 3.2 (softmax, Neal et al. 2018) | +4.3 | shortened (epochs 10,5 of 150,50); "
                        "JPEG data copy; 2 trials |")
    assert lines[6] == ("| digits | ce | distance | 5 | 90.00 ± 0.00 | 95.00 ± 0.00 | 90.00 ± 0.00 | 90.00 ± 0.00 "
                        "| — | — | — |")
    assert "Miller et al. WACV 2021" in lines[8] and "Neal et al." in lines[8] and "Vaze et al." in lines[8]


def test_report_searches_one_level_down_and_accepts_a_single_run(tmp_path, capsys):
    root = tmp_path / "sweeps" / "svhn"
    _write_sweep(root / "ce_msp", "svhn", "ce_msp", [0.9, 0.9])
    _write_sweep(root / "cac", "svhn", "cac", [0.95, 0.93])
    (root / "notes").mkdir()  # no results.json: ignored
    assert [os.path.basename(p) for p in report.find_sweeps([str(root)])] == ["cac", "ce_msp"]
    run = tmp_path / "run"
    run.mkdir()
    cfg = get_experiment("tiny_imagenet").replace(trial=2, epochs=(500, 300)).to_dict()
    (run / "results.json").write_text(json.dumps({"accuracy": 0.8, "auroc": 0.75, "config": cfg,
                                                  "provenance": {"status": "final", "partial_because": []}}))
    out = tmp_path / "report.md"
    assert cli.main(["report", str(root), str(run), "--output", str(out)]) == 0
    text = capsys.readouterr().out
    assert text == out.read_text()
    assert "| svhn | cac | cac | 2 | 90.00 ± 0.00 | 94.00 ± 1.41 |" in text
    assert ("| tiny_imagenet | cac | cac | 1 | 80.00 | 75.00 | — | — | 76.0 ± 1.5 (CAC, Miller et al. Table 1) | -1.0 "
            "| 1 trial |") in text
    assert cli.main(["report", str(tmp_path / "nothing")]) == 1
    assert "no sweep directory" in capsys.readouterr().err


def _with_scores(path, objective, own, aurocs):
    with open(os.path.join(path, "results.json")) as f:
        sweep = json.load(f)
    scores = {}
    for name, auroc in aurocs.items():
        mean, std = summarize([{**{m: 0.9 for m in METRIC_KEYS}, "auroc": auroc}] * 2)
        scores[name] = {"mean": mean, "std": std}
    sweep.update(objective=objective, score=own, scores=scores)
    with open(os.path.join(path, "results.json"), "w") as f:
        json.dump(sweep, f)


def test_one_row_per_objective_and_score_published_numbers_only_where_they_match(tmp_path):
    """A CE sweep scored every way: msp is set beside the paper's softmax row, the other scores beside nothing."""
    path = _write_sweep(tmp_path / "ce", "mnist", "ce", [0.98, 0.96])
    _with_scores(path, "ce", "msp", {"msp": 0.97, "max_logit": 0.99, "openmax": 0.90})
    rows = [r for r in report.report([path]).splitlines() if r.startswith("| mnist")]
    assert [r.split(" | ")[1:3] for r in rows] == [["ce", "msp"], ["ce", "max_logit"], ["ce", "openmax"]]
    assert rows[0].split(" | ")[9] == "-0.8"  # 97.0 against the paper's softmax 97.8
    assert rows[1].split(" | ")[9] == "—" and rows[2].split(" | ")[9] == "—"


def test_published_numbers_only_beside_their_own_split_family_and_recipe(tmp_path):
    """Table 1 is on Neal et al.'s splits with the paper's recipe, Vaze et al.'s MLS on the ARPL splits with theirs:
    each table holds one (family, recipe), and a number is set beside a row only where both match."""
    paths = []
    for family in ("arpl2020", "cac_random2020"):
        paths.append(_write_sweep(tmp_path / family, "cifar10", "cac", [0.9, 0.92], split_family=family))
    vaze = config.apply_overrides(get_experiment("cifar10"), ["recipe=vaze2022", "split_family=arpl2020",
                                                               "method=ce", "epochs=60,0"])
    paths.append(_write_sweep(tmp_path / "vaze_ce", "cifar10", "ce", [0.9, 0.92], **{
        k: v for k, v in vaze.to_dict().items() if k not in ("experiment", "method")}))
    _with_scores(paths[-1], "ce", "msp", {"msp": 0.90, "max_logit": 0.92})
    paths.append(_write_sweep(tmp_path / "neal_vaze", "cifar10", "cac", [0.9, 0.92], recipe="vaze2022"))
    text = report.report(paths)
    tables = text.split("### ")[1:]
    assert [t.splitlines()[0] for t in tables] == ["splits arpl2020, recipe cac2021", "splits cac_random2020, recipe "
                                                   "cac2021", "splits arpl2020, recipe vaze2022",
                                                   "splits neal2018, recipe vaze2022"]
    for t in tables[:2]:
        (row,) = [r for r in t.splitlines() if r.startswith("| cifar10")]
        assert row.split(" | ")[8:10] == ["—", "—"]
    msp, mls = [r.split(" | ") for r in tables[2].splitlines() if r.startswith("| cifar10")]
    assert msp[2] == "msp" and msp[8:10] == ["—", "—"]
    assert mls[2] == "max_logit" and mls[8:10] == ["93.6 (MLS, Vaze et al. Table 1, secondary)", "-1.6"]
    assert mls[10].startswith("shortened (epochs 60,0 of 600,0); 2 trials")
    (row,) = [r for r in tables[3].splitlines() if r.startswith("| cifar10")]
    cells = row.split(" | ")
    assert cells[8:10] == ["—", "—"] and "differs from the recipe: model cac_cnn (recipe classifier32)" in cells[10]
    assert "holdout_val True (recipe False)" in cells[10]


def test_flags():
    cfg = get_experiment("cifar10").to_dict()
    assert report.shortened(cfg) == (False, (150, 50))
    assert report.shortened({**cfg, "epochs": [150, 49]})[0]
    assert not report.shortened({**cfg, "epochs": [200, 50]})[0]
    assert report.shortened({**cfg, "recipe": "vaze2022", "epochs": [100, 0]}) == (True, (600, 0))
    old = {k: v for k, v in cfg.items() if k not in ("recipe", "holdout_val")}  # an earlier version's config
    assert report.shortened(old) == (False, (150, 50)) and config.recipe_deviations(old) == {}
    assert report.shortened({**cfg, "experiment": "mine"}) == (False, None)  # no recipe to compare with
    assert config.recipe_deviations({**cfg, "experiment": "mine"}) == {}
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


def test_vaze_mls_numbers_match_the_modern_protocol_note():
    """MODERN_PROTOCOL.md (c), with its provenance: secondary, MNIST unverified."""
    values = dict(zip(paper_results.BENCHMARKS, (99.3, 97.1, 93.6, 97.9, 96.5, 83.0)))
    for benchmark, value in values.items():
        found = paper_results.published("arpl2020", "vaze2022", "ce", "max_logit", benchmark)
        assert found.mean == value and found.std is None
        assert found.source.endswith("unverified" if benchmark == "mnist" else "secondary")
    assert paper_results.published("arpl2020", "vaze2022", "cac", "cac", "cifar10") is None
    assert paper_results.published("neal2018", "vaze2022", "ce", "max_logit", "cifar10") is None


def test_a_cifar_plus_10_network_scored_on_cifar_plus_50_stands_beside_cifar_plus_50(tmp_path):
    """`eval --set dataset=cifar_plus_50` of a CIFAR+10 run (the original's protocol): the benchmark is the dataset
    evaluated, with CIFAR+50's published number; the config is the CIFAR+10 experiment's, which it follows."""
    cfg = get_experiment("cifar_plus_10").replace(dataset="cifar_plus_50").to_dict()
    (tmp_path / "results.json").write_text(json.dumps({"accuracy": 0.9, "auroc": 0.88, "config": cfg,
                                                       "provenance": {"status": "final", "partial_because": []}}))
    row = next(line for line in report.report([str(tmp_path)]).splitlines() if line.startswith("| cifar_plus"))
    published = paper_results.published("neal2018", "cac2021", "cac", "cac", "cifar_plus_50")
    assert row.startswith("| cifar_plus_50 | cac | cac | 1 |") and f"{published.mean:.1f}" in row
    assert "differs from the recipe" not in row


def test_unknowns_from_other_datasets_get_their_own_table_the_methods_score_first():
    stats = {"mean": {"auroc": 0.9, "fpr95": 0.2, "rejected": 0.5}, "std": {"auroc": 0.01, "fpr95": 0.02, "rejected": 0.1}}
    sweep = {"experiment": "digits", "dataset": "digits", "method": "cac", "objective": "cac", "score": "cac",
             "per_trial": [{"trial": 0, "status": "final"}, {"trial": 1, "status": "final"}],
             "config": get_experiment("digits").to_dict(),
             "unknown_sets": {"noise": {"msp": stats, "cac": {**stats, "mean": {"auroc": 0.8, "fpr95": 0.3}}}}}
    lines = report.unknown_sets_table([sweep])
    assert lines[0] == "### unknowns from other datasets"
    rows = [line for line in lines if line.startswith("| digits")]
    assert rows[0].startswith("| digits | cac | noise | cac | 2 | 80.00 ± 1.00 | 30.00 ± 2.00 | — |")  # uncalibrated
    assert rows[1].startswith("| digits | cac | noise | msp | 2 | 90.00 ± 1.00 | 20.00 ± 2.00 | 50.00 ± 10.00 |")
    assert report.unknown_sets_table([{**sweep, "unknown_sets": {}}]) == []
