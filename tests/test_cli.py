"""Command line and config overrides: --help, --set parsing, train + eval on digits, the default command."""

import json
import os
import subprocess
import sys

import pytest

from cac_jax import cli
from cac_jax import config


def test_help_lists_options(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    out = capsys.readouterr().out
    for flag in ("--experiment", "--trial", "--data-dir", "--npz", "--workdir", "--seed", "--epochs", "--set"):
        assert flag in out


def test_overrides_parse_by_field_type():
    cfg = config.apply_overrides(config.Config(), ["epochs=2,1", "learning_rates=0.1,0.01", "num_devices=none",
                                                   "distributed=true", "batch_size=32", "anchor_flip=0"])
    assert cfg.epochs == (2, 1) and cfg.learning_rates == (0.1, 0.01)
    assert cfg.num_devices is None and cfg.distributed is True and cfg.batch_size == 32 and cfg.anchor_flip is False
    with pytest.raises(ValueError, match="unknown config key 'batchsize'.*batch_size"):
        config.apply_overrides(config.Config(), ["batchsize=3"])
    with pytest.raises(ValueError, match="batch_size=abc"):
        config.apply_overrides(config.Config(), ["batch_size=abc"])
    with pytest.raises(ValueError, match="method='xyz'"):
        config.apply_overrides(config.Config(), ["method=xyz"])


@pytest.mark.parametrize("name", config.EXPERIMENTS)
def test_experiments_load(name):
    cfg = config.get_experiment(name)
    assert cfg.experiment == name and cfg.learning_rates == (0.01, 0.001)
    assert cfg.model == ("small_cnn" if name == "digits" else "cac_cnn")
    assert "cac-jax train --experiment " + name in sys.modules[f"experiments.{name}"].__doc__


def test_config_round_trips(tmp_path):
    cfg = config.get_experiment("cifar10").replace(trial=3)
    config.save_config(cfg, tmp_path / "config.json")
    assert config.load_config(tmp_path / "config.json") == cfg


def test_train_then_eval_on_digits(tmp_path, capsys):
    workdir = str(tmp_path / "run")
    assert cli.main(["train", "--workdir", workdir, "--epochs", "1,1", "--no-progress", "--seed", "1"]) == 0
    results = json.loads(open(os.path.join(workdir, "results.json")).read())
    assert 0 <= results["accuracy"] <= 1 and 0 <= results["auroc"] <= 1
    assert results["config"]["epochs"] == [1, 1] and results["config"]["seed"] == 1
    assert "AUROC" in capsys.readouterr().out
    # A finished run is not retrained.
    assert cli.main(["train", "--workdir", workdir, "--epochs", "1,1", "--no-progress", "--seed", "1"]) == 1
    assert "already holds a finished run" in capsys.readouterr().err
    # eval re-evaluates the best checkpoint; the earlier results file is kept.
    assert cli.main(["eval", "--workdir", workdir, "--no-progress"]) == 0
    again = json.loads(open(os.path.join(workdir, "results.json")).read())
    assert again["accuracy"] == results["accuracy"] and again["auroc"] == pytest.approx(results["auroc"])
    assert os.path.exists(os.path.join(workdir, "results.1.json"))
    prov = again["provenance"]
    assert prov["status"] == "final" and prov["stage"] == 2 and prov["checkpoint"] == "best"
    assert prov["trained_config"]["seed"] == 1 and prov["data_fingerprint"] == prov["trained_on_data"]
    # eval may change evaluation settings only.
    for setting in ("trial=1", "split_family=arpl2020", "experiment=mnist", "alpha=5", "recipe=vaze2022"):
        assert cli.main(["eval", "--workdir", workdir, "--no-progress", "--set", setting]) == 1
        err = capsys.readouterr().err
        assert f"eval --set {setting.split('=')[0]}" in err and len(err.strip().splitlines()) == 1, err
    # Any checkpoint but the best of the last, finished stage gives a partial result, said so.
    assert cli.main(["eval", "--checkpoint", os.path.join(workdir, "checkpoints", "stage1", "latest"),
                     "--no-progress", "--set", "eval_batch_size=100"]) == 0
    assert "PARTIAL result (the latest checkpoint" in capsys.readouterr().out
    partial = json.loads(open(os.path.join(workdir, "results.json")).read())["provenance"]
    assert partial["status"] == "partial" and partial["evaluation"]["eval_batch_size"] == 100
    # ... which `train` does not take for a finished run: it evaluates the final network again.
    assert cli.main(["train", "--workdir", workdir, "--epochs", "1,1", "--no-progress", "--seed", "1"]) == 0
    final = json.loads(open(os.path.join(workdir, "results.json")).read())
    assert final["provenance"]["status"] == "final" and final["auroc"] == pytest.approx(results["auroc"])


@pytest.mark.parametrize("setting, message", [
    ("learning_rates=-0.01,0.001", "learning_rates=(-0.01, 0.001): every value must be finite and lie in (0, inf)"),
    ("learning_rates=0,0", "learning_rates=(0.0, 0.0)"), ("lbda=-1", "lbda=-1.0"), ("weight_decay=-1", "weight_decay"),
    ("dropout=1.5", "dropout=1.5: every value must be finite and lie in [0, 1)"), ("alpha=nan", "alpha=nan"),
    ("epochs=0,0", "epochs=(0, 0) with stages=both trains nothing"), ("seed=99999999999", "seed must lie in"),
    ("trial=5", "trial must lie in 0..4"), ("momentum=1", "momentum"), ("checkpoint_every_steps=-1", "checkpoint_every"),
])
def test_nonsense_settings_are_refused_before_any_work(setting, message, tmp_path, capsys):
    assert cli.main(["train", "--workdir", str(tmp_path / "w"), "--set", setting]) == 1
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "w").exists()


