"""The training loop on tiny synthetic data: end to end, fixed anchors, stage 2 from stage 1's best,
kill-and-resume equality, checkpoint mismatch, divergence, and refusing to overwrite a finished run."""

import json
import os
import shutil

import jax
import numpy as np
import pytest
from _synthetic import synthetic_data, tiny_config

from cac_jax.training import checkpoints
from cac_jax.runs import run as run_lib
from cac_jax.training import loop as train


@pytest.fixture(scope="module")
def data():
    return synthetic_data()


def _latest_params(workdir, cfg, data, stage):
    ctx = train.make_context(cfg, data)
    store = checkpoints.StageCheckpoints(workdir, stage)
    state, meta = store.restore("latest", train.initial_state(ctx), ctx.signature)
    return jax.device_get(state), meta


def test_run_end_to_end_writes_results(tmp_path, data):
    cfg = tiny_config(tmp_path / "w")
    results = run_lib.run(cfg, data)
    assert 0 <= results["accuracy"] <= 1 and 0 <= results["auroc"] <= 1
    on_disk = json.loads((tmp_path / "w" / "results.json").read_text())
    assert on_disk["accuracy"] == results["accuracy"] and on_disk["config"]["batch_size"] == 16
    assert on_disk["runtime"]["backend"] == "cpu" and on_disk["runtime"]["jax"] == jax.__version__
    assert json.loads((tmp_path / "w" / "config.json").read_text())["epochs"] == [2, 1]
    timings = results["timings"]
    sections = ("setup", "data", "train", "validate", "checkpoint", "evaluate", "eval_fit_pass", "eval_fits",
                "eval_scored_passes", "outputs", "compile", "other")
    assert all(timings[k] >= 0 for k in sections) and timings["train"] > 0
    assert sum(timings[k] for k in sections) == pytest.approx(timings["total"], abs=0.02)
    assert on_disk["timings"] == timings and results["total_seconds"] == timings["total"]
    records = [json.loads(line) for line in (tmp_path / "w" / "metrics.jsonl").read_text().splitlines()]
    assert {"train", "epoch"} <= {r["kind"] for r in records}
    assert all(np.isfinite(r["loss"]) for r in records if r["kind"] == "train")
    # Anchors never change: stored alpha * I in the last checkpoint of both stages.
    for stage in (1, 2):
        state, meta = _latest_params(str(tmp_path / "w"), cfg, data, stage)
        assert meta["finished"]
        np.testing.assert_array_equal(state.constants["anchors"]["centres"], 10 * np.eye(3))
    # Running the finished run again leaves it untouched.
    with pytest.raises(run_lib.WorkdirError, match="finished run"):
        run_lib.run(cfg, data)
    with pytest.raises(run_lib.WorkdirError, match="different config.*batch_size"):
        run_lib.run(cfg.replace(batch_size=8), data)


def test_stage_two_starts_from_stage_one_best(tmp_path, data):
    cfg = tiny_config(tmp_path, epochs=(3, 1), stages="1")
    ctx = train.make_context(cfg, data)
    assert train.train(ctx)
    best, best_meta = checkpoints.StageCheckpoints(str(tmp_path), 1).restore("best", train.initial_state(ctx),
                                                                            ctx.signature)
    state, meta, _ = train.prepare_stage(train.make_context(cfg.replace(stages="2"), data), 2)
    assert int(state.step) == 0 and meta["start_epoch"] == best_meta["epochs_done"] == best_meta["best_epoch"]
    assert meta["best_value"] is None  # trackers reset
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(best.params)):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(jax.tree.leaves(state.batch_stats), jax.tree.leaves(best.batch_stats)):
        np.testing.assert_array_equal(a, b)
    assert all(not np.asarray(m).any() for m in jax.tree.leaves(state.opt_state))  # fresh momentum


