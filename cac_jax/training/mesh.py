"""Device mesh and shardings: parameters replicated, batches split along a ``data`` axis.

The mesh spans the devices of every process of a job (:mod:`cac_jax.runtime.distributed`). Each process feeds
only its slice of every global batch (``cac_jax.data.pipeline.batch_indices`` with its process index),
assembled into one global array by ``jax.make_array_from_process_local_data``, and places replicated
values with :func:`replicate`, which never addresses another process's devices.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from cac_jax.data import pipeline

DATA_AXIS = "data"


def make_mesh(num_devices: int | None = None) -> Mesh:
    """A 1-D mesh over the first ``num_devices`` devices (all when None).

    The axis is ``Auto``: the jitted steps only state input/output shardings and let XLA's SPMD
    partitioner place the collectives (gradient and BatchNorm all-reduces)."""
    available = jax.devices()
    n = len(available) if num_devices is None else num_devices
    if n > len(available):
        raise ValueError(f"num_devices={n} but only {len(available)} devices are available")
    if n < len(available) and jax.process_count() > 1:
        raise ValueError(f"num_devices={n} in a job of {jax.process_count()} processes with {len(available)} devices: "
                         f"the mesh must span every process's devices (leave num_devices unset)")
    return jax.make_mesh((n,), (DATA_AXIS,), axis_types=(AxisType.Auto,), devices=available[:n])


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def replicate(mesh: Mesh, tree):
    """Host values or this process's arrays as arrays replicated over the whole mesh (every process passes
    the same values). PRNG keys go as their raw data: ``device_put`` refuses typed keys for a mesh with
    other processes' devices."""
    rep = replicated(mesh)

    def put(x):
        if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            return jax.random.wrap_key_data(jax.device_put(jax.random.key_data(x), rep), impl=jax.random.key_impl(x))
        return jax.device_put(x, rep)

    return jax.tree.map(put, tree)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(DATA_AXIS))


def check_batch_size(batch_size: int, mesh: Mesh, what: str = "batch_size") -> None:
    n = mesh.devices.size
    if batch_size % n:
        raise ValueError(f"{what}={batch_size} is not divisible by the {n} devices of the mesh; "
                         f"pick a multiple of {n} or set num_devices")
    if batch_size % jax.process_count():
        raise ValueError(f"{what}={batch_size} is not divisible by the {jax.process_count()} processes")


def put_batch(mesh: Mesh, *local_arrays: np.ndarray) -> tuple[jax.Array, ...]:
    """Assemble this process's slices into global arrays split along the ``data`` axis."""
    sharding = batch_sharding(mesh)
    return tuple(jax.make_array_from_process_local_data(sharding, np.asarray(a)) for a in local_arrays)


def batches_sharding(mesh: Mesh) -> NamedSharding:
    """Arrays of batches, (batches, batch, ...): split along the batch (axis 1)."""
    return NamedSharding(mesh, P(None, DATA_AXIS))


def put_batches(mesh: Mesh, *local_arrays: np.ndarray) -> tuple[jax.Array, ...]:
    """Assemble this process's slices of arrays of batches (batches, local batch, ...) into global arrays split
    along the batch axis (:func:`batches_sharding`)."""
    sharding = batches_sharding(mesh)
    return tuple(jax.make_array_from_process_local_data(sharding, np.asarray(a)) for a in local_arrays)


def eval_batches(num_examples: int, batch_size: int):
    """(indices, mask) of this process's part of each padded global evaluation batch."""
    return pipeline.padded_batch_indices(num_examples, batch_size, process_index=jax.process_index(),
                                         process_count=jax.process_count())


def eval_batch_size(requested: int, mesh) -> int:
    """The requested eval batch rounded up to a multiple of the device count."""
    n = mesh.devices.size
    return -(-requested // n) * n
