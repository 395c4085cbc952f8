"""The sharded train step and the two-stage training loop (SPEC.md §4), then evaluation.

Stage 1 trains from a fresh initialisation with lr[0] for epochs[0] epochs; stage 2 restarts from
stage 1's *best* checkpoint (lowest val anchor loss) with a fresh optimiser (zero momentum) and
lr[1] for epochs[1] more epochs, its epoch counter continuing from that checkpoint's epoch; the
best-so-far tracker restarts with each stage. ``stages="both"`` runs both; "1" or "2" one alone. Without
validation images (``holdout_val=False``: Vaze et al.'s recipe trains on them all) nothing is validated and
a stage's best network is its last.

Parallelism: one ``jax.jit`` train step with donated state over a 1-D ``data`` mesh, parameters
replicated and every global batch split across devices, so the global batch (and thus the batch
over which BatchNorm computes its statistics) is ``batch_size`` whatever the device count.

The device waits on nothing: the training images and labels are put on the devices once (uint8; every
benchmark fits), each epoch's batch order once per epoch, and the step gathers its batch itself (the
``step % steps_per_epoch``-th row of the order) and augments it. Its randomness and the dropout's come
from ``fold_in(fold_in(key(seed), stage), step)`` and the data order from (seed, stage, epoch), so a run
resumed from a checkpoint replays exactly what an uninterrupted run would have done. The learning rate
is an argument of the step, not a constant in it: the step compiles once for both stages and resumes.

Metrics accumulate on device and are read only every ``log_every_steps`` steps and at epoch ends;
that read is also where a non-finite loss stops the run (the last checkpoint stays the last good one).
Validation runs over validation batches kept on the devices, as one compiled loop. The best state so far
is a copy on the device; checkpoints (``latest`` every ``checkpoint_every_epochs`` epochs and at the end
of a stage, carrying the best state; ``best`` at the end of a stage) are written in the background
(:mod:`cac_jax.training.checkpoints`).
"""

from __future__ import annotations

import dataclasses
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm import tqdm

from cac_jax import models, objectives
from cac_jax.config import Config, training_fields
from cac_jax.runtime import distributed, interrupts, timing
from cac_jax.training import checkpoints, schedules
from cac_jax.training import mesh as mesh_lib
from cac_jax.training import state as train_state
from cac_jax.training.run_log import RunLog