@pytest.mark.parametrize("checkpoint_every", [0, pytest.param(3, marks=pytest.mark.slow)])
def test_kill_and_resume_equals_uninterrupted(tmp_path, data, checkpoint_every):
    cfg = tiny_config(tmp_path / "straight", epochs=(3, 2), checkpoint_every_steps=checkpoint_every)
    ctx = train.make_context(cfg, data)
    assert train.train(ctx)
    killed = cfg.replace(workdir=str(tmp_path / "killed"))
    kctx = train.make_context(killed, data)
    spe = kctx.steps_per_epoch
    assert not train.train(kctx, max_steps=spe + 4)  # "killed" in epoch 2 of stage 1
    assert not train.train(train.make_context(killed, data), max_steps=2)  # killed again, early in stage 2
    assert train.train(train.make_context(killed, data))  # resumed to the end
    for stage in (1, 2):
        a, meta_a = _latest_params(cfg.workdir, cfg, data, stage)
        b, meta_b = _latest_params(killed.workdir, killed, data, stage)
        assert meta_a == meta_b
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
            np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)


def test_train_step_compiles_once_for_both_stages_and_resumes(tmp_path, data):
    """The learning rate is an argument of the step: stage 2, and a run resumed mid-stage, reuse stage 1's program."""
    train._train_step.cache_clear()
    cfg = tiny_config(tmp_path, epochs=(2, 2))
    assert not train.train(train.make_context(cfg, data), max_steps=3)
    ctx = train.make_context(cfg, data)
    assert train.train(ctx)
    assert ctx.train_step._cache_size() == 1


def test_resume_from_a_latest_checkpoint_without_its_best_state(tmp_path, data):
    """``latest`` checkpoints of earlier versions carry no best state: it is read from ``best``, as they wrote it."""
    straight = tiny_config(tmp_path / "straight", epochs=(3, 0), stages="1", checkpoint_every_epochs=1)
    assert train.train(train.make_context(straight, data))
    old = straight.replace(workdir=str(tmp_path / "old"))
    ctx = train.make_context(old, data)
    assert not train.train(ctx, max_steps=2 * ctx.steps_per_epoch + 1)
    store = checkpoints.StageCheckpoints(old.workdir, 1)
    meta = store.meta("latest")
    best, _ = store.restore("latest", train.initial_state(ctx), ctx.signature, item="best")
    store.save("best", int(best.step), best, meta)  # the old layout: best on its own, none inside latest
    store.close()
    step_dir = os.path.join(store.root, "latest", str(meta["step"]))
    shutil.rmtree(os.path.join(step_dir, "best"))
    assert train.train(train.make_context(old, data))
    for kind in ("latest", "best"):
        a = checkpoints.StageCheckpoints(straight.workdir, 1).restore(kind, train.initial_state(ctx), ctx.signature)
        b = checkpoints.StageCheckpoints(old.workdir, 1).restore(kind, train.initial_state(ctx), ctx.signature)
        assert a[1] == b[1]
        for x, y in zip(jax.tree.leaves(a[0]), jax.tree.leaves(b[0])):
            np.testing.assert_array_equal(x, y)


def test_checkpoint_that_does_not_fit_is_a_clear_error(tmp_path, data):
    cfg = tiny_config(tmp_path, epochs=(1, 0), stages="1")
    assert train.train(train.make_context(cfg, data))
    other = synthetic_data(num_classes=4)
    ctx = train.make_context(cfg, other)
    with pytest.raises(ValueError, match="num_classes: checkpoint 3 vs config 4"):
        train.prepare_stage(ctx, 1)


def test_non_finite_loss_stops_with_message(tmp_path, data):
    cfg = tiny_config(tmp_path, learning_rates=(1e30, 1e30), epochs=(3, 1), log_every_steps=1)
    with pytest.raises(train.TrainingDiverged, match="non-finite"):
        run_lib.run(cfg, data)
    store = checkpoints.StageCheckpoints(str(tmp_path), 1)
    meta = store.meta("latest")
    if meta is not None:  # whatever was saved before the divergence is finite
        state, _ = _latest_params(str(tmp_path), cfg, data, 1)
        assert all(np.isfinite(x).all() for x in jax.tree.leaves(state.params))


@pytest.mark.parametrize("method", ["cac_learnt", "ce_msp"])
def test_other_methods_train(tmp_path, data, method):
    cfg = tiny_config(tmp_path, method=method, epochs=(1, 1))
    results = run_lib.run(cfg, data)
    assert 0 <= results["auroc"] <= 1
    if method == "cac_learnt":  # the learnt centres are trained
        state, _ = _latest_params(str(tmp_path), cfg, data, 2)
        assert not np.allclose(state.params["centres"], 10 * np.eye(3))
        assert os.path.exists(tmp_path / "results.json")


