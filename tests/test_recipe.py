"""Training options of the modern recipe: the per-epoch learning-rate schedule, ARPL's label smoothing, Adam."""

import dataclasses
import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _synthetic import synthetic_data, tiny_config

from cac_jax import config as config_lib
from cac_jax.config import Config
from cac_jax.data import with_normalisation
from cac_jax.runs import sweep
from cac_jax.training import checkpoints
from cac_jax.training import loop as train
from cac_jax import objectives
from cac_jax.objectives import cross_entropy
from cac_jax.training import schedules
from cac_jax.training import state as train_state


def test_cosine_warm_restarts_follow_vaze_et_al():
    """MODERN_PROTOCOL.md (b): 600 epochs, 2 restarts (T = 200), 10 warm-up epochs, eta_min = 1e-3 lr."""
    cfg = Config(learning_rates=(0.1, 0.001), epochs=(600, 0), lr_schedule="cosine_warm_restarts", warmup_epochs=10,
                 num_restarts=2)
    lr = [schedules.epoch_learning_rate(cfg, 1, e) for e in range(600)]
    eta_min = 1e-4
    cos = lambda t: eta_min + (0.1 - eta_min) * (1 + math.cos(math.pi * t / 200)) / 2  # noqa: E731
    assert lr[0] == pytest.approx(eta_min)
    for e in range(1, 11):
        assert lr[e] == pytest.approx(eta_min + e / 10 * (cos(10) - eta_min))
    assert lr[10] == pytest.approx(cos(10)) and lr[11] == pytest.approx(cos(10))  # epoch 11 repeats cos(10)
    assert lr[200] == pytest.approx(cos(199)) and lr[201] == pytest.approx(0.1) and lr[401] == pytest.approx(0.1)
    assert min(lr[11:]) >= eta_min and max(lr) == pytest.approx(0.1)
    assert [schedules.epoch_learning_rate(Config(), 2, e) for e in (0, 5)] == [0.001, 0.001]  # the paper's recipe


def test_smoothed_targets_are_arpls_convention():
    q = np.asarray(cross_entropy.smoothed_targets(jnp.array([3]), 20, 0.9))[0]
    assert q[3] == pytest.approx(0.1) and np.delete(q, 3) == pytest.approx(np.full(19, 0.9 / 19))
    assert q.sum() == pytest.approx(1.0)
    logits = jnp.array([[2.0, -1.0, 0.5], [0.0, 3.0, 1.0]])
    labels = jnp.array([0, 2])
    out = objectives.Outputs(logits=logits, distances=None, centres=None)
    ce = objectives.get("ce")
    loss, _ = ce.loss(out, labels, objectives.Settings(alpha=10.0, lbda=0.1, label_smoothing=0.3))
    correct = jnp.sum(ce.predict(out) == labels)
    q = np.array([[0.7, 0.15, 0.15], [0.15, 0.15, 0.7]])
    expected = np.mean(-np.sum(q * np.asarray(jax.nn.log_softmax(logits)), axis=1))
    assert float(loss) == pytest.approx(expected, rel=1e-6) and int(correct) == 1
    with pytest.raises(ValueError, match="label_smoothing=0.1 applies to objectives that use it"):
        Config(method="cac", label_smoothing=0.1)
    with pytest.raises(ValueError, match="lr_schedule='step'"):
        Config(lr_schedule="step")


def test_adam_is_pytorchs_adam_without_its_learning_rate():
    """One step of the lr-free Adam, scaled by lr in the step, against PyTorch's first Adam step in closed form:
    bias-corrected m / (sqrt(v) + eps) = g / (|g| + eps), with the coupled weight decay in g."""
    tx = train_state.make_optimizer(momentum=0.9, weight_decay=0.01, optimizer="adam")
    params = {"w": jnp.array([1.0, -2.0, 0.5])}
    grads = {"w": jnp.array([0.3, 0.0, -4.0])}
    updates, _ = tx.update(grads, tx.init(params), params)
    g = np.array([0.3, 0.0, -4.0]) + 0.01 * np.array([1.0, -2.0, 0.5])
    np.testing.assert_allclose(0.001 * np.asarray(updates["w"]), -0.001 * g / (np.abs(g) + 1e-8), rtol=1e-5)
    assert isinstance(train_state.make_optimizer(momentum=0.9, weight_decay=0.0), optax.GradientTransformation)
    with pytest.raises(ValueError, match="optimizer='lamb'"):
        train_state.make_optimizer(momentum=0.9, weight_decay=0.0, optimizer="lamb")