class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite."""


@dataclasses.dataclass
class Context:
    """What every stage shares: config, data (on the host and on the devices), network, mesh, compiled steps."""

    cfg: Config
    data: object
    model: models.OpenSetClassifier
    mesh: object
    signature: dict
    steps_per_epoch: int
    tx: object
    train_step: object
    val_step: object
    # Digests of the data and of its training part (cac_jax.data.loading.fingerprints), recorded in every checkpoint.
    data_fingerprint: str
    training_fingerprint: str
    timings: timing.Timings = dataclasses.field(default_factory=timing.Timings)

    @functools.cached_property
    def train_arrays(self) -> dict:
        """{"images", "labels"}: the training set, replicated on the devices (put there when first used)."""
        train = self.data.train
        return mesh_lib.replicate(self.mesh, {"images": np.asarray(train.images),
                                              "labels": np.asarray(train.labels, np.int32)})

    @functools.cached_property
    def val_batches(self) -> tuple:
        """(images, labels, mask): the padded validation batches, arrays (batches, batch, ...) on the devices."""
        val = self.data.val
        labels = np.asarray(val.labels, np.int32)
        batches = list(mesh_lib.eval_batches(len(labels), mesh_lib.eval_batch_size(self.cfg.eval_batch_size, self.mesh)))
        return mesh_lib.put_batches(self.mesh, np.stack([val.images[i] for i, _ in batches]),
                                    np.stack([labels[i] for i, _ in batches]), np.stack([m for _, m in batches]))


# Config fields that may differ between the processes of one job: local paths and the console (the data
# they point at must agree: see agree_on_run).
PER_PROCESS_FIELDS = ("data_dir", "npz_path", "manual_dir", "progress", "imports")


def load_data(cfg: Config):
    """The config's data. In a job of several processes, process 0 prepares it first and the others read
    it after (one machine, or hosts sharing a file system, must not prepare one TFDS dataset twice at once)."""
    from cac_jax import data as data_lib

    if not cfg.progress:  # TFDS draws its own bars while it prepares a dataset
        import tensorflow_datasets as tfds

        tfds.disable_progress_bar()

    def load():
        data = data_lib.load_open_set(cfg.dataset, cfg.trial, family=cfg.split_family, data_dir=cfg.data_dir,
                                      npz_path=cfg.npz_path, manual_dir=cfg.manual_dir,
                                      trainval_file=cfg.trainval_file, holdout_val=cfg.holdout_val)
        return data_lib.with_normalisation(data, cfg.normalisation)

    if distributed.process_count() == 1:
        return load()
    data = load() if distributed.is_primary() else None
    distributed.barrier("data prepared")
    return data if data is not None else load()


def agree_on_run(cfg: Config, data_fingerprint: str | None = None) -> None:
    """Refuse to run a job whose processes were given different configs (or, with ``data_fingerprint``, different
    data)."""
    if distributed.process_count() == 1:
        return
    if data_fingerprint is None:
        distributed.agree("configs", {k: v for k, v in cfg.to_dict().items() if k not in PER_PROCESS_FIELDS})
        distributed.agree("objectives", {"registered objectives": objectives.fingerprints()})
    else:
        distributed.agree("data", {"data fingerprint": data_fingerprint})


def build_model(cfg: Config, data) -> models.OpenSetClassifier:
    return models.create_model(model=cfg.model, head=objectives.get(cfg.method).head, num_classes=data.num_classes,
                               image_size=data.image_size, dropout=cfg.dropout, alpha=cfg.alpha, dtype=cfg.dtype)


def metric_names(method: str) -> list[str]:
    """The sums the train step accumulates for ``method``: its objective's loss terms after the step's own."""
    return ["loss", "correct", "count", "nonfinite", *objectives.get(method).terms]


def zero_metrics(ctx: Context):
    """The train step's metric sums, zero, on the devices."""
    return mesh_lib.replicate(ctx.mesh, {k: np.zeros((), np.float32) for k in metric_names(ctx.cfg.method)})


def make_train_step(model, cfg: Config, data, mesh):
    """jit(step)(state, metric_sums, train_arrays, order, rng, lr) -> (state, metric_sums); state and sums
    donated. ``order`` (steps_per_epoch, batch) holds the epoch's batches of training-set indices, split along
    the batch; the step takes row ``state.step % steps_per_epoch``. ``rng`` = int32 (seed, stage); ``lr`` the
    learning rate (a float32 scalar)."""
    if cfg.augmentation == "randaugment":
        from cac_jax.data import randaugment

        ops = randaugment.OPS_DIGITS if data.dataset in randaugment.DIGIT_DATASETS else randaugment.OPS
        aug = (("policy", "randaugment"), ("image_size", data.image_size), ("n", cfg.randaugment_n),
               ("m", cfg.randaugment_m), ("ops", ops), ("mean", tuple(data.mean)), ("std", tuple(data.std)))
    else:
        aug = (("policy", "cac2021"), ("image_size", data.image_size), ("scale_min", data.scale_min),
               ("flip", data.flip), ("rotate", data.rotate), ("mean", tuple(data.mean)), ("std", tuple(data.std)))
    settings = objectives.Settings(alpha=cfg.alpha, lbda=cfg.lbda, label_smoothing=cfg.label_smoothing)
    return _train_step(model, objectives.get(cfg.method), settings, cfg.dtype, aug, mesh)


def network_outputs(variables, logits, distances) -> objectives.Outputs:
    """What an objective sees of a batch: the logits, the distances to the head's centres and those centres."""
    centres = variables["params"].get("centres")
    if centres is None and "anchors" in variables:
        centres = variables["anchors"]["centres"]
    return objectives.Outputs(logits=logits, distances=distances, centres=centres)