def test_tensorboard_files_only_on_request(tmp_path):
    from cac_jax.training.run_log import RunLog

    log = RunLog(str(tmp_path / "off"))
    log.write({"kind": "train", "step": 1, "global_step": 1, "loss": 1.0})
    log.close()
    assert not (tmp_path / "off" / "tensorboard").exists()
    try:
        log = RunLog(str(tmp_path / "on"), tensorboard=True)
    except ValueError as e:  # neither tensorboardX nor torch here: the message says what to install
        assert "tensorboardX or torch" in str(e)
        return
    log.write({"kind": "train", "step": 1, "global_step": 1, "loss": 1.0})
    log.close()
    assert any(p.name.startswith("events.out.tfevents") for p in (tmp_path / "on" / "tensorboard").iterdir())


def _flip_a_bit(directory):
    """One flipped bit in the largest file under ``directory`` (the bulk of its arrays)."""
    files = [os.path.join(d, f) for d, _, fs in os.walk(directory) for f in fs]
    path = max(files, key=os.path.getsize)
    data = bytearray(open(path, "rb").read())
    data[len(data) // 2] ^= 0x10
    open(path, "wb").write(bytes(data))


def test_damaged_checkpoints_are_found_and_passed_over(tmp_path, data):
    """A flipped bit in ``best`` falls back to the copy of the best state in the finished ``latest``; one in the
    newest ``latest`` to the previous ``latest``; with nothing intact left the error names the directory."""
    cfg = tiny_config(tmp_path, epochs=(3, 0), stages="1", checkpoint_every_epochs=1)
    ctx = train.make_context(cfg, data)
    assert train.train(ctx)
    store = checkpoints.StageCheckpoints(str(tmp_path), 1)
    target = train.initial_state(ctx)
    best, _ = store.restore("best", target, ctx.signature)
    latest_steps = sorted(int(s) for s in os.listdir(os.path.join(store.root, "latest")) if s.isdigit())
    assert len(latest_steps) == 2  # the previous latest is kept

    _flip_a_bit(os.path.join(store.root, "best", str(int(best.step)), "state"))
    with pytest.warns(UserWarning, match="damaged checkpoint .*best.*its finished latest checkpoint"):
        again, _ = store.restore("best", target, ctx.signature)
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(again.params), jax.device_get(best.params))

    _flip_a_bit(os.path.join(store.root, "latest", str(latest_steps[-1]), "state"))
    with pytest.warns(UserWarning, match=f"damaged checkpoint .*latest/{latest_steps[-1]} .*previous one"):
        _, meta = store.restore("latest", target, ctx.signature)
    assert meta["step"] == latest_steps[0]

    _flip_a_bit(os.path.join(store.root, "latest", str(latest_steps[0]), "state"))
    with pytest.raises(checkpoints.CheckpointDamaged, match=f"no usable checkpoint in {store.root}/latest"):
        store.restore("latest", target, ctx.signature)
    with pytest.raises(ValueError, match="trained on other data"):
        store.restore("best", target, ctx.signature, data={"training_data_fingerprint": "another"})
    store.close()


def test_a_run_resumed_on_other_data_is_refused(tmp_path, data):
    cfg = tiny_config(tmp_path, epochs=(2, 1), stages="1")
    assert run_lib.run(cfg, data)
    other = synthetic_data(seed=1)
    with pytest.raises(ValueError, match="trained on other data"):
        run_lib.run(cfg.replace(stages="both"), other)


def test_a_diverged_run_says_what_it_kept_and_init_from_continues_from_it(tmp_path, data):
    cfg = tiny_config(tmp_path / "run", epochs=(2, 1), learning_rates=(0.01, 1e30), log_every_steps=1)
    with pytest.raises(train.TrainingDiverged) as e:
        run_lib.run(cfg, data)
    start = os.path.join(str(tmp_path / "run"), "checkpoints", "stage1", "best")
    assert f"stage 1's best is {start}" in str(e.value) and f"--set init_from={start} --set stages=2" in str(e.value)
    again = cfg.replace(workdir=str(tmp_path / "again"), init_from=start, stages="2", learning_rates=(0.01, 0.001))
    results = run_lib.run(again, data)
    assert results["provenance"]["status"] == "final" and results["provenance"]["trained_config"]["init_from"] == start
