"""The training loop against its bare step: what a real epoch costs beyond the jitted steps it runs.

On the CIFAR configuration (``experiments/cifar10``: the paper's network, batch 128, 32x32x3, 6 known
classes) with random images of CIFAR-10's split sizes by default, it times

* **step**: the jitted train step alone, called back to back on device-resident data, blocking at the end;
* **loop**: ``cac_jax.training.loop.train`` for ``--epochs`` epochs of stage 1, everything a run does per epoch
  included (batch orders, metric reads, the progress bar, validation every epoch, the best state kept,
  ``latest`` written every ``--checkpoint-every`` epochs and at the end), less its compilation (the
  run's own ``timings``);

and reports steps/s of both and their ratio, as JSON and a table::

    python -m benchmarks.loop_vs_step                                # CIFAR-10 sizes (GPU)
    python -m benchmarks.loop_vs_step --train-images 1024 --val-images 256 --epochs 2 --steps 8   # CPU
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time


def cifar_like(num_train: int, num_val: int, num_classes: int = 6):
    """OpenSetData of random uint8 images shaped as the CIFAR experiment's (no download, no files)."""
    import numpy as np

    from cac_jax.data import ArraySet, OpenSetData, get_spec

    spec = get_spec("cifar10")
    rng = np.random.default_rng(0)

    def arrays(n):
        return ArraySet(images=rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
                        labels=(np.arange(n) % num_classes).astype(np.int32))

    val = arrays(num_val)
    return OpenSetData(train=arrays(num_train), val=val, test_known=val, test_unknown=val, num_classes=num_classes,
                       image_size=32, channels=3, mean=(0.5,) * 3, std=(0.25,) * 3, flip=spec.flip,
                       rotate=spec.rotate, scale_min=spec.scale_min, known=tuple(range(num_classes)), unknown=(),
                       dataset="cifar10", trial=0, family="neal2018")


def measure(args) -> dict:
    import jax

    from cac_jax import config
    from cac_jax.training import loop as train

    data = cifar_like(args.train_images, args.val_images)
    with tempfile.TemporaryDirectory() as workdir:
        cfg = config.get_experiment("cifar10").replace(
            workdir=os.path.join(workdir, "loop"), epochs=(args.epochs, 0), stages="1", progress=False,
            checkpoint_every_epochs=args.checkpoint_every, dtype=args.dtype)
        ctx = train.make_context(cfg, data)
        with ctx.timings.active():
            t0 = time.perf_counter()
            assert train.train(ctx)
            loop_s = time.perf_counter() - t0 - ctx.timings.seconds.get("compile", 0.0)
        loop_steps = args.epochs * ctx.steps_per_epoch

        state, sums = train.initial_state(ctx), train.zero_metrics(ctx)
        step_args = train.step_arguments(ctx)
        state, sums = ctx.train_step(state, sums, *step_args)  # compiled already: warm
        jax.block_until_ready(sums)
        t0 = time.perf_counter()
        for _ in range(args.steps):
            state, sums = ctx.train_step(state, sums, *step_args)
        jax.block_until_ready(sums)
        step_s = (time.perf_counter() - t0) / args.steps
    loop_ms = 1e3 * loop_s / loop_steps
    timings = {k: round(v, 3) for k, v in ctx.timings.seconds.items()}
    return {"device_kind": jax.devices()[0].device_kind, "devices": jax.device_count(), "dtype": args.dtype,
            "train_images": args.train_images, "val_images": args.val_images, "batch_size": cfg.batch_size,
            "steps_per_epoch": ctx.steps_per_epoch, "epochs": args.epochs, "checkpoint_every": args.checkpoint_every,
            "step_ms": 1e3 * step_s, "loop_ms_per_step": loop_ms, "loop_over_step": loop_ms / (1e3 * step_s),
            "step_steps_per_sec": 1 / step_s, "loop_steps_per_sec": 1e3 / loop_ms, "loop_timings": timings}


def table(r: dict) -> str:
    return "\n".join([
        f"{r['device_kind']} x{r['devices']}, {r['dtype']}, {r['train_images']} train / {r['val_images']} val images, "
        f"batch {r['batch_size']}, {r['steps_per_epoch']} steps per epoch",
        f"{'':<28} {'ms/step':>9} {'steps/s':>9}",
        f"{'bare step':<28} {r['step_ms']:>9.2f} {r['step_steps_per_sec']:>9.1f}",
        f"{'loop (' + str(r['epochs']) + ' epochs, val+ckpt)':<28} {r['loop_ms_per_step']:>9.2f} "
        f"{r['loop_steps_per_sec']:>9.1f}",
        f"loop / step: {r['loop_over_step']:.3f}  (loop: {', '.join(f'{k} {v:.2f} s' for k, v in r['loop_timings'].items())})",
    ])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train-images", type=int, default=27000, help="CIFAR-10's 6 known classes less validation")
    p.add_argument("--val-images", type=int, default=3000)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--checkpoint-every", type=int, default=1, help="write latest every this many epochs")
    p.add_argument("--steps", type=int, default=200, help="bare steps timed")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    p.add_argument("--json", help="also write the result to this file")
    args = p.parse_args(argv)
    from cac_jax import runtime

    runtime.configure()  # as `cac-jax train` runs
    result = measure(args)
    print(table(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
