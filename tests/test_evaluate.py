"""Evaluation: class-mean anchors against a direct numpy computation, where flips apply, every method's
prediction and score on hand-made logits, the seven metrics, saved outputs, and the eval-only command."""

import dataclasses
import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from _synthetic import synthetic_data, tiny_config

from cac_jax import cli
from cac_jax.evaluation import evaluate
from cac_jax.evaluation import scores as score_registry
from cac_jax.training import mesh as mesh_lib
from cac_jax import models
from cac_jax.core import cac_score as scores
from cac_jax.runs import run as run_lib
from cac_jax.training import loop as train
from cac_jax.config import Config
from cac_jax.data import ArraySet

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def data():
    return synthetic_data()


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data):
    """A tiny finished run (both stages), evaluated by train.run."""
    workdir = tmp_path_factory.mktemp("run") / "w"
    cfg = tiny_config(workdir, epochs=(1, 1))
    return cfg, run_lib.run(cfg, data)


def _numpy_class_means(model, variables, data, flip):
    """SPEC.md §2 step 2 written out directly: unbatched logits of the (optionally mirrored) train images,
    keep the correctly classified ones (argmax = nearest of the fixed anchors), average per class."""
    images = data.train.images.astype(np.float32)
    views = [images] + ([images[:, :, ::-1, :]] if flip else [])
    logits, labels = [], []
    for v in views:
        x = (v / 255.0 - np.array(data.mean, np.float32)) / np.array(data.std, np.float32)
        logits.append(np.asarray(model.apply(variables, x, train=False)[0]))
        labels.append(data.train.labels)
    logits, labels = np.concatenate(logits).astype(np.float64), np.concatenate(labels)
    correct = logits.argmax(axis=1) == labels
    for k in range(data.num_classes):  # the filter matters for this network, in every class
        assert 0 < (correct & (labels == k)).sum() < (labels == k).sum()
    return np.stack([logits[(labels == k) & correct].mean(axis=0) for k in range(data.num_classes)])


def _small_model_and_data(data):
    """small_cnn at random init with its linear head fitted (least squares on 24 of its 256 features, plain
    and mirrored images) to the labels, and the data with every fourth training label changed, so that
    each class has correctly and wrongly classified training images."""
    model = models.create_model(model="small_cnn", head="anchors", num_classes=3, image_size=8, dropout=0.2)
    variables = models.init_variables(model, jax.random.key(0), 8, 1)
    images = data.train.images.astype(np.float32)
    x = (np.concatenate([images, images[:, :, ::-1, :]]) / 255.0 - 0.2) / 0.3
    _, inter = model.apply(variables, x, train=False, capture_intermediates=True, mutable=["intermediates"])
    features = np.asarray(inter["intermediates"]["encoder"]["__call__"][0])[:, :24]
    targets = 10.0 * np.eye(3)[np.tile(data.train.labels, 2)]
    w, *_ = np.linalg.lstsq(np.hstack([features, np.ones((len(x), 1))]), targets, rcond=None)
    kernel = np.zeros((256, 3), np.float32)
    kernel[:24] = w[:-1]
    variables["params"]["classify"] = {"kernel": kernel, "bias": w[-1].astype(np.float32)}
    labels = data.train.labels
    noisy = np.where(np.arange(len(labels)) % 4 == 0, (labels + 1) % 3, labels).astype(np.int32)
    return model, variables, dataclasses.replace(data, train=ArraySet(data.train.images, noisy))


@pytest.mark.parametrize("flip", [False, True])
def test_class_mean_anchors_equal_numpy(data, flip):
    model, variables, data = _small_model_and_data(data)
    mesh = mesh_lib.make_mesh()
    # batch 40 does not divide the 96 training images: the last batch is padded.
    got = evaluate.class_mean_anchors(model, variables, data, mesh=mesh, flip=flip, batch_size=40)
    np.testing.assert_allclose(got, _numpy_class_means(model, variables, data, flip), rtol=1e-5, atol=1e-5)
    if flip:  # the mirrored copies change the means
        plain = evaluate.class_mean_anchors(model, variables, data, mesh=mesh, flip=False, batch_size=40)
        assert not np.allclose(got, plain)


