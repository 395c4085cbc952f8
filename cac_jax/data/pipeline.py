"""Batching: which examples form each global batch, and which part of it this process reads.

All six benchmarks fit in host memory as uint8 arrays (:func:`cac_jax.data.load_open_set`), so a
batch is a fancy-index of those arrays. Every process computes the same global order (a pure
function of ``seed`` and ``epoch``) and takes its own contiguous slice of each global batch:
process p of P gets positions ``[p·B/P, (p+1)·B/P)`` of a global batch of size B.

Training: ``shuffle=True, drop_remainder=True`` — ``n // B`` full batches per epoch.
Evaluation: :func:`padded_batch_indices` — every example once, in order; the last global batch is
padded to B (with a mask of the real examples) before it is split, so every process's slice has B/P
entries and the arrays assembled from them have one fixed shape (no recompilation).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np


def epoch_order(num_examples: int, *, seed: int, epoch: int, shuffle: bool = True) -> np.ndarray:
    """Order of the examples in ``epoch``: a permutation drawn from PCG64(SeedSequence([seed, epoch])), or 0..n−1."""
    if not shuffle:
        return np.arange(num_examples, dtype=np.int64)
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), int(epoch)])))
    # argsort of raw doubles: stable across NumPy versions (see cac_jax.data.trainval).
    return np.argsort(rng.random(num_examples), kind="stable").astype(np.int64)


def num_batches(num_examples: int, global_batch_size: int, *, drop_remainder: bool = True) -> int:
    """Global batches per epoch."""
    full, rest = divmod(num_examples, global_batch_size)
    return full + (1 if rest and not drop_remainder else 0)


def batch_indices(
    num_examples: int,
    global_batch_size: int,
    *,
    seed: int,
    epoch: int,
    shuffle: bool = True,
    drop_remainder: bool = True,
    process_index: int = 0,
    process_count: int = 1,
) -> Iterator[np.ndarray]:
    """Yield, for each global batch of the epoch, this process's slice of its example indices (int64).

    Raises ValueError if ``global_batch_size`` is not a positive multiple of ``process_count``, or
    ``process_index`` is not in ``0..process_count−1``. With ``drop_remainder=True`` every slice
    has ``global_batch_size // process_count`` entries.
    """
    if num_examples < 0:
        raise ValueError(f"num_examples must be >= 0, got {num_examples}")
    local = _local_batch_size(global_batch_size, process_index, process_count)
    order = epoch_order(num_examples, seed=seed, epoch=epoch, shuffle=shuffle)
    for b in range(num_batches(num_examples, global_batch_size, drop_remainder=drop_remainder)):
        batch = order[b * global_batch_size : (b + 1) * global_batch_size]
        yield batch[process_index * local : (process_index + 1) * local]


def _local_batch_size(global_batch_size: int, process_index: int, process_count: int) -> int:
    if process_count < 1 or not 0 <= process_index < process_count:
        raise ValueError(f"process_index must lie in 0..{process_count - 1}, got {process_index} (process_count {process_count})")
    if global_batch_size < 1 or global_batch_size % process_count:
        raise ValueError(
            f"global_batch_size {global_batch_size} must be a positive multiple of the process count {process_count}"
        )
    return global_batch_size // process_count


def padded_batch_indices(
    num_examples: int, global_batch_size: int, *, process_index: int = 0, process_count: int = 1
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Evaluation order: yield (indices, mask), this process's slice of each global batch covering every
    example once, in order. The last global batch is padded (mask False) *before* it is split, so every
    process gets the same number of entries and the processes' slices concatenate to the global batch."""
    local = _local_batch_size(global_batch_size, process_index, process_count)
    part = slice(process_index * local, (process_index + 1) * local)
    if num_examples < 0:
        raise ValueError(f"num_examples must be >= 0, got {num_examples}")
    for start in range(0, num_examples, global_batch_size):
        indices, mask = pad_batch(np.arange(start, min(start + global_batch_size, num_examples)), global_batch_size)
        yield indices[part], mask[part]


def pad_batch(indices: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pad ``indices`` to ``size`` by repeating index 0 (any valid one would do); also return the
    boolean mask of real entries, so padded examples can be left out of sums and means."""
    indices = np.asarray(indices, dtype=np.int64)
    if len(indices) > size:
        raise ValueError(f"cannot pad {len(indices)} indices to the smaller size {size}")
    mask = np.zeros(size, dtype=bool)
    mask[: len(indices)] = True
    return np.concatenate([indices, np.zeros(size - len(indices), np.int64)]), mask
