"""Would Winograd convolutions make the CAC network's forward pass faster on this CPU? Direct against Winograd.

    python -m benchmarks.conv_winograd

Why it is asked: ``cac-jax eval`` of a released MNIST network passes 56,621 images (training images, held-out
knowns, test images, one set of unknowns), the PyTorch harness of ``benchmarks.released_parity`` 39,294; for
``eval`` with every score to finish first, its forward pass would have to be at least 1.45x faster per image
than PyTorch's. XLA's convolutions already run at this CPU's matrix-product rate, so only less arithmetic
could do it. Winograd's minimal filtering F(2x2, 3x3) (Lavin & Gray, "Fast Algorithms for Convolutional Neural
Networks", CVPR 2016) computes each 2x2 output tile from a 4x4 input tile with 16 instead of 36 multiplies:

    Y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A,      summed over input channels

    Bᵀ = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]
    G  = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]]
    Aᵀ = [[1, 1, 1, 0], [0, 1, -1, -1]]

so the 16 elementwise products over channels become 16 matrix products, (B·H·W/4, C) x (C, O): 2.25x fewer
multiply-adds than the direct 3x3 convolution. The price is memory: the transformed input and output are 4x the
size of the activations they come from. For each stride-1 3x3 layer shape of the network at 32 px (layers 2, 4-5
and 7-8 of classifier32, 80% of its arithmetic) and each ``--batch``, both are jitted and timed in turn for
``--rounds`` rounds (best of), after checking that they agree. Writes JSON (default
``benchmarks/results/conv_winograd.json``) and a table; the last line is ``stride1_layers_winograd_speedup=<x>``
(the best batch's direct time over Winograd time, summed over the layers; > 1 means Winograd is faster).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

# (height = width, input channels, output channels, how many such layers) of classifier32's stride-1 3x3
# convolutions after the first (whose 1 or 3 input channels make it 1% of the arithmetic).
LAYERS = ((32, 64, 64, 1), (16, 128, 128, 2), (8, 128, 128, 2))
# Bᵀ and Aᵀ (the docstring) are applied as their sums and differences, in _rows and winograd.
G = np.array([[1, 0, 0], [.5, .5, .5], [.5, -.5, .5], [0, 0, 1]], np.float32)


def direct(x, w):
    """The 3x3, stride-1, padding-1 NHWC convolution as the network computes it."""
    from jax import lax

    return lax.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _rows(t, axis):
    """Bᵀ along ``axis``, on the 4 taps of every tile (tiles 2 apart): (…, 2n + 2, …) -> 4 x (…, n, …)."""
    from jax import lax

    n = (t.shape[axis] - 2) // 2
    d = [lax.slice_in_dim(t, a, a + 2 * n - 1, 2, axis) for a in range(4)]
    return [d[0] - d[2], d[1] + d[2], d[2] - d[1], d[1] - d[3]]


def winograd(x, w):
    """:func:`direct` by Winograd's F(2x2, 3x3), for even H and W: x (B, H, W, C), w (3, 3, C, O)."""
    import jax.numpy as jnp

    batch, h, wd, c = x.shape
    if h % 2 or wd % 2:
        raise ValueError(f"winograd: F(2x2, 3x3) needs an even height and width, got {h}x{wd}")
    padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    v = jnp.stack([col for row in _rows(padded, 1) for col in _rows(row, 2)]).reshape(16, -1, c)
    u = jnp.einsum("ai,ijco,bj->abco", G, w, G).reshape(16, c, w.shape[-1])
    m = jnp.einsum("xnc,xco->xno", v, u).reshape(4, 4, batch, h // 2, wd // 2, -1)
    rows = [m[0] + m[1] + m[2], m[1] - m[2] - m[3]]  # Aᵀ along the tile's rows, then along its columns
    y = jnp.stack([jnp.stack([r[0] + r[1] + r[2], r[1] - r[2] - r[3]], axis=-2) for r in rows], axis=2)
    return y.reshape(batch, h, wd, -1)  # (B, H/2, 2, W/2, 2, O): each tile's 2x2 outputs in place


def _time_once(fn, args, rounds_of: list) -> None:
    t0 = time.perf_counter()
    fn(*args).block_until_ready()
    rounds_of.append(time.perf_counter() - t0)


def measure(batches, rounds: int, seed: int = 0) -> dict:
    import jax

    rows = []
    for batch in batches:
        for size, cin, cout, count in LAYERS:
            kx, kw = jax.random.split(jax.random.PRNGKey(seed))
            x = jax.random.normal(kx, (batch, size, size, cin))
            w = jax.random.normal(kw, (3, 3, cin, cout)) * (2.0 / (9 * cin)) ** 0.5
            fd, fw = jax.jit(direct), jax.jit(winograd)
            ref, got = fd(x, w), fw(x, w)
            error = float(jax.numpy.max(jax.numpy.abs(ref - got)) / jax.numpy.max(jax.numpy.abs(ref)))
            times = {"direct": [], "winograd": []}
            for _ in range(rounds):  # in turn: drift on a shared machine hits both alike
                _time_once(fd, (x, w), times["direct"])
                _time_once(fw, (x, w), times["winograd"])
            flops = 2 * batch * size * size * cin * cout * 9
            rows.append({"batch": batch, "layer": f"{size}x{size}x{cin}->{cout}", "layers_of_this_shape": count,
                         "direct_ms": 1000 * min(times["direct"]), "winograd_ms": 1000 * min(times["winograd"]),
                         "direct_gflops": flops / min(times["direct"]) / 1e9,
                         "speedup": min(times["direct"]) / min(times["winograd"]), "max_relative_error": error,
                         "rounds": times})
    totals = {}
    for batch in batches:
        mine = [r for r in rows if r["batch"] == batch]
        totals[batch] = (sum(r["direct_ms"] * r["layers_of_this_shape"] for r in mine)
                         / sum(r["winograd_ms"] * r["layers_of_this_shape"] for r in mine))
    return {"rows": rows, "stride1_layers_speedup_by_batch": {str(b): s for b, s in totals.items()},
            "stride1_layers_winograd_speedup": max(totals.values())}


def table(result: dict) -> str:
    lines = ["| batch | layer (x count) | direct ms | GFLOP/s | Winograd ms | speedup | max rel. error |",
             "| ---: | --- | ---: | ---: | ---: | ---: | ---: |"]
    lines += [f"| {r['batch']} | {r['layer']} (x{r['layers_of_this_shape']}) | {r['direct_ms']:.1f} | "
              f"{r['direct_gflops']:.0f} | {r['winograd_ms']:.1f} | {r['speedup']:.2f} | "
              f"{r['max_relative_error']:.1e} |"
              for r in result["rows"]]
    return "\n".join(lines)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", default="32,128", help="comma-separated batch sizes")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--out", default=os.path.join("benchmarks", "results", "conv_winograd.json"))
    a = p.parse_args(argv)
    try:
        batches = [int(b) for b in a.batch.split(",")]
    except ValueError:
        p.error(f"--batch must be comma-separated integers, got {a.batch!r}")
    if a.rounds < 1 or min(batches) < 1:
        p.error(f"--rounds and every --batch must be >= 1, got {a.rounds} and {a.batch}")

    from cac_jax import runtime, storage

    settings = runtime.configure(compilation_cache=False)
    result = measure(batches, a.rounds)
    result.update(runtime=runtime.runtime_info(), settings=settings, command=vars(a))
    storage.make_dirs(os.path.dirname(os.path.abspath(a.out)))
    storage.write_json(a.out, result)
    print(table(result))
    print(json.dumps(result["stride1_layers_speedup_by_batch"]))
    print(f"stride1_layers_winograd_speedup={result['stride1_layers_winograd_speedup']:.3f}")
    return result


if __name__ == "__main__":
    main()
