"""Sweeps: statistics, the Markdown table, and resuming after an interruption without rerunning
finished trials."""

import json
import os

import numpy as np
import pytest
from _synthetic import synthetic_data, tiny_config

from cac_jax import cli
from cac_jax import config
from cac_jax.evaluation import scores as score_registry
from cac_jax.runs import sweep
from cac_jax.runs import run as run_lib


@pytest.fixture(scope="module")
def data():
    return synthetic_data()


def test_summarize_uses_the_sample_std():
    rows = [{"auroc": 0.5, "accuracy": 1.0}, {"auroc": 0.7, "accuracy": 1.0}, {"auroc": 0.9, "accuracy": 1.0}]
    mean, std = sweep.summarize(rows, ("auroc", "accuracy"))
    assert mean == pytest.approx({"auroc": 0.7, "accuracy": 1.0})
    assert std == pytest.approx({"auroc": 0.2, "accuracy": 0.0})  # sqrt(((-.2)² + 0 + .2²) / (3 - 1))
    mean, std = sweep.summarize(rows[:1], ("auroc",))
    assert mean == {"auroc": 0.5} and std == {"auroc": None}


def test_sweep_markdown():
    keys = sweep.METRIC_KEYS
    per_trial = [{"trial": 0, **{k: 0.5 for k in keys}}, {"trial": 3, **{k: 0.7 for k in keys}}]
    mean, std = sweep.summarize(per_trial)
    text = sweep.sweep_markdown({"experiment": "digits", "method": "ce_msp", "per_trial": per_trial,
                                 "mean": mean, "std": std, "std_ddof": 1,
                                 "config": {"split_family": "arpl2020", "recipe": "vaze2022"}})
    lines = text.splitlines()
    assert lines[0] == "### digits / ce_msp (2 trials; splits arpl2020, recipe vaze2022)"
    assert lines[2] == "| trial | accuracy | AUROC | OSCR | OpenAUC | FPR95 | AUPR-in | AUPR-out |"
    assert lines[4] == "| 0 | " + " | ".join(["50.00"] * 7) + " |"
    assert lines[5] == "| 3 | " + " | ".join(["70.00"] * 7) + " |"
    assert lines[6] == "| mean ± std | " + " | ".join(["60.00 ± 14.14"] * 7) + " |"


