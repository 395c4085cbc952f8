"""From a trained run to decisions, end to end on digits: calibration in results.json and calibration.npz, unknowns
from other datasets, ``cac-jax predict`` and ``cac_jax.load(W).predict`` giving what ``eval`` gives, and their bad
inputs, each one line naming what is wrong."""

import csv
import json
import os

import numpy as np
import pytest
from PIL import Image

import cac_jax
from cac_jax import cli
from cac_jax.core import decisions
from cac_jax.data import external
from cac_jax.evaluation import calibration, evaluate


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A short digits run, evaluated with two sets of unknowns from elsewhere."""
    workdir = str(tmp_path_factory.mktemp("decisions") / "run")
    assert cli.main(["train", "--workdir", workdir, "--epochs", "2,1", "--no-progress",
                     "--unknowns", "noise=noise:gaussian", "--unknowns", "flat=noise:uniform"]) == 0
    return workdir


def _results(workdir):
    return json.loads(open(os.path.join(workdir, "results.json")).read())


def test_every_score_is_calibrated_on_the_validation_split_and_decides_k_plus_1_classes(run):
    r = _results(run)
    cal = r["calibration"]
    assert cal["status"] == "calibrated" and cal["target"] == 0.95 and "validation split" in cal["source"]
    saved = calibration.load(os.path.join(run, calibration.FILE))
    out = evaluate.load_outputs(os.path.join(run, evaluate.SCORES_FILE))
    assert set(saved.scores) == set(out.scores) and saved.meta["checkpoint"]["kind"] == "best"
    for name, m in r["scores"].items():
        point = m["operating_point"]
        held = out.scores[name]["calibration_scores"]
        assert len(held) == cal["n"] and point["threshold"] == decisions.threshold(held, 0.95)
        np.testing.assert_array_equal(saved.scores[name], np.sort(held))
        accepted = out.scores[name]["known_scores"] <= point["threshold"]
        assert point["known_acceptance"] == pytest.approx(accepted.mean())
        assert np.asarray(point["confusion"]).shape == (7, 7) and np.sum(point["confusion"]) == (
            r["num_known_test"] + r["num_unknown_test"])
        # The oracle is apart, and labelled as such.
        assert "known_acceptance" in r["oracle"]["scores"][name]
    assert "Youden" in r["oracle"]["note"] and r["operating_point"] == r["scores"][r["score"]]["operating_point"]
    assert r["class_names"] == ["0", "1", "2", "4", "5", "9"]  # digits trial 0 knows these, by name
    assert os.path.exists(os.path.join(run, "confusion.png"))


def test_unknowns_from_other_datasets_get_their_metrics_plots_and_table(run, capsys):
    r = _results(run)
    assert set(r["unknown_sets"]) == {"noise", "flat"}
    out = evaluate.load_outputs(os.path.join(run, evaluate.SCORES_FILE))
    for name, entry in r["unknown_sets"].items():
        assert entry["n"] == external.NOISE_COUNT and entry["source"].startswith("noise:")
        for score, m in entry["scores"].items():
            values = out.external[name][score]
            t = r["scores"][score]["operating_point"]["threshold"]
            assert m["rejected"] == pytest.approx(np.mean(values > t))
            assert 0 <= m["auroc"] <= 1 and 0 <= m["fpr95"] <= 1
        assert os.path.exists(os.path.join(run, f"roc_unknowns_{name}.png"))
    assert cli.main(["eval", "--workdir", run, "--no-progress", "--unknowns", "noise=noise:gaussian"]) == 0
    printed = capsys.readouterr().out
    assert "decisions at the calibrated threshold: 95% of held-out knowns accepted" in printed
    assert "unknowns 'noise' (1000 images of noise:gaussian)" in printed and "flat" not in printed


def test_predict_cli_and_api_give_what_eval_gives_on_the_test_images(run, tmp_path, capsys):
    out = evaluate.load_outputs(os.path.join(run, evaluate.SCORES_FILE))
    from cac_jax.training import loop as train
    from cac_jax import config as config_lib

    data = train.load_data(config_lib.load_config(os.path.join(run, "config.json")))
    images = data.test_known.images
    np.savez(tmp_path / "known.npz", x_test=images[..., 0])  # (n, 8, 8): grey, without the channel axis
    prefix = str(tmp_path / "p")
    assert cli.main(["predict", "--workdir", run, str(tmp_path / "known.npz"), "--output", prefix]) == 0
    assert "accepted as known" in capsys.readouterr().out
    rows = list(csv.DictReader(open(prefix + ".csv")))
    assert json.loads(open(prefix + ".json").read())[0]["input"] == rows[0]["input"] == f"{tmp_path}/known.npz[0]"
    own = out.scores[out.score]
    np.testing.assert_allclose([float(r["score_value"]) for r in rows], own["known_scores"], rtol=1e-5, atol=1e-6)
    ids = evaluate.class_ids(data)
    assert [int(r["class_id"]) for r in rows] == [ids[k] for k in own["known_pred"]]
    clf = cac_jax.load(run)
    p = clf.predict(images)
    np.testing.assert_array_equal(p.label, own["known_pred"])
    t = _results(run)["operating_point"]["threshold"]
    clear = np.abs(own["known_scores"] - t) > 1e-4  # rounding may move a score sitting on the threshold
    np.testing.assert_array_equal(p.accepted[clear], (own["known_scores"] <= t)[clear])
    assert [r["accepted"] == "True" for r in rows] == list(p.accepted)
    np.testing.assert_allclose(p.p_value, decisions.p_values(clf.calibration.scores[out.score], p.score))
    # Another score, and the earlier files kept.
    assert cli.main(["predict", "--workdir", run, str(tmp_path / "known.npz"), "--output", prefix, "--score", "msp"]) == 0
    assert os.path.exists(prefix + ".1.csv") and os.path.exists(prefix + ".1.json")
    assert {r["score"] for r in csv.DictReader(open(prefix + ".csv"))} == {"msp"}


def test_predict_compiles_one_program_per_batch_shape(run):
    clf = cac_jax.load(run)
    before = clf.programs_compiled()  # shapes other tests compiled stay (256: 219 test images)
    images = np.zeros((300, 8, 8, 1), np.uint8)
    sizes = (1, 3, 300, 7, 300, 2, 1)
    for n in sizes:
        clf.predict(images[:n])
    assert {clf.batch_size(n) for n in sizes} == {1, 2, 4, 8, 512}
    assert clf.programs_compiled() - before == 5


def test_predict_reads_image_files_and_folders_by_the_conversion_rule(run, tmp_path):
    clf = cac_jax.load(run)
    rng = np.random.default_rng(0)
    big = rng.integers(0, 256, (40, 24, 3), np.uint8)  # RGB, another size
    folder = tmp_path / "imgs"
    (folder / "sub").mkdir(parents=True)
    Image.fromarray(big).save(folder / "sub" / "b.png")
    Image.fromarray(big[..., 0]).save(folder / "a.png")
    (folder / "notes.txt").write_text("not an image: skipped by suffix")
    images, names = clf.read_inputs([str(folder)])
    assert names == [str(folder / "a.png"), str(folder / "sub" / "b.png")] and images.shape == (2, 8, 8, 1)
    expected = np.asarray(Image.fromarray(big).convert("L").resize((8, 8), Image.BILINEAR))
    np.testing.assert_array_equal(images[1, ..., 0], expected)


@pytest.mark.parametrize("make, message", [
    (lambda p: np.zeros((2, 8, 8, 3), np.uint8), "images with 3 channels, but the network takes 1"),
    (lambda p: np.zeros((2, 8, 8), np.float32), "images must be uint8"),
    (lambda p: np.zeros((8, 8), np.uint8), "expected images of shape (n, H, W) or (n, H, W, C)"),
])
def test_predict_refuses_arrays_it_cannot_take_naming_them(run, make, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        cac_jax.load(run).predict(make(None))


def test_predict_bad_inputs_are_one_line(run, tmp_path, capsys):
    (tmp_path / "fake.png").write_text("hello")
    np.savez(tmp_path / "rgb.npz", x_test=np.zeros((2, 8, 8, 3), np.uint8))
    np.savez(tmp_path / "other.npz", weights=np.zeros(3))
    cases = [([str(tmp_path / "fake.png")], "fake.png is not an image"),
             ([str(tmp_path / "rgb.npz")], "images with 3 channels, but the network takes 1"),
             ([str(tmp_path / "other.npz")], "no images under x_test, x or images"),
             ([str(tmp_path / "absent.png")], "is neither a file, a directory"),
             (["--score", "nonesuch", str(tmp_path / "rgb.npz")], "score 'nonesuch' is not in")]
    for args, message in cases:
        assert cli.main(["predict", "--workdir", run, "--output", str(tmp_path / "p"), *args]) == 1
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err


def test_a_calibration_of_another_checkpoint_or_a_damaged_one_is_refused(run, tmp_path, capsys):
    import shutil

    copy = str(tmp_path / "copy")
    shutil.copytree(run, copy)
    path = os.path.join(copy, calibration.FILE)
    cal = calibration.load(path)
    cal.meta["checkpoint"]["step"] += 1
    calibration.save(path, cal)
    with pytest.raises(ValueError, match="was made for the best checkpoint of stage 2 at step"):
        cac_jax.load(copy)
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)
    assert cli.main(["predict", "--workdir", copy, os.path.join(copy, "config.json")]) == 1
    err = capsys.readouterr().err
    assert "calibration.npz" in err and "evaluate the run again" in err and len(err.strip().splitlines()) == 1


def test_a_given_calibration_set_must_be_held_out_known_images(run, tmp_path, capsys):
    from cac_jax.training import loop as train
    from cac_jax import config as config_lib

    data = train.load_data(config_lib.load_config(os.path.join(run, "config.json")))
    np.savez(tmp_path / "test.npz", x_test=data.test_known.images)
    np.savez(tmp_path / "strangers.npz", x_test=data.val.images, y_test=np.full(len(data.val), 3))
    np.savez(tmp_path / "val.npz", x_test=data.val.images)
    for name, message in (("test", "are also in the test_known split"), ("strangers", "labels [3] are not known")):
        assert cli.main(["eval", "--workdir", run, "--no-progress", "--calibration", str(tmp_path / f"{name}.npz")]) == 1
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    # ...and refused too when it shares images with the validation split the network was selected on.
    assert cli.main(["eval", "--workdir", run, "--no-progress", "--calibration", str(tmp_path / "val.npz")]) == 1
    assert "also in the val split" in capsys.readouterr().err


def test_a_run_without_held_out_knowns_is_uncalibrated_unless_given_a_set(tmp_path, capsys):
    workdir = str(tmp_path / "all")
    assert cli.main(["train", "--workdir", workdir, "--epochs", "1,1", "--no-progress",
                     "--set", "holdout_val=false"]) == 0
    r = _results(workdir)
    assert r["calibration"]["status"] == "uncalibrated" and "holdout_val=false" in r["calibration"]["source"]
    assert r["operating_point"] is None and all("operating_point" not in m for m in r["scores"].values())
    assert "uncalibrated" in capsys.readouterr().out
    p = cac_jax.load(workdir).predict(np.zeros((3, 8, 8), np.uint8))
    assert p.accepted is None and p.p_value is None and p.decision == list(p.class_name)
    # Held-out known images from elsewhere (here flat images, which the digits do not hold), labelled as a known class.
    blank = np.stack([np.full((8, 8), v, np.uint8) for v in range(0, 250, 10)])
    np.savez(tmp_path / "held.npz", x_test=blank, y_test=np.zeros(len(blank), np.int64))
    assert cli.main(["eval", "--workdir", workdir, "--no-progress", "--calibration", str(tmp_path / "held.npz")]) == 0
    cal = _results(workdir)["calibration"]
    assert cal["status"] == "calibrated" and cal["n"] == len(blank) and "held.npz" in cal["source"]


def test_statistics_too_large_to_keep_are_rebuilt_from_the_training_images(run, tmp_path, monkeypatch):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    path = str(copy / calibration.FILE)
    monkeypatch.setattr(calibration, "MAX_STORED_BYTES", 0)  # as KNN's bank of a real dataset (240 MB for MNIST)
    calibration.save(path, calibration.load(path))
    kept = calibration.load(path)
    assert kept.fitted["knn"] is None and "rebuilt from the training images" in kept.meta["refit"]["knn"]
    assert kept.fitted["msp"] == {}  # nothing to keep, nothing to rebuild
    images = np.random.default_rng(0).integers(0, 256, (9, 8, 8), np.uint8)
    rebuilt = cac_jax.load(str(copy), score="knn").predict(images)
    np.testing.assert_allclose(rebuilt.score, cac_jax.load(run, score="knn").predict(images).score, rtol=1e-5)
