"""Throughput of the input pipeline against the CIFAR network's training step, on this machine.

Measures, for CIFAR-sized data (32x32x3 uint8, synthetic, 50 000 images in host memory):

1. ``pipeline``: one training batch end to end — ``batch_indices`` → host gather → transfer →
   ``train_augment`` (crop, flip, rotation, normalise) — images/s at batch 128;
2. ``augment``: ``train_augment`` alone on a batch already on the device;
3. ``train_step``: one SGD step of the CAC network (``cac_jax.models``, CAC loss) at batch 128;
4. optionally (``--mnist-npz``): loading a Keras ``mnist.npz`` through the TFDS builder path
   (first call prepares the array_record files, the second reads the cached preparation).

The pipeline is not the bottleneck when ``pipeline`` images/s is well above ``train_step`` images/s.

Usage: python benchmarks/pipeline_throughput.py [--out PATH] [--steps N] [--mnist-npz PATH]
Writes a JSON report (default benchmarks/results/pipeline_throughput.json) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time

import numpy as np

BATCH = 128
CIFAR = dict(image_size=32, scale_min=0.8, flip=0.5, rotate=10.0, mean=(0.4858, 0.4771, 0.4326), std=(0.2422, 0.2374, 0.2547))


def _timeit(fn, steps: int) -> float:
    """Seconds per call, after one warm-up (compilation) call; fn must block until done."""
    fn(0)
    start = time.perf_counter()
    for s in range(1, steps + 1):
        fn(s)
    return (time.perf_counter() - start) / steps


def bench_pipeline(steps: int) -> dict:
    import jax

    from cac_jax.data import augment, pipeline

    images = np.random.default_rng(0).integers(0, 256, (50_000, 32, 32, 3), dtype=np.uint8)
    batches = pipeline.batch_indices(len(images), BATCH, seed=0, epoch=0)

    def full(step):
        idx = next(batches)
        augment.train_augment(jax.random.key(step), images[idx], **CIFAR).block_until_ready()

    on_device = jax.device_put(images[:BATCH])

    def aug_only(step):
        augment.train_augment(jax.random.key(step), on_device, **CIFAR).block_until_ready()

    return {"pipeline_s_per_batch": _timeit(full, steps), "augment_s_per_batch": _timeit(aug_only, steps)}


def bench_train_step(steps: int) -> dict:
    try:
        import jax
        import optax

        from cac_jax.core import losses
        from cac_jax import models
    except ImportError as e:  # the network lives in another module of this project
        return {"train_step_error": f"cannot import the CIFAR network: {e}"}
    model = models.create_model(model="cac_cnn", head="anchors", num_classes=6, image_size=32, dropout=0.2)
    variables = models.init_variables(model, jax.random.key(0), 32, 3)
    params, rest = variables["params"], {k: v for k, v in variables.items() if k != "params"}
    tx = optax.chain(optax.add_decayed_weights(5e-6), optax.sgd(0.01, momentum=0.9))
    opt_state = tx.init(params)
    x = jax.random.normal(jax.random.key(1), (BATCH, 32, 32, 3))
    y = jax.random.randint(jax.random.key(2), (BATCH,), 0, 6)

    @jax.jit
    def step(params, rest, opt_state, key):
        def loss_fn(p):
            (logits, _), updates = model.apply({"params": p, **rest}, x, train=True, mutable=["batch_stats"], rngs={"dropout": key})
            return losses.cac_loss(logits, y)[0], updates

        (loss, updates), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        upd, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, upd), {**rest, **updates}, opt_state, loss

    state = [params, rest, opt_state]

    def run(s):
        out = step(*state, jax.random.key(s))
        state[:] = out[:3]
        out[3].block_until_ready()

    return {"train_step_s_per_batch": _timeit(run, max(3, steps // 10))}


def bench_mnist_load(path: str) -> dict:
    from cac_jax.data import load_open_set

    with tempfile.TemporaryDirectory() as data_dir:
        times = []
        for _ in range(2):
            start = time.perf_counter()
            load_open_set("mnist", 0, npz_path=path, data_dir=data_dir)
            times.append(time.perf_counter() - start)
    return {"mnist_npz_first_load_s": times[0], "mnist_npz_cached_load_s": times[1]}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=os.path.join("benchmarks", "results", "pipeline_throughput.json"))
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--mnist-npz", default=None, help="Keras-layout mnist.npz to time the builder path (optional)")
    args = parser.parse_args(argv)
    import jax

    from cac_jax import runtime

    runtime.configure(compilation_cache=False)  # as `cac-jax train` runs, before jax.devices() starts the backend
    report = {"device": str(jax.devices()[0]), "cpu_count": os.cpu_count(), "machine": platform.machine(), "batch": BATCH}
    report.update(bench_pipeline(args.steps))
    report.update(bench_train_step(args.steps))
    if args.mnist_npz:
        report.update(bench_mnist_load(args.mnist_npz))
    rows = [("pipeline (gather + transfer + augment)", "pipeline_s_per_batch"), ("augment only (on device)", "augment_s_per_batch"),
            ("CAC network train step", "train_step_s_per_batch")]
    print(f"{'stage (batch 128, 32x32x3)':42s} {'ms/batch':>10s} {'images/s':>10s}")
    for label, key in rows:
        if key in report:
            s = report[key]
            report[key.replace("_s_per_batch", "_images_per_s")] = BATCH / s
            print(f"{label:42s} {1e3 * s:10.2f} {BATCH / s:10.0f}")
    if "train_step_s_per_batch" in report:
        report["pipeline_over_train_step"] = report["train_step_s_per_batch"] / report["pipeline_s_per_batch"]
        print(f"pipeline is {report['pipeline_over_train_step']:.0f}x faster than the train step")
    for key in ("mnist_npz_first_load_s", "mnist_npz_cached_load_s"):
        if key in report:
            print(f"{key}: {report[key]:.1f} s")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)
    return report


if __name__ == "__main__":
    main()