def test_flipped_copies_only_where_specified():
    cfg = Config()
    for name in ("mnist", "svhn", "digits"):
        assert not evaluate.anchor_flip(cfg, name)
    for name in ("cifar10", "cifar_plus_10", "cifar_plus_50", "tiny_imagenet"):
        assert evaluate.anchor_flip(cfg, name)
    assert evaluate.anchor_flip(cfg.replace(anchor_flip=True), "mnist")
    assert not evaluate.anchor_flip(cfg.replace(anchor_flip=False), "cifar10")


def test_class_means_fall_back_to_all_samples_of_a_class_without_correct_ones():
    logits = np.array([[1.0, 0.0], [3.0, 0.0], [0.0, 5.0], [2.0, 2.0]])
    labels = np.array([0, 0, 1, 1])
    pred = np.array([0, 1, 0, 0])  # class 1 has no correct sample
    np.testing.assert_allclose(score_registry.class_means(logits, labels, 2, keep=pred == labels), [[1.0, 0.0], [1.0, 3.5]])


LN3 = math.log(3.0)


def score_of(name, logits, means=None):
    """(predictions, scores) of the registered score ``name``, with ``means`` as its fitted class means."""
    fitted = {} if means is None else {"means": np.asarray(means, np.float32)}
    return score_registry.get(name)(fitted, jnp.asarray(logits, jnp.float32), None)


def test_msp_and_max_logit_on_hand_made_logits():
    logits = np.array([[LN3, 0.0], [0.0, 0.0], [0.0, 2 * LN3]], np.float32)
    # softmax rows: (3/4, 1/4), (1/2, 1/2), (1/10, 9/10)
    pred, score = score_of("msp", logits)
    np.testing.assert_array_equal(pred, [0, 0, 1])
    np.testing.assert_allclose(score, [0.25, 0.5, 0.1], rtol=1e-6)  # 1 - max softmax
    pred, score = score_of("max_logit", logits)
    np.testing.assert_array_equal(pred, [0, 0, 1])
    np.testing.assert_allclose(score, [-LN3, 0.0, -2 * LN3], rtol=1e-6)


@settings(max_examples=200, deadline=None)
@given(st.integers(2, 12).flatmap(lambda n: hnp.arrays(np.float32, (4, n), elements=st.floats(-60, 60, width=32))))
def test_msp_score_against_a_float64_reference(logits):
    def others(row):  # the probability of every class but the top one, summed in float64: 1 - max softmax
        p = np.exp(row.astype(np.float64) - row.max())
        p /= math.fsum(p)
        return math.fsum(np.delete(p, int(np.argmax(row))))

    want = np.array([others(row) for row in logits])
    _, got = score_of("msp", logits)
    np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=1e-5, atol=1e-30)


def test_msp_score_keeps_confident_samples_apart():
    # max softmax rounds to 1.0 in float32 for all three; their ranking must survive
    logits = np.array([[20.0, 0.0], [25.0, 0.0], [30.0, 1.0]], np.float32)
    _, score = score_of("msp", logits)
    assert np.all(np.diff(np.asarray(score)) < 0) and np.all(np.asarray(score) > 0)
    np.testing.assert_allclose(score, [np.exp(-20.0), np.exp(-25.0), np.exp(-29.0)], rtol=1e-5)


