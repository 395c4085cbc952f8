"""Train-step throughput of a config on random data: steps/s and images/s, as JSON and a table.

The host device count is fixed when JAX starts, so each device count runs in its own subprocess::

    python -m benchmarks.train_step_speed                       # CIFAR config (cac_cnn, batch 128, 32x32x3, N=6)
    python -m benchmarks.train_step_speed --devices 1,2 --steps 20 --json speed.json

With ``--devices 2`` on a CPU, XLA_FLAGS=--xla_force_host_platform_device_count=2 splits the host's
cores into two devices; the global batch stays 128.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time


def measure(experiment: str, steps: int, warmup: int, num_classes: int) -> dict:
    from cac_jax import runtime

    runtime.configure(compilation_cache=False)  # as `cac-jax train` runs, before JAX starts
    import jax
    import numpy as np

    from cac_jax import config
    from cac_jax.training import loop as train
    from cac_jax.data import ArraySet, OpenSetData, get_spec

    cfg = config.get_experiment(experiment).replace(progress=False)
    spec = get_spec(cfg.dataset)
    size, ch, b = spec.image_size, spec.channels, cfg.batch_size
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (b, size, size, ch), dtype=np.uint8)
    labels = (np.arange(b) % num_classes).astype(np.int32)
    arrays = ArraySet(images=images, labels=labels)
    data = OpenSetData(train=arrays, val=arrays, test_known=arrays, test_unknown=arrays, num_classes=num_classes,
                       image_size=size, channels=ch, mean=(0.5,) * ch, std=(0.25,) * ch, flip=spec.flip,
                       rotate=spec.rotate, scale_min=spec.scale_min, known=tuple(range(num_classes)), unknown=(),
                       dataset=cfg.dataset, trial=0, family="neal2018")
    ctx = train.make_context(cfg, data)
    state, sums = train.initial_state(ctx), train.zero_metrics(ctx)
    args = train.step_arguments(ctx)
    t0 = time.perf_counter()
    for _ in range(warmup):
        state, sums = ctx.train_step(state, sums, *args)
    jax.block_until_ready(sums)
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(steps):
        state, sums = ctx.train_step(state, sums, *args)
    jax.block_until_ready(sums)
    dt = time.perf_counter() - t0
    return {"experiment": experiment, "devices": jax.device_count(), "batch_size": b, "image_size": size,
            "channels": ch, "num_classes": num_classes, "steps": steps, "steps_per_sec": steps / dt,
            "images_per_sec": steps * b / dt, "warmup_seconds": compile_s,
            "device_kind": jax.devices()[0].device_kind}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--experiment", default="cifar10")
    p.add_argument("--devices", default="1,2", help="host device counts to compare, e.g. 1,2")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--num-classes", type=int, default=6)
    p.add_argument("--json", help="also write the results to this file")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(measure(args.experiment, args.steps, args.warmup, args.num_classes)))
        return 0
    rows = []
    for n in (int(d) for d in args.devices.split(",")):
        env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={n}")
        cmd = [sys.executable, "-m", "benchmarks.train_step_speed", "--worker", "--experiment", args.experiment,
               "--steps", str(args.steps), "--warmup", str(args.warmup), "--num-classes", str(args.num_classes)]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"{'experiment':<12} {'devices':>7} {'batch':>5} {'steps/s':>8} {'images/s':>9} {'warmup s':>8}")
    for r in rows:
        print(f"{r['experiment']:<12} {r['devices']:>7} {r['batch_size']:>5} {r['steps_per_sec']:>8.2f} "
              f"{r['images_per_sec']:>9.1f} {r['warmup_seconds']:>8.1f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