def test_sweep_resumes_without_rerunning_finished_trials(tmp_path, data, monkeypatch):
    base = tiny_config("unused", epochs=(2, 1), checkpoint_every_epochs=1).replace(workdir=None)
    root = str(tmp_path / "sweep")
    calls, real_run = [], run_lib.run

    def run(cfg, d=None, **kw):
        calls.append(cfg.trial)
        if len(calls) == 2:  # trial 1 is killed in epoch 2 of stage 1 (after the epoch-1 checkpoint)
            assert real_run(cfg, d, max_steps=8) is None
            raise KeyboardInterrupt
        return real_run(cfg, d, **kw)

    monkeypatch.setattr(run_lib, "run", run)
    kw = dict(load_data=lambda c: data, log=lambda m: None)
    with pytest.raises(KeyboardInterrupt):
        sweep.run_sweep(base, [0, 1], root, **kw)
    first = os.path.join(root, "trial0", "results.json")
    before = (os.stat(first).st_mtime_ns, open(first).read())
    assert not os.path.exists(os.path.join(root, "trial1", "results.json"))
    assert not os.path.exists(os.path.join(root, "results.json"))

    result = sweep.run_sweep(base, [0, 1], root, **kw)
    assert calls == [0, 1, 1]  # trial 0 was not trained again
    assert (os.stat(first).st_mtime_ns, open(first).read()) == before
    log = [json.loads(line) for line in open(os.path.join(root, "trial1", "metrics.jsonl"))]
    epochs = [(r["stage"], r["epoch"]) for r in log if r["kind"] == "epoch"]
    assert epochs == [(1, 1), (1, 2), (2, epochs[2][1])]  # trial 1 resumed in epoch 2, not restarted
    assert [r["trial"] for r in result["per_trial"]] == [0, 1]
    per = [json.load(open(os.path.join(root, f"trial{k}", "results.json"))) for k in (0, 1)]
    for key in sweep.METRIC_KEYS:
        assert result["mean"][key] == pytest.approx(np.mean([p[key] for p in per]))
        assert result["std"][key] == pytest.approx(np.std([p[key] for p in per], ddof=1))
    on_disk = json.load(open(os.path.join(root, "results.json")))
    assert on_disk["mean"] == pytest.approx(result["mean"]) and on_disk["std_ddof"] == 1
    # Every score of the same networks, summarised the same way.
    assert result["objective"] == "cac" and result["score"] == "cac"
    for name in ("cac", "msp", "energy", "knn"):
        assert result["scores"][name]["mean"]["auroc"] == pytest.approx(np.mean([p["scores"][name]["auroc"] for p in per]))
    assert "Every score of the same 2 networks" in sweep.sweep_markdown(result)
    assert on_disk["config"]["epochs"] == [2, 1] and on_disk["config"]["workdir"] is None
    assert "mean ± std" in open(os.path.join(root, "results.md")).read()
    with open(os.path.join(root, "roc.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"

    # Everything finished: nothing is trained, the same numbers come back.
    assert sweep.run_sweep(base, [0, 1], root, **kw)["mean"] == pytest.approx(result["mean"])
    assert calls == [0, 1, 1]
    # Another config in the same directory is refused, not mixed in.
    with pytest.raises(ValueError, match="different config.*lbda"):
        sweep.run_sweep(base.replace(lbda=0.5), [0, 1], root, **kw)
    # A trial whose results.json is not its final result (an evaluation of a stage-1 checkpoint) is not averaged
    # in: the trial's final network is evaluated again, and the sweep's numbers are the same as before.
    from cac_jax.training import loop as train

    trial1 = base.replace(trial=1, workdir=os.path.join(root, "trial1"))
    partial, _ = run_lib.evaluate_run(train.make_context(trial1, data), stage=1, kind="latest")
    run_lib.write_results(trial1.workdir, partial)
    said = []
    again = sweep.run_sweep(base, [0, 1], root, load_data=lambda c: data, log=said.append)
    assert any("trial1/results.json is not reused (it is a partial result" in m for m in said), said
    assert again["mean"] == pytest.approx(result["mean"]) and calls == [0, 1, 1, 1]
    assert [t["status"] for t in again["per_trial"]] == ["final", "final"]
    # Other data in the same sweep is not mixed in either.
    with pytest.raises(ValueError, match="trained on other data"):
        sweep.run_sweep(base, [0, 1], root, load_data=lambda c: synthetic_data(seed=3), log=said.append)


def test_sweep_command_line():
    parse = cli.build_parser().parse_args
    args = parse(["sweep", "--method", "all", "--trials", "0,2", "--epochs", "1,1"])
    assert cli.sweep_methods(args.method) == ["cac", "cac_learnt", "ce"] and args.trials == [0, 2]
    assert args.experiment == "digits"
    assert parse(["sweep"]).method == "cac" and parse(["sweep"]).trials == [0, 1, 2, 3, 4]
    assert cli.sweep_methods(parse(["sweep", "--method", "cac,ce_msp"]).method) == ["cac", "ce_msp"]
    with pytest.raises(ValueError, match="unknown method.*'svm'.*--import"):
        cli.sweep_methods("svm")
    assert sweep.default_workdir(config.Config()) == os.path.join("runs", "sweeps", "digits", "cac")


def test_parallel_sweep_trains_trials_in_processes_like_a_sequential_run(tmp_path, capsys):
    root = str(tmp_path / "sweep")
    extra = tmp_path / "extra_scores.py"  # a score of one's own reaches the trials' processes through --import
    extra.write_text("import jax.numpy as jnp\nfrom cac_jax.evaluation import scores\n\n\n@scores.register\n"
                     "class NegMean(scores.Score):\n    name = 'neg_mean_test'\n\n"
                     "    def __call__(self, fitted, logits, features):\n"
                     "        return jnp.argmax(logits, -1), -jnp.mean(logits, -1)\n")
    args = ["sweep", "--experiment", "digits", "--trials", "0,1", "--epochs", "1,1", "--no-progress", "--workdir", root]
    try:
        assert cli.main(args + ["--parallel", "2", "--import", str(extra)]) == 0
    finally:
        score_registry._REGISTRY.pop("neg_mean_test", None)
    out = capsys.readouterr().out
    assert "output in" in out and "trial 0: finished" in out and "trial 1: finished" in out
    per = [json.load(open(os.path.join(root, f"trial{k}", "results.json"))) for k in (0, 1)]
    for k, p in enumerate(per):
        log = open(os.path.join(root, f"trial{k}", "train.log")).read()
        assert f"training digits trial {k}" in log and f"AUROC {p['auroc']:.4f}" in log
    summary = json.load(open(os.path.join(root, "results.json")))
    assert [r["trial"] for r in summary["per_trial"]] == [0, 1]
    assert all("neg_mean_test" in p["scores"] for p in per) and "neg_mean_test" in summary["scores"]
    assert summary["mean"]["auroc"] == pytest.approx((per[0]["auroc"] + per[1]["auroc"]) / 2)
    # The child ran exactly what a run in this process runs.
    cfg = config.Config.from_dict(per[0]["config"]).replace(workdir=str(tmp_path / "sequential"))
    here = run_lib.run(cfg)
    assert here["accuracy"] == per[0]["accuracy"] and here["auroc"] == pytest.approx(per[0]["auroc"], abs=1e-6)
    # Run again: every trial is reused, nothing is trained.
    assert cli.main(args + ["--parallel", "2"]) == 0
    assert "training in" not in capsys.readouterr().out


def test_parallel_trials_report_a_failed_trial_with_its_log(tmp_path):
    from cac_jax.runs import parallel_trials

    bad = config.get_experiment("digits").replace(batch_size=100_000, progress=False, workdir=str(tmp_path / "bad"))
    with pytest.raises(parallel_trials.TrialsFailed, match=r"(?s)trial 0: exit code 1.*batch_size=100000 exceeds"):
        parallel_trials.run_trials([bad], 2, log=lambda m: None)


def test_parallel_trials_progress_reads_the_metrics_log(tmp_path):
    from cac_jax.runs import parallel_trials

    cfg = config.get_experiment("digits").replace(workdir=str(tmp_path))
    assert parallel_trials.progress(cfg) == "starting"
    with open(tmp_path / "metrics.jsonl", "w") as f:
        f.write(json.dumps({"kind": "epoch", "stage": 1, "epoch": 3}) + "\n")
        f.write(json.dumps({"kind": "train", "stage": 1, "epoch": 4}) + "\n")
        f.write('{"kind": "epo')  # a line being written
    assert parallel_trials.progress(cfg) == f"stage 1 epoch 3/{sum(cfg.epochs)}"
    with pytest.raises(ValueError, match="parallel must be >= 1, got 0"):
        parallel_trials.run_trials([cfg], 0)


def test_progress_command_lists_every_run_under_a_directory(tmp_path):
    import subprocess
    import sys

    for k, epochs in ((0, 2), (1, None)):
        run = tmp_path / "sweep" / f"trial{k}"
        run.mkdir(parents=True)
        config.save_config(config.get_experiment("digits").replace(trial=k, workdir="elsewhere"), str(run / "config.json"))
        if epochs:
            (run / "metrics.jsonl").write_text(json.dumps({"kind": "epoch", "stage": 1, "epoch": epochs}) + "\n")
    out = subprocess.run([sys.executable, "-m", "cac_jax.runs.parallel_trials", str(tmp_path)], capture_output=True,
                         text=True, check=True).stdout.splitlines()
    total = sum(config.get_experiment("digits").epochs)
    assert out == [f"{tmp_path / 'sweep' / 'trial0'}: stage 1 epoch 2/{total}", f"{tmp_path / 'sweep' / 'trial1'}: starting"]


@pytest.mark.slow
def test_the_readme_modern_protocol_commands_write_and_report_their_default_directories(tmp_path, monkeypatch, capsys):
    """README "The modern protocol": the two sweeps without --workdir, then the report of their default
    directories (on digits, shortened, trial 0)."""
    monkeypatch.chdir(tmp_path)
    short = ["--experiment", "digits", "--trials", "0", "--epochs", "1,0", "--no-progress"]
    assert cli.main(["sweep", *short, "--method", "ce,cac", "--set", "recipe=vaze2022", "--set",
                     "split_family=arpl2020"]) == 0
    assert cli.main(["sweep", *short, "--method", "cac", "--set", "split_family=arpl2020"]) == 0
    assert sorted(os.listdir("runs/sweeps")) == ["digits_arpl2020", "digits_arpl2020_vaze2022"]
    capsys.readouterr()
    assert cli.main(["report", "runs/sweeps/digits_arpl2020_vaze2022", "runs/sweeps/digits_arpl2020"]) == 0
    text = capsys.readouterr().out
    tables = text.split("### ")[1:]
    assert [t.splitlines()[0] for t in tables] == ["splits arpl2020, recipe vaze2022", "splits arpl2020, recipe cac2021"]
    assert {r.split(" | ")[1] for r in tables[0].splitlines() if r.startswith("| digits")} == {"ce", "cac"}
    assert any(r.startswith("| digits | ce | max_logit |") for r in tables[0].splitlines())
    assert any(r.startswith("| digits | cac | cac |") for r in tables[1].splitlines())


def _decided(auroc, rejected, accepted):
    """The decision parts of one run's results.json (two scores, one set of unknowns from elsewhere)."""
    point = {k: accepted for k in sweep.DECISION_KEYS}
    return {"scores": {"cac": {"operating_point": {**point, "confusion": [[1]]}}, "msp": {"operating_point": {"error": "x"}}},
            "unknown_sets": {"noise": {"scores": {"cac": {"auroc": auroc, "fpr95": 0.1, "aupr_out": 0.9, "rejected": rejected},
                                                  "msp": {"auroc": auroc, "fpr95": 0.1, "aupr_out": 0.9, "rejected": None}}}}}


def test_decisions_and_unknown_sets_are_summarized_over_trials_and_tabled():
    per_trial = [sweep.trial_decisions(_decided(0.9, 0.5, 0.95)), sweep.trial_decisions(_decided(0.8, 0.7, 0.97))]
    points = sweep.summarize_decisions(per_trial)
    assert set(points) == {"cac"}  # a score whose operating point failed is left out, not averaged
    assert points["cac"]["mean"]["known_acceptance"] == pytest.approx(0.96)
    sets = sweep.summarize_unknown_sets(per_trial)
    assert sets["noise"]["cac"]["mean"]["auroc"] == pytest.approx(0.85)
    assert sets["noise"]["cac"]["std"]["rejected"] == pytest.approx(np.std([0.5, 0.7], ddof=1))
    assert "rejected" not in sets["noise"]["msp"]["mean"]  # uncalibrated in some trial: no fraction rejected
    zero = {k: 0.0 for k in sweep.METRIC_KEYS}
    text = sweep.sweep_markdown({"experiment": "digits", "method": "cac", "per_trial": [], "mean": zero, "std": zero,
                                 "operating_points": points, "unknown_sets": sets})
    assert "| cac | 96.00 ± 1.41 |" in text and "Unknowns from another dataset, 'noise'" in text
    assert "| msp | 85.00 ± 7.07 | 10.00 ± 0.00 | 90.00 ± 0.00 | — |" in text
