"""Loss + gradient time of the CAC loss against the number of classes N: fast path vs general path.

    python -m benchmarks.loss_scaling --out runs/benchmarks/loss_scaling.json

The fast path (anchors=None, fixed anchors alpha*I) costs O(B*N); the general path (an explicit
(N, N) anchor matrix, one vmapped distance kernel per anchor) costs O(B*N^2). Cases whose general
path would exceed --max-general-flops are skipped and marked so in the output.
"""

import argparse
import json
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from cac_jax import runtime
from cac_jax.core import losses


def time_call(fn, *args, repeats):
    jax.block_until_ready(fn(*args))  # compile
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def loss_and_grad(anchor_matrix):
    def total(logits, labels):
        return losses.cac_loss(logits, labels, anchor_matrix)[0]

    return jax.jit(jax.value_and_grad(total))


def run(class_counts, batch_sizes, repeats, max_general_flops):
    rows = []
    for batch in batch_sizes:
        for n in class_counts:
            rng = np.random.default_rng(0)
            logits = jnp.asarray(rng.normal(size=(batch, n)) * 5, jnp.float32)
            labels = jnp.asarray(rng.integers(0, n, size=batch), jnp.int32)
            fast = time_call(loss_and_grad(None), logits, labels, repeats=repeats)
            if batch * n * n <= max_general_flops:
                general = time_call(loss_and_grad(losses.anchors(n)), logits, labels, repeats=repeats)
            else:
                general = None
            rows.append({"batch": batch, "classes": n, "fast_s": fast, "general_s": general})
            print(format_row(rows[-1]), flush=True)
    return rows


def format_row(row):
    general = "skipped" if row["general_s"] is None else f"{row['general_s'] * 1e3:10.3f}"
    ratio = "" if row["general_s"] is None else f"{row['general_s'] / row['fast_s']:8.1f}x"
    return f"{row['batch']:6d} {row['classes']:7d} {row['fast_s'] * 1e3:10.3f} {general:>10} {ratio:>9}"


def scaling_exponent(rows, batch, key="fast_s"):
    """Slope of log(time) against log(N) between the two largest N measured: ~1 means linear in N,
    ~2 quadratic. (At small N a fixed per-call overhead dominates and flattens the curve.)"""
    pts = sorted((r["classes"], r[key]) for r in rows if r["batch"] == batch and r[key] is not None)
    (n0, t0), (n1, t1) = pts[-2], pts[-1]
    return float(np.log(t1 / t0) / np.log(n1 / n0))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classes", type=int, nargs="+", default=[10, 100, 1000, 10000])
    parser.add_argument("--batch", type=int, nargs="+", default=[128, 1024])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--max-general-flops", type=float, default=2e10,
                        help="skip the general path where batch * N^2 exceeds this")
    parser.add_argument("--out", default="runs/benchmarks/loss_scaling.json")
    args = parser.parse_args()

    runtime.configure(compilation_cache=False)  # as `cac-jax train` runs, before jax.devices() starts the backend
    print(f"device: {jax.devices()[0].device_kind} x{jax.device_count()}")
    print(f"{'batch':>6} {'classes':>7} {'fast ms':>10} {'general ms':>10} {'ratio':>9}")
    rows = run(args.classes, args.batch, args.repeats, args.max_general_flops)
    exponents = {str(b): scaling_exponent(rows, b) for b in args.batch}
    for b, e in exponents.items():
        print(f"fast path: time ~ N^{e:.2f} at batch {b} (between the two largest N)")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"device": jax.devices()[0].device_kind, "rows": rows, "fast_path_exponent": exponents,
                   "args": vars(args)}, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