@pytest.mark.parametrize("changes", [
    dict(method="ce", lr_schedule="cosine_warm_restarts", warmup_epochs=1, num_restarts=1, label_smoothing=0.2,
         epochs=(4, 0), stages="1"),
    dict(method="ce", optimizer="adam", learning_rates=(0.001, 0.0001), epochs=(2, 1)),
    dict(method="cac", augmentation="randaugment", randaugment_m=9, normalisation="vaze2022", epochs=(2, 1)),
])
def test_a_run_with_the_options_trains_and_compiles_its_step_once(tmp_path, changes):
    train._train_step.cache_clear()
    cfg = tiny_config(tmp_path, **changes)
    data = with_normalisation(synthetic_data(), cfg.normalisation)
    ctx = train.make_context(cfg, data)
    assert train.train(ctx)
    assert ctx.train_step._cache_size() == 1  # the schedule's changing lr is an argument, not a new program
    if cfg.normalisation == "vaze2022":
        assert data.mean == (0.4914,) and data.std == (0.2023,)  # CIFAR's statistics; one channel here


def test_work_directories_of_earlier_versions_still_match_their_config():
    """A field an earlier version did not write ran as its default: resuming or reusing such a run is allowed."""
    from cac_jax.runs import run as run_lib

    cfg = Config()
    old = cfg.to_dict()
    for key in ("optimizer", "lr_schedule", "label_smoothing", "warmup_epochs", "num_restarts", "eta_min_fraction",
                "augmentation", "randaugment_n", "randaugment_m", "normalisation", "recipe", "holdout_val"):
        del old[key]
    assert run_lib.config_diffs(old, cfg) == []
    assert run_lib.config_diffs(old, cfg.replace(optimizer="adam")) == ["optimizer: 'sgd' -> 'adam'"]


@pytest.mark.parametrize("experiment", config_lib.EXPERIMENTS)
def test_the_vaze2022_preset_is_their_recipe_for_every_dataset(experiment):
    """MODERN_PROTOCOL.md (b): the per-dataset table and the fixed settings, for each objective."""
    m = {"digits": 8, "mnist": 8, "svhn": 18, "cifar10": 6, "cifar_plus_10": 6, "cifar_plus_50": 6, "tiny_imagenet": 9}
    tiny = experiment == "tiny_imagenet"
    for method in ("ce", "ce_max_logit", "cac"):
        cfg = config_lib.apply_overrides(config_lib.get_experiment(experiment), [f"method={method}", "recipe=vaze2022"])
        assert (cfg.recipe, cfg.model, cfg.batch_size, cfg.epochs, cfg.stages) == ("vaze2022", "classifier32", 128,
                                                                                    (600, 0), "1")
        assert cfg.learning_rates[0] == (0.01 if tiny else 0.1)
        assert (cfg.lr_schedule, cfg.warmup_epochs, cfg.num_restarts, cfg.eta_min_fraction) == (
            "cosine_warm_restarts", 10, 2, 1e-3)
        assert (cfg.optimizer, cfg.weight_decay) == (("adam", 0.0) if tiny else ("sgd", 1e-4)) and cfg.momentum == 0.9
        assert cfg.label_smoothing == (0.9 if tiny and method != "cac" else 0.0)
        assert (cfg.augmentation, cfg.randaugment_n, cfg.randaugment_m) == ("randaugment", 1, m[experiment])
        assert (cfg.normalisation, cfg.dropout, cfg.holdout_val) == ("vaze2022", 0.2, False)
        assert (cfg.alpha, cfg.lbda) == (10.0, 0.1)  # CAC's own hyper-parameters stay the paper's
        assert config_lib.recipe_deviations(cfg) == {}
    assert config_lib.recipe_deviations(config_lib.get_experiment(experiment)) == {}  # cac2021: the modules' values