def test_an_unexpected_error_is_one_line_and_debug_shows_its_traceback(monkeypatch, capsys):
    def bug(args):
        raise ZeroDivisionError("a bug")

    monkeypatch.setitem(cli.COMMANDS, "report", bug)
    assert cli.main(["report", "x"]) == 1
    err = capsys.readouterr().err
    assert err == ("cac-jax report: error: unexpected ZeroDivisionError: a bug (run again with --debug for the "
                   "traceback, and please report it)\n")
    assert cli.main(["--debug", "report", "x"]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and err.endswith("please report it)\n")


@pytest.mark.slow
def test_default_command_reaches_targets(tmp_path):
    """`cac-jax train` with no arguments (run in tmp_path, so its default workdir is runs/digits/trial0 there),
    with an empty compilation cache, then again into another work directory: the repeat compiles nothing."""
    env = dict(os.environ, CAC_JAX_COMPILATION_CACHE=str(tmp_path / "cache"))
    runs = []
    for argv in ([], ["--workdir", "again"]):
        out = subprocess.run([sys.executable, "-m", "cac_jax", "train", "--no-progress", *argv], cwd=tmp_path,
                             env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-3000:]
        assert "XLA compilations" in out.stdout  # the summary says where the time went
        runs.append(json.loads((tmp_path / (argv[-1] if argv else "runs/digits/trial0") / "results.json").read_text()))
    for results in runs:
        assert results["accuracy"] >= 0.97 and results["auroc"] >= 0.95
        assert results["total_seconds"] < 120
    cold, warm = (r["timings"] for r in runs)
    assert cold["compilations"] + cold["compile_cache_hits"] <= 12
    assert warm["compilations"] == 0 and warm["compile_cache_hits"] == cold["compilations"] + cold["compile_cache_hits"]
    assert warm["compile"] < cold["compile"]
    # The same network and results, whether its programs were compiled or read from the cache.
    assert runs[1]["auroc"] == runs[0]["auroc"] and runs[1]["accuracy"] == runs[0]["accuracy"]