def test_distance_scores_on_hand_made_logits():
    logits = np.array([[0.0, 0.0], [3.0, 4.0], [3.0, 1.0]], np.float32)
    means = np.array([[3.0, 0.0], [0.0, 4.0]])
    # distances to the two means: (3, 4), (4, 3), (1, sqrt(18))
    pred, score = score_of("distance", logits, means)
    np.testing.assert_array_equal(pred, [0, 1, 0])
    np.testing.assert_allclose(score, [3.0, 3.0, 1.0], rtol=1e-6)
    # CAC (and the learnt-centre ablation, scored the same way): min_j d_j (1 - softmin(d)_j)
    s = lambda d: min(dj * (1 - math.exp(-dj) / sum(math.exp(-dk) for dk in d)) for dj in d)  # noqa: E731
    expected = [s([3, 4]), s([4, 3]), s([1, math.sqrt(18)])]
    pred, score = score_of("cac", logits, means)
    np.testing.assert_array_equal(pred, [0, 1, 0])
    np.testing.assert_allclose(score, expected, rtol=1e-5)
    with pytest.raises(ValueError, match="unknown method 'svm'; registered: .*'cac_learnt'"):
        evaluate.headline_score("svm")
    assert [evaluate.headline_score(m) for m in ("cac", "cac_learnt", "ce", "ce_max_logit", "ce_distance")] == [
        "cac", "cac", "msp", "max_logit", "distance"]


def test_open_set_metrics_on_hand_made_scores():
    known, unknown = np.array([0.1, 0.2, 0.3, 0.4]), np.array([0.5, 0.6])
    m = evaluate.open_set_metrics(known, unknown, np.array([0, 1, 1, 2]), np.array([0, 1, 2, 2]))
    assert tuple(m) == evaluate.METRIC_KEYS
    assert m["accuracy"] == 0.75 and m["auroc"] == 1.0 and m["fpr95"] == 0.0
    assert m["oscr"] == pytest.approx(0.75) and m["open_auc"] == pytest.approx(0.75)
    assert m["aupr_in"] == pytest.approx(1.0) and m["aupr_out"] == pytest.approx(1.0)


def test_outputs_round_trip(tmp_path):
    out = evaluate.EvalOutputs(method="ce_msp", known_logits=np.ones((3, 2), np.float32),
                               unknown_logits=np.zeros((2, 2), np.float32), known_labels=np.array([0, 1, 1]),
                               known_pred=np.array([0, 1, 0]), known_scores=np.array([0.1, 0.2, 0.3]),
                               unknown_scores=np.array([0.5, 0.4]))
    evaluate.save_outputs(tmp_path / "s.npz", out)
    back = evaluate.load_outputs(tmp_path / "s.npz")
    assert back.method == "ce_msp" and back.class_means is None and back.train_anchors is None
    np.testing.assert_array_equal(back.known_scores, out.known_scores)
    with pytest.raises(FileNotFoundError, match="evaluate the run first"):
        evaluate.load_outputs(tmp_path / "missing.npz")


def test_run_writes_all_metrics_scores_and_plots(trained):
    cfg, results = trained
    assert set(evaluate.METRIC_KEYS) <= set(results)
    on_disk = json.loads(open(os.path.join(cfg.workdir, "results.json")).read())
    assert all(0 <= on_disk[k] <= 1 for k in evaluate.METRIC_KEYS)
    assert on_disk["anchor_flip"] is False and on_disk["config"]["method"] == "cac"
    out = evaluate.load_outputs(os.path.join(cfg.workdir, evaluate.SCORES_FILE))
    assert len(out.known_scores) == results["num_known_test"] and out.class_means.shape == (3, 3)
    np.testing.assert_allclose(out.train_anchors, 10 * np.eye(3))
    # the saved scores reproduce the metrics
    again = evaluate.open_set_metrics(out.known_scores, out.unknown_scores, out.known_pred, out.known_labels)
    assert again == pytest.approx({k: results[k] for k in evaluate.METRIC_KEYS})
    np.testing.assert_allclose(out.known_scores, scores.open_set_score(out.known_logits, out.class_means), rtol=1e-5)
    for name in ("roc.png", "score_hist.png", "logit_pca.png", "training_curves.png"):
        with open(os.path.join(cfg.workdir, name), "rb") as f:
            assert f.read(8) == PNG_MAGIC