def test_other_items_override_the_recipe_and_the_deviations_are_named():
    base = config_lib.get_experiment("mnist")
    cfg = config_lib.apply_overrides(base, ["epochs=4,0", "recipe=vaze2022", "warmup_epochs=1"])  # order is free
    assert cfg.epochs == (4, 0) and cfg.warmup_epochs == 1 and cfg.model == "classifier32"
    assert config_lib.recipe_deviations(cfg) == {"epochs": ((600, 0), (4, 0)), "warmup_epochs": (10, 1)}
    back = config_lib.apply_overrides(cfg, ["recipe=cac2021"])
    assert config_lib.recipe_deviations(back) == {} and back.model == "cac_cnn" and back.holdout_val
    assert config_lib.recipe_deviations(base.replace(recipe="vaze2022"))["model"] == ("classifier32", "cac_cnn")
    with pytest.raises(ValueError, match="recipe='adamw' is not one of"):
        config_lib.apply_overrides(base, ["recipe=adamw"])
    with pytest.raises(ValueError, match="method='xx' is not a registered objective"):
        config_lib.apply_overrides(base, ["recipe=vaze2022", "method=xx"])
    with pytest.raises(ValueError, match="holdout_val=false trains on every training image"):
        Config(holdout_val=False, trainval_file="trainval_idxs.json")


def test_default_work_directories_name_the_family_and_recipe():
    cfg = config_lib.apply_overrides(config_lib.get_experiment("mnist"), ["recipe=vaze2022", "split_family=arpl2020"])
    assert cfg.resolved_workdir == os.path.join("runs", "mnist_arpl2020_vaze2022", "trial0")
    assert Config().resolved_workdir == os.path.join("runs", "digits", "trial0")
    assert sweep.default_workdir(cfg) == os.path.join("runs", "sweeps", "mnist_arpl2020_vaze2022", "cac")


def test_holdout_val_false_trains_on_every_known_training_image():
    from cac_jax.data import load_open_set

    held = load_open_set("digits", 0, family="arpl2020")
    full = load_open_set("digits", 0, family="arpl2020", holdout_val=False)
    assert len(full.val) == 0 and len(full.train) == len(held.train) + len(held.val)
    assert full.val.images.shape[1:] == held.train.images.shape[1:]
    assert sorted(np.bincount(full.train.labels).tolist()) == sorted(
        (np.bincount(held.train.labels) + np.bincount(held.val.labels)).tolist())
    with pytest.raises(ValueError, match="holdout_val=False trains on every image"):
        load_open_set("digits", 0, holdout_val=False, trainval_file="x.json")


def test_a_run_without_validation_images_keeps_its_last_network(tmp_path):
    """holdout_val=false: no validation, the stage's last network is what evaluation reads."""
    data = synthetic_data()
    data = dataclasses.replace(data, val=dataclasses.replace(data.val, images=data.val.images[:0],
                                                             labels=data.val.labels[:0]))
    cfg = tiny_config(tmp_path, method="ce", holdout_val=False, epochs=(2, 0), stages="1")
    ctx = train.make_context(cfg, data)
    assert train.train(ctx)
    records = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    epochs = [r for r in records if r["kind"] == "epoch"]
    assert len(epochs) == 2 and not any("val_accuracy" in r for r in epochs)
    assert ctx.timings.as_dict(1.0).get("validate", 0.0) == 0.0
    store = checkpoints.StageCheckpoints(str(tmp_path), 1)
    meta = store.meta("best")
    assert meta["selection_metric"] == "last epoch" and meta["best_epoch"] == 2
    best, _ = train.checkpoint_variables(ctx, 1, "best")
    last, _ = train.checkpoint_variables(ctx, 1, "latest")
    jax.tree.map(np.testing.assert_array_equal, best, last)
    store.close()


def test_vaze2022_normalisation_is_cifars_for_every_dataset():
    grey = synthetic_data()
    assert with_normalisation(grey, "dataset") is grey
    assert with_normalisation(grey, "vaze2022").mean == (0.4914,)
    rgb = dataclasses.replace(grey, channels=3, mean=(0.5,) * 3, std=(0.25,) * 3)
    out = with_normalisation(rgb, "vaze2022")
    assert out.mean == (0.4914, 0.4822, 0.4465) and out.std == (0.2023, 0.1994, 0.2010)
    with pytest.raises(ValueError, match="normalisation='imagenet' is not one of"):
        with_normalisation(rgb, "imagenet")
