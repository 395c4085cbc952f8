"""Global batches and per-process slices."""

import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cac_jax.data import pipeline


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 500), st.integers(1, 8), st.integers(1, 16), st.integers(0, 10**6), st.integers(0, 50))
def test_processes_partition_each_global_batch(n, processes, local, seed, epoch):
    batch = processes * local
    per_process = [
        list(pipeline.batch_indices(n, batch, seed=seed, epoch=epoch, process_index=p, process_count=processes))
        for p in range(processes)
    ]
    assert all(len(b) == n // batch for b in per_process)
    seen = []
    for k in range(n // batch):
        glob = np.concatenate([per_process[p][k] for p in range(processes)])
        assert len(glob) == batch and all(len(per_process[p][k]) == local for p in range(processes))
        seen.extend(glob.tolist())
    assert len(set(seen)) == len(seen) == (n // batch) * batch and all(0 <= i < n for i in seen)


def test_eval_covers_everything_in_order_and_pads():
    got = list(pipeline.batch_indices(10, 4, seed=0, epoch=0, shuffle=False, drop_remainder=False))
    assert [g.tolist() for g in got] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    # two processes: the short last batch is split by position (the second process's slice is empty)
    p1 = list(pipeline.batch_indices(10, 4, seed=0, epoch=0, shuffle=False, drop_remainder=False, process_index=1, process_count=2))
    assert [g.tolist() for g in p1] == [[2, 3], [6, 7], []]
    idx, mask = pipeline.pad_batch(got[-1], 4)
    assert idx.tolist() == [8, 9, 0, 0] and mask.tolist() == [True, True, False, False]
    with pytest.raises(ValueError, match="cannot pad"):
        pipeline.pad_batch(np.arange(5), 4)


def test_shuffle_is_deterministic_and_changes_per_epoch():
    a = np.concatenate(list(pipeline.batch_indices(100, 10, seed=1, epoch=0)))
    b = np.concatenate(list(pipeline.batch_indices(100, 10, seed=1, epoch=0)))
    c = np.concatenate(list(pipeline.batch_indices(100, 10, seed=1, epoch=1)))
    d = np.concatenate(list(pipeline.batch_indices(100, 10, seed=2, epoch=0)))
    assert np.array_equal(a, b) and not np.array_equal(a, c) and not np.array_equal(a, d)
    assert sorted(a.tolist()) == list(range(100)) and a.dtype == np.int64
    assert pipeline.epoch_order(10, seed=0, epoch=0).tolist() == [3, 2, 1, 8, 6, 0, 7, 4, 5, 9]  # golden: stable across runs


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(global_batch_size=10, process_count=4), "multiple of the process count 4"),
        (dict(global_batch_size=0), "positive multiple"),
        (dict(global_batch_size=8, process_index=2, process_count=2), "process_index must lie in 0..1"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        next(pipeline.batch_indices(100, seed=0, epoch=0, **kwargs))


def test_importing_the_data_package_is_cheap():
    code = "import sys, cac_jax.data; print(sorted(m for m in ('jax', 'tensorflow_datasets') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


@pytest.mark.parametrize("n, batch, processes", [(10, 4, 1), (10, 4, 2), (3, 8, 4), (8, 4, 2), (0, 4, 2)])
def test_padded_batch_indices_cover_every_example_once_with_equal_slices(n, batch, processes):
    per_process = [list(pipeline.padded_batch_indices(n, batch, process_index=p, process_count=processes))
                   for p in range(processes)]
    seen = []
    for parts in zip(*per_process):
        assert all(len(idx) == len(mask) == batch // processes for idx, mask in parts)
        indices = np.concatenate([idx for idx, _ in parts])
        mask = np.concatenate([m for _, m in parts])
        seen.extend(indices[mask].tolist())
        assert np.all(mask[:-1] >= mask[1:])  # padding only at the end of the global batch
    assert seen == list(range(n))