def test_eval_only_from_workdir_and_checkpoint(trained, data, tmp_path, monkeypatch, capsys):
    cfg, results = trained
    monkeypatch.setattr(train, "load_data", lambda c: data)
    assert cli.main(["eval", "--workdir", cfg.workdir]) == 0
    again = json.loads(open(os.path.join(cfg.workdir, "results.json")).read())
    assert again["auroc"] == pytest.approx(results["auroc"]) and again["stage"] == 2
    assert os.path.exists(os.path.join(cfg.workdir, "results.1.json"))  # the earlier results are kept
    assert "OpenAUC" in capsys.readouterr().out
    # stage 1's best checkpoint, outputs into another directory
    other = str(tmp_path / "stage1_eval")
    assert cli.main(["eval", "--checkpoint", os.path.join(cfg.workdir, "checkpoints", "stage1"),
                     "--workdir", other]) == 0
    s1 = json.loads(open(os.path.join(other, "results.json")).read())
    assert s1["stage"] == 1 and s1["checkpoint"] == "best" and os.path.exists(os.path.join(other, "scores.npz"))
    assert cli.main(["eval", "--checkpoint", os.path.join(cfg.workdir, "checkpoints", "stage2", "latest"),
                     "--workdir", str(tmp_path / "latest")]) == 0


def test_eval_only_errors_are_clear(trained, data, tmp_path, monkeypatch, capsys):
    cfg, _ = trained

    def error(argv):
        assert cli.main(argv) == 1
        return capsys.readouterr().err

    assert "no work directory at" in error(["eval", "--workdir", str(tmp_path / "nowhere")])
    (tmp_path / "empty").mkdir()
    assert "no config at" in error(["eval", "--workdir", str(tmp_path / "empty")])
    assert "no checkpoints in" in error(["eval", "--checkpoint", str(tmp_path / "empty")])
    (tmp_path / "odd" / "stage2").mkdir(parents=True)
    assert "not in the layout" in error(["eval", "--checkpoint", str(tmp_path / "odd" / "stage2")])
    assert "name a work directory" in error(["eval"])
    # a config without checkpoints
    (tmp_path / "untrained").mkdir()
    (tmp_path / "untrained" / "config.json").write_text(open(os.path.join(cfg.workdir, "config.json")).read())
    monkeypatch.setattr(train, "load_data", lambda c: data)
    assert "no best checkpoint" in error(["eval", "--workdir", str(tmp_path / "untrained")])
    # a checkpoint that does not fit the data's number of classes
    monkeypatch.setattr(train, "load_data", lambda c: synthetic_data(num_classes=4))
    assert "num_classes: checkpoint 3 vs config 4" in error(["eval", "--workdir", cfg.workdir])


def test_the_readme_score_of_ones_own_runs_through_eval(trained, data, tmp_path, monkeypatch, capsys):
    """The README's example, as written there, registered with `--import` and reported by `cac-jax eval`."""
    readme = open(os.path.join(os.path.dirname(__file__), "..", "README.md")).read()
    block = readme.split("```python\n# my_scores.py")[1].split("```")[0]
    path = tmp_path / "my_scores.py"
    path.write_text("# my_scores.py" + block)
    cfg, _ = trained
    monkeypatch.setattr(train, "load_data", lambda c: data)
    try:
        assert cli.main(["eval", "--workdir", cfg.workdir, "--import", str(path), "--no-progress"]) == 0
    finally:
        score_registry._REGISTRY.pop("msp_t2", None)
    results = json.load(open(os.path.join(cfg.workdir, "results.json")))
    assert {"msp_t2", "msp", "cac", "openmax", "knn", "mahalanobis_features"} <= set(results["scores"])
    assert 0 <= results["scores"]["msp_t2"]["auroc"] <= 1
    out = evaluate.load_outputs(os.path.join(cfg.workdir, evaluate.SCORES_FILE))
    assert out.score == "cac" and len(out.scores["msp_t2"]["unknown_scores"]) == len(out.unknown_scores)
    capsys.readouterr()
    assert cli.main(["eval", "--workdir", cfg.workdir, "--import", "no_such_module_here"]) == 1
    assert "--import no_such_module_here: No module named" in capsys.readouterr().err