@functools.lru_cache(maxsize=None)  # one compilation per process for all stages and resumes
def _train_step(model, objective, settings, dtype, aug, mesh):
    from cac_jax.data import augment

    aug, dtype = dict(aug), jnp.dtype(dtype)
    augment_batch = augment.randaugment_train if aug.pop("policy") == "randaugment" else augment.train_augment
    batch = mesh_lib.batch_sharding(mesh)

    def step(state, sums, train, order, rng, lr):
        idx = order[state.step % order.shape[0]]
        images = jax.lax.with_sharding_constraint(train["images"][idx], batch)
        labels = jax.lax.with_sharding_constraint(train["labels"][idx], batch)
        stage_key = jax.random.fold_in(jax.random.key(rng[0]), rng[1])
        aug_key, drop_key = jax.random.split(jax.random.fold_in(stage_key, state.step))
        x = augment_batch(aug_key, images, **aug).astype(dtype)

        def loss_fn(params):
            variables = {"params": params, "batch_stats": state.batch_stats, **state.constants}
            (logits, dist), updates = state.apply_fn(variables, x, train=True, rngs={"dropout": drop_key},
                                                     mutable=["batch_stats"])
            out = network_outputs(variables, logits, dist)
            loss, terms = objective.loss(out, labels, settings)
            objectives.check_terms(objective, terms)
            correct = jnp.sum(objective.predict(out) == labels)
            return loss, (updates["batch_stats"], terms, correct, logits)

        (loss, (batch_stats, terms, correct, logits)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        # A NaN can hide from the loss (a NaN distance may be masked), so logits and gradients are checked too.
        finite = jnp.isfinite(loss) & jnp.all(jnp.isfinite(logits)) & jnp.isfinite(optax.tree.norm(grads))
        state = state.apply_gradients_at(grads=grads, learning_rate=lr, batch_stats=batch_stats)
        new = {"loss": loss, "correct": correct, "count": labels.shape[0], "nonfinite": ~finite, **terms}
        return state, {k: sums[k] + jnp.asarray(new[k], jnp.float32) for k in sums}

    rep, batches = mesh_lib.replicated(mesh), mesh_lib.batches_sharding(mesh)
    return jax.jit(step, in_shardings=(rep, rep, rep, batches, rep, rep), out_shardings=(rep, rep),
                   donate_argnums=(0, 1))


def make_val_step(model, cfg: Config, data, mesh):
    """jit(step)(variables, images_uint8, labels, mask) -> masked sums (loss, correct, count) over all the
    validation batches (arrays (batches, batch, ...) split along the batch)."""
    return _val_step(model, objectives.get(cfg.method), cfg.dtype, data.image_size, tuple(data.mean), tuple(data.std), mesh)


@functools.lru_cache(maxsize=None)
def _val_step(model, objective, dtype, image_size, mean, std, mesh):
    from cac_jax.data import augment

    def step(variables, images, labels, mask):
        def batch_sums(sums, batch):
            x = augment.eval_preprocess(batch[0], image_size=image_size, mean=mean, std=std)
            logits, dist = model.apply(variables, x.astype(jnp.dtype(dtype)), train=False)
            out = network_outputs(variables, logits, dist)
            mask = batch[2].astype(jnp.float32)
            new = {"loss": jnp.sum(objective.validation_loss(out, batch[1]) * mask),
                   "correct": jnp.sum((objective.predict(out) == batch[1]) * mask), "count": jnp.sum(mask)}
            return {k: sums[k] + new[k] for k in sums}, None

        zero = {k: jnp.zeros((), jnp.float32) for k in ("loss", "correct", "count")}
        return jax.lax.scan(batch_sums, zero, (images, labels, mask))[0]

    rep, batches = mesh_lib.replicated(mesh), mesh_lib.batches_sharding(mesh)
    return jax.jit(step, in_shardings=(rep, batches, batches, batches), out_shardings=rep)


def validate(ctx: Context, variables) -> dict:
    sums = jax.device_get(ctx.val_step(variables, *ctx.val_batches))
    count = float(sums["count"])
    return {objectives.get(ctx.cfg.method).validation_name: float(sums["loss"]) / count,
            "val_accuracy": float(sums["correct"]) / count}


@functools.lru_cache(maxsize=None)
def _copy_fn(sharding):
    return jax.jit(lambda tree: jax.tree.map(jnp.copy, tree), out_shardings=sharding)


def copy_state(ctx: Context, state):
    """A copy of ``state`` on the devices that outlives the next (donating) train step."""
    return _copy_fn(mesh_lib.replicated(ctx.mesh))(state)


def epoch_batches(ctx: Context, stage: int, epoch: int):
    """The order argument of the train step for ``epoch`` of ``stage``: (steps_per_epoch, batch_size) indices,
    this process's part of every batch from :func:`cac_jax.data.pipeline.batch_indices`."""
    from cac_jax.data import pipeline

    rows = pipeline.batch_indices(len(ctx.data.train.labels), ctx.cfg.batch_size, seed=stage_seed(ctx.cfg.seed, stage),
                                  epoch=epoch, shuffle=True, drop_remainder=True,
                                  process_index=jax.process_index(), process_count=jax.process_count())
    return mesh_lib.put_batches(ctx.mesh, np.stack(list(rows)).astype(np.int32))[0]


def stage_rng(ctx: Context, stage: int):
    """The train step's ``rng`` argument over ``stage``: int32 (seed, stage), on the devices."""
    return mesh_lib.replicate(ctx.mesh, np.asarray([ctx.cfg.seed, stage], np.int32))


def epoch_lr(ctx: Context, stage: int, epoch: int):
    """The train step's ``lr`` argument in ``epoch`` (0-based within ``stage``; :mod:`.schedules`), on the devices."""
    return mesh_lib.replicate(ctx.mesh, np.float32(schedules.epoch_learning_rate(ctx.cfg, stage, epoch)))


def step_arguments(ctx: Context, stage: int = 1, epoch: int = 0) -> tuple:
    """Everything ``ctx.train_step(state, sums, *step_arguments(ctx, stage, epoch))`` takes besides the state and
    the metric sums, for a step of ``epoch`` of ``stage`` (benchmarks and tests step by hand with it)."""
    return (ctx.train_arrays, epoch_batches(ctx, stage, epoch), stage_rng(ctx, stage), epoch_lr(ctx, stage, epoch))


def stage_seed(seed: int, stage: int) -> int:
    """Data-order seed of a stage, so stage 2 does not replay stage 1's epoch orders."""
    return int(np.random.SeedSequence([seed, stage]).generate_state(1)[0])


def selection(ctx: Context) -> tuple[str, str | None]:
    """(metric, mode) that picks a stage's best network (the objective's ``selection``), or ("last epoch", None)
    without validation images (``holdout_val=False``): the stage's last network is its best."""
    return objectives.get(ctx.cfg.method).selection if len(ctx.data.val) else ("last epoch", None)


def improves(value: float, best: float | None, mode: str) -> bool:
    """Whether ``value`` beats ``best``: in "min" mode ties go to the later epoch (the original CAC's ``<=``), in
    "max" mode they do not (its CE script's ``>``)."""
    if best is None:
        return True
    return value <= best if mode == "min" else value > best


def _position_meta(ctx: Context, stage: int, start_epoch: int, step: int, best, best_epoch, finished: bool) -> dict:
    metric, mode = selection(ctx)
    return {"stage": stage, "start_epoch": start_epoch, "step": step,
            "epochs_done": start_epoch + step // ctx.steps_per_epoch, "steps_per_epoch": ctx.steps_per_epoch,
            "best_value": best, "best_epoch": best_epoch, "selection_metric": metric, "selection_mode": mode,
            "finished": finished, "signature": ctx.signature, **resume_data(ctx), **trained_data(ctx),
            "trained_config": training_fields(ctx.cfg.to_dict())}


def resume_data(ctx: Context) -> dict:
    """What a checkpoint's data must match to resume its run: all of it (its test sets give the run's results)."""
    return {"data_fingerprint": ctx.data_fingerprint}


def trained_data(ctx: Context) -> dict:
    """What a checkpoint's data must match to evaluate its network: what it was trained on (CIFAR+10's networks on
    CIFAR+50, as the original does)."""
    return {"training_data_fingerprint": ctx.training_fingerprint}


def initial_state(ctx: Context):
    """The freshly initialised train state of the run (from ``cfg.seed``), on the devices."""
    data = ctx.data
    return train_state.create(ctx.model, ctx.cfg.seed, image_size=data.image_size, channels=data.channels,
                              tx=ctx.tx, sharding=mesh_lib.replicated(ctx.mesh))


def prepare_stage(ctx: Context, stage: int):
    """(state, meta, best state so far or None) to continue ``stage`` from, or None when that stage has
    already finished."""
    cfg = ctx.cfg
    store = checkpoints.StageCheckpoints(cfg.resolved_workdir, stage)
    target = initial_state(ctx)
    meta = store.meta("latest")
    if meta is not None:
        checkpoints.check_signature(meta.get("signature", {}), ctx.signature, store.root)
        checkpoints.check_data(meta, resume_data(ctx), store.root)
        if meta["finished"]:
            return None
        if meta["steps_per_epoch"] != ctx.steps_per_epoch:
            raise ValueError(f"the checkpoint in {store.root} was made with {meta['steps_per_epoch']} steps per "
                             f"epoch, the config gives {ctx.steps_per_epoch} (batch size or data changed)")
        return store.restore_latest(target, ctx.signature, data=resume_data(ctx))
    if cfg.init_from and stage == stages_to_run(cfg)[0]:
        # A fresh optimiser around another run's network (e.g. the last good checkpoint of a diverged run).
        state = train_state.restart(ctx.model, init_variables(ctx), ctx.tx, mesh_lib.replicated(ctx.mesh))
        return state, _position_meta(ctx, stage, 0, 0, None, None, False), None
    if stage == 1:
        return target, _position_meta(ctx, 1, 0, 0, None, None, False), None
    first = checkpoints.StageCheckpoints(cfg.resolved_workdir, 1)
    if not first.exists("best"):
        raise FileNotFoundError(f"stage 2 starts from stage 1's best checkpoint, and {first.root}/best has none: "
                                f"run stage 1 first (--set stages=1 or stages=both)")
    best, best_meta = first.restore("best", target, ctx.signature, data=resume_data(ctx))
    # Fresh optimiser: momentum reset, step 0, lr of stage 2; the epoch counter continues.
    state = train_state.restart(ctx.model, best.variables(), ctx.tx, mesh_lib.replicated(ctx.mesh))
    return state, _position_meta(ctx, 2, best_meta["epochs_done"], 0, None, None, False), None


def init_variables(ctx: Context) -> dict:
    """The network of the checkpoint ``cfg.init_from`` names (its best checkpoint unless it names ``latest``; a run
    directory or its ``checkpoints``: the best of its last stage), which must fit this run's network."""
    run_dir, stage, kind = checkpoints.locate(ctx.cfg.init_from)
    if stage is None:
        stage = max((s for s in (1, 2) if checkpoints.StageCheckpoints(run_dir, s).exists(kind)), default=1)
    store = checkpoints.StageCheckpoints(run_dir, stage)
    try:
        state, _ = store.restore(kind, initial_state(ctx), ctx.signature)
    finally:
        store.close()
    return state.variables()


def run_stage(ctx: Context, stage: int, state, meta: dict, best_state, log: RunLog, max_steps: int | None):
    """Train one stage from ``(state, meta, best_state)``; returns (state, completed). ``max_steps`` stops
    early without saving (as a killed process would), for tests of resumption."""
    cfg, spe, timings = ctx.cfg, ctx.steps_per_epoch, ctx.timings
    store = checkpoints.StageCheckpoints(cfg.resolved_workdir, stage)
    metric, mode = selection(ctx)
    validating = mode is not None
    start_epoch, best, best_epoch = meta["start_epoch"], meta["best_value"], meta["best_epoch"]
    total = cfg.epochs[stage - 1] * spe
    step = int(meta["step"])
    rng = stage_rng(ctx, stage)
    sums = zero_metrics(ctx)
    steps_in_sums, t_last = 0, time.perf_counter()

    def flush(epoch):
        nonlocal sums, steps_in_sums, t_last
        # Process 0's reading decides for every process (a divergence stops all of them at the same step).
        host = distributed.broadcast("train metrics", {k: float(v) for k, v in jax.device_get(sums).items()})
        now = time.perf_counter()
        rec = {"kind": "train", "stage": stage, "epoch": epoch + 1, "step": step, "global_step": start_epoch * spe + step,
               "loss": host["loss"] / steps_in_sums, "train_accuracy": host["correct"] / max(host["count"], 1.0),
               "steps_per_sec": steps_in_sums / max(now - t_last, 1e-9)}
        for k in objectives.get(cfg.method).terms:  # the mean of each named term of the loss
            rec[f"{k}_loss"] = host[k] / steps_in_sums
        if host["nonfinite"] or not np.isfinite(rec["loss"]):
            raise TrainingDiverged(f"non-finite training loss or gradients (mean loss {rec['loss']}) in stage {stage}, "
                                   f"epoch {epoch + 1}, step {step}; stopped. {divergence_advice(ctx, stage, store)}")
        log.write(rec)
        sums = zero_metrics(ctx)
        steps_in_sums, t_last = 0, now
        return rec

    def save_latest(finished=False):
        with timings.section("checkpoint"):
            store.save("latest", step, state, _position_meta(ctx, stage, start_epoch, step, best, best_epoch, finished),
                       best=best_state)

    try:
        while step < total:
            epoch, offset = start_epoch + step // spe, step % spe
            with timings.section("train"):
                order = epoch_batches(ctx, stage, epoch)
                lr = epoch_lr(ctx, stage, epoch - start_epoch)
                bar = tqdm(total=spe, initial=offset, unit="step", leave=False, dynamic_ncols=True,
                           desc=f"stage {stage} epoch {epoch + 1}/{start_epoch + cfg.epochs[stage - 1]}",
                           disable=not cfg.progress or not distributed.is_primary())
                for _ in range(offset, spe):
                    interrupts.check()
                    if max_steps is not None and step >= max_steps:
                        bar.close()
                        return state, False
                    state, sums = ctx.train_step(state, sums, ctx.train_arrays, order, rng, lr)
                    step += 1
                    steps_in_sums += 1
                    bar.update()
                    if step % cfg.log_every_steps == 0 or step % spe == 0:
                        rec = flush(epoch)
                        bar.set_postfix(loss=f"{rec['loss']:.4f}", acc=f"{rec['train_accuracy']:.3f}")
                    if cfg.checkpoint_every_steps and step % cfg.checkpoint_every_steps == 0 and step % spe:
                        if steps_in_sums:  # nothing non-finite goes into a checkpoint unseen
                            flush(epoch)
                        save_latest()
                bar.close()
            val, improved = {}, False
            if validating:
                with timings.section("validate"):
                    val = distributed.broadcast("validation", validate(ctx, state.variables()))
                if not all(np.isfinite(v) for v in val.values()):
                    raise TrainingDiverged(f"non-finite validation metrics {val} after stage {stage}, epoch "
                                           f"{epoch + 1}; stopped. {divergence_advice(ctx, stage, store)}")
                value = val[metric]
                improved = improves(value, best, mode)
                if improved:
                    best, best_epoch = value, epoch + 1
                    with timings.section("checkpoint"):
                        best_state = copy_state(ctx, state)
                if distributed.is_primary() and cfg.progress:
                    tqdm.write(f"stage {stage} epoch {epoch + 1}: {metric}={value:.4f} val_accuracy="
                               f"{val['val_accuracy']:.4f}{' (best)' if improved else ''}")
            log.write({"kind": "epoch", "stage": stage, "epoch": epoch + 1, "step": step,
                       "global_step": start_epoch * spe + step, **val, "best": best, "best_epoch": best_epoch,
                       "saved_best": improved})
            if step < total and (step // spe) % cfg.checkpoint_every_epochs == 0:
                save_latest()
        # The stage's end: ``best`` on disk before ``latest`` says the stage is finished. An empty stage passes
        # its starting point on as its best (stage 2: stage 1's best), and so does a stage without validation
        # its last network.
        with timings.section("checkpoint"):
            best_state = state if best_state is None else best_state
            best_epoch = best_epoch if validating else start_epoch + step // spe
            best_step = int(jax.device_get(best_state.step))
            store.save("best", best_step, best_state,
                       _position_meta(ctx, stage, start_epoch, best_step, best, best_epoch, False))
            store.wait()
        save_latest(finished=True)
    finally:
        with timings.section("checkpoint"):
            store.close()
    return state, True


def divergence_advice(ctx: Context, stage: int, store: checkpoints.StageCheckpoints) -> str:
    """Which checkpoint the diverged run kept, and the command that continues from it with other settings (a work
    directory holds one config, so into another one)."""
    cfg = ctx.cfg
    store.wait()
    meta = store.meta("latest")
    lower = ",".join(f"{lr / 10:g}" for lr in cfg.learning_rates)
    first = checkpoints.StageCheckpoints(cfg.resolved_workdir, 1)
    if meta is not None:
        kept = (f"The last checkpoint before it, stage {stage} after epoch {meta['epochs_done']} (step "
                f"{meta['step']}), is {store.root}/latest")
        start, stages = f"{store.root}/latest", str(stage)
    elif stage == 2 and first.exists("best"):
        kept = f"No stage-2 checkpoint was written before it; stage 1's best is {first.root}/best"
        start, stages = f"{first.root}/best", "2"
    else:
        return (f"No checkpoint was written before it (the first comes after epoch {cfg.checkpoint_every_epochs}), so "
                f"nothing of it can be continued: train again with other settings in another work directory (or "
                f"after deleting {cfg.resolved_workdir}), e.g. the same command with --set learning_rates={lower}")
    return (f"{kept}. To continue from it with other settings, train into another work directory: the same command "
            f"with --workdir NEW --set init_from={start} --set stages={stages} --set learning_rates={lower}")


def make_context(cfg: Config, data, mesh=None, timings: timing.Timings | None = None,
                 fingerprints: tuple[str, str] | None = None) -> Context:
    """The run's mesh, network and compiled steps (its training and validation data go to the devices when
    training first needs them); ``fingerprints``: the data's (:func:`cac_jax.data.loading.fingerprints`), if
    computed already."""
    from cac_jax.data import loading

    mesh = mesh or mesh_lib.make_mesh(cfg.num_devices)
    fingerprints = fingerprints or loading.fingerprints(data)
    mesh_lib.check_batch_size(cfg.batch_size, mesh)
    spe = len(data.train.labels) // cfg.batch_size
    if spe == 0:
        raise ValueError(f"batch_size={cfg.batch_size} exceeds the {len(data.train.labels)} training images")
    model = build_model(cfg, data)
    return Context(cfg=cfg, data=data, model=model, mesh=mesh,
                   signature=checkpoints.signature(cfg, data.num_classes, data.image_size, data.channels),
                   steps_per_epoch=spe, tx=train_state.make_optimizer(momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                                                                    optimizer=cfg.optimizer),
                   train_step=make_train_step(model, cfg, data, mesh), val_step=make_val_step(model, cfg, data, mesh),
                   data_fingerprint=fingerprints[0], training_fingerprint=fingerprints[1],
                   timings=timings or timing.Timings())


def stages_to_run(cfg: Config) -> list[int]:
    return [1, 2] if cfg.stages == "both" else [int(cfg.stages)]


def train(ctx: Context, *, max_steps: int | None = None) -> bool:
    """Run (or resume) the configured stages; False when stopped early by ``max_steps``."""
    log = RunLog(ctx.cfg.resolved_workdir, tensorboard=ctx.cfg.tensorboard)
    try:
        for stage in stages_to_run(ctx.cfg):
            with ctx.timings.section("checkpoint"):  # mostly reading checkpoints
                prepared = prepare_stage(ctx, stage)
            if prepared is None:
                continue  # finished before (a resumed run)
            _, completed = run_stage(ctx, stage, *prepared, log=log, max_steps=max_steps)
            if not completed:
                return False
    finally:
        log.close()
    return True


def checkpoint_variables(ctx: Context, stage: int, kind: str = "best") -> tuple[dict, dict]:
    """(variables, meta) of the ``kind`` ("best", what evaluation uses, or "latest") checkpoint of ``stage``,
    refused unless it was trained on the context's training data."""
    store = checkpoints.StageCheckpoints(ctx.cfg.resolved_workdir, stage)
    try:
        if not store.exists(kind):
            raise FileNotFoundError(f"no {kind} checkpoint in {store.root}/{kind}: train stage {stage} first")
        state, meta = store.restore(kind, initial_state(ctx), ctx.signature, data=trained_data(ctx))
    finally:
        store.close()
    return state.variables(), meta
